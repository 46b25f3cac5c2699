"""The allowlist's URL rules, pure: each string trick from issue 14 is refused by the parser."""

from __future__ import annotations

import pytest

from kimi_agent.env.url_allowlist import UrlAllowlist, parse_entry
from kimi_agent.errors import ConfigError

ORIGIN = "http://127.0.0.1:5559"


@pytest.mark.parametrize("entry", [ORIGIN, ORIGIN + "/", ORIGIN + "/*", ORIGIN + "*", "HTTP://127.0.0.1:5559"])
@pytest.mark.parametrize(("url", "allowed"), [
    ("http://127.0.0.1:5559/", True),
    ("http://127.0.0.1:5559/a/b?q=1#f", True),
    ("HTTP://127.0.0.1:5559/upper-scheme", True),
    ("ws://127.0.0.1:5559/socket", True),
    ("http://127.0.0.1:55591/", False),  # port prefix
    ("http://127.0.0.1:5559@127.0.0.1:55591/", False),  # userinfo
    ("http://user:pw@127.0.0.1:5559/", False),  # userinfo even on the allowed origin
    ("http://127.0.0.1:5559\\@evil.test/", False),  # backslash: the browser reads it as a slash
    ("http://127.0.0.1:5559.evil.test/", False),
    ("http://127.0.0.1/", False),
    ("https://127.0.0.1:5559/", False),
    ("http://localhost:5559/", False),
    ("http://127.0.0.1:99999/", False),
    ("data:text/html,<b>x</b>", False),
    ("file:///etc/passwd", False),
    ("javascript:alert(1)", False),
    ("chrome://settings", False),
    ("about:blank", True),
])
def test_origin_entry(entry: str, url: str, allowed: bool) -> None:
    assert UrlAllowlist([entry]).allows(url) is allowed


@pytest.mark.parametrize(("url", "allowed"), [
    ("https://site.test/docs", True),
    ("https://SITE.TEST/docs/page", True),
    ("https://site.test:443/docs?x=1", True),
    ("https://site.test/docsearch", False),
    ("https://site.test/", False),
    ("https://site.test/docs/../admin", False),
    ("https://site.test/docs/%2E%2E/admin", False),
    ("https://site.test.evil.test/docs", False),  # host suffix
    ("https://evil.test/site.test/docs", False),
    ("http://site.test/docs", False),
    ("https://a.sub.test/", True),
    ("https://deep.a.sub.test/x", True),
    ("https://sub.test/", False),
    ("https://evilsub.test/", False),
])
def test_path_prefix_and_subdomain_entries(url: str, allowed: bool) -> None:
    assert UrlAllowlist(["https://site.test/docs", "https://*.sub.test"]).allows(url) is allowed


@pytest.mark.parametrize("entry", ["127.0.0.1:5559", "http://user@site.test", "http://*/", "http://site.*",
                                   "https://site.test/a*b", "https://site.test/?q=1", "ftp://site.test", ""])
def test_bad_entries_name_themselves(entry: str) -> None:
    with pytest.raises(ConfigError, match="--allow-url"):
        parse_entry(entry)


def test_entries_print_as_origins() -> None:
    assert str(UrlAllowlist(["HTTPS://Site.Test:443/docs/", "http://127.0.0.1:5559/*"])) == \
        "https://site.test/docs/, http://127.0.0.1:5559"


@pytest.mark.parametrize(("url", "allowed"), [
    ("https://example.com/docs/..%2fsecret.html", False),
    ("https://example.com/docs/..%2Fsecret.html", False),
    ("https://example.com/docs/%2e%2e%5csecret.html", False),
    ("https://example.com/docs/..%5Csecret.html", False),
    ("https://example.com/docs/a%2fb.html", True),
    ("https://example.com/docs/sub/..%2fpage.html", True),
])
def test_encoded_separators_are_decoded_before_a_path_prefix_is_checked(url: str, allowed: bool) -> None:
    assert UrlAllowlist(["https://example.com/docs/"]).allows(url) is allowed

"""The URL allowlist: an origin check (scheme, host, port) with optional path prefixes.

Entries are written as URLs and parsed once:

| entry | allows |
|---|---|
| `http://127.0.0.1:5559` | that origin, any path (also `http://127.0.0.1:5559/` and `.../*`) |
| `https://example.com/docs/` | that origin, paths under `/docs/` |
| `https://example.com/docs` | `/docs`, `/docs/...`, `/docs?...`, not `/docsearch` |
| `https://*.example.com` | any subdomain of example.com (not example.com itself) |

A URL is allowed when its scheme, host and port equal an entry's (scheme and host compared in
lower case, the default port filled in: http/ws 80, https/wss 443; ws/wss count as http/https) and
its path starts with the entry's path prefix at a `/` boundary, the path taken as a decoding server
sees it (`%2f`, `%5c` and `%2e` decoded, dot segments resolved). A URL with userinfo
(`http://a@b/`), a backslash or control character in its authority, an unparsable port or no host is
never allowed, so string tricks (`:5559` vs `:55591`, `site.test.evil.test`, `allowed@evil`) fail.
`about:blank` is always allowed; `data:`, `file:`, `javascript:`, `chrome:` and the like never are.
A `*` anywhere else than a leading `*.` label or a trailing `/*` is a `ConfigError`.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

from kimi_agent.errors import ConfigError

ALWAYS_ALLOWED = frozenset({"about:blank"})
DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}
_SAME_AS = {"ws": "http", "wss": "https"}
_BAD_AUTHORITY = re.compile(r"[\\\x00-\x20\x7f%]")
_ENCODED_SEPARATORS = re.compile(r"%2e|%2f|%5c", flags=re.I)
_DECODED = {"%2e": ".", "%2f": "/", "%5c": "/"}


@dataclass(frozen=True, slots=True)
class Origin:
    """A parsed URL's origin and path. `scheme` is http or https (ws/wss mapped onto them)."""

    scheme: str
    host: str
    port: int
    path: str


@dataclass(frozen=True, slots=True)
class AllowedEntry:
    """One allowlist entry: an origin (host may be `*.domain`) and a path prefix ("" = any)."""

    scheme: str
    host: str
    port: int
    path_prefix: str = ""

    def matches(self, origin: Origin) -> bool:
        if origin.scheme != self.scheme or origin.port != self.port:
            return False
        if self.host.startswith("*."):
            if not origin.host.endswith(self.host[1:]) or origin.host == self.host[2:]:
                return False
        elif origin.host != self.host:
            return False
        return _under(origin.path, self.path_prefix)

    def __str__(self) -> str:
        default = DEFAULT_PORTS[self.scheme] == self.port
        return f"{self.scheme}://{self.host}{'' if default else f':{self.port}'}{self.path_prefix}"


def parse_origin(url: str) -> Origin | None:
    """The origin of an http(s)/ws(s) URL, or None when it has none we could trust."""
    try:
        parts = urlsplit(url.strip())
        scheme = parts.scheme.lower()
        if scheme not in DEFAULT_PORTS or not parts.netloc:
            return None
        if "@" in parts.netloc or _BAD_AUTHORITY.search(parts.netloc):
            return None
        host = (parts.hostname or "").lower().rstrip(".")
        if not host or "*" in host:
            return None
        port = parts.port if parts.port is not None else DEFAULT_PORTS[scheme]
    except ValueError:  # a port out of range or not a number, a bad IPv6 literal
        return None
    return Origin(scheme=_SAME_AS.get(scheme, scheme), host=host, port=port, path=_normalize_path(parts.path))


def _normalize_path(path: str) -> str:
    """The path as a server that decodes it will see it: `.`, `/` and `\\` also when written `%2e`,
    `%2f` and `%5c`, backslashes as slashes, `.`/`..` segments resolved (so `/docs/..%2fsecret`
    is `/secret`, never under `/docs/`)."""
    path = _ENCODED_SEPARATORS.sub(lambda m: _DECODED[m.group(0).lower()], path or "/").replace("\\", "/")
    if "/." not in path:
        return path
    normal = posixpath.normpath(path)
    normal = "/" + normal.lstrip("/")  # normpath keeps a leading '//'
    return normal + "/" if path.endswith(("/", "/.", "/..")) and normal != "/" else normal


def parse_entry(entry: str) -> AllowedEntry:
    """An allowlist entry from its URL form (see the module doc); `ConfigError` names it when bad."""
    text = entry.strip()
    if text.endswith("/*"):
        text = text[:-1]
    elif text.endswith("*") and not text.endswith(".*"):
        text = text[:-1]  # the old CLI form `X*`: the origin X, any path
    wildcard = "://*." in text
    probe = text.replace("://*.", "://wildcard.", 1) if wildcard else text
    origin = parse_origin(probe)
    parts = urlsplit(probe)
    if origin is None or "*" in probe or parts.query or parts.fragment:
        raise ConfigError(f"--allow-url {entry!r}: give an origin with an optional path prefix, "
                          "e.g. https://example.com or http://127.0.0.1:8000/app/ (no userinfo, query or "
                          "'*' except a leading '*.' subdomain or a trailing '/*')")
    host = "*." + origin.host[len("wildcard."):] if wildcard else origin.host
    prefix = parts.path if parts.path not in ("", "/") else ""
    return AllowedEntry(scheme=origin.scheme, host=host, port=origin.port, path_prefix=prefix)


class UrlAllowlist:
    """Allowed origins (with path prefixes); `allows(url)` is the one check every URL goes through."""

    def __init__(self, entries: Iterable[str | AllowedEntry]) -> None:
        self.entries = tuple(e if isinstance(e, AllowedEntry) else parse_entry(e) for e in entries)

    def allows(self, url: str) -> bool:
        if url in ALWAYS_ALLOWED:
            return True
        origin = parse_origin(url)
        return origin is not None and any(e.matches(origin) for e in self.entries)

    def same_origin_allowed(self, url: str) -> bool:
        """Whether `url`'s origin (any path) is one of the entries' origins."""
        origin = parse_origin(url)
        return origin is not None and any(
            AllowedEntry(e.scheme, e.host, e.port).matches(origin) for e in self.entries)

    def __str__(self) -> str:
        return ", ".join(str(e) for e in self.entries)

    def __repr__(self) -> str:
        return f"UrlAllowlist([{', '.join(repr(str(e)) for e in self.entries)}])"


def _under(path: str, prefix: str) -> bool:
    if not prefix:
        return True
    if prefix.endswith("/"):
        return path.startswith(prefix)
    return path == prefix or path.startswith(prefix + "/")

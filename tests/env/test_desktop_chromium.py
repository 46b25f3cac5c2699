"""chrome://settings in the desktop's Chromium, and Preferences flushed by a graceful stop.

Deterministic: the settings page is opened over CDP (`page.goto` returns once it has loaded; a URL
typed into the omnibox can lose its first keys on a loaded machine, and Chromium ignores chrome://
URLs on its command line), then the test waits for the state it needs (the settingsPrivate API)
instead of for a URL within a timeout. Typing URLs on the desktop is tested in test_desktop_actions.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from kimi_agent.env.desktop import DesktopEnv

SETTINGS = "chrome://settings/cookies"
GET_DNT = "() => new Promise(r => chrome.settingsPrivate.getPref('enable_do_not_track', p => r(p.value)))"
SET_DNT = "() => new Promise(r => chrome.settingsPrivate.setPref('enable_do_not_track', true, '', r))"
READY = "() => typeof chrome !== 'undefined' && !!chrome.settingsPrivate && document.readyState === 'complete'"


def test_do_not_track_survives_a_clean_close(pw: Any, tmp_path: Path) -> None:
    profile = tmp_path / "profile"
    with DesktopEnv() as env:
        chromium = env.start_chromium(profile)
        browser = pw.chromium.connect_over_cdp(chromium.cdp_url)
        (page,) = browser.contexts[0].pages
        page.goto(SETTINGS, wait_until="load", timeout=120_000)  # a bound for a hang, not a speed check
        page.wait_for_function(READY, polling=100, timeout=120_000)
        assert page.evaluate(GET_DNT) is False
        assert page.evaluate(SET_DNT) is True
        assert page.evaluate(GET_DNT) is True
        browser.close()  # disconnects; the browser keeps running
        assert chromium.running
        assert chromium.stop() == 0  # SIGTERM and wait: Chromium writes Preferences on the way out
    prefs = json.loads(chromium.preferences_path.read_text())
    assert prefs["enable_do_not_track"] is True

"""OSWorldVMEnv against a stand-in of OSWorld's in-VM server (tests/support/osworld_server.py) on the
session Xvfb.

The stand-in executes the commands it receives (that is what the real VM server does, and it is
this test's own server); the client under test only ever sends code it generated from typed
actions, which the injection test below checks end to end.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image, ImageDraw
from playwright.sync_api import Error as PlaywrightError
from support.osworld_server import StandInServer

from kimi_agent.actions.types import Click, Navigate, NormPoint, Scroll, TypeText
from kimi_agent.env.chromium import CHROME_ARGS, find_chromium, free_port
from kimi_agent.env.osworld_vm import VM_SETTLE, OSWorldVMEnv, settle_frame
from kimi_agent.env.settle import frames_differ
from kimi_agent.errors import ActionError, EnvironmentStartError, VMServerError, VMUnreachableError


@pytest.fixture(scope="module")
def vm_server(xvfb: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[StandInServer]:
    server = StandInServer(xvfb.display, tmp_path_factory.mktemp("vm-home")).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def vm(vm_server: Any, pw: Any, http_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    env = OSWorldVMEnv(vm_server.url, python=sys.executable)
    port = free_port()
    env.launch([find_chromium(), *CHROME_ARGS, f"--user-data-dir={tmp_path_factory.mktemp('vm-profile')}",
                f"--remote-debugging-port={port}", "--window-position=0,0", "--window-size=1920,1080",
                http_server.url("events.html")])
    deadline = time.monotonic() + 20
    while True:
        try:
            browser = pw.chromium.connect_over_cdp(f"http://127.0.0.1:{port}")
            break
        except PlaywrightError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    page = browser.contexts[0].pages[0]
    page.wait_for_function("() => window.__events !== undefined")
    yield env, page
    browser.close()
    env.close()


def norm(page: Any, selector: str, fx: float = 0.5, fy: float = 0.5) -> tuple[float, float, NormPoint]:
    box = page.locator(selector).bounding_box()
    m = page.evaluate("() => [screenX, screenY, outerWidth - innerWidth, outerHeight - innerHeight]")
    border = m[2] / 2
    x, y = box["x"] + fx * box["width"], box["y"] + fy * box["height"]
    return x, y, NormPoint(x=(m[0] + border + x + 0.5) / 1920, y=(m[1] + m[3] - border + y + 0.5) / 1080)


def test_observe_click_scroll_and_type(vm: Any) -> None:
    env, page = vm
    obs = env.observe()
    assert obs.image.size == (1920, 1080) and obs.geometry.exec_width == 1920
    x, y, p = norm(page, "#target", 0.25, 0.75)
    out = env.execute(Click(point=p))
    assert out.ok, out.error
    assert out.executed == [f"pyautogui.click({out.exec_points[0][0]:.0f}, {out.exec_points[0][1]:.0f}, "
                            "clicks=1, interval=0.0, button='left')"]
    click = [e for e in page.evaluate("window.__events") if e["type"] == "click"][-1]
    assert abs(click["x"] - x) <= 2 and abs(click["y"] - y) <= 2
    assert env.cursor_position() == tuple(int(v) for v in out.exec_points[0])
    _, _, s = norm(page, "#scroller")
    assert env.execute(Scroll(point=s, direction="down", amount=2)).ok
    assert page.evaluate("document.getElementById('scroller').scrollTop") > 0
    _, _, t = norm(page, "#text")
    env.execute(Click(point=t))
    hostile = "'); import os; os.system('touch /tmp/pwned') #<é>"
    out = env.execute(TypeText(text=hostile))
    assert out.ok, out.error
    assert page.input_value("#text") == hostile  # typed as data, never run as code
    assert not os.path.exists("/tmp/pwned")


def test_refusals_and_errors(vm: Any, tmp_path: Any) -> None:
    env, _ = vm
    out = env.execute(Navigate(url="https://example.com"))
    assert not out.ok and "browser_shortcuts" in str(out.error) and out.executed == []
    with pytest.raises(ActionError, match="exit 1"):
        env.run_python("raise SystemExit(1)")
    (tmp_path / "f.txt").write_text("from the vm")
    assert env.get_file(str(tmp_path / "f.txt")) == b"from the vm"


def test_unreachable_server_is_a_clear_start_error() -> None:
    with pytest.raises(EnvironmentStartError, match="unreachable") as info:
        OSWorldVMEnv(f"http://127.0.0.1:{free_port()}", retries=2, retry_delay_s=0.05, timeout_s=1.0)
    assert isinstance(info.value.__cause__, VMUnreachableError)


def test_server_reasons_reach_typed_errors(vm: Any, vm_server: StandInServer, tmp_path: Any) -> None:
    env, _ = vm
    with pytest.raises(VMServerError, match=r"500: .*No such file or directory") as info:
        env.run(["/no/such/program"])
    assert info.value.status == 500 and info.value.endpoint == "/execute"
    with pytest.raises(VMServerError, match="404: File not found"):
        env.get_file(str(tmp_path / "missing.txt"))
    vm_server.faults["/screenshot"] = (500, {"status": "error", "message": "Xlib: display lost"})
    try:
        with pytest.raises(VMServerError, match="display lost"):
            env.observe()
        _, _, p = norm(vm[1], "#target")
        out = env.execute(Click(point=p))  # /execute succeeds, the settle screenshot fails
        assert not out.ok and isinstance(out.error, ActionError) and "display lost" in str(out.error)
        assert isinstance(out.error.__cause__, VMServerError) and out.executed
    finally:
        vm_server.faults.clear()


def test_a_dripping_server_is_bounded(vm_server: StandInServer) -> None:
    env = OSWorldVMEnv(vm_server.url, retries=1, timeout_s=5.0, max_response_s=2.0)
    vm_server.faults["/cursor_position"] = "drip"
    try:
        with pytest.raises(VMUnreachableError, match="longer than 2 s"):
            env.cursor_position()
    finally:
        vm_server.faults.clear()
        env.close()


def test_a_dead_server_is_unreachable_not_raw_httpx(vm_server: StandInServer, xvfb: Any, tmp_path: Any) -> None:
    server = StandInServer(xvfb.display, tmp_path).start()
    env = OSWorldVMEnv(server.url, retries=1, timeout_s=2.0)
    server.stop()
    with pytest.raises(VMUnreachableError, match=r"cannot connect|no complete answer"):
        env.observe()
    out = env.execute(TypeText(text="x"))
    assert not out.ok and isinstance(out.error.__cause__, VMUnreachableError)
    env.close()


def _screen(caret: bool, dialog: bool = False) -> bytes:
    image = Image.new("RGB", (1920, 1080), (245, 245, 245))
    draw = ImageDraw.Draw(image)
    draw.text((100, 100), "Search settings", fill=(20, 20, 20))
    if caret:
        draw.rectangle((400, 500, 401, 519), fill=(0, 0, 0))  # a 2x20 text caret
    if dialog:
        draw.rectangle((700, 300, 1200, 700), fill=(60, 60, 200))
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def test_settle_ignores_a_caret_and_sees_a_dialog() -> None:
    base, blink, dialog = settle_frame(_screen(False)), settle_frame(_screen(True)), settle_frame(
        _screen(False, dialog=True))
    assert base.shape == (135, 240) and base.dtype == np.uint8
    assert not frames_differ(base, blink, VM_SETTLE.tolerance)
    assert frames_differ(base, dialog, VM_SETTLE.tolerance)
    assert _screen(False) != _screen(True)  # byte equality would call the caret a change



def test_the_stand_ins_pkill_ends_what_it_launched_and_nothing_else_of_this_machine(xvfb: Any, tmp_path: Any) -> None:
    """OSWorld task files run `pkill chrome`; on a VM that reaches only the VM. The stand-in runs on
    this machine, where it would end every test's browser (it once ended another test's decoy)."""
    named_chrome = tmp_path / "chrome"
    shutil.copy("/usr/bin/sleep", named_chrome)
    decoy = subprocess.Popen([str(named_chrome), "300"])  # a process of this machine, same name
    server = StandInServer(xvfb.display, tmp_path).start()
    try:
        for command in ([str(named_chrome), "300"], ["pkill", "chrome"]):
            r = httpx.post(f"{server.url}/setup/launch", json={"command": command, "shell": False}, timeout=10)
            assert r.status_code == 200, r.text
            if command[0] != "pkill":
                launched = server.launched[-1]
        assert launched.wait(10) == -15  # the "VM"'s own chrome got pkill's SIGTERM
        assert decoy.poll() is None, "the stand-in's pkill reached a process it did not launch"
    finally:
        server.stop()
        decoy.kill()
        decoy.wait(10)

"""A stand-in of OSWorld's in-VM HTTP server (a test double: no OSWorld VM can run here).

It implements the endpoints the way OSWorld's `desktop_env/server/main.py` documents them
(request shapes, status codes, bodies): `GET /screenshot` (PNG), `GET /cursor_position` ([x, y]),
`GET /platform` ("Linux"), `POST /screen_size` ({width, height}), `POST /execute` and
`/setup/execute` (JSON {command, shell}; {status, output, error, returncode}; a command that cannot
start is a 500 {"status": "error", "message": ...}), `POST /setup/launch` (text "... launched
successfully"), `POST /file` (form file_path; 404 {"error": "File not found"}), `POST /setup/upload`
(multipart file_path + file_data), `POST /setup/activate_window` and `/setup/close_window`
(wmctrl). It runs commands on the test's own display with HOME set to the test's folder (its "VM
user"), and, like the real server on ARM machines, swaps `google-chrome` for this machine's
Chromium (and `python` for the tests' interpreter, which has pyautogui as the VM's does); the fixed ports of OSWorld task files (Chrome's 1337, the 9222 relay) are mapped to free
ports so parallel tests never collide. `pkill` and `killall` reach only what the stand-in launched
(each launched program has a session of its own; the kill is limited to those sessions), as a VM's
reach only that VM: on this machine `pkill chrome` would end every other test's browser too. `faults` makes an endpoint fail on purpose:
{path: (status, body)} answers that, {path: "drip"} sends its answer one byte per second.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shlex
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import mss
from PIL import Image

from kimi_agent.env.chromium import CHROME_ARGS, find_chromium, free_port

CHROME_PORT, RELAY_PORT = 1337, 9222  # the ports OSWorld's chrome task files use


class StandInServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, display: str, home: Path) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.display, self.home = display, home
        self.env = {**os.environ, "DISPLAY": display, "HOME": str(home)}
        self.ports = {CHROME_PORT: free_port(), RELAY_PORT: free_port()}
        self.commands: list[Any] = []
        self.launched: list[subprocess.Popen[bytes]] = []
        self.faults: dict[str, Any] = {}
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    @property
    def relay_port(self) -> int:
        """Where this machine's stand-in for OSWorld's 9222 relay listens."""
        return self.ports[RELAY_PORT]

    def start(self) -> StandInServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
        for proc in self.launched:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)

    def rewrite(self, command: list[str]) -> list[str]:
        """`~/` to the VM home, google-chrome to Chromium (own profile in the VM home), fixed ports,
        pkill/killall to the sessions of what this stand-in launched."""
        out = [str(self.home) + arg[1:] if arg.startswith("~/") else arg for arg in command]
        if out and out[0] in ("pkill", "killall"):
            sessions = set()
            for proc in self.launched:
                with contextlib.suppress(ProcessLookupError):
                    if proc.poll() is None:
                        sessions.add(os.getsid(proc.pid))
            if not sessions:
                return ["true"]  # nothing of this "VM" is running
            exact = ["-x"] if out[0] == "killall" else []
            out = ["pkill", "-s", ",".join(map(str, sorted(sessions))), *exact, *out[1:]]
        if out and out[0] in ("python", "python3"):  # the VM's Python has pyautogui; so does the tests'
            out[0] = sys.executable
        if out and out[0] in ("google-chrome", "google-chrome-stable"):
            out = [find_chromium(), *CHROME_ARGS, f"--user-data-dir={self.home}/.config/google-chrome",
                   "--window-position=0,0", "--window-size=1920,1080", *out[1:]]
        for fixed, mapped in self.ports.items():
            out = [re.sub(rf"(?<=[:=]){fixed}\b", str(mapped), arg) for arg in out]
        return out


class Handler(BaseHTTPRequestHandler):
    server: StandInServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        return

    # -- plumbing --------------------------------------------------------------------------

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")  # one request per connection: a stopped server is gone
        self.end_headers()
        self.close_connection = True
        if self.server.faults.get(self.path) == "drip":
            try:
                for i in range(len(body)):
                    self.wfile.write(body[i:i + 1])
                    self.wfile.flush()
                    time.sleep(1.0)
            except (BrokenPipeError, ConnectionResetError):  # the client gave up, as it should
                return
        else:
            self.wfile.write(body)

    def _json(self, value: Any, status: int = 200) -> None:
        self._send(status, json.dumps(value).encode(), "application/json")

    def _text(self, text: str, status: int = 200) -> None:
        self._send(status, text.encode(), "text/html; charset=utf-8")

    def _body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _fault(self) -> bool:
        fault = self.server.faults.get(self.path)
        if isinstance(fault, tuple):
            status, body = fault
            self._send(status, body if isinstance(body, bytes) else json.dumps(body).encode(), "application/json")
            return True
        return False

    def do_GET(self) -> None:
        if self._fault():
            return
        route: Callable[[], None] | None = {"/screenshot": self.screenshot, "/cursor_position": self.cursor,
                                            "/platform": lambda: self._text("Linux")}.get(self.path)
        if route is None:
            self._text("Not Found", 404)
        else:
            route()

    def do_POST(self) -> None:
        body = self._body()
        if self._fault():
            return
        routes: dict[str, Callable[[bytes], None]] = {
            "/screen_size": lambda _: self._json({"width": 1920, "height": 1080}),
            "/execute": self.execute, "/setup/execute": self.execute, "/setup/launch": self.launch,
            "/file": self.file, "/setup/upload": self.upload,
            "/setup/activate_window": lambda b: self.window(b, "a"),
            "/setup/close_window": lambda b: self.window(b, "c"),
        }
        route = routes.get(self.path)
        if route is None:
            self._text("Not Found", 404)
        else:
            route(body)

    # -- endpoints ---------------------------------------------------------------------------

    def screenshot(self) -> None:
        with mss.MSS(display=self.server.display) as sct:
            shot = sct.grab(sct.monitors[1])
        out = io.BytesIO()
        Image.frombuffer("RGB", shot.size, shot.raw, "raw", "BGRX", 0, 1).save(out, "PNG", compress_level=1)
        self._send(200, out.getvalue(), "image/png")

    def cursor(self) -> None:
        out = subprocess.run(["xdotool", "getmouselocation", "--shell"], capture_output=True, text=True,
                             env=self.server.env, check=True, timeout=10).stdout
        pos = dict(line.split("=") for line in out.split())
        self._json([int(pos["X"]), int(pos["Y"])])

    def _command(self, data: dict[str, Any]) -> tuple[Any, bool]:
        shell = bool(data.get("shell", False))
        command = data.get("command", "" if shell else [])
        if isinstance(command, str) and not shell:
            command = shlex.split(command)
        if not shell:
            command = self.server.rewrite(list(command))
        self.server.commands.append(command)
        return command, shell

    def execute(self, body: bytes) -> None:
        command, shell = self._command(json.loads(body))
        try:
            r = subprocess.run(command, shell=shell, capture_output=True, text=True, env=self.server.env,
                               cwd=self.server.home, timeout=120)
        except (OSError, subprocess.SubprocessError) as e:
            self._json({"status": "error", "message": str(e)}, 500)
            return
        self._json({"status": "success", "output": r.stdout, "error": r.stderr, "returncode": r.returncode})

    def launch(self, body: bytes) -> None:
        command, shell = self._command(json.loads(body))
        try:
            self.server.launched.append(subprocess.Popen(command, shell=shell, env=self.server.env,
                                                         cwd=self.server.home, stdout=subprocess.DEVNULL,
                                                         stderr=subprocess.DEVNULL, start_new_session=True))
        except OSError as e:
            self._json({"status": "error", "message": str(e)}, 500)
            return
        self._text(f"{command if shell else ' '.join(command)} launched successfully")

    def _path(self, raw: str) -> Path:
        return Path(os.path.expandvars(raw.replace("~", str(self.server.home), 1) if raw.startswith("~") else raw))

    def file(self, body: bytes) -> None:
        fields = parse_qs(body.decode())
        if "file_path" not in fields:
            self._json({"error": "file_path is required"}, 400)
            return
        path = self._path(fields["file_path"][0])
        if not path.is_file():
            self._json({"error": "File not found"}, 404)
            return
        self._send(200, path.read_bytes(), "application/octet-stream")

    def upload(self, body: bytes) -> None:
        message = BytesParser(policy=HTTP).parsebytes(
            f"Content-Type: {self.headers['Content-Type']}\r\n\r\n".encode() + body)
        parts = {p.get_param("name", header="content-disposition"): p for p in message.iter_parts()}
        if "file_path" not in parts or "file_data" not in parts:
            self._json({"error": "file_path and file_data are required"}, 400)
            return
        path = self._path(str(parts["file_path"].get_content()).strip())
        path.parent.mkdir(parents=True, exist_ok=True)
        data = parts["file_data"].get_payload(decode=True) or b""
        path.write_bytes(data)
        self._text(f"File Uploaded: {len(data)} bytes")

    def window(self, body: bytes, verb: str) -> None:
        data = json.loads(body)
        if not data.get("window_name"):
            self._text("window_name required", 400)
            return
        flags = "-" + ("x" if data.get("by_class") else "") + ("F" if data.get("strict") else "") + verb
        subprocess.run(["wmctrl", flags, data["window_name"]], env=self.server.env, timeout=10,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self._text("Window activated successfully" if verb == "a" else "Window closed successfully.")

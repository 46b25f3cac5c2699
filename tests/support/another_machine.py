"""Another machine on this one's network, for the network tests: a real network namespace joined to
this machine's by a veth pair (a /30 of 198.18.0.0/15, the range set aside for such tests), with an
HTTP server of its own. Traffic to it leaves this machine's network stack as traffic to any other
host on a local network does, so a sandbox that reaches it "reaches out", while its address is not
one of this machine's. Needs root (`ip netns add`); `another_machine_problem()` says why not.

    with another_machine(www_folder) as url:    # "http://198.18.x.y:8000"
        ...
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

PORT = 8000
_made = 0  # machines made by this process
START_TIMEOUT_S = 10.0


def another_machine_problem() -> str | None:
    """None when `another_machine` can run here, otherwise why not."""
    if os.geteuid() != 0:
        return "making a network namespace needs root"
    if shutil.which("ip") is None:
        return "`ip` (iproute2) is not installed"
    return None


def _ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10)
    if done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")


@contextmanager
def another_machine(www: Path) -> Iterator[str]:
    """A machine at a 198.18.0.0/15 address serving `www` over HTTP on port 8000; yields its base URL.
    Its namespace, its link and its server are gone on exit."""
    global _made
    _made += 1
    pid = os.getpid()
    net = ipaddress.ip_network("198.18.0.0/15")
    slot = (pid * 8 + _made % 8) % 32768  # a /30 and names per call: the kernel ends a deleted namespace's
    here, there = (net.network_address + 4 * slot + k for k in (1, 2))  # link a moment later
    name, link = f"kimi-other-{pid}-{_made}", f"ko{pid % 1000000}x{_made % 1000}"
    for attempt in range(3):  # two first `ip netns add`s at once race to set /run/netns up: once more
        try:
            _ip("netns", "add", name)
            break
        except RuntimeError:
            subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=10)
            if attempt == 2:
                raise
            time.sleep(0.2)
    server: subprocess.Popen[bytes] | None = None
    try:
        _ip("link", "add", link, "type", "veth", "peer", "name", "eth0", "netns", name)
        _ip("addr", "add", f"{here}/30", "dev", link)
        _ip("link", "set", link, "up")
        _ip("-n", name, "addr", "add", f"{there}/30", "dev", "eth0")
        _ip("-n", name, "link", "set", "eth0", "up")
        _ip("-n", name, "link", "set", "lo", "up")
        server = subprocess.Popen(["ip", "netns", "exec", name, sys.executable, "-m", "http.server", "--bind",
                                   str(there), "--directory", str(www), str(PORT)],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            try:
                socket.create_connection((str(there), PORT), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError(f"the other machine's HTTP server did not start within {START_TIMEOUT_S:g} s") from None
                time.sleep(0.05)
        yield f"http://{there}:{PORT}"
    finally:
        if server is not None:
            server.kill()
            server.wait(10)
        subprocess.run(["ip", "link", "del", link], capture_output=True, timeout=10)  # both ends
        _ip("netns", "del", name)

"""What a worker's own network (`--allow-network`: slirp4netns, tasks/uplink.py) costs next to the
shared network it replaced (`bwrap --share-net`), side by side in one run.

A sandbox (the runner's own `bwrap_argv`) runs a Python client against an HTTP server of this
machine on its outward address, which stands for the internet here: the uplink never reaches
loopback, and the bench leaves that one address out of the fence that keeps a worker off this
machine (`fenced_prefixes`; the fence itself is timed in the attach). Per mode it prints the median of
`--rounds`: the time to attach the uplink (none when shared), the time of 100 small GETs one after
another (each a new TCP connection) and the throughput of one `--mb` MB download.

    python bench/uplink.py                 # 5 rounds, 64 MB
    python bench/uplink.py --rounds 3 --mb 256
"""

from __future__ import annotations

import argparse
import http.server
import os
import socket
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from kimi_agent.tasks.sandbox import SandboxPlan, bwrap_argv, probe
from kimi_agent.tasks.uplink import UPLINK_DNS, Uplink, child_pid, fenced_prefixes, uplink_problem

CLIENT = """
import sys, time, urllib.request
base = sys.argv[1]
print("up", flush=True)  # the sandbox has set itself up: attach now
sys.stdin.readline()  # the uplink is attached
t = time.monotonic()
for _ in range(100):
    urllib.request.urlopen(base + "/small", timeout=10).read()
small = time.monotonic() - t
t = time.monotonic()
n = len(urllib.request.urlopen(base + "/big", timeout=60).read())
print(small, n / (time.monotonic() - t))
"""


def outward_address() -> str:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect(("192.0.2.123", 9))
        return str(s.getsockname()[0])


def serve(folder: Path) -> http.server.ThreadingHTTPServer:
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a: Any, **k: Any) -> None:
            super().__init__(*a, directory=str(folder), **k)

        def log_message(self, format: str, *args: Any) -> None:
            return

    srv = http.server.ThreadingHTTPServer((outward_address(), 0), Quiet)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


def one(mode: str, base: str, tmp: Path) -> tuple[float | None, float, float]:
    """(attach s or None, 100 small GETs s, download bytes/s) for one sandbox."""
    resolv = tmp / "resolv.conf"
    resolv.write_text(f"nameserver {UPLINK_DNS}\n", encoding="ascii")
    info_r, info_w = os.pipe()
    plan = SandboxPlan(home=tmp, network="uplink" if mode == "uplink" else "host", resolv_conf=resolv, info_fd=info_w)
    proc = subprocess.Popen([*bwrap_argv(plan), "/usr/bin/python3", "-c", CLIENT, base], pass_fds=(info_w,),
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    os.close(info_w)
    pid = child_pid(info_r)
    uplink, attach = None, None
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "up\n"  # as the runner: once the worker is up
        if mode == "uplink":
            t = time.monotonic()
            server = base.split("//", 1)[1].rsplit(":", 1)[0]
            fence = [p for p in fenced_prefixes() if p != f"{server}/32"]  # as Uplink.attach would, less the server
            uplink = Uplink.attach(pid, parent=proc.pid, fence=fence)
            attach = time.monotonic() - t
        out, _ = proc.communicate("go\n", timeout=300)
    finally:
        if uplink is not None:
            uplink.close()
        proc.kill()
        proc.wait(10)
    small, rate = map(float, out.split())
    return attach, small, rate


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--mb", type=int, default=64)
    args = ap.parse_args()
    if (why := probe() or uplink_problem()) is not None:
        raise SystemExit(f"cannot run here: {why}")
    modes = ("shared (--share-net)", "uplink")
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        (tmp / "www").mkdir()
        (tmp / "www" / "small").write_bytes(b"x" * 512)
        (tmp / "www" / "big").write_bytes(os.urandom(args.mb << 20))
        srv = serve(tmp / "www")
        base = f"http://{srv.server_address[0]}:{srv.server_address[1]}"
        runs: dict[str, list[tuple[float | None, float, float]]] = {m: [] for m in modes}
        try:
            for i in range(args.rounds):  # alternating, so drift hits both alike
                for mode in modes:
                    (tmp / f"h{i}-{mode[:6]}").mkdir()
                    runs[mode].append(one("uplink" if mode == "uplink" else "shared", base, tmp / f"h{i}-{mode[:6]}"))
        finally:
            srv.shutdown()
    print(f"{args.rounds} rounds, a sandbox's Python client against {base} (this machine's outward address)")
    print(f"{'network':<22} {'attach ms':>10} {'100 GETs ms':>12} {'download MB/s':>14}")
    med: dict[str, tuple[float, float]] = {}
    for mode in modes:
        attach = [a for a, _, _ in runs[mode] if a is not None]
        small = statistics.median(s for _, s, _ in runs[mode])
        rate = statistics.median(r for _, _, r in runs[mode]) / 2**20
        med[mode] = (small, rate)
        shown = f"{statistics.median(attach) * 1000:.1f}" if attach else "-"
        print(f"{mode:<22} {shown:>10} {small * 1000:>12.1f} {rate:>14.1f}")
    (s0, r0), (s1, r1) = med[modes[0]], med[modes[1]]
    print(f"uplink / shared: 100 GETs {s1 / s0:.2f}x the time, download {r1 / r0:.2f}x the throughput")


if __name__ == "__main__":
    main()

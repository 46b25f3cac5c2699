"""Boot a User-Mode Linux guest (Debian's `user-mode-linux`, Linux 6.1) whose root is this machine's
filesystem over hostfs and whose only cgroup hierarchy is v2, run a shell script in it as root, and
power it off. Boots in about 2 s; the guest has one CPU and `mem` of memory.

    console = boot(work, "python3 scenario.py out.json", mem="768M", timeout_s=300)

The script runs in the repository root with proc, sys, cgroup2 (memory, pids and cpu in one tree),
a tmpfs /dev/shm and the loopback interface up; whatever it writes under `work` (a folder of this
machine) is there after `boot` returns. Its stdout and stderr go to `work/guest.log`.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

UML = shutil.which("linux.uml")
ROOT = Path(__file__).parents[2]

INIT = """#!/bin/sh
# PID 1 of the guest: its own proc, sys, cgroup2 (the only hierarchy), /dev/shm and loopback; the script; off
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t cgroup2 none /sys/fs/cgroup
mkdir -p /dev/shm && mount -t tmpfs tmpfs /dev/shm
ip link set lo up 2>/dev/null
cd {root}
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root PYTHONDONTWRITEBYTECODE=1
export PYTHON={python}
({script}) > {log} 2>&1
echo "guest exit $?" >> {log}
sync  # nothing the script wrote is left in the guest's caches at the hard power-off
poweroff -f
"""


def boot(work: Path, script: str, *, mem: str, timeout_s: float) -> str:
    """Run `script` (shell; `$PYTHON` is this interpreter) in a fresh guest; returns the console and
    the guest's log as one text to show when an assert fails."""
    if UML is None:
        raise RuntimeError("linux.uml is not installed (apt-get install user-mode-linux)")
    log = work / "guest.log"
    init = work / "init.sh"
    init.write_text(INIT.format(root=ROOT, python=sys.executable, script=script, log=log), encoding="utf-8")
    init.chmod(0o755)
    console = subprocess.run([UML, f"mem={mem}", "rootfstype=hostfs", "rootflags=/", "rw", f"init={init}",
                              "con=null", "con0=fd:0,fd:1", f"uml_dir={work}"], cwd=work, stdin=subprocess.DEVNULL,
                             capture_output=True, text=True, timeout=timeout_s)
    return f"--- console\n{console.stdout[-2000:]}\n--- guest log\n{log.read_text() if log.exists() else '(none)'}"

"""tasks/disk_use.py on real files: allocated blocks, links not followed, the walk's bounds."""

from __future__ import annotations

import os
from pathlib import Path

from kimi_agent.tasks.disk_use import DiskUse, disk_use


def test_allocated_bytes_below_a_folder_count_and_links_are_not_followed(tmp_path: Path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "b" / "data").write_bytes(os.urandom(3 << 20))
    big_outside = tmp_path.parent / f"{tmp_path.name}-outside"
    big_outside.mkdir()
    (big_outside / "big").write_bytes(os.urandom(8 << 20))
    (tmp_path / "link").symlink_to(big_outside, target_is_directory=True)
    with open(tmp_path / "sparse", "wb") as f:  # 1 GiB long, one block written
        f.seek(1 << 30)
        f.write(b"x")
    used = disk_use(tmp_path, max_entries=100, max_depth=8)
    assert (3 << 20) <= used.bytes < (3 << 20) + (1 << 20), used  # the data, not the link's target nor the hole
    assert (used.entries, used.problem) == (5, None)  # a, a/b, a/b/data, link, sparse
    assert disk_use(tmp_path / "gone", max_entries=100, max_depth=8) == DiskUse(0, 0)


def test_the_walk_stops_at_its_cap(tmp_path: Path) -> None:
    for i in range(50):
        (tmp_path / f"f{i}").write_bytes(b"1")
    used = disk_use(tmp_path, max_entries=20, max_depth=8)
    assert used.problem == "more than 20 files and folders" and used.entries == 20
    assert disk_use(tmp_path, max_entries=50, max_depth=8).problem is None


def test_an_unreadable_folder_is_a_problem_not_an_empty_one(tmp_path: Path) -> None:
    (tmp_path / "locked").mkdir()
    (tmp_path / "locked" / "data").write_bytes(b"x" * 5000)
    (tmp_path / "locked").chmod(0)
    try:
        used = disk_use(tmp_path, max_entries=50, max_depth=8)
    finally:
        (tmp_path / "locked").chmod(0o755)
    if os.geteuid() == 0:  # root reads it anyway: counted
        assert used.problem is None and used.bytes >= 4096
    else:
        assert used.problem is not None and "cannot be read" in used.problem


def test_the_disk_check_waits_longer_the_longer_a_sweep_takes() -> None:
    from kimi_agent.tasks.worker_pool import DISK_CHECK_MIN_S, DISK_CHECK_S, disk_check_wait

    assert disk_check_wait(0.002) == DISK_CHECK_MIN_S  # a few ms of walking: every half second
    assert disk_check_wait(0.1) == 2.0  # 5% of a core
    assert disk_check_wait(3.0) == DISK_CHECK_S  # never more than 5 s apart


def test_a_worker_and_what_it_starts_cannot_write_a_file_past_the_disk_limit(tmp_path: Path) -> None:
    import subprocess
    import sys

    # the worker's own call, then a command as a task would run one: head is stopped by SIGXFSZ at
    # the cap, and raising the cap again is refused
    script = ("import resource, subprocess, sys; from kimi_agent.tasks.worker import cap_file_size; "
              "cap_file_size(1 << 20); "
              "rc = subprocess.run(['sh', '-c', 'head -c 3M /dev/zero > ' + sys.argv[1]]).returncode; "
              "raised = subprocess.run(['sh', '-c', 'ulimit -f unlimited']).returncode; print(rc, raised)")
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path / "big")], capture_output=True, text=True,
                          timeout=60, check=True)
    rc, raised = map(int, done.stdout.split())
    assert rc == 128 + 25 and raised != 0, done  # SIGXFSZ is 25 on Linux
    assert (tmp_path / "big").stat().st_size == 1 << 20

"""tasks/disk_use.py on real files: allocated blocks, links not followed, the walk's cap."""

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
    used = disk_use(tmp_path, max_entries=100)
    assert (3 << 20) <= used.bytes < (3 << 20) + (1 << 20), used  # the data, not the link's target nor the hole
    assert (used.entries, used.truncated) == (5, False)  # a, a/b, a/b/data, link, sparse
    assert disk_use(tmp_path / "gone", max_entries=100) == DiskUse(0, 0, False)


def test_the_walk_stops_at_its_cap(tmp_path: Path) -> None:
    for i in range(50):
        (tmp_path / f"f{i}").write_bytes(b"1")
    used = disk_use(tmp_path, max_entries=20)
    assert used.truncated and used.entries == 21
    assert not disk_use(tmp_path, max_entries=50).truncated

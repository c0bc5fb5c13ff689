"""Reading zip members one by one: re-opening the archive per member (what figures did) vs the shared cache of
open archives (attn_assets.zip_members), in the same process on the same members; prints the ratio.

Usage: python benchmarks/bench_zip_members.py [ARCHIVE] [MEMBERS]; without ARCHIVE, a 50,000-member archive of
small members is written to a temporary folder first (OSV-5M's archives hold about 50,000 photos each).
"""

from __future__ import annotations

import sys
import tempfile
import time
import zipfile
from pathlib import Path

from attn_assets.zip_members import close_archives, read_member


def _reopen(path: str, member: str) -> bytes:
    with zipfile.ZipFile(path) as handle:
        return handle.read(member)


def _median_seconds(read, path: str, members: list[str]) -> float:
    times = []
    for member in members:
        start = time.perf_counter()
        read(path, member)
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def main(argv: list[str]) -> None:
    count = int(argv[1]) if len(argv) > 1 else 20
    with tempfile.TemporaryDirectory() as tmp:
        path = argv[0] if argv else str(Path(tmp) / "00.zip")
        if not argv:
            with zipfile.ZipFile(path, "w") as handle:
                for k in range(50_000):
                    handle.writestr(f"00/{1_000_000 + k}.jpg", b"x" * 64)
        with zipfile.ZipFile(path) as handle:
            names = handle.namelist()
        members = names[:: max(1, len(names) // count)][:count]
        close_archives()
        start = time.perf_counter()
        read_member(path, members[0])  # the cache's one open, timed apart from the per-member reads
        first = time.perf_counter() - start
        cached = _median_seconds(read_member, path, members)
        reopened = _median_seconds(_reopen, path, members)
        close_archives()
    print(f"{len(names)} members, {len(members)} reads each way (median per read); the cache's first read "
          f"(the one open) {first * 1e3:.0f} ms")
    print(f"re-open per member: {reopened * 1e3:.2f} ms; open-archive cache: {cached * 1e3:.3f} ms; "
          f"ratio {reopened / cached:.0f}x")


if __name__ == "__main__":
    main(sys.argv[1:])

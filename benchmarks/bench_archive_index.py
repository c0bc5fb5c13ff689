"""What the manifest step pays to find OSV-5M images in zip archives, against the same images extracted.

Same process, same ids: ``--archives`` zip files of ``--members`` small members each (OSV-5M's
``images/<split>/NN.zip`` layout), and the same members extracted as files (``images/<split>/NN/<id>.jpg``).
Times, alternating the two layouts over ``--repeats`` and taking medians:

  extracted   build_image_index over the extracted files (os.scandir walk)
  archives    build_image_index over the archives (each archive's central directory read once)
  per_shard   what listing every archive again for each of ``--shards`` shards would cost (the design avoided)

Prints entries/s and the ratio archives / extracted. The member payloads are a few bytes: the index never
reads member data, so image size does not change these numbers.

    python benchmarks/bench_archive_index.py --archives 5 --members 4000 --repeats 5
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import zipfile
from pathlib import Path

from attn_assets.catalog.manifest import IMAGE_EXTENSIONS, build_image_index
from attn_assets.catalog.archives import list_archive_members


def make_layouts(base: Path, archives: int, members: int) -> tuple[Path, Path]:
    zipped, extracted = base / "zipped", base / "extracted"
    for a in range(archives):
        folder = extracted / "images" / "test" / f"{a:02d}"
        folder.mkdir(parents=True)
        path = zipped / "images" / "test" / f"{a:02d}.zip"
        path.parent.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(path, "w") as handle:
            for m in range(members):
                image_id = 3859149887000000 + a * members + m
                handle.writestr(f"{a:02d}/{image_id}.jpg", b"\xff\xd8")
                (folder / f"{image_id}.jpg").write_bytes(b"\xff\xd8")
    return zipped, extracted


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--archives", type=int, default=5)
    parser.add_argument("--members", type=int, default=4000)
    parser.add_argument("--shards", type=int, default=20, help="shards that would each list every archive again")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    entries = args.archives * args.members
    with tempfile.TemporaryDirectory() as tmp:
        zipped, extracted = make_layouts(Path(tmp), args.archives, args.members)
        assert len(build_image_index(zipped)) == len(build_image_index(extracted)) == entries
        names = sorted(os.path.relpath(p, zipped) for p in zipped.rglob("*.zip"))
        times: dict[str, list[float]] = {"extracted": [], "archives": [], "per_shard": []}
        for _ in range(args.repeats):
            times["extracted"].append(timed(lambda: build_image_index(extracted)))
            times["archives"].append(timed(lambda: build_image_index(zipped)))
            times["per_shard"].append(timed(lambda: [list_archive_members(str(zipped), n, IMAGE_EXTENSIONS)
                                                     for _ in range(args.shards) for n in names]))
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"{args.archives} archives x {args.members} members = {entries} images, medians of {args.repeats}")
    for name, seconds in med.items():
        print(f"  {name:10s} {seconds * 1000:9.1f} ms  {entries / seconds:12,.0f} entries/s")
    print(f"  archives / extracted = {med['archives'] / med['extracted']:.2f}")
    print(f"  listing every archive again in each of {args.shards} shards: {med['per_shard'] / med['archives']:.1f}x "
          "the one index")


if __name__ == "__main__":
    main()

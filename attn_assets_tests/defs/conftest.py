"""Fixtures for the Dagster layer: a temp ATTN_ASSETS_HOME and DAGSTER_HOME, and OSV-5M-style manifests."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import pytest

from attn_assets_tests.conftest import street_scene

OSV_HEADER = [
    "id", "latitude", "longitude", "thumb_original_url", "country", "sequence", "captured_at", "lon_bin",
    "lat_bin", "cell", "region", "sub-region", "city", "land_cover", "road_index", "drive_side", "climate",
    "soil", "dist_sea", "quadtree_10_5000", "unique_region", "unique_sub-region", "unique_city",
    "unique_country", "creator_username", "creator_id",
]

# (id, lat, lon, country, unique_country, drive_side)
GOOD_ROWS = [
    ("1000000000000001", 48.8566, 2.3522, "FR", "FR", "right"),
    ("1000000000000002", 45.7640, 4.8357, "FR", "FR", "right"),
    ("1000000000000003", -22.5609, 17.0658, "NA", "NA", "left"),
    ("1000000000000004", -19.9311, 17.3376, "NA", "NA", "left"),
    ("1000000000000005", 35.6762, 139.6503, "JP", "JP", "left"),
    ("1000000000000006", 34.6937, 135.5023, "", "JP", "left"),
    ("1000000000000007", 40.7128, -74.0060, "US", "US", "right"),
    ("1000000000000008", 52.5200, 13.4050, "", "", "right"),
    ("1000000000000009", -33.8688, 151.2093, "AU", "AU", "left"),
]


@dataclass
class PipelineFixture:
    home: Path
    dagster_home: Path
    image_root: Path
    manifest: Path
    image_ids: list[str]
    corrupt_id: str
    missing_ids: list[str]
    duplicate_id: str

    def image_path(self, image_id: str) -> Path:
        return self.image_root / "images" / "test" / "00" / f"{image_id}.jpg"


def osv_row(image_id, lat, lon, country, unique_country, drive_side) -> dict:
    row = {name: "" for name in OSV_HEADER}
    row.update(id=image_id, latitude=lat, longitude=lon, country=country, unique_country=unique_country,
               drive_side=drive_side, sequence=f"seq-{image_id[-3:]}", captured_at="2021-06-01",
               creator_username="tester", creator_id="42")
    return row


def write_osv_manifest(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=OSV_HEADER)
        writer.writeheader()
        writer.writerows(rows)


def write_scene(path: Path, seed: int, size=(160, 112)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    street_scene(size[0], size[1], seed).save(path, quality=90)


@pytest.fixture
def pipeline_env(tmp_path, monkeypatch, tiny_model_dir) -> PipelineFixture:
    """A mixed OSV-5M manifest: good images, two without files, one corrupt, one duplicate id."""
    root = tmp_path / "osv"
    fixture = PipelineFixture(
        home=tmp_path / "home", dagster_home=tmp_path / "dagster_home", image_root=root,
        manifest=root / "test.csv", image_ids=[r[0] for r in GOOD_ROWS], corrupt_id="1000000000000010",
        missing_ids=["1000000000000011", "1000000000000012"], duplicate_id=GOOD_ROWS[0][0],
    )
    for i, image_id in enumerate(fixture.image_ids):
        write_scene(fixture.image_path(image_id), seed=i, size=(160 + 24 * (i % 3), 112))
    fixture.image_path(fixture.corrupt_id).write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    rows = [osv_row(*r) for r in GOOD_ROWS]
    rows.append(osv_row(fixture.corrupt_id, 41.9, 12.5, "IT", "IT", "right"))
    rows += [osv_row(i, 10.0, 10.0, "NG", "NG", "right") for i in fixture.missing_ids]
    rows.append(osv_row(fixture.duplicate_id, 1.0, 1.0, "FR", "FR", "right"))
    write_osv_manifest(fixture.manifest, rows)
    fixture.dagster_home.mkdir()

    env = {
        "ATTN_ASSETS_HOME": fixture.home, "DAGSTER_HOME": fixture.dagster_home, "ATTN_ASSETS_MANIFEST": fixture.manifest,
        "ATTN_ASSETS_IMAGE_ROOT": root, "ATTN_ASSETS_MODEL": tiny_model_dir, "ATTN_ASSETS_DEVICE": "cpu",
        "ATTN_ASSETS_SHARD_SIZE": 4, "ATTN_ASSETS_NUM_WORKERS": 0, "ATTN_ASSETS_BATCH_SIZE": 3,
        "ATTN_ASSETS_GALLERY_SIZE": 3,
    }
    for name, value in env.items():
        monkeypatch.setenv(name, str(value))
    return fixture


@pytest.fixture
def instance(pipeline_env):
    import dagster as dg

    with dg.DagsterInstance.get() as instance:
        yield instance

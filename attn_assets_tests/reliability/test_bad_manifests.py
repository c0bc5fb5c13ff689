"""Hostile manifests, through `read_manifest` and through the image_manifest asset (materialize_all).

File-level problems raise ManifestError: the manifest run fails, its message is in the summary
lines, and nothing computed before is lost (every file under ATTN_ASSETS_HOME is byte-identical,
the registered shards are unchanged). Row-level problems become `manifest_rejections` rows with a
reason; paths that leave ATTN_ASSETS_IMAGE_ROOT are rejected without ever being opened.

The 1,000,000-row validation speed is measured by attn_assets_tests/catalog/test_manifest.py::
test_million_row_plain_manifest (slow; prints the seconds, asserts < 60 s); not duplicated here.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pandas as pd
import pytest

from attn_assets.catalog.manifest import ManifestError, escape_reason, read_manifest
from attn_assets.defs.partitions import SHARD_PARTITIONS_NAME
from attn_assets.orchestration import materialize_all
from attn_assets.storage.layout import HomeLayout
from attn_assets.storage.warehouse import Warehouse
from attn_assets_tests.reliability.conftest import audit_opens

HEADER = "image_id,path,country,latitude,longitude\n"

# name -> (bytes of the manifest, expected ManifestError text after "<path>: ")
FILE_LEVEL: dict[str, tuple[bytes, str]] = {
    "missing_required_column": (
        b"image_id,country\nimg1,FR\n",
        "missing required column(s) 'path' for a plain image list; columns found: 'image_id', 'country'",
    ),
    "empty_file": (b"", "the file is empty (no header line)"),
    "header_only": (b"image_id,path,country\n", "the file has a header but no data rows"),
    "semicolon_delimiter": (
        b"image_id;path;country\nimg1;img/a.jpg;FR\n",
        "missing required columns: need 'image_id' and 'path' (plain image list) or 'id', 'latitude' and "
        "'longitude' (OpenStreetView-5M metadata); columns found: 'image_id;path;country'. The header looks "
        "delimited by semicolons: manifests must be comma-separated CSV",
    ),
    "not_utf8": (
        "image_id,path,country\ncafé,img/a.jpg,FR\n".encode("latin-1"),
        "not valid UTF-8 (byte 0xe9 at byte offset 25, line 2); re-encode the file to UTF-8, e.g. "
        "`iconv -f latin1 -t utf-8 in.csv > out.csv`",
    ),
}

# ids that must reach DuckDB exactly as written
ODD_IDS = ['he said "hi"', "a,b,c", "café ☕ 東京", "  spaced  id  ", "it's", "'; DROP TABLE images; --"]

COUNTRY_HINT = "; write a two-letter code such as FR, or leave the cell empty to take the country from the coordinates"
RANGE_HINT = "; check that the columns are degrees and not swapped"


def _bad_rows(outside: Path, root: Path) -> list[tuple[str, str, str, str, str, str, str]]:
    """(image_id, path, country, lat, lon, rejected column, reason) of row-level problems under image root ``root``."""
    escape = escape_reason(root.resolve())
    return [
        ("good_0", "img/good_1.jpg", "FR", "", "", "image_id",
         "duplicate image_id 'good_0': first seen at line 2; paths differ ('img/good_0.jpg' there, 'img/good_1.jpg' here)"),
        ("lat95", "img/good_0.jpg", "FR", "95", "10", "latitude", "latitude 95 is outside [-90, 90]" + RANGE_HINT),
        ("lon200", "img/good_0.jpg", "FR", "10", "200", "longitude", "longitude 200 is outside [-180, 180]" + RANGE_HINT),
        ("nan_coords", "img/good_0.jpg", "FR", "NaN", "NaN", "latitude", "latitude 'NaN' is not a number; write decimal degrees such as 48.8566"),
        ("bad_iso", "img/good_0.jpg", "FRA", "", "", "country", "country 'FRA' is not an ISO 3166-1 alpha-2 code" + COUNTRY_HINT),
        ("absolute_outside", str(outside), "FR", "", "", "path", escape),
        ("dotdot_outside", "../outside/secret.jpg", "FR", "", "", "path", escape),
    ]


def _csv_field(value: str) -> str:
    return '"' + value.replace('"', '""') + '"' if any(c in value for c in ',"\n\'') or value != value.strip() else value


def _good_lines(ids: list[str]) -> str:
    return "".join(f"{_csv_field(i)},img/good_{k}.jpg,FR,,\n" for k, i in enumerate(ids))


def _bad_lines(outside: Path) -> str:
    return "".join(",".join(_csv_field(v) for v in row[:5]) + "\n" for row in _bad_rows(outside, outside.parent))


# --------------------------------------------------------------------------- read_manifest


@pytest.mark.parametrize("name", sorted(FILE_LEVEL))
def test_file_level_problems_raise_manifest_error(tmp_path, name):
    data, expected = FILE_LEVEL[name]
    manifest = tmp_path / "manifest.csv"
    manifest.write_bytes(data)
    with pytest.raises(ManifestError) as caught:
        read_manifest(manifest, image_root=tmp_path)
    assert str(caught.value) == f"{manifest}: {expected}"


def test_row_level_problems_are_rejections_and_never_opened(tmp_path):
    root, outside = tmp_path / "root", tmp_path / "outside" / "secret.jpg"
    (root / "img").mkdir(parents=True)
    outside.parent.mkdir()
    outside.write_bytes(b"not even an image")
    for k in range(len(ODD_IDS) + 2):
        (root / "img" / f"good_{k}.jpg").write_bytes(b"x")
    ids = ["good_0", "good_1", *ODD_IDS]
    manifest = root / "manifest.csv"
    manifest.write_text(HEADER + _good_lines(ids) + _bad_lines(outside), encoding="utf-8")
    with audit_opens() as opened:
        result = read_manifest(manifest, image_root=root, geocode=False)
    assert audit_opens.touched(opened, outside) == []
    assert result.images["image_id"].tolist() == ids
    got = result.rejections[["image_id", "column", "reason"]].to_records(index=False).tolist()
    assert got == [(r[0], r[5], r[6]) for r in _bad_rows(outside, root)]
    assert result.rejections["source_row"].tolist() == list(range(len(ids) + 2, len(ids) + 2 + len(_bad_rows(outside, root))))


# --------------------------------------------------------------------------- through the asset


def _snapshot(home: Path) -> dict[str, str]:
    return {
        str(p.relative_to(home)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(home.rglob("*")) if p.is_file() and not p.name.endswith(".writelock")
    }


@pytest.mark.slow
def test_bad_manifests_through_the_asset_lose_nothing(plain_env, plain_instance):
    root = plain_env.image_root
    outside = plain_env.tmp / "outside" / "secret.jpg"
    ids = ["good_0", "good_1", *ODD_IDS]
    for k in range(len(ids)):
        plain_env.scene(f"img/good_{k}.jpg", seed=k)
    os.makedirs(outside.parent)
    plain_env.scene("../outside/secret.jpg", seed=99)
    manifest = plain_env.manifest
    manifest.write_text(HEADER + _good_lines(ids), encoding="utf-8")

    first = materialize_all(instance=plain_instance)
    assert first.ok, "\n".join(first.lines)
    store = Warehouse(HomeLayout(plain_env.home).warehouse_path)
    # ids with quotes, commas, unicode, spaces and SQL round-trip exactly; nothing was dropped
    assert sorted(store.query("SELECT image_id FROM images").image_id) == sorted(ids)
    assert sorted(store.query("SELECT image_id FROM attention_statistics").image_id) == sorted(ids)
    assert store.query("SELECT count(*) AS n FROM images WHERE image_id = ?", [ODD_IDS[-1]]).n.iloc[0] == 1
    tables = {t: store.query(f"SELECT * FROM {t} ORDER BY ALL") for t in ("images", "attention_statistics")}
    before = _snapshot(plain_env.home)
    shards = plain_instance.get_dynamic_partitions(SHARD_PARTITIONS_NAME)
    assert any(k.startswith("shards/") for k in before) and any(k.startswith("warehouse/") for k in before)

    for name, (data, expected) in FILE_LEVEL.items():
        manifest.write_bytes(data)
        summary = materialize_all(instance=plain_instance)
        assert not summary.ok, name
        assert summary.lines[0].startswith("image_manifest: FAILED"), summary.lines
        assert any(line.strip().endswith(f"ManifestError: {manifest}: {expected}") for line in summary.lines), (
            name, summary.lines)
        assert all(line.startswith("  ") for line in summary.lines[1:]), summary.lines  # nothing ran after it
        assert _snapshot(plain_env.home) == before, name
        assert plain_instance.get_dynamic_partitions(SHARD_PARTITIONS_NAME) == shards

    # row-level problems: the run succeeds, each bad row is one rejection, the good rows are kept
    manifest.write_text(HEADER + _good_lines(ids) + _bad_lines(outside), encoding="utf-8")
    with audit_opens() as opened:
        summary = materialize_all(instance=plain_instance)
    assert summary.ok, "\n".join(summary.lines)
    assert "attention_statistics: every shard up to date" in summary.lines
    assert audit_opens.touched(opened, outside) == []
    rejections = store.query("SELECT image_id, column_name, reason FROM manifest_rejections ORDER BY source_row")
    assert rejections.to_records(index=False).tolist() == [(r[0], r[5], r[6]) for r in _bad_rows(outside, root)]
    assert "secret" not in " ".join(store.query("SELECT path FROM images").path)
    for table, frame in tables.items():
        pd.testing.assert_frame_equal(store.query(f"SELECT * FROM {table} ORDER BY ALL"), frame, obj=table)
    kept = {k: v for k, v in _snapshot(plain_env.home).items() if k.startswith("shards/")}
    assert kept == {k: v for k, v in before.items() if k.startswith("shards/")}

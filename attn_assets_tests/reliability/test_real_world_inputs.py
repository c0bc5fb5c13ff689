"""Inputs modelled on public bug reports: missing text values, non-UTF-8 file names, column names that
differ only in case, and OSV-5M ids written as floats. Each builds real files and asserts exact rows.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from attn_assets.catalog.manifest import ManifestError, read_manifest
from attn_assets.path_text import path_to_text, text_to_path
from attn_assets.orchestration import materialize_all
from attn_assets.storage.layout import HomeLayout
from attn_assets.storage.warehouse import Warehouse
from attn_assets_tests.conftest import street_scene

LATIN1_FOLDER = os.fsdecode(b"caf\xe9")  # 'caf\udce9': a Latin-1 name as Python lists it
LATIN1_TEXT = "caf\\xe9"  # how every table, file and log writes it


def _scene(path: Path | str, seed: int) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    street_scene(96, 72, seed).save(path, quality=90)


def _write_csv(path: Path, rows: list[dict]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


# --------------------------------------------------------------------------- non-UTF-8 names


def test_path_text_round_trip(tmp_path):
    raw = os.path.join(os.fsdecode(tmp_path), LATIN1_FOLDER, os.fsdecode(b"\xff.jpg"))
    text = path_to_text(raw)
    assert text.endswith(f"{LATIN1_TEXT}/\\xff.jpg") and text.encode("utf-8")
    assert text_to_path(text) == raw
    assert path_to_text("ünïcødé/東京.jpg") == "ünïcødé/東京.jpg"
    # a real UTF-8 name that contains the characters \xe9 opens under its own name
    literal = tmp_path / "a\\xe9.jpg"
    literal.write_bytes(b"x")
    assert text_to_path(str(literal)) == str(literal)


def test_odd_names_under_an_osv_root(tmp_path):
    """An unrelated non-UTF-8 name is ignored; a referenced image in a Latin-1 folder is found and stored escaped."""
    root = os.fsdecode(tmp_path)
    _scene(os.path.join(root, "images", LATIN1_FOLDER, "111.jpg"), 1)
    _scene(os.path.join(root, "images", "00", "222.jpg"), 2)
    Path(os.path.join(root, "images", "00", os.fsdecode(b"\xe9t\xe9.jpg"))).write_bytes(b"unrelated")
    manifest = _write_csv(tmp_path / "test.csv", [
        {"id": "111", "latitude": "48.85", "longitude": "2.35", "country": "FR"},
        {"id": "222", "latitude": "52.52", "longitude": "13.40", "country": "DE"},
    ])
    result = read_manifest(manifest, image_root=tmp_path)
    assert result.rejections.empty
    assert result.images["path"].tolist() == [f"images/{LATIN1_TEXT}/111.jpg", "images/00/222.jpg"]
    opened = text_to_path(result.images["abs_path"].iloc[0])
    assert os.path.isfile(opened) and LATIN1_FOLDER in opened


def test_manifest_file_with_a_latin1_name(tmp_path):
    _scene(tmp_path / "a.jpg", 1)
    manifest = os.path.join(os.fsdecode(tmp_path), os.fsdecode(b"liste_\xe9t\xe9.csv"))
    Path(manifest).write_text("image_id,path\na,a.jpg\n", encoding="utf-8")
    result = read_manifest(manifest, image_root=tmp_path)
    assert result.images["source_file"].iloc[0].endswith("liste_\\xe9t\\xe9.csv")
    with pytest.raises(ManifestError, match=r"liste_\\xe9t\\xe9\.csv: the file has a header but no data rows"):
        Path(manifest).write_text("image_id,path\n", encoding="utf-8")
        read_manifest(manifest, image_root=tmp_path)


def test_manifest_and_image_root_named_by_escaped_text(tmp_path, monkeypatch):
    folder = os.path.join(os.fsdecode(tmp_path), LATIN1_FOLDER)
    _scene(os.path.join(folder, "a.jpg"), 1)
    Path(folder, "m.csv").write_text("image_id,path\na,a.jpg\n", encoding="utf-8")
    escaped = path_to_text(folder)
    monkeypatch.setenv("ATTN_ASSETS_IMAGE_ROOT", escaped)
    result = read_manifest(f"{escaped}/m.csv")
    assert result.images["abs_path"].tolist() == [f"{escaped}/a.jpg"]
    with pytest.raises(ManifestError) as error:
        read_manifest(f"{escaped}/gone.csv")
    assert str(error.value) == f"manifest file '{escaped}/gone.csv' does not exist"


@pytest.mark.slow
def test_extract_on_a_folder_with_latin1_names(tmp_path, tiny_model_dir):
    folder = os.path.join(os.fsdecode(tmp_path), "photos")
    good = os.path.join(folder, os.fsdecode(b"caf\xe9.jpg"))
    broken = os.path.join(folder, os.fsdecode(b"\xe9t\xe9.jpg"))
    _scene(good, 3)
    Path(broken).write_bytes(b"not a jpeg")
    out = tmp_path / "out.parquet"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ATTN_ASSETS_")}
    done = subprocess.run(
        [sys.executable, "-m", "attn_assets.cli", "extract", "--model", str(tiny_model_dir), "--out", str(out),
         "--device", "cpu", "--quiet", os.fsencode(folder)],
        capture_output=True, env=env, timeout=300,
    )
    stderr = done.stderr.decode("utf-8")  # strict: the output is valid UTF-8
    assert done.returncode == 0, stderr
    rows = pq.read_table(out).to_pandas().set_index("image_path")
    good_text, broken_text = path_to_text(good), path_to_text(broken)
    assert sorted(rows.index) == sorted([good_text, broken_text])
    assert pd.isna(rows.loc[good_text, "failure_reason"]) and rows.loc[good_text, "attention_entropy"] > 0
    assert rows.loc[broken_text, "failure_reason"].startswith("not a readable image")
    assert f"failed: {broken_text}: not a readable image" in stderr
    assert "1 images computed, 1 failed" in done.stdout.decode("utf-8")


# --------------------------------------------------------------------------- column names differing in case


def test_columns_differing_only_in_case(tmp_path):
    _scene(tmp_path / "a.jpg", 1)
    manifest = tmp_path / "m.csv"
    manifest.write_text(
        "image_id,path,country,Country,drive_side,Drive_Side,Shard_Key,Abs_Path\n"
        "a,a.jpg,FR,France,1,right,s9,/x\n", encoding="utf-8")
    images = read_manifest(manifest, image_root=tmp_path, geocode=False).images
    # drive_side is OSV-5M's typed column (1 = left); Drive_Side is kept as an extra column of its own
    assert images.loc[0, ["country", "manifest_Country", "drive_side", "Drive_Side", "manifest_Shard_Key",
                          "manifest_Abs_Path"]].tolist() == ["FR", "France", "left", "right", "s9", "/x"]
    manifest.write_text("image_id,path,Path,manifest_Path\na,a.jpg,p,q\n", encoding="utf-8")
    with pytest.raises(ManifestError, match=r"columns 'Path' would be kept as 'manifest_Path', which the file "
                                            r"already has; rename one of them"):
        read_manifest(manifest, image_root=tmp_path, geocode=False)


# --------------------------------------------------------------------------- OSV-5M ids written as floats

FLOAT_IDS = [
    # (written, expected image_id or None, expected rejection reason or None)
    ("3859149887473420.0", "3859149887473420", None),
    ("3.859149887481337e+15", "3859149887481337", None),
    ("3859149887473420", None, "duplicate id '3859149887473420': first seen at line 2"),
    ("3.85915E+15", None,
     "id '3.85915E+15' is written as a float; it denotes the integer 3859150000000000 but no image file "
     "3859150000000000.jpg is under the image root, so the float has probably lost digits. "),
    ("3859149887473420.5", None, "id '3859149887473420.5' is not an integer (OSV-5M ids are whole numbers). "),
    ("9007199254740993.0", None,
     "id '9007199254740993.0' is written as a float at or beyond 2**53, where floats cannot hold every integer: its "
     "digits may have been rounded to another image's id. "),
    ("abc", None, "id 'abc' is not an integer (OSV-5M ids are whole numbers). "),
]


def test_osv_ids_written_as_floats(tmp_path):
    for image_id in ("3859149887473420", "3859149887481337", "9007199254740992"):
        _scene(tmp_path / "images" / f"{image_id}.jpg", int(image_id[-3:]))
    manifest = _write_csv(tmp_path / "test.csv", [
        {"id": written, "latitude": "48.85", "longitude": "2.35", "country": "FR"} for written, _, _ in FLOAT_IDS
    ])
    result = read_manifest(manifest, image_root=tmp_path)
    assert result.images["image_id"].tolist() == [i for _, i, _ in FLOAT_IDS if i]
    assert result.images["path"].tolist() == ["images/3859149887473420.jpg", "images/3859149887481337.jpg"]
    got = dict(zip(result.rejections["raw"].map(lambda raw: json.loads(raw)["id"]), result.rejections["reason"]))
    for written, _, reason in FLOAT_IDS:
        if reason is None:
            continue
        assert got[written].startswith(reason), (written, got[written])
        if "float" in reason or "integer" in reason:
            assert got[written].endswith("format the column as Text before pasting), or re-download the original "
                                         "metadata CSV."), got[written]
    assert set(result.rejections["column"]) == {"id"}


# --------------------------------------------------------------------------- end to end


@pytest.mark.slow
def test_minimal_list_odd_names_and_case_columns_end_to_end(plain_env, plain_instance):
    """The README's minimal list (image_id,path; no country) computes every image; a Latin-1 folder named by
    its escaped text is processed; case-only column names reach images.extra as distinct keys."""
    root = os.fsdecode(plain_env.image_root)
    _scene(os.path.join(root, LATIN1_FOLDER, "c.jpg"), 3)
    for k, name in enumerate(("a", "b")):
        _scene(os.path.join(root, f"{name}.jpg"), k)
    plain_env.manifest.write_text(
        "image_id,path,camera,Camera\n"
        "a,a.jpg,1,right\n"
        "b,b.jpg,,left\n"
        f"c,{LATIN1_TEXT}/c.jpg,0,\n", encoding="utf-8")
    summary = materialize_all(instance=plain_instance)
    assert summary.ok, "\n".join(summary.lines)
    layout = HomeLayout(plain_env.home)
    store = Warehouse(layout.warehouse_path)

    stats = store.query("SELECT image_id, country, attention_entropy FROM attention_statistics ORDER BY image_id")
    assert stats["image_id"].tolist() == ["a", "b", "c"]
    assert stats["country"].isna().all() and stats["attention_entropy"].notna().all()
    assert store.query("SELECT count(*) AS n FROM image_failures").n.iloc[0] == 0
    images = store.query("SELECT image_id, path, country, country_name, extra->>'camera' AS lower_side, "
                         "extra->>'Camera' AS upper_side FROM images ORDER BY image_id")
    assert images["path"].tolist() == ["a.jpg", "b.jpg", f"{LATIN1_TEXT}/c.jpg"]
    assert images["country"].isna().all() and images["country_name"].isna().all()
    # an empty cell is NULL (NaN in pandas' str column), not ''
    assert images["lower_side"].fillna("<NULL>").tolist() == ["1", "<NULL>", "0"]
    assert images["upper_side"].fillna("<NULL>").tolist() == ["right", "left", "<NULL>"]
    aggregates = store.query("SELECT country, country_name, image_count FROM country_aggregates")
    assert aggregates.to_dict("records") == [{"country": None, "country_name": "unknown", "image_count": 3}]

    export = pd.read_csv(layout.analysis_dir / "attention_statistics.csv", dtype=str, keep_default_na=False)
    assert export[["image_id", "country"]].to_dict("records") == [
        {"image_id": i, "country": ""} for i in ("a", "b", "c")]
    index = pd.read_csv(layout.visualizations_dir / "high_entropy" / "index.csv", dtype=str, keep_default_na=False)
    assert set(index["country"]) == {""} and set(index["status"]) == {"ok"}

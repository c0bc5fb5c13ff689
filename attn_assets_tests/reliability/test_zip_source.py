"""OSV-5M read as it ships: images/<split>/NN.zip under the image root, materialized end to end into DuckDB."""

from __future__ import annotations

import io
import subprocess
import sys
import zipfile
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pytest
from PIL import Image

import attn_assets.core.image_source as image_source
import attn_assets.zip_members as zip_members
from attn_assets.catalog.manifest import read_manifest
from attn_assets.core.extract import extract_to_frame
from attn_assets.core.image_source import open_image
from attn_assets.core.loader import ImageRecord
from attn_assets.core.model import load_encoder
from attn_assets.figures.geometry import image_file
from attn_assets.metric_names import METRIC_NAMES
from attn_assets.orchestration import materialize_all
from attn_assets.storage.layout import HomeLayout
from attn_assets.storage.warehouse import Warehouse
from attn_assets_tests.conftest import street_scene

OSV_HEADER = "id,latitude,longitude,country,drive_side,climate,land_cover,captured_at,sub-region"
LATIN1_FOLDER = b"s\xe9rie"  # a member folder name in Latin-1, stored without zip's UTF-8 flag


def _jpeg(seed: int, size=(96, 72)) -> bytes:
    buffer = io.BytesIO()
    street_scene(size[0], size[1], seed).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def _corrupt_deflated_member(path: Path, name: str) -> None:
    """Flip bytes in the middle of a deflated member's data: its CRC-32 (or inflate) fails when read."""
    with zipfile.ZipFile(path) as handle:
        info = handle.getinfo(name)
    blob = bytearray(path.read_bytes())
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    for k in range(start + info.compress_size // 3, start + info.compress_size // 3 + 16):
        blob[k] ^= 0xFF
    path.write_bytes(bytes(blob))


def _osv_zip_layout(root: Path) -> dict[str, bytes]:
    """images/test/00.zip and 01.zip (OSV-5M's layout); returns the good members' bytes by id."""
    good = {f"10{k}": _jpeg(k, size=(96 + 8 * k, 72)) for k in range(5)}
    archive0 = root / "images" / "test" / "00.zip"
    archive0.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(archive0, "w", compression=zipfile.ZIP_DEFLATED) as handle:
        handle.writestr("00/100.jpg", good["100"])
        handle.writestr("00/101.jpg", good["101"])
        handle.writestr("00/900.jpg", b"\xff\xd8\xff\xe0 not really a jpeg")  # decodes to nothing
        handle.writestr("00/901.jpg", _jpeg(9) * 4)  # deflate compresses it; its data is damaged below
        handle.writestr("00/XXXXX/102.jpg", good["102"])  # renamed to the Latin-1 folder below
    _corrupt_deflated_member(archive0, "00/901.jpg")
    blob = archive0.read_bytes()
    assert blob.count(b"XXXXX") == 2
    archive0.write_bytes(blob.replace(b"XXXXX", LATIN1_FOLDER))
    with zipfile.ZipFile(root / "images" / "test" / "01.zip", "w") as handle:
        handle.writestr("103.jpg", good["103"])
        handle.writestr("104.jpg", good["104"])
    return good


def test_figures_open_archive_members(tmp_path):
    data = _jpeg(3)
    archive = tmp_path / "00.zip"
    with zipfile.ZipFile(archive, "w") as handle:
        handle.writestr("00/1.jpg", data)
        handle.writestr("00/2.jpg", b"not an image")
    image = image_file(str(archive), "00/1.jpg")
    with Image.open(io.BytesIO(data)) as expected:
        np.testing.assert_array_equal(np.asarray(image.convert("RGB")), np.asarray(expected.convert("RGB")))
    assert image_file(str(archive), "00/2.jpg") is None  # unreadable member: no picture, the gallery skips it
    assert image_file(str(archive), "00/3.jpg") is None  # no such member
    assert image_file(str(tmp_path / "gone.zip"), "00/1.jpg") is None
    assert image_file(str(archive)) == str(archive)  # without a member: the file itself, as before


@pytest.fixture
def _no_open_archives():
    zip_members.close_archives()
    yield
    zip_members.close_archives()


def test_figures_read_members_through_one_open_archive(tmp_path, monkeypatch, _no_open_archives):
    """Re-opening an archive per image re-reads its whole central directory (0.6 s on 50,000 members)."""
    archive = tmp_path / "00.zip"
    with zipfile.ZipFile(archive, "w") as handle:
        for k in range(6):
            handle.writestr(f"00/{k}.jpg", _jpeg(k))
    opened = []
    real = zipfile.ZipFile

    def counting(*args, **kwargs):
        opened.append(args[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(zip_members.zipfile, "ZipFile", counting)
    images = [image_file(str(archive), f"00/{k % 6}.jpg") for k in range(18)]
    assert all(isinstance(image, Image.Image) for image in images)
    assert len(opened) == 1


def test_figures_stay_torch_free():
    code = "import sys, attn_assets.figures.geometry; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_a_name_stored_twice_in_one_archive_reads_the_entry_the_index_recorded(tmp_path, _no_open_archives):
    path = tmp_path / "images/test/00.zip"
    path.parent.mkdir(parents=True)
    first, second = _jpeg(1), _jpeg(2)
    with zipfile.ZipFile(path, "w") as handle, pytest.warns(UserWarning, match="Duplicate name"):
        handle.writestr("101.jpg", first)
        handle.writestr("101.jpg", second)
    with zipfile.ZipFile(path) as handle:
        assert handle.read("101.jpg") == second  # what a read by name alone returns
    listed = tmp_path / "test.csv"
    listed.write_text("id,latitude,longitude\n101,48.85,2.35\n", encoding="utf-8")
    images = read_manifest(listed, image_root=tmp_path, geocode=False).images
    record = ImageRecord("101", str(tmp_path / images["path"].iloc[0]), images["member"].iloc[0])
    assert image_source.read_member(record.path, record.member) == first
    assert open_image(record).tobytes() == Image.open(io.BytesIO(first)).convert("RGB").tobytes()
    assert image_file(record.path, record.member).tobytes() == Image.open(io.BytesIO(first)).tobytes()


def test_open_archives_are_capped_least_recently_used_first(tmp_path, _no_open_archives):
    paths = []
    for k in range(zip_members.MAX_OPEN_ARCHIVES + 2):
        paths.append(str(tmp_path / f"{k:02d}.zip"))
        with zipfile.ZipFile(paths[-1], "w") as handle:
            handle.writestr("a.jpg", f"archive {k}".encode())
    first = image_source.archive(paths[0])
    for path in paths[1:]:
        image_source.read_member(path, "a.jpg")
    assert zip_members.open_archive_count() == zip_members.MAX_OPEN_ARCHIVES
    assert first.fp is None  # evicted and closed
    assert image_source.read_member(paths[0], "a.jpg") == b"archive 0"  # opened again on demand
    image_source.close_archives()
    assert zip_members.open_archive_count() == 0


@pytest.mark.slow
def test_zip_archives_end_to_end(plain_env, plain_instance, tiny_model_dir, tmp_path):
    root = plain_env.image_root
    good = _osv_zip_layout(root)
    rows = [("100", "1", "15", "2021-06-01"), ("101", "0", "15", "1461772345000"), ("102", "1", "8", ""),
            ("103", "0", "8", ""), ("104", "", "", ""), ("900", "0", "8", ""), ("901", "0", "8", ""),
            ("999", "0", "8", "")]  # 999: no such member
    plain_env.manifest.write_text(
        OSV_HEADER + "\n" + "".join(f"{i},48.85,2.35,FR,{side},{climate},4,{captured},\n"
                                    for i, side, climate, captured in rows), encoding="utf-8")
    summary = materialize_all(instance=plain_instance)
    assert summary.ok, "\n".join(summary.lines)
    store = Warehouse(HomeLayout(plain_env.home).warehouse_path)
    event = plain_instance.get_latest_materialization_event(dg.AssetKey("image_manifest"))
    assert event.asset_materialization.metadata["images_in_zip_archives"].value == 7

    images = store.query("SELECT image_id, path, member, drive_side, climate, captured_at FROM images "
                         "ORDER BY image_id").set_index("image_id")
    assert images.loc["100", ["path", "member"]].tolist() == ["images/test/00.zip", "00/100.jpg"]
    assert images.loc["103", ["path", "member"]].tolist() == ["images/test/01.zip", "103.jpg"]
    assert images.loc["102", "member"] == "00/" + LATIN1_FOLDER.decode("cp437") + "/102.jpg"
    assert images.loc["100", ["drive_side", "climate"]].tolist() == ["left", 15]
    assert images.loc["101", "captured_at"] == pd.Timestamp("2016-04-27 15:52:25")

    # the missing member is a manifest rejection; the corrupt members are image failures naming archive and member
    rejections = store.query("SELECT image_id, column_name, reason FROM manifest_rejections")
    assert rejections["image_id"].tolist() == ["999"]
    assert rejections["reason"].iloc[0].startswith("image file 999.jpg not found under image root nor in its 2 zip archives")
    failures = store.query("SELECT image_id, reason FROM image_failures ORDER BY image_id").set_index("image_id")
    assert list(failures.index) == ["900", "901"]
    assert failures.loc["900", "reason"].startswith("zip member '00/900.jpg' in ")
    assert "truncated image file" in failures.loc["900", "reason"]  # JPEG markers, then no image data
    assert failures.loc["901", "reason"].startswith("corrupt zip member '00/901.jpg' in ")
    assert failures.loc["901", "reason"].split(" in ", 1)[1].startswith(str(root.resolve() / "images/test/00.zip"))

    # each member's statistics equal those of the same bytes extracted to files, in the same order and batches
    stats = store.query(f"SELECT image_id, {', '.join(METRIC_NAMES)} FROM attention_statistics ORDER BY image_id")
    assert stats["image_id"].tolist() == sorted(good)
    extracted = tmp_path / "extracted"
    extracted.mkdir()
    members = store.query("SELECT image_id, abs_path, member FROM images")
    records = []
    with zipfile.ZipFile(root / "images/test/00.zip") as first, zipfile.ZipFile(root / "images/test/01.zip") as second:
        for row in members.itertuples():
            target = extracted / f"{row.image_id}.jpg"
            handle = first if row.abs_path.endswith("00.zip") else second
            try:
                target.write_bytes(handle.read(row.member))
            except zipfile.BadZipFile:
                continue  # the damaged member: a failure on both sides
            records.append(ImageRecord(row.image_id, str(target)))
    order = pd.read_parquet(HomeLayout(plain_env.home).images_parquet)["image_id"].tolist()
    records.sort(key=lambda r: order.index(r.image_id))
    # the damaged member never reaches a batch on either side, so the batches below hold the same images in the
    # same order as the shard's (batch size 4): the same float32 operations, hence identical numbers
    expected, _, _ = extract_to_frame(load_encoder(str(tiny_model_dir), "cpu"), records, batch_size=4)
    expected = expected.set_index("image_id").sort_index()
    for metric in METRIC_NAMES:
        np.testing.assert_array_equal(stats[metric].to_numpy(float), expected[metric].to_numpy(float), err_msg=metric)

    # figures open archive members too: every gallery image drawn, none skipped
    visualizations = HomeLayout(plain_env.home).visualizations_dir
    for folder in ("high_entropy", "low_entropy", "high_concentration", "low_concentration"):
        assert len(list((visualizations / folder).glob("*.png"))) == 2, folder
        index = pd.read_csv(visualizations / folder / "index.csv", dtype=str)
        assert (index["status"] == "ok").all(), (folder, index)

    # grouped aggregates by drive side: 100 and 102 left, 101 and 103 right, 104 unknown
    sides = store.query("SELECT \"value\", image_count FROM group_aggregates WHERE dimension = 'drive_side'")
    assert dict(zip(sides["value"].fillna("NULL"), sides["image_count"])) == {"left": 2, "right": 2, "NULL": 1}

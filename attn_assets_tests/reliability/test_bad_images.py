"""Hostile image files in ONE shard, through the real graph (materialize_all, plain-list manifest).

Every bad file is exactly one `image_failures` row with a human reason (or, for a symlink that
leaves the image root, one `manifest_rejections` row and the target is never opened); every valid
image in the same shard has an `attention_statistics` row equal to the core run directly.

EXIF orientation (decided here, documented in core/preprocess.load_rgb): it is NOT applied, as in
the seed, so a photo stored sideways is analysed sideways and results stay comparable with it.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image, ImageDraw, ImageOps

from attn_assets import orchestration
from attn_assets.catalog.manifest import escape_reason
from attn_assets.core.extract import extract_to_frame
from attn_assets.core.loader import ImageRecord
from attn_assets.core.model import load_encoder
from attn_assets.core.preprocess import Preprocessor, load_rgb
from attn_assets.orchestration import materialize_all
from attn_assets.storage.layout import HomeLayout
from attn_assets.metric_names import METRIC_NAMES
from attn_assets.storage.warehouse import Warehouse
from attn_assets_tests.conftest import street_scene
from attn_assets_tests.reliability.conftest import audit_opens

AS_ROOT = os.geteuid() == 0
BIG = (12000, 9000)  # 108 MP: above PIL's warning limit (89.5 MP), below its error limit (2x)

# --------------------------------------------------------------------------- files


def _png_with_bad_idat_crc(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    data = bytearray(buffer.getvalue())
    at = data.find(b"IDAT")
    length = struct.unpack(">I", data[at - 4 : at])[0]
    data[at + 4 + length] ^= 0xFF  # first CRC byte of the first IDAT chunk
    return bytes(data)


def _big_image(path: Path) -> None:
    image = Image.new("RGB", BIG, (120, 160, 220))
    draw = ImageDraw.Draw(image)
    for i in range(12):
        draw.rectangle([i * 1000, 4000 + (i % 3) * 500, i * 1000 + 700, 9000], fill=(40 + 15 * i, 90, 60))
    image.save(path, quality=75)


@pytest.fixture(scope="module")
def big_jpeg(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("big") / "big_12000x9000.jpg"
    _big_image(path)
    return path


def build_hostile_shard(root: Path, outside: Path, big_jpeg: Path):
    """-> (manifest rows, {id: reason regex} of bad files, [valid ids], escape id, vanish rel path)."""
    img = root / "img"
    img.mkdir(parents=True)
    scene = lambda seed, w=96, h=72: street_scene(w, h, seed)  # noqa: E731
    rows, bad, valid = [], {}, []

    def add(image_id: str, rel: str, reason: str | None) -> None:
        rows.append({"image_id": image_id, "path": rel, "country": "FR"})
        if reason is None:
            valid.append(image_id)
        else:
            bad[image_id] = reason

    for i in range(3):  # a few normal images
        scene(i).save(img / f"normal_{i}.jpg", quality=90)
        add(f"normal_{i}", f"img/normal_{i}.jpg", None)

    (img / "zero.jpg").write_bytes(b"")
    add("zero_bytes", "img/zero.jpg", re.escape("empty file (0 bytes)"))
    good = io.BytesIO()
    scene(10, 320, 240).save(good, "JPEG", quality=90)
    (img / "truncated.jpg").write_bytes(good.getvalue()[: len(good.getvalue()) // 2])
    add("truncated_jpeg", "img/truncated.jpg", r"truncated image file \(image file is truncated \(\d+ bytes not processed\)\)")
    (img / "notes.jpg").write_text("shopping list: bread, milk\n")
    add("text_as_jpg", "img/notes.jpg", re.escape("not a readable image (cannot identify image file; it is a text file)"))
    (img / "error_page.jpg").write_text(
        "<!DOCTYPE html>\n<html><head><title>403 Forbidden</title></head><body><h1>Forbidden</h1></body></html>\n"
    )
    add("html_as_jpg", "img/error_page.jpg", re.escape(
        "not a readable image (cannot identify image file; it is an HTML page, e.g. an error page saved under an image name)"))
    (img / "bad_crc.png").write_bytes(_png_with_bad_idat_crc(scene(11)))
    add("png_bad_crc", "img/bad_crc.png", re.escape("corrupt image file (broken PNG file (bad header checksum in b'IDAT'))"))
    bomb = io.BytesIO()
    Image.new("1", (20000, 10000)).save(bomb, format="PNG")  # 200 MP in a few KB
    (img / "bomb.png").write_bytes(bomb.getvalue())
    add("decompression_bomb", "img/bomb.png",
        r"decompression bomb: Image size \(200000000 pixels\) exceeds limit of 178956970 pixels, could be "
        r"decompression bomb DOS attack\. \(limit: PIL Image\.MAX_IMAGE_PIXELS\)")
    (img / "vanish.jpg").write_bytes(good.getvalue())
    add("vanishes", "img/vanish.jpg", re.escape("file not found"))
    scene(12).save(img / "locked.jpg", quality=90)
    os.chmod(img / "locked.jpg", 0)
    # root ignores permission bits: the file reads fine (test_permission_denied_reason covers the reason)
    add("no_read_permission", "img/locked.jpg", None if AS_ROOT else re.escape("permission denied"))
    (img / "folder.jpg").mkdir()
    add("directory", "img/folder.jpg", re.escape("is a directory, not an image file"))
    outside.parent.mkdir(parents=True, exist_ok=True)
    scene(13).save(outside, quality=90)
    os.symlink(outside, img / "escape.jpg")
    add("symlink_escape", "img/escape.jpg", None)
    valid.remove("symlink_escape")

    # awkward but valid
    Image.new("RGB", (1, 1), (200, 30, 30)).save(img / "one_pixel.png")
    add("one_by_one", "img/one_pixel.png", None)
    (img / "big.jpg").write_bytes(big_jpeg.read_bytes())
    add("huge_12000x9000", "img/big.jpg", None)
    scene(14, 200, 150).convert("CMYK").save(img / "cmyk.jpg", quality=90)
    add("cmyk_jpeg", "img/cmyk.jpg", None)
    gray16 = np.asarray(scene(15, 120, 90).convert("L")).astype(np.uint16) * 257
    Image.fromarray(gray16).save(img / "gray16.png")
    add("gray16_png", "img/gray16.png", None)
    scene(16).convert("P", palette=Image.Palette.ADAPTIVE, colors=32).save(img / "palette.png", transparency=0)
    add("palette_transparency", "img/palette.png", None)
    scene(17).convert("LA").save(img / "la.png")
    add("la_png", "img/la.png", None)
    rgba = scene(18).convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize(rgba.size))
    rgba.save(img / "rgba.png")
    add("rgba_png", "img/rgba.png", None)
    frames = [scene(20 + i).convert("P") for i in range(3)]
    frames[0].save(img / "animated.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)
    add("animated_gif", "img/animated.gif", None)
    frames[0].convert("RGB").save(img / "animated_frame0.png")
    add("animated_gif_frame0", "img/animated_frame0.png", None)
    pages = [scene(30 + i) for i in range(3)]
    pages[0].save(img / "pages.tiff", save_all=True, append_images=pages[1:])
    add("multipage_tiff", "img/pages.tiff", None)
    pages[0].save(img / "pages_page0.png")
    add("multipage_tiff_page0", "img/pages_page0.png", None)
    scene(40).save(img / "photo.webp", quality=90)
    add("webp", "img/photo.webp", None)
    # EXIF orientation 6 ("rotate 90 CW to display"): NOT applied, so same metrics as the raw pixels
    sideways = scene(41, 120, 72)
    exif = Image.Exif()
    exif[0x0112] = 6
    sideways.save(img / "exif6.png", exif=exif.tobytes())
    add("exif_orientation_6", "img/exif6.png", None)
    sideways.save(img / "exif6_raw_pixels.png")
    add("exif6_raw_pixels", "img/exif6_raw_pixels.png", None)
    with Image.open(img / "exif6.png") as probe:
        assert probe.getexif().get(0x0112) == 6
        ImageOps.exif_transpose(probe).save(img / "exif6_upright.png")
    add("exif6_upright", "img/exif6_upright.png", None)
    return rows, bad, valid, "symlink_escape", img / "vanish.jpg"


# --------------------------------------------------------------------------- the graph


@pytest.mark.slow
def test_hostile_shard_through_the_graph(plain_env, plain_instance, tiny_model_dir, big_jpeg, monkeypatch):
    outside = plain_env.tmp / "outside_root" / "secret.jpg"
    rows, bad, valid, escape_id, vanish = build_hostile_shard(plain_env.image_root, outside, big_jpeg)
    plain_env.write_manifest(rows)
    pil_limit = Image.MAX_IMAGE_PIXELS

    real_shards_needing_run = orchestration.shards_needing_run

    def manifest_done_then_file_vanishes(*args, **kwargs):
        vanish.unlink()  # validated by image_manifest, gone before attention_statistics runs
        return real_shards_needing_run(*args, **kwargs)

    monkeypatch.setattr(orchestration, "shards_needing_run", manifest_done_then_file_vanishes)
    with audit_opens() as opened:
        summary = materialize_all(instance=plain_instance)
    assert summary.ok, "\n".join(summary.lines)
    assert Image.MAX_IMAGE_PIXELS == pil_limit  # never raised globally

    # the symlink's target outside the root was never opened, by anything in the run
    assert audit_opens.touched(opened, outside) == []
    assert audit_opens.touched(opened, plain_env.image_root / "img" / "one_pixel.png")  # the hook does see image opens

    store = Warehouse(HomeLayout(plain_env.home).warehouse_path)
    rejections = store.query("SELECT image_id, column_name, reason FROM manifest_rejections")
    assert rejections.to_dict("records") == [{"image_id": escape_id, "column_name": "path", "reason": escape_reason(plain_env.image_root.resolve())}]
    images = store.query("SELECT image_id FROM images")
    assert sorted(images.image_id) == sorted(r["image_id"] for r in rows if r["image_id"] != escape_id)
    assert store.query("SELECT DISTINCT shard_key FROM images").shape[0] == 1  # one shard holds all of them

    failures = store.query("SELECT image_id, reason FROM image_failures ORDER BY image_id")
    assert sorted(failures.image_id) == sorted(bad)  # exactly one row per bad file
    for image_id, reason in zip(failures.image_id, failures.reason):
        assert re.fullmatch(bad[image_id], reason), f"{image_id}: {reason!r}"

    stats = store.query("SELECT * FROM attention_statistics").set_index("image_id").sort_index()
    assert sorted(stats.index) == sorted(valid)
    encoder = load_encoder(str(tiny_model_dir), "cpu")
    # the core on the shard's rows in the shard's order and batch size (ATTN_ASSETS_BATCH_SIZE=4), the bad files
    # included: the same batches, so the same float32 operations on the same shapes, and identical numbers
    shard = pd.read_parquet(HomeLayout(plain_env.home).images_parquet)
    records = [ImageRecord(i, p) for i, p in zip(shard["image_id"], shard["abs_path"])]
    expected, _, core_failures = extract_to_frame(encoder, records, batch_size=4)
    assert sorted(core_failures.image_id) == sorted(bad)
    expected = expected.set_index("image_id").sort_index()
    for metric in METRIC_NAMES:
        np.testing.assert_array_equal(stats[metric].to_numpy(float), expected[metric].to_numpy(float), err_msg=metric)

    # first frame / first page; EXIF orientation not applied: the model gets exactly the raw pixels (the
    # statistics of both rows are the core's, checked above; they sit in different batches, so they may differ
    # by float32 rounding, while the pixels must not differ at all)
    preprocess = Preprocessor(encoder.processor)
    path_of = dict(zip(shard["image_id"], shard["abs_path"]))
    for a, b in (("animated_gif", "animated_gif_frame0"), ("multipage_tiff", "multipage_tiff_page0"),
                 ("exif_orientation_6", "exif6_raw_pixels")):
        assert torch.equal(preprocess(load_rgb(path_of[a])), preprocess(load_rgb(path_of[b]))), a
    assert not np.allclose(stats.loc["exif_orientation_6", METRIC_NAMES].to_numpy(float),
                           stats.loc["exif6_upright", METRIC_NAMES].to_numpy(float), atol=1e-4)
    shard = pd.read_parquet(HomeLayout(plain_env.home).shard_parquet(stats["shard_key"].iloc[0])).set_index("image_id")
    assert tuple(shard.loc["huge_12000x9000", ["image_width", "image_height"]]) == BIG
    assert tuple(shard.loc["one_by_one", ["image_width", "image_height"]]) == (1, 1)


# --------------------------------------------------------------------------- separate checks


def test_huge_image_memory_is_bounded(big_jpeg):
    """Decoding + preprocessing a 12000x9000 JPEG costs about two decoded copies, nothing more.

    Measured in a fresh process with VmHWM (peak RSS of this process image; ru_maxrss would
    inherit pytest's peak across exec). PIL holds RGB as 4 bytes per pixel: 412 MiB per copy.
    """
    script = textwrap.dedent(
        f"""
        import json, warnings
        warnings.simplefilter("ignore")
        def hwm():
            for line in open("/proc/self/status"):
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        from attn_assets.core.loader import ImageRecord, load_one
        from attn_assets.core.model import make_clip_processor
        from attn_assets.core.preprocess import Preprocessor
        pre = Preprocessor(make_clip_processor(336))
        before = hwm()
        out = load_one(ImageRecord("big", {str(big_jpeg)!r}), pre)
        print(json.dumps({{"shape": list(out[0].shape), "size": list(out[1]), "grow_mb": hwm() - before}}))
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"\n12000x9000 JPEG: peak RSS growth {result['grow_mb']:.0f} MiB")
    assert result["shape"] == [3, 336, 336] and result["size"] == list(BIG)
    decoded_mib = BIG[0] * BIG[1] * 4 / 2**20
    assert 0.5 * decoded_mib < result["grow_mb"] < 2.5 * decoded_mib


@pytest.mark.skipif(not AS_ROOT, reason="not root: the graph test already sees permission denied")
def test_permission_denied_reason():
    """As root, permission bits do not block reads, so the loader runs as 'nobody' (uid 65534) here."""
    folder = Path(tempfile.mkdtemp(prefix="attn-perm-", dir="/tmp"))
    try:
        os.chmod(folder, 0o755)
        street_scene(64, 48, 1).save(folder / "locked.jpg", quality=90)
        os.chmod(folder / "locked.jpg", 0)
        script = textwrap.dedent(
            f"""
            import os
            from attn_assets.core.loader import ImageRecord, load_one
            from attn_assets.core.model import make_clip_processor
            from attn_assets.core.preprocess import Preprocessor
            pre = Preprocessor(make_clip_processor(48))
            os.setgid(65534); os.setuid(65534)  # imports done as root (the interpreter may live in /root)
            assert not os.access({str(folder / 'locked.jpg')!r}, os.R_OK)
            out = load_one(ImageRecord("locked", {str(folder / 'locked.jpg')!r}), pre)
            print("REASON=" + out.reason)
            """
        )
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                              env={**os.environ, "HOME": str(folder), "HF_HOME": str(folder / "hf")}, cwd=folder)
        assert done.returncode == 0, done.stderr
        assert "REASON=permission denied" in done.stdout.splitlines()
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_a_shard_whose_every_image_is_bad_is_failure_rows_not_a_crash(plain_env, plain_instance):
    """Every image of the only shard unreadable: the statistics pass writes its failure rows (an empty map array
    of shape (0, gh, gw) once made numpy's reshape(0, -1) raise, failing the shard on every retry)."""
    (plain_env.image_root / "img").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(3):
        path = plain_env.image_root / "img" / f"broken{i}.jpg"
        path.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
        rows.append({"image_id": f"broken{i}", "path": f"img/broken{i}.jpg", "country": "FR"})
    plain_env.write_manifest(rows)
    summary = materialize_all(instance=plain_instance)
    assert not any("attention_statistics[" in line and "FAILED" in line for line in summary.lines), \
        "\n".join(summary.lines)
    store = Warehouse(HomeLayout(plain_env.home).warehouse_path)
    assert sorted(store.query("SELECT image_id FROM image_failures")["image_id"]) == ["broken0", "broken1", "broken2"]
    assert len(store.query("SELECT * FROM attention_statistics")) == 0

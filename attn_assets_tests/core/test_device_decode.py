"""ATTN_ASSETS_DECODE=device: JPEGs decoded and resized by torch (torchvision.io.decode_jpeg) instead of PIL.

Without torchvision the setting is refused with a message saying what to do (runs in every venv). The rest needs
torchvision (the plonk venv has it: `make test-plonk`) and runs on the CPU, where decode_jpeg is libjpeg-turbo.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import io
import sys
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

from attn_assets.core.device_decode import (
    DeviceDecodeUnavailable,
    decode_on_device,
    load_encoded_batch,
    normalisation_table,
    resize_crop,
)
from attn_assets.core.extract import extract_records
from attn_assets.core.loader import ImageRecord, load_batch
from attn_assets.core.preprocess import Preprocessor
from attn_assets.settings import decode_setting
from attn_assets_tests.conftest import street_scene

needs_torchvision = pytest.mark.skipif(
    importlib.util.find_spec("torchvision") is None,
    reason="torchvision is not installed (the core venv); `make test-plonk` runs these in the plonk venv")

# Odd sizes: landscape, portrait, a panorama whose crop drops most columns, a tall one (Pillow runs its vertical
# pass first there), a square just above the crop and a small image the 48-px resize enlarges.
ODD_SIZES = ((301, 227), (227, 301), (1001, 333), (225, 999), (53, 53), (97, 61))


def records_of(paths) -> list[ImageRecord]:
    return [ImageRecord(path.name, str(path)) for path in paths]


@pytest.fixture(scope="module")
def pil_encoder(tiny_encoder, tiny_model_dir):
    """The tiny model with transformers' PIL image processor: the exact path is then the uint8 fast path, the
    pixels the device path mirrors (with torchvision installed transformers would pick its torchvision backend)."""
    from transformers import AutoImageProcessor

    processor = AutoImageProcessor.from_pretrained(tiny_model_dir, backend="pil")
    return dataclasses.replace(tiny_encoder, processor=processor)


@pytest.fixture(scope="module")
def preprocess(pil_encoder) -> Preprocessor:
    preprocess = Preprocessor(pil_encoder.processor)
    assert preprocess.fast
    return preprocess


@pytest.fixture(scope="module")
def odd_jpegs(tmp_path_factory):
    root = tmp_path_factory.mktemp("odd_jpegs")
    paths = []
    for seed, (width, height) in enumerate(ODD_SIZES):
        paths.append(root / f"scene_{width}x{height}.jpg")
        street_scene(width, height, seed).save(paths[-1], quality=90)  # 4:2:0, the chroma upsampling path
        noise = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
        paths.append(root / f"noise_{width}x{height}.jpg")
        Image.fromarray(noise).save(paths[-1], quality=95, subsampling=0)  # the hardest case for the resize
    return paths


def test_without_torchvision_the_setting_says_what_to_do(tiny_encoder, sample_images, monkeypatch):
    monkeypatch.setitem(sys.modules, "torchvision", None)  # as if not installed (the core venv has none)
    monkeypatch.setitem(sys.modules, "torchvision.io", None)
    monkeypatch.setenv("ATTN_ASSETS_DECODE", "device")
    records = records_of([sample_images["wide_792x512.jpg"]])
    with pytest.raises(DeviceDecodeUnavailable, match=r"ATTN_ASSETS_DECODE=device .*torchvision.*pip install "
                                                      r"torchvision.*ATTN_ASSETS_DECODE=exact"):
        next(extract_records(tiny_encoder, records, device="cpu"))


def test_unknown_decode_values_are_refused(tiny_encoder, sample_images, monkeypatch):
    monkeypatch.setenv("ATTN_ASSETS_DECODE", "gpu")
    with pytest.raises(ValueError, match=r"ATTN_ASSETS_DECODE='gpu': use one of exact, device"):
        decode_setting()
    with pytest.raises(ValueError, match="decode must be one of exact, device, got 'gpu'"):
        next(extract_records(tiny_encoder, records_of([sample_images["wide_792x512.jpg"]]), decode="gpu"))
    monkeypatch.delenv("ATTN_ASSETS_DECODE")
    assert decode_setting() == "exact"


def test_normalisation_table_is_the_exact_paths(preprocess):
    exact = preprocess.normalize(torch.arange(256, dtype=torch.uint8).repeat(3, 1).T.reshape(1, 1, 256, 3))
    assert torch.equal(normalisation_table(preprocess.processor), exact[0, :, 0, :])


@needs_torchvision
def test_cpu_decode_is_pils_and_the_resize_is_pillows(odd_jpegs, preprocess):
    """decode_jpeg on the CPU and PIL are both libjpeg-turbo with the integer (islow) IDCT and fancy upsampling,
    which are exactly specified: same bits. The resize is Pillow's integer arithmetic: same bytes as the exact
    path on the same decoded pixels (tolerance 0)."""
    from torchvision.io import decode_jpeg

    for path in odd_jpegs:
        decoded = decode_jpeg(torch.frombuffer(bytearray(path.read_bytes()), dtype=torch.uint8))
        pil = torch.from_numpy(np.array(Image.open(path).convert("RGB"))).permute(2, 0, 1)
        assert torch.equal(decoded, pil), path.name
        assert torch.equal(resize_crop(decoded[None], preprocess)[0], preprocess.pixels(Image.open(path))), path.name


@pytest.mark.parametrize("torch_passes", [True, False], ids=["torch passes (GPU)", "compiled (CPU)"])
@pytest.mark.parametrize("resample", [Image.Resampling.BOX, Image.Resampling.BILINEAR, Image.Resampling.BICUBIC])
def test_device_resize_is_pillows_for_each_filter_and_pass_order(pil_encoder, resample, torch_passes, monkeypatch):
    """The device resize against Pillow's resize-then-crop on random noise, in both pass orders and where Pillow
    skips a pass; a batch of one size at once. Both ways it runs: torch's int32 passes (what a GPU runs; forced
    here on the CPU) and, on a CPU, the compiled loops. Tolerance 0 (integer sums)."""
    import copy

    from attn_assets.core import device_decode
    from attn_assets.core.resample import horizontal_first

    if torch_passes:
        monkeypatch.setattr(device_decode, "compiled_available", lambda: False)
    processor = copy.deepcopy(pil_encoder.processor)
    processor.resample = resample
    preprocess = Preprocessor(processor)
    rng = np.random.default_rng(int(resample))
    orders = set()
    for width, height in ODD_SIZES + ((64, 48), (48, 300), (700, 48)):
        images = rng.integers(0, 256, (2, height, width, 3), dtype=np.uint8)
        ours = resize_crop(torch.from_numpy(images).permute(0, 3, 1, 2), preprocess)
        for image, pixels in zip(images, ours):
            g = preprocess.crop_geometry(width, height)
            expected = Image.fromarray(image).resize((g.resized_width, g.resized_height), resample).crop(
                (g.left, g.top, g.left + g.crop_width, g.top + g.crop_height))
            assert np.array_equal(pixels.numpy(), np.asarray(expected)), (width, height)
            orders.add(horizontal_first(width, height, g.resized_width, g.resized_height))
    assert orders == ({True, False} if int(Image.__version__.split(".")[0]) >= 13 else {True})


@needs_torchvision
def test_device_path_matches_the_exact_path(pil_encoder, preprocess, odd_jpegs):
    """Same images, order, sizes, crop boxes and, on the CPU (where the decode is PIL's), the same pixel values
    as decode=exact."""
    records = records_of(odd_jpegs)
    exact = load_batch(records, preprocess, uint8=True)
    device = decode_on_device(load_encoded_batch(records, preprocess), preprocess, "cpu")
    assert device.image_ids == exact.image_ids and device.image_sizes == exact.image_sizes
    assert torch.equal(device.pixel_values, preprocess.normalize(exact.pixel_values))

    runs = {decode: list(extract_records(pil_encoder, records, batch_size=5, device="cpu", precision="fp32",
                                         decode=decode)) for decode in ("exact", "device")}
    boxes = {decode: [box for result in results for box in result.crop_boxes] for decode, results in runs.items()}
    assert boxes["device"] == boxes["exact"]
    assert [i for r in runs["device"] for i in r.image_ids] == [i for r in runs["exact"] for i in r.image_ids]


@needs_torchvision
def test_other_formats_take_the_exact_path_bit_for_bit(preprocess, sample_images):
    """PNG, CMYK JPEG, 16-bit PNG, GIF, palette: the exact path's own pixels, normalised by the same table."""
    names = ["landscape_1024x768.png", "square_300.png", "cmyk.jpg", "gray16.png", "animated.gif",
             "palette_transparent.png", "rgba.png", "small_97x61.png"]
    records = records_of([sample_images[name] for name in names])
    encoded = load_encoded_batch(records, preprocess)
    assert all(source.ndim == 3 for source in encoded.sources)  # none handed over encoded
    device = decode_on_device(encoded, preprocess, "cpu")
    exact = load_batch(records, preprocess, uint8=True)
    assert device.image_ids == exact.image_ids
    assert torch.equal(device.pixel_values, preprocess.normalize(exact.pixel_values))


@needs_torchvision
def test_unreadable_files_are_the_exact_paths_failure_rows(pil_encoder, preprocess, bad_images, sample_images):
    """Missing, empty, truncated (a JPEG header decode_jpeg then refuses), not an image, a directory, a bomb."""
    records = [ImageRecord(name, str(path)) for name, (path, _) in bad_images.items()]
    records.append(ImageRecord("good", str(sample_images["wide_792x512.jpg"])))
    device = decode_on_device(load_encoded_batch(records, preprocess), preprocess, "cpu")
    exact = load_batch(records, preprocess, uint8=True)
    assert device.image_ids == exact.image_ids == ["good"]
    assert sorted(device.failures, key=lambda f: f.image_id) == sorted(exact.failures, key=lambda f: f.image_id)
    for failure in device.failures:
        assert bad_images[failure.image_id][1] in failure.reason
    rows = {decode: sorted((f for r in extract_records(pil_encoder, records, batch_size=3, decode=decode)
                            for f in r.failures), key=lambda f: f.image_id) for decode in ("exact", "device")}
    assert rows["device"] == rows["exact"] and len(rows["exact"]) == len(bad_images)


@needs_torchvision
def test_zip_members_decode_on_the_device(preprocess, odd_jpegs, tmp_path):
    archive = tmp_path / "00.zip"
    with zipfile.ZipFile(archive, "w") as out:
        for path in odd_jpegs[:4]:
            out.write(path, path.name)
        whole = odd_jpegs[0].read_bytes()
        out.writestr("truncated.jpg", whole[: len(whole) // 2])  # the header reads; decode_jpeg refuses the rest
        buffer = io.BytesIO()
        street_scene(120, 90, 3).save(buffer, format="PNG")
        out.writestr("scene.png", buffer.getvalue())
    names = [path.name for path in odd_jpegs[:4]] + ["truncated.jpg", "scene.png", "missing.jpg"]
    records = [ImageRecord(name, str(archive), name) for name in names]
    encoded = load_encoded_batch(records, preprocess)
    assert [source.ndim for source in encoded.sources] == [1, 1, 1, 1, 1, 3]  # JPEG bytes; the PNG's pixels
    device = decode_on_device(encoded, preprocess, "cpu")
    exact = load_batch(records, preprocess, uint8=True)
    assert device.image_ids == exact.image_ids and device.image_sizes == exact.image_sizes
    assert sorted(device.failures, key=lambda f: f.image_id) == sorted(exact.failures, key=lambda f: f.image_id)
    assert torch.equal(device.pixel_values, preprocess.normalize(exact.pixel_values))  # JPEGs and the PNG


@needs_torchvision
def test_loader_workers_hand_over_encoded_batches(preprocess, odd_jpegs, sample_images):
    """In a worker process, the loader's ``load`` (load_encoded_batch) and its batches cross as pickles."""
    from attn_assets.core.device_decode import EncodedBatch
    from attn_assets.core.loader import iter_batches

    records = records_of([*odd_jpegs[:3], sample_images["square_300.png"]])
    batches = list(iter_batches(records, preprocess, 2, num_workers=1, uint8=True, load=load_encoded_batch))
    assert all(isinstance(batch, EncodedBatch) for batch in batches)
    assert [source.ndim for batch in batches for source in batch.sources] == [1, 1, 1, 3]
    inline = load_encoded_batch(records, preprocess)
    assert all(torch.equal(a, b) for a, b in zip([s for b in batches for s in b.sources], inline.sources))


@needs_torchvision
def test_rollout_pass_decodes_on_the_device_when_set(pil_encoder, odd_jpegs, tmp_path, monkeypatch):
    """Every encoder pass reads pixels through core.extract.model_batches, so ATTN_ASSETS_DECODE=device reaches the
    rollout pass too (it once decoded with PIL whatever the setting, under a recipe naming decode=device): the
    pass hands its batches to decode_on_device. Tolerance 0: the pass and the reference run the same CPU kernels on
    the same pixels in a batch of the same shape."""
    import logging

    import pandas as pd
    import pyarrow.parquet as pq

    from attn_assets.core import extract
    from attn_assets.core.extract import model_batches, model_preprocessor
    from attn_assets.core.rollout import RolloutExtractor
    from attn_assets.passes.recipe import rollout_recipe
    from attn_assets.passes.rollout import compute_rollout_shard
    from attn_assets.storage.layout import HomeLayout

    layout = HomeLayout(tmp_path)
    layout.manifest_dir.mkdir(parents=True)
    records = records_of(odd_jpegs)
    pd.DataFrame([{"image_id": r.image_id, "path": r.path, "abs_path": r.path, "member": None, "country": "FR",
                   "shard_key": "shard-00000"} for r in records]).to_parquet(layout.images_parquet)
    monkeypatch.setenv("ATTN_ASSETS_DECODE", "device")
    decoded_on_device = []

    def spy(batch, preprocess, device):
        decoded_on_device.append(len(batch))
        return decode_on_device(batch, preprocess, device)

    monkeypatch.setattr(extract, "decode_on_device", spy)
    recipe = rollout_recipe("tiny", "fp32", "cpu")
    assert recipe.parts_dict["decode"] == "device"
    outcome = compute_rollout_shard(layout=layout, shard_key="shard-00000", encoder=pil_encoder, model_spec="tiny",
                                    device="cpu", precision="fp32", batch_size=len(records), num_workers=0,
                                    logger=logging.getLogger("test"), recipe=recipe)
    frame = pq.read_table(outcome.path).to_pandas().set_index("image_id").loc[[r.image_id for r in records]]
    ours = np.stack(frame["rollout_map"].to_numpy())
    preprocess = model_preprocessor(pil_encoder.processor)
    extractor = RolloutExtractor(pil_encoder, device="cpu", precision="fp32")
    reference = {decode: extractor(next(model_batches(records, preprocess, torch.device("cpu"), len(records),
                                                      decode=decode)).pixel_values)[0].numpy()
                 for decode in ("exact", "device")}
    assert decoded_on_device and sum(decoded_on_device) == 2 * len(records)  # the pass's batch, the reference's
    np.testing.assert_array_equal(ours, reference["device"])
    np.testing.assert_array_equal(ours, reference["exact"])  # on the CPU the decode is PIL's, the resize Pillow's

import gc
import os

import pytest
import torch

from attn_assets.core.loader import ImageRecord, iter_batches, load_batch
from attn_assets.core.model import make_clip_processor
from attn_assets.core.preprocess import Preprocessor, load_rgb


@pytest.fixture(scope="module")
def preprocess():
    return Preprocessor(make_clip_processor(48))


def _records(paths):
    return [ImageRecord(f"id{i}", str(p)) for i, p in enumerate(paths)]


def test_bad_images_become_failures_with_reasons(bad_images, sample_images, preprocess):
    good = list(sample_images.values())[:2]
    records = _records([good[0], *[p for p, _ in bad_images.values()], good[1]])
    batch = load_batch(records, preprocess)
    assert batch.image_ids == ["id0", f"id{len(records) - 1}"]
    assert batch.pixel_values.shape == (2, 3, 48, 48)
    reasons = {f.path: f.reason for f in batch.failures}
    for name, (path, expected) in bad_images.items():
        assert expected in reasons[str(path)], (name, reasons[str(path)])
    assert "200000000 pixels" in reasons[str(bad_images["bomb"][0])]


@pytest.mark.skipif(os.geteuid() == 0, reason="root can read files without permission")
def test_permission_denied_is_a_failure(tmp_path, sample_images, preprocess):
    path = tmp_path / "locked.jpg"
    path.write_bytes(sample_images["wide_792x512.jpg"].read_bytes())
    path.chmod(0)
    batch = load_batch([ImageRecord("x", str(path))], preprocess)
    assert batch.failures[0].reason == "permission denied"


def test_all_failed_batch_is_empty_not_an_error(bad_images, preprocess):
    batch = load_batch(_records([p for p, _ in bad_images.values()]), preprocess)
    assert len(batch) == 0 and batch.pixel_values.shape == (0, 3, 48, 48)
    assert len(batch.failures) == len(bad_images)


def test_workers_keep_order_and_values(sample_images, bad_images, preprocess):
    paths = [*sample_images.values(), bad_images["missing"][0], *sample_images.values()]
    records = _records(paths)
    inline = list(iter_batches(records, preprocess, batch_size=5, num_workers=0))
    workers = list(iter_batches(records, preprocess, batch_size=5, num_workers=2))
    assert [b.image_ids for b in inline] == [b.image_ids for b in workers]
    ids = [i for b in workers for i in b.image_ids]
    assert ids == [r.image_id for r in records if r.path != str(bad_images["missing"][0])]
    for a, b in zip(inline, workers):
        assert torch.equal(a.pixel_values, b.pixel_values)
    first = preprocess(load_rgb(paths[0]))
    assert torch.equal(workers[0].pixel_values[0], first)


def test_generator_records_are_streamed(sample_images, preprocess, monkeypatch):
    import attn_assets.core.loader as loader

    monkeypatch.setattr(loader, "WINDOW_BATCHES", 2)
    records = (ImageRecord(f"g{i}", str(p)) for i, p in enumerate(list(sample_images.values()) * 2))
    batches = list(iter_batches(records, preprocess, batch_size=3, num_workers=0))
    assert sum(len(b) for b in batches) == 2 * len(sample_images)
    assert batches[0].image_ids == ["g0", "g1", "g2"]


@pytest.mark.slow
def test_streaming_memory_stays_flat(tmp_path, sample_images, tiny_encoder):
    """RSS after 500 images is not meaningfully above RSS after 100 (nothing accumulates)."""
    psutil = pytest.importorskip("psutil")
    from attn_assets.core.extract import extract_records

    paths = list(sample_images.values())
    records = (ImageRecord(f"m{i}", str(paths[i % len(paths)])) for i in range(500))
    process = psutil.Process()
    rss = {}
    seen = 0
    for result in extract_records(tiny_encoder, records, batch_size=10, num_workers=0):
        seen += len(result) + len(result.failures)
        if seen in (100, 500):
            gc.collect()
            rss[seen] = process.memory_info().rss
    assert seen == 500
    assert rss[500] - rss[100] < 40 * 2**20, rss


def test_uint8_batches_normalise_to_the_float_batches(sample_images, bad_images, preprocess):
    """uint8 [B, H, W, 3] until the device: Preprocessor.normalize gives the float path's values bit for bit
    (a lookup of the same float32 table), and a batch holding an image the processor pads comes back float."""
    paths = [*sample_images.values(), bad_images["missing"][0]]
    records = _records(paths)
    floats = list(iter_batches(records, preprocess, batch_size=4, num_workers=0))
    uint8 = list(iter_batches(records, preprocess, batch_size=4, num_workers=2, uint8=True))
    assert [b.image_ids for b in floats] == [b.image_ids for b in uint8]
    kinds = set()
    for a, b in zip(floats, uint8):
        kinds.add(b.pixel_values.dtype)
        if b.pixel_values.dtype == torch.uint8:
            assert b.pixel_values.shape[1:] == (48, 48, 3)
        assert torch.equal(preprocess.normalize(b.pixel_values), a.pixel_values)
    assert torch.uint8 in kinds


def test_normalize_refuses_channels_first_uint8(preprocess):
    with pytest.raises(ValueError, match=r"\[B, H, W, 3\]"):
        preprocess.normalize(torch.zeros((1, 3, 48, 48), dtype=torch.uint8))

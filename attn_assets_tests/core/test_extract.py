import numpy as np
import pytest
import torch

from attn_assets.core.extract import (
    AttentionExtractor,
    eager_attention,
    extract_records,
    extract_to_frame,
    seed_reference,
    select_layers,
)
from attn_assets.core.loader import ImageRecord
from attn_assets.core.metrics import METRIC_NAMES, attention_metrics_numpy
from attn_assets.core.preprocess import Preprocessor, load_rgb


def _records(sample_images, repeat=1):
    paths = list(sample_images.values()) * repeat
    return [ImageRecord(f"img{i}", str(p)) for i, p in enumerate(paths)]


@pytest.fixture(scope="module")
def seed_results(tiny_encoder, sample_images):
    """The seed method, literally (eager, batch 1), per sample path."""
    out = {}
    for path in sample_images.values():
        img = load_rgb(path)
        out[str(path)] = seed_reference(tiny_encoder, img)
    return out


def test_tiny_model_attention_is_peaked(seed_results):
    for cls_attn in seed_results.values():
        assert attention_metrics_numpy(cls_attn)["attention_entropy"] < 0.8 * np.log(36)


def test_fidelity_against_seed(tiny_encoder, sample_images, seed_results):
    results = list(extract_records(tiny_encoder, _records(sample_images), batch_size=4))
    assert sum(len(r.failures) for r in results) == 0
    worst_map = 0.0
    for result in results:
        for i, path in enumerate(result.paths):
            reference = seed_results[path]
            worst_map = max(worst_map, float(np.abs(result.cls_maps[i].reshape(-1) - reference).max()))
            expected = attention_metrics_numpy(reference)
            for name in METRIC_NAMES:
                assert result.metrics[name][i] == pytest.approx(expected[name], abs=1e-5), (path, name)
    print(f"max |map - seed map| = {worst_map:.2e}")
    assert worst_map <= 1e-6


def test_batch_size_does_not_change_numbers(tiny_encoder, sample_images):
    records = _records(sample_images, repeat=2)
    runs = {}
    for batch_size in (1, 7, 16):
        stats, maps, failures = extract_to_frame(tiny_encoder, records, batch_size=batch_size)
        assert len(stats) == len(records) and failures.empty
        runs[batch_size] = (stats, maps)
    for batch_size in (7, 16):
        assert list(runs[batch_size][0].image_id) == list(runs[1][0].image_id)
        np.testing.assert_allclose(runs[batch_size][1], runs[1][1], atol=1e-6, rtol=0)
        for name in METRIC_NAMES:
            # float32 GEMMs block differently per batch size: ~1e-6 noise, inside the 1e-5 fidelity bar
            np.testing.assert_allclose(runs[batch_size][0][name], runs[1][0][name], atol=1e-5, rtol=0)


def test_every_layer_matches_eager(tiny_encoder, sample_images):
    preprocess = Preprocessor(tiny_encoder.processor)
    images = [load_rgb(p) for p in list(sample_images.values())[:5]]
    pixels = torch.stack([preprocess(i) for i in images])
    out = AttentionExtractor(tiny_encoder, layers="all")(pixels)
    assert out.cls_attention.shape == (5, 3, 4, 36)
    with eager_attention(tiny_encoder.model), torch.no_grad():
        eager = tiny_encoder.model(pixel_values=pixels, output_attentions=True)
    for layer, attention in enumerate(eager.attentions):
        expected = attention[:, :, 0, 1:]  # [B, H, N]
        # per-head rows of a deliberately peaked model (logits ~100): a 1-row vs T-row fp32 GEMM
        # rounds differently (~1e-6 relative); head averages (the maps) stay within 1e-6 (fidelity test)
        torch.testing.assert_close(out.cls_attention[:, layer], expected, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(out.cls_embedding, eager.last_hidden_state[:, 0], atol=1e-5, rtol=1e-5)
    assert out.head_mean().shape == (5, 3, 36)


def test_seed_reference_restores_sdpa_for_shared_configs(tiny_model_dir, sample_images):
    from transformers import CLIPVisionModel

    from attn_assets.core.model import describe_encoder, load_encoder

    encoder = load_encoder(str(tiny_model_dir))
    sibling = CLIPVisionModel(encoder.model.config)  # shares the config object
    seed_reference(encoder, load_rgb(sample_images["square_300.png"]))
    assert encoder.model.config._attn_implementation == "sdpa"
    assert sibling.config._attn_implementation == "sdpa"
    describe_encoder(sibling, encoder.processor, "sibling")


def test_select_layers():
    assert select_layers("last", 24) == (23,)
    assert select_layers(None, 24) == (23,)
    assert select_layers("all", 3) == (0, 1, 2)
    assert select_layers([5, 0, -1], 24) == (0, 5, 23)
    with pytest.raises(ValueError):
        select_layers([24], 24)
    with pytest.raises(ValueError):
        select_layers("first", 24)


def test_oom_halves_batch_and_retries(tiny_encoder, sample_images, caplog):
    extractor = AttentionExtractor(tiny_encoder)
    preprocess = Preprocessor(tiny_encoder.processor)
    pixels = torch.stack([preprocess(load_rgb(p)) for p in list(sample_images.values())[:6]])
    # the retry runs chunks of 3; a float32 GEMM may block (and so round) differently for 6 rows than
    # for 3, so the expected values come from the same chunks: same shapes and inputs give the same bits
    expected = torch.cat([extractor(pixels[:3]).cls_attention, extractor(pixels[3:]).cls_attention])
    real = extractor._forward

    def flaky(chunk):
        if chunk.shape[0] > 3:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(chunk)

    extractor._forward = flaky
    with caplog.at_level("WARNING"):
        out = extractor(pixels)
    assert extractor.max_batch == 3
    assert "out of memory" in caplog.text
    assert torch.equal(out.cls_attention, expected)


def test_progress_failures_and_keep_maps(tiny_encoder, sample_images, bad_images):
    records = _records(sample_images)[:3] + [ImageRecord("bad", str(bad_images["missing"][0]))]
    calls = []
    results = list(extract_records(tiny_encoder, records, batch_size=2, keep_maps=False,
                                   progress=lambda done, total: calls.append((done, total))))
    assert calls == [(2, 4), (4, 4)]
    assert all(r.cls_maps is None for r in results)
    assert results[1].failures[0].reason == "file not found"
    assert results[1].cls_embedding.shape == (1, 64)


def test_all_failed_batch_yields_empty_result(tiny_encoder, bad_images):
    records = [ImageRecord(name, str(path)) for name, (path, _) in bad_images.items()]
    stats, maps, failures = extract_to_frame(tiny_encoder, records, batch_size=16)
    assert stats.empty and maps.shape == (0, 6, 6)
    assert sorted(failures.image_id) == sorted(bad_images)


def test_bf16_deviation_is_small(tiny_encoder, sample_images):
    """bf16 misses the 1e-5 bar (DESIGN); measure it and keep it bounded on the peaked tiny model."""
    records = _records(sample_images)
    fp32, _, _ = extract_to_frame(tiny_encoder, records, batch_size=8, precision="fp32")
    bf16, _, _ = extract_to_frame(tiny_encoder, records, batch_size=8, precision="bf16")
    deviation = {name: float(np.abs(fp32[name] - bf16[name]).max()) for name in METRIC_NAMES}
    print("bf16 vs fp32 max abs deviation:", deviation)
    assert all(np.isfinite(v) for v in deviation.values())
    assert deviation["attention_entropy"] < 0.05
    assert deviation["attention_concentration_top10"] < 0.02


def test_workers_give_same_results(tiny_encoder, sample_images):
    records = _records(sample_images)
    inline, _, _ = extract_to_frame(tiny_encoder, records, batch_size=4, num_workers=0)
    workers, _, _ = extract_to_frame(tiny_encoder, records, batch_size=4, num_workers=2)
    for name in METRIC_NAMES:
        np.testing.assert_array_equal(inline[name], workers[name])

"""Each batched analysis against its straightforward per-image reference (eager, loops) on a tiny model, to 1e-5."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from attn_assets.core.ablation import ablate, ablation_k, random_patches
from attn_assets.core.analyses import (
    PERMUTATION_INVARIANT,
    artifact_analysis,
    image_seed,
    masked_attention_metrics,
    permutations,
    spatial_statistics,
    uniform_baselines,
    uniform_spatial_baselines,
)
from attn_assets.core.extract import AttentionExtractor, extract_records
from attn_assets.core.loader import ImageRecord
from attn_assets.core.metrics import attention_metrics, attention_metrics_numpy
from attn_assets.metric_names import METRIC_NAMES
from attn_assets.core.preprocess import Preprocessor
from attn_assets.core.rollout import RolloutExtractor
from attn_assets_tests.analyses import reference as ref

TOL = 1e-5
IMAGES = ["wide_792x512.jpg", "tall_512x792.jpg", "square_300.png", "small_97x61.png", "gray_L.jpg", "rgba.png", "cmyk.jpg"]


@pytest.fixture(scope="module")
def batched(tiny_encoder, sample_images):
    """The same-pass analyses as the pipeline computes them (batches of 3), keyed by image id."""
    records = [ImageRecord(name, str(sample_images[name])) for name in IMAGES]
    per_image: dict[str, dict] = {}
    for result in extract_records(tiny_encoder, records, batch_size=3, analyses=True):
        for row, image_id in enumerate(result.image_ids):
            values = {k: (v[row] if k != "head_map_sum" else None) for k, v in result.analyses.items()}
            values["seed"] = {m: result.metrics[m][row] for m in METRIC_NAMES}
            values["map"] = result.cls_maps[row].ravel()
            per_image[image_id] = values
    assert sorted(per_image) == sorted(IMAGES)
    return per_image


@pytest.fixture(scope="module")
def eager(tiny_encoder, sample_images):
    return {name: ref.eager_outputs(tiny_encoder, sample_images[name]) for name in IMAGES}


def _pixels(encoder, sample_images) -> torch.Tensor:
    from attn_assets.core.loader import load_one

    preprocess = Preprocessor(encoder.processor)
    return torch.stack([load_one(ImageRecord(n, str(sample_images[n])), preprocess)[0] for n in IMAGES])


def _close(ours, theirs, what):
    np.testing.assert_allclose(np.asarray(ours, dtype=float), np.asarray(theirs, dtype=float), atol=TOL, rtol=0, err_msg=what)


def test_layer_profile_matches_eager_every_layer(batched, eager, tiny_encoder):
    for name in IMAGES:
        expected = ref.layer_profile(eager[name][0])
        assert len(expected) == tiny_encoder.num_layers
        for metric in METRIC_NAMES:
            _close(batched[name][f"layer_{metric}"], [e[metric] for e in expected], f"{name} layer {metric}")
            # the last layer is attention_statistics' row
            _close(batched[name][f"layer_{metric}"][-1], batched[name]["seed"][metric], f"{name} last layer {metric}")


def test_head_metrics_and_similarity_match_eager(batched, eager, tiny_encoder):
    for name in IMAGES:
        expected = ref.head_profile(eager[name][0])
        assert len(expected) == tiny_encoder.num_heads
        for metric in METRIC_NAMES:
            _close(batched[name][f"head_{metric}"], [e[metric] for e in expected], f"{name} head {metric}")
        _close(batched[name]["head_similarity"], ref.head_similarity(eager[name][0]), f"{name} head similarity")


def test_artifact_tokens_match_reference(batched, eager, tiny_encoder, sample_images):
    # the pipeline's rule (k = 5): same detections and metrics as the reference
    for name in IMAGES:
        attentions, hidden, _ = eager[name]
        cls_attn = attentions[-1].mean(axis=0)[0, 1:]
        expected = ref.artifacts(cls_attn, hidden, k=5.0)
        assert list(batched[name]["artifact_indices"]) == expected["indices"], name
        _close(batched[name]["artifact_attention_share"], expected["share"], name)
        _close(batched[name]["artifact_norm_threshold"], expected["threshold"], name)
    # a loose rule (k = 0.5) so that patches are actually removed; metrics recomputed without them
    extractor = AttentionExtractor(tiny_encoder, layers="last", token_norms=True)
    pixels = _pixels(tiny_encoder, sample_images)
    output = extractor(pixels)
    loose = artifact_analysis(output.last_layer_map(), output.patch_norms, k=0.5)
    removed = 0
    for row, name in enumerate(IMAGES):
        attentions, hidden, _ = eager[name]
        expected = ref.artifacts(attentions[-1].mean(axis=0)[0, 1:], hidden, k=0.5)
        assert list(np.flatnonzero(loose["mask"][row].numpy())) == expected["indices"], name
        removed += expected["count"]
        for metric in METRIC_NAMES:
            _close(loose[f"{metric}_without_artifacts"][row], expected["without"][metric], f"{name} {metric}")
    assert removed > len(IMAGES)


def test_masked_metrics_equal_metrics_of_the_kept_entries():
    rng = np.random.default_rng(0)
    a = torch.from_numpy(rng.dirichlet(np.full(50, 0.3), size=20))
    keep = torch.from_numpy(rng.random((20, 50)) > rng.random((20, 1)) * 0.8)
    keep[0] = True
    keep[1] = False
    keep[2, :] = False
    keep[2, 7] = True
    out = masked_attention_metrics(a, keep)
    for i in range(20):
        kept = a[i][keep[i]].numpy()
        if kept.size == 0:
            assert all(np.isnan(out[m][i].item()) for m in METRIC_NAMES if m != "num_high_attention_patches")
            continue
        expected = attention_metrics_numpy(kept)
        for metric in METRIC_NAMES:
            _close(out[metric][i], expected[metric], f"row {i} {metric}")
    # keeping everything is exactly the seed metrics
    full = attention_metrics(a)
    everything = masked_attention_metrics(a, torch.ones_like(keep))
    for metric in METRIC_NAMES:
        _close(everything[metric], full[metric], metric)


def test_planted_high_norm_tokens_are_found():
    rng = np.random.default_rng(1)
    norms = torch.from_numpy(rng.normal(50, 2, size=(3, 64)))
    norms[0, [5, 40]] = 400.0
    norms[2, 63] = 300.0
    attention = torch.full((3, 64), 1 / 70, dtype=torch.float64)
    attention[0, [5, 40]] = 0.2
    out = artifact_analysis(attention, norms)
    assert out["artifact_count"].tolist() == [2, 0, 1]
    assert out["mask"][0].nonzero().ravel().tolist() == [5, 40]
    assert out["artifact_attention_share"][0] == pytest.approx(0.4 / (0.4 + 62 / 70))


def test_spatial_statistics_and_permutation_baseline_match_reference(batched, tiny_encoder):
    grid = tiny_encoder.grid_size
    n = grid[0] * grid[1]
    for name in IMAGES:
        cls_attn = np.asarray(batched[name]["map"], dtype=np.float64)
        expected = ref.spatial(cls_attn, grid)
        perm = np.random.default_rng(image_seed(name)).permutation(n)
        expected_perm = ref.spatial(cls_attn[perm], grid)
        for key, value in expected.items():
            _close(batched[name][key], value, f"{name} {key}")
            _close(batched[name][f"{key}_permuted"], expected_perm[key], f"{name} {key} permuted")


@pytest.mark.parametrize("grid", [(5, 7), (14, 14), (24, 24)])
def test_spatial_statistics_on_odd_grids_and_uniform_closed_form(grid):
    n = grid[0] * grid[1]
    maps = torch.from_numpy(np.random.default_rng(2).dirichlet(np.full(n, 0.5), size=4))
    ours = spatial_statistics(maps, grid)
    for row in range(4):
        for key, value in ref.spatial(maps[row].numpy(), grid).items():
            _close(ours[key][row], value, f"{grid} {key}")
    uniform = spatial_statistics(torch.full((1, n), 1.0 / n, dtype=torch.float64), grid)
    for key, value in uniform_spatial_baselines(grid).items():
        _close(uniform[key][0], value, f"uniform {key}")
    assert uniform_spatial_baselines(grid)["attention_share_top"] == pytest.approx(1 / 3)
    assert uniform_spatial_baselines(grid)["attention_share_left"] == pytest.approx(0.5)


@pytest.mark.parametrize("n", [36, 196, 576])
def test_uniform_baselines_closed_form_and_permutation_invariance(n):
    values = attention_metrics(torch.full((1, n), 1.0 / n, dtype=torch.float64))
    closed = uniform_baselines(n)
    for metric in METRIC_NAMES:
        if metric == "num_high_attention_patches":
            # mathematically 0 (no patch is above the mean); in floating point the mean of N copies of 1/N
            # can land one ulp below 1/N and then every patch counts (the seed's code does the same)
            assert int(values[metric][0]) in (0, n) and closed[metric] == 0
            continue
        _close(values[metric][0], closed[metric], metric)
    assert closed["attention_entropy"] == pytest.approx(np.log(n), abs=1e-6)
    # none of the six seed metrics sees where a patch is: a permutation leaves each one unchanged
    a = torch.from_numpy(np.random.default_rng(n).dirichlet(np.full(n, 0.2), size=3))
    shuffled = torch.gather(a, 1, permutations([1, 2, 3], n))
    before, after = attention_metrics(a), attention_metrics(shuffled)
    for metric in METRIC_NAMES:
        assert PERMUTATION_INVARIANT[metric]
        np.testing.assert_allclose(after[metric].numpy(), before[metric].numpy(), atol=1e-12)


def test_rollout_matches_eager_reference(tiny_encoder, eager, sample_images):
    pixels = _pixels(tiny_encoder, sample_images)
    extractor = RolloutExtractor(tiny_encoder, precision="fp32")
    rows = torch.cat([extractor(pixels[i : i + 3])[0] for i in range(0, len(IMAGES), 3)])
    metrics = attention_metrics(rows)
    for row, name in enumerate(IMAGES):
        expected = ref.rollout(eager[name][0])
        _close(rows[row].numpy(), expected, f"{name} rollout map")
        expected_metrics = attention_metrics_numpy(expected)
        for metric in METRIC_NAMES:
            _close(metrics[metric][row], expected_metrics[metric], f"{name} rollout {metric}")
        assert not np.allclose(expected, eager[name][0][-1].mean(axis=0)[0, 1:], atol=1e-3)


def test_ablation_matches_per_image_reference(tiny_encoder, eager, sample_images):
    pixels = _pixels(tiny_encoder, sample_images)
    extractor = AttentionExtractor(tiny_encoder, precision="fp32")
    out = {k: np.concatenate([ablate(extractor, pixels[i : i + 4], IMAGES[i : i + 4])[k] for i in range(0, len(IMAGES), 4)])
           for k in ("ablation_k", "topk_attention_share", "cosine_distance_topk", "cosine_distance_random")}
    grid, patch = tiny_encoder.grid_size, tiny_encoder.patch_size
    n = grid[0] * grid[1]
    k = ablation_k(n)
    assert k == int(n * 0.1) and set(out["ablation_k"]) == {k}
    for row, name in enumerate(IMAGES):
        attentions, hidden, pixel_values = eager[name]
        cls_attn = attentions[-1].mean(axis=0)[0, 1:]
        top = list(np.argsort(-cls_attn, kind="stable")[:k])
        rand = list(np.random.default_rng(image_seed(name) ^ 0x5EED).permutation(n)[:k])
        assert sorted(rand) == sorted(random_patches([image_seed(name)], n, k)[0].tolist())
        original = hidden[0]
        _, masked_top = ref.eager_forward(tiny_encoder, torch.from_numpy(ref.mask_pixels(pixel_values, top, grid, patch))[None])
        _, masked_rand = ref.eager_forward(tiny_encoder, torch.from_numpy(ref.mask_pixels(pixel_values, rand, grid, patch))[None])
        _close(out["topk_attention_share"][row], cls_attn[top].sum() / cls_attn.sum(), name)
        _close(out["cosine_distance_topk"][row], ref.cosine_distance(original, masked_top[0]), f"{name} top-k")
        _close(out["cosine_distance_random"][row], ref.cosine_distance(original, masked_rand[0]), f"{name} random")

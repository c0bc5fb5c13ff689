"""Batched relevance maps against the slow per-image reference, and the agreement measures."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats
import torch

from attn_assets.core.relevance import map_agreement, relevance_maps, spearman_rows, top_fraction_overlap

from .reference import reference_relevance

# float32 throughout; relevance entries are O(1) (R starts at the identity) and each layer adds sums of T = 37
# products, so summation-order differences between batched matmuls and the reference's loops stay ~1e-6.
TOLERANCE = 1e-5


def _pixels(n: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, 48, 48, generator=torch.Generator().manual_seed(seed))


def _reference_model(tiny_clip_dir):
    from transformers import CLIPModel, CLIPTokenizer

    return CLIPModel.from_pretrained(tiny_clip_dir).eval(), CLIPTokenizer.from_pretrained(tiny_clip_dir)


@pytest.mark.parametrize("batch", [1, 4])
def test_relevance_matches_reference(tiny_classifier, tiny_clip_dir, batch):
    model, tokenizer = _reference_model(tiny_clip_dir)
    pixels = _pixels(batch)
    truth = torch.tensor([1, 3, -1, 0][:batch])
    out = relevance_maps(tiny_classifier, pixels, [None, truth])
    # the model's attention is peaked: uniform attention would let a transposed or mis-sliced map pass
    assert (out.attention.max(dim=1).values / out.attention.min(dim=1).values).min() > 10
    for b in range(batch):
        predicted, logits = reference_relevance(model, tokenizer, tiny_classifier.prompts.captions, pixels[b], None)
        torch.testing.assert_close(out.logits[b], logits, rtol=1e-5, atol=1e-4)
        torch.testing.assert_close(out.maps[0][b], predicted, rtol=0, atol=TOLERANCE)
        if truth[b] >= 0:
            true_map, _ = reference_relevance(model, tokenizer, tiny_classifier.prompts.captions, pixels[b], int(truth[b]))
            torch.testing.assert_close(out.maps[1][b], true_map, rtol=0, atol=TOLERANCE)
            assert not torch.allclose(true_map, predicted) or int(truth[b]) == int(logits.argmax())
        else:
            assert torch.count_nonzero(out.maps[1][b]) == 0
    assert out.maps[0].shape == (batch, 36) and (out.maps[0] >= 0).all()


def test_batch_does_not_change_a_map(tiny_classifier):
    pixels = _pixels(5, seed=3)
    whole = relevance_maps(tiny_classifier, pixels, [None])
    alone = relevance_maps(tiny_classifier, pixels[2:3], [None])
    torch.testing.assert_close(whole.maps[0][2:3], alone.maps[0], rtol=0, atol=TOLERANCE)
    torch.testing.assert_close(whole.rollout[2:3], alone.rollout, rtol=0, atol=TOLERANCE)


def test_rollout_and_attention_match_their_extractors(tiny_classifier):
    from attn_assets.core.extract import AttentionExtractor
    from attn_assets.core.rollout import RolloutExtractor

    pixels = _pixels(3, seed=5)
    out = relevance_maps(tiny_classifier, pixels, [None])
    rollout, _ = RolloutExtractor(tiny_classifier.encoder, precision="fp32")(pixels)
    attention = AttentionExtractor(tiny_classifier.encoder, precision="fp32")(pixels).last_layer_map()
    # same formulas, eager probabilities vs the hooks' recomputed ones: float32 rounding ~1e-7
    torch.testing.assert_close(out.rollout, rollout, rtol=0, atol=1e-5)
    torch.testing.assert_close(out.attention, attention.float(), rtol=0, atol=1e-5)


def test_spearman_rows_matches_scipy():
    rng = np.random.default_rng(0)
    a, b = rng.random((4, 30)), rng.random((4, 30))
    b[1] = a[1] ** 2  # monotone: rho 1
    a[2, :10] = 0.5  # ties
    expected = [scipy.stats.spearmanr(x, y).statistic for x, y in zip(a, b)]
    np.testing.assert_allclose(spearman_rows(a, b), expected, rtol=1e-12)
    assert np.isnan(spearman_rows(np.ones((1, 5)), rng.random((1, 5)))[0])


def test_top_fraction_overlap():
    a = torch.arange(20, dtype=torch.float32)[None]
    assert top_fraction_overlap(a, a).item() == 1.0
    assert top_fraction_overlap(a, -a).item() == 0.0
    agreement = map_agreement(a, a, -a)
    assert agreement["spearman_attention"][0] == pytest.approx(1.0)
    assert agreement["spearman_rollout"][0] == pytest.approx(-1.0)

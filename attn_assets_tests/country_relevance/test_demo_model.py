"""On the trained demo model (spec ``demo``, models/demo): the true country's relevance falls on the planted sign,
and deleting the sign's patches first lowers the true country's probability faster than a random order.

Skipped while the demo model is not in the repository (it is trained and committed separately)."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from attn_assets.catalog.demo_data import STYLES, draw_example
from attn_assets.core.confidence import bootstrap_mean_interval
from attn_assets.core.faithfulness import (
    curve_auc,
    curve_fractions,
    fill_for,
    probability_curves,
    random_order,
)
from attn_assets.core.localization import cue_geometry, localization_scores
from attn_assets.core.model import DEMO_MODEL_DIR
from attn_assets.core.preprocess import Preprocessor
from attn_assets.core.relevance import relevance_maps

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (DEMO_MODEL_DIR / "config.json").is_file(), reason=f"no demo model in {DEMO_MODEL_DIR}"),
]
IMAGES = 45  # five sign_only scenes per demo country


@pytest.fixture(scope="module")
def demo_batch():
    from attn_assets.core.zero_shot import CountryPrompts, ZeroShotClassifier, load_clip_classifier

    encoder, model, tokenizer = load_clip_classifier("demo", "cpu")
    prompts = CountryPrompts.from_codes(tuple(style.code for style in STYLES))
    classifier = ZeroShotClassifier(encoder, model, tokenizer, prompts, "fp32")
    preprocess = Preprocessor(encoder.processor)
    rng = random.Random(16)
    pixels, coverages, truth = [], [], []
    for n in range(IMAGES):
        country = n % len(STYLES)
        image, box = draw_example(country, "sign_only", 320 + 16 * (n % 3), 240, rng)
        cue = cue_geometry(box, preprocess.crop_geometry(*image.size), encoder.grid_size)
        assert cue.in_crop  # sign_only signs lie inside the centre crop by construction
        pixels.append(preprocess(image))
        coverages.append(cue.coverage)
        truth.append(country)
    return classifier, torch.stack(pixels), np.stack(coverages), torch.tensor(truth)


def test_true_country_relevance_falls_on_the_sign(demo_batch):
    classifier, pixels, coverages, truth = demo_batch
    out = relevance_maps(classifier, pixels, [truth])
    maps = out.maps[0].numpy()
    ratios = np.array([localization_scores(maps[i:i + 1], coverages[i])["energy_ratio"][0] for i in range(len(maps))])
    # energy_ratio 1 = no better than a uniform map; the sign is the only evidence, so the relevance must beat it
    low, _ = bootstrap_mean_interval(ratios)
    assert low > 1.0, ratios


def test_deleting_the_sign_first_beats_a_random_order(demo_batch):
    classifier, pixels, coverages, truth = demo_batch
    encoder = classifier.encoder
    fractions = curve_fractions(10)
    fill = fill_for(pixels, "mean", encoder.patch_size)
    ids = [f"demo{i}" for i in range(len(pixels))]
    shuffled = random_order(ids, encoder.num_patches)
    # the sign's cells first (most covered first), then every other cell in the same random order as the control:
    # the two orders differ only in where the sign's cells come
    cue_first = torch.stack([torch.tensor(sorted(row.tolist(), key=lambda cell: -coverage[cell]))
                             for row, coverage in zip(shuffled, coverages)])
    args = (truth, "deletion", fill, encoder.grid_size, encoder.patch_size, fractions)
    cue_auc = curve_auc(probability_curves(classifier.probabilities, pixels, cue_first, *args), fractions)
    random_auc = curve_auc(probability_curves(classifier.probabilities, pixels, shuffled, *args), fractions)
    # the difference's 95% bootstrap interval lies below 0: deleting the sign first is faster, beyond noise
    _, high = bootstrap_mean_interval(cue_auc - random_auc)
    assert high < 0, (cue_auc, random_auc)

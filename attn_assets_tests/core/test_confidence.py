"""core.confidence: the one bootstrap interval of a mean."""

from __future__ import annotations

import numpy as np
import pytest

from attn_assets.core.confidence import bootstrap_mean_interval


def test_interval_brackets_the_mean_and_narrows_with_more_data():
    rng = np.random.default_rng(1)
    small, large = rng.normal(5.0, 1.0, 20), rng.normal(5.0, 1.0, 2000)
    low_s, high_s = bootstrap_mean_interval(small)
    low_l, high_l = bootstrap_mean_interval(large)
    assert low_s < small.mean() < high_s and low_l < large.mean() < high_l
    # the standard error falls as 1/sqrt(n): 100x the data, about a tenth of the width (loose: resampling noise)
    assert (high_l - low_l) < 0.2 * (high_s - low_s)
    assert bootstrap_mean_interval(small) == (low_s, high_s)  # seeded: the same on every call


def test_degenerate_samples():
    assert np.isnan(bootstrap_mean_interval([1.0])[0])
    assert np.isnan(bootstrap_mean_interval([np.nan, 2.0])[1])
    assert bootstrap_mean_interval([3.0, 3.0, np.nan]) == (3.0, 3.0)


@pytest.mark.parametrize("confidence", [0.5, 0.95])
def test_wider_confidence_gives_a_wider_interval(confidence):
    values = np.arange(30, dtype=float)
    low, high = bootstrap_mean_interval(values, confidence=confidence)
    wide_low, wide_high = bootstrap_mean_interval(values, confidence=0.99)
    assert wide_low <= low and high <= wide_high

"""Confidence intervals of a mean, one implementation for every summary table (localization, faithfulness,
cross-model).

The percentile bootstrap (Efron & Tibshirani 1993, "An Introduction to the Bootstrap") through
``scipy.stats.bootstrap``, seeded, so a summary is the same on every run of the same rows.
"""

from __future__ import annotations

import numpy as np
from scipy import stats

#: Resamples and seed of every bootstrap interval the pipeline stores.
BOOTSTRAP_RESAMPLES = 1000
BOOTSTRAP_SEED = 0


def bootstrap_mean_interval(values, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED,
                            confidence: float = 0.95) -> tuple[float, float]:
    """(low, high) percentile-bootstrap interval of the mean of the finite entries of ``values``.

    NaN, NaN for fewer than two finite values (no spread to resample); the value itself twice when every value is
    equal (scipy refuses a degenerate sample).
    """
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    if values.size < 2:
        return float("nan"), float("nan")
    if np.all(values == values[0]):
        return float(values[0]), float(values[0])
    result = stats.bootstrap((values,), np.mean, n_resamples=resamples, method="percentile",
                             confidence_level=confidence, random_state=np.random.default_rng(seed))
    return float(result.confidence_interval.low), float(result.confidence_interval.high)

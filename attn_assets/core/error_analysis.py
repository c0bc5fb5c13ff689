"""Does attention predict geolocation failure? Correlations and best-vs-worst-decile contrasts.

Pure numpy / scipy / pandas: a frame with one row per image (the attention metrics and the error)
in, one row per metric out, in the GEOLOCATION_ERROR_ANALYSIS columns.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats


def decile_size(images: int) -> int:
    """Images in the best (and the worst) decile: ceil(n / 10), so every n >= 1 has one."""
    return math.ceil(images / 10) if images else 0


def _correlation(fn, x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:  # undefined: too few points or a constant
        return float("nan"), float("nan")
    result = fn(x, y)
    return float(result[0]), float(result[1])


def error_analysis(frame: pd.DataFrame, metrics: Sequence[str], error_column: str = "error_km") -> pd.DataFrame:
    """Per metric: Pearson and Spearman correlation with the error (with p-values) and the metric's mean
    over the best and the worst decile by error (ties broken by image_id), with a Mann-Whitney U test.

    Rows whose metric or error is missing or non-finite are left out of that metric's row only.
    """
    rows = []
    for metric in metrics:
        d = frame[["image_id", metric, error_column]].copy()
        d[metric] = pd.to_numeric(d[metric], errors="coerce")
        d[error_column] = pd.to_numeric(d[error_column], errors="coerce")
        d = d[np.isfinite(d[metric]) & np.isfinite(d[error_column])]
        d = d.sort_values([error_column, "image_id"], kind="mergesort")
        x, y = d[metric].to_numpy(np.float64), d[error_column].to_numpy(np.float64)
        k = decile_size(len(d))
        best, worst = x[:k], x[len(x) - k:] if k else x[:0]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pearson = _correlation(stats.pearsonr, x, y)
            spearman = _correlation(stats.spearmanr, x, y)
            if k and len(d) >= 2 and np.ptp(np.concatenate([best, worst])) > 0:
                mannwhitney_p = float(stats.mannwhitneyu(worst, best, alternative="two-sided").pvalue)
            else:
                mannwhitney_p = float("nan")
        best_mean = float(best.mean()) if k else float("nan")
        worst_mean = float(worst.mean()) if k else float("nan")
        rows.append({
            "metric": metric, "images": len(d), "pearson_r": pearson[0], "pearson_p": pearson[1],
            "spearman_rho": spearman[0], "spearman_p": spearman[1], "decile_images": k,
            "best_decile_mean": best_mean, "worst_decile_mean": worst_mean,
            "worst_minus_best": worst_mean - best_mean, "mannwhitney_p": mannwhitney_p,
        })
    return pd.DataFrame(rows)

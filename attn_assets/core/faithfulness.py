"""Deletion and insertion curves: is a map faithful to what the classifier uses?

Petsiuk, Das and Saenko 2018 ("RISE: Randomized Input Sampling for Explanation of Black-box Models", BMVC),
section 4.1: rank the patches by a map; DELETION removes them in that order (the class probability should
fall fast: low AUC is faithful), INSERTION starts from an image with every patch removed and reveals them in
that order (the probability should rise fast: high AUC is faithful). Here the probability is the TRUE
country's zero-shot softmax probability, at ``steps + 1`` evenly spaced fractions ``0, 1/steps, ..., 1`` of
the patches (``k = round(fraction * N)`` patches at each step), and the AUC is the trapezoid area over the
fraction axis (in [0, 1]).

"Removed" means replaced by a fill (:data:`FILLS`):

- ``mean``: the image processor's mean pixel, i.e. 0 after normalisation (as the masking ablation does);
- ``blur``: the same pixels of a Gaussian-blurred copy of the image (sigma = one patch side, separable kernel
  of radius 3 sigma, reflected borders; RISE's insertion baseline is a blurred image).

Orders compared: last-layer CLS attention, attention rollout, relevance (Chefer et al. 2021) and a seeded
per-image random order (``image_seed(image_id) ^ RANDOM_ORDER_SALT``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .analyses import image_seed, permutations
from .confidence import bootstrap_mean_interval

DEFAULT_STEPS = 10
FILLS = ("mean", "blur")
MODES = ("deletion", "insertion")
RANDOM_ORDER_SALT = 0xFA17


def curve_fractions(steps: int = DEFAULT_STEPS) -> np.ndarray:
    """``[steps + 1]`` fractions of the patches removed (deletion) or revealed (insertion): 0 .. 1."""
    if steps < 1:
        raise ValueError(f"faithfulness curves need at least 1 step, got {steps}")
    return np.linspace(0.0, 1.0, steps + 1)


def ranked_patches(maps: torch.Tensor) -> torch.Tensor:
    """``maps[B, N]`` -> patch indices ``[B, N]`` from the highest value down (ties: lower index first)."""
    return torch.argsort(maps, dim=1, descending=True, stable=True)


def random_order(image_ids: Sequence[str], num_patches: int) -> torch.Tensor:
    """A seeded per-image random patch order ``[B, N]``, independent of batch and device."""
    return permutations([image_seed(i) ^ RANDOM_ORDER_SALT for i in image_ids], num_patches)


def blurred(pixel_values: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian blur of ``pixel_values[B, 3, H, W]`` per channel (separable, radius ``ceil(3 sigma)`` capped at the
    image side - 1, reflected borders)."""
    radius = min(max(1, int(np.ceil(3 * sigma))), min(pixel_values.shape[-2:]) - 1)  # reflect needs pad < side
    x = torch.arange(-radius, radius + 1, dtype=torch.float32, device=pixel_values.device)
    kernel = torch.exp(-0.5 * (x / sigma) ** 2)
    kernel = (kernel / kernel.sum()).to(pixel_values.dtype)
    channels = pixel_values.shape[1]
    padded = F.pad(pixel_values, (radius, radius, radius, radius), mode="reflect")
    out = F.conv2d(padded, kernel.view(1, 1, 1, -1).expand(channels, 1, 1, -1), groups=channels)
    return F.conv2d(out, kernel.view(1, 1, -1, 1).expand(channels, 1, -1, 1), groups=channels)


def fill_for(pixel_values: torch.Tensor, fill: str, patch_size: int) -> torch.Tensor:
    """The replacement pixels ``[B, 3, H, W]`` of ``fill`` (see the module docstring)."""
    if fill == "mean":
        return torch.zeros_like(pixel_values)
    if fill == "blur":
        return blurred(pixel_values, float(patch_size))
    raise ValueError(f"unknown faithfulness fill {fill!r}; use one of {FILLS}")


def step_masks(order: torch.Tensor, fractions: np.ndarray) -> torch.Tensor:
    """``order[B, N]`` -> boolean ``[B, S, N]``: at step s, True for the first ``round(fractions[s] * N)`` patches."""
    batch, n = order.shape
    counts = torch.tensor(np.rint(fractions * n).astype(np.int64), device=order.device)  # [S]
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(n, device=order.device).expand(batch, n))  # rank[b, patch]
    return rank[:, None, :] < counts[None, :, None]


def composite(pixel_values: torch.Tensor, fill: torch.Tensor, chosen: torch.Tensor, mode: str,
              grid: tuple[int, int], patch_size: int) -> torch.Tensor:
    """Images ``[B, S, 3, H, W]`` of every step: deletion shows ``fill`` on the chosen patches ``chosen[B, S, N]``,
    insertion shows the image on them and ``fill`` elsewhere."""
    if mode not in MODES:
        raise ValueError(f"unknown curve mode {mode!r}; use one of {MODES}")
    gh, gw = grid
    batch, steps, _ = chosen.shape
    height, width = pixel_values.shape[-2:]
    if (height, width) != (gh * patch_size, gw * patch_size):
        raise ValueError(f"pixel grid {height}x{width} is not {gh}x{gw} patches of {patch_size}")
    show_fill = chosen if mode == "deletion" else ~chosen
    pixel_mask = show_fill.view(batch, steps, 1, gh, 1, gw, 1).expand(batch, steps, 1, gh, patch_size, gw, patch_size)
    pixel_mask = pixel_mask.reshape(batch, steps, 1, height, width)
    return torch.where(pixel_mask, fill[:, None], pixel_values[:, None])


def probability_curves(probability_of, pixel_values: torch.Tensor, order: torch.Tensor, true_index: torch.Tensor,
                       mode: str, fill: torch.Tensor, grid: tuple[int, int], patch_size: int,
                       fractions: np.ndarray, chunk: int = 64) -> np.ndarray:
    """True-class probability at each step, ``[B, S]`` float64.

    ``probability_of(pixels[M, 3, H, W])`` -> class probabilities ``[M, C]``; the ``B * S`` composites are fed
    ``chunk`` at a time. ``true_index[B]`` < 0 gives a row of NaN.
    """
    chosen = step_masks(order.to(pixel_values.device), fractions)
    images = composite(pixel_values, fill, chosen, mode, grid, patch_size)
    batch, steps = images.shape[:2]
    flat = images.reshape(batch * steps, *images.shape[2:])
    target = true_index.clamp(min=0).to(pixel_values.device).repeat_interleave(steps)
    values = []
    for start in range(0, flat.shape[0], chunk):
        probabilities = probability_of(flat[start:start + chunk])
        values.append(probabilities.gather(1, target[start:start + chunk, None].to(probabilities.device))[:, 0])
    curves = torch.cat(values).double().cpu().numpy().reshape(batch, steps)
    curves[(true_index < 0).cpu().numpy()] = np.nan
    return curves


def curve_auc(curves: np.ndarray, fractions: np.ndarray) -> np.ndarray:
    """Trapezoid area under each curve ``[B, S]`` over ``fractions[S]`` -> ``[B]`` (NaN rows stay NaN)."""
    return np.trapezoid(curves, fractions, axis=1)


def faithfulness_summary(curves) -> "pd.DataFrame":
    """Rows of ``faithfulness_summary`` from per-image AUCs (columns ``country``, ``map``, ``mode``, ``auc``):
    mean AUC and its bootstrap interval per (map, mode), overall and per country."""
    import pandas as pd

    rows = []
    for (name, mode), group in curves.groupby(["map", "mode"], sort=True):
        scopes = [("overall", None, group)] + [("country", c, g) for c, g in group.groupby("country", sort=True)]
        for scope, country, frame in scopes:
            auc = frame["auc"].to_numpy(dtype=np.float64)
            low, high = bootstrap_mean_interval(auc)
            rows.append({"scope": scope, "country": country, "map": name, "mode": mode,
                         "images": int(np.isfinite(auc).sum()), "mean_auc": float(np.nanmean(auc)) if auc.size else None,
                         "ci_low": low, "ci_high": high})
    return pd.DataFrame(rows, columns=["scope", "country", "map", "mode", "images", "mean_auc", "ci_low", "ci_high"])

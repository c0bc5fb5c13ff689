"""The analyses computed in the statistics' own forward pass, pure torch / numpy, batched over images.

Every function here takes batched tensors and has a straightforward per-image reference in
``attn_assets_tests/analyses`` (eager attentions, Python loops) that it matches to 1e-5.

Inputs are those of ``AttentionExtractor(layers="all", token_norms=True)``:

- multi-layer profile - the six metrics of every layer's head-averaged CLS row (``layer_metrics``);
- per-head analysis - the six metrics of each last-layer head and the mean pairwise cosine
  similarity of the heads' CLS maps (``head_metrics``, ``head_similarity``);
- baselines - closed-form metric values of uniform attention (``uniform_baselines``,
  ``uniform_spatial_baselines``) and a seeded per-image permutation of the patches. NOTE: all six
  CLS-row metrics are permutation-invariant (they only see the multiset of weights), so the permuted
  value of each equals the real one exactly; the permutation baseline is therefore computed for
  the SPATIAL statistics, where it is the null "attention with no spatial structure";
- artifact tokens (Darcet et al. 2023, "Vision Transformers Need Registers", arXiv:2309.16588) -
  patches whose last-layer output-token norm is an outlier (``artifact_mask``: norm > median +
  k * 1.4826 * MAD per image, k = 5) and the metrics recomputed with those patches removed
  (``masked_attention_metrics``);
- spatial statistics - centre of mass, distances from the image centre, attention share per
  horizontal third and per vertical half (``spatial_statistics``).

The analyses with their own forward passes live beside this module: attention rollout in
``core/rollout.py``, the masking ablation in ``core/ablation.py``.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from attn_assets.metric_names import METRIC_NAMES, SPATIAL_NAMES

from .metrics import attention_metrics, metrics_to_numpy

ARTIFACT_MAD_K = 5.0  # artifact rule: norm > median + k * 1.4826 * MAD (a robust 5-sigma outlier)
MAD_TO_SIGMA = 1.4826
PERMUTATION_SALT = 0

REGIONS = ("top", "middle", "bottom", "left", "right")


# --------------------------------------------------------------------------- seeds


def image_seed(image_id: str, salt: int = PERMUTATION_SALT) -> int:
    """A stable 32-bit seed per image (crc32 of its id): results don't depend on batch composition."""
    return (zlib.crc32(str(image_id).encode("utf-8")) ^ salt) & 0xFFFFFFFF


def permutations(seeds: Sequence[int], n: int) -> torch.Tensor:
    """``LongTensor[B, n]``: ``np.random.default_rng(seed).permutation(n)`` per image."""
    if not len(seeds):
        return torch.zeros((0, n), dtype=torch.long)
    return torch.from_numpy(np.stack([np.random.default_rng(int(s)).permutation(n) for s in seeds]).astype(np.int64))


# --------------------------------------------------------------------------- layers and heads


def layer_metrics(cls_attention: torch.Tensor) -> dict[str, torch.Tensor]:
    """``cls_attention[B, L, H, N]`` -> ``{metric: Tensor[B, L]}`` of each layer's head-averaged row."""
    batch, layers, _, n = cls_attention.shape
    rows = cls_attention.mean(dim=2).reshape(batch * layers, n)
    return {name: value.reshape(batch, layers) for name, value in attention_metrics(rows).items()}


def head_metrics(head_rows: torch.Tensor) -> dict[str, torch.Tensor]:
    """``head_rows[B, H, N]`` (one layer, heads NOT averaged) -> ``{metric: Tensor[B, H]}``."""
    batch, heads, n = head_rows.shape
    return {name: value.reshape(batch, heads) for name, value in attention_metrics(head_rows.reshape(batch * heads, n)).items()}


def head_similarity(head_rows: torch.Tensor) -> torch.Tensor:
    """Mean pairwise cosine similarity of the heads' CLS maps, ``[B, H, N]`` -> ``[B]`` (NaN for 1 head)."""
    batch, heads, _ = head_rows.shape
    if heads < 2:
        return torch.full((batch,), float("nan"), dtype=torch.float64, device=head_rows.device)
    x = F.normalize(head_rows.detach().to(torch.float64), dim=-1)
    gram = x @ x.transpose(1, 2)
    off_diagonal = gram.sum(dim=(1, 2)) - torch.diagonal(gram, dim1=1, dim2=2).sum(dim=1)
    return off_diagonal / (heads * (heads - 1))


# --------------------------------------------------------------------------- baselines


def uniform_baselines(num_patches: int) -> dict[str, float]:
    """The six metrics, in closed form, of uniform attention ``a_i = 1/N`` over N patches (seed formulas).

    entropy = -N p ln(p + 1e-10) with p = (1/N) / (1 + 1e-8) (~ ln N); max = 1/N;
    top-10% / top-25% = int(0.1 N) p / int(0.25 N) p; above-mean patches = 0; spread = 0.
    """
    n = int(num_patches)
    p = (1.0 / n) / (1.0 + 1e-8)
    return {
        "attention_entropy": -n * p * math.log(p + 1e-10),
        "attention_max": 1.0 / n,
        "attention_concentration_top10": int(n * 0.1) * p,
        "attention_concentration_top25": int(n * 0.25) * p,
        "num_high_attention_patches": 0.0,
        "attention_spread": 0.0,
    }


# Which metrics change when the patches of a map are shuffled: none of the seed's six.
PERMUTATION_INVARIANT = {**{name: True for name in METRIC_NAMES}, **{name: False for name in SPATIAL_NAMES}}


# --------------------------------------------------------------------------- spatial statistics


def _overlap(lo: np.ndarray, hi: np.ndarray, a: float, b: float) -> np.ndarray:
    """Fraction of each interval [lo, hi] lying inside [a, b]."""
    return np.clip(np.minimum(hi, b) - np.maximum(lo, a), 0.0, None) / (hi - lo)


def spatial_geometry(grid: tuple[int, int]) -> dict[str, np.ndarray]:
    """Per patch (row-major): centre x, y in [0, 1] of the model view, distance of the centre from
    (0.5, 0.5), and the fraction of the patch's area in each region (thirds by height, halves by width)."""
    gh, gw = int(grid[0]), int(grid[1])
    rows, cols = np.divmod(np.arange(gh * gw), gw)
    top, bottom = rows / gh, (rows + 1) / gh
    left, right = cols / gw, (cols + 1) / gw
    x, y = (cols + 0.5) / gw, (rows + 0.5) / gh
    return {
        "x": x,
        "y": y,
        "distance": np.sqrt((x - 0.5) ** 2 + (y - 0.5) ** 2),
        "top": _overlap(top, bottom, 0.0, 1 / 3),
        "middle": _overlap(top, bottom, 1 / 3, 2 / 3),
        "bottom": _overlap(top, bottom, 2 / 3, 1.0),
        "left": _overlap(left, right, 0.0, 0.5),
        "right": _overlap(left, right, 0.5, 1.0),
    }


def spatial_statistics(maps: torch.Tensor, grid: tuple[int, int]) -> dict[str, torch.Tensor]:
    """``maps[B, N]`` (CLS rows, row-major patches) -> ``{SPATIAL_NAMES: Tensor[B]}``, float64.

    The row is renormalised to sum 1 (p = a / sum a). Centre of mass ``sum p (x, y)`` with x from
    left to right and y from top to bottom of the model's view (the centre crop), both in [0, 1];
    ``attention_com_distance`` is the distance of that point from the view's centre;
    ``attention_center_distance`` the attention-weighted mean distance of the patches from the centre.
    Shares weight each patch by the fraction of its area inside the region (exact for any grid).
    """
    a = maps.detach().to(torch.float64)
    p = a / a.sum(dim=1, keepdim=True)
    geo = {k: torch.as_tensor(v, dtype=torch.float64, device=a.device) for k, v in spatial_geometry(grid).items()}
    com_x, com_y = p @ geo["x"], p @ geo["y"]
    out = {
        "attention_com_x": com_x,
        "attention_com_y": com_y,
        "attention_com_distance": torch.sqrt((com_x - 0.5) ** 2 + (com_y - 0.5) ** 2),
        "attention_center_distance": p @ geo["distance"],
    }
    for region in REGIONS:
        out[f"attention_share_{region}"] = p @ geo[region]
    return out


def _snap(value: float, eps: float = 1e-12) -> float:
    return 0.0 if abs(value) < eps else float(value)


def uniform_spatial_baselines(grid: tuple[int, int]) -> dict[str, float]:
    """Spatial statistics of uniform attention on the grid (closed form over the patch centres)."""
    geo = spatial_geometry(grid)
    n = geo["x"].size
    out = {
        "attention_com_x": float(geo["x"].mean()),
        "attention_com_y": float(geo["y"].mean()),
        # 0 up to rounding (a symmetric grid): snap the float noise of the mean to 0
        "attention_com_distance": _snap(math.hypot(geo["x"].mean() - 0.5, geo["y"].mean() - 0.5)),
        "attention_center_distance": float(geo["distance"].sum() / n),
    }
    for region in REGIONS:
        out[f"attention_share_{region}"] = float(geo[region].sum() / n)
    return out


def permuted_spatial_statistics(maps: torch.Tensor, grid: tuple[int, int], perms: torch.Tensor) -> dict[str, torch.Tensor]:
    """Spatial statistics of each map with its patches shuffled by ``perms[B, N]`` (``map[perm]``)."""
    shuffled = torch.gather(maps, 1, perms.to(maps.device))
    return {f"{name}_permuted": value for name, value in spatial_statistics(shuffled, grid).items()}


# --------------------------------------------------------------------------- artifact tokens


def _median(x: torch.Tensor) -> torch.Tensor:
    """numpy's median along dim 1 (mean of the two middle values for even N); torch.median isn't."""
    ranked = torch.sort(x, dim=1).values
    n = x.shape[1]
    return 0.5 * (ranked[:, (n - 1) // 2] + ranked[:, n // 2])


def artifact_threshold(norms: torch.Tensor, k: float = ARTIFACT_MAD_K) -> dict[str, torch.Tensor]:
    """``norms[B, N]`` -> per image median, MAD and threshold ``median + k * 1.4826 * MAD`` (float64)."""
    x = norms.detach().to(torch.float64)
    median = _median(x)
    mad = _median((x - median[:, None]).abs())
    return {"median": median, "mad": mad, "threshold": median + k * MAD_TO_SIGMA * mad}


def artifact_mask(norms: torch.Tensor, k: float = ARTIFACT_MAD_K) -> torch.Tensor:
    """Bool ``[B, N]``: patches whose output-token norm is above ``median + k * 1.4826 * MAD``."""
    return norms.detach().to(torch.float64) > artifact_threshold(norms, k)["threshold"][:, None]


def masked_attention_metrics(cls_attention: torch.Tensor, keep: torch.Tensor) -> dict[str, torch.Tensor]:
    """The six metrics of ``cls_attention[b][keep[b]]`` per image (patches dropped, not zeroed), batched.

    Equals ``attention_metrics`` on each image's kept entries: renormalisation, top-10%/25% counts,
    the mean and the population std all use the number of kept patches. NaN where nothing is kept.
    """
    a = cls_attention.detach().to(torch.float64)
    keep = keep.to(a.device).bool()
    w = keep.to(torch.float64)
    n = keep.sum(dim=1)
    nf = n.to(torch.float64)
    total = (a * w).sum(dim=1)
    p = a * w / (total + 1e-8)[:, None]
    ranked = torch.sort(p, dim=1, descending=True).values
    cumulative = torch.cat([torch.zeros_like(ranked[:, :1]), torch.cumsum(ranked, dim=1)], dim=1)

    def top(fraction: float) -> torch.Tensor:
        count = torch.floor(nf * fraction).long()  # == int(n * fraction) in Python (IEEE float64)
        return torch.gather(cumulative, 1, count[:, None]).squeeze(1)

    mean = total / nf.clamp(min=1)
    out = {
        "attention_entropy": -(p * torch.log(p + 1e-10)).sum(dim=1),
        "attention_max": a.masked_fill(~keep, float("-inf")).max(dim=1).values,
        "attention_concentration_top10": top(0.1),
        "attention_concentration_top25": top(0.25),
        "num_high_attention_patches": ((a > mean[:, None]) & keep).sum(dim=1),
        "attention_spread": torch.sqrt((((a - mean[:, None]) ** 2) * w).sum(dim=1) / nf.clamp(min=1)),
    }
    empty = n == 0
    if bool(empty.any()):
        for name in out:
            if name != "num_high_attention_patches":
                out[name] = out[name].masked_fill(empty, float("nan"))
    return out


def artifact_analysis(cls_row: torch.Tensor, norms: torch.Tensor, k: float = ARTIFACT_MAD_K) -> dict:
    """Per image: artifact patches (by output-token norm), their share of the CLS attention, and the
    six metrics without them. ``cls_row[B, N]`` head-averaged last layer, ``norms[B, N]``."""
    stats = artifact_threshold(norms, k)
    mask = norms.detach().to(torch.float64) > stats["threshold"][:, None]
    a = cls_row.detach().to(torch.float64)
    share = (a * mask).sum(dim=1) / a.sum(dim=1)
    without = masked_attention_metrics(cls_row, ~mask)
    return {
        "mask": mask,
        "artifact_count": mask.sum(dim=1),
        "artifact_attention_share": share,
        "artifact_norm_median": stats["median"],
        "artifact_norm_threshold": stats["threshold"],
        "artifact_norm_max": norms.detach().to(torch.float64).max(dim=1).values,
        **{f"{name}_without_artifacts": value for name, value in without.items()},
    }


# --------------------------------------------------------------------------- the same-pass bundle


def same_pass_analyses(
    cls_attention: torch.Tensor,
    patch_norms: torch.Tensor,
    grid: tuple[int, int],
    image_ids: Sequence[str],
) -> dict[str, np.ndarray | list]:
    """Layer, head, artifact, spatial and permuted-spatial statistics of one batch, as host arrays keyed
    like the shard Parquet columns.

    ``cls_attention[B, L, H, N]`` must hold EVERY layer (``layers="all"``); ``patch_norms[B, N]`` the
    norms of the patch tokens of ``last_hidden_state`` (prefix tokens dropped). Also returns
    ``head_map_sum`` ``[H, N]`` (float64 sum over the batch of each last-layer head's row), for the
    per-head mean-map figure.
    """
    batch = cls_attention.shape[0]
    last_heads = cls_attention[:, -1]  # [B, H, N]
    last_map = last_heads.mean(dim=1)  # == ExtractionOutput.last_layer_map()
    out: dict[str, np.ndarray | list] = {}
    for name, value in metrics_to_numpy(layer_metrics(cls_attention)).items():
        out[f"layer_{name}"] = value
    for name, value in metrics_to_numpy(head_metrics(last_heads)).items():
        out[f"head_{name}"] = value
    out["head_similarity"] = head_similarity(last_heads).cpu().numpy()
    artifacts = artifact_analysis(last_map, patch_norms)
    out["artifact_indices"] = [np.flatnonzero(row).astype(np.int32) for row in artifacts.pop("mask").cpu().numpy()]
    for name, value in artifacts.items():
        out[name] = value.cpu().numpy()
    for name, value in spatial_statistics(last_map, grid).items():
        out[name] = value.cpu().numpy()
    perms = permutations([image_seed(i) for i in image_ids], last_map.shape[1])
    for name, value in permuted_spatial_statistics(last_map, grid, perms).items():
        out[name] = value.cpu().numpy()
    out["head_map_sum"] = last_heads.detach().to(torch.float64).sum(dim=0).cpu().numpy() if batch else None
    return out

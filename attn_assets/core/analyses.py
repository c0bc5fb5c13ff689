"""Analyses beyond the seed (issue 7), pure torch / numpy, batched over images.

Every function here takes batched tensors and has a straightforward per-image reference in
``attn_assets_tests/analyses`` (eager attentions, Python loops) that it matches to 1e-5.

Same forward pass as the seed's statistics (``AttentionExtractor(layers="all", token_norms=True)``):

1. multi-layer profile - the six metrics of every layer's head-averaged CLS row (``layer_metrics``);
2. per-head analysis - the six metrics of each last-layer head and the mean pairwise cosine
   similarity of the heads' CLS maps (``head_metrics``, ``head_similarity``);
4. baselines - closed-form metric values of uniform attention (``uniform_baselines``,
   ``uniform_spatial_baselines``) and a seeded per-image permutation of the patches. NOTE: all six
   seed metrics are permutation-invariant (they only see the multiset of weights), so the permuted
   value of each equals the real one exactly; the permutation baseline is therefore computed for
   the SPATIAL statistics of item 6, where it is the null "attention with no spatial structure";
5. artifact tokens (Darcet et al. 2023) - patches whose last-layer output-token norm is an outlier
   (``artifact_mask``: norm > median + k * 1.4826 * MAD per image, k = 5) and the metrics
   recomputed with those patches removed (``masked_attention_metrics``);
6. spatial statistics - centre of mass, distances from the image centre, attention share per
   horizontal third and per vertical half (``spatial_statistics``).

Own forward passes (separate, optional assets):

3. attention rollout (Abnar & Zuidema 2020) - ``RolloutExtractor``: per layer, the head-averaged
   full attention A, ``A' = rownorm(0.5 A + 0.5 I)``, ``R <- A' R``; the CLS row of R (CLS column
   dropped). Memory O(B T^2): one running product, each layer's attention discarded after folding;
7. ablation - ``ablate``: mask the top-k attended patches (k = 10% of the patches) with the
   processor's mean pixel (0 after normalisation), and k seeded random patches as control; cosine
   distance between the original and masked CLS embeddings (``last_hidden_state[:, 0]``).
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from attn_assets.metric_names import SPATIAL_NAMES

from .metrics import METRIC_NAMES, attention_metrics, metrics_to_numpy

ARTIFACT_MAD_K = 5.0  # artifact rule: norm > median + k * 1.4826 * MAD (a robust 5-sigma outlier)
MAD_TO_SIGMA = 1.4826
ABLATION_FRACTION_OF_PATCHES = 0.1  # k = int(N * 0.1): the seed's top-10% set
PERMUTATION_SALT = 0
RANDOM_MASK_SALT = 0x5EED

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


# --------------------------------------------------------------------------- 1 + 2: layers and heads


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


# --------------------------------------------------------------------------- 4: baselines


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


# --------------------------------------------------------------------------- 6: spatial statistics


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


# --------------------------------------------------------------------------- 5: artifact tokens


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

ARTIFACT_SCALARS = ("artifact_count", "artifact_attention_share", "artifact_norm_median",
                    "artifact_norm_threshold", "artifact_norm_max")
WITHOUT_ARTIFACT_NAMES = tuple(f"{name}_without_artifacts" for name in METRIC_NAMES)
PERMUTED_NAMES = tuple(f"{name}_permuted" for name in SPATIAL_NAMES)


def same_pass_analyses(
    cls_attention: torch.Tensor,
    patch_norms: torch.Tensor,
    grid: tuple[int, int],
    image_ids: Sequence[str],
) -> dict[str, np.ndarray | list]:
    """Items 1, 2, 4, 5, 6 of one batch, as host arrays keyed like the shard Parquet columns.

    ``cls_attention[B, L, H, N]`` must hold EVERY layer (``layers="all"``); ``patch_norms[B, N]`` the
    norms of the patch tokens of ``last_hidden_state`` (prefix tokens dropped). Also returns ``head_map_sum`` ``[H, N]`` (float64 sum over
    the batch of each last-layer head's row), for the per-head mean-map figure.
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


# --------------------------------------------------------------------------- 3: rollout


def full_attention(hidden: torch.Tensor, site) -> torch.Tensor:
    """``hidden[B, T, D]`` (a layer's normalised input) -> head-averaged attention ``[B, T, T]`` float32.

    softmax(Q K^T * scale) of every query, as eager attention computes it, autocast off.
    """
    batch, tokens, _ = hidden.shape
    with torch.autocast(device_type=hidden.device.type, enabled=False):
        h = hidden.float()
        q = F.linear(h, site.q.weight.float(), None if site.q.bias is None else site.q.bias.float())
        k = F.linear(h, site.k.weight.float(), None if site.k.bias is None else site.k.bias.float())
        q = q.view(batch, tokens, site.num_heads, site.head_dim).transpose(1, 2)
        k = k.view(batch, tokens, site.num_heads, site.head_dim).transpose(1, 2)
        scores = torch.matmul(q, k.transpose(-1, -2)) * site.scale  # [B, H, T, T]
        return torch.softmax(scores, dim=-1, dtype=torch.float32).mean(dim=1)


def rollout_step(running: torch.Tensor | None, attention: torch.Tensor) -> torch.Tensor:
    """Fold one layer: ``A' = rownorm(0.5 A + 0.5 I)``; return ``A' @ running`` (or A' for the first layer)."""
    eye = torch.eye(attention.shape[-1], dtype=attention.dtype, device=attention.device)
    residual = 0.5 * attention + 0.5 * eye
    residual = residual / residual.sum(dim=-1, keepdim=True)
    return residual if running is None else torch.matmul(residual, running)


class RolloutExtractor:
    """One forward pass per batch; hooks fold each layer's attention into a running product.

    Only one ``[B, T, T]`` product (plus one layer's ``[B, H, T, T]`` scores) exists at a time,
    never all layers' attentions. The model itself keeps its SDPA attention.
    """

    def __init__(self, encoder, device=None, precision: str = "auto"):
        from .extract import resolve_precision
        from .model import resolve_device

        self.encoder = encoder
        self.device = encoder.device if device is None else resolve_device(device)
        if encoder.device != self.device:
            encoder.model.to(self.device)
        self.precision = resolve_precision(precision, self.device)

    def __call__(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (rollout CLS rows ``[B, N]`` float32 over the patches (CLS, distillation and register columns
        dropped), CLS embedding ``[B, D]``)."""
        from .extract import precision_context

        state: dict[str, torch.Tensor | None] = {"running": None}

        def hook(module, args, kwargs):
            hidden = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]
            site = sites[id(module)]
            state["running"] = rollout_step(state["running"], full_attention(hidden, site))

        sites = {id(site.module): site for site in self.encoder.attention_sites}
        handles = [site.module.register_forward_pre_hook(hook, with_kwargs=True) for site in self.encoder.attention_sites]
        try:
            pixels = pixel_values.to(self.device)
            with torch.inference_mode(), precision_context(self.device, self.precision):
                outputs = self.encoder.model(pixel_values=pixels)
            embedding = outputs.last_hidden_state[:, 0].float()
        finally:
            for handle in handles:
                handle.remove()
        return state["running"][:, 0, self.encoder.num_prefix_tokens:].contiguous(), embedding


# --------------------------------------------------------------------------- 7: ablation


def ablation_k(num_patches: int, fraction: float = ABLATION_FRACTION_OF_PATCHES) -> int:
    return max(1, int(num_patches * fraction))


def top_k_patches(maps: torch.Tensor, k: int) -> torch.Tensor:
    """Indices ``[B, k]`` of the k most attended patches of each ``maps[B, N]``."""
    return torch.topk(maps, k, dim=1).indices


def random_patches(seeds: Sequence[int], num_patches: int, k: int) -> torch.Tensor:
    """k distinct patches per image, ``default_rng(seed ^ RANDOM_MASK_SALT).permutation(N)[:k]``."""
    return permutations([int(s) ^ RANDOM_MASK_SALT for s in seeds], num_patches)[:, :k]


def mask_patches(pixel_values: torch.Tensor, indices: torch.Tensor, grid: tuple[int, int], patch_size: int,
                 fill: float = 0.0) -> torch.Tensor:
    """Copy of ``pixel_values[B, 3, H, W]`` with the patches ``indices[B, k]`` (row-major) set to ``fill``.

    0 after CLIP normalisation is the processor's mean pixel.
    """
    gh, gw = grid
    batch = pixel_values.shape[0]
    keep = torch.ones((batch, gh * gw), dtype=torch.bool, device=pixel_values.device)
    keep[torch.arange(batch, device=keep.device)[:, None], indices.to(keep.device)] = False
    pixel_mask = keep.view(batch, 1, gh, 1, gw, 1).expand(batch, 1, gh, patch_size, gw, patch_size)
    pixel_mask = pixel_mask.reshape(batch, 1, gh * patch_size, gw * patch_size)
    height, width = pixel_values.shape[-2:]
    if (height, width) != (gh * patch_size, gw * patch_size):
        raise ValueError(f"pixel grid {height}x{width} is not {gh}x{gw} patches of {patch_size}")
    return torch.where(pixel_mask, pixel_values, torch.full_like(pixel_values, fill))


def cosine_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """1 - cos(a, b) per row, float64."""
    return 1.0 - F.cosine_similarity(a.to(torch.float64), b.to(torch.float64), dim=-1)


def ablate(extractor, pixel_values: torch.Tensor, image_ids: Sequence[str],
           fraction: float = ABLATION_FRACTION_OF_PATCHES) -> dict[str, np.ndarray]:
    """Original, top-k-masked and random-k-masked forwards of one batch -> per-image host arrays.

    ``extractor`` is an ``AttentionExtractor`` (last layer); its map picks the top-k patches.
    """
    encoder = extractor.encoder
    n = encoder.num_patches
    k = ablation_k(n, fraction)
    original = extractor(pixel_values)
    maps = original.last_layer_map()
    top = top_k_patches(maps, k)
    rand = random_patches([image_seed(i) for i in image_ids], n, k)
    masked_top = extractor(mask_patches(pixel_values, top.cpu(), encoder.grid_size, encoder.patch_size))
    masked_rand = extractor(mask_patches(pixel_values, rand, encoder.grid_size, encoder.patch_size))
    a = maps.to(torch.float64)
    share = torch.gather(a, 1, top).sum(dim=1) / a.sum(dim=1)
    return {
        "ablation_k": np.full(len(image_ids), k, dtype=np.int64),
        "topk_attention_share": share.cpu().numpy(),
        "cosine_distance_topk": cosine_distance(original.cls_embedding, masked_top.cls_embedding).cpu().numpy(),
        "cosine_distance_random": cosine_distance(original.cls_embedding, masked_rand.cls_embedding).cpu().numpy(),
    }


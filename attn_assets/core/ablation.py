"""Masking ablation: does the CLS embedding depend on the patches the CLS token attends to most?

Its own forward passes (a separate, optional asset). Per image: mask the top-k attended patches of the
last layer's head-averaged CLS row (k = 10% of the patches, the top-10% concentration's set) with the
processor's mean pixel (0 after normalisation), and, as control, k random patches from a seeded
per-image permutation; report the cosine distance between the original and each masked CLS embedding
(``last_hidden_state[:, 0]``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .analyses import image_seed, permutations
from .extract import AttentionExtractor

ABLATION_FRACTION_OF_PATCHES = 0.1  # k = int(N * 0.1): the top-10% concentration's set
RANDOM_MASK_SALT = 0x5EED


def ablation_k(num_patches: int, fraction: float = ABLATION_FRACTION_OF_PATCHES) -> int:
    """Patches masked per image: ``max(1, int(N * fraction))``."""
    return max(1, int(num_patches * fraction))


def top_k_patches(maps: torch.Tensor, k: int) -> torch.Tensor:
    """Indices ``[B, k]`` of the k most attended patches of each ``maps[B, N]``."""
    return torch.topk(maps, k, dim=1).indices


def random_patches(seeds: Sequence[int], num_patches: int, k: int) -> torch.Tensor:
    """``LongTensor[B, k]``: k distinct patches per image, ``default_rng(seed ^ RANDOM_MASK_SALT).permutation(N)[:k]``."""
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
    """``1 - cos(a, b)`` per row of ``a[B, D]``, ``b[B, D]`` -> ``[B]`` float64."""
    return 1.0 - F.cosine_similarity(a.to(torch.float64), b.to(torch.float64), dim=-1)


def ablate(extractor: AttentionExtractor, pixel_values: torch.Tensor, image_ids: Sequence[str],
           fraction: float = ABLATION_FRACTION_OF_PATCHES) -> dict[str, np.ndarray]:
    """Original, top-k-masked and random-k-masked forwards of ``pixel_values[B, 3, H, W]`` -> per-image
    host arrays ``[B]``: ``ablation_k``, ``topk_attention_share``, ``cosine_distance_topk``, ``cosine_distance_random``.

    ``extractor`` captures the last layer; its head-averaged CLS row picks the top-k patches.
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

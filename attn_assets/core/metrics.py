"""The seed's six per-image attention metrics, vectorised over a batch.

``cls_attention`` is the head-averaged CLS->patch row over the patch columns only: the CLS
column (and, for DeiT / DINOv2 with registers, the distillation and register columns) dropped
and NOT renormalised. Entropy and concentrations use ``a / (a.sum() + 1e-8)``; max and spread use
the raw row; spread is the population std (numpy's default).
"""

from __future__ import annotations

import numpy as np
import torch

from attn_assets.metric_names import METRIC_NAMES


def attention_metrics(cls_attention: torch.Tensor) -> dict[str, torch.Tensor]:
    """``cls_attention[B, N_patches]`` -> ``{metric: Tensor[B]}``, computed in float64 on its device."""
    if cls_attention.dim() != 2:
        raise ValueError(f"expected cls_attention [B, N], got shape {tuple(cls_attention.shape)}")
    a = cls_attention.detach().to(torch.float64)
    n = a.shape[1]
    p = a / (a.sum(dim=1, keepdim=True) + 1e-8)
    ranked = torch.sort(p, dim=1, descending=True).values
    return {
        "attention_entropy": -(p * torch.log(p + 1e-10)).sum(dim=1),
        "attention_max": a.max(dim=1).values,
        "attention_concentration_top10": ranked[:, : int(n * 0.1)].sum(dim=1),
        "attention_concentration_top25": ranked[:, : int(n * 0.25)].sum(dim=1),
        "num_high_attention_patches": (a > a.mean(dim=1, keepdim=True)).sum(dim=1),
        "attention_spread": a.std(dim=1, unbiased=False),
    }


def attention_metrics_numpy(cls_attn: np.ndarray) -> dict[str, float | int]:
    """The seed's code, literally, for one image's ``cls_attn[N]`` (reference for tests)."""
    cls_attn_norm = cls_attn / (cls_attn.sum() + 1e-8)
    entropy = -(cls_attn_norm * np.log(cls_attn_norm + 1e-10)).sum()
    sorted_attn = np.sort(cls_attn_norm)[::-1]
    top_10_percent = int(len(sorted_attn) * 0.1)
    concentration = sorted_attn[:top_10_percent].sum()
    top_25_percent = int(len(sorted_attn) * 0.25)
    concentration_25 = sorted_attn[:top_25_percent].sum()
    high_attn_patches = (cls_attn > cls_attn.mean()).sum()
    attn_spread = cls_attn.std()
    return {
        "attention_entropy": float(entropy),
        "attention_max": float(cls_attn.max()),
        "attention_concentration_top10": float(concentration),
        "attention_concentration_top25": float(concentration_25),
        "num_high_attention_patches": int(high_attn_patches),
        "attention_spread": float(attn_spread),
    }


def metrics_to_numpy(metrics: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """Move a metrics dict to host numpy (float64, and int64 for the patch count)."""
    return {name: metrics[name].detach().cpu().numpy() for name in METRIC_NAMES}

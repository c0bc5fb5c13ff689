"""Straightforward per-image references for the analyses: eager attentions, numpy, Python loops.

Slow on purpose; the batched implementations in attn_assets.core.analyses must match them to 1e-5.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from PIL import Image

from attn_assets.core.extract import eager_attention
from attn_assets.core.metrics import attention_metrics_numpy


def eager_outputs(encoder, path) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """(per layer [H, T, T] attentions, last_hidden_state [T, D], pixel_values [3, H, W]) of one image, eager, batch 1."""
    img = Image.open(path).convert("RGB")
    pixel_values = encoder.processor(images=img, return_tensors="pt")["pixel_values"]
    attentions, hidden = eager_forward(encoder, pixel_values)
    return attentions, hidden, pixel_values[0].numpy()


def eager_forward(encoder, pixel_values: torch.Tensor) -> tuple[list[np.ndarray], np.ndarray]:
    with eager_attention(encoder.model), torch.no_grad():
        out = encoder.model(pixel_values=pixel_values.to(encoder.device), output_attentions=True)
    return [a[0].double().cpu().numpy() for a in out.attentions], out.last_hidden_state[0].double().cpu().numpy()


def layer_profile(attentions) -> list[dict]:
    return [attention_metrics_numpy(layer.mean(axis=0)[0, 1:]) for layer in attentions]


def head_profile(attentions) -> list[dict]:
    return [attention_metrics_numpy(head[0, 1:]) for head in attentions[-1]]


def head_similarity(attentions) -> float:
    rows = [head[0, 1:] for head in attentions[-1]]
    sims = []
    for i in range(len(rows)):
        for j in range(len(rows)):
            if i != j:
                sims.append(float(rows[i] @ rows[j] / (np.linalg.norm(rows[i]) * np.linalg.norm(rows[j]))))
    return sum(sims) / len(sims)


def artifacts(cls_attn: np.ndarray, hidden: np.ndarray, k: float) -> dict:
    norms = np.array([math.sqrt(sum(float(v) ** 2 for v in token)) for token in hidden[1:]])
    median = float(np.median(norms))
    mad = float(np.median(np.abs(norms - median)))
    threshold = median + k * 1.4826 * mad
    mask = norms > threshold
    out = {"indices": [i for i in range(len(norms)) if mask[i]], "count": int(mask.sum()),
           "share": float(cls_attn[mask].sum() / cls_attn.sum()), "threshold": threshold}
    kept = cls_attn[~mask]
    out["without"] = attention_metrics_numpy(kept) if kept.size else None
    return out


def spatial(cls_attn: np.ndarray, grid: tuple[int, int], sub: int = 6) -> dict:
    """Rasterise each patch into sub x sub cells and classify cells by their centre (exact for sub = 6)."""
    gh, gw = grid
    p = cls_attn / cls_attn.sum()
    com_x = com_y = center = 0.0
    shares = {"top": 0.0, "middle": 0.0, "bottom": 0.0, "left": 0.0, "right": 0.0}
    for i in range(gh):
        for j in range(gw):
            w = p[i * gw + j]
            x, y = (j + 0.5) / gw, (i + 0.5) / gh
            com_x += w * x
            com_y += w * y
            center += w * math.hypot(x - 0.5, y - 0.5)
            for si in range(sub):
                for sj in range(sub):
                    cy = (i + (si + 0.5) / sub) / gh
                    cx = (j + (sj + 0.5) / sub) / gw
                    cell = w / (sub * sub)
                    shares["top" if cy < 1 / 3 else "middle" if cy < 2 / 3 else "bottom"] += cell
                    shares["left" if cx < 0.5 else "right"] += cell
    out = {"attention_com_x": com_x, "attention_com_y": com_y,
           "attention_com_distance": math.hypot(com_x - 0.5, com_y - 0.5), "attention_center_distance": center}
    out.update({f"attention_share_{k}": v for k, v in shares.items()})
    return out


def rollout(attentions, prefix: int = 1) -> np.ndarray:
    """Abnar & Zuidema: R = prod_l rownorm(0.5 mean_h(A_l) + 0.5 I), last layer leftmost; CLS row, the ``prefix``
    columns (CLS, distillation, registers) dropped."""
    tokens = attentions[0].shape[-1]
    result = np.eye(tokens)
    for layer in attentions:
        a = 0.5 * layer.mean(axis=0) + 0.5 * np.eye(tokens)
        a = a / a.sum(axis=-1, keepdims=True)
        result = a @ result
    return result[0, prefix:]


def mask_pixels(pixel_values: np.ndarray, patches, grid, patch_size: int) -> np.ndarray:
    out = pixel_values.copy()
    gw = grid[1]
    for index in patches:
        i, j = divmod(int(index), gw)
        for y in range(i * patch_size, (i + 1) * patch_size):
            for x in range(j * patch_size, (j + 1) * patch_size):
                out[:, y, x] = 0.0
    return out


def cosine_distance(a: np.ndarray, b: np.ndarray) -> float:
    return 1.0 - float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))

"""Gradient-weighted attention relevance for a class logit, batched over images.

Chefer, Gur and Wolf 2021, "Generic Attention-model Explainability for Interpreting Bi-Modal and
Encoder-Decoder Transformers" (ICCV; reference code github.com/hila-chefer/Transformer-MM-Explainability,
its CLIP notebook): starting from ``R = I`` ``[T, T]``, for every layer in order

    Abar = mean over heads of (dlogit/dA * A)^+        R <- R + Abar @ R

where ``A`` ``[H, T, T]`` is the layer's attention probabilities and the gradient is of ONE class logit
(here a country's zero-shot logit). The map is the CLS row of ``R`` without the prefix columns (CLS,
distillation, register tokens), ``R[0, P:]`` ``[N_patches]``, not renormalised: the same layout as the
CLS-attention and rollout maps, so the seed's six metrics apply unchanged.

One forward pass (eager attention, the probabilities kept in the graph) gives the logits, the last layer's
head-averaged CLS attention and the attention rollout (Abnar & Zuidema 2020, ``core/rollout.py``'s rule) of the
same images; then one backward pass per target class, gradients taken to the attention probabilities only
(no weight gradients).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy.stats import rankdata

from .extract import eager_attention, precision_context
from .rollout import rollout_step
from .zero_shot import ZeroShotClassifier

TOP_FRACTION = 0.1  # top-10% patches, as attention_concentration_top10


@dataclass
class RelevanceOutput:
    """One batch: ``logits[B, C]``, ``maps`` (one ``[B, N]`` relevance map per target, in the order asked),
    ``attention[B, N]`` (last layer, heads averaged, CLS row) and ``rollout[B, N]``; all float32."""

    logits: torch.Tensor
    maps: list[torch.Tensor]
    attention: torch.Tensor
    rollout: torch.Tensor


def relevance_step(running: torch.Tensor, attention: torch.Tensor, gradient: torch.Tensor) -> torch.Tensor:
    """One layer of Chefer et al.'s rule: ``running + mean_h((gradient * attention)^+) @ running``.

    ``attention``, ``gradient``: ``[B, H, T, T]``; ``running``: ``[B, T, T]`` (the identity before the first layer).
    """
    weighted = (gradient * attention).clamp(min=0).mean(dim=1)
    return running + torch.matmul(weighted, running)


def relevance_from_attentions(attentions: Sequence[torch.Tensor], gradients: Sequence[torch.Tensor],
                              num_prefix_tokens: int) -> torch.Tensor:
    """Per-layer ``attentions`` / ``gradients`` ``[B, H, T, T]`` (first layer first) -> relevance maps ``[B, N]``."""
    first = attentions[0]
    batch, _, tokens, _ = first.shape
    running = torch.eye(tokens, dtype=torch.float32, device=first.device).expand(batch, tokens, tokens)
    for attention, gradient in zip(attentions, gradients):
        running = relevance_step(running, attention.float(), gradient.float())
    return running[:, 0, num_prefix_tokens:].contiguous()


def rollout_from_attentions(attentions: Sequence[torch.Tensor], num_prefix_tokens: int) -> torch.Tensor:
    """Attention rollout (``core.rollout.rollout_step``) of per-layer ``attentions[B, H, T, T]`` -> ``[B, N]``."""
    running = None
    for attention in attentions:
        running = rollout_step(running, attention.float().mean(dim=1))
    return running[:, 0, num_prefix_tokens:].contiguous()


def relevance_maps(classifier: ZeroShotClassifier, pixel_values: torch.Tensor,
                   targets: Sequence[torch.Tensor | None]) -> RelevanceOutput:
    """Relevance maps of ``pixel_values[B, 3, H, W]`` for each target in ``targets`` (class indices ``[B]``;
    ``None`` = the predicted class, argmax of the logits). A target index -1 (true country not in the list)
    gives a map of zeros for that image.

    Gradients of the summed selected logits: each image's logit depends on its own pixels only, so the sum's
    gradient per image is that image's own gradient.
    """
    encoder = classifier.encoder
    prefix = encoder.num_prefix_tokens
    pixels = pixel_values.to(classifier.device).detach().requires_grad_(True)
    with eager_attention(encoder.model), torch.enable_grad(), precision_context(classifier.device, classifier.precision):
        outputs = encoder.model(pixel_values=pixels, output_attentions=True)
        attentions = tuple(outputs.attentions or ())
        if len(attentions) != encoder.num_layers:
            raise RuntimeError(
                f"{encoder.spec}: the vision tower returned {len(attentions)} attention tensors for {encoder.num_layers} "
                "layers under eager attention; relevance needs every layer's attention probabilities")
        logits = classifier.logits_from_pooled(outputs.pooler_output)
    maps = []
    for position, target in enumerate(targets):
        index = logits.argmax(dim=1) if target is None else target.to(logits.device)
        valid = index >= 0
        selected = logits.gather(1, index.clamp(min=0)[:, None])[:, 0]
        gradients = torch.autograd.grad((selected * valid).sum(), attentions, retain_graph=position < len(targets) - 1)
        with torch.no_grad():
            relevance = relevance_from_attentions([a.detach() for a in attentions], gradients, prefix)
            maps.append(relevance * valid[:, None])
    with torch.no_grad():
        detached = [a.detach() for a in attentions]
        last = detached[-1].float().mean(dim=1)[:, 0, prefix:].contiguous()
        rollout = rollout_from_attentions(detached, prefix)
    return RelevanceOutput(logits.detach(), maps, last, rollout)


# --------------------------------------------------------------------------- agreement between maps


def spearman_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Spearman rank correlation of each row pair of ``a[B, N]`` and ``b[B, N]`` -> ``[B]`` float64.

    Average ranks for ties (``scipy.stats.rankdata``), then Pearson's r of the ranks, as
    ``scipy.stats.spearmanr`` computes it per pair; NaN where a row is constant.
    """
    ra = rankdata(np.asarray(a, dtype=np.float64), axis=1)
    rb = rankdata(np.asarray(b, dtype=np.float64), axis=1)
    ra -= ra.mean(axis=1, keepdims=True)
    rb -= rb.mean(axis=1, keepdims=True)
    denominator = np.sqrt((ra * ra).sum(axis=1) * (rb * rb).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, (ra * rb).sum(axis=1) / np.where(denominator > 0, denominator, 1), np.nan)


def top_fraction_overlap(a: torch.Tensor, b: torch.Tensor, fraction: float = TOP_FRACTION) -> torch.Tensor:
    """Share of the top ``k = max(1, int(N * fraction))`` patches of ``a[B, N]`` that are also in ``b``'s top k
    -> ``[B]`` float64 in [0, 1] (ties broken by ``torch.topk``)."""
    n = a.shape[1]
    k = max(1, int(n * fraction))
    in_a = torch.zeros_like(a, dtype=torch.bool).scatter_(1, torch.topk(a, k, dim=1).indices, True)
    in_b = torch.zeros_like(b, dtype=torch.bool).scatter_(1, torch.topk(b, k, dim=1).indices, True)
    return (in_a & in_b).sum(dim=1).to(torch.float64) / k


def map_agreement(relevance: torch.Tensor, attention: torch.Tensor, rollout: torch.Tensor) -> dict[str, np.ndarray]:
    """Per image: Spearman and top-10% overlap of ``relevance[B, N]`` with raw attention and with rollout."""
    r, a, o = (x.detach().float().cpu() for x in (relevance, attention, rollout))
    return {
        "spearman_attention": spearman_rows(r.numpy(), a.numpy()),
        "spearman_rollout": spearman_rows(r.numpy(), o.numpy()),
        "top10_overlap_attention": top_fraction_overlap(r, a).numpy(),
        "top10_overlap_rollout": top_fraction_overlap(r, o).numpy(),
    }

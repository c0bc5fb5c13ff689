"""Slow per-image reference of Chefer et al. 2021's relevance: plain autograd on CLIPModel's own forward (eager
attention, ``output_attentions=True``, ``get_image_features`` and ``get_text_features``), one image and one target
at a time, Python loops over layers and heads. Written from the paper's equations, not from core/relevance.py."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from attn_assets.core.extract import eager_attention


def reference_relevance(model, tokenizer, captions, pixel_values: torch.Tensor, target: int | None,
                        num_prefix_tokens: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """(relevance map ``[N]``, logits ``[C]``) for ONE image ``pixel_values[3, H, W]`` and class ``target``
    (None: the argmax)."""
    tokens = tokenizer(list(captions), padding=True, return_tensors="pt")
    with torch.no_grad():
        text = model.get_text_features(**tokens)
        text = getattr(text, "pooler_output", text)
        text = F.normalize(text, dim=-1)
    with eager_attention(model), torch.enable_grad():
        pixels = pixel_values[None].clone().requires_grad_(True)
        vision = model.vision_model(pixel_values=pixels, output_attentions=True)
        image = F.normalize(model.visual_projection(vision.pooler_output), dim=-1)
        logits = model.logit_scale.exp() * image @ text.T
        chosen = int(logits[0].argmax()) if target is None else int(target)
        grads = torch.autograd.grad(logits[0, chosen], vision.attentions)
    tokens_count = vision.attentions[0].shape[-1]
    relevance = torch.eye(tokens_count)
    for attention, grad in zip(vision.attentions, grads):
        heads = attention.shape[1]
        layer = torch.zeros(tokens_count, tokens_count)
        for h in range(heads):
            layer += torch.clamp(grad[0, h] * attention[0, h].detach(), min=0)
        layer /= heads
        relevance = relevance + layer @ relevance
    return relevance[0, num_prefix_tokens:], logits[0].detach()

"""Attention rollout (Abnar & Zuidema 2020, "Quantifying Attention Flow in Transformers", ACL,
arXiv:2005.00928): how much each input patch flows into the CLS token through all layers.

Per layer, the head-averaged full attention ``A[B, T, T]`` is mixed with the identity for the residual
connection and renormalised, ``A' = rownorm(0.5 A + 0.5 I)``, and folded into the running product
``R <- A' R`` (first layer: ``R = A'``). The result is the CLS row of ``R`` with every prefix column
(CLS, distillation, register tokens) dropped, not renormalised.

Its own forward pass (a separate, optional asset). Memory O(B T^2): one running product, each layer's
attention discarded once folded, never all layers' attentions at a time.
"""

from __future__ import annotations

import torch

from .extract import attention_probabilities, precision_context, probe_attention_row, resolve_precision
from .model import AttentionSite, Encoder, resolve_device


def full_attention(hidden: torch.Tensor, site: AttentionSite) -> torch.Tensor:
    """``hidden[B, T, D]`` (a layer's normalised input) -> head-averaged attention ``[B, T, T]`` float32.

    Every query token's row of ``attention_probabilities``, averaged over the heads.
    """
    return attention_probabilities(hidden, site).mean(dim=1)


def rollout_step(running: torch.Tensor | None, attention: torch.Tensor) -> torch.Tensor:
    """Fold one layer's ``attention[B, T, T]``: ``A' = rownorm(0.5 A + 0.5 I)``; return ``A' @ running[B, T, T]``
    (``A'`` itself for the first layer, ``running`` None)."""
    eye = torch.eye(attention.shape[-1], dtype=attention.dtype, device=attention.device)
    residual = 0.5 * attention + 0.5 * eye
    residual = residual / residual.sum(dim=-1, keepdim=True)
    return residual if running is None else torch.matmul(residual, running)


class RolloutExtractor:
    """One forward pass per batch; hooks fold each layer's attention into a running product.

    Only one ``[B, T, T]`` product (plus one layer's ``[B, H, T, T]`` probabilities) exists at a time.
    The model itself keeps its SDPA attention.
    """

    def __init__(self, encoder: Encoder, device: str | torch.device | None = None, precision: str = "auto"):
        self.encoder = encoder
        self.device = encoder.device if device is None else resolve_device(device)
        if encoder.device != self.device:
            encoder.model.to(self.device)
        self.precision = resolve_precision(precision, self.device)

    def __call__(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``pixel_values[B, 3, H, W]`` -> (rollout CLS rows ``[B, N_patches]`` float32, prefix columns dropped;
        CLS embedding ``[B, D]`` float32 = ``last_hidden_state[:, 0]``).

        SigLIP (no CLS token, ``encoder.pooling_site``): the row is the pooling probe's head-averaged attention
        times the rolled-out product, ``mean_h(p) @ R`` (the probe has no residual path to the tokens), and the
        embedding is ``pooler_output``."""
        state: dict[str, torch.Tensor | None] = {"running": None, "probe": None}

        def hook(module, args, kwargs):
            hidden = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]
            site = sites[id(module)]
            state["running"] = rollout_step(state["running"], full_attention(hidden, site))

        sites = {id(site.module): site for site in self.encoder.attention_sites}
        handles = [site.module.register_forward_pre_hook(hook, with_kwargs=True) for site in self.encoder.attention_sites]
        pooling = self.encoder.pooling_site
        if pooling is not None:
            def probe_hook(module, args, kwargs):
                state["probe"] = probe_attention_row(args, kwargs, pooling).mean(dim=1, keepdim=True)  # [B, 1, T]

            handles.append(pooling.module.register_forward_pre_hook(probe_hook, with_kwargs=True))
        try:
            pixels = pixel_values.to(self.device)
            with torch.inference_mode(), precision_context(self.device, self.precision):
                outputs = self.encoder.model(pixel_values=pixels)
            embedding = outputs.last_hidden_state[:, 0].float() if pooling is None else outputs.pooler_output.float()
        finally:
            for handle in handles:
                handle.remove()
        if pooling is not None:
            return torch.matmul(state["probe"], state["running"])[:, 0].contiguous(), embedding
        return state["running"][:, 0, self.encoder.num_prefix_tokens:].contiguous(), embedding

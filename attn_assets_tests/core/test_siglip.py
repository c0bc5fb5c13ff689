"""SigLIP: no CLS token; the attention-pooling head's probe row stands in for it.

A tiny SiglipVisionModel is built offline, its probe and pooling projections scaled so that the probe's
attention is peaked (a misplaced column then shows), saved with ``save_pretrained`` beside a SigLIP-style
processor (``size`` height x width, no crop) and loaded through ``load_encoder`` as a user's folder.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from attn_assets.core.extract import AttentionExtractor, eager_attention, extract_records
from attn_assets.core.loader import ImageRecord
from attn_assets.core.model import ModelLoadError, load_encoder
from attn_assets.core.preprocess import Preprocessor, load_rgb

# Brief's fidelity bar for an attention row against the eager reference. Both sides compute one softmax over
# <= 17 tokens from the same head input in float32 (dot products of D = 32 terms): their difference is a few
# float32 ulps of values <= 1 (~1e-7), far inside 1e-5, while a row read one column off differs by >> 1e-3 on
# the peaked maps asserted below.
TOL = 1e-5


def _siglip_processor(side: int):
    from transformers import SiglipImageProcessor

    return SiglipImageProcessor(size={"height": side, "width": side}, resample=3, image_mean=[0.5, 0.5, 0.5],
                                image_std=[0.5, 0.5, 0.5])


def build_tiny_siglip(directory: Path, image_size: int = 32, patch_size: int = 8, seed: int = 3) -> Path:
    """A SiglipVisionModel (hidden 32, 2 layers, 2 heads) with a peaked pooling probe, saved to ``directory``."""
    from transformers import SiglipVisionConfig, SiglipVisionModel

    config = SiglipVisionConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                                image_size=image_size, patch_size=patch_size)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = SiglipVisionModel(config)
        with torch.no_grad():
            model.head.probe.mul_(4.0)
            model.head.attention.in_proj_weight[: 2 * config.hidden_size].mul_(4.0)
            for layer in model.encoder.layers:  # peaked layer attention too, for the received-attention rows
                layer.self_attn.q_proj.weight.mul_(6.0)
                layer.self_attn.k_proj.weight.mul_(3.0)
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory)
    _siglip_processor(image_size).save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def siglip_dir(tmp_path_factory) -> Path:
    return build_tiny_siglip(tmp_path_factory.mktemp("siglip") / "model")


@pytest.fixture(scope="module")
def four_images(sample_images) -> list[Path]:
    return [sample_images[n] for n in ("wide_792x512.jpg", "tall_512x792.jpg", "square_300.png", "rgba.png")]


def _eager_pooling(encoder, pixels: torch.Tensor):
    """(probe attention ``[B, H, N]`` per head, every layer's eager attention) from the model's own modules:
    the pooling head's nn.MultiheadAttention re-run on its captured inputs with need_weights=True,
    average_attn_weights=False (torch's own eager path)."""
    seen = {}

    def keep(module, args, kwargs):
        seen["query"], seen["key"] = args[0].detach().clone(), args[1].detach().clone()

    handle = encoder.pooling_site.module.register_forward_pre_hook(keep, with_kwargs=True)
    try:
        with eager_attention(encoder.model), torch.no_grad():
            outputs = encoder.model(pixel_values=pixels, output_attentions=True)
            _, weights = encoder.pooling_site.module(seen["query"], seen["key"], seen["key"], need_weights=True,
                                                     average_attn_weights=False)
    finally:
        handle.remove()
    return weights[:, :, 0].float(), outputs.attentions


def test_siglip_loads_without_cls_token(siglip_dir):
    encoder = load_encoder(str(siglip_dir))
    assert encoder.architecture == "SiglipVisionModel"
    assert not encoder.has_cls_token and encoder.num_prefix_tokens == 0
    assert encoder.grid_size == (4, 4) and encoder.input_size == (32, 32)
    assert encoder.pooling_site is not None and encoder.pooling_site.num_heads == 2


def test_probe_row_matches_eager_pooling_attention(siglip_dir, four_images):
    encoder = load_encoder(str(siglip_dir))
    preprocess = Preprocessor(encoder.processor)
    pixels = torch.stack([preprocess(load_rgb(p)) for p in four_images])
    reference, attentions = _eager_pooling(encoder, pixels)  # [B, H, N]
    ratio = reference.amax(dim=-1) / reference.amin(dim=-1)
    assert (ratio > 10).all(), f"probe attention not peaked enough to catch a layout error: {ratio}"

    output = AttentionExtractor(encoder, precision="fp32", layers="all")(pixels)  # SDPA path
    probe = output.cls_attention[:, -1]  # [B, H, N]: the last "layer" is the pooling probe
    assert probe.shape == reference.shape
    assert (probe - reference).abs().max() <= TOL
    assert (probe.roll(1, dims=-1) - reference).abs().max() > 100 * TOL  # the bar sees a one-column shift
    np.testing.assert_allclose(output.cls_embedding.numpy(),
                               encoder.model(pixel_values=pixels).pooler_output.detach().numpy(), atol=1e-5)

    # earlier layers: the mean attention each patch receives (column mean of the eager [T, T] attention)
    received = attentions[0].float().mean(dim=2)  # [B, H, T], T = N (no prefix)
    assert (received.amax(-1) / received.amin(-1) > 10).all()
    assert (output.cls_attention[:, 0] - received).abs().max() <= TOL


def test_extract_records_maps_the_probe_row_over_the_whole_photo(siglip_dir, four_images):
    encoder = load_encoder(str(siglip_dir))
    records = [ImageRecord(f"img{i}", str(p)) for i, p in enumerate(four_images)]
    (result,) = list(extract_records(encoder, records, batch_size=4, num_workers=0))
    pixels = torch.stack([Preprocessor(encoder.processor)(load_rgb(p)) for p in four_images])
    reference, _ = _eager_pooling(encoder, pixels)
    assert result.cls_maps.shape == (4, 4, 4)
    np.testing.assert_allclose(result.cls_maps.reshape(4, -1), reference.mean(dim=1).numpy(), atol=TOL, rtol=0)
    # SigLIP squashes the whole photo to 32x32 without a crop: the model's view is the whole photo
    for (width, height), box in zip(result.image_sizes, result.crop_boxes):
        assert box == pytest.approx((0.0, 0.0, width, height))


def test_siglip_without_pooling_head_is_refused(tmp_path):
    from transformers import SiglipVisionConfig, SiglipVisionModel

    config = SiglipVisionConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                                image_size=32, patch_size=8, vision_use_head=False)
    SiglipVisionModel(config).save_pretrained(tmp_path)
    _siglip_processor(32).save_pretrained(tmp_path)
    with pytest.raises(ModelLoadError, match="no attention-pooling head .*vision_use_head False"):
        load_encoder(str(tmp_path))


def test_rollout_ends_in_the_probe_row(siglip_dir, four_images):
    """SigLIP rollout: mean_h(probe) @ prod_l rownorm(0.5 A_l + 0.5 I), against a float64 per-image reference."""
    from attn_assets.core.rollout import RolloutExtractor

    encoder = load_encoder(str(siglip_dir))
    pixels = torch.stack([Preprocessor(encoder.processor)(load_rgb(p)) for p in four_images])
    rows, embedding = RolloutExtractor(encoder, precision="fp32")(pixels)
    probe, attentions = _eager_pooling(encoder, pixels)
    for i in range(len(four_images)):
        running = None
        for attention in attentions:
            a = attention[i].double().mean(dim=0).numpy()
            a = 0.5 * a + 0.5 * np.eye(a.shape[0])
            a = a / a.sum(axis=-1, keepdims=True)
            running = a if running is None else a @ running
        expected = probe[i].double().mean(dim=0).numpy() @ running
        # rows are convex combinations of probabilities each within TOL of the reference, so within TOL too
        np.testing.assert_allclose(rows[i].double().numpy(), expected, atol=TOL, rtol=0)
    assert embedding.shape == (len(four_images), 32)

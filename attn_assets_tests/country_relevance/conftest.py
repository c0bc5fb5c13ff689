"""Fixtures: a tiny CLIPModel WITH its text tower and a CLIP tokenizer, built offline with seeded weights and
saved with ``save_pretrained`` (safetensors) into a temp folder, loaded through ``load_clip_classifier`` as users'
models are. The vision tower's attention is sharpened (peaked) so that layout bugs show."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from attn_assets_tests.conftest import TINY_IMAGE, TINY_PATCH, sharpen_attention, tiny_processor
from attn_assets_tests.defs.conftest import instance, pipeline_env  # noqa: F401

TINY_COUNTRIES = ("FR", "DE", "US", "JP", "BR")


def byte_vocabulary() -> dict[str, int]:
    """A character-level CLIP BPE vocabulary (no merges): GPT-2's byte-to-unicode table, each character alone and
    at a word's end (``</w>``), then ``<|startoftext|>`` and ``<|endoftext|>``."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    codes, extra = printable[:], 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + extra)
            extra += 1
    chars = [chr(c) for c in codes]
    tokens = chars + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"]
    return {token: i for i, token in enumerate(tokens)}


def build_tiny_clip(directory: Path, seed: int = 4321) -> Path:
    from transformers import CLIPConfig, CLIPModel, CLIPTokenizer

    vocab = byte_vocabulary()
    bos, eos = vocab["<|startoftext|>"], vocab["<|endoftext|>"]
    text = dict(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=2, max_position_embeddings=64, bos_token_id=bos, eos_token_id=eos,
                pad_token_id=eos, hidden_act="quick_gelu")
    vision = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=4,
                  patch_size=TINY_PATCH, image_size=TINY_IMAGE, hidden_act="quick_gelu")
    config = CLIPConfig(text_config=text, vision_config=vision, projection_dim=32)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CLIPModel(config)
    sharpen_attention(model.vision_model.encoder.layers)
    with torch.no_grad():
        model.logit_scale.fill_(torch.log(torch.tensor(30.0)))
    model.save_pretrained(directory)
    tiny_processor().save_pretrained(directory)
    CLIPTokenizer(vocab=vocab, merges=[]).save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def tiny_clip_dir(tmp_path_factory) -> Path:
    return build_tiny_clip(tmp_path_factory.mktemp("tiny_clip_text"))


@pytest.fixture(scope="session")
def tiny_classifier(tiny_clip_dir):
    from attn_assets.core.zero_shot import CountryPrompts, ZeroShotClassifier, load_clip_classifier

    encoder, model, tokenizer = load_clip_classifier(str(tiny_clip_dir), "cpu")
    return ZeroShotClassifier(encoder, model, tokenizer, CountryPrompts.from_codes(TINY_COUNTRIES), "fp32")

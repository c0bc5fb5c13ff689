"""Shared fixtures: tiny models saved the way users' models are, and varied test images.

No weights can be downloaded here, so models are built with seeded random weights and saved
with ``save_pretrained`` (safetensors) into temp folders, then loaded through the same code
path users take.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

TINY_IMAGE = 48
TINY_PATCH = 8


def tiny_clip_config(**overrides):
    from transformers import CLIPVisionConfig

    options = dict(
        hidden_size=64,
        num_hidden_layers=3,
        num_attention_heads=4,
        intermediate_size=128,
        patch_size=TINY_PATCH,
        image_size=TINY_IMAGE,
        hidden_act="quick_gelu",
    )
    options.update(overrides)
    return CLIPVisionConfig(**options)


def sharpen_attention(layers, q_factor: float = 16.0, k_factor: float = 4.0, last: int = 2) -> None:
    """Scale the last layers' q/k projections so attention is sharply peaked (entropy ~2.3 vs ln 36 = 3.6)."""
    with torch.no_grad():
        for layer in list(layers)[-last:]:
            attn = getattr(layer, "self_attn", None) or getattr(layer, "attention")
            attn.q_proj.weight.mul_(q_factor)
            attn.k_proj.weight.mul_(k_factor)


def tiny_processor():
    from attn_assets.core.model import make_clip_processor

    return make_clip_processor(TINY_IMAGE)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A tiny CLIPVisionModel (peaked attention) + CLIPImageProcessor saved with save_pretrained."""
    from transformers import CLIPVisionModel

    directory = tmp_path_factory.mktemp("tiny_clip_vision")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1234)
        model = CLIPVisionModel(tiny_clip_config())
    sharpen_attention(model.encoder.layers if hasattr(model, "encoder") else model.vision_model.encoder.layers)
    model.save_pretrained(directory)  # safetensors by default
    tiny_processor().save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def tiny_encoder(tiny_model_dir):
    from attn_assets.core import load_encoder

    return load_encoder(str(tiny_model_dir), "cpu")


# --------------------------------------------------------------------------- images


def street_scene(width: int, height: int, seed: int) -> Image.Image:
    """A synthetic street-like photo: sky gradient, buildings, road, lane marks, noise."""
    rng = np.random.default_rng(seed)
    y = np.linspace(0, 1, height)[:, None, None]
    sky = (np.array([110, 160, 230]) * (1 - y) + np.array([200, 220, 240]) * y).astype(np.float64)
    pixels = np.broadcast_to(sky, (height, width, 3)).copy()
    image = Image.fromarray(pixels.astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(image)
    horizon = int(height * rng.uniform(0.45, 0.65))
    x = 0
    while x < width:
        w = int(rng.integers(max(4, width // 12), max(8, width // 4)))
        top = int(horizon - rng.uniform(0.1, 0.4) * height)
        color = tuple(int(c) for c in rng.integers(60, 200, 3))
        draw.rectangle([x, top, x + w, horizon], fill=color)
        for wx in range(x + 3, x + w - 3, max(4, w // 4)):
            draw.rectangle([wx, top + 4, wx + 2, top + 8], fill=(30, 30, 50))
        x += w + int(rng.integers(0, 6))
    draw.polygon([(0, height), (width, height), (width * 0.6, horizon), (width * 0.4, horizon)], fill=(70, 70, 75))
    for step in range(6):
        yy = horizon + (height - horizon) * (step + 0.5) / 6
        draw.line([(width / 2, yy), (width / 2, yy + (height - horizon) / 14)], fill=(240, 240, 200), width=2)
    noisy = np.asarray(image).astype(np.int16) + rng.integers(-12, 13, (height, width, 3))
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8), "RGB")


@pytest.fixture(scope="session")
def sample_images(tmp_path_factory) -> dict[str, Path]:
    """At least 8 varied images on disk: sizes, aspect ratios and the awkward modes."""
    root = tmp_path_factory.mktemp("images")
    paths: dict[str, Path] = {}

    def save(name: str, image: Image.Image, **options) -> None:
        paths[name] = root / name
        image.save(paths[name], **options)

    save("wide_792x512.jpg", street_scene(792, 512, 1), quality=92)
    save("tall_512x792.jpg", street_scene(512, 792, 2), quality=92)
    save("landscape_1024x768.png", street_scene(1024, 768, 3))
    save("square_300.png", street_scene(300, 300, 4))
    save("small_97x61.png", street_scene(97, 61, 5))
    save("panorama_1600x300.jpg", street_scene(1600, 300, 6))
    save("gray_L.jpg", street_scene(400, 300, 7).convert("L"))
    rgba = street_scene(320, 240, 8).convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize((320, 240)))
    save("rgba.png", rgba)
    palette = street_scene(256, 200, 9).convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
    save("palette_transparent.png", palette, transparency=0)
    save("cmyk.jpg", street_scene(300, 220, 10).convert("CMYK"), quality=90)
    gray16 = (np.asarray(street_scene(200, 150, 11).convert("L")).astype(np.uint16) * 257)
    save("gray16.png", Image.fromarray(gray16))
    frames = [street_scene(120, 90, 12 + i).convert("P") for i in range(3)]
    paths["animated.gif"] = root / "animated.gif"
    frames[0].save(paths["animated.gif"], save_all=True, append_images=frames[1:], duration=100, loop=0)
    return paths


@pytest.fixture(scope="session")
def bad_images(tmp_path_factory, sample_images) -> dict[str, tuple[Path, str]]:
    """Broken inputs -> (path, expected substring of the failure reason)."""
    root = tmp_path_factory.mktemp("bad")
    cases: dict[str, tuple[Path, str]] = {}
    cases["missing"] = (root / "does_not_exist.jpg", "file not found")
    (root / "empty.jpg").write_bytes(b"")
    cases["empty"] = (root / "empty.jpg", "empty file")
    good = sample_images["wide_792x512.jpg"].read_bytes()
    (root / "truncated.jpg").write_bytes(good[: len(good) // 2])
    cases["truncated"] = (root / "truncated.jpg", "truncated")
    (root / "notes.jpg").write_text("this is not an image\n")
    cases["not_image"] = (root / "notes.jpg", "not a readable image")
    (root / "a_directory.jpg").mkdir()
    cases["directory"] = (root / "a_directory.jpg", "directory")
    buffer = io.BytesIO()
    Image.new("1", (20000, 10000)).save(buffer, format="PNG")  # 200M pixels, a few KB on disk
    (root / "bomb.png").write_bytes(buffer.getvalue())
    cases["bomb"] = (root / "bomb.png", "decompression bomb")
    return cases


# Pipeline fixtures (temp ATTN_ASSETS_HOME + DAGSTER_HOME, OSV-5M manifests) for every test folder.
from attn_assets_tests.defs.conftest import instance, pipeline_env  # noqa: E402,F401

"""Benchmark CLS-attention extraction against the seed method and a plain forward.

Methods, same model and images, one process:
  seed   the seed notebook: eager attention, batch 1, output_attentions=True (all layers)
  ours   SDPA + CLS-row capture (AttentionExtractor, fp32), batched
  plain  plain SDPA forward, batched, no capture (the floor)
  bf16   ours under bf16 autocast, batched

Preprocessing happens once, OUTSIDE the timed region: the numbers are model time only
(plus the per-image metric computation each method needs). The machine is noisy, so the
methods alternate (rotating order) over --repeats and the table shows medians.

    python benchmarks/bench_extraction.py --model random:streetclip --images 8 --repeats 3
    python benchmarks/bench_extraction.py --model random:vit-b16 --images 16 --repeats 3
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
from PIL import Image

from attn_assets.core.extract import AttentionExtractor, eager_attention
from attn_assets.core.metrics import attention_metrics, attention_metrics_numpy
from attn_assets.core.model import load_encoder, resolve_device
from attn_assets.core.preprocess import Preprocessor


def synthetic_photos(count: int, width: int = 792, height: int = 512) -> list[Image.Image]:
    """OSV-5M-sized RGB images with some structure (gradients + blocks + noise)."""
    rng = np.random.default_rng(0)
    photos = []
    for _ in range(count):
        y = np.linspace(0, 1, height)[:, None, None]
        base = np.array([110, 160, 230]) * (1 - y) + np.array([90, 90, 80]) * y
        pixels = np.broadcast_to(base, (height, width, 3)).copy()
        for _ in range(12):
            x0, y0 = rng.integers(0, width - 40), rng.integers(height // 3, height - 40)
            pixels[y0 : y0 + rng.integers(20, 120), x0 : x0 + rng.integers(20, 160)] = rng.integers(40, 220, 3)
        pixels += rng.normal(0, 8, pixels.shape)
        photos.append(Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB"))
    return photos


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def encoder_and_pixels(model: str, images: int, device) -> tuple:
    """The encoder and `images` preprocessed synthetic photos ``[images, 3, H, W]`` on ``device`` (untimed setup)."""
    encoder = load_encoder(model, device)
    preprocess = Preprocessor(encoder.processor)
    return encoder, torch.stack([preprocess(p) for p in synthetic_photos(images)]).to(device)


def run_seed(encoder, pixels: torch.Tensor) -> list[dict]:
    """Seed method: eager, batch 1, every layer's attention returned."""
    out = []
    with eager_attention(encoder.model), torch.no_grad():
        for i in range(pixels.shape[0]):
            outputs = encoder.model(pixel_values=pixels[i : i + 1], output_attentions=True)
            attn_avg = outputs.attentions[-1][0].mean(dim=0).cpu().numpy()
            out.append(attention_metrics_numpy(attn_avg[0, 1:]))
    return out


def run_ours(extractor: AttentionExtractor, pixels: torch.Tensor, batch_size: int) -> np.ndarray:
    entropies = []
    for start in range(0, pixels.shape[0], batch_size):
        output = extractor(pixels[start : start + batch_size])
        entropies.append(attention_metrics(output.last_layer_map())["attention_entropy"].cpu().numpy())
    return np.concatenate(entropies)


def run_plain(encoder, pixels: torch.Tensor, batch_size: int) -> None:
    with torch.inference_mode():
        for start in range(0, pixels.shape[0], batch_size):
            encoder.model(pixel_values=pixels[start : start + batch_size]).last_hidden_state[:, 0].cpu()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="random:streetclip", help="model spec (random:vit-b16 for ViT-B/16-224)")
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--methods", default="seed,ours,plain,bf16",
                        help="comma list; drop bf16 on CPUs without native bf16 (no AVX512-BF16/AMX), where it is emulated")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    device = resolve_device(args.device)
    encoder, pixels = encoder_and_pixels(args.model, args.images, device)
    fp32 = AttentionExtractor(encoder, device, precision="fp32")
    bf16 = AttentionExtractor(encoder, device, precision="bf16")
    available = {
        "seed": lambda: run_seed(encoder, pixels),
        "ours": lambda: run_ours(fp32, pixels, args.batch_size),
        "plain": lambda: run_plain(encoder, pixels, args.batch_size),
        "bf16": lambda: run_ours(bf16, pixels, args.batch_size),
    }
    chosen = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = set(chosen) - set(available)
    if unknown or "seed" not in chosen:
        parser.error(f"--methods must include seed and use only {sorted(available)}; got {args.methods}")
    methods = {name: available[name] for name in chosen}
    print(f"model {args.model} ({encoder.num_layers} layers, hidden {encoder.hidden_size}, "
          f"{encoder.image_size}px, grid {encoder.grid_size}); device {device}; "
          f"{torch.get_num_threads()} threads; {args.images} images; batch {args.batch_size} "
          f"(seed: 1); {args.repeats} repeats; preprocessing untimed (model time only)")
    for fn in methods.values():  # warm-up, untimed
        fn()
    names = list(methods)
    seconds: dict[str, list[float]] = {name: [] for name in names}
    for repeat in range(args.repeats):
        order = names[repeat % len(names):] + names[: repeat % len(names)]
        for name in order:
            _sync(device)
            start = time.perf_counter()
            methods[name]()
            _sync(device)
            seconds[name].append(time.perf_counter() - start)

    rate = {name: args.images / statistics.median(values) for name, values in seconds.items()}
    print(f"\n{'method':<8}{'median s/img':>14}{'images/s':>10}   runs (s)")
    for name in names:
        runs = ", ".join(f"{s:.2f}" for s in seconds[name])
        print(f"{name:<8}{1 / rate[name]:>14.3f}{rate[name]:>10.2f}   {runs}")
    def ratio(a: str, b: str, target: str) -> None:
        if a in rate and b in rate:
            print(f"{a}/{b}".ljust(11) + f"{rate[a] / rate[b]:.2f}x   (target {target})")

    print()
    ratio("ours", "seed", ">= 1.2x")
    ratio("ours", "plain", ">= 0.95x")
    ratio("bf16", "seed", ">= 2x")

    seed_entropy = np.array([m["attention_entropy"] for m in run_seed(encoder, pixels)])
    for name, extractor in (("ours", fp32), ("bf16", bf16)):
        if name in methods:
            entropy = run_ours(extractor, pixels, args.batch_size)
            print(f"max |entropy - seed| {name}: {np.abs(entropy - seed_entropy).max():.2e}")


if __name__ == "__main__":
    main()

"""Per-model cost per image of the models group on CPU, and whether memory stays flat across models.

The encoders geolocation papers build on, at their published shapes, untrained (built from their configs, saved
with ``save_pretrained`` into a temp folder and loaded through ``load_encoder`` as the pass does; no download):

  clip-l14-336   CLIPVisionModel ViT-L/14 at 336 (StreetCLIP, openai/clip-vit-large-patch14-336): 24x24 patches
  dinov2-b14-reg Dinov2WithRegistersModel ViT-B/14, 4 registers, crop 224 of a 256 resize
                 (facebook/dinov2-with-registers-base): 16x16 patches
  siglip-b16-224 SiglipVisionModel ViT-B/16 at 224, pooling head (google/siglip-base-patch16-224): 14x14 patches

Each model runs as ``model_statistics`` runs it: loaded into the resource's one-model slot
(``AttentionModelResource.encoder_for``, which releases the previous model first), ``extract_records`` with every
layer's CLS row (the statistics pass's forward) over the same synthetic 792x512 JPEGs (OSV-5M's size), then
``release_other_encoder``. Reported per model: load seconds, seconds
per image (after one warm-up batch), and the process's resident memory (VmRSS) after release. "Flat" means the
RSS after each release stays within one model's weights of the RSS after the first; the ratio printed is
(RSS after the last release - RSS before the first load) / (largest model's weight bytes).

    python benchmarks/bench_cross_model.py --images 8
    python benchmarks/bench_cross_model.py --tiny --images 16     # seconds, for a smoke run
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from attn_assets.core.extract import extract_records
from attn_assets.core.loader import ImageRecord
from attn_assets.core.model import make_clip_processor
from attn_assets.resources import AttentionModelResource, release_other_encoder

IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def rss_mib() -> float:
    """Resident set size of this process (Linux /proc/self/status VmRSS), MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def trim_heap() -> None:
    """Give freed heap pages back to the OS (glibc malloc_trim), so RSS shows what is really still held."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass


def build_models(root: Path, tiny: bool) -> dict[str, Path]:
    from transformers import (BitImageProcessor, CLIPVisionConfig, CLIPVisionModel, Dinov2WithRegistersConfig,
                              Dinov2WithRegistersModel, SiglipImageProcessor, SiglipVisionConfig, SiglipVisionModel)

    small = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128)
    clip = CLIPVisionConfig(**(small if tiny else dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                                                       intermediate_size=4096)), patch_size=14, image_size=336)
    dino = Dinov2WithRegistersConfig(**(small if tiny else {}), num_register_tokens=4, patch_size=14, image_size=518)
    siglip = SiglipVisionConfig(**(small if tiny else {}), patch_size=16, image_size=224)
    builds = {
        "clip-l14-336": (CLIPVisionModel, clip, make_clip_processor(336)),
        "dinov2-b14-reg": (Dinov2WithRegistersModel, dino, BitImageProcessor(
            size={"shortest_edge": 256}, crop_size={"height": 224, "width": 224}, image_mean=IMAGENET_MEAN,
            image_std=IMAGENET_STD)),
        "siglip-b16-224": (SiglipVisionModel, siglip, SiglipImageProcessor(
            size={"height": 224, "width": 224}, resample=3, image_mean=[0.5] * 3, image_std=[0.5] * 3)),
    }
    folders = {}
    for name, (cls, config, processor) in builds.items():
        folder = root / name
        torch.manual_seed(0)
        cls(config).save_pretrained(folder)
        processor.save_pretrained(folder)
        folders[name] = folder
        trim_heap()
    return folders


def write_images(root: Path, count: int) -> list[ImageRecord]:
    rng = np.random.default_rng(0)
    records = []
    for i in range(count):
        path = root / f"img{i}.jpg"
        Image.fromarray(rng.integers(0, 256, (512, 792, 3), dtype=np.uint8)).save(path, quality=90)
        records.append(ImageRecord(f"img{i}", str(path)))
    return records


def run(folder: Path, records: list[ImageRecord], batch_size: int) -> dict:
    started = time.perf_counter()
    encoder = AttentionModelResource(model="(default: none of these)", device="cpu").encoder_for(str(folder))
    loaded = time.perf_counter()
    weights = sum(p.numel() * p.element_size() for p in encoder.model.parameters()) / 2**20
    list(extract_records(encoder, records[:batch_size], batch_size=batch_size, device="cpu", precision="fp32"))
    warm = time.perf_counter()
    done = 0
    for batch in extract_records(encoder, records, batch_size=batch_size, device="cpu", precision="fp32",
                                 analyses=True):
        done += len(batch)
    finished = time.perf_counter()
    peak = rss_mib()
    del encoder
    release_other_encoder()
    trim_heap()
    return {"load_s": loaded - started, "per_image_s": (finished - warm) / max(done, 1), "weights_mib": weights,
            "rss_loaded_mib": peak, "rss_released_mib": rss_mib()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--tiny", action="store_true", help="tiny shapes of the same families (smoke run)")
    args = parser.parse_args(argv)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.images} images of 792x512")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        folders = build_models(root / "models", args.tiny)
        (root / "images").mkdir()
        records = write_images(root / "images", args.images)
        trim_heap()
        baseline = rss_mib()
        print(f"RSS before the first model: {baseline:.0f} MiB")
        print(f"{'model':16s} {'load s':>7s} {'s/image':>8s} {'weights MiB':>11s} {'RSS loaded':>10s} "
              f"{'RSS released':>12s}")
        results = {}
        for name, folder in folders.items():
            results[name] = found = run(folder, records, args.batch_size)
            print(f"{name:16s} {found['load_s']:7.2f} {found['per_image_s']:8.3f} {found['weights_mib']:11.0f} "
                  f"{found['rss_loaded_mib']:10.0f} {found['rss_released_mib']:12.0f}")
    largest = max(r["weights_mib"] for r in results.values())
    growth = list(results.values())[-1]["rss_released_mib"] - baseline
    released = [r["rss_released_mib"] for r in results.values()]
    print(f"RSS after each release: {', '.join(f'{v:.0f}' for v in released)} MiB; growth over the run / largest "
          f"model's weights = {growth:.0f} / {largest:.0f} MiB = {growth / largest:.2f} (flat: well under 1)")
    base = results["clip-l14-336"]["per_image_s"]
    print("cost per image relative to clip-l14-336: " + ", ".join(
        f"{name} {r['per_image_s'] / base:.2f}x" for name, r in results.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())

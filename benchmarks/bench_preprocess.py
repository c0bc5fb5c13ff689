"""Per-core cost of preprocessing against the JPEG decode floor, same process, same images.

Methods (one thread; each over the same OSV-like JPEG bytes, 792x512 landscapes and 512x792 portraits,
alternating rounds, medians):
  decode        load_rgb: JPEG bytes -> RGB image (the floor)
  exact         decode + Preprocessor.pixels, exact resize (Pillow's passes compiled, numba), uint8 out
                (normalised later, on the device)
  exact_pillow  decode + Preprocessor.pixels with compiled=False: the same passes run by Pillow itself
  whole_resize  decode + PIL resize of the whole photo, then the crop (the exact path before the split), uint8
  exact_float   decode + Preprocessor(...) on the CPU: float32 normalised here
  crop_region   decode + Preprocessor.pixels with resize='crop_region' (PIL resize(box=...))
  processor     decode + the image processor itself (transformers), for reference

Times are the CPU time of the one thread that does the work (time.thread_time: the cost per core, and not
inflated by other processes sharing the cores). Prints images/s per core, each method's time over the decode's,
and the crop-region deviation from the exact pixels (grey levels) on these photos.

    python benchmarks/bench_preprocess.py --images 24 --rounds 7
"""

from __future__ import annotations

import argparse
import io
import statistics
import time

import numpy as np
import torch

from attn_assets.core.model import make_clip_processor
from attn_assets.core.preprocess import Preprocessor, load_rgb
from gpu_check import OSV_SIZE, street_photo


def jpeg_blobs(count: int, size: tuple[int, int] = OSV_SIZE) -> list[bytes]:
    blobs = []
    for seed in range(count):
        buffer = io.BytesIO()
        street_photo(seed, *size).save(buffer, format="JPEG", quality=90)
        blobs.append(buffer.getvalue())
    return blobs


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=24)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--size", type=int, default=336, help="the processor's crop (StreetCLIP: 336)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    processor = make_clip_processor(args.size)
    exact, region = Preprocessor(processor), Preprocessor(processor, resize="crop_region")
    pillow = Preprocessor(processor, compiled=False)
    for size in (OSV_SIZE, OSV_SIZE[::-1]):
        measure(processor, exact, pillow, region, jpeg_blobs(args.images, size), size, args)


def whole_resize(preprocess: Preprocessor, image) -> torch.Tensor:
    """The exact path before the split passes: PIL resizes the whole photo, then the crop."""
    g = preprocess.crop_geometry(*image.size)
    resized = image.resize((g.resized_width, g.resized_height), resample=preprocess.resample)
    return torch.from_numpy(np.array(resized.crop((g.left, g.top, g.left + g.crop_width, g.top + g.crop_height))))


def measure(processor, exact: Preprocessor, pillow: Preprocessor, region: Preprocessor, blobs: list[bytes], size,
            args) -> None:
    methods = {
        "decode": lambda blob: load_rgb(io.BytesIO(blob)),
        "exact": lambda blob: exact.pixels(load_rgb(io.BytesIO(blob))),
        "exact_pillow": lambda blob: pillow.pixels(load_rgb(io.BytesIO(blob))),
        "whole_resize": lambda blob: whole_resize(exact, load_rgb(io.BytesIO(blob))),
        "exact_float": lambda blob: exact(load_rgb(io.BytesIO(blob))),
        "crop_region": lambda blob: region.pixels(load_rgb(io.BytesIO(blob))),
        "processor": lambda blob: processor(images=load_rgb(io.BytesIO(blob)), return_tensors="pt"),
    }
    seconds: dict[str, list[float]] = {name: [] for name in methods}
    names = list(methods)
    for fn in methods.values():
        fn(blobs[0])
    for round_ in range(args.rounds):
        for name in names[round_ % len(names):] + names[: round_ % len(names)]:
            start = time.thread_time()
            for blob in blobs:
                methods[name](blob)
            seconds[name].append((time.thread_time() - start) / len(blobs))
    median = {name: statistics.median(values) for name, values in seconds.items()}
    print(f"\n{args.images} JPEGs {size[0]}x{size[1]} (~{sum(map(len, blobs)) / len(blobs) / 1024:.0f} KiB), "
          f"crop {args.size}, one thread's CPU time, {args.rounds} alternating rounds, medians; exact path: {exact.fast}, "
          f"compiled: {exact.compiled}")
    print(f"{'method':<13}{'ms/image':>10}{'images/s/core':>15}{'x decode':>10}")
    for name in names:
        print(f"{name:<13}{median[name] * 1e3:>10.2f}{1 / median[name]:>15.0f}{median[name] / median['decode']:>10.2f}")
    levels = [(exact.pixels(load_rgb(io.BytesIO(b))).int() - region.pixels(load_rgb(io.BytesIO(b))).int()).abs()
              for b in blobs]
    for blob in blobs:
        image = load_rgb(io.BytesIO(blob))
        whole = whole_resize(exact, image)
        assert torch.equal(exact.pixels(image), whole), "the compiled resize must equal Pillow's whole resize"
        assert torch.equal(pillow.pixels(image), whole), "the split-pass resize must equal the whole resize"
    print(f"crop_region vs exact pixels: max {max(int(d.max()) for d in levels)} grey levels, "
          f"{float(np.mean([(d > 0).float().mean() for d in levels])):.3%} of values differ")


if __name__ == "__main__":
    main()

"""ATTN_ASSETS_DECODE=device against the exact path: pixels, the six metrics of a trained model, and the per-core cost.

Needs torchvision (run it in the plonk venv); on the CPU, torchvision.io.decode_jpeg is libjpeg-turbo like PIL's
decoder and the device resize is Pillow's integer arithmetic, so both paths should give the same bytes here (this
checks that on photos; the metric tables then show zeros). On a GPU, nvJPEG adds its own IDCT and chroma rounding
(benchmarks/gpu_check.py measures that one there).

- pixels: the normalised pixel values of both paths over the demo photos, in grey levels (largest difference,
  share of values that differ);
- the six metrics of the committed demo model (spec ``demo``, a small CLIP trained on the demo scenes) over the
  demo photos, fp32 on the CPU: per metric the largest absolute difference, relative to the largest exact value,
  the median, and the share of images that differ (as the README states bf16's), beside resize=crop_region's and
  bf16 autocast's (on the CPU) for scale;
- cost: images/s of each path's decode + resize + crop + normalise on one thread (time.thread_time, the CPU time
  of the working thread: the cost per core), alternating rounds, medians, and the device path's time over the
  exact path's.

The exact path is transformers' PIL image processor (the project's reference pixels; with torchvision installed
transformers would otherwise pick its torchvision backend, whose own deviation gpu_check.py reports).

    .venv-plonk/bin/python benchmarks/bench_device_decode.py --images 36 --rounds 5
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from attn_assets.catalog.demo_data import write_demo_data
from attn_assets.core.device_decode import decode_on_device, load_encoded_batch, normalisation_table
from attn_assets.core.extract import extract_records
from attn_assets.core.loader import ImageRecord, load_batch
from attn_assets.core.model import DEMO_MODEL_DIR, load_encoder
from attn_assets.core.preprocess import Preprocessor
from attn_assets.metric_names import METRIC_NAMES


def pil_demo_encoder():
    """The demo model with transformers' PIL image processor (the exact path's pixels bit for bit)."""
    from transformers import AutoImageProcessor

    encoder = load_encoder("demo", "cpu")
    return dataclasses.replace(encoder, processor=AutoImageProcessor.from_pretrained(DEMO_MODEL_DIR, backend="pil"))


def pixel_deviation(records: list[ImageRecord], preprocess: Preprocessor) -> tuple[float, float]:
    """(largest difference in grey levels, share of values that differ) of the device path against the exact."""
    exact = preprocess.normalize(load_batch(records, preprocess, uint8=True).pixel_values)
    device = decode_on_device(load_encoded_batch(records, preprocess), preprocess, "cpu").pixel_values
    table = normalisation_table(preprocess.processor)
    step = (table[:, 1:] - table[:, :-1]).mean(dim=1).view(1, 3, 1, 1)  # one grey level per channel
    levels = ((device - exact).abs() / step).round()
    return float(levels.max()), float((levels > 0).float().mean())


def metrics_of(encoder, records: list[ImageRecord], decode: str, resize: str = "exact",
               precision: str = "fp32") -> dict[str, np.ndarray]:
    results = list(extract_records(encoder, records, batch_size=12, device="cpu", precision=precision,
                                   keep_maps=False, decode=decode, resize=resize))
    assert not any(result.failures for result in results), [r.failures for r in results]
    return {name: np.concatenate([r.metrics[name] for r in results]).astype(np.float64) for name in METRIC_NAMES}


def per_core_rates(records: list[ImageRecord], preprocess: Preprocessor, rounds: int) -> dict[str, float]:
    """Images/s on one thread for each path, loader and device side together, up to the normalised pixels."""
    paths = {
        "exact (PIL decode + exact resize)":
            lambda: preprocess.normalize(load_batch(records, preprocess, uint8=True).pixel_values),
        "device (decode_jpeg + device resize, CPU)":
            lambda: decode_on_device(load_encoded_batch(records, preprocess), preprocess, "cpu").pixel_values,
    }
    times: dict[str, list[float]] = {name: [] for name in paths}
    for _ in range(rounds):
        for name, run in paths.items():
            start = time.thread_time()
            run()
            times[name].append(time.thread_time() - start)
    return {name: len(records) / statistics.median(values) for name, values in times.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=36, help="demo photos (about 792x512, some square/portrait)")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    encoder = pil_demo_encoder()
    preprocess = Preprocessor(encoder.processor)
    print(f"torch {torch.__version__}; processor {type(encoder.processor).__name__}; fast path {preprocess.fast}")
    with tempfile.TemporaryDirectory() as tmp:
        write_demo_data(Path(tmp), n_images=args.images)
        records = [ImageRecord(p.stem, str(p)) for p in sorted(Path(tmp).rglob("*.jpg"))]

        worst, share = pixel_deviation(records, preprocess)
        print(f"\npixels, device vs exact over {len(records)} demo photos: max {worst:.0f} grey levels, "
              f"{share:.2%} of values differ")
        default = Preprocessor(load_encoder("demo", "cpu").processor)
        if type(default.processor) is not type(encoder.processor):
            worst, share = pixel_deviation(records, default)
            print(f"against transformers' default processor here ({type(default.processor).__name__}, the exact "
                  f"path where torchvision is installed): max {worst:.0f} grey levels, {share:.2%} of values differ")

        exact = metrics_of(encoder, records, "exact")
        settings = {"decode=device": metrics_of(encoder, records, "device"),
                    "resize=crop_region (for scale)": metrics_of(encoder, records, "exact", "crop_region"),
                    "bf16 autocast (for scale)": metrics_of(encoder, records, "exact", precision="bf16")}
        for label, ours in settings.items():
            print(f"\nsix metrics of the demo model on the CPU, {label} vs exact fp32 ({len(records)} images):")
            print("| metric | max abs difference (relative to max exact) | median abs difference "
                  "| images that differ |")
            print("|---|---|---|---|")
            for name in METRIC_NAMES:
                diff = np.abs(ours[name] - exact[name])
                scale = np.abs(exact[name]).max() or 1.0
                print(f"| {name} | {diff.max():.3g} ({diff.max() / scale:.2g}) | {np.median(diff):.3g} | "
                      f"{(diff > 0).mean():.0%} |")

        rates = per_core_rates(records, preprocess, args.rounds)
        baseline = rates["exact (PIL decode + exact resize)"]
        print(f"\nper core (one thread, CPU time, median of {args.rounds} rounds):")
        for name, rate in rates.items():
            print(f"  {name}: {rate:.1f} images/s ({baseline / rate:.2f}x the exact path's time)")


if __name__ == "__main__":
    main()

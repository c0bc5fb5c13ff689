"""End to end (JPEG files in, metric rows out) against model-only, same model, same images, one process.

Methods, alternating rounds, medians:
  model_only   pixels preprocessed once, untimed; capture + the six metrics per batch (bench_extraction's 'ours')
  end_to_end   extract_records from the files: decode, preprocess, transfer, capture, metrics, rows on the host;
               on a CPU device the loader decodes inline (core.extract.loader_workers)
  workers      the same pipeline with the loader in --workers processes beside torch's threads (what a CPU run did
               before loader_workers; iter_batches + AttentionExtractor called directly)

    python benchmarks/bench_end_to_end.py --model random:streetclip --images 8 --batch-size 4 --rounds 2
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from attn_assets.core.extract import AttentionExtractor, extract_records, summarize
from attn_assets.core.loader import ImageRecord, iter_batches
from attn_assets.core.metrics import attention_metrics
from attn_assets.core.model import load_encoder, resolve_device
from attn_assets.core.preprocess import Preprocessor, load_rgb
from gpu_check import OSV_SIZE, street_photo, sync


def write_jpegs(folder: Path, count: int) -> list[Path]:
    paths = []
    for index in range(count):
        path = folder / f"{index:04d}.jpg"
        street_photo(index, *OSV_SIZE).save(path, format="JPEG", quality=90)
        paths.append(path)
    return paths


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="random:streetclip")
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2, help="loader processes for the 'workers' method")
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    encoder = load_encoder(args.model, device)
    preprocess = Preprocessor(encoder.processor)
    extractor = AttentionExtractor(encoder, device)
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_jpegs(Path(tmp), args.images)
        records = [ImageRecord(p.stem, str(p)) for p in paths]
        pixels = torch.stack([preprocess(load_rgb(p)) for p in paths]).to(device)

        def model_only():
            for start in range(0, len(paths), args.batch_size):
                attention_metrics(extractor(pixels[start : start + args.batch_size]).last_layer_map())

        def end_to_end():
            for _ in extract_records(encoder, records, batch_size=args.batch_size, device=device, keep_maps=False):
                pass

        def workers():
            for batch in iter_batches(records, preprocess, args.batch_size, args.workers, uint8=True):
                summarize(extractor(preprocess.normalize(batch.pixel_values.to(device))), keep_maps=False)

        methods = {"model_only": model_only, "end_to_end": end_to_end, "workers": workers}
        model_only()  # warm-up
        seconds: dict[str, list[float]] = {name: [] for name in methods}
        names = list(methods)
        for round_ in range(args.rounds):
            for name in names[round_ % len(names):] + names[: round_ % len(names)]:
                sync(device)
                start = time.perf_counter()
                methods[name]()
                sync(device)
                seconds[name].append((time.perf_counter() - start) / len(paths))
    median = {name: statistics.median(values) for name, values in seconds.items()}
    print(f"model {args.model} on {device}, {torch.get_num_threads()} torch threads, {args.images} JPEGs "
          f"{OSV_SIZE[0]}x{OSV_SIZE[1]}, batch {args.batch_size}, {args.rounds} alternating rounds (medians)")
    print(f"{'method':<12}{'s/image':>10}{'x model-only':>14}   runs (s/image)")
    for name in names:
        runs = ", ".join(f"{s:.3f}" for s in seconds[name])
        print(f"{name:<12}{median[name]:>10.3f}{median[name] / median['model_only']:>14.3f}   {runs}")
    print(f"(workers: {args.workers} loader processes; goal end_to_end <= 1.05x model-only)")


if __name__ == "__main__":
    main()

"""What each analysis beyond the seed's six metrics costs relative to the base statistics.

Methods, same model and images, one process, preprocessing untimed (model time + metrics only):
  base       what attention_statistics computed before the analyses: last-layer CLS-row capture + six metrics
  layers     + every layer's CLS row captured in the same forward, six metrics per layer
  heads      + six metrics per last-layer head and head-map cosine similarity
  artifacts  + output-token norms, artifact detection, metrics without artifact patches
  spatial    + spatial statistics and their seeded permutation baseline
  same_pass  all of the above together: what attention_statistics computes now
  rollout    attention rollout in its OWN forward pass (the rollout_statistics asset)
  ablation   masking ablation for every image: 3 forwards (ablation_statistics at fraction 1)

Each line reports ``+X%`` = (method - base) / base for the same-pass items, and the added cost of
the own-pass assets (rollout, ablation) as their time / base. The machine is noisy: methods
alternate (rotating order) over --repeats and medians are used.

    python benchmarks/bench_analyses.py --model random:vit-b16 --images 16 --repeats 3
    python benchmarks/bench_analyses.py --model random:tiny --images 64 --repeats 5
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_extraction import encoder_and_pixels  # noqa: E402

from attn_assets.core.ablation import ablate  # noqa: E402
from attn_assets.core.analyses import (  # noqa: E402
    artifact_analysis,
    head_metrics,
    head_similarity,
    image_seed,
    layer_metrics,
    permutations,
    permuted_spatial_statistics,
    same_pass_analyses,
    spatial_statistics,
)
from attn_assets.core.extract import AttentionExtractor  # noqa: E402
from attn_assets.core.metrics import attention_metrics, metrics_to_numpy  # noqa: E402
from attn_assets.core.model import resolve_device  # noqa: E402
from attn_assets.core.rollout import RolloutExtractor  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="random:vit-b16")
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--stat", choices=("min", "median"), default="min", help="statistic over repeats")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    encoder, pixels = encoder_and_pixels(args.model, args.images, device)
    ids = [f"image-{i:05d}" for i in range(args.images)]
    grid = encoder.grid_size
    last = AttentionExtractor(encoder, device, precision=args.precision)
    every = AttentionExtractor(encoder, device, precision=args.precision, layers="all")
    norms = AttentionExtractor(encoder, device, precision=args.precision, token_norms=True)
    full = AttentionExtractor(encoder, device, precision=args.precision, layers="all", token_norms=True)
    rollout = RolloutExtractor(encoder, device, precision=args.precision)

    def batches():
        for start in range(0, args.images, args.batch_size):
            yield pixels[start : start + args.batch_size], ids[start : start + args.batch_size]

    def base(extractor=last, extra=None):
        for batch, batch_ids in batches():
            output = extractor(batch)
            metrics_to_numpy(attention_metrics(output.last_layer_map()))
            if extra is not None:
                extra(output, batch_ids)

    def spatial(output, batch_ids):
        row = output.last_layer_map()
        spatial_statistics(row, grid)
        permuted_spatial_statistics(row, grid, permutations([image_seed(i) for i in batch_ids], row.shape[1]))

    methods = {
        "base": lambda: base(),
        "layers": lambda: base(every, lambda o, _: metrics_to_numpy(layer_metrics(o.cls_attention))),
        "heads": lambda: base(extra=lambda o, _: (metrics_to_numpy(head_metrics(o.cls_attention[:, -1])),
                                                  head_similarity(o.cls_attention[:, -1]))),
        "artifacts": lambda: base(norms, lambda o, _: artifact_analysis(o.last_layer_map(), o.patch_norms)),
        "spatial": lambda: base(extra=spatial),
        "same_pass": lambda: base(full, lambda o, i: same_pass_analyses(o.cls_attention, o.patch_norms, grid, i)),
        "rollout": lambda: [metrics_to_numpy(attention_metrics(rollout(b)[0])) for b, _ in batches()],
        "ablation": lambda: [ablate(last, b, i) for b, i in batches()],
    }
    print(f"model {args.model} ({encoder.num_layers} layers, {encoder.num_heads} heads, grid {grid}); device {device}; "
          f"{torch.get_num_threads()} threads; {args.images} images; batch {args.batch_size}; {args.precision}; "
          f"{args.repeats} repeats (alternating, {args.stat}); preprocessing untimed")
    for fn in methods.values():
        fn()  # warm-up
    names = list(methods)
    seconds: dict[str, list[float]] = {n: [] for n in names}
    for repeat in range(args.repeats):
        for name in names[repeat % len(names):] + names[: repeat % len(names)]:
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            methods[name]()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            seconds[name].append(time.perf_counter() - start)
    # min over repeats: this machine is noisy and contention only ever adds time (--stat median to compare)
    pick = min if args.stat == "min" else statistics.median
    median = {n: pick(v) for n, v in seconds.items()}
    b = median["base"]
    print(f"\n{'method':<11}{'s/img':>9}   cost vs base statistics")
    print(f"{'base':<11}{b / args.images:>9.4f}   (last-layer CLS row + six metrics)")
    for name in ("layers", "heads", "artifacts", "spatial", "same_pass"):
        print(f"{name:<11}{median[name] / args.images:>9.4f}   {name} {100 * (median[name] - b) / b:+.0f}% (same pass)")
    for name, what in (("rollout", "own pass, per image"), ("ablation", "3 own forwards, per SAMPLED image")):
        print(f"{name:<11}{median[name] / args.images:>9.4f}   {name} +{100 * median[name] / b:.0f}% ({what})")


if __name__ == "__main__":
    main()

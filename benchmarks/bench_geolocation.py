"""What geolocation costs when it reuses the stored CLS embeddings, vs running PLONK on the images.

Methods, same images, one process (needs the plonk extra: run with .venv-plonk/bin/python):
  pipeline   what PlonkPipeline(images) does: the StreetCLIP-shaped encoder forward, then sampling
  stored     what geolocation_predictions does: sampling from the float16 embeddings in the shard file
  store      what storing the embeddings adds to attention_statistics: float16 cast + Parquet column

The encoder is `--model` (default random:streetclip, StreetCLIP's exact shape). PLONK_OSV_5M's network
size is not published in diff-plonk's package, so the network is built from `--dim/--depth/--expansion`
with random weights: its cost, not its output, matters here. Methods alternate over --repeats; medians.

    .venv-plonk/bin/python benchmarks/bench_geolocation.py --images 4 --steps 250 --samples 16
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_extraction import encoder_and_pixels  # noqa: E402

from attn_assets.core.extract import AttentionExtractor  # noqa: E402
from attn_assets.core.geolocation import SamplingConfig, noise_for  # noqa: E402


class BenchGeolocator:
    """PlonkGeolocator's sampling path around a randomly initialised network of a chosen size."""

    def __init__(self, cond_dim: int, dim: int, depth: int, expansion: int, sampling: SamplingConfig):
        import plonk.pipe as plonk_pipe

        from attn_assets.core.geolocation import PlonkGeolocator

        torch.manual_seed(0)
        self.inner = PlonkGeolocator.__new__(PlonkGeolocator)
        self.inner.repo, self.inner.device, self.inner.sampling = "bench", torch.device("cpu"), sampling
        self.inner.network = plonk_pipe.Plonk(input_dim=3, dim=dim, depth=depth, expansion=expansion,
                                              cond_dim=cond_dim).eval().requires_grad_(False)
        self.inner.scheduler = plonk_pipe.scheduler_fn("sigmoid", -7, 3, 1.0)
        self.inner.sampler = plonk_pipe.MODELS["nicolas-dufour/PLONK_OSV_5M"]["sampler"]
        self.inner.preconditioning = plonk_pipe.DDPMPrecond()
        self.inner.postprocessing = plonk_pipe.CartesiantoGPS()
        self.inner.embedding_dim = cond_dim
        self.parameters = sum(p.numel() for p in self.inner.network.parameters())

    def predict(self, embeddings, ids):
        return self.inner.predict(embeddings, ids)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="random:streetclip")
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--steps", type=int, default=250)
    parser.add_argument("--samples", type=int, default=16)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--depth", type=int, default=6)
    parser.add_argument("--expansion", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    encoder, pixels = encoder_and_pixels(args.model, args.images, "cpu")
    extractor = AttentionExtractor(encoder, device="cpu", precision="fp32")
    ids = [f"img{i}" for i in range(args.images)]
    with torch.inference_mode():
        embeddings = extractor(pixels).cls_embedding.numpy()
    sampling = SamplingConfig(num_steps=args.steps, num_samples=args.samples)
    geolocator = BenchGeolocator(embeddings.shape[1], args.dim, args.depth, args.expansion, sampling)
    half = embeddings.astype(np.float16)

    def pipeline() -> None:
        with torch.inference_mode():
            fresh = extractor(pixels).cls_embedding.numpy()
        geolocator.predict(fresh, ids)

    def stored() -> None:
        geolocator.predict(half, ids)

    def store() -> None:
        column = pa.array(list(embeddings.astype(np.float16)), type=pa.list_(pa.float16()))
        pq.write_table(pa.table({"cls_embedding": column}), io.BytesIO(), compression="zstd")

    methods = {"pipeline": pipeline, "stored": stored, "store": store}
    times: dict[str, list[float]] = {name: [] for name in methods}
    for repeat in range(args.repeats):
        order = list(methods)[repeat % 3:] + list(methods)[:repeat % 3]
        for name in order:
            started = time.perf_counter()
            methods[name]()
            times[name].append((time.perf_counter() - started) / args.images)
    median = {name: statistics.median(values) for name, values in times.items()}
    print(f"encoder {args.model}, PLONK-shaped network {geolocator.parameters / 1e6:.1f} M parameters "
          f"(dim {args.dim}, depth {args.depth}), {args.steps} steps x {args.samples} samples, {args.images} images, "
          f"{torch.get_num_threads()} threads, medians of {args.repeats}")
    for name, seconds in median.items():
        print(f"  {name:9s} {seconds:8.3f} s/image")
    print(f"  stored vs pipeline: {median['pipeline'] / median['stored']:.2f}x faster "
          f"(the encoder pass is not repeated)")
    print(f"  storing embeddings costs {median['store'] * 1000:.2f} ms/image "
          f"({half.nbytes / args.images / 1024:.1f} KiB/image before compression)")


if __name__ == "__main__":
    main()

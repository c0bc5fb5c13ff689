"""GPU check: StreetCLIP-shaped model (ViT-L/14 at 336 px), synthetic OSV-5M-like JPEGs, one table.

Runs offline on a machine with torch, torchvision and transformers only (no Dagster, DuckDB, pandas or
network): it imports attn_assets.core from the working tree (``PYTHONPATH=.``). Every measurement runs in
its own try/except (an error is printed and the check goes on) and the whole check stops starting new
measurements after ``--time-cap`` seconds.

Measured, in this order:
  env          device name, torch / transformers / torchvision versions, CPU cores
  cpu          decode alone and decode + exact preprocessing, images/s on one core (main process)
  model        model-only images/s (CLS-row capture + the six metrics, pixels already on the device),
               bf16 and fp32 at batch 64 / 128 / 256
  capture      CLS-row capture vs a plain forward (bf16, batch 128): the overhead ratio
  deviation    bf16 vs fp32 on the six metrics (same images): max |diff| per metric
  end_to_end   files in, metric rows out (extract_records, bf16): from JPEG files and from a zip archive,
               with N loader workers; images/s, and as a share of model-only
  device_decode  torchvision.io.decode_jpeg on the GPU, batched (when torchvision has CUDA decode)
  memory       torch.cuda.max_memory_allocated over the run

    PYTHONPATH=. python benchmarks/gpu_check.py            # the full check (GPU), ~3-4 minutes
    PYTHONPATH=. python benchmarks/gpu_check.py --cpu-smoke  # tiny shapes on the CPU, seconds (CI)
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import json
import math
import os
import platform
import sys
import tempfile
import time
import traceback
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from attn_assets.core.extract import AttentionExtractor, extract_records
from attn_assets.core.loader import ImageRecord
from attn_assets.core.metrics import attention_metrics
from attn_assets.core.model import load_encoder, make_clip_processor
from attn_assets.core.preprocess import Preprocessor, load_rgb
from attn_assets.metric_names import METRIC_NAMES

# StreetCLIP (geolocal/StreetCLIP) is CLIP ViT-L/14 at 336 px: 24 layers, width 1024, 16 heads, MLP 4096.
STREETCLIP_SHAPE = dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                        image_size=336, patch_size=14)
SMOKE_SHAPE = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                   image_size=56, patch_size=14)
OSV_SIZE = (792, 512)  # OSV-5M's photos are 792 x 512 (width x height)


@dataclass(frozen=True)
class Plan:
    """What one run measures: shapes, counts and batch sizes."""

    shape: dict
    device: str
    batch_sizes: tuple[int, ...]
    model_batches: int  # timed batches per (precision, batch size)
    images: int  # JPEGs written (files and zip each)
    distinct: int  # distinct photos among them (decode cost does not depend on repetition)
    e2e_batch: int
    workers: tuple[int, ...]
    deviation_images: int
    cpu_images: int


def full_plan(device: str, cores: int) -> Plan:
    workers = sorted({max(1, cores - 2), max(1, cores // 2)}, reverse=True)
    return Plan(STREETCLIP_SHAPE, device, (64, 128, 256), 3, 3072, 96, 256, tuple(workers), 64, 32)


def smoke_plan() -> Plan:
    return Plan(SMOKE_SHAPE, "cpu", (2, 4), 1, 12, 4, 4, (0, 1), 4, 4)


@dataclass
class Report:
    """Rows of the table, printed as they come (a killed run still shows what it measured)."""

    deadline: float
    rows: list[tuple[str, str, str]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def add(self, section: str, what: str, value: str) -> None:
        self.rows.append((section, what, value))
        print(f"| {section} | {what} | {value} |", flush=True)

    def time_left(self) -> float:
        return self.deadline - time.monotonic()

    def run(self, section: str, measure, *args) -> object:
        """Call ``measure(self, *args)``; an exception is printed and recorded, never raised."""
        if self.time_left() <= 0:
            self.add(section, "skipped", "time cap reached")
            return None
        try:
            return measure(self, *args)
        except Exception as error:  # noqa: BLE001 - one failed measurement must not hide the others
            message = f"{type(error).__name__}: {error}"
            self.errors.append(f"{section}: {message}")
            self.add(section, "ERROR", message.replace("|", "/")[:300])
            traceback.print_exc(file=sys.stderr)
            return None


# --------------------------------------------------------------------------- inputs


def build_model_folder(shape: dict, folder: Path) -> Path:
    """A randomly initialised CLIPVisionModel of ``shape`` saved with its processor, as a user's folder is."""
    from transformers import CLIPVisionConfig, CLIPVisionModel

    config = CLIPVisionConfig(**shape, projection_dim=768, hidden_act="quick_gelu")
    torch.manual_seed(0)
    model = CLIPVisionModel._from_config(config)
    model.save_pretrained(folder)
    make_clip_processor(shape["image_size"]).save_pretrained(folder)
    return folder


def street_photo(seed: int, width: int, height: int) -> Image.Image:
    """OSV-like RGB photo with some structure (sky gradient, blocks, noise), so JPEG sizes are realistic."""
    rng = np.random.default_rng(seed)
    y = np.linspace(0, 1, height, dtype=np.float32)[:, None, None]
    pixels = np.broadcast_to(np.array([110, 160, 230], np.float32) * (1 - y) + np.array([90, 90, 80]) * y,
                             (height, width, 3)).copy()
    for _ in range(12):
        x0, y0 = rng.integers(0, width - 40), rng.integers(height // 3, height - 40)
        pixels[y0 : y0 + rng.integers(20, 120), x0 : x0 + rng.integers(20, 160)] = rng.integers(40, 220, 3)
    pixels += rng.normal(0, 8, pixels.shape).astype(np.float32)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")


def write_images(root: Path, count: int, distinct: int, size: tuple[int, int]) -> tuple[list[Path], Path, list[bytes]]:
    """``count`` JPEGs as files under root/files and as members of root/images/test/00.zip (OSV-5M's layout)."""
    blobs = []
    for seed in range(distinct):
        buffer = io.BytesIO()
        street_photo(seed, *size).save(buffer, format="JPEG", quality=90)
        blobs.append(buffer.getvalue())
    files = root / "files"
    files.mkdir(parents=True)
    archive = root / "images" / "test" / "00.zip"
    archive.parent.mkdir(parents=True)
    paths = []
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as out:
        for index in range(count):
            name = f"{index:08d}.jpg"
            (files / name).write_bytes(blobs[index % distinct])
            out.writestr(name, blobs[index % distinct])
            paths.append(files / name)
    return paths, archive, blobs


def pil_encoder(encoder):
    """``encoder`` with the PIL-backend CLIP processor of the same size (transformers 5: CLIPImageProcessorPil)."""
    import dataclasses

    import transformers

    pil_class = getattr(transformers, "CLIPImageProcessorPil", None)
    if pil_class is None:
        raise RuntimeError(f"transformers {transformers.__version__} has no CLIPImageProcessorPil")
    settings = make_clip_processor(encoder.input_size[0]).to_dict()
    keep = ("size", "crop_size", "resample", "image_mean", "image_std", "do_center_crop", "do_convert_rgb")
    return dataclasses.replace(encoder, processor=pil_class(**{k: settings[k] for k in keep}))


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# --------------------------------------------------------------------------- measurements


def measure_env(report: Report, plan: Plan) -> None:
    device = torch.device(plan.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    report.add("env", "device", name)
    report.add("env", "torch / CUDA", f"{torch.__version__} / {torch.version.cuda}")
    import transformers

    report.add("env", "transformers", transformers.__version__)
    try:
        import torchvision

        report.add("env", "torchvision", torchvision.__version__)
    except ImportError:
        report.add("env", "torchvision", "not installed")
    report.add("env", "CPU cores (affinity) / torch threads", f"{len(os.sched_getaffinity(0))} / {torch.get_num_threads()}")


def measure_cpu(report: Report, blobs: list[bytes], preprocess: Preprocessor, count: int) -> None:
    """One core, main process: decode alone vs decode + exact preprocessing (uint8, normalisation on the device)."""
    chosen = [blobs[i % len(blobs)] for i in range(count)]

    def decode(blob):
        return load_rgb(io.BytesIO(blob))

    def decode_preprocess(blob):
        return preprocess.pixels(load_rgb(io.BytesIO(blob)))

    seconds = {}
    for name, fn in (("decode", decode), ("decode+preprocess", decode_preprocess)):
        fn(chosen[0])
        start = time.perf_counter()
        for blob in chosen:
            fn(blob)
        seconds[name] = (time.perf_counter() - start) / len(chosen)
        report.add("cpu", f"{name}, one core", f"{1 / seconds[name]:.0f} images/s ({seconds[name] * 1e3:.2f} ms)")
    report.add("cpu", "decode+preprocess / decode", f"{seconds['decode+preprocess'] / seconds['decode']:.2f}x")
    passes = "Pillow's arithmetic compiled (numba)" if preprocess.compiled else "Pillow's own passes (no numba)"
    report.add("cpu", "preprocessing path", f"exact fast path (uint8), {passes}" if preprocess.fast else
               f"processor fallback ({type(preprocess.processor).__name__})")


def model_rate(extractor: AttentionExtractor, pixels: torch.Tensor, batches: int) -> float:
    """Images/s of capture + the six metrics on device-resident pixels (one warm-up batch untimed)."""
    attention_metrics(extractor(pixels).last_layer_map())
    sync(extractor.device)
    start = time.perf_counter()
    for _ in range(batches):
        metrics = attention_metrics(extractor(pixels).last_layer_map())
    sync(extractor.device)
    del metrics
    return batches * pixels.shape[0] / (time.perf_counter() - start)


def measure_model(report: Report, encoder, plan: Plan) -> dict:
    rates = {}
    device = torch.device(plan.device)
    height, width = encoder.input_size
    for precision in ("bf16", "fp32"):
        extractor = AttentionExtractor(encoder, device, precision=precision)
        for batch in plan.batch_sizes:
            if report.time_left() <= 0:
                report.add("model", f"{precision} batch {batch}", "skipped (time cap)")
                continue
            try:
                pixels = torch.randn(batch, 3, height, width, device=device)
                rates[(precision, batch)] = model_rate(extractor, pixels, plan.model_batches)
                report.add("model", f"{precision} batch {batch}", f"{rates[(precision, batch)]:.1f} images/s")
            except Exception as error:  # noqa: BLE001
                report.add("model", f"{precision} batch {batch}", f"ERROR {type(error).__name__}: {error}"[:300])
            finally:
                pixels = None
                if device.type == "cuda":
                    torch.cuda.empty_cache()
    return rates


def measure_capture(report: Report, encoder, plan: Plan) -> None:
    device = torch.device(plan.device)
    batch = plan.batch_sizes[len(plan.batch_sizes) // 2]
    pixels = torch.randn(batch, 3, *encoder.input_size, device=device)
    extractor = AttentionExtractor(encoder, device, precision="bf16")

    def plain():
        with torch.inference_mode(), torch.autocast(device_type=device.type, dtype=torch.bfloat16):
            encoder.model(pixel_values=pixels).last_hidden_state[:, 0].float()

    def capture():
        extractor(pixels)

    seconds = {"plain": [], "capture": []}
    for fn in (plain, capture):
        fn()
    for repeat in range(2 * plan.model_batches):
        for name, fn in ((("plain", plain), ("capture", capture)) if repeat % 2 == 0 else
                         (("capture", capture), ("plain", plain))):
            sync(device)
            start = time.perf_counter()
            fn()
            sync(device)
            seconds[name].append(time.perf_counter() - start)
    plain_s, capture_s = float(np.median(seconds["plain"])), float(np.median(seconds["capture"]))
    report.add("capture", f"plain forward bf16 batch {batch}", f"{batch / plain_s:.1f} images/s")
    report.add("capture", f"CLS-row capture bf16 batch {batch}", f"{batch / capture_s:.1f} images/s")
    report.add("capture", "capture / plain time", f"{capture_s / plain_s:.3f}x")


def measure_deviation(report: Report, encoder, blobs: list[bytes], preprocess: Preprocessor, plan: Plan) -> None:
    """bf16 vs fp32 on the six metrics, same synthetic photos."""
    device = torch.device(plan.device)
    images = [load_rgb(io.BytesIO(blobs[i % len(blobs)])) for i in range(plan.deviation_images)]
    pixels = torch.stack([preprocess(image) for image in images]).to(device)
    metrics = {}
    for precision in ("fp32", "bf16"):
        extractor = AttentionExtractor(encoder, device, precision=precision)
        metrics[precision] = {k: v.double().cpu().numpy() for k, v in
                              attention_metrics(extractor(pixels).last_layer_map()).items()}
    for name in METRIC_NAMES:
        diff = np.abs(metrics["bf16"][name] - metrics["fp32"][name])
        scale = np.abs(metrics["fp32"][name]).max() or 1.0
        report.add("deviation", f"bf16 vs fp32 {name}",
                   f"max {diff.max():.3g} (relative to max |fp32| {diff.max() / scale:.2g}); "
                   f"{(diff > 0).mean():.0%} of {len(diff)} images differ")


def six_metrics(encoder, pixels: torch.Tensor, device: torch.device) -> dict[str, np.ndarray]:
    """The six metrics in fp32 (TF32 off) for normalised ``pixels[B, 3, H, W]``."""
    extractor = AttentionExtractor(encoder, device, precision="fp32")
    return {k: v.double().cpu().numpy() for k, v in attention_metrics(extractor(pixels.to(device)).last_layer_map()).items()}


def report_metric_deviation(report: Report, section: str, label: str, ours: dict, reference: dict) -> None:
    for name in METRIC_NAMES:
        diff = np.abs(ours[name] - reference[name])
        scale = np.abs(reference[name]).max() or 1.0
        report.add(section, f"{label} {name}", f"max {diff.max():.3g} (relative {diff.max() / scale:.2g}); "
                   f"{(diff > 0).mean():.0%} of {len(diff)} images differ")


def device_decode_pixels(blobs: list[bytes], preprocess: Preprocessor, device: torch.device) -> torch.Tensor:
    """ATTN_ASSETS_DECODE=device's pixels for JPEG ``blobs`` (attn_assets.core.device_decode: decode_jpeg batched on
    ``device``, Pillow's resize passes in torch, the exact path's crop, the processor's normalisation):
    ``float32[B, 3, H, W]`` on ``device``."""
    from attn_assets.core.device_decode import EncodedBatch, decode_on_device

    ids = [str(index) for index in range(len(blobs))]
    sizes = [Image.open(io.BytesIO(blob)).size for blob in blobs]
    sources = [torch.frombuffer(bytearray(blob), dtype=torch.uint8) for blob in blobs]
    batch = EncodedBatch(ids, ids, [ImageRecord(i, i) for i in ids], sources, [], sizes)
    return decode_on_device(batch, preprocess, device).pixel_values


def measure_setting_deviation(report: Report, encoder, blobs: list[bytes], preprocess: Preprocessor, plan: Plan) -> None:
    """The fast settings against the exact path on the six metrics (fp32, same photos): crop_region resize, and
    decode=device (decode + resize with torchvision and torch on this device; not measured without torchvision)."""
    device = torch.device(plan.device)
    chosen = [blobs[i % len(blobs)] for i in range(plan.deviation_images)]
    exact = six_metrics(encoder, torch.stack([preprocess(load_rgb(io.BytesIO(b))) for b in chosen]), device)
    region = Preprocessor(encoder.processor, resize="crop_region")
    ours = six_metrics(encoder, torch.stack([region(load_rgb(io.BytesIO(b))) for b in chosen]), device)
    report_metric_deviation(report, "deviation", "crop_region vs exact", ours, exact)
    if importlib.util.find_spec("torchvision") is None:
        report.add("deviation", "decode=device vs exact", "not measured (no torchvision)")
        return
    ours = six_metrics(encoder, device_decode_pixels(chosen, preprocess, device), device)
    report_metric_deviation(report, "deviation", f"decode=device ({device.type}) vs exact", ours, exact)


def measure_processor_deviation(report: Report, encoder, blobs: list[bytes], default: Preprocessor,
                                pil: Preprocessor, plan: Plan) -> None:
    """The processor transformers gives by default here (its torchvision backend) against the PIL one."""
    device = torch.device(plan.device)
    chosen = [load_rgb(io.BytesIO(blobs[i % len(blobs)])) for i in range(plan.deviation_images)]
    reference = six_metrics(encoder, torch.stack([pil(image) for image in chosen]), device)
    ours = six_metrics(encoder, torch.stack([default(image) for image in chosen]), device)
    report_metric_deviation(report, "deviation", f"{type(default.processor).__name__} vs PIL processor", ours,
                            reference)


def measure_bf16_weights(report: Report, encoder, plan: Plan, model_rates: dict) -> None:
    """Model-only with the weights cast to bf16 (no autocast casts per forward), batch 256: is >1,000/s in reach?
    Changes the encoder in place: run last."""
    device = torch.device(plan.device)
    batch = plan.batch_sizes[-1]
    encoder.model.to(torch.bfloat16)
    extractor = AttentionExtractor(encoder, device, precision="bf16")
    pixels = torch.randn(batch, 3, *encoder.input_size, device=device, dtype=torch.bfloat16)
    rate = model_rate(extractor, pixels, plan.model_batches)
    base = model_rates.get(("bf16", batch))
    report.add("model", f"bf16 weights (model.to(bfloat16)) batch {batch}",
               f"{rate:.1f} images/s" + (f" ({rate / base:.2f}x autocast)" if base else ""))
    report.add("model", "attention implementation", str(getattr(encoder.model.config, "_attn_implementation", "?")))


def end_to_end_rate(encoder, records: list[ImageRecord], plan: Plan, workers: int,
                    resize: str = "exact", decode: str = "exact") -> tuple[float, float, int]:
    """(images/s after the first batch, images/s overall, failures) for extract_records in bf16."""
    start = time.perf_counter()
    first = None
    done = failed = 0
    for result in extract_records(encoder, records, batch_size=plan.e2e_batch, device=plan.device,
                                  precision="bf16", num_workers=workers, keep_maps=False, resize=resize,
                                  decode=decode):
        done += len(result)
        failed += len(result.failures)
        if first is None:
            first = (time.perf_counter(), done)
    sync(torch.device(plan.device))
    end = time.perf_counter()
    steady = (done - first[1]) / (end - first[0]) if done > first[1] else float("nan")
    return steady, done / (end - start), failed


def measure_end_to_end(report: Report, encoder, paths: list[Path], archive: Path, plan: Plan,
                       model_rates: dict) -> None:
    file_records = [ImageRecord(p.stem, str(p)) for p in paths]
    zip_records = [ImageRecord(p.stem, str(archive), p.name) for p in paths]
    model = model_rates.get(("bf16", plan.e2e_batch))
    for workers in plan.workers:
        for source, records in (("files", file_records), ("zip", zip_records)):
            if report.time_left() <= 0:
                report.add("end_to_end", f"{source}, {workers} workers", "skipped (time cap)")
                continue
            try:
                steady, overall, failed = end_to_end_rate(encoder, records, plan, workers)
                share = f"; {steady / model:.0%} of model-only bf16 batch {plan.e2e_batch}" if model else ""
                report.add("end_to_end", f"{source}, {workers} workers, bf16 batch {plan.e2e_batch}",
                           f"{steady:.1f} images/s steady ({overall:.1f} incl. start-up){share}; failures {failed}")
            except Exception as error:  # noqa: BLE001
                report.add("end_to_end", f"{source}, {workers} workers", f"ERROR {type(error).__name__}: {error}"[:300])


def _measure_setting_end_to_end(report: Report, encoder, paths: list[Path], plan: Plan, model_rates: dict,
                                label: str, **setting: str) -> None:
    """End to end from files with one pixel-path ``setting`` (resize= or decode=) and the most loader workers."""
    records = [ImageRecord(p.stem, str(p)) for p in paths]
    workers = plan.workers[0]
    steady, overall, failed = end_to_end_rate(encoder, records, plan, workers, **setting)
    model = model_rates.get(("bf16", plan.e2e_batch))
    share = f"; {steady / model:.0%} of model-only" if model else ""
    report.add("end_to_end", f"files, {workers} workers, {label}",
               f"{steady:.1f} images/s steady ({overall:.1f} incl. start-up){share}; failures {failed}")


def measure_crop_region_end_to_end(report: Report, encoder, paths: list[Path], plan: Plan, model_rates: dict) -> None:
    """End to end from files with resize='crop_region' and the most loader workers."""
    _measure_setting_end_to_end(report, encoder, paths, plan, model_rates, "crop_region resize", resize="crop_region")


def measure_device_decode_end_to_end(report: Report, encoder, paths: list[Path], plan: Plan,
                                     model_rates: dict) -> None:
    """End to end from files with decode='device' (ATTN_ASSETS_DECODE) and the most loader workers (CUDA only)."""
    if torch.device(plan.device).type != "cuda" or importlib.util.find_spec("torchvision") is None:
        report.add("device_decode", "end to end, files, decode=device", "not measured (needs CUDA and torchvision)")
        return
    _measure_setting_end_to_end(report, encoder, paths, plan, model_rates, "decode=device", decode="device")


def measure_device_decode(report: Report, blobs: list[bytes], plan: Plan) -> None:
    """torchvision.io.decode_jpeg on the GPU, batched: images/s (decode only; uint8 [3, H, W] on the device)."""
    device = torch.device(plan.device)
    if device.type != "cuda":
        report.add("device_decode", "torchvision decode_jpeg on the GPU", "not measured (no CUDA device)")
        return
    from torchvision.io import decode_jpeg

    data = [torch.frombuffer(bytearray(blob), dtype=torch.uint8) for blob in blobs]
    batch = (data * math.ceil(256 / len(data)))[:256]
    decode_jpeg(batch, device=device)
    sync(device)
    start = time.perf_counter()
    for _ in range(4):
        decoded = decode_jpeg(batch, device=device)
    sync(device)
    rate = 4 * len(batch) / (time.perf_counter() - start)
    report.add("device_decode", "torchvision decode_jpeg on the GPU, batch 256", f"{rate:.0f} images/s")
    reference = torch.from_numpy(np.array(load_rgb(io.BytesIO(blobs[0])))).permute(2, 0, 1)
    diff = (decoded[0].cpu().int() - reference.int()).abs()
    report.add("device_decode", "GPU vs PIL decode, first photo", f"max {int(diff.max())} grey levels, "
               f"{float((diff > 0).float().mean()):.1%} of values differ")


def measure_memory(report: Report, plan: Plan) -> None:
    if torch.device(plan.device).type == "cuda":
        report.add("memory", "GPU memory peak (max_memory_allocated)",
                   f"{torch.cuda.max_memory_allocated() / 2**30:.2f} GiB")


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cpu-smoke", action="store_true", help="tiny shapes on the CPU (seconds), for CI")
    parser.add_argument("--time-cap", type=float, default=240.0,
                        help="seconds after which no new measurement starts (default 240)")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here as JSON")
    args = parser.parse_args(argv)
    started = time.monotonic()
    report = Report(deadline=started + args.time_cap)
    cores = len(os.sched_getaffinity(0))
    if args.cpu_smoke:
        plan = smoke_plan()
    elif torch.cuda.is_available():
        plan = full_plan("cuda", cores)
    else:
        print("no CUDA device: run with --cpu-smoke, or on a GPU machine", file=sys.stderr)
        return 2
    print("| section | measurement | value |\n|---|---|---|", flush=True)
    report.run("env", measure_env, plan)
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as tmp:
        root = Path(tmp)
        encoder = report.run("setup", lambda r: load_encoder(str(build_model_folder(plan.shape, root / "model")),
                                                              plan.device))
        written = report.run("setup", lambda r: write_images(root / "data", plan.images, plan.distinct, OSV_SIZE))
        if encoder is None or written is None:
            print("setup failed; nothing more to measure", file=sys.stderr)
            return 1
        paths, archive, blobs = written
        report.add("setup", "model", f"{type(encoder.model).__name__} {plan.shape} from save_pretrained + load_encoder")
        report.add("setup", "images", f"{plan.images} JPEGs {OSV_SIZE[0]}x{OSV_SIZE[1]} "
                   f"({sum(map(len, blobs)) / len(blobs) / 1024:.0f} KiB each), files and one zip")
        preprocess = Preprocessor(encoder.processor)
        report.run("cpu", measure_cpu, blobs, preprocess, plan.cpu_images)
        model_rates = report.run("model", measure_model, encoder, plan) or {}
        report.run("capture", measure_capture, encoder, plan)
        report.run("deviation", measure_deviation, encoder, blobs, preprocess, plan)
        report.run("end_to_end", measure_end_to_end, encoder, paths, archive, plan, model_rates)
        exact_encoder, exact_preprocess = encoder, preprocess
        if not preprocess.fast:  # e.g. transformers 5 with torchvision picks the torchvision backend
            pil = report.run("end_to_end", lambda r: pil_encoder(encoder))
            if pil is not None:
                exact_encoder, exact_preprocess = pil, Preprocessor(pil.processor)
                report.add("end_to_end", "again with the PIL image processor", type(pil.processor).__name__)
                report.run("cpu", measure_cpu, blobs, exact_preprocess, plan.cpu_images)
                report.run("end_to_end", measure_end_to_end, pil, paths, archive, plan, model_rates)
                report.run("deviation", measure_processor_deviation, encoder, blobs, preprocess, exact_preprocess,
                           plan)
        report.run("device_decode", measure_device_decode, blobs, plan)
        report.run("deviation", measure_setting_deviation, exact_encoder, blobs, exact_preprocess, plan)
        report.run("end_to_end", measure_crop_region_end_to_end, exact_encoder, paths, plan, model_rates)
        report.run("end_to_end", measure_device_decode_end_to_end, exact_encoder, paths, plan, model_rates)
        report.run("memory", measure_memory, plan)
        report.run("model", measure_bf16_weights, encoder, plan, model_rates)
    report.add("total", "wall time", f"{time.monotonic() - started:.0f} s; {len(report.errors)} errors")
    if args.json:
        args.json.write_text(json.dumps({"rows": report.rows, "errors": report.errors}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

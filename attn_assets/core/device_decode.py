"""Decode JPEGs and resize them on the model's device (``ATTN_ASSETS_DECODE=device``), instead of PIL in the loader.

The loader hands over each JPEG's encoded bytes (a file or a zip member alike); on the device,
``torchvision.io.decode_jpeg`` decodes the batch at once (nvJPEG on CUDA, libjpeg-turbo on the CPU), and each image
is resized and centre-cropped with the exact path's geometry (:meth:`Preprocessor.crop_geometry`, so crop boxes are
the same) and normalised by a lookup table of the processor's own rescale and normalisation
(:func:`normalisation_table`, the table :meth:`Preprocessor.normalize` uses).

The device path mirrors the PIL image processor, the project's reference pixels. Where transformers picks its
torchvision-backed processor (it does when torchvision is installed), the exact path's pixels are that processor's,
and the device path's deviation from them includes that processor's own deviation from PIL.

The resize is Pillow's own arithmetic (:func:`fixed_point_pass`): the plan of
:func:`~attn_assets.core.resample.resize_plan` (Pillow's pass order, only the crop's rows and columns) with Pillow's
22-bit integer weights (:func:`~attn_assets.core.resample.axis_coefficients`), summed in int32 on the device and
rounded as Pillow rounds; integer sums are exact in any order, so on the same decoded pixels it gives the exact
path's bytes on any device. The decode itself is bit-identical to PIL's on the CPU (both libjpeg-turbo, islow
IDCT, fancy upsampling), so there the whole path equals the exact path; nvJPEG on CUDA rounds its IDCT and chroma
upsampling differently: benchmarks/gpu_check.py measured up to 50 grey levels on 19.5% of the decoded values
(before the resize) of its synthetic photos on an H200, and reports the six metrics' deviation of this whole path
there.

torchvision 0.29 deprecates its image decoders in favour of TorchCodec (a DeprecationWarning per call); this module
is where a TorchCodec decode would go.

Per image, the exact path (PIL, :func:`~attn_assets.core.loader.load_one`) takes over for anything else: files that
are not baseline/progressive JPEG in RGB or greyscale (PNG, CMYK JPEG, ...), images the processor would pad (smaller
than the crop), and JPEGs ``decode_jpeg`` refuses (truncated, corrupt); so an unreadable file becomes the same
failure row with the same reason as under ``exact``.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import torch
from PIL import Image

from attn_assets.path_text import text_to_path
from attn_assets.settings import ENV_DECODE

from .image_source import read_member
from .loader import Batch, ImageFailure, ImageRecord, load_one
from .preprocess import Preprocessor, image_processor_of
from .resample import COMPILED_FILTERS, PRECISION_BITS, AxisPass, compiled_available, resize_plan
from .resample import resize_crop as compiled_resize_crop


#: PIL modes of a JPEG that ``decode_jpeg(mode=RGB)`` decodes to PIL's ``convert('RGB')`` values.
DECODED_MODES = ("RGB", "L")

class DeviceDecodeUnavailable(ValueError):
    """``ATTN_ASSETS_DECODE=device`` cannot run here (no torchvision, or a processor it does not mirror)."""


def decode_jpeg_function():
    """``torchvision.io.decode_jpeg``; raises DeviceDecodeUnavailable, naming the setting, without torchvision."""
    try:
        from torchvision.io import decode_jpeg
    except ImportError as error:
        raise DeviceDecodeUnavailable(
            f"{ENV_DECODE}=device decodes JPEGs with torchvision.io.decode_jpeg, but torchvision cannot be imported "
            f"here ({error}); install the torchvision release built for torch {torch.__version__.split('+')[0]} "
            f"(pip install torchvision), or set {ENV_DECODE}=exact"
        ) from None
    return decode_jpeg


def check_supported(preprocess: Preprocessor) -> None:
    """Raise DeviceDecodeUnavailable unless the device path can mirror ``preprocess`` (a box, bilinear or bicubic
    resize, a rescale-and-normalise :func:`normalisation_table` can hold) and torchvision is installed."""
    name = type(image_processor_of(preprocess.processor)).__name__
    if preprocess.resample not in COMPILED_FILTERS:
        raise DeviceDecodeUnavailable(
            f"{ENV_DECODE}=device mirrors box, bilinear and bicubic resizes only; {name} resamples with "
            f"{preprocess.resample!r}; set {ENV_DECODE}=exact")
    normalisation_table(preprocess.processor)
    decode_jpeg_function()


def normalisation_table(processor) -> torch.Tensor:
    """``float32[3, 256]``: each channel's normalised value for each 8-bit level, ``(v * rescale_factor - mean) /
    std`` in float32 as the PIL processor computes it (the table ``Preprocessor.normalize`` looks up, built from
    the settings whatever backend the processor runs on). Raises DeviceDecodeUnavailable for a processor that
    pads, or does not rescale and normalise."""
    p = image_processor_of(processor)
    flags = {key: getattr(p, key, default) for key, default in
             (("do_rescale", True), ("do_normalize", True), ("do_pad", False))}
    if not (flags["do_rescale"] and flags["do_normalize"]) or flags["do_pad"]:
        raise DeviceDecodeUnavailable(
            f"{ENV_DECODE}=device normalises by a lookup table of rescale and normalise; {type(p).__name__} has "
            f"{', '.join(f'{k}={v}' for k, v in flags.items())}; set {ENV_DECODE}=exact")
    mean = np.broadcast_to(np.array(p.image_mean, dtype=np.float32).reshape(-1), (3,))
    std = np.broadcast_to(np.array(p.image_std, dtype=np.float32).reshape(-1), (3,))
    values = (np.arange(256, dtype=np.float64) * float(p.rescale_factor)).astype(np.float32)
    return torch.from_numpy(((values[None, :] - mean[:, None]) / std[:, None]).astype(np.float32))


def normalize(pixels: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """``uint8[B, H, W, 3]`` -> ``float32[B, 3, H, W]``, channel c's levels looked up in ``table[c]`` on the
    pixels' device (as ``Preprocessor.normalize`` does)."""
    flat = table.to(pixels.device).reshape(-1)
    offsets = torch.tensor([0, 256, 512], dtype=torch.int64, device=pixels.device)
    return flat[pixels.long() + offsets].permute(0, 3, 1, 2).contiguous()


# --------------------------------------------------------------------------- loader side


@dataclass
class EncodedBatch:
    """What the loader hands over under ``decode=device``, in input order.

    ``sources[i]`` is image i's encoded JPEG (``uint8[N]``, to decode on the device) or, where the exact path took
    over, its pixels from ``Preprocessor.pixels`` (``uint8[H, W, 3]`` or ``float32[3, H, W]`` normalised).
    ``image_sizes`` are the original (width, height) from the file's header, as PIL reads them.
    """

    image_ids: list[str]
    paths: list[str]
    records: list[ImageRecord]
    sources: list[torch.Tensor]
    failures: list[ImageFailure] = field(default_factory=list)
    image_sizes: list[tuple[int, int]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.image_ids)

    def pin_memory(self) -> "EncodedBatch":
        """Called by DataLoader(pin_memory=True)."""
        return replace(self, sources=[source.pin_memory() for source in self.sources])


def read_encoded(record: ImageRecord) -> bytes:
    """The bytes of ``record``'s file, or of its zip member (raises what opening them raises)."""
    if record.member is None:
        with open(text_to_path(record.path), "rb") as handle:
            return handle.read()
    return read_member(record.path, record.member)


def jpeg_size(data: bytes, preprocess: Preprocessor) -> tuple[int, int] | None:
    """(width, height) from the header when the device path can take ``data``, else None.

    None for anything but a JPEG in RGB or greyscale, and for an image the processor pads (left to the exact path).
    Reads the header only, with PIL's checks (the decompression-bomb limit raises here as it does on the exact path).
    """
    with Image.open(io.BytesIO(data)) as image:
        if image.format != "JPEG" or image.mode not in DECODED_MODES:
            return None
        size = image.size
    geometry = preprocess.crop_geometry(*size)
    return None if geometry.left < 0 or geometry.top < 0 else size


def load_encoded_batch(records: Sequence[ImageRecord], preprocess: Preprocessor, uint8: bool = True) -> EncodedBatch:
    """Read ``records``' encoded JPEGs (a loader's ``load``; see :func:`~attn_assets.core.loader.iter_batches`).

    Any record the device path cannot take goes through the exact path here (:func:`load_one`), and its failure,
    if any, is the exact path's. ``uint8`` is accepted for the loader's signature; fallback pixels are always uint8
    where the fast path applies.
    """
    batch = EncodedBatch([], [], [], [])
    for record in records:
        try:
            data = read_encoded(record)
            size = jpeg_size(data, preprocess)
        except Exception:  # noqa: BLE001 - the exact path below reads it again and names the problem
            size = None
        if size is not None:
            source = torch.frombuffer(bytearray(data), dtype=torch.uint8)
        else:
            result = load_one(record, preprocess, uint8=True)
            if isinstance(result, ImageFailure):
                batch.failures.append(result)
                continue
            source, size = result
        batch.image_ids.append(record.image_id)
        batch.paths.append(record.path)
        batch.records.append(record)
        batch.sources.append(source)
        batch.image_sizes.append(size)
    return batch


# --------------------------------------------------------------------------- device side


def fixed_point_pass(images: torch.Tensor, step: AxisPass) -> torch.Tensor:
    """Pillow's pass ``step`` on ``uint8[N, C, H, W]`` (on any device) -> ``uint8[N, C, H, W']`` (or ``H'``): each
    output pixel the int32 sum of its input pixels times Pillow's 22-bit weights plus one half, shifted down and
    clipped to 0..255 (libImaging/Resample.c ``clip8``). One tap at a time over the whole batch: each step holds
    one int32 copy of the output, never the taps side by side."""
    axis = -1 if step.axis == 1 else -2
    device, size = images.device, images.shape[axis]
    starts = torch.from_numpy(step.bounds[step.first : step.last, 0].astype(np.int64) - step.shift).to(device)
    weights = torch.tensor(step.weights[step.first : step.last], device=device)
    shape = [1, 1, 1, 1]
    shape[axis] = step.last - step.first
    total = None
    for tap in range(weights.shape[1]):
        term = images.index_select(axis, (starts + tap).clamp_(max=size - 1)).to(torch.int32)
        term *= weights[:, tap].reshape(shape)
        total = term if total is None else total.add_(term)
    total += 1 << (PRECISION_BITS - 1)
    return total.bitwise_right_shift_(PRECISION_BITS).clamp_(0, 255).to(torch.uint8)


def resize_crop(images: torch.Tensor, preprocess: Preprocessor) -> torch.Tensor:
    """``uint8[N, 3, H, W]`` (decoded images of one size, on any device) -> the processor's resize and centre crop,
    ``uint8[N, h, w, 3]``, the exact path's bytes for the same decoded pixels.

    :func:`~attn_assets.core.resample.resize_plan` (geometry from ``preprocess.crop_geometry``, the exact path's)
    run with :func:`fixed_point_pass`; on a CPU, with the exact path's compiled loops where numba is installed
    (the same bytes, several times faster there than torch's gathers).
    """
    height, width = int(images.shape[-2]), int(images.shape[-1])
    if images.device.type == "cpu" and compiled_available():
        geometry = preprocess.crop_geometry(width, height)
        return torch.stack([torch.from_numpy(compiled_resize_crop(Image.fromarray(image.permute(1, 2, 0).numpy()),
                                                                  geometry, preprocess.resample))
                            for image in images])
    (left, top, right, bottom), passes = resize_plan(width, height, preprocess.crop_geometry(width, height),
                                                     preprocess.resample)
    pixels = images[..., top:bottom, left:right]
    for step in passes:
        pixels = fixed_point_pass(pixels, step)
    return pixels.permute(0, 2, 3, 1)


def resize_crop_by_size(images: dict[int, torch.Tensor], preprocess: Preprocessor) -> dict[int, torch.Tensor]:
    """:func:`resize_crop` of each image (``uint8[3, H, W]`` by position), images of one size in one call
    (OSV-5M's photos are mostly 792x512: one call per batch) -> ``uint8[h, w, 3]`` by position."""
    by_size: dict[tuple[int, ...], list[int]] = {}
    for position, image in images.items():
        by_size.setdefault(tuple(image.shape), []).append(position)
    cropped: dict[int, torch.Tensor] = {}
    for positions in by_size.values():
        cropped.update(zip(positions, resize_crop(torch.stack([images[i] for i in positions]), preprocess)))
    return cropped


def decode_all(encoded: list[torch.Tensor], device: torch.device) -> list[torch.Tensor | None]:
    """``decode_jpeg`` of the whole list on ``device`` (``uint8[3, H, W]`` each, RGB); where the batched call
    fails, each image on its own, None for the ones it refuses."""
    if not encoded:
        return []
    from torchvision.io import ImageReadMode

    decode_jpeg = decode_jpeg_function()
    try:
        return list(decode_jpeg(encoded, mode=ImageReadMode.RGB, device=device))
    except RuntimeError:
        decoded: list[torch.Tensor | None] = []
        for data in encoded:
            try:
                decoded.append(decode_jpeg(data, mode=ImageReadMode.RGB, device=device))
            except RuntimeError:
                decoded.append(None)
        return decoded


def decode_on_device(batch: EncodedBatch, preprocess: Preprocessor, device: torch.device | str) -> Batch:
    """An EncodedBatch -> the loader's Batch with normalised ``float32[B, 3, h, w]`` pixel values on ``device``, in
    input order. A JPEG that ``decode_jpeg`` refuses, or decodes to another size than its header says, takes the
    exact path: its pixels, or its failure row (appended to the failures).
    """
    device = torch.device(device)
    table = normalisation_table(preprocess.processor).to(device)
    positions = [i for i, source in enumerate(batch.sources) if source.ndim == 1]
    decoded = dict(zip(positions, decode_all([batch.sources[i] for i in positions], device)))
    usable = {i: image for i, image in decoded.items()
              if image is not None and tuple(image.shape[-2:]) == batch.image_sizes[i][::-1]}
    cropped = resize_crop_by_size(usable, preprocess)
    kept = Batch([], [], torch.empty(0), list(batch.failures), [])
    pixels: list[torch.Tensor] = []
    for i, source in enumerate(batch.sources):
        image = cropped.get(i, source)
        if i in decoded and i not in cropped:
            result = load_one(batch.records[i], preprocess, uint8=True)
            if isinstance(result, ImageFailure):
                kept.failures.append(result)
                continue
            image = result[0]
        kept.image_ids.append(batch.image_ids[i])
        kept.paths.append(batch.paths[i])
        kept.image_sizes.append(batch.image_sizes[i])
        pixels.append(image.to(device, non_blocking=True))
    if pixels and all(p.dtype == torch.uint8 for p in pixels):
        kept.pixel_values = normalize(torch.stack(pixels), table)
    elif pixels:
        kept.pixel_values = torch.stack([normalize(p[None], table)[0] if p.dtype == torch.uint8 else p
                                         for p in pixels])
    else:
        height, width = preprocess.output_size
        kept.pixel_values = torch.empty((0, 3, height, width), dtype=torch.float32, device=device)
    return kept

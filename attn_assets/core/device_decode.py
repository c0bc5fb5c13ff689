"""Decode JPEGs and resize them on the model's device (``ATTN_ASSETS_DECODE=device``), instead of PIL in the loader.

The loader hands over each JPEG's encoded bytes (a file or a zip member alike); on the device,
``torchvision.io.decode_jpeg`` decodes the batch at once (nvJPEG on CUDA, libjpeg-turbo on the CPU), and each image
is resized and centre-cropped with the exact path's geometry (:meth:`Preprocessor.crop_geometry`, so crop boxes are
the same) and normalised by a lookup table of the processor's own rescale and normalisation
(:func:`normalisation_table`, the table :meth:`Preprocessor.normalize` uses).

The device path mirrors the PIL image processor, the project's reference pixels. Where transformers picks its
torchvision-backed processor (it does when torchvision is installed), the exact path's pixels are that processor's,
and the device path's deviation from them includes that processor's own deviation from PIL.

The resize mirrors Pillow's: the same antialiased filter (``torch.nn.functional.interpolate(antialias=True)``
computes Pillow's ``precompute_coeffs`` weights, bicubic with a = -0.5, its support widened by the scale when
shrinking), one axis at a time in Pillow's order (:func:`~attn_assets.core.resample.horizontal_first`), each pass
rounded and clamped to 8 bits as Pillow does between and after its passes. What is left is the arithmetic: Pillow
sums 22-bit fixed-point weights and rounds half up, torch sums float32 weights and rounds half to even, so a value
within about 1e-5 of a half lands one level apart, and the second pass can carry that level on
(:data:`RESIZE_TOLERANCE`). The decode itself is bit-identical to PIL's on the CPU (both libjpeg-turbo, islow IDCT,
fancy upsampling); nvJPEG on CUDA rounds its IDCT and chroma upsampling differently: benchmarks/gpu_check.py
measured up to 50 grey levels on 19.5% of the decoded values (before the resize) of its synthetic photos on an
H200, and reports the six metrics' deviation of this whole path there.

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
import torch.nn.functional as F
from PIL import Image

from attn_assets.path_text import text_to_path
from attn_assets.settings import ENV_DECODE

from .image_source import read_member
from .loader import Batch, ImageFailure, ImageRecord, load_one
from .preprocess import Preprocessor, image_processor_of
from .resample import horizontal_first

#: Pillow filters this module mirrors, as ``torch.nn.functional.interpolate`` modes (both with ``antialias=True``).
INTERPOLATION_MODES = {Image.Resampling.BICUBIC: "bicubic", Image.Resampling.BILINEAR: "bilinear"}

#: PIL modes of a JPEG that ``decode_jpeg(mode=RGB)`` decodes to PIL's ``convert('RGB')`` values.
DECODED_MODES = ("RGB", "L")

#: Largest difference, in grey levels, of the device resize against Pillow's on the same decoded pixels. A pass
#: differs from Pillow's only where its exact value lies within the weights' rounding (22-bit fixed point vs
#: float32, about 1e-5 of the value) of a half: one level. The second pass reads first-pass values that may be one
#: level off, with weights whose absolute values sum to below 1.2 (bicubic a = -0.5: at most about 1.14), so it
#: moves by at most 1.2 levels before its own rounding: at most 2 levels after it.
RESIZE_TOLERANCE = 2


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
    """Raise DeviceDecodeUnavailable unless the device path can mirror ``preprocess`` (a bicubic or bilinear resize,
    a rescale-and-normalise :func:`normalisation_table` can hold) and torchvision is installed."""
    name = type(image_processor_of(preprocess.processor)).__name__
    if preprocess.resample not in INTERPOLATION_MODES:
        raise DeviceDecodeUnavailable(
            f"{ENV_DECODE}=device mirrors bicubic and bilinear resizes only; {name} resamples with "
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


def resize_axis(image: torch.Tensor, size: int, axis: int, mode: str) -> torch.Tensor:
    """One antialiased pass of ``image[1, 3, H, W]`` (float) along ``axis`` (-1: width, -2: height) to ``size``,
    rounded and clamped to 8-bit values as Pillow stores each pass (still float)."""
    if image.shape[axis] == size:
        return image
    shape = [image.shape[-2], image.shape[-1]]
    shape[axis] = size
    return F.interpolate(image, size=tuple(shape), mode=mode, antialias=True).round_().clamp_(0, 255)


def resize_crop(images: torch.Tensor, preprocess: Preprocessor) -> torch.Tensor:
    """``uint8[N, 3, H, W]`` (decoded images of one size, on any device) -> the processor's resize and centre crop,
    ``uint8[N, h, w, 3]``.

    Pillow's two passes in Pillow's order, each rounded to 8 bits; the first pass's output is cut to the crop's
    columns (rows) before the second pass, which treats them independently. Geometry from
    ``preprocess.crop_geometry``, the exact path's.
    """
    height, width = int(images.shape[-2]), int(images.shape[-1])
    g = preprocess.crop_geometry(width, height)
    mode = INTERPOLATION_MODES[preprocess.resample]
    x = images.float()
    if horizontal_first(width, height, g.resized_width, g.resized_height):
        x = resize_axis(x, g.resized_width, -1, mode)[..., g.left : g.left + g.crop_width]
        x = resize_axis(x, g.resized_height, -2, mode)[..., g.top : g.top + g.crop_height, :]
    else:
        x = resize_axis(x, g.resized_height, -2, mode)[..., g.top : g.top + g.crop_height, :]
        x = resize_axis(x, g.resized_width, -1, mode)[..., g.left : g.left + g.crop_width]
    return x.to(torch.uint8).permute(0, 2, 3, 1)


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

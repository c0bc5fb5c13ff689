"""Decode images like the seed and turn them into the model's pixel values.

The seed did ``Image.open(p).convert('RGB')`` and ``processor(images=img)``; this module
keeps those pixels exactly, fixes the decodes where ``convert('RGB')`` is wrong (16-bit
grayscale clipped to white), and offers a faster, verified-identical preprocessing path (PIL's resize split
into its two passes, each run only where the centre crop needs it, compiled where numba is installed:
attn_assets.core.resample).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
from PIL import Image

from attn_assets.crop_geometry import CropGeometry, crop_geometry, resized_shape, size_entry
from attn_assets.settings import RESIZE_MODES

from .resample import COMPILED_FILTERS, FILTER_SUPPORT, compiled_available, horizontal_first, source_span
from .resample import resize_crop as compiled_resize_crop

log = logging.getLogger(__name__)

_SIXTEEN_BIT_MODES = {"I;16", "I;16L", "I;16B", "I;16N", "I"}

#: Largest difference, in grey levels, that the crop-region resize may show against the processor. Its float32
#: box edges move the first pass's fixed-point weights by ~1e-5 of their sum, so an intermediate pixel is at most
#: one level off (255 * 7 taps * 1e-5 < 1); the second pass sums those with weights whose absolute values add up
#: to < 2 (bicubic: about 1.14 at most), then rounds once more: at most 2 levels. Random noise, the hardest case,
#: reaches 2 (benchmarks/bench_preprocess.py states the share on photos).
CROP_REGION_TOLERANCE = 2


def load_rgb(path: str | Path | BinaryIO) -> Image.Image:
    """Decode the first frame of an image file (a path, or a seekable binary file object) as 8-bit RGB, as the seed did.

    - EXIF orientation is NOT applied (the seed didn't; results must stay comparable), so a
      photo stored sideways is analysed sideways.
    - Alpha (LA, RGBA, PA, palette transparency) is dropped, as ``convert('RGB')`` does.
    - 16/32-bit integer grayscale is scaled from 0..65535 to 0..255 instead of clipped;
      float images in [0, 1] are scaled by 255.
    - Animated GIF / multi-page TIFF: the first frame.
    - PIL's decompression-bomb limit is kept (raises ``Image.DecompressionBombError``) and
      truncated files raise ``OSError`` (``ImageFile.LOAD_TRUNCATED_IMAGES`` stays False).
    - PNG chunk checksums are verified first (PIL's decoder never checks the IDAT CRCs, so a
      corrupted file would otherwise decode silently); a mismatch raises ``SyntaxError``.
    """
    with Image.open(path) as image:
        if image.format == "PNG":
            _verify_png(path)
        image.seek(0)
        return to_rgb(image)


def _verify_png(path: str | Path | BinaryIO) -> None:
    """Check every chunk's CRC (reads the file once more, no decoding)."""
    if hasattr(path, "seek"):
        path.seek(0)
    with Image.open(path) as probe:
        probe.verify()


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert a decoded PIL image of any mode to a detached RGB image (see ``load_rgb``)."""
    mode = image.mode
    if mode in _SIXTEEN_BIT_MODES:
        return Image.fromarray(_sixteen_to_eight(np.asarray(image)), mode="L").convert("RGB")
    if mode == "F":
        return Image.fromarray(_float_to_eight(np.asarray(image)), mode="L").convert("RGB")
    if mode in ("P", "PA"):
        # Via RGBA so palette transparency is handled without PIL's warning; same RGB values.
        return image.convert("RGBA").convert("RGB")
    return image.convert("RGB")


def _sixteen_to_eight(values: np.ndarray) -> np.ndarray:
    """uint16-range integers -> uint8, rounding v * 255 / 65535."""
    wide = np.clip(values.astype(np.int64), 0, 65535)
    return ((wide * 255 + 32767) // 65535).astype(np.uint8)


def _float_to_eight(values: np.ndarray) -> np.ndarray:
    values = np.nan_to_num(values.astype(np.float64))
    if values.size and values.max() <= 1.0:
        values = values * 255.0
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------- processor size


class ProcessorSizeError(ValueError):
    """A processor whose settings do not give every image the same, unpadded input size.

    ``setting`` names the offending preprocessor_config.json key (``crop_size``, ``size``, ``size.longest_edge``,
    ``crop_size.height``, ``do_center_crop``, ``do_resize``), so the model loader can say which file and key to fix.
    """

    def __init__(self, setting: str, message: str):
        super().__init__(message)
        self.setting = setting


def _size_text(size) -> str:
    keys = ("height", "width", "shortest_edge", "longest_edge")
    parts = {k: size_entry(size, k) for k in keys}
    return "{" + ", ".join(f"{k!r}: {v}" for k, v in parts.items() if v is not None) + "}"


def processor_input_size(processor) -> tuple[int, int]:
    """(height, width) of the pixel values ``processor`` makes from ANY image.

    That is the centre crop (``do_center_crop`` with ``crop_size``) after the resize (shortest edge
    to ``size.shortest_edge``, or to ``size.height`` x ``size.width``), or the fixed resize when it
    does not crop. Read from the processor, never from the model's ``config.image_size`` (DINOv2
    checkpoints say 518 and crop 224). Raises ProcessorSizeError, naming the setting, when the size
    depends on the image (shortest-edge resize without a crop, no resize at all) or when the resize
    is smaller than the crop, so that every image would be padded with black. Also refused: a size key this
    module does not mirror (``size.longest_edge``, ``size.max_pixels``, ...: the crop box and the padding would
    depend on each image), a size that is not a positive whole number, and a crop without a resize
    (``do_resize`` false: the model would see a crop of each photo at its own resolution).
    """
    size = _processor_attr(processor, "size")
    crop = _processor_attr(processor, "crop_size")
    do_resize = bool(_processor_attr(processor, "do_resize", True))
    do_crop = bool(_processor_attr(processor, "do_center_crop", False))
    _check_whole_numbers("size", size)
    _check_whole_numbers("crop_size", crop)
    shortest = size_entry(size, "shortest_edge") if do_resize else None
    fixed = (size_entry(size, "height"), size_entry(size, "width")) if do_resize else (None, None)
    if do_crop:
        crop_h, crop_w = size_entry(crop, "height"), size_entry(crop, "width")
        if not (crop_h and crop_w):
            raise ProcessorSizeError(
                "crop_size", f"do_center_crop is true but crop_size {crop!r} has no height and width"
            )
        crop_h, crop_w = int(crop_h), int(crop_w)
        if not do_resize:
            raise ProcessorSizeError(
                "do_resize",
                f"do_resize is false but do_center_crop is true: the model would see a {crop_h}x{crop_w} crop of each "
                "photo at its own resolution (a small part of a large photo, black padding around a small one)",
            )
        if shortest and int(shortest) < max(crop_h, crop_w):
            raise ProcessorSizeError(
                "size",
                f"size.shortest_edge {int(shortest)} is smaller than crop_size {crop_h}x{crop_w}: every image "
                "would be padded with black before the model sees it",
            )
        if not shortest and all(fixed) and (int(fixed[0]) < crop_h or int(fixed[1]) < crop_w):
            raise ProcessorSizeError(
                "size",
                f"size {int(fixed[0])}x{int(fixed[1])} is smaller than crop_size {crop_h}x{crop_w}: every image "
                "would be padded with black before the model sees it",
            )
        _check_mirrored(size, f"the {crop_h}x{crop_w} crop")
        return crop_h, crop_w
    if not do_resize:
        raise ProcessorSizeError(
            "do_resize", "do_resize and do_center_crop are both false: the input size would be each image's own size"
        )
    if all(fixed) and not shortest:
        _check_mirrored(size, f"the {int(fixed[0])}x{int(fixed[1])} input")
        return int(fixed[0]), int(fixed[1])
    raise ProcessorSizeError(
        "do_center_crop",
        f"size {_size_text(size)} without a centre crop (do_center_crop false) gives each image an input size "
        "that depends on its aspect ratio",
    )


# size keys a processor may carry beside the ones resized_shape mirrors (transformers' SizeDict)
_UNMIRRORED_SIZE_KEYS = ("longest_edge", "max_height", "max_width", "min_pixels", "max_pixels")


def _check_whole_numbers(setting: str, size) -> None:
    """Every value present in ``size`` / ``crop_size`` is a positive whole number (not text, not 0)."""
    for key in ("height", "width", "shortest_edge", *_UNMIRRORED_SIZE_KEYS):
        value = size_entry(size, key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0):
            raise ProcessorSizeError(
                f"{setting}.{key}", f"{setting}.{key} {_written(value)} is not a positive whole number of pixels"
            )


def _check_mirrored(size, what: str) -> None:
    """Refuse a size key that resized_shape does not mirror: the crop box (where the map lies) would be unknown."""
    for key in _UNMIRRORED_SIZE_KEYS:
        value = size_entry(size, key)
        if value is not None:
            raise ProcessorSizeError(
                f"size.{key}",
                f"size.{key} {_written(value)} limits the resize in a way that depends on each photo (a wide or tall "
                f"photo is shrunk further and {what} padded with black), and where the model's view lies in the photo "
                "could not be known; this project resizes to size.shortest_edge, or to size.height and size.width",
            )


def _written(value) -> str:
    """A setting as it reads in preprocessor_config.json."""
    try:
        return json.dumps(value)
    except (TypeError, ValueError):
        return repr(value)


# --------------------------------------------------------------------------- preprocessing


def _processor_attr(processor, name: str, default=None):
    value = getattr(image_processor_of(processor), name, default)
    return default if value is None else value


def image_processor_of(processor):
    """The image processor holding the settings: ``processor.image_processor`` for a multimodal
    processor (CLIPProcessor, as PLONK's pipeline holds), else ``processor`` itself."""
    inner = getattr(processor, "image_processor", None)
    return processor if inner is None else inner


# --------------------------------------------------------------------------- resize and crop

def exact_resize_crop(image: Image.Image, geometry: CropGeometry, resample) -> Image.Image:
    """``image.resize((resized_width, resized_height), resample).crop(crop box)`` bit for bit, at lower cost.

    Pillow resizes in two passes, one per axis, rounding to 8 bits in between; a pixel's filter weights depend
    only on its index in the WHOLE resized axis. So each pass is run here as its own single-axis ``resize`` of the
    whole axis, in Pillow's order (:func:`horizontal_first`), on only the rows or columns the crop needs: the
    first pass reads only the input rows (columns) that the crop's rows (columns) read (:func:`source_span`; the
    rest are left black and never read for the kept pixels), and the second pass runs only on the crop's columns
    (rows). OSV-5M's 792x512 -> 519x336, crop 336: the vertical pass on 336 of 519 columns. Only the first pass
    cannot be narrowed: Pillow's ``box`` argument takes float32 edges, which shifts every filter (see README,
    'The data path'). Filters outside :data:`~attn_assets.core.resample.FILTER_SUPPORT` (NEAREST) take the plain
    resize. :func:`attn_assets.core.resample.resize_crop` computes the same bytes about 5x faster where numba is
    installed.
    """
    width, height = image.size
    rw, rh = geometry.resized_width, geometry.resized_height
    left, top = geometry.left, geometry.top
    right, bottom = left + geometry.crop_width, top + geometry.crop_height
    support = FILTER_SUPPORT.get(resample)
    if support is None:
        return image.resize((rw, rh), resample=resample).crop((left, top, right, bottom))
    if rw == width and rh == height:
        return _cropped(image, (left, top, right, bottom))
    if rh == height:  # horizontal pass only: rows are independent
        rows = _cropped(image, (0, top, width, bottom)).resize((rw, bottom - top), resample)
        return _cropped(rows, (left, 0, right, bottom - top))
    if rw == width:  # vertical pass only: columns are independent
        columns = _cropped(image, (left, 0, right, height)).resize((right - left, rh), resample)
        return _cropped(columns, (0, top, right - left, bottom))
    if horizontal_first(width, height, rw, rh):
        lo, hi = source_span(height, rh, top, bottom, support)
        rows = _cropped(image, (0, lo, width, hi)).resize((rw, hi - lo), resample)
        rows = _cropped(rows, (left, 0, right, hi - lo))
        resized = _placed(rows, (right - left, height), (0, lo)).resize((right - left, rh), resample)
        return _cropped(resized, (0, top, right - left, bottom))
    lo, hi = source_span(width, rw, left, right, support)
    columns = _cropped(image, (lo, 0, hi, height)).resize((hi - lo, rh), resample)
    columns = _cropped(columns, (0, top, hi - lo, bottom))
    resized = _placed(columns, (width, bottom - top), (lo, 0)).resize((rw, bottom - top), resample)
    return _cropped(resized, (left, 0, right, bottom - top))


def _cropped(image: Image.Image, box: tuple[int, int, int, int]) -> Image.Image:
    """``image.crop(box)``, without the copy when ``box`` is the whole image."""
    return image if box == (0, 0, *image.size) else image.crop(box)


def _placed(part: Image.Image, size: tuple[int, int], offset: tuple[int, int]) -> Image.Image:
    """``part`` at ``offset`` in a black image of ``size`` (``part`` itself when it already fills it)."""
    if part.size == size:
        return part
    whole = Image.new(part.mode, size)
    whole.paste(part, offset)
    return whole


def region_resize_crop(image: Image.Image, geometry: CropGeometry, resample) -> Image.Image:
    """The centre crop resized from only the photo region it covers (PIL ``resize(box=...)``), in Pillow's pass
    order for the whole resize. Not bit-identical to :func:`exact_resize_crop`: Pillow takes the box edges as
    float32 (libImaging/Resample.c ``precompute_coeffs(int inSize, float in0, float in1, ...)``), so the filter
    centres ``in0 + (x + 0.5) * (in1 - in0) / out`` move by up to half a float32 step (about 1e-5 pixel) and
    the 22-bit fixed-point weights by tens of units: a pixel near a rounding tie lands one grey level off.
    """
    width, height = image.size
    rw, rh = geometry.resized_width, geometry.resized_height
    crop_w, crop_h = geometry.crop_width, geometry.crop_height
    sx, sy = width / rw, height / rh
    x0, x1 = geometry.left * sx, min((geometry.left + crop_w) * sx, width)
    y0, y1 = geometry.top * sy, min((geometry.top + crop_h) * sy, height)
    support = FILTER_SUPPORT.get(resample, 3.0)
    if horizontal_first(width, height, rw, rh):
        lo, hi = source_span(height, rh, geometry.top, geometry.top + crop_h, support)
        rows = image.crop((0, lo, width, hi)).resize((crop_w, hi - lo), resample, box=(x0, 0, x1, hi - lo))
        return rows.resize((crop_w, crop_h), resample, box=(0, y0 - lo, crop_w, y1 - lo))
    lo, hi = source_span(width, rw, geometry.left, geometry.left + crop_w, support)
    columns = image.crop((lo, 0, hi, height)).resize((hi - lo, crop_h), resample, box=(0, y0, hi - lo, y1))
    return columns.resize((crop_w, crop_h), resample, box=(x0 - lo, 0, x1 - lo, crop_h))


def lookup_channels(pixels: np.ndarray, table: np.ndarray) -> np.ndarray:
    """``uint8[B, H, W, C]`` -> ``float32[B, C, H, W]``: channel c's values looked up in ``table[c]`` (``[C, 256]``).

    ``np.take`` per channel, straight into the channels-first result: on one CPU core about five times faster
    than one gather of the whole batch in torch, and the same values.
    """
    out = np.empty((pixels.shape[0], pixels.shape[3], pixels.shape[1], pixels.shape[2]), dtype=table.dtype)
    for channel in range(pixels.shape[3]):
        np.take(table[channel], pixels[..., channel], out=out[:, channel])
    return out


class Preprocessor:
    """PIL RGB image -> ``FloatTensor[3, H, W]`` identical to ``processor(images=img)``.

    The fast path (the processor's PIL resize, each of its two passes run only on the rows or columns the centre
    crop needs, then a lookup-table normalisation) is used only when it reproduced the processor bit for bit on
    probe images at construction; otherwise every call goes through the processor itself. The passes are
    Pillow's arithmetic compiled (:func:`attn_assets.core.resample.resize_crop`, about 5x faster than Pillow's own)
    where numba is installed and the filter is box, bilinear or bicubic, else Pillow's own passes
    (:func:`exact_resize_crop`); ``compiled=False`` forces Pillow's. Should the compiled passes ever differ from
    the processor on the probes (a Pillow that changed its arithmetic), Pillow's own passes are used, with a warning.

    ``resize="crop_region"`` (``ATTN_ASSETS_RESIZE``) resizes only the part of the photo that lands in the centre
    crop (PIL ``resize(box=...)``, :func:`region_resize_crop`): about a quarter less resize work, not
    bit-identical (float32 box edges; deviation measured in benchmarks/bench_preprocess.py and stated in the
    README), so it is verified against the processor to within :data:`CROP_REGION_TOLERANCE` grey levels
    instead of 1e-6, and falls back to the exact path where it is not.
    """

    def __init__(self, processor, verify: bool = True, resize: str = "exact", compiled: bool | None = None):
        if resize not in RESIZE_MODES:
            raise ValueError(f"resize must be one of {', '.join(RESIZE_MODES)}, got {resize!r}")
        self.processor = processor
        self.resize = resize
        self.size = _processor_attr(processor, "size")
        self.crop_size = _processor_attr(processor, "crop_size")
        self.do_resize = bool(_processor_attr(processor, "do_resize", True))
        self.do_center_crop = bool(_processor_attr(processor, "do_center_crop", False))
        self.resample = _processor_attr(processor, "resample", Image.Resampling.BICUBIC)
        usable = self.resample in COMPILED_FILTERS and compiled_available()
        self.compiled = usable if compiled is None else bool(compiled) and usable
        self._lut = self._build_lut()
        self._tables: dict[torch.device, torch.Tensor] = {}  # the lookup table on each device normalize() saw
        self.fast = self._lut is not None and (not verify or self._verify())
        if verify and not self.fast and self._lut is not None and self.resize != "exact":
            log.warning("resize=%r is outside its bound for %s; using the exact resize", resize,
                        type(processor).__name__)
            self.resize = "exact"
            self.fast = self._verify()
        if verify and not self.fast and self._lut is not None and self.compiled:
            log.warning("the compiled resize differs from %s on the probe images; using Pillow's own passes",
                        type(processor).__name__)
            self.compiled = False
            self.fast = self._verify()
        if not self.fast:
            log.info("preprocessing through %s (fast path not applicable)", type(processor).__name__)

    def __getstate__(self) -> dict:
        """Loader workers get the settings and the table, never a copy on a device (no CUDA in workers)."""
        return {**self.__dict__, "_tables": {}}

    # -- public ---------------------------------------------------------------------------------

    def __call__(self, image: Image.Image) -> torch.Tensor:
        """``FloatTensor[3, H, W]``, the processor's pixel values for ``image``."""
        return self.normalize(self.pixels(image)[None])[0]

    def pixels(self, image: Image.Image) -> torch.Tensor:
        """The model's input for ``image`` before rescaling and normalisation, to be batched and normalised later.

        ``uint8[H, W, 3]`` (resized and cropped, channels last) on the fast path: :meth:`normalize` turns a batch of
        these into the processor's values on whatever device the batch is (a quarter of the float32 bytes cross to
        the device). ``float32[3, H, W]`` already normalised where the fast path does not apply (the processor's own
        output, e.g. small images the processor pads).
        """
        if image.mode != "RGB":
            image = to_rgb(image)
        if self.fast:
            cropped = self._resize_crop(image)
            if cropped is not None:
                return torch.from_numpy(cropped)
        return self.reference(image)

    def normalize(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """``uint8[B, H, W, 3]`` (from :meth:`pixels`) -> ``float32[B, 3, H, W]`` normalised, on the same device.

        A table lookup of the float32 values the processor computes for each of the 256 levels per channel
        (``(v * rescale_factor - mean) / std``), so the result is bit-identical on any device. Float input is
        taken as already normalised and returned unchanged.
        """
        if pixel_values.dtype != torch.uint8:
            return pixel_values
        if pixel_values.ndim != 4 or pixel_values.shape[-1] != 3:
            raise ValueError(f"uint8 pixels must be [B, H, W, 3] (Preprocessor.pixels), got {tuple(pixel_values.shape)}")
        if self._lut is None:
            raise ValueError("uint8 pixels need the fast path's lookup table; this processor has none")
        device = pixel_values.device
        if device.type == "cpu":
            return torch.from_numpy(lookup_channels(pixel_values.numpy(), self._lut))
        table = self._tables.get(device)
        if table is None:
            table = self._tables[device] = torch.from_numpy(self._lut).reshape(-1).to(device)
        offsets = torch.tensor([0, 256, 512], dtype=torch.int32, device=device)
        return table[pixel_values.to(torch.int32) + offsets].permute(0, 3, 1, 2).contiguous()

    def reference(self, image: Image.Image) -> torch.Tensor:
        """The processor's own output for one image, ``[3, H, W]`` float32."""
        return self.processor(images=image, return_tensors="pt")["pixel_values"][0]

    def crop_geometry(self, width: int, height: int) -> CropGeometry:
        """Resize + crop geometry for an original ``width`` x ``height`` image, under this processor's settings
        (see attn_assets.crop_geometry)."""
        return crop_geometry(width, height, self.size if self.do_resize else None,
                             self.crop_size if self.do_center_crop else None)

    @property
    def output_size(self) -> tuple[int, int]:
        """(height, width) of the pixel values."""
        geometry = self.crop_geometry(640, 480)
        return geometry.crop_height, geometry.crop_width

    # -- fast path ------------------------------------------------------------------------------

    def _build_lut(self) -> np.ndarray | None:
        """float32[3, 256]: uint8 value -> normalised value, same float ops as the processor."""
        p = image_processor_of(self.processor)
        if getattr(p, "backend", "pil") != "pil" or getattr(p, "do_pad", False):
            return None
        if not (_processor_attr(p, "do_rescale", True) and _processor_attr(p, "do_normalize", True)):
            return None
        if self.do_resize and resized_shape(640, 480, self.size) is None:
            return None
        mean = np.array(_processor_attr(p, "image_mean"), dtype=np.float32).reshape(-1)
        std = np.array(_processor_attr(p, "image_std"), dtype=np.float32).reshape(-1)
        mean, std = np.broadcast_to(mean, (3,)), np.broadcast_to(std, (3,))
        values = (np.arange(256, dtype=np.float64) * float(p.rescale_factor)).astype(np.float32)
        return ((values[None, :] - mean[:, None]) / std[:, None]).astype(np.float32)

    def _resize_crop(self, image: Image.Image) -> np.ndarray | None:
        """The processor's resize (PIL, its filter) and centre crop, ``uint8[H, W, 3]``; None where the processor
        would pad."""
        geometry = self.crop_geometry(*image.size)
        if geometry.left < 0 or geometry.top < 0:
            return None  # the processor pads small images; let it
        if not self.do_resize:
            cropped = image.crop((geometry.left, geometry.top,
                                  geometry.left + geometry.crop_width, geometry.top + geometry.crop_height))
        elif self.resize == "crop_region" and self.do_center_crop:
            cropped = region_resize_crop(image, geometry, self.resample)
        elif self.compiled:
            return compiled_resize_crop(image, geometry, self.resample)
        else:
            cropped = exact_resize_crop(image, geometry, self.resample)
        return np.array(cropped, dtype=np.uint8)

    @property
    def _grey_level(self) -> float:
        """One grey level in normalised units (the largest step of the lookup table)."""
        return float(np.abs(np.diff(self._lut, axis=1)).max())

    def _fast(self, image: Image.Image) -> torch.Tensor | None:
        cropped = self._resize_crop(image)
        if cropped is None:
            return None
        return self.normalize(torch.from_numpy(cropped)[None])[0]

    def _verify(self) -> bool:
        """Compare the fast path with the processor on a few odd-sized random images: a landscape, a portrait whose
        crop drops rows (horizontal pass first), a tall one (vertical pass first), a square and an upscaled one."""
        rng = np.random.default_rng(0)
        side = max(self.output_size)
        probes = ((side + 37, side + 5), (side + 60, 2 * side), (side + 3, 2 * side + 11), (side, side), (97, 61))
        for width, height in probes:
            pixels = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
            image = Image.fromarray(pixels, mode="RGB")
            fast = self._fast(image)
            if fast is None:
                continue
            reference = self.reference(image)
            tolerance = 1e-6 if self.resize == "exact" else CROP_REGION_TOLERANCE * self._grey_level + 1e-6
            if fast.shape != reference.shape or float((fast - reference).abs().max()) > tolerance:
                if self.resize == "exact" and not self.compiled:  # else __init__ still tries Pillow's own passes
                    log.warning("fast preprocessing differs from %s; using the processor",
                                type(self.processor).__name__)
                return False
        return True

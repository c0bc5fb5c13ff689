"""Pillow's resize (libImaging/Resample.c), reproduced bit for bit and compiled, for the centre crop only.

Pillow resizes with a separable convolution: one pass per axis, each output pixel a sum of input pixels times
22-bit fixed-point weights (``precompute_coeffs`` + ``normalize_coeffs_8bpc``), rounded to 8 bits in between. The
weights of an output pixel depend only on its index in the whole resized axis, and the sums are integer sums, so
any order of summing gives Pillow's values exactly. This module computes the same integer weights
(:func:`axis_coefficients`, Pillow's double-precision arithmetic replayed operation for operation) and runs the
two passes as numba-compiled loops over contiguous rows (SIMD across a row), on only the rows and columns the
centre crop reads, in Pillow's pass order (:func:`horizontal_first`). On OSV-5M's 792x512 photos at StreetCLIP's
336 crop that is about 0.65 ms per image on one core against 2.7 ms for Pillow's own passes
(benchmarks/bench_preprocess.py).

Only the filters whose weights are pure arithmetic (box, bilinear, bicubic: :data:`COMPILED_FILTERS`) are
reproduced; Hamming and Lanczos call ``sin``/``cos``, whose last bit may differ between C libraries, and keep
Pillow's own passes. Without numba (:func:`compiled_available` is false) the callers keep Pillow's passes too.
"""

from __future__ import annotations

import functools
import logging
import math
import threading
from dataclasses import dataclass

import numpy as np
from PIL import Image

from attn_assets.crop_geometry import CropGeometry

log = logging.getLogger(__name__)

#: Half-width of Pillow's resampling filters in input pixels at scale 1 (libImaging/Resample.c ``struct filter``).
FILTER_SUPPORT = {
    Image.Resampling.BOX: 0.5,
    Image.Resampling.BILINEAR: 1.0,
    Image.Resampling.HAMMING: 1.0,
    Image.Resampling.BICUBIC: 2.0,
    Image.Resampling.LANCZOS: 3.0,
}

#: Filters :func:`resize_crop` reproduces (their weights use only +, -, * and /, so every IEEE double
#: implementation computes Pillow's).
COMPILED_FILTERS = (Image.Resampling.BOX, Image.Resampling.BILINEAR, Image.Resampling.BICUBIC)

#: Pillow's fixed-point weights: 32 bits less 8 for the value and 2 for the overshoot of filters with negative lobes.
PRECISION_BITS = 22

#: Input pixels the first pass reads at a time (an OSV-5M photo in one strip; a 12000x9000 one in about 100).
STRIP_PIXELS = 1 << 20

#: Pillow 13 runs the vertical pass first when the height shrinks by more than twice as many pixels as the width
#: (python-pillow/Pillow#9549); earlier releases always run the horizontal pass first.
_PILLOW_ORDERS_PASSES = int(Image.__version__.split(".")[0]) >= 13


def horizontal_first(width: int, height: int, out_width: int, out_height: int) -> bool:
    """Whether Pillow resizes ``width`` x ``height`` to ``out_width`` x ``out_height`` horizontal pass first.

    Source: libImaging/Resample.c ``ImagingResampleInner``. The passes round to 8 bits in between, so a resize
    split into two single-axis passes equals Pillow's own only in Pillow's order.
    """
    if not _PILLOW_ORDERS_PASSES:
        return True
    shrink = height - out_height
    return not (shrink > 0 and shrink > (width - out_width) * 2)


def source_span(in_size: int, out_size: int, first: int, last: int, support: float) -> tuple[int, int]:
    """Input pixels ``[lo, hi)`` that Pillow's filter reads for output pixels ``first..last-1`` of a resize of a
    whole axis from ``in_size`` to ``out_size`` (libImaging/Resample.c ``precompute_coeffs``: output pixel x reads
    ``int(centre -/+ support + 0.5)`` around ``centre = (x + 0.5) * in_size / out_size``, the support widened by
    the scale when shrinking, clipped to the axis), widened by one pixel on each side so that a rounding in the
    last bit of the centre cannot leave a pixel out."""
    scale = in_size / out_size
    reach = support * max(scale, 1.0)
    lo = int((first + 0.5) * scale - reach + 0.5) - 1
    hi = int((last - 0.5) * scale + reach + 0.5) + 1
    return max(lo, 0), min(hi, in_size)


# --------------------------------------------------------------------------- weights


def _box(x: np.ndarray) -> np.ndarray:
    return np.where((x > -0.5) & (x <= 0.5), 1.0, 0.0)


def _bilinear(x: np.ndarray) -> np.ndarray:
    x = np.abs(x)
    return np.where(x < 1.0, 1.0 - x, 0.0)


def _bicubic(x: np.ndarray) -> np.ndarray:
    a = -0.5
    x = np.abs(x)
    near = ((a + 2.0) * x - (a + 3.0)) * x * x + 1
    far = (((x - 5) * x + 8) * x - 4) * a
    return np.where(x < 1.0, near, np.where(x < 2.0, far, 0.0))


_FILTERS = {Image.Resampling.BOX: _box, Image.Resampling.BILINEAR: _bilinear, Image.Resampling.BICUBIC: _bicubic}


@functools.lru_cache(maxsize=256)
def axis_coefficients(in_size: int, out_size: int, resample: int) -> tuple[np.ndarray, np.ndarray]:
    """Pillow's weights for resizing a whole axis of ``in_size`` pixels to ``out_size``.

    Returns ``bounds`` ``int32[out_size, 2]`` (first input pixel, number of input pixels read) and ``weights``
    ``int32[out_size, ksize]`` (fixed point, ``2**PRECISION_BITS`` is 1; zero past the count). Replays
    ``precompute_coeffs`` and ``normalize_coeffs_8bpc`` of libImaging/Resample.c with the same double operations
    in the same order (numpy's elementwise float64 arithmetic is IEEE, as C's is; the running sum of the weights
    is taken tap by tap, as Pillow's loop does). Cached: a dataset's photos share a few sizes. Raises KeyError for
    a filter outside :data:`COMPILED_FILTERS`.
    """
    filter_fn = _FILTERS[Image.Resampling(resample)]
    scale = float(in_size) / out_size
    filterscale = max(scale, 1.0)
    support = FILTER_SUPPORT[Image.Resampling(resample)] * filterscale
    ksize = int(math.ceil(support)) * 2 + 1
    center = (np.arange(out_size, dtype=np.float64) + 0.5) * scale
    xmin = np.maximum(np.trunc(center - support + 0.5).astype(np.int64), 0)
    count = np.minimum(np.trunc(center + support + 0.5).astype(np.int64), in_size) - xmin
    taps = np.arange(ksize)
    inside = taps[None, :] < count[:, None]
    raw = np.where(inside, filter_fn(((taps[None, :] + xmin[:, None]).astype(np.float64) - center[:, None] + 0.5)
                                     * (1.0 / filterscale)), 0.0)
    total = np.zeros(out_size, dtype=np.float64)
    for tap in range(ksize):
        total = total + raw[:, tap]
    normalised = np.where(total[:, None] != 0.0, raw / np.where(total == 0.0, 1.0, total)[:, None], raw)
    scaled = normalised * (1 << PRECISION_BITS)
    weights = np.trunc(np.where(normalised < 0, -0.5 + scaled, 0.5 + scaled)).astype(np.int32)
    bounds = np.stack([xmin, count], axis=1).astype(np.int32)
    weights = np.ascontiguousarray(weights)
    bounds.flags.writeable = weights.flags.writeable = False  # shared by every later call for these sizes
    return bounds, weights


# --------------------------------------------------------------------------- compiled passes


def resample_rows(source: np.ndarray, bounds: np.ndarray, weights: np.ndarray, first: int, last: int, shift: int,
                  out: np.ndarray) -> None:
    """Output rows ``first..last-1`` of a pass along axis 0 of ``source`` (``uint8[N, M]``) into ``out``
    (``uint8[last - first, M]``): Pillow's fixed-point sum, rounded down and clipped to 0..255 (libImaging
    ``clip8``). Output row o reads source rows ``bounds[o, 0] - shift`` onwards. Compiled by :func:`_kernels`."""
    width = source.shape[1]
    total = np.empty(width, np.int32)
    for o in range(first, last):
        total[:] = 1 << (PRECISION_BITS - 1)
        start = bounds[o, 0] - shift
        for tap in range(bounds[o, 1]):
            weight = weights[o, tap]
            row = source[start + tap]
            for m in range(width):
                total[m] += np.int32(row[m]) * weight
        target = out[o - first]
        for m in range(width):
            value = total[m] >> PRECISION_BITS
            target[m] = 0 if value < 0 else (255 if value > 255 else value)


def transpose_pixels(source: np.ndarray, out: np.ndarray) -> None:
    """``uint8[A, B, C]`` -> ``out`` ``uint8[B, A, C]``, in 64x64 blocks (RGB unrolled). Compiled by
    :func:`_kernels`."""
    rows, columns, channels = source.shape
    for a0 in range(0, rows, 64):
        a1 = min(a0 + 64, rows)
        for b0 in range(0, columns, 64):
            b1 = min(b0 + 64, columns)
            for b in range(b0, b1):
                for a in range(a0, a1):
                    if channels == 3:
                        out[b, a, 0] = source[a, b, 0]
                        out[b, a, 1] = source[a, b, 1]
                        out[b, a, 2] = source[a, b, 2]
                    else:
                        for c in range(channels):
                            out[b, a, c] = source[a, b, c]


_COMPILE_LOCK = threading.Lock()


def _kernels():
    """:func:`_compile` once per process (threads that ask at once wait for the first)."""
    with _COMPILE_LOCK:
        return _compile()


@functools.cache
def _compile():
    """:func:`resample_rows` and :func:`transpose_pixels` compiled, or None without numba. Compiled on first use
    and cached on disk by numba (beside this file, else in the user's cache folder); where neither is writable
    (numba raises RuntimeError "no locator available"), compiled in each process instead."""
    try:
        import numba
    except ImportError:
        log.info("numba is not installed: the exact resize runs Pillow's own passes (about 5x slower)")
        return None
    try:
        return numba.njit(cache=True, nogil=True)(resample_rows), numba.njit(cache=True, nogil=True)(transpose_pixels)
    except RuntimeError as error:
        log.info("numba cannot cache the compiled resize here (%s); compiling it in this process", error)
        return numba.njit(nogil=True)(resample_rows), numba.njit(nogil=True)(transpose_pixels)


def compiled_available() -> bool:
    """Whether :func:`resize_crop` can run here (numba importable)."""
    return _kernels() is not None


@dataclass(frozen=True)
class AxisPass:
    """One of Pillow's single-axis passes, restricted to the output pixels a centre crop keeps.

    ``axis``: 1 for the horizontal pass (along the width), 0 for the vertical one. Output pixels ``first..last-1``
    of the whole resized axis; output pixel o reads input pixels ``bounds[o, 0] - shift`` onwards (``shift``: the
    index, in the whole input axis, of the first input pixel the pass is given), ``bounds[o, 1]`` of them, times
    ``weights[o]`` (:func:`axis_coefficients`).
    """

    axis: int
    bounds: np.ndarray
    weights: np.ndarray
    first: int
    last: int
    shift: int


def resize_plan(width: int, height: int, geometry: CropGeometry, resample) -> tuple[tuple[int, int, int, int],
                                                                                    list[AxisPass]]:
    """How to compute ``image.resize((resized_width, resized_height), resample).crop(crop box)`` of a ``width`` x
    ``height`` image with only the work the crop needs: the input box ``(left, top, right, bottom)`` to read, and
    the passes to run on it in Pillow's order (:func:`horizontal_first`); none for an axis that keeps its size
    (Pillow skips that pass). The first pass computes the crop's columns (rows) over the input rows (columns)
    the second pass reads; the second computes the crop's rows (columns). Raises KeyError for a filter outside
    :data:`COMPILED_FILTERS`.
    """
    rw, rh = geometry.resized_width, geometry.resized_height
    left, top = geometry.left, geometry.top
    right, bottom = left + geometry.crop_width, top + geometry.crop_height
    resample = Image.Resampling(resample)
    need_x, need_y = rw != width, rh != height
    if not (need_x or need_y):
        return (left, top, right, bottom), []
    if need_x and (not need_y or horizontal_first(width, height, rw, rh)):
        horizontal = AxisPass(1, *axis_coefficients(width, rw, resample), left, right, 0)
        if not need_y:
            return (0, top, width, bottom), [horizontal]
        y_bounds, y_weights = axis_coefficients(height, rh, resample)
        lo, hi = _span(y_bounds, top, bottom)
        return (0, lo, width, hi), [horizontal, AxisPass(0, y_bounds, y_weights, top, bottom, lo)]
    vertical = AxisPass(0, *axis_coefficients(height, rh, resample), top, bottom, 0)
    if not need_x:
        return (left, 0, right, height), [vertical]
    x_bounds, x_weights = axis_coefficients(width, rw, resample)
    lo, hi = _span(x_bounds, left, right)
    return (lo, 0, hi, height), [vertical, AxisPass(1, x_bounds, x_weights, left, right, lo)]


def _span(bounds: np.ndarray, first: int, last: int) -> tuple[int, int]:
    """Input pixels ``[lo, hi)`` that output pixels ``first..last-1`` read."""
    part = bounds[first:last]
    return int(part[:, 0].min()), int((part[:, 0] + part[:, 1]).max())


def _pass(pixels: np.ndarray, step: AxisPass) -> np.ndarray:
    """``step`` along axis 0 of ``uint8[N, M, C]`` -> ``uint8[step.last - step.first, M, C]``."""
    compiled_rows, _ = _kernels()
    source = np.ascontiguousarray(pixels)
    out = np.empty((step.last - step.first, *source.shape[1:]), dtype=np.uint8)
    compiled_rows(source.reshape(source.shape[0], -1), step.bounds, step.weights, step.first, step.last, step.shift,
                  out.reshape(out.shape[0], -1))
    return out


def _transposed(pixels: np.ndarray) -> np.ndarray:
    """``uint8[A, B, C]`` -> a contiguous ``uint8[B, A, C]``."""
    _, compiled_transpose = _kernels()
    out = np.empty((pixels.shape[1], pixels.shape[0], pixels.shape[2]), dtype=np.uint8)
    compiled_transpose(np.ascontiguousarray(pixels), out)
    return out


def resize_crop(image: Image.Image, geometry: CropGeometry, resample) -> np.ndarray:
    """``np.asarray(image.resize((resized_width, resized_height), resample).crop(crop box))`` bit for bit.

    ``image``: an RGB or L PIL image; returns ``uint8[crop_height, crop_width, 3]`` (RGB) or
    ``uint8[crop_height, crop_width]`` (L), as ``np.asarray`` gives them, writable. Runs :func:`resize_plan` with
    the compiled loops; the horizontal pass runs on the transposed image (PIL's ``transpose``), so both passes sum
    contiguous rows. Raises RuntimeError without numba, ValueError for other modes (Pillow resizes those
    differently: premultiplied alpha, signed LAB channels, palettes by nearest neighbour, wider integer and float
    pixels) and KeyError for a filter outside :data:`COMPILED_FILTERS`; the crop box must lie inside the resized
    image (the processor pads otherwise).
    """
    if _kernels() is None:
        raise RuntimeError("the compiled resize needs numba (pip install numba)")
    if image.mode not in ("RGB", "L"):
        raise ValueError(f"the compiled resize takes RGB or L images, got mode {image.mode!r}; convert first")
    pixels = _resize_crop_bands(image, *resize_plan(*image.size, geometry, resample))
    return pixels[..., 0] if image.mode == "L" else pixels


def _resize_crop_bands(image: Image.Image, box: tuple[int, int, int, int], passes: list[AxisPass]) -> np.ndarray:
    """:func:`resize_crop`'s work, ``uint8[h, w, bands]``. The first pass treats each input row (horizontal pass)
    or column (vertical pass) on its own, so it reads the box in strips of about :data:`STRIP_PIXELS` pixels:
    a huge photo is never copied whole (PIL's transpose and ``np.asarray`` each copy what they are given)."""
    left, top, right, bottom = box
    if not passes:
        return np.array(image.crop(box)).reshape(bottom - top, right - left, -1)
    first, rest = passes[0], passes[1:]
    width, height = right - left, bottom - top
    parts = []
    if first.axis == 1:
        step = max(1, STRIP_PIXELS // width)
        for row in range(top, bottom, step):
            strip = image.crop((left, row, right, min(row + step, bottom))).transpose(Image.Transpose.TRANSPOSE)
            parts.append(_transposed(_pass(np.asarray(strip).reshape(width, strip.size[0], -1), first)))
        pixels = np.concatenate(parts, axis=0) if len(parts) > 1 else parts[0]
        return _pass(pixels, rest[0]) if rest else pixels
    step = max(1, STRIP_PIXELS // height)
    for column in range(left, right, step):
        strip = image.crop((column, top, min(column + step, right), bottom))
        parts.append(_pass(np.asarray(strip).reshape(height, strip.size[0], -1), first))
    pixels = np.concatenate(parts, axis=1) if len(parts) > 1 else parts[0]
    return _transposed(_pass(_transposed(pixels), rest[0])) if rest else pixels

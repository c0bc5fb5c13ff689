"""Pure geometry and array helpers shared by every figure (no matplotlib here).

The model never sees the whole photo: its processor resizes the SHORTEST edge to
``shortest_edge`` (bicubic) and then center-crops ``crop_size`` x ``crop_size``.
A CLS attention map therefore covers only that crop. `model_view_box` returns the crop
in ORIGINAL image pixel coordinates so figures can outline it and place the map on it
(the seed stretched the map over the whole frame, which misplaces attention on every
non-square photo; see DESIGN.md, CORRECTION on overlays).
"""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image
from scipy.ndimage import zoom

from attn_assets.path_text import text_to_path

Box = tuple[float, float, float, float]
ImageLike = Union[Image.Image, str, Path]

#: StreetCLIP's preprocessor (CLIP ViT-L/14-336): shortest edge 336, center crop 336.
DEFAULT_SHORTEST_EDGE = 336
DEFAULT_CROP_SIZE = 336
#: Longest side of a photo as displayed in a figure; bounds memory for huge photos.
DEFAULT_MAX_DISPLAY_SIDE = 1024


def resized_size(width: int, height: int, shortest_edge: int) -> tuple[int, int]:
    """(width, height) after the processor's shortest-edge resize.

    Same arithmetic as transformers' ``get_resize_output_image_size(default_to_square=False)``:
    the short side becomes ``shortest_edge``, the long side ``int(shortest_edge * long / short)``
    (truncated, not rounded).
    """
    if width <= 0 or height <= 0:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    if shortest_edge <= 0:
        raise ValueError(f"shortest_edge must be positive, got {shortest_edge}")
    short, long = (width, height) if width <= height else (height, width)
    new_short, new_long = shortest_edge, int(shortest_edge * long / short)
    return (new_short, new_long) if width <= height else (new_long, new_short)


def model_view_box(
    width: int,
    height: int,
    shortest_edge: int = DEFAULT_SHORTEST_EDGE,
    crop_size: int | tuple[int, int] = DEFAULT_CROP_SIZE,
) -> Box:
    """The region of the ORIGINAL image the model sees, as (left, top, right, bottom) floats.

    Resize the shortest edge to ``shortest_edge``, then center-crop ``crop_size`` (an int, or
    (crop_height, crop_width)) with transformers' integer offsets ``(new - crop) // 2``; the
    crop's edges are mapped back through the resize scale of each axis. If the crop is larger
    than the resized image (the processor pads), the box extends past the image edges.

    >>> tuple(round(v, 1) for v in model_view_box(792, 512, 336, 336))
    (138.9, 0.0, 651.6, 512.0)
    """
    crop_h, crop_w = (crop_size, crop_size) if isinstance(crop_size, (int, np.integer)) else crop_size
    new_w, new_h = resized_size(int(width), int(height), int(shortest_edge))
    left = (new_w - crop_w) // 2
    top = (new_h - crop_h) // 2
    sx, sy = width / new_w, height / new_h
    return (left * sx, top * sy, (left + crop_w) * sx, (top + crop_h) * sy)


def check_box(box: Box) -> Box:
    """Validate a (left, top, right, bottom) box and return it as floats."""
    if box is None or len(box) != 4:
        raise ValueError(f"crop box must be (left, top, right, bottom), got {box!r}")
    left, top, right, bottom = (float(v) for v in box)
    if not all(math.isfinite(v) for v in (left, top, right, bottom)) or right <= left or bottom <= top:
        raise ValueError(f"crop box must be finite with right > left and bottom > top, got {box!r}")
    return (left, top, right, bottom)


def as_grid(attn_map: np.ndarray) -> np.ndarray:
    """A CLS map as a 2-D float64 array; a flat map of square length is reshaped."""
    arr = np.asarray(attn_map, dtype=np.float64)
    if arr.ndim == 1:
        side = math.isqrt(arr.size)
        if side * side != arr.size or side == 0:
            raise ValueError(f"a flat attention map needs a square length, got {arr.size}")
        arr = arr.reshape(side, side)
    if arr.ndim != 2 or arr.size == 0:
        raise ValueError(f"attention map must be 2-D [grid_h, grid_w], got shape {arr.shape}")
    return arr


def normalize_map(attn_map: np.ndarray) -> np.ndarray:
    """Min-max normalize to [0, 1] as the seed does; a uniform (or non-finite) map gives zeros."""
    arr = as_grid(attn_map)
    finite = np.isfinite(arr)
    if not finite.any():
        return np.zeros_like(arr)
    arr = np.where(finite, arr, np.nan)
    lo, hi = float(np.nanmin(arr)), float(np.nanmax(arr))
    span = hi - lo
    if not span > 0 or not math.isfinite(span):
        return np.zeros_like(arr)
    out = (arr - lo) / span
    return np.nan_to_num(out, nan=0.0)


def upsample_map(attn_map: np.ndarray, height: int, width: int) -> np.ndarray:
    """Normalized map resized to (height, width) with ``scipy.ndimage.zoom(order=1)`` (seed method)."""
    norm = normalize_map(attn_map)
    gh, gw = norm.shape
    height, width = max(int(height), 1), max(int(width), 1)
    out = zoom(norm, (height / gh, width / gw), order=1)
    return np.clip(out, 0.0, 1.0)


def image_file(path: object) -> str | None:
    """The path to open for an image path as the warehouse stores it (escaped text, core.path_text: non-UTF-8
    bytes as ``\\xNN``), or None when the value is missing (None, NaN, <NA>) or no file is there."""
    if not isinstance(path, (str, os.PathLike)):
        return None
    opened = text_to_path(os.fspath(path))
    return opened if os.path.isfile(opened) else None


def load_display_image(
    image: ImageLike, max_side: int = DEFAULT_MAX_DISPLAY_SIDE
) -> tuple[Image.Image, tuple[int, int]]:
    """Open ``image`` for display: RGB, longest side <= ``max_side``; also its ORIGINAL (w, h).

    Huge JPEGs are decoded with PIL's draft mode (a reduced-scale decode), so a
    12000x9000 photo never expands to full size in memory. Display only: the model's
    own preprocessing must not use draft mode (it changes pixels).
    Raises ``OSError`` (incl. ``FileNotFoundError``) for missing or unreadable files.
    """
    if isinstance(image, Image.Image):
        orig = image.size
        img = image
        if max(img.size) > max_side:
            img = img.copy()
            img.thumbnail((max_side, max_side), Image.Resampling.BILINEAR, reducing_gap=2.0)
        img = img.convert("RGB") if img.mode != "RGB" else img
        return img, orig
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        with Image.open(text_to_path(os.fspath(image))) as im:
            orig = im.size
            if max(orig) > max_side:
                scale = max_side / max(orig)
                im.draft("RGB", (max(1, math.ceil(orig[0] * scale)), max(1, math.ceil(orig[1] * scale))))
            img = im.convert("RGB")
            img.load()
    if max(img.size) > max_side:
        img.thumbnail((max_side, max_side), Image.Resampling.BILINEAR, reducing_gap=2.0)
    return img, orig


def display_box(box: Box, orig_size: tuple[int, int], display_size: tuple[int, int]) -> Box:
    """Map a box from original pixel coordinates to the displayed (downscaled) image."""
    sx = display_size[0] / orig_size[0]
    sy = display_size[1] / orig_size[1]
    left, top, right, bottom = box
    return (left * sx, top * sy, right * sx, bottom * sy)


def crop_region(img: Image.Image, box: Box) -> Image.Image:
    """The pixels of ``img`` inside ``box`` (display coords), rounded to whole pixels, >= 1x1.

    Parts of the box outside the image (processor padding) come back black, as the model saw them.
    """
    left, top, right, bottom = box
    l, t = int(round(left)), int(round(top))
    r, b = max(int(round(right)), l + 1), max(int(round(bottom)), t + 1)
    return img.crop((l, t, r, b))


def resolve_box(
    crop_box: Box | None,
    orig_size: tuple[int, int],
    shortest_edge: int = DEFAULT_SHORTEST_EDGE,
    crop_size: int | tuple[int, int] = DEFAULT_CROP_SIZE,
) -> Box:
    """``crop_box`` if given (validated), else the processor's crop computed from the image size."""
    if crop_box is None:
        return model_view_box(orig_size[0], orig_size[1], shortest_edge, crop_size)
    return check_box(crop_box)

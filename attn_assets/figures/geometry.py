"""Pure geometry and array helpers shared by every figure (no matplotlib here).

A CLS attention map covers only the model's view of the photo: the processor's resize and centre crop
(attn_assets.crop_geometry). The shard files store that box per image (``crop_left/top/right/bottom``, read by
attn_assets.storage.parquet.read_maps_and_boxes), and figures place the map on the box they are given, never
stretched over the whole frame (that misplaces attention on every non-square photo).
"""

from __future__ import annotations

import io
import math
import os
import warnings
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image
from scipy.ndimage import zoom

from attn_assets.crop_geometry import Box, model_view_box
from attn_assets.path_text import text_to_path
from attn_assets.zip_members import read_member

ImageLike = Union[Image.Image, str, Path]

#: Longest side of a photo as displayed in a figure; bounds memory for huge photos.
DEFAULT_MAX_DISPLAY_SIDE = 1024


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


def image_file(path: object, member: object = None) -> str | Image.Image | None:
    """The path to open for an image path as the warehouse stores it (escaped text, core.path_text: non-UTF-8
    bytes as ``\\xNN``), or None when the value is missing (None, NaN, <NA>) or no file is there.

    With ``member`` (``images.member``: the image's name inside the zip archive at ``path``), the image decoded
    from that member, or None when the archive or member cannot be read (the passes record why as a failure).
    """
    if not isinstance(path, (str, os.PathLike)):
        return None
    if isinstance(member, str):
        return _archive_member_image(os.fspath(path), member)
    opened = text_to_path(os.fspath(path))
    return opened if os.path.isfile(opened) else None


def _archive_member_image(archive: str, member: str) -> Image.Image | None:
    """The decoded member, read through the shared cache of open archives (attn_assets.zip_members), or None."""
    try:
        data = read_member(archive, member)
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            return image.copy()
    except (OSError, EOFError, Image.DecompressionBombError):  # MemberError is an OSError
        return None


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


def resolve_box(crop_box: Box | None, orig_size: tuple[int, int]) -> Box:
    """``crop_box`` (the model's view in original pixels, as the shard file stores it), validated.

    None, for a photo drawn outside the pipeline: the centred square of the photo's short side
    (`attn_assets.crop_geometry.model_view_box` with no resize rule), which is the view of every processor whose
    centre crop equals its shortest-edge resize (CLIP, StreetCLIP) at any resolution. For any other processor
    pass the box its `Preprocessor.crop_geometry` gives.
    """
    if crop_box is None:
        return model_view_box(orig_size[0], orig_size[1])
    return check_box(crop_box)

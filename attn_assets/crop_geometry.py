"""Where the model's input lies in the original photo: the geometry of the processor's resize and crop.

The model never sees the whole photo. Its image processor resizes it (the shortest edge to
``size.shortest_edge``, or the whole image to ``size.height`` x ``size.width`` as SigLIP-style processors do)
and then, if ``do_center_crop`` is set, cuts the centre ``crop_size`` out of the resized image. A CLS attention
map therefore covers only that crop; figures place the map on `CropGeometry.box_in_original`, never stretched
over the whole frame (stretching misplaces attention on every non-square photo).

The settings come from the model's processor (`attn_assets.core.preprocess.Preprocessor.crop_geometry`), and
the box is stored per image in the shard files (``crop_left/top/right/bottom``), so figures read it from there.
Pure arithmetic: no torch, no PIL, so figure code can import it without loading the model stack.
"""

from __future__ import annotations

from dataclasses import dataclass
from numbers import Integral

Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class CropGeometry:
    """How an original image maps onto the model input: resize by ``scale``, then crop.

    ``left``/``top`` are the crop's offset in the RESIZED image; they are negative when the
    resized image is smaller than the crop (the processor pads).
    """

    scale_x: float
    scale_y: float
    resized_width: int
    resized_height: int
    left: int
    top: int
    crop_width: int
    crop_height: int

    @property
    def scale(self) -> float:
        return (self.scale_x + self.scale_y) / 2

    def box_in_original(self) -> Box:
        """(left, top, right, bottom) of the model's view in ORIGINAL image pixels.

        Overlays must place the attention grid on this box, not stretch it over the photo.
        """
        return (
            self.left / self.scale_x,
            self.top / self.scale_y,
            (self.left + self.crop_width) / self.scale_x,
            (self.top + self.crop_height) / self.scale_y,
        )


def size_entry(size, key: str):
    """``size[key]`` of a processor size (a dict or transformers' SizeDict), None when absent."""
    if size is None:
        return None
    if isinstance(size, dict):
        return size.get(key)
    return getattr(size, key, None)


def resized_shape(width: int, height: int, size) -> tuple[int, int] | None:
    """(width, height) after the processor's resize, or None for a size rule this module does not mirror.

    ``size`` is the processor's ``size`` (a dict or transformers' SizeDict), or a whole number meaning
    ``{"shortest_edge": n}``. A shortest-edge resize uses transformers' arithmetic
    (``get_resize_output_image_size(default_to_square=False)``): the short side becomes ``shortest_edge``, the
    long side ``int(shortest_edge * long / short)`` (truncated, not rounded). ``height`` and ``width`` give a
    fixed size whatever the photo's aspect ratio.
    """
    if width <= 0 or height <= 0:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    if isinstance(size, Integral) and not isinstance(size, bool):
        if size <= 0:
            raise ValueError(f"shortest_edge must be positive, got {size}")
        size = {"shortest_edge": size}
    shortest = size_entry(size, "shortest_edge")
    if shortest and not size_entry(size, "longest_edge"):
        short, long = (width, height) if width <= height else (height, width)
        new_short, new_long = int(shortest), int(int(shortest) * long / short)
        return (new_short, new_long) if width <= height else (new_long, new_short)
    h, w = size_entry(size, "height"), size_entry(size, "width")
    if h and w and not shortest:
        return int(w), int(h)
    return None


def crop_geometry(width: int, height: int, size, crop_size=None) -> CropGeometry:
    """The resize-and-crop geometry for an original ``width`` x ``height`` image.

    ``size``: the processor's resize rule (see `resized_shape`; None: no resize). ``crop_size``: the centre
    crop, a mapping with ``height`` and ``width``, a (height, width) pair or a whole number for a square
    (None: no crop, the model sees the whole resized image, as SigLIP-style processors do). Crop offsets are
    transformers' integer ``(resized - crop) // 2``. Raises ValueError for a size rule it does not mirror.
    """
    shape = (int(width), int(height)) if size is None else resized_shape(int(width), int(height), size)
    if shape is None:
        raise ValueError(f"unsupported processor size rule {size!r}")
    resized_w, resized_h = shape
    crop_w, crop_h = resized_w, resized_h
    if crop_size is not None:
        if isinstance(crop_size, Integral):
            crop_h = crop_w = crop_size
        elif isinstance(crop_size, (tuple, list)):
            crop_h, crop_w = crop_size
        else:
            crop_h, crop_w = size_entry(crop_size, "height"), size_entry(crop_size, "width")
        crop_h, crop_w = int(crop_h), int(crop_w)
    left, top = (resized_w - crop_w) // 2, (resized_h - crop_h) // 2
    return CropGeometry(resized_w / width, resized_h / height, resized_w, resized_h, left, top, crop_w, crop_h)


def model_view_box(
    width: int, height: int, shortest_edge: int | None = None, crop_size: int | tuple[int, int] | None = None
) -> Box:
    """The model's view of a ``width`` x ``height`` photo under a shortest-edge resize and a centre crop.

    ``shortest_edge`` None keeps the photo's size; ``crop_size`` (a square side or (height, width)) None crops
    the square of the resized short side, as CLIP-style processors do (crop size = resize size). So with
    neither given the box is the centred square of the photo's short side, the same at every resolution.

    >>> tuple(round(v, 1) for v in model_view_box(792, 512, 336, 336))
    (138.9, 0.0, 651.6, 512.0)
    """
    edge = int(shortest_edge) if shortest_edge is not None else min(int(width), int(height))
    return crop_geometry(width, height, edge, edge if crop_size is None else crop_size).box_in_original()

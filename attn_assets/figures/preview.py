"""Small inline previews of PNGs for Dagster UI metadata (markdown with a base64 data URI)."""

from __future__ import annotations

import base64
import io
import os
from pathlib import Path

from PIL import Image

DEFAULT_MAX_BYTES = 200_000


def png_preview_markdown(
    path: str | os.PathLike,
    max_width: int = 600,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    alt: str | None = None,
) -> str:
    """``![alt](data:image/...;base64,...)`` of a thumbnail of ``path`` at most ``max_width`` wide.

    PNG first; if the encoded thumbnail is over ``max_bytes`` it falls back to JPEG and then to
    smaller widths, so the metadata entry stays small. The data URI is at most ~4/3 x max_bytes.
    """
    path = Path(path)
    alt = path.name if alt is None else alt
    with Image.open(path) as im:
        im.load()
        img = im.convert("RGBA") if im.mode in ("P", "LA") else im.copy()
    if img.mode == "RGBA":
        bg = Image.new("RGB", img.size, "white")
        bg.paste(img, mask=img.getchannel("A"))
        img = bg
    elif img.mode != "RGB":
        img = img.convert("RGB")
    width = max(16, int(max_width))
    while True:
        thumb = img.copy()
        thumb.thumbnail((width, 10 * width), Image.Resampling.LANCZOS)
        for fmt, kwargs in (("PNG", {"optimize": True}), ("JPEG", {"quality": 80, "optimize": True}),
                            ("JPEG", {"quality": 60, "optimize": True})):
            buf = io.BytesIO()
            thumb.save(buf, format=fmt, **kwargs)
            data = buf.getvalue()
            if len(data) <= max_bytes:
                mime = "image/png" if fmt == "PNG" else "image/jpeg"
                return f"![{alt}](data:{mime};base64,{base64.b64encode(data).decode('ascii')})"
        if width <= 64:
            return f"![{alt}](data:image/jpeg;base64,{base64.b64encode(data).decode('ascii')})"
        width = max(64, int(width * 0.7))

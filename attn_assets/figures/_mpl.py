"""Matplotlib without pyplot: every figure is a bare `Figure` on an Agg canvas.

No global backend switch, no pyplot figure manager, so nothing keeps a reference to a
figure after it is saved; `new_figure` clears it on exit so memory stays flat over
thousands of renders.
"""

from __future__ import annotations

import os
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from attn_assets.storage.atomic import atomic_file

DEFAULT_DPI = 100


@contextmanager
def new_figure(figsize: tuple[float, float], dpi: int = DEFAULT_DPI, **kwargs) -> Iterator[Figure]:
    fig = Figure(figsize=figsize, dpi=dpi, **kwargs)
    FigureCanvasAgg(fig)
    try:
        with warnings.catch_warnings():
            # ids / country names in titles may use scripts the default font lacks: drawn as boxes
            warnings.filterwarnings("ignore", message=r"Glyph \d+ .*missing from font", category=UserWarning)
            yield fig
    finally:
        fig.clear()
        del fig


def save_figure(fig: Figure, out_path: str | os.PathLike, dpi: int | None = None, **kwargs) -> Path:
    """Save atomically (temp file in the same folder, then os.replace); format from the suffix."""
    out_path = Path(out_path)
    fmt = out_path.suffix.lstrip(".").lower() or "png"
    with atomic_file(out_path) as tmp:
        fig.savefig(tmp, format=fmt, dpi=dpi if dpi is not None else fig.dpi, **kwargs)
    return out_path

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
#: Height of the strip `add_footer` adds below a figure, in inches (one line of 8 pt text and its margins).
FOOTER_INCHES = 0.28


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


def figure_footer(model_spec: str | None, images: int | None, detail: str | None = None) -> str:
    """The footer line every figure carries: 'model: SPEC · N images' (+ ' · detail').

    model_spec: the spec(s) the drawn rows were computed with (None: 'model: unknown'); images: how many
    images the figure summarises (None: left out).
    """
    parts = [f"model: {model_spec or 'unknown'}"]
    if images is not None:
        parts.append(f"{int(images):,} image{'' if int(images) == 1 else 's'}")
    if detail:
        parts.append(detail)
    return " · ".join(parts)


def add_footer(fig: Figure, text: str, inches: float = FOOTER_INCHES) -> None:
    """Grow ``fig`` by a strip of ``inches`` at the bottom and write ``text`` there.

    Call after the layout is done: every axes and figure-level text keeps its size and its distance
    from the top, so the footer never overlaps a tick label or an axis label.
    """
    width, height = fig.get_size_inches()
    total = height + inches
    for ax in fig.axes:
        if ax.get_axes_locator() is not None:  # inset axes follow their parent
            continue
        pos = ax.get_position()
        ax.set_position((pos.x0, (pos.y0 * height + inches) / total, pos.width, pos.height * height / total))
    for placed in fig.texts:  # suptitle and fig.text, placed in figure fractions
        x, y = placed.get_position()
        placed.set_position((x, (y * height + inches) / total))
    fig.set_size_inches(width, total)
    fig.text(0.005, 0.35 * inches / total, text, ha="left", va="center", fontsize=8, color="0.3")


def save_figure(fig: Figure, out_path: str | os.PathLike, dpi: int | None = None, *, footer: str | None = None,
                **kwargs) -> Path:
    """Save atomically (temp file in the same folder, then os.replace); format from the suffix.

    footer: a line written in a strip added below the figure (`add_footer`), e.g. `figure_footer`'s.
    """
    if footer:
        add_footer(fig, footer)
    out_path = Path(out_path)
    fmt = out_path.suffix.lstrip(".").lower() or "png"
    with atomic_file(out_path) as tmp:
        fig.savefig(tmp, format=fmt, dpi=dpi if dpi is not None else fig.dpi, **kwargs)
    return out_path

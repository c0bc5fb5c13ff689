"""The seed's "Overall Statistics" table: as a DataFrame, as markdown, and as a PNG."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pandas as pd

from ._mpl import new_figure, save_figure

#: (column, display name) in the seed's order, then the two extra metrics.
SUMMARY_ROWS = [
    ("attention_entropy", "Attention Entropy"),
    ("attention_concentration_top10", "Top-10% Concentration"),
    ("num_high_attention_patches", "High Attention Patches"),
    ("attention_spread", "Attention Spread (Std Dev)"),
    ("attention_concentration_top25", "Top-25% Concentration"),
    ("attention_max", "Max Attention"),
]
COLUMNS = ["Mean", "Std", "Min", "Max"]


def overall_statistics_table(df: pd.DataFrame | dict) -> pd.DataFrame:
    """Mean / Std (ddof=1) / Min / Max per metric, indexed by display name; fractions stay fractions.

    Metrics missing from ``df`` are left out. ``table.attrs`` holds ``n`` (images with a finite
    entropy, or the largest count) and ``columns`` (display name -> source column).
    """
    rows, index, source, ns = [], [], {}, []
    for col, name in SUMMARY_ROWS:
        if col not in df:
            continue
        v = pd.to_numeric(pd.Series(np.asarray(df[col]).ravel()), errors="coerce").to_numpy(dtype=float)
        v = v[np.isfinite(v)]
        ns.append(v.size)
        rows.append([
            float(v.mean()) if v.size else math.nan,
            float(v.std(ddof=1)) if v.size > 1 else (0.0 if v.size == 1 else math.nan),
            float(v.min()) if v.size else math.nan,
            float(v.max()) if v.size else math.nan,
        ])
        index.append(name)
        source[name] = col
    table = pd.DataFrame(rows, index=pd.Index(index, name="Metric"), columns=COLUMNS)
    table.attrs["n"] = int(max(ns, default=0))
    table.attrs["columns"] = source
    return table


def _format_cell(column: str, value: float, stat: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if "concentration" in column:
        return f"{value:.1%}"
    if column == "num_high_attention_patches":
        return f"{value:.0f}" if stat in ("Min", "Max") else f"{value:.1f}"
    if column == "attention_entropy":
        return f"{value:.2f}" if stat != "Std" else f"{value:.3f}"
    return np.format_float_positional(float(value), precision=3, unique=True, fractional=False, trim="-")


def formatted_cells(table: pd.DataFrame) -> list[list[str]]:
    """The table's values as display strings (concentrations as percentages, like the seed)."""
    source = table.attrs.get("columns", {})
    inv = {name: col for col, name in SUMMARY_ROWS}
    out = []
    for name, row in table.iterrows():
        col = source.get(name, inv.get(name, str(name)))
        out.append([_format_cell(col, row[s], s) for s in table.columns])
    return out


def overall_statistics_markdown(table: pd.DataFrame, title: str | None = None) -> str:
    """The seed's "Overall Statistics (N images)" markdown table."""
    n = table.attrs.get("n")
    if title is None:
        title = f"### Overall Statistics ({n:,} images)" if n is not None else "### Overall Statistics"
    cells = formatted_cells(table)
    names = [str(i) for i in table.index]
    w0 = max([len("Metric"), *map(len, names)])
    widths = [max([len(c), *(len(r[j]) for r in cells)]) for j, c in enumerate(table.columns)]
    lines = [title, ""] if title else []
    lines.append("| " + "Metric".ljust(w0) + " | " + " | ".join(c.ljust(w) for c, w in zip(table.columns, widths)) + " |")
    lines.append("|" + "-" * (w0 + 2) + "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for name, r in zip(names, cells):
        lines.append("| " + name.ljust(w0) + " | " + " | ".join(v.ljust(w) for v, w in zip(r, widths)) + " |")
    return "\n".join(lines) + "\n"


def render_table_png(table: pd.DataFrame, out_path: str | os.PathLike, *, title: str | None = None,
                     dpi: int = 150, footer: str | None = None) -> Path:
    """The overall statistics table drawn as a PNG (same formatting as the markdown)."""
    cells = formatted_cells(table)
    n = table.attrs.get("n")
    title = title or (f"Overall Statistics ({n:,} images)" if n is not None else "Overall Statistics")
    nrows = max(len(cells), 1)
    with new_figure((8, 0.32 * (nrows + 1) + 0.5), dpi=dpi) as fig:
        ax = fig.add_subplot(1, 1, 1)
        ax.axis("off")
        tbl = ax.table(
            cellText=cells or [["n/a"] * len(table.columns)],
            rowLabels=[str(i) for i in table.index] or ["(no data)"],
            colLabels=list(table.columns),
            cellLoc="center",
            bbox=(0.3, 0.0, 0.7, 1.0),
        )
        tbl.auto_set_font_size(False)
        tbl.set_fontsize(10)
        for (r, c), cell in tbl.get_celld().items():
            if r == 0 or c == -1:
                cell.set_text_props(weight="bold")
                cell.set_facecolor("#e8e8e8")
        ax.set_title(title, fontsize=12, pad=8)
        fig.tight_layout()
        return save_figure(fig, out_path, dpi=dpi, bbox_inches="tight", footer=footer)

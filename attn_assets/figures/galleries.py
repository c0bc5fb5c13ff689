"""Galleries: one triptych per image for a top-k selection, plus ``index.csv``, written atomically.

The seed's folders are ``visualizations/{high,low}_{concentration,entropy}/``; `GALLERIES` names
them and `top_k` makes a deterministic selection (ties broken by image_id).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Mapping

import numpy as np
import pandas as pd

from attn_assets.metric_names import METRIC_NAMES
from attn_assets.storage.atomic import atomic_directory, atomic_file
from .geometry import Box, image_file
from .countries import country_caption
from .triptych import render_triptych

logger = logging.getLogger(__name__)

#: The seed's metric columns, in the order index.csv lists them.
#: Seed gallery folder -> (metric, highest first?).
GALLERIES: dict[str, tuple[str, bool]] = {
    "high_concentration": ("attention_concentration_top10", True),
    "low_concentration": ("attention_concentration_top10", False),
    "high_entropy": ("attention_entropy", True),
    "low_entropy": ("attention_entropy", False),
}

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_image_id(image_id: object, max_len: int = 80) -> str:
    """A file-name-safe form of an image id.

    Ids already made of ``[A-Za-z0-9._-]`` (not starting with a dot) are kept as they are;
    others are transliterated to ASCII, unsafe runs replaced by ``_`` and a short hash of the
    original id appended, so distinct ids never collide (``a/b`` vs ``a_b``).
    """
    text = str(image_id)
    if text and len(text) <= max_len and not _UNSAFE.search(text) and not text.startswith("."):
        return text
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    base = _UNSAFE.sub("_", ascii_text).strip("._-")[: max_len - 9] or "image"
    digest = hashlib.sha1(text.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return f"{base}_{digest}"


def top_k(df: pd.DataFrame, metric: str, k: int, highest: bool = True) -> pd.DataFrame:
    """The k rows with the highest (or lowest) ``metric``; NaN excluded; ties by image_id."""
    d = df[np.isfinite(pd.to_numeric(df[metric], errors="coerce").to_numpy(dtype=float))]
    d = d.sort_values([metric, "image_id"], ascending=[not highest, True], kind="mergesort")
    return d.head(k).reset_index(drop=True)


@dataclass
class GalleryResult:
    """What `render_gallery` wrote. Iterates / indexes / len() like the list of written paths."""

    directory: Path
    paths: list[Path] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    index_path: Path | None = None

    def __iter__(self) -> Iterator[Path]:
        return iter(self.paths)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i):
        return self.paths[i]


def _lookup(mapping, key):
    if mapping is None:
        return None
    try:
        return mapping.get(key)
    except AttributeError:
        return mapping[key]


def render_gallery(
    rows_df: pd.DataFrame,
    maps: Mapping[str, np.ndarray],
    crop_boxes: Mapping[str, Box | None] | None,
    out_dir: str | os.PathLike,
    metric: str | None = None,
    *,
    image_column: str = "abs_path",
    dpi: int = 100,
    caption_column: str | None = None,
    index_columns: tuple[str, ...] = (),
    footer: str | None = None,
) -> GalleryResult:
    """One triptych per row (rows already ordered, rank = position + 1) into ``out_dir``.

    ``caption_column``: a row column appended to each triptych's title (e.g. true vs predicted
    location); ``index_columns``: further row columns written to index.csv.

    Files are ``{rank:02d}_{safe_image_id}.png`` plus ``index.csv`` (rank, image_id, country,
    country_name, file, status and every metric column present). Rows whose image file is gone
    or unreadable, or whose map is missing, are skipped with a logged warning (status in
    index.csv says why) instead of failing the gallery. The folder is replaced atomically: a
    reader sees the previous gallery or the new one, never half of one. ``crop_boxes`` maps
    image_id -> the model's view in original pixels, as the shard files store it (None or absent: the
    centred square of the short side, see `geometry.resolve_box`). ``footer``: the line under every triptych
    (`_mpl.figure_footer`: the model spec and the images the selection was made from).
    """
    out_dir = Path(out_dir)
    result = GalleryResult(directory=out_dir)
    records = []
    written: list[tuple[Path, str]] = []
    with atomic_directory(out_dir) as tmp:
        for rank, row in enumerate(rows_df.to_dict("records"), start=1):
            image_id = str(row["image_id"])
            fname = f"{rank:02d}_{safe_image_id(image_id)}.png"
            status = "ok"
            attn = _lookup(maps, image_id)
            path = row.get(image_column)
            if attn is None:
                status = "missing_map"
            elif (path := image_file(path, row.get("member"))) is None:  # stored text -> the file to open (non-UTF-8 names too)
                status = "missing_image"
            else:
                title = _title(row, rank, metric)
                if caption_column and row.get(caption_column):
                    title = f"{title}\n{row[caption_column]}"
                try:
                    render_triptych(path, attn, _lookup(crop_boxes, image_id), title, tmp / fname, dpi=dpi,
                                    footer=footer)
                except (OSError, ValueError) as exc:  # unreadable / truncated image, bad map
                    status = f"error: {type(exc).__name__}: {exc}"[:200]
            if status != "ok":
                logger.warning("gallery %s: skipping image %r (rank %d): %s", out_dir.name, image_id, rank, status)
                result.skipped.append(image_id)
                fname_out = ""
            else:
                written.append((out_dir / fname, image_id))
                fname_out = fname
            rec = {"rank": rank, "image_id": image_id, "country": row.get("country"),
                   "country_name": row.get("country_name"), "file": fname_out, "status": status}
            for col in METRIC_NAMES:
                if col in row:
                    rec[col] = row[col]
            if metric and metric not in rec and metric in row:
                rec[metric] = row[metric]
            for col in index_columns:
                if col in row and col not in rec:
                    rec[col] = row[col]
            records.append(rec)
        cols = ["rank", "image_id", "country", "country_name", "file", "status"]
        index = pd.DataFrame.from_records(records, columns=cols + [c for c in (records[0] if records else {}) if c not in cols])
        with atomic_file(tmp / "index.csv") as t:
            index.to_csv(t, index=False)
    result.paths = [p for p, _ in written]
    result.index_path = out_dir / "index.csv"
    logger.info("gallery %s: %d written, %d skipped", out_dir, len(result.paths), len(result.skipped))
    return result


def _title(row: dict, rank: int, metric: str | None) -> str:
    country = country_caption(row.get("country_name"), row.get("country"))
    parts = [f"#{rank} {row['image_id']} ({country})"]
    if metric and metric in row:
        parts.append(f"{metric} = {format_metric(metric, row[metric])}")
    return "  |  ".join(parts)


def format_metric(metric: str, value) -> str:
    """A metric value as captions show it: concentrations as percentages, counts whole, distances in km."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        return str(value)
    if "concentration" in metric:
        return f"{v:.1%}"
    if metric == "num_high_attention_patches":
        return f"{v:.0f}"
    if metric.endswith("_km"):
        return f"{v:,.0f} km"
    return f"{v:.4g}"

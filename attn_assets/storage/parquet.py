"""Per-shard Parquet files: written whole or not at all.

A shard file is the unit of work of the `attention_statistics` asset. It is written to a
temporary name in the same folder and renamed over the target, so a run killed mid-shard
leaves the previous version (or nothing), never half a file.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator, Sequence
from datetime import datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from attn_assets.storage.schema import METRIC_COLUMNS, SHARD_RESULTS

TMP_MARKER = ".tmp-"


@contextlib.contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temporary sibling of `target`; on success rename it over `target`."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}{TMP_MARKER}{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        yield tmp
        if tmp.exists():
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
            os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_table_atomic(table: pa.Table, target: Path) -> Path:
    with atomic_path(target) as tmp:
        pq.write_table(table, tmp, compression="zstd")
    return Path(target)


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Delete temp files left by killed writers (never visible under a real name)."""
    removed = []
    if folder.is_dir():
        for entry in folder.iterdir():
            if entry.name.startswith(".") and TMP_MARKER in entry.name:
                entry.unlink(missing_ok=True)
                removed.append(entry)
    return removed


def build_shard_results(
    *,
    shard_key: str,
    image_ids: Sequence[str],
    paths: Sequence[str | None],
    countries: Sequence[str | None],
    metrics: dict[str, np.ndarray],
    cls_maps: np.ndarray,
    image_sizes: Sequence[tuple[int, int]] | None = None,
    crop_boxes: Sequence[tuple[float, float, float, float] | None] | None = None,
    failures: Sequence[tuple[str, str | None, str | None, str]],
    model_spec: str,
    precision: str,
    computed_at: datetime,
) -> pa.Table:
    """Assemble one shard's rows in the SHARD_RESULTS schema.

    `cls_maps` is float32 [n_ok, grid_h, grid_w], row i belonging to image_ids[i];
    `image_sizes` are (width, height) and `crop_boxes` the model's view (left, top, right,
    bottom) in original pixels, per computed image; `failures` are (image_id, path, country, reason).
    """
    n_ok = len(image_ids)
    if cls_maps.shape[0] != n_ok:
        raise ValueError(f"{cls_maps.shape[0]} maps for {n_ok} images in {shard_key}")
    grid_h, grid_w = (int(cls_maps.shape[1]), int(cls_maps.shape[2])) if n_ok else (None, None)
    n_failed = len(failures)
    n = n_ok + n_failed

    def metric(name: str) -> list:
        values = np.asarray(metrics[name]) if n_ok else np.zeros(0)
        cast = int if name == "num_high_attention_patches" else float
        return [cast(v) for v in values] + [None] * n_failed

    flat_maps = cls_maps.reshape(n_ok, -1).astype(np.float32, copy=False)
    sizes = list(image_sizes) if image_sizes is not None else [(None, None)] * n_ok
    boxes = [box or (None,) * 4 for box in crop_boxes] if crop_boxes is not None else [(None,) * 4] * n_ok
    if len(sizes) != n_ok or len(boxes) != n_ok:
        raise ValueError(f"sizes/boxes do not match the {n_ok} computed images of {shard_key}")
    pad = [None] * n_failed
    columns = {
        "image_id": list(image_ids) + [f[0] for f in failures],
        "shard_key": [shard_key] * n,
        "path": list(paths) + [f[1] for f in failures],
        "country": list(countries) + [f[2] for f in failures],
        "status": ["ok"] * n_ok + ["failed"] * n_failed,
        "failure_reason": [None] * n_ok + [f[3] for f in failures],
        **{name: metric(name) for name in METRIC_COLUMNS},
        "image_width": [w for w, _ in sizes] + pad,
        "image_height": [h for _, h in sizes] + pad,
        **{name: [b[i] for b in boxes] + pad for i, name in enumerate(("crop_left", "crop_top", "crop_right", "crop_bottom"))},
        "grid_height": [grid_h] * n_ok + [None] * n_failed,
        "grid_width": [grid_w] * n_ok + [None] * n_failed,
        "cls_map": list(flat_maps) + [None] * n_failed,
        "model_spec": [model_spec] * n,
        "precision": [precision] * n,
        "computed_at": [computed_at.replace(tzinfo=None)] * n,
    }
    return pa.table(columns, schema=SHARD_RESULTS.arrow_schema())


def read_cls_maps(
    shard_file: Path, image_ids: Sequence[str] | None = None, with_boxes: bool = False
) -> dict[str, np.ndarray] | tuple[dict[str, np.ndarray], dict[str, tuple | None]]:
    """CLS maps (float32 [grid_h, grid_w]) of a shard's computed images, and optionally their model-view boxes."""
    filters = [("status", "=", "ok")]
    if image_ids is not None:
        filters.append(("image_id", "in", list(image_ids)))
    box_columns = ["crop_left", "crop_top", "crop_right", "crop_bottom"]
    table = pq.read_table(
        shard_file, columns=["image_id", "grid_height", "grid_width", "cls_map", *box_columns], filters=filters
    )
    ids = table["image_id"].to_pylist()
    maps = {
        image_id: np.asarray(flat, dtype=np.float32).reshape(grid_h, grid_w)
        for image_id, grid_h, grid_w, flat in zip(
            ids, table["grid_height"].to_pylist(), table["grid_width"].to_pylist(),
            table["cls_map"].to_numpy(zero_copy_only=False),
        )
    }
    if not with_boxes:
        return maps
    corners = zip(*(table[c].to_pylist() for c in box_columns))
    boxes = {image_id: (None if any(v is None for v in box) else tuple(box)) for image_id, box in zip(ids, corners)}
    return maps, boxes

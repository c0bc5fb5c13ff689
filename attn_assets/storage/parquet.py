"""Per-shard Parquet files: written whole or not at all.

A shard file is the unit of work of the `attention_statistics` asset. It is written to a
temporary name in the same folder, synced and renamed over the target, so a run killed
mid-shard leaves the previous version (or nothing), never half a file.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from attn_assets.metric_names import METRIC_NAMES
from attn_assets.storage.atomic import atomic_file
from attn_assets.storage.layout import HomeLayout
from attn_assets.storage.schema import SHARD_ANALYSIS_COLUMNS, SHARD_RESULTS

HEAD_MAP_SUM_KEY = b"attn_assets.head_map_sum"

def write_table_atomic(table: pa.Table, target: Path) -> Path:
    """Write ``table`` to ``target`` whole or not at all. Any path Python can open works, a non-UTF-8 (Latin-1)
    name included: pyarrow encodes path strings as UTF-8, so it writes through an open file object."""
    with atomic_file(target) as tmp:
        with open(tmp, "wb") as fh:
            pq.write_table(table, fh, compression="zstd")
            fh.flush()
            os.fsync(fh.fileno())
    return Path(target)


def build_shard_results(
    *,
    shard_key: str,
    image_ids: Sequence[str],
    paths: Sequence[str | None],
    countries: Sequence[str | None],
    metrics: dict[str, np.ndarray],
    cls_maps: np.ndarray,
    cls_embeddings: np.ndarray | None = None,
    image_sizes: Sequence[tuple[int, int]] | None = None,
    crop_boxes: Sequence[tuple[float, float, float, float] | None] | None = None,
    failures: Sequence[tuple[str, str | None, str | None, str]],
    model_spec: str,
    precision: str,
    computed_at: datetime,
    analyses: dict | None = None,
) -> pa.Table:
    """Assemble one shard's rows in the SHARD_RESULTS schema.

    `analyses` (optional) maps each SHARD_ANALYSIS_COLUMNS name to one value per computed image
    (lists for the ``layer_*`` / ``head_*`` / ``artifact_indices`` columns), plus ``head_map_sum``
    ``[heads, N]`` (float64 sum over the shard's images of each last-layer head's CLS row), which is
    kept in the file's key-value metadata so the per-head mean maps need no per-image storage.

    `cls_maps` is float32 [n_ok, grid_h, grid_w], row i belonging to image_ids[i]; `cls_embeddings`
    [n_ok, D] is ``last_hidden_state[:, 0]``, stored as float16 (what PLONK geolocation reads back);
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

    # (n_ok, grid_h * grid_w); spelled out, as numpy cannot infer -1 for a shard whose every image failed
    flat_maps = cls_maps.reshape(n_ok, int(np.prod(cls_maps.shape[1:]))).astype(np.float32, copy=False)
    if cls_embeddings is not None and len(cls_embeddings) != n_ok:
        raise ValueError(f"{len(cls_embeddings)} CLS embeddings for {n_ok} images in {shard_key}")
    embeddings = list(np.asarray(cls_embeddings, dtype=np.float16)) if cls_embeddings is not None else [None] * n_ok
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
        **{name: metric(name) for name in METRIC_NAMES},
        "image_width": [w for w, _ in sizes] + pad,
        "image_height": [h for _, h in sizes] + pad,
        **{name: [b[i] for b in boxes] + pad for i, name in enumerate(("crop_left", "crop_top", "crop_right", "crop_bottom"))},
        "grid_height": [grid_h] * n_ok + [None] * n_failed,
        "grid_width": [grid_w] * n_ok + [None] * n_failed,
        "cls_map": list(flat_maps) + [None] * n_failed,
        "cls_embedding": embeddings + [None] * n_failed,
        **_analysis_columns(analyses, n_ok, n_failed),
        "model_spec": [model_spec] * n,
        "precision": [precision] * n,
        "computed_at": [computed_at.replace(tzinfo=None)] * n,
    }
    table = SHARD_RESULTS.arrow_table(columns)
    head_sum = (analyses or {}).get("head_map_sum")
    if head_sum is not None and n_ok:
        head_sum = np.asarray(head_sum, dtype=np.float64)
        payload = {"count": n_ok, "shape": list(head_sum.shape), "sum": head_sum.ravel().tolist()}
        table = table.replace_schema_metadata({**(table.schema.metadata or {}), HEAD_MAP_SUM_KEY: json.dumps(payload)})
    return table


def _analysis_columns(analyses: dict | None, n_ok: int, n_failed: int) -> dict[str, list]:
    """The SHARD_ANALYSIS_COLUMNS as Python lists (None for failed images, or all None without analyses)."""
    out = {}
    for column in SHARD_ANALYSIS_COLUMNS:
        if analyses is None or column.name not in analyses or not n_ok:
            out[column.name] = [None] * (n_ok + n_failed)
            continue
        values = analyses[column.name]
        if len(values) != n_ok:
            raise ValueError(f"{len(values)} values of {column.name} for {n_ok} images")
        if column.sql_type.endswith("[]"):
            cast = int if column.sql_type in ("BIGINT[]", "INTEGER[]") else float
            rows = [[cast(v) for v in np.asarray(row).ravel()] for row in values]
        else:
            cast = int if column.sql_type in ("BIGINT", "INTEGER") else float
            rows = [cast(v) for v in np.asarray(values)]
        out[column.name] = rows + [None] * n_failed
    return out


def read_head_map_sum(shard_file: Path) -> tuple[np.ndarray, int] | None:
    """(sum over the shard's images of each last-layer head's CLS row ``[heads, N]``, image count), or None."""
    metadata = pq.read_schema(shard_file).metadata or {}
    if HEAD_MAP_SUM_KEY not in metadata:
        return None
    payload = json.loads(metadata[HEAD_MAP_SUM_KEY])
    return np.asarray(payload["sum"], dtype=np.float64).reshape(payload["shape"]), int(payload["count"])


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


def read_cls_embeddings(shard_file: Path) -> tuple[list[str], np.ndarray]:
    """(image ids, float16 CLS embeddings ``[n, D]``) of a shard's computed images.

    Raises ValueError naming the shard when the file predates stored embeddings, so the caller can say
    which partition of attention_statistics to re-materialize.
    """
    names = set(pq.read_schema(shard_file).names)
    if "cls_embedding" not in names:
        raise ValueError(f"{shard_file} was written before CLS embeddings were stored")
    table = pq.read_table(shard_file, columns=["image_id", "cls_embedding"], filters=[("status", "=", "ok")])
    ids = table["image_id"].to_pylist()
    column = table["cls_embedding"]
    if column.null_count:
        raise ValueError(f"{shard_file} has {column.null_count} computed images without a CLS embedding")
    if not ids:
        return ids, np.zeros((0, 0), dtype=np.float16)
    flat = column.combine_chunks()
    width = len(flat[0])
    values = flat.flatten().to_numpy(zero_copy_only=False).astype(np.float16, copy=False)  # respects offsets
    if values.size != width * len(ids):
        raise ValueError(f"{shard_file}: CLS embeddings of different lengths")
    return ids, values.reshape(len(ids), width)


def read_maps_and_boxes(layout: HomeLayout, rows) -> tuple[dict[str, np.ndarray], dict[str, tuple | None]]:
    """CLS maps and model-view boxes of the given rows (a frame with ``shard_key`` and ``image_id``), read from
    their shard files only."""
    maps: dict[str, np.ndarray] = {}
    boxes: dict[str, tuple | None] = {}
    for shard_key, group in rows.groupby("shard_key"):
        shard_maps, shard_boxes = read_cls_maps(layout.shard_parquet(shard_key), list(group["image_id"]), with_boxes=True)
        maps.update(shard_maps)
        boxes.update(shard_boxes)
    return maps, boxes

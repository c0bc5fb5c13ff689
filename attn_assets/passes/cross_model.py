"""The cross-model pass: several encoders over one shard's images, their last-layer maps compared pairwise ->
analyses/cross_model/<shard>.parquet (CROSS_MODEL_AGREEMENT rows) and <shard>.maps.parquet (CROSS_MODEL_MAPS).
No Dagster here.

Models run one at a time (``ATTN_ASSETS_COMPARE_MODELS`` order) and each is released (``release_model``) before
the next loads, so memory stays that of the largest model, not the sum. A model that cannot load fails only its
own pairs: their rows have status 'failed' and the model's message; the other pairs are compared as usual.
"""

from __future__ import annotations

import gc
import itertools
import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from attn_assets.core.confidence import bootstrap_mean_interval
from attn_assets.core.cross_model import AGREEMENT_METRICS, PlacedMap, agreement
from attn_assets.core.extract import extract_records
from attn_assets.core.loader import ImageRecord
from attn_assets.core.model import ModelLoadError, load_encoder
from attn_assets.passes.inputs import shard_images
from attn_assets.storage.layout import HomeLayout
from attn_assets.storage.parquet import write_table_atomic
from attn_assets.storage.schema import CROSS_MODEL_AGREEMENT, CROSS_MODEL_MAPS



@dataclass
class ModelMaps:
    """One model's maps of a shard: ``maps[image_id]`` = PlacedMap; ``failed[image_id]`` = reason;
    ``error`` = why the model produced nothing (it could not load), else None."""

    spec: str
    maps: dict[str, PlacedMap] = field(default_factory=dict)
    sizes: dict[str, tuple[int, int]] = field(default_factory=dict)  # original (width, height)
    failed: dict[str, str] = field(default_factory=dict)
    error: str | None = None
    seconds: float = 0.0


@dataclass
class CrossModelOutcome:
    shard_key: str
    images: int
    pairs: int
    ok_rows: int
    failed_rows: int
    seconds: float
    models: list[ModelMaps]
    path: Path | None = None


def release_model(device: str) -> None:
    """Return a released model's memory: Python garbage, then CUDA's cached blocks on a CUDA device."""
    gc.collect()
    if str(device).startswith("cuda"):
        import torch

        torch.cuda.empty_cache()


def run_model(spec: str, records: list[ImageRecord], *, device: str, precision: str, batch_size: int,
              num_workers: int, logger: logging.Logger | logging.LoggerAdapter) -> ModelMaps:
    """Load ``spec``, extract every record's last-layer map and the model's view box, release the model."""
    started = time.monotonic()
    result = ModelMaps(spec)
    try:
        encoder = load_encoder(spec, device=device)
    except ModelLoadError as error:
        result.error = f"model {spec!r} could not load: {error}"
        logger.error("cross_model: %s", result.error)
        return result
    try:
        for batch in extract_records(encoder, records, batch_size=batch_size, device=device, precision=precision,
                                     num_workers=num_workers, keep_maps=True, layers="last"):
            for failure in batch.failures:
                result.failed[failure.image_id] = f"model {spec!r} could not read the image: {failure.reason}"
            for i, image_id in enumerate(batch.image_ids):
                box = batch.crop_boxes[i]
                if box is None:
                    result.failed[image_id] = f"model {spec!r}: its processor's resize rule has no known view box"
                    continue
                result.maps[image_id] = PlacedMap(batch.cls_maps[i], box)
                result.sizes[image_id] = tuple(batch.image_sizes[i])
    finally:
        del encoder
        release_model(device)
    result.seconds = time.monotonic() - started
    return result


def pair_rows(first: ModelMaps, second: ModelMaps, image_ids: list[str]) -> list[dict]:
    """CROSS_MODEL_AGREEMENT rows (without the shard columns) of one model pair over ``image_ids``."""
    rows = []
    for image_id in image_ids:
        row = {"image_id": image_id, "model_a": first.spec, "model_b": second.spec, "status": "failed",
               "reason": None, **{m: None for m in (*AGREEMENT_METRICS, "mass_inside_a", "mass_inside_b",
                                                  "intersection_share", "cells")}}
        reason = (first.error or second.error or first.failed.get(image_id) or second.failed.get(image_id))
        if reason is None and (image_id not in first.maps or image_id not in second.maps):
            reason = "no map from one of the models"
        if reason is None:
            a, b = first.maps[image_id], second.maps[image_id]
            try:
                found = agreement(a, b)
            except ValueError as error:
                reason = str(error)
            else:
                width, height = first.sizes[image_id]
                left, top, right, bottom = found.intersection
                row.update(status="ok", spearman=found.spearman, top_overlap=found.top_overlap,
                           jensen_shannon=found.jensen_shannon, mass_inside_a=found.mass_inside_a,
                           mass_inside_b=found.mass_inside_b,
                           intersection_share=(right - left) * (bottom - top) / (width * height),
                           cells=found.cells[0] * found.cells[1])
        row["reason"] = reason
        rows.append(row)
    return rows


def _maps_table(models: list[ModelMaps], shard_key: str, country: dict[str, str]):
    columns = {c: [] for c in CROSS_MODEL_MAPS.column_names}
    for model in models:
        for image_id, placed in model.maps.items():
            width, height = model.sizes[image_id]
            values = {"image_id": image_id, "shard_key": shard_key, "country": country.get(image_id),
                      "model_spec": model.spec, "grid_height": placed.values.shape[0],
                      "grid_width": placed.values.shape[1],
                      "attention_map": placed.values.ravel().astype(np.float32),
                      "crop_left": placed.box[0], "crop_top": placed.box[1], "crop_right": placed.box[2],
                      "crop_bottom": placed.box[3], "image_width": width, "image_height": height}
            for name, value in values.items():
                columns[name].append(value)
    return CROSS_MODEL_MAPS.arrow_table(columns)


def compute_cross_model_shard(*, layout: HomeLayout, shard_key: str, specs: tuple[str, ...], device: str,
                              precision: str, batch_size: int, num_workers: int,
                              logger: logging.Logger | logging.LoggerAdapter) -> CrossModelOutcome:
    """Run each of ``specs`` over the shard's images (one model in memory at a time) and compare every pair
    -> analyses/cross_model/<shard>.parquet and <shard>.maps.parquet. Fewer than 2 specs: nothing is written."""
    started = time.monotonic()
    records, country, _ = shard_images(layout, shard_key)
    if len(specs) < 2:
        return CrossModelOutcome(shard_key, len(records), 0, 0, 0, time.monotonic() - started, [])
    models = [run_model(spec, records, device=device, precision=precision, batch_size=batch_size,
                        num_workers=num_workers, logger=logger) for spec in specs]
    image_ids = [r.image_id for r in records]
    rows = [row for first, second in itertools.combinations(models, 2) for row in pair_rows(first, second, image_ids)]
    stamp = datetime.now(timezone.utc).replace(tzinfo=None)
    for row in rows:
        row.update(shard_key=shard_key, country=country.get(row["image_id"]), computed_at=stamp)
    table = CROSS_MODEL_AGREEMENT.arrow_table({c: [row[c] for row in rows] for c in CROSS_MODEL_AGREEMENT.column_names})
    write_table_atomic(_maps_table(models, shard_key, country), layout.cross_model_maps_parquet(shard_key))
    path = write_table_atomic(table, layout.cross_model_parquet(shard_key))
    ok = sum(row["status"] == "ok" for row in rows)
    return CrossModelOutcome(shard_key, len(records), len(models) * (len(models) - 1) // 2, ok, len(rows) - ok,
                             time.monotonic() - started, models, path)


def shard_is_current(layout: HomeLayout, shard_key: str, specs: tuple[str, ...]) -> bool:
    """Whether the shard's cross-model file holds exactly the pairs of ``specs`` over the shard's current images
    (reads two columns of the file and the shard's image list)."""
    path = layout.cross_model_parquet(shard_key)
    if not path.exists():
        return False
    stored = pq.read_table(path, columns=["image_id", "model_a", "model_b"]).to_pandas()
    records, _, _ = shard_images(layout, shard_key)
    pairs = set(itertools.combinations(specs, 2))
    return (set(zip(stored["model_a"], stored["model_b"])) == pairs
            and set(stored["image_id"]) == {r.image_id for r in records})


def summarize(frame: pd.DataFrame) -> pd.DataFrame:
    """CROSS_MODEL_SUMMARY rows: per model pair, overall and per country, each metric's mean over the ok rows
    with a finite value, and its bootstrap interval."""
    ok = frame[frame["status"] == "ok"]
    out = []
    scopes = [("overall", None, ok)] + [("country", c, g) for c, g in ok.groupby("country", sort=True)]
    for scope, country, part in scopes:
        for (model_a, model_b), group in part.groupby(["model_a", "model_b"], sort=False):
            for metric in AGREEMENT_METRICS:
                values = group[metric].to_numpy(dtype=float)
                values = values[np.isfinite(values)]
                low, high = bootstrap_mean_interval(values)
                out.append({"scope": scope, "country": country, "model_a": model_a, "model_b": model_b,
                            "metric": metric, "images": len(values),
                            "mean": float(values.mean()) if len(values) else float("nan"),
                            "ci_low": low, "ci_high": high})
    return pd.DataFrame(out, columns=["scope", "country", "model_a", "model_b", "metric", "images", "mean",
                                      "ci_low", "ci_high"])

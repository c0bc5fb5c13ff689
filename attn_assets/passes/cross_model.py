"""The cross-model pass: the listed encoders' last-layer maps of one shard, compared pairwise ->
analyses/cross_model/<shard>.parquet (CROSS_MODEL_AGREEMENT rows). No Dagster, no model here.

The maps are the ones each model's statistics pass stored (``models/<model_key>/shards/<shard>.parquet``:
``cls_map``, the grid and the view box in original pixels), so comparing costs no model time and adding a model
computes only that model's shards. A model whose file for the shard is missing or not current fails only its own
pairs: their rows have status 'failed' and say why; the other pairs are compared as usual.

The file records which statistics file version of each model it was built from (their recipe records' tokens), so
it is current exactly while the listed models and their files are unchanged (``shard_is_current``).
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from attn_assets.core.confidence import bootstrap_mean_interval
from attn_assets.core.cross_model import AGREEMENT_METRICS, PlacedMap, agreement
from attn_assets.passes.current import CurrentState, model_statistics_pass
from attn_assets.passes.inputs import shard_images
from attn_assets.storage.layout import HomeLayout
from attn_assets.storage.parquet import write_table_atomic
from attn_assets.metric_names import METRIC_NAMES
from attn_assets.storage.schema import CROSS_MODEL_AGREEMENT, MODEL_DIFFERENCES

#: Parquet footer key of the agreement file: {model_key: token of the statistics file it was built from}.
INPUTS_METADATA_KEY = b"attn_assets.cross_model_inputs"


@dataclass
class ModelMaps:
    """One model's maps of a shard, read from its statistics file: ``maps[image_id]`` = PlacedMap;
    ``sizes[image_id]`` = original (width, height); ``failed[image_id]`` = reason; ``error`` = why the model has
    no usable file for the shard, else None; ``token``: the file's record token."""

    key: str
    maps: dict[str, PlacedMap] = field(default_factory=dict)
    sizes: dict[str, tuple[int, int]] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    error: str | None = None
    token: str | None = None


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


_MAP_COLUMNS = ["image_id", "status", "failure_reason", "cls_map", "grid_height", "grid_width", "crop_left",
                "crop_top", "crop_right", "crop_bottom", "image_width", "image_height"]


def read_model_maps(key: str, shard_key: str, state: CurrentState) -> ModelMaps:
    """Model ``key``'s maps of the shard from its statistics file, judged current by ``state`` (that model's)."""
    shard_pass = model_statistics_pass(key)
    result = ModelMaps(key)
    reason = state.reason(shard_pass, shard_key)
    if reason is not None:
        result.error = (f"model {key!r} has no current statistics for {shard_key} ({reason}): materialize "
                        f"model_statistics for model {key}")
        return result
    path = shard_pass.output(state.layout, shard_key)
    result.token = state.record(shard_pass, shard_key).token
    frame = pq.read_table(path, columns=_MAP_COLUMNS).to_pandas()
    for row in frame.itertuples(index=False):
        if row.status != "ok":
            result.failed[row.image_id] = f"model {key!r} could not read the image: {row.failure_reason}"
        elif pd.isna(row.crop_left):
            result.failed[row.image_id] = f"model {key!r}: its processor's resize rule has no known view box"
        else:
            values = np.asarray(row.cls_map, dtype=np.float32).reshape(int(row.grid_height), int(row.grid_width))
            result.maps[row.image_id] = PlacedMap(values, (row.crop_left, row.crop_top, row.crop_right,
                                                           row.crop_bottom))
            result.sizes[row.image_id] = (int(row.image_width), int(row.image_height))
    return result


def pair_rows(first: ModelMaps, second: ModelMaps, image_ids: list[str]) -> list[dict]:
    """CROSS_MODEL_AGREEMENT rows (without the shard columns) of one model pair over ``image_ids``."""
    rows = []
    for image_id in image_ids:
        row = {"image_id": image_id, "model_a": first.key, "model_b": second.key, "status": "failed",
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


def compute_cross_model_shard(*, layout: HomeLayout, shard_key: str, states: Mapping[str, CurrentState]
                              ) -> CrossModelOutcome:
    """Compare every pair of the models ``states`` lists (model key -> that model's CurrentState, in
    ATTN_ASSETS_MODELS order) over the shard's images -> analyses/cross_model/<shard>.parquet. Fewer than 2
    models: nothing is written."""
    started = time.monotonic()
    records, country, _ = shard_images(layout, shard_key)
    if len(states) < 2:
        return CrossModelOutcome(shard_key, len(records), 0, 0, 0, time.monotonic() - started, [])
    models = [read_model_maps(key, shard_key, state) for key, state in states.items()]
    image_ids = [r.image_id for r in records]
    rows = [row for first, second in itertools.combinations(models, 2) for row in pair_rows(first, second, image_ids)]
    stamp = datetime.now(timezone.utc).replace(tzinfo=None)
    for row in rows:
        row.update(shard_key=shard_key, country=country.get(row["image_id"]), computed_at=stamp)
    table = CROSS_MODEL_AGREEMENT.arrow_table({c: [row[c] for row in rows] for c in CROSS_MODEL_AGREEMENT.column_names})
    inputs = json.dumps({model.key: model.token for model in models})  # in list order: model_a/model_b follow it
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), INPUTS_METADATA_KEY: inputs})
    path = write_table_atomic(table, layout.cross_model_parquet(shard_key))
    layout.retired_cross_model_maps(shard_key).unlink(missing_ok=True)
    ok = sum(row["status"] == "ok" for row in rows)
    return CrossModelOutcome(shard_key, len(records), len(models) * (len(models) - 1) // 2, ok, len(rows) - ok,
                             time.monotonic() - started, models, path)


def _current_tokens(shard_key: str, states: Mapping[str, CurrentState]) -> dict[str, str | None]:
    tokens = {}
    for key, state in states.items():
        shard_pass = model_statistics_pass(key)
        current = state.reason(shard_pass, shard_key) is None
        tokens[key] = state.record(shard_pass, shard_key).token if current else None
    return tokens


def shard_is_current(layout: HomeLayout, shard_key: str, states: Mapping[str, CurrentState]) -> bool:
    """Whether the shard's cross-model file was built from exactly the listed models' current statistics files
    (reads the file's footer and each model's record)."""
    path = layout.cross_model_parquet(shard_key)
    if not path.exists():
        return False
    raw = (pq.read_schema(path).metadata or {}).get(INPUTS_METADATA_KEY)
    if raw is None:
        return False
    # compared as ordered lists: a reordered ATTN_ASSETS_MODELS swaps model_a and model_b, so the file is rebuilt
    return list(json.loads(raw).items()) == list(_current_tokens(shard_key, states).items())


def listed_pairs(keys: Sequence[str]) -> set[tuple[str, str]]:
    """The (earlier, later) model pairs of ``keys`` in list order."""
    return set(itertools.combinations(keys, 2))


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


def paired_differences(statistics: pd.DataFrame, keys: Sequence[str],
                       metrics: Sequence[str] = METRIC_NAMES) -> pd.DataFrame:
    """MODEL_DIFFERENCES rows from attention_statistics_by_model rows (columns model_key, image_id, country and
    ``metrics``): per pair of ``keys`` (in list order), overall and per country, each metric over the images both
    models computed, with the paired difference's bootstrap interval (core.confidence)."""
    columns = [c.name for c in MODEL_DIFFERENCES.columns]
    out = []
    for model_a, model_b in itertools.combinations(keys, 2):
        a = statistics[statistics["model_key"] == model_a].set_index("image_id")
        b = statistics[statistics["model_key"] == model_b].set_index("image_id")
        both = a.merge(b[list(metrics)], how="inner", left_index=True, right_index=True, suffixes=("_a", "_b"))
        scopes = [("overall", None, both)] + [("country", c, g) for c, g in both.groupby("country", sort=True)]
        for scope, country, part in scopes:
            for metric in metrics:
                first = part[f"{metric}_a"].to_numpy(dtype=float)
                second = part[f"{metric}_b"].to_numpy(dtype=float)
                finite = np.isfinite(first) & np.isfinite(second)
                first, second = first[finite], second[finite]
                low, high = bootstrap_mean_interval(first - second)
                out.append({"scope": scope, "country": country, "model_a": model_a, "model_b": model_b,
                            "metric": metric, "images": int(finite.sum()),
                            "mean_a": float(first.mean()) if first.size else float("nan"),
                            "mean_b": float(second.mean()) if second.size else float("nan"),
                            "mean_difference": float((first - second).mean()) if first.size else float("nan"),
                            "ci_low": low, "ci_high": high})
    return pd.DataFrame(out, columns=columns)

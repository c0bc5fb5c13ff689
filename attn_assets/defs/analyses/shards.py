"""Own-pass analyses of one shard (rollout, ablation): manifest rows in, one atomic Parquet out. No Dagster."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from attn_assets.core.analyses import RolloutExtractor, ablate, image_seed
from attn_assets.core.extract import AttentionExtractor
from attn_assets.core.loader import ImageRecord, iter_batches
from attn_assets.core.metrics import attention_metrics, metrics_to_numpy
from attn_assets.core.preprocess import Preprocessor
from attn_assets.passes.recipe import (
    Recipe,
    ShardRecord,
    ablation_recipe,
    image_set_fingerprint,
    rollout_recipe,
    with_record,
)
from attn_assets.defs.statistics.shard import shard_rows
from attn_assets.storage.layout import HomeLayout
from attn_assets.storage.parquet import write_table_atomic
from attn_assets.storage.schema import ABLATION_STATISTICS, METRIC_COLUMNS, ROLLOUT_RESULTS

ABLATION_SAMPLE_SALT = 0xAB1A


def in_ablation_sample(image_id: str, fraction: float) -> bool:
    """Deterministic sample: an image is in it when its salted crc32 / 2^32 < fraction (stable across runs)."""
    return fraction > 0 and image_seed(image_id, ABLATION_SAMPLE_SALT) / 2**32 < fraction


@dataclass(frozen=True)
class AnalysisOutcome:
    shard_key: str
    images: int
    computed: int
    seconds: float
    path: Path | None
    record: ShardRecord | None = None  # the recipe and image set stored with the file


def _records(layout: HomeLayout, shard_key: str, keep=None) -> tuple[list[ImageRecord], dict[str, str], str]:
    """The shard's (kept) images, their countries, and the image set of the WHOLE shard (what the file records)."""
    rows = shard_rows(layout, shard_key)
    image_set = image_set_fingerprint(rows["image_id"], rows["path"])
    if keep is not None:
        rows = rows[[keep(i) for i in rows["image_id"]]]
    country = dict(zip(rows["image_id"], rows["country"]))
    return [ImageRecord(image_id=i, path=p) for i, p in zip(rows["image_id"], rows["abs_path"])], country, image_set


def compute_rollout_shard(*, layout: HomeLayout, shard_key: str, encoder, model_spec: str, device: str,
                          precision: str, batch_size: int, num_workers: int,
                          logger: logging.Logger | logging.LoggerAdapter, recipe: Recipe | None = None) -> AnalysisOutcome:
    """Attention rollout of every readable image of the shard -> analyses/rollout/<shard>.parquet (with its
    recipe record; ``recipe`` default: built from ``model_spec``, ``precision`` and ``device``)."""
    started = time.monotonic()
    recipe = recipe or rollout_recipe(model_spec, precision, device)
    records, country, image_set = _records(layout, shard_key)
    extractor = RolloutExtractor(encoder, device=device, precision=precision)
    preprocess = Preprocessor(encoder.processor)
    ids, maps, metrics = [], [], {m: [] for m in METRIC_COLUMNS}
    for batch in iter_batches(records, preprocess, batch_size, num_workers):
        for failure in batch.failures:  # recorded in image_failures by attention_statistics
            logger.info("%s: rollout skips %s: %s", shard_key, failure.image_id, failure.reason)
        if not len(batch):
            continue
        rows, _ = extractor(batch.pixel_values)
        rows = rows.float()  # under bf16 autocast the product is bf16, which numpy cannot hold
        values = metrics_to_numpy(attention_metrics(rows))
        for name in METRIC_COLUMNS:
            metrics[name].append(values[name])
        maps.append(rows.cpu().numpy().astype(np.float32))
        ids.extend(batch.image_ids)
    gh, gw = encoder.grid_size
    n = len(ids)
    flat = np.concatenate(maps) if maps else np.zeros((0, gh * gw), dtype=np.float32)
    stamp = datetime.now(timezone.utc).replace(tzinfo=None)
    columns = {
        "image_id": ids, "shard_key": [shard_key] * n, "country": [country[i] for i in ids],
        **{name: (np.concatenate(parts) if parts else np.zeros(0)).tolist() for name, parts in metrics.items()},
        "grid_height": [gh] * n, "grid_width": [gw] * n, "rollout_map": list(flat),
        "model_spec": [model_spec] * n, "precision": [extractor.precision] * n, "computed_at": [stamp] * n,
    }
    record = recipe.record(image_set)
    path = write_table_atomic(with_record(ROLLOUT_RESULTS.arrow_table(columns), record),
                              layout.rollout_parquet(shard_key))
    return AnalysisOutcome(shard_key, len(records), n, time.monotonic() - started, path, record)


def compute_ablation_shard(*, layout: HomeLayout, shard_key: str, encoder, model_spec: str, device: str,
                           precision: str, batch_size: int, num_workers: int, fraction: float,
                           logger: logging.Logger | logging.LoggerAdapter, recipe: Recipe | None = None) -> AnalysisOutcome:
    """Top-k vs random-k masking for the sampled images of the shard -> analyses/ablation/<shard>.parquet.
    ``encoder`` may be None when ``fraction`` is 0: an empty file with its recipe record is written then, so the
    shard reads as done for that fraction (and stale once the fraction changes)."""
    started = time.monotonic()
    recipe = recipe or ablation_recipe(model_spec, precision, device, fraction)
    records, country, image_set = _records(layout, shard_key, keep=lambda i: in_ablation_sample(i, fraction))
    ids, parts = [], []
    batches = []
    if records:
        extractor = AttentionExtractor(encoder, device=device, precision=precision)
        batches = iter_batches(records, Preprocessor(encoder.processor), batch_size, num_workers)
    for batch in batches:
        for failure in batch.failures:
            logger.info("%s: ablation skips %s: %s", shard_key, failure.image_id, failure.reason)
        if not len(batch):
            continue
        parts.append(ablate(extractor, batch.pixel_values, batch.image_ids))
        ids.extend(batch.image_ids)
    n = len(ids)
    stamp = datetime.now(timezone.utc).replace(tzinfo=None)
    names = ("ablation_k", "topk_attention_share", "cosine_distance_topk", "cosine_distance_random")
    columns = {
        "image_id": ids, "shard_key": [shard_key] * n, "country": [country[i] for i in ids],
        **{name: (np.concatenate([p[name] for p in parts]) if parts else np.zeros(0)).tolist() for name in names},
        "model_spec": [model_spec] * n, "precision": [extractor.precision if n else precision] * n,
        "computed_at": [stamp] * n,
    }
    record = recipe.record(image_set)
    path = write_table_atomic(with_record(ABLATION_STATISTICS.arrow_table(columns), record),
                              layout.ablation_parquet(shard_key))
    return AnalysisOutcome(shard_key, len(records), n, time.monotonic() - started, path, record)

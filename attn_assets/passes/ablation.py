"""The ablation pass: top-k vs random-k masking of the shard's sampled images (its own forward passes) ->
analyses/ablation/<shard>.parquet, with the recipe record. No Dagster here."""

from __future__ import annotations

import logging
import time
from datetime import datetime, timezone

import numpy as np

from attn_assets.core.ablation import ablate
from attn_assets.core.analyses import image_seed
from attn_assets.core.extract import AttentionExtractor, model_batches, model_preprocessor
from attn_assets.passes.inputs import shard_images
from attn_assets.passes.outcome import ShardOutcome
from attn_assets.passes.recipe import Recipe, ablation_recipe, with_record
from attn_assets.storage.layout import HomeLayout
from attn_assets.storage.parquet import write_table_atomic
from attn_assets.storage.schema import ABLATION_STATISTICS

ABLATION_SAMPLE_SALT = 0xAB1A


def in_ablation_sample(image_id: str, fraction: float) -> bool:
    """Deterministic sample: an image is in it when its salted crc32 / 2^32 < fraction (stable across runs)."""
    return fraction > 0 and image_seed(image_id, ABLATION_SAMPLE_SALT) / 2**32 < fraction


def compute_ablation_shard(*, layout: HomeLayout, shard_key: str, encoder, model_spec: str, device: str,
                           precision: str, batch_size: int, num_workers: int, fraction: float,
                           logger: logging.Logger | logging.LoggerAdapter, recipe: Recipe | None = None) -> ShardOutcome:
    """Top-k vs random-k masking for the sampled images of the shard -> analyses/ablation/<shard>.parquet.
    ``encoder`` may be None when ``fraction`` is 0: an empty file with its recipe record is written then, so the
    shard reads as done for that fraction (and stale once the fraction changes)."""
    started = time.monotonic()
    recipe = recipe or ablation_recipe(model_spec, precision, device, fraction)
    records, country, image_set = shard_images(layout, shard_key, keep=lambda i: in_ablation_sample(i, fraction))
    ids, parts = [], []
    failed = 0
    batches = []
    if records:
        extractor = AttentionExtractor(encoder, device=device, precision=precision)
        batches = model_batches(records, model_preprocessor(encoder.processor), extractor.device, batch_size,
                                num_workers)
    for batch in batches:
        for failure in batch.failures:
            logger.info("%s: ablation skips %s: %s", shard_key, failure.image_id, failure.reason)
        failed += len(batch.failures)
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
    return ShardOutcome(shard_key=shard_key, images=len(records), computed=n, failed=failed,
                        seconds=time.monotonic() - started, path=path, record=record)

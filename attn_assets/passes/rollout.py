"""The rollout pass: attention rollout of one shard's images (its own forward pass) ->
analyses/rollout/<shard>.parquet, with the recipe record. No Dagster here."""

from __future__ import annotations

import logging
import time
from datetime import datetime, timezone

import numpy as np

from attn_assets.metric_names import METRIC_NAMES
from attn_assets.core.extract import model_batches, model_preprocessor
from attn_assets.core.metrics import attention_metrics, metrics_to_numpy
from attn_assets.core.rollout import RolloutExtractor
from attn_assets.passes.inputs import shard_images
from attn_assets.passes.outcome import ShardOutcome
from attn_assets.passes.recipe import Recipe, rollout_recipe, with_record
from attn_assets.storage.layout import HomeLayout
from attn_assets.storage.parquet import write_table_atomic
from attn_assets.storage.schema import ROLLOUT_RESULTS


def compute_rollout_shard(*, layout: HomeLayout, shard_key: str, encoder, model_spec: str, device: str,
                          precision: str, batch_size: int, num_workers: int,
                          logger: logging.Logger | logging.LoggerAdapter, recipe: Recipe | None = None) -> ShardOutcome:
    """Attention rollout of every readable image of the shard -> analyses/rollout/<shard>.parquet (with its
    recipe record; ``recipe`` default: built from ``model_spec``, ``precision`` and ``device``)."""
    started = time.monotonic()
    recipe = recipe or rollout_recipe(model_spec, precision, device)
    records, country, image_set = shard_images(layout, shard_key)
    extractor = RolloutExtractor(encoder, device=device, precision=precision)
    preprocess = model_preprocessor(encoder.processor)
    ids, maps, metrics = [], [], {m: [] for m in METRIC_NAMES}
    failed = 0
    for batch in model_batches(records, preprocess, extractor.device, batch_size, num_workers):
        for failure in batch.failures:  # recorded in image_failures by attention_statistics
            logger.info("%s: rollout skips %s: %s", shard_key, failure.image_id, failure.reason)
        failed += len(batch.failures)
        if not len(batch):
            continue
        rows, _ = extractor(batch.pixel_values)
        rows = rows.float()  # under bf16 autocast the product is bf16, which numpy cannot hold
        values = metrics_to_numpy(attention_metrics(rows))
        for name in METRIC_NAMES:
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
    return ShardOutcome(shard_key=shard_key, images=len(records), computed=n, failed=failed,
                        seconds=time.monotonic() - started, path=path, record=record)

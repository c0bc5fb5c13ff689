"""The statistics pass: one shard's images through the encoder (every layer's CLS row, in one forward pass) ->
shards/<shard>.parquet, with the failures and the recipe record. No Dagster here."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from attn_assets.core.extract import extract_records
from attn_assets.passes.inputs import image_records, shard_rows
from attn_assets.passes.outcome import ShardOutcome
from attn_assets.passes.recipe import (
    Recipe, image_set_fingerprint, read_record, stale_reason, statistics_recipe, with_record,
)
from attn_assets.storage.atomic import link_atomic
from attn_assets.storage.layout import HomeLayout
from attn_assets.storage.parquet import build_shard_results, write_table_atomic
from attn_assets.metric_names import METRIC_NAMES


class ProgressLog:
    """Calls `emit(done, total, rate)` at most every `interval_s` seconds, and at the end."""

    def __init__(self, total: int, emit: Callable[[int, int, float], None], interval_s: float = 10.0):
        self.total, self.emit, self.interval_s = total, emit, interval_s
        self.start = self.last = time.monotonic()

    def __call__(self, done: int, total: int | None = None) -> None:
        now = time.monotonic()
        if now - self.last >= self.interval_s or done >= self.total:
            self.last = now
            self.emit(done, self.total, done / max(now - self.start, 1e-9))


class ShardAnalyses:
    """Collects the per-batch same-pass analyses of a shard into per-image columns."""

    def __init__(self) -> None:
        self.columns: dict[str, list] = {}
        self.head_map_sum: np.ndarray | None = None

    def add(self, batch: dict | None) -> None:
        if not batch:
            return
        for name, value in batch.items():
            if name == "head_map_sum":
                if value is not None:
                    self.head_map_sum = value if self.head_map_sum is None else self.head_map_sum + value
                continue
            self.columns.setdefault(name, []).extend(list(value))

    def merged(self, images: int) -> dict | None:
        if not images:
            return None
        return {**self.columns, "head_map_sum": self.head_map_sum}


def compute_statistics_shard(
    *,
    layout: HomeLayout,
    shard_key: str,
    encoder,
    model_spec: str,
    device: str,
    precision: str,
    batch_size: int,
    num_workers: int,
    logger: logging.Logger | logging.LoggerAdapter,
    progress_bar: bool = False,
    recipe: Recipe | None = None,
    output: Path | None = None,
    reuse: Sequence[Path] = (),
) -> ShardOutcome:
    """Compute one shard and write it with its recipe record to ``output`` (default ``shards/<shard>.parquet``;
    ``recipe``: the current statistics recipe, default built from ``model_spec``, ``precision`` and ``device``).

    When one of ``reuse`` (the same model's file of this shard in another place, e.g. ``models/<key>/shards/``)
    already holds current results for this recipe and image set, it is linked (or copied) to ``output`` instead of
    recomputed: listing the default model in ATTN_ASSETS_MODELS, or reordering the list, costs no model time.
    """
    recipe = recipe or statistics_recipe(model_spec, precision, device)
    output = output or layout.shard_parquet(shard_key)
    rows = shard_rows(layout, shard_key)
    if rows.empty:
        raise ValueError(
            f"Shard {shard_key} has no images in {layout.images_parquet}. Re-materialize image_manifest, "
            "or delete the partition if its images left the manifest."
        )
    image_set = image_set_fingerprint(rows["image_id"], rows["path"])
    for candidate in reuse:
        record = read_record(candidate)
        if candidate != output and stale_reason(record, recipe, image_set) is None:
            logger.info("%s: current results of %s found in %s; linked, not recomputed", shard_key, model_spec,
                        candidate)
            started = time.monotonic()
            counts = pq.read_table(candidate, columns=["status"]).column("status").to_pylist()
            path = link_atomic(candidate, output)
            return ShardOutcome(shard_key=shard_key, images=len(counts), computed=counts.count("ok"),
                                failed=len(counts) - counts.count("ok"), seconds=time.monotonic() - started,
                                path=path, record=record)
    country_by_id = dict(zip(rows["image_id"], rows["country"]))
    path_by_id = dict(zip(rows["image_id"], rows["path"]))
    records = image_records(rows)

    started = time.monotonic()
    progress = ProgressLog(
        len(records),
        lambda done, total, rate: logger.info(
            "%s: %d / %d images (%.2f images/s)", shard_key, done, total, rate
        ),
    )
    bar = None
    if progress_bar:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(records), desc=shard_key, unit="img", leave=False)

    ids: list[str] = []
    metrics: dict[str, list[np.ndarray]] = {name: [] for name in METRIC_NAMES}
    maps: list[np.ndarray] = []
    embeddings: list[np.ndarray] = []
    sizes: list[tuple[int, int]] = []
    boxes: list[tuple | None] = []
    failures: list[tuple[str, str | None, str | None, str]] = []
    analyses = ShardAnalyses()
    done = 0
    # analyses=True: every layer's CLS row and the output-token norms in the SAME forward pass
    # (layer / head / artifact / spatial statistics; the seed metrics stay the last layer's)
    for batch in extract_records(
        encoder, records, batch_size=batch_size, device=device, precision=precision, num_workers=num_workers,
        analyses=True,
    ):
        ids.extend(batch.image_ids)
        analyses.add(batch.analyses)
        for name in METRIC_NAMES:
            metrics[name].append(np.asarray(batch.metrics[name]))
        maps.append(np.asarray(batch.cls_maps, dtype=np.float32))
        embeddings.append(np.asarray(batch.cls_embedding, dtype=np.float16))
        sizes.extend(batch.image_sizes)
        boxes.extend(batch.crop_boxes)
        for failure in batch.failures:
            failures.append(
                (failure.image_id, path_by_id.get(failure.image_id), country_by_id.get(failure.image_id), failure.reason)
            )
            logger.warning("%s: image %s failed: %s", shard_key, failure.image_id, failure.reason)
        step = len(batch.image_ids) + len(batch.failures)
        done += step
        progress(done)
        if bar is not None:
            bar.update(step)
    if bar is not None:
        bar.close()

    grid = encoder.grid_size
    cls_maps = np.concatenate(maps) if maps else np.zeros((0, *grid), dtype=np.float32)
    table = build_shard_results(
        shard_key=shard_key,
        image_ids=ids,
        paths=[path_by_id[i] for i in ids],
        countries=[country_by_id[i] for i in ids],
        metrics={name: np.concatenate(parts) if parts else np.zeros(0) for name, parts in metrics.items()},
        cls_maps=cls_maps,
        cls_embeddings=np.concatenate(embeddings) if embeddings else None,
        image_sizes=sizes,
        crop_boxes=boxes,
        failures=failures,
        model_spec=model_spec,
        precision=precision,
        computed_at=datetime.now(timezone.utc),
        analyses=analyses.merged(len(ids)),
    )
    record = recipe.record(image_set)
    path = write_table_atomic(with_record(table, record), output)
    return ShardOutcome(shard_key=shard_key, images=len(records), computed=len(ids), failed=len(failures),
                        seconds=time.monotonic() - started, path=path, record=record)

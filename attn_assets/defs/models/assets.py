"""The models group: every encoder of ATTN_ASSETS_MODELS over the same shards, results keyed by model.

  model_statistics (partitioned model x shard, pool "gpu"): the statistics pass of one listed model over one shard
      -> models/<model_key>/shards/<shard>.parquet, the same file (and recipe record) as shards/<shard>.parquet.
      A current file of the same recipe elsewhere (the default model's shards/<shard>.parquet) is linked, not
      recomputed. A model that cannot load fails its own partitions with its own message.
  model_tables: every model folder's current files -> the *_by_model tables (attention_statistics_by_model, ...,
      keyed by model_key), the table models, country_aggregates_by_model and model_differences (per pair and
      country, each metric's paired per-image difference with a bootstrap interval).

Why a two-dimensional partition (model x shard) and not one asset per model: the UI then shows one grid with a
row per model (per-model status at a glance), a backfill selects one model's row, the lineage keeps one node
however many models are listed, and adding a model adds a row without touching the others' partitions. The
model dimension is dynamic: image_manifest registers the listed keys; a model removed from the list keeps its
partition, files and rows until its folder is deleted (README "Several models").
"""

from collections import defaultdict

import dagster as dg
import pandas as pd

from attn_assets.core.analyses import uniform_baselines
from attn_assets.core.extract import resolve_precision
from attn_assets.core.model import ModelLoadError
from attn_assets.defs.manifest.assets import image_manifest, shard_image_sets
from attn_assets.defs.metadata import table_metadata
from attn_assets.defs.partitions import SHARD_PARTITIONS_NAME, model_shard_partitions
from attn_assets.defs.shard_passes import excluded_metadata, recipe_metadata
from attn_assets.defs.warehouse.assets import attention_warehouse
from attn_assets.passes.current import classify_outputs, model_state, model_statistics_pass
from attn_assets.passes.recipe import PASS_CODE_VERSIONS, statistics_recipe, summarize_reasons
from attn_assets.passes.statistics import compute_statistics_shard
from attn_assets.resources import AttentionModelResource, PipelineResource, WarehouseResource, release_other_encoder
from attn_assets.settings import ENV_MODELS, Settings, models_setting
from attn_assets.storage.atomic import remove_abandoned_temporaries
from attn_assets.metric_names import METRIC_NAMES
from attn_assets.passes.cross_model import paired_differences
from attn_assets.storage.schema import ATTENTION_STATISTICS_BY_MODEL, MODEL_DIFFERENCES, MODELS, SHARD_LOADS_BY_MODEL

_COMMON = dict(group_name="models", owners=["team:attn-assets"], tags={"domain": "models"})


def shards_by_model(partition_keys) -> dict[str, list[str]]:
    """{model key: [shard keys]} of a run's (model, shard) partition keys, in the order given."""
    grouped: dict[str, list[str]] = defaultdict(list)
    for key in partition_keys:
        if not isinstance(key, dg.MultiPartitionKey):
            key = model_shard_partitions.get_partition_key_from_str(key)
        dimensions = key.keys_by_dimension
        grouped[dimensions["model"]].append(dimensions["shard"])
    return dict(grouped)


@dg.asset(
    deps=[image_manifest, shard_image_sets],
    partitions_def=model_shard_partitions,
    # a backfill of one model's shards runs 4 per run (Dagster groups neighbouring keys, never across models):
    # the model loads once per run; measured in the UI on 50 shards, 13 runs instead of 50, 3.2x faster
    backfill_policy=dg.BackfillPolicy.multi_run(max_partitions_per_run=4),
    pool="gpu",
    kinds={"pytorch", "parquet"},
    code_version=PASS_CODE_VERSIONS["statistics"],
    description=(
        "One listed model (ATTN_ASSETS_MODELS) over one shard: the statistics pass (CLS maps, the six metrics, "
        "per-layer/head/artifact/spatial statistics, CLS embeddings) -> models/<model_key>/shards/<shard>.parquet "
        "with its recipe record; per-model staleness (spec, revision, precision, processor, code version). A "
        "current file of the same recipe (the default model's shards/<shard>.parquet) is linked instead of "
        "recomputed. A model that cannot load fails its own partitions only."
    ),
    **{**_COMMON, "tags": {"domain": "models", "compute": "gpu"}},
)
def model_statistics(context: dg.AssetExecutionContext, pipeline: PipelineResource,
                     attention_model: AttentionModelResource) -> dg.MaterializeResult:
    layout = pipeline.layout
    entries = {entry.key: entry for entry in models_setting()}
    device = attention_model.resolved_device()
    precision = resolve_precision(attention_model.precision, device)
    batch_size = attention_model.resolved_batch_size()
    rows = []
    for key, shard_keys in shards_by_model(context.partition_keys).items():
        entry = entries.get(key)
        if entry is None:
            raise dg.Failure(f"model {key!r} is no longer in {ENV_MODELS}: its files and rows are kept; add it back "
                             f"to recompute, or delete {layout.models_dir / key} to drop it")
        try:
            encoder = attention_model.encoder_for(entry.spec)
        except (ModelLoadError, OSError, ValueError) as error:
            raise dg.Failure(f"model {key!r} ({entry.spec}) cannot be loaded: {error}; its shards were not "
                             f"computed (the other models' are unaffected). Fix or remove it in {ENV_MODELS}.") from error
        recipe = statistics_recipe(entry.spec, attention_model.precision, attention_model.device)
        remove_abandoned_temporaries(layout.model_shards_dir(key))
        others = [other for other in model_folders(layout) if other != key]
        for shard_key in shard_keys:
            outcome = compute_statistics_shard(
                layout=layout, shard_key=shard_key, encoder=encoder, model_spec=entry.spec, device=device,
                precision=precision, batch_size=batch_size, num_workers=attention_model.num_workers,
                logger=context.log, progress_bar=attention_model.progress_bar, recipe=recipe,
                output=layout.model_shard_parquet(key, shard_key),
                # the same spec under another key (a renamed key, a removed-but-kept folder) is linked too
                reuse=[layout.shard_parquet(shard_key),
                       *(layout.model_shard_parquet(other, shard_key) for other in others)])
            context.add_asset_metadata({**recipe_metadata(outcome.record), "model": dg.MetadataValue.text(key)},
                                       partition_key=dg.MultiPartitionKey({"model": key, "shard": shard_key}))
            rows.append({"model": key, "shard": shard_key, "images": outcome.images, "computed": outcome.computed,
                         "failed": outcome.failed, "seconds": round(outcome.seconds, 2)})
    release_other_encoder()
    frame = pd.DataFrame(rows)
    return dg.MaterializeResult(metadata={
        "per_shard": dg.MetadataValue.md(frame.to_markdown(index=False) if len(frame) else "_none_"),
        "images": dg.MetadataValue.int(int(frame["images"].sum()) if len(frame) else 0),
        "failures": dg.MetadataValue.int(int(frame["failed"].sum()) if len(frame) else 0),
        "device": dg.MetadataValue.text(device),
        "precision": dg.MetadataValue.text(precision),
    })


def model_folders(layout) -> list[str]:
    """Model keys with a folder under models/ (listed or removed-but-kept)."""
    return sorted(p.name for p in layout.models_dir.iterdir() if (p / "shards").is_dir()) \
        if layout.models_dir.exists() else []


@dg.asset(
    deps=[model_statistics, attention_warehouse],
    kinds={"duckdb"},
    code_version="1",
    description=(
        "The model dimension in the warehouse: each model folder's current statistics files -> "
        "attention_statistics_by_model, layer/head/artifact/spatial_statistics_by_model and "
        "image_failures_by_model (keyed by model_key; changed files replace their shard's rows of that model "
        "only), the table models (which keys are listed, the default, counts) and country_aggregates_by_model. "
        "A model removed from ATTN_ASSETS_MODELS keeps its rows (as last computed) until its folder is deleted."
    ),
    **_COMMON,
)
def model_tables(context: dg.AssetExecutionContext, pipeline: PipelineResource,
                 warehouse: WarehouseResource) -> dg.MaterializeResult:
    layout = pipeline.layout
    settings = Settings.from_env()
    entries = models_setting()
    store = warehouse.warehouse(context.log)
    shard_keys = context.instance.get_dynamic_partitions(SHARD_PARTITIONS_NAME)
    present = model_folders(layout)
    excluded_count: dict[str, int] = {}
    excluded_all: dict[str, str] = {}
    loaded = []
    for entry in entries:
        current, excluded = classify_outputs(model_statistics_pass(entry.key), shard_keys,
                                             model_state(layout, settings, entry.spec))
        report = store.sync_shards(current, model_key=entry.key)
        excluded_count[entry.key] = len(excluded)
        excluded_all.update({f"{entry.key}/{shard}": reason for shard, reason in excluded.items()})
        loaded.append({"model": entry.key, "loaded": len(report["loaded"]), "unchanged": len(report["unchanged"]),
                       "left out": len(excluded)})
    listed = {entry.key for entry in entries}
    for key in present:
        if key in listed:
            continue
        folder = layout.model_shards_dir(key)
        files = {shard: folder / f"{shard}.parquet" for shard in shard_keys if (folder / f"{shard}.parquet").exists()}
        report = store.sync_shards(files, model_key=key)  # as last computed: no current recipe to judge by
        loaded.append({"model": f"{key} (removed)", "loaded": len(report["loaded"]),
                       "unchanged": len(report["unchanged"]), "left out": 0})
    held = set(store.query(f'SELECT DISTINCT model_key FROM "{SHARD_LOADS_BY_MODEL.name}"')["model_key"])  # every loaded file, failures-only too
    for key in sorted(held - listed - set(present)):  # its folder was deleted: the explicit removal
        store.drop_model(key)
        context.log.info("model %s: folder deleted, rows removed", key)
    if excluded_all:
        context.log.warning("model_tables leaves out %d stale model shard files: %s", len(excluded_all),
                            summarize_reasons(excluded_all))
    count = store.refresh_models([(e.key, e.spec) for e in entries], present, excluded_count,
                                 uniform_baselines=uniform_baselines)
    keys = [entry.key for entry in entries]
    statistics = store.query(
        f'SELECT model_key, image_id, country, {", ".join(METRIC_NAMES)} FROM "{ATTENTION_STATISTICS_BY_MODEL.name}" '
        f"WHERE model_key IN ({', '.join('?' * len(keys))})", keys)
    differences = paired_differences(statistics, keys)
    store.replace_table(MODEL_DIFFERENCES, differences)
    models = store.query(f'SELECT * FROM "{MODELS.name}" ORDER BY position NULLS LAST, model_key')
    return dg.MaterializeResult(metadata={
        **table_metadata(MODELS, count, models),
        "per_model": dg.MetadataValue.md(pd.DataFrame(loaded).to_markdown(index=False) if loaded else "_none_"),
        **excluded_metadata(excluded_all),
        "model_differences_rows": dg.MetadataValue.int(len(differences)),
    })


MODEL_TABLE_ASSETS = (model_tables,)

"""attention_statistics: the model run, one partition per shard."""


import dagster as dg
import pandas as pd

from attn_assets.core.extract import resolve_precision
from attn_assets.defs.manifest.assets import image_manifest, shard_image_sets
from attn_assets.defs.partitions import shard_partitions
from attn_assets.passes.recipe import PASS_CODE_VERSIONS, code_version_from_env, recipe_markdown, statistics_recipe
from attn_assets.defs.shard_passes import recipe_metadata, run_data_version
from attn_assets.passes.statistics import compute_statistics_shard
from attn_assets.process_identity import worker_identity
from attn_assets.resources import AttentionModelResource, PipelineResource
from attn_assets.settings import models_setting
from attn_assets.storage.atomic import remove_abandoned_temporaries

STATISTICS_CODE_VERSION = PASS_CODE_VERSIONS["statistics"]  # bump it there (passes/recipe.py)
SHARDS_PER_RUN = 4

# A backfill runs a few shards per run: the model loads once per run, and one bad shard fails only its run.
MULTI_RUN_BACKFILL = dg.BackfillPolicy.multi_run(max_partitions_per_run=SHARDS_PER_RUN)


@dg.asset(
    group_name="statistics",
    deps=[image_manifest, shard_image_sets],
    partitions_def=shard_partitions,
    backfill_policy=MULTI_RUN_BACKFILL,
    pool="gpu",
    kinds={"pytorch", "parquet"},
    owners=["team:attn-assets"],
    tags={"domain": "statistics", "compute": "gpu"},
    # the pass's version + a digest of the recipe (model, weights, processor, precision) read when the
    # definitions load: a changed ATTN_ASSETS_MODEL / precision / model folder marks every partition stale
    code_version=code_version_from_env("statistics"),
    description=(
        "Last-layer CLS attention of every image in the shard (heads averaged) and the seed's six "
        "metrics, written atomically to `shards/<shard>.parquet` with the CLS maps and the float16 CLS embeddings (PLONK's input). Unreadable images "
        "become failure rows, not a failed run. The model loads once per process. Each file records its "
        "recipe (model key, weights, processor config, precision, code version) and the shard's image set; "
        "a partition whose record differs from the current one is stale."
    ),
)
def attention_statistics(
    context: dg.AssetExecutionContext,
    pipeline: PipelineResource,
    attention_model: AttentionModelResource,
) -> dg.MaterializeResult:
    layout = pipeline.layout
    encoder = attention_model.encoder()  # fails here, before any output is touched
    device = attention_model.resolved_device()
    precision = resolve_precision(attention_model.precision, device)
    batch_size = attention_model.resolved_batch_size()
    # after the load: a hub model's revision resolves from the cache the load has just filled
    recipe = statistics_recipe(attention_model.model, attention_model.precision, attention_model.device)
    remove_abandoned_temporaries(layout.shards_dir)

    outcomes = []
    for shard_key in context.partition_keys:
        context.log.info("Computing %s on %s (%s, batch %d)", shard_key, device, precision, batch_size)
        outcome = compute_statistics_shard(
            layout=layout,
            shard_key=shard_key,
            encoder=encoder,
            model_spec=attention_model.model,
            device=device,
            precision=precision,
            batch_size=batch_size,
            num_workers=attention_model.num_workers,
            logger=context.log,
            progress_bar=attention_model.progress_bar,
            recipe=recipe,
            # the default model's current file of the models group (e.g. after the list was reordered): linked
            reuse=[layout.model_shard_parquet(entry.key, shard_key) for entry in models_setting()
                   if entry.spec == attention_model.model],
        )
        context.add_asset_metadata(recipe_metadata(outcome.record), partition_key=shard_key)
        context.log.info(
            "%s: %d computed, %d failed, %.2f images/s", shard_key, outcome.computed, outcome.failed,
            outcome.images_per_second,
        )
        outcomes.append(outcome)

    per_shard = pd.DataFrame(
        [
            {"shard": o.shard_key, "images": o.images, "computed": o.computed, "failed": o.failed,
             "seconds": round(o.seconds, 2), "images/s": round(o.images_per_second, 3)}
            for o in outcomes
        ]
    )
    images = int(per_shard["images"].sum())
    seconds = float(per_shard["seconds"].sum())
    return dg.MaterializeResult(
        data_version=run_data_version([o.record for o in outcomes]),
        metadata={
            "images": dg.MetadataValue.int(images),
            "computed": dg.MetadataValue.int(int(per_shard["computed"].sum())),
            "failures": dg.MetadataValue.int(int(per_shard["failed"].sum())),
            "images_per_second": dg.MetadataValue.float(images / seconds if seconds else 0.0),
            "device": dg.MetadataValue.text(device),
            "worker": dg.MetadataValue.text(worker_identity()),  # host:pid CUDA_VISIBLE_DEVICES=...
            "model_spec": dg.MetadataValue.text(attention_model.model),
            "precision": dg.MetadataValue.text(precision),
            "recipe": dg.MetadataValue.md(recipe_markdown(recipe)),
            "batch_size": dg.MetadataValue.int(batch_size),
            "per_shard": dg.MetadataValue.md(per_shard.to_markdown(index=False)),
            "paths": dg.MetadataValue.md("\n".join(f"- `{o.path}`" for o in outcomes)),
        }
    )

"""The DuckDB warehouse and what is derived from it in SQL."""


import dagster as dg

from attn_assets.core.analyses import uniform_baselines
from attn_assets.defs.manifest.assets import image_manifest
from attn_assets.defs.metadata import coverage_metadata, table_metadata
from attn_assets.defs.partitions import SHARD_PARTITIONS_NAME
from attn_assets.passes.recipe import recipe_markdown, summarize_reasons
from attn_assets.defs.shard_passes import excluded_metadata, run_state
from attn_assets.passes.current import STATISTICS, CurrentState, classify_outputs
from attn_assets.defs.statistics.assets import attention_statistics
from attn_assets.resources import AttentionModelResource, PipelineResource, WarehouseResource
from attn_assets.storage.atomic import atomic_file
from attn_assets.osv5m_columns import GROUP_DIMENSIONS
from attn_assets.storage.warehouse import per_image_tables
from attn_assets.storage.schema import (
    ATTENTION_STATISTICS,
    COUNTRY_AGGREGATES,
    GROUP_AGGREGATES,
    IMAGE_FAILURES,
    IMAGES,
    MANIFEST_REJECTIONS,
    SEED_CSV_COLUMNS,
)

WAREHOUSE_CODE_VERSION = "2"  # 2: only shard files of the current recipe and image set; countries from the manifest
_COMMON = dict(owners=["team:attn-assets"], tags={"domain": "warehouse"}, code_version=WAREHOUSE_CODE_VERSION)


def shard_files(context: dg.AssetExecutionContext, pipeline: PipelineResource,
                attention_model: AttentionModelResource | None = None) -> tuple[dict, dict, CurrentState]:
    """Statistics files of the registered shards: ({key: path} of the current recipe and image set,
    {key: reason} of those left out, the state they were judged against)."""
    state = run_state(pipeline, attention_model)
    keys = context.instance.get_dynamic_partitions(SHARD_PARTITIONS_NAME)
    current, excluded = classify_outputs(STATISTICS, keys, state)
    return current, excluded, state


@dg.asset(
    group_name="warehouse",
    deps=[image_manifest, attention_statistics],
    kinds={"duckdb"},
    description=(
        "warehouse/attention.duckdb: tables images, attention_statistics, image_failures, "
        "manifest_rejections. Each changed shard file replaces exactly that shard's rows in one "
        "transaction; unchanged shards are not touched. Only shard files whose recorded recipe (model, "
        "weights, processor, precision, code version) and image set equal the current ones are loaded; the "
        "others are left out of every table and listed in the metadata. Countries come from the manifest."
    ),
    **_COMMON,
)
def attention_warehouse(
    context: dg.AssetExecutionContext, pipeline: PipelineResource, warehouse: WarehouseResource,
    attention_model: AttentionModelResource,
) -> dg.MaterializeResult:
    layout = pipeline.layout
    store = warehouse.warehouse(context.log)
    images = store.replace_images(layout.images_parquet)
    rejections = store.replace_rejections(layout.rejections_parquet)
    current, excluded, state = shard_files(context, pipeline, attention_model)
    if excluded:
        context.log.warning(
            "Warehouse leaves out %d shard files that do not hold the current recipe's results (they are stale: "
            "`attn-assets materialize` recomputes them): %s", len(excluded), summarize_reasons(excluded))
    report = store.sync_shards(current)
    conformed = store.conform_to_manifest(per_image_tables())
    context.log.info(
        "Warehouse: %d shards loaded, %d unchanged, %d dropped or left out; manifest: %d rows of withdrawn images "
        "removed, %d countries updated", len(report["loaded"]), len(report["unchanged"]), len(report["dropped"]),
        sum(c["removed"] for c in conformed.values()), sum(c["country_updated"] for c in conformed.values()),
    )
    recipe = state.recipe(STATISTICS)
    with store.reader() as con:
        counts = {t.name: con.execute(f'SELECT count(*) FROM "{t.name}"').fetchone()[0]
                  for t in (IMAGES, ATTENTION_STATISTICS, IMAGE_FAILURES, MANIFEST_REJECTIONS)}
        preview = con.execute(
            f'SELECT * EXCLUDE (computed_at) FROM "{ATTENTION_STATISTICS.name}" ORDER BY image_id LIMIT 10'
        ).df()
        failures = con.execute(f'SELECT image_id, path, reason FROM "{IMAGE_FAILURES.name}" ORDER BY image_id LIMIT 10').df()
    return dg.MaterializeResult(
        metadata={
            **table_metadata(ATTENTION_STATISTICS, counts[ATTENTION_STATISTICS.name], preview),
            "images_rows": dg.MetadataValue.int(images),
            "image_failures_rows": dg.MetadataValue.int(counts[IMAGE_FAILURES.name]),
            "manifest_rejections_rows": dg.MetadataValue.int(rejections),
            "failures_preview": dg.MetadataValue.md(failures.to_markdown(index=False) if len(failures) else "_none_"),
            "shards_loaded": dg.MetadataValue.text(", ".join(report["loaded"]) or "none"),
            "shards_unchanged": dg.MetadataValue.int(len(report["unchanged"])),
            "shards_dropped": dg.MetadataValue.text(", ".join(report["dropped"]) or "none"),
            **excluded_metadata(excluded),
            "model_key": dg.MetadataValue.text(recipe.model_key),
            "recipe_fingerprint": dg.MetadataValue.text(recipe.fingerprint),
            "recipe": dg.MetadataValue.md(recipe_markdown(recipe)),
            "withdrawn_rows_removed": dg.MetadataValue.int(sum(c["removed"] for c in conformed.values())),
            "countries_updated": dg.MetadataValue.int(
                conformed.get(ATTENTION_STATISTICS.name, {}).get("country_updated", 0)),
            "path": dg.MetadataValue.path(str(store.path)),
        }
    )


@dg.asset(
    group_name="warehouse",
    deps=[attention_warehouse],
    kinds={"duckdb", "sql"},
    description=(
        "Per-country image count and mean/std/min/max of every metric, computed in DuckDB, with each "
        "metric's value for uniform attention beside it (`<metric>_uniform`)."
    ),
    **_COMMON,
)
def country_aggregates(context: dg.AssetExecutionContext, warehouse: WarehouseResource) -> dg.MaterializeResult:
    store = warehouse.warehouse(context.log)
    rows = store.refresh_country_aggregates(uniform_baselines=uniform_baselines)
    preview = store.query(
        'SELECT country, country_name, image_count, attention_entropy_mean, attention_entropy_uniform, '
        'attention_concentration_top10_mean, attention_concentration_top10_uniform, num_high_attention_patches_mean '
        f'FROM "{COUNTRY_AGGREGATES.name}" ORDER BY image_count DESC, country LIMIT 15'
    )
    return dg.MaterializeResult(metadata={**table_metadata(COUNTRY_AGGREGATES, rows, preview.round(4)),
                                          **coverage_metadata(store)})


@dg.asset(
    group_name="warehouse",
    deps=[attention_warehouse],
    kinds={"duckdb", "sql"},
    description=(
        "group_aggregates: country_aggregates' statistics and uniform baselines per value of each OSV-5M "
        f"metadata column in {', '.join(GROUP_DIMENSIONS)} (columns dimension, value); NULL value = unknown."
    ),
    **_COMMON,
)
def group_aggregates(context: dg.AssetExecutionContext, warehouse: WarehouseResource) -> dg.MaterializeResult:
    store = warehouse.warehouse(context.log)
    rows = store.refresh_group_aggregates(uniform_baselines=uniform_baselines)
    preview = store.query(
        'SELECT dimension, "value", image_count, attention_entropy_mean, attention_entropy_uniform, '
        'attention_concentration_top10_mean, attention_concentration_top10_uniform '
        f'FROM "{GROUP_AGGREGATES.name}" ORDER BY dimension, image_count DESC, "value" LIMIT 30'
    )
    return dg.MaterializeResult(metadata=table_metadata(GROUP_AGGREGATES, rows, preview.round(4)))


@dg.asset(
    group_name="warehouse",
    deps=[attention_warehouse],
    kinds={"csv"},
    description="The seed's attention_analysis/attention_statistics.csv with its documented columns.",
    **_COMMON,
)
def attention_statistics_csv(
    context: dg.AssetExecutionContext, pipeline: PipelineResource, warehouse: WarehouseResource
) -> dg.MaterializeResult:
    target = pipeline.layout.statistics_csv
    store = warehouse.warehouse(context.log)
    columns = ", ".join(f'"{c}"' for c in SEED_CSV_COLUMNS)
    with store.reader() as con, atomic_file(target) as tmp:
        con.execute(
            f'COPY (SELECT {columns} FROM "{ATTENTION_STATISTICS.name}" ORDER BY image_id) TO ? (HEADER, DELIMITER \',\')',
            [str(tmp)],
        )
        rows = con.execute(f'SELECT count(*) FROM "{ATTENTION_STATISTICS.name}"').fetchone()[0]
    return dg.MaterializeResult(
        metadata={"dagster/row_count": dg.MetadataValue.int(rows), "path": dg.MetadataValue.path(str(target)),
                  **coverage_metadata(store)}
    )


# -- checks ------------------------------------------------------------------------------

_RANGE_VIOLATIONS_SQL = f"""
SELECT
  count(*) FILTER (WHERE attention_entropy < -1e-6 OR attention_entropy > ln(num_patches) + 1e-6) AS entropy,
  count(*) FILTER (WHERE attention_concentration_top10 < 0 OR attention_concentration_top10 > 1 + 1e-6) AS top10,
  count(*) FILTER (WHERE attention_concentration_top25 < 0 OR attention_concentration_top25 > 1 + 1e-6) AS top25,
  count(*) FILTER (WHERE attention_concentration_top25 < attention_concentration_top10 - 1e-9) AS top25_below_top10,
  count(*) FILTER (WHERE num_high_attention_patches < 0 OR num_high_attention_patches > num_patches) AS high_patches,
  count(*) FILTER (WHERE attention_max < 0 OR attention_max > 1 + 1e-6 OR attention_spread < 0) AS max_or_spread,
  count(*) FILTER (WHERE isnan(attention_entropy) OR isnan(attention_spread)) AS nan_values
FROM "{ATTENTION_STATISTICS.name}"
"""


@dg.asset_check(asset=attention_warehouse, blocking=True,
                description="Entropy in [0, ln N], concentrations in [0, 1], top25 >= top10, counts in [0, N].")
def metric_ranges(warehouse: WarehouseResource) -> dg.AssetCheckResult:
    violations = warehouse.warehouse().query(_RANGE_VIOLATIONS_SQL).iloc[0].to_dict()
    return dg.AssetCheckResult(
        passed=all(int(v) == 0 for v in violations.values()),
        metadata={f"violations_{k}": dg.MetadataValue.int(int(v)) for k, v in violations.items()},
    )


@dg.asset_check(asset=attention_warehouse, blocking=True,
                description="Every image appears once across attention_statistics and image_failures.")
def unique_image_ids(warehouse: WarehouseResource) -> dg.AssetCheckResult:
    duplicates = warehouse.warehouse().query(
        f'SELECT image_id, count(*) AS n FROM (SELECT image_id FROM "{ATTENTION_STATISTICS.name}" '
        f'UNION ALL SELECT image_id FROM "{IMAGE_FAILURES.name}") GROUP BY image_id HAVING n > 1 ORDER BY image_id'
    )
    return dg.AssetCheckResult(
        passed=duplicates.empty,
        metadata={"duplicate_ids": dg.MetadataValue.int(len(duplicates)),
                  "examples": dg.MetadataValue.text(", ".join(duplicates["image_id"].head(10)))},
    )


@dg.asset_check(asset=attention_warehouse, blocking=True,
                description="Rows in DuckDB equal the computed and failed images in the shard files.")
def row_counts_match_shards(warehouse: WarehouseResource) -> dg.AssetCheckResult:
    row = warehouse.warehouse().query(
        f"""SELECT
          (SELECT count(*) FROM "{ATTENTION_STATISTICS.name}") AS statistics_rows,
          (SELECT coalesce(sum(ok_rows), 0) FROM shard_loads) AS shard_ok_rows,
          (SELECT count(*) FROM "{IMAGE_FAILURES.name}") AS failure_rows,
          (SELECT coalesce(sum(failed_rows), 0) FROM shard_loads) AS shard_failed_rows"""
    ).iloc[0]
    return dg.AssetCheckResult(
        passed=bool(row.statistics_rows == row.shard_ok_rows and row.failure_rows == row.shard_failed_rows),
        metadata={k: dg.MetadataValue.int(int(v)) for k, v in row.to_dict().items()},
    )


@dg.asset_check(asset=attention_warehouse, blocking=True,
                description="attention_statistics and image_failures hold one model spec and precision (one recipe).")
def single_recipe(warehouse: WarehouseResource) -> dg.AssetCheckResult:
    recipes = warehouse.warehouse().query(
        f'SELECT model_spec, precision, count(*) AS n FROM (SELECT model_spec, precision FROM "{ATTENTION_STATISTICS.name}" '
        f'UNION ALL SELECT model_spec, precision FROM "{IMAGE_FAILURES.name}") GROUP BY ALL ORDER BY n DESC')
    return dg.AssetCheckResult(
        passed=len(recipes) <= 1,
        metadata={"recipes": dg.MetadataValue.int(len(recipes)),
                  "by_recipe": dg.MetadataValue.md(recipes.to_markdown(index=False) if len(recipes) else "_none_")},
    )


@dg.asset_check(asset=attention_warehouse,
                description="Warns when the share of images that failed exceeds ATTN_ASSETS_FAILURE_RATE_WARN.")
def failure_rate(pipeline: PipelineResource, warehouse: WarehouseResource) -> dg.AssetCheckResult:
    ok, failed = warehouse.warehouse().query(
        f'SELECT (SELECT count(*) FROM "{ATTENTION_STATISTICS.name}"), (SELECT count(*) FROM "{IMAGE_FAILURES.name}")'
    ).iloc[0]
    total = int(ok) + int(failed)
    rate = failed / total if total else 0.0
    return dg.AssetCheckResult(
        passed=bool(rate <= pipeline.failure_rate_warn),
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"failure_rate": dg.MetadataValue.float(float(rate)),
                  "threshold": dg.MetadataValue.float(pipeline.failure_rate_warn),
                  "failed_images": dg.MetadataValue.int(int(failed))},
    )


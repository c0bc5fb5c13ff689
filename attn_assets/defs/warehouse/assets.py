"""The DuckDB warehouse and what is derived from it in SQL."""


import dagster as dg

from attn_assets.core.analyses import uniform_baselines
from attn_assets.defs.manifest.assets import image_manifest
from attn_assets.defs.metadata import table_metadata
from attn_assets.defs.partitions import SHARD_PARTITIONS_NAME
from attn_assets.defs.statistics.assets import attention_statistics
from attn_assets.resources import PipelineResource, WarehouseResource
from attn_assets.storage.atomic import atomic_file
from attn_assets.storage.schema import (
    ATTENTION_STATISTICS,
    COUNTRY_AGGREGATES,
    IMAGE_FAILURES,
    IMAGES,
    MANIFEST_REJECTIONS,
    SEED_CSV_COLUMNS,
)

WAREHOUSE_CODE_VERSION = "1"
_COMMON = dict(owners=["team:attn-assets"], tags={"domain": "warehouse"}, code_version=WAREHOUSE_CODE_VERSION)


def shard_files(context: dg.AssetExecutionContext, pipeline: PipelineResource) -> dict:
    """Parquet files of the registered shards that have been computed."""
    layout = pipeline.layout
    keys = context.instance.get_dynamic_partitions(SHARD_PARTITIONS_NAME)
    return {key: layout.shard_parquet(key) for key in keys if layout.shard_parquet(key).exists()}


@dg.asset(
    group_name="warehouse",
    deps=[image_manifest, attention_statistics],
    kinds={"duckdb"},
    description=(
        "warehouse/attention.duckdb: tables images, attention_statistics, image_failures, "
        "manifest_rejections. Each changed shard file replaces exactly that shard's rows in one "
        "transaction; unchanged shards are not touched."
    ),
    **_COMMON,
)
def attention_warehouse(
    context: dg.AssetExecutionContext, pipeline: PipelineResource, warehouse: WarehouseResource
) -> dg.MaterializeResult:
    layout = pipeline.layout
    store = warehouse.warehouse(context.log)
    images = store.replace_images(layout.images_parquet)
    rejections = store.replace_rejections(layout.rejections_parquet)
    report = store.sync_shards(shard_files(context, pipeline))
    context.log.info(
        "Warehouse: %d shards loaded, %d unchanged, %d dropped", len(report["loaded"]), len(report["unchanged"]),
        len(report["dropped"]),
    )
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
    return dg.MaterializeResult(metadata=table_metadata(COUNTRY_AGGREGATES, rows, preview.round(4)))


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
        metadata={"dagster/row_count": dg.MetadataValue.int(rows), "path": dg.MetadataValue.path(str(target))}
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


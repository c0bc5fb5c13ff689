"""The one definition of every table and file the pipeline writes.

Writers and readers (Parquet shards, the DuckDB warehouse, the CSV export, Dagster
metadata) all derive their columns from here, so a column is renamed in one place.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

METRIC_COLUMNS: tuple[str, ...] = (
    "attention_entropy",
    "attention_max",
    "attention_concentration_top10",
    "attention_concentration_top25",
    "num_high_attention_patches",
    "attention_spread",
)

_ARROW_TYPES = {
    "VARCHAR": pa.string(),
    "DOUBLE": pa.float64(),
    "BIGINT": pa.int64(),
    "INTEGER": pa.int32(),
    "TIMESTAMP": pa.timestamp("us"),
    "FLOAT[]": pa.list_(pa.float32()),
    "JSON": pa.string(),
}


@dataclass(frozen=True)
class Column:
    name: str
    sql_type: str
    description: str
    nullable: bool = True


@dataclass(frozen=True)
class Table:
    name: str
    description: str
    columns: tuple[Column, ...]
    key: tuple[str, ...] = ()

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    def create_sql(self) -> str:
        parts = [f'"{c.name}" {c.sql_type}{"" if c.nullable else " NOT NULL"}' for c in self.columns]
        if self.key:
            parts.append("PRIMARY KEY (" + ", ".join(f'"{k}"' for k in self.key) + ")")
        return f'CREATE TABLE IF NOT EXISTS "{self.name}" (\n  ' + ",\n  ".join(parts) + "\n)"

    def arrow_schema(self) -> pa.Schema:
        return pa.schema([pa.field(c.name, _ARROW_TYPES[c.sql_type], nullable=c.nullable) for c in self.columns])


_METRIC_DESCRIPTIONS = {
    "attention_entropy": "entropy of the CLS attention renormalized to sum 1 (seed formula; nats)",
    "attention_max": "largest CLS-to-patch attention weight (un-renormalized)",
    "attention_concentration_top10": "share of renormalized attention in the top 10% of patches (fraction)",
    "attention_concentration_top25": "share of renormalized attention in the top 25% of patches (fraction)",
    "num_high_attention_patches": "patches with attention above the mean",
    "attention_spread": "population standard deviation of the un-renormalized attention",
}


def _metric_columns() -> tuple[Column, ...]:
    return tuple(
        Column(name, "BIGINT" if name == "num_high_attention_patches" else "DOUBLE", _METRIC_DESCRIPTIONS[name])
        for name in METRIC_COLUMNS
    )


_PROVENANCE = (
    Column("model_spec", "VARCHAR", "model spec that produced the row (ATTN_ASSETS_MODEL)", nullable=False),
    Column("precision", "VARCHAR", "fp32 or bf16", nullable=False),
    Column("computed_at", "TIMESTAMP", "UTC time the shard was computed", nullable=False),
)

SHARD_RESULTS = Table(
    name="shard_results",
    description="One Parquet file per shard: every image of the shard, computed or failed, with its CLS map.",
    columns=(
        Column("image_id", "VARCHAR", "manifest image id", nullable=False),
        Column("shard_key", "VARCHAR", "partition the image belongs to", nullable=False),
        Column("path", "VARCHAR", "image path relative to the image root"),
        Column("country", "VARCHAR", "ISO 3166-1 alpha-2 code from the manifest"),
        Column("status", "VARCHAR", "'ok' or 'failed'", nullable=False),
        Column("failure_reason", "VARCHAR", "why the image could not be processed"),
        *_metric_columns(),
        Column("image_width", "INTEGER", "original image width in pixels"),
        Column("image_height", "INTEGER", "original image height in pixels"),
        Column("crop_left", "DOUBLE", "model view (resize + center crop) in original pixels: left"),
        Column("crop_top", "DOUBLE", "model view in original pixels: top"),
        Column("crop_right", "DOUBLE", "model view in original pixels: right"),
        Column("crop_bottom", "DOUBLE", "model view in original pixels: bottom"),
        Column("grid_height", "INTEGER", "patch rows of the CLS map"),
        Column("grid_width", "INTEGER", "patch columns of the CLS map"),
        Column("cls_map", "FLOAT[]", "head-averaged last-layer CLS-to-patch attention, row-major"),
        *_PROVENANCE,
    ),
    key=("image_id",),
)

IMAGES = Table(
    name="images",
    description="Validated manifest rows with their stable shard and resolved country.",
    columns=(
        Column("image_id", "VARCHAR", "manifest image id (kept as text)", nullable=False),
        Column("shard_key", "VARCHAR", "stable partition of the image", nullable=False),
        Column("path", "VARCHAR", "image path relative to the image root", nullable=False),
        Column("abs_path", "VARCHAR", "resolved image path, checked to lie inside the image root", nullable=False),
        Column("country", "VARCHAR", "ISO 3166-1 alpha-2 code"),
        Column("country_name", "VARCHAR", "country name from pycountry"),
        Column("country_source", "VARCHAR", "manifest, unique_country or reverse_geocoder"),
        Column("latitude", "DOUBLE", "degrees"),
        Column("longitude", "DOUBLE", "degrees"),
        Column("source_file", "VARCHAR", "manifest file the row came from"),
        Column("source_row", "BIGINT", "line of the row in that file (header = 1)"),
        Column("extra", "JSON", "every other manifest column, as text"),
    ),
    key=("image_id",),
)

ATTENTION_STATISTICS = Table(
    name="attention_statistics",
    description="The seed's six attention metrics per image (last layer, heads averaged).",
    columns=(
        Column("image_id", "VARCHAR", "manifest image id", nullable=False),
        Column("shard_key", "VARCHAR", "partition that computed the row", nullable=False),
        Column("country", "VARCHAR", "ISO 3166-1 alpha-2 code"),
        *_metric_columns(),
        Column("num_patches", "BIGINT", "patches in the CLS map (576 for StreetCLIP)"),
        *_PROVENANCE,
    ),
    key=("image_id",),
)

IMAGE_FAILURES = Table(
    name="image_failures",
    description="Images that could not be processed, with a reason a person understands.",
    columns=(
        Column("image_id", "VARCHAR", "manifest image id", nullable=False),
        Column("shard_key", "VARCHAR", "partition that tried it", nullable=False),
        Column("path", "VARCHAR", "image path relative to the image root"),
        Column("reason", "VARCHAR", "what went wrong and what to do", nullable=False),
        *_PROVENANCE,
    ),
    key=("image_id",),
)

MANIFEST_REJECTIONS = Table(
    name="manifest_rejections",
    description="Manifest rows that were not accepted, with the column and the reason.",
    columns=(
        Column("source_file", "VARCHAR", "manifest file", nullable=False),
        Column("source_row", "BIGINT", "line in that file (header = 1)"),
        Column("image_id", "VARCHAR", "image id as written, if any"),
        Column("column_name", "VARCHAR", "column at fault"),
        Column("reason", "VARCHAR", "why the row was rejected", nullable=False),
        Column("raw", "VARCHAR", "the row as JSON"),
    ),
)

_AGGREGATE_COLUMNS = tuple(
    Column(f"{metric}_{stat}", "DOUBLE", f"{stat} of {metric} over the country's images")
    for metric in METRIC_COLUMNS
    for stat in ("mean", "std", "min", "max")
)

COUNTRY_AGGREGATES = Table(
    name="country_aggregates",
    description="Per-country image count and mean/std/min/max of each metric (the seed's groupby).",
    columns=(
        Column("country", "VARCHAR", "ISO 3166-1 alpha-2 code ('' when unknown)", nullable=False),
        Column("country_name", "VARCHAR", "country name"),
        Column("image_count", "BIGINT", "images with statistics", nullable=False),
        *_AGGREGATE_COLUMNS,
    ),
    key=("country",),
)

SHARD_LOADS = Table(
    name="shard_loads",
    description="Bookkeeping: which shard Parquet file version the warehouse holds.",
    columns=(
        Column("shard_key", "VARCHAR", "partition", nullable=False),
        Column("parquet_path", "VARCHAR", "file loaded", nullable=False),
        Column("parquet_mtime_ns", "BIGINT", "file modification time when loaded", nullable=False),
        Column("parquet_size", "BIGINT", "file size when loaded", nullable=False),
        Column("ok_rows", "BIGINT", "images with statistics", nullable=False),
        Column("failed_rows", "BIGINT", "images that failed", nullable=False),
        Column("loaded_at", "TIMESTAMP", "UTC time of the load", nullable=False),
    ),
    key=("shard_key",),
)

WAREHOUSE_TABLES: tuple[Table, ...] = (
    IMAGES,
    ATTENTION_STATISTICS,
    IMAGE_FAILURES,
    MANIFEST_REJECTIONS,
    COUNTRY_AGGREGATES,
    SHARD_LOADS,
)

# The seed's attention_statistics.csv columns, in its documented order.
SEED_CSV_COLUMNS: tuple[str, ...] = ("image_id", "country", *METRIC_COLUMNS)

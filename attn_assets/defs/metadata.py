"""Metadata helpers: how tables and frames show up in the Dagster UI."""

from __future__ import annotations

import pandas as pd
import dagster as dg

from attn_assets.figures import figure_footer
from attn_assets.figures.preview import png_preview_markdown
from attn_assets.storage.schema import Table

_DAGSTER_TYPES = {"VARCHAR": "string", "DOUBLE": "float", "BIGINT": "int", "INTEGER": "int",
                  "TIMESTAMP": "datetime", "FLOAT[]": "list[float]", "JSON": "json"}


def table_schema(table: Table) -> dg.TableSchema:
    return dg.TableSchema(
        columns=[
            dg.TableColumn(c.name, _DAGSTER_TYPES.get(c.sql_type, c.sql_type), description=c.description)
            for c in table.columns
        ]
    )


def frame_preview(frame: pd.DataFrame, rows: int = 10) -> dg.MetadataValue:
    head = frame.head(rows)
    return dg.MetadataValue.md(head.to_markdown(index=False) if len(head) else "_(no rows)_")


def figure_metadata(path, **extra) -> dict:
    """A figure's path and an inline preview, as the analyses' figure assets report them."""
    return {"figure": dg.MetadataValue.path(str(path)),
            "figure_preview": dg.MetadataValue.md(png_preview_markdown(path)), **extra}


def table_metadata(table: Table, row_count: int, preview: pd.DataFrame | None = None) -> dict:
    metadata = {
        "dagster/row_count": dg.MetadataValue.int(int(row_count)),
        "dagster/column_schema": table_schema(table),
        "dagster/table_name": dg.MetadataValue.text(table.name),
    }
    if preview is not None:
        metadata["preview"] = frame_preview(preview)
    return metadata


def coverage_metadata(store) -> dict:
    """What a warehouse-derived output covers: the model its rows come from, and the manifest shards and
    images left out of it (their shard files hold another recipe or image set, or were never computed)."""
    row = store.query(
        "SELECT (SELECT string_agg(DISTINCT model_spec, ', ' ORDER BY model_spec) FROM attention_statistics) AS models, "
        "(SELECT count(DISTINCT shard_key) FROM images WHERE shard_key NOT IN (SELECT shard_key FROM shard_loads)) "
        "AS shards, (SELECT count(*) FROM images WHERE shard_key NOT IN (SELECT shard_key FROM shard_loads)) AS images"
    ).iloc[0]
    return {
        "model_spec": dg.MetadataValue.text(row.models if isinstance(row.models, str) else "none"),
        "shards_without_current_results": dg.MetadataValue.int(int(row.shards)),
        "images_without_current_results": dg.MetadataValue.int(int(row.images)),
    }


def model_footer(store, images: int | None = None, detail: str | None = None) -> str:
    """The footer of a warehouse-derived figure: the model spec(s) and precision of the attention_statistics rows
    and ``images`` (default: how many rows there are), as `figures._mpl.figure_footer` writes it."""
    row = store.query(
        "SELECT string_agg(DISTINCT model_spec || ' (' || precision || ')', ', ' ORDER BY model_spec || ' (' || "
        "precision || ')') AS models, count(*) AS n FROM attention_statistics"
    ).iloc[0]
    models = row.models if isinstance(row.models, str) else None
    return figure_footer(models, int(row.n) if images is None else images, detail)

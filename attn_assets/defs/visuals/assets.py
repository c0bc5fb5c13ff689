"""The seed's figures and folders, drawn from the warehouse and the stored CLS maps.

Nothing here runs the model. Galleries read only the rows they draw (ORDER BY ... LIMIT in
DuckDB); every file and folder is written atomically.
"""


from collections.abc import Sequence
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd

from attn_assets import figures
from attn_assets.defs.metadata import coverage_metadata, model_footer
from attn_assets.defs.warehouse.assets import attention_warehouse, country_aggregates
from attn_assets.resources import PipelineResource, WarehouseResource
from attn_assets.storage.layout import HomeLayout
from attn_assets.storage.parquet import read_cls_maps, read_maps_and_boxes
from attn_assets.metric_names import METRIC_NAMES
from attn_assets.storage.schema import ATTENTION_STATISTICS, IMAGES, UNKNOWN_COUNTRY

VISUALS_CODE_VERSION = "1"
# Figures are drawn from the warehouse, which holds only the shards of the current recipe and manifest; their
# metadata says which model that is and how many manifest shards/images are left out (coverage_metadata).
_COMMON = dict(
    group_name="visuals",
    kinds={"matplotlib", "png"},
    owners=["team:attn-assets"],
    tags={"domain": "visuals"},
    code_version=VISUALS_CODE_VERSION,
)
_ROWS_SQL = (
    f'SELECT s.image_id, s.shard_key, coalesce(s.country, \'\') AS country, i.country_name, i.abs_path, i.member, '
    + ", ".join(f"s.{m}" for m in METRIC_NAMES)
    + f' FROM "{ATTENTION_STATISTICS.name}" s LEFT JOIN "{IMAGES.name}" i USING (image_id)'
)


def _rows(warehouse: WarehouseResource, where_order_limit: str = "", params: Sequence = ()) -> pd.DataFrame:
    return warehouse.warehouse().query(f"{_ROWS_SQL} {where_order_limit}", list(params))


def _image_metadata(path: Path, **extra) -> dict:
    return {"path": dg.MetadataValue.path(str(path)), "preview": dg.MetadataValue.md(figures.png_preview_markdown(path)), **extra}


@dg.asset(deps=[attention_warehouse], description="attention_distributions.png: histograms of the four headline metrics with mean, std and the seed's interpretation bands.", **_COMMON)
def attention_distributions(pipeline: PipelineResource, warehouse: WarehouseResource) -> dg.MaterializeResult:
    columns = warehouse.warehouse().query(
        f'SELECT {", ".join(figures.DISTRIBUTION_METRICS)} FROM "{ATTENTION_STATISTICS.name}"'
    )
    target = pipeline.layout.analysis_dir / "attention_distributions.png"
    # uniform-attention baselines (closed form for N patches; seed usage tip 1), drawn as dashed lines
    from attn_assets.core.analyses import uniform_baselines

    patches = warehouse.warehouse().query(f'SELECT max(num_patches) AS n FROM "{ATTENTION_STATISTICS.name}"')["n"].iloc[0]
    baselines = None
    if not pd.isna(patches):
        baselines = {m: {f"uniform (N={int(patches)})": v} for m, v in uniform_baselines(int(patches)).items()}
    drawn = figures.render_distributions({c: columns[c].to_numpy(dtype=float) for c in columns}, target, baselines,
                                         footer=model_footer(warehouse.warehouse()))
    return dg.MaterializeResult(
        metadata=_image_metadata(
            target,
            **coverage_metadata(warehouse.warehouse()),
            images=dg.MetadataValue.int(len(columns)),
            **{f"{metric}_mean": dg.MetadataValue.float(float(stats["mean"])) for metric, stats in drawn.items()},
        )
    )


@dg.asset(deps=[attention_warehouse], description="visualizations/diverse_examples_grid.png: 20 examples spread over metric space and countries, deterministic.", **_COMMON)
def diverse_examples_grid(pipeline: PipelineResource, warehouse: WarehouseResource) -> dg.MaterializeResult:
    # at most 20,000 candidates, drawn reproducibly, so selection stays fast at millions of rows
    candidates = _rows(warehouse, "ORDER BY hash(s.image_id), s.image_id LIMIT 20000")
    chosen = figures.select_diverse(candidates, n=20)
    rows = candidates.set_index("image_id").loc[chosen].reset_index()
    maps, boxes = read_maps_and_boxes(pipeline.layout, rows)
    target = pipeline.layout.visualizations_dir / "diverse_examples_grid.png"
    figures.render_diverse_grid(rows, maps, boxes, target, n=20, image_ids=chosen,
                                footer=model_footer(warehouse.warehouse(), detail=f"{len(chosen)} shown"))
    return dg.MaterializeResult(metadata=_image_metadata(target, examples=dg.MetadataValue.int(len(chosen)),
                                                         **coverage_metadata(warehouse.warehouse())))


def _gallery_asset(folder: str, metric: str, highest: bool) -> dg.AssetsDefinition:
    order = "DESC" if highest else "ASC"

    @dg.asset(
        name=f"gallery_{folder}",
        deps=[attention_warehouse],
        description=f"visualizations/{folder}/: triptychs of the images with the {'highest' if highest else 'lowest'} {metric}, with index.csv.",
        **_COMMON,
    )
    def gallery(context: dg.AssetExecutionContext, pipeline: PipelineResource, warehouse: WarehouseResource) -> dg.MaterializeResult:
        rows = _rows(warehouse, f"WHERE NOT isnan(s.{metric}) ORDER BY s.{metric} {order}, s.image_id LIMIT ?", [pipeline.gallery_size])
        maps, boxes = read_maps_and_boxes(pipeline.layout, rows)
        target = pipeline.layout.visualizations_dir / folder
        footer = model_footer(warehouse.warehouse(), detail=f"{'highest' if highest else 'lowest'} {metric}")
        result = figures.render_gallery(rows, maps, boxes, target, metric, footer=footer)
        for image_id in result.skipped:
            context.log.warning("%s: image %s is gone since its statistics were computed; skipped", folder, image_id)
        first = result.paths[0] if result.paths else None
        metadata = {
            "path": dg.MetadataValue.path(str(target)),
            "images": dg.MetadataValue.int(len(result.paths)),
            "skipped": dg.MetadataValue.int(len(result.skipped)),
            "index": dg.MetadataValue.md(rows[["image_id", "country", metric]].to_markdown(index=False)),
            **coverage_metadata(warehouse.warehouse()),
        }
        if first is not None:
            metadata["preview"] = dg.MetadataValue.md(figures.png_preview_markdown(first))
        return dg.MaterializeResult(metadata=metadata)

    return gallery


gallery_assets = [_gallery_asset(folder, metric, highest) for folder, (metric, highest) in figures.GALLERIES.items()]


def _country_mean_maps(layout: HomeLayout, warehouse: WarehouseResource, countries: list[str]) -> tuple[dict, dict]:
    """Mean CLS map per country, streamed shard by shard (never all maps in memory)."""
    shards = warehouse.warehouse().query(
        f'SELECT DISTINCT shard_key FROM "{ATTENTION_STATISTICS.name}" '
        "WHERE coalesce(country, ?) IN (SELECT unnest(?)) ORDER BY 1",
        [UNKNOWN_COUNTRY, countries],
    )["shard_key"]
    sums: dict[str, np.ndarray] = {}
    counts: dict[str, int] = {}
    for shard_key in shards:
        ids = warehouse.warehouse().query(
            f'SELECT image_id, coalesce(country, ?) AS country FROM "{ATTENTION_STATISTICS.name}" '
            "WHERE shard_key = ? AND coalesce(country, ?) IN (SELECT unnest(?))",
            [UNKNOWN_COUNTRY, shard_key, UNKNOWN_COUNTRY, countries],
        )
        maps, _ = read_cls_maps(layout.shard_parquet(shard_key), list(ids["image_id"]), with_boxes=True)
        for image_id, country in zip(ids["image_id"], ids["country"]):
            if image_id in maps:
                sums[country] = sums.get(country, 0) + maps[image_id].astype(np.float64)
                counts[country] = counts.get(country, 0) + 1
    return {c: (sums[c] / counts[c]).astype(np.float32) for c in sums}, counts


@dg.asset(deps=[attention_warehouse, country_aggregates], description="visualizations/country_boxplots.png (entropy and concentration for the countries with most images, by median) and country_mean_maps.png (mean CLS map per country).", **_COMMON)
def country_figures(pipeline: PipelineResource, warehouse: WarehouseResource) -> dg.MaterializeResult:
    layout = pipeline.layout
    frame = warehouse.warehouse().query(
        f'SELECT s.image_id, coalesce(s.country, \'\') AS country, i.country_name, s.attention_entropy, '
        f's.attention_concentration_top10 FROM "{ATTENTION_STATISTICS.name}" s LEFT JOIN "{IMAGES.name}" i USING (image_id)'
    )
    boxplots = layout.visualizations_dir / "country_boxplots.png"
    footer = model_footer(warehouse.warehouse())
    drawn = figures.render_country_boxplots(frame, boxplots, footer=footer)
    countries = figures.top_countries(frame, top_n=24)
    mean_maps, counts = _country_mean_maps(layout, warehouse, countries)
    mean_maps_path = layout.visualizations_dir / "country_mean_maps.png"
    names = dict(zip(frame["country"], frame["country_name"].fillna("")))
    figures.render_country_mean_maps(mean_maps, counts, mean_maps_path, country_names=names,
                                     footer=model_footer(warehouse.warehouse(), sum(counts.values())))
    return dg.MaterializeResult(
        metadata={
            **_image_metadata(boxplots),
            "mean_maps_path": dg.MetadataValue.path(str(mean_maps_path)),
            "mean_maps_preview": dg.MetadataValue.md(figures.png_preview_markdown(mean_maps_path)),
            "countries": dg.MetadataValue.text(", ".join(next(iter(drawn.values()), []))),
            **coverage_metadata(warehouse.warehouse()),
        }
    )


@dg.asset(deps=[attention_warehouse], description="The seed's 'Overall Statistics' table (mean, std, min, max per metric) as overall_statistics.md and .png.", **_COMMON)
def overall_statistics(pipeline: PipelineResource, warehouse: WarehouseResource) -> dg.MaterializeResult:
    frame = warehouse.warehouse().query(f'SELECT {", ".join(METRIC_NAMES)} FROM "{ATTENTION_STATISTICS.name}"')
    table = figures.overall_statistics_table(frame)
    markdown = figures.overall_statistics_markdown(table, title=f"Overall Statistics ({len(frame):,} images)")
    analysis = pipeline.layout.analysis_dir
    with figures.atomic_file(analysis / "overall_statistics.md") as tmp:
        Path(tmp).write_text(markdown + "\n", encoding="utf-8")
    png = figures.render_table_png(table, analysis / "overall_statistics.png", footer=model_footer(warehouse.warehouse()))
    return dg.MaterializeResult(metadata={**_image_metadata(png), "table": dg.MetadataValue.md(markdown),
                                          **coverage_metadata(warehouse.warehouse())})


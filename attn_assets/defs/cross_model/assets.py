"""The cross_model group: the listed encoders' maps of the same images compared per image and model pair.

  cross_model_agreement (partitioned by shard): every pair of ATTN_ASSETS_MODELS compared on the intersection of
      the two models' views, from each model's statistics file of the shard (models group: model_statistics; no
      model runs here) -> analyses/cross_model/<shard>.parquet;
  cross_model_summary: the shard files -> tables cross_model_agreement and cross_model_summary (per pair, overall
      and per country: each metric's mean with a bootstrap interval), in one transaction;
  cross_model_figures: attention_analysis/analyses/cross_model_grid.png (the same images, one column per model,
      each on its own view) and cross_model_countries.png (per-country difference from each pair's overall mean).

With fewer than two listed models the group writes no rows and says so in its metadata. Not part of
downstream_job: its own jobs (defs/jobs.py) run it, as for geolocation and country relevance.
"""

import dagster as dg
import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from attn_assets.defs.metadata import figure_metadata, table_metadata
from attn_assets.defs.models.assets import model_statistics
from attn_assets.defs.partitions import shard_partitions
from attn_assets.figures.cross_model import render_country_differences, render_model_grid
from attn_assets.passes.cross_model import compute_cross_model_shard, summarize
from attn_assets.passes.current import model_state
from attn_assets.resources import PipelineResource, WarehouseResource
from attn_assets.settings import ENV_MODELS, Settings, models_setting
from attn_assets.storage.atomic import remove_abandoned_temporaries
from attn_assets.storage.schema import CROSS_MODEL_AGREEMENT, CROSS_MODEL_SUMMARY, IMAGES

CROSS_MODEL_CODE_VERSION = "2"  # 2: compares the models group's statistics files; model keys, not specs
GRID_IMAGES = 4
_COMMON = dict(group_name="cross_model", owners=["team:attn-assets"], code_version=CROSS_MODEL_CODE_VERSION,
               tags={"domain": "cross_model"})
NOTHING_TO_COMPARE = (f"{ENV_MODELS} lists fewer than two models: nothing to compare, no rows written "
                      "(list comma-separated specs, e.g. 'geolocal/StreetCLIP,openai/clip-vit-large-patch14-336')")


def listed_states(pipeline: PipelineResource) -> dict:
    """{model key: that model's CurrentState} for ATTN_ASSETS_MODELS, in list order."""
    settings = Settings.from_env()
    return {entry.key: model_state(pipeline.layout, settings, entry.spec) for entry in models_setting()}


@dg.asset(
    description=("Per shard: every pair of ATTN_ASSETS_MODELS, from each model's statistics file (no model runs "
                 "here); per image and pair, Spearman, top-10% overlap and Jensen-Shannon divergence of the "
                 "last-layer maps on the intersection of the two views -> analyses/cross_model/<shard>.parquet. "
                 "A model without current statistics for the shard fails only its pairs (rows with the reason)."),
    deps=[dg.AssetDep(model_statistics, partition_mapping=dg.MultiToSingleDimensionPartitionMapping("shard"))],
    partitions_def=shard_partitions,
    kinds={"parquet"},
    **_COMMON,
)
def cross_model_agreement(context: dg.AssetExecutionContext, pipeline: PipelineResource) -> dg.MaterializeResult:
    states = listed_states(pipeline)
    layout = pipeline.layout
    rows = []
    for shard_key in context.partition_keys:
        remove_abandoned_temporaries(layout.cross_model_dir)
        outcome = compute_cross_model_shard(layout=layout, shard_key=shard_key, states=states)
        for model in outcome.models:
            if model.error:
                context.log.error("%s: %s", shard_key, model.error)
        rows.append({"shard": shard_key, "images": outcome.images, "pairs": outcome.pairs, "ok": outcome.ok_rows,
                     "failed": outcome.failed_rows, "seconds": round(outcome.seconds, 2)})
    frame = pd.DataFrame(rows)
    metadata = {"models": dg.MetadataValue.text(", ".join(states) or "(none)"),
                "per_shard": dg.MetadataValue.md(frame.to_markdown(index=False) if len(frame) else "_none_"),
                "ok_rows": dg.MetadataValue.int(int(frame["ok"].sum()) if len(frame) else 0),
                "failed_rows": dg.MetadataValue.int(int(frame["failed"].sum()) if len(frame) else 0)}
    if len(states) < 2:
        context.log.warning(NOTHING_TO_COMPARE)
        metadata["note"] = dg.MetadataValue.text(NOTHING_TO_COMPARE)
    return dg.MaterializeResult(metadata=metadata)


def _current_files(context, pipeline: PipelineResource, name) -> list:
    keys = context.instance.get_dynamic_partitions(shard_partitions.name)
    return [path for key in keys if (path := name(pipeline.layout, key)).exists()]


def _read_all(paths: list, table) -> pd.DataFrame:
    frames = [pq.read_table(p).to_pandas() for p in paths]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=table.column_names)


@dg.asset(
    deps=[cross_model_agreement],
    description=("Tables cross_model_agreement (per image and model pair) and cross_model_summary (per pair, "
                 "overall and per country: each metric's mean with a 95% bootstrap interval) from the current "
                 "shards' analyses/cross_model files, replaced in one transaction."),
    kinds={"duckdb"},
    **_COMMON,
)
def cross_model_summary(context: dg.AssetExecutionContext, pipeline: PipelineResource,
                        warehouse: WarehouseResource) -> dg.MaterializeResult:
    specs = [entry.key for entry in models_setting()]
    paths = _current_files(context, pipeline, lambda layout, key: layout.cross_model_parquet(key))
    frame = _read_all(paths, CROSS_MODEL_AGREEMENT)
    if len(frame):  # rows of models no longer listed leave the tables
        frame = frame[frame["model_a"].isin(specs) & frame["model_b"].isin(specs)]
    summary = summarize(frame) if len(frame) else pd.DataFrame(columns=CROSS_MODEL_SUMMARY.column_names)
    counts = warehouse.warehouse(context.log).replace_tables({CROSS_MODEL_AGREEMENT: frame,
                                                              CROSS_MODEL_SUMMARY: summary})
    overall = summary[summary["scope"] == "overall"] if len(summary) else summary
    metadata = {**table_metadata(CROSS_MODEL_SUMMARY, counts[CROSS_MODEL_SUMMARY.name], overall.round(4)),
                "agreement_rows": dg.MetadataValue.int(counts[CROSS_MODEL_AGREEMENT.name])}
    if len(specs) < 2:
        metadata["note"] = dg.MetadataValue.text(NOTHING_TO_COMPARE)
    return dg.MaterializeResult(metadata=metadata)


@dg.asset(
    deps=[cross_model_summary],
    description=("attention_analysis/analyses/cross_model_grid.png (the first images compared by every model, one "
                 "column per model, each map on its own model's view) and cross_model_countries.png (per model "
                 "pair, each country's mean agreement minus the pair's overall mean, 95% bootstrap intervals)."),
    kinds={"duckdb", "matplotlib", "png"},
    **_COMMON,
)
def cross_model_figures(context: dg.AssetExecutionContext, pipeline: PipelineResource,
                        warehouse: WarehouseResource) -> dg.MaterializeResult:
    specs = [entry.key for entry in models_setting()]
    store = warehouse.warehouse(context.log)
    summary = store.query(f'SELECT * FROM "{CROSS_MODEL_SUMMARY.name}"')
    chosen = store.query(
        f'SELECT a.image_id, any_value(a.shard_key) AS shard_key, any_value(i.abs_path) AS path, '
        f'any_value(i.member) AS member FROM "{CROSS_MODEL_AGREEMENT.name}" a JOIN "{IMAGES.name}" i '
        "USING (image_id) WHERE a.status = 'ok' GROUP BY a.image_id ORDER BY a.image_id LIMIT ?", [GRID_IMAGES])
    rows = []
    columns = ["image_id", "status", "cls_map", "grid_height", "grid_width", "crop_left", "crop_top", "crop_right",
               "crop_bottom"]
    for shard_key, group in chosen.groupby("shard_key", sort=False):
        wanted = list(group["image_id"])
        maps = {}
        for key in specs:
            path = pipeline.layout.model_shard_parquet(key, shard_key)
            if path.exists():
                maps[key] = pq.read_table(path, columns=columns, filters=[("image_id", "in", wanted)]).to_pandas()
        for _, image in group.iterrows():
            placed = {}
            for key, frame in maps.items():
                for m in frame[(frame["image_id"] == image["image_id"]) & (frame["status"] == "ok")].itertuples():
                    placed[key] = (np.asarray(m.cls_map, dtype=np.float32).reshape(int(m.grid_height),
                                                                                  int(m.grid_width)),
                                   (m.crop_left, m.crop_top, m.crop_right, m.crop_bottom))
            rows.append({"image_id": image["image_id"], "path": image["path"],
                         "member": None if pd.isna(image["member"]) else image["member"], "maps": placed})
    rows.sort(key=lambda row: row["image_id"])
    drawn = {spec for row in rows for spec in row["maps"]}
    missing = [spec for spec in specs if spec not in drawn]  # models that could not load: no column
    specs = [spec for spec in specs if spec in drawn]
    directory = pipeline.layout.analyses_dir
    grid = render_model_grid(rows, specs, directory / "cross_model_grid.png",
                             footer=f"no maps from: {', '.join(missing)}" if missing else None)
    countries = render_country_differences(summary, directory / "cross_model_countries.png")
    return dg.MaterializeResult(metadata={**figure_metadata(grid), "countries_figure": dg.MetadataValue.path(
        str(countries)), "images": dg.MetadataValue.int(len(rows))})


CROSS_MODEL_SUMMARY_ASSETS = (cross_model_summary, cross_model_figures)

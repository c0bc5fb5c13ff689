"""Geolocation: PLONK's predictions from the stored CLS embeddings, their accuracy, and whether
attention tells the failures apart.

  geolocation_predictions   partitioned by shard, pool "gpu": geolocation/<shard>.parquet (Parquet only,
                            so remote workers never open the warehouse)
  geolocation_accuracy      loads the files into DuckDB; accuracy at 1/25/200/750/2500 km, GeoScore, per
                            country and overall; prediction map figure
  geolocation_error_analysis  correlations and best-vs-worst-decile contrasts of each attention metric
  worst_predictions_gallery visualizations/worst_predictions/: overlays captioned with true vs predicted place

Needs the optional `plonk` extra (diff-plonk); `attn-assets materialize` skips this group without it.
"""

import math

import dagster as dg
import pandas as pd

from attn_assets import figures
from attn_assets.core.error_analysis import error_analysis
from attn_assets.core.geolocation import EARTH_RADIUS_KM, score_predictions
from attn_assets.passes.geolocation import compute_geolocation_shard, is_streetclip
from attn_assets.defs.analyses.assets import load_analysis_shards
from attn_assets.passes.recipe import code_version_from_env
from attn_assets.defs.shard_passes import (
    excluded_metadata,
    recipe_metadata,
    run_data_version,
    run_state,
)
from attn_assets.passes.current import GEOLOCATION
from attn_assets.defs.metadata import figure_metadata, model_footer, table_metadata
from attn_assets.defs.partitions import shard_partitions
from attn_assets.defs.statistics.assets import MULTI_RUN_BACKFILL, attention_statistics
from attn_assets.defs.warehouse.assets import attention_warehouse
from attn_assets.figures.geolocation import location_caption, render_error_analysis, render_prediction_map
from attn_assets.resources import AttentionModelResource, GeolocationModelResource, PipelineResource, WarehouseResource
from attn_assets.storage.atomic import remove_abandoned_temporaries
from attn_assets.storage.parquet import read_maps_and_boxes
from attn_assets.storage.schema import (
    ATTENTION_STATISTICS,
    COUNTRY_PREDICTIONS,
    GEOLOCATION_ACCURACY,
    GEOLOCATION_ERROR_ANALYSIS,
    GEOLOCATION_PREDICTIONS,
    IMAGES,
    RELEVANCE_STATISTICS,
)
from attn_assets.metric_names import METRIC_NAMES

GEOLOCATION_CODE_VERSION = "1"
WORST_PREDICTIONS_FOLDER = "worst_predictions"
_COMMON = dict(group_name="geolocation", owners=["team:attn-assets"], code_version=GEOLOCATION_CODE_VERSION,
               tags={"domain": "geolocation"})


@dg.asset(
    deps=[attention_statistics],
    partitions_def=shard_partitions,
    backfill_policy=MULTI_RUN_BACKFILL,
    pool="gpu",
    kinds={"pytorch", "parquet"},
    description=("PLONK's predicted latitude/longitude per image from the float16 CLS embeddings that "
                 "attention_statistics stored (no second pass through StreetCLIP), seeded per image; "
                 "haversine error against the manifest's coordinates -> geolocation/<shard>.parquet."),
    # code version: PLONK's settings and weights (passes/recipe.py); a recomputed statistics shard reaches it as
    # attention_statistics' new data version
    **{**_COMMON, "code_version": code_version_from_env("geolocation")},
)
def geolocation_predictions(context: dg.AssetExecutionContext, pipeline: PipelineResource,
                            geolocation_model: GeolocationModelResource) -> dg.MaterializeResult:
    layout = pipeline.layout
    geolocator = geolocation_model.geolocator()  # fails here, before any output is touched
    remove_abandoned_temporaries(layout.geolocation_dir)
    outcomes = []
    for shard_key in context.partition_keys:
        outcome = compute_geolocation_shard(layout=layout, shard_key=shard_key, geolocator=geolocator,
                                            logger=context.log)
        context.add_asset_metadata(recipe_metadata(outcome.record), partition_key=shard_key)
        context.log.info("%s: %d predicted (%d with true coordinates) in %.1f s", shard_key, outcome.computed,
                         outcome.details["with_truth"], outcome.seconds)
        outcomes.append(outcome)
    per_shard = pd.DataFrame([{"shard": o.shard_key, "predicted": o.computed, "with_truth": o.details["with_truth"],
                               "seconds": round(o.seconds, 2), "embeddings_from": o.details["embedding_model_spec"]}
                              for o in outcomes])
    specs = sorted({o.details["embedding_model_spec"] for o in outcomes if o.details["embedding_model_spec"]})
    metadata = {
        "predicted": dg.MetadataValue.int(int(per_shard["predicted"].sum())),
        "with_true_coordinates": dg.MetadataValue.int(int(per_shard["with_truth"].sum())),
        "plonk_model": dg.MetadataValue.text(geolocator.repo),
        "device": dg.MetadataValue.text(str(geolocator.device)),
        "num_steps": dg.MetadataValue.int(geolocator.sampling.num_steps),
        "num_samples": dg.MetadataValue.int(geolocator.sampling.num_samples),
        "seed": dg.MetadataValue.int(geolocator.sampling.seed),
        "per_shard": dg.MetadataValue.md(per_shard.to_markdown(index=False)),
        "paths": dg.MetadataValue.md("\n".join(f"- `{o.path}`" for o in outcomes)),
    }
    if any(not is_streetclip(spec) for spec in specs):
        metadata["warning"] = dg.MetadataValue.text(
            f"embeddings from {', '.join(specs)}: PLONK was trained on StreetCLIP; these errors say nothing about PLONK")
    return dg.MaterializeResult(data_version=run_data_version([o.record for o in outcomes]), metadata=metadata)


@dg.asset(
    deps=[geolocation_predictions, attention_warehouse],
    kinds={"duckdb", "matplotlib"},
    description=("Loads every shard's predictions into table geolocation_predictions, then table "
                 "geolocation_accuracy: share of images with error < 1 / 25 / 200 / 750 / 2500 km, mean and median "
                 "error, mean GeoScore and country accuracy, overall and per true country; "
                 "attention_analysis/analyses/geolocation_map.png."),
    **_COMMON,
)
def geolocation_accuracy(context: dg.AssetExecutionContext, pipeline: PipelineResource,
                         warehouse: WarehouseResource, attention_model: AttentionModelResource,
                         geolocation_model: GeolocationModelResource) -> dg.MaterializeResult:
    excluded = load_analysis_shards(context, warehouse, GEOLOCATION_PREDICTIONS, GEOLOCATION,
                                    run_state(pipeline, attention_model, geolocation_model))
    store = warehouse.warehouse(context.log)
    corrected = store.refresh_geolocation_truth(score_predictions)
    if corrected:
        context.log.info("%d predictions scored against corrected manifest coordinates or countries", corrected)
    store.refresh_geolocation_accuracy()
    table = store.query(f'SELECT * FROM "{GEOLOCATION_ACCURACY.name}" '
                        "ORDER BY scope DESC, images DESC, country")  # 'overall' first
    predictions = store.query(
        f'SELECT image_id, latitude, longitude, predicted_latitude, predicted_longitude '
        f'FROM "{GEOLOCATION_PREDICTIONS.name}" WHERE error_km IS NOT NULL ORDER BY image_id')
    target = pipeline.layout.analyses_dir / "geolocation_map.png"
    render_prediction_map(predictions, target, footer=model_footer(store, len(predictions)))
    overall = table[table["scope"] == "overall"]
    metadata = {
        **table_metadata(GEOLOCATION_ACCURACY, len(table)),
        "accuracy": dg.MetadataValue.md(table.drop(columns=["scope"]).round(4).to_markdown(index=False)),
        "predictions": dg.MetadataValue.int(int(store.query(
            f'SELECT count(*) AS n FROM "{GEOLOCATION_PREDICTIONS.name}"')["n"].iloc[0])),
        **figure_metadata(target),
        **excluded_metadata(excluded),
    }
    if len(overall) and overall["images"].iloc[0]:
        metadata["mean_error_km"] = dg.MetadataValue.float(float(overall["mean_error_km"].iloc[0]))
        metadata["geoscore"] = dg.MetadataValue.float(float(overall["geoscore"].iloc[0]))
    return dg.MaterializeResult(metadata=metadata)


#: What the error analysis tests besides the attention metrics, where the country_relevance group has rows: the six
#: metrics of the true country's relevance map (Chefer et al. 2021) and zero-shot correctness (1/0; its Pearson
#: correlation with the error is the point-biserial one).
RELEVANCE_ERROR_METRICS = tuple(f"relevance_{m}" for m in METRIC_NAMES)
ZERO_SHOT_ERROR_METRICS = ("zero_shot_correct", "zero_shot_true_probability")


def _predictions_with_metrics(warehouse: WarehouseResource, order_limit: str = "", params=()) -> pd.DataFrame:
    """PLONK predictions with the image's attention metrics and, where the country_relevance group computed them
    with the statistics' model, its true-country relevance metrics and zero-shot correctness (NULL otherwise)."""
    relevance = ", ".join(f"r.{m} AS relevance_{m}" for m in METRIC_NAMES)
    return warehouse.warehouse().query(
        f'SELECT g.*, i.country_name, i.abs_path, i.member, {", ".join(f"s.{m}" for m in METRIC_NAMES)}, '
        f"{relevance}, CAST(c.correct AS DOUBLE) AS zero_shot_correct, "
        "c.true_probability AS zero_shot_true_probability "
        f'FROM "{GEOLOCATION_PREDICTIONS.name}" g JOIN "{ATTENTION_STATISTICS.name}" s USING (image_id) '
        f'LEFT JOIN "{IMAGES.name}" i USING (image_id) '
        f'LEFT JOIN "{COUNTRY_PREDICTIONS.name}" c ON c.image_id = g.image_id AND c.model_spec = s.model_spec '
        f'LEFT JOIN "{RELEVANCE_STATISTICS.name}" r ON r.image_id = c.image_id AND r.target = \'true\' '
        f"WHERE g.error_km IS NOT NULL {order_limit}", list(params))


@dg.asset(
    deps=[geolocation_accuracy],
    kinds={"duckdb", "scipy", "matplotlib"},
    description=("Does attention tell PLONK's failures apart? Per attention metric (and, where the country_relevance "
                 "group has rows, per true-country relevance metric and for zero-shot correctness): Pearson and "
                 "Spearman correlation with the error, and its mean over the best vs worst decile (Mann-Whitney U) -> "
                 "table geolocation_error_analysis and attention_analysis/analyses/geolocation_error.png."),
    **_COMMON,
)
def geolocation_error_analysis(pipeline: PipelineResource, warehouse: WarehouseResource) -> dg.MaterializeResult:
    frame = _predictions_with_metrics(warehouse, "ORDER BY g.image_id")
    extra = [m for m in (*RELEVANCE_ERROR_METRICS, *ZERO_SHOT_ERROR_METRICS) if frame[m].notna().any()]
    analysis = error_analysis(frame, [*METRIC_NAMES, *extra])
    warehouse.warehouse().replace_table(GEOLOCATION_ERROR_ANALYSIS, analysis)
    target = pipeline.layout.analyses_dir / "geolocation_error.png"
    render_error_analysis(frame, analysis, METRIC_NAMES, target, footer=model_footer(warehouse.warehouse(), len(frame)))
    return dg.MaterializeResult(metadata={
        **table_metadata(GEOLOCATION_ERROR_ANALYSIS, len(analysis)),
        "images": dg.MetadataValue.int(len(frame)),
        "with_relevance": dg.MetadataValue.int(int(frame["relevance_attention_entropy"].notna().sum())),
        "analysis": dg.MetadataValue.md(analysis.round(4).to_markdown(index=False)),
        **figure_metadata(target),
    })


@dg.asset(
    deps=[geolocation_accuracy],
    kinds={"matplotlib", "png"},
    description=("visualizations/worst_predictions/: triptychs of the images PLONK placed farthest from the truth, "
                 "captioned with the true and predicted location and the error; index.csv lists them."),
    **_COMMON,
)
def worst_predictions_gallery(context: dg.AssetExecutionContext, pipeline: PipelineResource,
                              warehouse: WarehouseResource) -> dg.MaterializeResult:
    rows = _predictions_with_metrics(warehouse, "ORDER BY g.error_km DESC, g.image_id LIMIT ?", [pipeline.gallery_size])
    rows["caption"] = [location_caption(row) for row in rows.to_dict("records")]
    maps, boxes = read_maps_and_boxes(pipeline.layout, rows)
    target = pipeline.layout.visualizations_dir / WORST_PREDICTIONS_FOLDER
    result = figures.render_gallery(
        rows, maps, boxes, target, "error_km", caption_column="caption",
        footer=model_footer(warehouse.warehouse(), detail="largest PLONK error"),
        index_columns=("latitude", "longitude", "predicted_latitude", "predicted_longitude", "predicted_country",
                       "error_km", "geoscore", "prediction_spread_km"))
    for image_id in result.skipped:
        context.log.warning("worst_predictions: image %s could not be drawn; skipped", image_id)
    metadata = {
        "path": dg.MetadataValue.path(str(target)),
        "images": dg.MetadataValue.int(len(result.paths)),
        "skipped": dg.MetadataValue.int(len(result.skipped)),
        "index": dg.MetadataValue.md(rows[["image_id", "country", "predicted_country", "error_km"]]
                                     .round(1).to_markdown(index=False) if len(rows) else "_(no predictions)_"),
    }
    if result.paths:
        metadata["preview"] = dg.MetadataValue.md(figures.png_preview_markdown(result.paths[0]))
    return dg.MaterializeResult(metadata=metadata)


@dg.asset_check(asset=geolocation_accuracy, blocking=True,
                description="Predicted coordinates on the globe, errors in [0, pi * 6371 km], one prediction per image.")
def geolocation_predictions_valid(warehouse: WarehouseResource) -> dg.AssetCheckResult:
    row = warehouse.warehouse().query(
        f"""SELECT
          count(*) FILTER (WHERE abs(predicted_latitude) > 90 OR abs(predicted_longitude) > 180
                           OR isnan(predicted_latitude) OR isnan(predicted_longitude)) AS off_globe,
          count(*) FILTER (WHERE error_km < 0 OR error_km > {math.pi * EARTH_RADIUS_KM + 1e-6}) AS impossible_errors,
          count(*) - count(DISTINCT image_id) AS duplicate_ids
        FROM "{GEOLOCATION_PREDICTIONS.name}" """).iloc[0]
    return dg.AssetCheckResult(passed=bool((row == 0).all()),
                               metadata={k: dg.MetadataValue.int(int(v)) for k, v in row.to_dict().items()})


@dg.asset_check(asset=geolocation_accuracy,
                description="Warns when a predicted shard's images differ from its statistics (stale predictions).")
def geolocation_matches_statistics(warehouse: WarehouseResource) -> dg.AssetCheckResult:
    stale = warehouse.warehouse().query(
        f"""SELECT g.shard_key, count(*) FILTER (WHERE s.image_id IS NULL) AS without_statistics,
                   (SELECT count(*) FROM "{ATTENTION_STATISTICS.name}" t WHERE t.shard_key = g.shard_key) AS statistics_rows,
                   count(*) AS prediction_rows
            FROM "{GEOLOCATION_PREDICTIONS.name}" g LEFT JOIN "{ATTENTION_STATISTICS.name}" s USING (image_id)
            GROUP BY g.shard_key
            HAVING without_statistics > 0 OR statistics_rows <> prediction_rows ORDER BY g.shard_key""")
    return dg.AssetCheckResult(
        passed=stale.empty, severity=dg.AssetCheckSeverity.WARN,
        metadata={"stale_shards": dg.MetadataValue.int(len(stale)),
                  "shards": dg.MetadataValue.md(stale.to_markdown(index=False) if len(stale) else "_none_"),
                  "fix": dg.MetadataValue.text("re-materialize geolocation_predictions for these partitions")})


GEOLOCATION_SUMMARY_ASSETS = (geolocation_accuracy, geolocation_error_analysis, worst_predictions_gallery)

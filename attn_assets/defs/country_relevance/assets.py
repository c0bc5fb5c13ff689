"""What decides the country: zero-shot country classification with the model's own text tower, relevance maps
(Chefer et al. 2021) for the predicted and true country, and whether any map is faithful.

  country_predictions       partitioned by shard, pool "gpu": analyses/country_relevance/<shard>.parquet (Parquet
                            only, so remote workers never open the warehouse); needs a CLIPModel spec with its text
                            tower (geolocal/StreetCLIP): any other spec fails this asset alone with what to do
  country_accuracy          loads the files into country_predictions, relevance_statistics, faithfulness_curves;
                            tables country_accuracy and country_confusion, figures country_accuracy.png and
                            country_confusion.png
  relevance_faithfulness    table faithfulness_summary and figure relevance_faithfulness.png
  misclassified_gallery     visualizations/misclassified/: the most confident wrong predictions, the predicted
                            country's relevance map on the model's crop, titled true vs predicted
"""

import threading

import dagster as dg
import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from attn_assets import figures
from attn_assets.core.faithfulness import faithfulness_summary
from attn_assets.core.zero_shot import (
    DEFAULT_COUNTRY_CODES,
    DEFAULT_TEMPLATE,
    CountryPrompts,
    ZeroShotClassifier,
    accuracy_table,
    confusion_table,
    load_clip_classifier,
)
from attn_assets.defs.manifest.assets import image_manifest, shard_image_sets
from attn_assets.defs.metadata import figure_metadata, table_metadata
from attn_assets.defs.partitions import SHARD_PARTITIONS_NAME, shard_partitions
from attn_assets.defs.shard_passes import excluded_metadata, recipe_metadata, run_data_version, run_state
from attn_assets.defs.statistics.assets import MULTI_RUN_BACKFILL
from attn_assets.defs.warehouse.assets import attention_warehouse
from attn_assets.figures.country_relevance import (
    misclassified_caption,
    render_confusion,
    render_country_accuracy,
    render_faithfulness,
)
from attn_assets.passes.country_relevance import compute_country_relevance_shard, load_country_relevance_shard
from attn_assets.passes.current import COUNTRY_RELEVANCE, classify_outputs
from attn_assets.passes.recipe import code_version_from_env, pass_recipe, summarize_reasons
from attn_assets.resources import AttentionModelResource, PipelineResource, WarehouseResource
from attn_assets.settings import (
    Settings,
    caption_template_setting,
    country_list_setting,
    faithfulness_fill_setting,
    faithfulness_fraction_from_env,
)
from attn_assets.storage.atomic import remove_abandoned_temporaries
from attn_assets.storage.parquet import read_cls_maps
from attn_assets.storage.schema import (
    COUNTRY_ACCURACY,
    COUNTRY_CONFUSION,
    COUNTRY_PREDICTIONS,
    FAITHFULNESS_CURVES,
    FAITHFULNESS_SUMMARY,
    IMAGES,
    RELEVANCE_STATISTICS,
)

COUNTRY_RELEVANCE_CODE_VERSION = "1"
MISCLASSIFIED_FOLDER = "misclassified"
_COMMON = dict(group_name="country_relevance", owners=["team:attn-assets"], tags={"domain": "country_relevance"})
_CLASSIFIERS: dict[tuple, ZeroShotClassifier] = {}  # per process: the CLIPModel and its text embeddings
_LOCK = threading.Lock()


def country_prompts() -> CountryPrompts:
    """The configured country list and caption template (ATTN_ASSETS_COUNTRIES, ATTN_ASSETS_CAPTION_TEMPLATE)."""
    return CountryPrompts.from_codes(country_list_setting() or DEFAULT_COUNTRY_CODES,
                                     caption_template_setting() or DEFAULT_TEMPLATE)


def classifier_for(attention_model: AttentionModelResource, prompts: CountryPrompts,
                   spec: str | None = None) -> ZeroShotClassifier:
    """Load (or reuse) the CLIPModel and embed the captions once per process; fails before any output is touched.
    ``spec``: another listed model's (ATTN_ASSETS_MODELS), built fresh and not kept (the caller releases it)."""
    device = attention_model.resolved_device()
    if spec is not None and spec != attention_model.model:
        encoder, model, tokenizer = load_clip_classifier(spec, device)
        return ZeroShotClassifier(encoder, model, tokenizer, prompts, attention_model.precision)
    key = (attention_model.model, device, attention_model.precision, prompts)
    with _LOCK:
        if key not in _CLASSIFIERS:
            encoder, model, tokenizer = load_clip_classifier(attention_model.model, device)
            _CLASSIFIERS[key] = ZeroShotClassifier(encoder, model, tokenizer, prompts, attention_model.precision)
        return _CLASSIFIERS[key]


@dg.asset(
    deps=[image_manifest, shard_image_sets],
    partitions_def=shard_partitions,
    backfill_policy=MULTI_RUN_BACKFILL,
    pool="gpu",
    kinds={"pytorch", "parquet"},
    description=("Zero-shot country classification with the model's own text tower (captions: everyday country "
                 "names in StreetCLIP's published usage), relevance maps (Chefer et al. 2021) for the predicted and "
                 "the true country with the six metrics and their agreement with attention and rollout, and "
                 "deletion/insertion curves for a seeded sample -> analyses/country_relevance/<shard>.parquet."),
    code_version=code_version_from_env("country_relevance"),
    **_COMMON,
)
def country_predictions(context: dg.AssetExecutionContext, pipeline: PipelineResource,
                        attention_model: AttentionModelResource) -> dg.MaterializeResult:
    layout = pipeline.layout
    prompts = country_prompts()
    fraction, fill = faithfulness_fraction_from_env(), faithfulness_fill_setting()
    classifier = classifier_for(attention_model, prompts)
    settings = Settings.from_env().with_overrides(model=attention_model.model, device=attention_model.device,
                                                  precision=attention_model.precision)
    recipe = pass_recipe(settings, "country_relevance")
    outcomes = []
    for shard_key in context.partition_keys:
        remove_abandoned_temporaries(layout.country_relevance_dir)
        outcome = compute_country_relevance_shard(
            layout=layout, shard_key=shard_key, classifier=classifier, model_spec=attention_model.model,
            batch_size=attention_model.resolved_batch_size(), num_workers=attention_model.num_workers,
            recipe=recipe, faithfulness_fraction=fraction, faithfulness_fill=fill, logger=context.log)
        context.add_asset_metadata(recipe_metadata(outcome.record), partition_key=shard_key)
        context.log.info("%s: %d images classified (%d of %d correct), %d with faithfulness curves, in %.1f s",
                         shard_key, outcome.computed, outcome.details["correct"], outcome.details["with_truth"],
                         outcome.details["with_curves"], outcome.seconds)
        outcomes.append(outcome)
    frame = pd.DataFrame([{"shard": o.shard_key, "images": o.computed, "correct": o.details["correct"],
                           "with_truth": o.details["with_truth"], "with_curves": o.details["with_curves"],
                           "seconds": round(o.seconds, 2)} for o in outcomes])
    return dg.MaterializeResult(data_version=run_data_version([o.record for o in outcomes]), metadata={
        "images": dg.MetadataValue.int(int(frame["images"].sum()) if len(frame) else 0),
        "countries": dg.MetadataValue.int(len(prompts.codes)),
        "caption_template": dg.MetadataValue.text(prompts.template),
        "prompts": dg.MetadataValue.text(prompts.fingerprint),
        "per_shard": dg.MetadataValue.md(frame.to_markdown(index=False) if len(frame) else "_none_"),
    })


def _load_shards(context: dg.AssetExecutionContext, warehouse: WarehouseResource,
                 pipeline: PipelineResource, attention_model: AttentionModelResource) -> dict[str, str]:
    """Load every current country-relevance file into its three tables; the rows of other shards leave them."""
    store = warehouse.warehouse(context.log)
    current, excluded = classify_outputs(COUNTRY_RELEVANCE, context.instance.get_dynamic_partitions(SHARD_PARTITIONS_NAME),
                                         run_state(pipeline, attention_model))
    if excluded:
        context.log.warning("country relevance: %d shard files left out (stale): %s", len(excluded),
                            summarize_reasons(excluded))
    for shard_key, path in sorted(current.items()):
        load_country_relevance_shard(store, shard_key, path)
    for table in (COUNTRY_PREDICTIONS, RELEVANCE_STATISTICS, FAITHFULNESS_CURVES):
        store.drop_other_shards(table, list(current))
        store.conform_to_manifest([table])
    return excluded


def _footer(warehouse: WarehouseResource, images: int) -> str:
    specs = warehouse.warehouse().query(f'SELECT DISTINCT model_spec FROM "{COUNTRY_PREDICTIONS.name}"')["model_spec"]
    return figures.figure_footer(", ".join(sorted(specs)) or None, images)


@dg.asset(
    deps=[country_predictions, attention_warehouse],
    kinds={"duckdb", "matplotlib"},
    description=("Loads the country-relevance files into tables country_predictions, relevance_statistics and "
                 "faithfulness_curves; tables country_accuracy (accuracy and top-5 accuracy, overall and per "
                 "country) and country_confusion; figures country_accuracy.png and country_confusion.png."),
    code_version=COUNTRY_RELEVANCE_CODE_VERSION,
    **_COMMON,
)
def country_accuracy(context: dg.AssetExecutionContext, pipeline: PipelineResource, warehouse: WarehouseResource,
                     attention_model: AttentionModelResource) -> dg.MaterializeResult:
    excluded = _load_shards(context, warehouse, pipeline, attention_model)
    store = warehouse.warehouse(context.log)
    predictions = store.query(f'SELECT * FROM "{COUNTRY_PREDICTIONS.name}" ORDER BY image_id')
    accuracy, confusion = accuracy_table(predictions), confusion_table(predictions)
    store.replace_tables({COUNTRY_ACCURACY: accuracy, COUNTRY_CONFUSION: confusion})
    footer = _footer(warehouse, len(predictions))
    accuracy_png = render_country_accuracy(accuracy, pipeline.layout.analyses_dir / "country_accuracy.png", footer)
    confusion_png = render_confusion(confusion, pipeline.layout.analyses_dir / "country_confusion.png", footer)
    overall = accuracy.iloc[0]
    wrong = confusion[confusion["country"] != confusion["predicted_country"]].sort_values("images", ascending=False)
    return dg.MaterializeResult(metadata={
        **table_metadata(COUNTRY_ACCURACY, len(accuracy), accuracy.round(4)),
        "accuracy": dg.MetadataValue.float(float(overall["accuracy"])),
        "top5_accuracy": dg.MetadataValue.float(float(overall["top5_accuracy"])),
        "images_with_truth": dg.MetadataValue.int(int(overall["images"])),
        "top_confusions": dg.MetadataValue.md(wrong.head(10).round(3).to_markdown(index=False) if len(wrong) else "_none_"),
        **figure_metadata(accuracy_png),
        "confusion_figure": dg.MetadataValue.path(str(confusion_png)),
        **excluded_metadata(excluded),
    })


@dg.asset(
    deps=[country_accuracy],
    kinds={"duckdb", "matplotlib"},
    description=("Which map is faithful: mean deletion and insertion AUC of last-layer attention, rollout, relevance "
                 "and a seeded random order, overall and per country, with 95% bootstrap intervals -> table "
                 "faithfulness_summary and attention_analysis/analyses/relevance_faithfulness.png."),
    code_version=COUNTRY_RELEVANCE_CODE_VERSION,
    **_COMMON,
)
def relevance_faithfulness(pipeline: PipelineResource, warehouse: WarehouseResource) -> dg.MaterializeResult:
    store = warehouse.warehouse()
    curves = store.query(f'SELECT image_id, country, map, mode, auc, curve FROM "{FAITHFULNESS_CURVES.name}" '
                         "ORDER BY image_id, map, mode")
    summary = faithfulness_summary(curves)
    store.replace_table(FAITHFULNESS_SUMMARY, summary)
    target = pipeline.layout.analyses_dir / "relevance_faithfulness.png"
    images = int(curves["image_id"].nunique())
    if len(curves):
        render_faithfulness(summary, curves, target, _footer(warehouse, images))
    overall = summary[summary["scope"] == "overall"]
    return dg.MaterializeResult(metadata={
        **table_metadata(FAITHFULNESS_SUMMARY, len(summary)),
        "overall": dg.MetadataValue.md(overall.drop(columns=["scope", "country"]).round(4).to_markdown(index=False)
                                       if len(overall) else "_no curves: ATTN_ASSETS_FAITHFULNESS_FRACTION is 0_"),
        **(figure_metadata(target) if len(curves) else {}),
    })


def _relevance_maps(pipeline: PipelineResource, rows: pd.DataFrame) -> dict[str, np.ndarray]:
    maps = {}
    for shard_key, group in rows.groupby("shard_key"):
        table = pq.read_table(pipeline.layout.country_relevance_parquet(shard_key),
                              columns=["image_id", "grid_height", "grid_width", "predicted_relevance_map"],
                              filters=[("image_id", "in", list(group["image_id"]))])
        for image_id, gh, gw, flat in zip(*(table[c].to_pylist() for c in table.column_names)):
            maps[image_id] = np.asarray(flat, dtype=np.float32).reshape(gh, gw)
    return maps


def _boxes(pipeline: PipelineResource, rows: pd.DataFrame) -> dict[str, tuple | None]:
    boxes: dict[str, tuple | None] = {}
    for shard_key, group in rows.groupby("shard_key"):
        shard_file = pipeline.layout.shard_parquet(shard_key)
        if shard_file.exists():  # else the centred square of the short side (CLIP's centre crop)
            boxes.update(read_cls_maps(shard_file, list(group["image_id"]), with_boxes=True)[1])
    return boxes


@dg.asset(
    deps=[country_accuracy],
    kinds={"matplotlib", "png"},
    description=("visualizations/misclassified/: triptychs of the images with the most confident wrong zero-shot "
                 "prediction, with the predicted country's relevance map on the model's crop, titled true vs "
                 "predicted country; index.csv lists them."),
    code_version=COUNTRY_RELEVANCE_CODE_VERSION,
    **_COMMON,
)
def misclassified_gallery(context: dg.AssetExecutionContext, pipeline: PipelineResource,
                          warehouse: WarehouseResource) -> dg.MaterializeResult:
    rows = warehouse.warehouse().query(
        f'SELECT p.*, i.country_name, i.abs_path, i.member FROM "{COUNTRY_PREDICTIONS.name}" p '
        f'JOIN "{IMAGES.name}" i USING (image_id) WHERE p.correct = false '
        "ORDER BY p.predicted_probability DESC, p.image_id LIMIT ?", [pipeline.gallery_size])
    rows["caption"] = [misclassified_caption(row) for row in rows.to_dict("records")]
    target = pipeline.layout.visualizations_dir / MISCLASSIFIED_FOLDER
    result = figures.render_gallery(
        rows, _relevance_maps(pipeline, rows), _boxes(pipeline, rows), target, "predicted_probability",
        caption_column="caption", index_columns=("predicted_country", "true_probability", "true_rank"),
        footer=_footer(warehouse, len(rows)))
    for image_id in result.skipped:
        context.log.warning("misclassified: image %s could not be drawn; skipped", image_id)
    metadata = {"path": dg.MetadataValue.path(str(target)), "images": dg.MetadataValue.int(len(result.paths)),
                "skipped": dg.MetadataValue.int(len(result.skipped))}
    if result.paths:
        metadata["preview"] = dg.MetadataValue.md(figures.png_preview_markdown(result.paths[0]))
    return dg.MaterializeResult(metadata=metadata)


@dg.asset_check(asset=country_accuracy, blocking=True,
                description="Probabilities in [0, 1], ranks >= 1, one prediction per image, two relevance rows at most.")
def country_predictions_valid(warehouse: WarehouseResource) -> dg.AssetCheckResult:
    row = warehouse.warehouse().query(
        f"""SELECT
          count(*) FILTER (WHERE predicted_probability < 0 OR predicted_probability > 1
                           OR true_probability < 0 OR true_probability > 1) AS bad_probabilities,
          count(*) FILTER (WHERE true_rank < 1) AS bad_ranks,
          count(*) - count(DISTINCT image_id) AS duplicate_ids,
          (SELECT count(*) FROM (SELECT image_id FROM "{RELEVANCE_STATISTICS.name}" GROUP BY image_id
                                 HAVING count(*) > 2)) AS extra_relevance_rows
        FROM "{COUNTRY_PREDICTIONS.name}" """).iloc[0]
    return dg.AssetCheckResult(passed=bool((row == 0).all()),
                               metadata={k: dg.MetadataValue.int(int(v)) for k, v in row.to_dict().items()})


COUNTRY_RELEVANCE_SUMMARY_ASSETS = (country_accuracy, relevance_faithfulness, misclassified_gallery)

"""Analyses beyond the seed's six metrics: one asset per analysis, each with a DuckDB table and a figure.

Same forward pass as attention_statistics (its shard files carry the columns; attention_warehouse
loads them into their tables in the same transaction as the shard's statistics):
  layer_statistics, head_statistics, artifact_statistics, spatial_statistics -> figures here;
  metric_baselines -> a table computed here in SQL from the above (uniform + permutation baselines).
Own forward passes, partitioned by shard like attention_statistics, pool "gpu":
  rollout_statistics (attention rollout) and ablation_statistics (masking; off unless
  ATTN_ASSETS_ABLATION_FRACTION > 0), each with a figure asset downstream.
"""



import dagster as dg
import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from attn_assets.core.analyses import (
    PERMUTATION_INVARIANT,
    uniform_baselines,
    uniform_spatial_baselines,
)
from attn_assets.core.extract import resolve_precision
from attn_assets.metric_names import METRIC_NAMES
from attn_assets.settings import ENV_ABLATION_FRACTION, ablation_fraction_from_env
from attn_assets.passes.ablation import compute_ablation_shard
from attn_assets.passes.localization import cue_images, main_maps, score_images, summarize
from attn_assets.passes.rollout import compute_rollout_shard
from attn_assets.core.zero_shot import text_tower_missing_reason
from attn_assets.defs.country_relevance.assets import classifier_for, country_prompts
from attn_assets.defs.manifest.assets import image_manifest, shard_image_sets
from attn_assets.defs.metadata import figure_metadata, model_footer, table_metadata
from attn_assets.defs.partitions import SHARD_PARTITIONS_NAME, shard_partitions
from attn_assets.passes.recipe import ablation_recipe, code_version_from_env, rollout_recipe, summarize_reasons
from attn_assets.defs.shard_passes import (
    excluded_metadata,
    recipe_metadata,
    run_data_version,
    run_state,
)
from attn_assets.passes.current import ABLATION, ROLLOUT, CurrentState, ShardPass, classify_outputs
from attn_assets.defs.statistics.assets import MULTI_RUN_BACKFILL
from attn_assets.defs.warehouse.assets import attention_warehouse
from attn_assets.figures.localization import render_localization
from attn_assets.figures.analyses import (
    baselines_markdown,
    render_ablation,
    render_artifacts,
    render_baselines,
    render_head_maps,
    render_layer_profile,
    render_rollout_gallery,
    render_spatial,
)
from attn_assets.core.model import ModelLoadError
from attn_assets.resources import AttentionModelResource, PipelineResource, WarehouseResource, release_other_encoder
from attn_assets.settings import models_setting
from attn_assets.storage.atomic import remove_abandoned_temporaries
from attn_assets.storage.parquet import read_cls_maps, read_head_map_sum
from attn_assets.storage.schema import (
    ABLATION_STATISTICS,
    ARTIFACT_STATISTICS,
    ATTENTION_STATISTICS,
    HEAD_STATISTICS,
    IMAGES,
    LAYER_STATISTICS,
    LOCALIZATION_BENCHMARK,
    LOCALIZATION_SUMMARY,
    METRIC_BASELINES,
    ROLLOUT_STATISTICS,
    SPATIAL_COLUMNS,
    SPATIAL_STATISTICS,
)

ANALYSES_CODE_VERSION = "1"
TOP_COUNTRIES = 8
ROLLOUT_GALLERY_SIZE = 6
_COMMON = dict(owners=["team:attn-assets"], code_version=ANALYSES_CODE_VERSION)
_FIGURE = dict(group_name="analyses", kinds={"duckdb", "matplotlib", "png"}, tags={"domain": "analyses"}, **_COMMON)
# own-pass analyses: their code version is the pass's (passes/recipe.py PASS_CODE_VERSIONS) plus the recipe digest
_SHARD = dict(
    group_name="analyses",
    deps=[image_manifest, shard_image_sets],
    partitions_def=shard_partitions,
    backfill_policy=MULTI_RUN_BACKFILL,
    pool="gpu",
    kinds={"pytorch", "parquet"},
    tags={"domain": "analyses", "compute": "gpu"},
    owners=["team:attn-assets"],
)


def _figure_path(pipeline: PipelineResource, name: str):
    return pipeline.layout.analyses_dir / name


def _count(warehouse: WarehouseResource, table: str) -> int:
    return int(warehouse.warehouse().query(f'SELECT count(*) AS n FROM "{table}"')["n"].iloc[0])


def _num_patches(warehouse: WarehouseResource) -> int | None:
    frame = warehouse.warehouse().query(f'SELECT max(num_patches) AS n FROM "{ATTENTION_STATISTICS.name}"')
    value = frame["n"].iloc[0]
    return None if pd.isna(value) else int(value)


def _grid(pipeline: PipelineResource, warehouse: WarehouseResource) -> tuple[int, int] | None:
    shards = warehouse.warehouse().query(
        f'SELECT shard_key FROM "{ATTENTION_STATISTICS.name}" LIMIT 1')["shard_key"]
    if shards.empty:
        return None
    table = pq.read_table(pipeline.layout.shard_parquet(shards.iloc[0]), columns=["grid_height", "grid_width", "status"],
                          filters=[("status", "=", "ok")])
    return int(table["grid_height"][0].as_py()), int(table["grid_width"][0].as_py())


# --------------------------------------------------------------------------- 1: layers


@dg.asset(
    deps=[attention_warehouse],
    description=("Table layer_statistics (six metrics of every layer's head-averaged CLS attention, one row per "
                 "image and layer, from the same forward pass as attention_statistics) and "
                 "attention_analysis/analyses/layer_profile.png: entropy and top-10% concentration by depth."),
    **_FIGURE,
)
def layer_statistics(pipeline: PipelineResource, warehouse: WarehouseResource) -> dg.MaterializeResult:
    store = warehouse.warehouse()
    metrics = ("attention_entropy", "attention_concentration_top10")
    aggregates = ", ".join(f"avg({m}) AS {m}_mean, stddev_samp({m}) AS {m}_std" for m in metrics)
    overall = store.query(f'SELECT layer, count(*) AS images, {aggregates} FROM "{LAYER_STATISTICS.name}" '
                          "GROUP BY layer ORDER BY layer")
    countries = store.query(
        f'SELECT country FROM "{ATTENTION_STATISTICS.name}" WHERE coalesce(country, \'\') <> \'\' '
        "GROUP BY country ORDER BY count(*) DESC, country LIMIT ?", [TOP_COUNTRIES])["country"].tolist()
    by_country = store.query(
        f'SELECT country, layer, count(*) AS images, {aggregates} FROM "{LAYER_STATISTICS.name}" '
        "WHERE country IN (SELECT unnest(?)) GROUP BY country, layer", [countries])
    by_country["_order"] = by_country["country"].map({c: i for i, c in enumerate(countries)})
    by_country = by_country.sort_values(["_order", "layer"]).drop(columns="_order")
    patches = _num_patches(warehouse)
    target = _figure_path(pipeline, "layer_profile.png")
    render_layer_profile(overall, by_country, target, uniform=uniform_baselines(patches) if patches else None,
                         footer=model_footer(store))
    rows = _count(warehouse, LAYER_STATISTICS.name)
    return dg.MaterializeResult(metadata={
        **table_metadata(LAYER_STATISTICS, rows, overall.round(4)),
        **figure_metadata(target),
        "layers": dg.MetadataValue.int(len(overall)),
    })


# --------------------------------------------------------------------------- 2: heads


@dg.asset(
    deps=[attention_warehouse],
    description=("Table head_statistics (six metrics per last-layer head, heads not averaged), the per-image "
                 "head similarity (attention_statistics.head_similarity: mean pairwise cosine of the head maps) "
                 "and attention_analysis/analyses/head_maps.png: each head's mean CLS map."),
    **_FIGURE,
)
def head_statistics(pipeline: PipelineResource, warehouse: WarehouseResource) -> dg.MaterializeResult:
    store = warehouse.warehouse()
    summary = store.query(
        f'SELECT head, count(*) AS images, avg(attention_entropy) AS attention_entropy_mean, '
        f'avg(attention_concentration_top10) AS attention_concentration_top10_mean, '
        f'avg(attention_max) AS attention_max_mean FROM "{HEAD_STATISTICS.name}" GROUP BY head ORDER BY head')
    similarity = store.query(f'SELECT avg(head_similarity) AS s, count(head_similarity) AS n '
                             f'FROM "{ATTENTION_STATISTICS.name}"').iloc[0]
    shards = store.query(f'SELECT DISTINCT shard_key FROM "{HEAD_STATISTICS.name}" ORDER BY 1')["shard_key"]
    total, count, grid = None, 0, None
    for shard_key in shards:  # per-shard sums kept in each shard file's metadata: no per-image maps needed
        path = pipeline.layout.shard_parquet(shard_key)
        found = read_head_map_sum(path) if path.exists() else None
        if found is None:
            continue
        total = found[0] if total is None else total + found[0]
        count += found[1]
        if grid is None:
            meta = pq.read_table(path, columns=["grid_height", "grid_width", "status"], filters=[("status", "=", "ok")])
            grid = (int(meta["grid_height"][0].as_py()), int(meta["grid_width"][0].as_py()))
    mean_maps = (total / count).reshape(total.shape[0], *grid) if count else None
    target = _figure_path(pipeline, "head_maps.png")
    mean_similarity = float(similarity.s) if int(similarity.n) else None
    render_head_maps(mean_maps, summary, target, images=count, mean_similarity=mean_similarity,
                     footer=model_footer(store, count))
    metadata = {**table_metadata(HEAD_STATISTICS, _count(warehouse, HEAD_STATISTICS.name), summary.round(4)),
                **figure_metadata(target), "heads": dg.MetadataValue.int(len(summary))}
    if mean_similarity is not None:
        metadata["mean_head_similarity"] = dg.MetadataValue.float(mean_similarity)
    return dg.MaterializeResult(metadata=metadata)


# --------------------------------------------------------------------------- 5: artifacts


@dg.asset(
    deps=[attention_warehouse],
    description=("Table artifact_statistics: per image, the patches whose last-layer output-token norm is an "
                 "outlier (norm > median + 5 * 1.4826 * MAD; Darcet et al. 2023), the share of CLS attention they "
                 "take, and the six metrics with them removed; figure analyses/artifact_tokens.png."),
    **_FIGURE,
)
def artifact_statistics(pipeline: PipelineResource, warehouse: WarehouseResource) -> dg.MaterializeResult:
    frame = warehouse.warehouse().query(
        f'SELECT a.*, s.attention_entropy, s.attention_concentration_top10 FROM "{ARTIFACT_STATISTICS.name}" a '
        f'JOIN "{ATTENTION_STATISTICS.name}" s USING (image_id)')
    target = _figure_path(pipeline, "artifact_tokens.png")
    render_artifacts(frame, target, footer=model_footer(warehouse.warehouse(), len(frame)))
    summary = {}
    if len(frame):
        summary = {
            "images_with_artifacts": dg.MetadataValue.int(int((frame["artifact_count"] > 0).sum())),
            "mean_artifact_count": dg.MetadataValue.float(float(frame["artifact_count"].mean())),
            "mean_artifact_attention_share": dg.MetadataValue.float(float(frame["artifact_attention_share"].mean())),
            "mean_entropy_change": dg.MetadataValue.float(
                float((frame["attention_entropy_without_artifacts"] - frame["attention_entropy"]).mean())),
        }
    preview = frame[["image_id", "artifact_count", "artifact_attention_share", "attention_entropy",
                     "attention_entropy_without_artifacts"]] if len(frame) else None
    return dg.MaterializeResult(metadata={
        **table_metadata(ARTIFACT_STATISTICS, len(frame), preview),
        **figure_metadata(target), **summary,
        "rule": dg.MetadataValue.text("artifact patch: last-layer output-token norm > median + 5 * 1.4826 * MAD "
                                      "of the image's patch norms"),
    })


# --------------------------------------------------------------------------- 6: spatial


_DRIVE_SIDE_SQL = (
    f"SELECT coalesce(i.drive_side, '') AS drive_side, sp.* "
    f'FROM "{SPATIAL_STATISTICS.name}" sp LEFT JOIN "{IMAGES.name}" i USING (image_id)'
)


@dg.asset(
    deps=[attention_warehouse],
    description=("Table spatial_statistics (centre of mass, distances from the view centre, share per third "
                 "and half, each with a seeded patch-permutation baseline) and analyses/spatial.png: left vs "
                 "right attention by OSV-5M drive_side, centres of mass, region shares vs baselines."),
    **_FIGURE,
)
def spatial_statistics(pipeline: PipelineResource, warehouse: WarehouseResource) -> dg.MaterializeResult:
    frame = warehouse.warehouse().query(_DRIVE_SIDE_SQL)
    grid = _grid(pipeline, warehouse)
    uniform = uniform_spatial_baselines(grid) if grid else {}
    target = _figure_path(pipeline, "spatial.png")
    render_spatial(frame, target, uniform=uniform, footer=model_footer(warehouse.warehouse(), len(frame)))
    by_side = pd.DataFrame()
    if len(frame):
        frame = frame.assign(drive_side=frame["drive_side"].replace("", "unknown"))
        by_side = frame.groupby("drive_side").agg(
            images=("image_id", "size"),
            share_left=("attention_share_left", "mean"), share_right=("attention_share_right", "mean"),
            share_left_permuted=("attention_share_left_permuted", "mean"),
            share_right_permuted=("attention_share_right_permuted", "mean"),
            com_x=("attention_com_x", "mean"), com_y=("attention_com_y", "mean"),
        ).reset_index()
    return dg.MaterializeResult(metadata={
        **table_metadata(SPATIAL_STATISTICS, len(frame)),
        **figure_metadata(target),
        "by_drive_side": dg.MetadataValue.md(by_side.round(4).to_markdown(index=False) if len(by_side) else "_(no rows)_"),
    })


# --------------------------------------------------------------------------- 4: baselines


@dg.asset(
    deps=[layer_statistics, spatial_statistics],
    description=("Table metric_baselines: every metric's mean beside its value for uniform attention (closed form "
                 "for N patches) and under a seeded per-image patch permutation. The six seed metrics are "
                 "permutation-invariant (permuted = real), so the permutation baseline is reported for the "
                 "spatial statistics. Figure analyses/metric_baselines.png; the uniform values are also drawn "
                 "in attention_distributions.png."),
    **_FIGURE,
)
def metric_baselines(pipeline: PipelineResource, warehouse: WarehouseResource) -> dg.MaterializeResult:
    store = warehouse.warehouse()
    rows = []
    by_n = store.query(
        f'SELECT num_patches, count(*) AS images, '
        + ", ".join(f"avg({m}) AS {m}_mean, stddev_samp({m}) AS {m}_std" for m in METRIC_NAMES)
        + f' FROM "{ATTENTION_STATISTICS.name}" GROUP BY num_patches ORDER BY num_patches')
    for r in by_n.to_dict("records"):
        n = int(r["num_patches"])
        uniform = uniform_baselines(n)
        for m in METRIC_NAMES:
            rows.append(dict(metric=m, num_patches=n, images=int(r["images"]), real_mean=r[f"{m}_mean"],
                             real_std=r[f"{m}_std"], uniform=uniform[m], permuted_mean=r[f"{m}_mean"],
                             permutation_invariant=PERMUTATION_INVARIANT[m], source_table=ATTENTION_STATISTICS.name))
    spatial = store.query(
        "SELECT a.num_patches, count(*) AS images, "
        + ", ".join(f"avg(sp.{c}) AS {c}_mean, stddev_samp(sp.{c}) AS {c}_std, avg(sp.{c}_permuted) AS {c}_perm"
                    for c in SPATIAL_COLUMNS)
        + f' FROM "{SPATIAL_STATISTICS.name}" sp JOIN "{ARTIFACT_STATISTICS.name}" a USING (image_id) '
        "GROUP BY a.num_patches ORDER BY 1")
    grid = _grid(pipeline, warehouse)
    for r in spatial.to_dict("records"):
        n = int(r["num_patches"])
        uniform = uniform_spatial_baselines(grid) if grid and grid[0] * grid[1] == n else {}
        for c in SPATIAL_COLUMNS:
            rows.append(dict(metric=c, num_patches=n, images=int(r["images"]), real_mean=r[f"{c}_mean"],
                             real_std=r[f"{c}_std"], uniform=uniform.get(c, np.nan), permuted_mean=r[f"{c}_perm"],
                             permutation_invariant=PERMUTATION_INVARIANT[c], source_table=SPATIAL_STATISTICS.name))
    table = pd.DataFrame(rows, columns=METRIC_BASELINES.column_names)
    count = store.replace_table(METRIC_BASELINES, table)
    target = _figure_path(pipeline, "metric_baselines.png")
    render_baselines(table, target, footer=model_footer(store))
    return dg.MaterializeResult(metadata={
        **table_metadata(METRIC_BASELINES, count),
        **figure_metadata(target),
        "table": dg.MetadataValue.md(baselines_markdown(table)),
        "note": dg.MetadataValue.text(
            "The six seed metrics depend only on the multiset of attention weights, so shuffling the patches "
            "leaves them unchanged (permuted_mean = real_mean); the permutation baseline is meaningful only for "
            "the spatial statistics."),
    })


# --------------------------------------------------------------------------- 3: rollout


def load_analysis_shards(context: dg.AssetExecutionContext, warehouse: WarehouseResource, table,
                         shard_pass: ShardPass, state: CurrentState, overrides: dict | None = None) -> dict[str, str]:
    """Load the own-pass analysis files of every shard into DuckDB from this single (unpartitioned) step,
    so the partitioned steps, which may run on remote workers, never open the warehouse. Only files of the
    current recipe and image set are loaded; the rows of other shards (stale, dropped, never computed) leave
    the table, countries come from the manifest. Returns the files left out {shard: reason}."""
    store = warehouse.warehouse(context.log)
    current, excluded = classify_outputs(shard_pass, context.instance.get_dynamic_partitions(SHARD_PARTITIONS_NAME),
                                         state)
    if excluded:
        context.log.warning("%s: %d shard files left out (stale; `attn-assets materialize` recomputes them): %s",
                            table.name, len(excluded), summarize_reasons(excluded))
    for shard_key, path in sorted(current.items()):
        store.replace_analysis_shard(table, shard_key, path, overrides=overrides)
    store.drop_other_shards(table, list(current))
    store.conform_to_manifest([table])
    return excluded


def _shard_metadata(outcomes, extra: dict) -> dict:
    frame = pd.DataFrame([{"shard": o.shard_key, "images": o.images, "computed": o.computed,
                           "seconds": round(o.seconds, 2)} for o in outcomes])
    return {"images": dg.MetadataValue.int(int(frame["images"].sum()) if len(frame) else 0),
            "computed": dg.MetadataValue.int(int(frame["computed"].sum()) if len(frame) else 0),
            "per_shard": dg.MetadataValue.md(frame.to_markdown(index=False) if len(frame) else "_none_"), **extra}


@dg.asset(
    description=("Attention rollout (Abnar & Zuidema 2020) per image: head-averaged attention of every layer, "
                 "rownorm(0.5 A + 0.5 I), multiplied through the layers inside its OWN forward pass (one T x T "
                 "running product per image, each layer's attention discarded after folding); six metrics of the "
                 "CLS row -> table rollout_statistics, maps in analyses/rollout/<shard>.parquet."),
    code_version=code_version_from_env("rollout"),
    **_SHARD,
)
def rollout_statistics(
    context: dg.AssetExecutionContext, pipeline: PipelineResource, attention_model: AttentionModelResource,
) -> dg.MaterializeResult:
    layout = pipeline.layout
    encoder = attention_model.encoder()
    device = attention_model.resolved_device()
    precision = resolve_precision(attention_model.precision, device)
    recipe = rollout_recipe(attention_model.model, attention_model.precision, attention_model.device)
    outcomes = []
    for shard_key in context.partition_keys:
        remove_abandoned_temporaries(layout.rollout_dir)
        outcome = compute_rollout_shard(
            layout=layout, shard_key=shard_key, encoder=encoder, model_spec=attention_model.model, device=device,
            precision=precision, batch_size=attention_model.resolved_batch_size(),
            num_workers=attention_model.num_workers, logger=context.log, recipe=recipe)
        context.add_asset_metadata(recipe_metadata(outcome.record), partition_key=shard_key)
        context.log.info("%s: rollout of %d images in %.1f s", shard_key, outcome.computed, outcome.seconds)
        outcomes.append(outcome)
    return dg.MaterializeResult(data_version=run_data_version([o.record for o in outcomes]),
                                metadata=_shard_metadata(outcomes, {
        "device": dg.MetadataValue.text(device), "precision": dg.MetadataValue.text(precision),
        "dagster/table_name": dg.MetadataValue.text(ROLLOUT_STATISTICS.name)}))


@dg.asset(
    deps=[rollout_statistics, attention_warehouse],
    description=("attention_analysis/analyses/rollout_gallery.png: the images with the lowest and highest rollout "
                 "entropy, last-layer CLS map vs rollout map on the model's crop; rollout_statistics metadata."),
    **_FIGURE,
)
def rollout_gallery(context: dg.AssetExecutionContext, pipeline: PipelineResource,
                    warehouse: WarehouseResource, attention_model: AttentionModelResource) -> dg.MaterializeResult:
    excluded = load_analysis_shards(context, warehouse, ROLLOUT_STATISTICS, ROLLOUT,
                                    run_state(pipeline, attention_model),
                                    overrides={"num_patches": "s.grid_height * s.grid_width"})
    store = warehouse.warehouse()
    half = ROLLOUT_GALLERY_SIZE // 2
    # only images whose last-layer statistics are loaded too: their CLS maps come from current shard files
    select = (f'SELECT r.image_id, r.shard_key, coalesce(r.country, \'\') AS country, i.abs_path, i.member, r.attention_entropy '
              f'FROM "{ROLLOUT_STATISTICS.name}" r JOIN "{IMAGES.name}" i USING (image_id) '
              f'JOIN "{ATTENTION_STATISTICS.name}" s USING (image_id)')
    low = store.query(f"{select} ORDER BY r.attention_entropy ASC, r.image_id LIMIT ?", [half])
    high = store.query(f"{select} ORDER BY r.attention_entropy DESC, r.image_id LIMIT ?", [half])
    low["selection"] = [f"lowest rollout entropy #{i}" for i in range(1, len(low) + 1)]
    high["selection"] = [f"highest rollout entropy #{i}" for i in range(1, len(high) + 1)]
    rows = pd.concat([low, high]).drop_duplicates("image_id").reset_index(drop=True)
    cls_maps, boxes, rollout_maps = {}, {}, {}
    for shard_key, group in rows.groupby("shard_key"):
        ids = list(group["image_id"])
        shard_file = pipeline.layout.shard_parquet(shard_key)
        if shard_file.exists():
            maps, shard_boxes = read_cls_maps(shard_file, ids, with_boxes=True)
            cls_maps.update(maps)
            boxes.update(shard_boxes)
        path = pipeline.layout.rollout_parquet(shard_key)
        if path.exists():
            table = pq.read_table(path, columns=["image_id", "grid_height", "grid_width", "rollout_map"],
                                  filters=[("image_id", "in", ids)])
            for image_id, gh, gw, flat in zip(table["image_id"].to_pylist(), table["grid_height"].to_pylist(),
                                              table["grid_width"].to_pylist(),
                                              table["rollout_map"].to_numpy(zero_copy_only=False)):
                rollout_maps[image_id] = np.asarray(flat, dtype=np.float32).reshape(gh, gw)
    target = _figure_path(pipeline, "rollout_gallery.png")
    _, skipped = render_rollout_gallery(rows, cls_maps, rollout_maps, boxes, target, footer=model_footer(store))
    for image_id in skipped:
        context.log.warning("rollout_gallery: image %s could not be drawn; skipped", image_id)
    compare = store.query(
        f'SELECT avg(r.attention_entropy) AS rollout_entropy, avg(s.attention_entropy) AS last_layer_entropy, '
        f'avg(r.attention_concentration_top10) AS rollout_top10, avg(s.attention_concentration_top10) AS last_layer_top10 '
        f'FROM "{ROLLOUT_STATISTICS.name}" r JOIN "{ATTENTION_STATISTICS.name}" s USING (image_id)')
    return dg.MaterializeResult(metadata={
        **table_metadata(ROLLOUT_STATISTICS, _count(warehouse, ROLLOUT_STATISTICS.name), rows.drop(columns=["abs_path", "member"])),
        **figure_metadata(target, skipped=dg.MetadataValue.int(len(skipped))),
        "rollout_vs_last_layer": dg.MetadataValue.md(compare.round(4).to_markdown(index=False)),
        **excluded_metadata(excluded),
    })


# --------------------------------------------------------------------------- 7: ablation


@dg.asset(
    description=("Masking ablation for a deterministic sample of each shard (ATTN_ASSETS_ABLATION_FRACTION, "
                 "default 0 = off: the asset then writes no rows and says so): the top-k attended patches "
                 "(k = 10% of the patches) and, as control, k seeded random patches are filled with the "
                 "processor's mean pixel; cosine distance of the CLS embedding -> table ablation_statistics. "
                 "Three forward passes per sampled image."),
    code_version=code_version_from_env("ablation"),
    **_SHARD,
)
def ablation_statistics(
    context: dg.AssetExecutionContext, pipeline: PipelineResource, attention_model: AttentionModelResource,
) -> dg.MaterializeResult:
    layout = pipeline.layout
    fraction = ablation_fraction_from_env()
    # fraction 0: no model load; an empty file per shard records the recipe (fraction 0), so the shard is done
    # for this setting and becomes stale when the fraction changes
    encoder = attention_model.encoder() if fraction > 0 else None
    device = attention_model.resolved_device()
    precision = resolve_precision(attention_model.precision, device)
    recipe = ablation_recipe(attention_model.model, attention_model.precision, attention_model.device, fraction)
    outcomes = []
    for shard_key in context.partition_keys:
        remove_abandoned_temporaries(layout.ablation_dir)
        outcome = compute_ablation_shard(
            layout=layout, shard_key=shard_key, encoder=encoder, model_spec=attention_model.model, device=device,
            precision=precision, batch_size=attention_model.resolved_batch_size(),
            num_workers=attention_model.num_workers, fraction=fraction, logger=context.log, recipe=recipe)
        context.add_asset_metadata(recipe_metadata(outcome.record), partition_key=shard_key)
        outcomes.append(outcome)
    metadata = _shard_metadata(outcomes, {
        "fraction": dg.MetadataValue.float(fraction), "device": dg.MetadataValue.text(device),
        "precision": dg.MetadataValue.text(precision)})
    if fraction <= 0:
        note = (f"Ablation is off ({ENV_ABLATION_FRACTION} unset or 0): no images sampled, no rows written for "
                f"{', '.join(context.partition_keys)}. Set {ENV_ABLATION_FRACTION}=0.01 (for example) and "
                "re-materialize to sample 1% of each shard (3 extra forward passes per sampled image).")
        context.log.info(note)
        metadata["note"] = dg.MetadataValue.text(note)
    return dg.MaterializeResult(data_version=run_data_version([o.record for o in outcomes]), metadata=metadata)


@dg.asset(
    deps=[ablation_statistics, attention_warehouse],  # the table follows the manifest's `images` (loaded there)
    description="attention_analysis/analyses/ablation.png: cosine distance after masking top-k vs random-k patches.",
    **_FIGURE,
)
def ablation_summary(context: dg.AssetExecutionContext, pipeline: PipelineResource,
                     warehouse: WarehouseResource, attention_model: AttentionModelResource) -> dg.MaterializeResult:
    excluded = load_analysis_shards(context, warehouse, ABLATION_STATISTICS, ABLATION,
                                    run_state(pipeline, attention_model))
    frame = warehouse.warehouse().query(f'SELECT * FROM "{ABLATION_STATISTICS.name}" ORDER BY image_id')
    fraction = ablation_fraction_from_env()
    note = None
    if frame.empty:
        note = (f"no sampled images: {ENV_ABLATION_FRACTION}={fraction:g}" if fraction <= 0
                else "no sampled images in the computed shards")
    target = _figure_path(pipeline, "ablation.png")
    render_ablation(frame, target, note=note, footer=model_footer(warehouse.warehouse(), len(frame)))
    metadata = {**table_metadata(ABLATION_STATISTICS, len(frame)), **figure_metadata(target),
                "fraction": dg.MetadataValue.float(fraction), **excluded_metadata(excluded)}
    if note:
        metadata["note"] = dg.MetadataValue.text(note)
    else:
        metadata["mean_cosine_distance_topk"] = dg.MetadataValue.float(float(frame["cosine_distance_topk"].mean()))
        metadata["mean_cosine_distance_random"] = dg.MetadataValue.float(float(frame["cosine_distance_random"].mean()))
        metadata["topk_beats_random"] = dg.MetadataValue.float(
            float((frame["cosine_distance_topk"] > frame["cosine_distance_random"]).mean()))
    return dg.MaterializeResult(metadata=metadata)


# --------------------------------------------------------------------------- 8: localization benchmark


@dg.asset(
    deps=[image_manifest, attention_warehouse],
    description=("Localization benchmark for the images whose manifest has a cue box (column cue_box, "
                 "'x0,y0,x1,y1' in original pixels; the demo's planted signs): energy in box, its ratio to the box's "
                 "area share, and the pointing game, for the last-layer CLS map, each last-layer head, every layer "
                 "and rollout (and, for a CLIP model with its text tower, the true country's relevance map), on the model and on a randomized copy of it (Adebayo et al. 2018) -> tables "
                 "localization_benchmark and localization_summary, figure attention_analysis/analyses/"
                 "localization.png (the default model). Every model of ATTN_ASSETS_MODELS is scored (rows keyed by "
                 "model_spec; one that cannot load is left out and named in the metadata). Its own forward passes "
                 "(two per model); no rows when no image has a cue box."),
    **{**_FIGURE, "kinds": {"duckdb", "pytorch", "png"}},
)
def localization_benchmark(context: dg.AssetExecutionContext, pipeline: PipelineResource,
                           warehouse: WarehouseResource, attention_model: AttentionModelResource) -> dg.MaterializeResult:
    images = cue_images(pipeline.layout)
    for problem in images.invalid:  # unreadable text; boxes that do not fit their image are logged while scoring
        context.log.warning("localization_benchmark: %s; fix the value or leave it empty", problem)
    target = _figure_path(pipeline, "localization.png")
    frames, unavailable = [], {}
    device = attention_model.resolved_device()
    for entry in (models_setting() if images.records else ()):  # every listed model; the default first
        try:
            encoder = attention_model.encoder_for(entry.spec)
        except (ModelLoadError, OSError, ValueError) as error:
            if entry.spec == attention_model.model:
                raise
            unavailable[entry.key] = str(error)
            context.log.error("localization_benchmark: model %s (%s) cannot be loaded, left out: %s", entry.key,
                              entry.spec, error)
            continue
        classifier = None
        if text_tower_missing_reason(entry.spec) is None:
            classifier = classifier_for(attention_model, country_prompts(), spec=entry.spec)
        frames.append(score_images(encoder, images, device=device, precision=resolve_precision(
            attention_model.precision, device), batch_size=attention_model.resolved_batch_size(),
            num_workers=attention_model.num_workers, logger=context.log, classifier=classifier))
        del encoder, classifier
        release_other_encoder()
    frame = (pd.concat(frames, ignore_index=True) if frames
             else pd.DataFrame(columns=[*LOCALIZATION_BENCHMARK.column_names, "uniform_hit"]))
    summary = summarize(frame) if len(frame) else pd.DataFrame(columns=LOCALIZATION_SUMMARY.column_names)
    counts = warehouse.warehouse(context.log).replace_tables({LOCALIZATION_BENCHMARK: frame,
                                                              LOCALIZATION_SUMMARY: summary})
    render_localization(summary[summary["model_spec"] == attention_model.model], target,
                        model_spec=attention_model.model)  # the plain figure: the default model
    headline = main_maps(summary)
    metadata = {
        **table_metadata(LOCALIZATION_SUMMARY, counts[LOCALIZATION_SUMMARY.name], headline.round(4)),
        **figure_metadata(target),
        "benchmark_rows": dg.MetadataValue.int(counts[LOCALIZATION_BENCHMARK.name]),
        "images_with_cue_box": dg.MetadataValue.int(len(images.records)),
        "invalid_cue_boxes": dg.MetadataValue.int(len(images.invalid)),
    }
    if images.invalid:
        metadata["invalid_cue_box_examples"] = dg.MetadataValue.md("\n".join(f"- {p}" for p in images.invalid[:10]))
    if not images.records:
        metadata["note"] = dg.MetadataValue.text("no manifest image has a cue_box: nothing to score")
    if unavailable:
        metadata["models_left_out"] = dg.MetadataValue.md("\n".join(f"- {k}: {v}" for k, v in unavailable.items()))
    return dg.MaterializeResult(metadata=metadata)


SHARD_ANALYSIS_ASSETS = (rollout_statistics, ablation_statistics)

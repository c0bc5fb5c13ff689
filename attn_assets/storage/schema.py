"""The one definition of every table and file the pipeline writes.

Writers and readers (Parquet shards, the DuckDB warehouse, the CSV export, Dagster
metadata) all derive their columns from here, so a column is renamed in one place.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pyarrow as pa

from attn_assets.metric_names import ACCURACY_THRESHOLDS_KM, METRIC_NAMES, SPATIAL_NAMES
from attn_assets.osv5m_columns import GROUP_DIMENSIONS, OSV_METADATA_COLUMNS

#: How aggregates and figures label the images whose country is unknown (NULL in every table).
UNKNOWN_COUNTRY = "unknown"

_ARROW_TYPES = {
    "VARCHAR": pa.string(),
    "DOUBLE": pa.float64(),
    "BIGINT": pa.int64(),
    "INTEGER": pa.int32(),
    "TIMESTAMP": pa.timestamp("us"),
    "FLOAT[]": pa.list_(pa.float32()),
    "HALF[]": pa.list_(pa.float16()),  # Parquet only (float16 logical type); DuckDB reads it as FLOAT[]
    "DOUBLE[]": pa.list_(pa.float64()),
    "BIGINT[]": pa.list_(pa.int64()),
    "INTEGER[]": pa.list_(pa.int32()),
    "BOOLEAN": pa.bool_(),
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

    def arrow_table(self, columns: Mapping[str, Sequence]) -> pa.Table:
        """One table's rows, from a column name -> values mapping (lists, arrays or pandas Series).

        In text columns every missing value (None, float NaN as pandas 3 uses for its ``str`` dtype,
        ``pd.NA``) becomes NULL; numeric NaN stays NaN. Raises KeyError for a missing column.
        """
        schema = self.arrow_schema()
        arrays = [
            pa.array(columns[f.name], type=f.type, from_pandas=pa.types.is_string(f.type)) for f in schema
        ]
        return pa.Table.from_arrays(arrays, schema=schema)


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
        for name in METRIC_NAMES
    )


# --- analyses beyond the seed's six metrics: names shared by the shard Parquet and the warehouse tables

SPATIAL_COLUMNS: tuple[str, ...] = SPATIAL_NAMES
_SPATIAL_DESCRIPTIONS = {
    "attention_com_x": "attention centre of mass, x in [0, 1] from the left edge of the model's view (centre crop)",
    "attention_com_y": "attention centre of mass, y in [0, 1] from the top edge of the model's view",
    "attention_com_distance": "distance of the centre of mass from the view's centre (0.5, 0.5)",
    "attention_center_distance": "attention-weighted mean distance of the patch centres from the view's centre",
    "attention_share_top": "share of the (renormalized) attention in the top third of the view",
    "attention_share_middle": "share of the attention in the middle third (by height)",
    "attention_share_bottom": "share of the attention in the bottom third",
    "attention_share_left": "share of the attention in the left half",
    "attention_share_right": "share of the attention in the right half",
}
PERMUTED_SPATIAL_COLUMNS: tuple[str, ...] = tuple(f"{name}_permuted" for name in SPATIAL_COLUMNS)
WITHOUT_ARTIFACT_COLUMNS: tuple[str, ...] = tuple(f"{name}_without_artifacts" for name in METRIC_NAMES)


def _list_metric_columns(prefix: str, what: str) -> tuple[Column, ...]:
    return tuple(
        Column(f"{prefix}_{name}", "BIGINT[]" if name == "num_high_attention_patches" else "DOUBLE[]",
               f"{_METRIC_DESCRIPTIONS[name]}, {what}")
        for name in METRIC_NAMES
    )


def _spatial_columns(suffix: str = "", what: str = "") -> tuple[Column, ...]:
    return tuple(Column(f"{name}{suffix}", "DOUBLE", _SPATIAL_DESCRIPTIONS[name] + what) for name in SPATIAL_COLUMNS)


_ARTIFACT_COLUMNS = (
    Column("artifact_count", "BIGINT", "artifact patches: last-layer output-token norm > median + 5 * 1.4826 * MAD"),
    Column("artifact_attention_share", "DOUBLE", "share of the CLS-to-patch attention taken by the artifact patches"),
    Column("artifact_norm_median", "DOUBLE", "median output-token norm of the image's patches"),
    Column("artifact_norm_threshold", "DOUBLE", "the image's artifact threshold (median + 5 * 1.4826 * MAD)"),
    Column("artifact_norm_max", "DOUBLE", "largest output-token norm of the image's patches"),
)


def _without_artifact_columns() -> tuple[Column, ...]:
    return tuple(
        Column(f"{name}_without_artifacts", "BIGINT" if name == "num_high_attention_patches" else "DOUBLE",
               f"{_METRIC_DESCRIPTIONS[name]}, artifact patches removed from the CLS row")
        for name in METRIC_NAMES
    )


# Register tokens (DINOv2 with registers) take part of the CLS row; the patch maps exclude them.
_REGISTER_SHARE = Column(
    "register_attention_share", "DOUBLE",
    "share of the last layer's head-averaged CLS attention on the register tokens (sum over the register columns); "
    "NULL for models without registers",
)

# Columns of the same-pass analyses in the shard Parquet (absent from shards written before the
# shard files held them).
SHARD_ANALYSIS_COLUMNS: tuple[Column, ...] = (
    *_list_metric_columns("layer", "per layer (index = 0-based layer), heads averaged"),
    *_list_metric_columns("head", "per last-layer head (index = head)"),
    Column("head_similarity", "DOUBLE", "mean pairwise cosine similarity of the last layer's per-head CLS maps"),
    _REGISTER_SHARE,
    *_ARTIFACT_COLUMNS,
    Column("artifact_indices", "INTEGER[]", "row-major patch indices of the artifact patches"),
    *_without_artifact_columns(),
    *_spatial_columns(),
    *_spatial_columns("_permuted", " (patches shuffled with a seeded per-image permutation: no-structure baseline)"),
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
        Column("cls_embedding", "HALF[]",
               "last_hidden_state[:, 0] (what PLONK conditions on), float16; absent from shards written before the geolocation pass"),
        *SHARD_ANALYSIS_COLUMNS,
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
        Column("member", "VARCHAR", "the image's member name inside the zip archive at path (NULL: path is the image file)"),
        Column("country", "VARCHAR", "ISO 3166-1 alpha-2 code"),
        Column("country_name", "VARCHAR", "country name from pycountry"),
        Column("country_source", "VARCHAR", "manifest, unique_country or reverse_geocoder"),
        Column("latitude", "DOUBLE", "degrees"),
        Column("longitude", "DOUBLE", "degrees"),
        Column("source_file", "VARCHAR", "manifest file the row came from"),
        Column("source_row", "BIGINT", "line of the row in that file (header = 1)"),
        *(Column(c.name, c.sql_type, c.description) for c in OSV_METADATA_COLUMNS),
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
        Column("head_similarity", "DOUBLE", "mean pairwise cosine similarity of the last layer's per-head CLS maps"),
        _REGISTER_SHARE,
    ),
    key=("image_id",),
)

_IMAGE_KEY = (
    Column("image_id", "VARCHAR", "manifest image id", nullable=False),
    Column("shard_key", "VARCHAR", "partition that computed the row", nullable=False),
    Column("country", "VARCHAR", "ISO 3166-1 alpha-2 code"),
)

LAYER_STATISTICS = Table(
    name="layer_statistics",
    description="The six metrics of every layer's head-averaged CLS attention (same forward pass as attention_statistics).",
    columns=(*_IMAGE_KEY, Column("layer", "INTEGER", "0-based layer (the last one is attention_statistics)", nullable=False),
             *_metric_columns()),
    key=("image_id", "layer"),
)

HEAD_STATISTICS = Table(
    name="head_statistics",
    description="The six metrics of each last-layer head's CLS attention (heads not averaged).",
    columns=(*_IMAGE_KEY, Column("head", "INTEGER", "0-based attention head of the last layer", nullable=False),
             *_metric_columns()),
    key=("image_id", "head"),
)

ARTIFACT_STATISTICS = Table(
    name="artifact_statistics",
    description=("High-norm artifact tokens (Darcet et al. 2023) per image and the six metrics recomputed with "
                 "them removed from the CLS row."),
    columns=(*_IMAGE_KEY, Column("num_patches", "BIGINT", "patches in the CLS map"), *_ARTIFACT_COLUMNS,
             Column("artifact_indices", "INTEGER[]", "row-major patch indices of the artifact patches"),
             *_without_artifact_columns()),
    key=("image_id",),
)

SPATIAL_STATISTICS = Table(
    name="spatial_statistics",
    description="Where the last-layer CLS attention lies in the model's view, and the same for a seeded permutation.",
    columns=(*_IMAGE_KEY, *_spatial_columns(),
             *_spatial_columns("_permuted", " (patches shuffled with a seeded per-image permutation: no-structure baseline)")),
    key=("image_id",),
)

METRIC_BASELINES = Table(
    name="metric_baselines",
    description=("Each metric's mean over images beside its value under uniform attention (closed form) and "
                 "under a seeded per-image patch permutation (equal to the real value for the six "
                 "permutation-invariant seed metrics)."),
    columns=(
        Column("metric", "VARCHAR", "metric or spatial statistic", nullable=False),
        Column("num_patches", "BIGINT", "patches per map the uniform value is computed for", nullable=False),
        Column("images", "BIGINT", "images averaged"),
        Column("real_mean", "DOUBLE", "mean over images"),
        Column("real_std", "DOUBLE", "sample std over images"),
        Column("uniform", "DOUBLE", "value for uniform attention over the patches (closed form)"),
        Column("permuted_mean", "DOUBLE", "mean over images of the value with the patches shuffled"),
        Column("permutation_invariant", "BOOLEAN", "true when shuffling the patches cannot change the value"),
        Column("source_table", "VARCHAR", "table holding the per-image values"),
    ),
    key=("metric", "num_patches"),
)

ROLLOUT_RESULTS = Table(
    name="rollout_results",
    description="One Parquet file per shard (analyses/rollout/<shard>.parquet): rollout metrics and maps.",
    columns=(
        *_IMAGE_KEY,
        *_metric_columns(),
        Column("grid_height", "INTEGER", "patch rows of the rollout map"),
        Column("grid_width", "INTEGER", "patch columns of the rollout map"),
        Column("rollout_map", "FLOAT[]", "CLS row of the attention rollout (CLS column dropped), row-major"),
        *_PROVENANCE,
    ),
    key=("image_id",),
)

ROLLOUT_STATISTICS = Table(
    name="rollout_statistics",
    description=("The six metrics of the attention-rollout map (Abnar & Zuidema 2020): head-averaged attention, "
                 "rownorm(0.5 A + 0.5 I), multiplied through all layers, CLS row."),
    columns=(*_IMAGE_KEY, *_metric_columns(), Column("num_patches", "BIGINT", "patches in the rollout map"), *_PROVENANCE),
    key=("image_id",),
)

ABLATION_STATISTICS = Table(
    name="ablation_statistics",
    description=("Cosine distance between the CLS embedding of the original image and of the image with its top-k "
                 "attended patches (or, as control, k random patches) masked with the mean pixel; k = 10% of patches."),
    columns=(
        *_IMAGE_KEY,
        Column("ablation_k", "BIGINT", "patches masked"),
        Column("topk_attention_share", "DOUBLE", "share of the CLS attention on the masked top-k patches"),
        Column("cosine_distance_topk", "DOUBLE", "1 - cos(original, top-k masked) CLS embedding"),
        Column("cosine_distance_random", "DOUBLE", "1 - cos(original, random-k masked) CLS embedding (control)"),
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

def _aggregate_columns(group: str) -> tuple[Column, ...]:
    return tuple(
        Column(f"{metric}_{stat}", "DOUBLE", f"{stat} of {metric} over the {group}'s images")
        for metric in METRIC_NAMES
        for stat in ("mean", "std", "min", "max")
    ) + tuple(
        Column(f"{metric}_uniform", "DOUBLE", f"{metric} of uniform attention over the same patches (baseline)")
        for metric in METRIC_NAMES
    )


_AGGREGATE_COLUMNS = _aggregate_columns("country")

COUNTRY_AGGREGATES = Table(
    name="country_aggregates",
    description="Per-country image count and mean/std/min/max of each metric (the seed's groupby).",
    columns=(
        Column("country", "VARCHAR", "ISO 3166-1 alpha-2 code (NULL: the images whose country is unknown)"),
        Column("country_name", "VARCHAR", f"country name ('{UNKNOWN_COUNTRY}' on the NULL-country row)"),
        Column("image_count", "BIGINT", "images with statistics", nullable=False),
        *_AGGREGATE_COLUMNS,
    ),
)

GROUP_AGGREGATES = Table(
    name="group_aggregates",
    description=("Image count and mean/std/min/max of each metric per value of each OSV-5M metadata column in "
                 f"{', '.join(GROUP_DIMENSIONS)} (one row per dimension and value), with the uniform baselines."),
    columns=(
        Column("dimension", "VARCHAR", f"images column grouped by: one of {', '.join(GROUP_DIMENSIONS)}",
               nullable=False),
        Column("value", "VARCHAR", "the group's value as text (climate 15 -> '15'; region, sub_region and city "
               "within their country: 'FR/Bretagne'; NULL: the value is unknown)"),
        Column("image_count", "BIGINT", "images with statistics", nullable=False),
        *_aggregate_columns("group"),
    ),
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

# --- geolocation: PLONK predictions from the stored CLS embeddings

_SAMPLING_PROVENANCE = (
    Column("plonk_model", "VARCHAR", "PLONK model (ATTN_ASSETS_PLONK_MODEL)", nullable=False),
    Column("num_steps", "BIGINT", "sampler steps", nullable=False),
    Column("num_samples", "BIGINT", "locations sampled per image; the spherical medoid is kept", nullable=False),
    Column("sampling_seed", "BIGINT", "seed, combined with a hash of the image id", nullable=False),
    Column("cfg_rate", "DOUBLE", "classifier-free guidance scale (0 = off)", nullable=False),
    Column("embedding_model_spec", "VARCHAR", "model spec that computed the CLS embedding", nullable=False),
    Column("embedding_precision", "VARCHAR", "precision of that forward pass (fp32 or bf16)", nullable=False),
    Column("computed_at", "TIMESTAMP", "UTC time the shard was predicted", nullable=False),
)

GEOLOCATION_PREDICTIONS = Table(
    name="geolocation_predictions",
    description=("PLONK's predicted location per image (geolocation/<shard>.parquet and this table) and its "
                 "great-circle error against the manifest's coordinates."),
    columns=(
        *_IMAGE_KEY,
        Column("latitude", "DOUBLE", "true latitude from the manifest (degrees; NULL when the manifest has none)"),
        Column("longitude", "DOUBLE", "true longitude from the manifest (degrees)"),
        Column("predicted_latitude", "DOUBLE", "predicted latitude (degrees)", nullable=False),
        Column("predicted_longitude", "DOUBLE", "predicted longitude (degrees)", nullable=False),
        Column("predicted_country", "VARCHAR", "ISO code of the predicted point (reverse_geocoder)"),
        Column("error_km", "DOUBLE", "haversine distance between true and predicted location (R = 6371 km)"),
        Column("geoscore", "DOUBLE", "5000 * exp(-error_km / 1492.7), OSV-5M's GeoScore per image"),
        Column("prediction_spread_km", "DOUBLE", "median distance of the samples to the kept one (uncertainty)"),
        *_SAMPLING_PROVENANCE,
    ),
    key=("image_id",),
)

GEOLOCATION_ACCURACY = Table(
    name="geolocation_accuracy",
    description=("Accuracy at the standard geolocation radii (share of images with error < r km), GeoScore and "
                 "error statistics: one row overall (scope 'overall') and one per true country (scope 'country')."),
    columns=(
        Column("scope", "VARCHAR", "'overall' or 'country'", nullable=False),
        Column("country", "VARCHAR", "ISO code of the true country (NULL on the overall row, and on the row of images whose country is unknown)"),
        Column("country_name", "VARCHAR", "country name"),
        Column("images", "BIGINT", "images with a prediction and true coordinates", nullable=False),
        Column("mean_error_km", "DOUBLE", "mean haversine error"),
        Column("median_error_km", "DOUBLE", "median haversine error"),
        Column("geoscore", "DOUBLE", "mean GeoScore (0-5000)"),
        *(Column(f"accuracy_{r}km", "DOUBLE", f"share of images with error < {r} km") for r in ACCURACY_THRESHOLDS_KM),
        Column("country_accuracy", "DOUBLE", "share of images whose predicted point lies in the true country"),
    ),
)

GEOLOCATION_ERROR_ANALYSIS = Table(
    name="geolocation_error_analysis",
    description=("Does attention predict failure? Per attention metric: Pearson and Spearman correlation with the "
                 "error, and the metric's mean over the best vs the worst decile of predictions by error."),
    columns=(
        Column("metric", "VARCHAR", "attention metric (attention_statistics column)", nullable=False),
        Column("images", "BIGINT", "images with the metric and an error", nullable=False),
        Column("pearson_r", "DOUBLE", "Pearson correlation of the metric with error_km"),
        Column("pearson_p", "DOUBLE", "two-sided p-value of pearson_r"),
        Column("spearman_rho", "DOUBLE", "Spearman rank correlation with error_km"),
        Column("spearman_p", "DOUBLE", "two-sided p-value of spearman_rho"),
        Column("decile_images", "BIGINT", "images in each decile: ceil(images / 10)"),
        Column("best_decile_mean", "DOUBLE", "metric mean over the images with the smallest errors"),
        Column("worst_decile_mean", "DOUBLE", "metric mean over the images with the largest errors"),
        Column("worst_minus_best", "DOUBLE", "worst_decile_mean - best_decile_mean"),
        Column("mannwhitney_p", "DOUBLE", "two-sided Mann-Whitney U p-value, worst vs best decile"),
    ),
    key=("metric",),
)

_LOCALIZATION_MAP = (
    Column("model_spec", "VARCHAR", "model spec whose maps are scored (the trained model's; the randomized copy "
           "has the same spec and weights = 'randomized')", nullable=False),
    Column("weights", "VARCHAR", "'trained' (the model as loaded) or 'randomized' (same architecture, fresh "
           "seeded weights: the model-randomization check of Adebayo et al. 2018)", nullable=False),
    Column("map", "VARCHAR", "map name: cls_attention (last layer, mean over heads), cls_attention/head<h> (last "
           "layer, one head), cls_attention/layer<l> (layer l, mean over heads), rollout", nullable=False),
    Column("map_type", "VARCHAR", "cls_attention | cls_attention_head | cls_attention_layer | rollout",
           nullable=False),
    Column("layer", "INTEGER", "0-based layer the map comes from (NULL for rollout, which spans every layer)"),
    Column("head", "INTEGER", "0-based head (NULL for maps averaged over heads)"),
)

LOCALIZATION_BENCHMARK = Table(
    name="localization_benchmark",
    description=("Per image with a known cue box (manifest column cue_box) and per map: how much of the map lies on "
                 "the cue (attn_assets.core.localization), for the trained model and its randomized copy."),
    columns=(
        Column("image_id", "VARCHAR", "manifest image id", nullable=False),
        Column("country", "VARCHAR", "ISO 3166-1 alpha-2 code"),
        *_LOCALIZATION_MAP,
        Column("cue_in_crop", "BOOLEAN", "false when the cue box lies wholly outside the model's crop (no scores)",
               nullable=False),
        Column("cue_visible_share", "DOUBLE", "share of the cue box's area inside the model's crop"),
        Column("energy_in_box", "DOUBLE", "share of the map's mass on the box (partly covered patches weighted by "
               "the covered share)"),
        Column("box_area_share", "DOUBLE", "share of the crop the (visible) box covers: what a uniform map scores"),
        Column("energy_ratio", "DOUBLE", "energy_in_box / box_area_share (1 = no better than uniform)"),
        Column("pointing_hit", "DOUBLE", "1 if the arg-max patch's cell overlaps the box, 0 if not (exact ties "
               "split evenly)"),
        Column("precision", "VARCHAR", "fp32 or bf16", nullable=False),
        Column("computed_at", "TIMESTAMP", "UTC time the benchmark was computed", nullable=False),
    ),
    key=("image_id", "model_spec", "weights", "map"),
)

LOCALIZATION_SUMMARY = Table(
    name="localization_summary",
    description="localization_benchmark per model, weights and map: means with 95% bootstrap confidence intervals.",
    columns=(
        *_LOCALIZATION_MAP,
        Column("images", "BIGINT", "images whose cue lies (at least partly) in the crop", nullable=False),
        Column("cues_outside_crop", "BIGINT", "images whose cue lies wholly outside the crop (not scored)",
               nullable=False),
        Column("energy_in_box_mean", "DOUBLE", "mean energy_in_box"),
        Column("box_area_share_mean", "DOUBLE", "mean box_area_share (the uniform map's energy_in_box)"),
        Column("energy_ratio_mean", "DOUBLE", "mean energy_ratio"),
        Column("energy_ratio_ci_low", "DOUBLE", "2.5% bootstrap percentile of the mean energy_ratio"),
        Column("energy_ratio_ci_high", "DOUBLE", "97.5% bootstrap percentile of the mean energy_ratio"),
        Column("pointing_rate", "DOUBLE", "mean pointing_hit: the pointing-game hit rate"),
        Column("pointing_ci_low", "DOUBLE", "2.5% bootstrap percentile of the pointing rate"),
        Column("pointing_ci_high", "DOUBLE", "97.5% bootstrap percentile of the pointing rate"),
        Column("uniform_pointing_rate", "DOUBLE", "the pointing rate of a uniform map (mean share of cells the "
               "box touches)"),
    ),
    key=("model_spec", "weights", "map"),
)

# --- what decides the country: zero-shot country classification, relevance maps, faithfulness curves

RELEVANCE_TARGETS: tuple[str, ...] = ("predicted", "true")  # whose logit a relevance map explains
FAITHFULNESS_MAPS: tuple[str, ...] = ("attention", "rollout", "relevance", "random")  # patch orders compared
FAITHFULNESS_MODES: tuple[str, ...] = ("deletion", "insertion")
RELEVANCE_AGREEMENT_COLUMNS: tuple[str, ...] = (
    "spearman_attention", "spearman_rollout", "top10_overlap_attention", "top10_overlap_rollout")
_AGREEMENT_DESCRIPTIONS = {
    "spearman_attention": "Spearman rank correlation of the relevance map with the last-layer CLS attention",
    "spearman_rollout": "Spearman rank correlation of the relevance map with the attention rollout",
    "top10_overlap_attention": "share of the relevance map's top-10% patches also in the CLS attention's top 10%",
    "top10_overlap_rollout": "share of the relevance map's top-10% patches also in the rollout's top 10%",
}

_ZERO_SHOT_COLUMNS = (
    Column("predicted_country", "VARCHAR", "country of the highest zero-shot probability (ISO code)", nullable=False),
    Column("predicted_probability", "DOUBLE", "its softmax probability over the country list", nullable=False),
    Column("top5_countries", "VARCHAR", "the five most probable countries, most probable first, comma-separated"),
    Column("top5_probabilities", "DOUBLE[]", "their probabilities"),
    Column("true_rank", "BIGINT", "rank of the true country (1 = predicted); NULL when it is not in the list"),
    Column("true_probability", "DOUBLE", "probability of the true country; NULL when it is not in the list"),
    Column("correct", "BOOLEAN", "predicted_country = country; NULL when the true country is not in the list"),
    Column("top5_correct", "BOOLEAN", "the true country is among the five most probable"),
    Column("prompts", "VARCHAR", "fingerprint of the country list and caption template", nullable=False),
)


def _relevance_file_columns() -> tuple[Column, ...]:
    columns = []
    for target in RELEVANCE_TARGETS:
        what = f"of the relevance map for the {target} country's logit"
        for metric in _metric_columns():
            columns.append(Column(f"{target}_{metric.name}", metric.sql_type, f"{metric.description}, {what}"))
        for name in RELEVANCE_AGREEMENT_COLUMNS:
            columns.append(Column(f"{target}_{name}", "DOUBLE", f"{_AGREEMENT_DESCRIPTIONS[name]} ({target} country)"))
        columns.append(Column(f"{target}_relevance_map", "FLOAT[]",
                              f"CLS row of the relevance (Chefer et al. 2021) for the {target} country, row-major"))
    for mode in FAITHFULNESS_MODES:
        for order in FAITHFULNESS_MAPS:
            columns.append(Column(f"{mode}_auc_{order}", "DOUBLE", f"{mode} AUC of the {order} order (NULL: not sampled)"))
            columns.append(Column(f"{mode}_curve_{order}", "DOUBLE[]", f"true-country probability at each {mode} step"))
    return tuple(columns)


COUNTRY_RELEVANCE_RESULTS = Table(
    name="country_relevance_results",
    description=("One Parquet file per shard (analyses/country_relevance/<shard>.parquet): zero-shot country "
                 "prediction, relevance maps and metrics for the predicted and true country, faithfulness curves."),
    columns=(
        *_IMAGE_KEY, *_ZERO_SHOT_COLUMNS,
        Column("grid_height", "INTEGER", "patch rows of the maps"),
        Column("grid_width", "INTEGER", "patch columns of the maps"),
        *_relevance_file_columns(),
        Column("faithfulness_fill", "VARCHAR", "what replaced removed patches: mean (mean pixel) or blur"),
        *_PROVENANCE,
    ),
    key=("image_id",),
)

COUNTRY_PREDICTIONS = Table(
    name="country_predictions",
    description="Zero-shot country classification per image with the model's own text tower.",
    columns=(*_IMAGE_KEY, *_ZERO_SHOT_COLUMNS, *_PROVENANCE),
    key=("image_id",),
)

RELEVANCE_STATISTICS = Table(
    name="relevance_statistics",
    description=("The six metrics of the relevance map (Chefer, Gur and Wolf 2021) for the predicted and for the "
                 "true country's logit, and its agreement with the last-layer CLS attention and the rollout."),
    columns=(
        *_IMAGE_KEY,
        Column("target", "VARCHAR", "whose logit the map explains: predicted or true", nullable=False),
        Column("target_country", "VARCHAR", "that country (ISO code)"),
        *_metric_columns(),
        *(Column(name, "DOUBLE", _AGREEMENT_DESCRIPTIONS[name]) for name in RELEVANCE_AGREEMENT_COLUMNS),
        Column("num_patches", "BIGINT", "patches in the map"),
    ),
    key=("image_id", "target"),
)

FAITHFULNESS_CURVES = Table(
    name="faithfulness_curves",
    description=("Deletion and insertion curves of the sampled images: the true country's probability as patches "
                 "are removed (revealed) in the order of each map, and the area under each curve."),
    columns=(
        *_IMAGE_KEY,
        Column("map", "VARCHAR", "patch order: attention, rollout, relevance (true country) or random", nullable=False),
        Column("mode", "VARCHAR", "deletion or insertion", nullable=False),
        Column("auc", "DOUBLE", "trapezoid area under the curve over the fraction of patches (0..1)"),
        Column("curve", "DOUBLE[]", "true-country probability at 0, 10%, ..., 100% of the patches"),
        Column("faithfulness_fill", "VARCHAR", "mean (the processor's mean pixel) or blur"),
    ),
    key=("image_id", "map", "mode"),
)

COUNTRY_ACCURACY = Table(
    name="country_accuracy",
    description="Zero-shot accuracy and top-5 accuracy, overall and per true country.",
    columns=(
        Column("scope", "VARCHAR", "overall or country", nullable=False),
        Column("country", "VARCHAR", "true country (NULL for overall)"),
        Column("images", "BIGINT", "images whose true country is in the list"),
        Column("accuracy", "DOUBLE", "share predicted correctly"),
        Column("top5_accuracy", "DOUBLE", "share with the true country among the five most probable"),
        Column("mean_true_probability", "DOUBLE", "mean probability of the true country"),
    ),
)

COUNTRY_CONFUSION = Table(
    name="country_confusion",
    description="The confusion matrix of zero-shot country classification, one row per (true, predicted) pair seen.",
    columns=(
        Column("country", "VARCHAR", "true country", nullable=False),
        Column("predicted_country", "VARCHAR", "predicted country", nullable=False),
        Column("images", "BIGINT", "images"),
        Column("share", "DOUBLE", "share of the true country's images"),
    ),
    key=("country", "predicted_country"),
)

FAITHFULNESS_SUMMARY = Table(
    name="faithfulness_summary",
    description=("Mean deletion and insertion AUC per map order, overall and per country, with 95% bootstrap "
                 "intervals: lower deletion / higher insertion AUC = more faithful."),
    columns=(
        Column("scope", "VARCHAR", "overall or country", nullable=False),
        Column("country", "VARCHAR", "true country (NULL for overall)"),
        Column("map", "VARCHAR", "attention, rollout, relevance or random", nullable=False),
        Column("mode", "VARCHAR", "deletion or insertion", nullable=False),
        Column("images", "BIGINT", "images with curves"),
        Column("mean_auc", "DOUBLE", "mean AUC"),
        Column("ci_low", "DOUBLE", "2.5% bootstrap percentile of the mean AUC (1000 resamples, seed 0)"),
        Column("ci_high", "DOUBLE", "97.5% bootstrap percentile of the mean AUC"),
    ),
)

# --- cross-model comparison: several encoders' last-layer maps of the same images (core/cross_model.py)

CROSS_MODEL_AGREEMENT = Table(
    name="cross_model_agreement",
    description=("Per image and model pair (model_a before model_b in ATTN_ASSETS_MODELS): agreement of the "
                 "two last-layer maps (each model's statistics file) on the intersection of the two models' views, "
                 "both area-weighted onto a common grid (core/cross_model.py). status 'failed' rows carry the reason "
                 "(a model without current statistics for the shard, e.g. one that could not load; an image one "
                 "model could not read) and NULL metrics."),
    columns=(
        *_IMAGE_KEY,
        Column("model_a", "VARCHAR", "first model's key (table models gives its spec)", nullable=False),
        Column("model_b", "VARCHAR", "second model's key", nullable=False),
        Column("status", "VARCHAR", "ok or failed", nullable=False),
        Column("reason", "VARCHAR", "why a failed row has no metrics (NULL when ok)"),
        Column("spearman", "DOUBLE", "Spearman rank correlation over the common cells (NaN if a map is constant)"),
        Column("top_overlap", "DOUBLE", "share of model_a's top-10% cells among model_b's top-10% cells; "
               "cells tied at the cut are fractional members (core.cross_model)"),
        Column("jensen_shannon", "DOUBLE", "Jensen-Shannon divergence, base 2 (0 same, 1 disjoint) of the maps "
               "renormalised over the intersection"),
        Column("mass_inside_a", "DOUBLE", "share of model_a's attention inside the intersection of the views"),
        Column("mass_inside_b", "DOUBLE", "share of model_b's attention inside the intersection of the views"),
        Column("intersection_share", "DOUBLE", "intersection area over the photo's area"),
        Column("cells", "INTEGER", "cells of the common grid the metrics are computed on"),
        Column("computed_at", "TIMESTAMP", "UTC time the shard was compared", nullable=False),
    ),
    key=("image_id", "model_a", "model_b"),
)

CROSS_MODEL_SUMMARY = Table(
    name="cross_model_summary",
    description=("cross_model_agreement per model pair, overall and per country: each metric's mean over the ok "
                 "rows with a 95% percentile-bootstrap interval (scipy.stats.bootstrap, 1000 resamples, seed 0)."),
    columns=(
        Column("scope", "VARCHAR", "overall or country", nullable=False),
        Column("country", "VARCHAR", "true country (NULL for overall)"),
        Column("model_a", "VARCHAR", "first model's key (table models gives its spec)", nullable=False),
        Column("model_b", "VARCHAR", "second model's key", nullable=False),
        Column("metric", "VARCHAR", "spearman, top_overlap or jensen_shannon", nullable=False),
        Column("images", "BIGINT", "images with a finite value", nullable=False),
        Column("mean", "DOUBLE", "mean over those images"),
        Column("ci_low", "DOUBLE", "2.5% bootstrap percentile of the mean (NULL for fewer than 2 images)"),
        Column("ci_high", "DOUBLE", "97.5% bootstrap percentile of the mean"),
    ),
)

_MODEL_KEY_COLUMN = Column("model_key", "VARCHAR", "the encoder's key in ATTN_ASSETS_MODELS (see table models)",
                           nullable=False)


def by_model(table: Table) -> Table:
    """``<table>_by_model``: ``table``'s rows for every encoder of ATTN_ASSETS_MODELS (and removed ones not yet
    deleted), keyed by ``model_key`` first. The plain table holds the default (first) model only."""
    return Table(name=f"{table.name}_by_model",
                 description=f"{table.description} One row set per model (model_key); the plain table: the default model.",
                 columns=(_MODEL_KEY_COLUMN, *table.columns),
                 key=("model_key", *table.key) if table.key else ())


ATTENTION_STATISTICS_BY_MODEL = by_model(ATTENTION_STATISTICS)
IMAGE_FAILURES_BY_MODEL = by_model(IMAGE_FAILURES)
LAYER_STATISTICS_BY_MODEL = by_model(LAYER_STATISTICS)
HEAD_STATISTICS_BY_MODEL = by_model(HEAD_STATISTICS)
ARTIFACT_STATISTICS_BY_MODEL = by_model(ARTIFACT_STATISTICS)
SPATIAL_STATISTICS_BY_MODEL = by_model(SPATIAL_STATISTICS)
SHARD_LOADS_BY_MODEL = by_model(SHARD_LOADS)
COUNTRY_AGGREGATES_BY_MODEL = by_model(COUNTRY_AGGREGATES)

MODELS = Table(
    name="models",
    description="The encoders whose results the *_by_model tables hold: listed in ATTN_ASSETS_MODELS or removed "
                "from it but not yet deleted (delete ATTN_ASSETS_HOME/models/<model_key>/ and re-materialize "
                "model_tables).",
    columns=(
        _MODEL_KEY_COLUMN,
        Column("model_spec", "VARCHAR", "what core.model.load_encoder loads (NULL: removed and never loaded here)"),
        Column("position", "INTEGER", "0-based place in ATTN_ASSETS_MODELS (0 = the default; NULL: removed)"),
        Column("is_default", "BOOLEAN", "the plain tables show this model", nullable=False),
        Column("listed", "BOOLEAN", "in ATTN_ASSETS_MODELS now (false: removed, rows kept until deleted)",
               nullable=False),
        Column("shards_loaded", "BIGINT", "shard files loaded into the *_by_model tables", nullable=False),
        Column("shards_excluded", "BIGINT", "shard files left out (stale for the model's current recipe)",
               nullable=False),
        Column("images", "BIGINT", "rows in attention_statistics_by_model", nullable=False),
        Column("failures", "BIGINT", "rows in image_failures_by_model", nullable=False),
    ),
    key=("model_key",),
)

MODEL_DIFFERENCES = Table(
    name="model_differences",
    description=("Per pair of listed models (model_a before model_b in ATTN_ASSETS_MODELS), overall and per country, "
                 "each attention metric's mean for both models over the images both computed, and the mean of the "
                 "paired per-image difference a - b with a 95% percentile-bootstrap interval (scipy.stats.bootstrap, "
                 "1000 resamples, seed 0): 'does StreetCLIP concentrate more than CLIP on Brazil, and how sure?'."),
    columns=(
        Column("scope", "VARCHAR", "overall or country", nullable=False),
        Column("country", "VARCHAR", "manifest country (NULL for overall)"),
        Column("model_a", "VARCHAR", "first model's key", nullable=False),
        Column("model_b", "VARCHAR", "second model's key", nullable=False),
        Column("metric", "VARCHAR", "one of the six attention metrics", nullable=False),
        Column("images", "BIGINT", "images with a finite value from both models", nullable=False),
        Column("mean_a", "DOUBLE", "model_a's mean over those images"),
        Column("mean_b", "DOUBLE", "model_b's mean over those images"),
        Column("mean_difference", "DOUBLE", "mean of (a - b) per image = mean_a - mean_b"),
        Column("ci_low", "DOUBLE", "2.5% bootstrap percentile of mean_difference (NULL for fewer than 2 images)"),
        Column("ci_high", "DOUBLE", "97.5% bootstrap percentile of mean_difference"),
    ),
)

#: The per-model tables one shard file fills (as replace_shard fills their plain tables).
BY_MODEL_TABLES: dict[str, Table] = {t.name: by_model_t for t, by_model_t in (
    (ATTENTION_STATISTICS, ATTENTION_STATISTICS_BY_MODEL), (IMAGE_FAILURES, IMAGE_FAILURES_BY_MODEL),
    (LAYER_STATISTICS, LAYER_STATISTICS_BY_MODEL), (HEAD_STATISTICS, HEAD_STATISTICS_BY_MODEL),
    (ARTIFACT_STATISTICS, ARTIFACT_STATISTICS_BY_MODEL), (SPATIAL_STATISTICS, SPATIAL_STATISTICS_BY_MODEL),
    (SHARD_LOADS, SHARD_LOADS_BY_MODEL), (COUNTRY_AGGREGATES, COUNTRY_AGGREGATES_BY_MODEL))}

WAREHOUSE_TABLES: tuple[Table, ...] = (
    IMAGES,
    ATTENTION_STATISTICS,
    IMAGE_FAILURES,
    MANIFEST_REJECTIONS,
    COUNTRY_AGGREGATES,
    GROUP_AGGREGATES,
    SHARD_LOADS,
    LAYER_STATISTICS,
    HEAD_STATISTICS,
    ARTIFACT_STATISTICS,
    SPATIAL_STATISTICS,
    METRIC_BASELINES,
    ROLLOUT_STATISTICS,
    ABLATION_STATISTICS,
    GEOLOCATION_PREDICTIONS,
    GEOLOCATION_ACCURACY,
    GEOLOCATION_ERROR_ANALYSIS,
    LOCALIZATION_BENCHMARK,
    LOCALIZATION_SUMMARY,
    COUNTRY_PREDICTIONS,
    RELEVANCE_STATISTICS,
    FAITHFULNESS_CURVES,
    COUNTRY_ACCURACY,
    COUNTRY_CONFUSION,
    FAITHFULNESS_SUMMARY,
    CROSS_MODEL_AGREEMENT,
    CROSS_MODEL_SUMMARY,
    MODELS,
    MODEL_DIFFERENCES,
    *BY_MODEL_TABLES.values(),
)

# The seed's attention_statistics.csv columns, in its documented order.
SEED_CSV_COLUMNS: tuple[str, ...] = ("image_id", "country", *METRIC_NAMES)

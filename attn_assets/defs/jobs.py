"""Every job of attn-assets: each selects one stage of the graph, for the CLI, the schedule and the sensors.

| job | selects | runs |
|---|---|---|
| manifest_job | image_manifest | validates the manifest, registers new shards |
| attention_statistics_job | attention_statistics | one shard per run |
| analysis_shards_job | rollout_statistics, ablation_statistics | one shard per run |
| downstream_job | everything else outside geolocation | warehouse, aggregates, exports, figures |
| geolocation_shards_job | geolocation_predictions | one shard per run (needs the plonk extra) |
| geolocation_job | geolocation accuracy, error analysis, gallery | the geolocation summaries |
| country_relevance_shards_job | country_predictions | one shard per run (needs a model with a text tower) |
| country_relevance_job | country accuracy, faithfulness, misclassified gallery | the country-relevance summaries |
| model_statistics_job | model_statistics | one (model, shard) per run (ATTN_ASSETS_MODELS) |
| model_tables_job | model_tables | the *_by_model tables, models, country_aggregates_by_model |
| cross_model_shards_job | cross_model_agreement | one shard per run (every pair of ATTN_ASSETS_MODELS) |
| cross_model_job | cross_model_summary, cross_model_figures | the cross-model tables and figures |
"""

import dagster as dg

from attn_assets.defs.analyses.assets import SHARD_ANALYSIS_ASSETS
from attn_assets.defs.cross_model.assets import CROSS_MODEL_SUMMARY_ASSETS, cross_model_agreement
from attn_assets.defs.country_relevance.assets import COUNTRY_RELEVANCE_SUMMARY_ASSETS, country_predictions
from attn_assets.defs.geolocation.assets import GEOLOCATION_SUMMARY_ASSETS, geolocation_predictions
from attn_assets.defs.manifest.assets import image_manifest
from attn_assets.defs.models.assets import MODEL_TABLE_ASSETS, model_statistics
from attn_assets.defs.statistics.assets import attention_statistics

manifest_job = dg.define_asset_job(
    "manifest_job", selection=[image_manifest], description="Validates the manifest and registers new shards."
)

attention_statistics_job = dg.define_asset_job(
    "attention_statistics_job",
    selection=[attention_statistics],
    description="Computes attention statistics for one shard.",
)

analysis_shards_job = dg.define_asset_job(
    "analysis_shards_job",
    selection=list(SHARD_ANALYSIS_ASSETS),
    description="Own-pass analyses (attention rollout, masking ablation) of one shard.",
)

# the shard-partitioned assets (statistics, and the own-pass analyses) run one shard per run in their own jobs;
# geolocation needs the optional plonk extra, so it has its own jobs too
downstream_selection = (
    dg.AssetSelection.all()
    - dg.AssetSelection.assets(image_manifest, attention_statistics, *SHARD_ANALYSIS_ASSETS)
    - dg.AssetSelection.groups("geolocation", "country_relevance", "cross_model", "models")
)

downstream_job = dg.define_asset_job(
    "downstream_job",
    selection=downstream_selection,
    description="Everything built from the shard files: warehouse, aggregates, exports, figures.",
)

geolocation_shards_job = dg.define_asset_job(
    "geolocation_shards_job", selection=[geolocation_predictions],
    description="PLONK predictions of one shard from its stored CLS embeddings.",
)

geolocation_job = dg.define_asset_job(
    "geolocation_job", selection=list(GEOLOCATION_SUMMARY_ASSETS),
    description="Geolocation accuracy, failure analysis and the worst-predictions gallery.",
)

# zero-shot country classification needs a CLIPModel with its text tower, so it has its own jobs too
country_relevance_shards_job = dg.define_asset_job(
    "country_relevance_shards_job", selection=[country_predictions],
    description="Zero-shot country predictions, relevance maps and faithfulness curves of one shard.",
)

country_relevance_job = dg.define_asset_job(
    "country_relevance_job", selection=list(COUNTRY_RELEVANCE_SUMMARY_ASSETS),
    description="Country accuracy and confusion, relevance faithfulness and the misclassified gallery.",
)

# the model dimension (ATTN_ASSETS_MODELS) and the comparisons built on it: their own jobs
model_statistics_job = dg.define_asset_job(
    "model_statistics_job", selection=[model_statistics],
    description="One listed model's statistics of one shard (models/<model_key>/shards/<shard>.parquet).",
)

model_tables_job = dg.define_asset_job(
    "model_tables_job", selection=list(MODEL_TABLE_ASSETS),
    description="The *_by_model tables, models and country_aggregates_by_model from every model folder.",
)

cross_model_shards_job = dg.define_asset_job(
    "cross_model_shards_job", selection=[cross_model_agreement],
    description="Every pair of ATTN_ASSETS_MODELS over one shard, maps compared per image (no model runs).",
)

cross_model_job = dg.define_asset_job(
    "cross_model_job", selection=list(CROSS_MODEL_SUMMARY_ASSETS),
    description="Cross-model agreement tables (per image, per country with bootstrap intervals) and figures.",
)

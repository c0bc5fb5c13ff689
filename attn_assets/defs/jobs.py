"""Jobs that the CLI, schedules and sensors launch; each selects one stage of the graph."""

import dagster as dg

from attn_assets.defs.analyses.assets import SHARD_ANALYSIS_ASSETS, analysis_shards_job
from attn_assets.defs.geolocation.assets import geolocation_job, geolocation_shards_job
from attn_assets.defs.manifest.assets import image_manifest
from attn_assets.defs.statistics.assets import attention_statistics
from attn_assets.defs.statistics.schedules import attention_statistics_job

manifest_job = dg.define_asset_job(
    "manifest_job", selection=[image_manifest], description="Validates the manifest and registers new shards."
)

# the shard-partitioned assets (statistics, and the own-pass analyses) run one shard per run in their own jobs;
# geolocation needs the optional plonk extra, so it has its own jobs too
downstream_selection = (
    dg.AssetSelection.all()
    - dg.AssetSelection.assets(image_manifest, attention_statistics, *SHARD_ANALYSIS_ASSETS)
    - dg.AssetSelection.groups("geolocation")
)

downstream_job = dg.define_asset_job(
    "downstream_job",
    selection=downstream_selection,
    description="Everything built from the shard files: warehouse, aggregates, exports, figures.",
)

__all__ = ["manifest_job", "attention_statistics_job", "analysis_shards_job", "downstream_job",
           "geolocation_shards_job", "geolocation_job"]

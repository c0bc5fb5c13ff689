"""downstream_refresh_sensor: rebuild the warehouse and what hangs off it after shards or the manifest change."""


import dagster as dg

from attn_assets.defs.manifest.assets import image_manifest
from attn_assets.defs.materializations import latest_storage_id
from attn_assets.defs.statistics.assets import attention_statistics
from attn_assets.defs.warehouse.assets import attention_warehouse


def _newest_input(instance: dg.DagsterInstance) -> int:
    """Storage id of the newest materialization the warehouse is built from: a shard of a shard pass, or the
    manifest (a withdrawn row or a corrected country must reach the tables without any shard recompute)."""
    from attn_assets.defs.analyses.assets import SHARD_ANALYSIS_ASSETS

    return max(latest_storage_id(instance, attention_statistics.key), latest_storage_id(instance, image_manifest.key),
               *(latest_storage_id(instance, asset.key) for asset in SHARD_ANALYSIS_ASSETS))


@dg.sensor(
    job_name="downstream_job",
    minimum_interval_seconds=120,
    default_status=dg.DefaultSensorStatus.STOPPED,
    description=(
        "When a shard (statistics, rollout, ablation) or image_manifest was materialized after the warehouse and "
        "no run is in flight, rebuilds the warehouse, aggregates, exports and figures once."
    ),
)
def downstream_refresh_sensor(context: dg.SensorEvaluationContext):
    newest = _newest_input(context.instance)
    if newest <= latest_storage_id(context.instance, attention_warehouse.key):
        return dg.SkipReason("The warehouse is newer than every shard and the manifest")
    in_flight = context.instance.get_runs_count(
        dg.RunsFilter(
            statuses=[dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED],
        )
    )
    if in_flight:
        return dg.SkipReason(f"{in_flight} runs still in flight; waiting until they finish")
    return dg.RunRequest(run_key=f"shards-up-to:{newest}")

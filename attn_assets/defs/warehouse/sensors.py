"""downstream_refresh_sensor: rebuild the warehouse and what hangs off it after shards change."""


import dagster as dg

from attn_assets.defs.materializations import latest_storage_id
from attn_assets.defs.statistics.assets import attention_statistics
from attn_assets.defs.warehouse.assets import attention_warehouse


@dg.sensor(
    job_name="downstream_job",
    minimum_interval_seconds=120,
    default_status=dg.DefaultSensorStatus.STOPPED,
    description=(
        "When a shard of attention_statistics was materialized after the warehouse and no shard run "
        "(or any other run) is in flight, rebuilds the warehouse, aggregates, exports and figures once."
    ),
)
def downstream_refresh_sensor(context: dg.SensorEvaluationContext):
    latest_shard = latest_storage_id(context.instance, attention_statistics.key)
    if latest_shard <= latest_storage_id(context.instance, attention_warehouse.key):
        return dg.SkipReason("The warehouse is newer than every shard")
    in_flight = context.instance.get_runs_count(
        dg.RunsFilter(
            statuses=[dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED],
        )
    )
    if in_flight:
        return dg.SkipReason(f"{in_flight} runs still in flight; waiting until they finish")
    return dg.RunRequest(run_key=f"shards-up-to:{latest_shard}")

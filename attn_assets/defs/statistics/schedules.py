"""missing_shards_schedule: fill every shard that is missing or failed, once a day."""


import dagster as dg

from attn_assets.defs.partitions import SHARD_PARTITIONS_NAME, shard_partitions
from attn_assets.defs.statistics.assets import attention_statistics

attention_statistics_job = dg.define_asset_job(
    "attention_statistics_job",
    selection=[attention_statistics],
    description="Computes attention statistics for one shard.",
)

_DONE = (dg.AssetPartitionStatus.MATERIALIZED, dg.AssetPartitionStatus.IN_PROGRESS)


def shards_to_fill(instance: dg.DagsterInstance) -> list[str]:
    """Registered shards that are neither materialized nor in progress (never run, or failed)."""
    keys = instance.get_dynamic_partitions(SHARD_PARTITIONS_NAME)
    if not keys:
        return []
    status = instance.get_status_by_partition(attention_statistics.key, keys, shard_partitions) or {}
    return [key for key in keys if status.get(key) not in _DONE]


@dg.schedule(
    job=attention_statistics_job,
    cron_schedule="0 3 * * *",
    default_status=dg.DefaultScheduleStatus.STOPPED,
    description="Daily at 03:00: one run per shard that is missing or failed (turn on in Automation).",
)
def missing_shards_schedule(context: dg.ScheduleEvaluationContext):
    day = context.scheduled_execution_time.strftime("%Y-%m-%d")
    keys = shards_to_fill(context.instance)
    if not keys:
        return dg.SkipReason("Every shard is materialized or in progress")
    return [dg.RunRequest(run_key=f"{day}:{key}", partition_key=key) for key in keys]

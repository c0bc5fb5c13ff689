"""Every schedule of attn-assets.

missing_shards_schedule: once a day, run every shard whose statistics are missing, failed or stale (another
recipe or image set than now; defs/needs_run.py decides).
missing_model_shards_schedule: once a day, the same for every model of ATTN_ASSETS_MODELS (model_statistics).
"""

import dagster as dg

from attn_assets.defs import jobs  # the module, not its names: the defs folder loader collects each job once
from attn_assets.defs.needs_run import model_shards_needing_run, shards_needing_run
from attn_assets.defs.runs import fail_dead_local_runs
from attn_assets.passes.current import STATISTICS


@dg.schedule(
    job=jobs.attention_statistics_job,
    cron_schedule="0 3 * * *",
    default_status=dg.DefaultScheduleStatus.STOPPED,
    description=("Daily at 03:00: one run per shard that is missing, failed, or stale (computed with another model, "
                 "weights, processor, precision or code version, or from another image set) (turn on in Automation)."),
)
def missing_shards_schedule(context: dg.ScheduleEvaluationContext):
    day = context.scheduled_execution_time.strftime("%Y-%m-%d")
    fail_dead_local_runs(context.instance)
    needed = shards_needing_run(context.instance, STATISTICS)
    if not needed:
        return dg.SkipReason("Every shard is materialized with the current recipe, or in progress")
    return [dg.RunRequest(run_key=f"{day}:{key}", partition_key=key, tags={"attn_assets/reason": reason[:200]})
            for key, reason in needed.items()]


@dg.schedule(
    job=jobs.model_statistics_job,
    cron_schedule="30 3 * * *",
    default_status=dg.DefaultScheduleStatus.STOPPED,
    description=("Daily at 03:30: one run per (model, shard) of ATTN_ASSETS_MODELS whose model_statistics file is "
                 "missing or stale for that model's recipe (turn on in Automation)."),
)
def missing_model_shards_schedule(context: dg.ScheduleEvaluationContext):
    day = context.scheduled_execution_time.strftime("%Y-%m-%d")
    needed = model_shards_needing_run(context.instance)
    if not needed:
        return dg.SkipReason("ATTN_ASSETS_MODELS is not set, or every listed model's shards are current or in progress")
    return [dg.RunRequest(run_key=f"{day}:{model}|{shard}",
                          partition_key=dg.MultiPartitionKey({"model": model, "shard": shard}),
                          tags={"attn_assets/reason": reason[:200]})
            for model, shards in needed.items() for shard, reason in shards.items()]

"""missing_shards_schedule: once a day, run every shard that is missing, failed or stale (another recipe or
image set than now; see defs/shard_passes.py)."""


import os
import socket

import dagster as dg

from attn_assets.defs.shard_passes import shards_needing_run
from attn_assets.passes.current import STATISTICS, CurrentState
from attn_assets.defs.statistics.assets import attention_statistics
from attn_assets.storage.atomic import process_alive

attention_statistics_job = dg.define_asset_job(
    "attention_statistics_job",
    selection=[attention_statistics],
    description="Computes attention statistics for one shard.",
)



# Tags on runs that `attn-assets materialize` executes in its own process (see fail_dead_local_runs).
RUN_PID_TAG = "attn_assets/pid"
RUN_HOST_TAG = "attn_assets/host"
_UNFINISHED = [dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED]


def local_run_tags() -> dict[str, str]:
    """Tags naming this process, so a later process can tell when the run's process is dead."""
    return {RUN_PID_TAG: str(os.getpid()), RUN_HOST_TAG: socket.gethostname()}


def fail_dead_local_runs(instance: dg.DagsterInstance) -> list[str]:
    """Mark FAILED the in-process runs of this machine whose process is gone (e.g. SIGKILL, OOM kill).

    Such a run stays STARTED forever and its shard reads IN_PROGRESS, which shards_to_fill skips, so
    the shard would never be computed again. Only runs tagged with this host and a pid that no longer
    exists are touched (runs launched by the daemon or another machine are left to run monitoring).
    """
    host = socket.gethostname()
    failed = []
    for record in instance.get_run_records(filters=dg.RunsFilter(statuses=_UNFINISHED, tags={RUN_HOST_TAG: host})):
        run = record.dagster_run
        try:
            pid = int(run.tags.get(RUN_PID_TAG, ""))
        except ValueError:
            continue
        if pid == os.getpid() or process_alive(pid):
            continue
        instance.report_run_failed(
            run, message=f"the process that ran it (pid {pid} on {host}) is gone; marked failed so its shards are recomputed"
        )
        failed.append(run.run_id)
    return failed


def shards_to_fill(instance: dg.DagsterInstance, state: CurrentState | None = None) -> list[str]:
    """Registered shards whose statistics must run: not in progress, and never run, failed, or computed with
    another model, recipe or image set than now (defs/shard_passes.shards_needing_run)."""
    return list(shards_needing_run(instance, STATISTICS, state))


@dg.schedule(
    job=attention_statistics_job,
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

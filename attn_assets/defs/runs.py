"""The runs of this pipeline as Dagster sees them: the tags that name the process of a headless run, and the runs
whose process is gone or still in flight (the process itself, host, pid and liveness: attn_assets/process_identity.py).

- ``local_run_tags()``: the host and pid tags that ``attn-assets materialize`` puts on its in-process runs, so
  ``fail_dead_local_runs`` can later mark FAILED a run whose process was killed (its shards would otherwise
  read IN_PROGRESS forever and never be computed again);
- ``runs_in_flight`` and ``run_key_used``: what the sensors ask before requesting a run.
- ``initialize_pool_limits``: the pools the assets declare get their row (the default limit) before any queue
  tick, so the first tick already holds to the limit.
"""

from __future__ import annotations

import dagster as dg
from dagster._core.storage.tags import RUN_KEY_TAG

from attn_assets.process_identity import process_alive, this_process

RUN_PID_TAG = "attn_assets/pid"
RUN_HOST_TAG = "attn_assets/host"
_UNFINISHED = [dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED]
_IN_FLIGHT = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED]


def local_run_tags() -> dict[str, str]:
    """Tags naming this process, so a later process can tell when the run's process is dead."""
    host, pid = this_process()
    return {RUN_PID_TAG: str(pid), RUN_HOST_TAG: host}


def fail_dead_local_runs(instance: dg.DagsterInstance) -> list[str]:
    """Mark FAILED the in-process runs of this machine whose process is gone (e.g. SIGKILL, OOM kill).

    Such a run stays STARTED forever and its shard reads IN_PROGRESS, which the fill predicates skip, so
    the shard would never be computed again. Only runs tagged with this host and a pid that no longer
    exists are touched (runs launched by the daemon or another machine are left to run monitoring).
    """
    host, this_pid = this_process()
    failed = []
    for record in instance.get_run_records(filters=dg.RunsFilter(statuses=_UNFINISHED, tags={RUN_HOST_TAG: host})):
        run = record.dagster_run
        try:
            pid = int(run.tags.get(RUN_PID_TAG, ""))
        except ValueError:
            continue
        if pid == this_pid or process_alive(pid):
            continue
        instance.report_run_failed(
            run, message=f"the process that ran it (pid {pid} on {host}) is gone; marked failed so its shards are recomputed"
        )
        failed.append(run.run_id)
    return failed


def runs_in_flight(instance: dg.DagsterInstance) -> int:
    """Runs queued, starting or started in this instance."""
    return instance.get_runs_count(dg.RunsFilter(statuses=_IN_FLIGHT))


def run_key_used(instance: dg.DagsterInstance, run_key: str) -> bool:
    """Whether some run was already requested under ``run_key``."""
    return instance.get_runs_count(dg.RunsFilter(tags={RUN_KEY_TAG: run_key})) > 0


#: Every pool an asset of this project declares (``pool=`` on the model passes: attention_statistics,
#: model_statistics, the shard analyses, country_predictions, geolocation_predictions).
POOLS = ("gpu",)


def initialize_pool_limits(instance: dg.DagsterInstance, pools: tuple[str, ...] = POOLS) -> list[str]:
    """Give each of ``pools`` that has no row in the instance's concurrency table one at the instance's default
    limit (dagster.yaml ``concurrency: pools: default_limit``); returns the pools initialised.

    Dagster creates a pool's row lazily, while a queue tick looks at queued runs that need the pool, but that
    tick decides with the pool rows it read before creating it (dagster 1.13,
    ``GlobalOpConcurrencyLimitsCounter``): on a fresh instance the first tick dequeues every queued run of the
    pool up to ``max_concurrent_runs``. A pool that has a row (a limit set with ``dagster instance concurrency
    set``, or one initialised before) is left as it is, as is every pool when no default limit is configured.
    Only absent rows are written: dagster 1.13's initializer fails on PostgreSQL when the row exists.
    """
    if instance.global_op_concurrency_default_limit is None:
        return []
    present = instance.event_log_storage.get_concurrency_keys()
    missing = [pool for pool in pools if pool not in present]
    for pool in missing:
        instance.event_log_storage.initialize_concurrency_limit_to_default(pool)
    return missing

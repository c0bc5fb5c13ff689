"""The runs of this pipeline as processes: who runs a step, the tags that name the process of a headless run,
and the runs whose process is gone or still in flight.

- ``worker_identity()``: ``host:pid CUDA_VISIBLE_DEVICES=…`` of the process computing a shard (recorded per
  shard, read back by ``parse_worker_identity``);
- ``local_run_tags()``: the host and pid tags that ``attn-assets materialize`` puts on its in-process runs, so
  ``fail_dead_local_runs`` can later mark FAILED a run whose process was killed (its shards would otherwise
  read IN_PROGRESS forever and never be computed again);
- ``runs_in_flight`` and ``run_key_used``: what the sensors ask before requesting a run.
"""

from __future__ import annotations

import os
import socket

import dagster as dg
from dagster._core.storage.tags import RUN_KEY_TAG

from attn_assets.storage.atomic import process_alive

RUN_PID_TAG = "attn_assets/pid"
RUN_HOST_TAG = "attn_assets/host"
_UNFINISHED = [dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED]
_IN_FLIGHT = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED]


def worker_identity() -> str:
    """``host:pid CUDA_VISIBLE_DEVICES=…`` of the process running this step (recorded per shard)."""
    devices = os.environ.get("CUDA_VISIBLE_DEVICES")
    return f"{socket.gethostname()}:{os.getpid()} CUDA_VISIBLE_DEVICES={'unset' if devices is None else devices}"


def parse_worker_identity(text: str) -> tuple[str, int, str]:
    """(host, pid, CUDA_VISIBLE_DEVICES) from a ``worker_identity()`` string."""
    where, _, devices = text.partition(" CUDA_VISIBLE_DEVICES=")
    host, _, pid = where.rpartition(":")
    return host, int(pid), devices


def local_run_tags() -> dict[str, str]:
    """Tags naming this process, so a later process can tell when the run's process is dead."""
    return {RUN_PID_TAG: str(os.getpid()), RUN_HOST_TAG: socket.gethostname()}


def fail_dead_local_runs(instance: dg.DagsterInstance) -> list[str]:
    """Mark FAILED the in-process runs of this machine whose process is gone (e.g. SIGKILL, OOM kill).

    Such a run stays STARTED forever and its shard reads IN_PROGRESS, which the fill predicates skip, so
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


def runs_in_flight(instance: dg.DagsterInstance) -> int:
    """Runs queued, starting or started in this instance."""
    return instance.get_runs_count(dg.RunsFilter(statuses=_IN_FLIGHT))


def run_key_used(instance: dg.DagsterInstance, run_key: str) -> bool:
    """Whether some run was already requested under ``run_key``."""
    return instance.get_runs_count(dg.RunsFilter(tags={RUN_KEY_TAG: run_key})) > 0

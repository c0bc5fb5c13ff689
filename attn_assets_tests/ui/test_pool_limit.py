"""The run queue holds to the gpu pool's limit from its first tick on a fresh DAGSTER_HOME.

Dagster 1.13's queue daemon creates a pool's limit row only during a tick, after reading the pool rows that
tick decides with, so on an instance without the row its first tick dequeued every queued gpu run (up to
max_concurrent_runs: 4 of 4 attention_statistics runs at once, measured with `dagster-daemon run`).
prepare_dagster_home, which every entry point calls, now creates the row first.

The runs are created from the project's attention_statistics_job (their pools come from its execution plan)
and queued through the repo's QueuedRunCoordinator; one tick of Dagster's own QueuedRunCoordinatorDaemon
decides what to dequeue. Only the launcher is Dagster's test launcher, which records a run instead of
starting a process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import dagster as dg
from dagster._core.remote_origin import InProcessCodeLocationOrigin
from dagster._core.test_utils import create_test_daemon_workspace_context
from dagster._core.types.loadable_target_origin import LoadableTargetOrigin
from dagster._core.workspace.load_target import InProcessWorkspaceLoadTarget
from dagster._daemon.run_coordinator.queued_run_coordinator_daemon import QueuedRunCoordinatorDaemon

from attn_assets import settings as S
from attn_assets.cli import prepare_dagster_home
from attn_assets.defs.runs import POOLS

QUEUED_RUNS = 3  # under dagster.yaml's max_concurrent_runs (4), so only the pool can hold runs back

#: the code location of workspace.yaml, loaded in this process
CODE_LOCATION = InProcessWorkspaceLoadTarget(InProcessCodeLocationOrigin(
    LoadableTargetOrigin(module_name="attn_assets.definitions", working_directory=str(S.REPO_ROOT)),
    location_name="attn_assets.definitions"))

RECORDING_LAUNCHER = """
run_launcher:
  module: dagster._core.test_utils
  class: MockedRunLauncher
"""


def _fresh_home(tmp_path, monkeypatch):
    """A DAGSTER_HOME with the repo's dagster.yaml plus the recording launcher, set up by prepare_dagster_home."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(S.DAGSTER_YAML.read_text() + RECORDING_LAUNCHER)
    monkeypatch.setenv("ATTN_ASSETS_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    return prepare_dagster_home(S.Settings.from_env())


def first_tick_statuses(home: str) -> list[str]:
    """Queue QUEUED_RUNS runs of attention_statistics_job in the instance at ``home``, run one tick of Dagster's
    queue daemon, and return the runs' statuses. Called in a fresh interpreter (see the test): the code location's
    resources name the ATTN_ASSETS_* variables set when ``attn_assets.definitions`` was first imported, which
    another test of the session may have set."""
    from attn_assets.definitions import defs

    job = defs.resolve_job_def("attention_statistics_job")
    with dg.DagsterInstance.from_config(home) as instance:
        assert instance.get_concurrency_config().pool_config.default_pool_limit == 1
        with create_test_daemon_workspace_context(CODE_LOCATION, instance) as context:
            location = context.create_request_context().get_code_location("attn_assets.definitions")
            [repository] = location.get_repositories().values()
            remote_job = repository.get_full_job(job.name)
            for index in range(QUEUED_RUNS):
                run = instance.create_run_for_job(
                    job, tags={"dagster/partition": f"shard-{index:05d}"},
                    remote_job_origin=remote_job.get_remote_origin(), job_code_origin=remote_job.get_python_origin())
                assert run.run_op_concurrency is not None and run.run_op_concurrency.all_pools == {"gpu"}
                instance.submit_run(run.run_id, context.create_request_context())
            assert instance.get_runs_count(dg.RunsFilter(statuses=[dg.DagsterRunStatus.QUEUED])) == QUEUED_RUNS

            list(QueuedRunCoordinatorDaemon(interval_seconds=2).run_iteration(context))
        assert len(instance.run_launcher.queue()) == sum(
            run.status == dg.DagsterRunStatus.STARTING for run in instance.get_runs())
        return [run.status.value for run in instance.get_runs()]


def test_first_queue_tick_starts_one_gpu_run(tmp_path, monkeypatch):
    home = _fresh_home(tmp_path, monkeypatch)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ATTN_ASSETS_") or k == "ATTN_ASSETS_HOME"}
    script = ("import json; from attn_assets_tests.ui.test_pool_limit import first_tick_statuses; "
              f"print(json.dumps(first_tick_statuses({str(home)!r})))")
    done = subprocess.run([sys.executable, "-c", script], cwd=S.REPO_ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    statuses = json.loads(done.stdout.strip().splitlines()[-1])
    assert statuses.count("STARTING") == 1, statuses
    assert statuses.count("QUEUED") == QUEUED_RUNS - 1, statuses


def test_prepare_dagster_home_keeps_a_limit_set_by_hand(tmp_path, monkeypatch):
    home = _fresh_home(tmp_path, monkeypatch)
    with dg.DagsterInstance.from_config(str(home)) as instance:
        instance.event_log_storage.set_concurrency_slots("gpu", 2)  # `dagster instance concurrency set gpu 2`
    prepare_dagster_home(S.Settings.from_env())
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert instance.event_log_storage.get_concurrency_info("gpu").slot_count == 2


def test_pools_names_every_pool_the_assets_declare():
    from attn_assets.definitions import defs

    declared = {op.pool for node in defs.get_repository_def().assets_defs_by_key.values() if node.is_executable
                for op in node.node_def.iterate_op_defs() if op.pool}
    assert declared == set(POOLS)

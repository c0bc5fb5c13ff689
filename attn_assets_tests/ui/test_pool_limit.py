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


def test_first_queue_tick_starts_one_gpu_run(tmp_path, monkeypatch):
    from attn_assets.definitions import defs

    home = _fresh_home(tmp_path, monkeypatch)
    job = defs.resolve_job_def("attention_statistics_job")
    with dg.DagsterInstance.from_config(str(home)) as instance:
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

        statuses = [run.status for run in instance.get_runs()]
        assert statuses.count(dg.DagsterRunStatus.STARTING) == 1, statuses
        assert statuses.count(dg.DagsterRunStatus.QUEUED) == QUEUED_RUNS - 1, statuses
        assert len(instance.run_launcher.queue()) == 1


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

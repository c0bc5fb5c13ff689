"""The repo's dagster.yaml loads as an instance with the settings the README promises."""

from __future__ import annotations

import shutil
from pathlib import Path

import dagster as dg
from dagster._core.instance.config import PoolGranularity
from dagster._core.run_coordinator import QueuedRunCoordinator

REPO = Path(__file__).resolve().parents[2]
DAGSTER_YAML = REPO / "dagster.yaml"


def test_repo_dagster_yaml_builds_the_local_instance(tmp_path, monkeypatch):
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(DAGSTER_YAML, home / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(home))

    with dg.DagsterInstance.from_config(str(home)) as instance:
        # SQLite storage under DAGSTER_HOME, Dagster's default layout
        assert type(instance.run_storage).__name__ == "SqliteRunStorage"
        assert (home / "history" / "runs.db").exists()
        # a run queue that dagster-daemon drains
        assert isinstance(instance.run_coordinator, QueuedRunCoordinator)
        concurrency = instance.get_concurrency_config()
        assert concurrency.run_queue_config.max_concurrent_runs >= 1
        # the gpu pool (attention_statistics) gets one slot
        assert concurrency.pool_config.default_pool_limit == 1
        assert concurrency.pool_config.pool_granularity == PoolGranularity.RUN
        instance.event_log_storage.initialize_concurrency_limit_to_default("gpu")
        assert instance.event_log_storage.get_concurrency_info("gpu").slot_count == 1
        # retries, monitoring, no telemetry
        assert instance.run_retries_enabled and instance.run_retries_max_retries == 1
        assert instance.run_monitoring_enabled
        assert not instance.telemetry_enabled


def test_attention_statistics_uses_the_gpu_pool():
    from attn_assets.definitions import defs

    node = defs.resolve_assets_def("attention_statistics")
    assert node.op.pool == "gpu"

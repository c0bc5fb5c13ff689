"""The executor of every job, chosen by ATTN_ASSETS_EXECUTOR (read when definitions load).

| ATTN_ASSETS_EXECUTOR | executor |
|---|---|
| unset, ``multiprocess`` | Dagster's default (one subprocess per step, this machine) |
| ``in_process`` | every step in the run's own process |
| ``celery`` | dagster-celery: each step is a task on the Redis broker; config ``ATTN_ASSETS_CELERY_CONFIG`` (default ``deploy/celery.yaml``, the same file the workers start with) |
| ``k8s`` | dagster-k8s ``k8s_job_executor``: one pod per step, a GPU for shard steps (``attn_assets.deploy.k8s``) |
"""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg

from attn_assets.deploy.paths import DEPLOY_DIR

ENV_EXECUTOR = "ATTN_ASSETS_EXECUTOR"
ENV_CELERY_CONFIG = "ATTN_ASSETS_CELERY_CONFIG"
DEFAULT_CELERY_CONFIG = DEPLOY_DIR / "celery.yaml"
EXECUTOR_NAMES = ("multiprocess", "in_process", "celery", "k8s")


def celery_config_path() -> Path:
    return Path(os.environ.get(ENV_CELERY_CONFIG, "").strip() or DEFAULT_CELERY_CONFIG)


def load_celery_config(path: str | Path | None = None) -> dict:
    """The ``execution: config:`` block of a celery.yaml (what ``dagster-celery worker start -y`` reads)."""
    import yaml

    path = Path(path) if path else celery_config_path()
    if not path.exists():
        raise FileNotFoundError(f"{ENV_CELERY_CONFIG}: celery config {path} does not exist")
    document = yaml.safe_load(path.read_text()) or {}
    return dict((document.get("execution") or {}).get("config") or {})


def executor_from_env() -> dg.ExecutorDefinition | None:
    """None keeps Dagster's default executor; raises on a name it does not know."""
    name = os.environ.get(ENV_EXECUTOR, "").strip().lower()
    if name in ("", "default", "multiprocess"):
        return None
    if name == "in_process":
        return dg.in_process_executor
    if name == "celery":
        from dagster_celery import celery_executor

        return celery_executor.configured(load_celery_config(), name="celery")
    if name == "k8s":
        from attn_assets.deploy.k8s import k8s_executor

        return k8s_executor()
    raise ValueError(f"{ENV_EXECUTOR}={name!r}: expected one of {', '.join(EXECUTOR_NAMES)}")

"""The code location: every definition of the defs folder (attn_assets/defs: assets and checks per domain, then
jobs.py, schedules.py, sensors.py, resources.py), loaded by ``dg.load_from_defs_folder``, plus the executor of
every job, chosen by ATTN_ASSETS_EXECUTOR (the local, celery and k8s profiles of attn_assets/deploy).

workspace.yaml, ``dg`` ([tool.dg] in pyproject.toml), the CLI and the tests all load it from here.
"""

from pathlib import Path

import dagster as dg

from attn_assets.deploy.executors import executor_from_env
from attn_assets.known_warnings import silence_known_harmless


def build_definitions() -> dg.Definitions:
    """Definitions with resources and executor read from the environment as it is now."""
    silence_known_harmless()  # before the defs modules are imported by the loader
    return dg.Definitions.merge(
        dg.load_from_defs_folder(path_within_project=Path(__file__).parent),
        dg.Definitions(executor=executor_from_env()),
    )


defs = build_definitions()

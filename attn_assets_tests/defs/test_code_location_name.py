"""One code location name everywhere it is configured: workspace.yaml (what `dagster dev` and `make validate`
register the location under), [tool.dagster] and [tool.dg.project] in pyproject.toml. When the dg project's name
differed (unset: the checkout folder's name), loading through the workspace warned once per defs module."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from attn_assets import settings as S


def _workspace_location() -> tuple[str, str]:
    """(module_name, location name) of the workspace's one python_module; Dagster names an unnamed one by its
    module."""
    entries = yaml.safe_load((S.REPO_ROOT / "workspace.yaml").read_text(encoding="utf-8"))["load_from"]
    (module,) = [entry["python_module"] for entry in entries]
    return module["module_name"], module.get("location_name", module["module_name"])


def test_every_configuration_names_the_same_code_location():
    pyproject = tomllib.loads((S.REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]
    module, location = _workspace_location()
    assert pyproject["dg"]["project"]["code_location_target_module"] == module
    assert pyproject["dg"]["project"]["code_location_name"] == location
    assert pyproject["dagster"]["module_name"] == module
    assert pyproject["dagster"]["code_location_name"] == location


@pytest.mark.slow
def test_validate_loads_the_workspace_without_a_name_warning(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ATTN_ASSETS_", "DAGSTER_"))}
    env["DAGSTER_HOME"] = str(tmp_path)
    (tmp_path / "dagster.yaml").write_text(S.DAGSTER_YAML.read_text(encoding="utf-8"), encoding="utf-8")
    dagster = Path(sys.executable).parent / "dagster"
    done = subprocess.run([str(dagster), "definitions", "validate", "-w", "workspace.yaml"], cwd=S.REPO_ROOT,
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "does not match the name" not in done.stdout + done.stderr

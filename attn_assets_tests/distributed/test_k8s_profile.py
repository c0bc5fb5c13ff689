"""The Kubernetes profile is validated against dagster-k8s's own config schemas (not deployed), so it cannot rot."""

from __future__ import annotations

import json

import pytest
import yaml

dagster_k8s = pytest.importorskip("dagster_k8s")

from dagster._config import process_config, validate_config  # noqa: E402
from dagster._core.instance.config import dagster_instance_config_schema  # noqa: E402
from dagster_k8s import K8sRunLauncher, k8s_job_executor  # noqa: E402
from dagster_k8s.job import UserDefinedDagsterK8sConfig, get_user_defined_k8s_config  # noqa: E402

from attn_assets.deploy import k8s  # noqa: E402


@pytest.fixture(scope="module")
def values() -> dict:
    return yaml.safe_load(k8s.VALUES_PATH.read_text())


def _ok(config_type, value):
    result = validate_config(config_type, value)
    assert result.success, [e.message for e in result.errors]
    return process_config(config_type, value).value


def test_executor_config_matches_k8s_job_executor_schema():
    config = _ok(k8s_job_executor.config_schema.config_type, k8s.k8s_executor_config())
    gpu = UserDefinedDagsterK8sConfig.from_dict(config["per_step_k8s_config"][k8s.STATISTICS_OP])
    assert gpu.container_config["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert gpu.container_config["resources"]["requests"]["nvidia.com/gpu"] == "1"
    cpu = UserDefinedDagsterK8sConfig.from_dict(config["step_k8s_config"])
    assert "nvidia.com/gpu" not in json.dumps(cpu.container_config)
    assert config["max_concurrent"] == k8s.GPU_COUNT


def test_gpu_op_tag_parses_with_dagster_k8s():
    parsed = get_user_defined_k8s_config(k8s.gpu_op_tags())
    assert parsed.container_config["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert parsed.pod_spec_config["tolerations"][0]["key"] == "nvidia.com/gpu"
    assert parsed == UserDefinedDagsterK8sConfig.from_dict(k8s.GPU_STEP_K8S_CONFIG)


def test_helm_values_render_a_valid_instance(values):
    instance = k8s.instance_config(values)
    _ok(K8sRunLauncher.config_type(), instance["run_launcher"]["config"])
    schema = dagster_instance_config_schema()
    _ok(schema, instance)
    from dagster_postgres import PostgresRunStorage

    _ok(PostgresRunStorage.config_type(), instance["run_storage"]["config"])
    # pool limit = GPU count; shared storage on runs and on the code location
    assert values["concurrency"]["pools"]["defaultLimit"] == k8s.GPU_COUNT
    assert values["concurrency"]["runs"]["maxConcurrentRuns"] >= k8s.GPU_COUNT
    launcher = values["runLauncher"]["config"]["k8sRunLauncher"]
    claims = {v["persistentVolumeClaim"]["claimName"] for v in launcher["volumes"]}
    assert k8s.SHARED_CLAIM in claims
    assert {m["mountPath"] for m in launcher["volumeMounts"]} == {k8s.SHARED_MOUNT}
    assert "nvidia.com/gpu" not in json.dumps(launcher["runK8sConfig"])  # run pods orchestrate only


def test_user_deployment_selects_k8s_executor_and_shared_home(values, monkeypatch):
    (deployment,) = values["dagster-user-deployments"]["deployments"]
    env = {e["name"]: e["value"] for e in deployment["env"]}
    assert env["ATTN_ASSETS_EXECUTOR"] == "k8s"
    assert env["ATTN_ASSETS_HOME"].startswith(k8s.SHARED_MOUNT + "/")
    assert int(env["ATTN_ASSETS_K8S_GPUS"]) == k8s.GPU_COUNT
    assert deployment["dagsterApiGrpcArgs"] == ["--module-name", "attn_assets.definitions"]
    assert {m["mountPath"] for m in deployment["volumeMounts"]} == {k8s.SHARED_MOUNT}

    # the definitions load with the k8s executor, and its config is what the schema accepted
    monkeypatch.setenv("ATTN_ASSETS_EXECUTOR", "k8s")
    from attn_assets.definitions import build_definitions

    job = build_definitions().resolve_job_def("attention_statistics_job")
    assert job.executor_def.name == "k8s"
    assert {n.name for n in job.graph.node_defs} == {k8s.STATISTICS_OP}


def test_unknown_executor_name_is_refused(monkeypatch):
    from attn_assets.deploy.executors import executor_from_env

    monkeypatch.setenv("ATTN_ASSETS_EXECUTOR", "dask")
    with pytest.raises(ValueError, match="celery"):
        executor_from_env()
    monkeypatch.setenv("ATTN_ASSETS_EXECUTOR", "")
    assert executor_from_env() is None

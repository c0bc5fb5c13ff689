"""The Kubernetes profile: official Dagster Helm chart, K8sRunLauncher + k8s_job_executor.

Runs are pods (K8sRunLauncher); inside a run every step is its own Kubernetes Job
(``k8s_job_executor``). Shard steps (op ``attention_statistics``) request one GPU through the
executor's ``per_step_k8s_config``, so the asset file needs no ``dagster-k8s/config`` op tag; the
same config is available as that tag (``gpu_op_tags()``) for a code location that prefers tags.
The ``gpu`` pool limit (Helm ``concurrency.pools.defaultLimit``) equals the GPU count, so Dagster
never creates more shard pods than there are GPUs. ATTN_ASSETS_HOME is a ReadWriteMany volume
(``SHARED_CLAIM``) mounted at ``SHARED_MOUNT`` in every run and step pod; the instance lives in
PostgreSQL. Validated against dagster-k8s's config schema by attn_assets_tests/distributed.
"""

from __future__ import annotations

import json
import os

import dagster as dg

from attn_assets.deploy.paths import DEPLOY_DIR

VALUES_PATH = DEPLOY_DIR / "k8s" / "values.yaml"
STATISTICS_OP = "attention_statistics"
GPU_COUNT = 8  # GPUs the shard steps may use at once; keep equal to concurrency.pools.defaultLimit in values.yaml
SHARED_CLAIM = "attn-assets-home"  # PersistentVolumeClaim, ReadWriteMany (NFS, CephFS, Filestore, EFS...)
SHARED_MOUNT = "/shared"
ENV_GPU_COUNT = "ATTN_ASSETS_K8S_GPUS"

# Raw k8s config for one shard step: a whole GPU, CPU for decoding/preprocessing, scheduled on GPU nodes.
GPU_STEP_K8S_CONFIG: dict = {
    "container_config": {
        "resources": {
            "requests": {"cpu": "6", "memory": "24Gi", "nvidia.com/gpu": "1"},
            "limits": {"memory": "32Gi", "nvidia.com/gpu": "1"},
        },
        "env": [
            {"name": "ATTN_ASSETS_DEVICE", "value": "cuda"},
            {"name": "ATTN_ASSETS_NUM_WORKERS", "value": "6"},
        ],
    },
    "pod_spec_config": {
        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
    },
}

# Every other step (manifest, warehouse, figures): CPU only.
CPU_STEP_K8S_CONFIG: dict = {
    "container_config": {"resources": {"requests": {"cpu": "1", "memory": "4Gi"}, "limits": {"memory": "8Gi"}}},
}


def gpu_op_tags() -> dict[str, str]:
    """The ``dagster-k8s/config`` op tag equivalent of GPU_STEP_K8S_CONFIG."""
    return {"dagster-k8s/config": json.dumps(GPU_STEP_K8S_CONFIG)}


def shared_volume() -> tuple[list[dict], list[dict]]:
    volumes = [{"name": SHARED_CLAIM, "persistentVolumeClaim": {"claimName": SHARED_CLAIM}}]
    mounts = [{"name": SHARED_CLAIM, "mountPath": SHARED_MOUNT}]
    return volumes, mounts


def k8s_executor_config() -> dict:
    """Run config of ``k8s_job_executor`` for this project (what ATTN_ASSETS_EXECUTOR=k8s uses)."""
    volumes, mounts = shared_volume()
    return {
        "env_vars": [f"ATTN_ASSETS_HOME={SHARED_MOUNT}/attn-assets", "ATTN_ASSETS_EXECUTOR=k8s"],
        "volumes": volumes,
        "volume_mounts": mounts,
        "step_k8s_config": CPU_STEP_K8S_CONFIG,
        "per_step_k8s_config": {STATISTICS_OP: GPU_STEP_K8S_CONFIG},
        "max_concurrent": int(os.environ.get(ENV_GPU_COUNT, GPU_COUNT)),
        "retries": {"enabled": {}},
    }


def k8s_executor() -> dg.ExecutorDefinition:
    from dagster_k8s import k8s_job_executor

    return k8s_job_executor.configured(k8s_executor_config(), name="k8s")


def run_launcher_instance_config(values: dict, namespace: str = "dagster") -> dict:
    """The ``run_launcher`` block of dagster.yaml the chart renders from ``values`` (K8sRunLauncher),
    mirroring the chart's ``dagsterYaml.runLauncher.k8s`` template, so it can be schema-checked here."""
    launcher = values["runLauncher"]["config"]["k8sRunLauncher"]
    config = {
        "load_incluster_config": launcher["loadInclusterConfig"],
        "job_namespace": launcher.get("jobNamespace") or namespace,
        "image_pull_policy": launcher["imagePullPolicy"],
        "service_account_name": "dagster",
        "dagster_home": {"env": "DAGSTER_HOME"},
        "instance_config_map": {"env": "DAGSTER_K8S_INSTANCE_CONFIG_MAP"},
        "postgres_password_secret": {"env": "DAGSTER_K8S_PG_PASSWORD_SECRET"},
        "env_config_maps": [{"env": "DAGSTER_K8S_PIPELINE_RUN_ENV_CONFIGMAP"}]
        + [c["name"] for c in launcher.get("envConfigMaps", []) if "name" in c],
    }
    if launcher.get("envSecrets"):
        config["env_secrets"] = [s["name"] for s in launcher["envSecrets"] if "name" in s]
    for helm_key, key in (("envVars", "env_vars"), ("volumeMounts", "volume_mounts"), ("volumes", "volumes"),
                          ("labels", "labels"), ("failPodOnRunFailure", "fail_pod_on_run_failure")):
        if launcher.get(helm_key) is not None:
            config[key] = launcher[helm_key]
    if launcher.get("runK8sConfig"):  # the chart renames each section; the content passes through as is
        sections = {"containerConfig": "container_config", "podSpecConfig": "pod_spec_config",
                    "podTemplateSpecMetadata": "pod_template_spec_metadata", "jobConfig": "job_config",
                    "jobMetadata": "job_metadata", "jobSpecConfig": "job_spec_config"}
        unknown = set(launcher["runK8sConfig"]) - set(sections)
        if unknown:
            raise ValueError(f"runK8sConfig: the chart does not render {sorted(unknown)}")
        config["run_k8s_config"] = {sections[k]: v for k, v in launcher["runK8sConfig"].items()}
    return {"module": "dagster_k8s", "class": "K8sRunLauncher", "config": config}


def instance_config(values: dict, namespace: str = "dagster") -> dict:
    """The parts of the rendered dagster.yaml this profile relies on: launcher, Postgres, pools, retries."""
    pg = values["postgresql"]
    pg_config = {"postgres_db": {"username": pg["postgresqlUsername"], "password": {"env": "DAGSTER_PG_PASSWORD"},
                                 "hostname": pg["postgresqlHost"], "db_name": pg["postgresqlDatabase"],
                                 "port": pg["service"]["port"]}}
    storage = {f"{kind}_storage": {"module": f"dagster_postgres.{module}", "class": cls, "config": pg_config}
               for kind, module, cls in (("run", "run_storage", "PostgresRunStorage"),
                                         ("event_log", "event_log", "PostgresEventLogStorage"),
                                         ("schedule", "schedule_storage", "PostgresScheduleStorage"))}
    pools = values["concurrency"]["pools"]
    daemon = values["dagsterDaemon"]
    return {
        "run_launcher": run_launcher_instance_config(values, namespace),
        **storage,
        "concurrency": {"pools": {"default_limit": pools["defaultLimit"], "granularity": pools["granularity"]}},
        "run_monitoring": {"enabled": daemon["runMonitoring"]["enabled"],
                           "start_timeout_seconds": daemon["runMonitoring"]["startTimeoutSeconds"],
                           "poll_interval_seconds": daemon["runMonitoring"]["pollIntervalSeconds"]},
        "run_retries": {"enabled": daemon["runRetries"]["enabled"], "max_retries": daemon["runRetries"]["maxRetries"]},
    }

"""Headless materialization of the whole graph in the persistent Dagster instance.

Each stage is a real Dagster run (visible in the UI afterwards); a stage that is up to
date is skipped, so a second call does nothing unless forced.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import dagster as dg

from attn_assets.settings import Settings

from attn_assets.defs.manifest.assets import image_manifest
from attn_assets.defs.manifest.sensors import latest_manifest_fingerprint
from attn_assets.defs.manifest.sources import manifest_fingerprint
from attn_assets.defs.materializations import latest_storage_id
from attn_assets.defs.partitions import SHARD_PARTITIONS_NAME
from attn_assets.defs.statistics.assets import attention_statistics
from attn_assets.defs.statistics.schedules import fail_dead_local_runs, local_run_tags, shards_to_fill


@dataclass
class MaterializeSummary:
    lines: list[str] = field(default_factory=list)
    failed_runs: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed_runs


def _downstream_stale(instance: dg.DagsterInstance, defs: dg.Definitions) -> bool:
    """True when a downstream asset was never built or is older than the shards or manifest."""
    job = defs.resolve_job_def("downstream_job")
    keys = [key for key in job.asset_layer.executable_asset_keys]
    from attn_assets.defs.analyses.assets import SHARD_ANALYSIS_ASSETS

    newest_upstream = max(latest_storage_id(instance, image_manifest.key),
                          latest_storage_id(instance, attention_statistics.key),
                          *(latest_storage_id(instance, asset.key) for asset in SHARD_ANALYSIS_ASSETS))
    return any(latest_storage_id(instance, key) < newest_upstream or latest_storage_id(instance, key) == 0
               for key in keys)


def materialize_all(
    force: bool = False, instance: dg.DagsterInstance | None = None, log_level: str = "INFO"
) -> MaterializeSummary:
    from attn_assets.definitions import build_definitions

    defs = build_definitions()
    instance = instance or dg.DagsterInstance.get()
    summary = MaterializeSummary()
    manifest = Settings.from_env().manifest

    def run(job_name: str, label: str, **kwargs) -> bool:
        started = time.monotonic()
        run_config = {"loggers": {"console": {"config": {"log_level": log_level}}}}
        result = defs.resolve_job_def(job_name).execute_in_process(
            instance=instance, raise_on_error=False, run_config=run_config, tags=local_run_tags(), **kwargs
        )
        seconds = time.monotonic() - started
        state = "ok" if result.success else "FAILED"
        summary.lines.append(f"{label}: {state} in {seconds:.1f} s (run {result.run_id})")
        if not result.success:
            summary.failed_runs.append(result.run_id)
            for event in result.all_events:
                if event.is_failure and event.event_specific_data is not None:
                    error = getattr(event.event_specific_data, "error", None)
                    while error is not None and error.cause is not None and error.cls_name.startswith("Dagster"):
                        error = error.cause  # our exception, not Dagster's wrapper nor what it wraps
                    if error is not None:
                        summary.lines.append(f"  {error.message.strip()}")
        return result.success

    manifest_changed = force or manifest_fingerprint(manifest) != latest_manifest_fingerprint(instance)
    if manifest_changed:
        if not run("manifest_job", "image_manifest"):
            return summary
    else:
        summary.lines.append("image_manifest: up to date")

    for run_id in fail_dead_local_runs(instance):  # killed earlier: their shards read IN_PROGRESS forever
        summary.lines.append(f"run {run_id}: its process is gone; marked failed")
    shard_keys = instance.get_dynamic_partitions(SHARD_PARTITIONS_NAME) if force else shards_to_fill(instance)
    if shard_keys:
        from tqdm.auto import tqdm

        for key in tqdm(shard_keys, desc="shards", unit="shard"):
            run("attention_statistics_job", f"attention_statistics[{key}]", partition_key=key)
    else:
        summary.lines.append("attention_statistics: every shard up to date")

    # own-pass analyses (attention rollout, masking ablation), one run per shard like the statistics
    from attn_assets.defs.analyses.assets import analysis_shards_to_fill

    analysis_keys = instance.get_dynamic_partitions(SHARD_PARTITIONS_NAME) if force else analysis_shards_to_fill(instance)
    for key in analysis_keys:
        run("analysis_shards_job", f"rollout/ablation[{key}]", partition_key=key)
    if not analysis_keys:
        summary.lines.append("rollout/ablation: every shard up to date")

    downstream_ran = force or _downstream_stale(instance, defs)
    if downstream_ran:
        if not run("downstream_job", "warehouse, aggregates, exports, figures"):
            return summary
    else:
        summary.lines.append("downstream assets: up to date")

    _geolocation_stage(instance, force, run, summary)
    return summary


def _geolocation_stage(instance, force: bool, run, summary: MaterializeSummary) -> None:
    """PLONK predictions per shard, then accuracy, failure analysis and gallery; skipped without diff-plonk."""
    from attn_assets.core.geolocation import plonk_missing_reason
    from attn_assets.defs.geolocation.assets import geolocation_shards_to_fill, geolocation_summaries_stale

    missing = plonk_missing_reason()
    if missing is not None:
        summary.lines.append(f"geolocation: skipped ({missing})")
        return
    keys = instance.get_dynamic_partitions(SHARD_PARTITIONS_NAME) if force else geolocation_shards_to_fill(instance)
    for key in keys:  # a failed shard is reported and does not stop the others nor the summaries
        run("geolocation_shards_job", f"geolocation_predictions[{key}]", partition_key=key)
    if not keys:
        summary.lines.append("geolocation_predictions: every shard up to date")
    if force or geolocation_summaries_stale(instance):
        run("geolocation_job", "geolocation accuracy, failure analysis, worst predictions")
    else:
        summary.lines.append("geolocation summaries: up to date")

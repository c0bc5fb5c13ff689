"""Headless materialization of the whole graph in the persistent Dagster instance.

Each stage is a real Dagster run (visible in the UI afterwards); a stage that is up to
date is skipped, so a second call does nothing unless forced. Whether a stage is up to date is
asked of defs/needs_run.py, the module the schedule and the sensors ask too: a shard runs when it
is missing, failed, or was computed with another model, recipe (weights, processor, precision,
code version, settings) or image set than now; the manifest when its files changed; the
downstream assets when they are older than the shards or the manifest.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import dagster as dg

from attn_assets.defs.needs_run import (
    analysis_shards_needing_run,
    downstream_stale,
    geolocation_shards_to_fill,
    geolocation_summaries_stale,
    manifest_changed,
    shards_needing_run,
)
from attn_assets.defs.partitions import SHARD_PARTITIONS_NAME
from attn_assets.defs.runs import fail_dead_local_runs, local_run_tags
from attn_assets.defs.shard_passes import with_recipe_code_versions
from attn_assets.passes.current import STATISTICS, CurrentState
from attn_assets.passes.recipe import summarize_reasons
from attn_assets.settings import Settings


@dataclass
class MaterializeSummary:
    lines: list[str] = field(default_factory=list)
    failed_runs: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed_runs


def materialize_all(
    force: bool = False, instance: dg.DagsterInstance | None = None, log_level: str = "INFO"
) -> MaterializeSummary:
    from attn_assets.definitions import build_definitions

    # code versions from the environment now (the definitions module may have been imported under another one)
    defs = with_recipe_code_versions(build_definitions())
    instance = instance or dg.DagsterInstance.get()
    summary = MaterializeSummary()
    manifest = Settings.from_env().manifest

    def run(job_name: str, label: str, **kwargs) -> bool:
        if kwargs.get("asset_selection") is None:
            kwargs.pop("asset_selection", None)
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

    if force or manifest_changed(instance, manifest):
        if not run("manifest_job", "image_manifest"):
            return summary
    else:
        summary.lines.append("image_manifest: up to date")

    for run_id in fail_dead_local_runs(instance):  # killed earlier: their shards read IN_PROGRESS forever
        summary.lines.append(f"run {run_id}: its process is gone; marked failed")
    state = CurrentState.from_env()  # the recipes and image sets now, read once for the decisions below
    if force:
        shard_keys = instance.get_dynamic_partitions(SHARD_PARTITIONS_NAME)
    else:
        reasons = shards_needing_run(instance, STATISTICS, state)  # what shards_to_fill lists, with the reasons
        shard_keys = list(reasons)
        if reasons:
            summary.lines.append(f"attention_statistics: {len(shard_keys)} shards to run: {summarize_reasons(reasons)}")
    if shard_keys:
        from tqdm.auto import tqdm

        for key in tqdm(shard_keys, desc="shards", unit="shard"):
            run("attention_statistics_job", f"attention_statistics[{key}]", partition_key=key)
    else:
        summary.lines.append("attention_statistics: every shard up to date")

    # own-pass analyses (attention rollout, masking ablation), one run per shard like the statistics; only the
    # analyses that need it (e.g. a changed ablation fraction does not recompute the rollout)
    state = CurrentState.from_env()  # the statistics may have just been recomputed
    analysis_needs = ({key: None for key in instance.get_dynamic_partitions(SHARD_PARTITIONS_NAME)} if force
                      else analysis_shards_needing_run(instance, state))
    for key, needs in analysis_needs.items():
        run("analysis_shards_job", f"rollout/ablation[{key}]", partition_key=key,
            asset_selection=sorted(needs, key=str) if needs else None)
    if not analysis_needs:
        summary.lines.append("rollout/ablation: every shard up to date")

    if force or downstream_stale(instance, defs):
        if not run("downstream_job", "warehouse, aggregates, exports, figures"):
            return summary
    else:
        summary.lines.append("downstream assets: up to date")

    _geolocation_stage(instance, force, run, summary)
    return summary


def _geolocation_stage(instance, force: bool, run, summary: MaterializeSummary) -> None:
    """PLONK predictions per shard, then accuracy, failure analysis and gallery; skipped without diff-plonk."""
    from attn_assets.core.geolocation import plonk_missing_reason

    missing = plonk_missing_reason()
    if missing is not None:
        summary.lines.append(f"geolocation: skipped ({missing})")
        return
    keys = (instance.get_dynamic_partitions(SHARD_PARTITIONS_NAME) if force
            else geolocation_shards_to_fill(instance, CurrentState.from_env()))
    for key in keys:  # a failed shard is reported and does not stop the others nor the summaries
        run("geolocation_shards_job", f"geolocation_predictions[{key}]", partition_key=key)
    if not keys:
        summary.lines.append("geolocation_predictions: every shard up to date")
    if force or geolocation_summaries_stale(instance):
        run("geolocation_job", "geolocation accuracy, failure analysis, worst predictions")
    else:
        summary.lines.append("geolocation summaries: up to date")

"""Headless materialization of the whole graph in the persistent Dagster instance.

Each stage is a real Dagster run (visible in the UI afterwards); a stage that is up to
date is skipped, so a second call does nothing unless forced. Whether a stage is up to date is
asked of defs/needs_run.py, the module the schedule and the sensors ask too: a shard runs when it
is missing, failed, or was computed with another model, recipe (weights, processor, precision,
code version, settings) or image set than now; the manifest when its files changed; the
downstream assets when they are older than the shards or the manifest.

Before any run that needs the attention model, the model is loaded once (and kept for the runs of this
process): when it cannot load, nothing is run and the summary gives the cause once, so no downstream asset
is built from zero images and reported ok. A failed step is summarised by its cause, once; the full trace goes
to DAGSTER_HOME/logs/<run id>.log, named in the summary.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg
import pandas as pd

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
from attn_assets.path_text import path_to_text
from attn_assets.settings import ENV_IMAGE_ROOT, ENV_MODEL, Settings, models_setting
from attn_assets.storage.layout import HomeLayout


@dataclass
class MaterializeSummary:
    lines: list[str] = field(default_factory=list)
    failed_runs: list[str] = field(default_factory=list)
    stopped: str | None = None  # why nothing (more) was run, e.g. the model cannot load
    failed_models: list[str] = field(default_factory=list)  # listed models that could not load (the others ran)

    @property
    def ok(self) -> bool:
        return not self.failed_runs and self.stopped is None and not self.failed_models


@dataclass(frozen=True)
class StepFailure:
    """One failed step of a run: its key, the cause (our exception, not Dagster's wrappers) and the full trace."""

    step_key: str
    cause: str
    trace: str


def _root_cause(error):
    """The innermost error that is not one of Dagster's wrappers (DagsterExecutionStepExecutionError, ...)."""
    while error.cause is not None and error.cls_name.startswith("Dagster"):
        error = error.cause
    return error


def _indented(text: str, indent: str = "    ") -> str:
    """``text`` with every line after the first indented, so a multi-line message reads as one item."""
    return "\n".join(line if i == 0 else indent + line for i, line in enumerate(text.strip().splitlines()))


def _cause_text(error) -> str:
    """``ClassName: message`` (SerializableErrorInfo.message starts with the module path), later lines indented."""
    message = error.message.strip()
    qualified_prefix = f"{error.cls_name}: "
    if qualified_prefix in message:
        message = message.split(qualified_prefix, 1)[1]
    return _indented(f"{error.cls_name}: {message}" if error.cls_name else message)


def step_failures(events) -> list[StepFailure]:
    """The failed steps of a finished run, one each; the run's own failure when no step failed (e.g. the run
    could not start). ``events``: ``ExecuteInProcessResult.all_events``."""
    failures = [
        StepFailure(event.step_key or "run", _cause_text(_root_cause(event.step_failure_data.error)),
                    event.step_failure_data.error.to_string())
        for event in events
        if event.is_step_failure and event.step_failure_data.error is not None
    ]
    if failures:
        return failures
    for event in events:
        error = getattr(event.event_specific_data, "error", None) if event.is_run_failure else None
        if error is not None:
            failures.append(StepFailure("run", _cause_text(_root_cause(error)), error.to_string()))
    return failures


def write_failure_log(folder: Path, run_id: str, failures: list[StepFailure]) -> Path:
    """``folder/<run_id>.log``: every failed step's full trace (Dagster's wrappers and the chained causes)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{run_id}.log"
    path.write_text("".join(f"== step {f.step_key}: {f.cause}\n{f.trace}\n" for f in failures), encoding="utf-8")
    return path


def _run_warnings(instance: dg.DagsterInstance, run_id: str) -> list[str]:
    """The warnings the run's assets logged (context.log.warning), in order, without Dagster's own events."""
    return [record.user_message for record in instance.all_logs(run_id)
            if record.level == logging.WARNING and not record.is_dagster_event]


def escape_hint(rejections: pd.DataFrame, escape_prefix: str) -> str | None:
    """One line for the run summary when manifest rows were refused for lying outside the image root:
    ``set ATTN_ASSETS_IMAGE_ROOT=<the folder holding them all> to allow these paths``; None when there are none.

    rejections: the manifest_rejections table (``reason``, and ``raw``: the row as JSON with its ``path``)."""
    if not len(rejections):
        return None
    escaped = rejections[rejections["reason"].astype(str).str.startswith(escape_prefix)]
    if not len(escaped):
        return None
    folders = []
    for raw in escaped["raw"].dropna():
        path = str(json.loads(raw).get("path") or "")
        if os.path.isabs(path):
            folders.append(os.path.dirname(os.path.normpath(path)))
    common = path_to_text(os.path.commonpath(folders)) if folders else "<a folder that holds them>"
    return (f"manifest: {len(escaped)} rows lie outside the image root; set {ENV_IMAGE_ROOT}={common} "
            "to allow these paths")


def _manifest_escape_hint(layout: HomeLayout) -> str | None:
    from attn_assets.catalog.manifest import ESCAPE_PREFIX

    if not layout.rejections_parquet.exists():
        return None
    return escape_hint(pd.read_parquet(layout.rejections_parquet, columns=["reason", "raw"]), ESCAPE_PREFIX)


def model_load_problem(settings: Settings) -> str | None:
    """Load the attention model once, as the shard runs of this process will use it (it stays cached), and say
    why it cannot load; None when it loads. The message is the loader's: what failed and what to do."""
    from attn_assets.resources import AttentionModelResource

    error = load_error(AttentionModelResource(model=settings.model, device=settings.device), settings.model)
    if error is None:
        return None
    return (f"model '{settings.model}' cannot be loaded: {_indented(str(error))}\n"
            f"nothing was run and no output was touched; fix {ENV_MODEL} (or --model) and run again")


def load_error(resource, spec: str) -> Exception | None:
    """Load ``spec`` through ``resource`` (``AttentionModelResource.encoder_for``: kept for this process's runs) and
    return why it cannot load; None when it loads. huggingface_hub's per-attempt "Retrying in 8s" lines are
    silenced meanwhile: they would bury the one cause."""
    from attn_assets.core.model import ModelLoadError
    from attn_assets.known_warnings import quiet_hub_retries

    try:
        with quiet_hub_retries():
            resource.encoder_for(spec)
    except (ModelLoadError, OSError, ValueError, RuntimeError) as error:
        return error
    return None


def materialize_all(
    force: bool = False, instance: dg.DagsterInstance | None = None, log_level: str = "CRITICAL",
    verbose: bool = False,
) -> MaterializeSummary:
    """Run every stage that is not up to date (all with ``force``); see the module docstring.

    ``log_level``: Dagster's console logger (CRITICAL: quiet; the summary gives each failed step's cause and
    the run's warnings). ``verbose``: also put each failed step's full trace in the summary."""
    summary = MaterializeSummary()
    try:
        models_setting()  # a malformed ATTN_ASSETS_MODELS stops everything, before the definitions read it
    except ValueError as error:
        summary.stopped = f"{error}\nnothing was run and no output was touched"
        summary.lines.extend(summary.stopped.split("\n"))
        return summary
    from attn_assets.definitions import build_definitions  # its import builds the definitions (reads settings)

    # code versions from the environment now (the definitions module may have been imported under another one)
    defs = with_recipe_code_versions(build_definitions())
    instance = instance or dg.DagsterInstance.get()
    settings = Settings.from_env()
    layout = HomeLayout(settings.home)
    logs_dir = Path(instance.root_directory) / "logs"  # beside the runs: a failed run leaves ATTN_ASSETS_HOME as it was

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
        if log_level not in ("DEBUG", "INFO", "WARNING"):  # the console did not show them
            summary.lines.extend(f"  warning: {message}" for message in _run_warnings(instance, result.run_id))
        if not result.success:
            summary.failed_runs.append(result.run_id)
            failures = step_failures(result.all_events)
            log_path = write_failure_log(logs_dir, result.run_id, failures)
            for failure in failures:
                summary.lines.append(f"  {failure.step_key} failed: {failure.cause}")
                if verbose:
                    summary.lines.extend(f"    {line}" for line in failure.trace.rstrip().splitlines())
            summary.lines.append(f"  full trace: {path_to_text(log_path)} (or --verbose)")
        return result.success

    def stop_unless_model_loads() -> bool:
        if (problem := model_load_problem(settings)) is not None:
            summary.stopped = problem
            summary.lines.extend(problem.rsplit("\n", 1))  # the cause (its lines indented), then what to do
            return True
        return False

    manifest_due = force or manifest_changed(instance, settings.manifest)
    if manifest_due:
        if stop_unless_model_loads():
            return summary
        manifest_ok = run("manifest_job", "image_manifest")
        if (hint := _manifest_escape_hint(layout)) is not None:
            summary.lines.append(hint)
        if not manifest_ok:
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
    if not manifest_due and (shard_keys or analysis_shards_needing_run(instance, state)):
        if stop_unless_model_loads():
            return summary
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

    _country_relevance_stage(instance, force, run, summary)  # before geolocation: its error analysis reads these
    _geolocation_stage(instance, force, run, summary)
    _models_stage(instance, force, run, summary, layout, settings)
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


def _models_stage(instance, force: bool, run, summary: MaterializeSummary, layout: HomeLayout,
                  settings: Settings) -> None:
    """With ATTN_ASSETS_MODELS set: each listed model in turn (loaded once, released before the next) over every
    shard whose file is missing or stale for it; a model that cannot load is reported and skipped, the others run.
    Then the *_by_model tables, and with two or more models the cross-model comparison."""
    from attn_assets.defs.models.assets import model_folders
    from attn_assets.defs.needs_run import latest_storage_id, model_shards_needing_run
    from attn_assets.defs.partitions import sync_model_partitions
    from attn_assets.passes.cross_model import shard_is_current
    from attn_assets.passes.current import model_state
    from attn_assets.resources import AttentionModelResource, release_other_encoder
    from attn_assets.settings import ENV_MODELS, is_set, models_setting

    held = _held_in_warehouse(layout)
    if not is_set(ENV_MODELS) and not held:
        return  # a list unset after use still runs: its one model becomes the default of models and the pairs go
    entries = models_setting()
    sync_model_partitions(instance, layout.models_dir)
    shard_keys = instance.get_dynamic_partitions(SHARD_PARTITIONS_NAME)
    resource = AttentionModelResource(model=settings.model, device=settings.device)
    ran = False
    needed = {} if force else model_shards_needing_run(instance, settings)
    for entry in entries:
        keys = list(shard_keys) if force else list(needed.get(entry.key, {}))
        if not keys:
            summary.lines.append(f"model_statistics[{entry.key}]: every shard up to date")
            continue
        if not force:
            summary.lines.append(f"model_statistics[{entry.key}]: {len(keys)} shards to run: "
                                 f"{summarize_reasons(needed[entry.key])}")
        if (error := load_error(resource, entry.spec)) is not None:
            summary.failed_models.append(entry.key)
            summary.lines.append(f"model_statistics[{entry.key}]: model '{entry.spec}' cannot be loaded: "
                                 f"{_indented(str(error))}")
            summary.lines.append(f"  its {len(keys)} shards were not run (the other models ran); fix or remove it in "
                                 f"{ENV_MODELS}")
            continue
        for key in keys:  # a failed shard is reported and does not stop the others
            ran = run("model_statistics_job", f"model_statistics[{entry.key}|{key}]",
                      partition_key=dg.MultiPartitionKey({"model": entry.key, "shard": key})) or ran
    release_other_encoder()
    newest = max(latest_storage_id(instance, dg.AssetKey("model_statistics")),
                 latest_storage_id(instance, dg.AssetKey("attention_warehouse")))
    if force or ran or newest > latest_storage_id(instance, dg.AssetKey("model_tables")) \
            or _listed_in_warehouse(layout) != [entry.key for entry in entries] \
            or held != {entry.key for entry in entries} | set(model_folders(layout)):
        run("model_tables_job", "model tables (*_by_model, models)")
    else:
        summary.lines.append("model tables: up to date")
    if len(entries) < 2:
        if _warehouse_column(layout, "SELECT DISTINCT model_a FROM cross_model_agreement"):
            run("cross_model_job", "cross-model tables and figures")  # pairs of models no longer listed leave
        return
    states = {entry.key: model_state(layout, settings, entry.spec) for entry in entries}
    keys = [key for key in shard_keys if force or not shard_is_current(layout, key, states)]
    for key in keys:  # a failed shard is reported and does not stop the others nor the summary
        run("cross_model_shards_job", f"cross_model_agreement[{key}]", partition_key=key)
    if not keys:
        summary.lines.append("cross_model_agreement: every shard up to date")
    if force or keys or latest_storage_id(instance, dg.AssetKey("cross_model_agreement")) > \
            latest_storage_id(instance, dg.AssetKey("cross_model_summary")):
        run("cross_model_job", "cross-model tables and figures")
    else:
        summary.lines.append("cross-model tables and figures: up to date")


def _warehouse_column(layout: HomeLayout, sql: str) -> list | None:
    """The first column of ``sql`` on the warehouse (None: no warehouse, or one written before that table)."""
    from attn_assets.storage.warehouse import Warehouse

    store = Warehouse(layout.warehouse_path)
    if not store.exists():
        return None
    try:
        frame = store.query(sql)
    except Exception:  # a warehouse written before the table
        return None
    return list(frame.iloc[:, 0])


def _listed_in_warehouse(layout: HomeLayout) -> list[str] | None:
    """The listed model keys the warehouse's models table holds, in list order (None: no table yet)."""
    return _warehouse_column(layout, "SELECT model_key FROM models WHERE listed ORDER BY position")


def _held_in_warehouse(layout: HomeLayout) -> set[str] | None:
    """Every model key the warehouse's models table holds, listed or removed-but-kept (None: no table yet)."""
    keys = _warehouse_column(layout, "SELECT model_key FROM models")
    return None if keys is None else set(keys)


def _country_relevance_stage(instance, force: bool, run, summary: MaterializeSummary) -> None:
    """Zero-shot country predictions per shard, then accuracy, faithfulness and gallery; skipped (with the reason)
    when the model spec has no text tower."""
    from attn_assets.core.zero_shot import text_tower_missing_reason
    from attn_assets.defs.needs_run import latest_storage_id, shards_needing_run
    from attn_assets.passes.current import COUNTRY_RELEVANCE

    missing = text_tower_missing_reason(Settings.from_env().model)
    if missing is not None:
        summary.lines.append(f"country relevance: skipped ({missing.split('. ')[0]})")
        return
    keys = (instance.get_dynamic_partitions(SHARD_PARTITIONS_NAME) if force
            else list(shards_needing_run(instance, COUNTRY_RELEVANCE, CurrentState.from_env())))
    for key in keys:  # a failed shard is reported and does not stop the others nor the summaries
        run("country_relevance_shards_job", f"country_predictions[{key}]", partition_key=key)
    if not keys:
        summary.lines.append("country_predictions: every shard up to date")
    newest = max(latest_storage_id(instance, dg.AssetKey("country_predictions")),
                 latest_storage_id(instance, dg.AssetKey("attention_warehouse")))
    if force or newest > latest_storage_id(instance, dg.AssetKey("country_accuracy")):
        run("country_relevance_job", "country accuracy, faithfulness, misclassified gallery")
    else:
        summary.lines.append("country relevance summaries: up to date")

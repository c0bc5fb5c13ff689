"""Every sensor of attn-assets; what each one asks is answered in defs/needs_run.py.

- manifest_sensor: an external event, the manifest files changing, materializes image_manifest.
- downstream_refresh_sensor: once shards or the manifest are newer than the warehouse and no run is in flight,
  runs downstream_job once.
- geolocation_sensor: predicts the shards whose statistics changed, then refreshes the geolocation summaries.

All start STOPPED (turn them on in the UI's Automation tab).
"""

import dagster as dg

from attn_assets.catalog.manifest import ManifestError, find_manifest_files
from attn_assets.defs.geolocation.assets import geolocation_predictions
from attn_assets.defs import jobs  # the module, not its names: the defs folder loader collects each job once
from attn_assets.defs.manifest.assets import image_manifest, manifest_fingerprint
from attn_assets.defs.needs_run import (
    geolocation_shards_to_fill,
    geolocation_summaries_stale,
    latest_manifest_fingerprint,
    latest_storage_id,
    newest_downstream_input,
)
from attn_assets.defs.runs import run_key_used, runs_in_flight
from attn_assets.defs.statistics.assets import attention_statistics
from attn_assets.defs.warehouse.assets import attention_warehouse
from attn_assets.passes.current import GEOLOCATION, CurrentState
from attn_assets.resources import PipelineResource


@dg.sensor(
    asset_selection=[image_manifest],
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.STOPPED,
    description="Materializes image_manifest when a manifest file is added, removed or modified.",
)
def manifest_sensor(context: dg.SensorEvaluationContext, pipeline: PipelineResource):
    try:
        find_manifest_files(pipeline.manifest)
    except ManifestError as error:
        return dg.SkipReason(str(error))
    fingerprint = manifest_fingerprint(pipeline.manifest)
    if fingerprint == latest_manifest_fingerprint(context.instance):
        return dg.SkipReason("Manifest unchanged since the last image_manifest materialization")
    return dg.RunRequest(run_key=f"manifest:{fingerprint}", asset_selection=[image_manifest.key])


@dg.sensor(
    job=jobs.downstream_job,
    minimum_interval_seconds=120,
    default_status=dg.DefaultSensorStatus.STOPPED,
    description=(
        "When a shard (statistics, rollout, ablation) or image_manifest was materialized after the warehouse and "
        "no run is in flight, rebuilds the warehouse, aggregates, exports and figures once."
    ),
)
def downstream_refresh_sensor(context: dg.SensorEvaluationContext):
    newest = newest_downstream_input(context.instance)
    if newest <= latest_storage_id(context.instance, attention_warehouse.key):
        return dg.SkipReason("The warehouse is newer than every shard and the manifest")
    in_flight = runs_in_flight(context.instance)
    if in_flight:
        return dg.SkipReason(f"{in_flight} runs still in flight; waiting until they finish")
    return dg.RunRequest(run_key=f"shards-up-to:{newest}")


@dg.sensor(
    jobs=[jobs.geolocation_shards_job, jobs.geolocation_job],
    minimum_interval_seconds=120,
    default_status=dg.DefaultSensorStatus.STOPPED,
    description=("With diff-plonk installed: predicts every shard whose statistics are newer than its predictions, "
                 "then, once no run is in flight, refreshes accuracy, failure analysis and the gallery. A shard whose "
                 "prediction failed is retried only after its statistics change, and does not hold up the summaries."),
)
def geolocation_sensor(context: dg.SensorEvaluationContext):
    from attn_assets.core.geolocation import plonk_missing_reason

    missing = plonk_missing_reason()
    if missing is not None:
        return dg.SkipReason(f"Geolocation is off in this environment: {missing}")
    instance = context.instance
    state = CurrentState.from_env()
    shard_requests = [
        dg.RunRequest(job_name=jobs.geolocation_shards_job.name, partition_key=key, run_key=run_key)
        for key in geolocation_shards_to_fill(instance, state)
        if not run_key_used(instance, run_key := f"{key}:statistics-"
                            f"{latest_storage_id(instance, attention_statistics.key, key)}:"
                            f"recipe-{state.recipe(GEOLOCATION, key).fingerprint}")
    ]
    if shard_requests:
        return shard_requests
    if not geolocation_summaries_stale(instance):
        return dg.SkipReason("No shard to predict, and the summaries are newer than the predictions and the warehouse")
    in_flight = runs_in_flight(instance)
    if in_flight:
        return dg.SkipReason(f"{in_flight} runs still in flight; waiting until they finish")
    stamp = (f"{latest_storage_id(instance, geolocation_predictions.key)}-"
             f"{latest_storage_id(instance, attention_warehouse.key)}")
    return dg.RunRequest(job_name=jobs.geolocation_job.name, run_key=f"summaries:{stamp}")

"""manifest_sensor: refresh image_manifest when the manifest files change."""


import dagster as dg

from attn_assets.catalog.manifest import ManifestError, find_manifest_files
from attn_assets.defs.manifest.assets import image_manifest, manifest_fingerprint
from attn_assets.resources import PipelineResource


def latest_manifest_fingerprint(instance: dg.DagsterInstance) -> str | None:
    event = instance.get_latest_materialization_event(image_manifest.key)
    if event is None or event.asset_materialization is None:
        return None
    value = event.asset_materialization.metadata.get("manifest_fingerprint")
    return value.value if value is not None else None


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

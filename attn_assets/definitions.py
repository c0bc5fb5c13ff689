"""Every asset, check, job, schedule, sensor and resource of attn-assets, assembled in one place."""

import dagster as dg

from attn_assets.defs import jobs
from attn_assets.defs.analyses import assets as analysis_assets
from attn_assets.defs.geolocation import assets as geolocation_assets
from attn_assets.defs.manifest import assets as manifest_assets
from attn_assets.defs.manifest import sensors as manifest_sensors
from attn_assets.defs.statistics import assets as statistics_assets
from attn_assets.defs.statistics import schedules as statistics_schedules
from attn_assets.defs.visuals import assets as visual_assets
from attn_assets.defs.warehouse import assets as warehouse_assets
from attn_assets.defs.warehouse import sensors as warehouse_sensors
from attn_assets.deploy.executors import executor_from_env
from attn_assets.resources import resources_from_env

DOMAINS = (manifest_assets, statistics_assets, warehouse_assets, visual_assets, analysis_assets, geolocation_assets)


def build_definitions() -> dg.Definitions:
    """Definitions with resources read from the environment as it is now."""
    return dg.Definitions(
        assets=dg.load_assets_from_modules(DOMAINS),
        asset_checks=dg.load_asset_checks_from_modules(DOMAINS),
        jobs=[jobs.manifest_job, jobs.attention_statistics_job, jobs.analysis_shards_job, jobs.downstream_job,
              jobs.geolocation_shards_job, jobs.geolocation_job],
        schedules=[statistics_schedules.missing_shards_schedule],
        sensors=[manifest_sensors.manifest_sensor, warehouse_sensors.downstream_refresh_sensor,
                 geolocation_assets.geolocation_sensor],
        resources=resources_from_env(),
        executor=executor_from_env(),  # ATTN_ASSETS_EXECUTOR: celery / k8s profiles (attn_assets/deploy)
    )


defs = build_definitions()

"""What still needs a run: one answer for the schedule, the sensors and `attn-assets materialize`.

Every "is this up to date?" question of the control path is answered here, from the Dagster instance (what
was materialized, failed, or is in progress) and the shard files (``passes/current.py``, free of Dagster):

  manifest      ``manifest_changed``: the manifest files' fingerprint differs from the one image_manifest
                recorded (the files ``find_manifest_files`` reads: a folder's CSVs, a glob's matches)
  shard passes  ``shards_needing_run(instance, pass)``: a registered shard not in progress whose file is not
                current (missing, another model key, recipe fingerprint or image set than now), whose
                latest attempt failed, or that this instance never materialized; geolocation also waits
                until the shard's statistics are materialized and current. ``shards_to_fill``,
                ``analysis_shards_needing_run`` and ``geolocation_shards_to_fill`` are its views per job.
  models        ``model_shards_needing_run``: per model of ATTN_ASSETS_MODELS, the shards whose
                ``models/<key>/shards`` file is not current for that model's own recipe (not in progress)
  downstream    ``downstream_stale``: a warehouse-side asset never built, older than the newest shard or
                manifest materialization (``newest_downstream_input``), or built for another statistics
                recipe; ``geolocation_summaries_stale`` likewise for the geolocation summaries.

Materializations are ordered by storage id (``latest_storage_id``): ids grow with time across assets.
"""

from __future__ import annotations

from collections.abc import Sequence

import dagster as dg

from attn_assets.defs.analyses.assets import SHARD_ANALYSIS_ASSETS
from attn_assets.defs.geolocation.assets import geolocation_accuracy, geolocation_predictions
from attn_assets.defs.manifest.assets import image_manifest, manifest_fingerprint
from attn_assets.defs.partitions import (
    MODEL_PARTITIONS_NAME, SHARD_PARTITIONS_NAME, model_shard_partitions, shard_partitions,
)
from attn_assets.defs.shard_passes import asset_key
from attn_assets.defs.statistics.assets import attention_statistics
from attn_assets.defs.warehouse.assets import attention_warehouse
from attn_assets.defs.models.assets import model_statistics
from attn_assets.passes.current import (
    ABLATION, GEOLOCATION, NO_MANIFEST_ROWS, ROLLOUT, STATISTICS, CurrentState, ShardPass, model_state,
    model_statistics_pass,
)
from attn_assets.settings import ENV_MODELS, Settings, is_set, models_setting
from attn_assets.storage.layout import HomeLayout

# --------------------------------------------------------------------------- materializations


def latest_storage_id(instance: dg.DagsterInstance, key: dg.AssetKey, partition: str | None = None) -> int:
    """Storage id of the asset's (or one partition's) latest materialization; 0 when never materialized.
    Ids grow with time, so comparing them orders materializations across assets."""
    records_filter = dg.AssetRecordsFilter(asset_key=key, asset_partitions=[partition] if partition else None)
    records = instance.fetch_materializations(records_filter, limit=1).records
    return records[0].storage_id if records else 0


def _latest_metadata(instance: dg.DagsterInstance, key: dg.AssetKey) -> dict:
    event = instance.get_latest_materialization_event(key)
    return dict(event.asset_materialization.metadata) if event is not None and event.asset_materialization else {}


# --------------------------------------------------------------------------- manifest


def latest_manifest_fingerprint(instance: dg.DagsterInstance) -> str | None:
    """The manifest fingerprint image_manifest recorded when it was last materialized."""
    value = _latest_metadata(instance, image_manifest.key).get("manifest_fingerprint")
    return value.value if value is not None else None


def manifest_changed(instance: dg.DagsterInstance, manifest: str) -> bool:
    """True when the files behind the manifest setting differ from those image_manifest last read."""
    return manifest_fingerprint(manifest) != latest_manifest_fingerprint(instance)


# --------------------------------------------------------------------------- shard passes


def shards_needing_run(
    instance: dg.DagsterInstance,
    shard_pass: ShardPass,
    state: CurrentState | None = None,
    keys: Sequence[str] | None = None,
) -> dict[str, str]:
    """{shard_key: reason} for the registered shards where ``shard_pass`` must run now (see the module doc)."""
    keys = list(instance.get_dynamic_partitions(SHARD_PARTITIONS_NAME) if keys is None else keys)
    if not keys:
        return {}
    state = state or CurrentState.from_env()
    status = instance.get_status_by_partition(asset_key(shard_pass), keys, shard_partitions) or {}
    upstream = (instance.get_status_by_partition(asset_key(STATISTICS), keys, shard_partitions) or {}
                if shard_pass is GEOLOCATION else {})
    needed: dict[str, str] = {}
    for key in keys:
        if status.get(key) == dg.AssetPartitionStatus.IN_PROGRESS or key not in state.image_sets:
            continue  # running now; or no manifest rows (image_manifest removes such shards)
        if shard_pass is GEOLOCATION and (upstream.get(key) != dg.AssetPartitionStatus.MATERIALIZED
                                          or state.reason(STATISTICS, key) is not None):
            continue  # nothing current to predict from yet
        reason = state.reason(shard_pass, key)
        if reason is None and status.get(key) == dg.AssetPartitionStatus.FAILED:
            reason = "last run failed"
        elif reason is None and status.get(key) is None:
            reason = "never materialized in this Dagster instance"
        if reason is not None:
            needed[key] = reason
    return needed


def model_shards_needing_run(instance: dg.DagsterInstance, settings: Settings | None = None
                             ) -> dict[str, dict[str, str]]:
    """{model key: {shard_key: reason}} for the listed models (ATTN_ASSETS_MODELS order) and the registered shards
    whose model_statistics file is not current for that model (missing, another recipe or image set), leaving
    out partitions in progress. Empty when ATTN_ASSETS_MODELS is not set."""
    if not is_set(ENV_MODELS):
        return {}
    settings = settings or Settings.from_env()
    layout = HomeLayout(settings.home)
    keys = list(instance.get_dynamic_partitions(SHARD_PARTITIONS_NAME))
    entries = models_setting()
    partitions = [dg.MultiPartitionKey({"model": e.key, "shard": k}) for e in entries for k in keys]
    registered = set(instance.get_dynamic_partitions(MODEL_PARTITIONS_NAME))
    status = (instance.get_status_by_partition(model_statistics.key, partitions, model_shard_partitions) or {}
              if partitions and {e.key for e in entries} <= registered else {})
    needed: dict[str, dict[str, str]] = {}
    for entry in entries:
        shard_pass, state = model_statistics_pass(entry.key), model_state(layout, settings, entry.spec)
        for key in keys:
            partition = dg.MultiPartitionKey({"model": entry.key, "shard": key})
            if status.get(partition) == dg.AssetPartitionStatus.IN_PROGRESS:
                continue
            reason = state.reason(shard_pass, key)
            if reason is not None and reason != NO_MANIFEST_ROWS:
                needed.setdefault(entry.key, {})[key] = reason
    return needed


def shards_to_fill(instance: dg.DagsterInstance, state: CurrentState | None = None) -> list[str]:
    """Registered shards whose statistics must run: not in progress, and never run, failed, or computed with
    another model, recipe or image set than now."""
    return list(shards_needing_run(instance, STATISTICS, state))


def analysis_shards_needing_run(instance: dg.DagsterInstance, state: CurrentState | None = None
                                ) -> dict[str, dict[dg.AssetKey, str]]:
    """{shard: {own-pass analysis asset: reason}} for the shards where rollout or ablation must run (only the
    analyses that need it: a changed ablation fraction does not recompute the rollout)."""
    state = state or CurrentState.from_env()
    needed: dict[str, dict[dg.AssetKey, str]] = {}
    for shard_pass in (ROLLOUT, ABLATION):
        for key, reason in shards_needing_run(instance, shard_pass, state).items():
            needed.setdefault(key, {})[asset_key(shard_pass)] = reason
    keys = instance.get_dynamic_partitions(SHARD_PARTITIONS_NAME)
    return {key: needed[key] for key in keys if key in needed}


def geolocation_shards_to_fill(instance: dg.DagsterInstance, state: CurrentState | None = None) -> list[str]:
    """Shards whose statistics are current and materialized, and whose predictions are missing, failed, or were
    made from another statistics file, PLONK setting or image set."""
    return list(shards_needing_run(instance, GEOLOCATION, state))


# --------------------------------------------------------------------------- what reads the shards


def newest_downstream_input(instance: dg.DagsterInstance) -> int:
    """Storage id of the newest materialization the warehouse is built from: a shard of a shard pass, or the
    manifest (a withdrawn row or a corrected country must reach the tables without any shard recompute)."""
    return max(latest_storage_id(instance, image_manifest.key), latest_storage_id(instance, attention_statistics.key),
               *(latest_storage_id(instance, asset.key) for asset in SHARD_ANALYSIS_ASSETS))


def _warehouse_recipe(instance: dg.DagsterInstance) -> str | None:
    """model key + fingerprint the warehouse was last built for (its materialization metadata)."""
    metadata = _latest_metadata(instance, attention_warehouse.key)
    if "model_key" not in metadata or "recipe_fingerprint" not in metadata:
        return None
    return f"{metadata['model_key'].value}:{metadata['recipe_fingerprint'].value}"


def downstream_stale(instance: dg.DagsterInstance, defs: dg.Definitions, state: CurrentState | None = None) -> bool:
    """True when an asset of downstream_job was never built or is older than the shards or manifest, or the
    warehouse was built for another statistics recipe than now (e.g. the model changed and its shards failed)."""
    keys = defs.resolve_job_def("downstream_job").asset_layer.executable_asset_keys
    newest = newest_downstream_input(instance)
    if any(latest_storage_id(instance, key) < newest or latest_storage_id(instance, key) == 0 for key in keys):
        return True
    recipe = (state or CurrentState.from_env()).recipe(STATISTICS)
    return _warehouse_recipe(instance) != f"{recipe.model_key}:{recipe.fingerprint}"


def geolocation_summaries_stale(instance: dg.DagsterInstance) -> bool:
    """True when predictions exist and they, or the warehouse (true coordinates, countries), are newer than
    geolocation_accuracy."""
    predictions = latest_storage_id(instance, geolocation_predictions.key)
    newest = max(predictions, latest_storage_id(instance, attention_warehouse.key))
    return predictions > 0 and newest > latest_storage_id(instance, geolocation_accuracy.key)

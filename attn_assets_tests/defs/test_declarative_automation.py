"""Declarative Automation (AutomationCondition) measured against our dynamic shard partitions.

Which automation is declarative and which stays a sensor is decided by what this test measures, on a real
temp instance, with ``dg.evaluate_automation_conditions`` (what the automation-condition sensor runs each tick):

- missing-shard fill, ``AutomationCondition.on_missing()`` on attention_statistics: requests no shard at all,
  neither those registered before the first evaluation nor one registered later, because its
  ``~any_deps_missing`` part is true for every shard: shard_image_sets is observed per shard, never
  materialized, so it reads as a missing dependency. ``newly_missing()`` sees a shard registered later once;
  nothing declarative retries a failed shard or recomputes a stale one (another recipe or image set), which
  missing_shards_schedule and ``attn-assets materialize`` do (``defs/needs_run.shards_to_fill``).
- downstream refresh, ``AutomationCondition.eager()`` on attention_warehouse: while one shard of
  attention_statistics is missing or failed, the warehouse is not requested (``~any_deps_missing``), so one bad
  shard would hold every downstream output back; downstream_refresh_sensor refreshes from the shards that exist.

If a Dagster upgrade changes these measurements, this test fails and the decision can be revisited.
"""

from __future__ import annotations

import csv
import os

import dagster as dg

from attn_assets.definitions import build_definitions
from attn_assets.defs.needs_run import shards_to_fill
from attn_assets.defs.partitions import SHARD_PARTITIONS_NAME
from attn_assets_tests.defs.conftest import osv_row, write_osv_manifest, write_scene

STATISTICS = dg.AssetKey("attention_statistics")
WAREHOUSE = dg.AssetKey("attention_warehouse")


def _with_conditions(defs: dg.Definitions, conditions: dict[dg.AssetKey, dg.AutomationCondition]) -> dg.Definitions:
    def apply(spec: dg.AssetSpec) -> dg.AssetSpec:
        return spec.replace_attributes(automation_condition=conditions[spec.key]) if spec.key in conditions else spec

    assets = [asset.map_asset_specs(apply) if isinstance(asset, dg.AssetsDefinition) and set(asset.keys) & set(conditions)
              else asset for asset in {id(a): a for a in defs.assets}.values()]
    return dg.Definitions(assets=assets, resources=defs.resources)


class _Ticks:
    """Successive evaluations carrying the cursor, as the automation-condition sensor's ticks do."""

    def __init__(self, defs: dg.Definitions, instance: dg.DagsterInstance):
        self.defs, self.instance, self.cursor = defs, instance, None

    def requested(self, key: dg.AssetKey) -> set:
        result = dg.evaluate_automation_conditions(defs=self.defs, instance=self.instance, cursor=self.cursor)
        self.cursor = result.cursor
        return set(result.get_requested_partitions(key))


def _run(job: str, instance, partition_key: str | None = None) -> bool:
    return build_definitions().resolve_job_def(job).execute_in_process(
        instance=instance, partition_key=partition_key, raise_on_error=False).success


def _add_images(pipeline_env, count: int) -> None:
    with open(pipeline_env.manifest, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    for i in range(count):
        image_id = f"20000000000000{i:02d}"
        write_scene(pipeline_env.image_path(image_id), seed=100 + i)
        rows.append(osv_row(image_id, 50.0, 8.0, "DE", "DE", "right"))
    write_osv_manifest(pipeline_env.manifest, rows)


def test_on_missing_requests_no_shard_and_newly_missing_only_new_ones(pipeline_env, instance):
    assert _run("manifest_job", instance)
    before = set(instance.get_dynamic_partitions(SHARD_PARTITIONS_NAME))
    assert len(before) >= 2
    conditions = {"on_missing": dg.AutomationCondition.on_missing(),
                  "newly_missing": dg.AutomationCondition.newly_missing(),
                  "any_deps_missing": dg.AutomationCondition.any_deps_missing()}
    ticks = {name: _Ticks(_with_conditions(build_definitions(), {STATISTICS: condition}), instance)
             for name, condition in conditions.items()}
    first = {name: tick.requested(STATISTICS) for name, tick in ticks.items()}
    assert first["on_missing"] == set()  # the holes that existed before the first tick stay holes
    # shard_image_sets (observed per shard, never materialized) reads as a missing dependency of every shard
    assert first["any_deps_missing"] == before

    _add_images(pipeline_env, 4)  # a new shard
    assert _run("manifest_job", instance)
    new = set(instance.get_dynamic_partitions(SHARD_PARTITIONS_NAME)) - before
    assert len(new) == 1
    second = {name: tick.requested(STATISTICS) for name, tick in ticks.items()}
    assert second["on_missing"] == set()  # not even the shard registered later
    assert second["newly_missing"] == new  # the new shard is seen, once
    assert {name: tick.requested(STATISTICS) for name, tick in ticks.items()}["newly_missing"] == set()
    # what missing_shards_schedule and `attn-assets materialize` run: every hole
    assert set(shards_to_fill(instance)) == before | new


def test_eager_downstream_waits_for_every_shard_while_the_sensor_refreshes(pipeline_env, instance, monkeypatch):
    from attn_assets.defs.sensors import downstream_refresh_sensor

    assert _run("manifest_job", instance)
    keys = sorted(instance.get_dynamic_partitions(SHARD_PARTITIONS_NAME))
    ticks = _Ticks(_with_conditions(build_definitions(), {WAREHOUSE: dg.AutomationCondition.eager()}), instance)
    assert ticks.requested(WAREHOUSE) == set()

    for key in keys[:-1]:
        assert _run("attention_statistics_job", instance, partition_key=key)
    model = os.environ["ATTN_ASSETS_MODEL"]
    monkeypatch.setenv("ATTN_ASSETS_MODEL", str(pipeline_env.home / "no-such-model"))
    assert not _run("attention_statistics_job", instance, partition_key=keys[-1])  # one bad shard
    monkeypatch.setenv("ATTN_ASSETS_MODEL", model)
    assert ticks.requested(WAREHOUSE) == set()  # held back by the failed shard
    assert ticks.requested(WAREHOUSE) == set()
    assert isinstance(downstream_refresh_sensor(dg.build_sensor_context(instance=instance)), dg.RunRequest)

    assert _run("attention_statistics_job", instance, partition_key=keys[-1])  # the shard is fixed
    assert ticks.requested(WAREHOUSE) == {None}  # only now is the warehouse requested

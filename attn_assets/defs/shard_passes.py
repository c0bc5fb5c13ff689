"""Which shards need a run, and which shard files the warehouse may load: one answer for the schedule, the
sensors, `attn-assets materialize` and the warehouse loaders.

A shard pass (statistics, rollout, ablation, geolocation) writes one Parquet file per shard with a recipe
record (``passes/recipe.py``). A registered shard needs a run of a pass when it is not in progress and
  * its file is missing, or records another model key, recipe fingerprint or image set than now; or
  * Dagster's latest attempt failed, or this Dagster instance never materialized it.
Geolocation additionally waits until the shard's statistics are current (its input is their embeddings),
and is stale when the statistics file was rewritten since (the record's token).

The same comparison decides what the warehouse loads: only files whose record matches the current recipe
and image set; the others are left out (and counted), so a table never mixes two recipes.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import dagster as dg

from attn_assets.defs.partitions import SHARD_PARTITIONS_NAME, shard_partitions
from attn_assets.passes.recipe import (
    Recipe,
    RecipeSettings,
    ShardRecord,
    current_image_sets,
    digest,
    read_record,
    recipe_markdown,
    stale_reason,
    summarize_reasons,
)
from attn_assets.storage.layout import HomeLayout

NOT_COMPUTED = "not computed"
NO_MANIFEST_ROWS = "no rows in the current manifest"


@dataclass(frozen=True)
class ShardPass:
    name: str  # the recipe's pass name
    asset_key: dg.AssetKey
    output: Callable[[HomeLayout, str], Path]


STATISTICS = ShardPass("statistics", dg.AssetKey("attention_statistics"), lambda layout, key: layout.shard_parquet(key))
ROLLOUT = ShardPass("rollout", dg.AssetKey("rollout_statistics"), lambda layout, key: layout.rollout_parquet(key))
ABLATION = ShardPass("ablation", dg.AssetKey("ablation_statistics"), lambda layout, key: layout.ablation_parquet(key))
GEOLOCATION = ShardPass("geolocation", dg.AssetKey("geolocation_predictions"),
                        lambda layout, key: layout.geolocation_parquet(key))
SHARD_PASSES: tuple[ShardPass, ...] = (STATISTICS, ROLLOUT, ABLATION, GEOLOCATION)


class CurrentState:
    """The current recipes, image sets and recorded records, read once for one decision."""

    def __init__(self, layout: HomeLayout, settings: RecipeSettings | None = None):
        self.layout = layout
        self.settings = settings or RecipeSettings.from_env()
        self._image_sets: dict[str, str] | None = None
        self._recipes: dict[str, Recipe] = {}
        self._records: dict[tuple[str, str], ShardRecord | None] = {}

    @classmethod
    def from_env(cls) -> "CurrentState":
        from attn_assets.settings import Settings

        return cls(HomeLayout(Settings.from_env().home))

    @property
    def image_sets(self) -> dict[str, str]:
        if self._image_sets is None:
            self._image_sets = current_image_sets(self.layout.images_parquet)
        return self._image_sets

    def record(self, shard_pass: ShardPass, key: str) -> ShardRecord | None:
        if (shard_pass.name, key) not in self._records:
            self._records[(shard_pass.name, key)] = read_record(shard_pass.output(self.layout, key))
        return self._records[(shard_pass.name, key)]

    def recipe(self, shard_pass: ShardPass, key: str | None = None) -> Recipe:
        """The current recipe of a pass; geolocation's depends on the shard (its embeddings' statistics file)."""
        if shard_pass is GEOLOCATION:
            return self.settings.recipe("geolocation", self.record(STATISTICS, key) if key else None)
        if shard_pass.name not in self._recipes:
            self._recipes[shard_pass.name] = self.settings.recipe(shard_pass.name)
        return self._recipes[shard_pass.name]

    def reason(self, shard_pass: ShardPass, key: str) -> str | None:
        """Why the pass's file for ``key`` does not hold current results (None: it does)."""
        if key not in self.image_sets:
            return NO_MANIFEST_ROWS
        if shard_pass is GEOLOCATION:
            upstream = self.reason(STATISTICS, key)
            if upstream is not None:
                return f"statistics not current ({upstream})"
        if not shard_pass.output(self.layout, key).exists():
            return NOT_COMPUTED
        return stale_reason(self.record(shard_pass, key), self.recipe(shard_pass, key), self.image_sets[key])


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
    status = instance.get_status_by_partition(shard_pass.asset_key, keys, shard_partitions) or {}
    upstream = (instance.get_status_by_partition(STATISTICS.asset_key, keys, shard_partitions) or {}
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


def classify_outputs(
    shard_pass: ShardPass, keys: Iterable[str], state: CurrentState
) -> tuple[dict[str, Path], dict[str, str]]:
    """Split the shards' existing output files into current ones {key: path} (to load) and excluded ones
    {key: reason} (to leave out of every table). Shards never computed are in neither."""
    current: dict[str, Path] = {}
    excluded: dict[str, str] = {}
    for key in keys:
        path = shard_pass.output(state.layout, key)
        if not path.exists():
            continue
        reason = state.reason(shard_pass, key)
        if reason is None:
            current[key] = path
        else:
            excluded[key] = reason
    return current, excluded


def excluded_metadata(excluded: dict[str, str]) -> dict:
    """Metadata of a load: the shard files left out of the tables and why."""
    table = "\n".join(f"| {key} | {reason} |" for key, reason in sorted(excluded.items())[:50])
    return {
        "excluded_shards": dg.MetadataValue.int(len(excluded)),
        "excluded_shards_detail": dg.MetadataValue.md(
            f"| shard | left out because |\n|---|---|\n{table}" if excluded else "_none_"),
        **({"excluded_summary": dg.MetadataValue.text(summarize_reasons(excluded))} if excluded else {}),
    }


def recipe_metadata(record: ShardRecord) -> dict:
    """Materialization metadata of one partition: what produced it."""
    return {
        "model_key": dg.MetadataValue.text(record.model_key),
        "recipe_fingerprint": dg.MetadataValue.text(record.fingerprint),
        "image_set": dg.MetadataValue.text(record.image_set),
        "recipe": dg.MetadataValue.md(recipe_markdown(record)),
    }


def run_data_version(records: Sequence[ShardRecord]) -> dg.DataVersion:
    """Data version of a shard run: new for every write (the records' tokens), so the UI marks what reads
    the shards stale after a recompute. One version per run: Dagster takes one for all its partitions."""
    return dg.DataVersion(digest(*sorted(f"{r.fingerprint}:{r.image_set}:{r.token}" for r in records)))


def with_recipe_code_versions(defs: dg.Definitions, settings: RecipeSettings | None = None) -> dg.Definitions:
    """``defs`` with the shard passes' code versions computed from the settings now (``attn-assets
    materialize`` may run after the environment changed in the same process; a code location computes them
    when it loads)."""
    settings = settings or RecipeSettings.from_env()
    versions = {p.asset_key: settings.recipe(p.name).code_version for p in SHARD_PASSES}

    def apply(spec: dg.AssetSpec) -> dg.AssetSpec:
        return spec.replace_attributes(code_version=versions[spec.key]) if spec.key in versions else spec

    assets = [asset.map_asset_specs(apply)
              if isinstance(asset, dg.AssetsDefinition) and set(asset.keys) & set(versions) else asset
              for asset in defs.assets or ()]
    return dg.Definitions(assets=assets, asset_checks=defs.asset_checks, jobs=defs.jobs, schedules=defs.schedules,
                          sensors=defs.sensors, resources=defs.resources, executor=defs.executor,
                          loggers=defs.loggers, metadata=defs.metadata)


def run_state(pipeline, attention_model=None, geolocation_model=None) -> CurrentState:
    """The current state as a run sees it: the resources' settings (the rest from the environment)."""
    from dataclasses import replace

    changes: dict[str, object] = {}
    if attention_model is not None:
        changes.update(model=attention_model.model, precision=attention_model.precision, device=attention_model.device)
    if geolocation_model is not None:
        changes.update(plonk_model=geolocation_model.plonk_model, plonk_steps=geolocation_model.num_steps,
                       plonk_samples=geolocation_model.num_samples, plonk_seed=geolocation_model.seed,
                       plonk_cfg=geolocation_model.cfg)
    return CurrentState(pipeline.layout, replace(RecipeSettings.from_env(), **changes))

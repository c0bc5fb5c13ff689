"""The Dagster side of the per-shard passes: the asset that runs each pass, and the metadata, data versions and
code versions their materializations carry.

Whether a pass's file for a shard holds current results is decided without Dagster, in ``passes/current.py``
(``CurrentState``); which shards need a run is decided in ``defs/needs_run.py``.
"""

from __future__ import annotations

from collections.abc import Sequence

import dagster as dg

from attn_assets.passes.current import SHARD_PASSES, CurrentState, ShardPass
from attn_assets.passes.recipe import ShardRecord, digest, pass_recipe, recipe_markdown, summarize_reasons
from attn_assets.settings import Settings


def asset_key(shard_pass: ShardPass) -> dg.AssetKey:
    """The Dagster asset that runs ``shard_pass``."""
    return dg.AssetKey(shard_pass.asset)


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
        "model_spec": dg.MetadataValue.text(record.model_key),
        "recipe_fingerprint": dg.MetadataValue.text(record.fingerprint),
        "image_set": dg.MetadataValue.text(record.image_set),
        "recipe": dg.MetadataValue.md(recipe_markdown(record)),
    }


def run_data_version(records: Sequence[ShardRecord]) -> dg.DataVersion:
    """Data version of a shard run: new for every write (the records' tokens), so the UI marks what reads
    the shards stale after a recompute. One version per run: Dagster takes one for all its partitions."""
    return dg.DataVersion(digest(*sorted(f"{r.fingerprint}:{r.image_set}:{r.token}" for r in records)))


def with_recipe_code_versions(defs: dg.Definitions, settings: Settings | None = None) -> dg.Definitions:
    """``defs`` with the shard passes' code versions computed from the settings now (``attn-assets
    materialize`` may run after the environment changed in the same process; a code location computes them
    when it loads)."""
    settings = settings or Settings.from_env()
    versions = {asset_key(p): pass_recipe(settings, p.name).code_version for p in SHARD_PASSES}

    def apply(spec: dg.AssetSpec) -> dg.AssetSpec:
        return spec.replace_attributes(code_version=versions[spec.key]) if spec.key in versions else spec

    # the defs folder loader lists an asset once per module that names it (the same object): map each once
    unique = list({id(asset): asset for asset in defs.assets or ()}.values())
    assets = [asset.map_asset_specs(apply)
              if isinstance(asset, dg.AssetsDefinition) and set(asset.keys) & set(versions) else asset
              for asset in unique]
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
    return CurrentState(pipeline.layout, replace(Settings.from_env(), **changes))

"""The shard passes (their recipe name, their asset, their output file) and whether a pass's file for a
shard holds current results: one answer for the sensors, the schedule, ``attn-assets materialize`` and the
warehouse loaders. No Dagster here (the Dagster side: Dagster's run status in ``defs/needs_run.py``, asset
keys, metadata and code versions in ``defs/shard_passes.py``).

A pass's file for a shard is CURRENT when the shard has rows in the current manifest, the file exists and
its recipe record names the current model key, recipe fingerprint and image set (``passes/recipe.py``).
Geolocation additionally needs the shard's statistics to be current (its input is their embeddings), and
is stale when the statistics file was rewritten since (the record's token).

The same comparison decides what the warehouse loads: only current files; the others are left out (and
counted), so a table never mixes two recipes.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from attn_assets.passes.recipe import Recipe, ShardRecord, current_image_sets, pass_recipe, read_record, stale_reason
from attn_assets.settings import Settings
from attn_assets.storage.layout import HomeLayout

NOT_COMPUTED = "not computed"
NO_MANIFEST_ROWS = "no rows in the current manifest"


@dataclass(frozen=True)
class ShardPass:
    name: str  # the recipe's pass name
    asset: str  # the partitioned asset that runs the pass (its Dagster asset key, as a string)
    output: Callable[[HomeLayout, str], Path]


STATISTICS = ShardPass("statistics", "attention_statistics", lambda layout, key: layout.shard_parquet(key))
ROLLOUT = ShardPass("rollout", "rollout_statistics", lambda layout, key: layout.rollout_parquet(key))
ABLATION = ShardPass("ablation", "ablation_statistics", lambda layout, key: layout.ablation_parquet(key))
GEOLOCATION = ShardPass("geolocation", "geolocation_predictions", lambda layout, key: layout.geolocation_parquet(key))
COUNTRY_RELEVANCE = ShardPass("country_relevance", "country_predictions",
                              lambda layout, key: layout.country_relevance_parquet(key))
SHARD_PASSES: tuple[ShardPass, ...] = (STATISTICS, ROLLOUT, ABLATION, GEOLOCATION)
MODEL_STATISTICS_ASSET = "model_statistics"


def model_statistics_pass(model_key: str) -> ShardPass:
    """The statistics pass of one encoder of ATTN_ASSETS_MODELS: ``models/<model_key>/shards/<shard>.parquet``."""
    return ShardPass("statistics", MODEL_STATISTICS_ASSET,
                     lambda layout, key: layout.model_shard_parquet(model_key, key))


def model_state(layout: HomeLayout, settings: Settings, spec: str) -> CurrentState:
    """The current state of one listed encoder: the same rules as the default model's, with its spec."""
    return CurrentState(layout, settings.with_overrides(model=spec))


class CurrentState:
    """The current recipes, image sets and recorded records, read once for one decision."""

    def __init__(self, layout: HomeLayout, settings: Settings | None = None):
        self.layout = layout
        self.settings = settings or Settings.from_env()
        self._image_sets: dict[str, str] | None = None
        self._recipes: dict[str, Recipe] = {}
        self._records: dict[tuple[str, str], ShardRecord | None] = {}

    @classmethod
    def from_env(cls) -> "CurrentState":
        settings = Settings.from_env()
        return cls(HomeLayout(settings.home), settings)

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
            return pass_recipe(self.settings, "geolocation", self.record(STATISTICS, key) if key else None)
        if shard_pass.name not in self._recipes:
            self._recipes[shard_pass.name] = pass_recipe(self.settings, shard_pass.name)
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

"""What a pass did to one shard: one record for every pass (statistics, rollout, ablation, geolocation)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from attn_assets.passes.recipe import ShardRecord


@dataclass(frozen=True)
class ShardOutcome:
    shard_key: str
    images: int  # the images the pass read (ablation: those in its sample; geolocation: the computed embeddings)
    computed: int  # images with results in the written file
    failed: int  # images that could not be read (logged; the statistics file keeps their reasons)
    seconds: float
    path: Path  # the file written, atomically
    record: ShardRecord  # the recipe and image set stored with the file
    details: Mapping[str, object] = field(default_factory=dict)  # the pass's own counts, for the run's metadata

    @property
    def images_per_second(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else float("nan")

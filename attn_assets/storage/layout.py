"""Where everything lives under ATTN_ASSETS_HOME (a contract: see README "Outputs")."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class HomeLayout:
    home: Path

    @property
    def manifest_dir(self) -> Path:
        return self.home / "manifest"

    @property
    def images_parquet(self) -> Path:
        """Validated manifest rows with their shard (every manifest column kept)."""
        return self.manifest_dir / "images.parquet"

    @property
    def rejections_parquet(self) -> Path:
        return self.manifest_dir / "rejections.parquet"

    @property
    def shard_assignments_parquet(self) -> Path:
        """Append-only image_id -> shard_key map; an image keeps its shard forever."""
        return self.manifest_dir / "shard_assignments.parquet"

    @property
    def shards_dir(self) -> Path:
        return self.home / "shards"

    def shard_parquet(self, shard_key: str) -> Path:
        return self.shards_dir / f"{shard_key}.parquet"

    @property
    def models_dir(self) -> Path:
        """One folder per encoder of ATTN_ASSETS_MODELS (and per removed one, until deleted): ``models/<model_key>/``."""
        return self.home / "models"

    def model_shards_dir(self, model_key: str) -> Path:
        return self.models_dir / model_key / "shards"

    def model_shard_parquet(self, model_key: str, shard_key: str) -> Path:
        """One model's statistics of one shard (the same file layout as ``shard_parquet``)."""
        return self.model_shards_dir(model_key) / f"{shard_key}.parquet"

    @property
    def geolocation_dir(self) -> Path:
        """PLONK predictions, one Parquet file per shard."""
        return self.home / "geolocation"

    def geolocation_parquet(self, shard_key: str) -> Path:
        return self.geolocation_dir / f"{shard_key}.parquet"

    @property
    def rollout_dir(self) -> Path:
        """Attention rollout (maps and metrics), one Parquet file per shard."""
        return self.home / "analyses" / "rollout"

    def rollout_parquet(self, shard_key: str) -> Path:
        return self.rollout_dir / f"{shard_key}.parquet"

    @property
    def ablation_dir(self) -> Path:
        """Top-k vs random-k masking of the sampled images, one Parquet file per shard."""
        return self.home / "analyses" / "ablation"

    def ablation_parquet(self, shard_key: str) -> Path:
        return self.ablation_dir / f"{shard_key}.parquet"

    @property
    def country_relevance_dir(self) -> Path:
        """Zero-shot country predictions, relevance maps and faithfulness curves, one Parquet file per shard."""
        return self.home / "analyses" / "country_relevance"

    def country_relevance_parquet(self, shard_key: str) -> Path:
        return self.country_relevance_dir / f"{shard_key}.parquet"

    @property
    def cross_model_dir(self) -> Path:
        """Per-shard cross-model agreement files: <shard>.parquet."""
        return self.home / "analyses" / "cross_model"

    def cross_model_parquet(self, shard_key: str) -> Path:
        return self.cross_model_dir / f"{shard_key}.parquet"

    def retired_cross_model_maps(self, shard_key: str) -> Path:
        """<shard>.maps.parquet: each compared model's maps, written while cross_model ran the models itself
        (before models/<key>/shards held them); nothing reads it, and it is removed when its shard is next compared
        or dropped."""
        return self.cross_model_dir / f"{shard_key}.maps.parquet"

    @property
    def warehouse_path(self) -> Path:
        return self.home / "warehouse" / "attention.duckdb"

    @property
    def analysis_dir(self) -> Path:
        """The seed's output folder layout."""
        return self.home / "attention_analysis"

    @property
    def analyses_dir(self) -> Path:
        """Figures of the analyses beyond the seed (attention_analysis/analyses/)."""
        return self.analysis_dir / "analyses"

    @property
    def statistics_csv(self) -> Path:
        return self.analysis_dir / "attention_statistics.csv"

    @property
    def visualizations_dir(self) -> Path:
        return self.analysis_dir / "visualizations"

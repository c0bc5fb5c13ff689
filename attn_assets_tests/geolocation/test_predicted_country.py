"""A predicted point gets its country from the manifest's resolver: NULL at sea, counted as a wrong country.

Runs without diff-plonk: a stand-in geolocator returns fixed coordinates, the shard step does the rest.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from attn_assets.core.geolocation import Predictions, SamplingConfig
from attn_assets.passes.geolocation import compute_geolocation_shard
from attn_assets.storage.layout import HomeLayout
from attn_assets.storage.parquet import build_shard_results, write_table_atomic
from attn_assets.storage.schema import GEOLOCATION_ACCURACY, GEOLOCATION_PREDICTIONS
from attn_assets.storage.warehouse import Warehouse

METRICS = ("attention_entropy", "attention_max", "attention_concentration_top10", "attention_concentration_top25",
           "num_high_attention_patches", "attention_spread")

# image id, true country, true (lat, lon), predicted (lat, lon), expected predicted country
CASES = [
    ("nice", "FR", (43.70, 7.27), (43.6947, 7.2636), "FR"),  # on the beach
    ("sea", "BR", (-15.79, -47.88), (0.0, -30.0), None),  # mid-Atlantic: reverse_geocoder said Brazil
    ("pole", "NO", (78.22, 15.65), (90.0, 0.0), None),  # North Pole: reverse_geocoder said Svalbard
    ("taveuni", "FJ", (-16.80, 179.99), (-16.80, -180.0), "FJ"),  # reverse_geocoder said Wallis and Futuna
]


@dataclass
class FixedGeolocator:
    """Stands in for PlonkGeolocator: predicts the given coordinates for each image id."""

    points: dict[str, tuple[float, float]]
    repo: str = "stand-in"
    sampling: SamplingConfig = SamplingConfig(num_steps=1, num_samples=1)

    def predict(self, embeddings: np.ndarray, image_ids) -> Predictions:
        lat = np.array([self.points[i][0] for i in image_ids], dtype=np.float64)
        lon = np.array([self.points[i][1] for i in image_ids], dtype=np.float64)
        return Predictions(lat, lon, np.zeros(len(lat)), lat[:, None], lon[:, None])


def test_predictions_at_sea_have_no_country_and_count_as_wrong(tmp_path):
    layout = HomeLayout(tmp_path)
    shard = "shard-00000"
    ids = [c[0] for c in CASES]
    n = len(ids)
    layout.shard_parquet(shard).parent.mkdir(parents=True, exist_ok=True)
    write_table_atomic(build_shard_results(
        shard_key=shard, image_ids=ids, paths=[f"{i}.jpg" for i in ids], countries=[c[1] for c in CASES],
        metrics={m: np.zeros(n) for m in METRICS}, cls_maps=np.zeros((n, 2, 2), np.float32),
        cls_embeddings=np.zeros((n, 8), np.float32), failures=[], model_spec="random:tiny", precision="fp32",
        computed_at=datetime(2026, 11, 30)), layout.shard_parquet(shard))
    layout.images_parquet.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({
        "image_id": ids, "shard_key": [shard] * n, "country": [c[1] for c in CASES],
        "latitude": [c[2][0] for c in CASES], "longitude": [c[2][1] for c in CASES]}), layout.images_parquet)

    geolocator = FixedGeolocator({c[0]: c[3] for c in CASES})
    outcome = compute_geolocation_shard(layout=layout, shard_key=shard, geolocator=geolocator,
                                        logger=logging.getLogger("test"))
    got = pq.read_table(outcome.path, columns=["image_id", "predicted_country"]).to_pylist()
    assert {r["image_id"]: r["predicted_country"] for r in got} == {c[0]: c[4] for c in CASES}  # None = NULL

    warehouse = Warehouse(tmp_path / "attention.duckdb")
    warehouse.replace_analysis_shard(GEOLOCATION_PREDICTIONS, shard, outcome.path)
    warehouse.refresh_geolocation_accuracy()
    table = warehouse.query(f'SELECT * FROM "{GEOLOCATION_ACCURACY.name}"')
    overall = table[table["scope"] == "overall"].iloc[0]
    assert overall["country_accuracy"] == pytest.approx(2 / 4)  # the two predictions at sea are wrong

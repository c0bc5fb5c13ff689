"""geolocation_accuracy in DuckDB against a hand-computed example, and the shard step's bad inputs."""

from __future__ import annotations

import math
from datetime import datetime

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from attn_assets.core.geolocation import geoscore
from attn_assets.passes.geolocation import compute_geolocation_shard
from attn_assets.storage.layout import HomeLayout
from attn_assets.storage.parquet import read_cls_embeddings
from attn_assets.storage.schema import GEOLOCATION_ACCURACY, GEOLOCATION_PREDICTIONS
from attn_assets.storage.warehouse import Warehouse

# image, true country, predicted country, error km (None: no true coordinates)
ROWS = [
    ("a", "FR", "FR", 0.5),
    ("b", "FR", "DE", 30.0),
    ("c", "DE", "DE", 800.0),
    ("d", "DE", "US", 3000.0),
    ("e", None, "FR", 10.0),
    ("f", "FR", "FR", None),
]


def predictions_table(shard_key: str) -> pa.Table:
    n = len(ROWS)
    errors = [r[3] for r in ROWS]
    columns = {
        "image_id": [r[0] for r in ROWS], "shard_key": [shard_key] * n, "country": [r[1] for r in ROWS],
        "latitude": [None if e is None else 0.0 for e in errors], "longitude": [None if e is None else 0.0 for e in errors],
        "predicted_latitude": [1.0] * n, "predicted_longitude": [1.0] * n, "predicted_country": [r[2] for r in ROWS],
        "error_km": errors, "geoscore": [None if e is None else float(geoscore(e)) for e in errors],
        "prediction_spread_km": [0.0] * n, "plonk_model": ["tiny"] * n, "num_steps": [10] * n, "num_samples": [1] * n,
        "sampling_seed": [0] * n, "cfg_rate": [0.0] * n, "embedding_model_spec": ["random:tiny"] * n,
        "embedding_precision": ["fp32"] * n, "computed_at": [datetime(2026, 11, 29)] * n,
    }
    return pa.table(columns, schema=GEOLOCATION_PREDICTIONS.arrow_schema())


def test_accuracy_table_matches_hand_computation(tmp_path):
    path = tmp_path / "s0.parquet"
    pq.write_table(predictions_table("s0"), path)
    warehouse = Warehouse(tmp_path / "attention.duckdb")
    with warehouse.writer() as con:
        con.execute("INSERT INTO images (image_id, shard_key, path, abs_path, country, country_name) VALUES "
                    "('a', 's0', 'a.jpg', '/a.jpg', 'FR', 'France'), ('c', 's0', 'c.jpg', '/c.jpg', 'DE', 'Germany')")
    assert warehouse.replace_analysis_shard(GEOLOCATION_PREDICTIONS, "s0", path) == 6
    assert warehouse.refresh_geolocation_accuracy() == 4  # overall, FR, DE, unknown (NULL)
    assert warehouse.replace_analysis_shard(GEOLOCATION_PREDICTIONS, "s0", path) == 6  # a re-run never duplicates
    assert warehouse.refresh_geolocation_accuracy() == 4
    table = warehouse.query(f'SELECT * FROM "{GEOLOCATION_ACCURACY.name}"')
    overall = table[table["scope"] == "overall"].iloc[0]
    assert overall["images"] == 5 and pd.isna(overall["country"])
    assert overall["mean_error_km"] == pytest.approx((0.5 + 30 + 800 + 3000 + 10) / 5)
    assert overall["median_error_km"] == pytest.approx(30.0)
    assert overall["geoscore"] == pytest.approx(np.mean(geoscore([0.5, 30, 800, 3000, 10])))
    assert [overall[f"accuracy_{r}km"] for r in (1, 25, 200, 750, 2500)] == pytest.approx([0.2, 0.4, 0.6, 0.6, 0.8])
    assert overall["country_accuracy"] == pytest.approx(2 / 4)  # e has no true country: not counted
    countries = table[table["scope"] == "country"]
    (unknown,) = (row for _, row in countries.iterrows() if pd.isna(row["country"]))
    by_country = countries.dropna(subset=["country"]).set_index("country")
    fr, de = by_country.loc["FR"], by_country.loc["DE"]
    assert fr["images"] == 2 and fr["country_name"] == "France"
    assert fr["mean_error_km"] == pytest.approx(15.25) and fr["median_error_km"] == pytest.approx(15.25)
    assert [fr[f"accuracy_{r}km"] for r in (1, 25, 200, 750, 2500)] == pytest.approx([0.5, 0.5, 1, 1, 1])
    assert fr["country_accuracy"] == pytest.approx(0.5)
    assert de["images"] == 2 and de["country_name"] == "Germany"
    assert [de[f"accuracy_{r}km"] for r in (1, 25, 200, 750, 2500)] == pytest.approx([0, 0, 0, 0, 0.5])
    assert de["mean_error_km"] == pytest.approx(1900.0)
    assert unknown["images"] == 1 and unknown["country_name"] == "unknown" and math.isnan(unknown["country_accuracy"])


def _shard_without_embeddings(path):
    pq.write_table(pa.table({"image_id": ["x"], "status": ["ok"], "model_spec": ["random:tiny"],
                             "precision": ["fp32"]}), path)


def test_shard_from_before_embeddings_names_the_partition(tmp_path):
    layout = HomeLayout(tmp_path)
    layout.shards_dir.mkdir(parents=True)
    _shard_without_embeddings(layout.shard_parquet("shard-00000"))
    with pytest.raises(ValueError, match=r"before CLS embeddings were stored.*attention_statistics for partition shard-00000"):
        compute_geolocation_shard(layout=layout, shard_key="shard-00000", geolocator=None, logger=None)
    assert not layout.geolocation_parquet("shard-00000").exists()


def test_missing_shard_file_says_what_to_materialize(tmp_path):
    with pytest.raises(FileNotFoundError, match="materialize attention_statistics for partition shard-00003 first"):
        compute_geolocation_shard(layout=HomeLayout(tmp_path), shard_key="shard-00003", geolocator=None, logger=None)


def test_embeddings_roundtrip_as_float16(tmp_path):
    from attn_assets.storage.parquet import build_shard_results, write_table_atomic

    rng = np.random.default_rng(0)
    embeddings = rng.normal(size=(3, 8)).astype(np.float32)
    table = build_shard_results(
        shard_key="s", image_ids=["a", "b", "c"], paths=["a", "b", "c"], countries=["FR", None, "NA"],
        metrics={m: np.zeros(3) for m in ("attention_entropy", "attention_max", "attention_concentration_top10",
                                            "attention_concentration_top25", "num_high_attention_patches",
                                            "attention_spread")},
        cls_maps=np.zeros((3, 2, 2), np.float32), cls_embeddings=embeddings,
        failures=[("z", "z.jpg", "FR", "unreadable")], model_spec="random:tiny", precision="fp32",
        computed_at=datetime(2026, 11, 29))
    path = write_table_atomic(table, tmp_path / "s.parquet")
    ids, back = read_cls_embeddings(path)
    assert ids == ["a", "b", "c"] and back.dtype == np.float16  # the failed image has no embedding
    np.testing.assert_array_equal(back, embeddings.astype(np.float16))
    assert np.abs(back.astype(np.float32) - embeddings).max() < 2e-3


def test_checks_catch_stale_and_impossible_predictions(tmp_path):
    from attn_assets.defs.geolocation.assets import geolocation_matches_statistics, geolocation_predictions_valid
    from attn_assets.resources import WarehouseResource

    layout = HomeLayout(tmp_path)
    path = tmp_path / "s0.parquet"
    table = predictions_table("s0")
    pq.write_table(table, path)
    warehouse = Warehouse(layout.warehouse_path)
    warehouse.replace_analysis_shard(GEOLOCATION_PREDICTIONS, "s0", path)
    resource = WarehouseResource(home=str(tmp_path))
    stale = geolocation_matches_statistics(warehouse=resource)
    assert not stale.passed and stale.metadata["stale_shards"].value == 1  # no statistics rows at all
    assert geolocation_predictions_valid(warehouse=resource).passed
    bad = table.set_column(table.schema.get_field_index("predicted_latitude"), "predicted_latitude",
                           pa.array([95.0] + [1.0] * (len(ROWS) - 1)))
    pq.write_table(bad, path)
    warehouse.replace_analysis_shard(GEOLOCATION_PREDICTIONS, "s0", path)
    result = geolocation_predictions_valid(warehouse=resource)
    assert not result.passed and result.metadata["off_globe"].value == 1


def test_figures_draw_without_predictions(tmp_path):
    from attn_assets.figures.geolocation import location_caption, render_error_analysis, render_prediction_map
    from attn_assets.metric_names import METRIC_NAMES

    empty = pd.DataFrame(columns=["image_id", "error_km", "latitude", "longitude", "predicted_latitude",
                                  "predicted_longitude", *METRIC_NAMES])
    assert render_error_analysis(empty, pd.DataFrame(), METRIC_NAMES, tmp_path / "e.png").stat().st_size > 5_000
    assert render_prediction_map(empty, tmp_path / "m.png").stat().st_size > 5_000
    caption = location_caption({"latitude": 48.8566, "longitude": 2.3522, "country": "FR", "predicted_latitude": 51.5074,
                                "predicted_longitude": -0.1278, "predicted_country": "GB", "error_km": 343.56})
    assert caption == "true 48.857, 2.352 (FR) -> predicted 51.507, -0.128 (GB): 343.6 km"
    assert location_caption({"latitude": None, "predicted_latitude": 1.0, "predicted_longitude": 2.0,
                             "error_km": None}).endswith("no true location")


def test_corrected_manifest_rescoring_and_missing_predicted_country(tmp_path):
    """A corrected true location changes the error, not the prediction; no predicted country counts as wrong."""
    from attn_assets.core.geolocation import haversine_km

    table = predictions_table("s0")
    table = table.set_column(table.schema.get_field_index("predicted_country"), "predicted_country",
                             pa.array([None, "DE", "DE", "US", "FR", "FR"]))  # a: reverse geocoding found nothing
    path = tmp_path / "s0.parquet"
    pq.write_table(table, path)
    warehouse = Warehouse(tmp_path / "attention.duckdb")
    with warehouse.writer() as con:  # the manifest now says image a is in London, c lost its coordinates
        con.execute("INSERT INTO images (image_id, shard_key, path, abs_path, country, latitude, longitude) VALUES "
                    "('a', 's0', 'a', '/a', 'GB', 51.5074, -0.1278), ('b', 's0', 'b', '/b', 'FR', 0.0, 0.0), "
                    "('c', 's0', 'c', '/c', 'DE', NULL, NULL)")
    warehouse.replace_analysis_shard(GEOLOCATION_PREDICTIONS, "s0", path)

    def score(lat, lon, plat, plon):
        error = haversine_km(lat, lon, plat, plon)
        return error, geoscore(error)

    assert warehouse.refresh_geolocation_truth(score) == 2  # a and c; b is unchanged
    assert warehouse.refresh_geolocation_truth(score) == 0
    rows = warehouse.query("SELECT * FROM geolocation_predictions ORDER BY image_id").set_index("image_id")
    assert rows.loc["a", "country"] == "GB" and rows.loc["a", "latitude"] == 51.5074
    assert rows.loc["a", "error_km"] == pytest.approx(float(haversine_km(51.5074, -0.1278, 1.0, 1.0)))
    assert rows.loc["a", "geoscore"] == pytest.approx(float(geoscore(rows.loc["a", "error_km"])))
    assert pd.isna(rows.loc["c", "error_km"]) and pd.isna(rows.loc["c", "geoscore"])
    assert rows.loc["b", "error_km"] == 30.0  # untouched
    warehouse.refresh_geolocation_accuracy()
    overall = warehouse.query("SELECT * FROM geolocation_accuracy WHERE scope = 'overall'").iloc[0]
    # with truth: a (GB, predicted nothing: wrong), b (FR vs DE: wrong), d (DE vs US: wrong), e (no true country)
    assert overall["images"] == 4 and overall["country_accuracy"] == pytest.approx(0.0)

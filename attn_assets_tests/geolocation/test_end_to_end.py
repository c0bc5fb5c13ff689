"""The geolocation group materialized for real with the tiny PLONK, checked against diff-plonk and by hand."""

from __future__ import annotations

import dagster as dg
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from attn_assets.core.error_analysis import error_analysis
from attn_assets.core.geolocation import PlonkGeolocator, SamplingConfig, geoscore, haversine_km, noise_for
from attn_assets.core.preprocess import load_rgb
from attn_assets.orchestration import materialize_all
from attn_assets.storage.layout import HomeLayout
from attn_assets.storage.parquet import read_cls_embeddings
from attn_assets.metric_names import METRIC_NAMES
from attn_assets.storage.warehouse import Warehouse
from attn_assets_tests.defs.conftest import GOOD_ROWS
from attn_assets_tests.geolocation.conftest import PLONK_REPO, requires_plonk

pytestmark = [pytest.mark.slow, requires_plonk]
STEPS = 10


def test_geolocation_group_end_to_end(pipeline_env, instance, offline_hub, monkeypatch):
    monkeypatch.setenv("ATTN_ASSETS_MODEL", f"plonk:{PLONK_REPO}")  # the encoder inside PlonkPipeline
    monkeypatch.setenv("ATTN_ASSETS_PLONK_STEPS", str(STEPS))
    monkeypatch.setenv("ATTN_ASSETS_PLONK_SAMPLES", "1")
    monkeypatch.setenv("ATTN_ASSETS_PLONK_SEED", "11")
    summary = materialize_all(instance=instance)
    assert summary.ok, "\n".join(summary.lines)
    assert sum(line.startswith("geolocation_predictions[") and ": ok" in line for line in summary.lines) == 3
    assert any(line.startswith("geolocation accuracy") and ": ok" in line for line in summary.lines)

    layout = HomeLayout(pipeline_env.home)
    store = Warehouse(layout.warehouse_path)
    predictions = store.query("SELECT * FROM geolocation_predictions ORDER BY image_id").set_index("image_id")
    statistics = store.query("SELECT image_id FROM attention_statistics ORDER BY image_id")
    assert list(predictions.index) == list(statistics["image_id"]) == sorted(pipeline_env.image_ids)
    assert set(predictions["embedding_model_spec"]) == {f"plonk:{PLONK_REPO}"}
    assert set(predictions["num_steps"]) == {STEPS} and set(predictions["sampling_seed"]) == {11}

    # 1. predictions: the network on the stored float16 embeddings, and close to PlonkPipeline on the photos
    geolocator = PlonkGeolocator(PLONK_REPO, sampling=SamplingConfig(num_steps=STEPS, num_samples=1, seed=11))
    for shard_key in sorted(set(predictions["shard_key"])):
        ids, embeddings = read_cls_embeddings(layout.shard_parquet(shard_key))
        again = geolocator.predict(embeddings, ids)
        np.testing.assert_allclose(predictions.loc[ids, "predicted_latitude"], again.latitude, atol=1e-9)
        np.testing.assert_allclose(predictions.loc[ids, "predicted_longitude"], again.longitude, atol=1e-9)
    from plonk import PlonkPipeline

    ids = sorted(pipeline_env.image_ids)
    photos = [load_rgb(pipeline_env.image_path(i)) for i in ids]
    reference = PlonkPipeline(PLONK_REPO)(photos, x_N=noise_for(ids, 1, seed=11), num_steps=STEPS)
    ours = predictions.loc[ids, ["predicted_latitude", "predicted_longitude"]].to_numpy()
    assert np.abs(ours - reference).max() < 0.05  # float16 storage of the embedding: well under 0.05 degree

    # 2. errors against the manifest's coordinates
    truth = {row[0]: (row[1], row[2]) for row in GOOD_ROWS}
    lat = np.array([truth[i][0] for i in ids])
    lon = np.array([truth[i][1] for i in ids])
    np.testing.assert_allclose(predictions.loc[ids, "latitude"], lat)
    expected_error = haversine_km(lat, lon, ours[:, 0], ours[:, 1])
    np.testing.assert_allclose(predictions.loc[ids, "error_km"], expected_error, rtol=1e-12)
    np.testing.assert_allclose(predictions.loc[ids, "geoscore"], geoscore(expected_error), rtol=1e-12)

    # 3. accuracy table equals pandas on the same rows
    accuracy = store.query("SELECT * FROM geolocation_accuracy")
    overall = accuracy[accuracy["scope"] == "overall"].iloc[0]
    assert overall["images"] == len(ids)
    assert overall["mean_error_km"] == pytest.approx(expected_error.mean())
    assert overall["median_error_km"] == pytest.approx(np.median(expected_error))
    for r in (1, 25, 200, 750, 2500):
        assert overall[f"accuracy_{r}km"] == pytest.approx((expected_error < r).mean())
    frame = predictions.reset_index()
    by_country = frame.groupby("country")["error_km"]
    countries = accuracy[accuracy["scope"] == "country"].set_index("country")
    assert countries["images"].to_dict() == by_country.size().to_dict()
    np.testing.assert_allclose(countries["mean_error_km"].sort_index(), by_country.mean().sort_index())
    assert countries.loc["NA", "country_name"] == "Namibia"

    # 4. failure analysis equals the core's statistics on the joined rows
    joined = store.query(
        "SELECT g.image_id, g.error_km, " + ", ".join(f"s.{m}" for m in METRIC_NAMES)
        + " FROM geolocation_predictions g JOIN attention_statistics s USING (image_id) ORDER BY image_id")
    expected_analysis = error_analysis(joined, METRIC_NAMES).set_index("metric")
    analysis = store.query("SELECT * FROM geolocation_error_analysis").set_index("metric").loc[expected_analysis.index]
    np.testing.assert_allclose(analysis["spearman_rho"], expected_analysis["spearman_rho"], equal_nan=True)
    np.testing.assert_allclose(analysis["worst_decile_mean"], expected_analysis["worst_decile_mean"])
    assert set(analysis["decile_images"]) == {1}  # 9 images: ceil(9 / 10)

    # 5. gallery of the worst predictions, captioned; figures
    gallery = layout.visualizations_dir / "worst_predictions"
    pngs = sorted(gallery.glob("*.png"))
    assert len(pngs) == 3  # ATTN_ASSETS_GALLERY_SIZE
    index = pd.read_csv(gallery / "index.csv", dtype={"image_id": str})
    worst = frame.sort_values(["error_km", "image_id"], ascending=[False, True]).head(3)
    assert list(index["image_id"]) == list(worst["image_id"])
    np.testing.assert_allclose(index["error_km"], worst["error_km"])
    assert {"predicted_latitude", "predicted_country", "geoscore"} <= set(index.columns)
    assert Image.open(pngs[0]).size[0] > 500
    for name in ("geolocation_map.png", "geolocation_error.png"):
        assert (layout.analysis_dir / "analyses" / name).stat().st_size > 10_000

    # 6. a second run recomputes nothing and duplicates nothing
    rerun = materialize_all(instance=instance)
    assert rerun.ok
    assert "geolocation_predictions: every shard up to date" in rerun.lines
    assert "geolocation summaries: up to date" in rerun.lines
    assert store.query("SELECT count(*) AS n FROM geolocation_predictions")["n"].iloc[0] == len(ids)
    evaluations = {
        key.name: instance.event_log_storage.get_latest_asset_check_execution_by_key([key])[key]
        for key in (dg.AssetCheckKey(dg.AssetKey("geolocation_accuracy"), "geolocation_predictions_valid"),
                    dg.AssetCheckKey(dg.AssetKey("geolocation_accuracy"), "geolocation_matches_statistics"))
    }
    assert all(e is not None and e.status.value == "SUCCEEDED" for e in evaluations.values()), evaluations

    # 7. the sensor: nothing to do now; once a shard's statistics are recomputed, it predicts that shard again
    from attn_assets.defs.sensors import geolocation_sensor

    assert isinstance(geolocation_sensor(dg.build_sensor_context(instance=instance)), dg.SkipReason)
    from attn_assets.definitions import build_definitions

    shard_key = sorted(set(predictions["shard_key"]))[0]
    assert build_definitions().resolve_job_def("attention_statistics_job").execute_in_process(
        instance=instance, partition_key=shard_key).success
    requests = geolocation_sensor(dg.build_sensor_context(instance=instance))
    assert [(r.job_name, r.partition_key) for r in requests] == [("geolocation_shards_job", shard_key)]

    # 8. that shard's prediction fails (an uncached PLONK model); another shard is predicted anew. The sensor
    #    neither re-requests the failed run key nor holds the summaries back because of it
    other = sorted(set(predictions["shard_key"]))[1]
    with monkeypatch.context() as patch:
        patch.setenv("ATTN_ASSETS_PLONK_MODEL", "nicolas-dufour/PLONK_OSV_5M_flow")
        failed = build_definitions().resolve_job_def("geolocation_shards_job").execute_in_process(
            instance=instance, partition_key=shard_key, raise_on_error=False,
            tags={"dagster/run_key": requests[0].run_key})
    assert not failed.success
    assert build_definitions().resolve_job_def("attention_statistics_job").execute_in_process(
        instance=instance, partition_key=other).success
    assert build_definitions().resolve_job_def("geolocation_shards_job").execute_in_process(
        instance=instance, partition_key=other).success
    request = geolocation_sensor(dg.build_sensor_context(instance=instance))
    assert isinstance(request, dg.RunRequest), request
    assert (request.job_name, request.partition_key) == ("geolocation_job", None)

    # 9. a corrected manifest (same images, one moved) rescores that image without predicting it again
    untouched = sorted(set(predictions["shard_key"]))[2]  # not recomputed in 7-8, so not predicted again now
    moved = sorted(predictions.index[predictions["shard_key"] == untouched])[0]
    manifest = pipeline_env.manifest.read_text(encoding="utf-8")
    row = next(line for line in manifest.splitlines() if line.startswith(moved))
    pipeline_env.manifest.write_text(manifest.replace(row, row.replace(
        f"{truth[moved][0]},{truth[moved][1]}", "-33.8688,151.2093")), encoding="utf-8")
    corrected = materialize_all(instance=instance)
    assert corrected.ok, "\n".join(corrected.lines)
    assert "geolocation_predictions: every shard up to date" in corrected.lines or all(
        "geolocation_predictions[" not in line or shard_key in line for line in corrected.lines)
    assert not any(f"geolocation_predictions[{untouched}]" in line for line in corrected.lines)
    import pyarrow.parquet as pq

    kept = pq.read_table(layout.geolocation_parquet(untouched), filters=[("image_id", "=", moved)]).to_pylist()[0]
    assert kept["latitude"] == truth[moved][0]  # the prediction file is as predicted; DuckDB was rescored
    row = store.query("SELECT * FROM geolocation_predictions WHERE image_id = ?", [moved]).iloc[0]
    assert (row["latitude"], row["longitude"]) == (-33.8688, 151.2093)
    assert row["error_km"] == pytest.approx(float(haversine_km(-33.8688, 151.2093, row["predicted_latitude"],
                                                               row["predicted_longitude"])))

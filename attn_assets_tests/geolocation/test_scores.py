"""Distances, scores and the failure-analysis statistics, checked against known values (no PLONK needed)."""

from __future__ import annotations

import math
import sys

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from attn_assets.core.error_analysis import decile_size, error_analysis
from attn_assets.core.geolocation import (
    EARTH_RADIUS_KM,
    SamplingConfig,
    accuracy_at,
    geoscore,
    haversine_km,
    import_plonk_pipe,
    noise_for,
    spherical_medoid,
)
from attn_assets.core.model import ModelLoadError

PARIS = (48.8566, 2.3522)
LONDON = (51.5074, -0.1278)


def test_paris_london_is_344_km():
    assert haversine_km(*PARIS, *LONDON) == pytest.approx(344.0, abs=1.0)
    assert haversine_km(*LONDON, *PARIS) == pytest.approx(float(haversine_km(*PARIS, *LONDON)), abs=1e-9)


def test_known_distances():
    assert haversine_km(10.0, 20.0, 10.0, 20.0) == 0.0
    assert haversine_km(0, 0, 0, 180) == pytest.approx(math.pi * EARTH_RADIUS_KM, rel=1e-12)  # antipodes
    assert haversine_km(90, 0, -90, 0) == pytest.approx(math.pi * EARTH_RADIUS_KM, rel=1e-12)
    assert haversine_km(0, 179.5, 0, -179.5) == pytest.approx(2 * math.pi * EARTH_RADIUS_KM / 360, rel=1e-9)  # date line
    # New York - Los Angeles, 3936 km on a 6371 km sphere
    assert haversine_km(40.7128, -74.0060, 34.0522, -118.2437) == pytest.approx(3936, abs=5)
    many = haversine_km(np.array([PARIS[0], 0.0]), np.array([PARIS[1], 0.0]), LONDON[0], LONDON[1])
    assert many.shape == (2,) and many[0] == pytest.approx(344.0, abs=1.0)
    assert np.isnan(haversine_km(np.nan, 0.0, 1.0, 1.0))  # no true location: no error, not an exception


def test_geoscore_and_accuracy_by_hand():
    assert geoscore(0.0) == 5000.0
    assert geoscore(1492.7) == pytest.approx(5000 / math.e)
    errors = [0.5, 1.0, 24.9, 300.0, 2600.0, np.nan]  # the NaN (no truth) is not counted
    assert accuracy_at(errors) == {
        "accuracy_1km": 1 / 5,  # strictly below the radius: 1.0 km is not within 1 km
        "accuracy_25km": 3 / 5,
        "accuracy_200km": 3 / 5,
        "accuracy_750km": 4 / 5,
        "accuracy_2500km": 4 / 5,
    }
    assert all(math.isnan(v) for v in accuracy_at([]).values())


def test_spherical_medoid_picks_the_central_sample():
    # three samples near Paris and one in Sydney: the medoid is the middle Paris one
    lat = np.array([[48.80, 48.85, 48.90, -33.87]])
    lon = np.array([[2.30, 2.35, 2.40, 151.21]])
    chosen, spread = spherical_medoid(lat, lon)
    assert chosen.tolist() == [1]
    d = haversine_km(lat[0, 1], lon[0, 1], lat[0], lon[0])
    assert spread[0] == pytest.approx(np.median(np.delete(d, 1)))  # the other three samples, not itself
    two = spherical_medoid(np.array([[0.0, 0.0]]), np.array([[0.0, 1.0]]))[1]
    assert two[0] == pytest.approx(haversine_km(0, 0, 0, 1))  # the distance between them, not half of it
    assert spherical_medoid(np.array([[5.0]]), np.array([[6.0]]))[1].tolist() == [0.0]


def test_noise_is_seeded_per_image_not_per_batch():
    together = noise_for(["a", "b", "c"], 2, seed=5)
    alone = noise_for(["b"], 2, seed=5)
    assert together.shape == (6, 3)
    assert torch_equal(together[2:4], alone)
    assert not torch_equal(noise_for(["b"], 2, seed=6), alone)


def torch_equal(a, b) -> bool:
    return bool((a == b).all())


def test_sampling_config_rejects_nonsense():
    with pytest.raises(ValueError, match="num_steps"):
        SamplingConfig(num_steps=0)
    with pytest.raises(ValueError, match="cfg"):
        SamplingConfig(cfg=-1.0)


def test_missing_plonk_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "plonk", None)  # import plonk -> ImportError, as without diff-plonk
    with pytest.raises(ModelLoadError, match=r"pip install 'attn-assets\[plonk\]'"):
        import_plonk_pipe()


def test_astrophysics_plonk_is_named(monkeypatch):
    import types

    fake = types.ModuleType("plonk")
    fake.__file__ = "/site-packages/plonk/__init__.py"
    fake.__path__ = []
    fake_pipe = types.ModuleType("plonk.pipe")
    monkeypatch.setitem(sys.modules, "plonk", fake)
    monkeypatch.setitem(sys.modules, "plonk.pipe", fake_pipe)
    with pytest.raises(ModelLoadError, match="astrophysics"):
        import_plonk_pipe()


def test_error_analysis_by_hand():
    # 20 images: the error grows with entropy and falls with attention_max; deciles hold 2 images each
    n = 20
    frame = pd.DataFrame({
        "image_id": [f"img{i:02d}" for i in range(n)],
        "error_km": np.arange(n, dtype=float) * 100.0,
        "attention_entropy": np.arange(n, dtype=float) + 1.0,
        "attention_max": -np.arange(n, dtype=float) ** 2,
        "attention_spread": np.full(n, 0.5),  # constant: correlation undefined
    })
    out = error_analysis(frame, ["attention_entropy", "attention_max", "attention_spread"]).set_index("metric")
    assert decile_size(20) == 2 and decile_size(21) == 3 and decile_size(1) == 1 and decile_size(0) == 0
    entropy = out.loc["attention_entropy"]
    assert entropy["images"] == 20 and entropy["decile_images"] == 2
    assert entropy["pearson_r"] == pytest.approx(1.0) and entropy["spearman_rho"] == pytest.approx(1.0)
    assert entropy["best_decile_mean"] == pytest.approx(1.5)  # entropies 1, 2
    assert entropy["worst_decile_mean"] == pytest.approx(19.5)  # entropies 19, 20
    assert entropy["worst_minus_best"] == pytest.approx(18.0)
    assert entropy["mannwhitney_p"] == pytest.approx(stats.mannwhitneyu([19, 20], [1, 2]).pvalue)
    maximum = out.loc["attention_max"]
    assert maximum["spearman_rho"] == pytest.approx(-1.0)
    assert maximum["pearson_r"] == pytest.approx(stats.pearsonr(frame["attention_max"], frame["error_km"])[0])
    spread = out.loc["attention_spread"]
    assert math.isnan(spread["pearson_r"]) and math.isnan(spread["spearman_rho"])
    assert spread["best_decile_mean"] == spread["worst_decile_mean"] == 0.5


def test_error_analysis_skips_missing_values_and_breaks_ties_by_id():
    frame = pd.DataFrame({
        "image_id": ["b", "a", "c", "d"],
        "error_km": [10.0, 10.0, np.nan, 50.0],
        "attention_entropy": [2.0, 1.0, 9.0, np.inf],
    })
    row = error_analysis(frame, ["attention_entropy"]).iloc[0]
    assert row["images"] == 2  # c has no error, d an infinite metric
    assert row["best_decile_mean"] == 1.0 and row["worst_decile_mean"] == 2.0  # tie at 10 km: a before b


def test_sensor_without_plonk_skips_with_the_install_hint(monkeypatch):
    import dagster as dg

    from attn_assets.defs.sensors import geolocation_sensor

    monkeypatch.setitem(sys.modules, "plonk", None)
    with dg.DagsterInstance.ephemeral() as instance:
        result = geolocation_sensor(dg.build_sensor_context(instance=instance))
    assert isinstance(result, dg.SkipReason)
    assert "attn-assets[plonk]" in result.skip_message

"""geolocation_error_analysis tests the true-country relevance metrics and zero-shot correctness too, where the
country_relevance group has rows for the statistics' model; other images and other models' rows are left out."""

from __future__ import annotations

from datetime import datetime

import dagster as dg
import numpy as np
import pandas as pd

from attn_assets.core.error_analysis import error_analysis
from attn_assets.defs.geolocation.assets import geolocation_error_analysis
from attn_assets.metric_names import METRIC_NAMES
from attn_assets.resources import PipelineResource, WarehouseResource
from attn_assets.storage.layout import HomeLayout
from attn_assets.storage.schema import (
    ATTENTION_STATISTICS,
    COUNTRY_PREDICTIONS,
    GEOLOCATION_PREDICTIONS,
    RELEVANCE_STATISTICS,
    Table,
)
from attn_assets.storage.warehouse import Warehouse

MODEL = "demo"


def _rows(table: Table, n: int, rng: np.random.Generator, **given) -> pd.DataFrame:
    """``n`` rows with every column of ``table``: the ``given`` values, else a value of the column's type."""
    filler = {"VARCHAR": lambda: "x", "DOUBLE": lambda: float(rng.random()), "BIGINT": lambda: 1,
              "INTEGER": lambda: 1, "BOOLEAN": lambda: True, "TIMESTAMP": lambda: datetime(2026, 1, 1)}
    frame = {}
    for column in table.columns:
        if column.name in given:
            frame[column.name] = given[column.name]
        elif column.sql_type in filler:
            frame[column.name] = [filler[column.sql_type]() for _ in range(n)]
        else:
            frame[column.name] = [[] for _ in range(n)]
    return pd.DataFrame(frame)


def test_relevance_and_zero_shot_join_the_error_analysis(tmp_path):
    rng = np.random.default_rng(0)
    n = 30
    ids = [f"img{i:02d}" for i in range(n)]
    error = rng.uniform(1, 5000, n)
    correct = rng.random(n) < 0.5
    relevance_entropy = 3 + 0.001 * error + rng.normal(0, 0.3, n)  # made to correlate with the error
    store = Warehouse(HomeLayout(tmp_path).warehouse_path)
    store.replace_tables({
        GEOLOCATION_PREDICTIONS: _rows(GEOLOCATION_PREDICTIONS, n, rng, image_id=ids, error_km=error),
        ATTENTION_STATISTICS: _rows(ATTENTION_STATISTICS, n, rng, image_id=ids, model_spec=[MODEL] * n),
        # predictions of the statistics' model for all but the last 5 images, and one other model's row
        COUNTRY_PREDICTIONS: pd.concat([
            _rows(COUNTRY_PREDICTIONS, n - 5, rng, image_id=ids[:-5], model_spec=[MODEL] * (n - 5),
                  correct=list(correct[:-5])),
            _rows(COUNTRY_PREDICTIONS, 1, rng, image_id=["other"], model_spec=["other-model"])]),
        RELEVANCE_STATISTICS: pd.concat([
            _rows(RELEVANCE_STATISTICS, n - 5, rng, image_id=ids[:-5], target=["true"] * (n - 5),
                  attention_entropy=relevance_entropy[:-5]),
            _rows(RELEVANCE_STATISTICS, n - 5, rng, image_id=ids[:-5], target=["predicted"] * (n - 5),
                  attention_entropy=[99.0] * (n - 5))]),
    })
    result = dg.materialize([geolocation_error_analysis], resources={
        "pipeline": PipelineResource(home=str(tmp_path)), "warehouse": WarehouseResource(home=str(tmp_path))})
    assert result.success
    analysis = store.query("SELECT * FROM geolocation_error_analysis").set_index("metric")
    assert {*METRIC_NAMES, "relevance_attention_entropy", "zero_shot_correct"} <= set(analysis.index)

    by_hand = pd.DataFrame({"image_id": ids[:-5], "relevance_attention_entropy": relevance_entropy[:-5],
                            "zero_shot_correct": correct[:-5].astype(float), "error_km": error[:-5]})
    expected = error_analysis(by_hand, ["relevance_attention_entropy", "zero_shot_correct"]).set_index("metric")
    for metric in expected.index:
        assert analysis.loc[metric, "images"] == n - 5  # the 5 images without relevance rows are left out
        # the same float64 rows through the same scipy calls: equal to rounding in DuckDB's DOUBLE round trip
        np.testing.assert_allclose(analysis.loc[metric, ["pearson_r", "spearman_rho", "worst_minus_best"]].astype(float),
                                   expected.loc[metric, ["pearson_r", "spearman_rho", "worst_minus_best"]].astype(float),
                                   rtol=1e-12)
    assert analysis.loc["relevance_attention_entropy", "spearman_rho"] > 0.5

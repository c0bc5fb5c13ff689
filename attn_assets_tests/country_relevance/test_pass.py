"""The country-relevance pass on real image files and a tiny CLIPModel: its shard file, its warehouse tables and
the summary tables."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from attn_assets.core.faithfulness import faithfulness_summary
from attn_assets.core.zero_shot import accuracy_table, confusion_table
from attn_assets.passes.country_relevance import compute_country_relevance_shard, load_country_relevance_shard
from attn_assets.passes.recipe import country_relevance_recipe, read_record
from attn_assets.storage.layout import HomeLayout
from attn_assets.storage.schema import COUNTRY_PREDICTIONS, FAITHFULNESS_CURVES, RELEVANCE_STATISTICS
from attn_assets.storage.warehouse import Warehouse
from attn_assets_tests.conftest import street_scene

COUNTRIES = ["FR", "DE", "US", "JP", "BR", "", "ZW", "FR"]  # "" unknown, ZW outside the tiny list


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    root = tmp_path_factory.mktemp("country_home")
    images = root / "images"
    images.mkdir()
    rows = []
    for n, code in enumerate(COUNTRIES):
        path = images / f"img{n}.jpg"
        street_scene(90 + 7 * n, 64, 40 + n).save(path, quality=90)
        rows.append({"image_id": f"img{n}", "path": path.name, "abs_path": str(path), "member": None,
                     "country": code or None, "shard_key": "shard-00000"})
    layout = HomeLayout(root)
    layout.manifest_dir.mkdir(parents=True)
    pd.DataFrame(rows).to_parquet(layout.images_parquet)
    (root / "not_an_image.jpg").write_text("x")
    return layout


@pytest.fixture(scope="module")
def shard_file(home, tiny_classifier):
    recipe = country_relevance_recipe("tiny", "fp32", "cpu", tiny_classifier.prompts.fingerprint, 1.0, "mean", 10)
    outcome = compute_country_relevance_shard(
        layout=home, shard_key="shard-00000", classifier=tiny_classifier, model_spec="tiny", batch_size=3,
        num_workers=0, recipe=recipe, faithfulness_fraction=1.0, faithfulness_fill="mean",
        logger=logging.getLogger("test"))
    assert outcome.computed == 8 and outcome.details["with_truth"] == 6 and outcome.details["with_curves"] == 6
    assert read_record(outcome.path).fingerprint == recipe.fingerprint
    return outcome.path


def test_shard_file_rows(shard_file, tiny_classifier):
    frame = pq.read_table(shard_file).to_pandas().set_index("image_id")
    assert frame.loc["img5", "true_rank"] is None or pd.isna(frame.loc["img5", "true_rank"])
    assert pd.isna(frame.loc["img6", "correct"]) and frame.loc["img6", "true_relevance_map"] is None
    assert frame.loc["img0", "true_rank"] >= 1
    top5 = frame.loc["img0", "top5_countries"].split(",")
    assert len(top5) == 5 and top5[0] == frame.loc["img0", "predicted_country"]
    assert np.all(np.diff(frame.loc["img0", "top5_probabilities"]) <= 0)
    assert len(frame.loc["img1", "predicted_relevance_map"]) == 36
    assert len(frame.loc["img1", "deletion_curve_relevance"]) == 11 and pd.isna(frame.loc["img5", "deletion_auc_random"])
    # the first deletion step removes nothing: the true country's unmasked probability
    assert frame.loc["img1", "deletion_curve_random"][0] == pytest.approx(frame.loc["img1", "true_probability"], abs=1e-5)


def test_warehouse_tables_and_summaries(shard_file, home):
    store = Warehouse(home.warehouse_path)
    counts = load_country_relevance_shard(store, "shard-00000", shard_file)
    assert counts == {COUNTRY_PREDICTIONS.name: 8, RELEVANCE_STATISTICS.name: 8 + 6, FAITHFULNESS_CURVES.name: 6 * 8}
    predictions = store.query(f'SELECT * FROM "{COUNTRY_PREDICTIONS.name}"')
    accuracy = accuracy_table(predictions)
    assert accuracy.iloc[0]["scope"] == "overall" and accuracy.iloc[0]["images"] == 6
    assert accuracy[accuracy["country"] == "FR"]["images"].item() == 2
    confusion = confusion_table(predictions)
    assert confusion["images"].sum() == 6
    np.testing.assert_allclose(confusion.groupby("country")["share"].sum(), 1.0)
    curves = store.query(f'SELECT * FROM "{FAITHFULNESS_CURVES.name}"')
    summary = faithfulness_summary(curves)
    overall = summary[summary["scope"] == "overall"]
    assert len(overall) == 8 and (overall["ci_low"] <= overall["mean_auc"]).all()
    assert (overall["mean_auc"] <= overall["ci_high"]).all()
    assert load_country_relevance_shard(store, "shard-00000", None) == {
        COUNTRY_PREDICTIONS.name: 0, RELEVANCE_STATISTICS.name: 0, FAITHFULNESS_CURVES.name: 0}

"""The country_relevance group through `attn-assets materialize` on a tiny CLIPModel with a text tower: tables,
figures, gallery; and the skip (not a failure) for a vision-only model."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from attn_assets.orchestration import materialize_all
from attn_assets.storage.layout import HomeLayout
from attn_assets.storage.warehouse import Warehouse

pytestmark = pytest.mark.slow

# the manifest's countries (defs/conftest.py GOOD_ROWS, blanks resolved from the coordinates) but AU: an image
# whose true country is outside the list gets a prediction and no true-country columns
COUNTRIES = "FR NA JP US DE"


def _not_blank(path):
    pixels = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32)
    assert path.stat().st_size > 5_000 and pixels.std() > 10, path


def test_group_end_to_end(pipeline_env, instance, tiny_clip_dir, monkeypatch):
    monkeypatch.setenv("ATTN_ASSETS_MODEL", str(tiny_clip_dir))
    monkeypatch.setenv("ATTN_ASSETS_COUNTRIES", COUNTRIES)
    monkeypatch.setenv("ATTN_ASSETS_FAITHFULNESS_FRACTION", "1")
    summary = materialize_all(instance=instance)
    assert summary.ok, "\n".join(summary.lines)
    assert any(line.startswith("country_predictions[") for line in summary.lines), "\n".join(summary.lines)
    layout = HomeLayout(pipeline_env.home)
    store = Warehouse(layout.warehouse_path)
    images = len(pipeline_env.image_ids)
    predictions = store.query("SELECT * FROM country_predictions")
    assert len(predictions) == images and set(predictions["predicted_country"]) <= set(COUNTRIES.split())
    with_truth = int(predictions["correct"].notna().sum())
    # the manifest fills a missing country from the coordinates; each true country in the list has a known answer
    assert with_truth == int(predictions["country"].isin(COUNTRIES.split()).sum()) > 0
    relevance = store.query("SELECT target, count(*) AS n FROM relevance_statistics GROUP BY target ORDER BY target")
    assert relevance.set_index("target")["n"].to_dict() == {"predicted": images, "true": with_truth}
    assert store.query("SELECT count(*) AS n FROM faithfulness_curves")["n"][0] == with_truth * 8
    accuracy = store.query("SELECT * FROM country_accuracy")
    assert accuracy.iloc[0]["scope"] == "overall" and accuracy.iloc[0]["images"] == with_truth
    assert store.query("SELECT sum(images) AS n FROM country_confusion")["n"][0] == with_truth
    summary_rows = store.query("SELECT * FROM faithfulness_summary WHERE scope = 'overall'")
    assert len(summary_rows) == 8
    for name in ("country_accuracy.png", "country_confusion.png", "relevance_faithfulness.png"):
        _not_blank(layout.analyses_dir / name)
    gallery = layout.visualizations_dir / "misclassified"
    wrong = int((predictions["correct"] == False).sum())  # noqa: E712
    assert len(list(gallery.glob("*.png"))) == min(wrong, 3)

    again = materialize_all(instance=instance)
    assert "country_predictions: every shard up to date" in again.lines
    assert "country relevance summaries: up to date" in again.lines

    # a changed country list is a new recipe: every shard reruns
    monkeypatch.setenv("ATTN_ASSETS_COUNTRIES", COUNTRIES + " IT")
    third = materialize_all(instance=instance)
    assert sum(line.startswith("country_predictions[") for line in third.lines) == 3, third.lines


def test_vision_only_model_skips_the_group(pipeline_env, instance):
    summary = materialize_all(instance=instance)
    assert summary.ok, "\n".join(summary.lines)
    assert any(line.startswith("country relevance: skipped (zero-shot country classification needs a CLIPModel")
               for line in summary.lines), summary.lines

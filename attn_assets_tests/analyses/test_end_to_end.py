"""Every analysis through the whole graph (attn-assets materialize) on a tiny model: tables and figures."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from attn_assets.orchestration import materialize_all
from attn_assets.storage.layout import HomeLayout
from attn_assets.storage.warehouse import Warehouse

pytestmark = pytest.mark.slow

FIGURES = ["layer_profile.png", "head_maps.png", "artifact_tokens.png", "spatial.png", "metric_baselines.png",
           "rollout_gallery.png", "ablation.png"]


def _metadata(instance, key):
    import dagster as dg

    event = instance.get_latest_materialization_event(dg.AssetKey(key))
    return {k: v.value for k, v in event.asset_materialization.metadata.items()}


def _not_blank(path):
    pixels = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32)
    assert path.stat().st_size > 5_000 and pixels.std() > 10, path


def test_every_analysis_has_its_table_and_figure(pipeline_env, instance, tiny_encoder, monkeypatch):
    monkeypatch.setenv("ATTN_ASSETS_ABLATION_FRACTION", "1")
    summary = materialize_all(instance=instance)
    assert summary.ok, "\n".join(summary.lines)
    assert any(line.startswith("rollout/ablation[") for line in summary.lines)
    layout = HomeLayout(pipeline_env.home)
    store = Warehouse(layout.warehouse_path)
    images = len(pipeline_env.image_ids)
    L, H, N = tiny_encoder.num_layers, tiny_encoder.num_heads, tiny_encoder.num_patches

    # 1 + 2: one row per image and layer / head; the last layer is attention_statistics
    assert store.query("SELECT count(*) AS n FROM layer_statistics")["n"][0] == images * L
    assert store.query("SELECT count(*) AS n FROM head_statistics")["n"][0] == images * H
    diff = store.query(
        "SELECT max(abs(l.attention_entropy - s.attention_entropy)) AS e, "
        "max(abs(l.attention_concentration_top10 - s.attention_concentration_top10)) AS c "
        f"FROM layer_statistics l JOIN attention_statistics s USING (image_id) WHERE l.layer = {L - 1}").iloc[0]
    assert diff.e < 1e-6 and diff.c < 1e-6
    assert store.query("SELECT count(head_similarity) AS n FROM attention_statistics")["n"][0] == images

    # 4: baselines for the six metrics (permutation-invariant) and the spatial statistics
    baselines = store.query("SELECT * FROM metric_baselines").set_index("metric")
    assert len(baselines) == 6 + 9
    assert baselines.loc["attention_entropy", "uniform"] == pytest.approx(np.log(N), abs=1e-6)
    assert bool(baselines.loc["attention_entropy", "permutation_invariant"])
    assert not bool(baselines.loc["attention_com_x", "permutation_invariant"])
    assert baselines.loc["attention_share_top", "uniform"] == pytest.approx(1 / 3)

    # 5 + 6: per image
    assert store.query("SELECT count(*) AS n FROM artifact_statistics")["n"][0] == images
    spatial = store.query("SELECT * FROM spatial_statistics")
    assert len(spatial) == images
    np.testing.assert_allclose(spatial.attention_share_left + spatial.attention_share_right, 1.0, atol=1e-9)
    assert "left" in _metadata(instance, "spatial_statistics")["by_drive_side"]

    # 3: rollout over its own pass, maps kept for the gallery
    rollout = store.query("SELECT * FROM rollout_statistics")
    assert len(rollout) == images and set(rollout["num_patches"]) == {N}
    assert len(list((layout.home / "analyses" / "rollout").glob("*.parquet"))) == 3

    # 7: ablation on (fraction 1): every image, top-k and random control
    ablation = store.query("SELECT * FROM ablation_statistics")
    assert len(ablation) == images and (ablation.cosine_distance_topk > 0).all()
    assert set(ablation["ablation_k"]) == {int(N * 0.1)}

    for name in FIGURES:
        _not_blank(layout.analysis_dir / "analyses" / name)
    assert not list(layout.analysis_dir.rglob(".*tmp*"))

    # nothing changed: a second run does no analysis work
    again = materialize_all(instance=instance)
    assert again.ok and "rollout/ablation: every shard up to date" in again.lines


def test_ablation_is_off_by_default_with_a_note(pipeline_env, instance):
    assert materialize_all(instance=instance).ok
    store = Warehouse(HomeLayout(pipeline_env.home).warehouse_path)
    assert store.query("SELECT count(*) AS n FROM ablation_statistics")["n"][0] == 0
    assert "ATTN_ASSETS_ABLATION_FRACTION" in _metadata(instance, "ablation_statistics")["note"]
    assert "no sampled images" in _metadata(instance, "ablation_summary")["note"]
    assert store.query("SELECT count(*) AS n FROM rollout_statistics")["n"][0] == len(pipeline_env.image_ids)

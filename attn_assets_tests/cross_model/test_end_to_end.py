"""The cross_model group materialized for real: three tiny models of different families (CLIP vision, DINOv2 with
registers, SigLIP) and one that cannot load, over the demo manifest, into a temp DAGSTER_HOME; read from DuckDB."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch

from attn_assets.catalog.demo_data import write_demo_data
from attn_assets.defs.partitions import SHARD_PARTITIONS_NAME
from attn_assets.orchestration import materialize_all
from attn_assets.storage.layout import HomeLayout
from attn_assets.storage.warehouse import Warehouse
from attn_assets_tests.core.test_siglip import build_tiny_siglip

pytestmark = pytest.mark.slow
IMAGES = 8
IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def build_tiny_dinov2_registers(directory: Path) -> Path:
    """Dinov2WithRegistersModel (4 registers), crop 32 of a 36 resize, 4-px patches -> 8x8 grid."""
    from transformers import BitImageProcessor, Dinov2WithRegistersConfig, Dinov2WithRegistersModel

    config = Dinov2WithRegistersConfig(num_register_tokens=4, hidden_size=32, num_hidden_layers=2,
                                       num_attention_heads=2, intermediate_size=64, patch_size=4, image_size=56)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(11)
        model = Dinov2WithRegistersModel(config)
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory)
    BitImageProcessor(size={"shortest_edge": 36}, crop_size={"height": 32, "width": 32}, image_mean=IMAGENET_MEAN,
                      image_std=IMAGENET_STD).save_pretrained(directory)
    return directory


@pytest.fixture
def cross_env(tmp_path, monkeypatch, tiny_model_dir):
    manifest = write_demo_data(tmp_path / "demo", n_images=IMAGES)
    home, dagster_home = tmp_path / "home", tmp_path / "dagster_home"
    dagster_home.mkdir()
    specs = [str(tiny_model_dir), str(build_tiny_dinov2_registers(tmp_path / "dinov2_registers")),
             str(build_tiny_siglip(tmp_path / "siglip")), str(tmp_path / "no_such_model")]
    env = {"ATTN_ASSETS_HOME": home, "DAGSTER_HOME": dagster_home, "ATTN_ASSETS_MANIFEST": manifest,
           "ATTN_ASSETS_MODEL": tiny_model_dir, "ATTN_ASSETS_DEVICE": "cpu", "ATTN_ASSETS_NUM_WORKERS": 0,
           "ATTN_ASSETS_BATCH_SIZE": 4, "ATTN_ASSETS_GALLERY_SIZE": 2,
           "ATTN_ASSETS_COMPARE_MODELS": ",".join(specs)}
    for name, value in env.items():
        monkeypatch.setenv(name, str(value))
    return home, specs


def _query(home, sql: str) -> pd.DataFrame:
    return Warehouse(HomeLayout(home).warehouse_path).query(sql)


def _run_group(instance) -> None:
    from attn_assets.definitions import build_definitions

    defs = build_definitions()
    for key in instance.get_dynamic_partitions(SHARD_PARTITIONS_NAME):
        result = defs.resolve_job_def("cross_model_shards_job").execute_in_process(
            instance=instance, partition_key=key, raise_on_error=False)
        assert result.success
    assert defs.resolve_job_def("cross_model_job").execute_in_process(instance=instance).success


def test_three_families_compared_and_a_broken_model_fails_only_its_pairs(cross_env):
    home, specs = cross_env
    clip, dinov2, siglip, missing = specs
    with dg.DagsterInstance.get() as instance:
        summary = materialize_all(instance=instance)  # its last stage runs the cross_model group
        assert summary.ok, "\n".join(summary.lines)
        again = materialize_all(instance=instance)
        assert "cross_model_agreement: every shard up to date" in again.lines

    rows = _query(home, "SELECT * FROM cross_model_agreement")
    assert len(rows) == IMAGES * 6  # 4 models -> 6 pairs, every image of every pair
    assert not rows.duplicated(["image_id", "model_a", "model_b"]).any()
    ok, failed = rows[rows["status"] == "ok"], rows[rows["status"] == "failed"]
    assert set(zip(ok["model_a"], ok["model_b"])) == {(clip, dinov2), (clip, siglip), (dinov2, siglip)}
    assert len(ok) == 3 * IMAGES and ok["spearman"].notna().all()
    assert ok["spearman"].between(-1, 1).all() and ok["top_overlap"].between(0, 1).all()
    assert ok["jensen_shannon"].between(0, 1).all()
    assert (failed["model_b"] == missing).all() and len(failed) == 3 * IMAGES
    assert failed["reason"].str.contains(f"model '{missing}' could not load", regex=False).all()
    assert failed["spearman"].isna().all()
    # SigLIP sees the whole photo, so the CLIP and DINOv2 centre crops lie inside its view
    assert np.allclose(ok.loc[ok["model_b"] == siglip, "mass_inside_a"], 1.0)

    maps = pd.concat(
        [pq.read_table(p).to_pandas() for p in sorted(HomeLayout(home).cross_model_dir.glob("*.maps.parquet"))])
    assert set(maps["model_spec"]) == {clip, dinov2, siglip}
    whole = maps[maps["model_spec"] == siglip]
    assert (whole["crop_left"] == 0).all() and (whole["crop_top"] == 0).all()
    # right = 32 / (32 / width): exact up to two float64 roundings
    np.testing.assert_allclose(whole["crop_right"], whole["image_width"], rtol=1e-12)
    np.testing.assert_allclose(whole["crop_bottom"], whole["image_height"], rtol=1e-12)
    assert set(zip(maps.loc[maps["model_spec"] == dinov2, "grid_height"],
                   maps.loc[maps["model_spec"] == dinov2, "grid_width"])) == {(8, 8)}  # registers not in the map
    for values in maps["attention_map"]:
        assert np.all(np.asarray(values) >= 0)

    summary_rows = _query(home, "SELECT * FROM cross_model_summary")
    overall = summary_rows[summary_rows["scope"] == "overall"]
    assert len(overall) == 3 * 3 and (overall["images"] == IMAGES).all()
    for row in overall.itertuples():
        expected = ok[(ok["model_a"] == row.model_a) & (ok["model_b"] == row.model_b)][row.metric].mean()
        assert row.mean == pytest.approx(expected)
        assert row.ci_low <= row.mean <= row.ci_high
    by_country = summary_rows[summary_rows["scope"] == "country"]
    assert set(by_country["country"]) == set(ok["country"])
    analyses = HomeLayout(home).analyses_dir
    assert (analyses / "cross_model_grid.png").stat().st_size > 0
    assert (analyses / "cross_model_countries.png").stat().st_size > 0


def test_without_two_models_the_group_writes_no_rows(cross_env, monkeypatch):
    home, specs = cross_env
    monkeypatch.setenv("ATTN_ASSETS_COMPARE_MODELS", specs[0])
    with dg.DagsterInstance.get() as instance:
        summary = materialize_all(instance=instance)
        assert summary.ok and any("lists one spec" in line for line in summary.lines)
        _run_group(instance)  # the assets run anyway write nothing
    assert len(_query(home, "SELECT * FROM cross_model_agreement")) == 0
    assert len(_query(home, "SELECT * FROM cross_model_summary")) == 0
    assert not list(HomeLayout(home).cross_model_dir.glob("*.parquet"))

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


def build_tiny_vit(directory: Path) -> Path:
    """A plain ViTModel (32 px, 8-px patches -> 4x4 grid), the fourth family."""
    from transformers import ViTConfig, ViTImageProcessor, ViTModel

    config = ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                       image_size=32, patch_size=8)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(5)
        model = ViTModel(config, add_pooling_layer=False)
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory)
    ViTImageProcessor(size={"height": 32, "width": 32}, image_mean=IMAGENET_MEAN,
                      image_std=IMAGENET_STD).save_pretrained(directory)
    return directory


def demo_home(tmp_path: Path, monkeypatch, images: int) -> Path:
    """A demo manifest of ``images`` photos in 2 shards, a temp ATTN_ASSETS_HOME and DAGSTER_HOME, CPU settings; no
    model set (the tests list theirs in ATTN_ASSETS_MODELS). Returns the home."""
    manifest = write_demo_data(tmp_path / "demo", n_images=images)
    home, dagster_home = tmp_path / "home", tmp_path / "dagster_home"
    dagster_home.mkdir()
    env = {"ATTN_ASSETS_HOME": home, "DAGSTER_HOME": dagster_home, "ATTN_ASSETS_MANIFEST": manifest,
           "ATTN_ASSETS_DEVICE": "cpu", "ATTN_ASSETS_NUM_WORKERS": 0, "ATTN_ASSETS_SHARD_SIZE": images // 2,
           "ATTN_ASSETS_BATCH_SIZE": 4, "ATTN_ASSETS_GALLERY_SIZE": 2}
    for name, value in env.items():
        monkeypatch.setenv(name, str(value))
    monkeypatch.delenv("ATTN_ASSETS_MODEL", raising=False)
    return home


@pytest.fixture
def cross_env(tmp_path, monkeypatch, tiny_model_dir):
    home = demo_home(tmp_path, monkeypatch, IMAGES)
    specs = {"clip": str(tiny_model_dir), "dinov2": str(build_tiny_dinov2_registers(tmp_path / "dinov2_registers")),
             "siglip": str(build_tiny_siglip(tmp_path / "siglip"))}
    return home, specs


def _list_models(monkeypatch, specs: dict[str, str]) -> None:
    monkeypatch.setenv("ATTN_ASSETS_MODELS", ",".join(f"{key}={spec}" for key, spec in specs.items()))


def _query(home, sql: str) -> pd.DataFrame:
    return Warehouse(HomeLayout(home).warehouse_path).query(sql)


def _model_files(home) -> dict[str, int]:
    """{models/<key>/shards/<shard>.parquet: mtime_ns}"""
    root = HomeLayout(home).models_dir
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in sorted(root.glob("*/shards/*.parquet"))}


def test_three_families_keyed_by_model_and_a_broken_model_fails_only_its_own(cross_env, monkeypatch, tmp_path):
    home, specs = cross_env
    missing = str(tmp_path / "no_such_model")
    _list_models(monkeypatch, {**specs, "broken": missing})
    layout = HomeLayout(home)
    retired = layout.retired_cross_model_maps("shard-00000")  # left by the version that ran the models itself
    retired.parent.mkdir(parents=True, exist_ok=True)
    retired.write_bytes(b"maps of an earlier version")
    with dg.DagsterInstance.get() as instance:
        summary = materialize_all(instance=instance)
        text = "\n".join(summary.lines)
        assert not retired.exists() and layout.cross_model_parquet("shard-00000").exists()
        assert not summary.ok and summary.failed_models == ["broken"], text  # materialize exits 1
        assert "model_statistics[broken]: model" in text and "the other models ran" in text
        assert not summary.failed_runs, text
        again = materialize_all(instance=instance)
        assert [line for line in again.lines if line.startswith("model_statistics[") and "up to date" in line] == [
            f"model_statistics[{key}]: every shard up to date" for key in specs]
        assert "cross_model_agreement: every shard up to date" in again.lines

    # every per-model table keyed by model; the plain tables hold the default (first) model only
    stats = _query(home, "SELECT * FROM attention_statistics_by_model")
    assert stats.groupby("model_key").size().to_dict() == {key: IMAGES for key in specs}
    assert not stats.duplicated(["model_key", "image_id"]).any()
    assert dict(zip(stats["model_key"], stats["model_spec"])) == specs
    plain = _query(home, "SELECT * FROM attention_statistics")
    assert set(plain["model_spec"]) == {specs["clip"]} and len(plain) == IMAGES
    default = stats[stats["model_key"] == "clip"].set_index("image_id").sort_index()
    np.testing.assert_array_equal(default["attention_entropy"], plain.set_index("image_id").sort_index()[
        "attention_entropy"])
    patches = stats.groupby("model_key")["num_patches"].unique().to_dict()
    assert list(patches["dinov2"]) == [64] and list(patches["siglip"]) == [16]  # registers not in the map
    for table in ("layer_statistics", "head_statistics", "spatial_statistics"):
        by_model = _query(home, f"SELECT model_key, count(*) AS n FROM {table}_by_model GROUP BY ALL")
        assert set(by_model["model_key"]) == set(specs), table
    registers = stats.set_index("model_key")["register_attention_share"]
    assert registers.loc["dinov2"].between(0, 1).all() and registers.loc["clip"].isna().all()
    countries = _query(home, "SELECT * FROM country_aggregates_by_model")
    assert set(countries["model_key"]) == set(specs)
    assert countries.groupby("model_key")["image_count"].sum().to_dict() == {key: IMAGES for key in specs}
    uniform = countries.set_index("model_key")["attention_entropy_uniform"]
    # each model's own patch count; the baseline is the metric of a float32 uniform map: each of its n <= 64 terms
    # rounds by at most eps32 / 2 = 6e-8 relative, so the sum is within 64 * 6e-8 < 4e-6 of log(n)
    np.testing.assert_allclose(uniform.loc["dinov2"], np.log(64), rtol=4e-6)
    np.testing.assert_allclose(uniform.loc["siglip"], np.log(16), rtol=4e-6)
    # paired per-model differences, checked by hand against the per-model rows
    differences = _query(home, "SELECT * FROM model_differences")
    overall = differences[(differences["scope"] == "overall") & (differences["metric"] == "attention_entropy")]
    pair = overall[(overall["model_a"] == "clip") & (overall["model_b"] == "dinov2")].iloc[0]
    by_image = stats.pivot(index="image_id", columns="model_key", values="attention_entropy")
    assert pair.images == IMAGES
    # both sides are float64 means of the same 8 stored values: equal up to summation order (a few ulps)
    assert pair.mean_difference == pytest.approx((by_image["clip"] - by_image["dinov2"]).mean(), rel=1e-12, abs=1e-15)
    assert pair.mean_a - pair.mean_b == pytest.approx(pair.mean_difference, rel=1e-12, abs=1e-15)
    assert pair.ci_low <= pair.mean_difference <= pair.ci_high
    broken = differences[differences["model_b"] == "broken"]
    assert len(broken) and (broken["images"] == 0).all()  # no rows from the model that could not load
    assert set(differences.loc[differences["scope"] == "country", "country"]) == set(stats["country"])
    models = _query(home, "SELECT * FROM models ORDER BY position")
    assert list(models["model_key"]) == [*specs, "broken"] and list(models["is_default"]) == [True] + [False] * 3
    assert list(models["images"]) == [IMAGES] * 3 + [0]

    # the default model's files are the same files as shards/<shard>.parquet (linked, not recomputed)
    for shard in layout.shards_dir.glob("shard-*.parquet"):
        assert shard.stat().st_ino == layout.model_shard_parquet("clip", shard.stem).stat().st_ino

    rows = _query(home, "SELECT * FROM cross_model_agreement")
    assert len(rows) == IMAGES * 6  # 4 models -> 6 pairs, every image of every pair
    assert not rows.duplicated(["image_id", "model_a", "model_b"]).any()
    ok, failed = rows[rows["status"] == "ok"], rows[rows["status"] == "failed"]
    assert set(zip(ok["model_a"], ok["model_b"])) == {("clip", "dinov2"), ("clip", "siglip"), ("dinov2", "siglip")}
    assert len(ok) == 3 * IMAGES and ok["spearman"].notna().all()
    assert ok["spearman"].between(-1, 1).all() and ok["top_overlap"].between(0, 1).all()
    assert ok["jensen_shannon"].between(0, 1).all()
    assert (failed["model_b"] == "broken").all() and len(failed) == 3 * IMAGES
    assert failed["reason"].str.contains("model 'broken' has no current statistics", regex=False).all()
    assert failed["spearman"].isna().all()
    # SigLIP sees the whole photo, so the CLIP and DINOv2 centre crops lie inside its view
    assert np.allclose(ok.loc[ok["model_b"] == "siglip", "mass_inside_a"], 1.0)

    maps = pd.concat([pq.read_table(p).to_pandas() for p in sorted(layout.model_shards_dir("siglip").glob("*.parquet"))])
    assert (maps["crop_left"] == 0).all() and (maps["crop_top"] == 0).all()
    # right = 32 / (32 / width): exact up to two float64 roundings
    np.testing.assert_allclose(maps["crop_right"], maps["image_width"], rtol=1e-12)
    np.testing.assert_allclose(maps["crop_bottom"], maps["image_height"], rtol=1e-12)

    summary_rows = _query(home, "SELECT * FROM cross_model_summary")
    overall = summary_rows[summary_rows["scope"] == "overall"]
    assert len(overall) == 3 * 3 and (overall["images"] == IMAGES).all()
    for row in overall.itertuples():
        expected = ok[(ok["model_a"] == row.model_a) & (ok["model_b"] == row.model_b)][row.metric].mean()
        assert row.mean == pytest.approx(expected)
        assert row.ci_low <= row.mean <= row.ci_high
    by_country = summary_rows[summary_rows["scope"] == "country"]
    assert set(by_country["country"]) == set(ok["country"])
    analyses = layout.analyses_dir
    assert (analyses / "cross_model_grid.png").stat().st_size > 0
    assert (analyses / "cross_model_countries.png").stat().st_size > 0


def test_adding_a_model_computes_only_its_shards_and_removing_one_keeps_its_rows(cross_env, monkeypatch, tmp_path):
    home, specs = cross_env
    _list_models(monkeypatch, specs)
    with dg.DagsterInstance.get() as instance:
        assert materialize_all(instance=instance).ok
        before = _model_files(home)
        assert {name.split("/")[0] for name in before} == set(specs)

        _list_models(monkeypatch, {**specs, "vit": str(build_tiny_vit(tmp_path / "vit"))})  # a fourth family
        added = materialize_all(instance=instance)
        assert added.ok, "\n".join(added.lines)
        runs = [line for line in added.lines if line.startswith("model_statistics[") and " ok in " in line]
        assert runs and all(line.startswith("model_statistics[vit|") for line in runs)
        after = _model_files(home)
        assert {k: v for k, v in after.items() if not k.startswith("vit/")} == before  # the others untouched
        assert _query(home, "SELECT count(*) AS n FROM attention_statistics_by_model WHERE model_key = 'vit'")[
            "n"].item() == IMAGES
        assert len(_query(home, "SELECT * FROM cross_model_agreement")) == IMAGES * 6

        kept = {key: spec for key, spec in specs.items() if key != "dinov2"}
        _list_models(monkeypatch, kept)  # removed from the list: its rows stay until its folder is deleted
        removed = materialize_all(instance=instance)
        assert removed.ok, "\n".join(removed.lines)
        assert not any(line.startswith("model_statistics[") and " ok in " in line for line in removed.lines)
        counts = _query(home, "SELECT model_key, count(*) AS n FROM attention_statistics_by_model GROUP BY ALL")
        assert dict(zip(counts["model_key"], counts["n"])) == {"clip": IMAGES, "dinov2": IMAGES, "siglip": IMAGES,
                                                               "vit": IMAGES}
        models = _query(home, "SELECT model_key, listed, position FROM models ORDER BY model_key").set_index("model_key")
        assert not models.loc["dinov2", "listed"] and models.loc["clip", "position"] == 0
        pairs = _query(home, "SELECT DISTINCT model_a, model_b FROM cross_model_agreement")
        assert set(zip(pairs["model_a"], pairs["model_b"])) == {("clip", "siglip")}

        import shutil

        shutil.rmtree(HomeLayout(home).models_dir / "dinov2")  # the explicit deletion
        deleted = materialize_all(instance=instance, force=False)
        assert deleted.ok
        from attn_assets.definitions import build_definitions

        assert build_definitions().resolve_job_def("model_tables_job").execute_in_process(instance=instance).success
        assert "dinov2" not in set(_query(home, "SELECT model_key FROM attention_statistics_by_model")["model_key"])
        assert "dinov2" not in set(_query(home, "SELECT model_key FROM models")["model_key"])


def test_malformed_model_list_stops_before_any_run(cross_env, monkeypatch):
    home, specs = cross_env
    monkeypatch.setenv("ATTN_ASSETS_MODELS", f"{specs['clip']},,{specs['siglip']}")
    with dg.DagsterInstance.get() as instance:
        summary = materialize_all(instance=instance)
    assert summary.stopped and "item 2 is empty" in summary.stopped
    assert not HomeLayout(home).manifest_dir.exists()
    monkeypatch.setenv("ATTN_ASSETS_MODELS", f"same={specs['clip']},same={specs['siglip']}")
    with pytest.raises(ValueError, match="both have the key 'same'"):
        from attn_assets.settings import models_setting

        models_setting()


def test_with_one_model_the_comparison_writes_no_rows(cross_env, monkeypatch):
    home, specs = cross_env
    _list_models(monkeypatch, {"clip": specs["clip"]})
    with dg.DagsterInstance.get() as instance:
        summary = materialize_all(instance=instance)
        assert summary.ok, "\n".join(summary.lines)
        assert not any(line.startswith("cross_model") for line in summary.lines)
        _run_group(instance)  # the assets run anyway write nothing
    assert len(_query(home, "SELECT * FROM cross_model_agreement")) == 0
    assert len(_query(home, "SELECT * FROM cross_model_summary")) == 0
    assert not list(HomeLayout(home).cross_model_dir.glob("*.parquet"))
    assert _query(home, "SELECT count(*) AS n FROM attention_statistics_by_model")["n"].item() == IMAGES


def _run_group(instance) -> None:
    from attn_assets.definitions import build_definitions

    defs = build_definitions()
    for key in instance.get_dynamic_partitions(SHARD_PARTITIONS_NAME):
        result = defs.resolve_job_def("cross_model_shards_job").execute_in_process(
            instance=instance, partition_key=key, raise_on_error=False)
        assert result.success
    assert defs.resolve_job_def("cross_model_job").execute_in_process(instance=instance).success


def test_the_schedule_fills_every_listed_models_missing_shards(cross_env, monkeypatch):
    home, specs = cross_env
    _list_models(monkeypatch, specs)
    from attn_assets.defs.schedules import missing_model_shards_schedule
    from attn_assets.definitions import build_definitions

    with dg.DagsterInstance.get() as instance:
        assert build_definitions().resolve_job_def("manifest_job").execute_in_process(instance=instance).success
        import datetime

        when = datetime.datetime(2026, 11, 30, 3, 30, tzinfo=datetime.timezone.utc)
        requests = missing_model_shards_schedule(dg.build_schedule_context(instance=instance,
                                                                           scheduled_execution_time=when))
        shards = instance.get_dynamic_partitions(SHARD_PARTITIONS_NAME)
        assert sorted(r.partition_key for r in requests) == sorted(
            f"{model}|{shard}" for model in specs for shard in shards)
        assert all(r.tags["attn_assets/reason"] == "not computed" for r in requests)
        assert materialize_all(instance=instance).ok
        again = missing_model_shards_schedule(dg.build_schedule_context(instance=instance,
                                                                        scheduled_execution_time=when))
        assert isinstance(again, dg.SkipReason)

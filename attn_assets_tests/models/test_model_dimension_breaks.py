"""Model-as-a-dimension under the list edits real users make (ATTN_ASSETS_MODELS renamed, reordered, shortened,
a removed model's folder deleted), materialized for real with tiny models through `attn-assets materialize`'s
code path (orchestration.materialize_all) into a temp home; read back from DuckDB."""

from __future__ import annotations

import shutil

import dagster as dg
import pandas as pd
import pytest

from attn_assets.orchestration import materialize_all
from attn_assets.storage.layout import HomeLayout
from attn_assets.storage.schema import BY_MODEL_TABLES
from attn_assets.storage.warehouse import Warehouse
from attn_assets_tests.core.test_siglip import build_tiny_siglip
from attn_assets_tests.cross_model.test_end_to_end import build_tiny_vit, demo_home

IMAGES = 4
BY_MODEL = tuple(table.name for table in BY_MODEL_TABLES.values())


@pytest.fixture
def home_env(tmp_path, monkeypatch, tiny_model_dir):
    home = demo_home(tmp_path, monkeypatch, IMAGES)
    specs = {"clip": str(tiny_model_dir), "vit": str(build_tiny_vit(tmp_path / "vit")),
             "siglip": str(build_tiny_siglip(tmp_path / "siglip"))}
    return home, specs


def _list(monkeypatch, items: list[tuple[str, str]]) -> None:
    monkeypatch.setenv("ATTN_ASSETS_MODELS", ",".join(f"{key}={spec}" for key, spec in items))


def _query(home, sql: str) -> pd.DataFrame:
    return Warehouse(HomeLayout(home).warehouse_path).query(sql)


def _materialize(instance) -> list[str]:
    summary = materialize_all(instance=instance)
    assert summary.ok, "\n".join(summary.lines)
    return summary.lines


def _no_duplicates(home) -> None:
    for table in BY_MODEL_TABLES.values():
        if table.key:
            frame = _query(home, f"SELECT * FROM {table.name}")
            assert not frame.duplicated(list(table.key)).any(), table.name
    agreement = _query(home, "SELECT * FROM cross_model_agreement")
    assert not agreement.duplicated(["image_id", "model_a", "model_b"]).any()


@pytest.mark.slow
def test_renamed_reordered_shortened_and_deleted_models(home_env, monkeypatch):
    home, specs = home_env
    layout = HomeLayout(home)
    _list(monkeypatch, [("clip", specs["clip"]), ("vit", specs["vit"]), ("siglip", specs["siglip"])])
    with dg.DagsterInstance.get() as instance:
        _materialize(instance)
        _no_duplicates(home)

        # a new key for the same spec links the old key's current files: no model time
        _list(monkeypatch, [("clip", specs["clip"]), ("vit2", specs["vit"]), ("siglip", specs["siglip"])])
        _materialize(instance)
        for shard in layout.model_shards_dir("vit").glob("*.parquet"):
            assert layout.model_shard_parquet("vit2", shard.stem).stat().st_ino == shard.stat().st_ino, shard.name

        # reordered (the default kept first): model_a is the earlier model of the new order
        _list(monkeypatch, [("clip", specs["clip"]), ("siglip", specs["siglip"]), ("vit2", specs["vit"])])
        _materialize(instance)
        pairs = _query(home, "SELECT DISTINCT model_a, model_b FROM cross_model_agreement")
        assert set(zip(pairs["model_a"], pairs["model_b"])) == {("clip", "siglip"), ("clip", "vit2"),
                                                                ("siglip", "vit2")}
        summary_pairs = _query(home, "SELECT DISTINCT model_a, model_b FROM cross_model_summary")
        assert ("siglip", "vit2") in set(zip(summary_pairs["model_a"], summary_pairs["model_b"]))
        _no_duplicates(home)

        # down to one model: no pair is listed, so the comparison tables hold none
        _list(monkeypatch, [("clip", specs["clip"])])
        _materialize(instance)
        assert len(_query(home, "SELECT * FROM cross_model_agreement")) == 0
        assert len(_query(home, "SELECT * FROM cross_model_summary")) == 0

        # deleting a removed model's folder is the explicit removal: the next materialize drops its rows
        shutil.rmtree(layout.models_dir / "vit")
        _materialize(instance)
        for table in (*BY_MODEL, "models", "country_aggregates_by_model"):
            held = set(_query(home, f"SELECT DISTINCT model_key FROM {table}")["model_key"])
            assert "vit" not in held, table
        assert set(_query(home, "SELECT model_key FROM models")["model_key"]) == {"clip", "vit2", "siglip"}
        _no_duplicates(home)


@pytest.mark.slow
def test_unsetting_the_list_makes_its_one_model_the_default_everywhere(home_env, monkeypatch):
    home, specs = home_env
    _list(monkeypatch, [("clip", specs["clip"]), ("vit", specs["vit"])])
    with dg.DagsterInstance.get() as instance:
        _materialize(instance)
        assert len(_query(home, "SELECT * FROM cross_model_agreement")) == IMAGES
        # back to one model the pre-list way: the plain tables switch to it, and so must models and the pairs
        monkeypatch.delenv("ATTN_ASSETS_MODELS")
        monkeypatch.setenv("ATTN_ASSETS_MODEL", specs["vit"])
        _materialize(instance)
    assert set(_query(home, "SELECT model_spec FROM attention_statistics")["model_spec"]) == {specs["vit"]}
    default = _query(home, "SELECT model_spec FROM models WHERE is_default")
    assert list(default["model_spec"]) == [specs["vit"]]
    assert len(_query(home, "SELECT * FROM cross_model_agreement")) == 0


def test_the_same_folder_with_a_trailing_slash_is_listed_twice(monkeypatch, tmp_path):
    from attn_assets.settings import models_setting

    monkeypatch.delenv("ATTN_ASSETS_MODEL", raising=False)
    monkeypatch.setenv("ATTN_ASSETS_MODELS", f"a={tmp_path}/clip,b={tmp_path}/clip/")
    with pytest.raises(ValueError, match="listed twice"):
        models_setting()


def test_a_key_holding_three_dots_is_refused_with_its_reason(monkeypatch):
    from attn_assets.settings import models_setting

    monkeypatch.delenv("ATTN_ASSETS_MODEL", raising=False)
    monkeypatch.setenv("ATTN_ASSETS_MODELS", "clip...v2=/models/clip")  # a range 'a...b' in the Dagster UI
    with pytest.raises(ValueError, match=r"key 'clip\.\.\.v2' of item 1 .*partition range.*my-model=/models/clip"):
        models_setting()

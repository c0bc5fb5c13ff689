"""ATTN_ASSETS_MODELS from the command line: a conflicting --model or a malformed list stops before anything is
created, with one line saying what to change."""

from __future__ import annotations

import subprocess
import sys

import pytest

from attn_assets.settings import ModelEntry, model_key_for, model_setting, models_setting


def _cli(tmp_path, *args, **env):
    import os

    full = {k: v for k, v in os.environ.items() if not k.startswith("ATTN_ASSETS_")}
    full.update(ATTN_ASSETS_HOME=str(tmp_path / "home"), **env)
    return subprocess.run([sys.executable, "-m", "attn_assets.cli", *args], capture_output=True, text=True,
                          env=full, timeout=300)


@pytest.mark.parametrize("listed, extra, message", [
    ("a=x/y,,b", {}, "item 2 is empty"),
    ("a=x/y,b=x/y", {}, "'x/y' is listed twice"),
    ("a=x/y,a=z", {}, "both have the key 'a'"),
    ("Bad Key=x/y", {}, "must match"),
    ("a=x/y", {"ATTN_ASSETS_COMPARE_MODELS": "x/y,z"}, "was renamed ATTN_ASSETS_MODELS"),
])
def test_malformed_list_is_refused_before_anything_is_created(tmp_path, listed, extra, message):
    result = _cli(tmp_path, "materialize", ATTN_ASSETS_MODELS=listed, **extra)
    assert result.returncode != 0 and message in result.stderr + result.stdout
    assert not (tmp_path / "home").exists()


def test_a_conflicting_model_flag_is_an_error_not_silently_ignored(tmp_path):
    result = _cli(tmp_path, "materialize", "--model", "q", ATTN_ASSETS_MODELS="a=x/y")
    assert result.returncode != 0
    assert "ATTN_ASSETS_MODEL='q' but ATTN_ASSETS_MODELS lists 'x/y' first" in result.stderr
    assert not (tmp_path / "home").exists()


def test_keys_and_the_default(monkeypatch):
    monkeypatch.delenv("ATTN_ASSETS_MODEL", raising=False)
    monkeypatch.setenv("ATTN_ASSETS_MODELS", "geolocal/StreetCLIP, clip=openai/clip-vit-large-patch14-336,"
                                             "random:vit-b16,/data/run=3/model")
    assert models_setting() == (ModelEntry("streetclip", "geolocal/StreetCLIP"),
                                ModelEntry("clip", "openai/clip-vit-large-patch14-336"),
                                ModelEntry("random-vit-b16", "random:vit-b16"),
                                ModelEntry("model", "/data/run=3/model"))  # '=' inside a path is part of the spec
    assert model_setting() == "geolocal/StreetCLIP"
    monkeypatch.setenv("ATTN_ASSETS_MODEL", "geolocal/StreetCLIP")  # the same default: fine
    assert model_setting() == "geolocal/StreetCLIP"
    monkeypatch.delenv("ATTN_ASSETS_MODELS")
    assert models_setting() == (ModelEntry("streetclip", "geolocal/StreetCLIP"),)
    assert model_key_for("C:\\models\\My Model") == "my-model"


def test_querying_a_table_an_older_warehouse_lacks_says_how_to_build_it(tmp_path):
    import duckdb

    database = tmp_path / "attention.duckdb"
    with duckdb.connect(str(database)) as con:  # a warehouse written before the models group existed
        con.execute("CREATE TABLE attention_statistics (image_id VARCHAR)")
    result = _cli(tmp_path, "sql", "--database", str(database), "SELECT * FROM models JOIN model_differences USING (model_key)")
    assert result.returncode != 0
    assert "the warehouse has not built model_differences, models yet: `attn-assets materialize`" in result.stderr

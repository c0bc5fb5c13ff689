"""Shard recipes (passes/recipe.py): what changes a shard's results, cheaply, and how a difference is reported."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow as pa
import pytest

from attn_assets.passes import recipe as R
from attn_assets.settings import Settings


def test_image_set_ignores_order_but_not_ids_or_paths():
    base = R.image_set_fingerprint(["a", "b"], ["a.jpg", "b.jpg"])
    assert R.image_set_fingerprint(["b", "a"], ["b.jpg", "a.jpg"]) == base
    assert R.image_set_fingerprint(["a"], ["a.jpg"]) != base  # a row removed
    assert R.image_set_fingerprint(["a", "b"], ["a.jpg", "moved/b.jpg"]) != base  # a path changed
    assert R.image_set_fingerprint(["a", "b", "c"], ["a.jpg", "b.jpg", "c.jpg"]) != base
    # surrogate-escaped names (non-UTF-8 bytes in a file name) hash without error
    assert R.image_set_fingerprint(["x"], ["caf\udce9.jpg"]) != R.image_set_fingerprint(["x"], ["cafe.jpg"])


def test_local_model_parts_follow_content_not_formatting(tiny_model_dir, tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(tiny_model_dir, folder)
    parts = R.model_parts(str(folder))
    assert parts["weights"].startswith("local ") and parts["preprocessing"] not in ("none", "missing")
    assert R.model_parts(str(folder)) == parts  # stable

    processor = folder / "preprocessor_config.json"
    config = json.loads(processor.read_text())
    processor.write_text(json.dumps(config, indent=7, sort_keys=True))  # formatting only
    assert R.model_parts(str(folder)) == parts
    config["crop_size"] = {"height": 40, "width": 40}
    processor.write_text(json.dumps(config))
    changed = R.model_parts(str(folder))
    assert changed["weights"] == parts["weights"] and changed["preprocessing"] != parts["preprocessing"]

    model_config = folder / "config.json"
    data = json.loads(model_config.read_text())
    data["layer_norm_eps"] = 1e-6
    model_config.write_text(json.dumps(data))
    assert R.model_parts(str(folder))["weights"] != parts["weights"]


def test_large_weight_files_are_identified_by_size_mtime_and_header(tmp_path, monkeypatch):
    folder = tmp_path / "big"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    header = json.dumps({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}).encode()
    blob = folder / "model.safetensors"
    blob.write_bytes(len(header).to_bytes(8, "little") + header + b"\0" * 8)
    monkeypatch.setattr(R, "SMALL_FILE_BYTES", 4)  # treat it as large: never read whole
    first = R.model_parts(str(folder))["weights"]
    blob.write_bytes(len(header).to_bytes(8, "little") + header + b"\1" * 8)  # same size, new mtime
    assert R.model_parts(str(folder))["weights"] != first


def test_hub_ids_resolve_the_cached_commit_without_network(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    assert "not in the local cache" in R.model_parts("someone/model")["weights"]
    refs = tmp_path / "hub" / "models--someone--model" / "refs"
    refs.mkdir(parents=True)
    (refs / "main").write_text("a" * 40)
    assert R.model_parts("someone/model")["weights"] == "someone/model@" + "a" * 40
    (refs / "main").write_text("b" * 40)  # the hub's main moved and the new snapshot was downloaded
    assert R.model_parts("someone/model")["weights"] == "someone/model@" + "b" * 40
    # StreetCLIP is read from refs/pr/1 (the only revision with safetensors)
    pr = tmp_path / "hub" / "models--geolocal--StreetCLIP" / "refs" / "refs" / "pr"
    pr.mkdir(parents=True)
    (pr / "1").write_text("c" * 40)
    assert R.model_parts("geolocal/StreetCLIP")["weights"] == "geolocal/StreetCLIP@" + "c" * 40
    assert R.model_parts("someone/model@" + "d" * 40)["weights"] == "someone/model@" + "d" * 40


def test_random_and_missing_specs_never_raise(tmp_path):
    assert R.model_parts("random:tiny") != R.model_parts("random:streetclip")
    assert R.model_parts(str(tmp_path / "nope"))["weights"].startswith("missing ")


def test_stale_reason_names_what_changed():
    recipe = R.Recipe.build("statistics", "random:tiny", code_version="3", precision="fp32", weights="w",
                            preprocessing="p")
    record = recipe.record("set1")
    assert R.stale_reason(record, recipe, "set1") is None
    assert R.stale_reason(None, recipe, "set1").startswith("no recorded recipe")
    other_model = R.Recipe.build("statistics", "/models/clip", **recipe.parts_dict)
    assert R.stale_reason(record, other_model, "set1") == "model changed: random:tiny -> /models/clip"
    bf16 = R.Recipe.build("statistics", "random:tiny", **{**recipe.parts_dict, "precision": "bf16"})
    assert R.stale_reason(record, bf16, "set1") == "recipe changed: precision fp32 -> bf16"
    assert R.stale_reason(record, recipe, "set2").startswith("image set changed")
    # the code version (Dagster's) follows the recipe; the model key alone changes it too
    assert recipe.code_version.startswith("3+") and recipe.code_version != bf16.code_version
    assert recipe.code_version != other_model.code_version


def test_records_round_trip_through_parquet_metadata(tmp_path):
    import pyarrow.parquet as pq

    recipe = R.Recipe.build("rollout", "m", code_version="1", precision="fp32")
    record = recipe.record("imgs")
    table = pa.table({"x": [1]}).replace_schema_metadata({b"other": b"kept"})
    pq.write_table(R.with_record(table, record), tmp_path / "f.parquet")
    assert R.read_record(tmp_path / "f.parquet") == record
    assert pq.read_schema(tmp_path / "f.parquet").metadata[b"other"] == b"kept"
    assert R.read_record(tmp_path / "missing.parquet") is None
    pq.write_table(table, tmp_path / "old.parquet")
    assert R.read_record(tmp_path / "old.parquet") is None  # written before recipes were recorded
    assert recipe.record("imgs").token != record.token  # every write gets its own token


def test_settings_enter_their_pass_only(monkeypatch):
    monkeypatch.setenv("ATTN_ASSETS_MODEL", "random:tiny")
    monkeypatch.setenv("ATTN_ASSETS_DEVICE", "cpu")
    monkeypatch.delenv("ATTN_ASSETS_ABLATION_FRACTION", raising=False)
    monkeypatch.delenv("ATTN_ASSETS_PRECISION", raising=False)
    base = Settings.from_env()
    fingerprints = {p: R.pass_recipe(base, p).fingerprint for p in ("statistics", "rollout", "ablation", "geolocation")}
    assert R.pass_recipe(base, "statistics").parts_dict["precision"] == "fp32"  # auto on a CPU

    monkeypatch.setenv("ATTN_ASSETS_ABLATION_FRACTION", "0.25")
    monkeypatch.setenv("ATTN_ASSETS_PLONK_STEPS", "10")
    changed = Settings.from_env()
    assert R.pass_recipe(changed, "statistics").fingerprint == fingerprints["statistics"]
    assert R.pass_recipe(changed, "rollout").fingerprint == fingerprints["rollout"]
    assert R.pass_recipe(changed, "ablation").fingerprint != fingerprints["ablation"]
    assert R.pass_recipe(changed, "geolocation").fingerprint != fingerprints["geolocation"]
    # geolocation also follows the statistics file its embeddings come from
    embeddings = R.pass_recipe(base, "statistics").record("imgs")
    assert (R.pass_recipe(base, "geolocation", embeddings).fingerprint
            != R.pass_recipe(base, "geolocation", R.pass_recipe(base, "statistics").record("imgs")).fingerprint)


@pytest.mark.parametrize("setting", ["cuda:7", "bogus"])
def test_code_version_never_fails_the_definitions_load(monkeypatch, setting):
    monkeypatch.setenv("ATTN_ASSETS_MODEL", "random:tiny")
    monkeypatch.setenv("ATTN_ASSETS_DEVICE", setting)
    assert R.code_version_from_env("statistics").startswith(R.PASS_CODE_VERSIONS["statistics"] + "+")


def test_pixel_path_settings_make_results_stale_only_when_they_change_pixels(monkeypatch):
    """crop_region and device decode change the model's input, so a shard computed with them is not the exact
    path's; the exact default adds nothing, so recipes recorded before these settings existed stay current."""
    monkeypatch.delenv("ATTN_ASSETS_RESIZE", raising=False)
    monkeypatch.delenv("ATTN_ASSETS_DECODE", raising=False)
    exact = {name: R.model_recipe(name, "random:tiny", "fp32", "cpu") for name in ("statistics", "rollout")}
    assert "resize" not in exact["statistics"].parts_dict and "decode" not in exact["statistics"].parts_dict
    monkeypatch.setenv("ATTN_ASSETS_RESIZE", "crop_region")
    for name, recipe in exact.items():
        changed = R.model_recipe(name, "random:tiny", "fp32", "cpu")
        assert changed.fingerprint != recipe.fingerprint and "resize (none) -> crop_region" in R.stale_reason(
            recipe.record("set"), changed, None)
    monkeypatch.delenv("ATTN_ASSETS_RESIZE")
    monkeypatch.setenv("ATTN_ASSETS_DECODE", "device")  # every encoder pass reads pixels through model_batches
    for name, recipe in exact.items():
        changed = R.model_recipe(name, "random:tiny", "fp32", "cpu")
        assert changed.parts_dict["decode"] == "device" and changed.fingerprint != recipe.fingerprint


def test_the_demo_spec_is_the_repositorys_demo_model_wherever_it_runs(tmp_path, monkeypatch):
    """'demo' names models/demo for the loader; its recipe must identify those files too, not a hub id nor a
    folder called demo under the working directory (data/demo holds the demo images)."""
    from attn_assets.core.model import DEMO_MODEL_DIR

    if not (DEMO_MODEL_DIR / "config.json").is_file():
        pytest.skip("models/demo is not in this checkout")
    expected = R.model_parts(str(DEMO_MODEL_DIR))
    assert R.model_parts("demo") == expected and expected["weights"].startswith("local ")
    (tmp_path / "demo").mkdir()  # a decoy folder in the working directory
    monkeypatch.chdir(tmp_path)
    assert R.model_parts("demo") == expected

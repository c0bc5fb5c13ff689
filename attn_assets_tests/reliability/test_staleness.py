"""What produced a stored result changes (the shard recipe) and rows leave or change in the manifest.

Real homes in temp folders, tiny models saved with save_pretrained, `attn-assets materialize` (materialize_all):

* the model, precision, code version, processor config or weights change -> every shard is stale (the one
  function `shards_needing_run`, the UI's stale status), `materialize` recomputes it, and the warehouse never
  holds two models' rows (a warehouse rebuilt before the recompute leaves the stale shards out);
* rows removed from the manifest, a changed path, a changed country, a shard whose rows all left -> exactly the
  current manifest in every table, the CSV export and the gallery index files; counts in image_manifest's
  metadata; a second run is up to date and duplicates nothing.
"""

from __future__ import annotations

import csv
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
import torch

from attn_assets.passes import recipe as recipe_module
from attn_assets.passes.recipe import read_record
from attn_assets.defs.needs_run import shards_needing_run
from attn_assets.defs.shard_passes import with_recipe_code_versions
from attn_assets.passes.current import ABLATION, ROLLOUT, STATISTICS, CurrentState
from attn_assets.orchestration import materialize_all
from attn_assets.storage.layout import HomeLayout
from attn_assets.storage.warehouse import Warehouse
from attn_assets_tests.conftest import TINY_IMAGE, sharpen_attention, tiny_clip_config, tiny_processor
from attn_assets_tests.defs.conftest import write_scene

pytestmark = pytest.mark.slow

GALLERIES = ("high_concentration", "low_concentration", "high_entropy", "low_entropy")
# 8 images, shards of 2: shard-00000 a b | shard-00001 c d | shard-00002 e f | shard-00003 g h (h is corrupt)
ROWS = [("img-a", "FR"), ("img-b", "FR"), ("img-c", "DE"), ("img-d", "DE"), ("img-e", "JP"), ("img-f", "JP"),
        ("img-g", "US"), ("img-h", "US")]
CORRUPT = "img-h"


@dataclass
class Home:
    tmp: Path
    home: Path
    root: Path
    manifest: Path
    model_dir: Path

    @property
    def layout(self) -> HomeLayout:
        return HomeLayout(self.home)

    @property
    def store(self) -> Warehouse:
        return Warehouse(self.layout.warehouse_path)

    def write_manifest(self, rows: list[tuple[str, str, str]]) -> None:
        with open(self.manifest, "w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(["image_id", "path", "country"])
            writer.writerows(rows)


def _save_tiny_model(directory: Path, seed: int, **config) -> Path:
    from transformers import CLIPVisionModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CLIPVisionModel(tiny_clip_config(**config))
    sharpen_attention(model.encoder.layers if hasattr(model, "encoder") else model.vision_model.encoder.layers)
    model.save_pretrained(directory)
    tiny_processor().save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def other_grid_model_dir(tmp_path_factory) -> Path:
    """A second tiny CLIP vision model with another grid (patch 12 at 48 px: 4x4 instead of 6x6)."""
    return _save_tiny_model(tmp_path_factory.mktemp("tiny_clip_4x4"), seed=99, patch_size=12)


@pytest.fixture
def home(tmp_path, monkeypatch, tiny_model_dir) -> Home:
    model_dir = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model_dir)  # a folder of our own: the tests edit it
    fixture = Home(tmp=tmp_path, home=tmp_path / "home", root=tmp_path / "images",
                   manifest=tmp_path / "images" / "manifest.csv", model_dir=model_dir)
    for i, (image_id, _) in enumerate(ROWS):
        write_scene(fixture.root / f"{image_id}.jpg", seed=200 + i, size=(96 + 16 * (i % 3), 72))
    (fixture.root / f"{CORRUPT}.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    fixture.write_manifest([(image_id, f"{image_id}.jpg", country) for image_id, country in ROWS])
    (tmp_path / "dagster_home").mkdir()
    env = {"ATTN_ASSETS_HOME": fixture.home, "DAGSTER_HOME": tmp_path / "dagster_home",
           "ATTN_ASSETS_MANIFEST": fixture.manifest, "ATTN_ASSETS_IMAGE_ROOT": fixture.root,
           "ATTN_ASSETS_MODEL": model_dir, "ATTN_ASSETS_DEVICE": "cpu", "ATTN_ASSETS_SHARD_SIZE": 2,
           "ATTN_ASSETS_NUM_WORKERS": 0, "ATTN_ASSETS_BATCH_SIZE": 4, "ATTN_ASSETS_GALLERY_SIZE": 3}
    for name, value in env.items():
        monkeypatch.setenv(name, str(value))
    for name in ("ATTN_ASSETS_PRECISION", "ATTN_ASSETS_ABLATION_FRACTION"):
        monkeypatch.delenv(name, raising=False)
    return fixture


@pytest.fixture
def instance(home):
    with dg.DagsterInstance.get() as instance:
        yield instance


def _ok(summary) -> None:
    assert summary.ok, "\n".join(summary.lines)


def _ran(summary, prefix: str) -> list[str]:
    return sorted(line.split("[")[1].split("]")[0] for line in summary.lines if line.startswith(prefix + "["))


def _stale_status(instance, key: str, partitions) -> dict[str, tuple[str, list[str]]]:
    """What the Dagster UI shows: the webserver's resolver over the definitions as a code location loads them now."""
    from dagster._core.asset_graph_view.asset_graph_view import AssetGraphView, TemporalContext
    from dagster._core.definitions.data_version import CachingStaleStatusResolver
    from dagster._time import get_current_datetime

    from attn_assets.definitions import build_definitions

    graph = with_recipe_code_versions(build_definitions()).resolve_asset_graph()
    view = AssetGraphView(temporal_context=TemporalContext(effective_dt=get_current_datetime(), last_event_id=None),
                          instance=instance, asset_graph=graph)
    resolver = CachingStaleStatusResolver(instance=instance, asset_graph=graph, loading_context=view)
    asset_key = dg.AssetKey(key)
    return {p: (resolver.get_status(asset_key, p).value, [c.reason for c in resolver.get_stale_causes(asset_key, p)])
            for p in partitions}


_STALE_QUERY = """query ($key: AssetKeyInput!, $partitions: [String!]) {
  assetNodes(assetKeys: [$key]) {
    staleStatusByPartition(partitions: $partitions)
    staleCausesByPartition(partitions: $partitions) { reason key { path } }
  }
}"""


def _graphql_stale_status(instance, key: str, partitions) -> dict[str, tuple[str, list[str]]]:
    """The same through the webserver's GraphQL (staleStatusByPartition / staleCausesByPartition), with the
    project's workspace.yaml loaded in a code server process, as `make ui` does."""
    from dagster_graphql.test.utils import define_out_of_process_context, execute_dagster_graphql

    workspace = Path(__file__).resolve().parents[2] / "workspace.yaml"
    with define_out_of_process_context(str(workspace), None, instance) as context:
        result = execute_dagster_graphql(context, _STALE_QUERY, {"key": {"path": [key]}, "partitions": list(partitions)})
    assert not result.errors, result.errors
    node = result.data["assetNodes"][0]
    return {p: (status, [f"{'/'.join(c['key']['path'])}: {c['reason']}" for c in causes])
            for p, status, causes in zip(partitions, node["staleStatusByPartition"], node["staleCausesByPartition"])}


def _metadata(instance, key: str) -> dict:
    event = instance.get_latest_materialization_event(dg.AssetKey(key))
    return {k: v.value for k, v in event.asset_materialization.metadata.items()}


def _snapshot(home: Home) -> dict[str, pd.DataFrame]:
    """Every per-image table, the aggregates, the CSV export and the gallery index files."""
    tables = {name: home.store.query(f'SELECT * EXCLUDE (computed_at) FROM "{name}" ORDER BY ALL')
              for name in ("attention_statistics", "image_failures", "rollout_statistics")}
    tables.update({name: home.store.query(f'SELECT * FROM "{name}" ORDER BY ALL')
                   for name in ("images", "layer_statistics", "head_statistics", "artifact_statistics",
                                "spatial_statistics", "ablation_statistics", "country_aggregates")})
    tables["csv"] = pd.read_csv(home.layout.statistics_csv, dtype=str, keep_default_na=False)
    for folder in GALLERIES:
        tables[folder] = pd.read_csv(home.layout.visualizations_dir / folder / "index.csv", dtype=str,
                                     keep_default_na=False)
    return tables


def _ids(frame: pd.DataFrame) -> list[str]:
    return sorted(set(frame["image_id"]))


# --------------------------------------------------------------------------- the recipe


def test_model_change_recomputes_every_shard_and_never_mixes_models(home, instance, other_grid_model_dir, monkeypatch):
    _ok(materialize_all(instance=instance))
    keys = sorted(instance.get_dynamic_partitions("shards"))
    assert keys == ["shard-00000", "shard-00001", "shard-00002", "shard-00003"]
    assert read_record(home.layout.shard_parquet(keys[0])).model_key == str(home.model_dir)
    before = home.store.query("SELECT DISTINCT model_spec, num_patches FROM attention_statistics")
    assert before.to_dict("records") == [{"model_spec": str(home.model_dir), "num_patches": 36}]
    status = _stale_status(instance, "attention_statistics", keys)
    assert all(s == ("FRESH", []) for s in status.values()), status

    # the README's step after the demo: point ATTN_ASSETS_MODEL at another model (here: another grid, 4x4)
    monkeypatch.setenv("ATTN_ASSETS_MODEL", str(other_grid_model_dir))
    needed = shards_needing_run(instance, STATISTICS)
    assert sorted(needed) == keys
    assert all(reason == f"model changed: {home.model_dir} -> {other_grid_model_dir}" for reason in needed.values())
    assert sorted(shards_needing_run(instance, ROLLOUT)) == keys
    status = _stale_status(instance, "attention_statistics", keys)
    assert all(s == ("STALE", ["has a new code version"]) for s in status.values()), status
    status = _graphql_stale_status(instance, "attention_statistics", keys)  # what the UI shows
    assert all(s == ("STALE", ["attention_statistics: has a new code version"]) for s in status.values()), status

    # a warehouse rebuilt before the shards are recomputed (e.g. from the UI) leaves the stale shards out
    from attn_assets.definitions import build_definitions

    defs = with_recipe_code_versions(build_definitions())
    result = defs.resolve_job_def("downstream_job").execute_in_process(instance=instance, raise_on_error=False)
    assert result.success
    assert home.store.query("SELECT count(*) AS n FROM attention_statistics")["n"][0] == 0
    assert home.store.query("SELECT count(*) AS n FROM image_failures")["n"][0] == 0
    warehouse_meta = _metadata(instance, "attention_warehouse")
    assert warehouse_meta["excluded_shards"] == 4 and "model changed" in warehouse_meta["excluded_summary"]
    assert _metadata(instance, "country_aggregates")["images_without_current_results"] == len(ROWS)

    summary = materialize_all(instance=instance)
    _ok(summary)
    assert _ran(summary, "attention_statistics") == keys
    assert any(line.startswith("attention_statistics: 4 shards to run: 4 model changed") for line in summary.lines)
    assert _ran(summary, "rollout/ablation") == keys
    after = home.store.query("SELECT DISTINCT model_spec, precision, num_patches FROM attention_statistics")
    assert after.to_dict("records") == [{"model_spec": str(other_grid_model_dir), "precision": "fp32", "num_patches": 16}]
    for table in ("image_failures", "rollout_statistics"):
        assert set(home.store.query(f"SELECT DISTINCT model_spec FROM {table}")["model_spec"]) == {
            str(other_grid_model_dir)}, table
    counts = home.store.query("SELECT (SELECT count(*) FROM attention_statistics) AS ok, "
                              "(SELECT count(*) FROM image_failures) AS failed, "
                              "(SELECT sum(image_count) FROM country_aggregates) AS aggregated").iloc[0]
    assert (counts.ok, counts.failed, counts.aggregated) == (7, 1, 7)
    assert _metadata(instance, "country_aggregates")["images_without_current_results"] == 0
    assert _metadata(instance, "country_aggregates")["model_spec"] == str(other_grid_model_dir)
    assert _metadata(instance, "attention_warehouse")["excluded_shards"] == 0
    assert len(pd.read_csv(home.layout.statistics_csv)) == 7
    assert (home.layout.visualizations_dir / "country_mean_maps.png").exists()  # 4x4 maps only: no broadcast error
    status = _stale_status(instance, "attention_statistics", keys)
    assert all(s == ("FRESH", []) for s in status.values()), status
    assert all(s == ("FRESH", []) for s in _graphql_stale_status(instance, "attention_statistics", keys).values())

    again = materialize_all(instance=instance)
    _ok(again)
    assert "attention_statistics: every shard up to date" in again.lines
    assert "rollout/ablation: every shard up to date" in again.lines
    assert "downstream assets: up to date" in again.lines


def test_precision_code_version_processor_and_weights_make_shards_stale(home, instance, monkeypatch):
    _ok(materialize_all(instance=instance))
    keys = sorted(instance.get_dynamic_partitions("shards"))
    assert shards_needing_run(instance, STATISTICS) == {}
    # each partition's materialization carries what its file records, and a data version per write
    record = read_record(home.layout.shard_parquet(keys[1]))
    event = instance.fetch_materializations(dg.AssetRecordsFilter(
        asset_key=dg.AssetKey("attention_statistics"), asset_partitions=[keys[1]]), limit=1).records[0]
    materialization = event.asset_materialization
    assert materialization.metadata["recipe_fingerprint"].value == record.fingerprint
    assert materialization.metadata["image_set"].value == record.image_set
    assert materialization.metadata["model_spec"].value == str(home.model_dir)
    assert materialization.tags["dagster/data_version"] and materialization.tags["dagster/code_version"].startswith("3+")

    # precision: every shard stale, recomputed by materialize, the warehouse holds bf16 rows only
    monkeypatch.setenv("ATTN_ASSETS_PRECISION", "bf16")
    needed = shards_needing_run(instance, STATISTICS)
    assert needed == {key: "recipe changed: precision fp32 -> bf16" for key in keys}
    assert all(s[0] == "STALE" for s in _stale_status(instance, "attention_statistics", keys).values())
    summary = materialize_all(instance=instance)
    _ok(summary)
    assert _ran(summary, "attention_statistics") == keys
    assert set(home.store.query("SELECT DISTINCT precision FROM attention_statistics")["precision"]) == {"bf16"}
    assert set(home.store.query("SELECT DISTINCT precision FROM rollout_statistics")["precision"]) == {"bf16"}
    assert shards_needing_run(instance, STATISTICS) == {}
    assert all(s == ("FRESH", []) for s in _stale_status(instance, "attention_statistics", keys).values())

    # the pass's code version, bumped by hand: only that pass is stale
    monkeypatch.setitem(recipe_module.PASS_CODE_VERSIONS, "statistics", "99")
    needed = shards_needing_run(instance, STATISTICS)
    assert needed == {key: "recipe changed: code_version 3 -> 99" for key in keys}
    assert all(s[0] == "STALE" for s in _stale_status(instance, "attention_statistics", keys).values())
    assert shards_needing_run(instance, ROLLOUT) == {}
    monkeypatch.setitem(recipe_module.PASS_CODE_VERSIONS, "statistics", "3")
    assert shards_needing_run(instance, STATISTICS) == {}

    # the processor config of the local model folder (content, not mtime: restoring it makes them current again)
    processor = home.model_dir / "preprocessor_config.json"
    original = processor.read_text()
    config = json.loads(original)
    config["image_mean"] = [0.5, 0.5, 0.5]
    processor.write_text(json.dumps(config, indent=2))
    needed = shards_needing_run(instance, STATISTICS)
    assert sorted(needed) == keys and all(r.startswith("recipe changed: preprocessing ") for r in needed.values())
    assert sorted(shards_needing_run(instance, ROLLOUT)) == keys
    assert all(s[0] == "STALE" for s in _stale_status(instance, "attention_statistics", keys).values())
    processor.write_text(original)
    assert shards_needing_run(instance, STATISTICS) == {}

    # new weights saved into the same folder
    _save_tiny_model(home.model_dir, seed=4321)
    needed = shards_needing_run(instance, STATISTICS)
    assert sorted(needed) == keys and all(r.startswith("recipe changed: weights local ") for r in needed.values())

    # an analysis setting: the ablation fraction makes only the ablation stale
    _save_tiny_model(home.model_dir, seed=1234)  # the fixture's model again (same bytes: current again)
    assert shards_needing_run(instance, STATISTICS) == {}
    monkeypatch.setenv("ATTN_ASSETS_ABLATION_FRACTION", "0.5")
    assert shards_needing_run(instance, ABLATION) == {key: "recipe changed: ablation_fraction 0.0 -> 0.5"
                                                      for key in keys}
    assert shards_needing_run(instance, ROLLOUT) == {}


# --------------------------------------------------------------------------- the manifest


def test_withdrawn_and_changed_rows_leave_every_output(home, instance, monkeypatch):
    monkeypatch.setenv("ATTN_ASSETS_ABLATION_FRACTION", "1")  # ablation rows too
    _ok(materialize_all(instance=instance))
    layout = home.layout
    before = _snapshot(home)
    all_ids = [image_id for image_id, _ in ROWS]
    assert _ids(before["images"]) == all_ids
    assert _ids(before["attention_statistics"]) == [i for i in all_ids if i != CORRUPT]
    assert _ids(before["image_failures"]) == [CORRUPT]
    for name in ("rollout_statistics", "ablation_statistics", "artifact_statistics", "spatial_statistics",
                 "layer_statistics", "head_statistics"):
        assert _ids(before[name]) == [i for i in all_ids if i != CORRUPT], name
    assert sorted(before["csv"]["image_id"]) == [i for i in all_ids if i != CORRUPT]
    assert dict(zip(before["country_aggregates"].country, before["country_aggregates"].image_count)) == {
        "DE": 2, "FR": 2, "JP": 2, "US": 1}
    untouched_mtime = layout.shard_parquet("shard-00002").stat().st_mtime_ns

    # img-b and the whole last shard (img-g, img-h) withdrawn; img-d moved to another file; img-e's country fixed
    write_scene(home.root / "moved" / "img-d.jpg", seed=999, size=(120, 90))
    home.write_manifest([("img-a", "img-a.jpg", "FR"), ("img-c", "img-c.jpg", "DE"), ("img-d", "moved/img-d.jpg", "DE"),
                         ("img-e", "img-e.jpg", "KR"), ("img-f", "img-f.jpg", "JP")])

    # the manifest alone first: the UI marks exactly the shards whose image set changed as stale
    from attn_assets.definitions import build_definitions

    defs = with_recipe_code_versions(build_definitions())
    assert defs.resolve_job_def("manifest_job").execute_in_process(instance=instance).success
    meta = _metadata(instance, "image_manifest")
    assert (meta["rows_added"], meta["rows_removed"], meta["rows_changed_path"], meta["rows_changed_country"],
            meta["rows_changed_coordinates"], meta["rows_changed_other"]) == (0, 3, 1, 1, 0, 0)
    assert meta["shards_image_set_changed"] == "shard-00000, shard-00001"
    assert meta["shards_dropped"] == "shard-00003"
    assert "img-b" in meta["changes_preview"] and "moved/img-d.jpg" in meta["changes_preview"]
    keys = sorted(instance.get_dynamic_partitions("shards"))
    assert keys == ["shard-00000", "shard-00001", "shard-00002"]  # the emptied shard's partition is deleted
    for shard_pass in (STATISTICS, ROLLOUT, ABLATION):
        assert not shard_pass.output(layout, "shard-00003").exists()
    status = _stale_status(instance, "attention_statistics", keys)
    assert status == {"shard-00000": ("STALE", ["has a new dependency data version"]),
                      "shard-00001": ("STALE", ["has a new dependency data version"]),
                      "shard-00002": ("FRESH", [])}, status
    status = _graphql_stale_status(instance, "attention_statistics", keys)  # the UI: root cause = the image set
    assert status == {"shard-00000": ("STALE", ["shard_image_sets: has a new data version"]),
                      "shard-00001": ("STALE", ["shard_image_sets: has a new data version"]),
                      "shard-00002": ("FRESH", [])}, status
    state = CurrentState.from_env()
    assert shards_needing_run(instance, STATISTICS, state) == {
        key: "image set changed (rows of this shard left the manifest or changed path)"
        for key in ("shard-00000", "shard-00001")}
    # the automation asks for the same: the schedule runs exactly those shards, the downstream sensor fires
    # (the manifest is newer than the warehouse: withdrawn rows and the new country must reach the tables)
    from datetime import datetime, timezone

    from attn_assets.defs.schedules import missing_shards_schedule
    from attn_assets.defs.sensors import downstream_refresh_sensor

    requests = missing_shards_schedule(dg.build_schedule_context(
        instance=instance, scheduled_execution_time=datetime(2026, 12, 1, 3, tzinfo=timezone.utc)))
    assert sorted(r.partition_key for r in requests) == ["shard-00000", "shard-00001"]
    assert isinstance(downstream_refresh_sensor(dg.build_sensor_context(instance=instance)), dg.RunRequest)

    summary = materialize_all(instance=instance)
    _ok(summary)
    assert "image_manifest: up to date" in summary.lines  # already done above
    assert _ran(summary, "attention_statistics") == ["shard-00000", "shard-00001"]
    assert _ran(summary, "rollout/ablation") == ["shard-00000", "shard-00001"]
    assert layout.shard_parquet("shard-00002").stat().st_mtime_ns == untouched_mtime  # country: no recompute

    after = _snapshot(home)
    current = ["img-a", "img-c", "img-d", "img-e", "img-f"]
    assert _ids(after["images"]) == current
    assert after["image_failures"].empty  # the corrupt image's failure left with its row
    for name in ("attention_statistics", "rollout_statistics", "ablation_statistics", "artifact_statistics",
                 "spatial_statistics", "layer_statistics", "head_statistics"):
        assert _ids(after[name]) == current, name
        countries = after[name].drop_duplicates("image_id").set_index("image_id")["country"].to_dict()
        assert countries == {"img-a": "FR", "img-c": "DE", "img-d": "DE", "img-e": "KR", "img-f": "JP"}, name
    assert dict(zip(after["csv"].image_id, after["csv"].country)) == {
        "img-a": "FR", "img-c": "DE", "img-d": "DE", "img-e": "KR", "img-f": "JP"}
    assert dict(zip(after["country_aggregates"].country, after["country_aggregates"].image_count)) == {
        "DE": 2, "FR": 1, "JP": 1, "KR": 1}
    # img-d's statistics are those of its new file (recomputed), the untouched images' are unchanged
    old = before["attention_statistics"].set_index("image_id")
    new = after["attention_statistics"].set_index("image_id")
    assert new.loc["img-d", "attention_entropy"] != old.loc["img-d", "attention_entropy"]
    for image_id in ("img-a", "img-c", "img-e", "img-f"):
        assert new.loc[image_id, "attention_entropy"] == pytest.approx(old.loc[image_id, "attention_entropy"], abs=1e-6)
    # gallery index files rank only current images, every one of them drawn
    for folder in GALLERIES:
        index = after[folder]
        assert set(index["image_id"]) <= set(current) and len(index) == 3, folder
        assert set(index["status"]) == {"ok"}, folder
        countries = dict(zip(index["image_id"], index["country"]))
        assert all(countries[i] == dict(zip(current, ["FR", "DE", "DE", "KR", "JP"]))[i] for i in countries)
    warehouse_meta = _metadata(instance, "attention_warehouse")
    assert warehouse_meta["shards_dropped"] == "shard-00003"
    assert warehouse_meta["excluded_shards"] == 0
    assert home.store.query("SELECT shard_key FROM shard_loads ORDER BY 1")["shard_key"].tolist() == keys

    # nothing left to do, and a re-run duplicates nothing
    again = materialize_all(instance=instance)
    _ok(again)
    assert {"image_manifest: up to date", "attention_statistics: every shard up to date",
            "rollout/ablation: every shard up to date", "downstream assets: up to date"} <= set(again.lines)
    for name, frame in _snapshot(home).items():
        pd.testing.assert_frame_equal(frame, after[name], obj=name)

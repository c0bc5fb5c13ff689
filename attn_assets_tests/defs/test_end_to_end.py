"""The whole graph, materialized for real into a temp DAGSTER_HOME, checked against the core run directly."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest

from attn_assets.core.extract import extract_to_frame
from attn_assets.core.loader import ImageRecord
from attn_assets.core.model import load_encoder
from attn_assets.orchestration import materialize_all
from attn_assets.storage.layout import HomeLayout
from attn_assets.metric_names import METRIC_NAMES
from attn_assets.storage.warehouse import Warehouse
from attn_assets_tests.defs.conftest import osv_row, write_osv_manifest, write_scene, GOOD_ROWS

pytestmark = pytest.mark.slow

TABLES = ["images", "attention_statistics", "image_failures", "manifest_rejections", "country_aggregates"]


def _tables(home) -> dict[str, pd.DataFrame]:
    store = Warehouse(HomeLayout(home).warehouse_path)
    return {t: store.query(f"SELECT * FROM {t} ORDER BY ALL") for t in TABLES}


def extract_records_for(encoder, records):
    from attn_assets.core.extract import extract_records

    for batch in extract_records(encoder, records, batch_size=3, device="cpu", precision="fp32", num_workers=0):
        yield from zip(batch.image_ids, batch.cls_embedding)


def test_whole_graph_matches_core_and_is_idempotent(pipeline_env, instance, tiny_model_dir):
    summary = materialize_all(instance=instance)
    assert summary.ok, "\n".join(summary.lines)
    tables = _tables(pipeline_env.home)

    # images: the good ones and the corrupt one, NA kept as Namibia, resolved countries
    images = tables["images"].set_index("image_id")
    assert sorted(images.index) == sorted(pipeline_env.image_ids + [pipeline_env.corrupt_id])
    assert images.loc["1000000000000003", "country"] == "NA"
    assert images.loc["1000000000000003", "country_name"] == "Namibia"
    assert images.loc["1000000000000006", "country"] == "JP"  # from unique_country
    assert images.loc["1000000000000008", "country"] == "DE"  # from reverse geocoding
    assert images["shard_key"].nunique() == 3  # 10 images, shards of 4
    # OSV-5M's metadata columns are typed columns of images, not keys of extra
    assert images.loc["1000000000000001", "drive_side"] == "right"
    assert images.loc["1000000000000001", "captured_at"] == pd.Timestamp("2021-06-01")
    assert "drive_side" not in images.loc["1000000000000001", "extra"]

    # statistics: row by row equal to the core run directly on the same files
    stats = tables["attention_statistics"].set_index("image_id").sort_index()
    # (each shard's rows in the shard's order and batch size, ATTN_ASSETS_BATCH_SIZE=3: the same float32
    # operations on the same shapes in this process, so the numbers are identical, not merely close)
    encoder = load_encoder(str(tiny_model_dir), "cpu")
    shard_rows = pd.read_parquet(HomeLayout(pipeline_env.home).images_parquet)
    shard_records = [[ImageRecord(i, p) for i, p in zip(rows["image_id"], rows["abs_path"])]
                     for _, rows in shard_rows.groupby("shard_key", sort=True)]
    runs = [extract_to_frame(encoder, records, batch_size=3) for records in shard_records]
    expected = pd.concat([run[0] for run in runs]).set_index("image_id").sort_index()
    expected_failures = pd.concat([run[2] for run in runs])
    assert list(stats.index) == list(expected.index) == sorted(pipeline_env.image_ids)
    for metric in METRIC_NAMES:
        np.testing.assert_array_equal(stats[metric].to_numpy(float), expected[metric].to_numpy(float), err_msg=metric)
    assert set(stats["model_spec"]) == {str(tiny_model_dir)}
    assert set(stats["precision"]) == {"fp32"}
    assert list(expected_failures["image_id"]) == [pipeline_env.corrupt_id]

    # failures and rejections
    failures = tables["image_failures"]
    assert list(failures["image_id"]) == [pipeline_env.corrupt_id]
    assert "not a readable image" in failures["reason"].iloc[0] or "truncated" in failures["reason"].iloc[0]
    rejections = tables["manifest_rejections"]
    assert sorted(rejections.loc[rejections.reason.str.contains("not found"), "image_id"]) == pipeline_env.missing_ids
    duplicate = rejections[rejections.image_id == pipeline_env.duplicate_id]
    assert len(duplicate) == 1 and "duplicate" in duplicate.reason.iloc[0].lower()
    assert duplicate.source_row.iloc[0] == 14  # header is line 1; the duplicate is the 13th data row

    # country aggregates equal pandas' groupby on the same rows
    by_country = stats.reset_index().groupby("country")
    aggregates = tables["country_aggregates"].set_index("country")
    assert aggregates["image_count"].to_dict() == by_country.size().to_dict()
    for metric in METRIC_NAMES:
        for stat in ("mean", "std", "min", "max"):
            ours = aggregates[f"{metric}_{stat}"].sort_index()
            theirs = getattr(by_country[metric], stat)().sort_index()
            np.testing.assert_allclose(ours.to_numpy(float), theirs.to_numpy(float), atol=1e-9, equal_nan=True)
    # beside each mean, the value uniform attention over the same patches would give
    num_patches = int(stats["num_patches"].iloc[0])
    assert (aggregates["attention_entropy_uniform"] - np.log(num_patches)).abs().max() < 1e-6
    assert (aggregates["attention_max_uniform"] == 1.0 / num_patches).all()
    assert (aggregates["num_high_attention_patches_uniform"] == 0).all()

    # seed CSV export and figures exist
    layout = HomeLayout(pipeline_env.home)
    csv = pd.read_csv(layout.statistics_csv, dtype={"image_id": str, "country": str}, keep_default_na=False)
    assert list(csv.columns) == ["image_id", "country", *METRIC_NAMES]
    assert len(csv) == len(stats) and "NA" in set(csv["country"])
    assert (layout.analysis_dir / "attention_distributions.png").stat().st_size > 10_000
    assert (layout.visualizations_dir / "diverse_examples_grid.png").exists()
    for folder in ("high_concentration", "low_concentration", "high_entropy", "low_entropy"):
        assert len(list((layout.visualizations_dir / folder).glob("*.png"))) == 3

    # shard files carry the float16 CLS embedding (PLONK's input), equal to the core's
    from attn_assets.storage.parquet import read_cls_embeddings

    embeddings = {}
    for shard_key in sorted(set(stats["shard_key"])):
        ids, values = read_cls_embeddings(layout.shard_parquet(shard_key))
        embeddings.update(zip(ids, values))
    batches = [pair for records in shard_records for pair in extract_records_for(encoder, records)]
    for image_id, embedding in batches:
        np.testing.assert_array_equal(embeddings[image_id], embedding.astype(np.float16))

    # without diff-plonk the geolocation group is skipped with the install hint, not failed
    from attn_assets.core.geolocation import plonk_missing_reason

    if plonk_missing_reason() is not None:
        assert any(line.startswith("geolocation: skipped") and "attn-assets[plonk]" in line for line in summary.lines)

    # a second call does nothing and leaves every table unchanged
    again = materialize_all(instance=instance)
    assert again.ok
    assert "image_manifest: up to date" in again.lines
    assert "attention_statistics: every shard up to date" in again.lines
    assert "downstream assets: up to date" in again.lines
    for name, frame in _tables(pipeline_env.home).items():
        pd.testing.assert_frame_equal(frame, tables[name], obj=name)


def test_new_images_only_create_and_compute_new_shards(pipeline_env, instance):
    assert materialize_all(instance=instance).ok
    layout = HomeLayout(pipeline_env.home)
    before = {p.name: p.stat().st_mtime_ns for p in layout.shards_dir.glob("*.parquet")}
    shards_before = set(instance.get_dynamic_partitions("shards"))
    assignments_before = Warehouse(layout.warehouse_path).query("SELECT image_id, shard_key FROM images")

    new_ids = [f"20000000000000{i:02d}" for i in range(5)]
    for i, image_id in enumerate(new_ids):
        write_scene(pipeline_env.image_path(image_id), seed=100 + i)
    # every accepted row stays (the corrupt one too: a removed row would make its shard stale, see
    # reliability/test_staleness.py); five new ones are appended
    rows = ([osv_row(*r) for r in GOOD_ROWS] + [osv_row(pipeline_env.corrupt_id, 41.9, 12.5, "IT", "IT", "right")]
            + [osv_row(i, 48.0, 2.0, "FR", "FR", "right") for i in new_ids])
    # the manifest is also reordered: assignments must not depend on row order
    write_osv_manifest(pipeline_env.manifest, rows[::-1])
    os.utime(pipeline_env.manifest)

    summary = materialize_all(instance=instance)
    assert summary.ok, "\n".join(summary.lines)
    new_shards = set(instance.get_dynamic_partitions("shards")) - shards_before
    assert len(new_shards) == 2  # five new images, shards of four
    computed = [line for line in summary.lines if line.startswith("attention_statistics[")]
    assert sorted(line.split("[")[1].split("]")[0] for line in computed) == sorted(new_shards)
    after = {p.name: p.stat().st_mtime_ns for p in layout.shards_dir.glob("*.parquet")}
    assert {k: after[k] for k in before} == before  # old shard files untouched

    store = Warehouse(layout.warehouse_path)
    assignments = store.query("SELECT image_id, shard_key FROM images")
    merged = assignments_before.merge(assignments, on="image_id", suffixes=("_before", "_after"))
    assert (merged.shard_key_before == merged.shard_key_after).all()
    assert set(assignments.loc[assignments.image_id.isin(new_ids), "shard_key"]) == new_shards
    counts = store.query("SELECT count(*) AS n, count(DISTINCT image_id) AS d FROM attention_statistics").iloc[0]
    assert counts.n == counts.d == len(pipeline_env.image_ids) + len(new_ids)

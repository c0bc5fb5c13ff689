"""OSV-5M's metadata as typed columns of `images`, and group_aggregates by them, checked by hand."""

from __future__ import annotations

import csv
from datetime import datetime, timezone

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from attn_assets.catalog.manifest import read_manifest
from attn_assets.metric_names import METRIC_NAMES
from attn_assets.osv5m_columns import GROUP_DIMENSIONS, OSV_METADATA_COLUMNS
from attn_assets.storage.parquet import build_shard_results, write_table_atomic
from attn_assets.storage.warehouse import Warehouse

HEADER = ["id", "latitude", "longitude", "country", "sequence", "captured_at", "lon_bin", "lat_bin", "cell",
          "region", "sub-region", "city", "land_cover", "road_index", "drive_side", "climate", "soil", "dist_sea",
          "quadtree_10_1000", "unique_country", "creator_id"]

# id, captured_at, drive_side, climate, land_cover, soil, dist_sea
ROWS = [
    ("11", "1461772345000", "1", "15", "4", "3", "0.0068841379890803"),
    ("12", "2021-06-01", "0", "15.0", "4", "", "12.5"),
    ("13", "1461772345000.0", "0", "8", "", "3", ""),
    ("14", "", "", "", "2", "7", "nan"),
    ("15", "1500000000000", "1", "8", "2", "7", "3"),
]


def _manifest(tmp_path, rows) -> "Path":  # noqa: F821
    for image_id, *_ in rows:
        path = tmp_path / "images" / "test" / "00" / f"{image_id}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")  # the manifest step only looks files up; it never opens them
    manifest = tmp_path / "test.csv"
    with open(manifest, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=HEADER)
        writer.writeheader()
        for image_id, captured, side, climate, land, soil, sea in rows:
            writer.writerow(dict(id=image_id, latitude="-43.8", longitude="-176.6", country="NZ", sequence=f"s{image_id}",
                                 captured_at=captured, lon_bin="0", lat_bin="8", cell="(0, 8)", region="Chatham Islands",
                                 **{"sub-region": ""}, city="Waitangi", land_cover=land, road_index="4.661764145",
                                 drive_side=side, climate=climate, soil=soil, dist_sea=sea, quadtree_10_1000="17",
                                 unique_country="NZ", creator_id="111336221091714.0"))
    return manifest


def test_typed_columns_parse_and_stay_out_of_extra(tmp_path):
    result = read_manifest(_manifest(tmp_path, ROWS), image_root=tmp_path, geocode=False)
    images = result.images.set_index("image_id")
    assert result.rejections.empty
    assert images["drive_side"].fillna("NULL").tolist() == ["left", "right", "right", "NULL", "left"]
    assert images["climate"].fillna(-1).tolist() == [15, 15, 8, -1, 8]
    assert str(images["climate"].dtype) == "Int32" and str(images["soil"].dtype) == "Int32"
    assert images.loc["11", "captured_at"] == pd.Timestamp("2016-04-27 15:52:25")  # 1461772345000 ms after 1970 UTC
    assert images.loc["12", "captured_at"] == pd.Timestamp("2021-06-01")
    assert images.loc["13", "captured_at"] == images.loc["11", "captured_at"]
    assert pd.isna(images.loc["14", "captured_at"])
    assert images.loc["11", "dist_sea"] == 0.0068841379890803 and np.isnan(images.loc["14", "dist_sea"])
    assert pd.isna(images.loc["11", "sub_region"])
    assert images.loc["11", "quadtree_10_1000"] == 17 and pd.isna(images.loc["11", "quadtree_10_5000"])
    assert images.loc["11", "cell"] == "(0, 8)" and images.loc["11", "lat_bin"] == 8
    assert result.extra_columns == ["unique_country", "creator_id"]


@pytest.mark.parametrize("column, value, reason", [
    ("climate", "abc", "climate 'abc' is not a whole number such as 15; correct the cell or leave it empty"),
    ("climate", "2.5", "climate '2.5' is not a whole number"),
    ("drive_side", "2", "drive_side '2' is not 1 or 'left' (traffic on the left), 0 or 'right'"),
    ("dist_sea", "far", "dist_sea 'far' is not a decimal number"),
    ("captured_at", "yesterday", "captured_at 'yesterday' is not milliseconds since 1970-01-01 UTC"),
])
def test_a_bad_value_rejects_its_row_naming_column_and_value(tmp_path, column, value, reason):
    rows = [list(r) for r in ROWS]
    position = {"captured_at": 1, "drive_side": 2, "climate": 3, "dist_sea": 6}[column]
    rows[1][position] = value
    result = read_manifest(_manifest(tmp_path, rows), image_root=tmp_path, geocode=False)
    assert "12" not in set(result.images["image_id"])
    (rejection,) = result.rejections.itertuples()
    assert (rejection.source_row, rejection.column) == (3, column)
    assert rejection.reason.startswith(reason), rejection.reason


def _warehouse_with_statistics(tmp_path) -> tuple[Warehouse, pd.DataFrame, dict[str, np.ndarray]]:
    result = read_manifest(_manifest(tmp_path, ROWS), image_root=tmp_path, geocode=False)
    images = result.images.assign(shard_key="shard-00000")
    images_parquet = write_table_atomic(pa.Table.from_pandas(images, preserve_index=False), tmp_path / "images.parquet")
    store = Warehouse(tmp_path / "attention.duckdb")
    store.replace_images(images_parquet)
    ids = images["image_id"].tolist()
    rng = np.random.default_rng(7)
    metrics = {m: rng.random(len(ids)) for m in METRIC_NAMES}
    metrics["num_high_attention_patches"] = rng.integers(0, 12, len(ids))
    shard = build_shard_results(
        shard_key="shard-00000", image_ids=ids, paths=images["path"].tolist(), countries=["NZ"] * len(ids),
        metrics=metrics, cls_maps=rng.random((len(ids), 3, 4), dtype=np.float32), failures=[],
        model_spec="random:tiny", precision="fp32", computed_at=datetime.now(timezone.utc))
    store.sync_shards({"shard-00000": write_table_atomic(shard, tmp_path / "shard-00000.parquet")})
    return store, images, metrics


def test_warehouse_types_the_columns(tmp_path):
    store, _, _ = _warehouse_with_statistics(tmp_path)
    types = dict(store.query("SELECT column_name, data_type FROM information_schema.columns "
                             "WHERE table_name = 'images'").itertuples(index=False))
    for column in OSV_METADATA_COLUMNS:
        assert types[column.name] == column.sql_type, column.name
    row = store.query("SELECT drive_side, climate, captured_at, extra FROM images WHERE image_id = '11'").iloc[0]
    assert (row.drive_side, row.climate, row.captured_at) == ("left", 15, pd.Timestamp("2016-04-27 15:52:25"))
    assert "drive_side" not in row.extra and "climate" not in row.extra and "creator_id" in row.extra
    by_side = store.query("SELECT drive_side, count(*) AS n FROM images GROUP BY drive_side ORDER BY drive_side")
    assert by_side.fillna("NULL").values.tolist() == [["left", 2], ["right", 2], ["NULL", 1]]


def test_group_aggregates_by_hand_and_rerun_without_duplicates(tmp_path):
    store, images, metrics = _warehouse_with_statistics(tmp_path)
    baseline = {m: 100.0 + k for k, m in enumerate(METRIC_NAMES)}
    seen_patches = []

    def uniform(num_patches: int) -> dict[str, float]:
        seen_patches.append(num_patches)
        return baseline

    rows = store.refresh_group_aggregates(uniform_baselines=uniform)
    assert seen_patches and set(seen_patches) == {12}  # 3 x 4 maps
    table = store.query("SELECT * FROM group_aggregates")
    expected_rows = sum(images[d].nunique(dropna=True) + int(images[d].isna().any()) for d in GROUP_DIMENSIONS)
    assert rows == len(table) == expected_rows

    climate = table[table.dimension == "climate"].set_index("value", drop=False)
    assert sorted(climate["value"].fillna("NULL")) == ["15", "8", "NULL"]
    values = images["climate"].to_numpy(dtype=float, na_value=np.nan)
    for value, mask in (("15", values == 15), ("8", values == 8)):
        got = climate.loc[value]
        assert got.image_count == mask.sum() == 2
        for metric in METRIC_NAMES:
            x = np.asarray(metrics[metric], dtype=float)[mask]
            # DuckDB's avg / stddev_samp over two float64 values: a few ulps of 1 from numpy's
            assert got[f"{metric}_mean"] == pytest.approx(x.mean(), rel=1e-12)
            assert got[f"{metric}_std"] == pytest.approx(x.std(ddof=1), rel=1e-12)
            assert (got[f"{metric}_min"], got[f"{metric}_max"]) == (x.min(), x.max())
            assert got[f"{metric}_uniform"] == baseline[metric]
    unknown = climate[climate["value"].isna()].iloc[0]
    assert unknown.image_count == 1
    assert unknown.attention_entropy_mean == metrics["attention_entropy"][np.isnan(values)][0]
    assert np.isnan(unknown.attention_entropy_std)  # one image: no sample standard deviation

    store.refresh_group_aggregates(uniform_baselines=uniform)
    again = store.query("SELECT * FROM group_aggregates")
    assert len(again) == len(table)
    with pytest.raises(ValueError, match=r"no grouped aggregates by \['city'\]"):
        store.refresh_group_aggregates(dimensions=["city"])


def test_images_file_written_before_the_typed_columns_loads_with_nulls(tmp_path):
    result = read_manifest(_manifest(tmp_path, ROWS), image_root=tmp_path, geocode=False)
    old = result.images.drop(columns=[c.name for c in OSV_METADATA_COLUMNS] + ["member"]).assign(shard_key="shard-00000")
    path = write_table_atomic(pa.Table.from_pandas(old, preserve_index=False), tmp_path / "images.parquet")
    store = Warehouse(tmp_path / "attention.duckdb")
    assert store.replace_images(path) == len(ROWS)
    assert store.query("SELECT count(*) AS n FROM images WHERE climate IS NULL AND member IS NULL").n.iloc[0] == len(ROWS)

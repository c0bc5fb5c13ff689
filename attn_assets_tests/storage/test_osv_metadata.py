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
from attn_assets.osv5m_columns import GROUP_DIMENSIONS, NAMES_WITHIN_COUNTRY, OSV_METADATA_COLUMNS
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


@pytest.mark.parametrize("column, value, note", [
    ("climate", "Cfb", "1 cells of climate were not whole numbers (e.g. 'Cfb'); kept as text in extra->>'climate'"),
    ("climate", "2.5", "1 cells of climate were not whole numbers (e.g. '2.5')"),
    ("drive_side", "2", "1 cells of drive_side were not drive sides (1 or true or L or left"),
    ("dist_sea", "far", "1 cells of dist_sea were not decimal numbers (e.g. 'far')"),
    ("captured_at", "yesterday", "1 cells of captured_at were not plausible capture times"),
    ("captured_at", "0001-01-01", "1 cells of captured_at were not plausible capture times"),  # outside pandas' ns
    ("captured_at", "10000-01-01T00:00:00", "1 cells of captured_at were not plausible capture times"),
    ("captured_at", "2999-01-01", "1 cells of captured_at were not plausible capture times"),
    ("captured_at", "1500000000", "1 of them look like Unix seconds (e.g. '1500000000' = 2017-07-14): captured_at "
                                  "is milliseconds since 1970-01-01 UTC; multiply those by 1000"),
])
def test_a_bad_cell_is_null_and_noted_and_keeps_its_row(tmp_path, column, value, note):
    rows = [list(r) for r in ROWS]
    position = {"captured_at": 1, "drive_side": 2, "climate": 3, "dist_sea": 6}[column]
    rows[1][position] = value
    result = read_manifest(_manifest(tmp_path, rows), image_root=tmp_path, geocode=False)
    images = result.images.set_index("image_id")
    assert result.rejections.empty and len(images) == len(ROWS)
    assert pd.isna(images.loc["12", column])
    (written,) = [n for n in result.notes if n.startswith(f"1 cells of {column} ")]
    assert note in written, written
    assert images.loc["12", f"as_written:{column}"] == value and pd.isna(images.loc["11", f"as_written:{column}"])
    assert result.summary()["notes"] == result.notes


def test_the_text_of_a_bad_cell_is_in_extra_under_its_column(tmp_path):
    rows = [list(r) for r in ROWS]
    rows[1][3] = "Cfb"
    result = read_manifest(_manifest(tmp_path, rows), image_root=tmp_path, geocode=False)
    images = result.images.assign(shard_key="shard-00000")
    store = Warehouse(tmp_path / "attention.duckdb")
    store.replace_images(write_table_atomic(pa.Table.from_pandas(images, preserve_index=False),
                                            tmp_path / "images.parquet"))
    got = store.query("SELECT image_id, climate, extra->>'climate' AS written FROM images ORDER BY image_id")
    assert got["written"].fillna("NULL").tolist()[:2] == ["NULL", "Cfb"]
    assert got["climate"].iloc[0] == 15 and pd.isna(got["climate"].iloc[1])


def test_a_plain_list_with_columns_of_those_names_keeps_every_image(tmp_path):
    """Koppen letters, land cover words, L/R and NA cells in a user's own list: no image lost."""
    for name in ("n0", "n1", "n2", "n3"):
        (tmp_path / f"{name}.jpg").write_bytes(b"")
    listed = tmp_path / "user.csv"
    listed.write_text("image_id,path,country,climate,drive_side,soil,land_cover,region\n"
                      "n0,n0.jpg,FR,Cfb,R,loam,urban,NA\n"
                      "n1,n1.jpg,GB,Cfb,L,,,null\n"
                      "n2,n2.jpg,US,N/A,None,NULL,n/a,None\n"
                      "n3,n3.jpg,NA,15,r,3,4,Erongo\n", encoding="utf-8")
    result = read_manifest(listed, image_root=tmp_path, geocode=False)
    images = result.images.set_index("image_id")
    assert result.rejections.empty and list(images.index) == ["n0", "n1", "n2", "n3"]
    assert images["drive_side"].fillna("NULL").tolist() == ["right", "left", "NULL", "right"]
    assert images["climate"].fillna(-1).tolist() == [-1, -1, -1, 15]
    assert images["region"].fillna("NULL").tolist() == ["NULL", "NULL", "NULL", "Erongo"]
    assert images.loc["n3", "country"] == "NA"  # Namibia: the country column is not typed metadata
    assert images["as_written:climate"].fillna("NULL").tolist() == ["Cfb", "Cfb", "NULL", "NULL"]
    assert images["as_written:land_cover"].fillna("NULL").tolist() == ["urban", "NULL", "NULL", "NULL"]
    assert sorted(n.split(" were ")[0] for n in result.notes) == [
        "1 cells of land_cover", "1 cells of soil", "2 cells of climate"]


def test_a_parquet_boolean_drive_side_reads_true_as_left(tmp_path):
    for name in ("a", "b", "c"):
        (tmp_path / f"{name}.jpg").write_bytes(b"")
    table = pa.table({"image_id": ["a", "b", "c"], "path": ["a.jpg", "b.jpg", "c.jpg"],
                      "drive_side": pa.array([True, False, None], type=pa.bool_())})
    import pyarrow.parquet as pq
    pq.write_table(table, tmp_path / "list.parquet")
    result = read_manifest(tmp_path / "list.parquet", image_root=tmp_path, geocode=False)
    assert result.images["drive_side"].fillna("NULL").tolist() == ["left", "right", "NULL"]  # OSV-5M: 1 = left
    assert result.rejections.empty and not result.notes


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
    named = {d: (images["country"].fillna("?") + "/" + images[d]) if d in NAMES_WITHIN_COUNTRY else images[d]
             for d in GROUP_DIMENSIONS}
    expected_rows = sum(v.nunique(dropna=True) + int(v.isna().any()) for v in named.values())
    assert rows == len(table) == expected_rows
    # place names are grouped within their country: 'NZ/<city>', counted by hand
    cities = table[table.dimension == "city"].set_index("value")["image_count"]
    for (country, city), n in images.groupby(["country", "city"]).size().items():
        assert cities[f"{country}/{city}"] == n

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
    with pytest.raises(ValueError, match=r"no grouped aggregates by \['road_index'\]"):
        store.refresh_group_aggregates(dimensions=["road_index"])


def test_images_file_written_before_the_typed_columns_loads_with_nulls(tmp_path):
    result = read_manifest(_manifest(tmp_path, ROWS), image_root=tmp_path, geocode=False)
    old = result.images.drop(columns=[c.name for c in OSV_METADATA_COLUMNS] + ["member"]).assign(shard_key="shard-00000")
    path = write_table_atomic(pa.Table.from_pandas(old, preserve_index=False), tmp_path / "images.parquet")
    store = Warehouse(tmp_path / "attention.duckdb")
    assert store.replace_images(path) == len(ROWS)
    assert store.query("SELECT count(*) AS n FROM images WHERE climate IS NULL AND member IS NULL").n.iloc[0] == len(ROWS)

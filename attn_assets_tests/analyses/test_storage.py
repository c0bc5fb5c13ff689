"""Same-pass analysis columns: shard Parquet -> DuckDB tables in the shard's one transaction; old files still load."""

from __future__ import annotations

from datetime import datetime, timezone

import duckdb
import numpy as np
import pyarrow.parquet as pq

from attn_assets.metric_names import METRIC_NAMES
from attn_assets.storage.parquet import build_shard_results, read_head_map_sum, write_table_atomic
from attn_assets.storage.schema import (
    ATTENTION_STATISTICS,
    PERMUTED_SPATIAL_COLUMNS,
    SHARD_ANALYSIS_COLUMNS,
    SPATIAL_COLUMNS,
    WITHOUT_ARTIFACT_COLUMNS,
)
from attn_assets.storage.warehouse import Warehouse

LAYERS, HEADS, GRID = 3, 4, (2, 3)


def _analyses(n: int, rng) -> dict:
    out = {}
    for m in METRIC_NAMES:
        integer = m == "num_high_attention_patches"
        out[f"layer_{m}"] = rng.integers(0, 6, (n, LAYERS)) if integer else rng.random((n, LAYERS))
        out[f"head_{m}"] = rng.integers(0, 6, (n, HEADS)) if integer else rng.random((n, HEADS))
    out["head_similarity"] = rng.random(n)
    out["artifact_count"] = np.array([1] * n)
    out["artifact_indices"] = [np.array([i % 6], dtype=np.int32) for i in range(n)]
    for name in ("artifact_attention_share", "artifact_norm_median", "artifact_norm_threshold", "artifact_norm_max",
                 *SPATIAL_COLUMNS, *PERMUTED_SPATIAL_COLUMNS):
        out[name] = rng.random(n)
    for name in WITHOUT_ARTIFACT_COLUMNS:
        out[name] = rng.integers(0, 6, n) if name.startswith("num_high") else rng.random(n)
    out["head_map_sum"] = rng.random((HEADS, GRID[0] * GRID[1]))
    return out


def _shard(shard_key, ids, failed=(), analyses=None):
    n = len(ids)
    rng = np.random.default_rng(len(ids))
    metrics = {m: rng.random(n) for m in METRIC_NAMES}
    metrics["num_high_attention_patches"] = rng.integers(0, 6, n)
    return build_shard_results(
        shard_key=shard_key, image_ids=ids, paths=[f"{i}.jpg" for i in ids], countries=["FR"] * n, metrics=metrics,
        cls_maps=rng.random((n, *GRID), dtype=np.float32), failures=[(f, f"{f}.jpg", "FR", "broken") for f in failed],
        model_spec="random:tiny", precision="fp32", computed_at=datetime.now(timezone.utc), analyses=analyses,
    )


def test_analysis_columns_load_into_their_tables_and_replace_with_the_shard(tmp_path):
    rng = np.random.default_rng(0)
    analyses = _analyses(3, rng)
    path = write_table_atomic(_shard("shard-00000", ["a", "b", "c"], ["x"], analyses), tmp_path / "s0.parquet")
    assert read_head_map_sum(path)[1] == 3
    np.testing.assert_allclose(read_head_map_sum(path)[0], analyses["head_map_sum"])
    store = Warehouse(tmp_path / "w.duckdb")
    store.sync_shards({"shard-00000": path})

    layers = store.query("SELECT * FROM layer_statistics ORDER BY image_id, layer")
    assert len(layers) == 3 * LAYERS and list(layers["layer"][:LAYERS]) == list(range(LAYERS))
    for m in METRIC_NAMES:
        np.testing.assert_allclose(layers[m].to_numpy(float), np.asarray(analyses[f"layer_{m}"], float).ravel())
    heads = store.query("SELECT * FROM head_statistics ORDER BY image_id, head")
    assert len(heads) == 3 * HEADS
    np.testing.assert_allclose(heads["attention_entropy"], np.asarray(analyses["head_attention_entropy"]).ravel())
    stats = store.query("SELECT image_id, head_similarity FROM attention_statistics ORDER BY image_id")
    np.testing.assert_allclose(stats["head_similarity"], analyses["head_similarity"])
    artifacts = store.query("SELECT * FROM artifact_statistics ORDER BY image_id")
    assert [list(v) for v in artifacts["artifact_indices"]] == [[0], [1], [2]]
    assert set(artifacts["num_patches"]) == {6}
    spatial = store.query("SELECT * FROM spatial_statistics ORDER BY image_id")
    np.testing.assert_allclose(spatial["attention_share_left_permuted"], analyses["attention_share_left_permuted"])

    # a new version of the shard with fewer images replaces every table's rows of that shard
    smaller = write_table_atomic(_shard("shard-00000", ["a"], analyses=_analyses(1, rng)), tmp_path / "s0.parquet")
    store.sync_shards({"shard-00000": smaller})
    for table in ("layer_statistics", "head_statistics", "artifact_statistics", "spatial_statistics"):
        assert set(store.query(f"SELECT DISTINCT image_id FROM {table}")["image_id"]) == {"a"}, table
    store.sync_shards({})
    for table in ("layer_statistics", "head_statistics", "artifact_statistics", "spatial_statistics"):
        assert store.query(f"SELECT count(*) AS n FROM {table}")["n"][0] == 0, table


def test_shards_and_warehouses_from_before_the_analyses_still_load(tmp_path):
    # a shard file without the analysis columns (written before the shard files held them)
    table = _shard("shard-00001", ["a", "b"])
    old_columns = [c for c in table.column_names if c not in {col.name for col in SHARD_ANALYSIS_COLUMNS}]
    old = tmp_path / "old.parquet"
    pq.write_table(table.select(old_columns), old)
    # a warehouse whose attention_statistics predates head_similarity
    db = tmp_path / "w.duckdb"
    with duckdb.connect(str(db)) as con:
        columns = [c for c in ATTENTION_STATISTICS.columns if c.name != "head_similarity"]
        con.execute("CREATE TABLE attention_statistics (" + ", ".join(f'"{c.name}" {c.sql_type}' for c in columns) + ")")
    store = Warehouse(db)
    assert store.sync_shards({"shard-00001": old})["loaded"] == ["shard-00001"]
    stats = store.query("SELECT * FROM attention_statistics ORDER BY image_id")
    assert list(stats["image_id"]) == ["a", "b"] and stats["head_similarity"].isna().all()
    assert store.query("SELECT count(*) AS n FROM layer_statistics")["n"][0] == 0

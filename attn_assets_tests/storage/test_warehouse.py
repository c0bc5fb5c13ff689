"""Warehouse writes: shard-exact replaces, no duplicates, serialized writers, waiting on readers."""

from __future__ import annotations

import logging
import os
import multiprocessing as mp
import time
from datetime import datetime, timezone
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from attn_assets.storage.parquet import build_shard_results, read_cls_maps, write_table_atomic
from attn_assets.metric_names import METRIC_NAMES
from attn_assets.storage.warehouse import Warehouse, WarehouseBusyError


def _shard_table(shard_key: str, ids: list[str], failed: list[str] = (), offset: float = 0.0) -> pa.Table:
    n = len(ids)
    rng = np.random.default_rng(abs(hash((shard_key, offset))) % 2**32)
    maps = rng.random((n, 3, 4), dtype=np.float32)
    metrics = {m: rng.random(n) + offset for m in METRIC_NAMES}
    metrics["num_high_attention_patches"] = rng.integers(0, 12, n)
    return build_shard_results(
        shard_key=shard_key, image_ids=ids, paths=[f"{i}.jpg" for i in ids], countries=["FR"] * n,
        metrics=metrics, cls_maps=maps, failures=[(f, f"{f}.jpg", "NA", "file not found") for f in failed],
        model_spec="random:tiny", precision="fp32", computed_at=datetime.now(timezone.utc),
    )


def _write_shard(tmp_path: Path, shard_key: str, ids, failed=(), offset=0.0) -> Path:
    return write_table_atomic(_shard_table(shard_key, list(ids), list(failed), offset), tmp_path / "shards" / f"{shard_key}.parquet")


def _rows(store: Warehouse, table: str) -> pd.DataFrame:
    return store.query(f"SELECT * FROM {table} ORDER BY image_id")


def test_shard_parquet_round_trips_maps(tmp_path):
    table = _shard_table("shard-00000", ["a", "b"], ["c"])
    path = write_table_atomic(table, tmp_path / "s.parquet")
    maps = read_cls_maps(path)
    assert sorted(maps) == ["a", "b"]
    np.testing.assert_array_equal(maps["a"], np.asarray(table["cls_map"][0].as_py(), dtype=np.float32).reshape(3, 4))
    assert not list(tmp_path.glob(".*tmp*"))


def test_sync_replaces_exactly_the_changed_shard(tmp_path):
    store = Warehouse(tmp_path / "warehouse" / "attention.duckdb")
    s0 = _write_shard(tmp_path, "shard-00000", ["a", "b"], ["x"])
    s1 = _write_shard(tmp_path, "shard-00001", ["c", "d"])
    report = store.sync_shards({"shard-00000": s0, "shard-00001": s1})
    assert report["loaded"] == ["shard-00000", "shard-00001"]
    before = _rows(store, "attention_statistics")
    assert list(before.image_id) == ["a", "b", "c", "d"]
    assert list(before.num_patches) == [12] * 4
    assert list(_rows(store, "image_failures").reason) == ["file not found"]

    # unchanged files: nothing touched
    assert store.sync_shards({"shard-00000": s0, "shard-00001": s1})["unchanged"] == ["shard-00000", "shard-00001"]
    pd.testing.assert_frame_equal(_rows(store, "attention_statistics"), before)

    # shard 1 recomputed with other values: only its rows change, no duplicates
    time.sleep(0.01)
    s1 = _write_shard(tmp_path, "shard-00001", ["c", "d"], offset=10.0)
    assert store.sync_shards({"shard-00000": s0, "shard-00001": s1})["loaded"] == ["shard-00001"]
    after = _rows(store, "attention_statistics")
    assert list(after.image_id) == ["a", "b", "c", "d"]
    pd.testing.assert_frame_equal(after.iloc[:2], before.iloc[:2])
    assert (after.attention_entropy.iloc[2:] >= 10).all()

    # a vanished shard file drops its rows
    assert store.sync_shards({"shard-00000": s0})["dropped"] == ["shard-00001"]
    assert list(_rows(store, "attention_statistics").image_id) == ["a", "b"]


def test_failed_insert_rolls_back_and_keeps_old_rows(tmp_path):
    store = Warehouse(tmp_path / "w.duckdb")
    s0 = _write_shard(tmp_path, "shard-00000", ["a", "b"])
    store.sync_shards({"shard-00000": s0})
    # another shard claims image "a": the primary key refuses it and nothing of that shard lands
    s1 = _write_shard(tmp_path, "shard-00001", ["a", "z"])
    with pytest.raises(duckdb.ConstraintException):
        store.sync_shards({"shard-00000": s0, "shard-00001": s1})
    assert list(_rows(store, "attention_statistics").image_id) == ["a", "b"]
    assert store.query("SELECT shard_key FROM shard_loads").shard_key.tolist() == ["shard-00000"]


def _sync_in_process(db: str, shards: dict, barrier) -> None:
    barrier.wait()
    Warehouse(Path(db)).sync_shards({k: Path(v) for k, v in shards.items()})


def test_two_processes_writing_at_once_end_consistent(tmp_path):
    db = tmp_path / "w.duckdb"
    shards = {f"shard-{i:05d}": _write_shard(tmp_path, f"shard-{i:05d}", [f"img{i}-{j}" for j in range(50)]) for i in range(4)}
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(2)
    # both processes write the SAME shards and different ones at the same moment
    first = {k: str(v) for k, v in list(shards.items())[:3]}
    second = {k: str(v) for k, v in list(shards.items())[1:]}
    procs = [ctx.Process(target=_sync_in_process, args=(str(db), s, barrier)) for s in (first, second)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0]
    counts = Warehouse(db).query("SELECT count(*) AS n, count(DISTINCT image_id) AS d FROM attention_statistics").iloc[0]
    # the second process dropped shard-00000 (absent from its view) or the first re-added it; each image once either way
    assert counts.n == counts.d
    assert counts.n in (150, 200)


def test_writer_waits_for_a_reader_then_proceeds(tmp_path, caplog):
    db = tmp_path / "w.duckdb"
    store = Warehouse(db, retry_interval_s=0.1)
    store.sync_shards({})
    ctx = mp.get_context("spawn")
    ready = ctx.Event()
    holder = ctx.Process(target=_hold_read_only, args=(str(db), ready, 1.5))
    holder.start()
    ready.wait(30)
    s0 = _write_shard(tmp_path, "shard-00000", ["a"])
    started = time.monotonic()
    with caplog.at_level(logging.WARNING):
        store.sync_shards({"shard-00000": s0})
    holder.join(30)
    assert time.monotonic() - started >= 0.5
    assert any("locked by another process; waiting" in r.getMessage() for r in caplog.records)
    assert list(_rows(store, "attention_statistics").image_id) == ["a"]


def test_writer_gives_up_with_a_clear_message(tmp_path):
    db = tmp_path / "w.duckdb"
    Warehouse(db).sync_shards({})
    ctx = mp.get_context("spawn")
    ready = ctx.Event()
    holder = ctx.Process(target=_hold_read_only, args=(str(db), ready, 5.0))
    holder.start()
    ready.wait(30)
    try:
        with pytest.raises(WarehouseBusyError, match="stayed locked by another process.*nothing was written"):
            Warehouse(db, wait_timeout_s=1.0, retry_interval_s=0.1).sync_shards({})
    finally:
        holder.join(30)


def _hold_read_only(db: str, ready, seconds: float) -> None:
    con = duckdb.connect(db, read_only=True)
    ready.set()
    time.sleep(seconds)
    con.close()


def test_cleanup_removes_only_temporaries_of_dead_writers(tmp_path):
    import subprocess
    import sys

    from attn_assets.storage import atomic

    host = atomic._OWNER.split("@", 1)[1]
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        abandoned = tmp_path / f".shard-00000.parquet.tmp-{dead_pid}@{host}-abcd1234.parquet"
        in_progress = tmp_path / f".shard-00001.parquet.tmp-{live.pid}@{host}-efgh5678.parquet"
        foreign = tmp_path / ".shard-00002.parquet.tmp-123@otherhost-ijkl9012.parquet"
        for path in (abandoned, in_progress, foreign):
            path.write_bytes(b"partial")
        assert atomic.remove_abandoned_temporaries(tmp_path) == [abandoned]
        assert in_progress.exists() and foreign.exists()  # another host's file is kept until it is a day old
        old = time.time() - atomic.FOREIGN_TEMP_MAX_AGE_S - 60
        os.utime(foreign, (old, old))
        assert atomic.remove_abandoned_temporaries(tmp_path) == [foreign]
    finally:
        live.kill()
        live.wait()


def test_model_keyed_loads_touch_only_their_model_and_drop_whole(tmp_path):
    """A listed model's files fill the *_by_model tables keyed by model_key, beside the plain tables; reloading one
    model never touches another's rows; a model whose every image failed still has its loads recorded, so
    drop_model (its folder deleted) can find and remove it."""
    store = Warehouse(tmp_path / "warehouse" / "attention.duckdb")
    ok = _write_shard(tmp_path / "a", "shard-00000", ["a", "b"], ["x"])
    failed_only = _write_shard(tmp_path / "b", "shard-00000", [], ["a", "b", "x"])
    store.sync_shards({"shard-00000": ok})  # the plain tables: the default model
    store.sync_shards({"shard-00000": ok}, model_key="clip")
    store.sync_shards({"shard-00000": failed_only}, model_key="broken-images")
    stats = store.query("SELECT model_key, image_id FROM attention_statistics_by_model ORDER BY ALL")
    assert stats.values.tolist() == [["clip", "a"], ["clip", "b"]]
    failures = store.query("SELECT model_key, count(*) AS n FROM image_failures_by_model GROUP BY ALL ORDER BY ALL")
    assert failures.values.tolist() == [["broken-images", 3], ["clip", 1]]
    loads = set(store.query("SELECT model_key FROM shard_loads_by_model")["model_key"])
    assert loads == {"clip", "broken-images"}
    assert store.sync_shards({}, model_key="clip")["dropped"] == ["shard-00000"]  # only clip's rows go
    assert len(store.query("SELECT * FROM image_failures_by_model WHERE model_key = 'broken-images'")) == 3
    assert len(store.query("SELECT * FROM attention_statistics")) == 2  # the plain tables untouched
    store.drop_model("broken-images")
    for table in ("attention_statistics_by_model", "image_failures_by_model", "shard_loads_by_model"):
        assert len(store.query(f"SELECT * FROM {table}")) == 0, table

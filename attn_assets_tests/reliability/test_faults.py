"""Crashes, concurrent runs, a locked warehouse, a model that cannot load, out of memory: nothing is lost.

(a) SIGKILL of a real `attn-assets materialize` while a shard is computed leaves no shard file under
    its real name (at most a hidden .tmp file, removed by the next run) and no warehouse. Its Dagster
    run stays STARTED, so the shard reads IN_PROGRESS, which shards_to_fill skips: materialize_all now
    marks runs whose process is gone as failed (runs.fail_dead_local_runs), then recomputes.
(c) is checked in the same re-run: a reader process holds the DuckDB file open when the warehouse
    asset starts; the writer logs that it waits, then succeeds.
(b) two `attn-assets materialize` processes at once on the same homes.
(d) a model that cannot load stops materialize before any run (the cause once), and fails a statistics run
    launched otherwise with a clear message, writing nothing.
(e) out of memory on a batch: retried at half size down to 1, through compute_shard.
"""

from __future__ import annotations

import io
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from attn_assets import orchestration
from attn_assets.defs.partitions import SHARD_PARTITIONS_NAME
from attn_assets.defs.needs_run import shards_to_fill
from attn_assets.orchestration import materialize_all
from attn_assets.storage.layout import HomeLayout
TMP_MARKER = ".tmp-"  # hidden temp files of atomic writes
from attn_assets.storage.warehouse import Warehouse
from attn_assets_tests.conftest import street_scene
from attn_assets_tests.reliability.conftest import BIN

CLI = str(BIN / "attn-assets")


def _many_images(plain_env, n: int, prefix: str = "img") -> list[dict]:
    """n small JPEGs (20 distinct scenes, copied) and their plain-manifest rows."""
    blobs = []
    for seed in range(20):
        buffer = io.BytesIO()
        street_scene(96, 72, seed).save(buffer, "JPEG", quality=85)
        blobs.append(buffer.getvalue())
    folder = plain_env.image_root / prefix
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        (folder / f"{i:05d}.jpg").write_bytes(blobs[i % len(blobs)])
        rows.append({"image_id": f"{prefix}-{i:05d}", "path": f"{prefix}/{i:05d}.jpg", "country": "FR"})
    return rows


class _Reader(threading.Thread):
    """Drains a process's stderr, remembering the lines; `wait_for(text)` blocks until one contains it."""

    def __init__(self, stream):
        super().__init__(daemon=True)
        self.stream, self.lines, self.event = stream, [], threading.Event()
        self.start()

    def run(self) -> None:
        for line in iter(self.stream.readline, ""):
            self.lines.append(line)
            self.event.set()

    def wait_for(self, text: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(text in line for line in self.lines):
                return True
            self.event.wait(0.2)
            self.event.clear()
        return False


def _each_image_once(home: Path, ids: list[str]) -> None:
    store = Warehouse(HomeLayout(home).warehouse_path)
    rows = store.query("SELECT image_id FROM attention_statistics UNION ALL SELECT image_id FROM image_failures")
    assert len(rows) == len(ids) and sorted(rows.image_id) == sorted(ids)
    loads = store.query("SELECT sum(ok_rows) AS ok, sum(failed_rows) AS failed FROM shard_loads").iloc[0]
    assert int(loads.ok) + int(loads.failed) == len(ids)


# --------------------------------------------------------------------------- (a) + (c)


@pytest.mark.slow
def test_sigkill_mid_shard_then_rerun_with_a_reader_holding_the_warehouse(plain_env, plain_instance, monkeypatch):
    rows = _many_images(plain_env, 500)  # ~3-4 s at batch size 1
    plain_env.write_manifest(rows)
    layout = HomeLayout(plain_env.home)
    child = subprocess.Popen(
        [CLI, "materialize"], env=plain_env.subprocess_env(ATTN_ASSETS_BATCH_SIZE=1), stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, start_new_session=True,
    )
    try:
        err = _Reader(child.stderr)
        # the CLI's progress bar for the shard (Dagster's INFO lines may be filtered by its log level)
        assert err.wait_for("shard-00000:", timeout=120), "".join(err.lines[-30:])
        time.sleep(0.5)
        assert child.poll() is None, "the shard finished before it could be killed"
        os.killpg(child.pid, signal.SIGKILL)
        child.wait(30)
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait(30)
    assert child.returncode == -signal.SIGKILL

    # nothing partial is visible: no shard file under its real name, no warehouse
    assert not layout.shard_parquet("shard-00000").exists()
    leftovers = [p.name for p in layout.shards_dir.glob("*")] if layout.shards_dir.exists() else []
    assert all(name.startswith(".") and TMP_MARKER in name for name in leftovers), leftovers
    assert not layout.warehouse_path.exists()
    # the killed run is still STARTED, so its shard reads IN_PROGRESS and is skipped by the schedule logic
    assert shards_to_fill(plain_instance) == []
    stuck = [r.dagster_run.run_id for r in plain_instance.get_run_records()
             if r.dagster_run.status.value == "STARTED"]
    assert len(stuck) == 1

    # (c): an empty warehouse exists and a reader holds it open when the downstream run starts
    Warehouse(layout.warehouse_path).sync_shards({})
    holder_script = textwrap.dedent(
        f"""
        import sys, time, duckdb
        con = duckdb.connect({str(layout.warehouse_path)!r}, read_only=True)
        print("READY", flush=True)
        time.sleep(4)
        con.close()
        """
    )
    holders = []
    real_stale = orchestration.downstream_stale

    def stale_then_hold(instance, defs):
        holder = subprocess.Popen([sys.executable, "-c", holder_script], stdout=subprocess.PIPE, text=True)
        holders.append(holder)
        assert holder.stdout.readline().strip() == "READY"
        return real_stale(instance, defs)

    monkeypatch.setattr(orchestration, "downstream_stale", stale_then_hold)
    started = time.monotonic()
    summary = materialize_all(instance=plain_instance)
    for holder in holders:
        holder.wait(30)
    assert summary.ok, "\n".join(summary.lines)
    assert f"run {stuck[0]}: its process is gone; marked failed" in summary.lines
    assert any(line.startswith("attention_statistics[shard-00000]: ok") for line in summary.lines)
    assert len(holders) == 1 and time.monotonic() - started > 4
    assert not [p for p in layout.shards_dir.glob("*") if TMP_MARKER in p.name]  # the .tmp leftover is gone
    _each_image_once(plain_env.home, [r["image_id"] for r in rows])

    downstream = [line for line in summary.lines if line.startswith("warehouse, aggregates")][0]
    run_id = downstream.split("(run ")[1].rstrip(")")
    messages = [r.user_message for r in plain_instance.all_logs(run_id)]
    assert any("is locked by another process; waiting" in m for m in messages)


# --------------------------------------------------------------------------- (b)


@pytest.mark.slow
def test_two_processes_materializing_at_once_end_consistent(plain_env, plain_instance):
    rows = _many_images(plain_env, 16)
    plain_env.write_manifest(rows)
    env = plain_env.subprocess_env(ATTN_ASSETS_SHARD_SIZE=8)  # two shards, usually computed by both (same shards)
    procs = [subprocess.Popen([CLI, "materialize"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, start_new_session=True) for _ in range(2)]
    outputs = []
    try:
        for proc in procs:
            outputs.append(proc.communicate(timeout=400))
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
    for proc, (out, err) in zip(procs, outputs):
        assert proc.returncode == 0, out + err[-3000:]
    _each_image_once(plain_env.home, [r["image_id"] for r in rows])
    assert sorted(plain_instance.get_dynamic_partitions(SHARD_PARTITIONS_NAME)) == [
        "shard-00000", "shard-00001"]
    # a third run finds everything done (each shard computed by one process or both, never lost)
    again = materialize_all(instance=plain_instance)
    assert "attention_statistics: every shard up to date" in again.lines, again.lines


# --------------------------------------------------------------------------- (d)


def _bert_dir(tmp: Path) -> Path:
    from transformers import BertConfig, BertModel

    from attn_assets.core.model import make_clip_processor

    folder = tmp / "bert"
    BertModel(BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=37,
                         vocab_size=50)).save_pretrained(folder)
    make_clip_processor(48).save_pretrained(folder)
    return folder


@pytest.mark.parametrize("case", ["offline_hub_id", "missing_local_path", "wrong_architecture"])
def test_model_that_cannot_load_fails_the_run_and_writes_nothing(plain_env, plain_instance, monkeypatch, case):
    import huggingface_hub.constants

    plain_env.write_manifest(_many_images(plain_env, 3))
    if case == "offline_hub_id":
        model, expected = "someorg/never-cached-model", (
            "could not load model 'someorg/never-cached-model': HF_HUB_OFFLINE is set and nothing is cached for it")
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
        monkeypatch.setenv("HF_HOME", str(plain_env.tmp / "empty_hf_home"))
        monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # read at import time
    elif case == "missing_local_path":
        model = str(plain_env.tmp / "no" / "such" / "model")
        expected = f"model directory {model} does not exist (or is not a directory)"
    else:
        model, expected = str(_bert_dir(plain_env.tmp)), "is a bert model, not a Vision Transformer with a CLS token"
    monkeypatch.setenv("ATTN_ASSETS_MODEL", model)

    # attn-assets materialize loads the model before any run: nothing runs, nothing is written, the cause once
    summary = materialize_all(instance=plain_instance)
    assert not summary.ok and summary.stopped is not None
    assert sum(expected in line for line in summary.lines) == 1, summary.lines
    assert not any(": ok" in line or ": FAILED" in line for line in summary.lines), summary.lines
    assert plain_instance.get_runs_count() == 0
    assert not plain_env.home.exists()

    # a run launched from the UI or by the daemon: the statistics step fails with the ModelLoadError, writes nothing
    from attn_assets.definitions import build_definitions

    defs = build_definitions()
    assert defs.resolve_job_def("manifest_job").execute_in_process(instance=plain_instance).success
    key = plain_instance.get_dynamic_partitions(SHARD_PARTITIONS_NAME)[0]
    result = defs.resolve_job_def("attention_statistics_job").execute_in_process(
        instance=plain_instance, partition_key=key, raise_on_error=False)
    assert not result.success
    layout = HomeLayout(plain_env.home)
    assert not list(layout.shards_dir.glob("*")) if layout.shards_dir.exists() else True
    assert not layout.warehouse_path.exists()
    chain = []
    for record in plain_instance.all_logs(result.run_id):
        event = record.dagster_event
        if event is not None and event.event_type_value == "STEP_FAILURE":
            error = event.event_specific_data.error
            while error is not None:
                chain.append(f"{error.cls_name}: {error.message.strip()}")
                error = error.cause
    clear = [m for m in chain if m.startswith("ModelLoadError: ") and expected in m]
    assert clear, chain


# --------------------------------------------------------------------------- (e)


def test_out_of_memory_halves_the_batch_through_compute_shard(plain_env, tiny_encoder, caplog):
    import logging

    import pyarrow as pa

    from attn_assets.passes.statistics import compute_statistics_shard
    from attn_assets.storage.parquet import write_table_atomic

    rows = _many_images(plain_env, 8)
    layout = HomeLayout(plain_env.home)
    frame = pd.DataFrame(rows).assign(abs_path=lambda f: [str(plain_env.image_root / p) for p in f.path],
                                      shard_key="shard-00000")
    write_table_atomic(pa.Table.from_pandas(frame, preserve_index=False), layout.images_parquet)

    def run(tag: str, batch_size: int = 8):
        return compute_statistics_shard(layout=layout, shard_key="shard-00000", encoder=tiny_encoder,
                                        model_spec=tag, device="cpu", precision="fp32", batch_size=batch_size,
                                        num_workers=0, logger=logging.getLogger("test"))

    run("reference", batch_size=1)  # the shapes the OOM fallback ends with: identical float32 operations
    expected = pd.read_parquet(layout.shard_parquet("shard-00000"))
    real_forward = tiny_encoder.model.forward
    sizes = []

    def forward(*args, **kwargs):
        pixels = kwargs.get("pixel_values", args[0] if args else None)
        sizes.append(pixels.shape[0])
        if pixels.shape[0] > 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real_forward(*args, **kwargs)

    tiny_encoder.model.forward = forward
    try:
        with caplog.at_level(logging.WARNING):
            outcome = run("oom")
    finally:
        del tiny_encoder.model.forward
    assert outcome.computed == 8 and outcome.failed == 0
    assert sizes[:4] == [8, 4, 2, 1] and set(sizes[4:]) == {1}
    assert [r.getMessage() for r in caplog.records if "out of memory" in r.getMessage()] == [
        f"out of memory on cpu; retrying with batch size {n}" for n in (4, 2, 1)]
    got = pd.read_parquet(layout.shard_parquet("shard-00000"))
    for metric in ("attention_entropy", "attention_max", "attention_concentration_top10"):
        np.testing.assert_array_equal(got[metric].to_numpy(float), expected[metric].to_numpy(float), err_msg=metric)

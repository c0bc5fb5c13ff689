"""The celery profile for real: Redis, PostgreSQL, two Celery workers, a backfill, a killed worker.

Everything runs on this machine on 127.0.0.1 with temp data dirs; every process the test starts is
stopped and checked gone with psutil. Prints shards per worker, wall time and the per-shard overhead
against the in-process executor on the same shards.
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest

from attn_assets.process_identity import parse_worker_identity
from attn_assets_tests.defs.conftest import osv_row, write_osv_manifest, write_scene
from attn_assets_tests.distributed import services

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
N_IMAGES = 16
SHARD_SIZE = 2  # 8 shards: 6 for the backfill, 2 for the kill
SLOW_STEP_S = 4.0
VISIBILITY_TIMEOUT_S = 20  # > the longest step on a loaded CI box; a dead worker's task is handed out again after this
COUNTRIES = ["FR", "JP", "US", "AU", "BR", "NA", "DE", "IN"]


def _write_images(root: Path) -> list[str]:
    rows, ids = [], []
    for i in range(N_IMAGES):
        image_id = f"20000000000000{i:02d}"
        write_scene(root / "images" / f"{image_id}.jpg", seed=100 + i, size=(96 + 8 * (i % 3), 64))
        country = COUNTRIES[i % len(COUNTRIES)]
        rows.append(osv_row(image_id, 10.0 + i, 20.0 + i, country, country, "right"))
        ids.append(image_id)
    write_osv_manifest(root / "test.csv", rows)
    return ids


def _celery_yaml(path: Path) -> Path:
    import yaml

    document = yaml.safe_load((REPO / "deploy" / "celery.yaml").read_text())
    options = document["execution"]["config"]["config_source"]["broker_transport_options"]
    options.update(visibility_timeout=VISIBILITY_TIMEOUT_S, unacked_restore_interval=1, unacked_restore_throttle=1)
    path.write_text(yaml.safe_dump(document))
    return path


def _latest_worker(instance, key) -> str | None:
    import dagster as dg

    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey("attention_statistics"), asset_partitions=[key]), limit=1
    ).records
    if not records:
        return None
    return records[0].asset_materialization.metadata["worker"].value


def _worker_of_running_step(instance, shard_keys) -> tuple[str, str] | None:
    """(shard, celery worker name) of a step that a worker is executing (STEP_START seen, no end yet)."""
    import dagster as dg

    for key in shard_keys:
        for run in instance.get_runs(filters=dg.RunsFilter(tags={"dagster/partition": key})):
            started, stepping, finished = None, False, False
            for entry in instance.all_logs(run.run_id):
                event = entry.dagster_event
                if event is None:
                    continue
                if event.event_type == dg.DagsterEventType.ENGINE_EVENT and "Executing steps" in (event.message or ""):
                    started = event.engine_event_data.metadata["Celery worker"].value
                if event.event_type == dg.DagsterEventType.STEP_START:
                    stepping = True
                if event.event_type in (dg.DagsterEventType.STEP_SUCCESS, dg.DagsterEventType.STEP_FAILURE):
                    finished = True
            if started and stepping and not finished:
                return key, started
    return None


def _wait_for_workers(app, names: set[str], timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    seen: set[str] = set()
    while time.monotonic() < deadline:
        replies = app.control.inspect(timeout=1.0).ping() or {}
        seen = {name.split("@")[0] for name in replies}
        if names <= seen:
            return
        time.sleep(0.5)
    raise TimeoutError(f"workers {sorted(names - seen)} never answered a ping")


def _backfill(keys, parallel, env, log) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "attn_assets.deploy.celery_profile", "backfill", "--shards", ",".join(keys),
         "--parallel", str(parallel)],
        env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=open(log, "ab"), text=True, start_new_session=True,
    )


def _results(proc: subprocess.Popen, timeout: float) -> list[dict]:
    out, _ = proc.communicate(timeout=timeout)
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def test_celery_backfill_two_workers_survives_a_killed_worker(tmp_path, monkeypatch, tiny_model_dir):
    missing = services.missing_tools()
    if missing:
        pytest.skip(f"needs {', '.join(missing)}: run .ci/setup.d/20-redis-postgres.sh")
    import dagster as dg

    from attn_assets.deploy.celery_profile import celery_app, render_instance_yaml, run_timings, start_worker

    started_pids: set[int] = set()
    trees: list[int] = []  # roots of process trees we started
    redis = postgres = None
    figures: list[str] = []
    try:
        redis = services.start_redis(tmp_path)
        postgres = services.start_postgres()
        started_pids |= redis.pids | postgres.pids

        images = tmp_path / "osv"
        image_ids = _write_images(images)
        dagster_home = tmp_path / "dagster_home"
        dagster_home.mkdir()
        (dagster_home / "dagster.yaml").write_text(render_instance_yaml(gpus=2, monitoring=False))
        slow_file = tmp_path / "slow_steps"
        env = {
            "ATTN_ASSETS_HOME": str(tmp_path / "home"), "DAGSTER_HOME": str(dagster_home),
            "ATTN_ASSETS_MANIFEST": str(images / "test.csv"), "ATTN_ASSETS_IMAGE_ROOT": str(images),
            "ATTN_ASSETS_MODEL": str(tiny_model_dir), "ATTN_ASSETS_DEVICE": "cpu",
            "ATTN_ASSETS_SHARD_SIZE": str(SHARD_SIZE), "ATTN_ASSETS_NUM_WORKERS": "0", "ATTN_ASSETS_BATCH_SIZE": "2",
            "ATTN_ASSETS_EXECUTOR": "celery", "ATTN_ASSETS_CELERY_CONFIG": str(_celery_yaml(tmp_path / "celery.yaml")),
            "ATTN_ASSETS_CELERY_BROKER": f"redis://127.0.0.1:{redis.port}/0",
            "ATTN_ASSETS_CELERY_BACKEND": f"redis://127.0.0.1:{redis.port}/1",
            "ATTN_ASSETS_PG_URL": f"postgresql+psycopg2://postgres@127.0.0.1:{postgres.port}/dagster",
            "ATTN_ASSETS_TEST_SLOW_FILE": str(slow_file), "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1",
        }
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        child_env = dict(os.environ)

        from attn_assets.definitions import build_definitions
        from attn_assets.defs.partitions import SHARD_PARTITIONS_NAME
        from attn_assets.defs.warehouse.assets import attention_warehouse
        from attn_assets.resources import resources_from_env

        with dg.DagsterInstance.get() as instance:
            assert type(instance.run_storage).__name__ == "PostgresRunStorage"
            defs = build_definitions()
            assert defs.resolve_job_def("attention_statistics_job").executor_def.name == "celery"
            assert defs.resolve_job_def("manifest_job").execute_in_process(instance=instance).success
            shards = sorted(instance.get_dynamic_partitions(SHARD_PARTITIONS_NAME))
            assert len(shards) == N_IMAGES // SHARD_SIZE == 8
            backfill_shards, kill_shards = shards[:6], shards[6:]

            # two workers, "GPU" 0 and 1, separate processes
            workers = {}
            for gpu in ("0", "1"):
                proc = start_worker(f"gpu{gpu}", gpu, env=child_env, cwd=REPO, log_path=tmp_path / f"worker{gpu}.log",
                                    includes=("attn_assets_tests.distributed.slow_steps",))
                workers[f"gpu{gpu}"] = proc
                trees.append(proc.pid)
            _wait_for_workers(celery_app(), set(workers))
            pid_of = {}
            for name, proc in workers.items():
                tree = services.process_tree(proc.pid)
                started_pids |= {p.pid for p in tree}
                pid_of[name] = {p.pid for p in tree}

            # 1. backfill of 6 shards, one run per shard, through the celery executor
            t0 = time.monotonic()
            backfill = _backfill(backfill_shards, 4, child_env, tmp_path / "backfill.log")
            trees.append(backfill.pid)
            started_pids.add(backfill.pid)
            results = _results(backfill, timeout=180)
            backfill_wall = time.monotonic() - t0
            assert backfill.returncode == 0, (tmp_path / "backfill.log").read_text()[-3000:]
            assert sorted(r["shard"] for r in results) == backfill_shards and all(r["success"] for r in results)

            by_worker: dict[str, list[str]] = {}
            for key in backfill_shards:
                identity = _latest_worker(instance, key)
                host, pid, devices = parse_worker_identity(identity)
                name = next(n for n, pids in pid_of.items() if pid in pids)
                assert devices == name.removeprefix("gpu")  # pinned CUDA_VISIBLE_DEVICES recorded
                by_worker.setdefault(name, []).append(key)
            assert set(by_worker) == {"gpu0", "gpu1"}, f"one worker did everything: {by_worker}"
            celery_t = [run_timings(instance, r["run_id"]) for r in results]
            figures.append(f"backfill: {len(backfill_shards)} shards in {backfill_wall:.1f} s wall "
                           f"(incl. ~{min(r['seconds'] for r in results):.1f} s first-run start in the launcher)")
            figures.append("shards per worker: " + ", ".join(f"{n}={len(v)}" for n, v in sorted(by_worker.items())))

            # 2. kill one worker in the middle of a step: the task is redelivered to the other one
            slow_file.write_text(str(SLOW_STEP_S))
            t1 = time.monotonic()
            kill_run = _backfill(kill_shards, 2, child_env, tmp_path / "backfill-kill.log")
            trees.append(kill_run.pid)
            started_pids.add(kill_run.pid)
            deadline = time.monotonic() + 90
            running = None
            while running is None and time.monotonic() < deadline:
                running = _worker_of_running_step(instance, kill_shards)
                time.sleep(0.2)
            assert running, "no kill-phase step ever started on a worker"
            killed_shard, killed_worker = running
            victim = killed_worker.split("@")[0]
            for proc in services.process_tree(workers[victim].pid):
                proc.send_signal(signal.SIGKILL)
            results_kill = _results(kill_run, timeout=150)
            kill_wall = time.monotonic() - t1
            assert kill_run.returncode == 0, (tmp_path / "backfill-kill.log").read_text()[-3000:]
            assert all(r["success"] for r in results_kill) and len(results_kill) == 2
            survivor = ({"gpu0", "gpu1"} - {victim}).pop()
            killed_run = next(r for r in results_kill if r["shard"] == killed_shard)
            killed_t = run_timings(instance, killed_run["run_id"])
            assert killed_t["step_starts"] == 2  # started on the victim, finished on the survivor
            _, pid, _ = parse_worker_identity(_latest_worker(instance, killed_shard))
            assert pid in pid_of[survivor]
            figures.append(f"kill: SIGKILL {victim} during {killed_shard}; redelivered to {survivor} after "
                           f"{killed_t['queue_last_s']:.1f} s; both kill-phase shards done in {kill_wall:.1f} s")
            slow_file.unlink()

            # every shard done; the warehouse (single writer, in-process here) has every image once
            assert all(_latest_worker(instance, key) for key in shards)
            assert dg.materialize([attention_warehouse], instance=instance, resources=resources_from_env()).success
            from attn_assets.storage.layout import HomeLayout
            from attn_assets.storage.warehouse import Warehouse

            counts = Warehouse(HomeLayout(Path(env["ATTN_ASSETS_HOME"])).warehouse_path).query(
                "SELECT image_id, count(*) AS n FROM (SELECT image_id FROM attention_statistics "
                "UNION ALL SELECT image_id FROM image_failures) GROUP BY image_id ORDER BY image_id")
            assert list(counts["image_id"]) == sorted(image_ids)
            assert set(counts["n"]) == {1}

            # 3. the same 6 shards with the in-process executor, for the overhead per shard
            job = defs.resolve_job_def("attention_statistics_job")
            local_t = []
            for key in backfill_shards:
                result = job.execute_in_process(instance=instance, partition_key=key)
                assert result.success
                local_t.append(run_timings(instance, result.run_id))

        for label, rows in (("celery", celery_t), ("in-process", local_t)):
            for key, row in zip(backfill_shards, rows):
                figures.append(f"  {label:10s} {key}: " + ", ".join(
                    f"{k} {v:.2f}" for k, v in row.items() if isinstance(v, float)))

        def med(rows, key):
            values = [r[key] for r in rows if r.get(key) is not None]
            return statistics.median(values) if values else float("nan")

        overhead = med(celery_t, "run_s") - med(local_t, "run_s")
        for rows in (celery_t, local_t):
            for row in rows:
                row["dispatch_s"] = sum(row.get(k, 0.0) for k in ("queue_s", "step_setup_s", "return_s"))
        figures.append(f"dispatch overhead per shard (broker queue + step setup on worker + result back), median: "
                       f"celery {med(celery_t, 'dispatch_s'):.2f} s vs in-process {med(local_t, 'dispatch_s'):.2f} s")
        figures.append("celery run breakdown (median s): " + ", ".join(
            f"{k} {med(celery_t, k):.2f}" for k in ("slot_wait_s", "queue_s", "step_setup_s", "step_s", "return_s")))
        figures.append(f"per shard (median): celery run {med(celery_t, 'run_s'):.2f} s, broker queue "
                       f"{med(celery_t, 'queue_s'):.2f} s, step on worker {med(celery_t, 'step_s'):.2f} s; "
                       f"in-process run {med(local_t, 'run_s'):.2f} s, step {med(local_t, 'step_s'):.2f} s; "
                       f"overhead {overhead:+.2f} s/shard")
    finally:
        for root in trees:
            services.stop_tree(root, signal.SIGTERM, timeout=20)
        if redis is not None:
            services.stop_tree(redis.proc.pid, signal.SIGTERM)
        if postgres is not None:
            services.stop_postgres(postgres)
        print("\n" + "\n".join(figures))
    leftovers = services.alive(started_pids)
    assert not leftovers, f"processes still running: {leftovers}"


"""The celery profile: Redis broker, one Celery worker per GPU, PostgreSQL instance, shared ATTN_ASSETS_HOME.

    python -m attn_assets.deploy.celery_profile instance --gpus 8 --out "$DAGSTER_HOME/dagster.yaml"
    python -m attn_assets.deploy.celery_profile workers --gpus 0,1,2,3      # on each GPU node
    python -m attn_assets.deploy.celery_profile backfill --missing --parallel 16

``workers`` starts ``dagster-celery worker start -A dagster_celery.app -y deploy/celery.yaml`` once per
GPU with ``CUDA_VISIBLE_DEVICES`` pinned and the ``solo`` pool (the step runs in the worker process,
so the model stays loaded between shards). ``backfill`` launches one run per shard through the
celery executor (``execute_job`` on a reconstructable job), ``--parallel`` runs at a time; the
daemon does the same for backfills launched from the UI.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

from attn_assets.deploy.executors import ENV_EXECUTOR, celery_config_path
from attn_assets.deploy.paths import DEPLOY_DIR

INSTANCE_TEMPLATE = DEPLOY_DIR / "dagster-celery.yaml"
CODE_LOCATION_MODULE = "attn_assets.definitions"  # the code location, as workspace.yaml and [tool.dagster] name it


# -- instance -------------------------------------------------------------------------------------


def render_instance_yaml(gpus: int, max_concurrent_runs: int | None = None, monitoring: bool = True) -> str:
    """deploy/dagster-celery.yaml with the gpu pool limit set to the number of GPU workers."""
    import yaml

    config = yaml.safe_load(INSTANCE_TEMPLATE.read_text())
    config["concurrency"]["pools"]["default_limit"] = int(gpus)
    config["concurrency"]["runs"]["max_concurrent_runs"] = int(max_concurrent_runs or 2 * gpus)
    if not monitoring:
        config.pop("run_monitoring", None)
        config.pop("run_retries", None)
    return yaml.safe_dump(config, sort_keys=False)


# -- workers --------------------------------------------------------------------------------------


def _bin(name: str) -> str:
    beside = Path(sys.executable).with_name(name)
    return str(beside) if beside.exists() else (shutil.which(name) or name)


def worker_command(name: str, config: str | Path | None = None, loglevel: str = "INFO",
                   includes: tuple[str, ...] = ()) -> list[str]:
    """One worker: named ``<name>@<host>``, solo pool (one step at a time, in the worker process)."""
    include_args = [arg for module in includes for arg in ("-i", module)]
    return [
        _bin("dagster-celery"), "worker", "start", "-A", "dagster_celery.app",
        "-y", str(config or celery_config_path()), "-n", name, "-l", loglevel, *include_args, "--", "--pool=solo",
    ]


def worker_env(gpu: str | None, base: dict | None = None) -> dict:
    env = dict(os.environ if base is None else base)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    if gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = str(gpu)  # the worker sees exactly one GPU, as cuda:0
    return env


def start_worker(name: str, gpu: str | None, config=None, env=None, log_path=None, includes=(),
                 cwd=None) -> subprocess.Popen:
    out = open(log_path, "ab") if log_path else None
    try:
        return subprocess.Popen(worker_command(name, config, includes=tuple(includes)), env=worker_env(gpu, env),
                                start_new_session=True, cwd=cwd, stdout=out or None,
                                stderr=subprocess.STDOUT if out else None)
    finally:
        if out:
            out.close()


def celery_app(config: str | Path | None = None):
    """The Celery app the workers of ``config`` listen on (env vars resolved), e.g. to ping them."""
    from dagster_celery.cli import get_validated_config
    from dagster_celery.executor import CeleryExecutor
    from dagster_celery.make_app import make_app

    validated = get_validated_config(str(config or celery_config_path()))
    keys = ("broker", "backend", "include", "config_source")
    return make_app(CeleryExecutor.for_cli(**{k: validated[k] for k in keys if validated.get(k) is not None}).app_args())


def detect_gpus() -> list[str]:
    try:
        listing = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return []
    return [str(i) for i, line in enumerate(listing.splitlines()) if line.startswith("GPU ")]


def run_workers(gpus: list[str], config=None) -> int:
    """Start one worker per GPU and wait; SIGTERM/SIGINT are passed on (warm shutdown)."""
    procs = [start_worker(f"gpu{gpu}" if gpu is not None else "cpu", gpu, config) for gpu in gpus]

    def forward(signum, _frame):
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    return max(proc.wait() for proc in procs)


# -- runs -----------------------------------------------------------------------------------------


def statistics_job():
    """attention_statistics_job of the code location, reconstructable by Celery workers and run orchestrators.

    It is found the way the daemon and ``dagster job execute -m`` find jobs, by the code location's module name,
    so this profile needs no factory in the definitions and the definitions never import this profile."""
    from dagster._core.definitions.reconstruct import ReconstructableRepository

    repository = ReconstructableRepository.for_module(CODE_LOCATION_MODULE, "defs", working_directory=os.getcwd())
    return repository.get_reconstructable_job("attention_statistics_job")


def _execute_shard_run(shard_key: str) -> dict:
    import dagster as dg

    started = time.time()
    with dg.DagsterInstance.get() as instance:
        result = dg.execute_job(statistics_job(), instance=instance, tags={"dagster/partition": shard_key})
        return {"shard": shard_key, "run_id": result.run_id, "success": result.success,
                "seconds": round(time.time() - started, 3)}


def launch_shard_runs(shard_keys: list[str], parallel: int = 4, on_result=None) -> list[dict]:
    """One Dagster run per shard through the configured executor, ``parallel`` at a time.

    Orchestrators are forked from this process (definitions already imported), so a run starts in
    well under a second; each one only submits its step and waits for the worker's events.
    """
    import multiprocessing

    import dagster as dg

    from attn_assets.defs.runs import initialize_pool_limits

    statistics_job().get_definition()  # load the code location once, before forking
    with dg.DagsterInstance.get() as instance:
        initialize_pool_limits(instance)  # once here: parallel runs creating the row at once race on its key
    results = []
    with ProcessPoolExecutor(max_workers=max(1, parallel), mp_context=multiprocessing.get_context("fork")) as pool:
        futures = [pool.submit(_execute_shard_run, key) for key in shard_keys]
        for future in as_completed(futures):
            results.append(future.result())
            if on_result:
                on_result(results[-1])
    return results


def run_timings(instance, run_id: str) -> dict:
    """Seconds from the run's event log: waiting on the broker, the step on its worker, the whole run."""
    from dagster import DagsterEventType

    first: dict[str, float] = {}
    last: dict[str, float] = {}
    for entry in instance.all_logs(run_id):
        event = entry.dagster_event
        if event is None:
            continue
        kind = event.event_type.name  # RUN_START, STEP_START, ... (not the legacy PIPELINE_* values)
        message = entry.user_message or event.message or ""
        if event.event_type == DagsterEventType.ENGINE_EVENT and "Submitting celery task" in message:
            kind = "CELERY_SUBMIT"
        elif event.event_type == DagsterEventType.ENGINE_EVENT and "Executing steps" in message:
            kind = "CELERY_WORKER_START"
        first.setdefault(kind, entry.timestamp)
        last[kind] = entry.timestamp
    timings: dict = {"step_starts": 0}
    end = last.get("RUN_SUCCESS", last.get("RUN_FAILURE"))
    if "RUN_START" in first and end:
        timings["run_s"] = end - first["RUN_START"]
    if "CELERY_SUBMIT" in first and "CELERY_WORKER_START" in first:
        timings["queue_s"] = first["CELERY_WORKER_START"] - first["CELERY_SUBMIT"]
        timings["queue_last_s"] = last["CELERY_WORKER_START"] - first["CELERY_SUBMIT"]
    if "STEP_START" in last and "STEP_SUCCESS" in last:
        timings["step_s"] = last["STEP_SUCCESS"] - last["STEP_START"]
    if "RUN_START" in first and "CELERY_SUBMIT" in first:
        timings["slot_wait_s"] = first["CELERY_SUBMIT"] - first["RUN_START"]  # gpu pool slot + plan
    if "CELERY_WORKER_START" in last and "STEP_START" in last:
        timings["step_setup_s"] = last["STEP_START"] - last["CELERY_WORKER_START"]  # job + resources on worker
    if "STEP_SUCCESS" in last and end:
        timings["return_s"] = end - last["STEP_SUCCESS"]  # result back through the backend to the run
    timings["step_starts"] = sum(1 for e in instance.all_logs(run_id)
                                 if e.dagster_event and e.dagster_event.event_type == DagsterEventType.STEP_START)
    return timings


# -- CLI ------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m attn_assets.deploy.celery_profile", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    inst = sub.add_parser("instance", help="write the PostgreSQL-backed dagster.yaml")
    inst.add_argument("--gpus", type=int, required=True, help="GPU workers in the cluster (= gpu pool limit)")
    inst.add_argument("--max-concurrent-runs", type=int)
    inst.add_argument("--out", required=True)
    work = sub.add_parser("workers", help="one Celery worker per GPU on this machine")
    work.add_argument("--gpus", default="auto", help="comma-separated GPU indices, or 'auto' (nvidia-smi)")
    work.add_argument("--config", help="celery.yaml (default: $ATTN_ASSETS_CELERY_CONFIG or deploy/celery.yaml)")
    back = sub.add_parser("backfill", help="one run per shard through the celery executor")
    which = back.add_mutually_exclusive_group(required=True)
    which.add_argument("--shards", help="comma-separated shard keys")
    which.add_argument("--missing", action="store_true", help="every shard neither materialized nor in progress")
    back.add_argument("--parallel", type=int, default=4)
    args = parser.parse_args(argv)

    if args.command == "instance":
        Path(args.out).write_text(render_instance_yaml(args.gpus, args.max_concurrent_runs))
        print(f"wrote {args.out}")
        return 0
    if args.command == "workers":
        gpus = detect_gpus() if args.gpus == "auto" else [g for g in args.gpus.split(",") if g]
        if not gpus:
            print("no GPU found: pass --gpus 0,1,... (or '' for one CPU worker: --gpus=-)", file=sys.stderr)
            return 2
        return run_workers([None if g == "-" else g for g in gpus], args.config)

    os.environ.setdefault(ENV_EXECUTOR, "celery")
    if args.missing:
        import dagster as dg

        from attn_assets.defs.needs_run import shards_to_fill

        with dg.DagsterInstance.get() as instance:
            keys = shards_to_fill(instance)
    else:
        keys = [k for k in args.shards.split(",") if k]
    results = launch_shard_runs(keys, args.parallel, on_result=lambda r: print(json.dumps(r), flush=True))
    return 0 if all(r["success"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())

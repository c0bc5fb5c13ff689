"""Real Redis and PostgreSQL servers for tests: temp data dirs, 127.0.0.1, free ports, stopped for sure."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, proc: subprocess.Popen | None = None, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port} after {timeout} s")


def process_tree(pid: int) -> list[psutil.Process]:
    try:
        parent = psutil.Process(pid)
        return [parent] + parent.children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def stop_tree(pid: int, sig: int = signal.SIGTERM, timeout: float = 20.0) -> None:
    """Signal a process and its descendants, wait, then SIGKILL whatever is left."""
    procs = process_tree(pid)
    for proc in procs:
        try:
            proc.send_signal(sig)
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(procs, timeout=timeout)
    for proc in alive:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=5)


def alive(pids) -> list[int]:
    return [pid for pid in pids if psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE]


def missing_tools() -> list[str]:
    missing = [] if shutil.which("redis-server") else ["redis-server"]
    if not postgres_bin_dir():
        missing.append("postgresql (initdb)")
    return missing


def postgres_bin_dir() -> Path | None:
    for candidate in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if Path(candidate, "initdb").exists():
            return Path(candidate)
    found = shutil.which("initdb")
    return Path(found).resolve().parent if found else None


@dataclass
class Service:
    name: str
    proc: subprocess.Popen
    port: int
    data_dir: Path
    pids: set[int] = field(default_factory=set)

    def remember_pids(self) -> None:
        self.pids.update(p.pid for p in process_tree(self.proc.pid))


def start_redis(root: Path) -> Service:
    port = free_port()
    data = root / "redis"
    data.mkdir(parents=True)
    proc = subprocess.Popen(
        ["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--dir", str(data), "--save", "",
         "--appendonly", "no", "--daemonize", "no", "--protected-mode", "yes", "--loglevel", "warning"],
        stdout=open(data / "redis.log", "wb"), stderr=subprocess.STDOUT, start_new_session=True,
    )
    wait_for_port(port, proc)
    service = Service("redis", proc, port, data)
    service.remember_pids()
    return service


def _as_postgres_user(cmd: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: run it as the 'postgres' user then (Debian creates it)."""
    if os.geteuid() != 0:
        return cmd
    return ["runuser", "-u", "postgres", "--"] + cmd


def start_postgres(database: str = "dagster") -> Service:
    """initdb in a temp dir owned by the server's user, then postgres on 127.0.0.1:<free port>."""
    bin_dir = postgres_bin_dir()
    if bin_dir is None:
        raise RuntimeError("PostgreSQL is not installed (run .ci/setup.d/20-redis-postgres.sh)")
    data = Path(tempfile.mkdtemp(prefix="attn-pg-"))  # not under pytest's 0700 root-only tmp
    if os.geteuid() == 0:
        user = pwd.getpwnam("postgres")
        os.chown(data, user.pw_uid, user.pw_gid)
    subprocess.run(_as_postgres_user([str(bin_dir / "initdb"), "-D", str(data / "db"), "-A", "trust", "-U", "postgres",
                                      "-E", "UTF8", "--no-sync"]), check=True, capture_output=True)
    port = free_port()
    proc = subprocess.Popen(
        _as_postgres_user([str(bin_dir / "postgres"), "-D", str(data / "db"), "-p", str(port), "-k", str(data),
                           "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "max_connections=200",
                           "-c", "shared_buffers=64MB"]),
        stdout=open(os.devnull, "wb"), stderr=subprocess.STDOUT, start_new_session=True,
    )
    wait_for_port(port, proc)
    import psycopg2

    deadline = time.monotonic() + 30
    while True:
        try:
            conn = psycopg2.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres")
            break
        except psycopg2.OperationalError:  # still starting up
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{database}"')
    conn.close()
    service = Service("postgres", proc, port, data)
    service.remember_pids()
    return service


def stop_postgres(service: Service) -> None:
    postmaster = [p for p in process_tree(service.proc.pid) if p.name() == "postgres"]
    for proc in postmaster[:1]:
        proc.send_signal(signal.SIGINT)  # fast shutdown
    stop_tree(service.proc.pid, sig=signal.SIGINT, timeout=20)
    shutil.rmtree(service.data_dir, ignore_errors=True)

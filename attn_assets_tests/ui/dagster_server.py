"""Start `dagster dev` for a test, talk GraphQL to it, and stop every process it started.

`dagster dev` started from a background shell can inherit ignored SIGINT/SIGTERM and then
never stop, so the child resets both signals and gets its own session (process group); it is
stopped by signalling that group, and psutil then checks that nothing it started survives.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _child_setup() -> None:  # runs in the child between fork and exec
    os.setsid()
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)


class DagsterDev:
    """`dagster dev -w workspace.yaml` on 127.0.0.1:<free port>, logging to a file."""

    def __init__(self, dagster_home: Path, log_path: Path, env: dict[str, str] | None = None):
        self.dagster_home = Path(dagster_home)
        self.log_path = Path(log_path)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, **(env or {}), "DAGSTER_HOME": str(self.dagster_home)}
        self.process: subprocess.Popen | None = None
        self.seen: dict[int, psutil.Process] = {}

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> "DagsterDev":
        dagster = Path(sys.executable).with_name("dagster")
        self._log = open(self.log_path, "wb")
        self.process = subprocess.Popen(
            [str(dagster), "dev", "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(self.port)],
            cwd=REPO, env=self.env, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
            preexec_fn=_child_setup,
        )
        return self

    def _remember_descendants(self) -> None:
        """Note every process started under `dagster dev` (webserver, daemon, code servers, runs)."""
        if self.process is None:
            return
        try:
            root = psutil.Process(self.process.pid)
            for proc in [root, *root.children(recursive=True)]:
                self.seen.setdefault(proc.pid, proc)
        except psutil.NoSuchProcess:
            pass

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self, timeout_s: float = 30.0) -> list[str]:
        """SIGTERM the process group, SIGKILL what is left; returns the processes still alive (should be [])."""
        if self.process is None:
            return []
        self._remember_descendants()
        pgid = self.process.pid  # setsid: the group id is the leader's pid
        try:
            os.killpg(pgid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            pass
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and self._alive():
            time.sleep(0.5)
        if self._alive():
            try:
                os.killpg(pgid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            for proc in self._alive():
                try:
                    proc.kill()
                except psutil.NoSuchProcess:
                    pass
            psutil.wait_procs(self._alive(), timeout=10)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        self._log.close()
        return [f"{p.pid} {' '.join(p.cmdline()[:4])}" for p in self._alive()]

    def _alive(self) -> list[psutil.Process]:
        alive = []
        pgid = self.process.pid
        for proc in psutil.process_iter(["pid"]):
            try:
                in_group = os.getpgid(proc.pid) == pgid
            except (ProcessLookupError, PermissionError):
                continue
            if in_group and proc.status() != psutil.STATUS_ZOMBIE:
                alive.append(proc)
        for pid, proc in self.seen.items():
            try:
                if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE and proc not in alive:
                    alive.append(proc)
            except psutil.NoSuchProcess:
                pass
        return alive

    # -- talking to it -------------------------------------------------------------------

    def graphql(self, query: str, variables: dict | None = None, timeout_s: float = 60.0) -> dict:
        body = json.dumps({"query": query, "variables": variables or {}}).encode()
        request = urllib.request.Request(
            f"{self.url}/graphql", data=body, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            payload = json.load(response)
        if payload.get("errors"):
            raise RuntimeError(f"GraphQL errors: {payload['errors']}")
        return payload["data"]

    def wait_ready(self, asset_count: int, timeout_s: float = 240.0) -> None:
        """Until the code location is loaded and serves `asset_count` assets (and the daemon runs)."""
        deadline = time.monotonic() + timeout_s
        last_error: Exception | str | None = None
        while time.monotonic() < deadline:
            self._remember_descendants()
            if self.process.poll() is not None:
                raise RuntimeError(f"dagster dev exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                data = self.graphql(
                    "{ assetNodes { assetKey { path } } "
                    "  instance { daemonHealth { allDaemonStatuses { daemonType healthy required } } } }",
                    timeout_s=10,
                )
                loaded = len(data["assetNodes"])
                daemons = {d["daemonType"]: d["healthy"] for d in data["instance"]["daemonHealth"]["allDaemonStatuses"]
                           if d["required"]}
                if loaded >= asset_count and daemons.get("QUEUED_RUN_COORDINATOR") and daemons.get("BACKFILL"):
                    return
                last_error = f"{loaded} assets loaded, daemons {daemons}"
            except (urllib.error.URLError, ConnectionError, TimeoutError, RuntimeError, KeyError, TypeError) as error:
                last_error = error
            time.sleep(2)
        raise TimeoutError(f"dagster dev not ready after {timeout_s:.0f} s ({last_error}):\n{self.log_tail()}")

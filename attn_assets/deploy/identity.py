"""Who computed a shard: host, process and the GPU the process was pinned to."""

from __future__ import annotations

import os
import socket


def worker_identity() -> str:
    """``host:pid CUDA_VISIBLE_DEVICES=…`` of the process running this step (recorded per shard)."""
    devices = os.environ.get("CUDA_VISIBLE_DEVICES")
    return f"{socket.gethostname()}:{os.getpid()} CUDA_VISIBLE_DEVICES={'unset' if devices is None else devices}"


def parse_worker_identity(text: str) -> tuple[str, int, str]:
    """(host, pid, CUDA_VISIBLE_DEVICES) from a ``worker_identity()`` string."""
    where, _, devices = text.partition(" CUDA_VISIBLE_DEVICES=")
    host, _, pid = where.rpartition(":")
    return host, int(pid), devices

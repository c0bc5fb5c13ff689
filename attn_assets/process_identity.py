"""This process, as the pipeline writes it down and later asks after it: host, pid, GPU pinning and liveness.

Three records name a process, all built here:

- ``worker_identity()``: ``host:pid CUDA_VISIBLE_DEVICES=…``, recorded per shard (who computed it), read back by
  ``parse_worker_identity``;
- ``this_process()``: (host, pid), which the headless runs carry as tags so that a later process can fail a run
  whose process was killed;
- ``owner_tag()``: ``pid@host`` in the names of temporary files, so cleanup never deletes what a live process is
  still writing.

``process_alive(pid)`` answers whether such a process (on this host) still runs. No torch, no Dagster.
"""

from __future__ import annotations

import os
import socket

from attn_assets.settings import cuda_visible_devices


def this_process() -> tuple[str, int]:
    """(host name, pid) of the running process."""
    return socket.gethostname(), os.getpid()


def worker_identity() -> str:
    """``host:pid CUDA_VISIBLE_DEVICES=…`` of the process running this step (recorded per shard)."""
    host, pid = this_process()
    devices = cuda_visible_devices()
    return f"{host}:{pid} CUDA_VISIBLE_DEVICES={'unset' if devices is None else devices}"


def parse_worker_identity(text: str) -> tuple[str, int, str]:
    """(host, pid, CUDA_VISIBLE_DEVICES) from a ``worker_identity()`` string."""
    where, _, devices = text.partition(" CUDA_VISIBLE_DEVICES=")
    host, _, pid = where.rpartition(":")
    return host, int(pid), devices


def owner_tag() -> str:
    """``pid@host`` for file names (dashes in the host become underscores, so a name splits at its dashes)."""
    host, pid = this_process()
    return f"{pid}@{host.replace('-', '_')}"


def process_alive(pid: int) -> bool:
    """Whether a process with this pid exists on this host and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie is dead
    except (OSError, IndexError):
        return True

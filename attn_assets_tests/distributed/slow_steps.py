"""Test instrumentation loaded into Celery workers with ``-i``: makes shard steps last long enough to
kill a worker in the middle of one. Sleeps ATTN_ASSETS_TEST_SLOW_FILE's number of seconds before each
shard while that file exists; does nothing otherwise."""

import os
import time
from pathlib import Path

from attn_assets.defs.statistics import assets

_compute_shard = assets.compute_statistics_shard


def _slow_compute_shard(*args, **kwargs):
    marker = Path(os.environ.get("ATTN_ASSETS_TEST_SLOW_FILE", "/nonexistent"))
    if marker.exists():
        time.sleep(float(marker.read_text() or "0"))
    return _compute_shard(*args, **kwargs)


assets.compute_statistics_shard = _slow_compute_shard

"""ProgressLog: the "<shard>: done / total images (x images/s)" lines a shard run writes to the Dagster log."""

from __future__ import annotations

import pytest

from attn_assets.passes import statistics as shard_module
from attn_assets.passes.statistics import ProgressLog


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(shard_module.time, "monotonic", fake)
    return fake


def test_emits_once_per_interval_and_at_the_end(clock):
    lines = []
    progress = ProgressLog(100, lambda done, total, rate: lines.append((clock.now, done, total, rate)), interval_s=10.0)
    # a batch of 5 images every 3 s: lines at the first batch at or after each 10 s
    for batch in range(1, 20):
        clock.now += 3.0
        progress(batch * 5)
    clock.now += 3.0
    progress(100)
    times = [t - 1000.0 for t, *_ in lines]
    assert times == [12.0, 24.0, 36.0, 48.0, 60.0]
    assert [done for _, done, _, _ in lines] == [20, 40, 60, 80, 100]
    assert all(total == 100 for _, _, total, _ in lines)
    assert lines[-1][3] == pytest.approx(100 / 60.0)  # images per second since the start
    assert max(b - a for a, b in zip([0.0, *times], times)) <= 10.0 + 3.0  # never silent longer than interval + one batch


def test_silent_before_the_interval_and_always_reports_completion(clock):
    lines = []
    progress = ProgressLog(8, lambda *args: lines.append(args))
    clock.now += 4.0
    progress(4)
    assert lines == []
    clock.now += 1.0
    progress(8)  # the last batch is always reported, however soon
    assert lines == [(8, 8, pytest.approx(8 / 5.0))]


# The real lines in a real Dagster run log are checked by test_browser.py (PROGRESS_LINE).

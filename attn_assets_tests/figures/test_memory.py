import gc

import numpy as np
import psutil
import pytest
from PIL import Image

from attn_assets.figures import render_triptych


@pytest.mark.slow
def test_memory_flat_over_1000_triptychs(tmp_path):
    proc = psutil.Process()
    rng = np.random.default_rng(0)
    imgs = [Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)) for _ in range(4)]
    maps = [rng.random((24, 24)).astype(np.float32) for _ in range(4)]
    rss = {}
    for i in range(1, 1001):
        render_triptych(imgs[i % 4], maps[i % 4], None, f"image {i}", tmp_path / f"t{i % 10}.png", dpi=30)
        if i in (100, 500, 1000):
            gc.collect()
            rss[i] = proc.memory_info().rss / 2**20
    growth = rss[1000] - rss[100]
    print(f"RSS after 100: {rss[100]:.1f} MB, after 500: {rss[500]:.1f} MB, after 1000: {rss[1000]:.1f} MB, "
          f"growth 100->1000: {growth:+.1f} MB")
    assert growth < 30, rss

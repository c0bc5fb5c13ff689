import numpy as np
import pytest
import torch

from attn_assets.core.metrics import attention_metrics, attention_metrics_numpy
from attn_assets.metric_names import METRIC_NAMES


def _rows(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    uniform = np.full(n, 0.97 / n)
    peaked = rng.dirichlet(np.full(n, 0.05)) * 0.95
    smooth = rng.dirichlet(np.full(n, 5.0)) * 0.99
    one_hot = np.zeros(n)
    one_hot[3] = 0.9
    return np.stack([uniform, peaked, smooth, one_hot]).astype(np.float32)


@pytest.mark.parametrize("n", [36, 196, 576])
def test_torch_metrics_match_seed_numpy(n):
    rows = _rows(n, n)
    ours = attention_metrics(torch.from_numpy(rows))
    assert set(ours) == set(METRIC_NAMES)
    for i, row in enumerate(rows):
        reference = attention_metrics_numpy(row)
        for name in METRIC_NAMES:
            assert float(ours[name][i]) == pytest.approx(reference[name], abs=1e-6), name


def test_metric_shapes_and_types():
    out = attention_metrics(torch.rand(5, 576))
    for name in METRIC_NAMES:
        assert out[name].shape == (5,)
    assert out["num_high_attention_patches"].dtype == torch.int64
    assert out["attention_entropy"].dtype == torch.float64


def test_concentration_uses_floor_of_fraction():
    # 36 patches: top10 = int(3.6) = 3 patches, top25 = int(9.0) = 9 patches
    row = torch.zeros(1, 36, dtype=torch.float64)
    row[0, :10] = 0.1
    out = attention_metrics(row)
    assert float(out["attention_concentration_top10"][0]) == pytest.approx(0.3, abs=1e-7)
    assert float(out["attention_concentration_top25"][0]) == pytest.approx(0.9, abs=1e-7)
    assert int(out["num_high_attention_patches"][0]) == 10
    assert float(out["attention_max"][0]) == pytest.approx(0.1)
    assert float(out["attention_spread"][0]) == pytest.approx(np.std(row.numpy()[0]))  # population std


def test_rejects_wrong_rank():
    with pytest.raises(ValueError):
        attention_metrics(torch.rand(2, 3, 4))

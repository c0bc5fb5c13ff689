import numpy as np
import pandas as pd
import pytest

from attn_assets.figures import DISTRIBUTION_METRICS, render_distributions

from .conftest import assert_not_blank


def test_distributions_returns_what_it_drew(dataset, tmp_path):
    df, _ = dataset
    cols = {c: df[c].to_numpy() for c in DISTRIBUTION_METRICS}  # only the four columns
    stats = render_distributions(cols, tmp_path / "attention_distributions.png",
                                 baselines={"attention_entropy": np.log(576),
                                            "attention_concentration_top10": {"uniform": 0.099, "permuted": 0.5}})
    assert_not_blank(tmp_path / "attention_distributions.png", min_bytes=30_000)
    assert set(stats) == set(DISTRIBUTION_METRICS)
    for c in DISTRIBUTION_METRICS:
        assert stats[c]["mean"] == pytest.approx(np.mean(df[c]), rel=1e-12)
        assert stats[c]["std"] == pytest.approx(np.std(df[c], ddof=1), rel=1e-12)
        assert stats[c]["std"] == pytest.approx(df[c].std(), rel=1e-12)  # pandas / DuckDB stddev
        assert stats[c]["n"] == len(df)


def test_distributions_ignore_nan_and_accept_dataframe(tmp_path):
    rng = np.random.default_rng(0)
    df = pd.DataFrame({
        "attention_entropy": np.r_[rng.normal(4.5, 0.3, 500), np.nan],
        "attention_concentration_top10": np.r_[rng.uniform(0.3, 0.9, 500), np.nan],
        "num_high_attention_patches": np.r_[rng.integers(40, 160, 500), 100].astype(float),
        "attention_spread": np.r_[rng.normal(0.04, 0.01, 500), np.inf],
    })
    stats = render_distributions(df, tmp_path / "d.png")
    assert stats["attention_entropy"]["n"] == 500
    assert stats["attention_entropy"]["mean"] == pytest.approx(np.nanmean(df["attention_entropy"]))
    assert stats["attention_spread"]["n"] == 500
    assert_not_blank(tmp_path / "d.png")


def test_distributions_empty_and_missing(tmp_path):
    empty = {c: np.array([]) for c in DISTRIBUTION_METRICS}
    stats = render_distributions(empty, tmp_path / "e.png")
    assert stats["attention_entropy"]["n"] == 0 and np.isnan(stats["attention_entropy"]["mean"])
    assert (tmp_path / "e.png").stat().st_size > 1000
    with pytest.raises(KeyError):
        render_distributions({"attention_entropy": np.ones(3)}, tmp_path / "m.png")

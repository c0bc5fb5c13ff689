import base64
import io
import re
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from attn_assets.figures import (
    overall_statistics_markdown,
    overall_statistics_table,
    png_preview_markdown,
    render_country_boxplots,
    render_country_mean_maps,
    render_table_png,
    top_countries,
)

from .conftest import assert_not_blank


def test_country_boxplots(dataset, tmp_path):
    df, _ = dataset
    extra = df.head(10).assign(country="NA")  # make NA (Namibia, not a missing value) the largest
    df = pd.concat([df, extra], ignore_index=True)
    assert top_countries(df, 3)[0] == "NA"
    order = render_country_boxplots(df, tmp_path / "box.png", top_n=5)
    assert_not_blank(tmp_path / "box.png")
    top5 = top_countries(df, 5)
    med = df[df.country.isin(top5)].groupby("country")["attention_entropy"].median()
    assert order["attention_entropy"] == sorted(top5, key=lambda c: (med[c], c))
    assert set(order["attention_concentration_top10"]) == set(top5)


def test_country_mean_maps(tmp_path):
    rng = np.random.default_rng(0)
    maps = {c: rng.random((24, 24)) * (i + 1) for i, c in enumerate(["US", "FR", "NA", "JP", "BR"])}
    counts = {"US": 50, "FR": 30, "NA": 30, "JP": 5, "BR": 1}
    out = render_country_mean_maps(maps, counts, tmp_path / "mean_maps.png", country_names={"NA": "Namibia"})
    assert_not_blank(out)
    assert render_country_mean_maps({}, {}, tmp_path / "none.png").stat().st_size > 1000


def test_overall_statistics(dataset, tmp_path):
    df, _ = dataset
    table = overall_statistics_table(df)
    assert list(table.columns) == ["Mean", "Std", "Min", "Max"]
    assert list(table.index)[:4] == ["Attention Entropy", "Top-10% Concentration", "High Attention Patches",
                                     "Attention Spread (Std Dev)"]
    assert {"Top-25% Concentration", "Max Attention"} <= set(table.index)
    row = table.loc["Top-10% Concentration"]
    assert row["Mean"] == pytest.approx(df["attention_concentration_top10"].mean())
    assert row["Std"] == pytest.approx(df["attention_concentration_top10"].std())
    assert 0 < row["Min"] <= row["Max"] <= 1  # fractions, not percents
    assert table.attrs["n"] == len(df)

    md = overall_statistics_markdown(table)
    assert md.startswith(f"### Overall Statistics ({len(df)} images)")
    lines = [l for l in md.splitlines() if l.startswith("|")]
    assert len(lines) == 2 + len(table)
    assert re.search(r"\| Top-10% Concentration +\| \d+\.\d%", md)
    assert f"{df['attention_entropy'].mean():.2f}" in md
    assert_not_blank(render_table_png(table, tmp_path / "table.png"), min_bytes=3_000)


def test_png_preview_markdown_small(tmp_path):
    rng = np.random.default_rng(0)
    noisy = tmp_path / "noisy.png"
    Image.fromarray(rng.integers(0, 255, (1400, 2000, 3), dtype=np.uint8)).save(noisy)
    for path in [noisy]:
        md = png_preview_markdown(path, max_width=600)
        m = re.fullmatch(r"!\[(.*)\]\(data:image/(png|jpeg);base64,([A-Za-z0-9+/=]+)\)", md)
        assert m, md[:80]
        data = base64.b64decode(m.group(3))
        assert len(data) < 200_000
        with Image.open(io.BytesIO(data)) as im:
            assert im.size[0] <= 600


def test_no_pyplot_no_dagster_on_import():
    code = ("import sys, attn_assets.figures; "
            "bad = [m for m in sys.modules if m == 'matplotlib.pyplot' or m.split('.')[0] == 'dagster']; "
            "print(bad); assert not bad")
    subprocess.run([sys.executable, "-c", code], check=True)

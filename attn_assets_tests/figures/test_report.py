"""render_report: a self-contained HTML file from real PNGs and tables (the browser side: ui/test_report.py)."""

from __future__ import annotations

import base64
import io
import re

import numpy as np
import pandas as pd
from PIL import Image

from attn_assets.figures import overall_statistics_table, render_triptych
from attn_assets.figures.report import ReportImage, ReportSection, render_report, thumbnail_data_uri

from .conftest import gradient_image


def _countries() -> pd.DataFrame:
    return pd.DataFrame({
        "country": ["FR", "NA", None], "country_name": ["France", "<script>alert(1)</script>", "(unknown)"],
        "image_count": [20, 15, 5], "attention_entropy_mean": [5.1, 4.9, np.nan],
        "attention_concentration_top10_mean": [0.3, 0.35, 0.31],
    })


def test_report_embeds_every_image_escapes_text_and_lists_what_is_missing(tmp_path, dataset):
    rows, maps = dataset
    png = render_triptych(rows.abs_path[0], maps["img000"], None, "t", tmp_path / "t.png")
    image = ReportImage(png, "#1 img000 <b>", {"entropy": "5.1"}, "FR")
    counts = render_report(
        tmp_path / "out" / "report.html", provenance=[("model", "random:tiny"), ("precision", "fp32")],
        overall=overall_statistics_table(rows), countries=_countries(), figures=[("grid", png)],
        galleries=[ReportSection("high entropy", [image, ReportImage(tmp_path / "gone.png", "gone")])],
        country_examples=[ReportSection("FR · France", [image], country="FR")],
    )
    text = (tmp_path / "out" / "report.html").read_text(encoding="utf-8")
    assert counts == {"images": 3, "missing": 1, "countries": 3}
    sources = re.findall(r"<img src='([^']*)'", text)
    assert len(sources) == 3 and all(s.startswith("data:image/jpeg;base64,") for s in sources)
    assert "<script>alert(1)</script>" not in text and "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "#1 img000 &lt;b&gt;" in text
    assert "gone.png" in text.split("Left out")[1]  # listed, never a broken <img>
    assert text.count("<tr data-country=") == 3
    assert "data-value=''>n/a" in text  # a missing mean sorts last, shown as n/a
    assert f"{len(rows):,} images" in text  # the overall table's caption
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["report.html"]  # written atomically


def test_thumbnail_is_a_small_jpeg_of_the_png(tmp_path):
    path = tmp_path / "big.png"
    gradient_image(1500, 500).save(path)
    uri = thumbnail_data_uri(path, max_width=300)
    with Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))) as im:
        assert im.format == "JPEG" and im.size == (300, 100)

"""The attention report on a warehouse with no current rows (e.g. right after the model changed and the old
rows were dropped): the overall table's SQL aggregates are NULL, the report says n/a instead of failing."""

from __future__ import annotations

import math

import pandas as pd

from attn_assets.defs.visuals.assets import _overall_table, sql_float
from attn_assets.figures.report import render_report
from attn_assets.storage.warehouse import Warehouse


def test_sql_float_reads_every_null_form_as_nan():
    for null in (None, float("nan"), pd.NA, pd.NaT):
        assert math.isnan(sql_float(null))
    assert sql_float(pd.array([3], dtype="Int32")[0]) == 3.0


def test_overall_table_and_report_of_an_empty_warehouse(tmp_path):
    store = Warehouse(tmp_path / "attention.duckdb")
    with store.writer():
        pass  # creates the tables, empty
    table = _overall_table(store)  # was: TypeError float(NAType) from min() of an INTEGER column over zero rows
    assert table.attrs["n"] == 0
    assert table.isna().all().all()

    target = tmp_path / "attention_report.html"
    counts = render_report(target, provenance=[("model", "none")], overall=table, countries=pd.DataFrame())
    html = target.read_text(encoding="utf-8")
    assert "<caption>0 images</caption>" in html and "n/a" in html
    assert counts["countries"] == 0


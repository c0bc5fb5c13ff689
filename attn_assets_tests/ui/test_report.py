"""attention_report.html: produced by a real materialize (tiny model, OSV-5M-style manifest) and opened in
headless Chromium from file://: the filter narrows the per-country table, sorting reorders it, every image
loads, and the console stays free of errors. Chromium as in test_browser.py (Debian's /usr/bin/chromium via
Playwright; .ci/setup.d/10-chromium.sh installs it)."""

from __future__ import annotations

import re

import pytest

from attn_assets.orchestration import materialize_all
from attn_assets.storage.layout import HomeLayout
from attn_assets.storage.warehouse import Warehouse
from attn_assets_tests.ui.test_browser import chromium  # noqa: F401  (the fixture)

pytestmark = pytest.mark.slow


def _metadata(instance, key: str) -> dict:
    import dagster as dg

    event = instance.get_latest_materialization_event(dg.AssetKey(key))
    return {k: v.value for k, v in event.asset_materialization.metadata.items()}


@pytest.fixture
def report(pipeline_env, instance):
    summary = materialize_all(instance=instance)
    assert summary.ok, "\n".join(summary.lines)
    layout = HomeLayout(pipeline_env.home)
    path = layout.analysis_dir / "attention_report.html"
    return path, layout, instance


def test_materialize_writes_a_self_contained_report(report, pipeline_env, tiny_model_dir):
    path, layout, instance = report
    text = path.read_text(encoding="utf-8")
    metadata = _metadata(instance, "attention_report")
    assert metadata["path"] == str(path) and metadata["images_missing"] == 0
    store = Warehouse(layout.warehouse_path)
    countries = store.query("SELECT count(*) AS n FROM country_aggregates").n[0]
    images = store.query("SELECT count(*) AS n FROM attention_statistics").n[0]
    assert metadata["countries"] == countries and text.count("<tr data-country=") == countries

    # self-contained: every image is a data URI, nothing is fetched (no http(s), no relative src)
    sources = re.findall(r"<img src='([^']*)'", text)
    assert sources and all(s.startswith("data:image/jpeg;base64,") for s in sources)
    assert len(sources) == metadata["images_embedded"]
    assert not re.search(r"(src|href)=['\"](https?:|//|\./|[a-z_]+/)", text)
    # capped: 4 figures + the galleries (3 images each here) + at most 2 + 2 per country
    assert len(sources) <= 4 + 4 * 3 + 4 * countries
    # what produced it: the model, the precision, the manifest, the code version
    assert str(tiny_model_dir) in text and "fp32" in text
    assert f"{pipeline_env.manifest} (fingerprint " in text
    assert "statistics pass v" in text and "attn-assets" in text
    assert f"{images:,} images" in text  # the overall table's caption
    assert not list(layout.analysis_dir.glob(".report-*")), "working folder left behind"


def test_report_caps_the_images_per_country(report, monkeypatch):
    """With 1 image per side and 2 countries, the report shows the two largest countries (ties by code) and, for
    each, exactly its most and least concentrated image as DuckDB ranks them."""
    import dagster as dg

    from attn_assets.definitions import build_definitions
    from attn_assets.defs.visuals import assets as visuals

    path, layout, instance = report
    monkeypatch.setattr(visuals, "REPORT_IMAGES_PER_SIDE", 1)
    monkeypatch.setattr(visuals, "REPORT_COUNTRIES", 2)
    result = build_definitions().resolve_job_def("downstream_job").execute_in_process(
        instance=instance, asset_selection=[dg.AssetKey("attention_report")])
    assert result.success
    text = path.read_text(encoding="utf-8")
    store = Warehouse(layout.warehouse_path)
    largest = store.query("SELECT coalesce(country, '') AS c, count(*) AS n FROM attention_statistics "
                          "GROUP BY 1 ORDER BY n DESC, c LIMIT 2").c.tolist()
    sections = re.findall(r"<section class='country-examples' data-country='([^']*)'>(.*?)</section>", text)
    assert [code for code, _ in sections] == largest
    for code, body in sections:
        ranked = store.query("SELECT image_id FROM attention_statistics WHERE coalesce(country, '') = ? "
                             "ORDER BY attention_concentration_top10 DESC, image_id", [code]).image_id.tolist()
        shown = re.findall(r"<figcaption>(most|least) concentrated #1: (\d+)<", body)
        assert shown == [("most", ranked[0]), ("least", ranked[-1])]


def test_report_opens_from_file_filters_sorts_and_loads_every_image(report, chromium):  # noqa: F811
    path, _, _ = report
    page = chromium.new_page(viewport={"width": 1400, "height": 1000})
    errors: list[str] = []
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: errors.append(str(error)))
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    page.goto(path.as_uri())
    page.wait_for_load_state("load")

    # every image decoded (a broken one has naturalWidth 0)
    images = page.eval_on_selector_all("img", "imgs => imgs.map(i => [i.complete, i.naturalWidth])")
    assert images and all(complete and width > 0 for complete, width in images), images
    # nothing but the file itself and its data URIs was requested
    assert all(u == path.as_uri() or u.startswith("data:") for u in requests), requests

    rows = page.locator("#country-table tbody tr:not(.hidden)")
    total = rows.count()
    assert total >= 3
    page.fill("#country-filter", "namib")
    assert rows.count() == 1 and rows.first.get_attribute("data-country") == "NA"
    assert page.inner_text("#country-count") == f"1 of {total} countries"
    examples = page.locator("section.country-examples:not(.hidden)")
    assert examples.count() == 1 and "Namibia" in examples.first.inner_text()
    page.fill("#country-filter", "")
    assert rows.count() == total

    # sorting by image count: ascending, then descending on a second click
    header = page.locator("#country-table thead th", has_text="images")
    header.click()
    counts = [int(c.replace(",", "")) for c in page.eval_on_selector_all(
        "#country-table tbody tr td:nth-child(3)", "tds => tds.map(td => td.textContent)")]
    assert counts == sorted(counts)
    header.click()
    counts = [int(c.replace(",", "")) for c in page.eval_on_selector_all(
        "#country-table tbody tr td:nth-child(3)", "tds => tds.map(td => td.textContent)")]
    assert counts == sorted(counts, reverse=True)
    assert errors == []

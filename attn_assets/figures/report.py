"""attention_report.html: one self-contained static HTML file to attach to a paper draft or send to a colleague.

It opens from disk (file://) with no server and no network: every image is embedded as a base64 data URI
(thumbnails, JPEG), the styles and the few lines of script are inline. It holds what produced the results
(model, precision, manifest, code version), the overall table, the per-country table (sortable by any column,
filterable by country code or name), the distribution figures, the galleries and the most and least
concentrated images of each country, each thumbnail with its metrics. What it shows is capped by its caller
(galleries and a few images per country, never every image of the run); `render_report` embeds what it is given.
"""

from __future__ import annotations

import base64
import html
import io
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from PIL import Image

from attn_assets.storage.atomic import atomic_file

from .summary import formatted_cells

#: Longest side of an embedded thumbnail, in pixels, and its JPEG quality: a triptych stays ~30-60 KB.
THUMBNAIL_WIDTH = 720
FIGURE_WIDTH = 1400
JPEG_QUALITY = 80

#: country_aggregates columns shown in the per-country table: (column, header, format).
COUNTRY_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("image_count", "images", "int"),
    ("attention_entropy_mean", "entropy (nats)", "float3"),
    ("attention_concentration_top10_mean", "top-10% conc.", "percent"),
    ("attention_concentration_top25_mean", "top-25% conc.", "percent"),
    ("num_high_attention_patches_mean", "high-attention patches", "float1"),
    ("attention_spread_mean", "spread (std)", "float4g"),
    ("attention_max_mean", "max attention", "float4g"),
)


@dataclass(frozen=True)
class ReportImage:
    """One thumbnail: the PNG to embed, a caption, the metrics printed under it, the country it belongs to."""

    png: Path
    caption: str
    metrics: Mapping[str, str] = field(default_factory=dict)
    country: str = ""


@dataclass(frozen=True)
class ReportSection:
    """A titled group of thumbnails (a gallery, or one country's top and bottom images)."""

    title: str
    images: Sequence[ReportImage]
    note: str = ""
    country: str = ""


def thumbnail_data_uri(path: str | os.PathLike, max_width: int = THUMBNAIL_WIDTH, quality: int = JPEG_QUALITY) -> str:
    """``data:image/jpeg;base64,...`` of the image at ``path`` scaled to at most ``max_width`` px wide (RGB on
    white). Raises OSError when the file cannot be read."""
    with Image.open(path) as im:
        im.load()
        img = im.convert("RGBA")
    flat = Image.new("RGB", img.size, "white")
    flat.paste(img, mask=img.getchannel("A"))
    if flat.width > max_width:
        flat = flat.resize((max_width, max(1, round(flat.height * max_width / flat.width))), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    flat.save(buf, format="JPEG", quality=quality, optimize=True)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def render_report(
    out_path: str | os.PathLike,
    *,
    provenance: Sequence[tuple[str, str]],
    overall: pd.DataFrame,
    countries: pd.DataFrame,
    figures: Sequence[tuple[str, Path]] = (),
    galleries: Sequence[ReportSection] = (),
    country_examples: Sequence[ReportSection] = (),
    title: str = "Attention report",
) -> dict[str, int]:
    """Write the report to ``out_path`` (atomically) and return counts: images embedded, images missing, countries.

    provenance: (label, value) rows, e.g. ('model', 'geolocal/StreetCLIP'). overall: the table of
    `summary.overall_statistics_table` (display names x Mean/Std/Min/Max, ``attrs['columns']``). countries:
    country_aggregates rows (country, country_name and the `COUNTRY_COLUMNS` present). figures: (caption, PNG)
    drawn full width. A PNG that is missing or unreadable is left out and listed in the report, never a
    broken image.
    """
    counts = {"images": 0, "missing": 0, "countries": int(len(countries))}
    missing: list[str] = []

    def embed(path: Path, width: int) -> str | None:
        try:
            uri = thumbnail_data_uri(path, width)
        except OSError:
            missing.append(str(path))
            counts["missing"] += 1
            return None
        counts["images"] += 1
        return uri

    body = [f"<h1>{_e(title)}</h1>", _provenance_html(provenance), "<h2 id='overall'>Overall statistics</h2>",
            _overall_html(overall), "<h2 id='countries'>Per country</h2>", _country_table_html(countries)]
    if figures:
        body.append("<h2 id='distributions'>Distributions and country figures</h2>")
        for caption, path in figures:
            uri = embed(Path(path), FIGURE_WIDTH)
            if uri is not None:
                body.append(f"<figure class='wide'><img src='{uri}' alt='{_e(caption)}'>"
                            f"<figcaption>{_e(caption)}</figcaption></figure>")
    if galleries:
        body.append("<h2 id='galleries'>Galleries</h2>")
        body += [_section_html(s, embed, "gallery") for s in galleries]
    if country_examples:
        body.append("<h2 id='country-examples'>Most and least concentrated images per country</h2>")
        body += [_section_html(s, embed, "country-examples") for s in country_examples]
    if missing:
        body.append("<h2>Left out</h2><p>These files could not be read when the report was written:</p><ul>"
                    + "".join(f"<li>{_e(m)}</li>" for m in missing) + "</ul>")
    document = (f"<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
                f"<meta name='viewport' content='width=device-width, initial-scale=1'>"
                f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>\n"
                + "\n".join(body) + f"\n<script>{_SCRIPT}</script></body></html>\n")
    with atomic_file(Path(out_path)) as tmp:
        Path(tmp).write_text(document, encoding="utf-8")
    return counts


def _e(value: object) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _provenance_html(rows: Sequence[tuple[str, str]]) -> str:
    cells = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in rows)
    return f"<table id='provenance' class='provenance'>{cells}</table>"


def _overall_html(table: pd.DataFrame) -> str:
    n = table.attrs.get("n")
    head = "".join(f"<th>{_e(c)}</th>" for c in ["Metric", *table.columns])
    rows = "".join(
        "<tr><th>" + _e(name) + "</th>" + "".join(f"<td>{_e(v)}</td>" for v in cells) + "</tr>"
        for name, cells in zip(table.index, formatted_cells(table))
    )
    caption = f"<caption>{n:,} images</caption>" if n is not None else ""
    return f"<table id='overall-table'>{caption}<thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"


def _format(value: object, kind: str) -> tuple[str, str]:
    """(display text, sort key) of one table cell; missing values sort last."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        return "n/a", ""
    if not math.isfinite(v):
        return "n/a", ""
    text = {"int": f"{v:,.0f}", "float3": f"{v:.3f}", "percent": f"{v:.1%}", "float1": f"{v:.1f}",
            "float4g": f"{v:.4g}"}[kind]
    return text, repr(v)


def _country_table_html(frame: pd.DataFrame) -> str:
    columns = [c for c in COUNTRY_COLUMNS if c[0] in frame.columns]
    head = ("<th data-type='text'>country</th><th data-type='text'>name</th>"
            + "".join(f"<th data-type='number'>{_e(h)}</th>" for _, h, _ in columns))
    rows = []
    for rec in frame.to_dict("records"):
        code = rec.get("country") if isinstance(rec.get("country"), str) else ""
        name = rec.get("country_name") if isinstance(rec.get("country_name"), str) else ""
        cells = [f"<td>{_e(code or '—')}</td>", f"<td>{_e(name)}</td>"]
        for col, _, kind in columns:
            text, key = _format(rec.get(col), kind)
            cells.append(f"<td data-value='{_e(key)}'>{_e(text)}</td>")
        rows.append(f"<tr data-country='{_e(code)}' data-name='{_e(name)}'>{''.join(cells)}</tr>")
    return ("<p><label for='country-filter'>Filter by country (code or name): </label>"
            "<input id='country-filter' type='search' placeholder='e.g. FR or France' autocomplete='off'> "
            f"<span id='country-count'>{len(rows)} of {len(rows)} countries</span></p>"
            "<p class='hint'>Click a column header to sort; click again to reverse.</p>"
            f"<table id='country-table' class='sortable'><thead><tr>{head}</tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table>")


def _section_html(section: ReportSection, embed, kind: str) -> str:
    items = []
    for image in section.images:
        uri = embed(Path(image.png), THUMBNAIL_WIDTH)
        if uri is None:
            continue
        metrics = "".join(f"<li><span>{_e(k)}</span> {_e(v)}</li>" for k, v in image.metrics.items())
        items.append(f"<figure><img src='{uri}' alt='{_e(image.caption)}' loading='eager'>"
                     f"<figcaption>{_e(image.caption)}<ul class='metrics'>{metrics}</ul></figcaption></figure>")
    note = f"<p class='hint'>{_e(section.note)}</p>" if section.note else ""
    body = "".join(items) or "<p class='hint'>no images</p>"
    return (f"<section class='{kind}' data-country='{_e(section.country)}'>"
            f"<h3>{_e(section.title)}</h3>{note}<div class='grid'>{body}</div></section>")


_CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1500px;padding:0 1em;color:#222}
h1{margin-bottom:.2em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;margin:.5em 0}th,td{border:1px solid #ddd;padding:3px 8px;text-align:right}
th:first-child,td:first-child,th:nth-child(2),td:nth-child(2){text-align:left}thead th{background:#f2f2f2}
table.sortable thead th{cursor:pointer;user-select:none}
table.sortable thead th[aria-sort=ascending]::after{content:' \\25B2'}
table.sortable thead th[aria-sort=descending]::after{content:' \\25BC'}
table.provenance th{text-align:left;background:#f7f7f7}table.provenance td{text-align:left;font-family:monospace}
caption{caption-side:top;text-align:left;color:#555}
.hint{color:#666;font-size:12px}.grid{display:flex;flex-wrap:wrap;gap:12px}
figure{margin:0;max-width:480px}figure img{width:100%;height:auto;border:1px solid #ddd}
figure.wide{max-width:100%;margin:1em 0}
figcaption{font-size:12px}ul.metrics{list-style:none;padding:0;margin:.2em 0;columns:2}
ul.metrics span{color:#666}tr.hidden,section.hidden{display:none}
"""

_SCRIPT = """
(function () {
  var table = document.getElementById('country-table');
  var filter = document.getElementById('country-filter');
  var count = document.getElementById('country-count');
  var rows = Array.prototype.slice.call(table.tBodies[0].rows);
  var sections = Array.prototype.slice.call(document.querySelectorAll('section.country-examples'));
  function applyFilter() {
    var q = filter.value.trim().toLowerCase();
    var shown = 0;
    rows.forEach(function (row) {
      var hit = !q || row.dataset.country.toLowerCase().indexOf(q) >= 0 || row.dataset.name.toLowerCase().indexOf(q) >= 0;
      row.classList.toggle('hidden', !hit);
      if (hit) { shown += 1; }
    });
    sections.forEach(function (s) {
      var name = s.querySelector('h3').textContent.toLowerCase();
      s.classList.toggle('hidden', !!q && name.indexOf(q) < 0 && s.dataset.country.toLowerCase().indexOf(q) < 0);
    });
    count.textContent = shown + ' of ' + rows.length + ' countries';
  }
  filter.addEventListener('input', applyFilter);
  Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th, index) {
    th.addEventListener('click', function () {
      var descending = th.getAttribute('aria-sort') === 'ascending';
      Array.prototype.forEach.call(table.tHead.rows[0].cells, function (c) { c.removeAttribute('aria-sort'); });
      th.setAttribute('aria-sort', descending ? 'descending' : 'ascending');
      var numeric = th.dataset.type === 'number';
      function key(row) {
        var cell = row.cells[index];
        if (!numeric) { return cell.textContent; }
        var v = cell.dataset.value;
        return v === '' ? null : parseFloat(v);
      }
      rows.sort(function (a, b) {
        var x = key(a), y = key(b);
        if (x === null || y === null) { return x === y ? 0 : (x === null ? 1 : -1); }
        var order = numeric ? x - y : x.localeCompare(y);
        return descending ? -order : order;
      });
      rows.forEach(function (row) { table.tBodies[0].appendChild(row); });
    });
  });
})();
"""

__all__ = ["ReportImage", "ReportSection", "render_report", "thumbnail_data_uri"]

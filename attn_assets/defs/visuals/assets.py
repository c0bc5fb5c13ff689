"""The seed's figures and folders, drawn from the warehouse and the stored CLS maps.

Nothing here runs the model. Galleries read only the rows they draw (ORDER BY ... LIMIT in
DuckDB); every file and folder is written atomically.
"""


import math
from collections.abc import Sequence
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd

from attn_assets import figures
from attn_assets.figures.countries import country_caption
from attn_assets.figures.galleries import format_metric
from attn_assets.figures.geometry import image_file
from attn_assets.figures.report import ReportImage, ReportSection, render_report
from attn_assets.figures.summary import COLUMNS as SUMMARY_COLUMNS, SUMMARY_ROWS
from attn_assets.defs.metadata import coverage_metadata, model_footer
from attn_assets.defs.warehouse.assets import attention_warehouse, country_aggregates
from attn_assets.resources import PipelineResource, WarehouseResource
from attn_assets.storage.layout import HomeLayout
from attn_assets.storage.parquet import read_cls_maps, read_maps_and_boxes
from attn_assets.metric_names import METRIC_NAMES
from attn_assets.storage.schema import ATTENTION_STATISTICS, IMAGES, UNKNOWN_COUNTRY

VISUALS_CODE_VERSION = "1"
# Figures are drawn from the warehouse, which holds only the shards of the current recipe and manifest; their
# metadata says which model that is and how many manifest shards/images are left out (coverage_metadata).
_COMMON = dict(
    group_name="visuals",
    kinds={"matplotlib", "png"},
    owners=["team:attn-assets"],
    tags={"domain": "visuals"},
    code_version=VISUALS_CODE_VERSION,
)
_ROWS_SQL = (
    f'SELECT s.image_id, s.shard_key, coalesce(s.country, \'\') AS country, i.country_name, i.abs_path, i.member, '
    + ", ".join(f"s.{m}" for m in METRIC_NAMES)
    + f' FROM "{ATTENTION_STATISTICS.name}" s LEFT JOIN "{IMAGES.name}" i USING (image_id)'
)


def _rows(warehouse: WarehouseResource, where_order_limit: str = "", params: Sequence = ()) -> pd.DataFrame:
    return warehouse.warehouse().query(f"{_ROWS_SQL} {where_order_limit}", list(params))


def _image_metadata(path: Path, **extra) -> dict:
    return {"path": dg.MetadataValue.path(str(path)), "preview": dg.MetadataValue.md(figures.png_preview_markdown(path)), **extra}


@dg.asset(deps=[attention_warehouse], description="attention_distributions.png: histograms of the four headline metrics with mean, std and the seed's interpretation bands.", **_COMMON)
def attention_distributions(pipeline: PipelineResource, warehouse: WarehouseResource) -> dg.MaterializeResult:
    columns = warehouse.warehouse().query(
        f'SELECT {", ".join(figures.DISTRIBUTION_METRICS)} FROM "{ATTENTION_STATISTICS.name}"'
    )
    target = pipeline.layout.analysis_dir / "attention_distributions.png"
    # uniform-attention baselines (closed form for N patches; seed usage tip 1), drawn as dashed lines
    from attn_assets.core.analyses import uniform_baselines

    patches = warehouse.warehouse().query(f'SELECT max(num_patches) AS n FROM "{ATTENTION_STATISTICS.name}"')["n"].iloc[0]
    baselines = None
    if not pd.isna(patches):
        baselines = {m: {f"uniform (N={int(patches)})": v} for m, v in uniform_baselines(int(patches)).items()}
    drawn = figures.render_distributions({c: columns[c].to_numpy(dtype=float) for c in columns}, target, baselines,
                                         footer=model_footer(warehouse.warehouse()))
    return dg.MaterializeResult(
        metadata=_image_metadata(
            target,
            **coverage_metadata(warehouse.warehouse()),
            images=dg.MetadataValue.int(len(columns)),
            **{f"{metric}_mean": dg.MetadataValue.float(float(stats["mean"])) for metric, stats in drawn.items()},
        )
    )


@dg.asset(deps=[attention_warehouse], description="visualizations/diverse_examples_grid.png: 20 examples spread over metric space and countries, deterministic.", **_COMMON)
def diverse_examples_grid(pipeline: PipelineResource, warehouse: WarehouseResource) -> dg.MaterializeResult:
    # at most 20,000 candidates, drawn reproducibly, so selection stays fast at millions of rows
    candidates = _rows(warehouse, "ORDER BY hash(s.image_id), s.image_id LIMIT 20000")
    chosen = figures.select_diverse(candidates, n=20)
    rows = candidates.set_index("image_id").loc[chosen].reset_index()
    maps, boxes = read_maps_and_boxes(pipeline.layout, rows)
    target = pipeline.layout.visualizations_dir / "diverse_examples_grid.png"
    figures.render_diverse_grid(rows, maps, boxes, target, n=20, image_ids=chosen,
                                footer=model_footer(warehouse.warehouse(), detail=f"{len(chosen)} shown"))
    return dg.MaterializeResult(metadata=_image_metadata(target, examples=dg.MetadataValue.int(len(chosen)),
                                                         **coverage_metadata(warehouse.warehouse())))


def _gallery_asset(folder: str, metric: str, highest: bool) -> dg.AssetsDefinition:
    order = "DESC" if highest else "ASC"

    @dg.asset(
        name=f"gallery_{folder}",
        deps=[attention_warehouse],
        description=f"visualizations/{folder}/: triptychs of the images with the {'highest' if highest else 'lowest'} {metric}, with index.csv.",
        **_COMMON,
    )
    def gallery(context: dg.AssetExecutionContext, pipeline: PipelineResource, warehouse: WarehouseResource) -> dg.MaterializeResult:
        rows = _rows(warehouse, f"WHERE NOT isnan(s.{metric}) ORDER BY s.{metric} {order}, s.image_id LIMIT ?", [pipeline.gallery_size])
        maps, boxes = read_maps_and_boxes(pipeline.layout, rows)
        target = pipeline.layout.visualizations_dir / folder
        footer = model_footer(warehouse.warehouse(), detail=f"{'highest' if highest else 'lowest'} {metric}")
        result = figures.render_gallery(rows, maps, boxes, target, metric, footer=footer)
        for image_id in result.skipped:
            context.log.warning("%s: image %s is gone since its statistics were computed; skipped", folder, image_id)
        first = result.paths[0] if result.paths else None
        metadata = {
            "path": dg.MetadataValue.path(str(target)),
            "images": dg.MetadataValue.int(len(result.paths)),
            "skipped": dg.MetadataValue.int(len(result.skipped)),
            "index": dg.MetadataValue.md(rows[["image_id", "country", metric]].to_markdown(index=False)),
            **coverage_metadata(warehouse.warehouse()),
        }
        if first is not None:
            metadata["preview"] = dg.MetadataValue.md(figures.png_preview_markdown(first))
        return dg.MaterializeResult(metadata=metadata)

    return gallery


gallery_assets = [_gallery_asset(folder, metric, highest) for folder, (metric, highest) in figures.GALLERIES.items()]


def _country_mean_maps(layout: HomeLayout, warehouse: WarehouseResource, countries: list[str]) -> tuple[dict, dict]:
    """Mean CLS map per country, streamed shard by shard (never all maps in memory)."""
    shards = warehouse.warehouse().query(
        f'SELECT DISTINCT shard_key FROM "{ATTENTION_STATISTICS.name}" '
        "WHERE coalesce(country, ?) IN (SELECT unnest(?)) ORDER BY 1",
        [UNKNOWN_COUNTRY, countries],
    )["shard_key"]
    sums: dict[str, np.ndarray] = {}
    counts: dict[str, int] = {}
    for shard_key in shards:
        ids = warehouse.warehouse().query(
            f'SELECT image_id, coalesce(country, ?) AS country FROM "{ATTENTION_STATISTICS.name}" '
            "WHERE shard_key = ? AND coalesce(country, ?) IN (SELECT unnest(?))",
            [UNKNOWN_COUNTRY, shard_key, UNKNOWN_COUNTRY, countries],
        )
        maps, _ = read_cls_maps(layout.shard_parquet(shard_key), list(ids["image_id"]), with_boxes=True)
        for image_id, country in zip(ids["image_id"], ids["country"]):
            if image_id in maps:
                sums[country] = sums.get(country, 0) + maps[image_id].astype(np.float64)
                counts[country] = counts.get(country, 0) + 1
    return {c: (sums[c] / counts[c]).astype(np.float32) for c in sums}, counts


@dg.asset(deps=[attention_warehouse, country_aggregates], description="visualizations/country_boxplots.png (entropy and concentration for the countries with most images, by median) and country_mean_maps.png (mean CLS map per country).", **_COMMON)
def country_figures(pipeline: PipelineResource, warehouse: WarehouseResource) -> dg.MaterializeResult:
    layout = pipeline.layout
    frame = warehouse.warehouse().query(
        f'SELECT s.image_id, coalesce(s.country, \'\') AS country, i.country_name, s.attention_entropy, '
        f's.attention_concentration_top10 FROM "{ATTENTION_STATISTICS.name}" s LEFT JOIN "{IMAGES.name}" i USING (image_id)'
    )
    boxplots = layout.visualizations_dir / "country_boxplots.png"
    footer = model_footer(warehouse.warehouse())
    drawn = figures.render_country_boxplots(frame, boxplots, footer=footer)
    countries = figures.top_countries(frame, top_n=24)
    mean_maps, counts = _country_mean_maps(layout, warehouse, countries)
    mean_maps_path = layout.visualizations_dir / "country_mean_maps.png"
    names = dict(zip(frame["country"], frame["country_name"].fillna("")))
    figures.render_country_mean_maps(mean_maps, counts, mean_maps_path, country_names=names,
                                     footer=model_footer(warehouse.warehouse(), sum(counts.values())))
    return dg.MaterializeResult(
        metadata={
            **_image_metadata(boxplots),
            "mean_maps_path": dg.MetadataValue.path(str(mean_maps_path)),
            "mean_maps_preview": dg.MetadataValue.md(figures.png_preview_markdown(mean_maps_path)),
            "countries": dg.MetadataValue.text(", ".join(next(iter(drawn.values()), []))),
            **coverage_metadata(warehouse.warehouse()),
        }
    )


@dg.asset(deps=[attention_warehouse], description="The seed's 'Overall Statistics' table (mean, std, min, max per metric) as overall_statistics.md and .png.", **_COMMON)
def overall_statistics(pipeline: PipelineResource, warehouse: WarehouseResource) -> dg.MaterializeResult:
    frame = warehouse.warehouse().query(f'SELECT {", ".join(METRIC_NAMES)} FROM "{ATTENTION_STATISTICS.name}"')
    table = figures.overall_statistics_table(frame)
    markdown = figures.overall_statistics_markdown(table, title=f"Overall Statistics ({len(frame):,} images)")
    analysis = pipeline.layout.analysis_dir
    with figures.atomic_file(analysis / "overall_statistics.md") as tmp:
        Path(tmp).write_text(markdown + "\n", encoding="utf-8")
    png = figures.render_table_png(table, analysis / "overall_statistics.png", footer=model_footer(warehouse.warehouse()))
    return dg.MaterializeResult(metadata={**_image_metadata(png), "table": dg.MetadataValue.md(markdown),
                                          **coverage_metadata(warehouse.warehouse())})



# --------------------------------------------------------------------------- the shareable report

#: Countries (most images first) and images per country and side shown in the report's per-country section.
REPORT_COUNTRIES = 24  # as many as country_mean_maps.png shows
REPORT_IMAGES_PER_SIDE = 2
REPORT_METRIC = "attention_concentration_top10"
# 15 x 5 in at 60 dpi = 900 px wide, just over the report's 720 px thumbnails (drawing at 100 dpi costs ~30% more)
REPORT_TRIPTYCH_DPI = 60


def sql_float(value: object) -> float:
    """A numeric value read from a DuckDB result as a float; NaN for SQL NULL in any of the forms pandas gives it
    (None, NaN, pd.NA of a nullable column such as min() of an INTEGER column over zero rows)."""
    return math.nan if pd.isna(value) else float(value)


def _overall_table(store) -> pd.DataFrame:
    """The seed's overall table computed in DuckDB (mean, sample std, min, max per metric; NaN ignored), in the
    shape of figures.overall_statistics_table, without reading every row into memory. With no rows (or one, for
    the std), the aggregates are NULL: NaN cells, which the report shows as n/a, and ``attrs["n"]`` 0."""
    rows = SUMMARY_ROWS
    select = ", ".join(
        f"avg({c}) FILTER (WHERE NOT isnan({c})) AS {c}_mean, stddev_samp({c}) FILTER (WHERE NOT isnan({c})) AS {c}_std, "
        f"min({c}) FILTER (WHERE NOT isnan({c})) AS {c}_min, max({c}) FILTER (WHERE NOT isnan({c})) AS {c}_max, "
        f"count({c}) FILTER (WHERE NOT isnan({c})) AS {c}_n"
        for c, _ in rows
    )
    found = store.query(f'SELECT {select} FROM "{ATTENTION_STATISTICS.name}"').iloc[0]
    table = pd.DataFrame(
        [[sql_float(found[f"{c}_{s}"]) for s in ("mean", "std", "min", "max")] for c, _ in rows],
        index=pd.Index([name for _, name in rows], name="Metric"), columns=SUMMARY_COLUMNS,
    )
    table.attrs["n"] = int(max((sql_float(found[f"{c}_n"]) for c, _ in rows), default=0))
    table.attrs["columns"] = {name: c for c, name in rows}
    return table


def _source_revision() -> str:
    """The git commit of this source tree ('+ local changes' when it differs from it), or 'not a git checkout'."""
    import subprocess

    here = str(Path(__file__).resolve().parent)
    try:
        commit = subprocess.run(["git", "-C", here, "rev-parse", "--short=12", "HEAD"], capture_output=True,
                                text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", here, "diff", "--quiet", "HEAD", "--", "."], capture_output=True,
                               timeout=30).returncode != 0
    except (OSError, subprocess.SubprocessError):
        return "not a git checkout"
    return f"git {commit}" + (" + local changes" if dirty else "")


def _provenance(pipeline: PipelineResource, store) -> list[tuple[str, str]]:
    from importlib.metadata import PackageNotFoundError, version

    from attn_assets.defs.manifest.assets import manifest_fingerprint
    from attn_assets.passes.recipe import PASS_CODE_VERSIONS

    row = store.query(
        f"SELECT string_agg(DISTINCT model_spec, ', ' ORDER BY model_spec) AS models, "
        f"string_agg(DISTINCT precision, ', ' ORDER BY precision) AS precisions, count(*) AS ok, "
        f"min(computed_at) AS first, max(computed_at) AS last, "
        f"(SELECT count(*) FROM \"{IMAGES.name}\") AS manifest_images, "
        f"(SELECT count(*) FROM image_failures) AS failed FROM \"{ATTENTION_STATISTICS.name}\""
    ).iloc[0]
    try:
        package = version("attn-assets")
    except PackageNotFoundError:
        package = "unknown"
    coverage = coverage_metadata(store)
    return [
        ("model", row.models if isinstance(row.models, str) else "none"),
        ("precision", row.precisions if isinstance(row.precisions, str) else "none"),
        ("manifest", f"{pipeline.manifest} (fingerprint {manifest_fingerprint(pipeline.manifest)})"),
        ("images", f"{int(row.ok):,} with statistics, {int(row.failed):,} failed, {int(row.manifest_images):,} in "
                   f"the manifest ({coverage['images_without_current_results'].value:,} without current results)"),
        ("code version", f"attn-assets {package}, statistics pass v{PASS_CODE_VERSIONS['statistics']}, "
                         f"visuals v{VISUALS_CODE_VERSION}, {_source_revision()}"),
        ("statistics computed", f"{row['first']} to {row['last']} (UTC)" if row.ok else "never"),
        ("report written", pd.Timestamp.now(tz="UTC").strftime("%Y-%m-%d %H:%M:%S UTC")),
    ]


def _metric_lines(row: dict, metrics: Sequence[str] = tuple(METRIC_NAMES)) -> dict[str, str]:
    return {m.removeprefix("attention_"): format_metric(m, row[m]) for m in metrics
            if m in row and not pd.isna(row[m])}


def _gallery_sections(layout: HomeLayout) -> list:
    """The seed's four galleries, read back from their folders' index.csv (the triptychs already drawn)."""
    sections = []
    for folder, (metric, highest) in figures.GALLERIES.items():
        index_path = layout.visualizations_dir / folder / "index.csv"
        if not index_path.exists():
            continue
        index = pd.read_csv(index_path, dtype={"image_id": str, "country": str, "file": str})
        images = [
            ReportImage(
                png=layout.visualizations_dir / folder / rec["file"],
                caption=f"#{rec['rank']} {rec['image_id']} ({country_caption(rec.get('country_name'), rec.get('country'))})",
                metrics=_metric_lines(rec), country=rec.get("country") if isinstance(rec.get("country"), str) else "")
            for rec in index.to_dict("records") if rec.get("status") == "ok" and isinstance(rec.get("file"), str)
        ]
        sections.append(ReportSection(
            title=f"{folder.replace('_', ' ')}: {'highest' if highest else 'lowest'} {metric}", images=images,
            note=f"visualizations/{folder}/"))
    return sections


def _country_example_sections(layout: HomeLayout, warehouse: WarehouseResource, workdir: Path, footer: str,
                              log) -> list:
    """For the REPORT_COUNTRIES countries with most images: the REPORT_IMAGES_PER_SIDE most and least concentrated
    images (REPORT_METRIC), drawn as triptychs into ``workdir`` (ranked in DuckDB; only these maps are read)."""
    m = REPORT_METRIC
    rows = _rows(
        warehouse,
        f"WHERE coalesce(s.country, '') IN (SELECT c FROM (SELECT coalesce(country, '') AS c, count(*) AS n "
        f"FROM \"{ATTENTION_STATISTICS.name}\" GROUP BY 1 ORDER BY n DESC, c LIMIT ?)) AND NOT isnan(s.{m}) "
        f"QUALIFY row_number() OVER (PARTITION BY coalesce(s.country, '') ORDER BY s.{m} DESC, s.image_id) <= ? "
        f"OR row_number() OVER (PARTITION BY coalesce(s.country, '') ORDER BY s.{m} ASC, s.image_id) <= ?",
        [REPORT_COUNTRIES, REPORT_IMAGES_PER_SIDE, REPORT_IMAGES_PER_SIDE],
    )
    if rows.empty:
        return []
    maps, boxes = read_maps_and_boxes(layout, rows)
    order = rows.groupby("country").size().rename("n").reset_index()
    sizes = warehouse.warehouse().query(
        f'SELECT coalesce(country, \'\') AS country, count(*) AS n FROM "{ATTENTION_STATISTICS.name}" GROUP BY 1')
    sizes = dict(zip(sizes["country"], sizes["n"]))
    sections = []
    for country in sorted(order["country"], key=lambda c: (-sizes.get(c, 0), c)):
        group = rows[rows["country"] == country]
        name = country_caption(group["country_name"].iloc[0], country or None)
        images = []
        for label, ascending in (("most concentrated", False), ("least concentrated", True)):
            chosen = group.sort_values([m, "image_id"], ascending=[ascending, True]).head(REPORT_IMAGES_PER_SIDE)
            for rank, rec in enumerate(chosen.to_dict("records"), start=1):
                image_id = rec["image_id"]
                path = image_file(rec.get("abs_path"), rec.get("member"))
                if image_id not in maps or path is None:
                    log.warning("attention_report: image %s (%s) has no stored map or file; left out", image_id, name)
                    continue
                png = workdir / f"{figures.safe_image_id(country or 'unknown')}_{label[:4]}_{rank}.png"
                title = f"{name}: {label} #{rank}  |  {image_id}  |  top-10% = {rec[m]:.1%}"
                try:
                    figures.render_triptych(path, maps[image_id], boxes.get(image_id), title, png, footer=footer,
                                            dpi=REPORT_TRIPTYCH_DPI)
                except (OSError, ValueError) as exc:
                    log.warning("attention_report: image %s could not be drawn (%s); left out", image_id, exc)
                    continue
                images.append(ReportImage(png=png, caption=f"{label} #{rank}: {image_id}",
                                                         metrics=_metric_lines(rec), country=country))
        sections.append(ReportSection(
            title=f"{country or UNKNOWN_COUNTRY} · {name} ({sizes.get(country, 0):,} images)", images=images,
            country=country))
    return sections


@dg.asset(
    deps=[attention_warehouse, country_aggregates, attention_distributions, diverse_examples_grid, country_figures,
          overall_statistics, *gallery_assets],
    description=("attention_analysis/attention_report.html: one self-contained HTML file (images embedded, opens "
                 "from disk) with the model, precision, manifest and code version, the overall and per-country "
                 "tables (sortable, filterable), the distributions, the galleries and the most and least "
                 f"concentrated images of the {REPORT_COUNTRIES} largest countries, each with its metrics."),
    **{**_COMMON, "kinds": {"html"}},
)
def attention_report(context: dg.AssetExecutionContext, pipeline: PipelineResource,
                     warehouse: WarehouseResource) -> dg.MaterializeResult:
    import tempfile

    layout = pipeline.layout
    store = warehouse.warehouse()
    countries = store.query(
        "SELECT * FROM country_aggregates ORDER BY image_count DESC, country NULLS LAST")
    figure_files = [
        ("attention_distributions.png: the four headline metrics", layout.analysis_dir / "attention_distributions.png"),
        ("diverse_examples_grid.png: 20 examples spread over metric space and countries",
         layout.visualizations_dir / "diverse_examples_grid.png"),
        ("country_boxplots.png", layout.visualizations_dir / "country_boxplots.png"),
        ("country_mean_maps.png", layout.visualizations_dir / "country_mean_maps.png"),
    ]
    target = layout.analysis_dir / "attention_report.html"
    layout.analysis_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".report-", dir=layout.analysis_dir) as workdir:
        examples = _country_example_sections(layout, warehouse, Path(workdir), model_footer(store), context.log)
        counts = render_report(
            target, provenance=_provenance(pipeline, store), overall=_overall_table(store), countries=countries,
            figures=[(caption, path) for caption, path in figure_files if path.exists()],
            galleries=_gallery_sections(layout), country_examples=examples,
        )
    return dg.MaterializeResult(metadata={
        "path": dg.MetadataValue.path(str(target)),
        "url": dg.MetadataValue.url(target.as_uri()),
        "size_bytes": dg.MetadataValue.int(target.stat().st_size),
        "images_embedded": dg.MetadataValue.int(counts["images"]),
        "images_missing": dg.MetadataValue.int(counts["missing"]),
        "countries": dg.MetadataValue.int(counts["countries"]),
        **coverage_metadata(store),
    })

"""Real-world inputs, round 2, second pass: what an adversarial tester found after the first.

Each test builds real files (images, manifests, Parquet and DuckDB files, non-UTF-8 names) and asserts the
exact outcome: non-UTF-8 (Latin-1) names are drawn in every figure and accepted as ``extract --out``; a
non-UTF-8 ATTN_ASSETS_HOME or ``--database`` is refused up front with one line; path settings accept the
escaped text (``\\xNN``) the pipeline itself writes; ``attn-assets sql`` prints NULL for every SQL NULL;
an unknown country is "unknown" in the rollout gallery.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from attn_assets import settings as S
from attn_assets.cli import EXIT_OK, EXIT_USAGE, main
from attn_assets.path_text import path_to_text
from attn_assets.catalog.manifest import find_manifest_files as manifest_files
from attn_assets.defs.manifest.assets import manifest_fingerprint
from attn_assets.figures import render_diverse_grid, render_gallery
from attn_assets.figures.analyses import render_rollout_gallery
from attn_assets.metric_names import METRIC_NAMES
from attn_assets.resources import PipelineResource
from attn_assets_tests.conftest import street_scene

LATIN1 = os.fsdecode(b"caf\xe9")  # 'caf\udce9': a Latin-1 name as Python lists it
LATIN1_TEXT = "caf\\xe9"  # how every table, file and log writes it
ETE = os.fsdecode(b"\xe9t\xe9.jpg")
ETE_TEXT = "\\xe9t\\xe9.jpg"


def _scene(path: str, seed: int, size=(96, 72)) -> str:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    street_scene(size[0], size[1], seed).save(path, quality=90)
    return path


def _run(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


def _latin1_images(tmp_path: Path) -> tuple[list[str], pd.DataFrame]:
    """Two photos, one in a Latin-1 folder and one with a Latin-1 name, as the warehouse rows describe them."""
    root = os.fsdecode(tmp_path)
    raw = [_scene(os.path.join(root, LATIN1, "a.jpg"), 1), _scene(os.path.join(root, "photos", ETE), 2)]
    rows = pd.DataFrame({
        "image_id": ["a", "b"],
        "abs_path": [path_to_text(p) for p in raw],  # what images.abs_path holds
        "country": ["FR", None],
        "country_name": ["France", None],
        **{m: [1.0 + k, 2.0 + k] for k, m in enumerate(METRIC_NAMES)},
    })
    assert rows["abs_path"].tolist() == [f"{root}/{LATIN1_TEXT}/a.jpg", f"{root}/photos/{ETE_TEXT}"]
    return raw, rows


def _maps() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {i: rng.random((6, 6)).astype(np.float32) for i in ("a", "b")}


# --------------------------------------------------------------------------- A, H: figures


def test_gallery_draws_images_stored_under_escaped_latin1_names(tmp_path):
    _, rows = _latin1_images(tmp_path)
    result = render_gallery(rows, _maps(), None, tmp_path / "gallery", "attention_entropy")
    index = pd.read_csv(tmp_path / "gallery" / "index.csv", dtype=str, keep_default_na=False)
    assert index[["rank", "image_id", "file", "status"]].to_dict("records") == [
        {"rank": "1", "image_id": "a", "file": "01_a.png", "status": "ok"},
        {"rank": "2", "image_id": "b", "file": "02_b.png", "status": "ok"},
    ]
    assert result.skipped == [] and [p.name for p in result.paths] == ["01_a.png", "02_b.png"]
    assert all(p.stat().st_size > 1000 for p in result.paths)


def test_gallery_still_ranks_a_missing_image_as_missing(tmp_path):
    _, rows = _latin1_images(tmp_path)
    rows.loc[1, "abs_path"] = f"{os.fsdecode(tmp_path)}/photos/gone_\\xe9.jpg"
    rows.loc[0, "abs_path"] = None
    render_gallery(rows, _maps(), None, tmp_path / "gallery", "attention_entropy")
    index = pd.read_csv(tmp_path / "gallery" / "index.csv", dtype=str, keep_default_na=False)
    assert index["status"].tolist() == ["missing_image", "missing_image"] and index["file"].tolist() == ["", ""]


def test_diverse_grid_draws_every_tile_of_latin1_names(tmp_path, caplog):
    _, rows = _latin1_images(tmp_path)
    with caplog.at_level(logging.WARNING, logger="attn_assets.figures"):
        out = render_diverse_grid(rows, _maps(), None, tmp_path / "grid.png", n=2, image_ids=["a", "b"])
    assert out.is_file()
    assert [r.getMessage() for r in caplog.records if "left empty" in r.getMessage()] == []
    # the same grid with one file gone: exactly that tile is empty, so the check above can fail
    rows.loc[1, "abs_path"] = f"{os.fsdecode(tmp_path)}/photos/gone_\\xe9.jpg"
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="attn_assets.figures"):
        render_diverse_grid(rows, _maps(), None, tmp_path / "grid2.png", n=2, image_ids=["a", "b"])
    assert [r.getMessage() for r in caplog.records if "left empty" in r.getMessage()] == [
        f"diverse grid: tile for 'b' left empty: image file missing: {os.fsdecode(tmp_path)}/photos/gone_\\xe9.jpg"]


def test_rollout_gallery_draws_latin1_names_and_says_unknown_for_no_country(tmp_path, monkeypatch):
    import attn_assets.figures.analyses as analyses

    _, rows = _latin1_images(tmp_path)
    rows = rows[["image_id", "abs_path", "country", "attention_entropy"]].assign(country=["FR", ""])
    titles: list[str] = []
    save = analyses.save_figure

    def capture(fig, out_path, dpi=100, footer=None):
        titles.extend(ax.get_title() for ax in fig.axes)
        return save(fig, out_path, dpi=dpi, footer=footer)

    monkeypatch.setattr(analyses, "save_figure", capture)
    maps = _maps()
    path, skipped = render_rollout_gallery(rows, maps, maps, {}, tmp_path / "rollout.png")
    assert skipped == [] and path.is_file()
    # each panel title: the image and its country, the map's name, then the map's range (figures/scale.py)
    assert [t.split("\nrange ")[0] for t in titles if "last-layer CLS attention" in t] == [
        "a (FR)\nlast-layer CLS attention", "b (unknown)\nlast-layer CLS attention"]


# --------------------------------------------------------------------------- B: extract --out


def test_extract_writes_an_out_file_with_a_latin1_name_in_a_new_folder(tmp_path, tiny_model_dir):
    root = os.fsdecode(tmp_path)
    image = _scene(os.path.join(root, "in", ETE), 3)
    out = os.path.join(root, LATIN1, "new", os.fsdecode(b"r\xe9sultats.parquet"))
    code, stdout, stderr = _run(["extract", "--model", str(tiny_model_dir), "--out", out, "--device", "cpu",
                                 "--quiet", "--num-workers", "0", image])
    assert code == EXIT_OK, stderr
    assert os.listdir(os.fsencode(os.path.join(root, LATIN1, "new"))) == [b"r\xe9sultats.parquet"]
    with open(out, "rb") as fh:
        rows = pq.read_table(fh).to_pandas()
    assert rows["image_path"].tolist() == [f"{root}/in/{ETE_TEXT}"]
    assert rows["failure_reason"].isna().all() and (rows["attention_entropy"] > 0).all()
    assert stdout == (f"wrote {root}/{LATIN1_TEXT}/new/r\\xe9sultats.parquet: 1 images computed, 0 failed "
                      f"({tiny_model_dir}, cpu, fp32)\n")


def test_extract_refuses_an_out_it_cannot_write_before_loading_the_model(tmp_path):
    image = _scene(str(tmp_path / "in" / "a.jpg"), 4)
    blocker = tmp_path / "notes.txt"
    blocker.write_text("a file where a folder would be")
    missing_model = str(tmp_path / "no_such_model")  # loading it would fail: the --out check comes first
    code, stdout, stderr = _run(["extract", "--model", missing_model, "--out", str(blocker / "out.parquet"),
                                 "--device", "cpu", "--quiet", image])
    assert (code, stdout) == (EXIT_USAGE, "")
    assert stderr == (f"attn-assets: error: cannot write --out '{blocker}/out.parquet' ('{blocker}' is a file, not a "
                      "folder); nothing was computed. Choose a file in a folder you can write\n")
    code, stdout, stderr = _run(["extract", "--model", missing_model, "--out", str(tmp_path / "in"),
                                 "--device", "cpu", "--quiet", image])
    assert (code, stdout) == (EXIT_USAGE, "")
    assert stderr == (f"attn-assets: error: --out '{tmp_path}/in' is a folder; give the Parquet file to write, "
                      f"e.g. '{tmp_path}/in/attention.parquet'\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "notes.txt"]


# --------------------------------------------------------------------------- D, E: settings and the manifest source


def _home_refusal(shown: str) -> str:
    return (f"ATTN_ASSETS_HOME '{shown}' is not a valid UTF-8 path (its non-UTF-8 bytes are shown as \\xNN), and "
            "the DuckDB warehouse cannot be opened under it. Use a folder whose path is UTF-8: rename it (e.g. "
            "`convmv -f latin1 -t utf-8 -r --notest <folder>`) or choose another")


@pytest.mark.parametrize("escaped", [False, True], ids=["raw", "escaped"])
def test_latin1_home_is_refused_up_front(tmp_path, monkeypatch, escaped):
    root = os.fsdecode(tmp_path)
    home = os.path.join(root, LATIN1, "home")
    monkeypatch.setenv("ATTN_ASSETS_HOME", path_to_text(home) if escaped else home)
    monkeypatch.setenv("DAGSTER_HOME", os.path.join(root, "dagster_home"))
    with pytest.raises(ValueError) as info:
        S.Settings.from_env()
    assert str(info.value) == _home_refusal(f"{root}/{LATIN1_TEXT}/home")
    refusal = f"attn-assets: error: {_home_refusal(f'{root}/{LATIN1_TEXT}/home')}\n"
    assert _run(["materialize"]) == (EXIT_USAGE, "", refusal)
    assert _run(["sql", "SELECT 1"]) == (EXIT_USAGE, "", refusal)
    assert os.listdir(root) == []  # nothing created: neither the home nor DAGSTER_HOME


def test_sql_refuses_a_latin1_database_path(tmp_path):
    root = os.fsdecode(tmp_path)
    database = os.path.join(root, os.fsdecode(b"entrep\xf4t.duckdb"))
    Path(database).write_bytes(b"")  # DuckDB would end in std::bad_cast on this name
    code, stdout, stderr = _run(["sql", "--database", database, "SELECT 1"])
    assert (code, stdout) == (EXIT_USAGE, "")
    assert stderr == (f"attn-assets: error: --database '{root}/entrep\\xf4t.duckdb' is not a valid UTF-8 path (its "
                      "non-UTF-8 bytes are shown as \\xNN), and the DuckDB warehouse cannot be opened under it. Use a "
                      "folder whose path is UTF-8: rename it (e.g. `convmv -f latin1 -t utf-8 -r --notest <folder>`) "
                      "or choose another\n")


def test_path_settings_accept_the_escaped_text_the_pipeline_writes(tmp_path, monkeypatch):
    root = os.fsdecode(tmp_path)
    folder = os.path.join(root, LATIN1)
    manifest = os.path.join(folder, "test.csv")
    os.makedirs(folder)
    Path(manifest).write_text("image_id,path\na,a.jpg\n", encoding="utf-8")
    escaped_folder = f"{root}/{LATIN1_TEXT}"
    monkeypatch.setenv("ATTN_ASSETS_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("ATTN_ASSETS_MANIFEST", f"{escaped_folder}/test.csv")
    monkeypatch.setenv("ATTN_ASSETS_IMAGE_ROOT", escaped_folder)
    settings = S.Settings.from_env()
    assert (settings.manifest, settings.image_root) == (manifest, Path(folder))
    monkeypatch.setenv("ATTN_ASSETS_MANIFEST", f"{escaped_folder}/*.csv")
    assert S.Settings.from_env().manifest == os.path.join(folder, "*.csv")
    assert PipelineResource(image_root=escaped_folder).image_root_path == Path(folder)

    # the manifest source (sensor, staleness): the raw name, its escaped text and a glob name the same file
    for spec in (manifest, f"{escaped_folder}/test.csv", f"{escaped_folder}/*.csv", os.path.join(folder, "*.csv")):
        assert manifest_files(spec) == [Path(manifest)], spec
    fingerprints = {manifest_fingerprint(spec) for spec in (manifest, f"{escaped_folder}/test.csv")}
    assert len(fingerprints) == 1 and len(fingerprints.pop()) == 16
    before = manifest_fingerprint(manifest)
    Path(manifest).write_text("image_id,path\na,a.jpg\nb,b.jpg\n", encoding="utf-8")
    assert manifest_fingerprint(f"{escaped_folder}/*.csv") != before


# --------------------------------------------------------------------------- G: sql prints NULL


def test_sql_table_output_prints_null_for_every_null(tmp_path):
    database = tmp_path / "w.duckdb"
    with duckdb.connect(str(database)) as con:
        con.execute("CREATE TABLE t AS SELECT * FROM (VALUES "
                    "('a', 1, 1.5, TIMESTAMP '2020-01-01 10:00', true, [1, 2]), "
                    "('b', NULL, NULL, NULL, NULL, NULL), "
                    "(NULL, 3, 2.25, TIMESTAMP '2021-06-30 00:00', false, [3])) v(name, n, x, seen, flag, ids)")
    query = "SELECT * FROM t ORDER BY name NULLS LAST"
    code, stdout, stderr = _run(["sql", "--database", str(database), query])
    assert (code, stderr) == (EXIT_OK, "")
    assert stdout.splitlines() == [
        "name    n    x                seen  flag    ids",
        "   a    1 1.50 2020-01-01 10:00:00  True [1, 2]",
        "   b NULL NULL                NULL  NULL   NULL",
        "NULL    3 2.25 2021-06-30 00:00:00 False    [3]",
    ]
    # --csv and --json keep their own forms: an empty field and null
    assert _run(["sql", "--database", str(database), "--csv", query])[1].splitlines()[2] == "b,,,,,"
    assert '"n": null' in _run(["sql", "--database", str(database), "--json", query])[1]


# --------------------------------------------------------------------------- end to end


@pytest.mark.slow
def test_latin1_manifest_folder_named_by_escaped_text_end_to_end(plain_env, plain_instance, monkeypatch, caplog):
    """ATTN_ASSETS_MANIFEST and ATTN_ASSETS_IMAGE_ROOT name a Latin-1 folder by escaped text; one image has a
    Latin-1 name. Every image is computed and drawn in every gallery and in the diverse grid."""
    import dagster as dg

    from attn_assets.orchestration import materialize_all
    from attn_assets.storage.layout import HomeLayout
    from attn_assets.storage.warehouse import Warehouse

    root = os.fsdecode(plain_env.tmp)
    folder = os.path.join(root, LATIN1)
    for k, name in enumerate(("a.jpg", "b.jpg", ETE)):
        _scene(os.path.join(folder, name), k)
    Path(os.path.join(folder, "test.csv")).write_text(
        f"image_id,path,country\na,a.jpg,FR\nb,b.jpg,\nc,{ETE_TEXT},DE\n", encoding="utf-8")
    escaped = f"{root}/{LATIN1_TEXT}"
    monkeypatch.setenv("ATTN_ASSETS_MANIFEST", f"{escaped}/test.csv")
    monkeypatch.setenv("ATTN_ASSETS_IMAGE_ROOT", escaped)
    monkeypatch.setenv("ATTN_ASSETS_GALLERY_SIZE", "3")
    with caplog.at_level(logging.WARNING, logger="attn_assets.figures"):
        summary = materialize_all(instance=plain_instance)
    assert summary.ok, "\n".join(summary.lines)
    layout = HomeLayout(plain_env.home)
    images = Warehouse(layout.warehouse_path).query(
        "SELECT i.image_id, i.abs_path, i.source_file, s.attention_entropy > 0 AS computed FROM images i "
        "JOIN attention_statistics s "
        "USING (image_id) ORDER BY image_id")
    assert images.to_dict("records") == [
        {"image_id": i, "abs_path": f"{escaped}/{name}", "source_file": f"{escaped}/test.csv", "computed": True}
        for i, name in (("a", "a.jpg"), ("b", "b.jpg"), ("c", ETE_TEXT))]
    galleries = sorted(p.parent.name for p in layout.visualizations_dir.glob("*/index.csv"))
    assert galleries == ["high_concentration", "high_entropy", "low_concentration", "low_entropy"]
    for name in galleries:
        index = pd.read_csv(layout.visualizations_dir / name / "index.csv", dtype=str, keep_default_na=False)
        assert sorted(index["image_id"]) == ["a", "b", "c"] and set(index["status"]) == {"ok"}, (name, index)
    assert (layout.visualizations_dir / "diverse_examples_grid.png").is_file()
    assert [r.getMessage() for r in caplog.records if "left empty" in r.getMessage()] == []
    event = plain_instance.get_latest_materialization_event(dg.AssetKey("image_manifest"))
    assert event.asset_materialization.metadata["manifest"].value == f"{escaped}/test.csv"

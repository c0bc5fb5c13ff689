"""`attn-assets`: materialize the graph headless, show one image, start the UI, run the core alone, write demo data,
query SQL."""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path

from attn_assets import settings as S
from attn_assets.path_text import path_to_text

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"}


def _fail(message: str, code: int = EXIT_USAGE) -> int:
    print(f"attn-assets: error: {path_to_text(message)}", file=sys.stderr)
    return code


# -- materialize ----------------------------------------------------------------------------

#: materialize's flags and the variable each one overrides (set in the environment, so the runs record them as
#: if the variable had been set: the resources show them as coming from that variable).
MATERIALIZE_FLAGS = {"manifest": S.ENV_MANIFEST, "image_root": S.ENV_IMAGE_ROOT, "model": S.ENV_MODEL,
                     "home": S.ENV_HOME}


def apply_flag_overrides(args: argparse.Namespace, flags: dict[str, str] = MATERIALIZE_FLAGS) -> list[str]:
    """Put each given flag into its ATTN_ASSETS_* variable (flags win over the environment); the names set."""
    applied = []
    for attribute, variable in flags.items():
        value = getattr(args, attribute, None)
        if value is not None:
            os.environ[variable] = value
            applied.append(variable)
    return applied


def prepare_dagster_home(settings: S.Settings) -> Path:
    """The Dagster instance folder every entry point uses (materialize, demo, ui): DAGSTER_HOME, default
    ``$ATTN_ASSETS_HOME/dagster_home``; created, and given the repo's dagster.yaml (telemetry off, the run queue,
    the gpu pool) when it has no dagster.yaml yet. An existing dagster.yaml is never overwritten. The pools the
    assets declare get their limit row now, so the run queue's first tick holds to it (defs/runs.py)."""
    import shutil

    import dagster as dg

    from attn_assets.defs.runs import initialize_pool_limits

    home = S.dagster_home_setting(settings.home)
    os.environ[S.ENV_DAGSTER_HOME] = os.fspath(home)
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists():
        shutil.copyfile(S.DAGSTER_YAML, config)
    with dg.DagsterInstance.get() as instance:
        initialize_pool_limits(instance)
    return home


def cmd_materialize(args: argparse.Namespace) -> int:
    applied = apply_flag_overrides(args)
    try:
        settings = S.Settings.from_env()
    except ValueError as error:  # a setting refused up front (not a number, a non-UTF-8 ATTN_ASSETS_HOME)
        return _fail(str(error))
    from attn_assets.orchestration import materialize_all, model_load_problem

    if not S.dagster_home_setting(settings.home).exists() or not settings.home.exists():
        # a first run needs the model for every shard: check it before creating the instance or any output
        if (problem := model_load_problem(settings)) is not None:
            print(problem)
            return EXIT_FAILED
    dagster_home = prepare_dagster_home(settings)
    os.environ[S.ENV_PROGRESS_BAR] = "1"

    print(f"attn-assets: DAGSTER_HOME={path_to_text(dagster_home)}  ATTN_ASSETS_HOME={path_to_text(settings.home)}",
          file=sys.stderr)
    models = (f"  models={', '.join(entry.key for entry in S.models_setting())} (first: the default)"
              if S.is_set(S.ENV_MODELS) else "")
    print(f"attn-assets: manifest={path_to_text(settings.manifest)}  model={path_to_text(settings.model)}{models}"
          + (f"  (from flags: {', '.join(applied)})" if applied else ""), file=sys.stderr)
    summary = materialize_all(force=args.force, log_level="DEBUG" if args.verbose else "CRITICAL",
                              verbose=args.verbose)
    for line in summary.lines:
        print(line)
    return EXIT_OK if summary.ok else EXIT_FAILED


# -- ui -------------------------------------------------------------------------------------


def dagster_dev_command(port: int) -> list[str]:
    """``dagster dev`` on this repo's workspace.yaml, on 127.0.0.1:``port`` (webserver + daemon)."""
    dagster = Path(sys.executable).parent / "dagster"
    return [os.fspath(dagster), "dev", "-w", os.fspath(S.REPO_ROOT / "workspace.yaml"), "-h", "127.0.0.1",
            "-p", str(port)]


def cmd_ui(args: argparse.Namespace) -> int:
    try:
        settings = S.Settings.from_env()
    except ValueError as error:
        return _fail(str(error))
    dagster_home = prepare_dagster_home(settings)
    command = dagster_dev_command(args.port)
    print(f"attn-assets: DAGSTER_HOME={path_to_text(dagster_home)}; {' '.join(command)}", file=sys.stderr)
    if args.dry_run:
        return EXIT_OK
    os.execv(command[0], command)
    return EXIT_FAILED  # not reached: execv replaces this process


# -- show -----------------------------------------------------------------------------------

_SHOW_SQL = (
    "SELECT s.image_id, s.shard_key, coalesce(s.country, '') AS country, i.country_name, i.abs_path, i.member, "
    "s.model_spec, "
    "{metrics} FROM attention_statistics s LEFT JOIN images i USING (image_id) WHERE s.image_id = ?"
)


def show_title(row: dict) -> str:
    """``<image_id> (<country>)  |  entropy = ..  |  top-10% concentration = ..`` for a stored image's row."""
    from attn_assets.figures.countries import country_caption

    country = country_caption(row.get("country_name"), row.get("country"))
    return (f"{row['image_id']} ({country})  |  attention_entropy = {float(row['attention_entropy']):.4g}  |  "
            f"attention_concentration_top10 = {float(row['attention_concentration_top10']):.1%}")


def _stored_rollout_map(layout, shard_key: str, image_id: str):
    """The image's stored rollout map [gh, gw] (analyses/rollout/<shard>.parquet), or None when not stored."""
    import numpy as np
    import pyarrow.parquet as pq

    path = layout.rollout_parquet(shard_key)
    if not path.exists():
        return None
    table = pq.read_table(path, columns=["image_id", "grid_height", "grid_width", "rollout_map"],
                          filters=[("image_id", "=", image_id)])
    if table.num_rows == 0 or table["rollout_map"][0].as_py() is None:
        return None
    return np.asarray(table["rollout_map"][0].as_py(), dtype=np.float32).reshape(
        table["grid_height"][0].as_py(), table["grid_width"][0].as_py())


def stored_image_record(row: dict):
    """The ImageRecord of a warehouse ``images`` row: the file at ``abs_path``, or ``member`` of the zip archive
    at ``abs_path`` (``member`` NULL for a plain file)."""
    import pandas as pd

    from attn_assets.core.loader import ImageRecord

    member = row.get("member")
    return ImageRecord(image_id=row["image_id"], path=row["abs_path"],
                       member=None if member is None or pd.isna(member) else member)


def head_maps_of_one_image(model_spec: str, record, device: str):
    """Re-run ``model_spec`` on one image (``record``: a core.loader.ImageRecord, a file or a zip member): the last
    layer's CLS row of each head, ``[heads, gh, gw]`` float32 (per-image head maps are not stored; the shard files
    keep only the head-averaged map). Raises ValueError with the loader's reason when the image cannot be read."""
    from attn_assets.core.extract import AttentionExtractor
    from attn_assets.core.loader import load_batch
    from attn_assets.core.model import load_encoder, resolve_device
    from attn_assets.core.preprocess import Preprocessor

    encoder = load_encoder(model_spec, device=resolve_device(device))
    batch = load_batch([record], Preprocessor(encoder.processor))
    if batch.failures:
        raise ValueError(batch.failures[0].reason)
    output = AttentionExtractor(encoder)(batch.pixel_values)
    gh, gw = output.grid_size
    return output.cls_attention[0, -1].reshape(-1, gh, gw).float().cpu().numpy()


def cmd_show(args: argparse.Namespace) -> int:
    import pandas as pd

    from attn_assets.figures import render_triptych, safe_image_id
    from attn_assets.figures._mpl import figure_footer
    from attn_assets.figures.geometry import image_file
    from attn_assets.metric_names import METRIC_NAMES
    from attn_assets.storage.layout import HomeLayout
    from attn_assets.storage.parquet import read_maps_and_boxes
    from attn_assets.storage.warehouse import Warehouse, WarehouseBusyError

    apply_flag_overrides(args, {"home": S.ENV_HOME})
    try:
        settings = S.Settings.from_env()
    except ValueError as error:
        return _fail(str(error))
    layout = HomeLayout(settings.home)
    sql = _SHOW_SQL.format(metrics=", ".join(f"s.{m}" for m in METRIC_NAMES))
    try:
        rows = Warehouse(layout.warehouse_path, wait_timeout_s=30.0).query(sql, [args.image_id])
    except (FileNotFoundError, WarehouseBusyError) as error:  # their messages say what to do
        return _fail(str(error), EXIT_FAILED)
    if not len(rows):
        return _fail(f"image '{args.image_id}' has no stored attention in {path_to_text(layout.warehouse_path)} "
                     "(not in the manifest, failed, or not computed yet); list the ids with "
                     "`attn-assets sql \"SELECT image_id FROM attention_statistics LIMIT 20\"`", EXIT_FAILED)
    row = rows.iloc[0].to_dict()
    record = stored_image_record(row)
    photo = image_file(record.path, record.member)
    if photo is None:
        where = record.path if record.member is None else f"member '{record.member}' of {record.path}"
        return _fail(f"the image of '{args.image_id}' ({where}) is gone or unreadable; the stored map cannot be "
                     "drawn without it", EXIT_FAILED)
    maps, boxes = read_maps_and_boxes(layout, pd.DataFrame([row]))
    if args.image_id not in maps:
        return _fail(f"shard file {path_to_text(layout.shard_parquet(row['shard_key']))} holds no map for "
                     f"'{args.image_id}'; run `attn-assets materialize`", EXIT_FAILED)
    out = Path(args.out or f"{safe_image_id(args.image_id)}.png")
    title = show_title(row)
    footer = figure_footer(row["model_spec"], None, "the stored map; the model was not run")
    render_triptych(photo, maps[args.image_id], boxes.get(args.image_id), title, out, footer=footer)
    print(f"wrote {path_to_text(out)}: the stored CLS map of {args.image_id} ({row['model_spec']}, "
          f"shard {row['shard_key']}); the model was not run")
    code = EXIT_OK
    if args.rollout:
        rollout = _stored_rollout_map(layout, row["shard_key"], args.image_id)
        if rollout is None:
            where = layout.rollout_parquet(row["shard_key"])
            print(f"no rollout map is stored for {args.image_id}: {path_to_text(where)} "
                  f"{'lacks it' if where.exists() else 'does not exist'}; `attn-assets materialize` computes the "
                  "rollout pass", file=sys.stderr)
            code = EXIT_FAILED
        else:
            rollout_out = out.with_name(f"{out.stem}_rollout{out.suffix}")
            render_triptych(photo, rollout, boxes.get(args.image_id), f"{title}\nattention rollout (stored)",
                            rollout_out, footer=figure_footer(row["model_spec"], None, "the stored rollout map"))
            print(f"wrote {path_to_text(rollout_out)}: the stored attention-rollout map; the model was not run")
    if args.heads:
        from attn_assets.core.model import ModelLoadError
        from attn_assets.figures.analyses import render_head_maps

        print(f"per-image head maps are not stored: re-running {row['model_spec']} on this one image",
              file=sys.stderr)
        try:
            heads = head_maps_of_one_image(row["model_spec"], record, args.device or settings.device)
        except (ModelLoadError, ValueError, OSError, RuntimeError) as error:
            return _fail(f"--heads: {error}", EXIT_FAILED)
        heads_out = out.with_name(f"{out.stem}_heads{out.suffix}")
        render_head_maps(heads, pd.DataFrame(columns=["head"]), heads_out, images=1, footer=figure_footer(
            row["model_spec"], 1, "re-computed now: per-image head maps are not stored"))
        print(f"wrote {path_to_text(heads_out)}: {heads.shape[0]} last-layer head maps, re-computed now by "
              f"{row['model_spec']} (per-image head maps are not stored)")
    return code


# -- extract --------------------------------------------------------------------------------


def _collect_images(inputs: Sequence[str]) -> list[Path]:
    paths: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            paths.extend(sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()))
        else:
            paths.append(path)  # a missing or bad file is reported as a failure row
    return paths


def _output_problem(out: str) -> str | None:
    """Why ``extract --out`` cannot be written, or None: checked (its folder created) before any image is
    computed, so a run never loses its results at the end. Any name works, a non-UTF-8 (Latin-1) one too."""
    import tempfile

    path = Path(out)
    if path.is_dir():
        return (f"--out '{path_to_text(path)}' is a folder; give the Parquet file to write, e.g. "
                f"'{path_to_text(path / 'attention.parquet')}'")
    folder = path.absolute().parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        if not folder.is_dir():
            raise NotADirectoryError(f"'{path_to_text(folder)}' is a file, not a folder")
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=f".{path.name}.tmp-", suffix=path.suffix, dir=path.parent)
        os.close(fd)
        os.unlink(probe)
    except OSError as error:
        detail = error.strerror or str(error)
        if error.filename:
            detail += f": '{path_to_text(error.filename)}'"
        return (f"cannot write --out '{path_to_text(path)}' ({detail}); nothing was computed. "
                "Choose a file in a folder you can write")
    return None


def cmd_extract(args: argparse.Namespace) -> int:
    import numpy as np
    import pyarrow as pa
    from tqdm.auto import tqdm

    from attn_assets.core.extract import extract_records, resolve_precision
    from attn_assets.core.loader import records_from_paths
    from attn_assets.core.model import ModelLoadError, load_encoder, resolve_device
    from attn_assets.storage.parquet import write_table_atomic
    from attn_assets.metric_names import METRIC_NAMES

    images = _collect_images(args.images)
    if not images:
        return _fail(f"no images found in {' '.join(args.images)} (looked for {', '.join(sorted(IMAGE_SUFFIXES))})")
    if (problem := _output_problem(args.out)) is not None:
        return _fail(problem)
    try:
        model = args.model or S.model_setting()
        device = str(resolve_device(args.device or S.device_setting()))
        num_workers = S.num_workers_setting() if args.num_workers is None else args.num_workers
        precision = resolve_precision(args.precision, device)
        encoder = load_encoder(model, device=device)
    except (ModelLoadError, ValueError, RuntimeError) as error:
        return _fail(str(error))
    batch_size = args.batch_size or S.default_batch_size(device)
    records = records_from_paths(images)

    rows: dict[str, list] = {"image_path": [], **{m: [] for m in METRIC_NAMES}, "failure_reason": []}
    failures = []
    with tqdm(total=len(records), unit="img", desc="extract", disable=args.quiet) as bar:
        for batch in extract_records(encoder, records, batch_size=batch_size, device=device,
                                     precision=precision, num_workers=num_workers):
            for i, image_id in enumerate(batch.image_ids):
                rows["image_path"].append(image_id)
                for m in METRIC_NAMES:
                    rows[m].append(np.asarray(batch.metrics[m])[i].item())
                rows["failure_reason"].append(None)
            for failure in batch.failures:
                rows["image_path"].append(failure.image_id)
                for m in METRIC_NAMES:
                    rows[m].append(None)
                rows["failure_reason"].append(failure.reason)
                failures.append(failure)
            bar.update(len(batch.image_ids) + len(batch.failures))
    table = pa.table(rows).append_column("model_spec", pa.array([model] * len(rows["image_path"])))
    table = table.append_column("precision", pa.array([precision] * len(rows["image_path"])))
    write_table_atomic(table, Path(args.out))
    for failure in failures:
        print(f"failed: {failure.image_id}: {failure.reason}", file=sys.stderr)
    print(f"wrote {path_to_text(args.out)}: {len(records) - len(failures)} images computed, {len(failures)} failed "
          f"({model}, {device}, {precision})")
    return EXIT_OK


# -- demo-data ------------------------------------------------------------------------------


def cmd_demo_data(args: argparse.Namespace) -> int:
    from attn_assets.catalog.demo_data import write_demo_data

    manifest = write_demo_data(Path(args.out), n_images=args.images)
    print(f"wrote demo images and manifest {manifest}")
    return EXIT_OK


# -- sql ------------------------------------------------------------------------------------


def cmd_sql(args: argparse.Namespace) -> int:
    import duckdb

    from attn_assets.storage.layout import HomeLayout
    from attn_assets.storage.warehouse import Warehouse, WarehouseBusyError

    apply_flag_overrides(args, {"home": S.ENV_HOME})
    try:
        path = (Path(S.path_setting(args.database)) if args.database
                else HomeLayout(S.Settings.from_env().home).warehouse_path)
    except ValueError as error:  # a refused setting (a non-UTF-8 ATTN_ASSETS_HOME)
        return _fail(str(error))
    if not S.is_utf8_path(path):
        return _fail(S.non_utf8_path_message("--database", path))
    try:
        frame = Warehouse(path, wait_timeout_s=args.wait).query(args.query)
    except (FileNotFoundError, WarehouseBusyError) as error:
        return _fail(str(error), EXIT_FAILED)
    except duckdb.Error as error:
        message = str(error).strip()
        if "read-only" in message.lower() or "read only" in message.lower():
            message += (f"\n`attn-assets sql` opens {path} read-only; the warehouse is changed only by "
                        "materializing its assets")
        if isinstance(error, duckdb.CatalogException):
            from attn_assets.storage.schema import WAREHOUSE_TABLES

            known = {table.name for table in WAREHOUSE_TABLES}
            named = [name for name in re.findall(r"[A-Za-z_][A-Za-z0-9_]*", args.query) if name in known]
            message += ("\nthe warehouse has not built " + (", ".join(sorted(set(named))) + " yet: "
                        if named else "that table: ") +
                        "`attn-assets materialize` builds every table (*_by_model, models, model_differences and the "
                        "cross_model tables need ATTN_ASSETS_MODELS; README 'Outputs' lists the tables)")
        return _fail(f"query failed: {message}", EXIT_FAILED)
    if args.csv:
        frame.to_csv(sys.stdout, index=False)
    elif args.json:
        json.dump(json.loads(frame.to_json(orient="records", date_format="iso")), sys.stdout, indent=2, ensure_ascii=False)
        print()
    else:
        import pandas as pd

        with pd.option_context("display.max_rows", None, "display.max_columns", None, "display.width", 250):
            print(_with_nulls(frame).to_string(index=False, na_rep="NULL") if len(frame) else "(no rows)")
    return EXIT_OK


def _with_nulls(frame):
    """``frame`` for printing with every SQL NULL as NULL (pandas prints NaN, <NA>, NaT or None by column type).

    NumPy float and datetime columns keep pandas' formatting (``to_string(na_rep="NULL")`` covers them); other
    columns with NULLs (nullable integers and booleans, text, lists, structs) become objects with "NULL" in place."""
    import pandas as pd

    out = frame.copy()
    for position in range(out.shape[1]):
        column = out.iloc[:, position]
        keeps_na_rep = not isinstance(column.dtype, pd.api.extensions.ExtensionDtype) and column.dtype.kind in "fmM"
        if not keeps_na_rep and column.isna().any():
            out.isetitem(position, column.astype(object).where(column.notna(), "NULL"))
    return out


_SETTINGS_NOTE = (
    "Settings come from ATTN_ASSETS_* environment variables (README \"Settings\"): ATTN_ASSETS_HOME, "
    "ATTN_ASSETS_MANIFEST, ATTN_ASSETS_IMAGE_ROOT, ATTN_ASSETS_MODEL, ATTN_ASSETS_DEVICE, ATTN_ASSETS_BATCH_SIZE, "
    "ATTN_ASSETS_SHARD_SIZE, ATTN_ASSETS_PRECISION, ... A flag given here wins over its variable and is recorded "
    "in the runs like the variable. The Dagster instance lives in DAGSTER_HOME (default "
    "$ATTN_ASSETS_HOME/dagster_home), set up with the repository's dagster.yaml when it has none."
)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("attn-assets")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree without an install
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="attn-assets", description=__doc__, epilog=_SETTINGS_NOTE)
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("materialize", help="materialize every asset and every missing shard, headless",
                       description="Materialize every asset and every shard that is missing or stale, as Dagster "
                                   "runs recorded in DAGSTER_HOME (a second call does nothing unless forced).",
                       epilog=_SETTINGS_NOTE)
    p.add_argument("--manifest", metavar="PATH",
                   help=f"manifest file or folder (overrides {S.ENV_MANIFEST}; default: {S.DEFAULT_MANIFEST})")
    p.add_argument("--image-root", metavar="DIR",
                   help=f"folder relative image paths start from; absolute paths must lie under it (overrides "
                        f"{S.ENV_IMAGE_ROOT}; default: the manifest's folder)")
    p.add_argument("--model", metavar="SPEC",
                   help=f"model spec: a hub id, a local folder, or random:NAME (overrides {S.ENV_MODEL}; "
                        f"default: {S.DEFAULT_MODEL})")
    p.add_argument("--home", metavar="DIR",
                   help=f"where every output goes (overrides {S.ENV_HOME}; default: {S.DEFAULT_HOME})")
    p.add_argument("--force", action="store_true", help="recompute everything, even what is up to date (default: off)")
    p.add_argument("--verbose", action="store_true",
                   help="print every Dagster event and each failed step's full trace (default: off; a failed step "
                        "shows its cause once and the log file holding the trace)")
    p.set_defaults(func=cmd_materialize)

    p = sub.add_parser("show", help="draw one image's triptych from its stored attention map",
                       description="The triptych (photo, CLS attention heatmap, overlay) of one computed image, drawn "
                                   "from the map stored in its shard file: the model is not run, except for --heads.",
                       epilog=_SETTINGS_NOTE)
    p.add_argument("image_id", metavar="IMAGE_ID", help="the image's id, as in the manifest")
    p.add_argument("--out", metavar="FILE.png",
                   help="figure to write (default: <IMAGE_ID>.png in the current folder); --rollout and --heads "
                        "write FILE_rollout.png and FILE_heads.png beside it")
    p.add_argument("--rollout", action="store_true",
                   help="also draw the stored attention-rollout map (default: off; needs the rollout pass)")
    p.add_argument("--heads", action="store_true",
                   help="also draw each last-layer head's map, by re-running the model on this one image "
                        "(default: off; per-image head maps are not stored)")
    p.add_argument("--device", help=f"device for --heads: auto, cpu, cuda, cuda:N (default: {S.ENV_DEVICE}, else auto)")
    p.add_argument("--home", metavar="DIR", help=f"the outputs to read (overrides {S.ENV_HOME}; default: {S.DEFAULT_HOME})")
    p.set_defaults(func=cmd_show)

    p = sub.add_parser("ui", help="the Dagster UI and daemon (dagster dev) on this instance",
                       description="Set up DAGSTER_HOME as materialize does, then run `dagster dev` on the repository's "
                                   "workspace.yaml; stop it with Ctrl-C (SIGINT).", epilog=_SETTINGS_NOTE)
    p.add_argument("--port", type=int, default=3000, help="port on 127.0.0.1 (default: 3000)")
    p.add_argument("--dry-run", action="store_true", help="set up DAGSTER_HOME and print the command only (default: off)")
    p.set_defaults(func=cmd_ui)

    p = sub.add_parser("extract", help="run the attention core on images or folders, no Dagster")
    p.add_argument("images", nargs="+", metavar="IMAGE_OR_DIR", help="image files, or folders searched recursively")
    p.add_argument("--model", help=f"model spec (default: {S.ENV_MODEL}, else {S.DEFAULT_MODEL})")
    p.add_argument("--out", required=True, help="output Parquet file (required)")
    p.add_argument("--batch-size", type=int, default=0,
                   help="images per forward pass (default: 64 on a GPU, 4 on a CPU)")
    p.add_argument("--device", help=f"auto, cpu, cuda, cuda:N (default: {S.ENV_DEVICE}, else auto)")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"],
                   help="compute precision (default: auto = bf16 on CUDA, fp32 on a CPU)")
    p.add_argument("--num-workers", type=int,
                   help=f"image decoding processes (default: {S.ENV_NUM_WORKERS}, else min(4, cores))")
    p.add_argument("--quiet", action="store_true", help="no progress bar (default: off)")
    p.set_defaults(func=cmd_extract)

    p = sub.add_parser("demo-data", help="write the deterministic demo images and manifest")
    p.add_argument("--out", default=str(S.DEFAULT_DEMO_DIR), help=f"folder to write (default: {S.DEFAULT_DEMO_DIR})")
    p.add_argument("--images", type=int, default=36, help="number of images (default: 36)")
    p.set_defaults(func=cmd_demo_data)

    p = sub.add_parser("sql", help="run a read-only SQL query on the warehouse")
    p.add_argument("query", help="one DuckDB SQL statement")
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--csv", action="store_true", help="print CSV (default: a table)")
    fmt.add_argument("--json", action="store_true", help="print JSON records (default: a table)")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--home", metavar="DIR",
                       help=f"read DIR/warehouse/attention.duckdb, as written by `materialize --home DIR` (overrides "
                            f"{S.ENV_HOME}; default: {S.DEFAULT_HOME})")
    where.add_argument("--database", metavar="FILE.duckdb",
                       help="DuckDB file to read instead (default: $ATTN_ASSETS_HOME/warehouse/attention.duckdb)")
    p.add_argument("--wait", type=float, default=30.0, help="seconds to wait while a writer holds the file (default: 30)")
    p.set_defaults(func=cmd_sql)

    from attn_assets.validate import add_validate_parser

    add_validate_parser(sub)
    for subparser in sub.choices.values():  # `attn-assets materialize --version` answers too
        subparser.add_argument("--version", action="version", version=f"attn-assets {_version()}",
                               help="print attn-assets' version and exit")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from attn_assets import known_warnings

    args = build_parser().parse_args(argv)
    if args.command == "materialize":
        known_warnings.silence_known_harmless()
    elif args.command in ("show", "extract"):  # no Dagster in these
        known_warnings.silence_transformers_torchvision_fallback()
    try:
        return args.func(args)
    except KeyboardInterrupt:
        return _fail("interrupted", EXIT_FAILED)


if __name__ == "__main__":
    sys.exit(main())

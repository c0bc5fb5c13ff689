"""`attn-assets`: materialize the graph headless, run the core alone, write demo data, query SQL."""

from __future__ import annotations

import argparse
import json
import os
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


def _ensure_dagster_home(settings: S.Settings) -> Path:
    """Runs are recorded in DAGSTER_HOME so `dagster dev` shows them; default under ATTN_ASSETS_HOME."""
    home = os.environ.get("DAGSTER_HOME")
    if not home:
        home = str(settings.home / "dagster_home")
        os.environ["DAGSTER_HOME"] = home
    Path(home).mkdir(parents=True, exist_ok=True)
    return Path(home)


def cmd_materialize(args: argparse.Namespace) -> int:
    try:
        settings = S.Settings.from_env()
    except ValueError as error:  # a setting refused up front (not a number, a non-UTF-8 ATTN_ASSETS_HOME)
        return _fail(str(error))
    dagster_home = _ensure_dagster_home(settings)
    os.environ[S.ENV_PROGRESS_BAR] = "1"
    from attn_assets.orchestration import materialize_all

    print(f"attn-assets: DAGSTER_HOME={path_to_text(dagster_home)}  ATTN_ASSETS_HOME={path_to_text(settings.home)}",
          file=sys.stderr)
    print(f"attn-assets: manifest={path_to_text(settings.manifest)}  model={path_to_text(settings.model)}",
          file=sys.stderr)
    summary = materialize_all(force=args.force, log_level="DEBUG" if args.verbose else "WARNING")
    for line in summary.lines:
        print(line)
    return EXIT_OK if summary.ok else EXIT_FAILED


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="attn-assets", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("materialize", help="materialize every asset and every missing shard, headless")
    p.add_argument("--force", action="store_true", help="recompute everything, even what is up to date")
    p.add_argument("--verbose", action="store_true", help="print every Dagster event (default: warnings only)")
    p.set_defaults(func=cmd_materialize)

    p = sub.add_parser("extract", help="run the attention core on images or folders, no Dagster")
    p.add_argument("images", nargs="+", metavar="IMAGE_OR_DIR")
    p.add_argument("--model", help=f"model spec (default: {S.ENV_MODEL}, else {S.DEFAULT_MODEL})")
    p.add_argument("--out", required=True, help="output Parquet file")
    p.add_argument("--batch-size", type=int, default=0, help="images per forward pass (default: by device)")
    p.add_argument("--device", help=f"auto, cpu, cuda, cuda:N (default: {S.ENV_DEVICE}, else auto)")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    p.add_argument("--num-workers", type=int,
                   help=f"image decoding processes (default: {S.ENV_NUM_WORKERS}, else min(4, cores))")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_extract)

    p = sub.add_parser("demo-data", help="write the deterministic demo images and manifest")
    p.add_argument("--out", default=str(S.DEFAULT_DEMO_DIR))
    p.add_argument("--images", type=int, default=36)
    p.set_defaults(func=cmd_demo_data)

    p = sub.add_parser("sql", help="run a read-only SQL query on the warehouse")
    p.add_argument("query")
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--csv", action="store_true")
    fmt.add_argument("--json", action="store_true")
    p.add_argument("--database", help="DuckDB file (default: $ATTN_ASSETS_HOME/warehouse/attention.duckdb)")
    p.add_argument("--wait", type=float, default=30.0, help="seconds to wait while a writer holds the file")
    p.set_defaults(func=cmd_sql)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        return _fail("interrupted", EXIT_FAILED)


if __name__ == "__main__":
    sys.exit(main())

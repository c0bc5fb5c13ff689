"""Read and validate image manifests (CSV or Parquet), pure pandas / pyarrow.

Two formats, detected per file from its header:

* **OSV-5M metadata** (``id,latitude,longitude,thumb_original_url,country,...,unique_country,...``):
  the image of row ``id`` is the file ``<id>.jpg`` found anywhere under the image root (the
  official loader indexes ``images/<split>`` recursively by file name), or a member of that name in
  a zip archive under the root (OSV-5M ships ``images/<split>/NN.zip``; the row's ``path`` is then the
  archive and ``member`` the name inside it). The root and its archives' directories are read once
  (:func:`build_image_index`). Coordinates are required. A row whose ``<id>.jpg`` is neither under
  the root nor in its archives IS rejected here ("image file <id>.jpg not found under image root"),
  because without the file there is no path to record. If an OSV file has an explicit ``path`` column,
  that is used instead and the file is not looked up. OSV-5M's metadata columns become typed columns
  (:mod:`attn_assets.osv5m_columns`, in either format); a cell that cannot be typed is NULL, its text kept in
  ``extra`` and counted in :attr:`ManifestResult.notes`, and never rejects its row. An id found in two
  archives (or as two files) resolves to the first in sorted path order; how many ids the manifest looked up
  were found more than once, with an example, is in :meth:`ManifestResult.summary` and the notes.
* **Plain list**: ``image_id``, ``path`` and optionally ``country``, ``latitude``, ``longitude``,
  ``member`` (the image's name inside the zip archive ``path``; empty for an image file, required when
  ``path`` is a ``.zip``).
  Coordinates may be absent, but present-and-invalid coordinates are rejected. A path whose file
  does not exist (or a member missing from its archive) is NOT a manifest rejection: the statistics
  step records it as an image failure (a file can vanish after validation anyway).

Every text column is read as a string with missing-value detection off, so Namibia's ``NA``
survives; only empty strings are missing. Every row that is not accepted goes to
``ManifestResult.rejections`` with the column at fault and a reason a person understands; rows
are never dropped silently. Problems with a whole file (missing columns, not UTF-8, empty)
raise :class:`ManifestError`.

Country resolution, per row: the manifest's ``country`` if it is a valid ISO 3166-1 alpha-2
code; else ``unique_country`` if valid; else the coordinates, offline
(:func:`attn_assets.catalog.countries.resolve_countries`: no country at sea, else the nearest town's).
``country_source`` says which one was used.

Paths listed from folders (the image index, manifest file names) are text as
:func:`attn_assets.path_text.path_to_text` writes it; OSV-5M ids written as floats resolve to their
integer only when exact (see :func:`_integral_ids`).
"""

from __future__ import annotations

import codecs
import csv
import glob as globlib
import gzip
import io
import json
import logging
import os
import re
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from attn_assets.catalog.archives import (
    ArchiveError,
    ArchiveMember,
    is_archive_name,
    list_archive_members,
    mixed_sources_message,
)
from attn_assets.catalog.countries import country_names, normalize_codes, resolve_countries
from attn_assets.catalog.osv_metadata import parse_column
from attn_assets.osv5m_columns import AS_WRITTEN_PREFIX, OSV_METADATA_COLUMNS, OSV_METADATA_NAMES
from attn_assets.path_text import path_to_text, text_to_path
from attn_assets.settings import image_root_setting

_log = logging.getLogger(__name__)

# --------------------------------------------------------------------------------------------
# Contract: column names (storage and the Dagster assets use these).

#: Columns of ``ManifestResult.images``, in order; every extra manifest column follows them. ``member``: the
#: image's name inside the zip archive ``path`` (NULL for an image file); then OSV-5M's typed metadata
#: (:data:`~attn_assets.osv5m_columns.OSV_METADATA_COLUMNS`, NULL where the manifest lacks the column).
IMAGE_COLUMNS: tuple[str, ...] = (
    "image_id",
    "path",
    "abs_path",
    "member",
    "country",
    "country_name",
    "country_source",
    "latitude",
    "longitude",
    "source_file",
    "source_row",
    *OSV_METADATA_NAMES,
)

#: Columns of ``ManifestResult.rejections``, in order.
REJECTION_COLUMNS: tuple[str, ...] = ("source_file", "source_row", "image_id", "column", "reason", "raw")

#: Values of the ``country_source`` column. ``at_sea``: the coordinates are outside every country's
#: territorial waters, so ``country`` is NULL (see attn_assets.catalog.countries).
COUNTRY_SOURCES: tuple[str, ...] = ("manifest", "unique_country", "reverse_geocoder", "at_sea")

#: Names of the two formats (``ManifestResult.formats``).
FORMAT_OSV5M = "osv5m"
FORMAT_PLAIN = "plain"

#: File name extensions that count as images when indexing the image root.
IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}
)

PARQUET_SUFFIXES = (".parquet", ".pq")

#: Required columns of each format.
OSV_REQUIRED: tuple[str, ...] = ("id", "latitude", "longitude")
PLAIN_REQUIRED: tuple[str, ...] = ("image_id", "path")

#: How every "outside the image root" rejection starts (the run summary counts them by it).
ESCAPE_PREFIX = "path escapes the image root"
#: The rejection of a path outside the image root; ``{root}``: the root used (ATTN_ASSETS_IMAGE_ROOT when set,
#: else the manifest's folder). See `escape_reason`.
ESCAPE_REASON = (
    ESCAPE_PREFIX + " {root} (ATTN_ASSETS_IMAGE_ROOT, else the manifest's folder); move the file under it, or set "
    "ATTN_ASSETS_IMAGE_ROOT to a folder that holds it"
)


def escape_reason(root: str | os.PathLike) -> str:
    """The rejection of a manifest path outside ``root``, naming that root and ATTN_ASSETS_IMAGE_ROOT."""
    return ESCAPE_REASON.format(root=path_to_text(root))

_SUPPORTED_TYPES = "CSV (.csv, .csv.gz) or Parquet (.parquet)"


class ManifestError(ValueError):
    """A manifest file cannot be used at all (as opposed to single rows, which are rejected)."""

    def __init__(self, message: str, *, rejections: pd.DataFrame | None = None):
        super().__init__(path_to_text(message))
        self.rejections = rejections


@dataclass
class ManifestResult:
    """Validated images and rejected rows of one manifest (file or glob)."""

    images: pd.DataFrame
    rejections: pd.DataFrame
    files: list[str] = field(default_factory=list)
    formats: dict[str, str] = field(default_factory=dict)
    image_root: Path | None = None
    #: Warnings about kept rows, one line each (cells that could not be typed, ids found twice).
    notes: list[str] = field(default_factory=list)
    #: Ids looked up in the image root that were found in more than one place (first wins), and one example.
    ids_found_twice: int = 0
    ids_found_twice_example: str | None = None

    @property
    def extra_columns(self) -> list[str]:
        return [c for c in self.images.columns if c not in IMAGE_COLUMNS]

    def summary(self) -> dict[str, object]:
        """Counts a person (or Dagster metadata) wants to see."""
        src = self.images["country_source"].value_counts(dropna=False)
        return {
            "files": len(self.files),
            "images": int(len(self.images)),
            "rejections": int(len(self.rejections)),
            "countries": int(self.images["country"].nunique(dropna=True)),
            "without_country": int(self.images["country"].isna().sum()),
            "country_sources": {("none" if pd.isna(k) else str(k)): int(v) for k, v in src.items()},
            "rejection_reasons": {
                str(k): int(v)
                for k, v in self.rejections["column"].fillna("(file)").value_counts().items()
            },
            "ids_found_twice": self.ids_found_twice,
            "ids_found_twice_example": self.ids_found_twice_example,
            "notes": list(self.notes),
        }


# --------------------------------------------------------------------------------------------
# Image index (OSV-5M: <id>.jpg anywhere under the root)


@dataclass
class ImageIndex:
    """File stem -> path relative to the root (and zip member), for every image under a root.

    Built once by :func:`build_image_index`; stored as string columns rather than a
    dict so millions of files stay compact. ``via_symlink`` holds the relative paths that were
    reached through a symbolic link (file or folder): only those need ``realpath`` checks.
    When two files share a stem, the first in sorted walk order wins (``.jpg`` preferred); so does the first
    archive (sorted by path) of two holding one stem. ``shadowed``: stem -> where its other copy lies, for every
    stem found more than once.
    An image inside a zip archive has the archive as its path and the member name in ``members``
    (NaN for extracted files); ``archives`` counts the archives listed.
    """

    root: Path
    stems: pd.Index
    paths: pd.Series
    via_symlink: frozenset[str] = frozenset()
    duplicate_stems: int = 0
    members: pd.Series | None = None
    archives: int = 0
    shadowed: pd.Series | None = None

    def __len__(self) -> int:
        return len(self.stems)

    def _take(self, values: pd.Series | None, stems: Iterable[str]) -> pd.Series:
        stems = pd.Series(list(stems) if not isinstance(stems, pd.Series) else stems, dtype="str")
        if values is None:
            return pd.Series(None, index=stems.index, dtype="str")
        pos = self.stems.get_indexer(stems)
        vals = values.to_numpy(dtype=object)
        out = np.where(pos >= 0, vals[np.clip(pos, 0, None)] if len(vals) else None, None)
        return pd.Series(out, index=stems.index, dtype="str")

    def lookup(self, stems: Iterable[str]) -> pd.Series:
        """Relative posix paths for ``stems`` (NaN where absent), aligned with the input order."""
        return self._take(self.paths, stems)

    def lookup_members(self, stems: Iterable[str]) -> pd.Series:
        """Zip member names for ``stems`` (NaN where absent or an extracted file), aligned with the input order."""
        return self._take(self.members, stems)

    def get(self, stem: str) -> str | None:
        res = self.lookup([stem]).iloc[0]
        return None if pd.isna(res) else res

    def to_dict(self) -> dict[str, str]:
        return dict(zip(self.stems, self.paths))


def build_image_index(root: str | os.PathLike) -> ImageIndex:
    """Scan ``root`` recursively (os.scandir, no stat per file) for image files and zip archives of images.

    Folder symlinks are followed (each real folder once, so cycles end); files reached through a
    symlink are marked so the manifest reader can check where they really point. Names that are not
    UTF-8 are kept, escaped by :func:`~attn_assets.path_text.path_to_text`. Each ``.zip`` archive's
    directory is read once and its image members join the index (:mod:`attn_assets.catalog.archives`).
    Raises :class:`ManifestError` when a folder holding archives also holds extracted image files under it
    (OSV-5M: ``images/test/00.zip`` beside ``images/test/00/<id>.jpg``), and for an unreadable archive.
    """
    root = Path(os.path.realpath(root))
    stems: list[str] = []
    rels: list[str] = []
    archives: dict[str, list[str]] = {}  # folder prefix -> archive paths in it
    via: set[str] = set()
    seen_dirs: set[str] = set()
    # stack of (absolute dir, relative posix prefix, reached through a symlink)
    stack: list[tuple[str, str, bool]] = [(str(root), "", False)]
    while stack:
        path, prefix, linked = stack.pop()
        real = os.path.realpath(path)
        if real in seen_dirs:
            continue
        seen_dirs.add(real)
        try:
            with os.scandir(path) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError:
            continue
        subdirs = []
        for e in entries:
            name = e.name
            rel = f"{prefix}{name}"
            try:
                is_link = e.is_symlink()
                if e.is_dir():  # follows symlinks
                    subdirs.append((e.path, rel + "/", linked or is_link))
                    continue
            except OSError:
                continue
            stem, ext = os.path.splitext(name)
            if is_archive_name(name):
                archives.setdefault(path_to_text(prefix), []).append(path_to_text(rel))
                if linked or is_link:
                    via.add(path_to_text(rel))
                continue
            if ext.lower() not in IMAGE_EXTENSIONS:
                continue
            rel_text = path_to_text(rel)
            stems.append(path_to_text(stem))
            rels.append(rel_text)
            if linked or is_link:
                via.add(rel_text)
        stack.extend(reversed(subdirs))
    members = _index_archives(str(root), archives, rels)
    frame = pd.DataFrame({"stem": pd.Series(stems + [m.stem for m in members], dtype="str"),
                          "path": pd.Series(rels + [m.archive for m in members], dtype="str"),
                          "member": pd.Series([None] * len(rels) + [m.member for m in members], dtype="str")})
    del stems, rels, members
    # prefer .jpg for a stem (OSV-5M files are <id>.jpg), then walk order
    frame["_pref"] = (~frame["member"].fillna(frame["path"]).str.lower().str.endswith(".jpg")).astype(np.int8)
    frame = frame.sort_values(["_pref"], kind="stable")
    dup = frame["stem"].duplicated(keep="first")
    n_dup = int(dup.sum())
    copies = frame.loc[dup]
    where = copies["path"].where(copies["member"].isna(), copies["path"] + ":" + copies["member"].fillna(""))
    shadowed = where.groupby(copies["stem"].to_numpy(), sort=False).first()
    frame = frame.loc[~dup].sort_index()
    return ImageIndex(
        root=root,
        stems=pd.Index(frame["stem"].to_numpy(), dtype="str"),
        paths=frame["path"].reset_index(drop=True),
        via_symlink=frozenset(via),
        duplicate_stems=n_dup,
        members=frame["member"].reset_index(drop=True),
        archives=sum(len(a) for a in archives.values()),
        shadowed=shadowed.astype("str"),
    )


def _index_archives(root: str, archives: dict[str, list[str]], files: list[str]) -> list[ArchiveMember]:
    """The image members of every archive found by the scan, after checking that no folder holding archives
    also holds extracted image files under it (``files``: the relative paths of the image files found)."""
    if not archives:
        return []
    found = pd.Series(files, dtype="str")
    members: list[ArchiveMember] = []
    for prefix in sorted(archives):
        under = found[found.str.startswith(prefix)] if prefix else found
        if len(under):
            raise ManifestError(mixed_sources_message(prefix.rstrip("/"), sorted(archives[prefix]), list(under)))
        for archive in sorted(archives[prefix]):
            try:
                members.extend(list_archive_members(root, archive, IMAGE_EXTENSIONS))
            except ArchiveError as error:
                raise ManifestError(str(error)) from None
    return members


# --------------------------------------------------------------------------------------------
# Finding and reading files


def find_manifest_files(manifest: str | os.PathLike) -> list[Path]:
    """A file, a folder (its CSV / Parquet files) or a glob (sorted matches); escaped text (``\\xNN``) is
    taken as the non-UTF-8 name it stands for."""
    text = text_to_path(os.fspath(manifest))
    if any(ch in text for ch in "*?["):
        found = sorted(Path(p) for p in globlib.glob(os.path.expanduser(text), recursive=True))
        found = [p for p in found if p.is_file()]
        if not found:
            raise ManifestError(f"no manifest file matches '{text}'")
        return found
    path = Path(text).expanduser()
    if path.is_dir():
        found = sorted(p for p in path.iterdir() if p.is_file() and _is_manifest_name(p))
        if not found:
            raise ManifestError(f"folder '{path}' holds no {_SUPPORTED_TYPES} manifest file")
        return found
    if not path.exists():
        raise ManifestError(f"manifest file '{path}' does not exist")
    return [path]


def _is_manifest_name(path: Path) -> bool:
    name = path.name.lower()
    return name.endswith((".csv", ".csv.gz", *PARQUET_SUFFIXES))


def _is_parquet(path: Path) -> bool:
    return path.name.lower().endswith(PARQUET_SUFFIXES)


def _open_bytes(path: Path):
    return gzip.open(path, "rb") if path.name.lower().endswith(".gz") else open(path, "rb")


def _scan_csv_bytes(path: Path) -> tuple[int, int]:
    """Validate UTF-8 and count lines, reading in chunks. -> (size in bytes, number of lines)."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset = 0
    newlines = 0
    last = b""
    with _open_bytes(path) as fh:
        while True:
            chunk = fh.read(1 << 24)
            if not chunk:
                break
            buffered = decoder.getstate()[0]
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError as e:
                data = buffered + chunk
                bad = offset - len(buffered) + e.start
                line = newlines + data[: e.start].count(b"\n") + 1
                raise ManifestError(
                    f"{path}: not valid UTF-8 (byte 0x{data[e.start]:02x} at byte offset {bad}, line {line}); "
                    f"re-encode the file to UTF-8, e.g. `iconv -f latin1 -t utf-8 in.csv > out.csv`"
                ) from None
            newlines += chunk.count(b"\n")
            offset += len(chunk)
            last = chunk[-1:]
        try:
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            raise ManifestError(
                f"{path}: not valid UTF-8 (truncated character at the end, byte offset {offset - 1}); "
                f"re-encode the file to UTF-8"
            ) from None
    lines = newlines + (1 if offset and last != b"\n" else 0)
    return offset, lines


def _text_stream(path: Path):
    if path.name.lower().endswith(".gz"):
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8-sig", newline="")
    return open(path, encoding="utf-8-sig", newline="")


def _read_header(path: Path) -> list[str]:
    with _text_stream(path) as fh:
        reader = csv.reader(fh)
        for row in reader:
            if row and any(cell.strip() for cell in row):
                return [c.strip() for c in row]
    return []


@dataclass
class _RawFile:
    path: Path
    frame: pd.DataFrame  # every column as str, original (stripped) header names
    lines: np.ndarray  # source_row per frame row
    bad_rows: list[dict]  # parse-level rejections


def _header_problem(path: Path, header: list[str]) -> None:
    if not header:
        raise ManifestError(f"{path}: the file is empty (no header line)")
    seen: set[str] = set()
    dups = [h for h in header if h in seen or seen.add(h)]
    if dups:
        raise ManifestError(f"{path}: duplicate column names {sorted(set(dups))}; column names must be unique")


def _read_csv(path: Path) -> _RawFile:
    size, n_lines = _scan_csv_bytes(path)
    if size == 0:
        raise ManifestError(f"{path}: the file is empty (no header line)")
    header = _read_header(path)
    _header_problem(path, header)
    header = [h if h else f"unnamed_{i}" for i, h in enumerate(header)]
    _header_problem(path, header)  # a generated unnamed_<i> may equal a named column
    problems: list[int] = []

    def on_invalid(row) -> str:
        problems.append(1)
        return "skip"

    table = None
    try:
        with _open_bytes(path) as stream:  # a file object: pyarrow cannot open a non-UTF-8 file name itself
            table = pacsv.read_csv(
                stream,
                read_options=pacsv.ReadOptions(column_names=header, skip_rows=1, encoding="utf8"),
                parse_options=pacsv.ParseOptions(newlines_in_values=True, invalid_row_handler=on_invalid),
                convert_options=pacsv.ConvertOptions(
                    column_types={h: pa.string() for h in header},
                    strings_can_be_null=False,
                    quoted_strings_can_be_null=False,
                    null_values=[],
                    auto_dict_encode=False,
                ),
            )
    except (pa.ArrowInvalid, pa.ArrowException):
        problems.append(1)
    if table is not None and not problems and n_lines == table.num_rows + 1:
        # one record per line: line = position + 2 (header is line 1)
        frame = table.to_pandas(types_mapper={pa.string(): pd.StringDtype(na_value=np.nan)}.get)
        frame.columns = header
        return _RawFile(path, frame, np.arange(2, len(frame) + 2, dtype=np.int64), [])
    return _read_csv_slow(path, header)


def _read_csv_slow(path: Path, header: list[str]) -> _RawFile:
    """Exact line numbers (quoted newlines, blank lines) and rows with the wrong field count."""
    rows: list[list[str]] = []
    lines: list[int] = []
    bad: list[dict] = []
    n = len(header)
    with _text_stream(path) as fh:
        reader = csv.reader(fh)
        header_seen = False
        prev = 0
        for rec in reader:
            start = prev + 1
            prev = reader.line_num
            if not rec or (len(rec) == 1 and rec[0].strip() == "" and n > 1):
                continue  # blank line
            if not header_seen:
                header_seen = True
                continue
            if len(rec) != n:
                bad.append(
                    {
                        "source_file": str(path),
                        "source_row": start,
                        "image_id": None,
                        "column": None,
                        "reason": f"row has {len(rec)} fields but the header has {n} "
                        f"(check quoting of values containing commas)",
                        "raw": json.dumps(rec, ensure_ascii=False),
                        "_fields": rec,
                    }
                )
                continue
            rows.append(rec)
            lines.append(start)
    frame = pd.DataFrame(rows, columns=header, dtype="str") if rows else pd.DataFrame(
        {h: pd.Series([], dtype="str") for h in header}
    )
    return _RawFile(path, frame, np.asarray(lines, dtype=np.int64), bad)


def _read_parquet(path: Path) -> _RawFile:
    """Every column as the text of its values, exactly as stored (null -> ''): integers as integers even
    beside nulls (pandas would make them floats and round ids past 2**53), floats as Python's shortest
    round-trip repr, everything else as Arrow casts it to text."""
    try:
        with open(path, "rb") as stream:  # a file object: pyarrow cannot open a non-UTF-8 file name itself
            table = pq.read_table(stream)
    except Exception as e:  # noqa: BLE001 - report any reader failure as a file problem
        raise ManifestError(f"{path}: cannot read as Parquet ({type(e).__name__}: {e})") from None
    header = [str(c).strip() for c in table.column_names]
    _header_problem(path, header)
    frame = pd.DataFrame(index=range(table.num_rows))
    for name, column in zip(header, table.columns):
        if pa.types.is_dictionary(column.type):
            column = column.cast(column.type.value_type)
        if pa.types.is_floating(column.type):
            values = ["" if v is None else repr(float(v)) for v in column.to_pylist()]
        else:
            try:
                text = column.cast(pa.string())
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                text = pa.array([None if v is None else str(v) for v in column.to_pylist()], type=pa.string())
            values = text.fill_null("").to_pylist()
        frame[name] = pd.Series(values, dtype="str").to_numpy()
    frame = frame.astype("str") if len(frame.columns) else frame
    # Parquet has no header line: source_row is the 1-based row number.
    return _RawFile(path, frame.reset_index(drop=True), np.arange(1, len(frame) + 1, dtype=np.int64), [])


def _read_file(path: Path) -> _RawFile:
    if _is_parquet(path):
        return _read_parquet(path)
    return _read_csv(path)


def _detect_format(path: Path, columns: list[str]) -> str:
    cols = set(columns)
    if "image_id" in cols:
        fmt, required = FORMAT_PLAIN, PLAIN_REQUIRED
    elif "id" in cols:
        fmt, required = FORMAT_OSV5M, OSV_REQUIRED
    else:
        fmt, required = None, None
    missing = [c for c in (required or ()) if c not in cols]
    if fmt is not None and not missing:
        return fmt
    found = ", ".join(repr(c) for c in columns)
    if fmt is None:
        msg = (
            f"{path}: missing required columns: need 'image_id' and 'path' (plain image list) "
            f"or 'id', 'latitude' and 'longitude' (OpenStreetView-5M metadata); columns found: {found}"
        )
    else:
        kind = "plain image list" if fmt == FORMAT_PLAIN else "OpenStreetView-5M metadata"
        msg = f"{path}: missing required column(s) {', '.join(repr(c) for c in missing)} for a {kind}; columns found: {found}"
    for sep, label in ((";", "semicolons"), ("\t", "tabs"), ("|", "'|'")):
        if any(sep in c for c in columns):
            msg += f". The header looks delimited by {label}: manifests must be comma-separated CSV"
            break
    raise ManifestError(msg)


# --------------------------------------------------------------------------------------------
# Validation


def _resolve_root(image_root: str | os.PathLike | None, files: list[Path]) -> Path:
    if image_root is None:
        image_root = image_root_setting() or files[0].resolve().parent
    root = Path(os.path.realpath(os.path.expanduser(text_to_path(os.fspath(image_root)))))
    if not root.is_dir():
        raise ManifestError(
            f"image root '{root}' is not a folder; set ATTN_ASSETS_IMAGE_ROOT to the folder the image paths are relative to"
        )
    return root


def _inside(real: str, root: str) -> bool:
    return real == root or real.startswith(root if root.endswith(os.sep) else root + os.sep)


def _check_paths(paths: pd.Series, root: str) -> tuple[pd.Series, pd.Series]:
    """Normalize plain-list paths. -> (relative posix path, escapes mask). Never opens a file.

    Ordinary relative paths (no '.', '..', '//', not absolute) are checked per folder
    (realpath of each distinct parent folder, plus the symlinks found in it); unusual ones
    are resolved one by one with os.path.realpath.
    """
    rel = paths.copy()
    escapes = pd.Series(False, index=paths.index)
    odd = paths.str.startswith("/") | paths.str.contains(r"(?:^|/)\.{1,2}(?:/|$)|//", regex=True)
    for i in paths.index[odd.to_numpy()]:
        p = paths.at[i]
        real = os.path.realpath(os.path.join(root, text_to_path(p, root)))
        if _inside(real, root) and real != root:
            rel.at[i] = path_to_text(Path(os.path.relpath(real, root)).as_posix())
        else:
            escapes.at[i] = True
    normal = ~odd
    if normal.any():
        sub = paths[normal]
        parents = sub.str.replace(r"(?:^|/)[^/]*$", "", regex=True)
        codes, uniques = pd.factorize(parents)
        dir_escapes = np.zeros(len(uniques), dtype=bool)
        linked_rows: list[np.ndarray] = []
        for k, parent in enumerate(uniques):
            pdir = os.path.join(root, text_to_path(parent, root)) if parent else root
            if not _inside(os.path.realpath(pdir), root):
                dir_escapes[k] = True
                continue
            try:
                with os.scandir(pdir) as it:
                    links = {path_to_text(e.name) for e in it if e.is_symlink()}
            except OSError:
                continue
            if links:
                rows = np.flatnonzero(codes == k)
                names = sub.iloc[rows].str.rpartition("/")[2]
                linked_rows.append(rows[pd.Index(sorted(links), dtype="str").get_indexer(names) >= 0])
        esc = dir_escapes[codes]
        for rows in linked_rows:
            for r in rows:
                real = os.path.realpath(os.path.join(root, text_to_path(sub.iat[r], root)))
                if not _inside(real, root):
                    esc[r] = True
        escapes[normal] = esc
    return rel, escapes


def _as_str(s: pd.Series) -> pd.Series:
    return s.astype("str")


#: Columns the pipeline itself writes beside the manifest's own (IMAGE_COLUMNS, then the image's shard);
#: DuckDB compares identifiers without case. (A manifest column named ``extra`` is kept: it becomes a key
#: of the ``images.extra`` JSON like any other.)
#: OSV-5M's typed columns are read under their own spelling (``drive_side``, ``sub-region``), so only a name that
#: differs from its source (``sub_region``) is reserved; ``Drive_Side`` beside ``drive_side`` stays an extra column.
RESERVED_COLUMNS: tuple[str, ...] = (
    *(c for c in IMAGE_COLUMNS if c not in OSV_METADATA_NAMES), "shard_key",
    *(c.name for c in OSV_METADATA_COLUMNS if c.name != c.source),
)


#: While rows are validated, OSV-5M's typed columns are held (as text) under this prefix.
_OSV = "osv:"

#: While rows are validated, the manifest's extra columns are held under this prefix, apart from the reader's
#: own working columns (which start with '_'), so a user column such as ``_lat`` or ``_file`` stays data.
_EXTRA = "extra:"


def _check_extra_names_across_files(kept_as: dict[str, list[tuple[Path, str]]]) -> None:
    """Raise ManifestError when two files of one manifest keep different columns under one name (one file's
    ``Country`` kept as ``manifest_Country`` beside another file's own ``manifest_Country``)."""
    for name, sources in kept_as.items():
        if len({original for _, original in sources}) > 1:
            listed = "; ".join(f"{path}: {original!r}" for path, original in sources)
            raise ManifestError(
                f"columns from different files would both be kept as {name!r} ({listed}); rename one of them"
            )


def _extra_column_names(path: Path, columns: list[str]) -> dict[str, str]:
    """Manifest column -> name it is kept under: its own name, or ``manifest_<name>`` where it equals a
    :data:`RESERVED_COLUMNS` name ignoring case (DuckDB would otherwise merge or rename the two).

    Extra columns that differ from each other only in case (``Camera`` beside ``camera``) keep
    both names: the warehouse stores them as distinct keys of ``images.extra``. Raises ManifestError
    when a prefixed name collides with another column of the file.
    """
    reserved = {c.lower() for c in RESERVED_COLUMNS}
    names = {c: f"manifest_{c}" if c.lower() in reserved or c.startswith(AS_WRITTEN_PREFIX) else c for c in columns}
    clashes = sorted(c for c, name in names.items() if name != c and name in names)
    if clashes:
        raise ManifestError(
            f"{path}: columns {', '.join(repr(c) for c in clashes)} would be kept as "
            f"{', '.join(repr(names[c]) for c in clashes)}, which the file already has; rename one of them"
        )
    return names


#: Float64 holds every integer below 2**53 exactly; from there on (2**53 + 1 rounds to 2**53) an id written as a
#: float may name another image.
_FLOAT_EXACT_INTEGERS = 2**53
#: A number as a program writes it: ASCII digits, an optional sign, point and exponent (no '_' nor other scripts'
#: digits, which Decimal would also accept).
_DECIMAL_TEXT = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?", re.ASCII)
_RESAVE_IDS = (
    "Re-save the manifest with the id column as text or integers (pandas: read_csv(..., dtype={'id': str}), or "
    "df['id'].astype('Int64') before to_parquet; a spreadsheet: format the column as Text before pasting), or "
    "re-download the original metadata CSV."
)


def _integral_ids(written: pd.Series) -> tuple[pd.Series, pd.Series]:
    """OSV-5M ids written as floats (``3859149887473420.0``, ``3.859149887481337e+15``) -> (the integer as
    text, else None; the reason the id cannot be used, else None), aligned with ``written``.

    An id resolves only when its text is a plain ASCII number that denotes a non-negative integer exactly
    (decimal arithmetic, no rounding) below 2**53, where float64 still holds every integer; whether its file
    exists is checked by the caller.
    """
    integers, problems = [], []
    for text in written:
        value = Decimal(text.strip()) if _DECIMAL_TEXT.fullmatch(text.strip()) else None
        if value is None or value != value.to_integral_value():
            integers.append(None)
            problems.append(f"id '{text}' is not an integer (OSV-5M ids are whole numbers). {_RESAVE_IDS}")
        elif value < 0:
            integers.append(None)
            problems.append(f"id '{text}' is negative (OSV-5M ids are positive whole numbers). {_RESAVE_IDS}")
        elif value >= _FLOAT_EXACT_INTEGERS:
            integers.append(None)
            problems.append(
                f"id '{text}' is written as a float at or beyond 2**53, where floats cannot hold every integer: its "
                f"digits may have been rounded to another image's id. {_RESAVE_IDS}"
            )
        else:
            integers.append(str(int(value)))
            problems.append(None)
    return (pd.Series(integers, index=written.index, dtype="str"),
            pd.Series(problems, index=written.index, dtype=object))


def read_manifest(
    manifest: str | os.PathLike,
    image_root: str | os.PathLike | None = None,
    *,
    image_index: ImageIndex | None = None,
    geocode: bool = True,
) -> ManifestResult:
    """Read, validate and resolve countries of a manifest file, folder or glob.

    ``image_root``: the folder image paths are relative to (default: ATTN_ASSETS_IMAGE_ROOT,
    else the folder of the first manifest file). ``image_index``: a prebuilt
    :func:`build_image_index` of that root, to reuse between calls (OSV-5M files only).
    ``geocode=False`` skips reverse geocoding (country stays empty where the manifest has none).

    Returns :class:`ManifestResult` with ``images`` (:data:`IMAGE_COLUMNS` then every extra
    manifest column as text, in manifest order) and ``rejections`` (:data:`REJECTION_COLUMNS`).
    Row-level problems become rejections; file-level problems raise :class:`ManifestError`.
    See the module docstring for the difference between OSV-5M and plain lists about missing
    image files.
    """
    files = find_manifest_files(manifest)
    root = _resolve_root(image_root, files)
    rows = _collect_rows(files)
    written, written_as_float = _check_ids(rows)
    latitude, longitude = _check_coordinates(rows)
    codes, code_valid = _check_country_codes(rows)
    notes: list[str] = []
    typed = _check_osv_metadata(rows, notes)
    rel, member, shadowed = _resolve_paths(rows, root, image_index, written, written_as_float)
    example = None
    if len(shadowed):
        first = shadowed.index[0]
        used = rows.frame["image_id"].to_numpy() == first
        where = rel[used].iloc[0] + ("" if pd.isna(member[used].iloc[0]) else ":" + member[used].iloc[0])
        example = f"{first}: used {where}, also at {shadowed.iloc[0]}"
        notes.append(f"{len(shadowed)} ids were found in more than one place under the image root (e.g. {example}); "
                     "the first archive or file in path order is used")
    for note in notes:
        _log.warning("%s", note)
    _reject_duplicates(rows, rel)
    keep = rows.alive
    rejections = _build_rejections(rows.frame, keep, rows.column, rows.reason, rows.raw_frames, rows.file_columns,
                                   rows.parse_rejections)
    images = _images_frame(rows, keep, rel, member, typed, root, codes, code_valid, latitude, longitude, geocode)
    if images.empty:
        head = "; ".join(
            f"line {r.source_row}: {r.reason}" for r in rejections.head(5).itertuples()
        )
        raise ManifestError(
            f"{', '.join(str(p) for p in files)}: no usable row ({len(rejections)} rejected"
            + (f"; first: {head}" if head else "")
            + ")",
            rejections=rejections,
        )
    return ManifestResult(
        images=images,
        rejections=rejections,
        files=[path_to_text(p.resolve()) for p in files],
        formats=rows.formats,
        image_root=root,
        notes=notes,
        ids_found_twice=len(shadowed),
        ids_found_twice_example=example,
    )


@dataclass
class _Rows:
    """Every row of every manifest file while it is validated: the working frame (the reader's own ``_``
    columns, ``image_id``, ``source_file``, ``source_row`` and the extra columns under :data:`_EXTRA`) and, per
    row, the column at fault and the reason once it is rejected (None while it is accepted)."""

    frame: pd.DataFrame
    raw_frames: dict[int, pd.DataFrame]
    file_columns: dict[int, list[str]]
    parse_rejections: list[dict]
    formats: dict[str, str]
    column: np.ndarray = field(init=False)
    reason: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.column = np.full(len(self.frame), None, dtype=object)
        self.reason = np.full(len(self.frame), None, dtype=object)

    @property
    def alive(self) -> np.ndarray:
        """Rows not rejected so far."""
        return pd.isna(self.reason)

    @property
    def osv(self) -> np.ndarray:
        return (self.frame["_fmt"] == FORMAT_OSV5M).to_numpy()

    def at(self, column: str, pos: np.ndarray) -> pd.Series:
        return self.frame[column].iloc[pos]

    def id_column(self, pos: np.ndarray) -> np.ndarray:
        """The id column's name ('image_id' or 'id') of the rows at ``pos``."""
        return self.at("_idcol", pos).to_numpy()

    def reject(self, mask, column, reason) -> None:
        """Reject rows in mask not rejected yet; column/reason: a str or f(row positions) -> values."""
        m = np.asarray(mask, dtype=bool) & self.alive
        if not m.any():
            return
        pos = np.flatnonzero(m)
        self.column[pos] = column if isinstance(column, str) else np.asarray(column(pos), dtype=object)
        self.reason[pos] = reason if isinstance(reason, str) else np.asarray(reason(pos), dtype=object)


def _collect_rows(files: list[Path]) -> _Rows:
    """Read every file, detect its format and stack its rows into one working frame (see :class:`_Rows`)."""
    parts: list[pd.DataFrame] = []
    file_columns: dict[int, list[str]] = {}
    raw_frames: dict[int, pd.DataFrame] = {}
    parse_rejections: list[dict] = []
    formats: dict[str, str] = {}
    kept_as: dict[str, list[tuple[Path, str]]] = {}
    for fi, path in enumerate(files):
        rf = _read_file(path)
        cols = list(rf.frame.columns)
        fmt = _detect_format(path, cols)
        if len(rf.frame) == 0 and not rf.bad_rows:
            raise ManifestError(f"{path}: the file has a header but no data rows")
        src = path_to_text(path.resolve())
        formats[src] = fmt
        file_columns[fi] = cols
        raw_frames[fi] = rf.frame
        id_col = "image_id" if fmt == FORMAT_PLAIN else "id"
        for b in rf.bad_rows:
            b["source_file"] = src
            fields = b.pop("_fields")
            k = cols.index(id_col)
            b["image_id"] = fields[k] if k < len(fields) else None
            parse_rejections.append(b)
        f = rf.frame
        n = len(f)
        empty = pd.Series([""] * n, dtype="str", index=f.index)
        mapped = {id_col, "latitude", "longitude", "country", *(c.source for c in OSV_METADATA_COLUMNS)}
        has_path = "path" in cols
        if has_path:
            mapped.add("path")
        has_member = has_path and "member" in cols  # a member only means something beside an explicit path
        if has_member:
            mapped.add("member")
        part = pd.DataFrame(
            {
                "_file": np.full(n, fi, dtype=np.int32),
                "_pos": np.arange(n, dtype=np.int64),
                "_fmt": fmt,
                "_idcol": id_col,
                "_has_path": has_path,
                "image_id": _as_str(f[id_col]),
                "_path": _as_str(f["path"]) if has_path else empty,
                "_member": _as_str(f["member"]) if has_member else empty,
                "_country": _as_str(f["country"]) if "country" in cols else empty,
                "_unique": _as_str(f["unique_country"]) if "unique_country" in cols else empty,
                "_lat": _as_str(f["latitude"]) if "latitude" in cols else empty,
                "_lon": _as_str(f["longitude"]) if "longitude" in cols else empty,
                "source_file": src,
                "source_row": rf.lines,
            },
            index=f.index,
        )
        for c in OSV_METADATA_COLUMNS:
            part[_OSV + c.name] = _as_str(f[c.source]) if c.source in cols else empty
        renamed = _extra_column_names(path, [c for c in cols if c not in mapped])
        for c, name in renamed.items():
            part[_EXTRA + name] = f[c].to_numpy()
            kept_as.setdefault(name, []).append((path, c))
        parts.append(part)
    _check_extra_names_across_files(kept_as)
    frame = pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0].reset_index(drop=True)
    return _Rows(frame, raw_frames, file_columns, parse_rejections, formats)


def _check_ids(rows: _Rows) -> tuple[pd.Series, np.ndarray]:
    """Reject empty ids and OSV-5M ids written as unusable floats; replace exact float ids by their integer.

    Returns (the ids as written, mask of the rows whose id was written as a float and resolved)."""
    df = rows.frame
    rows.reject(df["image_id"].to_numpy() == "", rows.id_column,
                lambda pos: (rows.at("_idcol", pos) + " is empty; every row needs an id").to_numpy())
    written = df["image_id"].copy()
    written_as_float = np.zeros(len(df), dtype=bool)
    odd_id = rows.osv & (df["image_id"] != "").to_numpy() & ~df["image_id"].str.fullmatch(r"[0-9]+").to_numpy()
    if odd_id.any():
        integers, problems = _integral_ids(df.loc[odd_id, "image_id"])
        problem = pd.Series(None, index=df.index, dtype=object)
        problem[odd_id] = problems.to_numpy()
        rows.reject(problem.notna().to_numpy(), "id", lambda pos: problem.iloc[pos].to_numpy())
        resolved = odd_id & problem.isna().to_numpy()
        df.loc[resolved, "image_id"] = integers[resolved[odd_id]].to_numpy()
        written_as_float = resolved
    return written, written_as_float


def _check_coordinates(rows: _Rows) -> tuple[pd.Series, pd.Series]:
    """Reject coordinates that are missing (OSV-5M), not numbers, out of range or given alone.

    Returns (latitude, longitude) in degrees, NaN where absent."""
    coords = {}
    for name, lo, hi in (("latitude", -90, 90), ("longitude", -180, 180)):
        raw = rows.frame["_lat" if name == "latitude" else "_lon"].str.strip()
        val = pd.to_numeric(raw.where(raw != "", None), errors="coerce").astype("float64")
        present = (raw != "").to_numpy()
        nan = val.isna().to_numpy()
        bad_num = present & nan
        out = present & ~nan & ((val < lo) | (val > hi)).to_numpy()
        rows.reject(rows.osv & ~present, name, f"{name} is empty; OpenStreetView-5M rows need both coordinates")
        rows.reject(bad_num, name, lambda pos, raw=raw, name=name: (
            f"{name} '" + raw.iloc[pos] + "' is not a number; write decimal degrees such as 48.8566").to_numpy())
        rows.reject(out, name, lambda pos, raw=raw, name=name, lo=lo, hi=hi: (
            f"{name} " + raw.iloc[pos] + f" is outside [{lo}, {hi}]; check that the columns are degrees and "
            "not swapped").to_numpy())
        coords[name] = (val, present)
    lat, lat_present = coords["latitude"]
    lon, lon_present = coords["longitude"]
    rows.reject(lat_present & ~lon_present, "longitude", "longitude is empty but latitude is given; give both or neither")
    rows.reject(lon_present & ~lat_present, "latitude", "latitude is empty but longitude is given; give both or neither")
    return lat, lon


def _check_osv_metadata(rows: _Rows, notes: list[str]) -> dict[str, pd.Series]:
    """Parse OSV-5M's typed columns (:mod:`attn_assets.catalog.osv_metadata`). A cell that cannot be typed is
    NULL and costs no row: its text is returned under ``AS_WRITTEN_PREFIX + <manifest column>`` (None elsewhere)
    and one line per such column is appended to ``notes``.

    Returns {images column: values} for every row."""
    typed, as_written = {}, {}
    for column in OSV_METADATA_COLUMNS:
        text = rows.frame[_OSV + column.name]
        parsed = parse_column(column, text)
        typed[column.name] = parsed.values
        if parsed.note is not None:
            as_written[AS_WRITTEN_PREFIX + column.source] = text.where(parsed.bad, None).astype("str")
            notes.append(parsed.note)
    return {**typed, **as_written}


def _check_country_codes(rows: _Rows) -> tuple[pd.Series, pd.Series]:
    """Reject a ``country`` that is not an ISO 3166-1 alpha-2 code. Returns (normalised codes, valid mask)."""
    codes, present, valid = normalize_codes(rows.frame["_country"])
    rows.reject(
        (present & ~valid).to_numpy(),
        "country",
        lambda pos: ("country '" + rows.at("_country", pos) + "' is not an ISO 3166-1 alpha-2 code; write a "
                     "two-letter code such as FR, or leave the cell empty to take the country from the "
                     "coordinates").to_numpy(),
    )
    return codes, valid


def _resolve_paths(rows: _Rows, root: Path, image_index: ImageIndex | None, written: pd.Series,
                   written_as_float: np.ndarray) -> tuple[pd.Series, pd.Series, pd.Series]:
    """Each row's image path relative to ``root`` (NA where unknown) and zip member (NA for files): explicit
    paths checked not to leave the root, OSV-5M ids looked up in the image index (files and archive members);
    rows without a usable image are rejected. Third: for each looked-up id also found elsewhere (the index's
    first copy is used), where its other copy lies, indexed by id."""
    no_shadow = pd.Series([], dtype="str")
    df, n, root_s = rows.frame, len(rows.frame), str(root)
    rel = pd.Series(pd.NA, index=df.index, dtype="str")
    member = pd.Series(pd.NA, index=df.index, dtype="str")
    explicit = df["_has_path"].to_numpy()
    if explicit.any():
        rows.reject(explicit & (df["_path"] == "").to_numpy(), "path",
                    "path is empty; give the image file's path relative to ATTN_ASSETS_IMAGE_ROOT")
        ok = explicit & (df["_path"] != "").to_numpy() & rows.alive
        if ok.any():
            norm, esc = _check_paths(df.loc[ok, "_path"], root_s)
            rel.loc[ok] = norm
            m = np.zeros(n, dtype=bool)
            m[np.flatnonzero(ok)[esc.to_numpy()]] = True
            rows.reject(m, "path", escape_reason(root))
        given = explicit & (df["_member"] != "").to_numpy()
        is_zip = df["_path"].str.lower().str.endswith(".zip").to_numpy()
        rows.reject(explicit & is_zip & ~given, "member", lambda pos: (
            "path '" + rows.at("_path", pos) + "' is a zip archive; give the member column (the image's name inside "
            "the archive, e.g. 00/101.jpg)").to_numpy())
        not_zip = given & ~is_zip
        rows.reject(not_zip, "member", lambda pos: (
            "member '" + rows.at("_member", pos) + "' is given but path '" + rows.at("_path", pos) + "' is not a .zip "
            "archive; give the archive's path relative to ATTN_ASSETS_IMAGE_ROOT, or leave member empty").to_numpy())
        member.loc[given & rows.alive] = df.loc[given & rows.alive, "_member"]
    lookup = ~explicit & rows.osv
    if not lookup.any():
        return rel, member, no_shadow
    index = image_index if image_index is not None else build_image_index(root)
    if Path(index.root) != root:
        raise ManifestError(f"image index was built for {index.root}, not the image root {root}")
    found = index.lookup(df.loc[lookup, "image_id"])
    rel.loc[lookup] = found.to_numpy()
    member.loc[lookup] = index.lookup_members(df.loc[lookup, "image_id"]).to_numpy()
    in_archives = f" nor in its {index.archives} zip archives" if index.archives else ""
    missing = np.zeros(n, dtype=bool)
    missing[np.flatnonzero(lookup)[found.isna().to_numpy()]] = True
    rows.reject(
        missing & written_as_float,
        "id",
        lambda pos: (
            "id '" + written.iloc[pos] + "' is written as a float; it denotes the integer " + rows.at("image_id", pos)
            + " but no image file " + rows.at("image_id", pos) + ".jpg is under the image root" + in_archives.replace(" nor ", " or ") + ", so the float has "
            "probably lost digits. " + _RESAVE_IDS
        ).to_numpy(),
    )
    rows.reject(
        missing & (df["image_id"] != "").to_numpy(),
        "id",
        lambda pos: ("image file " + rows.at("image_id", pos) + ".jpg not found under image root" + in_archives + "; check "
                     "ATTN_ASSETS_IMAGE_ROOT (OSV-5M: the folder holding images/<split>/, as zip archives or "
                     "extracted)").to_numpy(),
    )
    if index.via_symlink:
        linked = lookup & (pd.Index(sorted(index.via_symlink), dtype="str").get_indexer(rel) >= 0) & rows.alive
        for i in np.flatnonzero(linked):
            real = os.path.realpath(os.path.join(root_s, text_to_path(rel.iat[i], root_s)))
            if not _inside(real, root_s):
                m = np.zeros(n, dtype=bool)
                m[i] = True
                rows.reject(m, "id", escape_reason(root))
    looked_up = pd.Index(df.loc[lookup & rows.alive, "image_id"].unique(), dtype="str")
    shadowed = index.shadowed if index.shadowed is not None else no_shadow
    return rel, member, shadowed[shadowed.index.isin(looked_up)]


def _reject_duplicates(rows: _Rows, rel: pd.Series) -> None:
    """Reject later rows whose id an accepted row already has (the first accepted occurrence is kept)."""
    df, n = rows.frame, len(rows.frame)
    alive = rows.alive
    dup = (df["image_id"].where(alive).duplicated(keep="first") & alive).to_numpy()
    if not dup.any():
        return
    first_pos = pd.Series(np.arange(n), index=df.index)[alive & ~dup].groupby(df["image_id"][alive & ~dup]).first()
    reasons = np.full(n, None, dtype=object)
    for i in np.flatnonzero(dup):
        j = int(first_pos[df["image_id"].iat[i]])
        where = (
            f"line {df['source_row'].iat[j]}"
            if df["source_file"].iat[j] == df["source_file"].iat[i]
            else f"{df['source_file'].iat[j]} line {df['source_row'].iat[j]}"
        )
        r = f"duplicate {df['_idcol'].iat[i]} {df['image_id'].iat[i]!r}: first seen at {where}"
        if rel.iat[i] != rel.iat[j] and not (pd.isna(rel.iat[i]) and pd.isna(rel.iat[j])):
            r += f"; paths differ ({rel.iat[j]!r} there, {rel.iat[i]!r} here)"
        reasons[i] = r
    rows.reject(dup, rows.id_column, lambda pos: reasons[pos])


def _images_frame(rows: _Rows, keep: np.ndarray, rel: pd.Series, member: pd.Series, typed: dict[str, pd.Series],
                  root: Path, codes: pd.Series, code_valid: pd.Series, latitude: pd.Series, longitude: pd.Series,
                  geocode: bool) -> pd.DataFrame:
    """The accepted rows as :data:`IMAGE_COLUMNS` plus the extra columns, each with its resolved country:
    the manifest's code, else ``unique_country``, else (``geocode``) the coordinates'
    (:func:`~attn_assets.catalog.countries.resolve_countries`: NULL with source 'at_sea' outside territorial
    waters)."""
    good = rows.frame.loc[keep].reset_index(drop=True)
    codes_g = codes[keep].reset_index(drop=True)
    cvalid_g = code_valid[keep].reset_index(drop=True)
    ucodes, _, uvalid = normalize_codes(good["_unique"])
    country = pd.Series(pd.NA, index=good.index, dtype="str")
    source = pd.Series(pd.NA, index=good.index, dtype="str")
    country[cvalid_g] = codes_g[cvalid_g]
    source[cvalid_g] = "manifest"
    use_u = ~cvalid_g & uvalid
    country[use_u] = ucodes[use_u]
    source[use_u] = "unique_country"
    lat_g = latitude[keep].reset_index(drop=True)
    lon_g = longitude[keep].reset_index(drop=True)
    need = country.isna() & lat_g.notna() & lon_g.notna()
    if geocode and need.any():
        found = resolve_countries(lat_g[need].to_numpy(), lon_g[need].to_numpy())
        where = lat_g.index[need]
        codes_f = pd.Series(found.country, index=where, dtype="str")
        sources_f = pd.Series(found.source, index=where, dtype="str")
        ok = (codes_f.isin(list(country_names())) | codes_f.isna()) & sources_f.notna()
        country[where[ok.to_numpy()]] = codes_f[ok]
        source[where[ok.to_numpy()]] = sources_f[ok]
    rel_g = rel[keep].reset_index(drop=True).astype("str")
    images = pd.DataFrame(
        {
            "image_id": good["image_id"].astype("str"),
            "path": rel_g,
            "abs_path": (path_to_text(str(root)).rstrip("/") + "/" + rel_g).astype("str"),
            "member": member[keep].reset_index(drop=True).astype("str"),
            "country": country,
            "country_name": country.map(country_names()).astype("str"),
            "country_source": source,
            "latitude": lat_g.to_numpy(dtype="float64"),
            "longitude": lon_g.to_numpy(dtype="float64"),
            "source_file": good["source_file"].astype("str"),
            "source_row": good["source_row"].to_numpy(dtype=np.int64),
            **{name: values[keep].reset_index(drop=True) for name, values in typed.items()},
        }
    )
    for c in (c for c in rows.frame.columns if c.startswith(_EXTRA)):
        images[c[len(_EXTRA):]] = good[c].astype("str").to_numpy() if len(good) else pd.Series([], dtype="str")
    return images


def _build_rejections(df, keep, rej_col, rej_reason, raw_frames, file_columns, parse_rejections) -> pd.DataFrame:
    bad = np.flatnonzero(~keep)
    rows = []
    if len(bad):
        sub = df.iloc[bad]
        for fi, grp in sub.groupby("_file", sort=False):
            raw_f = raw_frames[int(fi)]
            records = raw_f.iloc[grp["_pos"].to_numpy()][file_columns[int(fi)]].to_dict("records")
            for k, (i, rec) in enumerate(zip(grp.index, records)):
                pos = df.index.get_loc(i)
                rows.append(
                    {
                        "source_file": df["source_file"].iat[pos],
                        "source_row": int(df["source_row"].iat[pos]),
                        "image_id": df["image_id"].iat[pos],
                        "column": rej_col[pos],
                        "reason": rej_reason[pos],
                        "raw": json.dumps(rec, ensure_ascii=False),
                        "_order": (int(fi), int(df["source_row"].iat[pos])),
                    }
                )
    file_order = {f: i for i, f in enumerate(df["source_file"].unique())}
    rows += [dict(r, _order=(file_order.get(r["source_file"], len(file_order)), r["source_row"])) for r in parse_rejections]
    rows.sort(key=lambda r: r["_order"])
    out = pd.DataFrame(rows, columns=[*REJECTION_COLUMNS, "_order"])
    out = out.drop(columns="_order").reset_index(drop=True)
    for c in ("source_file", "image_id", "column", "reason", "raw"):
        out[c] = out[c].astype("str")
    out["source_row"] = out["source_row"].astype("Int64")
    return out

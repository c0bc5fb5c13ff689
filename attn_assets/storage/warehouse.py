"""The DuckDB warehouse: short-lived connections, one writer at a time, shard-exact replaces.

DuckDB refuses a read-write open while any other process holds the file, even
read-only. Writers therefore take a file lock first (so two Dagster runs queue instead of
failing), then open with retries and say in the log why they wait. Readers open read-only,
query and close at once.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from attn_assets.metric_names import ACCURACY_THRESHOLDS_KM, METRIC_NAMES
from attn_assets.osv5m_columns import AS_WRITTEN_PREFIX, GROUP_DIMENSIONS, NAMES_WITHIN_COUNTRY
from attn_assets.storage.schema import (
    ATTENTION_STATISTICS_BY_MODEL,
    BY_MODEL_TABLES,
    COUNTRY_AGGREGATES_BY_MODEL,
    IMAGE_FAILURES_BY_MODEL,
    MODELS,
    SHARD_LOADS_BY_MODEL,
    ARTIFACT_STATISTICS,
    GEOLOCATION_ACCURACY,
    GEOLOCATION_PREDICTIONS,
    ATTENTION_STATISTICS,
    HEAD_STATISTICS,
    LAYER_STATISTICS,
    SPATIAL_STATISTICS,
    COUNTRY_AGGREGATES,
    GROUP_AGGREGATES,
    UNKNOWN_COUNTRY,
    IMAGE_FAILURES,
    IMAGES,
    MANIFEST_REJECTIONS,
    SHARD_LOADS,
    WAREHOUSE_TABLES,
    Table,
)

log = logging.getLogger(__name__)

# Written in the v1.5 storage format so the DuckDB CLI from PyPI (duckdb-cli 1.5.x, the newest
# published) can open the warehouse; the setting sticks to the file.
_FILE_FORMAT = {"storage_compatibility_version": "v1.5.0"}

_LOCK_ERROR_HINTS = ("could not set lock", "conflicting lock", "lock on file")


class WarehouseBusyError(RuntimeError):
    pass


def _is_lock_error(error: Exception) -> bool:
    return any(hint in str(error).lower() for hint in _LOCK_ERROR_HINTS)


def _sql_string(value: str) -> str:
    """``value`` as a SQL string literal."""
    return "'" + value.replace("'", "''") + "'"


def _sql_identifier(name: str) -> str:
    """``name`` as a quoted SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


def _select_list(table: Table, source_alias: str = "s", overrides: Mapping[str, str] | None = None) -> str:
    overrides = overrides or {}
    return ", ".join(overrides.get(c, f'{source_alias}."{c}"') + f' AS "{c}"' for c in table.column_names)


# The manifest's country wins over the one a shard file was computed with: a corrected country reaches every
# table without recomputing. Images not in `images` (e.g. a warehouse filled without a manifest) keep theirs.
_WITH_MANIFEST = f'LEFT JOIN "{IMAGES.name}" i ON i.image_id = s.image_id'
_MANIFEST_COUNTRY = "CASE WHEN i.image_id IS NULL THEN s.country ELSE i.country END"


def per_image_tables() -> tuple[Table, ...]:
    """Warehouse tables with one row per image (or per image and layer/head) of a shard."""
    return tuple(t for t in WAREHOUSE_TABLES
                 if t is not IMAGES and {"image_id", "shard_key"} <= set(t.column_names))


# Tables filled from the shard Parquet by replace_shard, in the same transaction as attention_statistics.
SAME_PASS_TABLES: tuple[Table, ...] = (LAYER_STATISTICS, HEAD_STATISTICS, ARTIFACT_STATISTICS, SPATIAL_STATISTICS)


def _add_missing_columns(con: duckdb.DuckDBPyConnection) -> None:
    """Columns added to a table's schema after its warehouse was created (e.g. head_similarity)."""
    for table in WAREHOUSE_TABLES:
        have = {row[0] for row in con.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = ? AND table_schema = 'main'",
            [table.name]).fetchall()}
        for column in table.columns:
            if column.name not in have:
                con.execute(f'ALTER TABLE "{table.name}" ADD COLUMN "{column.name}" {column.sql_type}')


def _target(table: Table, model_key: str | None) -> tuple[Table, dict[str, str]]:
    """The table one shard file fills (``<table>_by_model`` for a listed model's file) and the select overrides
    that fill its model_key column."""
    if model_key is None:
        return table, {}
    return BY_MODEL_TABLES[table.name], {"model_key": _sql_string(model_key)}


def _model_filter(model_key: str | None) -> str:
    """`` AND model_key = '<key>'`` for a listed model's rows; nothing for the plain tables."""
    return "" if model_key is None else f" AND model_key = {_sql_string(model_key)}"


def _unnest_insert(table: Table, index: str, prefix: str, first: str, model_key: str | None = None) -> str:
    """INSERT the per-layer / per-head list columns of the shard file as one row per list element."""
    lists = ", ".join(f'unnest(s."{prefix}{m}") AS "{m}"' for m in METRIC_NAMES)
    table, model = _target(table, model_key)
    return (
        f'INSERT INTO "{table.name}" BY NAME SELECT {"".join(f"{v} AS {k}, " for k, v in model.items())}'
        f's.image_id, s.shard_key, {_MANIFEST_COUNTRY} AS country, '
        f'unnest(range(len(s."{first}"))) AS "{index}", {lists} '
        f"FROM read_parquet(?) s {_WITH_MANIFEST} WHERE s.status = 'ok' AND s.shard_key = ? AND s.\"{first}\" IS NOT NULL"
    )


def _same_pass_inserts(present: set[str], model_key: str | None = None) -> list[str]:
    """INSERTs of the same-pass analysis tables from one shard file (none for a file written before the shard
    files held the per-layer, per-head, artifact and spatial statistics)."""
    statements = []
    if f"layer_{METRIC_NAMES[0]}" in present:
        statements.append(_unnest_insert(LAYER_STATISTICS, "layer", "layer_", f"layer_{METRIC_NAMES[0]}", model_key))
    if f"head_{METRIC_NAMES[0]}" in present:
        statements.append(_unnest_insert(HEAD_STATISTICS, "head", "head_", f"head_{METRIC_NAMES[0]}", model_key))
    for table, marker in ((ARTIFACT_STATISTICS, "artifact_count"), (SPATIAL_STATISTICS, "attention_com_x")):
        if marker in present:
            table, model = _target(table, model_key)
            select = _select_list(table, overrides={"num_patches": "s.grid_height * s.grid_width",
                                                    "country": _MANIFEST_COUNTRY, **model})
            statements.append(
                f'INSERT INTO "{table.name}" BY NAME SELECT {select} FROM read_parquet(?) s {_WITH_MANIFEST} '
                f"WHERE s.status = 'ok' AND s.shard_key = ? AND s.\"{marker}\" IS NOT NULL"
            )
    return statements


def _metric_aggregates_sql() -> str:
    """mean, std (sample), min and max of every metric of attention_statistics ``s``, as SELECT items."""
    return ", ".join(
        f'{fn}(s."{metric}") AS "{metric}_{stat}"'
        for metric in METRIC_NAMES
        for stat, fn in (("mean", "avg"), ("std", "stddev_samp"), ("min", "min"), ("max", "max"))
    )


@contextlib.contextmanager
def transaction(con: duckdb.DuckDBPyConnection) -> Iterator[duckdb.DuckDBPyConnection]:
    """One DuckDB transaction around the block: committed when it ends, rolled back when it (or the commit)
    raises, interrupts included, so a reader sees the tables as they were before or after it, never between."""
    con.execute("BEGIN TRANSACTION")
    try:
        yield con
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise


def _fill_uniform_baselines(con: duckdb.DuckDBPyConnection, table: Table,
                            uniform_baselines: Callable[[int], Mapping[str, float]], groups_sql: str,
                            match_sql: str, params: Sequence = (), statistics: Table = ATTENTION_STATISTICS) -> None:
    """Set ``table``'s ``<metric>_uniform`` columns (alias ``a``) for every group whose images have N patches, for
    each N in ``statistics``: ``groups_sql`` selects those groups (its one ``?`` is N; alias ``g``),
    ``match_sql`` matches them to the table's rows and takes ``params`` after N."""
    assignments = ", ".join(f'"{m}_uniform" = ?' for m in METRIC_NAMES)
    patch_counts = con.execute(
        f'SELECT DISTINCT num_patches FROM "{statistics.name}" WHERE num_patches IS NOT NULL').fetchall()
    for (num_patches,) in patch_counts:
        values = uniform_baselines(int(num_patches))
        con.execute(f'UPDATE "{table.name}" AS a SET {assignments} FROM ({groups_sql}) AS g WHERE {match_sql}',
                    [float(values[m]) for m in METRIC_NAMES] + [int(num_patches), *params])


def _insert_country_aggregates(con: duckdb.DuckDBPyConnection, target: Table, statistics: Table,
                               uniform_baselines: Callable[[int], Mapping[str, float]] | None,
                               by_model: bool = False) -> None:
    """INSERT the seed's groupby('country').agg(...) of ``statistics`` into ``target`` (per model_key too when
    ``by_model``), then its uniform baselines (see :meth:`Warehouse.refresh_country_aggregates`)."""
    groups = "model_key, country" if by_model else "country"
    model = "s.model_key, " if by_model else ""
    con.execute(
        f'INSERT INTO "{target.name}" BY NAME SELECT {model}s.country AS country, '
        "CASE WHEN s.country IS NULL THEN ? ELSE any_value(i.country_name) END AS country_name, "
        f'count(*) AS image_count, {_metric_aggregates_sql()} FROM "{statistics.name}" s '
        f'LEFT JOIN "{IMAGES.name}" i USING (image_id) GROUP BY {model}s.country',
        [UNKNOWN_COUNTRY])
    if uniform_baselines is not None:
        _fill_uniform_baselines(
            con, target, uniform_baselines,
            f'SELECT {groups} FROM "{statistics.name}" GROUP BY {groups} HAVING max(num_patches) = ?',
            ("a.model_key = g.model_key AND " if by_model else "") + "a.country IS NOT DISTINCT FROM g.country",
            statistics=statistics)


class Warehouse:
    """`attention.duckdb` plus the rules for touching it."""

    def __init__(
        self,
        path: Path,
        *,
        wait_timeout_s: float = 600.0,
        retry_interval_s: float = 0.5,
        logger: logging.Logger | logging.LoggerAdapter | None = None,
    ) -> None:
        self.path = Path(path)
        self.wait_timeout_s = wait_timeout_s
        self.retry_interval_s = retry_interval_s
        self.log = logger or log

    @property
    def lock_path(self) -> Path:
        return self.path.with_name(self.path.name + ".writelock")

    def exists(self) -> bool:
        return self.path.exists()

    # -- connections -----------------------------------------------------------------

    def _open(self, read_only: bool) -> duckdb.DuckDBPyConnection:
        deadline = time.monotonic() + self.wait_timeout_s
        last_report = 0.0
        delay = self.retry_interval_s
        while True:
            try:
                return duckdb.connect(str(self.path), read_only=read_only, config=_FILE_FORMAT)
            except duckdb.Error as error:
                if not _is_lock_error(error):
                    raise
                now = time.monotonic()
                if now >= deadline:
                    raise WarehouseBusyError(
                        f"{self.path} stayed locked by another process for {self.wait_timeout_s:.0f} s "
                        f"({error}). Close other programs that hold it open (a DuckDB CLI, a notebook) "
                        "and re-run; nothing was written."
                    ) from error
                if now - last_report >= 10 or last_report == 0.0:
                    self.log.warning(
                        "Warehouse %s is locked by another process; waiting (up to %.0f s more): %s",
                        self.path, deadline - now, str(error).splitlines()[0],
                    )
                    last_report = now
                time.sleep(delay)
                delay = min(delay * 1.5, 5.0)

    @contextlib.contextmanager
    def writer(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A read-write connection held by one process at a time, tables created."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.lock_path, "a+") as lock_file:
            try:
                fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                self.log.warning("Another writer holds %s; waiting for it to finish", self.lock_path)
                fcntl.flock(lock_file, fcntl.LOCK_EX)
            try:
                con = self._open(read_only=False)
                try:
                    for table in WAREHOUSE_TABLES:
                        con.execute(table.create_sql())
                    _add_missing_columns(con)
                    yield con
                finally:
                    con.close()
            finally:
                fcntl.flock(lock_file, fcntl.LOCK_UN)

    @contextlib.contextmanager
    def reader(self) -> Iterator[duckdb.DuckDBPyConnection]:
        if not self.path.exists():
            raise FileNotFoundError(
                f"No warehouse at {self.path}. Run `attn-assets materialize` (or materialize "
                "attention_warehouse in the Dagster UI) first."
            )
        con = self._open(read_only=True)
        try:
            yield con
        finally:
            con.close()

    def query(self, sql: str, params: Sequence | None = None) -> pd.DataFrame:
        with self.reader() as con:
            return con.execute(sql, params or []).df()

    # -- writes ------------------------------------------------------------------------

    def replace_images(self, images_parquet: Path) -> int:
        """Replace the `images` table with the validated manifest, in one transaction."""
        known = set(IMAGES.column_names) - {"extra"}
        with self.writer() as con:
            # a file written before a column joined `images` (member, OSV-5M's typed metadata): NULL there
            absent = {c: "NULL" for c in known if c not in set(pq.read_schema(images_parquet).names)}
            # DuckDB renames columns that differ only in case (Drive_Side -> Drive_Side_1): pair its names with
            # the file's own by position, and key the JSON by the file's names. An empty cell is JSON null,
            # as is a column that one file of a glob lacks. A cell the manifest step could not type (AS_WRITTEN_PREFIX
            # + its column) is keyed by the manifest column's own name.
            described = [row[0] for row in con.execute("DESCRIBE SELECT * FROM read_parquet(?)", [str(images_parquet)]).fetchall()]
            extras = sorted((name, as_read) for name, as_read in zip(pq.read_schema(images_parquet).names, described)
                            if name not in known)
            extra_sql = (
                "to_json(map([" + ", ".join(_sql_string(name.removeprefix(AS_WRITTEN_PREFIX)) for name, _ in extras) + "], ["
                + ", ".join(f"NULLIF(s.{_sql_identifier(as_read)}::VARCHAR, '')" for _, as_read in extras) + "]))"
                if extras else "NULL"
            )
            with transaction(con):
                con.execute(f'DELETE FROM "{IMAGES.name}"')
                con.execute(
                    f'INSERT INTO "{IMAGES.name}" BY NAME SELECT {_select_list(IMAGES, overrides={"extra": extra_sql, **absent})} '
                    "FROM read_parquet(?) s",
                    [str(images_parquet)],
                )
            return con.execute(f'SELECT count(*) FROM "{IMAGES.name}"').fetchone()[0]

    def replace_rejections(self, rejections_parquet: Path) -> int:
        with self.writer() as con:
            with transaction(con):
                con.execute(f'DELETE FROM "{MANIFEST_REJECTIONS.name}"')
                if rejections_parquet.exists():
                    con.execute(
                        f'INSERT INTO "{MANIFEST_REJECTIONS.name}" BY NAME '
                        f"SELECT {_select_list(MANIFEST_REJECTIONS)} FROM read_parquet(?) s",
                        [str(rejections_parquet)],
                    )
            return con.execute(f'SELECT count(*) FROM "{MANIFEST_REJECTIONS.name}"').fetchone()[0]

    def replace_shard(self, con: duckdb.DuckDBPyConnection, shard_key: str, shard_parquet: Path,
                      model_key: str | None = None) -> tuple[int, int]:
        """Swap one shard's rows for the file's, in ONE transaction: readers see old or new, never a gap.
        ``model_key``: the file is that listed model's, and fills the ``*_by_model`` tables (its rows only)."""
        stat = shard_parquet.stat()
        source = "read_parquet(?) s"
        present = {row[0] for row in con.execute("DESCRIBE SELECT * FROM read_parquet(?)", [str(shard_parquet)]).fetchall()}
        # shards written before the same-pass analyses lack their columns: NULL there, no per-layer/head/... rows
        absent = {c: "NULL" for c in ATTENTION_STATISTICS.column_names if c not in present and c != "num_patches"}
        statistics, model = _target(ATTENTION_STATISTICS, model_key)
        failures, _ = _target(IMAGE_FAILURES, model_key)
        loads, _ = _target(SHARD_LOADS, model_key)
        with transaction(con):
            self._delete_shard(con, shard_key, model_key, include_loads=False)
            con.execute(
                f'INSERT INTO "{statistics.name}" BY NAME SELECT '
                f"{_select_list(statistics, overrides={'num_patches': 's.grid_height * s.grid_width', 'country': _MANIFEST_COUNTRY, **absent, **model})} "
                f"FROM {source} {_WITH_MANIFEST} WHERE s.status = 'ok' AND s.shard_key = ?",
                [str(shard_parquet), shard_key],
            )
            for sql in _same_pass_inserts(present, model_key):
                con.execute(sql, [str(shard_parquet), shard_key])
            con.execute(
                f'INSERT INTO "{failures.name}" BY NAME SELECT '
                f"{_select_list(failures, overrides={'reason': 's.failure_reason', **model})} "
                f"FROM {source} WHERE s.status = 'failed' AND s.shard_key = ?",
                [str(shard_parquet), shard_key],
            )
            ok_rows, failed_rows = con.execute(
                f"SELECT count(*) FILTER (WHERE status = 'ok'), count(*) FILTER (WHERE status = 'failed') "
                f"FROM {source} WHERE s.shard_key = ?",
                [str(shard_parquet), shard_key],
            ).fetchone()
            con.execute(f'DELETE FROM "{loads.name}" WHERE shard_key = ?{_model_filter(model_key)}', [shard_key])
            con.execute(
                f'INSERT INTO "{loads.name}" VALUES ({"?, " * (model_key is not None)}?, ?, ?, ?, ?, ?, ?)',
                [*([model_key] if model_key is not None else []), shard_key, str(shard_parquet), stat.st_mtime_ns,
                 stat.st_size, ok_rows, failed_rows, datetime.now(timezone.utc).replace(tzinfo=None)],
            )
        return ok_rows, failed_rows

    @staticmethod
    def _delete_shard(con: duckdb.DuckDBPyConnection, shard_key: str, model_key: str | None,
                      include_loads: bool = True) -> None:
        tables = (ATTENTION_STATISTICS, IMAGE_FAILURES, *SAME_PASS_TABLES, *((SHARD_LOADS,) if include_loads else ()))
        for table in tables:
            target, _ = _target(table, model_key)
            con.execute(f'DELETE FROM "{target.name}" WHERE shard_key = ?{_model_filter(model_key)}', [shard_key])

    def drop_shard(self, con: duckdb.DuckDBPyConnection, shard_key: str, model_key: str | None = None) -> None:
        """Remove a shard that no longer has a Parquet file (e.g. its partition was deleted)."""
        with transaction(con):
            self._delete_shard(con, shard_key, model_key)

    def sync_shards(self, shard_files: Mapping[str, Path], model_key: str | None = None) -> dict[str, list[str]]:
        """Bring the warehouse in line with the shard files: reload changed ones, drop vanished ones.
        ``model_key``: the files are that model's (``models/<model_key>/shards/``) and fill the ``*_by_model``
        tables; only that model's rows are touched."""
        report: dict[str, list[str]] = {"loaded": [], "unchanged": [], "dropped": []}
        loads, _ = _target(SHARD_LOADS, model_key)
        with self.writer() as con:
            held = {
                key: (mtime, size)
                for key, mtime, size in con.execute(
                    f'SELECT shard_key, parquet_mtime_ns, parquet_size FROM "{loads.name}" WHERE true'
                    f"{_model_filter(model_key)}"
                ).fetchall()
            }
            for shard_key in sorted(shard_files):
                path = Path(shard_files[shard_key])
                stat = path.stat()
                if held.get(shard_key) == (stat.st_mtime_ns, stat.st_size):
                    report["unchanged"].append(shard_key)
                    continue
                self.replace_shard(con, shard_key, path, model_key)
                report["loaded"].append(shard_key)
            for shard_key in sorted(set(held) - set(shard_files)):
                self.drop_shard(con, shard_key, model_key)
                report["dropped"].append(shard_key)
        return report

    def drop_model(self, model_key: str) -> None:
        """Remove every row of one model from the ``*_by_model`` tables and ``models`` (its folder was deleted)."""
        with self.writer() as con:
            with transaction(con):
                for table in (*BY_MODEL_TABLES.values(), MODELS):
                    con.execute(f'DELETE FROM "{table.name}" WHERE model_key = ?', [model_key])

    def refresh_models(self, listed: Sequence[tuple[str, str]], present: Sequence[str],
                       excluded: Mapping[str, int], uniform_baselines: Callable[[int], Mapping[str, float]] | None = None
                       ) -> int:
        """Replace ``models`` (``listed``: (key, spec) in ATTN_ASSETS_MODELS order; ``present``: every model key
        with a folder under models/; ``excluded``: stale files left out per key) and
        ``country_aggregates_by_model`` (country_aggregates per model, with the uniform baselines), in one
        transaction."""
        position = {key: i for i, (key, _) in enumerate(listed)}
        specs = dict(listed)
        statistics = ATTENTION_STATISTICS_BY_MODEL.name
        with self.writer() as con:
            with transaction(con):
                con.execute(f'DELETE FROM "{MODELS.name}"')
                for key in [*specs, *sorted(set(present) - set(specs))]:
                    loaded, images = con.execute(
                        f'SELECT count(*), coalesce(sum(ok_rows), 0) FROM "{SHARD_LOADS_BY_MODEL.name}" '
                        "WHERE model_key = ?", [key]).fetchone()
                    failures = con.execute(f'SELECT count(*) FROM "{IMAGE_FAILURES_BY_MODEL.name}" WHERE model_key = ?',
                                           [key]).fetchone()[0]
                    spec = specs.get(key) or con.execute(
                        f'SELECT any_value(model_spec) FROM "{statistics}" WHERE model_key = ?', [key]).fetchone()[0]
                    con.execute(f'INSERT INTO "{MODELS.name}" VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)',
                                [key, spec, position.get(key), position.get(key) == 0, key in specs, loaded,
                                 excluded.get(key, 0), images, failures])
                con.execute(f'DELETE FROM "{COUNTRY_AGGREGATES_BY_MODEL.name}"')
                _insert_country_aggregates(con, COUNTRY_AGGREGATES_BY_MODEL, ATTENTION_STATISTICS_BY_MODEL,
                                           uniform_baselines, by_model=True)
            return con.execute(f'SELECT count(*) FROM "{MODELS.name}"').fetchone()[0]

    def refresh_country_aggregates(self, uniform_baselines: Callable[[int], Mapping[str, float]] | None = None) -> int:
        """The seed's groupby('country').agg(...), in SQL, replacing the table in one transaction.

        `uniform_baselines(num_patches)` gives each metric's value for uniform attention; it fills
        the `<metric>_uniform` columns beside the real values, so "entropy 4.5" can be read.
        """
        with self.writer() as con:
            with transaction(con):
                # dropped and re-created: homes written before the NULL-country row had a primary key on country
                con.execute(f'DROP TABLE IF EXISTS "{COUNTRY_AGGREGATES.name}"')
                con.execute(COUNTRY_AGGREGATES.create_sql())
                _insert_country_aggregates(con, COUNTRY_AGGREGATES, ATTENTION_STATISTICS, uniform_baselines)
            return con.execute(f'SELECT count(*) FROM "{COUNTRY_AGGREGATES.name}"').fetchone()[0]

    def refresh_group_aggregates(self, uniform_baselines: Callable[[int], Mapping[str, float]] | None = None,
                                 dimensions: Sequence[str] = GROUP_DIMENSIONS) -> int:
        """``group_aggregates``: country_aggregates' statistics per value of each images column in ``dimensions``
        (default :data:`~attn_assets.osv5m_columns.GROUP_DIMENSIONS`), one row per (dimension, value), the value
        as text and NULL for the images whose value is unknown. The table is replaced in one transaction, so a
        re-run never duplicates rows. ``uniform_baselines``: as for :meth:`refresh_country_aggregates`.
        """
        unknown = sorted(set(dimensions) - set(GROUP_DIMENSIONS))
        if unknown:
            raise ValueError(f"no grouped aggregates by {unknown}; the dimensions are {list(GROUP_DIMENSIONS)}")
        aggregates = _metric_aggregates_sql()
        joined = f'"{ATTENTION_STATISTICS.name}" s LEFT JOIN "{IMAGES.name}" i USING (image_id)'
        with self.writer() as con:
            with transaction(con):
                con.execute(f'DELETE FROM "{GROUP_AGGREGATES.name}"')
                for dimension in dimensions:
                    value = f"i.{_sql_identifier(dimension)}::VARCHAR"
                    if dimension in NAMES_WITHIN_COUNTRY:  # NULL name -> NULL group (|| propagates NULL)
                        value = f"(coalesce(i.country, '?') || '/' || {value})"
                    con.execute(
                        f'INSERT INTO "{GROUP_AGGREGATES.name}" BY NAME SELECT ? AS dimension, {value} AS "value", '
                        f"count(*) AS image_count, {aggregates} FROM {joined} GROUP BY {value}", [dimension])
                    if uniform_baselines is not None:
                        _fill_uniform_baselines(
                            con, GROUP_AGGREGATES, uniform_baselines,
                            f'SELECT {value} AS "value" FROM {joined} GROUP BY {value} HAVING max(s.num_patches) = ?',
                            'a.dimension = ? AND a."value" IS NOT DISTINCT FROM g."value"', [dimension])
            return con.execute(f'SELECT count(*) FROM "{GROUP_AGGREGATES.name}"').fetchone()[0]

    def refresh_geolocation_accuracy(self) -> int:
        """geolocation_accuracy from geolocation_predictions, in SQL, replacing the table in one transaction:
        one 'overall' row and one row per true country, over the images with true coordinates."""
        accuracy = ", ".join(f'avg((p.error_km < {r})::DOUBLE) AS "accuracy_{r}km"' for r in ACCURACY_THRESHOLDS_KM)
        measures = (
            "count(*) AS images, avg(p.error_km) AS mean_error_km, median(p.error_km) AS median_error_km, "
            f"avg(p.geoscore) AS geoscore, {accuracy}, "
            # no true country: not counted; no predicted country: counted as wrong
            "avg(CASE WHEN p.country IS NULL THEN NULL "
            "ELSE coalesce(p.predicted_country = p.country, false)::DOUBLE END) AS country_accuracy"
        )
        source = (f'FROM "{GEOLOCATION_PREDICTIONS.name}" p LEFT JOIN "{IMAGES.name}" i USING (image_id) '
                  "WHERE p.error_km IS NOT NULL")
        with self.writer() as con:
            with transaction(con):
                con.execute(f'DELETE FROM "{GEOLOCATION_ACCURACY.name}"')
                con.execute(f'INSERT INTO "{GEOLOCATION_ACCURACY.name}" BY NAME '
                            f"SELECT 'overall' AS scope, NULL AS country, NULL AS country_name, {measures} {source}")
                con.execute(f'INSERT INTO "{GEOLOCATION_ACCURACY.name}" BY NAME '
                            "SELECT 'country' AS scope, p.country AS country, "
                            f"CASE WHEN p.country IS NULL THEN ? ELSE any_value(i.country_name) END AS country_name, "
                            f"{measures} {source} GROUP BY p.country", [UNKNOWN_COUNTRY])
            return con.execute(f'SELECT count(*) FROM "{GEOLOCATION_ACCURACY.name}"').fetchone()[0]

    def refresh_geolocation_truth(self, score: Callable[..., tuple[np.ndarray, np.ndarray]]) -> int:
        """Bring geolocation_predictions' true coordinates and country up to date with `images` (a corrected
        manifest changes the truth, not the prediction); ``score(lat, lon, pred_lat, pred_lon)`` gives
        (error_km, geoscore) for the changed rows. Returns how many rows changed."""
        with self.writer() as con:
            changed = con.execute(
                f'SELECT g.image_id, i.latitude, i.longitude, i.country, g.predicted_latitude, g.predicted_longitude '
                f'FROM "{GEOLOCATION_PREDICTIONS.name}" g JOIN "{IMAGES.name}" i USING (image_id) '
                "WHERE g.latitude IS DISTINCT FROM i.latitude OR g.longitude IS DISTINCT FROM i.longitude "
                "OR g.country IS DISTINCT FROM i.country").df()
            if changed.empty:
                return 0
            error, geoscore = score(*(changed[c].to_numpy(np.float64) for c in
                                      ("latitude", "longitude", "predicted_latitude", "predicted_longitude")))
            changed["error_km"], changed["geoscore"] = error, geoscore
            con.register("_truth", changed)
            try:
                con.execute(
                    f'UPDATE "{GEOLOCATION_PREDICTIONS.name}" AS g SET latitude = t.latitude, longitude = t.longitude, '
                    "country = t.country, error_km = CASE WHEN isnan(t.error_km) THEN NULL ELSE t.error_km END, "
                    "geoscore = CASE WHEN isnan(t.geoscore) THEN NULL ELSE t.geoscore END "
                    "FROM _truth t WHERE g.image_id = t.image_id")
            finally:
                con.unregister("_truth")
            return len(changed)

    def replace_analysis_shard(self, table: Table, shard_key: str, parquet: Path | None,
                               overrides: Mapping[str, str] | None = None) -> int:
        """Swap one shard's rows of an own-pass analysis table (rollout, ablation) for the file's, in one
        transaction; ``parquet`` None removes the shard's rows."""
        with self.writer() as con:
            with transaction(con):
                con.execute(f'DELETE FROM "{table.name}" WHERE shard_key = ?', [shard_key])
                if parquet is not None:
                    overrides = {**({"country": _MANIFEST_COUNTRY} if "country" in table.column_names else {}),
                                 **(overrides or {})}
                    con.execute(
                        f'INSERT INTO "{table.name}" BY NAME SELECT {_select_list(table, overrides=overrides)} '
                        f"FROM read_parquet(?) s {_WITH_MANIFEST} WHERE s.shard_key = ?",
                        [str(parquet), shard_key],
                    )
            return con.execute(f'SELECT count(*) FROM "{table.name}" WHERE shard_key = ?', [shard_key]).fetchone()[0]

    def replace_shard_row_sets(self, table: Table, shard_key: str, parquet: Path | None,
                               row_sets: Sequence[tuple[Mapping[str, str], str]]) -> int:
        """Like ``replace_analysis_shard`` for a long table built from a wide file: in one transaction, delete the
        shard's rows, then per ``(overrides, condition)`` insert the file's rows meeting the SQL ``condition`` (over
        alias ``s``) with ``overrides`` as column expressions (e.g. one row per image for each relevance target)."""
        with self.writer() as con:
            with transaction(con):
                con.execute(f'DELETE FROM "{table.name}" WHERE shard_key = ?', [shard_key])
                if parquet is not None:
                    for overrides, condition in row_sets:
                        overrides = {**({"country": _MANIFEST_COUNTRY} if "country" in table.column_names else {}),
                                     **overrides}
                        con.execute(
                            f'INSERT INTO "{table.name}" BY NAME SELECT {_select_list(table, overrides=overrides)} '
                            f"FROM read_parquet(?) s {_WITH_MANIFEST} WHERE s.shard_key = ? AND ({condition})",
                            [str(parquet), shard_key],
                        )
            return con.execute(f'SELECT count(*) FROM "{table.name}" WHERE shard_key = ?', [shard_key]).fetchone()[0]

    def drop_other_shards(self, table: Table, keep: Sequence[str]) -> list[str]:
        """Delete the rows of every shard not in ``keep`` from a per-shard table (e.g. rollout_statistics after a
        shard was dropped or its file left out); returns the shards removed."""
        with self.writer() as con:
            held = [row[0] for row in con.execute(f'SELECT DISTINCT shard_key FROM "{table.name}"').fetchall()]
            gone = sorted(set(held) - set(keep))
            if gone:
                con.execute(f'DELETE FROM "{table.name}" WHERE shard_key IN (SELECT unnest(?))', [gone])
            return gone

    def conform_to_manifest(self, tables: Sequence[Table] | None = None) -> dict[str, dict[str, int]]:
        """Make the per-image tables describe exactly the current manifest (``images``), in one transaction:
        rows of images that left it (or sit in another shard now) are deleted, and countries are taken from
        it (a corrected country needs no recompute). Returns {table: {"removed": n, "country_updated": n}}."""
        tables = list(tables) if tables is not None else list(per_image_tables())
        report: dict[str, dict[str, int]] = {}
        with self.writer() as con:
            with transaction(con):
                for table in tables:
                    removed = con.execute(
                        f'DELETE FROM "{table.name}" t WHERE NOT EXISTS (SELECT 1 FROM "{IMAGES.name}" i '
                        "WHERE i.image_id = t.image_id AND i.shard_key = t.shard_key)").fetchone()[0]
                    updated = 0
                    if "country" in table.column_names:
                        updated = con.execute(
                            f'UPDATE "{table.name}" AS t SET country = i.country FROM "{IMAGES.name}" i '
                            "WHERE i.image_id = t.image_id AND t.country IS DISTINCT FROM i.country").fetchone()[0]
                    report[table.name] = {"removed": int(removed), "country_updated": int(updated)}
        return report

    def replace_table(self, table: Table, frame: pd.DataFrame) -> int:
        """Replace a whole small table (e.g. metric_baselines) with ``frame``, in one transaction, by name."""
        return self.replace_tables({table: frame})[table.name]

    def replace_tables(self, frames: Mapping[Table, pd.DataFrame]) -> dict[str, int]:
        """Replace whole tables with their frames (columns matched by name), all in ONE transaction: either every
        table holds its new rows or, on an error, every table keeps its old ones. Returns {table: rows}."""
        with self.writer() as con:
            with transaction(con):
                for table, frame in frames.items():
                    con.execute(f'DELETE FROM "{table.name}"')
                    if len(frame):
                        con.register("_replacement", frame)
                        con.execute(f'INSERT INTO "{table.name}" BY NAME SELECT {_select_list(table)} '
                                    "FROM _replacement s")
                        con.unregister("_replacement")
            return {table.name: con.execute(f'SELECT count(*) FROM "{table.name}"').fetchone()[0] for table in frames}

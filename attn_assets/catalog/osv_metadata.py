"""Parse OpenStreetView-5M's metadata columns into typed values (pure pandas).

Which columns, their types and the rule for bad values: :mod:`attn_assets.osv5m_columns`. A column the
manifest lacks is all NULL. A cell that cannot be read as its column's type is NULL in the typed column and
never costs its row: the reader keeps the cell's text in ``images.extra`` under the manifest's column name and
reports one :attr:`ParsedColumn.note` per column.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from attn_assets.osv5m_columns import OsvColumn

#: Cells read as NULL in every typed column, compared without case: OSV-5M leaves cells empty, a Parquet float
#: NaN reads as 'nan', and spreadsheets and pandas write NA, N/A, null or None for a missing value.
MISSING_TEXT = frozenset({"", "nan", "na", "n/a", "null", "none"})

#: drive_side as written (lower case) -> the word stored. OSV-5M writes 1 for traffic on the left, so a boolean
#: column (Parquet ``true``/``false``) reads the same way: true = left.
DRIVE_SIDES = {"1": "left", "1.0": "left", "true": "left", "left": "left", "l": "left",
               "0": "right", "0.0": "right", "false": "right", "right": "right", "r": "right"}

#: Capture times outside [PLAUSIBLE_SINCE, now + PLAUSIBLE_AHEAD] are NULL: Mapillary started in 2013 and
#: OSV-5M's photos are from 2014 on; 1990 leaves room for older archives, a day ahead for clocks and zones.
PLAUSIBLE_SINCE = datetime(1990, 1, 1)
PLAUSIBLE_AHEAD = timedelta(days=1)

_NOT_WHAT = {
    "code": "whole numbers",
    "number": "decimal numbers",
    "drive_side": "drive sides (1 or true or L or left for traffic on the left, 0 or false or R or right)",
    "time": "plausible capture times (milliseconds since 1970-01-01 UTC or ISO 8601, from 1990-01-01 to tomorrow)",
}

_MS_PER_SECOND = 1000


@dataclass(frozen=True)
class ParsedColumn:
    """One column's typed values (Int32 / float64 / str / datetime64[us] by kind, NULL where missing or bad),
    which cells were bad (bool per row) and the one-line summary of them (None when none were)."""

    values: pd.Series
    bad: np.ndarray
    note: str | None


def parse_column(column: OsvColumn, raw: pd.Series, *, now: datetime | None = None) -> ParsedColumn:
    """Parse ``raw`` (the cells as text) as ``column.kind``; ``now`` (naive UTC, default the clock) bounds
    plausible capture times."""
    text = raw.astype("str").str.strip()
    missing = text.str.lower().isin(MISSING_TEXT).to_numpy()
    seconds = np.zeros(len(text), dtype=bool)
    if column.kind == "text":
        values = text.where(~missing, None).astype("str")
        bad = np.zeros(len(text), dtype=bool)
    elif column.kind == "drive_side":
        values = text.str.lower().map(DRIVE_SIDES).astype("str")
        bad = ~missing & values.isna().to_numpy()
    elif column.kind in ("code", "number"):
        numbers = _numbers(text, missing)
        bad = ~missing & (numbers.isna() | ~np.isfinite(numbers)).to_numpy()
        if column.kind == "code":
            bad |= ~missing & ~bad & (numbers != np.round(numbers)).to_numpy()
            bad |= ~missing & ~bad & (numbers.abs() >= 2**31).to_numpy()
            values = numbers.where(~bad & ~missing).astype("Int32")
        else:
            values = numbers.where(~bad & ~missing)
    elif column.kind == "time":
        values, bad, seconds = _parse_times(text, missing, now or datetime.now(timezone.utc).replace(tzinfo=None))
    else:
        raise ValueError(f"unknown OSV-5M column kind {column.kind!r} for {column.name}")
    return ParsedColumn(values, bad, _note(column, text, bad, seconds))


def _note(column: OsvColumn, text: pd.Series, bad: np.ndarray, seconds: np.ndarray) -> str | None:
    if not bad.any():
        return None
    note = (f"{int(bad.sum())} cells of {column.source} were not {_NOT_WHAT[column.kind]} (e.g. "
            f"'{text[bad].iloc[0]}'); kept as text in extra->>'{column.source}'")
    if seconds.any():
        example = text[seconds].iloc[0]
        when = pd.Timestamp(int(float(example)), unit="s").date()
        note += (f". {int(seconds.sum())} of them look like Unix seconds (e.g. '{example}' = {when}): "
                 f"{column.source} is milliseconds since 1970-01-01 UTC; multiply those by 1000")
    return note


def _numbers(text: pd.Series, missing: np.ndarray) -> pd.Series:
    """``text`` as float64, NaN where missing or not a number: Arrow's cast (about 14x faster than pandas' on
    this machine), and pandas' to_numeric for the cells Arrow refuses when there are any."""
    cells = pc.if_else(pa.array(missing), pa.scalar(None, pa.string()), pa.array(text, type=pa.string(), from_pandas=True))
    try:
        values = pc.cast(cells, pa.float64()).to_numpy(zero_copy_only=False)
    except pa.ArrowInvalid:
        values = pd.to_numeric(text.where(~missing, None), errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
    return pd.Series(values, index=text.index, dtype="float64")


def _parse_times(text: pd.Series, missing: np.ndarray, now: datetime) -> tuple[pd.Series, np.ndarray, np.ndarray]:
    """Milliseconds since the epoch (digits, optionally '.0') or ISO 8601 text -> naive UTC datetime64[us],
    NaT outside the plausible window. Returns (values, bad, bad cells that are plausible as Unix seconds)."""
    since_ms = (PLAUSIBLE_SINCE - datetime(1970, 1, 1)) // timedelta(milliseconds=1)
    until_ms = (now + PLAUSIBLE_AHEAD - datetime(1970, 1, 1)) // timedelta(milliseconds=1)
    millis = text.str.fullmatch(r"[0-9]{1,15}(?:\.0*)?").fillna(False).to_numpy() & ~missing
    values = pd.Series(pd.NaT, index=text.index, dtype="datetime64[us]")
    bad = ~missing & ~millis
    seconds = np.zeros(len(text), dtype=bool)
    if millis.any():
        ms = text[millis].str.split(".").str[0].astype("int64").to_numpy()
        plausible = (ms >= since_ms) & (ms <= until_ms)
        at = np.flatnonzero(millis)
        values.iloc[at[plausible]] = pd.to_datetime(ms[plausible], unit="ms").astype("datetime64[us]")
        bad[at[~plausible]] = True
        seconds[at[~plausible & (ms * _MS_PER_SECOND >= since_ms) & (ms * _MS_PER_SECOND <= until_ms)]] = True
    iso = np.flatnonzero(~missing & ~millis)
    if len(iso):
        parsed = _iso_times(text.iloc[iso])
        low, high = pd.Timestamp(PLAUSIBLE_SINCE), pd.Timestamp(now + PLAUSIBLE_AHEAD)
        ok = parsed.notna().to_numpy() & (parsed >= low).to_numpy() & (parsed <= high).to_numpy()
        values.iloc[iso[ok]] = parsed[ok].astype("datetime64[us]").to_numpy()
        bad[iso[ok]] = False
    return values, bad, seconds


def _iso_times(text: pd.Series) -> pd.Series:
    """ISO 8601 text -> naive UTC datetime64[us] (NaT where unreadable); a date outside what one pandas call
    can hold (year 0, 10000, ...) is parsed cell by cell and becomes NaT rather than an error."""
    try:
        parsed = pd.to_datetime(text, format="ISO8601", errors="coerce", utc=True)
        return parsed.dt.tz_localize(None).astype("datetime64[us]")
    except (OverflowError, ValueError, pd.errors.OutOfBoundsDatetime):
        return pd.Series([_iso_time(t) for t in text], index=text.index, dtype="datetime64[us]")


def _iso_time(text: str) -> pd.Timestamp:
    try:
        stamp = pd.to_datetime(text, format="ISO8601", utc=True)
        return stamp.tz_localize(None) if not pd.isna(stamp) else pd.NaT
    except (OverflowError, ValueError, pd.errors.OutOfBoundsDatetime):
        return pd.NaT

"""Parse OpenStreetView-5M's metadata columns into typed values (pure pandas).

Which columns, their types and the rule for bad values: :mod:`attn_assets.osv5m_columns`. A column the
manifest lacks is all NULL; a bad cell is reported per row for the manifest reader to reject.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from attn_assets.osv5m_columns import OsvColumn

#: Cells read as NULL in every typed column (OSV-5M leaves cells empty; a Parquet float NaN reads as 'nan').
MISSING_TEXT = frozenset({"", "nan", "NaN", "NAN"})

_DRIVE_SIDES = {"1": "left", "1.0": "left", "left": "left", "0": "right", "0.0": "right", "right": "right"}

_WHAT_TO_WRITE = {
    "code": "a whole number such as 15",
    "number": "a decimal number such as 4.66",
    "drive_side": "1 or 'left' (traffic on the left), 0 or 'right'",
    "time": "milliseconds since 1970-01-01 UTC (as Mapillary writes captured_at) or an ISO 8601 time",
}


def parse_column(column: OsvColumn, raw: pd.Series) -> tuple[pd.Series, pd.Series]:
    """The typed values of one column and, per row, the reason its cell is bad (None where it is not).

    ``raw``: the cells as text. Returns (values: Int32 / float64 / str / datetime64[us] by ``column.kind``,
    NULL where missing or bad; reasons: object Series aligned with ``raw``).
    """
    text = raw.astype("str").str.strip()
    missing = text.isin(MISSING_TEXT).to_numpy()
    if column.kind == "text":
        values = text.where(~missing, None).astype("str")
        bad = np.zeros(len(text), dtype=bool)
    elif column.kind == "drive_side":
        values = text.str.lower().map(_DRIVE_SIDES).astype("str")
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
        values, bad = _parse_times(text, missing)
    else:
        raise ValueError(f"unknown OSV-5M column kind {column.kind!r} for {column.name}")
    reasons = pd.Series(None, index=raw.index, dtype=object)
    if bad.any():
        reasons[bad] = (f"{column.source} '" + text[bad] + f"' is not {_WHAT_TO_WRITE[column.kind]}; correct the "
                        "cell or leave it empty (empty cells are NULL)").to_numpy()
    return values, reasons


def _numbers(text: pd.Series, missing: np.ndarray) -> pd.Series:
    """``text`` as float64, NaN where missing or not a number: Arrow's cast (about 14x faster than pandas' on
    this machine), and pandas' to_numeric for the cells Arrow refuses when there are any."""
    cells = pc.if_else(pa.array(missing), pa.scalar(None, pa.string()), pa.array(text, type=pa.string(), from_pandas=True))
    try:
        values = pc.cast(cells, pa.float64()).to_numpy(zero_copy_only=False)
    except pa.ArrowInvalid:
        values = pd.to_numeric(text.where(~missing, None), errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
    return pd.Series(values, index=text.index, dtype="float64")


def _parse_times(text: pd.Series, missing: np.ndarray) -> tuple[pd.Series, np.ndarray]:
    """Milliseconds since the epoch (digits, optionally '.0') or ISO 8601 text -> naive UTC datetime64[us]."""
    millis = text.str.fullmatch(r"[0-9]{1,15}(?:\.0*)?").fillna(False).to_numpy() & ~missing
    values = pd.Series(pd.NaT, index=text.index, dtype="datetime64[us]")
    if millis.any():
        ms = _numbers(text[millis], np.zeros(int(millis.sum()), dtype=bool)).astype("int64")
        values[millis] = pd.to_datetime(ms, unit="ms").astype("datetime64[us]")
    iso = ~missing & ~millis
    bad = np.zeros(len(text), dtype=bool)
    if iso.any():
        parsed = pd.to_datetime(text[iso], format="ISO8601", errors="coerce", utc=True)
        bad[iso] = parsed.isna().to_numpy()
        good = np.flatnonzero(iso)[~bad[iso]]
        values.iloc[good] = parsed[~bad[iso]].dt.tz_localize(None).astype("datetime64[us]").to_numpy()
    return values, bad

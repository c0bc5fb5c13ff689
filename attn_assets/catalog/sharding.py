"""Stable assignment of images to shards (one Dagster dynamic partition per shard).

Rules:
* an image keeps its shard forever once assigned;
* new images only ever go to NEW shards, so an existing shard's content never changes
  (its statistics never need recomputing because someone appended to the manifest);
* new shards are filled in manifest order, ``shard_size`` images each, numbered after the
  highest shard ever assigned;
* images that left the manifest are reported, nothing is renumbered.

Persist every assignment ever made (including those of removed images, see
``ShardPlan.all_assignments``), so shard numbers are never reused.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import pandas as pd

SHARD_KEY_PREFIX = "shard-"
SHARD_KEY_WIDTH = 5
#: Shard keys look like ``shard-00042`` (more digits once past 99999; still unique).
SHARD_KEY_PATTERN = re.compile(r"^shard-(\d{5,})$")
ASSIGNMENT_COLUMNS: tuple[str, ...] = ("image_id", "shard_key")


def shard_key(index: int) -> str:
    """``shard_key(3) == 'shard-00003'``."""
    if index < 0:
        raise ValueError(f"shard index must be >= 0, got {index}")
    return f"{SHARD_KEY_PREFIX}{int(index):0{SHARD_KEY_WIDTH}d}"


def shard_index(key: str) -> int:
    """Inverse of :func:`shard_key`; ValueError for anything else."""
    m = SHARD_KEY_PATTERN.match(str(key))
    if not m:
        raise ValueError(f"{key!r} is not a shard key like {shard_key(0)!r}")
    return int(m.group(1))


def shard_sort_key(key: str) -> tuple[int, str]:
    """Sort shard keys numerically (safe past shard-99999)."""
    m = SHARD_KEY_PATTERN.match(str(key))
    return (int(m.group(1)), key) if m else (-1, str(key))


@dataclass
class ShardPlan:
    assignments: pd.DataFrame  # image_id, shard_key for every image of the manifest, manifest order
    removed: pd.DataFrame  # image_id, shard_key of previously assigned images no longer in the manifest
    new_shard_keys: list[str]  # shards created by this call, in order
    all_assignments: pd.DataFrame  # existing + new: what to persist for the next run

    @property
    def shard_keys(self) -> list[str]:
        """Every shard holding at least one current manifest image, sorted."""
        return sorted(self.assignments["shard_key"].unique().tolist(), key=shard_sort_key)


def _isin(values: pd.Series, pool: pd.Series) -> np.ndarray:
    """Fast ``values.isin(pool)`` for large string pools (pandas' str isin is per-element)."""
    if len(pool) == 0:
        return np.zeros(len(values), dtype=bool)
    index = pd.Index(pd.unique(pd.Series(pool, dtype="str")), dtype="str")
    return index.get_indexer(pd.Series(values, dtype="str")) >= 0


def _empty() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series([], dtype="str") for c in ASSIGNMENT_COLUMNS})


def _validate_existing(existing: pd.DataFrame | None) -> pd.DataFrame:
    if existing is None or len(existing) == 0:
        return _empty()
    missing = [c for c in ASSIGNMENT_COLUMNS if c not in existing.columns]
    if missing:
        raise ValueError(f"existing shard assignments lack columns {missing}")
    ex = existing[list(ASSIGNMENT_COLUMNS)].astype("str").reset_index(drop=True)
    bad = ~ex["shard_key"].str.fullmatch(SHARD_KEY_PATTERN.pattern[1:-1])
    if bad.any():
        raise ValueError(
            f"existing shard assignments hold keys that are not like {shard_key(0)!r}: "
            f"{ex.loc[bad, 'shard_key'].unique()[:5].tolist()}"
        )
    dup = ex["image_id"].duplicated(keep=False)
    if dup.any():
        conflicting = ex[dup].drop_duplicates()
        if conflicting["image_id"].duplicated().any():
            ids = conflicting.loc[conflicting["image_id"].duplicated(), "image_id"].unique()[:5].tolist()
            raise ValueError(f"existing shard assignments give images {ids} more than one shard")
        ex = ex.drop_duplicates("image_id").reset_index(drop=True)
    return ex


def plan_shards(image_ids: pd.Series, existing: pd.DataFrame | None = None, shard_size: int = 1000) -> ShardPlan:
    """Assign every id of ``image_ids`` (manifest order, unique) a stable shard."""
    if int(shard_size) < 1:
        raise ValueError(f"shard_size must be at least 1, got {shard_size}")
    shard_size = int(shard_size)
    ids = pd.Series(image_ids, dtype="str").reset_index(drop=True)
    if ids.isna().any():
        raise ValueError("image ids must not be missing")
    if ids.duplicated().any():
        raise ValueError(f"image ids must be unique; duplicated: {ids[ids.duplicated()].unique()[:5].tolist()}")
    ex = _validate_existing(existing)

    pos = pd.Index(ex["image_id"].to_numpy(), dtype="str").get_indexer(ids) if len(ex) else np.full(len(ids), -1)
    known = pos >= 0
    keys = np.empty(len(ids), dtype=object)
    keys[known] = ex["shard_key"].to_numpy(dtype=object)[pos[known]]

    start = max((shard_index(k) for k in ex["shard_key"].unique()), default=-1) + 1
    n_new = int((~known).sum())
    new_idx = start + np.arange(n_new) // shard_size
    new_keys = [shard_key(i) for i in range(start, start + (n_new + shard_size - 1) // shard_size)]
    if n_new:
        key_of = np.asarray(new_keys, dtype=object)
        keys[~known] = key_of[new_idx - start]
    assignments = pd.DataFrame({"image_id": ids, "shard_key": pd.Series(keys, dtype="str")})

    removed = ex[~_isin(ex["image_id"], ids)].reset_index(drop=True)
    new_rows = assignments[~known]
    all_assignments = pd.concat([ex, new_rows], ignore_index=True) if len(ex) else new_rows.reset_index(drop=True)
    return ShardPlan(
        assignments=assignments,
        removed=removed,
        new_shard_keys=new_keys,
        all_assignments=all_assignments.astype("str"),
    )


def assign_shards(image_ids: pd.Series, existing: pd.DataFrame | None = None, shard_size: int = 1000) -> pd.DataFrame:
    """``image_id, shard_key`` for every image of the manifest, in manifest order.

    See :func:`plan_shards` for the removed images and the rows to persist.
    """
    return plan_shards(image_ids, existing, shard_size).assignments


def removed_images(image_ids: pd.Series, existing: pd.DataFrame | None) -> pd.DataFrame:
    """Previously assigned images (``image_id, shard_key``) that are not in ``image_ids``."""
    ex = _validate_existing(existing)
    return ex[~_isin(ex["image_id"], pd.Series(image_ids, dtype="str"))].reset_index(drop=True)

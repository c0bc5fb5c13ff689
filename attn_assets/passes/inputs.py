"""A shard's inputs as the passes read them: its rows of the validated manifest (``manifest/images.parquet``).

An image inside a zip archive has the archive as ``abs_path`` and its name in the archive as ``member``
(the manifest step listed every archive once; the passes never list an archive again)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pandas as pd
import pyarrow.parquet as pq

from attn_assets.core.loader import ImageRecord
from attn_assets.passes.recipe import image_set_fingerprint
from attn_assets.storage.layout import HomeLayout

ROW_COLUMNS = ("image_id", "path", "abs_path", "member", "country", "shard_key")


def shard_rows(layout: HomeLayout, shard_key: str, columns: Sequence[str] = ROW_COLUMNS) -> pd.DataFrame:
    """The manifest rows of one shard, in manifest order. ``member`` is NULL in a file written before the
    manifest held zip members (every image there is a file)."""
    present = set(pq.read_schema(layout.images_parquet).names)
    table = pq.read_table(layout.images_parquet, columns=[c for c in columns if c in present],
                          filters=[("shard_key", "=", shard_key)])
    rows = table.to_pandas()
    if "member" in columns and "member" not in present:
        rows["member"] = pd.Series(None, index=rows.index, dtype="str")
    return rows


def image_records(rows: pd.DataFrame) -> list[ImageRecord]:
    """One ImageRecord per row of :func:`shard_rows`: the file at ``abs_path``, or ``member`` of that zip archive."""
    members = rows["member"] if "member" in rows else pd.Series(None, index=rows.index, dtype="str")
    return [ImageRecord(image_id=i, path=p, member=None if pd.isna(m) else m)
            for i, p, m in zip(rows["image_id"], rows["abs_path"], members)]


def shard_images(layout: HomeLayout, shard_key: str, keep: Callable[[str], bool] | None = None
                 ) -> tuple[list[ImageRecord], dict[str, str], str]:
    """The shard's (kept) images, their countries, and the image set of the WHOLE shard (what the file records)."""
    rows = shard_rows(layout, shard_key)
    image_set = image_set_fingerprint(rows["image_id"], rows["path"])
    if keep is not None:
        rows = rows[[keep(i) for i in rows["image_id"]]]
    country = dict(zip(rows["image_id"], rows["country"]))
    return image_records(rows), country, image_set

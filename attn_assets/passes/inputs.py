"""A shard's inputs as the passes read them: its rows of the validated manifest (``manifest/images.parquet``)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pandas as pd
import pyarrow.parquet as pq

from attn_assets.core.loader import ImageRecord
from attn_assets.passes.recipe import image_set_fingerprint
from attn_assets.storage.layout import HomeLayout

ROW_COLUMNS = ("image_id", "path", "abs_path", "country", "shard_key")


def shard_rows(layout: HomeLayout, shard_key: str, columns: Sequence[str] = ROW_COLUMNS) -> pd.DataFrame:
    """The manifest rows of one shard, in manifest order."""
    table = pq.read_table(layout.images_parquet, columns=list(columns), filters=[("shard_key", "=", shard_key)])
    return table.to_pandas()


def shard_images(layout: HomeLayout, shard_key: str, keep: Callable[[str], bool] | None = None
                 ) -> tuple[list[ImageRecord], dict[str, str], str]:
    """The shard's (kept) images, their countries, and the image set of the WHOLE shard (what the file records)."""
    rows = shard_rows(layout, shard_key)
    image_set = image_set_fingerprint(rows["image_id"], rows["path"])
    if keep is not None:
        rows = rows[[keep(i) for i in rows["image_id"]]]
    country = dict(zip(rows["image_id"], rows["country"]))
    return [ImageRecord(image_id=i, path=p) for i, p in zip(rows["image_id"], rows["abs_path"])], country, image_set

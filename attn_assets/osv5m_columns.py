"""OpenStreetView-5M's metadata columns that become typed columns of ``images`` (no torch, pandas, or Dagster).

The one list of them: the manifest reader (:mod:`attn_assets.catalog.osv_metadata`) parses these columns by
``kind``, the warehouse schema (:mod:`attn_assets.storage.schema`) declares them from it, and grouped
aggregates run over :data:`GROUP_DIMENSIONS`. Sources: the OSV-5M CSV header and the feature types of the
dataset's loader (huggingface.co/datasets/osv5m/osv5m, ``osv5m.py``: bins, codes and distances as float32,
quadtree cells as int32, the rest as strings); the codes are OSV-5M's own, stored as written.

Every manifest is read this way, OSV-5M's or a plain list that happens to have a column of one of these names.
Cells ``NA``, ``N/A``, ``null``, ``None`` and ``nan`` (any case) and empty cells are NULL. A cell that is not
of its column's kind is NULL too and never costs its image: its text is kept in ``images.extra`` under the
manifest's column name (``extra->>'climate'``), and the manifest step reports one line per column, e.g.
"2 cells of climate were not whole numbers (e.g. 'Cfb'); kept as text in extra->>'climate'". Kinds:

* ``code``: a whole number (``15`` or ``15.0``), stored as INTEGER.
* ``number``: a decimal number, stored as DOUBLE.
* ``text``: any text, stored as VARCHAR.
* ``drive_side``: OSV-5M writes 1 where traffic drives on the left and 0 on the right (its row for the Chatham
  Islands, New Zealand, has 1); so a boolean column's ``true`` is left and ``false`` right, and ``left`` / ``L``
  / ``right`` / ``R`` (any case) are accepted too. Stored as the word, VARCHAR.
* ``time``: Mapillary's ``captured_at``, milliseconds since 1970-01-01 UTC, or an ISO 8601 date or time;
  stored as TIMESTAMP (UTC, no zone). Only 1990-01-01 to tomorrow is plausible; other times are bad cells, and
  a number that is plausible as Unix seconds (``1500000000``) is reported as such (the unit is milliseconds).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class OsvColumn:
    """One typed OSV-5M column: ``source`` as the manifest names it, ``name`` as ``images`` does."""

    name: str
    source: str
    kind: str
    sql_type: str
    description: str


_QUADTREE_SIZES = (500, 1000, 2500, 5000, 12500, 25000, 50000)

OSV_METADATA_COLUMNS: tuple[OsvColumn, ...] = (
    OsvColumn("sequence", "sequence", "text", "VARCHAR", "Mapillary sequence id of the photo"),
    OsvColumn("captured_at", "captured_at", "time", "TIMESTAMP", "capture time (UTC), from Mapillary's milliseconds"),
    OsvColumn("lon_bin", "lon_bin", "code", "INTEGER", "OSV-5M longitude bin of the photo"),
    OsvColumn("lat_bin", "lat_bin", "code", "INTEGER", "OSV-5M latitude bin of the photo"),
    OsvColumn("cell", "cell", "text", "VARCHAR", "OSV-5M grid cell, '(lon_bin, lat_bin)'"),
    OsvColumn("region", "region", "text", "VARCHAR", "region name (first administrative level)"),
    OsvColumn("sub_region", "sub-region", "text", "VARCHAR", "sub-region name (OSV-5M's 'sub-region')"),
    OsvColumn("city", "city", "text", "VARCHAR", "city name"),
    OsvColumn("land_cover", "land_cover", "code", "INTEGER", "OSV-5M land cover class code"),
    OsvColumn("road_index", "road_index", "number", "DOUBLE", "OSV-5M road index"),
    OsvColumn("drive_side", "drive_side", "drive_side", "VARCHAR",
              "'left' or 'right': the side traffic drives on (OSV-5M 1 = left, 0 = right)"),
    OsvColumn("climate", "climate", "code", "INTEGER", "OSV-5M climate class code (Koppen-Geiger class number)"),
    OsvColumn("soil", "soil", "code", "INTEGER", "OSV-5M soil class code"),
    OsvColumn("dist_sea", "dist_sea", "number", "DOUBLE", "OSV-5M distance to the sea, as the dataset writes it"),
    *(OsvColumn(f"quadtree_10_{n}", f"quadtree_10_{n}", "code", "INTEGER",
                f"OSV-5M quadtree cell index (its column quadtree_10_{n})") for n in _QUADTREE_SIZES),
)

#: The columns ``group_aggregates`` groups by, one ``dimension`` each (categorical columns only; continuous
#: ones such as road_index and dist_sea would need bins). Place names are grouped within their country
#: (:data:`NAMES_WITHIN_COUNTRY`): a 'Springfield' of two countries is two groups.
GROUP_DIMENSIONS: tuple[str, ...] = ("drive_side", "climate", "land_cover", "soil", "region", "sub_region", "city")
#: Dimensions whose group value is ``'<country>/<name>'`` (e.g. 'FR/Bretagne'; NULL when the name is unknown).
NAMES_WITHIN_COUNTRY: frozenset[str] = frozenset({"region", "sub_region", "city"})

OSV_METADATA_NAMES: tuple[str, ...] = tuple(c.name for c in OSV_METADATA_COLUMNS)

#: A column of the manifest's ``images`` file named ``AS_WRITTEN_PREFIX + <manifest column>`` holds the text of
#: that column's cells that could not be typed; the warehouse keeps it in ``images.extra`` under the column's own
#: name.
AS_WRITTEN_PREFIX = "as_written:"

"""image_manifest's comparison of the new manifest with the previous one (kinds of change, counted)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from attn_assets.defs.manifest.assets import diff_manifest


def _frame(rows):
    return pd.DataFrame(rows, columns=["image_id", "path", "country", "latitude", "longitude", "drive_side",
                                       "source_row", "shard_key"])


PREVIOUS = _frame([
    ("a", "a.jpg", "FR", 48.8, 2.3, "right", 2, "shard-00000"),
    ("b", "b.jpg", "NA", -22.5, 17.0, "left", 3, "shard-00000"),
    ("c", "c.jpg", None, np.nan, np.nan, "left", 4, "shard-00001"),
    ("d", "d.jpg", "JP", 35.6, 139.6, "left", 5, "shard-00001"),
])


def test_first_manifest_is_all_added():
    diff = diff_manifest(None, PREVIOUS)
    assert diff.added == ["a", "b", "c", "d"] and diff.counts()["removed"] == 0


def test_each_kind_of_change_is_counted_once_per_row():
    current = _frame([
        ("d", "d.jpg", "JP", 35.6, 139.6, "left", 2, "shard-00001"),  # reordered only: no change
        ("a", "moved/a.jpg", "FR", 48.8, 2.3, "right", 3, "shard-00000"),  # path
        ("c", "c.jpg", "DE", np.nan, np.nan, "left", 4, "shard-00001"),  # country (from none)
        ("e", "e.jpg", "US", 40.7, -74.0, "right", 5, "shard-00002"),  # added
    ])
    diff = diff_manifest(PREVIOUS, current)
    assert diff.counts() == {"added": 1, "removed": 1, "path changed": 1, "country changed": 1,
                             "coordinates changed": 0, "other columns changed": 0}
    assert (diff.added, diff.removed, diff.path, diff.country) == (["e"], ["b"], ["a"], ["c"])
    changes = diff.changes.set_index("image_id")
    assert changes.loc["b", "change"] == "removed" and changes.loc["b", "before"] == "b.jpg"
    assert (changes.loc["a", "before"], changes.loc["a", "after"]) == ("a.jpg", "moved/a.jpg")
    assert "Namibia" not in diff.summary() and diff.summary().startswith("1 added, 1 removed")


def test_coordinates_and_other_columns():
    current = PREVIOUS.copy()
    current.loc[current.image_id == "a", "latitude"] = 48.9
    current.loc[current.image_id == "d", "drive_side"] = "right"
    current.loc[current.image_id == "c", "latitude"] = np.nan  # NaN -> NaN is no change
    current["new_column"] = ["", "", "x", ""]  # a column that appears: a change where it is not empty
    diff = diff_manifest(PREVIOUS, current)
    assert diff.coordinates == ["a"]
    assert sorted(diff.other) == ["c", "d"]
    other = diff.changes[diff.changes.change == "other columns"].set_index("image_id")["before"].to_dict()
    assert other == {"c": "new_column", "d": "drive_side"}


def test_namibia_and_empty_countries_compare_as_text():
    current = PREVIOUS.copy()
    current["country"] = current["country"].astype("string")  # pandas 3 str / NA
    assert diff_manifest(PREVIOUS, current).counts()["country changed"] == 0

"""attn_assets.catalog.sharding: stable shard assignment."""

from __future__ import annotations

import pandas as pd
import pytest

from attn_assets.catalog.sharding import (
    SHARD_KEY_PATTERN,
    assign_shards,
    plan_shards,
    removed_images,
    shard_index,
    shard_key,
)


def ids(*xs):
    return pd.Series([str(x) for x in xs])


def test_shard_key_format():
    assert shard_key(0) == "shard-00000" and shard_key(42) == "shard-00042"
    assert SHARD_KEY_PATTERN.match(shard_key(7)) and not SHARD_KEY_PATTERN.match("shard-7")
    assert shard_index("shard-00042") == 42
    assert sorted([shard_key(10), shard_key(2)]) == [shard_key(2), shard_key(10)]
    with pytest.raises(ValueError):
        shard_index("foo")


def test_first_assignment_in_manifest_order_and_size():
    a = assign_shards(ids(*range(7)), None, 3)
    assert list(a.columns) == ["image_id", "shard_key"]
    assert a["shard_key"].tolist() == ["shard-00000"] * 3 + ["shard-00001"] * 3 + ["shard-00002"]
    assert a["image_id"].tolist() == [str(i) for i in range(7)]


def test_rerun_is_stable():
    first = assign_shards(ids(*range(10)), None, 4)
    again = assign_shards(ids(*range(10)), first, 4)
    pd.testing.assert_frame_equal(first, again)


def test_new_images_only_create_new_shards():
    first = plan_shards(ids(*range(5)), None, 4)  # shard-00000: 0-3, shard-00001: 4 (partial)
    second = plan_shards(ids(*range(12)), first.all_assignments, 4)
    a = second.assignments.set_index("image_id")["shard_key"]
    assert a[[str(i) for i in range(5)]].tolist() == first.assignments["shard_key"].tolist()
    # the partial shard-00001 is not topped up
    assert (a == "shard-00001").sum() == 1
    assert second.new_shard_keys == ["shard-00002", "shard-00003"]
    assert a[[str(i) for i in range(5, 9)]].eq("shard-00002").all()
    assert a[[str(i) for i in range(9, 12)]].eq("shard-00003").all()
    assert len(second.all_assignments) == 12


def test_reordered_manifest_keeps_assignments():
    first = assign_shards(ids(*"abcdef"), None, 2)
    shuffled = ids(*"fdbeca")
    second = assign_shards(shuffled, first, 2)
    assert second["image_id"].tolist() == list("fdbeca")
    assert second.set_index("image_id")["shard_key"].to_dict() == first.set_index("image_id")["shard_key"].to_dict()


def test_removed_images_are_reported_not_renumbered():
    first = plan_shards(ids(*range(6)), None, 2)
    second = plan_shards(ids(0, 1, 4, 5, 6), first.all_assignments, 2)
    assert second.removed.to_dict("records") == [
        {"image_id": "2", "shard_key": "shard-00001"},
        {"image_id": "3", "shard_key": "shard-00001"},
    ]
    a = second.assignments.set_index("image_id")["shard_key"]
    assert a["4"] == "shard-00002" and a["6"] == "shard-00003"
    assert second.shard_keys == ["shard-00000", "shard-00002", "shard-00003"]
    # shard numbers of removed images are never reused
    third = plan_shards(ids(0, 1, 4, 5, 6, 7), second.all_assignments, 2)
    assert third.new_shard_keys == ["shard-00004"]
    assert removed_images(ids(0, 1), first.all_assignments)["image_id"].tolist() == ["2", "3", "4", "5"]


def test_validation():
    with pytest.raises(ValueError, match="shard_size"):
        assign_shards(ids(1), None, 0)
    with pytest.raises(ValueError, match="unique"):
        assign_shards(ids(1, 1), None, 2)
    with pytest.raises(ValueError, match="more than one shard"):
        assign_shards(ids(1), pd.DataFrame({"image_id": ["1", "1"], "shard_key": ["shard-00000", "shard-00001"]}), 2)
    with pytest.raises(ValueError, match="not like"):
        assign_shards(ids(1), pd.DataFrame({"image_id": ["1"], "shard_key": ["p0"]}), 2)


@pytest.mark.slow
def test_large_assignment_is_fast():
    n = 1_000_000
    first = plan_shards(pd.Series([f"i{i}" for i in range(n)]), None, 1000)
    assert first.assignments["shard_key"].nunique() == 1000
    second = plan_shards(pd.Series([f"i{i}" for i in range(n + 10)]), first.all_assignments, 1000)
    assert second.new_shard_keys == ["shard-01000"]

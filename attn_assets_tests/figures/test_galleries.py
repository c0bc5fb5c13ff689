import logging
import os

import numpy as np
import pandas as pd
import pytest

from attn_assets.figures import GALLERIES, atomic_directory, atomic_file, render_gallery, safe_image_id, top_k

from .conftest import assert_not_blank


def _siblings(path):
    """Names next to ``path``, ignoring the fixture's image folder."""
    return sorted(p.name for p in path.parent.iterdir() if p.name != "images")


def test_gallery_writes_ranked_triptychs_and_index(dataset, tmp_path):
    df, maps = dataset
    rows = top_k(df, "attention_concentration_top10", 5, highest=True)
    out = tmp_path / "viz" / "high_concentration"
    res = render_gallery(rows, maps, None, out, "attention_concentration_top10")
    assert len(res) == 5 and res.skipped == []
    assert [p.name for p in res] == [f"{i + 1:02d}_{iid}.png" for i, iid in enumerate(rows["image_id"])]
    for p in res:
        assert_not_blank(p)
    index = pd.read_csv(res.index_path, keep_default_na=False)
    assert list(index["rank"]) == [1, 2, 3, 4, 5]
    assert list(index["image_id"]) == list(rows["image_id"])
    for col in ["country", "attention_entropy", "attention_max", "attention_concentration_top10",
                "attention_concentration_top25", "num_high_attention_patches", "attention_spread"]:
        assert col in index.columns
    assert np.allclose(index["attention_concentration_top10"], rows["attention_concentration_top10"])
    assert list(index["country"]) == list(rows["country"])
    assert "NA" in list(index["country"])  # Namibia written as "NA", read back with keep_default_na=False
    assert _siblings(out) == ["high_concentration"]  # no temp folders left


def test_top_k_order_and_ties():
    df = pd.DataFrame({"image_id": ["c", "b", "a", "d"], "m": [1.0, 2.0, 2.0, np.nan]})
    assert list(top_k(df, "m", 3)["image_id"]) == ["a", "b", "c"]
    assert list(top_k(df, "m", 3, highest=False)["image_id"]) == ["c", "a", "b"]
    assert set(GALLERIES) == {"high_concentration", "low_concentration", "high_entropy", "low_entropy"}


def test_gallery_skips_missing_images_with_warning(dataset, tmp_path, caplog):
    df, maps = dataset
    rows = df.head(4).copy()
    os.remove(rows.loc[1, "abs_path"])
    rows.loc[2, "abs_path"] = str(tmp_path / "never-existed.jpg")
    gone_map = rows.loc[3, "image_id"]
    maps = {k: v for k, v in maps.items() if k != gone_map}
    with caplog.at_level(logging.WARNING, logger="attn_assets.figures"):
        res = render_gallery(rows, maps, None, tmp_path / "g", "attention_entropy")
    assert [p.name for p in res] == [f"01_{rows.loc[0, 'image_id']}.png"]
    assert res.skipped == list(rows["image_id"][1:])
    assert sum("skipping image" in r.getMessage() for r in caplog.records) == 3
    index = pd.read_csv(res.index_path, keep_default_na=False)
    assert list(index["status"]) == ["ok", "missing_image", "missing_image", "missing_map"]
    assert sorted(p.name for p in (tmp_path / "g").iterdir()) == ["01_img000.png", "index.csv"]


def test_gallery_sanitizes_ids_and_uses_crop_boxes(dataset, tmp_path):
    df, maps = dataset
    rows = df.head(3).copy()
    odd = ["../etc/passwd", "Zürich \"quoted\" 'id'", "東京/shibuya"]
    for old, new in zip(list(rows["image_id"]), odd):
        maps[new] = maps[old]
    rows["image_id"] = odd
    res = render_gallery(rows, maps, {odd[0]: (0, 0, 100, 100)}, tmp_path / "odd")
    names = [p.name for p in res]
    assert len(names) == 3 and all(p.parent == tmp_path / "odd" for p in res)
    for name in names:
        assert name.isascii() and "/" not in name and "'" not in name and '"' not in name and " " not in name
    assert names[1].startswith("02_Zurich_quoted_id_")


def test_safe_image_id():
    assert safe_image_id("123456789") == "123456789"
    assert safe_image_id("a/b") != safe_image_id("a_b")
    assert safe_image_id("..") not in ("..", ".", "")
    assert safe_image_id("") .startswith("image_")
    assert len(safe_image_id("x" * 500)) <= 80


def test_gallery_replaces_previous_gallery(dataset, tmp_path):
    df, maps = dataset
    out = tmp_path / "g"
    render_gallery(df.head(3), maps, None, out)
    render_gallery(df.iloc[10:12], maps, None, out)
    assert sorted(p.name for p in out.iterdir()) == ["01_img010.png", "02_img011.png", "index.csv"]
    assert _siblings(out) == ["g"]


def test_atomic_directory_crash_keeps_previous(tmp_path):
    target = tmp_path / "folder"
    with atomic_directory(target) as d:
        (d / "a.txt").write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_directory(target) as d:
            (d / "a.txt").write_text("new")
            (d / "b.txt").write_text("half")
            assert (target / "a.txt").read_text() == "old"  # not visible while being written
            raise RuntimeError("crash")
    assert (target / "a.txt").read_text() == "old" and not (target / "b.txt").exists()
    assert _siblings(target) == ["folder"]
    with atomic_directory(target) as d:
        (d / "c.txt").write_text("new")
    assert sorted(p.name for p in target.iterdir()) == ["c.txt"]
    assert _siblings(target) == ["folder"]
    assert oct(target.stat().st_mode & 0o777) != oct(0o700)  # not mkdtemp's private mode


def test_atomic_directory_fallback_without_exchange(tmp_path, monkeypatch):
    import attn_assets.storage.atomic as atomic

    monkeypatch.setattr(atomic, "_exchange", lambda a, b: False)
    target = tmp_path / "folder"
    for text in ["one", "two"]:
        with atomic.atomic_directory(target) as d:
            (d / "x.txt").write_text(text)
    assert (target / "x.txt").read_text() == "two" and _siblings(target) == ["folder"]


def test_atomic_file_crash_keeps_previous(tmp_path):
    target = tmp_path / "f.csv"
    with atomic_file(target) as t:
        t.write_text("old")
    with pytest.raises(ValueError):
        with atomic_file(target) as t:
            t.write_text("partial")
            raise ValueError
    assert target.read_text() == "old" and _siblings(target) == ["f.csv"]
    assert target.stat().st_mode & 0o044  # readable by others like a normal file (umask 022)

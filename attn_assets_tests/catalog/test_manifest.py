"""attn_assets.catalog.manifest: formats, validation reasons, country resolution."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from attn_assets.catalog.manifest import (
    escape_reason,
    IMAGE_COLUMNS,
    REJECTION_COLUMNS,
    ManifestError,
    build_image_index,
    read_manifest,
)

OSV_HEADER = "id,latitude,longitude,thumb_original_url,country,sequence,captured_at,region,unique_country,creator_id"

COUNTRY_HINT = "; write a two-letter code such as FR, or leave the cell empty to take the country from the coordinates"
RANGE_HINT = "; check that the columns are degrees and not swapped"


def write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def touch_images(root: Path, *rels: str) -> None:
    for rel in rels:
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"\xff\xd8fake")


@pytest.fixture
def root(tmp_path: Path) -> Path:
    r = tmp_path / "root"
    r.mkdir()
    return r


def reasons(result) -> dict[int, tuple[str, str]]:
    return {int(r.source_row): (None if pd.isna(r.column) else r.column, r.reason) for r in result.rejections.itertuples()}


# ------------------------------------------------------------------ formats


def test_plain_list_columns_and_na_survives(root):
    touch_images(root, "a/1.jpg")
    m = write(root / "m.csv", "image_id,path,country,latitude,longitude,note\n1,a/1.jpg,NA,-22.56,17.07,NA\n2,a/2.jpg,,,,x\n")
    res = read_manifest(m)
    img = res.images
    assert list(img.columns) == [*IMAGE_COLUMNS, "note"]
    assert list(res.rejections.columns) == list(REJECTION_COLUMNS)
    assert img["image_id"].tolist() == ["1", "2"]
    assert img.loc[0, "country"] == "NA" and img.loc[0, "country_name"] == "Namibia"
    assert img.loc[0, "country_source"] == "manifest"
    assert img.loc[0, "note"] == "NA"
    assert pd.isna(img.loc[1, "country"]) and pd.isna(img.loc[1, "country_source"])
    assert np.isnan(img.loc[1, "latitude"])
    assert img.loc[0, "abs_path"] == str(root.resolve() / "a/1.jpg")
    # a missing file is not a manifest rejection for plain lists
    assert img.loc[1, "path"] == "a/2.jpg" and res.rejections.empty
    assert img["source_row"].tolist() == [2, 3]
    assert img["source_file"].iloc[0] == str(m.resolve())
    assert res.formats == {str(m.resolve()): "plain"}


def test_osv_format_uses_index_and_unique_country(root):
    touch_images(root, "images/test/00/1000000000000001.jpg", "images/test/07/1000000000000002.jpg")
    m = write(
        root / "test.csv",
        OSV_HEADER
        + "\n1000000000000001,-22.56,17.07,http://x,NA,s,1461772345000,Khomas,NA,5"
        + "\n1000000000000002,35.68,139.65,http://y,,s,1461772345001,Tokyo,JP,6\n",
    )
    res = read_manifest(m)
    img = res.images
    assert img["image_id"].tolist() == ["1000000000000001", "1000000000000002"]
    assert img["path"].tolist() == ["images/test/00/1000000000000001.jpg", "images/test/07/1000000000000002.jpg"]
    assert img["country"].tolist() == ["NA", "JP"]
    assert img["country_source"].tolist() == ["manifest", "unique_country"]
    assert img["latitude"].tolist() == [-22.56, 35.68]
    # OSV-5M's known metadata columns are typed; every other column is kept as text, including unique_country
    assert list(img.columns[len(IMAGE_COLUMNS):]) == ["thumb_original_url", "unique_country", "creator_id"]
    assert img["sequence"].tolist() == ["s", "s"] and img["region"].tolist() == ["Khomas", "Tokyo"]
    assert img["captured_at"].tolist() == [pd.Timestamp(1461772345000, unit="ms"), pd.Timestamp(1461772345001, unit="ms")]
    assert img["climate"].isna().all()  # a column the manifest lacks is NULL
    assert img["unique_country"].tolist() == ["NA", "JP"]
    assert res.formats[str(m.resolve())] == "osv5m"


def test_osv_missing_image_is_rejected(root):
    touch_images(root, "images/test/00/1.jpg")
    m = write(root / "test.csv", OSV_HEADER + "\n1,1,1,u,FR,s,1,r,FR,1\n2,1,1,u,FR,s,1,r,FR,1\n")
    res = read_manifest(m)
    assert res.images["image_id"].tolist() == ["1"]
    assert reasons(res) == {3: ("id", "image file 2.jpg not found under image root; check ATTN_ASSETS_IMAGE_ROOT (OSV-5M: the folder holding images/<split>/, as zip archives or extracted)")}


def test_osv_requires_coordinates(root):
    touch_images(root, "i/1.jpg", "i/2.jpg", "i/3.jpg", "i/4.jpg")
    m = write(root / "test.csv", OSV_HEADER + "\n1,,1,u,FR,s,1,r,FR,1\n2,1,nan,u,FR,s,1,r,FR,1\n3,1,abc,u,FR,s,1,r,FR,1\n4,1,2,u,FR,s,1,r,FR,1\n")
    res = read_manifest(m)
    assert reasons(res) == {
        2: ("latitude", "latitude is empty; OpenStreetView-5M rows need both coordinates"),
        3: ("longitude", "longitude 'nan' is not a number; write decimal degrees such as 48.8566"),
        4: ("longitude", "longitude 'abc' is not a number; write decimal degrees such as 48.8566"),
    }


def test_osv_with_explicit_path_column(root):
    m = write(root / "test.csv", "id,latitude,longitude,path,country\n7,1,2,x/7.jpg,FR\n")
    res = read_manifest(m)
    assert res.images["path"].tolist() == ["x/7.jpg"]
    assert "path" not in res.extra_columns


def test_parquet_manifest(root):
    m = root / "m.parquet"
    pd.DataFrame({"image_id": ["a", "NA"], "path": ["a.jpg", "b.jpg"], "country": ["NA", None],
                  "latitude": [1.5, np.nan], "longitude": [2.5, np.nan], "n": [1, 2]}).to_parquet(m)
    res = read_manifest(m)
    img = res.images
    assert img["image_id"].tolist() == ["a", "NA"]
    assert img["country"].iloc[0] == "NA" and pd.isna(img["country"].iloc[1])
    assert img["latitude"].iloc[0] == 1.5 and np.isnan(img["latitude"].iloc[1])
    assert img["n"].tolist() == ["1", "2"]
    assert img["source_row"].tolist() == [1, 2]


def test_glob_of_two_files(root):
    write(root / "parts/a.csv", "image_id,path\n1,1.jpg\n2,2.jpg\n")
    write(root / "parts/b.csv", "image_id,path,extra\n3,3.jpg,e\n1,other.jpg,f\n")
    res = read_manifest(str(root / "parts/*.csv"), image_root=root)
    img = res.images
    assert img["image_id"].tolist() == ["1", "2", "3"]
    assert [Path(f).name for f in img["source_file"]] == ["a.csv", "a.csv", "b.csv"]
    assert img["source_row"].tolist() == [2, 3, 2]
    assert pd.isna(img["extra"].iloc[0]) and img["extra"].iloc[2] == "e"
    assert len(res.files) == 2
    (row,) = res.rejections.itertuples()
    a = str((root / "parts/a.csv").resolve())
    assert row.reason == f"duplicate image_id '1': first seen at {a} line 2; paths differ ('1.jpg' there, 'other.jpg' here)"
    assert Path(row.source_file).name == "b.csv" and row.source_row == 3


def test_id_round_trip(root):
    ids = ['a "quoted" id', "comma,inside", "ünïcødé 東京", " spaced id ", "0012", "NA", "null", "1e5"]
    df = pd.DataFrame({"image_id": ids, "path": [f"{i}.jpg" for i in range(len(ids))]})
    m = root / "m.csv"
    df.to_csv(m, index=False)
    res = read_manifest(m)
    assert res.images["image_id"].tolist() == ids
    assert res.rejections.empty


# ------------------------------------------------------------------ rejections


def test_every_row_rejection_reason(root, tmp_path):
    touch_images(root, "a/1.jpg")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.jpg").write_bytes(b"x")
    os.symlink(outside / "secret.jpg", root / "a" / "link.jpg")
    os.symlink(outside, root / "linkdir")
    text = (
        "image_id,path,country,latitude,longitude\n"
        "1,a/1.jpg,FR,,\n"  # 2 ok
        ",a/x.jpg,,,\n"  # 3 empty id
        "1,a/1.jpg,,,\n"  # 4 duplicate, same path
        "1,a/9.jpg,,,\n"  # 5 duplicate, other path
        "5,a/5.jpg,XX,,\n"  # 6 bad country
        "6,a/6.jpg,,91,0\n"  # 7 latitude range
        "7,a/7.jpg,,0,-180.5\n"  # 8 longitude range
        "8,a/8.jpg,,north,0\n"  # 9 not a number
        "9,../escape.jpg,,,\n"  # 10 .. escape
        f"10,{outside / 'secret.jpg'},,,\n"  # 11 absolute outside
        "11,a/link.jpg,,,\n"  # 12 symlink outside
        "12,linkdir/secret.jpg,,,\n"  # 13 folder symlink outside
        "13,,,,\n"  # 14 empty path
        "14,a/14.jpg,,5,\n"  # 15 half coordinates
        "15,a/../a/15.jpg,fr,,\n"  # 16 ok, normalized
        f"16,{root.resolve() / 'a/16.jpg'},,,\n"  # 17 ok: absolute inside the root
    )
    res = read_manifest(write(root / "m.csv", text))
    assert reasons(res) == {
        3: ("image_id", "image_id is empty; every row needs an id"),
        4: ("image_id", "duplicate image_id '1': first seen at line 2"),
        5: ("image_id", "duplicate image_id '1': first seen at line 2; paths differ ('a/1.jpg' there, 'a/9.jpg' here)"),
        6: ("country", "country 'XX' is not an ISO 3166-1 alpha-2 code" + COUNTRY_HINT),
        7: ("latitude", "latitude 91 is outside [-90, 90]" + RANGE_HINT),
        8: ("longitude", "longitude -180.5 is outside [-180, 180]" + RANGE_HINT),
        9: ("latitude", "latitude 'north' is not a number; write decimal degrees such as 48.8566"),
        10: ("path", escape_reason(root.resolve())),
        11: ("path", escape_reason(root.resolve())),
        12: ("path", escape_reason(root.resolve())),
        13: ("path", escape_reason(root.resolve())),
        14: ("path", "path is empty; give the image file's path relative to ATTN_ASSETS_IMAGE_ROOT"),
        15: ("longitude", "longitude is empty but latitude is given; give both or neither"),
    }
    assert escape_reason(root.resolve()).startswith(f"path escapes the image root {root.resolve()} (ATTN_ASSETS_IMAGE_ROOT")
    img = res.images.set_index("image_id")
    assert list(img.index) == ["1", "15", "16"]
    assert img.loc["15", "path"] == "a/15.jpg" and img.loc["15", "country"] == "FR"
    assert img.loc["16", "path"] == "a/16.jpg"
    raw = json.loads(res.rejections.set_index("source_row").loc[6, "raw"])
    assert raw == {"image_id": "5", "path": "a/5.jpg", "country": "XX", "latitude": "", "longitude": ""}


def test_osv_symlink_escape(root, tmp_path):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "2.jpg").write_bytes(b"x")
    touch_images(root, "images/1.jpg")
    os.symlink(outside / "2.jpg", root / "images" / "2.jpg")
    m = write(root / "test.csv", OSV_HEADER + "\n1,1,1,u,FR,s,1,r,FR,1\n2,1,1,u,FR,s,1,r,FR,1\n")
    res = read_manifest(m)
    assert res.images["image_id"].tolist() == ["1"]
    assert reasons(res) == {3: ("id", escape_reason(root.resolve()))}


def test_wrong_field_count_and_quoted_newlines_keep_line_numbers(root):
    text = 'image_id,path,note\n1,1.jpg,"two\nlines"\n\n2,2.jpg\n3,3.jpg,x,y\n4,4.jpg,z\n'
    res = read_manifest(write(root / "m.csv", text))
    assert res.images["image_id"].tolist() == ["1", "4"]
    assert res.images["source_row"].tolist() == [2, 7]
    assert res.images["note"].iloc[0] == "two\nlines"
    assert reasons(res) == {
        5: (None, "row has 2 fields but the header has 3 (check quoting of values containing commas)"),
        6: (None, "row has 4 fields but the header has 3 (check quoting of values containing commas)"),
    }
    assert res.rejections.set_index("source_row").loc[5, "image_id"] == "2"


# ------------------------------------------------------------------ file errors


def test_missing_columns_names_file_and_columns(root):
    m = write(root / "bad.csv", "image,file\n1,a.jpg\n")
    with pytest.raises(ManifestError) as e:
        read_manifest(m)
    msg = str(e.value)
    assert str(m) in msg and "'image_id'" in msg and "'image', 'file'" in msg
    assert isinstance(e.value, ValueError)


def test_missing_path_column(root):
    m = write(root / "bad.csv", "image_id,country\n1,FR\n")
    with pytest.raises(ManifestError, match=r"missing required column\(s\) 'path' for a plain image list; columns found: 'image_id', 'country'"):
        read_manifest(m)


def test_osv_missing_coordinates_column(root):
    m = write(root / "t.csv", "id,latitude,country\n1,2,FR\n")
    with pytest.raises(ManifestError, match="'longitude' for a OpenStreetView-5M metadata"):
        read_manifest(m)


@pytest.mark.parametrize("sep,label", [(";", "semicolons"), ("\t", "tabs")])
def test_delimiter_hint(root, sep, label):
    m = write(root / "semi.csv", f"image_id{sep}path\n1{sep}a.jpg\n")
    with pytest.raises(ManifestError, match=f"delimited by {label}"):
        read_manifest(m)


@pytest.mark.parametrize("text,expected", [("", "the file is empty"), ("image_id,path\n", "header but no data rows")])
def test_empty_and_header_only(root, text, expected):
    m = write(root / "e.csv", text)
    with pytest.raises(ManifestError, match=expected) as e:
        read_manifest(m)
    assert str(m) in str(e.value)


def test_no_usable_row(root):
    m = write(root / "e.csv", "image_id,path\n,a.jpg\n")
    with pytest.raises(ManifestError, match="no usable row") as e:
        read_manifest(m)
    assert str(m) in str(e.value) and "image_id is empty; every row needs an id" in str(e.value)
    assert len(e.value.rejections) == 1


def test_non_utf8(root):
    m = write(root / "latin.csv", "image_id,path\n1,a.jpg\n".encode() + "2,caf\xe9.jpg\n".encode("latin-1"))
    with pytest.raises(ManifestError) as e:
        read_manifest(m)
    msg = str(e.value)
    assert str(m) in msg and "not valid UTF-8" in msg and "byte offset 27" in msg and "line 3" in msg
    assert "re-encode" in msg


def test_no_match_and_missing_file(root):
    with pytest.raises(ManifestError, match="no manifest file matches"):
        read_manifest(str(root / "*.csv"))
    with pytest.raises(ManifestError, match="does not exist"):
        read_manifest(root / "nope.csv")


def test_duplicate_header(root):
    with pytest.raises(ManifestError, match="duplicate column names"):
        read_manifest(write(root / "d.csv", "image_id,path,path\n1,a,b\n"))


# ------------------------------------------------------------------ countries


def test_reverse_geocoder_fallback(root, capsys):
    m = write(root / "m.csv", "image_id,path,country,latitude,longitude\nparis,p.jpg,,48.8566,2.3522\nnone,n.jpg,,,\n")
    res = read_manifest(m)
    img = res.images.set_index("image_id")
    assert img.loc["paris", "country"] == "FR"
    assert img.loc["paris", "country_name"] == "France"
    assert img.loc["paris", "country_source"] == "reverse_geocoder"
    assert pd.isna(img.loc["none", "country"])
    assert "Loading formatted" not in capsys.readouterr().out


def test_unique_country_invalid_falls_to_geocoder(root):
    touch_images(root, "1.jpg")
    m = write(root / "t.csv", OSV_HEADER + "\n1,48.8566,2.3522,u,,s,1,r,ZZ,1\n")
    img = read_manifest(m).images
    assert img["country"].tolist() == ["FR"] and img["country_source"].tolist() == ["reverse_geocoder"]


def test_country_name_common_name(root):
    m = write(root / "m.csv", "image_id,path,country\n1,a.jpg,TW\n2,b.jpg,XK\n")
    img = read_manifest(m).images
    assert img["country_name"].tolist() == ["Taiwan", "Kosovo"]


def test_image_index(root):
    touch_images(root, "images/train/00/11.jpg", "images/test/01/22.JPG", "notes/readme.txt", "x/11.png")
    idx = build_image_index(root)
    assert idx.to_dict() == {"22": "images/test/01/22.JPG", "11": "images/train/00/11.jpg"} or idx.to_dict() == {
        "11": "images/train/00/11.jpg", "22": "images/test/01/22.JPG"}
    assert idx.get("11") == "images/train/00/11.jpg" and idx.get("33") is None
    assert idx.duplicate_stems == 1


# ------------------------------------------------------------------ scale


@pytest.mark.slow
def test_million_row_plain_manifest(tmp_path):
    n = 1_000_000
    rng = np.random.default_rng(0)
    codes = np.array(["FR", "US", "NA", "JP", "BR", "ZA"])
    m = tmp_path / "big.csv"
    pd.DataFrame(
        {
            "image_id": pd.Series(np.arange(n)).map("img{:07d}".format),
            "path": pd.Series(np.arange(n)).map(lambda i: f"d{i % 100:02d}/img{i:07d}.jpg"),
            "country": codes[rng.integers(0, len(codes), n)],
            "latitude": rng.uniform(-60, 60, n).round(5),
            "longitude": rng.uniform(-170, 170, n).round(5),
        }
    ).to_csv(m, index=False)
    (tmp_path / "d00").mkdir()
    t0 = time.perf_counter()
    res = read_manifest(m)
    elapsed = time.perf_counter() - t0
    print(f"\n1,000,000-row plain manifest validated in {elapsed:.1f} s")
    assert len(res.images) == n and res.rejections.empty
    assert (res.images["country"] == "NA").sum() > 0
    assert elapsed < 60

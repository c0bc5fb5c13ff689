"""Zip archives as an image source on the manifest side: OSV-5M's images/<split>/NN.zip, looked up by name."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import pandas as pd
import pytest

import attn_assets.catalog.archives as archives
import attn_assets.zip_members as zip_members
from attn_assets.catalog.manifest import ManifestError, build_image_index, read_manifest

OSV_HEADER = "id,latitude,longitude,country"
LATIN1_FOLDER = b"caf\xe9"  # a Latin-1 name, not UTF-8


def zip_with(path: Path, members: dict[str, bytes]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as handle:
        for name, data in members.items():
            handle.writestr(name, data)
    return path


def manifest(root: Path, ids: list[str]) -> Path:
    path = root / "test.csv"
    path.write_text(OSV_HEADER + "\n" + "".join(f"{i},48.85,2.35,FR\n" for i in ids), encoding="utf-8")
    return path


def test_osv_layout_members_are_found_by_name(tmp_path):
    zip_with(tmp_path / "images/test/00.zip", {"00/101.jpg": b"a", "00/102.jpg": b"b", "00/readme.txt": b"x"})
    zip_with(tmp_path / "images/test/01.zip", {"103.jpg": b"c"})
    result = read_manifest(manifest(tmp_path, ["101", "102", "103"]), image_root=tmp_path, geocode=False)
    images = result.images.set_index("image_id")
    assert images["path"].tolist() == ["images/test/00.zip", "images/test/00.zip", "images/test/01.zip"]
    assert images["member"].tolist() == ["00/101.jpg", "00/102.jpg", "103.jpg"]
    assert images.loc["103", "abs_path"] == str(tmp_path.resolve() / "images/test/01.zip")
    assert result.rejections.empty


def test_extracted_files_have_no_member(tmp_path):
    path = tmp_path / "images/test/00/101.jpg"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"a")
    images = read_manifest(manifest(tmp_path, ["101"]), image_root=tmp_path, geocode=False).images
    assert images["path"].tolist() == ["images/test/00/101.jpg"] and images["member"].isna().all()


def test_each_archive_directory_is_read_once(tmp_path, monkeypatch):
    for k in range(3):
        zip_with(tmp_path / f"images/test/{k:02d}.zip", {f"{100 + k}.jpg": b"x"})
    opened: list[str] = []
    real = zipfile.ZipFile

    def counting(path, *args, **kwargs):
        opened.append(os.fsdecode(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(archives.zipfile, "ZipFile", counting)
    result = read_manifest(manifest(tmp_path, ["100", "101", "102"]), image_root=tmp_path, geocode=False)
    assert len(result.images) == 3
    assert sorted(Path(p).name for p in opened) == ["00.zip", "01.zip", "02.zip"]


def test_missing_member_is_a_rejected_row(tmp_path):
    zip_with(tmp_path / "images/test/00.zip", {"101.jpg": b"a"})
    result = read_manifest(manifest(tmp_path, ["101", "999"]), image_root=tmp_path, geocode=False)
    assert result.images["image_id"].tolist() == ["101"]
    (rejection,) = result.rejections.itertuples()
    assert (rejection.source_row, rejection.column) == (3, "id")
    assert rejection.reason.startswith("image file 999.jpg not found under image root nor in its 1 zip archives; "
                                       "check ATTN_ASSETS_IMAGE_ROOT")


def test_archives_beside_extracted_files_of_the_same_split_is_an_error(tmp_path):
    zip_with(tmp_path / "images/test/00.zip", {"101.jpg": b"a"})
    extracted = tmp_path / "images/test/00/101.jpg"
    extracted.parent.mkdir(parents=True)
    extracted.write_bytes(b"a")
    with pytest.raises(ManifestError) as caught:
        read_manifest(manifest(tmp_path, ["101"]), image_root=tmp_path, geocode=False)
    message = str(caught.value)
    assert "'images/test' holds both zip archives (1, e.g. images/test/00.zip)" in message
    assert "1 extracted image files under it (e.g. images/test/00/101.jpg)" in message
    assert "remove the extracted files under 'images/test'" in message
    assert "move the archives (images/test/*.zip) out of the image root" in message


def test_other_splits_may_differ(tmp_path):
    """train extracted, test as archives: each split has one source."""
    zip_with(tmp_path / "images/test/00.zip", {"101.jpg": b"a"})
    extracted = tmp_path / "images/train/00/201.jpg"
    extracted.parent.mkdir(parents=True)
    extracted.write_bytes(b"b")
    images = read_manifest(manifest(tmp_path, ["101", "201"]), image_root=tmp_path, geocode=False).images
    assert images["path"].tolist() == ["images/test/00.zip", "images/train/00/201.jpg"]
    assert images["member"].fillna("NULL").tolist() == ["101.jpg", "NULL"]


def test_unreadable_archive_names_it(tmp_path):
    (tmp_path / "images/test").mkdir(parents=True)
    (tmp_path / "images/test/00.zip").write_bytes(b"not a zip at all")
    with pytest.raises(ManifestError, match=r"images/test/00.zip: not a readable zip archive .*re-download it"):
        read_manifest(manifest(tmp_path, ["101"]), image_root=tmp_path, geocode=False)


def _zip_with_raw_name(path: Path, raw_name: bytes, data: bytes) -> None:
    """A member whose name is ``raw_name`` as stored bytes, without the UTF-8 flag (as old zip tools write
    Latin-1 names): written under an ASCII placeholder of the same length, then the name bytes are swapped in
    the local header and the central directory (zip names carry no checksum)."""
    placeholder = b"X" * len(raw_name)
    zip_with(path, {placeholder.decode("ascii"): data})
    blob = path.read_bytes()
    assert blob.count(placeholder) == 2
    path.write_bytes(blob.replace(placeholder, raw_name))


def test_non_utf8_member_and_archive_names(tmp_path):
    _zip_with_raw_name(tmp_path / "images/test/00.zip", LATIN1_FOLDER + b"/101.jpg", b"a")
    latin1_dir = os.path.join(os.fsencode(tmp_path), b"images", LATIN1_FOLDER)
    os.makedirs(latin1_dir)
    with zipfile.ZipFile(os.fsdecode(os.path.join(latin1_dir, b"01.zip")), "w") as handle:
        handle.writestr("102.jpg", b"b")
    result = read_manifest(manifest(tmp_path, ["101", "102"]), image_root=tmp_path, geocode=False)
    images = result.images.set_index("image_id")
    # the member name is zipfile's own (cp437-decoded) text, which ZipFile.read takes back
    member = images.loc["101", "member"]
    with zipfile.ZipFile(tmp_path / images.loc["101", "path"]) as handle:
        assert handle.read(member) == b"a"
    # the archive path is escaped text, as for non-UTF-8 file names
    assert images.loc["102", "path"] == "images/caf\\xe9/01.zip"
    assert images.loc["102", "member"] == "102.jpg"
    # every value is storable as UTF-8 (Parquet, DuckDB)
    pd.DataFrame(result.images).to_parquet(tmp_path / "images.parquet")


def test_stems_of_non_utf8_members_are_escaped_like_file_names(tmp_path):
    _zip_with_raw_name(tmp_path / "a.zip", b"caf\xe9.jpg", b"a")
    index = build_image_index(tmp_path)
    assert list(index.stems) == ["caf\\xe9"]
    assert index.lookup_members(["caf\\xe9"]).tolist() == [b"caf\xe9.jpg".decode("cp437")]


def test_plain_list_names_a_member_of_an_archive(tmp_path):
    zip_with(tmp_path / "photos.zip", {"trip/a.jpg": b"a"})
    listed = tmp_path / "list.csv"
    listed.write_text("image_id,path,member\n"
                      "a,photos.zip,trip/a.jpg\n"
                      "b,photos.zip,trip/gone.jpg\n"  # not checked here: the statistics step records the failure
                      "c,c.jpg,\n"
                      "d,d.jpg,trip/d.jpg\n", encoding="utf-8")
    result = read_manifest(listed, image_root=tmp_path, geocode=False)
    images = result.images.set_index("image_id")
    assert images["path"].tolist() == ["photos.zip", "photos.zip", "c.jpg"]
    assert images["member"].fillna("NULL").tolist() == ["trip/a.jpg", "trip/gone.jpg", "NULL"]
    (rejection,) = result.rejections.itertuples()
    assert (rejection.image_id, rejection.column) == ("d", "member")
    assert rejection.reason == ("member 'trip/d.jpg' is given but path 'd.jpg' is not a .zip archive; give the "
                                "archive's path relative to ATTN_ASSETS_IMAGE_ROOT, or leave member empty")


def test_a_member_column_without_path_is_an_extra_column(tmp_path):
    zip_with(tmp_path / "images/test/00.zip", {"101.jpg": b"a"})
    listed = tmp_path / "test.csv"
    listed.write_text(OSV_HEADER + ",member\n101,48.85,2.35,FR,x\n", encoding="utf-8")
    images = read_manifest(listed, image_root=tmp_path, geocode=False).images
    assert images.loc[0, ["member", "manifest_member"]].tolist() == ["101.jpg", "x"]


def test_members_named_with_backslashes_are_found(tmp_path):
    """PowerShell's Compress-Archive writes folder separators as backslashes (00\\103.jpg)."""
    zip_with(tmp_path / "images/test/00.zip", {"00\\103.jpg": b"c", "00/101.jpg": b"a", "00\\sub\\104.JPG": b"d"})
    result = read_manifest(manifest(tmp_path, ["101", "103", "104"]), image_root=tmp_path, geocode=False)
    assert result.rejections.empty
    members = result.images.set_index("image_id")["member"]
    assert members.to_dict() == {"101": "00/101.jpg", "103": "00\\103.jpg", "104": "00\\sub\\104.JPG"}
    assert zip_members.read_member(str(tmp_path / "images/test/00.zip"), members["103"]) == b"c"


def test_a_zip_path_without_member_is_rejected(tmp_path):
    zip_with(tmp_path / "photos.zip", {"a.jpg": b"a"})
    listed = tmp_path / "list.csv"
    listed.write_text("image_id,path,member\na,photos.zip,a.jpg\nb,photos.zip,\nc,PHOTOS.ZIP,\n", encoding="utf-8")
    result = read_manifest(listed, image_root=tmp_path, geocode=False)
    assert result.images["image_id"].tolist() == ["a"]
    assert result.rejections[["image_id", "column"]].values.tolist() == [["b", "member"], ["c", "member"]]
    assert result.rejections["reason"].iloc[0] == (
        "path 'photos.zip' is a zip archive; give the member column (the image's name inside the archive, e.g. "
        "00/101.jpg)")
    without_column = tmp_path / "bare.csv"
    without_column.write_text("image_id,path\na,photos.zip\n", encoding="utf-8")
    with pytest.raises(ManifestError, match="is a zip archive; give the member column"):
        read_manifest(without_column, image_root=tmp_path, geocode=False)


def test_an_id_in_two_archives_uses_the_first_and_says_so(tmp_path):
    zip_with(tmp_path / "images/test/00.zip", {"101.jpg": b"a", "102.jpg": b"b"})
    zip_with(tmp_path / "images/test/01.zip", {"00/101.jpg": b"c", "103.jpg": b"d", "104.jpg": b"e"})
    zip_with(tmp_path / "images/train/00.zip", {"104.jpg": b"f"})
    result = read_manifest(manifest(tmp_path, ["101", "102", "103"]), image_root=tmp_path, geocode=False)
    images = result.images.set_index("image_id")
    assert images.loc["101", ["path", "member"]].tolist() == ["images/test/00.zip", "101.jpg"]
    summary = result.summary()
    assert summary["ids_found_twice"] == 1  # 104 is in two archives too, but this manifest does not use it
    assert summary["ids_found_twice_example"] == "101: used images/test/00.zip:101.jpg, also at images/test/01.zip:00/101.jpg"
    assert any(n.startswith("1 ids were found in more than one place") for n in result.notes)

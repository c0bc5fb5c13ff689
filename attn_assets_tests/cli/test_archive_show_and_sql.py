"""`attn-assets show` and `attn-assets sql` on a home whose images are members of a zip archive, written by
`materialize --home`: show draws the member (and re-runs the model on it for --heads), sql reads that home."""

from __future__ import annotations

import io
import json
import os
import zipfile

import numpy as np
import pytest

from attn_assets import cli
from attn_assets import settings as S
from attn_assets.core.loader import ImageRecord
from attn_assets.storage.layout import HomeLayout
from attn_assets.storage.warehouse import Warehouse
from attn_assets_tests.conftest import street_scene


def _jpeg(seed: int) -> bytes:
    buffer = io.BytesIO()
    street_scene(112, 84, seed).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


@pytest.fixture
def archive_list(tmp_path, monkeypatch):
    """photos/00.zip holding 00/a.jpg and 00/b.jpg, named by a plain list with a member column; the variables
    point at another home, so only the flags lead to the outputs."""
    photos = tmp_path / "photos"
    photos.mkdir()
    members = {"a": _jpeg(1), "b": _jpeg(2)}
    with zipfile.ZipFile(photos / "00.zip", "w", compression=zipfile.ZIP_DEFLATED) as handle:
        for image_id, data in members.items():
            handle.writestr(f"00/{image_id}.jpg", data)
    manifest = photos / "manifest.csv"
    manifest.write_text("image_id,path,member,country\na,00.zip,00/a.jpg,FR\nb,00.zip,00/b.jpg,JP\n",
                        encoding="utf-8")
    for name in list(S.__dict__):
        if name.startswith("ENV_") and isinstance(getattr(S, name), str):
            monkeypatch.delenv(getattr(S, name), raising=False)
    monkeypatch.setenv(S.ENV_HOME, str(tmp_path / "home_from_variable"))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    for name, value in {S.ENV_DEVICE: "cpu", S.ENV_NUM_WORKERS: "0", S.ENV_BATCH_SIZE: "2"}.items():
        monkeypatch.setenv(name, value)
    return tmp_path, manifest, members


@pytest.mark.slow
def test_show_and_sql_on_a_zip_source_home(archive_list, tiny_model_dir, capsys):
    tmp_path, manifest, members = archive_list
    home = tmp_path / "home"
    assert cli.main(["materialize", "--manifest", str(manifest), "--home", str(home),
                     "--model", str(tiny_model_dir)]) == cli.EXIT_OK, capsys.readouterr().out
    capsys.readouterr()
    os.environ[S.ENV_HOME] = str(tmp_path / "home_from_variable")  # as in the user's next process (monkeypatched)

    # sql --home reads the home materialize wrote; without it, the variable's home (which has no warehouse)
    assert cli.main(["sql", "SELECT image_id, member FROM images ORDER BY image_id", "--json",
                     "--home", str(home)]) == cli.EXIT_OK
    assert json.loads(capsys.readouterr().out) == [{"image_id": "a", "member": "00/a.jpg"},
                                                    {"image_id": "b", "member": "00/b.jpg"}]
    os.environ[S.ENV_HOME] = str(tmp_path / "home_from_variable")
    assert cli.main(["sql", "SELECT 1"]) == cli.EXIT_FAILED
    assert str(tmp_path / "home_from_variable") in capsys.readouterr().err
    with pytest.raises(SystemExit) as exited:  # one place to read from: --home or --database
        cli.main(["sql", "SELECT 1", "--home", str(home), "--database", str(HomeLayout(home).warehouse_path)])
    assert exited.value.code == cli.EXIT_USAGE
    capsys.readouterr()

    # show draws the member (was: PIL.UnidentifiedImageError on the .zip), with --heads re-running the model on it
    out = tmp_path / "shown" / "a.png"
    assert cli.main(["show", "a", "--out", str(out), "--home", str(home), "--heads"]) == cli.EXIT_OK, \
        capsys.readouterr().err
    assert out.exists() and (out.parent / "a_heads.png").exists()

    # the record show re-runs is the member itself: its head maps equal those of the same bytes as a plain file
    row = Warehouse(HomeLayout(home).warehouse_path).query(
        "SELECT image_id, abs_path, member FROM images WHERE image_id = 'a'").iloc[0].to_dict()
    record = cli.stored_image_record(row)
    assert record.member == "00/a.jpg" and record.path.endswith("00.zip")
    extracted = tmp_path / "a.jpg"
    extracted.write_bytes(members["a"])
    from_member = cli.head_maps_of_one_image(str(tiny_model_dir), record, "cpu")
    from_file = cli.head_maps_of_one_image(str(tiny_model_dir), ImageRecord("a", str(extracted)), "cpu")
    # same bytes, same decoder, same float32 operations on the same device: identical, not merely close
    np.testing.assert_array_equal(from_member, from_file)


def test_stored_image_record_keeps_the_member(tmp_path):
    row = {"image_id": "a", "abs_path": str(tmp_path / "00.zip"), "member": "00/a.jpg"}
    record = cli.stored_image_record(row)
    assert record == ImageRecord("a", str(tmp_path / "00.zip"), "00/a.jpg")
    assert cli.stored_image_record({**row, "member": float("nan")}).member is None  # a plain file's NULL member

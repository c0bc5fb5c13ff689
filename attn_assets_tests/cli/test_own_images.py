"""A user's own images, first try: a plain list with paths outside the manifest's folder, the materialize flags,
and `attn-assets show` drawing one image from its stored map."""

from __future__ import annotations

import json

import dagster as dg
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from attn_assets import cli
from attn_assets import settings as S
from attn_assets.catalog.manifest import ESCAPE_PREFIX, escape_reason
from attn_assets.orchestration import escape_hint
from attn_assets.storage.layout import HomeLayout
from attn_assets.storage.warehouse import Warehouse
from attn_assets_tests.conftest import street_scene


def test_escape_hint_names_the_folder_holding_the_refused_paths():
    rejections = pd.DataFrame({
        "reason": [escape_reason("/data/list"), escape_reason("/data/list"), "latitude 91 is outside [-90, 90]"],
        "raw": [json.dumps({"path": "/photos/2024/a.jpg"}), json.dumps({"path": "/photos/2025/b.jpg"}),
                json.dumps({"path": "c.jpg"})],
    })
    assert escape_hint(rejections, ESCAPE_PREFIX) == (
        "manifest: 2 rows lie outside the image root; set ATTN_ASSETS_IMAGE_ROOT=/photos to allow these paths")
    assert escape_hint(rejections.iloc[2:], ESCAPE_PREFIX) is None
    assert escape_hint(rejections.iloc[:0], ESCAPE_PREFIX) is None


@pytest.fixture
def own_images(tmp_path, monkeypatch):
    """A plain list in list/ naming one image beside it and two absolute paths in elsewhere/photos/."""
    folder, elsewhere = tmp_path / "list", tmp_path / "elsewhere" / "photos"
    (folder / "img").mkdir(parents=True)
    elsewhere.mkdir(parents=True)
    street_scene(160, 112, 1).save(folder / "img" / "near.jpg", quality=90)
    for k, name in enumerate(("far_1.jpg", "far_2.jpg")):
        street_scene(140, 100, 2 + k).save(elsewhere / name, quality=90)
    manifest = folder / "manifest.csv"
    manifest.write_text("image_id,path,country\nnear,img/near.jpg,FR\n"
                        f"far_1,{elsewhere / 'far_1.jpg'},JP\nfar_2,{elsewhere / 'far_2.jpg'},\n", encoding="utf-8")
    for name in list(S.__dict__):
        if name.startswith("ENV_") and isinstance(getattr(S, name), str):
            monkeypatch.delenv(getattr(S, name), raising=False)
    # the variables point elsewhere: the flags must win
    monkeypatch.setenv(S.ENV_HOME, str(tmp_path / "home_from_variable"))
    monkeypatch.setenv(S.ENV_MANIFEST, str(tmp_path / "no_such_manifest.csv"))
    monkeypatch.setenv(S.ENV_MODEL, "random:no-such-architecture")
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    for name, value in {S.ENV_DEVICE: "cpu", S.ENV_NUM_WORKERS: "0", S.ENV_BATCH_SIZE: "2"}.items():
        monkeypatch.setenv(name, value)
    return tmp_path, manifest, elsewhere


@pytest.mark.slow
def test_own_list_with_outside_paths_then_show(own_images, tiny_model_dir, capsys):
    tmp_path, manifest, elsewhere = own_images
    home = tmp_path / "home"

    code = cli.main(["materialize", "--manifest", str(manifest), "--home", str(home), "--model", str(tiny_model_dir)])

    captured = capsys.readouterr()
    assert code == cli.EXIT_OK, captured.out
    hints = [line for line in captured.out.splitlines() if "to allow these paths" in line]
    assert hints == [f"manifest: 2 rows lie outside the image root; set ATTN_ASSETS_IMAGE_ROOT={elsewhere} "
                     "to allow these paths"]
    assert not (tmp_path / "home_from_variable").exists()
    store = Warehouse(HomeLayout(home).warehouse_path)
    reasons = store.query("SELECT image_id, reason FROM manifest_rejections ORDER BY image_id")
    assert reasons.image_id.tolist() == ["far_1", "far_2"]
    for reason in reasons.reason:  # names the root used and the setting
        assert reason == escape_reason(manifest.parent.resolve())
        assert str(manifest.parent.resolve()) in reason and "ATTN_ASSETS_IMAGE_ROOT" in reason
    # the flags are in the variables, so the resources show them as coming from ATTN_ASSETS_* (UI: "from env")
    from attn_assets.resources import resources_from_env

    resources = resources_from_env()
    assert isinstance(resources["pipeline"].manifest, dg.EnvVar) and S.Settings.from_env().manifest == str(manifest)
    assert isinstance(resources["attention_model"].model, dg.EnvVar)

    # show: the gallery's triptych of the same image, from the stored map
    gallery = HomeLayout(home).visualizations_dir / "high_entropy" / "01_near.png"
    assert gallery.exists()
    out = tmp_path / "shown" / "near.png"
    assert cli.main(["show", "near", "--out", str(out), "--home", str(home), "--rollout", "--heads"]) == cli.EXIT_OK
    printed = capsys.readouterr()
    assert "the model was not run" in printed.out.splitlines()[0]
    assert "per-image head maps are not stored" in printed.err and "re-running" in printed.err
    shown, drawn = np.asarray(Image.open(out).convert("RGB")), np.asarray(Image.open(gallery).convert("RGB"))
    assert shown.shape[1] == drawn.shape[1]
    # Both are render_triptych of the same photo, map and model-view box, titled on one line: the panels lie at the
    # same pixels (tight_layout leaves the top 5% to the title; a footer strip is added below). Only the title
    # text differs (the gallery's names its rank), so the 500 px tall panels band must be identical, pixel for pixel.
    band = slice(30, 470)
    np.testing.assert_array_equal(shown[band], drawn[band])
    assert (out.parent / "near_rollout.png").exists() and (out.parent / "near_heads.png").exists()

    assert cli.main(["show", "far_1", "--home", str(home)]) == cli.EXIT_FAILED
    assert "has no stored attention" in capsys.readouterr().err


def test_show_without_results_says_what_to_run(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(S.ENV_HOME, str(tmp_path / "elsewhere"))  # --home wins over it
    assert cli.main(["show", "some_id", "--home", str(tmp_path / "empty_home")]) == cli.EXIT_FAILED
    err = capsys.readouterr().err
    assert str(HomeLayout(tmp_path / "empty_home").warehouse_path) in err and "attn-assets materialize" in err
    assert not (tmp_path / "empty_home").exists()

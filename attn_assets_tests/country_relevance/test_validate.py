"""`attn-assets validate` on a tiny CLIPModel and a plain manifest of real image files: the report a user pastes."""

from __future__ import annotations

import re

import pytest

from attn_assets.cli import main
from attn_assets_tests.conftest import street_scene

from .conftest import TINY_COUNTRIES


@pytest.fixture
def manifest(tmp_path):
    rows = ["image_id,path,country"]
    for n in range(5):
        street_scene(120 + 10 * n, 90, 70 + n).save(tmp_path / f"v{n}.jpg", quality=90)
        rows.append(f"v{n},v{n}.jpg,{TINY_COUNTRIES[n % len(TINY_COUNTRIES)]}")
    (tmp_path / "list.csv").write_text("\n".join(rows) + "\n")
    return tmp_path / "list.csv"


def test_validate_report(tiny_clip_dir, manifest, monkeypatch, capsys):
    monkeypatch.setenv("ATTN_ASSETS_COUNTRIES", ",".join(TINY_COUNTRIES))
    code = main(["validate", "--model", str(tiny_clip_dir), "--manifest", str(manifest), "--images", "5",
                 "--seed-images", "3", "--device", "cpu", "--batch-size", "2"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "images: 5 (seed comparison on the first 3); country list: 5 countries" in out
    differences = [float(v) for v in re.findall(r"^\| \w+ \| ([0-9.e+-]+) \|$", out, flags=re.M)]
    # float32 on both paths, the same CLS row computed two ways (eager vs the hook's q.k): ~1e-7 per weight, and the
    # patch count is an integer that only flips on an exact tie
    assert len(differences) == 6 and max(differences) < 1e-4, out
    assert "over 5 images with a country in the list" in out and "73.4%" in out
    assert "statistics (batched, ours):" in out


def test_validate_refuses_a_vision_only_model(tiny_model_dir, manifest, capsys):
    assert main(["validate", "--model", str(tiny_model_dir), "--manifest", str(manifest), "--device", "cpu"]) == 2
    assert "needs a CLIPModel with its text tower" in capsys.readouterr().out

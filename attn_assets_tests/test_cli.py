"""The `attn-assets` command line: extract (core alone), demo-data, materialize."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest

from attn_assets import cli
from attn_assets.core.extract import extract_to_frame
from attn_assets.core.loader import records_from_paths
from attn_assets.metric_names import METRIC_NAMES


def test_extract_writes_one_row_per_image_with_failures(tmp_path, tiny_model_dir, tiny_encoder, sample_images, capsys):
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("wide_792x512.jpg", "gray_L.jpg", "rgba.png"):
        shutil.copy(sample_images[name], folder / name)
    (folder / "broken.jpg").write_text("<html>404 Not Found</html>")
    out = tmp_path / "stats.parquet"

    code = cli.main(["extract", "--model", str(tiny_model_dir), "--out", str(out), "--device", "cpu",
                     "--num-workers", "0", "--batch-size", "2", "--quiet", str(folder)])

    assert code == 0
    frame = pd.read_parquet(out).set_index("image_path")
    assert len(frame) == 4
    broken = frame.loc[str(folder / "broken.jpg")]
    assert "not a readable image" in broken["failure_reason"]
    assert np.isnan(broken["attention_entropy"])
    good = frame[frame.failure_reason.isna()].sort_index()
    # the same files in the same batches of 2 as the CLI (the broken file leaves its batch one image short):
    # the same float32 operations on the same shapes in this process, so the numbers are identical
    expected, _, _ = extract_to_frame(tiny_encoder, records_from_paths(sorted(folder.iterdir())), batch_size=2)
    expected = expected.set_index("image_id").sort_index()
    for metric in METRIC_NAMES:
        np.testing.assert_array_equal(good[metric].to_numpy(float), expected[metric].to_numpy(float), err_msg=metric)
    captured = capsys.readouterr()
    assert "3 images computed, 1 failed" in captured.out
    assert "broken.jpg: not a readable image" in captured.err


def test_extract_usage_and_model_errors_exit_2(tmp_path, sample_images, capsys):
    assert cli.main(["extract", "--model", "random:tiny", "--out", str(tmp_path / "x.parquet"), str(tmp_path)]) == 2
    assert "no images found" in capsys.readouterr().err
    code = cli.main(["extract", "--model", str(tmp_path / "no_such_model"), "--out", str(tmp_path / "x.parquet"),
                     str(sample_images["wide_792x512.jpg"])])
    assert code == 2
    assert "attn-assets: error:" in capsys.readouterr().err
    assert not (tmp_path / "x.parquet").exists()


def test_demo_data_is_deterministic(tmp_path):
    assert cli.main(["demo-data", "--out", str(tmp_path / "a"), "--images", "6"]) == 0
    assert cli.main(["demo-data", "--out", str(tmp_path / "b"), "--images", "6"]) == 0
    files_a = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("*") if p.is_file())
    assert files_a == files_b and len(files_a) == 7
    for rel in files_a:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes()


@pytest.mark.slow
def test_materialize_command_then_sql(pipeline_env, capsys):
    assert cli.main(["materialize"]) == 0
    out = capsys.readouterr().out
    assert "image_manifest: ok" in out and "attention_statistics[shard-00002]: ok" in out
    assert cli.main(["materialize"]) == 0
    assert "every shard up to date" in capsys.readouterr().out
    assert cli.main(["sql", "--csv", "SELECT count(*) AS n FROM attention_statistics"]) == 0
    assert capsys.readouterr().out.splitlines() == ["n", str(len(pipeline_env.image_ids))]

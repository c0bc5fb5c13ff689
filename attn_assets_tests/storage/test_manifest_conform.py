"""The warehouse describes exactly the current manifest: countries from `images`, rows of withdrawn images gone."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from attn_assets.metric_names import METRIC_NAMES
from attn_assets.storage.parquet import build_shard_results, write_table_atomic
from attn_assets.storage.schema import GEOLOCATION_PREDICTIONS, IMAGES, ROLLOUT_STATISTICS
from attn_assets.storage.warehouse import Warehouse, per_image_tables


def _shard(tmp_path: Path, key: str, ids: list[str], country: str) -> Path:
    n = len(ids)
    rng = np.random.default_rng(0)
    metrics = {m: rng.random(n) for m in METRIC_NAMES}
    metrics["num_high_attention_patches"] = rng.integers(0, 12, n)
    table = build_shard_results(
        shard_key=key, image_ids=ids, paths=[f"{i}.jpg" for i in ids], countries=[country] * n, metrics=metrics,
        cls_maps=rng.random((n, 3, 4), dtype=np.float32), failures=[], model_spec="random:tiny", precision="fp32",
        computed_at=datetime.now(timezone.utc))
    return write_table_atomic(table, tmp_path / "shards" / f"{key}.parquet")


def _images(tmp_path: Path, rows: list[tuple[str, str, str | None]]) -> Path:
    frame = pd.DataFrame({"image_id": [r[0] for r in rows], "shard_key": [r[1] for r in rows],
                          "path": [f"{r[0]}.jpg" for r in rows], "abs_path": [f"/x/{r[0]}.jpg" for r in rows],
                          "country": [r[2] for r in rows]})
    for column in IMAGES.column_names:
        if column not in frame and column != "extra":
            frame[column] = None
    path = tmp_path / "manifest" / f"images-{len(list(tmp_path.glob('manifest/*')))}.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(path)
    return path


def test_countries_come_from_the_manifest_and_withdrawn_rows_leave(tmp_path):
    store = Warehouse(tmp_path / "w.duckdb")
    s0 = _shard(tmp_path, "shard-00000", ["a", "b"], "FR")
    s1 = _shard(tmp_path, "shard-00001", ["c"], "FR")
    store.replace_images(_images(tmp_path, [("a", "shard-00000", "FR"), ("b", "shard-00000", "FR"),
                                            ("c", "shard-00001", "DE")]))
    store.sync_shards({"shard-00000": s0, "shard-00001": s1})
    # loaded with the manifest's country, not the one the file was computed with
    rows = store.query("SELECT image_id, country FROM attention_statistics ORDER BY 1")
    assert rows.values.tolist() == [["a", "FR"], ["b", "FR"], ["c", "DE"]]

    # b withdrawn, a's country corrected: no shard file changes
    store.replace_images(_images(tmp_path, [("a", "shard-00000", "NA"), ("c", "shard-00001", "DE")]))
    assert store.sync_shards({"shard-00000": s0, "shard-00001": s1})["unchanged"] == ["shard-00000", "shard-00001"]
    report = store.conform_to_manifest()
    assert report["attention_statistics"] == {"removed": 1, "country_updated": 1}
    assert set(report) == {t.name for t in per_image_tables()}
    rows = store.query("SELECT image_id, country FROM attention_statistics ORDER BY 1")
    assert rows.values.tolist() == [["a", "NA"], ["c", "DE"]]  # Namibia stays 'NA'
    assert store.conform_to_manifest()["attention_statistics"] == {"removed": 0, "country_updated": 0}


def test_analysis_tables_drop_other_shards_and_take_manifest_countries(tmp_path):
    store = Warehouse(tmp_path / "w.duckdb")
    store.replace_images(_images(tmp_path, [("a", "shard-00000", "KR")]))
    columns = {c: [None, None] for c in GEOLOCATION_PREDICTIONS.column_names}
    columns.update(image_id=["a", "z"], shard_key=["shard-00000", "shard-00000"], country=["JP", "JP"],
                   predicted_latitude=[1.0, 2.0], predicted_longitude=[1.0, 2.0], plonk_model=["p", "p"],
                   num_steps=[1, 1], num_samples=[1, 1], sampling_seed=[0, 0], cfg_rate=[0.0, 0.0],
                   embedding_model_spec=["m", "m"], embedding_precision=["fp32", "fp32"],
                   computed_at=[datetime(2026, 1, 1)] * 2)
    path = write_table_atomic(GEOLOCATION_PREDICTIONS.arrow_table(columns), tmp_path / "g.parquet")
    store.replace_analysis_shard(GEOLOCATION_PREDICTIONS, "shard-00000", path)
    rows = store.query("SELECT image_id, country FROM geolocation_predictions ORDER BY 1").values.tolist()
    assert rows == [["a", "KR"], ["z", "JP"]]  # z is not in the manifest: keeps its own country until conformed
    store.conform_to_manifest([GEOLOCATION_PREDICTIONS])
    assert store.query("SELECT image_id FROM geolocation_predictions")["image_id"].tolist() == ["a"]
    columns.update(image_id=["q", "r"], shard_key=["shard-00009", "shard-00009"])
    other = write_table_atomic(GEOLOCATION_PREDICTIONS.arrow_table(columns), tmp_path / "g9.parquet")
    store.replace_analysis_shard(GEOLOCATION_PREDICTIONS, "shard-00009", other)
    assert store.drop_other_shards(GEOLOCATION_PREDICTIONS, ["shard-00000"]) == ["shard-00009"]
    assert store.query("SELECT DISTINCT shard_key FROM geolocation_predictions")["shard_key"].tolist() == ["shard-00000"]
    assert store.drop_other_shards(ROLLOUT_STATISTICS, []) == []

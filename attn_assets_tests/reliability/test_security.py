"""Security properties: read-only SQL, parameters not string-built SQL, no pickles, no remote code, local UI."""

from __future__ import annotations

import hashlib
import re
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest

from attn_assets.metric_names import METRIC_NAMES
from attn_assets import cli
from attn_assets.core.model import ModelLoadError, load_encoder
from attn_assets.settings import REPO_ROOT
from attn_assets.storage.parquet import build_shard_results, write_table_atomic
from attn_assets.storage.schema import WAREHOUSE_TABLES
from attn_assets.storage.warehouse import Warehouse

INJECTION = "'; DROP TABLE images; --"
QUOTED = 'x"); DELETE FROM attention_statistics; --'


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _shard(tmp_path: Path, key: str, ok_ids: list[str], failed: list[tuple[str, str]], name: str = "") -> Path:
    n = len(ok_ids)
    maps = np.full((n, 2, 2), 0.25, dtype=np.float32)
    table = build_shard_results(
        shard_key=key, image_ids=ok_ids, paths=[f"img/{i}.jpg" for i in range(n)], countries=["FR"] * n,
        metrics={m: np.full(n, 1.0 if m != "num_high_attention_patches" else 1) for m in METRIC_NAMES},
        cls_maps=maps, failures=[(i, "img/x.jpg", "FR", reason) for i, reason in failed],
        model_spec="random:tiny", precision="fp32", computed_at=datetime.now(timezone.utc),
    )
    return write_table_atomic(table, tmp_path / f"{name or key}.parquet")


@pytest.fixture
def warehouse(tmp_path) -> Path:
    store = Warehouse(tmp_path / "attention.duckdb")
    store.sync_shards({"shard-00000": _shard(tmp_path, "shard-00000", ["a", INJECTION, QUOTED],
                                             [("b'; DROP TABLE image_failures; --", "it's 'broken'")])})
    return store.path


def test_values_reach_duckdb_as_parameters(warehouse):
    store = Warehouse(warehouse)
    tables = set(store.query("SELECT table_name FROM information_schema.tables").table_name)
    assert {t.name for t in WAREHOUSE_TABLES} <= tables  # nothing dropped
    assert sorted(store.query("SELECT image_id FROM attention_statistics").image_id) == sorted(["a", INJECTION, QUOTED])
    failures = store.query("SELECT image_id, reason FROM image_failures")
    assert failures.to_records(index=False).tolist() == [("b'; DROP TABLE image_failures; --", "it's 'broken'")]
    # shard keys are parameters too: replacing a shard whose key contains a quote touches only that shard
    odd_key = "shard-'; DELETE FROM attention_statistics; --"
    store.sync_shards({"shard-00000": Path(store.query("SELECT parquet_path FROM shard_loads").parquet_path[0]),
                       odd_key: _shard(warehouse.parent, odd_key, ["c"], [], name="odd")})
    assert store.query("SELECT count(*) AS n FROM attention_statistics").n[0] == 4


@pytest.mark.parametrize("statement", [
    "DELETE FROM attention_statistics",
    "DROP TABLE images",
    "INSERT INTO images (image_id) VALUES ('x')",
    "CREATE TABLE evil (a INTEGER)",
    "UPDATE attention_statistics SET attention_entropy = 0",
])
def test_sql_cli_is_read_only(warehouse, capsys, statement):
    before = _digest(warehouse)
    assert cli.main(["sql", "--database", str(warehouse), statement]) == cli.EXIT_FAILED
    err = capsys.readouterr().err
    assert err.startswith("attn-assets: error: query failed: ") and "read-only mode" in err, err
    assert _digest(warehouse) == before
    assert cli.main(["sql", "--database", str(warehouse), "--csv", "SELECT count(*) AS n FROM attention_statistics"]) == 0
    assert capsys.readouterr().out.splitlines() == ["n", "3"]


def test_pickle_only_model_directory_is_refused(tmp_path, monkeypatch):
    import torch
    from transformers import CLIPVisionModel

    from attn_assets_tests.conftest import tiny_clip_config, tiny_processor

    folder = tmp_path / "pickle_only"
    model = CLIPVisionModel(tiny_clip_config())
    model.config.save_pretrained(folder)
    torch.save(model.state_dict(), folder / "pytorch_model.bin")  # transformers 5 saves safetensors only
    tiny_processor().save_pretrained(folder)
    assert (folder / "pytorch_model.bin").exists() and not list(folder.glob("*.safetensors"))

    def no_unpickling(*args, **kwargs):
        raise AssertionError("torch.load was called on a pickle")

    monkeypatch.delenv("ATTN_ASSETS_ALLOW_PICKLE", raising=False)
    monkeypatch.setattr(torch, "load", no_unpickling)
    with pytest.raises(ModelLoadError) as caught:
        load_encoder(str(folder), "cpu")
    assert str(caught.value) == (
        f"{folder} holds only pickle weights (pytorch_model.bin), which can run arbitrary code when loaded. "
        "Convert them to safetensors (load and save_pretrained with safe_serialization), or opt in with "
        "ATTN_ASSETS_ALLOW_PICKLE=1 (weights-only loading, torch >= 2.6)"
    )


def test_trust_remote_code_is_never_enabled(tiny_model_dir, monkeypatch):
    import transformers

    calls = []
    for name in ("AutoConfig", "AutoImageProcessor", "AutoModel", "CLIPVisionModel", "CLIPModel", "ViTModel"):
        cls = getattr(transformers, name)
        original = cls.from_pretrained.__func__

        def spy(klass, *args, _original=original, _name=name, **kwargs):
            calls.append((_name, kwargs))
            return _original(klass, *args, **kwargs)

        monkeypatch.setattr(cls, "from_pretrained", classmethod(spy))
    load_encoder(str(tiny_model_dir), "cpu")
    assert {name for name, _ in calls} >= {"AutoConfig", "AutoImageProcessor", "CLIPVisionModel"}
    assert all(kwargs.get("trust_remote_code", False) is False for _, kwargs in calls), calls
    # and nowhere in the package source is it switched on
    offenders = [
        str(path) for path in (REPO_ROOT / "attn_assets").rglob("*.py")
        if re.search(r"trust_remote_code\s*=\s*(True|1|[a-z_]+\()", path.read_text())
    ]
    assert offenders == []


def test_makefile_ui_binds_localhost_only():
    """make ui runs `attn-assets ui`, whose `dagster dev` command binds 127.0.0.1 only."""
    from attn_assets.cli import dagster_dev_command

    text = (REPO_ROOT / "Makefile").read_text()
    recipe = re.search(r"^ui:.*\n((?:\t.*\n)+)", text, re.M)
    assert recipe, "Makefile has no ui target"
    commands = recipe.group(1)
    assert re.search(r"attn-assets ui\b", commands), commands
    assert "0.0.0.0" not in commands and "--host" not in commands and " -h " not in commands
    command = dagster_dev_command(3000)
    assert command[1] == "dev" and command[command.index("-h") + 1] == "127.0.0.1"
    assert "0.0.0.0" not in command

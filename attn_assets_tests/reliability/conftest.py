"""Fixtures for the reliability tests: a temp ATTN_ASSETS_HOME / DAGSTER_HOME with a plain-list manifest."""

from __future__ import annotations

import csv
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from attn_assets_tests.conftest import street_scene

BIN = Path(sys.executable).parent


@dataclass
class PlainEnv:
    """A plain-list manifest (image_id, path, country) under ``image_root``, outputs under ``home``."""

    tmp: Path
    home: Path
    dagster_home: Path
    image_root: Path
    manifest: Path
    env: dict[str, str] = field(default_factory=dict)

    def write_manifest(self, rows: list[dict], path: Path | None = None) -> Path:
        path = path or self.manifest
        columns = list(dict.fromkeys(k for row in rows for k in row))
        with open(path, "w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=columns)
            writer.writeheader()
            writer.writerows(rows)
        return path

    def scene(self, rel: str, seed: int, size=(96, 72)) -> Path:
        path = self.image_root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        street_scene(size[0], size[1], seed).save(path, quality=90)
        return path

    def subprocess_env(self, **extra) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("ATTN_ASSETS_", "DAGSTER_"))}
        env.update(self.env)
        env.update({k: str(v) for k, v in extra.items()})
        env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
        return env


def make_plain_env(tmp: Path, model_dir: Path, **overrides) -> PlainEnv:
    fixture = PlainEnv(tmp=tmp, home=tmp / "home", dagster_home=tmp / "dagster_home",
                       image_root=tmp / "images", manifest=tmp / "images" / "manifest.csv")
    fixture.image_root.mkdir(parents=True, exist_ok=True)
    fixture.dagster_home.mkdir(parents=True, exist_ok=True)
    fixture.env = {
        "ATTN_ASSETS_HOME": str(fixture.home), "DAGSTER_HOME": str(fixture.dagster_home),
        "ATTN_ASSETS_MANIFEST": str(fixture.manifest), "ATTN_ASSETS_IMAGE_ROOT": str(fixture.image_root),
        "ATTN_ASSETS_MODEL": str(model_dir), "ATTN_ASSETS_DEVICE": "cpu", "ATTN_ASSETS_SHARD_SIZE": "1000",
        "ATTN_ASSETS_NUM_WORKERS": "0", "ATTN_ASSETS_BATCH_SIZE": "4", "ATTN_ASSETS_GALLERY_SIZE": "2",
    }
    fixture.env.update({k: str(v) for k, v in overrides.items()})
    return fixture


@pytest.fixture
def plain_env(tmp_path, monkeypatch, tiny_model_dir) -> PlainEnv:
    fixture = make_plain_env(tmp_path, tiny_model_dir)
    for name, value in fixture.env.items():
        monkeypatch.setenv(name, value)
    return fixture


@pytest.fixture
def plain_instance(plain_env):
    import dagster as dg

    with dg.DagsterInstance.get() as instance:
        yield instance


# --------------------------------------------------------------------------- open() audit

_OPENED: list[str] = []
_AUDITING = [False]


def _audit(event: str, args) -> None:
    if _AUDITING[0] and event == "open" and args and isinstance(args[0], (str, bytes, os.PathLike)):
        _OPENED.append(os.fsdecode(args[0]))


sys.addaudithook(_audit)  # cannot be removed; records only while an audit_opens() block is active


class audit_opens:  # noqa: N801 - used as a context manager
    """Records every path this process passes to open() (builtins, io, os.open) inside the block."""

    def __enter__(self) -> list[str]:
        _OPENED.clear()
        _AUDITING[0] = True
        return _OPENED

    def __exit__(self, *exc) -> None:
        _AUDITING[0] = False

    @staticmethod
    def touched(opened: list[str], target: Path) -> list[str]:
        real = os.path.realpath(target)
        return [p for p in opened if os.path.realpath(p) == real]

"""Synthetic photos, maps and statistics rows for the figure tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

COUNTRIES = ["US", "FR", "NA", "JP", "BR", "AU", "RU", "ZA", "IN", "GB", "DE", "KE", "MX", "AR"]


def metrics_of(cls: np.ndarray) -> dict[str, float]:
    """The seed's six metrics (as core/metrics.py defines them) for one CLS row."""
    cls = np.asarray(cls, dtype=np.float64).ravel()
    norm = cls / (cls.sum() + 1e-8)
    s = np.sort(norm)[::-1]
    return {
        "attention_entropy": float(-(norm * np.log(norm + 1e-10)).sum()),
        "attention_max": float(cls.max()),
        "attention_concentration_top10": float(s[: int(len(s) * 0.1)].sum()),
        "attention_concentration_top25": float(s[: int(len(s) * 0.25)].sum()),
        "num_high_attention_patches": int((cls > cls.mean()).sum()),
        "attention_spread": float(cls.std()),
    }


def gradient_image(width: int, height: int, seed: int = 0) -> Image.Image:
    a = np.zeros((height, width, 3), np.uint8)
    a[..., 0] = np.linspace(0, 255, width)[None, :].astype(np.uint8)
    a[..., 1] = np.linspace(0, 255, height)[:, None].astype(np.uint8)
    a[..., 2] = (seed * 37) % 256
    return Image.fromarray(a)


def pixel_std(path: Path) -> float:
    with Image.open(path) as im:
        return float(np.asarray(im.convert("RGB"), dtype=np.float64).std())


def assert_not_blank(path: Path, min_bytes: int = 5_000, min_std: float = 10.0) -> np.ndarray:
    path = Path(path)
    assert path.is_file(), path
    assert path.stat().st_size > min_bytes, (path, path.stat().st_size)
    with Image.open(path) as im:
        arr = np.asarray(im.convert("RGB"))
    assert arr.std() > min_std, f"{path} looks blank (std {arr.std():.2f})"
    assert (arr < 250).any(axis=-1).mean() > 0.02, f"{path} is (almost) all white"
    return arr


@pytest.fixture
def dataset(tmp_path):
    """120 gradient photos (792x512 and 512x512) with random peaked maps and their metric rows."""
    rng = np.random.default_rng(0)
    img_dir = tmp_path / "images"
    img_dir.mkdir()
    rows, maps = [], {}
    for i in range(120):
        w, h = (792, 512) if i % 3 else (512, 512)
        path = img_dir / f"img{i:03d}.jpg"
        gradient_image(w, h, i).save(path, quality=85)
        m = rng.gamma(0.5, 1.0, (24, 24)).astype(np.float32)
        m /= m.sum()
        image_id = f"img{i:03d}"
        maps[image_id] = m
        country = COUNTRIES[i % len(COUNTRIES)]
        rows.append({"image_id": image_id, "country": country, "country_name": f"{country}-land",
                     **metrics_of(m), "abs_path": str(path)})
    return pd.DataFrame(rows), maps

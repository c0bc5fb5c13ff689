"""Every pass that runs an encoder reads its pixels through ``core.extract.model_batches``, so the pixel-path
settings its recipe names (ATTN_ASSETS_RESIZE, ATTN_ASSETS_DECODE) are the ones its numbers come from. Before,
rollout, ablation, country relevance and the localization benchmark always used the exact resize while their
recipes said ``crop_region``."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch

from attn_assets.core.ablation import ablate
from attn_assets.core.extract import AttentionExtractor, model_batches, model_preprocessor
from attn_assets.core.loader import ImageRecord
from attn_assets.core.relevance import relevance_maps
from attn_assets.core.rollout import RolloutExtractor
from attn_assets.passes.ablation import compute_ablation_shard
from attn_assets.passes.country_relevance import compute_country_relevance_shard
from attn_assets.passes.recipe import ablation_recipe, country_relevance_recipe, rollout_recipe
from attn_assets.passes.rollout import compute_rollout_shard
from attn_assets.storage.layout import HomeLayout
from attn_assets_tests.conftest import street_scene

# Downscaled photos whose centre crop drops columns or rows: there crop_region's pixels differ from the exact ones.
SIZES = ((97, 61), (150, 90), (61, 97), (211, 67))
LOG = logging.getLogger("test")


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    root = tmp_path_factory.mktemp("pixel_path_home")
    (root / "images").mkdir()
    rows = []
    for n, (width, height) in enumerate(SIZES):
        path = root / "images" / f"img{n}.jpg"
        street_scene(width, height, 70 + n).save(path, quality=90)
        rows.append({"image_id": f"img{n}", "path": path.name, "abs_path": str(path), "member": None,
                     "country": "FR", "shard_key": "shard-00000"})
    rows.append({"image_id": "broken", "path": "broken.jpg", "abs_path": str(root / "images" / "broken.jpg"),
                 "member": None, "country": "FR", "shard_key": "shard-00000"})
    (root / "images" / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    layout = HomeLayout(root)
    layout.manifest_dir.mkdir(parents=True)
    pd.DataFrame(rows).to_parquet(layout.images_parquet)
    return layout


def records(layout: HomeLayout) -> list[ImageRecord]:
    return [ImageRecord(f"img{n}", str(layout.home / "images" / f"img{n}.jpg")) for n in range(len(SIZES))]


def pixels(layout: HomeLayout, encoder, resize: str) -> torch.Tensor:
    """``float32[N, 3, 48, 48]``: the shard's readable images preprocessed with ``resize``."""
    preprocess = model_preprocessor(encoder.processor, resize)
    return torch.cat([batch.pixel_values for batch in model_batches(records(layout), preprocess, encoder.device, 8)])


def test_model_batches_normalise_on_the_device_and_keep_failures(home, tiny_classifier):
    """Exact: the processor's own values (tolerance 0, as in test_preprocess: the lookup holds the processor's
    values per grey level). A file that does not decode stays a failure row of its batch."""
    encoder = tiny_classifier.encoder
    files = records(home) + [ImageRecord("broken", str(home.home / "images" / "broken.jpg"))]
    batches = list(model_batches(files, model_preprocessor(encoder.processor, "exact"), encoder.device, 8))
    assert len(batches) == 1 and [f.image_id for f in batches[0].failures] == ["broken"]
    batch = batches[0]
    assert batch.pixel_values.dtype == torch.float32 and batch.pixel_values.device == encoder.device
    from PIL import Image

    theirs = torch.cat([encoder.processor(images=Image.open(r.path).convert("RGB"), return_tensors="pt")["pixel_values"]
                        for r in records(home)])
    assert torch.equal(batch.pixel_values, theirs)


@pytest.fixture(scope="module")
def both_paths(home, tiny_classifier):
    """The exact and crop_region pixels of the shard; the test is only meaningful where they differ."""
    encoder = tiny_classifier.encoder
    exact, region = pixels(home, encoder, "exact"), pixels(home, encoder, "crop_region")
    assert not torch.equal(exact, region)
    return exact, region


def read(path):
    return pq.read_table(path).to_pandas().set_index("image_id").loc[[f"img{n}" for n in range(len(SIZES))]]


def assert_follows_setting(ours: np.ndarray, region: np.ndarray, exact: np.ndarray) -> None:
    """Tolerance 0: the pass and the reference run the same CPU kernels on the same pixels in a batch of the same
    shape in one process, which PyTorch computes bit for bit alike. crop_region moves one grey level of one
    value per image here, so the exact path's result differs by only ~1e-6: any tolerance would hide it."""
    np.testing.assert_array_equal(ours, region)
    assert float(np.abs(ours - exact).max()) > 0


def test_rollout_pass_uses_the_resize_setting(home, tiny_classifier, both_paths, monkeypatch):
    monkeypatch.setenv("ATTN_ASSETS_RESIZE", "crop_region")
    encoder = tiny_classifier.encoder
    outcome = compute_rollout_shard(layout=home, shard_key="shard-00000", encoder=encoder, model_spec="tiny",
                                    device="cpu", precision="fp32", batch_size=8, num_workers=0, logger=LOG,
                                    recipe=rollout_recipe("tiny", "fp32", "cpu"))
    assert outcome.computed == len(SIZES) and outcome.failed == 1
    ours = np.stack(read(outcome.path)["rollout_map"].to_numpy())
    extractor = RolloutExtractor(encoder, device="cpu", precision="fp32")
    exact, region = (extractor(p)[0].numpy() for p in both_paths)
    assert_follows_setting(ours, region, exact)


def test_ablation_pass_uses_the_resize_setting(home, tiny_classifier, both_paths, monkeypatch):
    monkeypatch.setenv("ATTN_ASSETS_RESIZE", "crop_region")
    encoder = tiny_classifier.encoder
    outcome = compute_ablation_shard(layout=home, shard_key="shard-00000", encoder=encoder, model_spec="tiny",
                                     device="cpu", precision="fp32", batch_size=8, num_workers=0, fraction=1.0,
                                     logger=LOG, recipe=ablation_recipe("tiny", "fp32", "cpu", 1.0))
    ours = read(outcome.path)["cosine_distance_topk"].to_numpy()
    extractor = AttentionExtractor(encoder, device="cpu", precision="fp32")
    ids = [f"img{n}" for n in range(len(SIZES))]
    exact, region = (ablate(extractor, p, ids)["cosine_distance_topk"] for p in both_paths)
    assert_follows_setting(ours, region, exact)


def test_country_relevance_pass_uses_the_resize_setting(home, tiny_classifier, both_paths, monkeypatch):
    monkeypatch.setenv("ATTN_ASSETS_RESIZE", "crop_region")
    recipe = country_relevance_recipe("tiny", "fp32", "cpu", tiny_classifier.prompts.fingerprint, 0.0, "mean", 4)
    assert recipe.parts_dict["resize"] == "crop_region"
    outcome = compute_country_relevance_shard(
        layout=home, shard_key="shard-00000", classifier=tiny_classifier, model_spec="tiny", batch_size=8,
        num_workers=0, recipe=recipe, faithfulness_fraction=0.0, faithfulness_fill="mean", faithfulness_steps=4,
        logger=LOG)
    ours = np.stack(read(outcome.path)["predicted_relevance_map"].to_numpy())
    exact, region = (relevance_maps(tiny_classifier, p, [None]).maps[0].numpy() for p in both_paths)
    assert_follows_setting(ours, region, exact)

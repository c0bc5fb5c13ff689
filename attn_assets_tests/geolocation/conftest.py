"""Fixtures for geolocation: a tiny PLONK network and a tiny StreetCLIP in the Hugging Face hub cache layout.

``plonk.PlonkPipeline("nicolas-dufour/PLONK_OSV_5M")`` hardcodes ``geolocal/StreetCLIP`` for its encoder, so
the tests do not pass paths around: they save both tiny models with ``save_pretrained``, copy them into
``$HF_HOME/hub/models--<org>--<name>/snapshots/<sha>/`` with ``refs/main`` pointing at it, set
HF_HUB_OFFLINE=1, and let diff-plonk's and transformers' own loading code find them.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import math
import os
import shutil
from pathlib import Path

import pytest
import torch

PLONK_REPO = "nicolas-dufour/PLONK_OSV_5M"
STREETCLIP_REPO = "geolocal/StreetCLIP"
TINY_PLONK = dict(input_dim=3, dim=32, depth=2, expansion=2, cond_dim=64)  # cond_dim = the tiny CLIP's width


def sampling_rounding_deg(num_steps: int) -> float:
    """Bound, in degrees, on how far one sampled location can move when only the association of float32 sums
    changes (another batch shape, thread count or implementation of the same arithmetic).

    Higham ("Accuracy and Stability of Numerical Algorithms", eq. 3.5): a length-n float32 dot product is off by
    at most n*u relative (u = 2**-24). The tiny network's widest sum is 64 long (cond_dim, and dim x expansion)
    and one call passes about 6 linear layers; the sampler calls it num_steps times and the errors add (the
    flow does not expand them). That relative error of the unit 3-vector is its angle in radians; x2 for the
    non-linear layers' own rounding. Longitude: divide by cos(latitude).
    """
    return 2 * num_steps * 6 * 64 * 2.0**-24 * 180 / math.pi


def plonk_installed() -> bool:
    return importlib.util.find_spec("plonk") is not None and importlib.util.find_spec("torchvision") is not None


# ATTN_ASSETS_REQUIRE_PLONK=1 (make test-plonk) turns the skip off, so a broken plonk venv fails instead of skipping
requires_plonk = pytest.mark.skipif(
    not plonk_installed() and os.environ.get("ATTN_ASSETS_REQUIRE_PLONK") != "1",
    reason="diff-plonk is not installed here; `make test` runs these in .venv-plonk (make test-plonk)",
)


def save_to_hub_cache(source: Path, hub: Path, repo: str, refs: tuple[str, ...] = ("main",)) -> Path:
    """Copy a save_pretrained folder into the hub cache layout; returns the snapshot folder."""
    commit = hashlib.sha1(repo.encode()).hexdigest()
    base = hub / f"models--{repo.replace('/', '--')}"
    snapshot = base / "snapshots" / commit
    snapshot.mkdir(parents=True, exist_ok=True)
    for item in source.iterdir():
        shutil.copy2(item, snapshot / item.name)
    for ref in refs:
        (base / "refs" / ref).parent.mkdir(parents=True, exist_ok=True)
        (base / "refs" / ref).write_text(commit)
    return snapshot


def save_tiny_streetclip(model_dir: Path, out: Path) -> Path:
    """The tiny CLIP vision model plus the CLIPProcessor PlonkPipeline loads (it needs a tokenizer too)."""
    from transformers import CLIPImageProcessor, CLIPProcessor, CLIPTokenizer

    out.mkdir(parents=True, exist_ok=True)
    for item in model_dir.iterdir():
        shutil.copy2(item, out / item.name)
    vocab, merges = out / "vocab.json", out / "merges.txt"
    vocab.write_text(json.dumps({"<|startoftext|>": 0, "<|endoftext|>": 1, "a</w>": 2, "a": 3}))
    merges.write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizer(vocab_file=str(vocab), merges_file=str(merges))
    CLIPProcessor(image_processor=CLIPImageProcessor.from_pretrained(model_dir), tokenizer=tokenizer).save_pretrained(out)
    vocab.unlink()
    merges.unlink()
    return out


@pytest.fixture(scope="session")
def tiny_plonk_home(tmp_path_factory, tiny_model_dir) -> Path:
    """HF_HOME holding geolocal/StreetCLIP (main and refs/pr/1) and nicolas-dufour/PLONK_OSV_5M, both tiny."""
    from plonk.models.pretrained_models import Plonk

    root = tmp_path_factory.mktemp("hf_home")
    clip = save_tiny_streetclip(tiny_model_dir, root / "build" / "streetclip")
    save_to_hub_cache(clip, root / "hub", STREETCLIP_REPO, refs=("main", "pr/1"))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(7)
        network = Plonk(**TINY_PLONK)
        with torch.no_grad():  # PLONK zero-initialises each block's last layer; give the blocks a say
            for block in network.blocks:
                block.mlp[-1].weight.normal_(0, 0.2)
    network.save_pretrained(root / "build" / "plonk")
    save_to_hub_cache(root / "build" / "plonk", root / "hub", PLONK_REPO)
    shutil.rmtree(root / "build")
    return root


@pytest.fixture
def offline_hub(tiny_plonk_home, monkeypatch) -> Path:
    """Point this process's Hugging Face cache at the tiny models, offline (the constants are read at import)."""
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HOME", str(tiny_plonk_home))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HOME", str(tiny_plonk_home))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tiny_plonk_home / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return tiny_plonk_home

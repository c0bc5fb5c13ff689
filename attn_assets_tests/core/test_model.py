import sys
import types

import pytest
import torch

from attn_assets.core.model import (
    ModelLoadError,
    load_encoder,
    resolve_device,
)
from attn_assets.settings import ENV_ALLOW_PICKLE
from attn_assets_tests.conftest import TINY_IMAGE, tiny_clip_config, tiny_processor


def test_tiny_dir_loads_like_a_user_model(tiny_model_dir):
    encoder = load_encoder(str(tiny_model_dir))
    assert encoder.grid_size == (6, 6) and encoder.num_patches == 36
    assert (encoder.image_size, encoder.patch_size) == (TINY_IMAGE, 8)
    assert (encoder.num_layers, encoder.num_heads, encoder.hidden_size) == (3, 4, 64)
    assert len(encoder.attention_sites) == 3 and not encoder.model.training
    assert encoder.model.config._attn_implementation == "sdpa"


def test_random_tiny_is_deterministic_and_leaves_global_rng_alone():
    state = torch.random.get_rng_state()
    a, b = load_encoder("random:tiny"), load_encoder("random:tiny")
    assert torch.equal(torch.random.get_rng_state(), state)
    for (name, pa), (_, pb) in zip(a.model.state_dict().items(), b.model.state_dict().items()):
        assert torch.equal(pa, pb), name


def test_random_streetclip_shape():
    """Declared StreetCLIP shape and preprocessing (building 300M weights is the slow test below)."""
    from attn_assets.core.model import RANDOM_SHAPES, make_clip_processor
    from attn_assets.core.preprocess import Preprocessor

    assert RANDOM_SHAPES["streetclip"] == (1024, 24, 16, 4096, 14, 336)
    processor = make_clip_processor(336)
    assert int(processor.resample) == 3
    assert Preprocessor(processor, verify=False).output_size == (336, 336)


@pytest.mark.slow
def test_random_streetclip_builds_with_24x24_grid():
    encoder = load_encoder("random:streetclip")
    assert encoder.grid_size == (24, 24) and encoder.num_layers == 24 and encoder.num_heads == 16
    assert encoder.hidden_size == 1024 and encoder.image_size == 336


def test_unknown_random_spec():
    with pytest.raises(ModelLoadError, match="unknown random model"):
        load_encoder("random:nope")


def test_clip_model_dir_loads_vision_tower(tmp_path):
    from transformers import CLIPConfig, CLIPModel

    config = CLIPConfig(
        vision_config=tiny_clip_config().to_dict(),
        text_config=dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                         vocab_size=100, max_position_embeddings=16),
        projection_dim=16,
    )
    torch.manual_seed(0)
    CLIPModel(config).save_pretrained(tmp_path)
    tiny_processor().save_pretrained(tmp_path)
    encoder = load_encoder(str(tmp_path))
    assert type(encoder.model).__name__ in ("CLIPVisionTransformer", "CLIPVisionModel")  # 4.x / 5.x
    assert not hasattr(encoder.model, "text_model")
    assert encoder.grid_size == (6, 6) and encoder.num_layers == 3
    out = encoder.model(pixel_values=torch.zeros(1, 3, TINY_IMAGE, TINY_IMAGE))
    assert out.last_hidden_state.shape == (1, 37, 64)


@pytest.fixture(scope="module")
def vit_dir(tmp_path_factory):
    from transformers import ViTConfig, ViTImageProcessor, ViTModel

    directory = tmp_path_factory.mktemp("vit")
    config = ViTConfig(hidden_size=48, num_hidden_layers=2, num_attention_heads=3, intermediate_size=96,
                       image_size=32, patch_size=8)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = ViTModel(config)
    layers = model.layers if hasattr(model, "layers") else model.encoder.layer
    with torch.no_grad():
        attn = layers[-1].attention
        q = attn.q_proj if hasattr(attn, "q_proj") else attn.attention.query
        q.weight.mul_(20)
    model.save_pretrained(directory)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(directory)
    return directory


def test_vit_model_loads_and_matches_eager(vit_dir, sample_images):
    import numpy as np

    from attn_assets.core.extract import AttentionExtractor, seed_reference
    from attn_assets.core.preprocess import Preprocessor, load_rgb

    encoder = load_encoder(str(vit_dir))
    assert encoder.grid_size == (4, 4) and encoder.num_layers == 2 and encoder.num_heads == 3
    preprocess = Preprocessor(encoder.processor)
    images = [load_rgb(p) for p in list(sample_images.values())[:4]]
    out = AttentionExtractor(encoder).__call__(torch.stack([preprocess(i) for i in images]))
    for i, image in enumerate(images):
        reference = seed_reference(encoder, image)
        assert np.abs(out.last_layer_map()[i].numpy() - reference).max() < 1e-6
    assert encoder.model.config._attn_implementation == "sdpa"


def test_pickle_only_dir_is_refused(tmp_path, tiny_model_dir, monkeypatch):
    from safetensors.torch import load_file

    state = load_file(tiny_model_dir / "model.safetensors")
    for name in ("config.json", "preprocessor_config.json"):
        (tmp_path / name).write_bytes((tiny_model_dir / name).read_bytes())
    torch.save(state, tmp_path / "pytorch_model.bin")
    monkeypatch.delenv(ENV_ALLOW_PICKLE, raising=False)
    with pytest.raises(ModelLoadError, match=f"pickle.*{ENV_ALLOW_PICKLE}=1"):
        load_encoder(str(tmp_path))
    monkeypatch.setenv(ENV_ALLOW_PICKLE, "1")
    encoder = load_encoder(str(tmp_path))
    reference = load_encoder(str(tiny_model_dir))
    for (name, a), (_, b) in zip(encoder.model.state_dict().items(), reference.model.state_dict().items()):
        assert torch.equal(a, b), name


def test_missing_weights_are_refused(tmp_path, tiny_model_dir):
    from safetensors.torch import load_file, save_file

    state = load_file(tiny_model_dir / "model.safetensors")
    dropped = next(k for k in state if "q_proj.weight" in k)
    del state[dropped]
    save_file(state, tmp_path / "model.safetensors", metadata={"format": "pt"})
    for name in ("config.json", "preprocessor_config.json"):
        (tmp_path / name).write_bytes((tiny_model_dir / name).read_bytes())
    with pytest.raises(ModelLoadError, match="missing weights"):
        load_encoder(str(tmp_path))


def test_unexpected_weights_are_refused(tmp_path, tiny_model_dir):
    from safetensors.torch import load_file, save_file

    state = load_file(tiny_model_dir / "model.safetensors")
    state["encoder.layers.0.extra_head.weight"] = torch.zeros(3)
    save_file(state, tmp_path / "model.safetensors", metadata={"format": "pt"})
    for name in ("config.json", "preprocessor_config.json"):
        (tmp_path / name).write_bytes((tiny_model_dir / name).read_bytes())
    with pytest.raises(ModelLoadError, match="unused weights"):
        load_encoder(str(tmp_path))


def test_offline_uncached_hub_id_gives_clear_message(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True, raising=False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"), raising=False)
    with pytest.raises(ModelLoadError) as info:
        load_encoder("geolocal/StreetCLIP")
    message = str(info.value)
    assert "nothing is cached" in message
    assert "export ATTN_ASSETS_MODEL=/path/to/local/StreetCLIP" in message
    assert "refs/pr/1" in message


def test_missing_local_directory(tmp_path):
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_encoder(str(tmp_path / "nope"))


def test_plonk_astrophysics_package_is_named(monkeypatch):
    fake = types.ModuleType("plonk")
    fake.__file__ = "/site-packages/plonk/__init__.py"
    monkeypatch.setitem(sys.modules, "plonk", fake)
    with pytest.raises(ModelLoadError, match="unrelated astrophysics.*pip uninstall plonk"):
        load_encoder("plonk:nicolas-dufour/PLONK_OSV_5M")


def test_plonk_broken_imports_are_explained(monkeypatch):
    fake = types.ModuleType("plonk")

    def broken(repo):
        raise ImportError("No module named 'geoopt'")

    fake.PlonkPipeline = broken
    monkeypatch.setitem(sys.modules, "plonk", fake)
    with pytest.raises(ModelLoadError, match=r"geoopt.*attn-assets\[plonk\]"):
        load_encoder("plonk:nicolas-dufour/PLONK_OSV_5M")


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type in ("cpu", "cuda")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA is not available"):
            resolve_device("cuda:0")
    with pytest.raises(ValueError):
        resolve_device("tpu")

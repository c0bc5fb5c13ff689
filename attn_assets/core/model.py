"""Load a ViT image encoder (and its image processor) from a model spec.

Specs (see DESIGN.md "Contracts"):
- a Hugging Face id (optionally ``id@revision``) or a local directory saved with
  ``save_pretrained``: CLIPVisionModel, CLIPModel (its vision tower), ViTModel, and other
  ViTs with a CLS token whose layers expose q/k projections;
- ``plonk:<repo id>``: the StreetCLIP encoder inside a PLONK pipeline (``pip install
  'attn-assets[plonk]'``);
- ``random:streetclip``, ``random:vit-b16``, ``random:tiny``: seeded untrained models of
  those shapes, for offline smoke runs and benchmarks.

Weights are loaded from safetensors only and never with ``trust_remote_code``; a load that
leaves weights missing or unused fails instead of running on random weights.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

log = logging.getLogger(__name__)

DEFAULT_MODEL = "geolocal/StreetCLIP"
# geolocal/StreetCLIP's main branch holds only a pickle; its safetensors live in PR #1.
DEFAULT_REVISIONS = {"geolocal/StreetCLIP": "refs/pr/1"}
ENV_ALLOW_PICKLE = "ATTN_ASSETS_ALLOW_PICKLE"
ENV_MODEL = "ATTN_ASSETS_MODEL"

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
RANDOM_SEED = 0

# name -> (hidden, layers, heads, intermediate, patch, image)
RANDOM_SHAPES: dict[str, tuple[int, int, int, int, int, int]] = {
    "streetclip": (1024, 24, 16, 4096, 14, 336),  # CLIP ViT-L/14 at 336 px
    "vit-b16": (768, 12, 12, 3072, 16, 224),  # CLIP ViT-B/16 at 224 px
    "tiny": (64, 3, 4, 128, 8, 48),
}


class ModelLoadError(RuntimeError):
    """A model spec could not be turned into a usable encoder; the message says what to do."""


@dataclass
class AttentionSite:
    """Where one transformer layer's self-attention lives.

    ``module`` receives the layer's normalised hidden states (after layer_norm1 /
    layernorm_before) as its first input; ``q`` / ``k`` are its query/key projections.
    """

    module: nn.Module
    q: nn.Linear
    k: nn.Linear
    num_heads: int
    head_dim: int
    scale: float


@dataclass
class Encoder:
    """A loaded ViT encoder: call ``model(pixel_values=...)`` -> ``.last_hidden_state``."""

    model: nn.Module = field(repr=False)
    processor: object = field(repr=False)
    spec: str
    image_size: int
    patch_size: int
    grid_size: tuple[int, int]
    num_layers: int
    num_heads: int
    hidden_size: int
    layers: list[nn.Module] = field(repr=False)
    attention_sites: list[AttentionSite] = field(repr=False)

    @property
    def num_patches(self) -> int:
        return self.grid_size[0] * self.grid_size[1]

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device


# --------------------------------------------------------------------------- devices


def resolve_device(name: str | torch.device | None = "auto") -> torch.device:
    """'auto' -> cuda if available else cpu; 'cuda'/'cuda:N' fail clearly when absent."""
    if isinstance(name, torch.device):
        name = str(name)
    name = (name or "auto").strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise RuntimeError(
                f"device {name!r} was requested but CUDA is not available "
                f"(torch {torch.__version__}, built with CUDA: {torch.version.cuda or 'no'}); "
                "use --device cpu / ATTN_ASSETS_DEVICE=cpu, or install a CUDA build of torch"
            )
        device = torch.device(name)
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise RuntimeError(
                f"device {name!r} was requested but only {torch.cuda.device_count()} CUDA device(s) exist"
            )
        return device
    raise ValueError(f"unknown device {name!r}; use 'auto', 'cpu', 'cuda' or 'cuda:N'")


# --------------------------------------------------------------------------- public entry


def load_encoder(spec: str, device: str | torch.device = "cpu") -> Encoder:
    """Load the encoder named by ``spec`` in eval mode on ``device``."""
    spec = spec.strip()
    target = resolve_device(device)
    if spec.startswith("random:"):
        model, processor = _build_random(spec.split(":", 1)[1])
    elif spec.startswith("plonk:"):
        model, processor = _load_plonk(spec.split(":", 1)[1])
    else:
        model, processor = _load_pretrained(spec)
    model = model.to(target).eval()
    return describe_encoder(model, processor, spec)


def describe_encoder(model: nn.Module, processor: object, spec: str) -> Encoder:
    """Wrap an already-built vision model (e.g. from a notebook) as an Encoder."""
    model = vision_tower(model)
    config = model.config
    image_size = _as_int(config.image_size)
    patch_size = _as_int(config.patch_size)
    grid = (_pair(config.image_size)[0] // _pair(config.patch_size)[0],
            _pair(config.image_size)[1] // _pair(config.patch_size)[1])
    layers = find_layers(model, config.num_hidden_layers)
    sites = [find_attention_site(layer, config.num_attention_heads) for layer in layers]
    return Encoder(
        model=model,
        processor=processor,
        spec=spec,
        image_size=image_size,
        patch_size=patch_size,
        grid_size=grid,
        num_layers=len(layers),
        num_heads=config.num_attention_heads,
        hidden_size=config.hidden_size,
        layers=list(layers),
        attention_sites=sites,
    )


# --------------------------------------------------------------------------- structure


def vision_tower(model: nn.Module) -> nn.Module:
    """CLIPModel -> its ``.vision_model``; CLIPVisionModel stays itself.

    transformers 4.x CLIPVisionModel wraps a ``.vision_model`` too; calling the wrapper is
    equivalent, so only models with a text tower are unwrapped.
    """
    if hasattr(model, "vision_model") and hasattr(model, "text_model"):
        return model.vision_model
    return model


def find_layers(model: nn.Module, num_layers: int) -> nn.ModuleList:
    """The ModuleList of transformer layers (CLIP: encoder.layers; ViT 5.x: layers; 4.x: encoder.layer)."""
    for _, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) == num_layers and len(module) > 0:
            try:
                find_attention_site(module[0], 1)
            except ModelLoadError:
                continue
            return module
    raise ModelLoadError(
        f"{type(model).__name__} is not a supported ViT: found no list of {num_layers} layers "
        "with q/k attention projections"
    )


def find_attention_site(layer: nn.Module, num_heads: int) -> AttentionSite:
    """The shallowest submodule holding q/k projections (CLIP q_proj/k_proj; ViT 4.x query/key)."""
    for _, module in layer.named_modules():
        for q_name, k_name in (("q_proj", "k_proj"), ("query", "key")):
            q, k = getattr(module, q_name, None), getattr(module, k_name, None)
            if isinstance(q, nn.Linear) and isinstance(k, nn.Linear):
                head_dim = q.out_features // num_heads
                scale = getattr(module, "scale", None) or getattr(module, "scaling", None) or head_dim**-0.5
                return AttentionSite(module, q, k, num_heads, head_dim, float(scale))
    raise ModelLoadError(f"layer {type(layer).__name__} exposes no q/k projections")


def _pair(value) -> tuple[int, int]:
    if isinstance(value, (tuple, list)):
        return int(value[0]), int(value[1])
    return int(value), int(value)


def _as_int(value) -> int:
    height, width = _pair(value)
    return height if height == width else max(height, width)


# --------------------------------------------------------------------------- random models


def _build_random(name: str) -> tuple[nn.Module, object]:
    """A seeded untrained CLIP vision model of a known shape, without touching the global RNG."""
    from transformers import CLIPVisionConfig, CLIPVisionModel

    if name not in RANDOM_SHAPES:
        raise ModelLoadError(f"unknown random model {name!r}; choose one of {sorted(RANDOM_SHAPES)}")
    hidden, layers, heads, intermediate, patch, image = RANDOM_SHAPES[name]
    config = CLIPVisionConfig(
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=intermediate,
        patch_size=patch,
        image_size=image,
        projection_dim=min(hidden, 768),
        hidden_act="quick_gelu",
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOM_SEED)
        model = CLIPVisionModel(config)
    return model, make_clip_processor(image)


def make_clip_processor(image_size: int):
    """CLIP's preprocessing (shortest edge, bicubic, center crop, CLIP mean/std) at ``image_size``."""
    from transformers import CLIPImageProcessor

    return CLIPImageProcessor(
        size={"shortest_edge": image_size},
        crop_size={"height": image_size, "width": image_size},
        resample=3,  # bicubic
        image_mean=list(CLIP_MEAN),
        image_std=list(CLIP_STD),
        do_center_crop=True,
        do_convert_rgb=True,
    )


# --------------------------------------------------------------------------- PLONK


PLONK_INSTALL_HINT = "install it with `pip install 'attn-assets[plonk]'` (PyPI diff-plonk; see README 'Geolocation')"


def import_plonk():
    """The diff-plonk package (``import plonk``), or a ModelLoadError that says how to install it."""
    try:
        import plonk
    except ImportError as error:
        raise ModelLoadError(f"the PLONK package `plonk` failed to import ({error}); {PLONK_INSTALL_HINT}") from error
    if not hasattr(plonk, "PlonkPipeline"):
        raise ModelLoadError(
            f"`import plonk` found {getattr(plonk, '__file__', 'a module')} without PlonkPipeline: that is the "
            f"unrelated astrophysics package from PyPI `plonk`. Run `pip uninstall plonk`, then {PLONK_INSTALL_HINT}"
        )
    return plonk


def _load_plonk(repo: str) -> tuple[nn.Module, object]:
    """The StreetCLIP tower and processor inside ``plonk.PlonkPipeline(repo)`` (diff-plonk)."""
    try:
        plonk = import_plonk()
    except ModelLoadError as error:
        raise ModelLoadError(f"spec 'plonk:{repo}': {error}") from error
    try:
        pipeline = plonk.PlonkPipeline(repo)
        cond = pipeline.cond_preprocessing
        return cond.emb_model, cond.processor
    except ImportError as error:
        raise ModelLoadError(f"diff-plonk's own imports failed ({error}); {PLONK_INSTALL_HINT}") from error


# --------------------------------------------------------------------------- pretrained


def _split_revision(spec: str) -> tuple[str, str | None]:
    if "@" in spec and not Path(spec).exists():
        repo, revision = spec.rsplit("@", 1)
        return repo, revision or None
    return spec, DEFAULT_REVISIONS.get(spec)


def _pickle_allowed() -> bool:
    return os.environ.get(ENV_ALLOW_PICKLE, "").strip().lower() in {"1", "true", "yes"}


def _require_weights_only_torch() -> None:
    major, minor = (int(p) for p in torch.__version__.split(".")[:2])
    if (major, minor) < (2, 6):
        raise ModelLoadError(
            f"{ENV_ALLOW_PICKLE}=1 needs torch >= 2.6 for weights-only pickle loading; found {torch.__version__}"
        )


def _check_local_weights(path: Path) -> bool:
    """True when a local directory's weights are safetensors; refuse pickle-only unless opted in."""
    if not (path / "config.json").is_file():
        raise ModelLoadError(f"{path} has no config.json; save the model there with save_pretrained()")
    if any(path.glob("*.safetensors")) or (path / "model.safetensors.index.json").is_file():
        return True
    pickles = sorted(p.name for p in path.glob("*.bin")) + sorted(p.name for p in path.glob("*.pt*"))
    if not pickles:
        raise ModelLoadError(f"{path} has no model weights (model.safetensors)")
    if not _pickle_allowed():
        raise ModelLoadError(
            f"{path} holds only pickle weights ({', '.join(pickles)}), which can run arbitrary code when "
            f"loaded. Convert them to safetensors (load and save_pretrained with safe_serialization), or "
            f"opt in with {ENV_ALLOW_PICKLE}=1 (weights-only loading, torch >= 2.6)"
        )
    _require_weights_only_torch()
    return False


def _hub_error(spec: str, revision: str | None, error: Exception) -> ModelLoadError:
    """Turn a hub failure into a message that says what happened and what to do."""
    text = str(error)
    offline = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}
    where = f"{spec!r}" + (f" (revision {revision})" if revision else "")
    if "safetensors" in text and not ("connect" in text or "offline" in text.lower()):
        return ModelLoadError(
            f"{where} has no model.safetensors; only pickle weights, which this project refuses by default. "
            f"Pick a revision with safetensors (spec id@revision) or opt in with {ENV_ALLOW_PICKLE}=1"
        )
    not_found = ("is not a local folder and is not a valid model identifier" in text
                 or "Repository Not Found" in text or "404" in text)
    if not_found and not offline:
        return ModelLoadError(f"model {where} was not found on the Hugging Face Hub or on disk: {text}")
    try:
        from huggingface_hub.constants import HF_HUB_CACHE as cache
    except ImportError:  # pragma: no cover - very old huggingface_hub
        cache = "the Hugging Face cache"
    reason = "HF_HUB_OFFLINE is set" if offline else "the Hugging Face Hub could not be reached"
    return ModelLoadError(
        f"could not load model {where}: {reason} and nothing is cached for it in {cache}. "
        "Connect once to fill the cache, or point the pipeline at a local copy saved with "
        "save_pretrained():\n"
        f"    export {ENV_MODEL}=/path/to/local/StreetCLIP\n"
        f"(underlying error: {type(error).__name__}: {text.splitlines()[0] if text else ''})"
    )


def _model_class(model_type: str):
    import transformers

    classes = {
        "clip": transformers.CLIPModel,
        "clip_vision_model": transformers.CLIPVisionModel,
        "vit": transformers.ViTModel,
    }
    return classes.get(model_type, transformers.AutoModel)


# Families without a CLS token (pooled by attention-pooling heads instead).
_NO_CLS_TOKEN = ("siglip",)

# Weights a checkpoint may carry that we do not use (ViT's pooler head).
_IGNORABLE_UNEXPECTED = ("pooler.",)


def _check_loading_info(spec: str, info: dict) -> None:
    missing = list(info.get("missing_keys") or [])
    unexpected = [k for k in (info.get("unexpected_keys") or []) if not k.startswith(_IGNORABLE_UNEXPECTED)]
    mismatched = list(info.get("mismatched_keys") or [])
    problems = []
    if missing:
        problems.append(f"missing weights (would be random): {missing[:8]}{' ...' if len(missing) > 8 else ''}")
    if unexpected:
        problems.append(f"unused weights: {unexpected[:8]}{' ...' if len(unexpected) > 8 else ''}")
    if mismatched:
        problems.append(f"weights with mismatched shapes: {mismatched[:8]}")
    if problems:
        raise ModelLoadError(
            f"refusing to run {spec!r} with partly random weights: " + "; ".join(problems)
            + ". The checkpoint does not match this transformers version's layout "
            "(e.g. a CLIPVisionModel saved by transformers 5 read by 4.x); re-save it with the installed version"
        )


def _load_pretrained(spec: str) -> tuple[nn.Module, object]:
    from transformers import AutoConfig, AutoImageProcessor

    repo, revision = _split_revision(spec)
    local = Path(repo).expanduser()
    safetensors = True
    if local.is_dir():
        safetensors = _check_local_weights(local)
        repo, revision = str(local), None
    elif repo.startswith(("/", "./", "../", "~")) or local.exists():
        raise ModelLoadError(f"model directory {repo} does not exist (or is not a directory)")
    elif _pickle_allowed():
        _require_weights_only_torch()

    common = {"revision": revision, "trust_remote_code": False}

    def failure(error: Exception) -> ModelLoadError:
        if local.is_dir():
            return ModelLoadError(f"could not load the model saved in {repo}: {error}")
        return _hub_error(repo, revision, error)

    try:
        config = AutoConfig.from_pretrained(repo, **common)
    except (OSError, ValueError) as error:
        raise failure(error) from error
    model_type = getattr(config, "model_type", "")
    if model_type.startswith(_NO_CLS_TOKEN):
        raise ModelLoadError(f"{spec!r} is a {model_type} model, which has no CLS token to take attention from")
    vision_config = getattr(config, "vision_config", config)
    if not all(hasattr(vision_config, name) for name in ("image_size", "patch_size", "num_attention_heads")):
        raise ModelLoadError(
            f"{spec!r} is a {model_type or 'unknown'} model, not a Vision Transformer with a CLS token. "
            "Set ATTN_ASSETS_MODEL to a CLIP vision model (e.g. geolocal/StreetCLIP), a CLIPModel or a ViTModel"
        )
    cls = _model_class(model_type)
    kwargs = dict(common, use_safetensors=safetensors, output_loading_info=True)
    if not safetensors:
        kwargs["weights_only"] = True
    if model_type == "vit":
        kwargs["add_pooling_layer"] = False
    try:
        model, info = cls.from_pretrained(repo, **kwargs)
    except RuntimeError as error:  # e.g. weights whose shapes do not match the config
        raise ModelLoadError(f"the weights of {spec!r} do not fit its config.json: {error}") from error
    except OSError as error:
        if not local.is_dir() and "safetensors" in str(error) and _pickle_allowed():
            kwargs.update(use_safetensors=False, weights_only=True)
            model, info = cls.from_pretrained(repo, **kwargs)
        else:
            raise failure(error) from error
    _check_loading_info(spec, info)
    try:
        processor = AutoImageProcessor.from_pretrained(repo, **common)
    except (OSError, ValueError) as error:
        raise ModelLoadError(
            f"{spec!r} loaded but its image processor (preprocessor_config.json) could not be: {error}"
        ) from error
    return model, processor

"""Load a ViT image encoder (and its image processor) from a model spec.

Specs:
- a Hugging Face id (optionally ``id@revision``) or a local directory saved with
  ``save_pretrained``, of one of the ``ARCHITECTURES``: CLIPVisionModel, CLIPModel (its vision
  tower), ViTModel, DeiTModel (CLS + distillation token), Dinov2Model and
  Dinov2WithRegistersModel (CLS + register tokens), SiglipVisionModel and SiglipModel (its vision tower; no CLS
  token: the attention-pooling head's probe row stands in for it, see ``pooling_attention_site``); every other
  architecture is refused by name;
- ``plonk:<repo id>``: the StreetCLIP encoder inside a PLONK pipeline (``pip install
  'attn-assets[plonk]'``);
- ``random:streetclip``, ``random:vit-b16``, ``random:tiny``: seeded untrained models of
  those shapes, for offline smoke runs and benchmarks;
- ``demo``: the small CLIPModel trained on the demo scenes (``attn_assets.training.demo_model``), committed in
  the repository's ``models/demo`` folder (``DEMO_MODEL_DIR``) and loaded through the same local-folder path as
  any saved model (a folder of your own named ``demo`` is reached as ``./demo``).

Weights are loaded from safetensors only and never with ``trust_remote_code``; a load that
leaves weights missing or unused fails instead of running on random weights.

Every inconsistency between the image processor and the model that can be seen at load time
(the crop differs from ``config.image_size`` for a model with fixed position embeddings, a crop
that is not a whole number of patches, a processor without normalisation mean/std, an input
size that varies per image, ...) raises ``ModelLoadError`` naming the file and the setting; the
token layout (prefix tokens, then the patch grid of the processor's crop) is checked with a
probe through the patch embedding before the encoder is returned.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import PIL.Image
import torch
from torch import nn

from attn_assets.path_text import path_to_text, text_to_path
from attn_assets.settings import ENV_ALLOW_PICKLE, hub_offline, pickle_allowed
from .preprocess import ProcessorSizeError, image_processor_of, processor_input_size

log = logging.getLogger(__name__)

# geolocal/StreetCLIP's main branch holds only a pickle; its safetensors live in PR #1.
DEFAULT_REVISIONS = {"geolocal/StreetCLIP": "refs/pr/1"}
ENV_MODEL = "ATTN_ASSETS_MODEL"
DEMO_SPEC = "demo"
#: The demo model's folder in a source checkout (the repository's models/demo).
DEMO_MODEL_DIR = Path(__file__).resolve().parents[2] / "models" / "demo"

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
    """A loaded ViT encoder: call ``model(pixel_values=...)`` -> ``.last_hidden_state[B, T, D]``.

    Token layout of each image's sequence, ``T = num_prefix_tokens + grid_h * grid_w``: index 0
    is CLS, then the distillation token (DeiT), then ``num_register_tokens`` registers (DINOv2 with
    registers), then the patches row-major. ``input_size`` (H, W) is the processor's crop, the
    pixel values' spatial shape; ``grid_size`` = ``input_size // patch_size``, which differs from
    ``config.image_size // patch_size`` for models that interpolate position embeddings (DINOv2).
    """

    model: nn.Module = field(repr=False)
    processor: object = field(repr=False)
    spec: str
    image_size: int  # side of the model's input (the processor's crop); max side if not square
    patch_size: int
    grid_size: tuple[int, int]
    num_layers: int
    num_heads: int
    hidden_size: int
    layers: list[nn.Module] = field(repr=False)
    attention_sites: list[AttentionSite] = field(repr=False)
    input_size: tuple[int, int] = (0, 0)  # (H, W) of pixel_values
    architecture: str = ""  # class name, e.g. "Dinov2WithRegistersModel"
    num_register_tokens: int = 0
    has_distillation_token: bool = False
    has_cls_token: bool = True  # False for SigLIP: the patches start at token 0
    pooling_site: AttentionSite | None = field(default=None, repr=False)  # SigLIP's probe over the last layer's output

    @property
    def num_patches(self) -> int:
        return self.grid_size[0] * self.grid_size[1]

    @property
    def num_prefix_tokens(self) -> int:
        """Tokens before the patches: CLS, the distillation token (DeiT), the registers."""
        return int(self.has_cls_token) + int(self.has_distillation_token) + self.num_register_tokens

    @property
    def register_columns(self) -> slice:
        """Token indices of the register tokens (empty slice for models without registers)."""
        start = int(self.has_cls_token) + int(self.has_distillation_token)
        return slice(start, start + self.num_register_tokens)

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
    """Load the encoder named by ``spec`` in eval mode on ``device``.

    Raises ModelLoadError (one line: what, which file and setting, what to do) for anything that
    would make extraction fail or be wrong later: unsupported architectures, a processor that does
    not fit the model, missing or unused weights, pickle-only weights, an unreachable hub.
    """
    spec = spec.strip()
    target = resolve_device(device)
    sources, settings = None, None
    if spec.startswith("random:"):
        model, processor = _build_random(spec.split(":", 1)[1])
    elif spec.startswith("plonk:"):
        model, processor = _load_plonk(spec.split(":", 1)[1])
    else:
        model, processor, sources, settings = _load_pretrained(spec)
    model = model.to(target).eval()
    return describe_encoder(model, processor, spec, sources=sources, processor_settings=settings)


def describe_encoder(
    model: nn.Module,
    processor: object,
    spec: str,
    *,
    sources: ModelSources | None = None,
    processor_settings: dict | None = None,
) -> Encoder:
    """Wrap an already-built vision model (e.g. from a notebook) as an Encoder.

    Checks that the architecture is supported and that ``processor`` fits the model
    (``check_processor_fits``), takes the patch grid from the processor's crop, and probes the
    token layout (CLS, distillation token, registers, then the grid) through the patch embedding.
    ``sources`` names the files for error messages; ``processor_settings`` is the raw
    preprocessor_config.json (to see settings it leaves to class defaults).
    """
    model = vision_tower(model)
    config = model.config
    sources = sources or ModelSources(f"spec {spec!r}", "the model config", "the image processor")
    arch = architecture_of(model, sources)
    input_size = check_processor_fits(config, processor, arch, sources, processor_settings)
    patch = _pair(config.patch_size)
    grid = (input_size[0] // patch[0], input_size[1] // patch[1])
    if input_size != _pair(config.image_size):  # only architectures that interpolate get here
        log.info("%s: the processor crops %dx%d while %s says image_size %s; %s interpolates its position "
                 "embeddings, so the patch grid is %dx%d", sources.model, *input_size, sources.config_file,
                 config.image_size, arch.name, *grid)
    layers = find_layers(model, config.num_hidden_layers)
    sites = [find_attention_site(layer, config.num_attention_heads) for layer in layers]
    encoder = Encoder(
        model=model,
        processor=processor,
        spec=spec,
        image_size=_as_int(input_size),
        patch_size=_as_int(config.patch_size),
        grid_size=grid,
        num_layers=len(layers),
        num_heads=config.num_attention_heads,
        hidden_size=config.hidden_size,
        layers=list(layers),
        attention_sites=sites,
        input_size=input_size,
        architecture=type(model).__name__,
        num_register_tokens=int(getattr(config, "num_register_tokens", 0) or 0) if arch.has_register_tokens else 0,
        has_distillation_token=arch.has_distillation_token,
        has_cls_token=not arch.pools_with_probe,
        pooling_site=pooling_attention_site(model, sources) if arch.pools_with_probe else None,
    )
    probe_token_layout(encoder, sources)
    return encoder


# --------------------------------------------------------------------------- architectures


@dataclass(frozen=True)
class Architecture:
    """What the loader knows about one supported ``config.model_type``.

    ``interpolates_position_embeddings``: the forward we run (``model(pixel_values=...)``, without
    ``interpolate_pos_encoding``) resizes the position embeddings to the input's patch grid, so the
    processor's crop may differ from ``config.image_size`` (DINOv2 always interpolates; CLIP, ViT
    and DeiT only when ``interpolate_pos_encoding=True`` is passed, which extraction does not do).
    """

    name: str
    interpolates_position_embeddings: bool
    has_distillation_token: bool = False
    has_register_tokens: bool = False  # config.num_register_tokens registers right after CLS
    pools_with_probe: bool = False  # no CLS token; an attention-pooling head's probe reads the patches (SigLIP)


ARCHITECTURES: dict[str, Architecture] = {
    "clip": Architecture("CLIPModel", False),
    "clip_vision_model": Architecture("CLIPVisionModel", False),
    "vit": Architecture("ViTModel", False),
    "deit": Architecture("DeiTModel", False, has_distillation_token=True),
    "dinov2": Architecture("Dinov2Model", True),
    "dinov2_with_registers": Architecture("Dinov2WithRegistersModel", True, has_register_tokens=True),
    "siglip": Architecture("SiglipModel", False, pools_with_probe=True),
    "siglip_vision_model": Architecture("SiglipVisionModel", False, pools_with_probe=True),
}
# Model types whose vision tower has a config of its own (config.vision_config) and that model type.
_TOWER_TYPES = {"clip": "clip_vision_model", "siglip": "siglip_vision_model"}

# Why some families cannot be supported (model_type prefix -> reason); others get a generic reason.
_REFUSED_FAMILIES: dict[str, str] = {
    "siglip2": "its processor cuts each photo into a variable number of patches (NaFlex) with an attention mask, "
               "not a fixed [3, H, W] input",
    "beit": "it adds a relative position bias to the attention scores, so softmax(q_cls . K^T) is not its attention",
    "data2vec-vision": "it adds a relative position bias to the attention scores, so softmax(q_cls . K^T) is not "
                       "its attention",
    "vit_mae": "its forward pass drops a random 75% of the patches",
    "dinov3": "it rotates queries and keys (RoPE), so softmax(q_cls . K^T) of the projections is not its attention",
    "swin": "it attends within shifted windows and has no CLS token",
    "convnext": "it is a convolutional network without attention or a CLS token",
    "resnet": "it is a convolutional network without attention or a CLS token",
}


@dataclass(frozen=True)
class ModelSources:
    """Names for load-time error messages: what was loaded and the files its settings come from."""

    model: str  # e.g. "the model folder /models/x", "model 'org/name'", "spec 'random:tiny'"
    config_file: str = "config.json"
    processor_file: str = "preprocessor_config.json"


def _refusal(sources: ModelSources, problem: str, fix: str) -> ModelLoadError:
    return ModelLoadError(f"cannot use {sources.model}: {problem}. {fix}")


def _supported_names() -> str:
    return ", ".join(dict.fromkeys(a.name for a in ARCHITECTURES.values()))


def _unsupported(class_name: str, config, sources: ModelSources) -> ModelLoadError:
    model_type = str(getattr(config, "model_type", "") or "")
    vision = getattr(config, "vision_config", config)
    reason = next((why for prefix, why in _REFUSED_FAMILIES.items() if model_type.startswith(prefix)), None)
    if reason is None and not all(hasattr(vision, name) for name in ("image_size", "patch_size")):
        reason = f"it is a {model_type or 'non-vision'} model, not a Vision Transformer with a CLS token"
    elif reason is None:
        reason = ("its token layout and attention are not ones this loader knows (a CLS token, optional "
                  "distillation/register tokens, then a patch grid, with plain softmax(q . K^T) attention)")
    return _refusal(
        sources,
        f"{class_name} ({sources.config_file}: model_type {model_type!r}) is not supported: {reason}",
        f"Use one of {_supported_names()}",
    )


def architecture_of(model: nn.Module, sources: ModelSources) -> Architecture:
    """The supported Architecture of a (vision-tower) model, or a ModelLoadError naming its class."""
    model_type = str(getattr(model.config, "model_type", "") or "")
    arch = ARCHITECTURES.get(model_type)
    if arch is None:
        raise _unsupported(type(model).__name__, model.config, sources)
    return arch


def _setting(processor: object, name: str, default=None):
    value = getattr(processor, name, default)
    return default if value is None else value


def _is_number(value) -> bool:
    """A JSON number (int or float, numpy scalars too); not text such as "0.5", not true/false."""
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))


def _channel_values(value) -> list[float] | None:
    items = list(value) if isinstance(value, (list, tuple, np.ndarray)) else [value]
    if not all(_is_number(v) for v in items):
        return None
    values = [float(v) for v in items]
    return values if len(values) in (1, 3) else None


_FLAG_SETTINGS = ("do_resize", "do_center_crop", "do_rescale", "do_normalize", "do_convert_rgb")
_RESAMPLE_NAMES = {int(r): r.name.lower() for r in PIL.Image.Resampling}


def _check_setting_types(processor: object, sources: ModelSources) -> None:
    """Refuse settings written with the wrong JSON type, which the image processor accepts at load and fails on
    (or silently misreads) for every image: a flag as text (``"false"`` is true), a number as text, an unknown
    resampling filter."""
    pfile = sources.processor_file
    for key in _FLAG_SETTINGS:
        value = getattr(processor, key, None)
        if value is not None and not isinstance(value, (bool, np.bool_)):
            raise _refusal(sources, f"{pfile} {key} is {_as_written(value)}, not true or false",
                           f"Write {key} in {pfile} as true or false, without quotes")
    rescale = getattr(processor, "rescale_factor", None)
    if rescale is not None and not _is_number(rescale):
        raise _refusal(sources, f"{pfile} rescale_factor is {_as_written(rescale)}, not a number",
                       f'Write "rescale_factor": {1 / 255} in {pfile}, without quotes')
    resample = getattr(processor, "resample", None)
    if _setting(processor, "do_resize", True) and resample is not None and not _is_resample(resample):
        known = ", ".join(f"{k} {v}" for k, v in sorted(_RESAMPLE_NAMES.items()))
        raise _refusal(sources, f"{pfile} resample is {_as_written(resample)}, not a PIL resampling filter ({known})",
                       f'Set "resample" in {pfile} to the filter the model was trained with (CLIP, ViT and DINOv2: '
                       "3, bicubic)")


def _is_resample(value) -> bool:
    if isinstance(value, (bool, np.bool_, str, float, np.floating)):
        return False
    if isinstance(value, (int, np.integer)):
        return int(value) in _RESAMPLE_NAMES
    return True  # another library's filter object (e.g. torchvision's InterpolationMode): the processor's own


def _as_written(value) -> str:
    """A setting as it reads in the JSON file (tuples shown as lists)."""
    try:
        return json.dumps(list(value) if isinstance(value, tuple) else value)
    except (TypeError, ValueError):
        return repr(value)


def check_processor_fits(
    config, processor: object, arch: Architecture, sources: ModelSources, settings: dict | None = None
) -> tuple[int, int]:
    """Refuse a processor that does not fit the model; return the input size (H, W) it produces.

    Checks, each a ModelLoadError naming the file and the setting: rescaling and normalisation on,
    with 1 or 3 ``image_mean`` / ``image_std`` values written in the processor's file (``settings``,
    when known; a missing key would silently fall back to the processor class's default); one fixed,
    unpadded input size (``processor_input_size``); 3 input channels; for models with fixed position
    embeddings an input of exactly ``config.image_size``; an input that is a whole number of patches.
    """
    pfile, cfile, name = sources.processor_file, sources.config_file, arch.name
    processor = image_processor_of(processor)  # CLIPProcessor (PLONK's) -> its CLIPImageProcessor
    _check_setting_types(processor, sources)
    if not _setting(processor, "do_rescale", True):
        raise _refusal(sources, f"{pfile} sets do_rescale false: pixels would reach {name} as 0-255, not 0-1",
                       f'Set "do_rescale": true (with "rescale_factor": 1/255) in {pfile}')
    if not _setting(processor, "do_normalize", True):
        raise _refusal(sources, f"{pfile} sets do_normalize false: {name} would see unnormalised pixels",
                       f'Set "do_normalize": true with the image_mean and image_std the model was trained with in {pfile}')
    rescale = float(_setting(processor, "rescale_factor", 1 / 255))
    if abs(rescale * 255 - 1) > 1e-6:
        raise _refusal(sources, f"{pfile} rescale_factor is {rescale}, not 1/255: pixels would not reach {name} in 0-1",
                       f'Set "rescale_factor": {1 / 255} in {pfile}')
    for key in ("image_mean", "image_std"):
        missing = settings is not None and key not in settings
        values = _channel_values(getattr(processor, key, None))
        # on 0-1 pixels a channel mean lies in [0, 1] and a std in (0, 1] (0-255 values are a common mistake)
        low = 0.0 if key == "image_mean" else 1e-12
        if missing or values is None or any(not low <= v <= 1 for v in values):
            what = (f"{pfile} has no {key}, so {type(processor).__name__} would silently use its class default "
                    f"{getattr(processor, key, None)}, which need not be what {name} was trained with"
                    if missing else f"{pfile} {key} {_as_written(getattr(processor, key, None))} is not 3 (or 1) numbers in "
                    + ("[0, 1]" if key == "image_mean" else "(0, 1]") + " (the scale of rescaled pixels)")
            raise _refusal(sources, what,
                           f'Write the model\'s "image_mean" and "image_std" into {pfile} (CLIP: {list(CLIP_MEAN)} / '
                           f"{list(CLIP_STD)}; ImageNet, as DINOv2 and most ViTs: [0.485, 0.456, 0.406] / "
                           "[0.229, 0.224, 0.225])")
    patch = _pair(config.patch_size)
    expected = _pair(config.image_size)
    if min(patch) <= 0 or min(expected) <= 0:
        setting = "patch_size" if min(patch) <= 0 else "image_size"
        raise _refusal(sources, f"{cfile} {setting} is {getattr(config, setting)}, not a positive number of pixels",
                       f"Use the config.json saved with these weights")
    try:
        height, width = processor_input_size(processor)
    except ProcessorSizeError as error:
        example = expected if not arch.interpolates_position_embeddings else (16 * patch[0], 16 * patch[1])
        raise _refusal(
            sources, f"{pfile} setting {error.setting}: {error}",
            f'Give {pfile} a centre crop the model can take ("do_center_crop": true, "crop_size": '
            f'{{"height": {example[0]}, "width": {example[1]}}} and "size": {{"shortest_edge": {max(example)}}})',
        ) from error
    crop_setting = "crop_size" if _setting(processor, "do_center_crop", False) else "size"
    channels = int(getattr(config, "num_channels", 3) or 3)
    if channels != 3:
        raise _refusal(sources, f"{cfile} num_channels is {channels}, but the image processor makes RGB (3 channels)",
                       "Use an RGB model")
    if (height, width) != expected and not arch.interpolates_position_embeddings:
        grid = (expected[0] // patch[0], expected[1] // patch[1])
        raise _refusal(
            sources,
            f"{pfile} {crop_setting} makes {height}x{width} inputs, but {name} expects {expected[0]}x{expected[1]} "
            f"({cfile}: image_size {config.image_size}); its position embeddings cover a {grid[0]}x{grid[1]} grid of "
            f"{patch[0]}-px patches and extraction does not interpolate them",
            f"Save the image processor that belongs to these weights beside them (one that crops "
            f"{expected[0]}x{expected[1]}), or point the model spec at the weights this processor was made for",
        )
    if height % patch[0] or width % patch[1]:
        raise _refusal(
            sources,
            f"{pfile} {crop_setting} makes {height}x{width} inputs, which is not a whole number of "
            f"{patch[0]}x{patch[1]}-px patches ({cfile}: patch_size {config.patch_size}): "
            f"{height / patch[0]:.2f} x {width / patch[1]:.2f} patches",
            f"Set {crop_setting} in {pfile} to a multiple of {patch[0]} "
            f"(e.g. {max(patch[0], height // patch[0] * patch[0])}x{max(patch[1], width // patch[1] * patch[1])})",
        )
    return height, width


class _ProbeDone(Exception):
    """Raised by the token-layout probe's hook to stop the forward after the embeddings."""


def probe_token_layout(encoder: Encoder, sources: ModelSources | None = None) -> int:
    """Run a zero image of ``encoder.input_size`` through the patch embedding; return its token count T.

    The forward is stopped at the first attention layer's input (``[1, T, D]``), so this costs one
    patch embedding. Refuses (ModelLoadError) an input the embedding rejects, or a token count other
    than ``num_prefix_tokens + grid_h * grid_w`` (e.g. registers the config does not declare).
    """
    sources = sources or ModelSources(f"spec {encoder.spec!r}", "the model config", "the image processor")
    seen: dict[str, int] = {}

    def hook(module, args, kwargs):
        hidden = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]
        seen["tokens"] = int(hidden.shape[1])
        raise _ProbeDone

    height, width = encoder.input_size
    parameter = next(encoder.model.parameters())
    pixels = torch.zeros(1, 3, height, width, device=parameter.device, dtype=parameter.dtype)
    handle = encoder.attention_sites[0].module.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        with torch.inference_mode():
            encoder.model(pixel_values=pixels)
    except _ProbeDone:
        pass
    except (RuntimeError, ValueError) as error:
        first = str(error).splitlines()[0] if str(error) else ""
        raise _refusal(
            sources,
            f"a {height}x{width} input (the crop of {sources.processor_file}) does not go through "
            f"{encoder.architecture}'s patch embedding ({type(error).__name__}: {first})",
            f"Save the image processor that belongs to these weights beside them ({sources.config_file}: "
            f"image_size {getattr(encoder.model.config, 'image_size', '?')})",
        ) from error
    finally:
        handle.remove()
    expected = encoder.num_prefix_tokens + encoder.num_patches
    tokens = seen.get("tokens")
    if tokens != expected:
        layout = " + ".join(
            part for part in ("1 CLS", "1 distillation" if encoder.has_distillation_token else "",
                              f"{encoder.num_register_tokens} register" if encoder.num_register_tokens else "",
                              f"{encoder.grid_size[0]}x{encoder.grid_size[1]} patch") if part
        )
        raise _refusal(
            sources,
            f"{encoder.architecture} makes {tokens} tokens from a {height}x{width} input, not the {expected} of its "
            f"declared layout ({layout} tokens; {sources.config_file})",
            "Check the model's config.json (num_register_tokens, patch_size) against its weights",
        )
    return tokens


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


class InProjection:
    """One of q/k/v out of ``nn.MultiheadAttention``'s packed ``in_proj_weight[3D, D]`` / ``in_proj_bias[3D]``.

    Read from the module at each access (``.weight`` ``[D, D]``, ``.bias`` ``[D]``), so it follows the module
    across ``.to(device)`` and dtype changes instead of holding a stale slice.
    """

    def __init__(self, attention: nn.MultiheadAttention, part: int):
        self.attention, self.part = attention, part

    def _rows(self, packed: torch.Tensor | None) -> torch.Tensor | None:
        size = self.attention.embed_dim
        return None if packed is None else packed[self.part * size : (self.part + 1) * size]

    @property
    def weight(self) -> torch.Tensor:
        return self._rows(self.attention.in_proj_weight)

    @property
    def bias(self) -> torch.Tensor | None:
        return self._rows(self.attention.in_proj_bias)


def pooling_attention_site(model: nn.Module, sources: ModelSources | None = None) -> AttentionSite:
    """The attention of SigLIP's pooling head (SiglipMultiheadAttentionPoolingHead, "MAP" of Zhai et al. 2023).

    SigLIP has no CLS token: after the last layer (and ``post_layernorm``) a learned probe ``[1, 1, D]`` attends
    over the patch tokens with ``nn.MultiheadAttention``; that probe's attention row ``[heads, N_patches]`` is the
    analogue of the CLS row. The site's ``module`` is the ``nn.MultiheadAttention`` (called as
    ``attention(probe, hidden, hidden)``), ``q`` / ``k`` the first two thirds of its packed ``in_proj``, scale
    ``head_dim ** -0.5`` as torch's ``multi_head_attention_forward`` applies. ModelLoadError when the model has
    no such head (``vision_use_head`` false) or its attention does not pack q/k/v in one ``in_proj_weight``.
    """
    sources = sources or ModelSources(f"{type(model).__name__}")
    head = getattr(model, "head", None)
    attention = getattr(head, "attention", None)
    if getattr(head, "probe", None) is None or not isinstance(attention, nn.MultiheadAttention):
        raise _refusal(sources, f"{type(model).__name__} has no attention-pooling head ({sources.config_file}: "
                                f"vision_use_head {getattr(model.config, 'vision_use_head', None)}), so there is no "
                                "probe row to stand in for a CLS row",
                       "Use a SigLIP checkpoint with its pooling head (vision_use_head true)")
    if attention.in_proj_weight is None:
        raise _refusal(sources, "its pooling head's nn.MultiheadAttention keeps separate q/k/v projections "
                                "(kdim/vdim differ from embed_dim)", "Use a SigLIP checkpoint as transformers builds it")
    head_dim = attention.embed_dim // attention.num_heads
    return AttentionSite(attention, InProjection(attention, 0), InProjection(attention, 1), attention.num_heads,
                         head_dim, float(head_dim**-0.5))


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
    """(hub id or folder, revision) of a spec; ``demo`` is the folder ``DEMO_MODEL_DIR``."""
    if spec == DEMO_SPEC:
        if not (DEMO_MODEL_DIR / "config.json").is_file():
            raise ModelLoadError(
                f"model spec 'demo' names the folder {DEMO_MODEL_DIR}, which has no config.json: the demo model is "
                "committed in the repository's models/demo (use a source checkout), or train it there with "
                "`python -m attn_assets.training.demo_model --out models/demo`"
            )
        return str(DEMO_MODEL_DIR), None
    if "@" in spec and not Path(spec).exists():
        repo, revision = spec.rsplit("@", 1)
        return repo, revision or None
    return spec, DEFAULT_REVISIONS.get(spec)


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
    if not pickle_allowed():
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
    offline = hub_offline()
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
        "deit": transformers.DeiTModel,
        "dinov2": transformers.Dinov2Model,
        "dinov2_with_registers": transformers.Dinov2WithRegistersModel,
        "siglip": transformers.SiglipModel,
        "siglip_vision_model": transformers.SiglipVisionModel,
    }
    return classes[model_type]


# Model types whose base class takes add_pooling_layer (the pooler is not used here).
_POOLER_TYPES = ("vit", "deit")

# Weights a checkpoint may carry that we do not use: heads that read last_hidden_state and never feed
# back into the encoder (ViT/DeiT pooler; the classifiers of ViTForImageClassification and of DeiT's
# distilled checkpoints, DeiTForImageClassificationWithTeacher, which are how DeiT ships on the hub).
_IGNORABLE_UNEXPECTED = ("pooler.", "classifier.", "cls_classifier.", "distillation_classifier.")


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


def _load_pretrained(spec: str) -> tuple[nn.Module, object, ModelSources, dict | None]:
    """(model, processor, the sources for messages, the raw processor settings) of a hub id or folder.

    Order: config -> supported architecture -> image processor -> processor fits the config ->
    weights, so that a bad folder is refused before any weights are read or downloaded.
    """
    from transformers import AutoConfig, AutoImageProcessor

    repo, revision = _split_revision(spec)
    local = Path(text_to_path(repo)).expanduser()  # a folder may be named by its escaped text (\\xNN)
    safetensors = True
    if local.is_dir():
        _refuse_non_utf8_folder(local)
        safetensors = _check_local_weights(local)
        repo, revision = str(local), None
    elif repo.startswith(("/", "./", "../", "~")) or local.exists():
        raise ModelLoadError(f"model directory {repo} does not exist (or is not a directory)")
    elif pickle_allowed():
        _require_weights_only_torch()

    common = {"revision": revision, "trust_remote_code": False}
    if local.is_dir():
        processor_name = "preprocessor_config.json"
        if not (local / processor_name).is_file() and (local / "processor_config.json").is_file():
            processor_name = "processor_config.json"
        sources = ModelSources(f"the model folder {local}", str(local / "config.json"), str(local / processor_name))
    else:
        where = f"model {repo!r}" + (f" (revision {revision})" if revision else "")
        sources = ModelSources(where, f"config.json of {repo}", f"preprocessor_config.json of {repo}")

    def failure(error: Exception) -> ModelLoadError:
        if local.is_dir():
            return ModelLoadError(f"could not load the model saved in {repo}: {error}")
        return _hub_error(repo, revision, error)

    try:
        config = AutoConfig.from_pretrained(repo, **common)
    except (OSError, ValueError) as error:
        raise failure(error) from error
    except Exception as error:  # huggingface_hub's StrictDataclassError: a setting transformers refuses
        if not type(error).__name__.startswith("StrictDataclass"):
            raise
        raise _config_refusal(error, sources) from error
    model_type = str(getattr(config, "model_type", "") or "")
    if model_type not in ARCHITECTURES:
        class_name = (getattr(config, "architectures", None) or [type(config).__name__.replace("Config", "Model")])[0]
        raise _unsupported(class_name, config, sources)
    vision_config = config.vision_config if model_type in _TOWER_TYPES else config
    try:
        processor = AutoImageProcessor.from_pretrained(repo, **common)
    except (OSError, ValueError) as error:
        raise ModelLoadError(
            f"{spec!r} loaded but its image processor (preprocessor_config.json) could not be: {error}"
        ) from error
    settings = _processor_settings(repo, revision)
    arch = ARCHITECTURES[_TOWER_TYPES.get(model_type, model_type)]
    check_processor_fits(vision_config, processor, arch, sources, settings)
    cls = _model_class(model_type)
    kwargs = dict(common, use_safetensors=safetensors, output_loading_info=True)
    if not safetensors:
        kwargs["weights_only"] = True
    if model_type in _POOLER_TYPES:
        kwargs["add_pooling_layer"] = False
    try:
        model, info = cls.from_pretrained(repo, **kwargs)
    except RuntimeError as error:  # e.g. weights whose shapes do not match the config
        raise ModelLoadError(f"the weights of {spec!r} do not fit its config.json: {error}") from error
    except OSError as error:
        if not local.is_dir() and "safetensors" in str(error) and pickle_allowed():
            kwargs.update(use_safetensors=False, weights_only=True)
            model, info = cls.from_pretrained(repo, **kwargs)
        else:
            raise failure(error) from error
    _check_loading_info(spec, info)
    return model, processor, sources, settings


def _refuse_non_utf8_folder(folder: Path) -> None:
    """Refuse a model folder whose path is not valid UTF-8 (a Latin-1 name): safetensors and the tokenizers
    open paths as UTF-8 only ("Path ... is not valid UTF-8"), and the Hugging Face loaders take no file objects."""
    text = path_to_text(folder)
    if text != os.fspath(folder):
        raise ModelLoadError(
            f"cannot use the model folder '{text}': its path is not valid UTF-8 (a Latin-1 name, shown with \\xNN "
            "for the bytes that are not UTF-8), and safetensors opens UTF-8 paths only. Rename the folder (and any "
            "folder above it with such a name) to a UTF-8 name, e.g. `convmv -f latin1 -t utf-8 -r --notest <folder>`, "
            "and set the model spec to the new path"
        )


def _config_refusal(error: Exception, sources: ModelSources) -> ModelLoadError:
    """A transformers config validation error (StrictDataclass*Error) as one line naming config.json and the setting."""
    import re

    text = str(error)
    field_name = re.search(r"field '([^']+)'", text)
    reason = text.splitlines()[-1].strip() if text.strip() else type(error).__name__
    reason = re.sub(r"^\w+Error: ", "", reason).split(" Errors: ")[0].rstrip(".")
    if field_name:
        setting = field_name.group(1)
    elif "attention heads" in reason:
        setting = "num_attention_heads"
    else:
        validator = re.search(r"validator '([^']+)'", text)
        setting = f"(transformers check {validator.group(1)})" if validator else "(a transformers check)"
    return _refusal(sources, f"{sources.config_file} setting {setting}: {reason}",
                    f"Fix {setting} in {sources.config_file} (use the config.json saved with these weights)")


def _processor_settings(repo: str, revision: str | None) -> dict | None:
    """The processor's settings as written in its file (None when they cannot be read back)."""
    from transformers.image_processing_utils import ImageProcessingMixin

    try:
        settings, _ = ImageProcessingMixin.get_image_processor_dict(repo, revision=revision)
    except (OSError, ValueError):
        return None
    return dict(settings.get("image_processor", settings)) if isinstance(settings, dict) else None


# --------------------------------------------------------------------------- model randomization


#: Seed of `randomized_encoder`'s weights; not RANDOM_SEED, so the randomized copy of a ``random:*`` model differs
#: from the model itself.
RANDOMIZATION_SEED = 1


def randomized_encoder(encoder: Encoder, seed: int = RANDOMIZATION_SEED) -> Encoder:
    """The same architecture, config and image processor as ``encoder``, with freshly initialised weights.

    The model-randomization sanity check of Adebayo et al. 2018 ("Sanity Checks for Saliency Maps", NeurIPS): a
    map that does not change when the weights are randomized does not explain what the model learned. The copy is
    built as ``type(model)(model.config)`` under ``torch.manual_seed(seed)`` (transformers' own initialisation for
    a PreTrainedModel, PyTorch's default layer initialisation for an inner tower such as CLIPModel's
    ``vision_model``), without touching the global RNG; it is placed on ``encoder``'s device and dtype, in eval
    mode. Its spec is ``encoder.spec + "#randomized"``.
    """
    return describe_encoder(randomized_module(encoder.model, seed), encoder.processor, f"{encoder.spec}#randomized")


def randomized_module(model: nn.Module, seed: int = RANDOMIZATION_SEED) -> nn.Module:
    """``type(model)(model.config)`` built under ``torch.manual_seed(seed)`` (global RNG untouched), on ``model``'s
    device and dtype, in eval mode: the same architecture with fresh weights (see `randomized_encoder`)."""
    reference = next(model.parameters())
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        fresh = type(model)(model.config)
    return fresh.to(device=reference.device, dtype=reference.dtype).eval()

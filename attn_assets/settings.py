"""Settings read from the environment, shared by the CLI, the Dagster resources and the library.

This is the only module that reads the environment. The names and defaults are a contract (see README
"Settings"); everything else reads them through `Settings.from_env()` or the functions below, so a notebook,
the CLI and Dagster agree. It imports nothing heavy (no torch, no Dagster), so every layer may use it.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, replace
from pathlib import Path

from attn_assets.path_text import path_to_text, text_to_path

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_HOME = REPO_ROOT / "data"
DEFAULT_DEMO_DIR = DEFAULT_HOME / "demo"
DEFAULT_MANIFEST = DEFAULT_DEMO_DIR / "test.csv"
DEFAULT_MODEL = "geolocal/StreetCLIP"
DEFAULT_SHARD_SIZE = 1000
DEFAULT_NUM_WORKERS = min(4, os.cpu_count() or 1)
#: The Dagster instance settings every entry point puts in a DAGSTER_HOME that has none (telemetry off).
DAGSTER_YAML = REPO_ROOT / "dagster.yaml"

ENV_HOME = "ATTN_ASSETS_HOME"
ENV_MANIFEST = "ATTN_ASSETS_MANIFEST"
ENV_IMAGE_ROOT = "ATTN_ASSETS_IMAGE_ROOT"
ENV_MODEL = "ATTN_ASSETS_MODEL"
ENV_DEVICE = "ATTN_ASSETS_DEVICE"
ENV_BATCH_SIZE = "ATTN_ASSETS_BATCH_SIZE"
ENV_SHARD_SIZE = "ATTN_ASSETS_SHARD_SIZE"
ENV_PRECISION = "ATTN_ASSETS_PRECISION"
ENV_NUM_WORKERS = "ATTN_ASSETS_NUM_WORKERS"
ENV_FAILURE_RATE_WARN = "ATTN_ASSETS_FAILURE_RATE_WARN"
ENV_GALLERY_SIZE = "ATTN_ASSETS_GALLERY_SIZE"
ENV_ABLATION_FRACTION = "ATTN_ASSETS_ABLATION_FRACTION"
ENV_COUNTRIES = "ATTN_ASSETS_COUNTRIES"
ENV_CAPTION_TEMPLATE = "ATTN_ASSETS_CAPTION_TEMPLATE"
ENV_FAITHFULNESS_FRACTION = "ATTN_ASSETS_FAITHFULNESS_FRACTION"
ENV_FAITHFULNESS_FILL = "ATTN_ASSETS_FAITHFULNESS_FILL"
ENV_PLONK_MODEL = "ATTN_ASSETS_PLONK_MODEL"
ENV_PLONK_STEPS = "ATTN_ASSETS_PLONK_STEPS"
ENV_PLONK_SAMPLES = "ATTN_ASSETS_PLONK_SAMPLES"
ENV_PLONK_SEED = "ATTN_ASSETS_PLONK_SEED"
ENV_PLONK_CFG = "ATTN_ASSETS_PLONK_CFG"
ENV_ALLOW_PICKLE = "ATTN_ASSETS_ALLOW_PICKLE"
ENV_PROGRESS_BAR = "ATTN_ASSETS_PROGRESS_BAR"
ENV_RESIZE = "ATTN_ASSETS_RESIZE"
ENV_DECODE = "ATTN_ASSETS_DECODE"
ENV_MODELS = "ATTN_ASSETS_MODELS"
#: Renamed to ATTN_ASSETS_MODELS (round 2); still read only to say so.
ENV_COMPARE_MODELS = "ATTN_ASSETS_COMPARE_MODELS"
ENV_DAGSTER_HOME = "DAGSTER_HOME"
#: PLONK's model and sampling: the riemannian flow sampler's step count as PlonkPipeline uses it, 16 samples per
#: image (their spherical medoid is the prediction), seed 0, classifier-free guidance off (PlonkPipeline's default).
DEFAULT_PLONK_MODEL = "nicolas-dufour/PLONK_OSV_5M"
DEFAULT_PLONK_STEPS = 250
DEFAULT_PLONK_SAMPLES = 16
DEFAULT_PLONK_SEED = 0
DEFAULT_PLONK_CFG = 0.0


def _env(name: str) -> str | None:
    value = os.environ.get(name, "").strip()
    return value or None


def is_set(name: str) -> bool:
    """Whether the variable ``name`` is set to something other than blanks."""
    return _env(name) is not None


def _env_int(name: str, default: int | None, minimum: int = 1) -> int | None:
    raw = _env(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not an integer; set it to a whole number such as 8") from None
    if value < minimum:
        raise ValueError(f"{name}={value} must be at least {minimum}")
    return value


def _env_float(name: str, default: float) -> float:
    raw = _env(name)
    if raw is None:
        return default
    try:
        return float(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not a number; set it to e.g. 0.05") from None


def path_setting(value: str) -> str:
    """A path setting as a path to open: escaped text (``\\xNN`` for non-UTF-8 bytes, the form every table and
    log writes, see attn_assets.path_text) becomes the raw name again; other values are unchanged."""
    if "\\x" not in value:
        return value

    return text_to_path(value)


def is_utf8_path(path: str | os.PathLike) -> bool:
    """False for a path holding non-UTF-8 bytes (a Latin-1 name), which DuckDB cannot open."""
    try:
        os.fspath(path).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def non_utf8_path_message(what: str, path: str | os.PathLike) -> str:
    """Why a warehouse location is refused: DuckDB opens only UTF-8 paths (it fails with std::bad_cast)."""

    return (f"{what} '{path_to_text(path)}' is not a valid UTF-8 path (its non-UTF-8 bytes are shown as \\xNN), "
            "and the DuckDB warehouse cannot be opened under it. Use a folder whose path is UTF-8: rename it "
            "(e.g. `convmv -f latin1 -t utf-8 -r --notest <folder>`) or choose another")


def _home_setting() -> Path:
    home = Path(path_setting(_env(ENV_HOME) or str(DEFAULT_HOME))).expanduser().resolve()
    if not is_utf8_path(home):
        raise ValueError(non_utf8_path_message(ENV_HOME, home))
    return home


def default_batch_size(device: str) -> int:
    """Batching is the main lever on a GPU (it fills the device) and buys little on a CPU, where a forward pass
    already uses every core."""
    return 64 if device.startswith("cuda") else 4


def model_setting() -> str:
    """The default model spec: the first of ATTN_ASSETS_MODELS when set (validated as :func:`models_setting`
    does: ATTN_ASSETS_MODEL, e.g. from ``--model``, naming another model is an error, never silently ignored),
    else ATTN_ASSETS_MODEL (default StreetCLIP)."""
    if _env(ENV_MODELS) is not None:
        return models_setting()[0].spec
    return _env(ENV_MODEL) or DEFAULT_MODEL


def device_setting() -> str:
    """ATTN_ASSETS_DEVICE: auto, cpu, cuda or cuda:N."""
    return _env(ENV_DEVICE) or "auto"


def num_workers_setting() -> int:
    """ATTN_ASSETS_NUM_WORKERS: image-decoding processes (0 decodes inline; default min(4, cores))."""
    return _env_int(ENV_NUM_WORKERS, DEFAULT_NUM_WORKERS, minimum=0)


#: Preprocessing resize modes (core.preprocess): the processor's pixels exactly, or the faster crop-region resize.
RESIZE_MODES = ("exact", "crop_region")


def resize_setting() -> str:
    """ATTN_ASSETS_RESIZE: ``exact`` (default; the processor's pixels bit for bit) or ``crop_region`` (resizes only the
    region that lands in the centre crop: faster, within 2 grey levels on a few pixels; see README 'The data path')."""
    return _choice_setting(ENV_RESIZE, RESIZE_MODES)


def _choice_setting(name: str, choices: tuple[str, ...]) -> str:
    """The setting ``name``, lower-cased, one of ``choices`` (unset: the first). Raises ValueError naming it."""
    value = (_env(name) or choices[0]).lower()
    if value not in choices:
        raise ValueError(f"{name}={value!r}: use one of {', '.join(choices)}")
    return value


DECODE_MODES = ("exact", "device")


def decode_setting() -> str:
    """ATTN_ASSETS_DECODE: ``exact`` (default; PIL decodes and resizes, the processor's pixels bit for bit) or
    ``device`` (JPEGs decoded and resized on the model's device with torchvision: up to 2 grey levels off on a few
    pixels on the CPU, more where nvJPEG decodes on CUDA; see attn_assets.core.device_decode and README 'The data
    path')."""
    return _choice_setting(ENV_DECODE, DECODE_MODES)


def image_root_setting() -> str | None:
    """ATTN_ASSETS_IMAGE_ROOT as written (None when unset): the folder relative image paths start from."""
    return _env(ENV_IMAGE_ROOT)


def _env_flag(name: str, true_values: frozenset[str] = frozenset({"1", "true", "yes"})) -> bool:
    return (_env(name) or "").lower() in true_values


def pickle_allowed() -> bool:
    """ATTN_ASSETS_ALLOW_PICKLE=1: a model that exists only as pickle weights may be loaded (weights-only)."""
    return _env_flag(ENV_ALLOW_PICKLE)


def progress_bar_setting() -> bool:
    """ATTN_ASSETS_PROGRESS_BAR=1 (set by `attn-assets materialize`): shard passes draw a progress bar."""
    return _env(ENV_PROGRESS_BAR) == "1"


def dagster_home_setting(home: Path) -> Path:
    """DAGSTER_HOME, the Dagster instance's folder; default ``home/dagster_home`` (``home``: ATTN_ASSETS_HOME)."""
    return Path(path_setting(_env(ENV_DAGSTER_HOME) or str(home / "dagster_home"))).expanduser()


def cuda_visible_devices() -> str | None:
    """CUDA_VISIBLE_DEVICES as the process sees it (None when unset, "" when set to hide every GPU)."""
    return os.environ.get("CUDA_VISIBLE_DEVICES")


def hub_offline() -> bool:
    """HF_HUB_OFFLINE as huggingface_hub reads it: the hub is not asked, only its cache."""
    return _env_flag("HF_HUB_OFFLINE", frozenset({"1", "true", "yes", "on"}))


def hub_cache_dir() -> Path:
    """The Hugging Face hub cache, as huggingface_hub resolves it, read from the environment now."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    try:
        from huggingface_hub.constants import HF_HUB_CACHE

        return Path(HF_HUB_CACHE)
    except ImportError:  # pragma: no cover
        return Path("~/.cache/huggingface/hub").expanduser()


@dataclass(frozen=True)
class Settings:
    home: Path
    manifest: str
    image_root: Path | None
    model: str
    device: str
    batch_size: int | None
    shard_size: int
    precision: str
    num_workers: int
    failure_rate_warn: float
    gallery_size: int
    plonk_model: str
    plonk_steps: int
    plonk_samples: int
    plonk_seed: int
    plonk_cfg: float

    @classmethod
    def from_env(cls) -> "Settings":
        return cls(
            home=_home_setting(),
            manifest=path_setting(_env(ENV_MANIFEST) or str(DEFAULT_MANIFEST)),
            image_root=Path(path_setting(root)).expanduser().resolve() if (root := image_root_setting()) else None,
            model=model_setting(),
            device=device_setting(),
            batch_size=_env_int(ENV_BATCH_SIZE, None),
            shard_size=_env_int(ENV_SHARD_SIZE, DEFAULT_SHARD_SIZE),
            precision=_env(ENV_PRECISION) or "auto",
            num_workers=num_workers_setting(),
            failure_rate_warn=_env_float(ENV_FAILURE_RATE_WARN, 0.05),
            gallery_size=_env_int(ENV_GALLERY_SIZE, 10),
            plonk_model=_env(ENV_PLONK_MODEL) or DEFAULT_PLONK_MODEL,
            plonk_steps=_env_int(ENV_PLONK_STEPS, DEFAULT_PLONK_STEPS),
            plonk_samples=_env_int(ENV_PLONK_SAMPLES, DEFAULT_PLONK_SAMPLES),
            plonk_seed=_env_int(ENV_PLONK_SEED, DEFAULT_PLONK_SEED, minimum=0),
            plonk_cfg=_env_float(ENV_PLONK_CFG, DEFAULT_PLONK_CFG),
        )

    def with_overrides(self, **changes) -> "Settings":
        return replace(self, **{k: v for k, v in changes.items() if v is not None})


def ablation_fraction_from_env() -> float:
    """ATTN_ASSETS_ABLATION_FRACTION: the share of images of each shard the ablation pass samples (0 = off).

    Raises ValueError naming the setting when it is not a number in [0, 1].
    """
    raw = os.environ.get(ENV_ABLATION_FRACTION, "").strip()
    if not raw:
        return 0.0
    try:
        value = float(raw)
    except ValueError as error:
        raise ValueError(f"{ENV_ABLATION_FRACTION}={raw!r} is not a number; use a fraction in [0, 1]") from error
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{ENV_ABLATION_FRACTION}={raw!r} must lie in [0, 1]")
    return value


@dataclass(frozen=True)
class ModelEntry:
    """One encoder of ATTN_ASSETS_MODELS: ``key`` names it in tables, folders and Dagster partitions; ``spec`` is
    what ``core.model.load_encoder`` loads."""

    key: str
    spec: str


_MODEL_KEY = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")


def model_key_for(spec: str) -> str:
    """The default key of a model spec: its last path component, lower-cased, anything outside ``[a-z0-9._-]``
    replaced by '-' (``geolocal/StreetCLIP`` -> ``streetclip``, ``random:vit-b16`` -> ``random-vit-b16``)."""
    tail = spec.rstrip("/\\").replace("\\", "/").rsplit("/", 1)[-1] or spec
    key = re.sub(r"[^a-z0-9._-]+", "-", tail.lower()).strip("-.") or "model"
    return key[:64]


def _model_item(item: str) -> tuple[str, str]:
    """(key or '', spec) of one ATTN_ASSETS_MODELS item: ``key=spec``, or a spec (a path whose folder names hold
    '=' is a spec)."""
    key, sep, spec = item.partition("=")
    if not sep or "/" in key or "\\" in key:
        return "", item.strip()
    return key.strip(), spec.strip()


def models_setting() -> tuple[ModelEntry, ...]:
    """ATTN_ASSETS_MODELS: the encoders to run, comma-separated, the first the default (the one the plain tables,
    figures and analyses show). Each item is a spec or ``key=spec`` (key: ``[a-z0-9._-]``, at most 64 characters;
    default :func:`model_key_for`). Unset: the one model of ATTN_ASSETS_MODEL.

    Raises ValueError naming the setting when an item is empty or malformed, two items share a key or a spec, or
    ATTN_ASSETS_MODEL names a different default; and when the retired ATTN_ASSETS_COMPARE_MODELS is set.
    """
    if _env(ENV_COMPARE_MODELS) is not None:
        raise ValueError(f"{ENV_COMPARE_MODELS} was renamed {ENV_MODELS}: list the encoders there, the default "
                         f"(first) one included, e.g. {ENV_MODELS}=geolocal/StreetCLIP,openai/clip-vit-large-patch14-336")
    raw = _env(ENV_MODELS)
    if raw is None:
        spec = _env(ENV_MODEL) or DEFAULT_MODEL
        return (ModelEntry(model_key_for(spec), spec),)
    entries: list[ModelEntry] = []
    for position, item in enumerate(raw.split(","), start=1):
        item = item.strip()
        key, spec = _model_item(item)
        if not spec:
            raise ValueError(f"{ENV_MODELS}={raw!r}: item {position} is empty; separate model specs by single commas")
        key = key or model_key_for(spec)
        if not _MODEL_KEY.match(key) or "..." in key:
            raise ValueError(f"{ENV_MODELS}: key {key!r} of item {position} must match [a-z0-9][a-z0-9._-]* "
                             "(at most 64 characters, no '...': Dagster reads it as a partition range); name the "
                             f"model with key=spec, e.g. my-model={spec}")
        for earlier in entries:
            if earlier.spec.rstrip("/\\") == spec.rstrip("/\\"):  # a folder with and without its trailing '/'
                raise ValueError(f"{ENV_MODELS}: {spec!r} is listed twice; list each model once")
            if earlier.key == key:
                raise ValueError(f"{ENV_MODELS}: {earlier.spec!r} and {spec!r} both have the key {key!r}; name one, "
                                 f"e.g. {ENV_MODELS}=...,other-{key}={spec}")
        entries.append(ModelEntry(key, spec))
    single = _env(ENV_MODEL)
    if single is not None and single != entries[0].spec:
        raise ValueError(f"{ENV_MODEL}={single!r} but {ENV_MODELS} lists {entries[0].spec!r} first (the default): "
                         f"unset {ENV_MODEL}, or list {single!r} first")
    return tuple(entries)


def country_list_setting() -> tuple[str, ...] | None:
    """ATTN_ASSETS_COUNTRIES: the zero-shot country list, ISO 3166-1 alpha-2 codes separated by commas or spaces
    (None when unset: core.zero_shot.DEFAULT_COUNTRY_CODES)."""
    raw = _env(ENV_COUNTRIES)
    if raw is None:
        return None
    return tuple(code.strip().upper() for code in raw.replace(",", " ").split() if code.strip())


def caption_template_setting() -> str | None:
    """ATTN_ASSETS_CAPTION_TEMPLATE: the zero-shot caption, with ``{}`` for the country name (None when unset:
    core.zero_shot.DEFAULT_TEMPLATE). Read verbatim (surrounding spaces kept off)."""
    return _env(ENV_CAPTION_TEMPLATE)


def faithfulness_fraction_from_env() -> float:
    """ATTN_ASSETS_FAITHFULNESS_FRACTION: the share of each shard's images that get deletion and insertion curves
    (default 0.1; 0 = none). Raises ValueError naming the setting when it is not a number in [0, 1]."""
    raw = os.environ.get(ENV_FAITHFULNESS_FRACTION, "").strip()
    if not raw:
        return 0.1
    try:
        value = float(raw)
    except ValueError as error:
        raise ValueError(f"{ENV_FAITHFULNESS_FRACTION}={raw!r} is not a number; use a fraction in [0, 1]") from error
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{ENV_FAITHFULNESS_FRACTION}={raw!r} must lie in [0, 1]")
    return value


def faithfulness_fill_setting() -> str:
    """ATTN_ASSETS_FAITHFULNESS_FILL: what replaces a removed patch, ``mean`` (default: the processor's mean
    pixel) or ``blur`` (a blurred copy); see core.faithfulness."""
    value = (_env(ENV_FAITHFULNESS_FILL) or "mean").lower()
    if value not in ("mean", "blur"):
        raise ValueError(f"{ENV_FAITHFULNESS_FILL}={value!r}: use 'mean' or 'blur'")
    return value

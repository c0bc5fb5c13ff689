"""Dagster resources, configured from the environment (README "Settings").

Each field shows in the UI as coming from its ATTN_ASSETS_* variable when that variable is
set, and as the documented default otherwise.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import dagster as dg

from attn_assets import settings as S
from attn_assets.storage.layout import HomeLayout
from attn_assets.storage.warehouse import Warehouse

_ENCODER_CACHE: dict[tuple, object] = {}  # per process: encoders and PLONK networks
_ENCODER_LOCK = threading.Lock()
_OTHER_ENCODER: dict[str, object] = {}  # per process: the one non-default listed model loaded now


def _setting(name: str, default):
    """EnvVar when the variable is set (so the UI shows where the value came from), else the default."""
    if S.is_set(name):
        if isinstance(default, bool):
            return dg.EnvVar(name)
        if isinstance(default, int):
            return dg.EnvVar.int(name)
        if isinstance(default, float):
            return dg.EnvVar.float(name)
        return dg.EnvVar(name)
    return default


class PipelineResource(dg.ConfigurableResource):
    """Where inputs come from and outputs go."""

    home: str = str(S.DEFAULT_HOME)
    manifest: str = str(S.DEFAULT_MANIFEST)
    image_root: str = ""
    shard_size: int = S.DEFAULT_SHARD_SIZE
    failure_rate_warn: float = 0.05
    gallery_size: int = 10

    @property
    def layout(self) -> HomeLayout:
        return HomeLayout(Path(self.home).expanduser().resolve())

    @property
    def image_root_path(self) -> Path | None:
        return Path(S.path_setting(self.image_root)).expanduser().resolve() if self.image_root else None


class WarehouseResource(dg.ConfigurableResource):
    """The DuckDB file; writers serialize through a file lock and log while they wait."""

    home: str = str(S.DEFAULT_HOME)
    wait_timeout_s: float = 600.0

    def warehouse(self, logger: logging.Logger | None = None) -> Warehouse:
        return Warehouse(HomeLayout(Path(self.home).expanduser().resolve()).warehouse_path,
                         wait_timeout_s=self.wait_timeout_s, logger=logger)


class AttentionModelResource(dg.ConfigurableResource):
    """The encoder, loaded once per process and shared by every shard that process runs."""

    model: str = S.DEFAULT_MODEL
    device: str = "auto"
    batch_size: int = 0
    precision: str = "auto"
    num_workers: int = S.DEFAULT_NUM_WORKERS
    progress_bar: bool = False

    def resolved_device(self) -> str:
        from attn_assets.core.model import resolve_device

        return str(resolve_device(self.device))

    def resolved_batch_size(self) -> int:
        return self.batch_size or S.default_batch_size(self.resolved_device())

    def encoder(self):
        """Load (or reuse) the encoder; raises before any output is touched if it cannot load."""
        from attn_assets.core.model import load_encoder

        device = self.resolved_device()
        key = (self.model, device)
        with _ENCODER_LOCK:
            if key not in _ENCODER_CACHE:
                _ENCODER_CACHE[key] = load_encoder(self.model, device=device)
            return _ENCODER_CACHE[key]

    def encoder_for(self, spec: str):
        """The encoder of one listed model (ATTN_ASSETS_MODELS): the default one is :meth:`encoder`'s; any other is
        kept in a one-model slot, so running models one after another holds one extra model at a time (the
        previous one is released first). Raises ModelLoadError when it cannot load."""
        if spec == self.model:
            return self.encoder()
        from attn_assets.core.model import load_encoder

        device = self.resolved_device()
        with _ENCODER_LOCK:
            held = _OTHER_ENCODER.get("key")
            if held != (spec, device):
                release_other_encoder()
                encoder = load_encoder(spec, device=device)
                _OTHER_ENCODER.update(key=(spec, device), encoder=encoder)
            return _OTHER_ENCODER["encoder"]


def release_other_encoder() -> None:
    """Drop the one-model slot of :meth:`AttentionModelResource.encoder_for` and return its memory (Python garbage,
    then CUDA's cached blocks)."""
    import gc

    device = (_OTHER_ENCODER.get("key") or (None, ""))[1]
    _OTHER_ENCODER.clear()
    gc.collect()
    if str(device).startswith("cuda"):
        import torch

        torch.cuda.empty_cache()


class GeolocationModelResource(dg.ConfigurableResource):
    """PLONK's network and sampling settings, loaded once per process (README "Geolocation")."""

    plonk_model: str = S.DEFAULT_PLONK_MODEL
    device: str = "auto"
    num_steps: int = S.DEFAULT_PLONK_STEPS
    num_samples: int = S.DEFAULT_PLONK_SAMPLES
    seed: int = S.DEFAULT_PLONK_SEED
    cfg: float = S.DEFAULT_PLONK_CFG

    def geolocator(self):
        """Load (or reuse) the PLONK network; raises a ModelLoadError saying what to install or cache."""
        from attn_assets.core.geolocation import PlonkGeolocator, SamplingConfig
        from attn_assets.core.model import resolve_device

        device = str(resolve_device(self.device))
        sampling = SamplingConfig(num_steps=self.num_steps, num_samples=self.num_samples, seed=self.seed, cfg=self.cfg)
        key = ("plonk", self.plonk_model, device, sampling)
        with _ENCODER_LOCK:
            if key not in _ENCODER_CACHE:
                _ENCODER_CACHE[key] = PlonkGeolocator(self.plonk_model, device=device, sampling=sampling)
            return _ENCODER_CACHE[key]


def resources_from_env() -> dict[str, dg.ConfigurableResource]:
    cfg = S.Settings.from_env()
    home = _setting(S.ENV_HOME, str(cfg.home))
    return {
        "pipeline": PipelineResource(
            home=home,
            manifest=_setting(S.ENV_MANIFEST, cfg.manifest),
            image_root=_setting(S.ENV_IMAGE_ROOT, str(cfg.image_root or "")),
            shard_size=_setting(S.ENV_SHARD_SIZE, cfg.shard_size),
            failure_rate_warn=_setting(S.ENV_FAILURE_RATE_WARN, cfg.failure_rate_warn),
            gallery_size=_setting(S.ENV_GALLERY_SIZE, cfg.gallery_size),
        ),
        "warehouse": WarehouseResource(home=home),
        "attention_model": AttentionModelResource(
            model=_setting(S.ENV_MODEL, cfg.model),
            device=_setting(S.ENV_DEVICE, cfg.device),
            batch_size=_setting(S.ENV_BATCH_SIZE, cfg.batch_size or 0),
            precision=_setting(S.ENV_PRECISION, cfg.precision),
            num_workers=_setting(S.ENV_NUM_WORKERS, cfg.num_workers),
            progress_bar=S.progress_bar_setting(),
        ),
        "geolocation_model": GeolocationModelResource(
            plonk_model=_setting(S.ENV_PLONK_MODEL, cfg.plonk_model),
            device=_setting(S.ENV_DEVICE, cfg.device),
            num_steps=_setting(S.ENV_PLONK_STEPS, cfg.plonk_steps),
            num_samples=_setting(S.ENV_PLONK_SAMPLES, cfg.plonk_samples),
            seed=_setting(S.ENV_PLONK_SEED, cfg.plonk_seed),
            cfg=_setting(S.ENV_PLONK_CFG, cfg.plonk_cfg),
        ),
    }

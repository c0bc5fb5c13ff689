"""PLONK geolocation from stored CLS embeddings, and the distance scores of geolocation benchmarks.

PLONK (Dufour et al. 2025, PyPI ``diff-plonk``, imports as ``plonk``) predicts GPS coordinates
from ``last_hidden_state[:, 0]`` of the StreetCLIP tower with a flow-matching network. The
attention pass already computes that embedding, so predictions need only PLONK's small network:
``PlonkGeolocator`` loads it with ``Plonk.from_pretrained(repo)`` (the same call
``plonk.PlonkPipeline`` makes) and samples with the pipeline's own sampler, scheduler,
preconditioning and post-processing, without loading StreetCLIP a second time.

Sampling is seeded per image (``image_seed(image_id) ^ seed``), so a prediction does not depend
on the batch or shard an image lands in, nor on the device.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from attn_assets.core.analyses import image_seed
from attn_assets.core.model import PLONK_INSTALL_HINT, ModelLoadError, import_plonk, resolve_device
from attn_assets.metric_names import ACCURACY_THRESHOLDS_KM
from attn_assets.settings import (
    DEFAULT_PLONK_CFG,
    DEFAULT_PLONK_MODEL,
    DEFAULT_PLONK_SAMPLES,
    DEFAULT_PLONK_SEED,
    DEFAULT_PLONK_STEPS,
)

EARTH_RADIUS_KM = 6371.0  # as in PLONK's and OSV-5M's evaluation code
GEOSCORE_MAX = 5000.0
GEOSCORE_SCALE_KM = 1492.7  # GeoGuessr's decay, used for OSV-5M's GeoScore


# --------------------------------------------------------------------------- distances and scores


def haversine_km(lat1_deg, lon1_deg, lat2_deg, lon2_deg) -> np.ndarray:
    """Great-circle distance in km between points given in degrees (broadcasts like numpy)."""
    lat1, lon1, lat2, lon2 = (np.radians(np.asarray(v, dtype=np.float64)) for v in (lat1_deg, lon1_deg, lat2_deg, lon2_deg))
    a = np.sin((lat2 - lat1) / 2) ** 2 + np.cos(lat1) * np.cos(lat2) * np.sin((lon2 - lon1) / 2) ** 2
    return 2 * EARTH_RADIUS_KM * np.arcsin(np.sqrt(np.clip(a, 0.0, 1.0)))


def geoscore(error_km) -> np.ndarray:
    """OSV-5M's GeoScore per prediction: 5000 * exp(-error / 1492.7 km), 5000 for an exact guess."""
    return GEOSCORE_MAX * np.exp(-np.asarray(error_km, dtype=np.float64) / GEOSCORE_SCALE_KM)


def score_predictions(lat_deg, lon_deg, predicted_lat_deg, predicted_lon_deg) -> tuple[np.ndarray, np.ndarray]:
    """(error_km, geoscore) per prediction; NaN where the true location is unknown."""
    error = haversine_km(lat_deg, lon_deg, predicted_lat_deg, predicted_lon_deg)
    return error, geoscore(error)


def accuracy_column(threshold_km: int) -> str:
    return f"accuracy_{threshold_km}km"


def accuracy_at(error_km, thresholds_km: Sequence[int] = ACCURACY_THRESHOLDS_KM) -> dict[str, float]:
    """Share of predictions strictly closer than each threshold (PLONK / OSV-5M use ``error < r``)."""
    errors = np.asarray(error_km, dtype=np.float64)
    errors = errors[np.isfinite(errors)]
    if not errors.size:
        return {accuracy_column(t): float("nan") for t in thresholds_km}
    return {accuracy_column(t): float((errors < t).mean()) for t in thresholds_km}


def spherical_medoid(lat_deg: np.ndarray, lon_deg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For samples ``[N, S]``: index of the sample with the least summed distance to the others ``[N]``,
    and the median distance of the OTHER samples to it in km ``[N]`` (the prediction's spread; 0 for S = 1)."""
    d = haversine_km(lat_deg[:, :, None], lon_deg[:, :, None], lat_deg[:, None, :], lon_deg[:, None, :])  # [N, S, S]
    chosen = d.sum(axis=2).argmin(axis=1)
    to_chosen = d[np.arange(len(chosen)), chosen]  # [N, S], zero at the chosen sample itself
    if lat_deg.shape[1] < 2:
        return chosen, np.zeros(len(chosen))
    others = ~np.eye(lat_deg.shape[1], dtype=bool)[chosen]
    spread = np.median(to_chosen[others].reshape(len(chosen), lat_deg.shape[1] - 1), axis=1)
    return chosen, spread


# --------------------------------------------------------------------------- PLONK


@dataclass(frozen=True)
class SamplingConfig:
    """How PLONK is sampled. ``num_samples`` > 1 draws several locations per image and keeps their
    spherical medoid (a robust estimate of the mode); ``cfg`` is classifier-free guidance (0 = off,
    PlonkPipeline's default)."""

    num_steps: int = DEFAULT_PLONK_STEPS
    num_samples: int = DEFAULT_PLONK_SAMPLES
    seed: int = DEFAULT_PLONK_SEED
    cfg: float = DEFAULT_PLONK_CFG
    batch_size: int = 256  # images per network call (times num_samples rows)

    def __post_init__(self) -> None:
        for name in ("num_steps", "num_samples", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"PLONK {name} must be at least 1, got {getattr(self, name)}")
        if self.cfg < 0:
            raise ValueError(f"PLONK cfg (guidance scale) must be >= 0, got {self.cfg}")


@dataclass(frozen=True)
class Predictions:
    """Per image: the chosen location, its spread, and every sample ``[N, S]`` (degrees)."""

    latitude: np.ndarray
    longitude: np.ndarray
    spread_km: np.ndarray
    sample_latitudes: np.ndarray
    sample_longitudes: np.ndarray


def import_plonk_pipe():
    """``plonk.pipe``, PlonkPipeline's module, whose sampler and scheduler we reuse (after import_plonk's checks)."""
    import_plonk()
    try:
        import plonk.pipe as plonk_pipe
    except ImportError as error:
        raise ModelLoadError(f"diff-plonk's own imports failed ({error}); {PLONK_INSTALL_HINT}") from error
    return plonk_pipe


def plonk_missing_reason() -> str | None:
    """None when diff-plonk imports; else why not (what the CLI and the sensor show instead of running)."""
    try:
        import_plonk_pipe()
    except ModelLoadError as error:
        return str(error)
    return None


def noise_for(image_ids: Sequence[str], num_samples: int, seed: int) -> torch.Tensor:
    """The sampler's starting points ``[len(image_ids) * num_samples, 3]``, seeded per image (CPU, fp32)."""
    if not len(image_ids):
        return torch.zeros((0, 3))
    return torch.cat([
        torch.randn(num_samples, 3, generator=torch.Generator().manual_seed(image_seed(i, seed & 0xFFFFFFFF)))
        for i in image_ids
    ])


class PlonkGeolocator:
    """PLONK's network and sampler, fed with precomputed StreetCLIP CLS embeddings."""

    def __init__(self, repo: str = DEFAULT_PLONK_MODEL, device: str | torch.device = "cpu",
                 sampling: SamplingConfig = SamplingConfig()) -> None:
        plonk_pipe = import_plonk_pipe()
        models = plonk_pipe.MODELS
        if repo not in models:
            raise ModelLoadError(
                f"unknown PLONK model {repo!r}: PlonkPipeline knows {', '.join(sorted(models))}. Set "
                "ATTN_ASSETS_PLONK_MODEL to one of the StreetCLIP-conditioned ones (nicolas-dufour/PLONK_OSV_5M*)")
        if models[repo]["emb_name"] != "street_clip":
            raise ModelLoadError(
                f"{repo} conditions on {models[repo]['emb_name']} embeddings, but attn-assets stores StreetCLIP CLS "
                "embeddings; use nicolas-dufour/PLONK_OSV_5M (or its _flow / _diffusion variants)")
        self.repo = repo
        self.device = resolve_device(device)
        self.sampling = sampling
        try:
            network = plonk_pipe.Plonk.from_pretrained(repo)
        except OSError as error:  # offline and not cached, or no such repo
            raise ModelLoadError(
                f"could not load the PLONK network {repo!r} ({error}). Without internet access it must already be in "
                "the Hugging Face cache (HF_HOME); run once online, or copy the cache from a machine that has it") from error
        self.network = network.to(self.device).requires_grad_(False).eval()
        # the pieces PlonkPipeline.__init__ assembles, from the same module
        self.scheduler = plonk_pipe.scheduler_fn("sigmoid", -7, 3, 1.0)
        self.sampler = models[repo]["sampler"]
        self.preconditioning = plonk_pipe.DDPMPrecond()
        self.postprocessing = plonk_pipe.CartesiantoGPS()
        self.embedding_dim = int(self.network.cond_mapper.in_features)

    def model(self, batch: dict) -> torch.Tensor:
        return self.preconditioning(self.network, batch)

    @torch.no_grad()
    def sample(self, embeddings: torch.Tensor, x_start: torch.Tensor) -> np.ndarray:
        """``[R, 2]`` (lat, lon) degrees for ``R`` rows of embedding ``[R, D]`` and starting point ``[R, 3]``,
        exactly as ``PlonkPipeline.__call__`` samples after computing its embedding."""
        batch = {"y": x_start.to(self.device), "emb": embeddings.to(self.device, torch.float32)}
        output = self.sampler(self.model, batch, conditioning_keys="emb", scheduler=self.scheduler,
                              num_steps=self.sampling.num_steps, cfg_rate=self.sampling.cfg, generator=None)
        return np.degrees(self.postprocessing(output).detach().cpu().numpy().astype(np.float64))

    def predict(self, embeddings: np.ndarray, image_ids: Sequence[str]) -> Predictions:
        """Locations for ``embeddings`` ``[N, D]`` (any float dtype), one row per image id."""
        embeddings = np.asarray(embeddings)
        if not len(image_ids) and embeddings.size == 0:  # a shard whose images all failed
            embeddings = np.zeros((0, self.embedding_dim), dtype=np.float32)
        if embeddings.ndim != 2 or embeddings.shape[0] != len(image_ids):
            raise ValueError(f"embeddings of shape {embeddings.shape} do not match {len(image_ids)} image ids")
        if embeddings.shape[1] != self.embedding_dim:
            raise ValueError(
                f"{self.repo} expects {self.embedding_dim}-d StreetCLIP CLS embeddings, got {embeddings.shape[1]}-d ones; "
                "compute attention_statistics with ATTN_ASSETS_MODEL=geolocal/StreetCLIP (or plonk:<repo>)")
        if not np.isfinite(embeddings).all():
            bad = [image_ids[i] for i in np.flatnonzero(~np.isfinite(embeddings).all(axis=1))[:5]]
            raise ValueError(f"non-finite CLS embeddings for images {bad}; recompute their shard's attention_statistics")
        n, s = len(image_ids), self.sampling.num_samples
        lat, lon = np.zeros((n, s)), np.zeros((n, s))
        chosen, spread = np.zeros(n, dtype=np.int64), np.zeros(n)
        for start in range(0, n, self.sampling.batch_size):
            ids = list(image_ids[start:start + self.sampling.batch_size])
            rows = slice(start, start + len(ids))
            emb = torch.from_numpy(embeddings[rows].astype(np.float32)).repeat_interleave(s, dim=0)
            coords = self.sample(emb, noise_for(ids, s, self.sampling.seed)).reshape(len(ids), s, 2)
            lat[rows], lon[rows] = coords[..., 0], coords[..., 1]
            chosen[rows], spread[rows] = spherical_medoid(lat[rows], lon[rows])  # [batch, S, S] at a time
        picked = np.arange(n)
        return Predictions(lat[picked, chosen], lon[picked, chosen], spread, lat, lon)

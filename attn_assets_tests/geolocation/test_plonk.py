"""PLONK for real: a tiny network and a tiny StreetCLIP in the hub cache, loaded offline through diff-plonk.

These need the `plonk` extra (torchvision pairs only with the CUDA torch build here), so `make test` runs
this folder again in .venv-plonk; in the main venv they are skipped with that reason.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from attn_assets.core.model import ModelLoadError
from attn_assets_tests.geolocation.conftest import PLONK_REPO, TINY_PLONK, requires_plonk, sampling_rounding_deg

pytestmark = requires_plonk


PHOTOS = ("wide_792x512.jpg", "tall_512x792.jpg", "square_300.png", "panorama_1600x300.jpg")


def _images(sample_images):
    paths = [sample_images[name] for name in PHOTOS]
    return [Image.open(p).convert("RGB") for p in paths], [p.stem for p in paths]


def _assert_same_locations(ours: np.ndarray, theirs, num_steps: int) -> None:
    """(lat, lon) rows equal up to the float32 rounding bound of ``num_steps`` sampler steps."""
    theirs = np.asarray(theirs, dtype=np.float64)
    bound = sampling_rounding_deg(num_steps)
    assert np.all(np.abs(ours[:, 0] - theirs[:, 0]) <= bound), (ours, theirs)
    assert np.all(np.abs(ours[:, 1] - theirs[:, 1]) <= bound / np.cos(np.radians(np.abs(theirs[:, 0]).clip(max=89))))


def test_predictions_from_embeddings_equal_plonk_pipeline(offline_hub, sample_images):
    """Our sampling from precomputed embeddings is PlonkPipeline.__call__ without its encoder pass."""
    from plonk import PlonkPipeline

    from attn_assets.core.geolocation import PlonkGeolocator, SamplingConfig, noise_for

    pipeline = PlonkPipeline(PLONK_REPO)  # loads geolocal/StreetCLIP and the network from the offline cache
    images, ids = _images(sample_images)
    expected = pipeline(images, x_N=noise_for(ids, 1, seed=3), num_steps=12)
    geolocator = PlonkGeolocator(PLONK_REPO, sampling=SamplingConfig(num_steps=12, num_samples=1, seed=3, batch_size=3))
    embeddings = pipeline.cond_preprocessing({"img": images})["emb"].numpy()
    got = geolocator.predict(embeddings, ids)
    _assert_same_locations(np.c_[got.latitude, got.longitude], expected, num_steps=12)
    assert len({round(v, 3) for v in got.latitude}) == len(ids)  # the embedding matters, not only the noise
    # several samples per image: the same rows the pipeline samples for one image and a batch of starting points
    several = PlonkGeolocator(PLONK_REPO, sampling=SamplingConfig(num_steps=12, num_samples=3, seed=3, batch_size=3))
    samples = several.predict(embeddings, ids)
    for i, image_id in enumerate(ids):
        per_image = pipeline(images[i], x_N=noise_for([image_id], 3, seed=3), num_steps=12)
        _assert_same_locations(np.c_[samples.sample_latitudes[i], samples.sample_longitudes[i]], per_image, num_steps=12)
    # stored as float16: within ~0.01 degree (about 1 km) of the fp32 pipeline here
    half = geolocator.predict(embeddings.astype(np.float16), ids)
    assert np.abs(np.c_[half.latitude, half.longitude] - expected).max() < 0.05


def test_our_encoder_gives_plonk_the_embedding_its_pipeline_computes(offline_hub, sample_images):
    """plonk:<repo> loads the pipeline's StreetCLIP tower; our CLS embedding equals the pipeline's."""
    from plonk import PlonkPipeline

    from attn_assets.core.extract import extract_records
    from attn_assets.core.loader import ImageRecord
    from attn_assets.core.model import load_encoder

    encoder = load_encoder(f"plonk:{PLONK_REPO}")
    paths = [sample_images[name] for name in PHOTOS]  # 8-bit photos: PIL's convert("RGB") and ours agree
    batches = list(extract_records(encoder, [ImageRecord(p.stem, str(p)) for p in paths], batch_size=4,
                                   device="cpu", precision="fp32", num_workers=0))
    ours = np.concatenate([b.cls_embedding for b in batches])
    theirs = PlonkPipeline(PLONK_REPO).cond_preprocessing({"img": [Image.open(p).convert("RGB") for p in paths]})["emb"]
    np.testing.assert_allclose(ours, theirs.numpy(), atol=1e-4)


def test_several_samples_keep_their_medoid_deterministically(offline_hub):
    from attn_assets.core.geolocation import PlonkGeolocator, SamplingConfig, haversine_km

    rng = np.random.default_rng(0)
    embeddings = rng.normal(size=(5, TINY_PLONK["cond_dim"])).astype(np.float16)
    ids = [f"img{i}" for i in range(5)]
    one_batch = PlonkGeolocator(PLONK_REPO, sampling=SamplingConfig(num_steps=8, num_samples=6, batch_size=5))
    small_batches = PlonkGeolocator(PLONK_REPO, sampling=SamplingConfig(num_steps=8, num_samples=6, batch_size=2))
    a, b = one_batch.predict(embeddings, ids), small_batches.predict(embeddings, ids)
    # Per-image seeds give both runs the same noise; only float32 rounding differs, because the batch shape
    # changes how sums are associated (sampling_rounding_deg says how the bound follows):
    angle_deg = sampling_rounding_deg(8)
    np.testing.assert_allclose(a.sample_latitudes, b.sample_latitudes, rtol=0, atol=angle_deg)
    longitude_deg = angle_deg / np.cos(np.radians(np.abs(a.sample_latitudes).clip(max=89)))
    assert np.all(np.abs(a.sample_longitudes - b.sample_longitudes) <= longitude_deg)
    assert a.sample_latitudes.shape == (5, 6)
    for run in (a, b):
        for i in range(5):
            d = haversine_km(run.sample_latitudes[i][:, None], run.sample_longitudes[i][:, None],
                             run.sample_latitudes[i][None], run.sample_longitudes[i][None]).sum(axis=1)
            kept = int(np.argmin(d))
            assert (run.latitude[i], run.longitude[i]) == (run.sample_latitudes[i, kept], run.sample_longitudes[i, kept])
            assert run.spread_km[i] >= 0
            # the same medoid in both runs, unless two samples' distance sums are within the rounding above
            # (each of the 6 distances moves by at most 2 * angle in km)
            closest_two = np.sort(d)[:2]
            if closest_two[1] - closest_two[0] > 2 * 6 * 2 * np.radians(angle_deg) * 6371.0:
                assert (a.latitude[i] - b.latitude[i], a.longitude[i] - b.longitude[i]) == pytest.approx(
                    (0, 0), abs=angle_deg / np.cos(np.radians(min(abs(a.latitude[i]), 89))))
    assert np.all(np.abs(a.latitude) <= 90) and np.all(np.abs(a.longitude) <= 180)


def test_embedding_shapes_and_values_are_checked(offline_hub):
    from attn_assets.core.geolocation import PlonkGeolocator, SamplingConfig

    geolocator = PlonkGeolocator(PLONK_REPO, sampling=SamplingConfig(num_steps=2, num_samples=1))
    with pytest.raises(ValueError, match=r"expects 64-d StreetCLIP CLS embeddings, got 32-d.*ATTN_ASSETS_MODEL"):
        geolocator.predict(np.zeros((2, 32), np.float16), ["a", "b"])
    empty = geolocator.predict(np.zeros((0, 0), np.float16), [])  # a shard whose images all failed
    assert empty.latitude.shape == (0,) and empty.sample_latitudes.shape == (0, 1)
    with pytest.raises(ValueError, match=r"non-finite CLS embeddings for images \['b'\]"):
        geolocator.predict(np.array([[0.0] * 64, [np.nan] * 64], np.float16), ["a", "b"])


def test_uncached_model_offline_says_what_to_do(offline_hub):
    from attn_assets.core.geolocation import PlonkGeolocator

    with pytest.raises(ModelLoadError, match=r"PLONK_OSV_5M_flow.*Hugging Face cache"):
        PlonkGeolocator("nicolas-dufour/PLONK_OSV_5M_flow")


def test_models_that_do_not_read_streetclip_are_refused(offline_hub):
    from attn_assets.core.geolocation import PlonkGeolocator

    with pytest.raises(ModelLoadError, match="dinov2"):
        PlonkGeolocator("nicolas-dufour/PLONK_YFCC")
    with pytest.raises(ModelLoadError, match="unknown PLONK model"):
        PlonkGeolocator("someone/else")

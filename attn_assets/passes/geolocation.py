"""The geolocation pass: one shard's stored CLS embeddings through PLONK -> geolocation/<shard>.parquet, with the
recipe record (PLONK's settings and the statistics file it read). No Dagster here."""

from __future__ import annotations

import logging
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from attn_assets.catalog.countries import reverse_geocode
from attn_assets.core.geolocation import PlonkGeolocator, score_predictions
from attn_assets.passes.inputs import shard_rows
from attn_assets.passes.outcome import ShardOutcome
from attn_assets.passes.recipe import geolocation_recipe, read_record, with_record
from attn_assets.settings import DEFAULT_MODEL
from attn_assets.storage.layout import HomeLayout
from attn_assets.storage.parquet import read_cls_embeddings, write_table_atomic
from attn_assets.storage.schema import GEOLOCATION_PREDICTIONS


def is_streetclip(model_spec: str) -> bool:
    """True for the encoder PLONK was trained on (StreetCLIP, any revision, or a PLONK pipeline's tower)."""
    return model_spec.startswith("plonk:") or model_spec.split("@", 1)[0] == DEFAULT_MODEL


def _provenance(shard_file: Path) -> tuple[str, str]:
    table = pq.read_table(shard_file, columns=["model_spec", "precision"])
    if not table.num_rows:
        return "", ""
    return table["model_spec"][0].as_py(), table["precision"][0].as_py()


def compute_geolocation_shard(*, layout: HomeLayout, shard_key: str, geolocator: PlonkGeolocator,
                              logger: logging.Logger | logging.LoggerAdapter) -> ShardOutcome:
    """PLONK predictions for every computed image of the shard -> geolocation/<shard>.parquet. The outcome's
    details: ``with_truth`` (predictions with true coordinates to score against) and ``embedding_model_spec``
    (the model the embeddings come from; None for an empty shard)."""
    started = time.monotonic()
    shard_file = layout.shard_parquet(shard_key)
    if not shard_file.exists():
        raise FileNotFoundError(
            f"{shard_file} does not exist: materialize attention_statistics for partition {shard_key} first "
            "(its CLS embeddings are PLONK's input)")
    try:
        ids, embeddings = read_cls_embeddings(shard_file)
    except ValueError as error:
        raise ValueError(
            f"{error}. Re-materialize attention_statistics for partition {shard_key} (code version 3 stores the "
            "embeddings), then geolocation_predictions") from error
    model_spec, precision = _provenance(shard_file)
    embeddings_record = read_record(shard_file)
    if ids and not is_streetclip(model_spec):
        logger.warning(
            "%s: CLS embeddings come from %r, not geolocal/StreetCLIP or a plonk: spec; PLONK was trained on "
            "StreetCLIP embeddings, so unless that is StreetCLIP these predictions only exercise the pipeline",
            shard_key, model_spec)
    predictions = geolocator.predict(embeddings, ids)
    truth = shard_rows(layout, shard_key, ["image_id", "country", "latitude", "longitude"]).set_index("image_id")
    truth = truth.reindex(ids)
    lat, lon = truth["latitude"].to_numpy(dtype=np.float64), truth["longitude"].to_numpy(dtype=np.float64)
    error, geoscore = score_predictions(lat, lon, predictions.latitude, predictions.longitude)  # NaN: no truth
    sampling = geolocator.sampling
    n = len(ids)
    stamp = datetime.now(timezone.utc).replace(tzinfo=None)

    def nullable(values: np.ndarray) -> list:
        return [None if not np.isfinite(v) else float(v) for v in values]

    columns = {
        "image_id": ids, "shard_key": [shard_key] * n,
        "country": [c if isinstance(c, str) else None for c in truth["country"]],
        "latitude": nullable(lat), "longitude": nullable(lon),
        "predicted_latitude": predictions.latitude.tolist(), "predicted_longitude": predictions.longitude.tolist(),
        # the same resolver as the manifest's countries: a prediction at sea has no country (NULL), which
        # country accuracy counts as a wrong country
        "predicted_country": reverse_geocode(predictions.latitude, predictions.longitude),
        "error_km": nullable(error), "geoscore": nullable(geoscore),
        "prediction_spread_km": predictions.spread_km.tolist(),
        "plonk_model": [geolocator.repo] * n, "num_steps": [sampling.num_steps] * n,
        "num_samples": [sampling.num_samples] * n, "sampling_seed": [sampling.seed] * n,
        "cfg_rate": [float(sampling.cfg)] * n, "embedding_model_spec": [model_spec] * n,
        "embedding_precision": [precision] * n, "computed_at": [stamp] * n,
    }
    recipe = geolocation_recipe(geolocator.repo, sampling.num_steps, sampling.num_samples, sampling.seed,
                                sampling.cfg, embeddings_record)
    record = recipe.record(embeddings_record.image_set if embeddings_record else "")
    table = with_record(GEOLOCATION_PREDICTIONS.arrow_table(columns), record)
    path = write_table_atomic(table, layout.geolocation_parquet(shard_key))
    return ShardOutcome(shard_key=shard_key, images=n, computed=n, failed=0, seconds=time.monotonic() - started,
                        path=path, record=record,
                        details={"with_truth": int(np.isfinite(error).sum()), "embedding_model_spec": model_spec or None})

"""The country-relevance pass: zero-shot country classification of one shard's images with the model's own text
tower, relevance maps (Chefer et al. 2021) for the predicted and the true country, and deletion / insertion
curves for a sampled share of the images -> analyses/country_relevance/<shard>.parquet, with the recipe record
(model, country list + caption template, curve settings). No Dagster here.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime, timezone

import numpy as np
import torch

from attn_assets.core.analyses import image_seed
from attn_assets.core.faithfulness import (
    DEFAULT_STEPS,
    curve_auc,
    curve_fractions,
    fill_for,
    probability_curves,
    random_order,
    ranked_patches,
)
from attn_assets.core.extract import model_batches, model_preprocessor
from attn_assets.core.metrics import attention_metrics, metrics_to_numpy
from attn_assets.core.relevance import RelevanceOutput, map_agreement, relevance_maps
from attn_assets.core.zero_shot import ZeroShotClassifier, country_predictions
from attn_assets.metric_names import METRIC_NAMES
from attn_assets.passes.inputs import shard_images
from attn_assets.passes.outcome import ShardOutcome
from attn_assets.passes.recipe import Recipe, with_record
from attn_assets.storage.layout import HomeLayout
from attn_assets.storage.parquet import write_table_atomic
from attn_assets.storage.schema import (
    COUNTRY_PREDICTIONS,
    COUNTRY_RELEVANCE_RESULTS,
    FAITHFULNESS_CURVES,
    FAITHFULNESS_MAPS,
    FAITHFULNESS_MODES,
    RELEVANCE_AGREEMENT_COLUMNS,
    RELEVANCE_STATISTICS,
    RELEVANCE_TARGETS,
)

FAITHFULNESS_SAMPLE_SALT = 0xFA1F
TOP_K = 5
_TRUE_MAP_COLUMNS = (*(f"true_{m}" for m in METRIC_NAMES), *(f"true_{a}" for a in RELEVANCE_AGREEMENT_COLUMNS),
                     "true_relevance_map")


def in_faithfulness_sample(image_id: str, fraction: float) -> bool:
    """Deterministic sample: an image gets curves when its salted crc32 / 2^32 < fraction (stable across runs)."""
    return fraction > 0 and image_seed(image_id, FAITHFULNESS_SAMPLE_SALT) / 2**32 < fraction


def _zero_shot_columns(classifier: ZeroShotClassifier, logits: torch.Tensor, true_index: torch.Tensor) -> dict:
    prompts = classifier.prompts
    out = {k: v.cpu() for k, v in country_predictions(torch.softmax(logits, dim=1), true_index, TOP_K).items()}
    known = (true_index >= 0).tolist()
    top = out["top_indices"].tolist()
    rank = out["true_rank"].tolist()
    return {
        "predicted_country": [prompts.codes[i] for i in out["predicted_index"].tolist()],
        "predicted_probability": out["top_probabilities"][:, 0].double().tolist(),
        "top5_countries": [",".join(prompts.codes[i] for i in row) for row in top],
        "top5_probabilities": out["top_probabilities"].double().numpy().tolist(),
        "true_rank": [r if k else None for r, k in zip(rank, known)],
        "true_probability": [float(p) if k else None for p, k in zip(out["true_probability"].tolist(), known)],
        "correct": [r == 1 if k else None for r, k in zip(rank, known)],
        "top5_correct": [r <= TOP_K if k else None for r, k in zip(rank, known)],
    }


def _map_columns(output: RelevanceOutput) -> dict:
    columns = {}
    for target, relevance in zip(RELEVANCE_TARGETS, output.maps):
        values = metrics_to_numpy(attention_metrics(relevance))
        agreement = map_agreement(relevance, output.attention, output.rollout)
        for name in METRIC_NAMES:
            columns[f"{target}_{name}"] = values[name].tolist()
        for name in RELEVANCE_AGREEMENT_COLUMNS:
            columns[f"{target}_{name}"] = agreement[name].tolist()
        columns[f"{target}_relevance_map"] = list(relevance.float().cpu().numpy())
    return columns


def faithfulness_columns(classifier: ZeroShotClassifier, pixel_values: torch.Tensor, output: RelevanceOutput,
                         true_index: torch.Tensor, image_ids: list[str], fill: str, steps: int,
                         chunk: int) -> dict[str, np.ndarray]:
    """``{mode}_auc_{map}`` ``[B]`` and ``{mode}_curve_{map}`` ``[B, steps + 1]`` for every mode and patch order; the
    relevance order is the TRUE country's map."""
    encoder = classifier.encoder
    pixels = pixel_values.to(classifier.device)
    fills = fill_for(pixels, fill, encoder.patch_size)
    fractions = curve_fractions(steps)
    orders = {
        "attention": ranked_patches(output.attention),
        "rollout": ranked_patches(output.rollout),
        "relevance": ranked_patches(output.maps[RELEVANCE_TARGETS.index("true")]),
        "random": random_order(image_ids, encoder.num_patches),
    }
    columns = {}
    for mode in FAITHFULNESS_MODES:
        for name in FAITHFULNESS_MAPS:
            curves = probability_curves(classifier.probabilities, pixels, orders[name], true_index, mode, fills,
                                        encoder.grid_size, encoder.patch_size, fractions, chunk)
            columns[f"{mode}_curve_{name}"] = curves
            columns[f"{mode}_auc_{name}"] = curve_auc(curves, fractions)
    return columns


def compute_country_relevance_shard(*, layout: HomeLayout, shard_key: str, classifier: ZeroShotClassifier,
                                    model_spec: str, batch_size: int, num_workers: int, recipe: Recipe,
                                    faithfulness_fraction: float, faithfulness_fill: str,
                                    logger: logging.Logger | logging.LoggerAdapter,
                                    faithfulness_steps: int = DEFAULT_STEPS) -> ShardOutcome:
    """Every readable image of the shard -> analyses/country_relevance/<shard>.parquet (with ``recipe``'s record).

    Images whose true country is missing or not in the country list get predictions and the predicted country's
    map; their true-country columns and curves are NULL. The outcome's details: ``correct``, ``with_truth``,
    ``with_curves``."""
    started = time.monotonic()
    records, country, image_set = shard_images(layout, shard_key)
    encoder = classifier.encoder
    preprocess = model_preprocessor(encoder.processor)
    names = COUNTRY_RELEVANCE_RESULTS.column_names
    rows: dict[str, list] = {name: [] for name in names}
    failed, sampled = 0, 0
    for batch in model_batches(records, preprocess, classifier.device, batch_size, num_workers):
        for failure in batch.failures:  # recorded in image_failures by attention_statistics
            logger.info("%s: country relevance skips %s: %s", shard_key, failure.image_id, failure.reason)
        failed += len(batch.failures)
        if not len(batch):
            continue
        ids = list(batch.image_ids)
        true_index = classifier.prompts.index_of([country.get(i) for i in ids])
        output = relevance_maps(classifier, batch.pixel_values, [None, true_index])
        columns = {**_zero_shot_columns(classifier, output.logits, true_index), **_map_columns(output)}
        known = (true_index >= 0).tolist()
        for key in _TRUE_MAP_COLUMNS:  # no true country in the list: no true-country map, metrics or agreement
            columns[key] = [v if k else None for v, k in zip(columns[key], known)]
        chosen = [b for b, i in enumerate(ids) if known[b] and in_faithfulness_sample(i, faithfulness_fraction)]
        curves = {}
        if chosen:
            picked = torch.tensor(chosen)
            sub = RelevanceOutput(output.logits[picked], [m[picked] for m in output.maps], output.attention[picked],
                                  output.rollout[picked])
            curves = faithfulness_columns(classifier, batch.pixel_values[picked], sub, true_index[picked],
                                          [ids[b] for b in chosen], faithfulness_fill, faithfulness_steps, batch_size)
            sampled += len(chosen)
        where = {b: n for n, b in enumerate(chosen)}
        for mode in FAITHFULNESS_MODES:
            for name in FAITHFULNESS_MAPS:
                auc, curve = f"{mode}_auc_{name}", f"{mode}_curve_{name}"
                columns[auc] = [float(curves[auc][where[b]]) if b in where else None for b in range(len(ids))]
                columns[curve] = [curves[curve][where[b]].tolist() if b in where else None for b in range(len(ids))]
        n = len(ids)
        gh, gw = encoder.grid_size
        columns.update({
            "image_id": ids, "shard_key": [shard_key] * n, "country": [country.get(i) for i in ids],
            "prompts": [classifier.prompts.fingerprint] * n, "grid_height": [gh] * n, "grid_width": [gw] * n,
            "faithfulness_fill": [faithfulness_fill if b in where else None for b in range(n)],
            "model_spec": [model_spec] * n, "precision": [classifier.precision] * n,
        })
        for name in names:
            if name != "computed_at":
                rows[name].extend(columns[name])
    computed = len(rows["image_id"])
    rows["computed_at"] = [datetime.now(timezone.utc).replace(tzinfo=None)] * computed
    record = recipe.record(image_set)
    path = write_table_atomic(with_record(COUNTRY_RELEVANCE_RESULTS.arrow_table(rows), record),
                              layout.country_relevance_parquet(shard_key))
    correct = sum(1 for c in rows["correct"] if c)
    with_truth = sum(1 for c in rows["correct"] if c is not None)
    return ShardOutcome(shard_key=shard_key, images=len(records), computed=computed, failed=failed,
                        seconds=time.monotonic() - started, path=path, record=record,
                        details={"correct": correct, "with_truth": with_truth, "with_curves": sampled})


# --------------------------------------------------------------------------- warehouse loading


def relevance_row_sets() -> list[tuple[dict[str, str], str]]:
    """How table relevance_statistics takes one row per (image, target) from the wide shard file
    (``Warehouse.replace_shard_row_sets``): the ``<target>_`` columns under their plain names."""
    row_sets = []
    for target in RELEVANCE_TARGETS:
        overrides = {name: f's."{target}_{name}"' for name in (*METRIC_NAMES, *RELEVANCE_AGREEMENT_COLUMNS)}
        overrides.update({"target": f"'{target}'", "num_patches": "s.grid_height * s.grid_width",
                          "target_country": "s.predicted_country" if target == "predicted" else "s.country"})
        row_sets.append((overrides, f's."{target}_{METRIC_NAMES[0]}" IS NOT NULL'))
    return row_sets


def faithfulness_row_sets() -> list[tuple[dict[str, str], str]]:
    """How table faithfulness_curves takes one row per (sampled image, map, mode) from the wide shard file."""
    return [({"map": f"'{name}'", "mode": f"'{mode}'", "auc": f's."{mode}_auc_{name}"',
              "curve": f's."{mode}_curve_{name}"'}, f's."{mode}_auc_{name}" IS NOT NULL')
            for mode in FAITHFULNESS_MODES for name in FAITHFULNESS_MAPS]


def load_country_relevance_shard(store, shard_key: str, parquet) -> dict[str, int]:
    """Replace one shard's rows of country_predictions, relevance_statistics and faithfulness_curves with the
    file's (``parquet`` None: remove them); returns the rows per table."""
    return {
        COUNTRY_PREDICTIONS.name: store.replace_analysis_shard(COUNTRY_PREDICTIONS, shard_key, parquet),
        RELEVANCE_STATISTICS.name: store.replace_shard_row_sets(RELEVANCE_STATISTICS, shard_key, parquet,
                                                                relevance_row_sets()),
        FAITHFULNESS_CURVES.name: store.replace_shard_row_sets(FAITHFULNESS_CURVES, shard_key, parquet,
                                                               faithfulness_row_sets()),
    }

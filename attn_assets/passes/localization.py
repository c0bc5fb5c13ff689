"""The localization benchmark pass: for every manifest image with a cue box (manifest column ``cue_box``), score
where the trained model's maps and its randomized copy's maps lie relative to the box
(attn_assets.core.localization). No Dagster here.

One forward pass per model and batch captures every layer's per-head CLS rows; a second one folds the rollout.
Maps scored per image and model: ``cls_attention`` (last layer, mean over heads), ``cls_attention/head<h>`` (each
last-layer head), ``cls_attention/layer<l>`` (every layer, mean over heads), ``rollout`` and, for a CLIP model with
its text tower, ``relevance/true_country`` (Chefer et al. 2021). Later map types (e.g.
relevance maps) and models join the same rows: a row is keyed by (image, model_spec, weights, map).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from attn_assets.core.confidence import bootstrap_mean_interval
from attn_assets.core.extract import AttentionExtractor, model_batches, model_preprocessor
from attn_assets.core.loader import ImageRecord
from attn_assets.passes.inputs import image_records
from attn_assets.core.localization import (
    LOCALIZATION_SCORES,
    check_box_in_image,
    cue_geometry,
    localization_scores,
    parse_box,
)
from attn_assets.core.model import Encoder, randomized_encoder, resolve_device
from attn_assets.core.relevance import relevance_maps
from attn_assets.core.zero_shot import ZeroShotClassifier, randomized_classifier
from attn_assets.core.rollout import RolloutExtractor
from attn_assets.storage.layout import HomeLayout
from attn_assets.storage.schema import LOCALIZATION_BENCHMARK, LOCALIZATION_SUMMARY

#: The manifest column holding a cue's box ("x0,y0,x1,y1", original-image pixels).
CUE_BOX_COLUMN = "cue_box"


@dataclass
class CueImages:
    """The manifest images with a usable cue box, and the ones whose box could not be read."""

    records: list[ImageRecord] = field(default_factory=list)
    boxes: dict[str, tuple[float, float, float, float]] = field(default_factory=dict)
    countries: dict[str, str | None] = field(default_factory=dict)
    invalid: list[str] = field(default_factory=list)  # "image <id>: <reason>"


def cue_images(layout: HomeLayout) -> CueImages:
    """Images of the validated manifest (manifest/images.parquet) whose ``cue_box`` column is set.

    A manifest without the column gives no images. A box that is not ``x0,y0,x1,y1`` is listed in ``invalid``
    (image id, column and value), never scored and never fatal for the others.
    """
    found = CueImages()
    if not layout.images_parquet.exists():
        return found
    names = pq.read_schema(layout.images_parquet).names
    if CUE_BOX_COLUMN not in names:
        return found
    columns = ["image_id", "abs_path", "country", CUE_BOX_COLUMN] + (["member"] if "member" in names else [])
    frame = pq.read_table(layout.images_parquet, columns=columns).to_pandas()
    keep = []
    for index, image_id, country, text in zip(frame.index, frame["image_id"], frame["country"], frame[CUE_BOX_COLUMN]):
        try:
            box = parse_box(text)
        except ValueError as error:
            found.invalid.append(f"image {image_id}: manifest column {CUE_BOX_COLUMN}: {error}")
            continue
        if box is None:
            continue
        keep.append(index)
        found.boxes[image_id] = box
        found.countries[image_id] = None if pd.isna(country) else country
    found.records = image_records(frame.loc[keep])
    return found


def _named_maps(cls_rows: np.ndarray, rollout_row: np.ndarray, relevance_row: np.ndarray | None = None
                ) -> tuple[list[tuple[str, str, int | None, int | None]], np.ndarray]:
    """One image's ``cls_rows[L, H, N]``, ``rollout_row[N]`` and, when given, the true country's relevance map
    ``relevance_row[N]`` -> (map names, type, layer, head) and maps [M, N]."""
    layers, heads, _ = cls_rows.shape
    last = layers - 1
    names = [("cls_attention", "cls_attention", last, None)]
    maps = [cls_rows[last].mean(axis=0)]
    for h in range(heads):
        names.append((f"cls_attention/head{h}", "cls_attention_head", last, h))
        maps.append(cls_rows[last, h])
    for layer in range(layers):
        names.append((f"cls_attention/layer{layer}", "cls_attention_layer", layer, None))
        maps.append(cls_rows[layer].mean(axis=0))
    names.append(("rollout", "rollout", None, None))
    maps.append(rollout_row)
    if relevance_row is not None:
        names.append(("relevance/true_country", "relevance", None, None))
        maps.append(relevance_row)
    return names, np.stack(maps)


def score_images(encoder: Encoder, images: CueImages, *, device: str, precision: str, batch_size: int,
                 num_workers: int, logger: logging.Logger | logging.LoggerAdapter,
                 classifier: ZeroShotClassifier | None = None) -> pd.DataFrame:
    """Rows of :data:`~attn_assets.storage.schema.LOCALIZATION_BENCHMARK` (plus ``uniform_hit``, a uniform map's
    pointing score) for ``images``, on ``encoder`` ('trained') and on its randomized copy ('randomized').

    With ``classifier`` (the same model's zero-shot classifier: a CLIPModel with its text tower), each image also
    gets the relevance map of its true country's logit (Chefer et al. 2021, ``core.relevance``), as map
    ``relevance/true_country``, on the trained classifier and on its randomized copy; an image whose country is
    not in the classifier's list gets NaN scores for it.

    Images that fail to load are logged and skipped (the statistics record them in image_failures); a box that does
    not fit its image (`check_box_in_image`) is logged, added to ``images.invalid`` and not scored.
    """
    stamp = datetime.now(timezone.utc).replace(tzinfo=None)
    models = (("trained", encoder), ("randomized", randomized_encoder(encoder)))
    classifiers = ({"trained": classifier, "randomized": randomized_classifier(classifier)} if classifier
                   else {})
    extractors = [(weights, AttentionExtractor(model, device=device, precision=precision, layers="all"),
                   RolloutExtractor(model, device=device, precision=precision)) for weights, model in models]
    preprocess = model_preprocessor(encoder.processor)
    rows: list[dict] = []
    for batch in model_batches(images.records, preprocess, resolve_device(device), batch_size, num_workers):
        for failure in batch.failures:
            logger.warning("localization_benchmark skips image %s: %s", failure.image_id, failure.reason)
        if not len(batch):
            continue
        checked = set()
        for image_id, (width, height) in zip(batch.image_ids, batch.image_sizes):
            try:
                check_box_in_image(images.boxes[image_id], width, height)
                checked.add(image_id)
            except ValueError as error:
                images.invalid.append(f"image {image_id}: manifest column {CUE_BOX_COLUMN}: {error}")
                logger.warning("localization_benchmark skips image %s: %s", image_id, error)
        for weights, attention, rollout in extractors:
            cls_rows = attention(batch.pixel_values).cls_attention.float().cpu().numpy()
            rollout_rows = rollout(batch.pixel_values)[0].float().cpu().numpy()
            relevance_rows = None
            if weights in classifiers:
                scorer = classifiers[weights]
                truth = scorer.prompts.index_of([images.countries[i] for i in batch.image_ids])
                relevance_rows = relevance_maps(scorer, batch.pixel_values, [truth]).maps[0].cpu().numpy()
            for i, image_id in enumerate(batch.image_ids):
                if image_id not in checked:
                    continue
                geometry = preprocess.crop_geometry(*batch.image_sizes[i])
                cue = cue_geometry(images.boxes[image_id], geometry, encoder.grid_size)
                names, maps = _named_maps(cls_rows[i], rollout_rows[i],
                                          None if relevance_rows is None else relevance_rows[i])
                if cue.in_crop:
                    scores = localization_scores(maps, cue.coverage)
                    uniform_hit = float((cue.coverage > 0).mean())
                else:
                    scores = {name: np.full(len(maps), np.nan) for name in LOCALIZATION_SCORES}
                    uniform_hit = np.nan
                for m, (name, map_type, layer, head) in enumerate(names):
                    rows.append({
                        "image_id": image_id, "country": images.countries[image_id], "model_spec": encoder.spec,
                        "weights": weights, "map": name, "map_type": map_type, "layer": layer, "head": head,
                        "cue_in_crop": cue.in_crop, "cue_visible_share": cue.visible_share,
                        **{score: float(values[m]) for score, values in scores.items()},
                        "precision": attention.precision, "computed_at": stamp, "uniform_hit": uniform_hit,
                    })
    frame = pd.DataFrame(rows, columns=[*LOCALIZATION_BENCHMARK.column_names, "uniform_hit"])
    for column in ("layer", "head"):
        frame[column] = frame[column].astype("Int32")
    return frame


def summarize(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows of :data:`~attn_assets.storage.schema.LOCALIZATION_SUMMARY`: per (model_spec, weights, map), the
    means over the images whose cue is in the crop, with 95% bootstrap intervals."""
    keys = ["model_spec", "weights", "map"]
    out: list[dict] = []
    for (model_spec, weights, name), group in frame.groupby(keys, sort=False):
        scored = group[group["cue_in_crop"]]
        ratio_low, ratio_high = bootstrap_mean_interval(scored["energy_ratio"].to_numpy(dtype=float))
        hit_low, hit_high = bootstrap_mean_interval(scored["pointing_hit"].to_numpy(dtype=float))
        first = group.iloc[0]
        out.append({
            "model_spec": model_spec, "weights": weights, "map": name, "map_type": first["map_type"],
            "layer": first["layer"], "head": first["head"],
            "images": int(len(scored)), "cues_outside_crop": int((~group["cue_in_crop"]).sum()),
            "energy_in_box_mean": scored["energy_in_box"].mean(),
            "box_area_share_mean": scored["box_area_share"].mean(),
            "energy_ratio_mean": scored["energy_ratio"].mean(),
            "energy_ratio_ci_low": ratio_low, "energy_ratio_ci_high": ratio_high,
            "pointing_rate": scored["pointing_hit"].mean(),
            "pointing_ci_low": hit_low, "pointing_ci_high": hit_high,
            "uniform_pointing_rate": scored["uniform_hit"].mean(),
        })
    summary = pd.DataFrame(out, columns=LOCALIZATION_SUMMARY.column_names)
    for column in ("layer", "head"):
        summary[column] = summary[column].astype("Int32")
    return summary


def main_maps(summary: pd.DataFrame, maps: Sequence[str] = ("cls_attention", "rollout")) -> pd.DataFrame:
    """The summary rows of the headline maps, trained before randomized (the README's table)."""
    rows = summary[summary["map"].isin(maps)].copy()
    rows["_order"] = rows["map"].map({m: i for i, m in enumerate(maps)})
    return rows.sort_values(["_order", "weights"], ascending=[True, False]).drop(columns="_order")

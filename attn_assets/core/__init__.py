"""Core: model loading, preprocessing, batched CLS-attention extraction and metrics.

Pure torch / numpy / PIL (and pandas for a convenience frame); no Dagster import, so it can
be used from a notebook, the CLI or the Dagster assets alike.
"""

from attn_assets.crop_geometry import CropGeometry

from .extract import (
    AttentionExtractor,
    BatchResult,
    ExtractionOutput,
    eager_attention,
    extract_records,
    extract_to_frame,
    seed_reference,
    select_layers,
)
from .image_source import MemberError, open_image
from .loader import Batch, ImageFailure, ImageRecord, iter_batches, records_from_paths
from .metrics import attention_metrics, attention_metrics_numpy
from .model import Encoder, ModelLoadError, load_encoder, resolve_device
from .preprocess import Preprocessor, load_rgb

__all__ = [
    "AttentionExtractor",
    "Batch",
    "BatchResult",
    "CropGeometry",
    "Encoder",
    "ExtractionOutput",
    "ImageFailure",
    "ImageRecord",
    "MemberError",
    "ModelLoadError",
    "Preprocessor",
    "attention_metrics",
    "attention_metrics_numpy",
    "eager_attention",
    "extract_records",
    "extract_to_frame",
    "iter_batches",
    "load_encoder",
    "load_rgb",
    "open_image",
    "records_from_paths",
    "resolve_device",
    "seed_reference",
    "select_layers",
]

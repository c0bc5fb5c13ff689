"""Stream images from disk into pixel batches with DataLoader worker processes.

A bad file never raises: it becomes an ``ImageFailure`` with a human-readable reason
inside the batch it belonged to. Nothing is accumulated, so memory stays flat for any
number of images (records that are not a Sequence are consumed a window at a time).
"""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import DataLoader, Dataset

from attn_assets.path_text import path_to_text, text_to_path
from .image_source import MemberError, close_archives, open_image
from .preprocess import Preprocessor

# Non-Sequence record streams are cut into windows of this many batches.
WINDOW_BATCHES = 256


@dataclass(frozen=True)
class ImageRecord:
    """One image to load: ``path`` is text as :func:`~attn_assets.path_text.path_to_text` writes it.

    With ``member`` set, ``path`` is a zip archive and ``member`` the name inside it, as
    ``zipfile.ZipFile.namelist()`` gives it (see :mod:`attn_assets.core.image_source`).
    """

    image_id: str
    path: str
    member: str | None = None


@dataclass(frozen=True)
class ImageFailure:
    image_id: str
    path: str
    reason: str


@dataclass
class Batch:
    """Images that decoded (in input order) and the ones that did not."""

    image_ids: list[str]
    paths: list[str]
    pixel_values: torch.Tensor  # [B, 3, H, W] float32 normalised; or [B, H, W, 3] uint8 (Preprocessor.normalize)
    failures: list[ImageFailure] = field(default_factory=list)
    image_sizes: list[tuple[int, int]] = field(default_factory=list)  # original (width, height)

    def __len__(self) -> int:
        return len(self.image_ids)

    def pin_memory(self) -> "Batch":
        """Called by DataLoader(pin_memory=True) so host->GPU copies can be asynchronous."""
        return replace(self, pixel_values=self.pixel_values.pin_memory())


def describe_failure(path: str | Path, error: BaseException) -> str:
    """A short, human-readable reason for why ``path`` could not be used."""
    if isinstance(error, Image.DecompressionBombError):
        return f"decompression bomb: {error} (limit: PIL Image.MAX_IMAGE_PIXELS)"
    if isinstance(error, FileNotFoundError):
        return "file not found"
    if isinstance(error, IsADirectoryError):
        return "is a directory, not an image file"
    if isinstance(error, PermissionError):
        return "permission denied"
    if isinstance(error, UnidentifiedImageError):
        try:
            if os.path.getsize(path) == 0:
                return "empty file (0 bytes)"
        except OSError:
            pass
        return f"not a readable image (cannot identify image file{_sniff_text(path)})"
    text = str(error).strip() or type(error).__name__
    if isinstance(error, SyntaxError):  # PIL's "broken PNG file (bad header checksum ...)" and the like
        return f"corrupt image file ({text})"
    if "truncated" in text.lower():
        return f"truncated image file ({text})"
    if isinstance(error, OSError):
        return f"could not read or decode image ({text})"
    return f"could not preprocess image ({type(error).__name__}: {text})"


def _sniff_text(path: str | Path) -> str:
    """'; it is an HTML page ...' / '; it is a text file' when the first bytes say so, else ''."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(512)
    except OSError:
        return ""
    lowered = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if lowered.startswith((b"<!doctype html", b"<html")) or b"<html" in lowered[:256]:
        return "; it is an HTML page, e.g. an error page saved under an image name"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as error:
        if error.start < len(head) - 3:  # not just a character cut at the 512-byte boundary
            return ""
        text = head[: error.start].decode("utf-8")
    if text and all(ch.isprintable() or ch in "\r\n\t" for ch in text):
        return "; it is a text file"
    return ""


def load_one(
    record: ImageRecord, preprocess: Preprocessor, uint8: bool = False
) -> tuple[torch.Tensor, tuple[int, int]] | ImageFailure:
    """Pixel values and the original (width, height) for one record, or the reason it failed.

    Pixel values are ``float32[3, H, W]``; with ``uint8`` they are what ``preprocess.pixels`` gives (``uint8[H, W, 3]``
    to be normalised on the device, or float32 where the fast path does not apply). A zip member
    (``record.member``) is read from its archive, kept open in this process.
    """
    try:
        image = open_image(record)
        return (preprocess.pixels(image) if uint8 else preprocess(image)), image.size
    except Exception as error:  # noqa: BLE001 - every per-image problem becomes a row, never a crash
        return ImageFailure(record.image_id, record.path, path_to_text(_reason(record, error)))


def _reason(record: ImageRecord, error: BaseException) -> str:
    if record.member is None:
        return describe_failure(text_to_path(record.path), error)
    if isinstance(error, MemberError):
        return str(error)
    if isinstance(error, (FileNotFoundError, IsADirectoryError, PermissionError)):
        return f"zip archive: {describe_failure(text_to_path(record.path), error)}"
    if isinstance(error, UnidentifiedImageError):
        return f"zip member {record.member!r} in {record.path} is not a readable image (cannot identify image file)"
    return f"zip member {record.member!r} in {record.path}: {describe_failure(record.member, error)}"


def load_batch(records: Sequence[ImageRecord], preprocess: Preprocessor, uint8: bool = False) -> Batch:
    """Decode and preprocess ``records`` into one Batch (failures kept aside).

    With ``uint8`` the batch's pixel values are ``uint8[B, H, W, 3]`` (``Preprocessor.normalize`` on the device
    finishes them) when every image took the fast path, else ``float32[B, 3, H, W]`` normalised here.
    """
    ids, paths, tensors, sizes, failures = [], [], [], [], []
    for record in records:
        result = load_one(record, preprocess, uint8)
        if isinstance(result, ImageFailure):
            failures.append(result)
        else:
            ids.append(record.image_id)
            paths.append(record.path)
            tensors.append(result[0])
            sizes.append(result[1])
    if tensors and all(t.dtype == torch.uint8 for t in tensors):
        pixels = torch.stack(tensors)
    elif tensors:
        pixels = torch.stack([preprocess.normalize(t[None])[0] for t in tensors])
    else:
        height, width = preprocess.output_size
        pixels = torch.empty((0, 3, height, width), dtype=torch.float32)
    return Batch(ids, paths, pixels, failures, sizes)


class _BatchDataset(Dataset):
    """Map-style dataset whose item k is the k-th batch of ``records`` (batched in the worker)."""

    def __init__(self, records: Sequence[ImageRecord], batch_size: int, preprocess: Preprocessor, uint8: bool,
                 load: Callable = load_batch):
        self.records, self.batch_size, self.preprocess, self.uint8 = records, batch_size, preprocess, uint8
        self.load = load

    def __len__(self) -> int:
        return math.ceil(len(self.records) / self.batch_size)

    def __getitem__(self, index: int) -> Batch:
        start = index * self.batch_size
        return self.load(self.records[start : start + self.batch_size], self.preprocess, self.uint8)


def _keep(batch: Batch) -> Batch:
    return batch


def _windows(records: Iterable[ImageRecord], size: int) -> Iterator[Sequence[ImageRecord]]:
    if isinstance(records, Sequence):
        yield records
        return
    iterator = iter(records)
    while window := list(itertools.islice(iterator, size)):
        yield window


def iter_batches(
    records: Iterable[ImageRecord],
    preprocess: Preprocessor,
    batch_size: int,
    num_workers: int = 0,
    pin_memory: bool = False,
    prefetch_factor: int = 2,
    uint8: bool = False,
    load: Callable = load_batch,
) -> Iterator[Batch]:
    """Yield Batches in record order; decoding runs in ``num_workers`` processes (0 = inline).

    ``uint8``: pixel values stay ``uint8[B, H, W, 3]`` until ``preprocess.normalize`` on the device (see load_batch).
    ``load``: what turns a batch of records into a batch, ``load(records, preprocess, uint8)`` (a module-level
    function, so worker processes can receive it); ``device_decode.load_encoded_batch`` hands over encoded JPEGs.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    try:
        for window in _windows(records, batch_size * WINDOW_BATCHES):
            dataset = _BatchDataset(window, batch_size, preprocess, uint8, load)
            options = {"prefetch_factor": prefetch_factor} if num_workers > 0 else {}
            loader = DataLoader(
                dataset,
                batch_size=None,
                shuffle=False,
                num_workers=num_workers,
                collate_fn=_keep,
                pin_memory=pin_memory,
                **options,
            )
            yield from loader
    finally:
        close_archives()  # zip archives read inline (num_workers=0) stay open only while a pass reads them


def records_from_paths(paths: Iterable[str | Path]) -> list[ImageRecord]:
    """ImageRecords keyed by the path itself (the CLI's ``image_path`` key), as escaped text."""
    return [ImageRecord(path_to_text(p), path_to_text(p)) for p in paths]

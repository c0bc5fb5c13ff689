"""Which files a manifest setting names, and a fingerprint that changes when any of them does."""

from __future__ import annotations

import glob
import hashlib
from pathlib import Path

from attn_assets.path_text import path_to_text, text_to_path


def manifest_files(manifest: str) -> list[Path]:
    """The files behind ATTN_ASSETS_MANIFEST (a file or a glob), sorted.

    The setting may name a non-UTF-8 (Latin-1) folder or file by its escaped text (``\\xNN``, as the pipeline
    writes paths in ``source_file``), or by its raw name."""
    manifest = text_to_path(manifest)
    if glob.has_magic(manifest):
        return sorted(Path(p) for p in glob.glob(manifest, recursive=True) if Path(p).is_file())
    path = Path(manifest)
    return [path] if path.exists() else []


def manifest_fingerprint(manifest: str) -> str:
    """Hash of (path, size, mtime) of every manifest file: cheap to compute on every sensor tick."""
    digest = hashlib.sha256()
    for path in manifest_files(manifest):
        stat = path.stat()
        digest.update(f"{path_to_text(path.resolve())}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]

"""Zip archives as an image source: the members of the archives under an image root, listed once.

OSV-5M ships its images as ``images/<split>/NN.zip``; its loader finds ``<id>.jpg`` by file name after
extraction. :func:`list_archive_members` reads each archive's central directory once (no member data) so the
manifest step can look ids up among members exactly as among extracted files; the passes then read each
member from the archive and member name stored in ``manifest/images.parquet``.

Member names: ``zipfile`` decodes a name without the UTF-8 flag as cp437, so ``member`` (what
``ZipFile.read`` takes back) is always storable text. The stem an id is matched against is taken from the
name's original bytes, escaped as :func:`~attn_assets.path_text.path_to_text` escapes non-UTF-8 file names
(``caf\\xe9``), so archives and extracted folders give the same stems. Folders in a name may be separated by
``\\`` (PowerShell's Compress-Archive writes ``00\\103.jpg``): the stem is taken after the last ``/`` or ``\\``,
while ``member`` keeps the name as stored.

An archive that stores one name twice: both entries are listed, and the index keeps the first (as it keeps the
first of two files with one stem); :func:`attn_assets.zip_members.read_member` reads that first entry.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass

from attn_assets.path_text import path_to_text, text_to_path

ARCHIVE_EXTENSIONS: frozenset[str] = frozenset({".zip"})

_UTF8_FLAG = 0x800


class ArchiveError(ValueError):
    """An archive under the image root cannot be listed; the message names it and what to do."""


@dataclass(frozen=True)
class ArchiveMember:
    """One image member: ``stem`` (escaped text, no extension), ``archive`` (the archive's path relative to
    the image root, escaped text) and ``member`` (the name ``ZipFile.read`` takes)."""

    stem: str
    archive: str
    member: str


def member_name_bytes(info: zipfile.ZipInfo) -> bytes:
    """The member name's bytes as the archive stores them (undoing zipfile's cp437 decode where it applied)."""
    return info.filename.encode("utf-8" if info.flag_bits & _UTF8_FLAG else "cp437")


def list_archive_members(root: str, archive: str, image_extensions: Iterable[str]) -> list[ArchiveMember]:
    """Image members of the archive at ``archive`` (relative to ``root``, escaped text), in the archive's order.

    Reads the central directory only. Raises :class:`ArchiveError` for a file that is not a readable zip.
    """
    extensions = frozenset(e.lower() for e in image_extensions)
    path = os.path.join(root, text_to_path(archive, root))
    try:
        with zipfile.ZipFile(path) as handle:
            infos = handle.infolist()
    except (zipfile.BadZipFile, OSError, EOFError) as error:
        raise ArchiveError(
            f"{path_to_text(path)}: not a readable zip archive ({error}); re-download it, or move it out of the "
            "image root"
        ) from None
    members = []
    for info in infos:
        if info.is_dir():
            continue
        base = path_to_text(os.path.basename(member_name_bytes(info).replace(b"\\", b"/").rstrip(b"/")))
        stem, ext = os.path.splitext(base)
        if ext.lower() in extensions:
            members.append(ArchiveMember(stem=stem, archive=archive, member=info.filename))
    return members


def is_archive_name(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in ARCHIVE_EXTENSIONS


def mixed_sources_message(folder: str, archives: list[str], files: list[str]) -> str:
    """The error for a split folder that holds zip archives and extracted image files at once."""
    where = folder or "."
    return (
        f"image root folder '{where}' holds both zip archives ({len(archives)}, e.g. {archives[0]}) and "
        f"{len(files)} extracted image files under it (e.g. {files[0]}): the same images would be found twice. "
        f"Keep one source: remove the extracted files under '{where}' to read the archives as they are, or move "
        f"the archives ({where}/*.zip) out of the image root to read the extracted files"
    )

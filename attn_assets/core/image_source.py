"""Where an image's bytes come from: a file, or a member of a zip archive (OSV-5M ships ``images/<split>/NN.zip``).

An :class:`~attn_assets.core.loader.ImageRecord` with ``member`` set names the archive in ``path`` (escaped text,
as :func:`~attn_assets.path_text.path_to_text` writes it) and the member inside it, as
``zipfile.ZipFile.namelist()`` gives it (names without the UTF-8 flag are decoded as cp437 by ``zipfile``, so a
non-UTF-8 name is still a str that UTF-8 writers accept).

Archives are opened once per process and kept open (a DataLoader worker reads its members one after the other
from the same handle); a process that inherits the cache through ``fork`` opens its own handles, since a forked
file descriptor shares its offset with the parent.
"""

from __future__ import annotations

import io
import os
import zipfile
import zlib

from PIL import Image

from attn_assets.path_text import text_to_path

from .preprocess import load_rgb

_archives: dict[str, zipfile.ZipFile] = {}
_owner_pid: int | None = None


class MemberError(OSError):
    """A zip member that could not be read; the message says which archive and member, and why."""


def archive(path_text: str) -> zipfile.ZipFile:
    """The open ``ZipFile`` for the archive at escaped ``path_text``, opened once per process.

    Raises FileNotFoundError / IsADirectoryError / PermissionError as ``open`` does, and
    ``zipfile.BadZipFile`` for a file that is not a zip archive.
    """
    global _owner_pid
    if _owner_pid != os.getpid():
        _archives.clear()  # handles inherited through fork share their offset with the parent: never reuse them
        _owner_pid = os.getpid()
    handle = _archives.get(path_text)
    if handle is None:
        handle = zipfile.ZipFile(text_to_path(path_text))
        _archives[path_text] = handle
    return handle


def close_archives() -> None:
    """Close every archive this process holds open (tests, and long-lived processes between shards)."""
    for handle in _archives.values():
        handle.close()
    _archives.clear()


def read_member(path_text: str, member: str) -> bytes:
    """The bytes of ``member`` in the archive at ``path_text``; raises :class:`MemberError` naming both.

    A member missing from the archive, a member whose data fails its CRC-32 or does not inflate, and an
    archive that is not a zip file all become MemberError with a reason a user can act on.
    """
    try:
        handle = archive(path_text)
    except zipfile.BadZipFile as error:
        raise MemberError(f"not a readable zip archive ({error}); re-download or re-copy {path_text}") from error
    try:
        return handle.read(member)
    except KeyError as error:
        raise MemberError(f"member {member!r} not found in zip archive {path_text}") from error
    except (zipfile.BadZipFile, zlib.error, EOFError) as error:
        raise MemberError(f"corrupt zip member {member!r} in {path_text} ({error})") from error
    except NotImplementedError as error:  # compression method zipfile cannot read (e.g. deflate64)
        raise MemberError(f"zip member {member!r} in {path_text} uses an unsupported compression ({error})") from error


def open_image(record) -> Image.Image:
    """Decode ``record`` (an ImageRecord: a file, or ``member`` of the zip archive ``path``) as 8-bit RGB.

    The same decode as :func:`~attn_assets.core.preprocess.load_rgb` for files and members alike (figures use
    this to open the photo a row came from). Raises what ``load_rgb`` raises, and MemberError for archive problems.
    """
    member = getattr(record, "member", None)
    if member is None:
        return load_rgb(text_to_path(record.path))
    return load_rgb(io.BytesIO(read_member(record.path, member)))

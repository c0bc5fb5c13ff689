"""Members of zip archives read through a small cache of open archives (zipfile only: no torch, no Dagster).

Used by the passes (through :mod:`attn_assets.core.image_source`) and by the figures, so both read members the
same way and neither re-reads an archive's central directory per image (on a 50,000-member archive that costs
about 0.6 s per open, and the parsed directory about 28 MB while it is open).

* At most :data:`MAX_OPEN_ARCHIVES` archives stay open per process; opening one more closes the least recently
  used. :func:`close_archives` closes them all (the loader calls it when a pass has read its images).
* A process that inherits the cache through ``fork`` opens its own handles, since a forked file descriptor
  shares its offset with the parent.
* An archive holding two entries of one name: ``ZipFile.read(name)`` would return the last, while the image
  index (:func:`attn_assets.catalog.archives.list_archive_members`) records the first; :func:`read_member`
  reads the first entry of that name, the one the index recorded.

Archive paths are escaped text (:func:`attn_assets.path_text.path_to_text`); member names are zipfile's own
``ZipInfo.filename`` (names without the UTF-8 flag decoded as cp437).
"""

from __future__ import annotations

import os
import zipfile
import zlib
from collections import OrderedDict
from dataclasses import dataclass

from attn_assets.path_text import text_to_path

#: Archives kept open per process (least recently used closed first).
MAX_OPEN_ARCHIVES = 8


class MemberError(OSError):
    """A zip member that could not be read; the message says which archive and member, and why."""


@dataclass
class _OpenArchive:
    handle: zipfile.ZipFile
    first_entries: dict[str, zipfile.ZipInfo]  # only names stored more than once: their first entry


_archives: OrderedDict[str, _OpenArchive] = OrderedDict()
_owner_pid: int | None = None


def _first_entries(handle: zipfile.ZipFile) -> dict[str, zipfile.ZipInfo]:
    """The first entry of each name the archive stores more than once (``getinfo`` gives the last)."""
    first: dict[str, zipfile.ZipInfo] = {}
    for info in handle.infolist():
        if handle.getinfo(info.filename) is not info:
            first.setdefault(info.filename, info)
    return first


def _open(path_text: str) -> _OpenArchive:
    global _owner_pid
    if _owner_pid != os.getpid():
        _archives.clear()  # handles inherited through fork share their offset with the parent: never reuse them
        _owner_pid = os.getpid()
    entry = _archives.get(path_text)
    if entry is not None:
        _archives.move_to_end(path_text)
        return entry
    handle = zipfile.ZipFile(text_to_path(path_text))
    entry = _OpenArchive(handle, _first_entries(handle))
    _archives[path_text] = entry
    while len(_archives) > MAX_OPEN_ARCHIVES:
        _, evicted = _archives.popitem(last=False)
        evicted.handle.close()
    return entry


def archive(path_text: str) -> zipfile.ZipFile:
    """The open ``ZipFile`` for the archive at escaped ``path_text`` (cached, see the module docstring).

    Raises FileNotFoundError / IsADirectoryError / PermissionError as ``open`` does, and
    ``zipfile.BadZipFile`` for a file that is not a zip archive.
    """
    return _open(path_text).handle


def open_archive_count() -> int:
    """How many archives this process holds open."""
    return len(_archives) if _owner_pid == os.getpid() else 0


def close_archives() -> None:
    """Close every archive this process holds open."""
    if _owner_pid == os.getpid():
        for entry in _archives.values():
            entry.handle.close()
    _archives.clear()


def read_member(path_text: str, member: str) -> bytes:
    """The bytes of ``member`` in the archive at ``path_text`` (its first entry of that name).

    Raises :class:`MemberError` naming archive and member for a missing member, data that fails its CRC-32 or
    does not inflate, an unsupported compression, and an archive that is not a zip file; OSError as ``open``
    does for a missing or unreadable archive file.
    """
    try:
        entry = _open(path_text)
    except zipfile.BadZipFile as error:
        raise MemberError(f"not a readable zip archive ({error}); re-download or re-copy {path_text}") from error
    try:
        return entry.handle.read(entry.first_entries.get(member, member))
    except KeyError as error:
        raise MemberError(f"member {member!r} not found in zip archive {path_text}") from error
    except (zipfile.BadZipFile, zlib.error, EOFError) as error:
        raise MemberError(f"corrupt zip member {member!r} in {path_text} ({error})") from error
    except NotImplementedError as error:  # compression method zipfile cannot read (e.g. deflate64)
        raise MemberError(f"zip member {member!r} in {path_text} uses an unsupported compression ({error})") from error
    except RuntimeError as error:  # zipfile: 'File ... is encrypted, password required'
        raise MemberError(f"zip member {member!r} in {path_text} is encrypted ({error}); re-create the archive "
                          "without a password") from error

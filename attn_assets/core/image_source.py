"""Where an image's bytes come from: a file, or a member of a zip archive (OSV-5M ships ``images/<split>/NN.zip``).

An :class:`~attn_assets.core.loader.ImageRecord` with ``member`` set names the archive in ``path`` (escaped text,
as :func:`~attn_assets.path_text.path_to_text` writes it) and the member inside it, as
``zipfile.ZipFile.namelist()`` gives it (names without the UTF-8 flag are decoded as cp437 by ``zipfile``, so a
non-UTF-8 name is still a str that UTF-8 writers accept).

Members are read through :mod:`attn_assets.zip_members` (torch-free, shared with the figures): a few archives kept
open per process, least recently used closed first, all closed when a pass has read its images.
"""

from __future__ import annotations

import io

from PIL import Image

from attn_assets.path_text import text_to_path
from attn_assets.zip_members import MemberError, archive, close_archives, read_member

from .preprocess import load_rgb

__all__ = ["MemberError", "archive", "close_archives", "open_image", "read_member"]


def open_image(record) -> Image.Image:
    """Decode ``record`` (an ImageRecord: a file, or ``member`` of the zip archive ``path``) as 8-bit RGB.

    The same decode as :func:`~attn_assets.core.preprocess.load_rgb` for files and members alike (figures use
    this to open the photo a row came from). Raises what ``load_rgb`` raises, and MemberError for archive problems.
    """
    member = getattr(record, "member", None)
    if member is None:
        return load_rgb(text_to_path(record.path))
    return load_rgb(io.BytesIO(read_member(record.path, member)))

"""File system paths as text that UTF-8 (Arrow, Parquet, DuckDB, CSV, logs) can hold, and back.

POSIX file names are bytes. Python decodes the bytes that are not UTF-8 (Latin-1 names from old cameras
or zip archives) into lone surrogates (PEP 383, ``surrogateescape``), which no UTF-8 writer accepts
(``UnicodeEncodeError: surrogates not allowed``). Every path the pipeline lists from a folder passes
through :func:`path_to_text` at that boundary; every path it opens passes through :func:`text_to_path`.

The escaping rule: each byte that is not part of valid UTF-8 is written as ``\\xNN`` (Python's
``backslashreplace``, two lower-case hex digits, always 80-ff). Valid names are unchanged. A stored text is
unescaped only when it contains such a sequence and no file exists under the literal name, so a real
name that happens to contain the characters ``\\xe9`` still opens.
"""

from __future__ import annotations

import os
import re

_ESCAPED_BYTE = re.compile(r"\\x([89a-f][0-9a-f])")


def path_to_text(path: str | os.PathLike) -> str:
    """``path`` with every non-UTF-8 byte written as ``\\xNN``; valid UTF-8 paths come back unchanged.

    Works on any string (an error message that quotes a path, too). Never raises for str input.
    """
    text = os.fspath(path)
    if isinstance(text, bytes):
        return text.decode("utf-8", "backslashreplace")
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def text_to_path(text: str, base: str | os.PathLike | None = None) -> str:
    """The file system path that :func:`path_to_text` turned into ``text`` (the inverse, for opening).

    ``\\xNN`` sequences (NN in 80-ff) become the raw bytes again, unless a file exists under the literal
    name (looked up under the folder ``base`` when ``text`` is relative to it). Returns a str that
    ``open`` and PIL accept (raw bytes held as surrogate escapes).
    """
    if "\\x" not in text or os.path.lexists(os.path.join(base, text) if base is not None else text):
        return text
    return _ESCAPED_BYTE.sub(lambda m: chr(0xDC00 + int(m.group(1), 16)), text)

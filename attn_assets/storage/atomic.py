"""Atomic writes: a reader never sees a half-written file or folder.

* `atomic_file(target)`: yields a temp path in the target's folder; on success it is
  ``os.replace``-d over the target, on error it is removed and the old target is untouched.
* `atomic_directory(target)`: yields a temp sibling folder; on success it replaces the
  target folder. On Linux the swap is one ``renameat2(RENAME_EXCHANGE)`` call; elsewhere (or
  where the filesystem refuses it) the old folder is renamed away, the new one renamed in and
  the old one deleted. Temp and old folders are hidden siblings (``.<name>.tmp-*``,
  ``.<name>.old-*``) and removed; `remove_abandoned_temporaries` removes any left by a killed process.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import logging
import os
import re
import shutil
import time
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from attn_assets.process_identity import owner_tag, process_alive

logger = logging.getLogger(__name__)

# Temp names carry their writer (pid@host) so cleanup never deletes a file another live process
# is still writing (two runs on the same shard, a redelivered Celery task, a shared filesystem).
_OWNER = owner_tag()
_OWNER_PATTERN = re.compile(r"\.(?:tmp|old)-(\d+)@([^-]+)-")
FOREIGN_TEMP_MAX_AGE_S = 24 * 3600

_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def _load_renameat2():
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


_renameat2 = _load_renameat2()


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two existing paths; False if the platform or filesystem cannot."""
    if _renameat2 is None:
        return False
    rc = _renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    if rc == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EPERM, errno.EXDEV):
        return False
    raise OSError(err, os.strerror(err), str(a), None, str(b))


def _rmtree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


@contextmanager
def atomic_file(target: str | os.PathLike) -> Iterator[Path]:
    """Write a file through a temp path in the same folder, then ``os.replace`` it over ``target``.

    The temp name keeps the target's suffix so writers that infer the format still work.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.tmp-{_OWNER}-", suffix=target.suffix, dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file normal permissions
        yield tmp
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def link_atomic(source: str | os.PathLike, target: str | os.PathLike) -> Path:
    """Make ``target`` the same file as ``source`` in one step: a hard link (no bytes copied) where the file
    system allows one, else a copy; either lands through a temp name and ``os.replace``. Returns ``target``.
    Later atomic rewrites of either path give it a new file and leave the other as it was."""
    source, target = Path(source), Path(target)
    with atomic_file(target) as tmp:
        tmp.unlink()
        try:
            os.link(source, tmp)
        except OSError:
            shutil.copy2(source, tmp)
    return target


@contextmanager
def atomic_directory(target: str | os.PathLike) -> Iterator[Path]:
    """Build a folder in a temp sibling, then swap it in for ``target`` in one step.

    If the body raises, the temp folder is deleted and ``target`` (if it existed) is left as it
    was. A half-written folder is never visible under ``target``'s name.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-{_OWNER}-", dir=target.parent))
    try:
        yield tmp
    except BaseException:
        _rmtree(tmp)
        raise
    try:
        os.chmod(tmp, 0o777 & ~_umask())
        if target.exists() or target.is_symlink():
            if target.is_dir() and not target.is_symlink() and _exchange(tmp, target):
                _rmtree(tmp)  # tmp now holds the previous contents
                return
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-{_OWNER}-", dir=target.parent))
            os.rmdir(old)
            os.rename(target, old)
            try:
                os.rename(tmp, target)
            except BaseException:
                os.rename(old, target)  # put the previous folder back
                raise
            if old.is_dir() and not old.is_symlink():
                _rmtree(old)
            else:
                old.unlink(missing_ok=True)
        else:
            os.rename(tmp, target)
    except BaseException:
        _rmtree(tmp)
        raise


def _umask() -> int:
    """The process umask, read without changing it (os.umask would race other threads)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o022


def is_abandoned(path: Path) -> bool:
    """A temp/old sibling whose writer is gone: a dead pid on this host, or older than a day elsewhere."""
    match = _OWNER_PATTERN.search(path.name)
    if match and match.group(2) == _OWNER.split("@", 1)[1]:
        pid = int(match.group(1))
        return pid != os.getpid() and not process_alive(pid)
    try:
        return time.time() - path.lstat().st_mtime > FOREIGN_TEMP_MAX_AGE_S
    except FileNotFoundError:
        return False


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        _rmtree(path)
    else:
        path.unlink(missing_ok=True)


def remove_abandoned_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Delete hidden temp files and folders in ``folder`` whose writer was killed."""
    folder = Path(folder)
    removed = []
    if folder.is_dir():
        for entry in folder.iterdir():
            if entry.name.startswith(".") and (".tmp-" in entry.name or ".old-" in entry.name) and is_abandoned(entry):
                _remove(entry)
                removed.append(entry)
    return removed

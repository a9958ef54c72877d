"""Files: every file tsjax writes is written atomically (a temporary file in the same
folder, then ``os.replace``), so a saved file is never left half-written, and gets the
permissions of an ordinary new file (0o666 minus the user's umask)."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable

__all__ = ["atomic_write", "default_file_mode"]


def default_file_mode() -> int:
    """0o666 masked by the process umask (what ``open(path, "w")`` would give)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def atomic_write(path: str | os.PathLike, write: Callable[[str], None], suffix: str = "") -> None:
    """Call ``write(tmp_path)`` to write a temporary file next to ``path``, then move it onto
    ``path`` in one ``os.replace``; on any error (or interruption) the temporary file is
    removed and ``path`` is left as it was."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=suffix, dir=folder)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, default_file_mode())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise

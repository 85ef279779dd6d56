"""Atomic file writes: a reader sees the old file or the complete new one, never a partial one."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Writes a file through a temporary file in the same folder, then renames it into place.

    Args:
        path: the file to write; its folder must exist.
        write: called with the temporary file's path; it writes the complete content there.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    The file gets the permissions of a newly created one (``0o666`` less the umask), not the
    owner-only ones of a temporary file. The temporary file is removed if ``write`` (or the
    rename) fails, and ``path`` is then left as it was.
    """
    path = Path(path)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    try:
        write(Path(temporary))
        os.chmod(temporary, 0o666 & ~_umask())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def _umask() -> int:
    """The process's umask (read by setting it and restoring it at once)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Writes ``text`` (UTF-8) to ``path`` atomically (see :func:`atomic_write`)."""
    return atomic_write(path, lambda target: target.write_text(text, encoding="utf-8"))

"""Small file helpers shared by the model package, the pipeline and app.py.

One atomic writer and one file hash, so every file the project writes appears the same
way (DESIGN.md invariant 6) and every hash is computed the same way:

* `atomic_path` hands out a hidden temporary name in the destination directory (same
  filesystem, so `os.replace` is an atomic rename); once the caller has written it, the
  data are fsynced (a crash right after the rename cannot leave an empty file under the
  final name), the file gets the mode a plain `open` would give (`mkstemp` makes 0600;
  these files are for sharing), and it is renamed into place. On any error, Ctrl-C
  included, the temporary file is removed and the old file, if any, is untouched.
* `sha256_file` streams the file in 4 MiB chunks: checkpoints are up to 512 MiB.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

__all__ = ["atomic_path", "atomic_write_bytes", "atomic_write_text", "sha256_file"]

_CHUNK = 4 * 1024 * 1024


def _read_umask() -> int:
    """The process umask, read without changing it where Linux allows (os.umask(0) would
    briefly let files made by other threads, e.g. Dask workers, be world-writable)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    umask = os.umask(0o22)  # elsewhere: once, at import, before any worker thread exists
    os.umask(umask)
    return umask


_UMASK = _read_umask()


def _plain_open_mode() -> int:
    return 0o666 & ~_UMASK


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside `path`; write it in the `with` body. On a normal
    exit it is fsynced and renamed to `path`; on an exception it is removed."""
    path = Path(path)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, _plain_open_mode())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write `data` to `path` so readers see the old file or the new one, never half."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """`atomic_write_bytes` of UTF-8 text."""
    atomic_write_bytes(path, text.encode("utf-8"))


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Full hex sha256 of a file, read in 4 MiB chunks (constant memory)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()

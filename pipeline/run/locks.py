"""One writer per output at a time, across processes: `output_lock`.

Temporary names and an atomic rename (ugatit.io, pipeline/run/mosaic.py) already make sure
no reader ever sees a torn file, whatever runs at once. What they do not prevent is two
runs pointed at the same output directory doing the same scene twice, and a manifest
written by one run describing the output another run just replaced. So each output is
also locked while it is (re)made, with a lock file beside it, ``.NAME.eo2sar-lock``
(hidden: never taken for a scene; it names the holder's host and pid):

- a directory run that finds a scene locked skips it ("another run is writing it") and
  goes on with the next, so two runs on one directory share the scenes; a scene is
  checked against its manifest only under the lock, so it is done once;
- a single-scene run whose output is locked stops with an OutputError (exit 1);
- `pipeline tiles` locks the dataset directory and waits for the other run to finish
  (it merges into index.geojson and dataset.json: a read-modify-write).

The lock is `fcntl.flock`: the kernel releases it when the holder dies, SIGKILL included,
so a killed run never leaves a stale lock. The file is removed by its holder on release.
flock is local to one machine on some network filesystems (older NFS): runs on several
hosts writing one shared directory are not serialised by it (docs/faults.md).

The lock file is opened with O_NOFOLLOW and must be a regular file with one link: the
holder truncates and writes it, so a symlink (or a hard link) planted under the lock's
name in a shared folder would otherwise make a run overwrite the file it points to, or
create one elsewhere (a dangling link). Such a path is refused (`UnsafeLockFile`).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import socket
import stat
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

from pipeline.errors import OutputError

__all__ = ["LOCK_MARK", "OutputBusy", "UnsafeLockFile", "lock_path", "output_lock"]

LOCK_MARK = ".eo2sar-lock"


class OutputBusy(OutputError):
    """Another process is writing this output right now."""


class UnsafeLockFile(OutputError):
    """The lock file's path is a symlink, a hard link or not a regular file: not ours to
    truncate (someone may have planted it to make a run overwrite another file)."""


#: O_NOFOLLOW: a symlink at the lock path fails the open (ELOOP) instead of being followed;
#: O_NOCTTY/O_NONBLOCK: a device or FIFO planted there can neither become our terminal
#: nor block the open (it is refused right after, by the fstat check).
_OPEN_FLAGS = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NOCTTY | os.O_NONBLOCK
_UNSAFE_HINT = ("it is not an eo2sar lock file: remove it (and check who made it), then "
                "rerun")


def _open_lock(final: Path, path: Path) -> int | None:
    """Open (or create) the lock file without following a symlink; refuse anything but a
    regular file with a single link. Returns the fd, or None if the file was unlinked
    (by its releasing holder) right after we opened it."""
    try:
        fd = os.open(path, _OPEN_FLAGS, 0o644)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.EISDIR, errno.ENXIO):
            raise UnsafeLockFile(
                f"the lock file {path.name} is a symlink or not a regular file",
                path=final, hint=_UNSAFE_HINT) from None
        raise
    st = os.fstat(fd)
    if stat.S_ISREG(st.st_mode) and st.st_nlink == 0:
        os.close(fd)
        return None
    if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
        os.close(fd)
        what = "not a regular file" if not stat.S_ISREG(st.st_mode) else "a hard link"
        raise UnsafeLockFile(f"the lock file {path.name} is {what}", path=final,
                             hint=_UNSAFE_HINT)
    return fd


def lock_path(final: Path) -> Path:
    """``out/x.tif`` -> ``out/.x.tif.eo2sar-lock``."""
    final = Path(final)
    return final.parent / f".{final.name}{LOCK_MARK}"


# locks this process holds: lock file -> (fd, depth). Re-entrant, because the directory
# runner locks an output for its whole scene and the scene writer locks it again; so it
# excludes other processes, not other threads of this one.
_held: dict[str, tuple[int, int]] = {}
_held_guard = threading.Lock()


def _holder(fd: int) -> str:
    """What the holder wrote into the lock file ("host H, pid P"), for the message."""
    with contextlib.suppress(OSError):
        text = os.pread(fd, 200, 0).decode("utf-8", "replace").strip()
        if text:
            return text
    return "unknown process"


def _acquire(final: Path, path: Path, wait: bool, on_wait: Callable[[str], None] | None
             ) -> int:
    """flock the lock file; return its fd. Retries when the file it locked was removed by
    the previous holder in the meantime (then it locks a file nobody else will open)."""
    while True:
        fd = _open_lock(final, path)
        if fd is None:
            continue  # removed by its holder between our open and fstat: open again
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if not wait:
                    raise OutputBusy(f"another eo2sar run is writing it ({_holder(fd)})",
                                     path=final,
                                     hint="wait for that run to finish, or write elsewhere"
                                     ) from None
                if on_wait is not None:
                    on_wait(_holder(fd))
                fcntl.flock(fd, fcntl.LOCK_EX)
            if os.fstat(fd).st_ino == os.lstat(path).st_ino:
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"host {socket.gethostname()}, pid {os.getpid()}".encode(), 0)
                return fd
        except FileNotFoundError:
            pass  # removed by its previous holder after we opened it: lock the new one
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)


@contextlib.contextmanager
def output_lock(final: str | os.PathLike[str], *, wait: bool = False,
                on_wait: Callable[[str], None] | None = None) -> Iterator[Path]:
    """Hold the lock of `final` (its directory must exist) for the `with` body.

    Raises OutputBusy if another process holds it, unless `wait`: then `on_wait(holder)`
    is called once and the lock is awaited. Yields the lock file's path.
    """
    final = Path(final)
    path = lock_path(final)
    key = str(path.absolute())
    with _held_guard:
        fd, depth = _held.get(key, (-1, 0))
        if depth:
            _held[key] = (fd, depth + 1)
    if not depth:
        fd = _acquire(final, path, wait, on_wait)
        with _held_guard:
            _held[key] = (fd, 1)
    try:
        yield path
    finally:
        with _held_guard:
            fd, depth = _held.pop(key)
            if depth > 1:
                _held[key] = (fd, depth - 1)
        if depth == 1:
            with contextlib.suppress(OSError):
                path.unlink()  # before unlocking: a waiter then sees a new inode, retries
            os.close(fd)

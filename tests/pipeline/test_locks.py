"""pipeline.locks.output_lock: one writer per output across processes.

"Another process" is simulated with a second open file description of the lock file,
flocked by the test: flock conflicts between descriptions, even within one process.
The waiting cases hand over through the `on_wait` callback (a threading.Event), so
nothing depends on timing.
"""

from __future__ import annotations

import fcntl
import os
import threading
from pathlib import Path

import pytest

from pipeline.locks import OutputBusy, lock_path, output_lock


def hold(path: Path, holder: str = "host elsewhere, pid 1") -> int:
    """Lock `path` as another process would; returns the fd (close it to release)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX)
    os.pwrite(fd, holder.encode(), 0)
    return fd


def test_held_while_inside_reentrant_and_removed_after(tmp_path: Path) -> None:
    out = tmp_path / "x.tif"
    with output_lock(out) as lock:
        assert lock == lock_path(out) == tmp_path / ".x.tif.eo2sar-lock"
        assert f"pid {os.getpid()}" in lock.read_text()
        with output_lock(out):  # the scene writer inside the directory runner's lock
            assert lock.exists()
        assert lock.exists()  # still held by the outer level
        fd = os.open(lock, os.O_RDWR)
        with pytest.raises(BlockingIOError):
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.close(fd)
    assert list(tmp_path.iterdir()) == []


def test_busy_names_the_holder_and_the_output(tmp_path: Path) -> None:
    out = tmp_path / "x.tif"
    fd = hold(lock_path(out))
    with pytest.raises(OutputBusy) as err, output_lock(out):
        pass
    os.close(fd)
    assert err.value.format() == (f"{out}: another eo2sar run is writing it (host elsewhere, "
                                  "pid 1). Hint: wait for that run to finish, or write elsewhere")
    with output_lock(out):  # released by its holder: free again
        pass


def test_waiter_retries_when_the_holder_replaced_the_file(tmp_path: Path) -> None:
    """Holder 1 releases after removing the file while a third party already locks a
    new one: the waiter, woken on the removed file, must wait again on the current one."""
    out = tmp_path / "x.tif"
    path = lock_path(out)
    first = hold(path)
    waits: list[str] = []
    waiting = threading.Event()
    state: dict[str, int] = {}

    def on_wait(holder: str) -> None:
        waits.append(holder)
        waiting.set()

    def waiter() -> None:
        with output_lock(out, wait=True, on_wait=on_wait):
            state["inode"] = os.stat(path).st_ino

    thread = threading.Thread(target=waiter)
    thread.start()
    assert waiting.wait(30)
    waiting.clear()
    path.unlink()  # holder 1 removes its file (as output_lock does) ...
    third = hold(path, "host third, pid 3")  # ... someone locks a new one ...
    os.close(first)  # ... then holder 1 unlocks: the waiter wakes on a removed file
    assert waiting.wait(30)  # and waits again, now for the third party
    current = os.stat(path).st_ino
    os.close(third)
    thread.join(30)
    assert waits == ["host elsewhere, pid 1", "host third, pid 3"]
    assert state["inode"] == current
    assert not path.exists()

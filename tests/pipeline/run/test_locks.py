"""pipeline.run.locks.output_lock: one writer per output across processes.

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

from pipeline.run.locks import OutputBusy, UnsafeLockFile, lock_path, output_lock


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


# --- a lock path planted by someone else (docs/faults.md, Security) -----------------------


def _victim(tmp_path: Path) -> tuple[Path, bytes, int]:
    """A file outside the output folder that a planted link points at: (path, bytes,
    mtime_ns) to check it is left untouched."""
    victim = tmp_path / "victim" / "precious.txt"
    victim.parent.mkdir()
    victim.write_bytes(b"do not truncate me\n")
    return victim, victim.read_bytes(), victim.stat().st_mtime_ns


@pytest.mark.parametrize("kind", ["symlink", "dangling symlink", "hard link", "fifo",
                                  "directory"])
def test_a_planted_lock_path_is_refused_and_nothing_is_written(tmp_path: Path, kind: str
                                                               ) -> None:
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / "x.tif"
    lock = lock_path(out)
    victim, before, mtime = _victim(tmp_path)
    elsewhere = tmp_path / "victim" / "created.txt"
    if kind == "symlink":
        lock.symlink_to(victim)
    elif kind == "dangling symlink":
        lock.symlink_to(elsewhere)
    elif kind == "hard link":
        os.link(victim, lock)
    elif kind == "fifo":
        os.mkfifo(lock)
    else:
        lock.mkdir()
    with pytest.raises(UnsafeLockFile) as err, output_lock(out):
        pytest.fail("the lock was taken")  # pragma: no cover
    assert err.value.format().startswith(f"{out}: the lock file .x.tif.eo2sar-lock is ")
    assert "remove it" in err.value.hint
    assert victim.read_bytes() == before and victim.stat().st_mtime_ns == mtime
    assert not elsewhere.exists()
    assert (lock.is_symlink() or lock.exists()) and not out.exists()  # left as found


def test_run_with_a_symlinked_lock_file_exits_1_and_leaves_the_target(
        tmp_path: Path, tiny_checkpoint: Path) -> None:
    """The attack through the CLI: `.out.tif.eo2sar-lock` -> a file of the victim's."""
    from click.testing import CliRunner

    from pipeline.cli import main
    from tests.helpers import SN6

    out_dir = tmp_path / "out"
    out_dir.mkdir()
    victim, before, mtime = _victim(tmp_path)
    lock_path(out_dir / "out.tif").symlink_to(victim)
    res = CliRunner().invoke(main, ["run", str(SN6), str(out_dir / "out.tif"), "--model",
                                    str(tiny_checkpoint), "--tile-size", "64", "--overlap",
                                    "16", "-q"])
    assert res.exit_code == 1, res.output
    assert res.stderr.strip().count("\n") == 0, res.stderr
    assert res.stderr.startswith("Error: ") and "is a symlink" in res.stderr
    assert victim.read_bytes() == before and victim.stat().st_mtime_ns == mtime
    assert sorted(p.name for p in out_dir.iterdir()) == [".out.tif.eo2sar-lock"]


def test_tiles_with_a_dangling_lock_symlink_exits_1_and_creates_nothing(tmp_path: Path
                                                                        ) -> None:
    from click.testing import CliRunner

    from pipeline.cli import main
    from tests.helpers import DATA

    elsewhere = tmp_path / "elsewhere" / "created.txt"
    elsewhere.parent.mkdir()
    out = tmp_path / "ds"
    lock_path(out).symlink_to(elsewhere)
    res = CliRunner().invoke(main, ["tiles", "--sar",
                                    str(DATA / "airsar_sanfrancisco_fullpol_intensity.tif"),
                                    "--out", str(out), "--tile-size", "128", "-q"])
    assert res.exit_code == 1, res.output
    assert res.output.startswith("Error: ") and "is a symlink" in res.output
    assert len(res.output.strip().splitlines()) == 1
    assert not elsewhere.exists()
    assert not (out.exists() and any(out.iterdir()))


def test_directory_run_with_a_planted_lock_stops_with_one_line_and_leaves_the_target(
        tmp_path: Path, tiny_checkpoint: Path) -> None:
    """A directory run meeting such a lock file stops there (exit 1, the same one line;
    its run report is written), the link's target untouched."""
    from click.testing import CliRunner
    from rasterio.windows import Window

    from pipeline.cli import main
    from tests.helpers import SN6, crop

    scenes, out_dir = tmp_path / "in", tmp_path / "out"
    scenes.mkdir()
    out_dir.mkdir()
    crop(SN6, scenes / "a.tif", Window(0, 0, 64, 64))
    victim, before, mtime = _victim(tmp_path)
    lock_path(out_dir / "a.tif").symlink_to(victim)
    res = CliRunner().invoke(main, ["run", str(scenes), str(out_dir), "--model",
                                    str(tiny_checkpoint), "--tile-size", "64", "--overlap",
                                    "16", "-q"])
    assert res.exit_code == 1, res.output
    assert res.stderr.strip().splitlines()[-1].startswith(f"Error: {out_dir / 'a.tif'}: the "
                                                          "lock file .a.tif.eo2sar-lock is")
    assert victim.read_bytes() == before and victim.stat().st_mtime_ns == mtime
    assert not (out_dir / "a.tif").exists()

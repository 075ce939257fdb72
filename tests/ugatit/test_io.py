"""ugatit.io: the one atomic writer (manifests, checkpoints, PNGs) and the file hash."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from ugatit.io import atomic_path, atomic_write_bytes, atomic_write_text, sha256_file


def test_atomic_path_renames_on_success_and_cleans_up_on_error(tmp_path: Path) -> None:
    p = tmp_path / "x.bin"
    with atomic_path(p) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".x.bin.")
        tmp.write_bytes(b"new")
    assert p.read_bytes() == b"new"
    with pytest.raises(RuntimeError), atomic_path(p) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("writer died")
    assert p.read_bytes() == b"new"
    assert sorted(q.name for q in tmp_path.iterdir()) == ["x.bin"]


def test_atomic_write_leaves_no_temp_file(tmp_path: Path) -> None:
    p = tmp_path / "r.json"
    atomic_write_text(p, "one")
    atomic_write_text(p, "two")
    assert p.read_text() == "two"
    assert sorted(x.name for x in tmp_path.iterdir()) == ["r.json"]


def test_atomic_write_failure_keeps_the_old_file(tmp_path: Path) -> None:
    p = tmp_path / "r.json"
    p.write_text("old")
    with pytest.raises(TypeError):
        atomic_write_bytes(p, "text")  # type: ignore[arg-type]  # fails inside the write
    assert p.read_text() == "old"
    assert sorted(x.name for x in tmp_path.iterdir()) == ["r.json"]


def test_atomic_write_gives_the_mode_of_a_plain_open(tmp_path: Path) -> None:
    """mkstemp creates 0600; manifests, reports and quicklooks are for sharing."""
    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "r.json", "{}")
    finally:
        os.umask(old)
    assert (tmp_path / "r.json").stat().st_mode & 0o777 == 0o644


def test_sha256_file_streams_the_whole_file(tmp_path: Path) -> None:
    data = os.urandom(9 * 1024 * 1024 + 7)  # more than two 4 MiB chunks
    (tmp_path / "f").write_bytes(data)
    assert sha256_file(tmp_path / "f") == hashlib.sha256(data).hexdigest()


def test_temporaries_carry_host_and_pid_and_dead_ones_are_removed(tmp_path: Path) -> None:
    """A SIGKILLed writer cannot clean up; its temporaries say who wrote them, so a
    later run removes those of dead processes of this host, in one file's name space
    (remove_stale_temps) or a whole folder (remove_stale_temps_in: checkpoints/)."""
    from ugatit.io import TMP_MARK, _host, remove_stale_temps, remove_stale_temps_in

    with atomic_path(tmp_path / "m.json") as tmp:
        assert tmp.name.startswith(f".m.json{TMP_MARK}-{_host()}-{os.getpid()}-")
        live = tmp_path / (tmp.name + ".copy")  # a live writer's (this process)
    dead_pid = 2**22 + 1  # above Linux's largest pid_max: no such process
    dead = [tmp_path / f".{n}{TMP_MARK}-{_host()}-{dead_pid}-abc.tmp" for n in ("m.json", "p.pt")]
    other_host = tmp_path / f".m.json{TMP_MARK}-elsewhere-{dead_pid}-abc.tmp"
    for p in (live, *dead, other_host):
        p.write_bytes(b"x")
    assert remove_stale_temps(tmp_path / "m.json") == [dead[0]]
    assert remove_stale_temps_in(tmp_path) == [dead[1]]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [live.name, other_host.name, "m.json"])


def test_fault_point_kills_only_at_the_named_arrival(monkeypatch: pytest.MonkeyPatch) -> None:
    """The test hook: inert unless EO2SAR_FAULT_POINT names the point; NAME@N fires at
    the N-th arrival (os.kill replaced here, to record instead of dying)."""
    import ugatit.io as uio

    kills: list[int] = []
    monkeypatch.setattr(uio.os, "kill", lambda pid, sig: kills.append(sig))
    monkeypatch.setattr(uio, "_fault_hits", {})
    monkeypatch.delenv(uio.FAULT_ENV, raising=False)
    uio.fault_point("cog")
    monkeypatch.setenv(uio.FAULT_ENV, "cog@3")
    for _ in range(2):
        uio.fault_point("cog")
        uio.fault_point("manifest")
    assert kills == []
    uio.fault_point("cog")
    assert kills == [uio.signal.SIGKILL]


@pytest.mark.parametrize("mode", [0o600, 0o640, 0o604])
def test_rewriting_keeps_the_mode_of_the_file_it_replaces(tmp_path: Path, mode: int) -> None:
    """A user who narrowed a page to 0600 keeps it private when it is rewritten (was: the
    rewrite came back 0644, readable by every local user)."""
    p = tmp_path / "page.html"
    p.write_text("old")
    p.chmod(mode)
    atomic_write_text(p, "new")
    assert p.read_text() == "new" and p.stat().st_mode & 0o7777 == mode
    p.chmod(0o4600)  # set-id bits are never carried over to new contents
    atomic_write_text(p, "newer")
    assert p.stat().st_mode & 0o7777 == 0o600


def test_a_file_of_another_user_lends_its_mode_to_nothing(tmp_path: Path) -> None:
    """A 0666 file planted by someone else: the rewrite gets a plain open's mode (as a
    symlink there does), not world-writable bits."""
    if os.geteuid() != 0:
        pytest.skip("needs root to make a file owned by another user")
    p = tmp_path / "page.html"
    p.write_text("planted")
    p.chmod(0o666)
    os.chown(p, 12345, 12345)
    atomic_write_text(p, "ours")
    assert p.stat().st_uid == 0 and p.stat().st_mode & 0o777 == 0o666 & ~_umask()
    link = tmp_path / "link.html"
    link.symlink_to(p)
    atomic_write_text(link, "via the link")
    assert not link.is_symlink() and link.read_text() == "via the link"
    assert p.read_text() == "ours"  # the link was replaced, its target not written


def _umask() -> int:
    from ugatit.io import _UMASK

    return _UMASK

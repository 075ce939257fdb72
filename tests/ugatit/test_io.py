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

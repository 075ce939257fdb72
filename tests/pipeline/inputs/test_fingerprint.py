"""pipeline.inputs.fingerprint: an input file's identity, in full or by head and tail."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from pipeline.inputs.fingerprint import FULL_HASH_LIMIT, HEAD_TAIL_BYTES, fingerprint_input


def test_small_file_is_hashed_in_full(tmp_path: Path) -> None:
    f = tmp_path / "s.tif"
    f.write_bytes(b"abc" * 1000)
    fp = fingerprint_input(f)
    assert fp.method == "full"
    assert fp.sha256 == hashlib.sha256(b"abc" * 1000).hexdigest()
    assert fp.size == 3000 and fp.mtime_ns == f.stat().st_mtime_ns


def test_large_file_head_tail(tmp_path: Path) -> None:
    f = tmp_path / "big.tif"
    size = FULL_HASH_LIMIT + 3 * HEAD_TAIL_BYTES
    with open(f, "wb") as fh:  # sparse: cheap to make
        fh.truncate(size)
    fp = fingerprint_input(f)
    assert fp.method == "head-tail-1MiB"
    zeros = b"\0" * HEAD_TAIL_BYTES
    assert fp.sha256 == hashlib.sha256(str(size).encode() + zeros + zeros).hexdigest()
    # a change in the last MiB is seen, keeping size and mtime
    st = f.stat()
    with open(f, "r+b") as fh:
        fh.seek(size - 10)
        fh.write(b"x")
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    fp2 = fingerprint_input(f)
    assert (fp2.size, fp2.mtime_ns) == (fp.size, fp.mtime_ns)
    assert fp2.sha256 != fp.sha256

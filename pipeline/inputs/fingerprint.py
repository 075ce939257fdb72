"""Input fingerprints: the identity of an input file, cheap to compute, sensitive to any edit.

A directory run records it in each scene's manifest (pipeline/run/manifest.py) and skips a
scene whose input still matches; the viewer checks that a manifest's input is the file it
shows. It belongs to the inputs: it reads nothing but the input file.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ugatit.io import sha256_file

__all__ = ["FULL_HASH_LIMIT", "HEAD_TAIL_BYTES", "InputFingerprint", "fingerprint_input"]

# Inputs up to this size are hashed in full; bigger ones by their first and last MiB.
# Reading 2 MiB costs the same whether the scene is 20 MB or 20 GB, so checking a
# directory of 10,000 scenes for changes stays fast even on network storage, while a full
# hash of every multi-GB scene on every rerun would cost as much I/O as the run itself.
# What head+tail misses is only a change that keeps the size, the mtime (to the
# nanosecond) and both ends of the file: a GeoTIFF keeps its header, IFD and tile offsets
# at the start (classic layout) or end (GDAL appends them after an update), so a rewritten
# scene changes them.
FULL_HASH_LIMIT = 16 * 1024 * 1024
HEAD_TAIL_BYTES = 1024 * 1024


@dataclass(frozen=True)
class InputFingerprint:
    """Identity of an input scene: cheap to compute, sensitive to any edit.

    ``mtime_ns`` is part of it on purpose: like ``make``, touching an input asks for a
    redo. ``sha256`` is the full hash for small files and the hash of
    ``size || first MiB || last MiB`` for large ones (``method`` says which), which
    catches a same-size, same-mtime replacement (``cp -p``/``rsync -t`` of another
    version, filesystems with 1-2 s mtime granularity).
    """

    size: int
    mtime_ns: int
    sha256: str
    method: str  # "full" or "head-tail-1MiB"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def fingerprint_input(path: Path) -> InputFingerprint:
    """Fingerprint an input file (see :class:`InputFingerprint`)."""
    st = os.stat(path)
    if st.st_size <= FULL_HASH_LIMIT:
        return InputFingerprint(st.st_size, st.st_mtime_ns, sha256_file(path), "full")
    h = hashlib.sha256()
    h.update(str(st.st_size).encode())
    with open(path, "rb") as f:
        h.update(f.read(HEAD_TAIL_BYTES))
        f.seek(-HEAD_TAIL_BYTES, os.SEEK_END)
        h.update(f.read(HEAD_TAIL_BYTES))
    return InputFingerprint(st.st_size, st.st_mtime_ns, h.hexdigest(), "head-tail-1MiB")

"""Fixtures of the fault tests: small real scenes (Landsat 8 crops)."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from rasterio.windows import Window

from tests.helpers import L8, crop


@pytest.fixture(scope="session")
def two_scenes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """scenes/a.tif and scenes/b.tif: 320 x 320 px uint16 B,G,R crops of the bundled
    Landsat 8 scene (b with part of its zero collar, so nodata is exercised too)."""
    root = tmp_path_factory.mktemp("scenes")
    for name, (col, row) in {"a": (700, 600), "b": (1500, 1200)}.items():
        crop(L8, root / f"{name}.tif", Window(col, row, 320, 320))
    return root


@pytest.fixture
def stalled() -> Iterator[str]:
    """Base URL of a server on 127.0.0.1 that accepts connections (the kernel's backlog)
    and never answers a byte: what a hung remote input looks like."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        sock.close()

"""Fixtures of the fault tests: small real scenes (Landsat 8 crops)."""

from __future__ import annotations

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

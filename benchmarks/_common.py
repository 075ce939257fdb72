"""Shared helpers of the benchmark scripts: synthetic scenes, tables, JSON output.

Benchmarks are scripts, not tests: they measure and print, they never assert a time.
Each writes ``bench_out/<name>.json`` (directory overridable with ``--out``) with the
machine it ran on, so numbers from different machines are never compared by accident.
"""

from __future__ import annotations

import json
import math
import os
import platform
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # `python benchmarks/x.py` without `pip install -e .`
    sys.path.insert(0, str(REPO))

DEFAULT_OUT = REPO / "bench_out"


def machine() -> dict[str, Any]:
    """Where the numbers come from (CPU count, torch threads, versions)."""
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        # shared machines: a load above the core count means the timings are pessimistic
        "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
    }
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
        info["cuda"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except ImportError:
        info["torch"] = None
    return info


def write_json(out_dir: Path, name: str, payload: dict[str, Any]) -> Path:
    """Write ``out_dir/name.json`` (atomically) with the machine description added."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.json"
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps({"benchmark": name, "machine": machine(), **payload}, indent=2,
                              default=str) + "\n")
    os.replace(tmp, path)
    return path


def format_table(rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> str:
    """Fixed-width text table; floats with 3 significant decimals."""
    if not rows:
        return "(no rows)"
    columns = list(columns or rows[0].keys())

    def cell(v: Any) -> str:
        if isinstance(v, float):
            if math.isnan(v) or math.isinf(v):
                return str(v)
            return f"{v:.3f}" if abs(v) < 1000 else f"{v:.0f}"
        return "" if v is None else str(v)

    table = [[str(c) for c in columns]] + [[cell(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(columns))]
    lines = ["  ".join(v.rjust(w) for v, w in zip(r, widths, strict=True)) for r in table]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _smooth_noise(rows: np.ndarray, cols: np.ndarray, seed: int, n_waves: int = 24
                  ) -> np.ndarray:
    """Sum of random plane waves evaluated at global pixel coordinates.

    A function of the coordinates (not of the block), so the field is continuous across
    the blocks it is written in, and any block can be generated alone: the synthetic scene
    never exists as a full array. cos(a + b) = cos a cos b - sin a sin b turns the sum
    into one [h, 2n] x [2n, w] matrix product (BLAS), ~10x faster than a cos per pixel.
    """
    rng = np.random.default_rng(seed)
    left = np.empty((rows.size, 2 * n_waves), dtype=np.float64)
    right = np.empty((2 * n_waves, cols.size), dtype=np.float64)
    for i in range(n_waves):
        wavelength = rng.uniform(40.0, 3000.0)
        angle = rng.uniform(0.0, math.pi)
        phase = rng.uniform(0.0, 2 * math.pi)
        k = 2 * math.pi / wavelength
        ky, kx = k * math.sin(angle), k * math.cos(angle)
        amp = (wavelength / 3000.0) ** 0.5  # long waves stronger, like real landscapes
        a = ky * rows + phase
        b = kx * cols
        left[:, 2 * i], left[:, 2 * i + 1] = amp * np.cos(a), -amp * np.sin(a)
        right[2 * i], right[2 * i + 1] = np.cos(b), np.sin(b)
    out = left.astype(np.float32) @ right.astype(np.float32)
    return out / np.float32(math.sqrt(n_waves))


def synthetic_block(row0: int, col0: int, h: int, w: int, seed: int = 0) -> np.ndarray:
    """[3, h, w] uint8 of the synthetic scene at (row0, col0).

    Smooth "terrain" per band (plane waves), "fields" (a 700 px block pattern with a
    per-field brightness), "roads" (bright 6 px lines every 1100 px) and pixel noise, so
    a percentile stretch and the generator see structure at several scales.
    """
    rows = np.arange(row0, row0 + h, dtype=np.float64)
    cols = np.arange(col0, col0 + w, dtype=np.float64)
    fy = (rows // 700).astype(np.int64)[:, None]
    fx = (cols // 700).astype(np.int64)[None, :]
    field_id = (fy * 7919 + fx * 104729) % 251  # deterministic per-field value
    roads = ((rows % 1100) < 6)[:, None] | ((cols % 1100) < 6)[None, :]
    noise_rng = np.random.default_rng([seed, row0, col0])  # per block, reproducible
    bands = []
    for b in range(3):
        terrain = _smooth_noise(rows, cols, seed * 10 + b)
        v = 110 + 45 * terrain + 0.12 * (field_id.astype(np.float32) - 125) * (1 + 0.3 * b)
        v = v + noise_rng.normal(0.0, 6.0, size=(h, w)).astype(np.float32)
        v = np.where(roads, 225.0 - 10 * b, v)
        bands.append(np.clip(v, 1, 255))
    return np.stack(bands).astype(np.uint8)


def write_synthetic_scene(path: Path, size: int, *, seed: int = 0, block: int = 1024,
                          crs: str = "EPSG:32631") -> Path:
    """A size x size 3-band uint8 GeoTIFF (tiled 512, deflate), written block by block.

    Georeferenced on a 1 m UTM grid so the pipeline treats it like a real scene. Peak
    memory is one ``block`` x ``block`` window, never the scene.
    """
    import rasterio
    from rasterio.transform import from_origin
    from rasterio.windows import Window

    profile = {
        "driver": "GTiff", "width": size, "height": size, "count": 3, "dtype": "uint8",
        "crs": crs, "transform": from_origin(500_000.0, 5_760_000.0, 1.0, 1.0),
        "tiled": True, "blockxsize": 512, "blockysize": 512, "compress": "deflate",
        "predictor": 2, "BIGTIFF": "IF_SAFER",
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with rasterio.open(tmp, "w", **profile) as dst:
        for r in range(0, size, block):
            for c in range(0, size, block):
                h, w = min(block, size - r), min(block, size - c)
                dst.write(synthetic_block(r, c, h, w, seed), window=Window(c, r, w, h))
    os.replace(tmp, path)
    return path


def make_checkpoint(path: Path, ngf: int = 4, n_res: int = 1, seed: int = 0) -> Path:
    """Random-weight light checkpoint (generators only), made once and reused."""
    if path.exists():
        return path
    from ugatit import ModelConfig, init_checkpoint

    return init_checkpoint(path, ModelConfig(ngf=ngf, n_res=n_res), seed=seed,
                           networks=("genA2B", "genB2A"))

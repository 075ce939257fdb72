"""Data paths and assertions shared by the test modules (imported, never collected).

Test modules import from here, never from each other: a helper lives in one place, and
a test module can be moved or renamed without breaking another.
"""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import click
import numpy as np
import rasterio
from click.testing import CliRunner
from PIL import Image
from rio_cogeo.cogeo import cog_validate

from pipeline.synthetic import crop_raster

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "tests" / "data"
SN6 = DATA / "sn6_rotterdam_eo_rgb.tif"  # 200 x 200 uint8 RGB, WorldView-2, Rotterdam
L8 = DATA / "l8_224078_parana_bgr_uint16.tif"  # 2041 x 1860 uint16 B,G,R, zero collar

#: crop(src, dst, window, **profile_changes): a georeferenced copy of a window, the one
#: crop helper of tests, benchmarks and scripts.
crop = crop_raster


def assert_same_grid(inp: Path, out: Path) -> None:
    """Same CRS, transform (exactly: copied, never recomputed) and size."""
    with rasterio.open(inp) as a, rasterio.open(out) as b:
        assert b.crs == a.crs
        assert b.transform == a.transform
        assert (b.width, b.height) == (a.width, a.height)


def cog_problems(path: Path) -> list[str]:
    """rio-cogeo's validation errors of `path` (empty: a proper COG).

    rio-cogeo re-implements GDAL's validate_cloud_optimized_geotiff (header, IFD order,
    tile order, overviews), which the pip rasterio wheel does not ship.
    """
    valid, errors, _warnings = cog_validate(str(path), quiet=True)
    return [] if valid else list(errors) or ["not a COG"]


def assert_cog(path: Path) -> None:
    """`path` is a Cloud Optimized GeoTIFF (rio-cogeo's checks, no error)."""
    problems = cog_problems(path)
    assert not problems, f"{path} is not a valid COG: " + "; ".join(problems)


def overview_matches_average(path: Path, band: int = 1) -> float:
    """Max |first overview - mean of each full 2x2 block of valid pixels| (float rasters).

    AVERAGE is the right resampling for a continuous product (nearest would alias);
    the file does not record which resampling made the overviews, so we recompute it.
    """
    with rasterio.open(path) as ds:
        full = ds.read(band).astype(np.float64)
        h, w = full.shape
        with rasterio.open(path, OVERVIEW_LEVEL=0) as ov:
            small = ov.read(band).astype(np.float64)
    hh, ww = (h // 2) * 2, (w // 2) * 2
    blocks = full[:hh, :ww].reshape(hh // 2, 2, ww // 2, 2)
    means = blocks.mean(axis=(1, 3))
    ok = np.isfinite(means)
    sub = small[: hh // 2, : ww // 2]
    return float(np.abs(sub[ok] - means[ok]).max())


# ---------------------------------------------------------------- training tile sets

RADIOMETRY = {"eo": {"method": "auto", "percentiles": [2.0, 98.0]},
              "sar": {"units": "db", "band": 1, "db_range": [-25.0, 0.0]}}


def make_dataset(root: Path, size: int = 40, n_a: int = 5, n_b: int = 4,
                 n_const: int = 1) -> Path:
    """A tiny tile-builder-like dataset: textured EO (A), speckled SAR-like (B), test
    folders, ``n_const`` all-zero "nodata" tiles in trainA, and a dataset.json."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:size, 0:size]
    for sub, n in (("trainA", n_a), ("trainB", n_b), ("testA", 2), ("testB", 2)):
        (root / sub).mkdir(parents=True)
        for i in range(n):
            if sub.endswith("A"):
                base = 128 + 60 * np.sin(xx / (3 + i)) * np.cos(yy / 5)
                rgb = np.stack([base, 0.8 * base, 0.6 * base], -1)
            else:
                rgb = np.repeat(rng.gamma(1.0, 60.0, (size, size))[..., None], 3, -1)
            rgb = rgb + rng.normal(0, 4, (size, size, 3))
            Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8)).save(root / sub / f"{i:03d}.png")
    for i in range(n_const):
        Image.fromarray(np.zeros((size, size, 3), np.uint8)).save(root / "trainA" / f"z{i}.png")
    (root / "dataset.json").write_text(json.dumps({"radiometry": RADIOMETRY, "tiles": 9}))
    return root


#: The bundled BigEarthNet Sentinel-2 / Sentinel-1 pairs (same grid, 120 px): band folders
#: of B02, B03, B04, B08 and folders of *_VV.tif, *_VH.tif.
BIGEARTHNET = DATA / "sentinel1" / "bigearthnet"


def make_multiband_dataset(root: Path) -> Path:
    """A real multiband dataset cut by `pipeline tiles` from the bundled BigEarthNet pairs:
    red, green, blue, nir reflectance in (float32 GeoTIFF tiles), VV and VH in dB out,
    paired (same file names in trainA and trainB), one 120 px tile per pair; test fraction
    0.5 with one split block per patch, so both splits get pairs (seed 0: 1 train, 3 test)."""
    import warnings

    from pipeline.dataset.tiles import TilesConfig, build_tiles
    from pipeline.errors import PipelineWarning

    config = TilesConfig(out=root, eo=tuple(sorted(BIGEARTHNET.glob("S2A_*"))),
                         sar=tuple(sorted(BIGEARTHNET.glob("S1A_*"))),
                         eo_names=("red", "green", "blue", "nir"), eo_scale="reflectance",
                         sar_pols=("VV", "VH"), sar_units="db", paired=True, tile_size=120,
                         test_fraction=0.5, split_block=120, progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PipelineWarning)
        build_tiles(config)
    return root


# ---------------------------------------------------------------- command lines


def help_defaults(group: click.Group, command_name: str) -> dict[str, tuple[click.Option, str]]:
    """option name -> (option, the text of its [default: ...]) as `--help` prints it."""
    command = group.commands[command_name]
    ctx = click.Context(command)
    # compared without whitespace: click wraps lines, also after a hyphen
    rendered = "".join(CliRunner().invoke(group, [command_name, "--help"]).output.split())
    shown = {}
    for param in command.params:
        record = param.get_help_record(ctx) if isinstance(param, click.Option) else None
        if record is None:
            continue
        help_text = " ".join(record[1].split())
        assert "".join(help_text.split()) in rendered, help_text  # parsed = what is shown
        match = re.search(r"\[default: (.*?)\]", help_text)
        if match:
            shown[param.name] = (param, match.group(1))
    return shown


def cog(src: Path, dst: Path) -> Path:
    """`src` rewritten as a COG (GDAL's COG driver), as object stores hold them."""
    with rasterio.open(src) as ds:
        profile = {**ds.profile, "driver": "COG", "blocksize": 64}
        for key in ("blockxsize", "blockysize", "tiled", "interleave"):
            profile.pop(key, None)
        with rasterio.open(dst, "w", **profile) as out:
            out.write(ds.read())
    return dst


@contextlib.contextmanager
def range_server(root: Path) -> Iterator[str]:
    """Serve ``root`` with tests/range_server.py (byte ranges, loopback only) in its own
    process; yields the base URL and stops the server at the end."""
    proc = subprocess.Popen([sys.executable, "-m", "tests.range_server", str(root)],
                            cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        port = int(proc.stdout.readline())
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)

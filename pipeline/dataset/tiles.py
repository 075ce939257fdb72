"""Training tiles: EO and SAR scenes -> an unpaired (or paired) U-GAT-IT dataset.

Layout (pytorch-CycleGAN / original U-GAT-IT, what `ugatit train` reads)::

    DATASET/trainA/*.png  trainB/*.png  testA/*.png  testB/*.png   A = EO, B = SAR
    DATASET/index.geojson  one feature per tile: lon/lat footprint + provenance
    DATASET/dataset.json   radiometry (the contract checkpoints copy), options, scenes, counts

Tiles are 8-bit, 3-channel PNGs named ``{scene}_r{row:05d}_c{col:05d}.png`` after the
window's pixel offset, so a rerun finds what it already wrote and skips it. Multiband
tiles (`--eo-bands` naming other than three bands or bands by name, `--eo-scale
reflectance`, `--sar-pols VV,VH`) are float32 GeoTIFFs ``....tif`` instead: the model's
unit scale [0, 1] per band (reflectance or dB mapped by the contract's fixed ranges, so
nothing is rounded to 8 bits and the physical value is one linear map away), with the
window's CRS and geotransform and band descriptions (``red``, ``nir``, ``VV``, ``VH``):
QGIS opens them, and `ugatit train` reads them (tifffile). ``{scene}`` is
the file stem, lengthened by its parent folders when stems repeat (SSL4EO's
``<product>/VV.tif``: see `scene_names`).

Tile size: the requested `tile_size`, or, for a scene smaller than that, the largest
multiple of 4 that fits (down to `MIN_TILE`, the global discriminator's minimum): a 120 px
BigEarthNet patch gives one 120 px tile instead of none. Recorded per tile (index.geojson
``tile_size``) and per scene (dataset.json); the trainer resizes every image to its
``img_size``, so mixed sizes train together.

Radiometry is GLOBAL per scene (DESIGN.md invariants 2 and 8): EO tiles go through the very
functions `pipeline run` uses (`compute_scaling` on a decimated read of the whole scene,
`read_masked`, `scale_to_unit`), so a tile is `round(unit * 255)` of what the model is fed
at inference; SAR tiles through the "SAR targets" section of pipeline/inputs/radiometry.py.

Split (invariant 9, no leakage; the geometry: pipeline/dataset/geometry.py): the scene is
cut into square blocks of `split_block` px;
a seeded hash of (seed, scene, block) ranks the blocks and the first
``floor(test_fraction * n_blocks + u)`` go to test (u: a seeded per-scene uniform, so the
expected share is exact and small scenes still get test blocks sometimes). The choice
depends only on the seed, the scene name and the block, never on the other inputs of a
run, so adding scenes to a dataset never moves a tile across the split. A tile whose window
touches blocks of both splits is dropped: overlapping tiles (stride < tile) never land on
both sides. One exception keeps a dataset trainable: when a domain has tiles but none in
train (a few small SAR scenes whose blocks all drew "test"), the scene of this run with
the most test tiles is cut again entirely into train (`_ensure_train`; recorded as the
scene's ``split_override``, honoured by reruns). An empty test side is warned about and
listed in dataset.json ``empty_test``.

Work order (invariant 7): every check on flags, inputs, the AOI and an existing dataset
runs before any file is written; PNGs and the two JSON files are written atomically, so a
killed run leaves complete files only, and a rerun completes it.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import math
import re
import statistics
import sys
import tempfile
import warnings
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from io import BytesIO
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import rasterio.errors
import rasterio.transform
import rasterio.warp
import rasterio.windows
import shapely
from PIL import Image
from rasterio.enums import Resampling
from rasterio.vrt import WarpedVRT
from rasterio.windows import Window
from shapely.geometry import Polygon, mapping

from pipeline.config import PipelineConfig, parse_float_pair, parse_int_tuple
from pipeline.dataset.geometry import choose_test_blocks, footprint, load_aoi, window_split, windows
from pipeline.errors import ConfigError, InputError, OutputError, PipelineWarning
from pipeline.inputs.radiometry import (
    DEFAULT_PERCENTILES,
    DEFAULT_SAR_DB_RANGE,
    REFLECTANCE_RANGE,
    SAR_UNITS,
    Scaling,
    band_reflectance,
    compute_sar_db_range,
    compute_scaling,
    eo_contract,
    read_masked,
    sar_db_to_unit,
    sar_to_db,
    sar_to_uint8,
    scene_is_empty,
    select_bands,
    to_unit,
)
from pipeline.run.checks import check_declared_size, check_readable, open_input, read_error
from pipeline.run.locks import output_lock
from pipeline.run.manifest import atomic_write_bytes, atomic_write_text
from ugatit.data import DEFAULT_MIN_STD

log = logging.getLogger("pipeline")

FORMAT = "eo2sar-tiles/1"
SPLITS = ("train", "test")
DIRS = ("trainA", "trainB", "testA", "testB")
RASTER_SUFFIXES = (".tif", ".tiff", ".vrt")
# Below this standard deviation (8-bit levels, all pixels and channels of the tile as
# written) a tile is "near-constant" and ALWAYS skipped: U-GAT-IT's instance / layer norms
# divide by a tile's own spread, and a nearly flat crop (a nodata collar, open water) drove
# its weights to NaN within ~150 training steps. The trainer's own threshold, in 8-bit
# levels (2.55), so that no tile is written that training would skip.
MIN_TILE_STD = DEFAULT_MIN_STD * 255.0 / 2.0
# Paired scenes must sit on the same grid; the SpaceNet 6 pair differs by 0.012 px at the
# far corner (rounded pixel sizes), so "same" means within this fraction of a pixel.
GRID_TOLERANCE_PX = 0.05
#: Smallest tile cut from a scene smaller than --tile-size: the global discriminator
#: (7 layers) needs 96 px; the trainer resizes every tile to its img_size anyway.
MIN_TILE = 96
#: dB range of each polarisation in multiband SAR tiles (SEN12MS's convention for
#: calibrated Sentinel-1 sigma0): recorded in the contract, so the model's outputs map
#: back to absolute dB per band.
POL_DB_RANGES = {"VV": (-25.0, 0.0), "VH": (-32.5, 0.0), "HH": (-25.0, 0.0),
                 "HV": (-32.5, 0.0)}
#: File stems that name a polarisation or a band, not a scene (SSL4EO's VV.tif, B4.tif).
_GENERIC_STEM = re.compile(r"^(VV|VH|HH|HV|B\d{1,2}A?)$", re.IGNORECASE)
#: Characters kept in a scene name (the tiles' file name prefix); others become "_".
_NAME_CHARS = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class TilesConfig:
    """Options of one `pipeline tiles` invocation (validated by `validate`)."""

    out: Path
    eo: tuple[Path, ...] = ()
    sar: tuple[Path, ...] = ()
    eo_bands: tuple[int, ...] | None = None  # None: 3-band as is, 1-band -> 1,1,1
    # common names picked from products, band folders and band descriptions (bandnames.py)
    eo_names: tuple[str, ...] | None = None
    eo_scale: str = "auto"  # auto (8-bit /255, else the per-scene stretch) | reflectance
    reflectance_scale: tuple[float, float] | None = None  # declared (scale, offset)
    eo_nodata: float | None = None  # declared EO nodata (as `pipeline run --nodata`)
    sar_band: int = 1
    # polarisations as bands of one multiband tile (VV, VH), each on its own dB range
    sar_pols: tuple[str, ...] | None = None
    sar_db_ranges: tuple[tuple[float, float], ...] | None = None  # None: POL_DB_RANGES
    sar_units: str = "linear"
    sar_db_range: tuple[float, float] | None = DEFAULT_SAR_DB_RANGE  # None: per-scene auto
    tile_size: int = 256
    stride: int | None = None  # None: tile_size
    min_valid: float = 0.9
    aoi: Path | None = None
    test_fraction: float = 0.1
    seed: int = 0
    split_block: int | None = None  # None: 2 * tile_size
    paired: bool = False
    resample_sar: bool = False  # --paired: warp SAR onto its EO partner's grid when they differ
    dry_run: bool = False
    progress: bool = True

    @property
    def step(self) -> int:
        return self.stride or self.tile_size

    @property
    def multiband(self) -> bool:
        """Float32 GeoTIFF tiles (module doc) rather than 8-bit RGB PNGs."""
        return (self.eo_names is not None or self.eo_scale != "auto"
                or self.sar_pols is not None)

    @property
    def suffix(self) -> str:
        return ".tif" if self.multiband else ".png"

    def pol_ranges(self) -> tuple[tuple[float, float], ...]:
        """The dB range of each of --sar-pols: given, else SEN12MS's per polarisation."""
        pols = self.sar_pols or ()
        if self.sar_db_ranges is not None:
            ranges = self.sar_db_ranges
            return ranges * len(pols) if len(ranges) == 1 else ranges
        return tuple(POL_DB_RANGES.get(p.upper(), DEFAULT_SAR_DB_RANGE) for p in pols)

    @property
    def block(self) -> int:
        return self.split_block or 2 * self.tile_size

    def validate(self) -> None:
        """Raise ConfigError for a bad value, before any raster is opened."""
        checks = [
            (self.tile_size >= 8, "--tile-size", "at least 8 px, e.g. 256"),
            (self.step >= 1, "--stride", "a positive number of pixels"),
            (self.block >= 1, "--split-block", "a positive number of pixels"),
            (0.0 < self.min_valid <= 1.0, "--min-valid", "a fraction in (0, 1], e.g. 0.9"),
            (0.0 <= self.test_fraction <= 1.0, "--test-fraction", "a fraction in [0, 1]"),
            (self.sar_band >= 1, "--sar-band", "a 1-based band number"),
            (self.sar_units in SAR_UNITS, "--sar-units", "linear or db"),
            (self.eo_bands is None or len(self.eo_bands) == 3, "--eo-bands",
             "three 1-based band numbers in R,G,B order, e.g. 3,2,1, or any number of "
             "bands by name: red,green,blue,nir"),
            (self.eo_scale in ("auto", "reflectance"), "--eo-scale", "auto or reflectance"),
            (self.sar_pols is None or 1 <= len(self.sar_pols) <= 4, "--sar-pols",
             "one or two polarisations, e.g. VV,VH"),
            (self.sar_db_ranges is None or self.sar_pols is None
             or len(self.sar_db_ranges) in (1, len(self.sar_pols)), "--sar-db-range",
             "one LOW,HIGH for all polarisations or one per polarisation: -25,0/-32.5,0"),
            (bool(self.eo or self.sar), "--eo/--sar", "give at least one --eo or --sar scene"),
        ]
        for ok, flag, hint in checks:
            if not ok:
                raise ConfigError(f"bad value for {flag}", path=flag, hint=hint)
        lo_hi = self.sar_db_range
        if lo_hi is not None and not lo_hi[1] > lo_hi[0]:
            raise ConfigError("bad value for --sar-db-range", path="--sar-db-range",
                              hint="LOW,HIGH in dB with LOW < HIGH, e.g. -25,0, or auto")
        if self.paired and not (self.eo and self.sar):
            raise ConfigError("--paired needs --eo and --sar scenes", path="--paired",
                              hint="give the optical scenes with --eo and their SAR "
                              "partners with --sar (matched by footprint)")
        if self.resample_sar and not self.paired:
            raise ConfigError("--resample-sar applies to --paired", path="--resample-sar",
                              hint="add --paired, or drop --resample-sar (unpaired SAR "
                              "scenes are cut on their own grids)")

    def options(self) -> dict[str, Any]:
        """JSON-ready options as recorded in dataset.json (run flags left out)."""
        out = asdict(self)
        for key in ("dry_run", "progress", "out"):
            out.pop(key)
        out["eo"] = [str(p) for p in self.eo]
        out["sar"] = [str(p) for p in self.sar]
        out["aoi"] = None if self.aoi is None else str(self.aoi)
        out["stride"], out["split_block"] = self.step, self.block
        out["sar_db_range"] = "auto" if self.sar_db_range is None else list(self.sar_db_range)
        out["eo_bands"] = None if self.eo_bands is None else list(self.eo_bands)
        for key in ("eo_names", "sar_pols", "reflectance_scale"):
            out[key] = None if out[key] is None else list(out[key])
        out["sar_db_ranges"] = None if self.sar_pols is None else [
            list(r) for r in self.pol_ranges()]
        return out


def parse_db_range(text: str) -> tuple[float, float] | None:
    """`--sar-db-range`: "LOW,HIGH" in dB, or "auto" (None: per-scene percentiles)."""
    if text.strip().lower() == "auto":
        return None
    return parse_float_pair(text, "sar_db_range", "--sar-db-range")


def parse_bands(text: str | None) -> tuple[int, ...] | None:
    """`--eo-bands 3,2,1` -> (3, 2, 1); None stays None."""
    return parse_int_tuple(text, "eo_bands", "--eo-bands", minimum=1)


def parse_eo_bands(text: str | None) -> tuple[tuple[int, ...] | None, tuple[str, ...] | None]:
    """`--eo-bands`: numbers (3,2,1) or common names (red,green,blue,nir; also B04,
    SR_B4...: bandnames.common_name) -> (numbers, None) or (None, common names)."""
    from pipeline.inputs.bandnames import common_name

    if text is None or not any(c.isalpha() for c in text):
        return parse_bands(text), None
    items = [t.strip() for t in text.replace(" ", ",").split(",") if t.strip()]
    names = []
    for item in items:
        name = common_name(item)
        if name is None:
            raise ConfigError(f"--eo-bands: {item!r} is no band name", path="--eo-bands",
                              hint="use STAC common names (red, green, blue, nir, swir16, "
                              "swir22...), Sentinel-2 ids (B04) or band numbers (3,2,1)")
        names.append(name)
    return None, tuple(names)


def parse_pols(text: str | None) -> tuple[str, ...] | None:
    """`--sar-pols VV,VH` -> ("VV", "VH"); None stays None."""
    if text is None:
        return None
    pols = tuple(t.strip().upper() for t in text.split(",") if t.strip())
    bad = [p for p in pols if p not in POL_DB_RANGES]
    if bad or not pols or len(set(pols)) != len(pols):
        raise ConfigError(f"--sar-pols {text!r}", path="--sar-pols",
                          hint="distinct polarisations among VV, VH, HH, HV, e.g. VV,VH")
    return pols


def parse_db_ranges(text: str) -> tuple[tuple[float, float], ...] | None:
    """`--sar-db-range` with --sar-pols: "LOW,HIGH" for all or "LOW,HIGH/LOW,HIGH" one per
    polarisation; "auto" is refused (multiband tiles keep an absolute dB scale)."""
    if text.strip().lower() == "auto":
        raise ConfigError("--sar-db-range auto with --sar-pols", path="--sar-db-range",
                          hint="multiband SAR tiles keep absolute dB: give LOW,HIGH per "
                          "polarisation (default VV -25,0, VH -32.5,0)")
    return tuple(parse_float_pair(part, "sar_db_range", "--sar-db-range")
                 for part in text.split("/"))


# ---------------------------------------------------------------------------------------
# scenes


@dataclass
class Scene:
    """One input scene, checked, with its global radiometry decided."""

    path: Path
    domain: str  # "A" (EO) | "B" (SAR)
    name: str  # the scene's name in the dataset (tile file prefix): see scene_names
    width: int
    height: int
    crs: str | None  # None: not georeferenced
    transform: tuple[float, ...] | None
    bands: tuple[int, ...]
    read_path: Path | None = None  # what is opened (a band folder's VRT); None: path
    warp_to: Scene | None = None  # SAR resampled onto this EO scene's grid (--resample-sar)
    scaling: Scaling | None = None  # EO
    db_range: tuple[float, float] | None = None  # SAR, the range used
    empty: bool = False  # no valid pixel: skipped with a warning
    band_names: tuple[str, ...] = ()  # common names / polarisations of `bands`
    db_ranges: tuple[tuple[float, float], ...] = ()  # multiband SAR: one per polarisation
    reflectance: tuple[tuple[float, float], ...] = ()  # EO reflectance (scale, offset)

    @property
    def key(self) -> str:
        return f"{self.domain}:{self.name}"

    @contextlib.contextmanager
    def reader(self) -> Iterator[Any]:
        """The scene's raster, open: the file (or its band-folder VRT), or, for a SAR
        scene paired by resampling, a WarpedVRT of it on the EO scene's grid (bilinear:
        dB and intensities are continuous; NaN = no data, never blended in)."""
        with open_input(self.read_path or self.path) as ds:
            if self.warp_to is None:
                yield ds
                return
            eo = self.warp_to
            floating = np.dtype(ds.dtypes[0]).kind == "f"
            src_nodata = ds.nodata if ds.nodata is not None else (
                float("nan") if floating else None)
            with WarpedVRT(ds, crs=eo.crs, transform=rasterio.Affine(*eo.transform),
                           width=eo.width, height=eo.height, resampling=Resampling.bilinear,
                           src_nodata=src_nodata, nodata=float("nan") if floating
                           else src_nodata, dtype="float32" if floating else None) as vrt:
                yield vrt

    def grid(self) -> dict[str, Any]:
        return {"width": self.width, "height": self.height, "crs": self.crs,
                "transform": None if self.transform is None else list(self.transform)}


@dataclass(frozen=True)
class SceneInput:
    """One scene as given (`path`: a raster, or a folder of Sentinel-2 band files) and the
    raster read for it (`read`: the file itself, or a VRT stacking the band files)."""

    path: Path
    read: Path


def band_folder(folder: Path) -> dict[str, Path] | None:
    """The B02/B03/B04 files of a folder of Sentinel-2 band files, or None (the rule of
    `pipeline run`: pipeline.inputs.sources.s2_band_folder)."""
    from pipeline.inputs.sources import s2_band_folder

    return s2_band_folder(folder)


def stack_band_folder(folder: Path, files: dict[str, Path], vrt: Path,
                      names: tuple[str, ...] | None = None) -> Path:
    """A VRT of a band folder, each band a reference to its file (nothing copied), 0
    declared nodata: the stack `pipeline run` reads. R, G, B (B04, B03, B02) by default;
    `names`: the bands named (common names, in that order) with the folder's reflectance
    scale as band Scale/Offset."""
    from pipeline.inputs.sources import band_folder_bands, named_band_folder_bands, write_stack_vrt

    bands = band_folder_bands(files) if names is None else named_band_folder_bands(
        folder, names)
    return write_stack_vrt(bands, vrt)


#: A polarisation at the end of a SAR file stem: `VV`, `S1A_..._VH`, `x-hh`.
_POLARISATION = re.compile(r"(?:^|[_.-])(VV|VH|HH|HV)$", re.IGNORECASE)


def _polarisations(files: list[Path]) -> dict[str, list[Path]]:
    found: dict[str, list[Path]] = {}
    for f in files:
        if m := _POLARISATION.search(f.stem):
            found.setdefault(m.group(1).upper(), []).append(f)
    return found


def _check_one_polarisation(folder: Path, files: list[Path]) -> None:
    """A SAR directory whose files are several polarisations of one product (SSL4EO's
    VV.tif + VH.tif, BigEarthNet's *_VV.tif + *_VH.tif) would put both into domain B, with
    one dB range: refused, with the glob that picks one (or --sar-pols to stack them)."""
    pols = sorted(_polarisations(files))
    if len(pols) > 1:
        raise InputError(
            f"directory mixes polarisations ({', '.join(pols)}): each file would become a "
            "SAR scene of domain B", path=folder,
            hint=f"stack them as bands of one tile with --sar-pols {','.join(pols)}, or "
            f"pick one with a quoted glob, e.g. --sar '{folder}/*{pols[-1]}.tif' "
            "(VH wants its own range: --sar-db-range=-32.5,0)")


def stack_polarisations(folder: Path, files: list[Path], pols: tuple[str, ...], vrt: Path
                        ) -> Path | None:
    """A VRT of a product folder's per-polarisation files (`*_VV.tif`, `*_VH.tif`) in the
    order of `pols`, or None when the folder has not exactly one file of each."""
    from pipeline.inputs.sources import Band, write_stack_vrt

    found = _polarisations(files)
    if any(len(found.get(p, [])) != 1 for p in pols):
        return None
    return write_stack_vrt([Band(p, str(found[p][0].resolve()), common_name="")
                            for p in pols], vrt)


def _is_pattern(path: Path) -> bool:
    return not path.exists() and any(c in str(path) for c in "*?[")


def _glob(given: Path, flag: str) -> list[Path]:
    if not _is_pattern(given):
        return [given]
    anchor = Path(given.anchor or ".")
    items = sorted(anchor.glob(str(given.relative_to(anchor)) if given.anchor
                               else str(given)))
    if not items:
        raise InputError("the pattern matches nothing", path=given,
                         hint=f"check the pattern given to {flag} (quote it, e.g. "
                         f"{flag} 'folder/*/VV.tif')")
    return items


@dataclass
class _Expander:
    """expand_inputs' state: which flag, where VRTs go, what a folder scene stacks."""

    flag: str
    tmp: Path | None
    eo_names: tuple[str, ...] | None = None
    sar_pols: tuple[str, ...] | None = None
    count: Iterator[int] = field(default_factory=itertools.count)

    @property
    def eo(self) -> bool:
        return self.flag == "--eo"

    def vrt(self, folder: Path) -> Path:
        if self.tmp is None:
            raise InputError("a folder of band files needs a VRT", path=folder,
                             hint="internal: expand_inputs called without tmp")
        return self.tmp / f"{self.flag.strip('-')}{next(self.count)}.vrt"

    def folder_scene(self, folder: Path, files: list[Path] | None = None
                     ) -> SceneInput | None:
        """A folder that is ONE scene: Sentinel-2 band files (--eo), or a product's
        per-polarisation files (--sar with --sar-pols)."""
        if self.eo:
            bands = band_folder(folder)
            if bands is None:
                return None
            return SceneInput(folder, stack_band_folder(folder, bands, self.vrt(folder),
                                                        self.eo_names))
        if self.sar_pols is None or not files:
            return None
        if not all(p in _polarisations(files) for p in self.sar_pols):
            return None
        vrt = stack_polarisations(folder, files, self.sar_pols, self.vrt(folder))
        return None if vrt is None else SceneInput(folder, vrt)

    def directory(self, p: Path) -> list[SceneInput]:
        files = sorted(f for f in p.iterdir() if f.is_file() and not f.name.startswith(".")
                       and f.suffix.lower() in RASTER_SUFFIXES)
        scene = self.folder_scene(p, files)
        if scene is not None:
            return [scene]
        if files:
            if not self.eo:
                _check_one_polarisation(p, files)
            return [SceneInput(f, f) for f in files]
        subs = [self.folder_scene(d, sorted(d.iterdir())) for d in sorted(p.iterdir())
                if d.is_dir()]
        if not any(subs):
            what = " and no folder of Sentinel-2 band files" if self.eo else ""
            raise InputError(
                f"directory holds no GeoTIFF/VRT (.tif, .tiff, .vrt){what}", path=p,
                hint=f"give {self.flag} raster files, a directory of them"
                + (", or folders of B02/B03/B04 band files" if self.eo else "")
                + f", or a quoted pattern ({self.flag} 'dir/*/VV.tif')")
        return [s for s in subs if s is not None]


def expand_inputs(paths: tuple[Path, ...], flag: str, tmp: Path | None = None, *,
                  eo_names: tuple[str, ...] | None = None,
                  sar_pols: tuple[str, ...] | None = None) -> list[SceneInput]:
    """What --eo / --sar name, as scenes.

    - a raster file: itself;
    - a glob pattern (quoted, so that the shell leaves it: `'ssl4eo/s1/*/*/VV.tif'`): the
      files and folders it matches, sorted, each as below;
    - a folder of Sentinel-2 band files (--eo only: B02, B03, B04 as separate files, as
      BigEarthNet and SSL4EO ship them): ONE scene, its bands stacked R, G, B in a VRT
      under `tmp` (or the bands `eo_names` names, in that order);
    - with `sar_pols` (--sar only): a folder of a product's per-polarisation files
      (`*_VV.tif`, `*_VH.tif`): ONE scene, its polarisations stacked in that order;
    - a directory: its GeoTIFF/VRT files (sorted, hidden ones left out, not recursive),
      or, when it holds none, its band-folder (or polarisation-folder) subdirectories.
    """
    ex = _Expander(flag, tmp, eo_names, sar_pols)
    found: list[SceneInput] = []
    for given in paths:
        for p in _glob(given, flag):
            if p.is_dir():
                found.extend(ex.directory(p))
            elif not p.exists():
                raise InputError("does not exist", path=p, hint=f"check the path given to {flag}")
            else:
                found.append(SceneInput(p, p))
    return found


def is_georeferenced(ds: rasterio.io.DatasetReader) -> bool:
    """A CRS and a real geotransform (GDAL's default identity grid is not one)."""
    t = ds.transform
    return ds.crs is not None and not t.is_identity and t != rasterio.Affine(1, 0, 0, 0, -1, 0)


def eo_bands_for(ds: rasterio.io.DatasetReader, path: Path, bands: tuple[int, ...] | None
                 ) -> tuple[int, ...]:
    """The three bands fed as R,G,B: 3-band files as is, 1-band files 1,1,1, else asked."""
    if bands is None:
        if ds.count not in (1, 3):
            raise InputError(
                f"has {ds.count} bands; which three are R,G,B is not known",
                path=path,
                hint="choose them with --eo-bands, e.g. --eo-bands 3,2,1 (bands stored B,G,R)",
            )
        bands = (1, 2, 3) if ds.count == 3 else (1, 1, 1)
    return select_bands(ds.count, bands, str(path), tuple(ds.dtypes))


def eo_bands_named(ds: rasterio.io.DatasetReader, path: Path, names: tuple[str, ...]
                   ) -> tuple[int, ...]:
    """The bands a multispectral dataset names (common names), picked by the raster's
    band descriptions (`B04`, `red (B04)`, `SR_B4`, `nir`: bandnames.common_name)."""
    from pipeline.inputs.bandnames import bands_by_description

    bands, notes = bands_by_description(ds.descriptions, ds.count, names, str(path))
    for note in notes:
        if note.startswith("13 bands"):  # an assumption: a warning, as before
            warnings.warn(f"{path}: {note}", PipelineWarning, stacklevel=2)
        else:
            log.info("%s: %s", path, note)
    return bands


def sar_bands_named(ds: rasterio.io.DatasetReader, path: Path, pols: tuple[str, ...]
                    ) -> tuple[int, ...]:
    """The bands of `pols` in a SAR raster: by band description (VV, VH), else, for a
    file of exactly that many bands without descriptions, in order (SEN12MS and
    Sen1Floods11 store VV, VH), with a warning that it was assumed."""
    desc = [(d or "").strip().upper() for d in ds.descriptions]
    if all(p in desc for p in pols):
        return tuple(desc.index(p) + 1 for p in pols)
    if not any(desc) and ds.count == len(pols):
        warnings.warn(f"{path}: no band descriptions; bands 1..{ds.count} taken as "
                      f"{', '.join(pols)}", PipelineWarning, stacklevel=2)
        return tuple(range(1, ds.count + 1))
    raise InputError(f"has bands {', '.join(d or '?' for d in desc)}; --sar-pols asks for "
                     f"{', '.join(pols)}", path=path,
                     hint="give files (or product folders of *_VV.tif, *_VH.tif files) "
                     "that hold those polarisations")


def sar_band_for(ds: rasterio.io.DatasetReader, path: Path, band: int) -> tuple[int, ...]:
    if band > ds.count:
        raise InputError(f"has {ds.count} band(s), --sar-band {band} asked", path=path,
                         hint=f"give --sar-band between 1 and {ds.count} (the polarisation)")
    if np.dtype(ds.dtypes[band - 1]).kind == "c":
        raise InputError(f"band {band} is complex (SLC)", path=path,
                         hint="convert it to intensity |z|^2 first (e.g. gdal_calc.py)")
    return (band,)


def open_scene(given: SceneInput, domain: str, config: TilesConfig, warn: list[str]
               ) -> Scene:
    """Open, check and measure one scene (bands, readability, global radiometry)."""
    path = given.path
    with open_input(given.read) as ds:
        if domain == "A" and config.eo_names is not None:
            bands = eo_bands_named(ds, given.read, config.eo_names)
            names = config.eo_names
        elif domain == "A":
            bands = eo_bands_for(ds, path, config.eo_bands)
            names = ()
        elif config.sar_pols is not None:
            bands = sar_bands_named(ds, path, config.sar_pols)
            names = config.sar_pols
        else:
            bands = sar_band_for(ds, path, config.sar_band)
            names = ()
        check_declared_size(ds, bands, path)  # before any pixel is read (docs/faults.md)
        check_readable(ds, bands, path)
        georef = is_georeferenced(ds)
        if not georef:
            _warn(warn, f"{path}: not georeferenced; its tiles get no footprint "
                        "(geometry null in index.geojson)")
        scene = Scene(path=path, domain=domain, name=path.stem, width=ds.width,
                      height=ds.height, crs=ds.crs.to_string() if georef else None,
                      transform=tuple(ds.transform)[:6] if georef else None, bands=bands,
                      read_path=None if given.read == path else given.read,
                      band_names=tuple(names))
        try:
            _measure(ds, scene, config)
        except rasterio.errors.RasterioIOError as exc:
            raise read_error(exc, path) from None
    if scene.empty:
        _warn(warn, f"{path}: no valid pixel; skipped")
    return scene


def _measure(ds: rasterio.io.DatasetReader, scene: Scene, config: TilesConfig) -> None:
    """The scene's global radiometry: what `pipeline run` computes for EO (same function,
    same defaults), the fixed or per-scene auto dB range for SAR."""
    if scene.domain == "A":
        stats_size = PipelineConfig().stats_size
        if config.eo_scale == "reflectance":
            scene.reflectance = tuple(band_reflectance(ds, scene.bands, str(scene.path),
                                                       config.reflectance_scale))
        scene.scaling = compute_scaling(ds, scene.bands, scale=config.eo_scale,
                                        percentiles=DEFAULT_PERCENTILES,
                                        nodata=config.eo_nodata, stats_size=stats_size,
                                        reflectance=scene.reflectance or None)
        scene.empty = scene_is_empty(ds, scene.bands, scene.scaling, nodata=config.eo_nodata,
                                     stats_size=stats_size)
        return
    if config.sar_pols is not None:
        scene.db_ranges = config.pol_ranges()
        scene.db_range = scene.db_ranges[0]
        scene.empty = compute_sar_db_range(ds, scene.bands[0], config.sar_units) is None
        return
    if config.sar_db_range is not None:
        scene.db_range = config.sar_db_range
        scene.empty = compute_sar_db_range(ds, scene.bands[0], config.sar_units) is None
        return
    scene.db_range = compute_sar_db_range(ds, scene.bands[0], config.sar_units)
    scene.empty = scene.db_range is None


def check_same_grid(eo: Scene, sar: Scene) -> None:
    """--paired: the same CRS, size and transform (within GRID_TOLERANCE_PX)."""
    same = (eo.width, eo.height, eo.crs) == (sar.width, sar.height, sar.crs)
    shift_text = ""
    if same and eo.transform is not None and sar.transform is not None:
        a, b = rasterio.Affine(*eo.transform), rasterio.Affine(*sar.transform)
        pixel = min(abs(a.a), abs(a.e))
        corners = [(0, 0), (eo.width, 0), (0, eo.height), (eo.width, eo.height)]
        shift = max(math.dist(a @ c, b @ c) for c in corners)
        same = shift <= GRID_TOLERANCE_PX * pixel
        shift_text = f"; corners up to {shift / pixel:.2f} px apart"
    elif same:
        same = eo.transform == sar.transform
    if not same:
        raise InputError(
            f"is not on the grid of the EO scene {eo.path} (CRS, size: "
            f"{sar.crs} {sar.width}x{sar.height} vs {eo.crs} {eo.width}x{eo.height}"
            f"{shift_text})",
            path=sar.path,
            hint="--paired needs co-registered scenes: add --resample-sar to warp the SAR "
            "onto the EO grid (bilinear), or resample one onto the other first "
            "(gdalwarp -te ... -tr ... -t_srs ...), or drop --paired",
        )


def _lonlat_box(scene: Scene) -> Any:
    """The scene's bounds in lon/lat as a shapely box (None: not georeferenced)."""
    if scene.crs is None or scene.transform is None:
        return None
    t = rasterio.Affine(*scene.transform)
    bounds = rasterio.transform.array_bounds(scene.height, scene.width, t)
    return shapely.box(*rasterio.warp.transform_bounds(scene.crs, "EPSG:4326", *bounds))


#: Least intersection-over-union of two footprints for an EO and a SAR scene to pair.
PAIR_MIN_IOU = 0.5


def pair_scenes(eo: list[Scene], sar: list[Scene], warn: list[str]) -> list[list[Scene]]:
    """--paired: [EO, SAR] pairs by footprint, so that folders of products pair up without
    listing them in order (BigEarthNet's S1 and S2 folders are named differently).

    Pairs are the EO/SAR scenes whose lon/lat bounds overlap by at least PAIR_MIN_IOU
    (intersection over union), best overlap first, each scene in one pair at most; ties
    (several dates of one site, same grids) go in the order given, i.e. sorted names pair
    the first EO date with the first SAR date. Scenes without georeferencing pair only when
    there is exactly one EO and one SAR scene. Unpaired scenes are skipped with a warning.
    """
    if len(eo) == 1 and len(sar) == 1 and (eo[0].crs is None or sar[0].crs is None):
        return [[eo[0], sar[0]]]
    boxes_a, boxes_b = [_lonlat_box(s) for s in eo], [_lonlat_box(s) for s in sar]
    ranked = []
    for i, a in enumerate(boxes_a):
        for j, b in enumerate(boxes_b):
            if a is None or b is None or not a.intersects(b):
                continue
            iou = a.intersection(b).area / a.union(b).area
            if iou >= PAIR_MIN_IOU:
                ranked.append((-round(iou, 6), i, j))
    pairs: list[list[Scene]] = []
    used_a: set[int] = set()
    used_b: set[int] = set()
    for _, i, j in sorted(ranked):
        if i not in used_a and j not in used_b:
            used_a.add(i)
            used_b.add(j)
            pairs.append([eo[i], sar[j]])
    for scenes, used in ((eo, used_a), (sar, used_b)):
        for k, s in enumerate(scenes):
            if k not in used:
                _warn(warn, f"{s.path}: no {'SAR' if s.domain == 'A' else 'EO'} scene "
                            "overlaps it (--paired); skipped")
    if not pairs:
        raise InputError("no EO scene overlaps a SAR scene (--paired)", path=eo[0].path,
                         hint="give co-registered EO/SAR pairs (footprints overlapping by "
                         f"at least {PAIR_MIN_IOU:.0%}), or drop --paired")
    pairs.sort(key=lambda pair: eo.index(pair[0]))
    return pairs


def co_register(pair: list[Scene], resample: bool) -> None:
    """Same grid (within GRID_TOLERANCE_PX), or, with --resample-sar, the SAR read through
    a WarpedVRT on the EO grid (the EO pixels are never resampled: they are the model's
    input; the SAR target follows them). Refused with a hint otherwise."""
    eo, sar = pair
    try:
        check_same_grid(eo, sar)
    except InputError:
        if not resample or eo.crs is None or sar.crs is None:
            raise
        sar.warp_to = eo


# ---------------------------------------------------------------------------------------
# rendering one tile


def render(ds: rasterio.io.DatasetReader, scene: Scene, window: Window, config: TilesConfig
           ) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 [H, W, 3], valid [H, W]) of one window, invalid pixels 0.

    EO: `read_masked` + `to_unit` with the scene's global Scaling (the functions
    `pipeline run` uses), then round(unit * 255). SAR: dB, clipped to the scene's range,
    0..255, replicated to 3 channels (a SAR 0 is a value, not EO fill: zero_fill off).
    """
    if scene.domain == "A":
        data, valid = read_masked(ds, scene.bands, window, nodata=config.eo_nodata)
        assert scene.scaling is not None
        unit = to_unit(data, valid, scene.scaling)
        if config.multiband:  # [C, H, W] float32 unit scale, invalid 0
            return unit.astype(np.float32), valid
        tile = np.rint(unit * 255.0).astype(np.uint8)
        return np.ascontiguousarray(tile.transpose(1, 2, 0)), valid
    data, valid = read_masked(ds, scene.bands, window, zero_fill=False)
    if config.multiband:
        out = np.zeros(data.shape, np.float32)
        for i, rng in enumerate(scene.db_ranges or (scene.db_range,) * len(scene.bands)):
            db, ok = sar_to_db(data[i], config.sar_units)
            valid &= ok
            out[i] = sar_db_to_unit(db, rng)
        out[:, ~valid] = 0.0
        return out, valid
    assert scene.db_range is not None
    sar, sar_valid = sar_to_uint8(data[0], config.sar_units, scene.db_range)
    valid &= sar_valid
    sar[~valid] = 0
    return np.repeat(sar[:, :, None], 3, axis=2), valid


def png_bytes(tile: np.ndarray) -> bytes:
    buf = BytesIO()
    Image.fromarray(tile, mode="RGB").save(buf, format="PNG")
    return buf.getvalue()


def tif_bytes(tile: np.ndarray, scene: Scene, window: Window) -> bytes:
    """A float32 GeoTIFF of a multiband tile [C, H, W]: the window's CRS and geotransform
    (none for a scene without georeferencing), band descriptions = the common names or
    polarisations, deflate (lossless), band-interleaved."""
    from rasterio.io import MemoryFile

    profile: dict[str, Any] = {"driver": "GTiff", "width": tile.shape[2],
                               "height": tile.shape[1], "count": tile.shape[0],
                               "dtype": "float32", "compress": "deflate",
                               "interleave": "band"}
    if scene.crs is not None and scene.transform is not None:
        profile["crs"] = scene.crs
        profile["transform"] = rasterio.windows.transform(window,
                                                          rasterio.Affine(*scene.transform))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
        with MemoryFile() as mem:
            with mem.open(**profile) as dst:
                dst.write(tile)
                for i, name in enumerate(scene.band_names, 1):
                    dst.set_band_description(i, name)
                dst.update_tags(EO2SAR_UNIT="model unit scale [0, 1]: see dataset.json "
                                "radiometry")
            return mem.read()


def tile_std_levels(tile: np.ndarray) -> float:
    """A tile's standard deviation in 8-bit levels (float unit tiles x 255)."""
    return float(tile.std()) * (255.0 if tile.dtype.kind == "f" else 1.0)


# ---------------------------------------------------------------------------------------
# the dataset on disk


@dataclass
class Dataset:
    """dataset.json and index.geojson of DATASET as loaded (empty for a new dataset)."""

    root: Path
    doc: dict[str, Any]
    features: dict[str, dict[str, Any]]  # relative file -> feature

    @property
    def scenes(self) -> dict[str, dict[str, Any]]:
        return self.doc.setdefault("scenes", {})


def load_dataset(root: Path, tile_size: int) -> Dataset:
    """Read an existing DATASET (to merge into) or start a new one; refuse a conflict."""
    if root.exists() and not root.is_dir():
        raise OutputError("--out is a file", path=root, hint="give a dataset directory")
    doc: dict[str, Any] = {}
    features: dict[str, dict[str, Any]] = {}
    meta, index = root / "dataset.json", root / "index.geojson"
    try:
        if meta.exists():
            doc = json.loads(meta.read_text())
        if index.exists():
            features = {f["properties"]["file"]: f
                        for f in json.loads(index.read_text())["features"]}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise OutputError(f"existing dataset files are unreadable ({exc})", path=root,
                          hint="fix or remove dataset.json/index.geojson, or use another --out"
                          ) from None
    old = doc.get("tile_size")
    if old is not None and old != tile_size:
        raise ConfigError(
            f"the dataset holds {old} px tiles, --tile-size {tile_size} asked", path=root,
            hint=f"use --tile-size {old} to add to it, or another --out",
        )
    return Dataset(root, doc, features)


def scene_settings(scene: Scene, config: TilesConfig) -> dict[str, Any]:
    """What must not change when a scene is cut again into the same dataset (the tiles'
    names stay the same, so a change would mix two radiometries or two splits)."""
    out: dict[str, Any] = {**scene.grid(), "bands": list(scene.bands),
                           "paired": config.paired, "seed": config.seed,
                           "test_fraction": config.test_fraction, "split_block": config.block}
    if scene.warp_to is not None:
        out["resampled_to"] = f"A:{scene.warp_to.name}"
    if scene.band_names:
        out["band_names"] = list(scene.band_names)
    if scene.domain == "A":
        out["nodata"] = config.eo_nodata
        out["eo_scale"] = config.eo_scale
        if scene.reflectance:
            out["reflectance"] = [list(r) for r in scene.reflectance]
    else:
        if scene.db_ranges:
            out["db_ranges"] = [list(r) for r in scene.db_ranges]
        out["units"] = config.sar_units
        out["db_range_mode"] = "auto" if config.sar_db_range is None else "fixed"
        out["db_range"] = None if scene.db_range is None else list(scene.db_range)
    return out


def _name_parts(path: Path) -> list[str]:
    """Components a scene name is built from, nearest last: the absolute folders, then the
    file stem (a folder scene: its name), each reduced to file-name-safe characters."""
    full = path.resolve()
    parts = [*full.parent.parts[1:], full.name if full.is_dir() else full.stem]
    return [_NAME_CHARS.sub("_", part).strip("_") or "_" for part in parts]


def _resolved(path: str | Path) -> str:
    """The absolute path a source names (as given if it cannot be resolved)."""
    with contextlib.suppress(OSError):
        return str(Path(path).resolve())
    return str(path)


def scene_names(paths: list[Path], known: dict[str, str]) -> list[str]:
    """Unique names (tile file prefixes) of one domain's scenes in a run.

    A file stem is not unique in real products (SSL4EO: ``<product>/VV.tif`` in every
    folder), so a name is the SHORTEST suffix of the path's components (stem, then parent
    folders, joined by "_") that tells the file apart from the run's other scenes and from
    the dataset's existing scenes (`known`: name -> source as recorded). A stem that is
    only a polarisation or band name (VV, VH, B4: it says nothing of the scene) always
    takes its folder, even alone. A scene already in
    the dataset (same file) keeps its recorded name, so a rerun with fewer or more scenes
    names the same file the same way and finds its tiles; unique stems stay bare stems
    (the names of datasets cut before). A scene is known by its path: a moved file is a
    new scene.
    """
    by_source = {_resolved(src): n for n, src in known.items()}  # one resolve per scene
    names: list[str | None] = [by_source.get(_resolved(p)) for p in paths]
    parts = [_name_parts(p) for p in paths]
    taken = {n for n in known if n not in names}  # names of other files
    known_parts = [_name_parts(Path(src)) for n, src in known.items() if n in taken]
    for i in range(len(paths)):
        if names[i] is not None:
            continue
        rivals = [q for q in (*parts, *known_parts) if q != parts[i]]
        first = 2 if _GENERIC_STEM.match(parts[i][-1]) and len(parts[i]) > 1 else 1
        for k in range(first, len(parts[i]) + 1):
            name = "_".join(parts[i][-k:])
            if (name not in taken and name not in names
                    and all(r[-k:] != parts[i][-k:] for r in rivals)):
                break
        names[i] = name
    return [str(n) for n in names]


def name_scenes(scenes: list[Scene], dataset: Dataset) -> None:
    """Give each scene its unique name (`scene_names`), per domain."""
    for domain in ("A", "B"):
        group = [s for s in scenes if s.domain == domain]
        known = {k.split(":", 1)[1]: str(r.get("source"))
                 for k, r in dataset.scenes.items() if r.get("domain") == domain}
        for s, name in zip(group, scene_names([s.path for s in group], known), strict=True):
            s.name = name


def check_conflicts(scenes: list[Scene], dataset: Dataset, config: TilesConfig) -> None:
    """Refuse two scenes with one name in a run, or a scene cut before with other settings."""
    keys = Counter(s.key for s in scenes)
    for s in scenes:
        if keys[s.key] > 1:  # scene_names gives distinct files distinct names
            raise InputError(f"given twice as {'EO' if s.domain == 'A' else 'SAR'} scene "
                             f"{s.name!r} in one run", path=s.path,
                             hint="give each file once (check overlapping globs and "
                             "directories)")
        old = dataset.scenes.get(s.key)
        if old is None:
            continue
        new = scene_settings(s, config)
        diff = sorted(k for k in new if old.get("settings", {}).get(k) != new[k])
        if diff:
            raise ConfigError(
                f"scene {s.name!r} is already in the dataset with other settings "
                f"({', '.join(diff)})", path=s.path,
                hint="repeat the first run's options for it, or use another --out "
                "(one dataset, one radiometry and split per scene)",
            )


# ---------------------------------------------------------------------------------------
# the run


@dataclass
class SceneStats:
    """Tiles of one scene (or one EO/SAR pair) in one run."""

    name: str
    domain: str  # "A", "B" or "AB" (paired)
    written: int = 0
    existing: int = 0
    validity: int = 0
    constant: int = 0
    aoi: int = 0
    split: int = 0
    kept: Counter = field(default_factory=Counter)  # split -> tiles (written + existing)
    skipped: str | None = None  # why the whole scene was skipped
    tile_size: int | None = None  # the side cut (smaller than asked for a small scene)
    split_override: str | None = None  # "train": moved whole to train (_ensure_train)

    def line(self, dry_run: bool = False) -> str:
        if self.skipped:
            return f"{self.name} ({self.domain}): skipped, {self.skipped}"
        verb = "to write" if dry_run else "written"
        return (f"{self.name} ({self.domain}): {self.written} {verb}, {self.existing} "
                f"existing; dropped {self.validity} validity, {self.constant} constant, "
                f"{self.aoi} AOI, {self.split} split; train {self.kept['train']}, "
                f"test {self.kept['test']}")


@dataclass
class TilesReport:
    """What a run did (or, with dry_run, would do)."""

    dataset: Path
    dry_run: bool
    scenes: list[SceneStats] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)  # trainA.. testB, whole dataset
    warnings: list[str] = field(default_factory=list)

    @property
    def written(self) -> int:
        return sum(s.written for s in self.scenes)

    def lines(self) -> list[str]:
        out = [s.line(self.dry_run) for s in self.scenes]
        counts = ", ".join(f"{d} {self.counts.get(d, 0)}" for d in DIRS)
        what = "would hold" if self.dry_run else "holds"
        out.append(f"{self.dataset} {what}: {counts}")
        if self.dry_run:
            out.append("dry run: nothing written")
        return out


def _warn(sink: list[str], message: str) -> None:
    sink.append(message)
    warnings.warn(message, PipelineWarning, stacklevel=3)


def build_tiles(config: TilesConfig) -> TilesReport:
    """Cut the training tiles of `config` into config.out (see the module docstring)."""
    config.validate()
    report = TilesReport(config.out, config.dry_run)
    # band folders become VRTs here, for the run's length only (they reference the files)
    with tempfile.TemporaryDirectory(prefix="eo2sar-tiles-") as tmp:
        eo_paths = expand_inputs(config.eo, "--eo", Path(tmp), eo_names=config.eo_names)
        sar_paths = expand_inputs(config.sar, "--sar", Path(tmp), sar_pols=config.sar_pols)
        aoi = load_aoi(config.aoi)
        with _dataset_lock(config):  # load, cut, merge, write: one run at a time
            return _build(config, report, eo_paths, sar_paths, aoi)


def _dataset_lock(config: TilesConfig) -> contextlib.AbstractContextManager[Any]:
    """The lock of DATASET (beside it: `.NAME.eo2sar-lock`), awaited if another
    `pipeline tiles` holds it, so its index.geojson/dataset.json merge is not lost; none
    for a dry run, which writes nothing."""
    if config.dry_run:
        return contextlib.nullcontext()
    try:
        config.out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"cannot create the dataset's parent ({e.strerror})",
                          path=config.out.parent, hint="choose a writable --out") from None
    return output_lock(config.out, wait=True, on_wait=lambda holder: log.warning(
        "%s: another run is writing this dataset (%s); waiting for it", config.out, holder))


def _build(config: TilesConfig, report: TilesReport, eo_paths: list[SceneInput],
           sar_paths: list[SceneInput], aoi: Any) -> TilesReport:
    dataset = load_dataset(config.out, config.tile_size)
    eo = [open_scene(p, "A", config, report.warnings) for p in eo_paths]
    sar = [open_scene(p, "B", config, report.warnings) for p in sar_paths]
    if config.paired:
        groups = pair_scenes(eo, sar, report.warnings)
        for pair in groups:
            co_register(pair, config.resample_sar)
        scenes = [s for pair in groups for s in pair]
    else:
        scenes = eo + sar
        groups = [[s] for s in scenes]
    name_scenes(scenes, dataset)
    check_conflicts(scenes, dataset, config)
    # every check done: from here on files are written
    for group in groups:
        report.scenes.append(_cut(group, config, dataset, aoi, report.warnings))
    _ensure_train(groups, report.scenes, config, dataset, aoi, report.warnings)
    _record(groups, report.scenes, config, dataset)
    report.counts = count_tiles(dataset.features)
    dataset.doc["empty_test"] = _empty_test(report.counts, config, report.warnings)
    if not config.dry_run:
        write_metadata(dataset)
    return report


def scene_tile_size(width: int, height: int, tile_size: int) -> int | None:
    """The tile side cut from a scene: `tile_size` when it fits, else the largest multiple
    of 4 (the generator's two stride-2 convolutions) that fits, down to
    min(MIN_TILE, tile_size); None: the scene is too small to give any tile."""
    side = min(width, height)
    if side >= tile_size:
        return tile_size
    fit = side - side % 4
    return fit if fit >= min(MIN_TILE, tile_size) else None


def _cut(scenes: list[Scene], config: TilesConfig, dataset: Dataset, aoi: Any,
         warn: list[str], all_train: bool = False) -> SceneStats:
    """Cut one scene (or an EO/SAR pair: the same windows from both) into tiles;
    `all_train`: every window to train (see `_ensure_train`)."""
    first = scenes[0]
    stats = SceneStats(" + ".join(s.name for s in scenes), "".join(s.domain for s in scenes))
    if any(s.empty for s in scenes):
        stats.skipped = "no valid pixel"
        return stats
    if aoi is not None and first.crs is None:
        stats.skipped = "not georeferenced, --aoi cannot apply"
        _warn(warn, f"{first.path}: not georeferenced; skipped (--aoi needs footprints)")
        return stats
    size = scene_tile_size(first.width, first.height, config.tile_size)
    if size is None:
        stats.skipped = f"smaller than {min(MIN_TILE, config.tile_size)} px"
        _warn(warn, f"{first.path}: {first.width}x{first.height} px is smaller than the "
                    f"smallest tile ({min(MIN_TILE, config.tile_size)} px); skipped")
        return stats
    stats.tile_size = size
    if size != config.tile_size:
        _warn(warn, f"{first.path}: {first.width}x{first.height} px is smaller than one "
                    f"{config.tile_size} px tile; cut into {size} px tiles")
    # a shrunk tile keeps the overlap asked for (stride as a fraction of the tile)
    step = config.step if size == config.tile_size else max(
        1, round(config.step * size / config.tile_size))
    all_train = all_train or any(
        dataset.scenes.get(s.key, {}).get("split_override") == "train" for s in scenes)
    stats.split_override = "train" if all_train else None
    tests = frozenset() if all_train else choose_test_blocks(
        first.name, first.width, first.height, config.block, config.test_fraction, config.seed)
    wins = list(windows(first.width, first.height, size, step))
    try:
        with contextlib.ExitStack() as stack:
            readers = [stack.enter_context(s.reader()) for s in scenes]
            bar = _progress_bar(len(wins), config.progress, stats.name)
            for window in wins:
                _one_window(window, scenes, readers, tests, config, dataset, aoi, stats)
                bar.update()
            bar.close()
    except rasterio.errors.RasterioIOError as exc:
        raise read_error(exc, first.path) from None
    return stats


def _one_window(window: Window, scenes: list[Scene], readers: list[Any],
                tests: frozenset[tuple[int, int]], config: TilesConfig, dataset: Dataset,
                aoi: Any, stats: SceneStats) -> None:
    first = scenes[0]
    split = window_split(window, config.block, tests)
    if split is None:
        stats.split += 1
        return
    shape_ = None if first.crs is None else footprint(first.crs, first.transform, window)
    if aoi is not None and not aoi.intersects(shape_):
        stats.aoi += 1
        return
    name = f"{first.name}_r{window.row_off:05d}_c{window.col_off:05d}{config.suffix}"
    files = [f"{split}{s.domain}/{name}" for s in scenes]
    exist = [(dataset.root / f).exists() for f in files]
    if all(exist) and all(f in dataset.features for f in files):
        stats.existing += 1
        stats.kept[split] += 1
        return
    rendered = [render(ds, s, window, config) for ds, s in zip(readers, scenes, strict=True)]
    valid = np.logical_and.reduce([v for _, v in rendered])
    fraction = float(valid.mean())
    if fraction < config.min_valid:
        stats.validity += 1
        return
    if any(tile_std_levels(t) < MIN_TILE_STD for t, _ in rendered):
        stats.constant += 1
        return
    for s, f, ok, (tile, _) in zip(scenes, files, exist, rendered, strict=True):
        if not ok and not config.dry_run:
            (dataset.root / f).parent.mkdir(parents=True, exist_ok=True)
            data = tif_bytes(tile, s, window) if config.multiband else png_bytes(tile)
            atomic_write_bytes(dataset.root / f, data)
        dataset.features[f] = tile_feature(s, f, window, split, fraction, shape_, config)
    stats.kept[split] += 1
    if all(exist):
        stats.existing += 1
    else:
        stats.written += 1


def _ensure_train(groups: list[list[Scene]], stats: list[SceneStats], config: TilesConfig,
                  dataset: Dataset, aoi: Any, warn: list[str]) -> None:
    """A domain with tiles but an empty train side cannot be trained on (`ugatit train`
    would stop on an empty trainB, or worse, a user would not notice until then): the
    scene (or pair) of this run with the most test tiles is cut again, whole, into train.

    Why a whole scene: its test tiles are removed and every window goes to train, so no
    tile of it stays on the test side (no leakage, invariant 9); the override is recorded
    in dataset.json (``split_override``) so reruns cut it the same way, and it is never
    undone (tiles that may have been trained on never move to test). Not done with
    --test-fraction 1 (an all-test set asked for) or in paired mode's absence of tiles.
    """
    if config.test_fraction >= 1.0:
        return
    for domain in ("A", "B"):
        counts = count_tiles(dataset.features)
        if counts[f"train{domain}"] or not counts[f"test{domain}"]:
            continue
        candidates = [(-st.kept["test"], st.name, i) for i, st in enumerate(stats)
                      if domain in st.domain and st.kept["test"] and not st.skipped]
        if not candidates:
            _warn(warn, f"train{domain} is empty: all its tiles are test tiles of scenes "
                        "cut before; add scenes or cut the dataset again")
            continue
        i = min(candidates)[2]
        keys = {s.key for s in groups[i]}
        for f in [f for f, feat in dataset.features.items()
                  if feat["properties"]["split"] == "test"
                  and f"{feat['properties']['domain']}:{feat['properties']['scene']}" in keys]:
            del dataset.features[f]
            if not config.dry_run:
                (dataset.root / f).unlink(missing_ok=True)
        stats[i] = _cut(groups[i], config, dataset, aoi, warn, all_train=True)
        _warn(warn, f"train{domain} would be empty (its {-min(candidates)[0]} tile(s) all fell "
                    f"in test blocks): {stats[i].name} moved whole to train")


def _empty_test(counts: dict[str, int], config: TilesConfig, warn: list[str]) -> list[str]:
    """The test folders that are empty while their domain has tiles (warned, unless
    --test-fraction 0 asked for no test tile)."""
    empty = []
    for domain in ("A", "B"):
        if counts[f"train{domain}"] and not counts[f"test{domain}"]:
            empty.append(f"test{domain}")
            if config.test_fraction > 0:
                _warn(warn, f"test{domain} is empty ({counts[f'train{domain}']} train tiles, no "
                            "test tile): `ugatit evaluate` has nothing to score; add "
                            "scenes, raise --test-fraction or lower --split-block")
    return empty


def tile_feature(scene: Scene, file: str, window: Window, split: str, fraction: float,
                 outline: Polygon | None, config: TilesConfig) -> dict[str, Any]:
    """The GeoJSON feature of one tile (geometry null for a scene without georeferencing)."""
    props: dict[str, Any] = {
        "file": file,
        "domain": scene.domain,
        "scene": scene.name,
        "source": str(scene.path),
        "window": {"col_off": int(window.col_off), "row_off": int(window.row_off),
                   "width": int(window.width), "height": int(window.height)},
        "crs": scene.crs,
        "split": split,
        "tile_size": int(window.width),
        "valid_fraction": round(fraction, 6),
    }
    if config.paired:
        props["paired"] = True
    geometry = None if outline is None else mapping(outline)
    return {"type": "Feature", "geometry": geometry, "properties": props}


def _progress_bar(total: int, enabled: bool, name: str) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, unit="tile", desc=name, disable=not enabled, file=sys.stderr,
                dynamic_ncols=True, leave=False)


# ---------------------------------------------------------------------------------------
# dataset.json and index.geojson


def _record(groups: list[list[Scene]], stats: list[SceneStats], config: TilesConfig,
            dataset: Dataset) -> None:
    """Merge this run's scenes, options and radiometry into dataset.doc."""
    for s, st in ((s, st) for group, st in zip(groups, stats, strict=True) for s in group):
        record: dict[str, Any] = {
            "domain": s.domain,
            "source": str(s.path),
            "settings": scene_settings(s, config),
            "tiles": {k: st.kept[k] for k in SPLITS},
            "dropped": {"validity": st.validity, "constant": st.constant, "aoi": st.aoi,
                        "split": st.split},
            "skipped": st.skipped,
            "tile_size": st.tile_size,
            "options": config.options(),
        }
        if st.split_override:
            record["split_override"] = st.split_override
        if s.scaling is not None:
            record["eo_scaling"] = s.scaling.to_dict()
        dataset.scenes[s.key] = record
    invocations = dataset.doc.get("options", [])
    if config.options() not in invocations:
        invocations.append(config.options())
    dataset.doc = {
        "format": FORMAT,
        "layout": "trainA/trainB/testA/testB: 8-bit RGB PNG, or float32 GeoTIFF in the "
                  "model's unit scale (multiband); A = EO (optical), B = SAR",
        "tile_size": config.tile_size,
        "tile_sizes": tile_sizes(dataset.features),
        "radiometry": radiometry_summary(dataset.scenes),
        "counts": count_tiles(dataset.features),
        "empty_test": dataset.doc.get("empty_test", []),
        "options": invocations,  # one entry per distinct invocation
        "scenes": dict(sorted(dataset.scenes.items())),
    }


def radiometry_summary(records: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The "radiometry" contract of dataset.json (copied into checkpoints by the trainer)."""
    eo = [r["settings"] for r in records.values() if r["domain"] == "A"]
    sar = {k.split(":", 1)[1]: r["settings"] for k, r in records.items() if r["domain"] == "B"}
    eo_bands = {tuple(s["bands"]) for s in eo}
    out: dict[str, Any] = {
        "eo": eo_contract(eo_bands.pop() if len(eo_bands) == 1 else None, DEFAULT_PERCENTILES),
    }
    names = {tuple(s.get("band_names") or ()) for s in eo}
    scales = {s.get("eo_scale", "auto") for s in eo}
    if len(names) == 1 and (only := names.pop()):
        out["eo"]["common_names"] = list(only)
    if scales == {"reflectance"}:
        out["eo"]["method"] = "reflectance"
        out["eo"]["reflectance_range"] = list(REFLECTANCE_RANGE)
        out["eo"]["rule"] = ("reflectance (the product's scale and offset, or declared) "
                             f"[{REFLECTANCE_RANGE[0]:g}, {REFLECTANCE_RANGE[1]:g}] -> unit "
                             "[0, 1], clipped; pixels 0 in every band are fill: invalid -> 0")
    elif len(scales) > 1:
        out["eo"]["method"] = "mixed"
    units = {s["units"] for s in sar.values()}
    bands = {s["bands"][0] for s in sar.values()}
    ranges = {stem: s["db_range"] for stem, s in sar.items() if s["db_range"] is not None}
    sar_out: dict[str, Any] = {
        "units": (units.pop() if len(units) == 1 else "mixed") if units else None,
        "band": bands.pop() if len(bands) == 1 else None,
        "db_range": None,
    }
    pols = {tuple(s.get("band_names") or ()) for s in sar.values()}
    multi = {tuple(map(tuple, s["db_ranges"])) for s in sar.values() if s.get("db_ranges")}
    if len(pols) == 1 and (only_pols := pols.pop()) and len(multi) == 1:
        # multiband SAR tiles: one absolute dB range per polarisation (band)
        per_pol = multi.pop()
        sar_out.update({"polarisations": list(only_pols),
                        "db_ranges": [list(r) for r in per_pol],
                        "db_range": list(per_pol[0]), "db_scale": "absolute"})
        out["sar"] = sar_out
        return out
    distinct = {tuple(r) for r in ranges.values()}
    auto = any(s["db_range_mode"] == "auto" for s in sar.values())
    if len(distinct) == 1 and not auto:
        sar_out["db_range"] = list(distinct.pop())
        sar_out["db_scale"] = "absolute"
    elif ranges:
        # Per-scene ("auto") or differing ranges: a tile level means a different dB value
        # in each scene, so the model learns RELATIVE backscatter and its output has no one
        # dB scale. db_range stays null (`pipeline run --output-scale db` then asks for
        # --db-range instead of inventing one); the median is kept for information only.
        sar_out["db_scale"] = "relative"
        sar_out["db_range_nominal"] = [statistics.median(r[0] for r in ranges.values()),
                                       statistics.median(r[1] for r in ranges.values())]
        sar_out["db_range_per_scene"] = dict(sorted(ranges.items()))
    out["sar"] = sar_out
    return out


def tile_sizes(features: dict[str, dict[str, Any]]) -> dict[str, int]:
    """Tiles per side in px ({"256": 900, "120": 12}): small scenes give smaller tiles."""
    sizes = Counter(str(f["properties"].get("tile_size", f["properties"]["window"]["width"]))
                    for f in features.values())
    return dict(sorted(sizes.items(), key=lambda kv: -int(kv[0])))


def count_tiles(features: dict[str, dict[str, Any]]) -> dict[str, int]:
    """Tiles per directory (trainA, trainB, testA, testB) of the whole dataset."""
    counts = Counter(f.split("/", 1)[0] for f in features)
    return {d: counts.get(d, 0) for d in DIRS}


def write_metadata(dataset: Dataset) -> None:
    """Write index.geojson and dataset.json atomically, only when their content changed
    (a rerun that adds nothing leaves both files, mtimes included, as they were)."""
    dataset.root.mkdir(parents=True, exist_ok=True)
    index = {"type": "FeatureCollection",
             "features": [dataset.features[k] for k in sorted(dataset.features)]}
    for name, doc in (("index.geojson", index), ("dataset.json", dataset.doc)):
        text = json.dumps(doc, indent=1) + "\n"
        path = dataset.root / name
        if not path.exists() or path.read_text() != text:
            atomic_write_text(path, text)

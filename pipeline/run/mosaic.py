"""Blend tile outputs into output blocks and write them: one writer, then a COG, atomically.

Blending: every tile output y is weighted by the separable raised-cosine window of
pipeline/run/tiling.py and each output pixel is `sum(w * y) / sum(w)` over the tiles that
cover it. Pixels where the input is invalid become nodata; a valid pixel always has a
weight > 0 because the tile that contains it was run and the window never reaches 0.

Same bytes whatever the block size, batch size or scheduler: the sums are accumulated
in float64, per output block, adding the covering tiles in ascending GLOBAL tile number.
A pixel's sum is then the same sequence of float operations whichever block it falls in
and whichever worker computed the tiles (the tiles themselves are bit-reproducible, see
pipeline/run/inference.py).

Output encodings (`output_scale`), from the blended generator value y in [-1, 1] and
u = (y + 1) / 2 in [0, 1]:
  unit   float32 u, nodata NaN;
  db     float32 db_low + u * (db_high - db_low), nodata NaN;
  uint8  round(255 u) clipped to 1..255, nodata 0 (so 0 is never a valid value).
NaN rather than -9999 for float outputs: it cannot collide with any value, GDAL and
numpy treat it as missing without configuration, and it is the convention of the
SpaceNet 6 SAR rasters these outputs are compared with.
The heatmap (CAM attention, upsampled bilinearly from 1/4 resolution to the tile size
before blending) is float32, not normalised, nodata NaN.

Writing: blocks go to a temporary tiled GeoTIFF in the destination directory (only the
calling process writes; GeoTIFF writers are not safe for concurrent writes), then GDAL's
COG driver copies it into a second temporary file (DEFLATE/ZSTD, AVERAGE overviews,
512 px blocks), which `os.replace` renames into place. A crash at any point leaves only
hidden `.NAME.eo2sar-tmp-*` files, never a half-written file under the final name; on
errors we can see (exceptions, Ctrl-C), they are removed. A run killed outright (SIGKILL,
OOM killer, power loss) cannot clean up after itself, so the next run that writes the
same output removes the temporary files of that output left by processes that are no
longer alive (`remove_stale_temps`; the temporary names carry the host and process id of
their writer, so a live run's files, or another host's on a shared filesystem, are left
alone).
"""

from __future__ import annotations

import contextlib
import glob
import logging
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import rasterio.errors
import rasterio.shutil

# GDAL errors that rasterio does not wrap (rasterio.shutil.copy raises them as they are,
# e.g. a full disk during the COG copy). The class lives in a PRIVATE module and rasterio
# has no public equivalent (rasterio.errors has none; CPLE_BaseError is not re-exported):
# this is the project's ONE import of it. tests/pipeline/run/test_mosaic.py::
# test_the_private_gdal_error_class_is_still_there fails if a rasterio release moves it,
# and the full-disk tests (tests/faults/test_disk_full.py) check what it catches.
from rasterio._err import CPLE_BaseError
from rasterio.enums import ColorInterp
from rasterio.windows import Window, WindowError

from pipeline.errors import OutputError
from pipeline.run.locks import output_lock

# the temporary names and their clean-up: the one atomic writer's (ugatit.io)
from ugatit.io import fault_point, kept_mode, no_space_reason, remove_stale_temps, temp_name

log = logging.getLogger("pipeline")

COG_BLOCK = 512  # tile side of the final COG (GDAL's default; what viewers expect)

# GDAL's block cache defaults to 5 % of the machine's RAM (6 GiB on a 128 GiB node) and
# fills up with the blocks of the temporary output while a large scene is written: on an
# 8192 x 4096 scene it took the peak RSS to 800 MiB (490-700 MiB with 16-32 MiB). 64 MiB
# is plenty for block-by-block writing and the COG copy (both sequential). A GDAL_CACHEMAX
# set by the user wins.
GDAL_CACHE_BYTES = 64 * 2**20

#: what the writer can raise: rasterio's errors, GDAL's unwrapped ones, the OS's
WRITE_ERRORS = (rasterio.errors.RasterioIOError, CPLE_BaseError, OSError)


def gdal_env() -> rasterio.Env:
    """rasterio.Env bounding GDAL's block cache (unless the user set GDAL_CACHEMAX)."""
    if "GDAL_CACHEMAX" in os.environ:
        return rasterio.Env()
    return rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_BYTES)


class BlockAccumulator:
    """float64 sum(w * y) and sum(w) for one output block, and the input's validity
    gathered from the tiles' masks (`valid`: a pixel is valid if a tile that read it
    found it valid)."""

    def __init__(self, window: Window, bands: int) -> None:
        self.window = window
        shape = (int(window.height), int(window.width))
        self.num = np.zeros((bands, *shape), dtype=np.float64)
        self.den = np.zeros(shape, dtype=np.float64)
        self.valid = np.zeros(shape, dtype=bool)

    def add(self, row: int, col: int, values: np.ndarray, weight: np.ndarray,
            valid: np.ndarray | None = None) -> None:
        """Add a tile whose top-left pixel is at scene (row, col); values [C, T, T];
        `valid` [T, T]: the input's validity as the tile's task read it."""
        tile = Window(col, row, weight.shape[1], weight.shape[0])
        try:
            common = self.window.intersection(tile)  # scene pixels of both
        except WindowError:
            return  # the tile does not reach this block
        src = _relative(common, tile).toslices()
        dst = _relative(common, self.window).toslices()
        wt = weight[src]
        self.num[(slice(None), *dst)] += values[(slice(None), *src)] * wt
        self.den[dst] += wt
        if valid is not None:
            self.valid[dst] |= valid[src]

    def blended(self, valid: np.ndarray) -> np.ndarray:
        """sum(w y) / sum(w) where the input is valid, NaN elsewhere ([C, h, w] float64)."""
        ok = valid & (self.den > 0)
        out = np.full(self.num.shape, np.nan, dtype=np.float64)
        np.divide(self.num, self.den, out=out, where=ok[None])
        return out


def _relative(window: Window, origin: Window) -> Window:
    """`window` (scene pixels) in the pixel coordinates of `origin`'s array."""
    return Window(window.col_off - origin.col_off, window.row_off - origin.row_off,
                  window.width, window.height)


def encode(y: np.ndarray, output_scale: str, db_range: Any) -> np.ndarray:
    """Blended generator values (NaN = nodata) -> output array (see module docstring).
    `db_range`: one (low, high) for every band, or one per band ([C, 2]: the
    polarisations of a VV/VH model, each on its own dB range)."""
    u = np.clip((y + 1.0) * 0.5, 0.0, 1.0)
    if output_scale == "db" and np.ndim(db_range) == 2:
        ranges = np.asarray(db_range, dtype=np.float64)
        lo, hi = ranges[:, 0, None, None], ranges[:, 1, None, None]
        return (lo + u * (hi - lo)).astype(np.float32)
    if output_scale == "uint8":
        q = np.clip(np.rint(u * 255.0), 1.0, 255.0)
        return np.where(np.isnan(y), 0.0, q).astype(np.uint8)
    if output_scale == "db":
        lo, hi = db_range
        return (lo + u * (hi - lo)).astype(np.float32)
    return u.astype(np.float32)


def output_dtype_nodata(output_scale: str) -> tuple[str, float]:
    """(dtype, nodata) of the output raster for an output_scale."""
    return ("uint8", 0.0) if output_scale == "uint8" else ("float32", math.nan)


@dataclass
class _Moments:
    """count, min, max, mean and M2 (sum of squared deviations) of one band's valid pixels,
    merged window by window with Chan et al.'s pairwise update (stable: no sum of squares
    minus a squared mean)."""

    count: int = 0
    minimum: float = math.inf
    maximum: float = -math.inf
    mean: float = 0.0
    m2: float = 0.0

    def add(self, values: np.ndarray) -> None:
        n = int(values.size)
        if n == 0:
            return
        mean = float(values.mean())
        m2 = float(np.square(values - mean).sum())
        total = self.count + n
        delta = mean - self.mean
        self.mean += delta * n / total
        self.m2 += m2 + delta * delta * self.count * n / total
        self.count = total
        self.minimum = min(self.minimum, float(values.min()))
        self.maximum = max(self.maximum, float(values.max()))

    def tags(self, pixels: int) -> dict[str, str]:
        """GDAL's STATISTICS_* band metadata (what `gdalinfo -stats` writes and QGIS reads
        for its default stretch); only the valid percentage when no pixel is valid."""
        valid = {"STATISTICS_VALID_PERCENT": repr(100.0 * self.count / pixels if pixels else 0.0)}
        if self.count == 0:
            return valid
        return {
            "STATISTICS_MINIMUM": repr(self.minimum),
            "STATISTICS_MAXIMUM": repr(self.maximum),
            "STATISTICS_MEAN": repr(self.mean),
            "STATISTICS_STDDEV": repr(math.sqrt(max(self.m2, 0.0) / self.count)),
            **valid,
        }


def band_statistics(ds: rasterio.io.DatasetReader) -> list[dict[str, str]]:
    """Exact STATISTICS_* tags of every band over its valid pixels (not nodata, not NaN).

    Read after all blocks are written, in FIXED COG_BLOCK windows in row-major order,
    rather than accumulated while writing: the write windows follow --block-size, so
    sums gathered per write block would round differently for another block size and
    the output FILE would no longer be the same bytes whatever the block size (the
    pixels would). Costs one sequential read of the temporary file, bounded memory
    (one 512 x 512 window of all bands), float64 sums (population std, as GDAL).
    """
    moments = [_Moments() for _ in range(ds.count)]
    nodata = ds.nodata
    for row in range(0, ds.height, COG_BLOCK):
        for col in range(0, ds.width, COG_BLOCK):
            window = Window(col, row, min(COG_BLOCK, ds.width - col),
                            min(COG_BLOCK, ds.height - row))
            data = ds.read(window=window).astype(np.float64)
            invalid = np.isnan(data)
            if nodata is not None and not math.isnan(nodata):
                invalid |= data == nodata
            for band, bad, m in zip(data, invalid, moments, strict=True):
                m.add(band[~bad])
    return [m.tags(ds.width * ds.height) for m in moments]


@dataclass
class RasterTarget:
    """One output raster being written: temporary GeoTIFF -> COG -> final name.

    Besides pixels and tags it carries what GIS software shows (QGIS's layer
    properties, `gdalinfo`): band descriptions, `units` (e.g. "dB"), an optional
    (scale, offset) with GDAL's meaning value = DN * scale + offset, colour
    interpretation gray, and exact GDAL statistics (`band_statistics`) so QGIS
    stretches the layer from the real min/max without scanning it.
    """

    final: Path
    profile: dict[str, Any]
    tags: dict[str, str]
    band_descriptions: tuple[str, ...] = ()
    compress: str = "DEFLATE"
    units: str = ""
    scale_offset: tuple[float, float] | None = None
    #: per band (scale, offset), instead of one `scale_offset` for all bands
    band_scale_offsets: tuple[tuple[float, float], ...] | None = None
    tmp: Path = field(init=False)
    cog_tmp: Path = field(init=False)
    ds: Any = field(init=False, default=None)

    def __post_init__(self) -> None:
        self.tmp = temp_name(self.final, "part")
        self.cog_tmp = temp_name(self.final, "cog")

    def open(self) -> None:
        try:
            self.ds = rasterio.open(self.tmp, "w", **self.profile)
        except (rasterio.errors.RasterioIOError, OSError) as exc:
            raise OutputError(
                f"cannot create a temporary file ({exc})",
                path=self.tmp.parent,
                hint="check free space and permissions of the output directory",
            ) from None
        self.ds.update_tags(**self.tags)
        for i, desc in enumerate(self.band_descriptions, start=1):
            self.ds.set_band_description(i, desc)
        count = self.profile["count"]
        # continuous bands, not RGB (GDAL makes a 3-band uint8 GeoTIFF RGB by default);
        # TIFF can only say gray for band 1, later bands read back as "undefined"
        self.ds.colorinterp = [ColorInterp.gray] * count
        if self.units:
            self.ds.units = [self.units] * count
        if self.scale_offset is not None:
            self.ds.scales = [self.scale_offset[0]] * count
            self.ds.offsets = [self.scale_offset[1]] * count
        if self.band_scale_offsets is not None:
            self.ds.scales = [so[0] for so in self.band_scale_offsets]
            self.ds.offsets = [so[1] for so in self.band_scale_offsets]

    def write(self, array: np.ndarray, window: Window) -> None:
        try:
            self.ds.write(array, window=window)
        except WRITE_ERRORS as exc:
            raise self._write_error(exc) from None
        fault_point("mid-scene")  # test hook (tests/faults): a block is in the temp file

    def _write_error(self, exc: Exception) -> OutputError:
        return write_error(exc, self.final)

    def finish(self) -> None:
        """Close, convert to COG, rename into place."""
        try:
            self._finish()
        except WRITE_ERRORS as exc:
            raise self._write_error(exc) from None

    def _finish(self) -> None:
        self.ds.close()
        self.ds = None
        with rasterio.open(self.tmp, "r+") as ds:  # the COG copy keeps band metadata
            for i, stats in enumerate(band_statistics(ds), start=1):
                ds.update_tags(i, **stats)
        options: dict[str, Any] = {
            "COMPRESS": self.compress,
            "BLOCKSIZE": COG_BLOCK,
            "OVERVIEW_RESAMPLING": "AVERAGE",
            "BIGTIFF": "IF_SAFER",
            # Compression on every core (same file bytes). 4096 x 4096 float32 on the
            # shared 2-core dev box: 4.8-5.5 s single-threaded vs 2.6-3.9 s in one run,
            # no difference (1.5-2.3 s both) in another when no core was free; a GPU
            # node's idle cores are where it pays (not measured here). GDAL's
            # multi-threaded writer once let a full disk go unreported (the torn COG was
            # renamed into place: tests/faults/test_disk_full.py), so the copy is checked
            # block by block before the rename (`check_cog_blocks`).
            "NUM_THREADS": "ALL_CPUS",
        }
        if self.compress != "NONE":
            options["PREDICTOR"] = "YES"
        options["OVERVIEW_COUNT"] = overview_count(self.profile["width"], self.profile["height"])
        rasterio.shutil.copy(str(self.tmp), str(self.cog_tmp), driver="COG", **options)
        check_cog_blocks(self.cog_tmp)
        fault_point("cog")  # test hook (tests/faults): the COG is written, not yet renamed
        os.chmod(self.cog_tmp, kept_mode(self.final))  # --overwrite keeps a 0600 output's mode
        os.replace(self.cog_tmp, self.final)
        self.tmp.unlink(missing_ok=True)

    def cleanup(self) -> None:
        """Remove whatever temporary file exists (after an error or an interrupt)."""
        if self.ds is not None:
            with contextlib.suppress(Exception):
                self.ds.close()
            self.ds = None
        for p in (self.tmp, self.cog_tmp):
            with contextlib.suppress(OSError):
                p.unlink(missing_ok=True)
        # GDAL's COG driver keeps its overview temp file next to the target
        for extra in self.final.parent.glob(f"{glob.escape(self.cog_tmp.name)}*"):
            with contextlib.suppress(OSError):
                extra.unlink()


def check_cog_blocks(path: Path) -> None:
    """Raise OSError unless every block of every band, at full resolution and in every
    overview, was written: a non-zero offset and size, and its bytes inside the file.

    Why: a COG written with several compression threads is only renamed into place
    after this check, so a write that failed without GDAL reporting it (a full disk seen
    by a worker thread; it happened, tests/faults/test_disk_full.py) cannot publish a
    torn file. It reads the TIFF directories only (GDAL's BLOCK_OFFSET/BLOCK_SIZE
    items), no pixel: ~650 look-ups for a 10980 px scene. The OSError goes through
    `write_error`, which names a full disk when the free space says so."""
    size = os.path.getsize(path)
    with rasterio.open(path) as ds:
        levels = len(ds.overviews(1))
    for level in (None, *range(levels)):
        opts = {} if level is None else {"overview_level": level}
        with rasterio.open(path, **opts) as ds:
            bh, bw = ds.block_shapes[0]
            for bidx in range(1, ds.count + 1):
                for r in range(-(-ds.height // bh)):
                    for c in range(-(-ds.width // bw)):
                        off = ds.get_tag_item(f"BLOCK_OFFSET_{c}_{r}", "TIFF", bidx=bidx)
                        n = ds.get_tag_item(f"BLOCK_SIZE_{c}_{r}", "TIFF", bidx=bidx)
                        if not off or not n or int(off) <= 0 or int(n) <= 0 \
                                or int(off) + int(n) > size:
                            where = "full resolution" if level is None else \
                                f"overview {level + 1}"
                            raise OSError(
                                f"incomplete COG: block ({r}, {c}) of band {bidx} at {where}"
                                f" was not written (offset {off}, size {n}, file {size} B)")


def write_error(exc: BaseException, path: Path) -> OutputError:
    """The one-line OutputError for a failed write of `path`: "no space left on device"
    (with the free space) when it was a full disk (ugatit.io.no_space_reason, measured
    before the temporary files are removed), else GDAL's or the OS's reason."""
    path = Path(path)
    if full := no_space_reason(exc, path.parent):
        return OutputError(full, path=path,
                           hint="free some space there, or write the output elsewhere")
    first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return OutputError(f"writing failed ({first})", path=path,
                       hint="check free space and permissions of the output directory")


def overview_count(width: int, height: int, smallest: int = 256) -> int:
    """Halvings until the longer side is <= `smallest` px, at least 1.

    GDAL's default stops once the image fits one 512 px block, so a small scene would get
    no overview at all; we always make at least one, so every output is a proper COG
    with a pyramid (viewers and our COG check rely on it).
    """
    n, side = 0, max(width, height)
    if side < 2:
        return 0  # a 1 x 1 raster has no pyramid (GDAL fails on one)
    while side > smallest:
        side = math.ceil(side / 2)
        n += 1
    return max(1, n)


def tmp_block_size(block_size: int) -> int:
    """Tile size of the temporary GeoTIFF: divides the block size, so each of its tiles
    is written exactly once, in one piece (a compressed tile written twice would be
    recompressed and the first copy wasted)."""
    return math.gcd(block_size, COG_BLOCK)


@contextlib.contextmanager
def open_targets(targets: list[RasterTarget], *, overwrite: bool = True
                 ) -> Iterator[list[RasterTarget]]:
    """Open every target; on any exception (even KeyboardInterrupt) remove all temps.

    First locks every output (pipeline/run/locks.py: OutputBusy if another run writes it),
    then removes what killed runs left for the same outputs (`remove_stale_temps`); the
    locks are held until the `with` ends (after `finish`, the rename). Without
    `overwrite`, an output that appeared since the checks (another run that finished
    first: both saw no file) is refused under the lock rather than replaced."""
    with contextlib.ExitStack() as locks:
        for t in targets:
            locks.enter_context(output_lock(t.final))
        for t in targets:
            if not overwrite and t.final.exists():
                raise OutputError(
                    "appeared while this run was planning (another run wrote it)",
                    path=t.final, hint="keep it, or pass --overwrite to replace it",
                )
        for t in targets:
            if removed := remove_stale_temps(t.final):
                log.info("removed %d stale temporary file(s) of %s", len(removed), t.final)
        try:
            for t in targets:
                t.open()
            yield targets
        except BaseException:
            for t in targets:
                t.cleanup()
            raise


def output_profile(
    src_profile: dict[str, Any], *, count: int, dtype: str, nodata: float, block_size: int
) -> dict[str, Any]:
    """The temporary GeoTIFF profile: the input's grid (CRS, transform, size) as is."""
    tb = tmp_block_size(block_size)
    return {
        "driver": "GTiff",
        "width": src_profile["width"],
        "height": src_profile["height"],
        "count": count,
        "dtype": dtype,
        "crs": src_profile["crs"],
        "transform": src_profile["transform"],
        "nodata": nodata,
        "tiled": True,
        "blockxsize": tb,
        "blockysize": tb,
        "compress": "ZSTD",
        "zstd_level": 1,
        "bigtiff": "IF_SAFER",
        "interleave": "pixel" if count > 1 else "band",
    }

"""Scene-pair evaluation: run the model through the real scene pipeline on optical scenes
that have a co-registered real SAR (VV, dB), and measure what issue 14 accepts a model by.

`ugatit evaluate` scores tiles (8-bit PNGs: no NIR band, no physical units beyond the
tiles' dB grid); this module reads rasters, so it lives in `pipeline/`. Per pair:

(a) water / land contrast ratio: water = NIR reflectance < WATER_NIR (0.04; reflectance =
    DN * reflectance_scale, 1/10000 for Sentinel-2 L2A), land = the other valid pixels.
    ratio = (mean_land - mean_water of the output, unit scale 0..1)
          / (mean_land - mean_water of the real VV mapped from [-25, 0] dB to 0..1).
    1 = the model darkens water exactly as much as the radar does; the issue asks >= 0.6.
    Skipped (null, with the reason) when water or land is under MIN_CLASS_FRACTION (1 %)
    of the valid pixels, or the real SAR does not show water darker than land.
(b) Pearson correlation of the output and of the real VV (dB), both box-filtered 9x9 (only
    windows whose 81 pixels are all valid), and the same for the input's red band
    (reflectance): the baseline "the optical image itself". gain = model - red; the issue
    asks a mean gain >= 0.05.
(c) SSIM and PSNR (ugatit.metrics) of the output vs the real VV on the [-25, 0] dB grid
    (0..1, data range 1: PSNR is in dB of that 25 dB range).

Why the scene pipeline and not a forward of our own: the number must describe what users
get from `pipeline run` (global scene scaling, tiling, blending, and whatever
normalisation `pipeline run` uses by default), so the model runs through `run_scene` with
the default options; only the bands and `output_scale unit` are set.
"""

from __future__ import annotations

import math
import re
import tempfile
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import rasterio.errors
import rasterio.warp

from pipeline.config import load_config
from pipeline.errors import InputError, PipelineError, PipelineWarning
from pipeline.inputs.radiometry import is_relative_db, read_masked
from pipeline.inputs.sources import Band, write_stack_vrt
from ugatit import metrics
from ugatit.evaluate import write_json

#: Water: NIR surface reflectance below 4 % (open water absorbs NIR; vegetation reflects
#: 20-50 %, bare soil and towns 15-35 %, so 4 % separates them with a wide margin).
WATER_NIR = 0.04
#: Sentinel-2 L2A (and L1C) store reflectance x 10000.
S2_REFLECTANCE_SCALE = 1e-4
#: Fewer water (or land) pixels than this fraction of the valid ones: no contrast measured.
MIN_CLASS_FRACTION = 0.01
#: The real VV's fixed dB range for the unit-scale comparisons (the SEN12MS convention).
REAL_DB_RANGE = (-25.0, 0.0)
#: Acceptance thresholds of issue 14.
ACCEPT_WATER_RATIO = 0.6
ACCEPT_CORR_GAIN = 0.05
#: Default band files of a folder input, in R, G, B, NIR order (Sentinel-2 names; "B04"
#: also matches "B4", SSL4EO's spelling).
DEFAULT_BAND_NAMES = ("B04", "B03", "B02", "B08")


# ----------------------------------------------------------------------------------------
# Metrics (plain numpy; exact on hand-made arrays, see tests)


def water_land_contrast(out_unit: np.ndarray, sar_db: np.ndarray, nir: np.ndarray,
                        valid: np.ndarray, *, water_nir: float = WATER_NIR,
                        min_fraction: float = MIN_CLASS_FRACTION,
                        real_db_range: tuple[float, float] = REAL_DB_RANGE) -> dict[str, Any]:
    """The water/land contrast of the output relative to the real SAR's (module docstring
    (a)). Returns the fractions, both contrasts (unit scale, and the real one in dB) and
    ``ratio`` (None with ``skipped`` saying why when it cannot be measured)."""
    valid = valid & np.isfinite(out_unit) & np.isfinite(sar_db) & np.isfinite(nir)
    n = int(valid.sum())
    water = valid & (nir < water_nir)
    land = valid & ~(nir < water_nir)
    res: dict[str, Any] = {"water_fraction": float(water.sum() / n) if n else 0.0,
                           "ratio": None, "skipped": None}
    if n == 0 or water.sum() < min_fraction * n or land.sum() < min_fraction * n:
        which = "water" if n == 0 or water.sum() < min_fraction * n else "land"
        res["skipped"] = (f"too few {which} pixels ({res['water_fraction']:.2%} water; "
                          f"needs >= {min_fraction:.0%} of each)")
        return res
    lo, hi = real_db_range
    sar_u = np.clip((sar_db - lo) / (hi - lo), 0.0, 1.0)
    out_c = float(out_unit[land].mean() - out_unit[water].mean())
    real_c = float(sar_u[land].mean() - sar_u[water].mean())
    res.update(output_contrast_unit=out_c, real_contrast_unit=real_c,
               real_contrast_db=float(sar_db[land].mean() - sar_db[water].mean()),
               output_water_unit=float(out_unit[water].mean()),
               output_land_unit=float(out_unit[land].mean()))
    if real_c <= 0:
        res["skipped"] = "the real SAR does not show water darker than land here"
        return res
    res["ratio"] = out_c / real_c
    return res


def masked_box_corr(a: np.ndarray, b: np.ndarray, valid: np.ndarray,
                    size: int = metrics.BOX) -> float:
    """Pearson correlation of ``a`` and ``b`` after a ``size`` x ``size`` box filter, over
    the windows whose pixels are all valid (an invalid pixel would leak fill values into
    the mean); NaN when fewer than 2 such windows or a side is flat."""
    ok = valid & np.isfinite(a) & np.isfinite(b)
    full = metrics.box_filter(ok.astype(np.float64), size)[0] > 1.0 - 1e-9
    if full.sum() < 2:
        return math.nan
    fa = metrics.box_filter(np.where(ok, a, 0.0), size)[0][full]
    fb = metrics.box_filter(np.where(ok, b, 0.0), size)[0][full]
    fa, fb = fa - fa.mean(), fb - fb.mean()
    den = math.sqrt(float((fa ** 2).sum() * (fb ** 2).sum()))
    return float((fa * fb).sum() / den) if den > 1e-12 else math.nan


def ssim_psnr(out_grid: np.ndarray, sar_grid: np.ndarray, valid: np.ndarray
              ) -> tuple[float, float]:
    """SSIM and PSNR (ugatit.metrics, data range 1) of two images on the same 0..1 grid.
    Invalid pixels are set to 0 in both (they then agree; the valid fraction is reported
    beside, and is 1 on the bundled pairs)."""
    ok = valid & np.isfinite(out_grid) & np.isfinite(sar_grid)
    x, y = np.where(ok, out_grid, 0.0), np.where(ok, sar_grid, 0.0)
    return float(metrics.ssim(x, y)[0]), float(metrics.psnr(x, y)[0])


def output_on_real_grid(out_unit: np.ndarray, model_db_range: tuple[float, float] | None,
                        real_db_range: tuple[float, float] = REAL_DB_RANGE) -> np.ndarray:
    """The output on the real SAR's 0..1 grid: through dB when the model has an absolute
    dB range; as is (unit scale taken as [-25, 0] dB) for a relative-dB model, which has no
    dB to go through."""
    if model_db_range is None:
        return out_unit
    db = model_db_range[0] + out_unit * (model_db_range[1] - model_db_range[0])
    lo, hi = real_db_range
    return np.clip((db - lo) / (hi - lo), 0.0, 1.0)


# ----------------------------------------------------------------------------------------
# Inputs


@dataclass(frozen=True)
class OpticalOptions:
    """How to read the optical side: ``bands`` (R, G, B) and ``nir_band`` of a raster
    (1-based), or ``band_names`` (R, G, B, NIR) of a folder of band files."""

    bands: tuple[int, int, int] = (1, 2, 3)
    nir_band: int | None = None
    band_names: tuple[str, ...] = DEFAULT_BAND_NAMES
    reflectance_scale: float = S2_REFLECTANCE_SCALE


@dataclass
class Pair:
    """One co-registered pair as given: an optical raster/VRT or band folder, the real SAR
    (a dB raster, or a folder holding one ``*VV.tif``)."""

    optical: Path
    sar: Path
    name: str = ""

    def __post_init__(self) -> None:
        self.name = self.name or self.optical.name


def _band_file(folder: Path, name: str) -> Path:
    """The file of band ``name`` (e.g. B04) in a folder: stem ending in ``_B04`` / ``B04``
    or SSL4EO's ``B4``; exactly one."""
    m = re.fullmatch(r"([A-Za-z]+)0*(\d+[A-Za-z]?)", name)
    pattern = re.compile(rf"(^|[_\-.]){m.group(1)}0*{m.group(2)}$" if m else
                         rf"(^|[_\-.]){re.escape(name)}$", re.IGNORECASE)
    found = sorted(p for p in folder.iterdir()
                   if p.suffix.lower() in (".tif", ".tiff", ".jp2", ".vrt")
                   and pattern.search(p.stem))
    if len(found) != 1:
        raise InputError(f"{'no' if not found else len(found)} band file(s) for {name} "
                         f"in the folder", path=folder,
                         hint="name the bands with --band-files R,G,B,NIR (e.g. "
                         "B04,B03,B02,B08), or pass a raster with --bands and --nir-band")
    return found[0]


def resolve_optical(path: Path, opts: OpticalOptions, tmp: Path
                    ) -> tuple[Path, tuple[int, int, int], int | None]:
    """(raster to run, its R,G,B bands, its NIR band or None). A folder of band files
    becomes a 4-band VRT (references, nothing copied) in ``tmp``."""
    if path.is_dir():
        names = list(opts.band_names)
        if len(names) not in (3, 4):
            raise InputError(f"--band-files needs R,G,B or R,G,B,NIR names, got {names}",
                             path=path, hint="e.g. --band-files B04,B03,B02,B08")
        bands = [Band(name=n, path=str(_band_file(path, n))) for n in names]
        vrt = write_stack_vrt(bands, tmp / f"{path.name}_stack.vrt")
        return vrt, (1, 2, 3), 4 if len(names) == 4 else None
    if not path.is_file():
        raise InputError("optical input not found", path=path,
                         hint="give a raster, a VRT or a folder of band files")
    return path, opts.bands, opts.nir_band


def resolve_sar(path: Path) -> Path:
    """The real SAR file: the path itself, or the one ``*VV.tif`` of a folder."""
    if path.is_dir():
        found = sorted(p for p in path.iterdir() if p.suffix.lower() in (".tif", ".tiff")
                       and re.search(r"(^|[_\-.])VV$", p.stem, re.IGNORECASE))
        if len(found) != 1:
            raise InputError(f"{'no' if not found else len(found)} *VV.tif file(s) in the "
                             f"folder", path=path, hint="give the VV dB raster itself")
        return found[0]
    if not path.is_file():
        raise InputError("real SAR raster not found", path=path,
                         hint="give the co-registered Sentinel-1 VV raster in dB")
    return path


def read_sar_on_grid(sar_path: Path, grid_path: Path, resample: bool) -> np.ndarray:
    """The real SAR (band 1, dB) on the optical raster's grid, float64 with NaN where
    invalid. A different grid is an error unless ``resample`` (bilinear reproject: dB is
    smooth enough at the ~1 % scale differences of near-co-registered products)."""
    try:
        with rasterio.open(grid_path) as g, rasterio.open(sar_path) as s:
            same = (g.crs == s.crs and g.width == s.width and g.height == s.height
                    and g.transform.almost_equals(s.transform, precision=1e-9))
            data, valid = read_masked(s, (1,), zero_fill=False)
            src = np.where(valid, data[0].astype(np.float64), np.nan)
            if same:
                return src
            if not resample:
                raise InputError(
                    f"real SAR grid ({_grid(s)}) differs from the optical grid ({_grid(g)})",
                    path=sar_path,
                    hint="pass --resample-sar to reproject it onto the optical grid "
                    "(bilinear), or give co-registered rasters")
            out = np.full((g.height, g.width), np.nan)
            rasterio.warp.reproject(src, out, src_transform=s.transform, src_crs=s.crs,
                                    dst_transform=g.transform, dst_crs=g.crs,
                                    src_nodata=np.nan, dst_nodata=np.nan,
                                    resampling=rasterio.warp.Resampling.bilinear)
            return out
    except rasterio.errors.RasterioIOError as exc:
        raise InputError(f"cannot read ({exc})", path=sar_path,
                         hint="give a GeoTIFF GDAL can open") from None


def _grid(ds: rasterio.io.DatasetReader) -> str:
    t = ds.transform
    return (f"{ds.width}x{ds.height} px of {t.a:.6g} x {-t.e:.6g} from "
            f"({t.c:.9g}, {t.f:.9g}), {ds.crs}")


# ----------------------------------------------------------------------------------------
# One pair, all pairs

RunScene = Callable[..., Any]


def evaluate_pair(pair: Pair, model: Path, settings: dict[str, Any], opts: OpticalOptions,
                  *, resample: bool, tmp: Path, keep: Path | None = None,
                  run_scene: RunScene | None = None) -> dict[str, Any]:
    """Every measure of one pair (module docstring). The model runs through
    ``run_scene`` (pipeline.run.scene's, unless a test passes its own) with the user's
    ``settings`` (pipeline run's keys, e.g. device) over the defaults; only the bands and
    output_scale=unit are set here."""
    from pipeline.run.scene import run_scene as _run_scene

    optical, rgb, nir_band = resolve_optical(pair.optical, opts, tmp)
    sar_path = resolve_sar(pair.sar)
    sar_db = read_sar_on_grid(sar_path, optical, resample)
    out_path = (keep or tmp) / f"{pair.name}_sar_like.tif"
    cfg = load_config(None, {**settings, "bands": rgb, "output_scale": "unit"})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PipelineWarning)
        (run_scene or _run_scene)(optical, out_path, model_path=model, config=cfg,
                                  overwrite=True, progress=False)
    with rasterio.open(out_path) as ds:
        out_unit = ds.read(1).astype(np.float64)
    with rasterio.open(optical) as ds:
        read = (*rgb, nir_band) if nir_band else rgb
        data, valid = read_masked(ds, tuple(read))
    refl = data.astype(np.float64) * opts.reflectance_scale
    red = refl[0]
    valid = valid & np.isfinite(out_unit) & np.isfinite(sar_db)
    model_range = model_db_range(model, settings)
    out_grid = output_on_real_grid(out_unit, model_range)
    lo, hi = REAL_DB_RANGE
    sar_grid = np.clip((sar_db - lo) / (hi - lo), 0.0, 1.0)
    corr_out = masked_box_corr(out_grid, sar_db, valid)
    corr_red = masked_box_corr(red, sar_db, valid)
    ssim, psnr = ssim_psnr(out_grid, sar_grid, valid)
    row: dict[str, Any] = {
        "name": pair.name, "optical": str(pair.optical), "sar": str(sar_path),
        "output": str(out_path) if keep else None, "px": [int(out_unit.shape[1]),
                                                           int(out_unit.shape[0])],
        "valid_fraction": float(valid.mean()),
        "corr9_output": corr_out, "corr9_red": corr_red, "corr9_gain": corr_out - corr_red,
        "ssim": ssim, "psnr": psnr,
        "output_db_range": list(model_range) if model_range else None,
        "real_mean_db": float(np.nanmean(sar_db)),
    }
    if nir_band is None:
        row["water"] = {"ratio": None, "skipped": "no NIR band (--nir-band / a 4th band file)"}
    else:
        row["water"] = water_land_contrast(out_unit, sar_db, refl[3], valid)
        if model_range is not None and "output_contrast_unit" in row["water"]:
            row["water"]["output_contrast_db"] = \
                row["water"]["output_contrast_unit"] * (model_range[1] - model_range[0])
    return row


def model_db_range(model: Path, settings: dict[str, Any]) -> tuple[float, float] | None:
    """The output's absolute dB range: --db-range if given, else the model's contract,
    else [-25, 0]; None for a relative-dB model without --db-range (trained on per-scene
    SAR stretches: its 0..1 has no dB meaning)."""
    from pipeline.run.plan import model_contract, resolve_model_config

    if settings.get("db_range") is None and is_relative_db(model_contract(model)):
        return None
    cfg = resolve_model_config(model, load_config(None, settings))
    return (float(cfg.db_range[0]), float(cfg.db_range[1]))


def _mean(values: Sequence[float | None]) -> float | None:
    ok = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.mean(ok)) if ok else None


def evaluate_pairs(pairs: Sequence[Pair], model: Path, settings: dict[str, Any] | None,
                   opts: OpticalOptions, *, resample: bool = False, keep: Path | None = None,
                   log: Callable[[str], None] = lambda s: None,
                   run_scene: RunScene | None = None) -> dict[str, Any]:
    """Evaluate every pair; the report: per pair, the means, and issue 14's acceptance."""
    if not pairs:
        raise InputError("no pair given", hint="--pair OPTICAL SAR (repeatable)")
    names = [p.name for p in pairs]
    if len(set(names)) != len(names):  # outputs are named after the pair
        pairs = [Pair(p.optical, p.sar, f"{i:02d}_{p.name}") for i, p in enumerate(pairs)]
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="eo2sar_pairs_") as tmp:
        for p in pairs:
            rows.append(evaluate_pair(p, model, settings or {}, opts, resample=resample,
                                      tmp=Path(tmp), keep=keep, run_scene=run_scene))
            log(f"{p.name}: corr9 {rows[-1]['corr9_output']:.3f} "
                f"(red {rows[-1]['corr9_red']:.3f})")
    ratios = [r["water"].get("ratio") for r in rows]
    mean = {k: _mean([r[k] for r in rows])
            for k in ("corr9_output", "corr9_red", "corr9_gain", "ssim", "psnr")}
    mean["water_ratio"] = _mean(ratios)
    n_water = sum(v is not None for v in ratios)
    return {
        "tool": "pipeline evaluate-pairs",
        "model": str(model),
        "definitions": {"water": f"NIR reflectance < {WATER_NIR} (reflectance = DN x "
                                 f"{opts.reflectance_scale})",
                        "min_class_fraction": MIN_CLASS_FRACTION,
                        "real_db_range": list(REAL_DB_RANGE), "box_px": metrics.BOX},
        "pairs": rows,
        "mean": mean,
        "acceptance": {
            "water_ratio_min": ACCEPT_WATER_RATIO, "pairs_with_water": n_water,
            "water_passed": None if mean["water_ratio"] is None
            else mean["water_ratio"] >= ACCEPT_WATER_RATIO,
            "corr9_gain_min": ACCEPT_CORR_GAIN,
            "corr9_passed": None if mean["corr9_gain"] is None
            else mean["corr9_gain"] >= ACCEPT_CORR_GAIN,
        },
    }


def _fmt(v: Any, fmt: str = "{:.3f}") -> str:
    return "-" if v is None or (isinstance(v, float) and not math.isfinite(v)) else fmt.format(v)


def format_table(report: dict[str, Any]) -> str:
    """Per pair and mean: corr9 of model and red band, gain, SSIM, PSNR, water ratio."""
    head = ["pair", "corr9 model", "corr9 red", "gain", "SSIM", "PSNR dB", "water %",
            "water ratio"]
    cells = [head]
    for r in report["pairs"]:
        w = r["water"]
        cells.append([r["name"], _fmt(r["corr9_output"]), _fmt(r["corr9_red"]),
                      _fmt(r["corr9_gain"], "{:+.3f}"), _fmt(r["ssim"]),
                      _fmt(r["psnr"], "{:.2f}"),
                      _fmt(100 * w["water_fraction"] if "water_fraction" in w else None,
                           "{:.1f}"), _fmt(w.get("ratio"))])
    m = report["mean"]
    cells.append(["mean", _fmt(m["corr9_output"]), _fmt(m["corr9_red"]),
                  _fmt(m["corr9_gain"], "{:+.3f}"), _fmt(m["ssim"]), _fmt(m["psnr"], "{:.2f}"),
                  "", _fmt(m["water_ratio"])])
    widths = [max(len(c[i]) for c in cells) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                       for i, (c, w) in enumerate(zip(row, widths, strict=True)))
             for row in cells]
    lines.insert(1, "-" * len(lines[0]))
    lines.insert(-1, "-" * len(lines[0]))
    for r in report["pairs"]:
        if r["water"].get("skipped"):
            lines.append(f"water check skipped for {r['name']}: {r['water']['skipped']}")
    a = report["acceptance"]
    verdict = {True: "PASS", False: "FAIL", None: "not measured"}
    lines.append(f"issue 14: water ratio >= {a['water_ratio_min']} "
                 f"({a['pairs_with_water']} pair(s) with water): {verdict[a['water_passed']]}; "
                 f"corr9 gain over the red band >= {a['corr9_gain_min']}: "
                 f"{verdict[a['corr9_passed']]}")
    return "\n".join(lines)


def write_report(report: dict[str, Any], path: Path) -> Path:
    """The JSON report, atomically (NaN -> null: JSON has no NaN)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json(report, path)  # NaN -> null, atomically: the one JSON report writer
    except OSError as exc:
        raise PipelineError(f"cannot write the report ({exc.strerror or exc})", path=path,
                            hint="choose a writable --json path") from None
    return path

"""Scene-pair evaluation: run the model through the real scene pipeline on optical scenes
that have a co-registered real SAR (VV, dB), and measure what issue 14 accepts a model by.

`ugatit evaluate` scores tiles; this module reads rasters (whole scenes, reflectance
and dB), so it lives in `pipeline/`. Per pair, for VV and (when a VH raster sits beside
the VV) VH:

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
    (0..1, data range 1: PSNR is in dB of that 25 dB range); VH on [-32.5, 0].
(d) the baselines a user would try first (issue 21 item 8), as corr9 with the real SAR:
    red, NIR, NDVI, NDWI (signed), the best of those (largest |mean corr9| on the
    FITTING pairs, sign flipped when negative) and a per-pixel least-squares regression
    of the dB on red, green, blue, NIR, NDVI, NDWI fitted on the FITTING pairs (scene
    pairs, --fit-pair, or a tile dataset's training pairs, --fit-tiles).

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
# Baselines a user would try first (issue 21 item 8; the same definitions as ugatit
# evaluate): single bands and indices, the best of them, a per-pixel linear regression

#: The real SAR's fixed dB range per polarisation for the unit-scale comparisons (the tile
#: builder's defaults: VV as SEN12MS, VH 7.5 dB lower).
POL_DB_RANGES = {"VV": REAL_DB_RANGE, "VH": (-32.5, 0.0)}
#: Single-feature candidates (reflectance bands and indices), in table order.
SINGLE_FEATURES = ("red", "nir", "ndvi", "ndwi")
#: Features of the linear regression: every band as reflectance, then the two indices.
LINEAR_FEATURES = ("red", "green", "blue", "nir", "ndvi", "ndwi")


def features_of(refl: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Reflectance bands (red, green, blue[, nir]) -> those and, with NIR, NDVI and NDWI
    (ugatit.metrics: NDVI = (nir - red) / (nir + red), NDWI = (green - nir) / (green +
    nir); 0 where the sum is 0)."""
    out = dict(refl)
    if "nir" in out:
        out["ndvi"] = metrics.ndvi(out["red"], out["nir"])
        out["ndwi"] = metrics.ndwi(out["green"], out["nir"])
    return out


@dataclass
class FittedPol:
    """The fitted baselines of one polarisation: the linear regression (dB on
    LINEAR_FEATURES, intercept first) and the best single feature with its sign."""

    coef: np.ndarray
    n_pixels: int
    fit_corr9: dict[str, float]
    best: str
    sign: int

    def to_dict(self) -> dict[str, Any]:
        return {"features": list(LINEAR_FEATURES), "n_pixels": self.n_pixels,
                "coef_db": {n: float(c) for n, c in
                            zip(["intercept", *LINEAR_FEATURES], self.coef, strict=True)},
                "fit_corr9": self.fit_corr9, "best_single": self.best, "sign": self.sign}


class _Fitter:
    """Accumulates the fitting pixels and per-pair corr9 of each candidate, per pol."""

    def __init__(self, pols: Sequence[str]) -> None:
        self.lin = {p: metrics.LinearFit(len(LINEAR_FEATURES)) for p in pols}
        self.c9: dict[str, dict[str, list[float]]] = {p: {c: [] for c in SINGLE_FEATURES}
                                                      for p in pols}
        self.n_pairs = 0

    def add(self, pol: str, feats: dict[str, np.ndarray], sar_db: np.ndarray,
            valid: np.ndarray) -> None:
        ok = valid & np.isfinite(sar_db)
        for f in LINEAR_FEATURES:
            ok &= np.isfinite(feats[f])
        self.lin[pol].add(np.stack([feats[f][ok] for f in LINEAR_FEATURES]), sar_db[ok])
        for c in SINGLE_FEATURES:
            v = masked_box_corr(feats[c], sar_db, ok)
            if math.isfinite(v):
                self.c9[pol][c].append(v)

    def solve(self, source: str) -> dict[str, FittedPol]:
        out = {}
        for pol, lin in self.lin.items():
            try:
                coef = lin.solve()
            except ValueError as exc:
                raise InputError(f"fitting pairs, {pol}: {exc}", path=source) from None
            means = {c: float(np.mean(v)) for c, v in self.c9[pol].items() if v}
            if not means:
                raise InputError(f"fitting pairs, {pol}: no 9x9 window with every pixel "
                                 f"valid", path=source)
            best = max(means, key=lambda c: (abs(means[c]), -SINGLE_FEATURES.index(c)))
            out[pol] = FittedPol(coef=coef, n_pixels=lin.n, fit_corr9=means, best=best,
                                 sign=-1 if means[best] < 0 else 1)
        return out


def fit_on_pairs(pairs: Sequence[Pair], opts: OpticalOptions, pols: Sequence[str], *,
                 resample: bool, tmp: Path) -> dict[str, FittedPol]:
    """Fit on scene pairs (read as the report pairs are; NIR needed). A polarisation the
    fitting pairs lack (no VH beside a VV) is not fitted."""
    fitter = _Fitter(pols)
    seen = set()
    for p in pairs:
        read = read_pair(p, opts, tmp, resample, pols)
        if "nir" not in read.refl:
            raise InputError("the fitting pairs need a NIR band (the regression uses NDVI and "
                             "NDWI)", path=p.optical,
                             hint="--band-files R,G,B,NIR or --nir-band")
        feats = features_of(read.refl)
        for pol, db in read.sar_db.items():
            fitter.add(pol, feats, db, read.valid)
            seen.add(pol)
    for pol in set(pols) - seen:
        del fitter.lin[pol], fitter.c9[pol]
    return fitter.solve(", ".join(str(p.optical) for p in pairs))


def fit_on_tiles(dataset: Path, pols: Sequence[str]) -> dict[str, FittedPol]:
    """Fit on the co-registered training tiles of a multiband `pipeline tiles` dataset
    (trainA/trainB, same names; reflectance EO with red, green, blue, nir; SAR in dB by
    dataset.json's ranges): the features and the target are physical (reflectance, dB),
    so the fit applies to scenes."""
    from ugatit import evaluate as ev

    try:
        meta = ev.read_dataset_meta(dataset / "dataset.json")
        fa, fb = ev._same_names(dataset / "trainA", dataset / "trainB")
    except ev.EvaluationError as exc:
        raise InputError(str(exc), path=dataset) from None
    names = meta.common_names or ()
    if meta.reflectance_max is None or not {"red", "green", "blue", "nir"} <= set(names):
        raise InputError("not a reflectance tile set with red, green, blue, nir bands "
                         "(dataset.json eo.method, eo.common_names)", path=dataset,
                         hint="cut it with pipeline tiles --eo-bands red,green,blue,nir "
                         "--eo-scale reflectance")
    tile_pols = list(meta.pols or ("VV",))
    ranges = meta.db_ranges or ([meta.db_range] if meta.db_range else None)
    if not fa or ranges is None or _kind_of(fa[0]) != "tiff":
        raise InputError("no same-name TIFF tiles in trainA/trainB, or no SAR dB range in "
                         "dataset.json", path=dataset,
                         hint="cut co-registered pairs with pipeline tiles --paired")
    use = [p for p in pols if p in tile_pols]
    fitter = _Fitter(use)
    for pa, pb in zip(fa, fb, strict=True):
        try:
            eo, sar = ev.read_arrays([pa])[0], ev.read_arrays([pb])[0].astype(np.float64)
        except ev.EvaluationError as exc:
            raise InputError(str(exc), path=pa) from None
        refl = {n: eo[..., names.index(n)].astype(np.float64) * meta.reflectance_max
                for n in ("red", "green", "blue", "nir")}
        not_fill = np.any(eo != 0, axis=-1)
        feats = features_of(refl)
        for pol in use:
            k = tile_pols.index(pol)
            lo, hi = ranges[k]
            u = sar[..., k]
            edge = 0.5 / 255  # clipped (out of range) or nodata: not the SAR's dB
            fitter.add(pol, feats, lo + u * (hi - lo), not_fill & (u > edge) & (u < 1 - edge))
    return fitter.solve(str(dataset))


def _kind_of(path: Path) -> str:
    return "tiff" if path.suffix.lower() in (".tif", ".tiff") else "png"


@dataclass
class PairRead:
    """One pair's optical (reflectance by band name) and real SAR (dB by polarisation)
    on the optical grid."""

    optical: Path
    rgb: tuple[int, int, int]
    refl: dict[str, np.ndarray]
    valid: np.ndarray
    sar_paths: dict[str, Path]
    sar_db: dict[str, np.ndarray]


def read_pair(pair: Pair, opts: OpticalOptions, tmp: Path, resample: bool,
              pols: Sequence[str] = ("VV",)) -> PairRead:
    optical, rgb, nir_band = resolve_optical(pair.optical, opts, tmp)
    sar_paths = {"VV": resolve_sar(pair.sar)}
    if "VH" in pols:
        vh = find_vh(pair.sar, sar_paths["VV"])
        if vh is not None:
            sar_paths["VH"] = vh
    sar_db = {p: read_sar_on_grid(f, optical, resample) for p, f in sar_paths.items()}
    with rasterio.open(optical) as ds:
        read = (*rgb, nir_band) if nir_band else rgb
        data, valid = read_masked(ds, tuple(read))
    refl = data.astype(np.float64) * opts.reflectance_scale
    names = ("red", "green", "blue", "nir")[:len(read)]
    return PairRead(optical=optical, rgb=rgb, refl=dict(zip(names, refl, strict=True)),
                    valid=valid, sar_paths=sar_paths, sar_db=sar_db)


def find_vh(given: Path, vv: Path) -> Path | None:
    """The VH beside the VV: the one ``*VH.tif`` of the folder given, or the VV file's name
    with its final ``VV`` as ``VH``; None when there is none."""
    if given.is_dir():
        found = sorted(p for p in given.iterdir() if p.suffix.lower() in (".tif", ".tiff")
                       and re.search(r"(^|[_\-.])VH$", p.stem, re.IGNORECASE))
        if len(found) > 1:
            raise InputError(f"{len(found)} *VH.tif files in the folder", path=given,
                             hint="keep one VH raster beside the VV, or --pols VV")
        return found[0] if found else None
    m = re.search(r"VV$", vv.stem, re.IGNORECASE)
    if not m:
        return None
    cand = vv.with_name(vv.stem[:m.start()] + ("VH" if vv.stem[m.start()] == "V" else "vh")
                        + vv.suffix)
    return cand if cand.is_file() else None


def baseline_corr9(feats: dict[str, np.ndarray], sar_db: np.ndarray, valid: np.ndarray,
                   fitted: FittedPol | None) -> tuple[dict[str, float], np.ndarray | None]:
    """corr9 of every single feature (signed), of the best single (sign x its corr9) and of
    the linear regression with the real SAR in dB; and the regression's dB prediction."""
    out = {c: masked_box_corr(feats[c], sar_db, valid) for c in SINGLE_FEATURES if c in feats}
    if fitted is None or "nir" not in feats:
        return out, None
    out["best_single"] = fitted.sign * masked_box_corr(feats[fitted.best], sar_db, valid)
    pred = metrics.linear_predict(fitted.coef, np.stack([feats[f] for f in LINEAR_FEATURES]))
    out["linear"] = masked_box_corr(pred, sar_db, valid)
    return out, pred


# ----------------------------------------------------------------------------------------
# One pair, all pairs

RunScene = Callable[..., Any]


def evaluate_pair(pair: Pair, model: Path | None, settings: dict[str, Any],
                  opts: OpticalOptions, *, resample: bool, tmp: Path, keep: Path | None = None,
                  run_scene: RunScene | None = None, pols: Sequence[str] = ("VV", "VH"),
                  fitted: dict[str, FittedPol] | None = None) -> dict[str, Any]:
    """Every measure of one pair (module docstring), per polarisation (VV, and VH when a
    VH raster sits beside the VV). The model (None: baselines only) runs through
    ``run_scene`` (pipeline.run.scene's, unless a test passes its own) with the user's
    ``settings`` (pipeline run's keys, e.g. device) over the defaults; only the bands and
    output_scale=unit are set here. Output band k is polarisation k (VV, VH)."""
    from pipeline.run.scene import run_scene as _run_scene

    read = read_pair(pair, opts, tmp, resample, pols)
    optical, rgb = read.optical, read.rgb
    h, w = read.valid.shape
    out_all, model_range, out_path = None, None, None
    if model is not None:
        out_path = (keep or tmp) / f"{pair.name}_sar_like.tif"
        source, cfg = _model_input(model, pair, optical, rgb, settings, opts)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", PipelineWarning)
            (run_scene or _run_scene)(source, out_path, model_path=model, config=cfg,
                                      overwrite=True, progress=False)
        with rasterio.open(out_path) as ds:
            out_all = ds.read().astype(np.float64)
        model_range = model_db_range(model, settings)
    feats = features_of(read.refl)
    nir = read.refl.get("nir")
    per_pol: dict[str, dict[str, Any]] = {}
    for k, pol in enumerate(p for p in ("VV", "VH") if p in read.sar_db):
        sar_db = read.sar_db[pol]
        lo, hi = POL_DB_RANGES[pol]
        valid = read.valid & np.isfinite(sar_db)
        has_out = out_all is not None and k < len(out_all)
        if has_out:
            valid &= np.isfinite(out_all[k])
        pr: dict[str, Any] = {"sar": str(read.sar_paths[pol]), "real_db_range": [lo, hi],
                              "real_mean_db": float(np.nanmean(sar_db)),
                              "valid_fraction": float(valid.mean()),
                              "corr9_output": None, "ssim": None, "psnr": None}
        if has_out:
            out_unit = out_all[k]
            rng = model_range if k == 0 else _model_pol_range(model, k, pol)
            out_grid = output_on_real_grid(out_unit, rng, (lo, hi))
            sar_grid = np.clip((sar_db - lo) / (hi - lo), 0.0, 1.0)
            ssim, psnr = ssim_psnr(out_grid, sar_grid, valid)
            pr.update(corr9_output=masked_box_corr(out_grid, sar_db, valid), ssim=ssim,
                      psnr=psnr, output_db_range=list(rng) if rng else None)
        if nir is None:
            pr["water"] = {"ratio": None, "skipped": "no NIR band (--nir-band / a 4th band "
                                                     "file)"}
        elif not has_out:
            pr["water"] = {"ratio": None, "skipped": "no model" if model is None else
                           f"the model's output has no band {k + 1} ({pol})"}
        else:
            pr["water"] = water_land_contrast(out_all[k], sar_db, nir, valid,
                                              real_db_range=(lo, hi))
            rng = model_range if k == 0 else _model_pol_range(model, k, pol)
            if rng is not None and "output_contrast_unit" in pr["water"]:
                pr["water"]["output_contrast_db"] = \
                    pr["water"]["output_contrast_unit"] * (rng[1] - rng[0])
        bl, pred = baseline_corr9(feats, sar_db, valid, (fitted or {}).get(pol))
        pr["baselines"] = bl
        if pred is not None and nir is not None:
            pr["water_linear"] = water_land_contrast(
                np.clip((pred - lo) / (hi - lo), 0.0, 1.0), sar_db, nir, valid,
                real_db_range=(lo, hi))
        per_pol[pol] = pr
    vv = per_pol["VV"]
    corr_red = vv["baselines"]["red"]
    return {
        "name": pair.name, "optical": str(pair.optical), "sar": vv["sar"],
        "output": str(out_path) if keep and out_path else None, "px": [int(w), int(h)],
        "valid_fraction": vv["valid_fraction"],
        "corr9_output": vv["corr9_output"], "corr9_red": corr_red,
        "corr9_gain": None if vv["corr9_output"] is None else vv["corr9_output"] - corr_red,
        "ssim": vv["ssim"], "psnr": vv["psnr"],
        "output_db_range": list(model_range) if model_range else None,
        "real_mean_db": vv["real_mean_db"], "water": vv["water"],
        "polarisations": per_pol,
    }


def _model_input(model: Path, pair: Pair, optical: Path, rgb: tuple[int, int, int],
                 settings: dict[str, Any], opts: OpticalOptions) -> tuple[Path, Any]:
    """What the model runs on, and with which config. An RGB model: the pair's R, G, B
    stack (the VRT of a band folder) with --bands, as always. A multispectral model (its
    contract names its bands, e.g. red, green, blue, nir): the optical input AS GIVEN, so
    `pipeline run` picks its bands by name (a band folder: with the folder's reflectance
    scale; a raster: by band descriptions, with --reflectance-scale declared), exactly
    what a user's `pipeline run` of that input gives."""
    from pipeline.run.model_io import model_io

    base = {**settings, "output_scale": "unit"}
    if not model_io(model).by_name:
        return optical, load_config(None, {**base, "bands": rgb})
    if pair.optical.is_dir():
        return pair.optical, load_config(None, base)
    base.setdefault("reflectance_scale", f"{opts.reflectance_scale!r},0")
    return pair.optical, load_config(None, base)


def _model_pol_range(model: Path | None, k: int, pol: str) -> tuple[float, float] | None:
    """The dB range of the model's output band k > 0: the contract's ``sar.db_ranges[k]``,
    else the tile builder's default for the polarisation."""
    from pipeline.run.plan import model_contract

    if model is None:
        return None
    sar = (model_contract(model) or {}).get("sar") or {}
    ranges = sar.get("db_ranges")
    if isinstance(ranges, list) and len(ranges) > k:
        return (float(ranges[k][0]), float(ranges[k][1]))
    return POL_DB_RANGES[pol]


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


def evaluate_pairs(pairs: Sequence[Pair], model: Path | None, settings: dict[str, Any] | None,
                   opts: OpticalOptions, *, resample: bool = False, keep: Path | None = None,
                   log: Callable[[str], None] = lambda s: None,
                   run_scene: RunScene | None = None, pols: Sequence[str] = ("VV", "VH"),
                   fit_pairs: Sequence[Pair] = (), fit_tiles: Path | None = None
                   ) -> dict[str, Any]:
    """Evaluate every pair; the report: per pair, the means, and issue 14's acceptance.

    ``model`` None: the baselines only. The fitted baselines (best single, linear) are
    fitted on ``fit_pairs`` (scene pairs) or on ``fit_tiles`` (a multiband tile dataset's
    training pairs), never on the pairs reported; without either they are left out."""
    if not pairs:
        raise InputError("no pair given", hint="--pair OPTICAL SAR (repeatable)")
    if fit_pairs and fit_tiles is not None:
        raise InputError("give --fit-pair or --fit-tiles, not both")
    names = [p.name for p in pairs]
    if len(set(names)) != len(names):  # outputs are named after the pair
        pairs = [Pair(p.optical, p.sar, f"{i:02d}_{p.name}") for i, p in enumerate(pairs)]
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
    notes: list[str] = []
    overlap = sorted({str(p.optical.resolve()) for p in pairs}
                     & {str(p.optical.resolve()) for p in fit_pairs})
    if overlap:
        notes.append(f"{len(overlap)} report pair(s) also among the fitting pairs: the fitted "
                     f"baselines are optimistic there")
    rows = []
    with tempfile.TemporaryDirectory(prefix="eo2sar_pairs_") as tmp:
        fitted, fit_source = None, None
        if fit_pairs:
            fitted = fit_on_pairs(fit_pairs, opts, pols, resample=resample, tmp=Path(tmp))
            fit_source = f"{len(fit_pairs)} scene pair(s) (--fit-pair)"
        elif fit_tiles is not None:
            fitted = fit_on_tiles(fit_tiles, pols)
            fit_source = f"{fit_tiles}/trainA + trainB, same-name tiles (--fit-tiles)"
        for p in pairs:
            rows.append(evaluate_pair(p, model, settings or {}, opts, resample=resample,
                                      tmp=Path(tmp), keep=keep, run_scene=run_scene, pols=pols,
                                      fitted=fitted))
            log(f"{p.name}: corr9 {_fmt(rows[-1]['corr9_output'])} "
                f"(red {rows[-1]['corr9_red']:.3f})")
    ratios = [r["water"].get("ratio") for r in rows]
    mean = {k: _mean([r[k] for r in rows])
            for k in ("corr9_output", "corr9_red", "corr9_gain", "ssim", "psnr")}
    mean["water_ratio"] = _mean(ratios)
    mean["polarisations"] = {}
    for pol in ("VV", "VH"):
        prs = [r["polarisations"][pol] for r in rows if pol in r["polarisations"]]
        if not prs:
            continue
        keys = sorted({k for pr in prs for k in pr["baselines"]},
                      key=lambda k: (SINGLE_FEATURES + ("best_single", "linear")).index(k))
        mean["polarisations"][pol] = {
            "n_pairs": len(prs),
            "corr9_output": _mean([pr["corr9_output"] for pr in prs]),
            "ssim": _mean([pr["ssim"] for pr in prs]), "psnr": _mean([pr["psnr"] for pr in prs]),
            "baselines": {k: _mean([pr["baselines"].get(k) for pr in prs]) for k in keys},
            "water_ratio": _mean([pr["water"].get("ratio") for pr in prs]),
            "water_ratio_linear": _mean([(pr.get("water_linear") or {}).get("ratio")
                                         for pr in prs]),
        }
    if fitted is None:
        notes.append("no fitting pairs (--fit-pair OPTICAL SAR, or --fit-tiles DATASET): "
                     "best-single and linear baselines not computed")
    elif any("nir" not in r["polarisations"]["VV"]["baselines"] for r in rows):
        notes.append("pairs without NIR: no NIR/NDVI/NDWI, best-single or linear baseline "
                     "for them")
    n_water = sum(v is not None for v in ratios)
    return {
        "tool": "pipeline evaluate-pairs",
        "model": str(model) if model is not None else None,
        "definitions": {"water": f"NIR reflectance < {WATER_NIR} (reflectance = DN x "
                                 f"{opts.reflectance_scale})",
                        "min_class_fraction": MIN_CLASS_FRACTION,
                        "real_db_range": list(REAL_DB_RANGE), "box_px": metrics.BOX,
                        "real_db_ranges": {p: list(r) for p, r in POL_DB_RANGES.items()},
                        "baselines": BASELINE_DEFINITIONS},
        "fit": None if fitted is None else {
            "source": fit_source, **{pol: f.to_dict() for pol, f in fitted.items()}},
        "pairs": rows,
        "mean": mean,
        "notes": notes,
        "acceptance": {
            "water_ratio_min": ACCEPT_WATER_RATIO, "pairs_with_water": n_water,
            "water_passed": None if mean["water_ratio"] is None
            else mean["water_ratio"] >= ACCEPT_WATER_RATIO,
            "corr9_gain_min": ACCEPT_CORR_GAIN,
            "corr9_passed": None if mean["corr9_gain"] is None
            else mean["corr9_gain"] >= ACCEPT_CORR_GAIN,
        },
    }


#: What each baseline is (the report's ``definitions.baselines``; docs/evaluation.md).
BASELINE_DEFINITIONS = {
    "red": "red reflectance (the optical image itself)",
    "nir": "NIR reflectance",
    "ndvi": "(nir - red) / (nir + red)",
    "ndwi": "(green - nir) / (green + nir); water positive, so it correlates NEGATIVELY "
            "with SAR backscatter",
    "best_single": "of red, nir, ndvi, ndwi the one with the largest |mean corr9| on the "
                   "FITTING pairs, times the sign of that mean (a user would take -ndwi); "
                   "the value is sign x the feature's corr9 on the pair",
    "linear": "least squares with intercept of the polarisation's dB on red, green, blue, "
              "nir (reflectance), ndvi, ndwi, per pixel, fitted on the FITTING pairs",
}


def _fmt(v: Any, fmt: str = "{:.3f}") -> str:
    return "-" if v is None or (isinstance(v, float) and not math.isfinite(v)) else fmt.format(v)


def _grid_lines(cells: list[list[str]], rule_before_last: bool = False) -> list[str]:
    widths = [max(len(c[i]) for c in cells) for i in range(len(cells[0]))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                       for i, (c, w) in enumerate(zip(row, widths, strict=True)))
             for row in cells]
    lines.insert(1, "-" * len(lines[0]))
    if rule_before_last:
        lines.insert(-1, "-" * len(lines[0]))
    return lines


def format_table(report: dict[str, Any]) -> str:
    """Per pair and mean: corr9 of model and red band, gain, SSIM, PSNR, water ratio (with a
    model); then corr9 of every baseline per polarisation, and the water ratios."""
    lines: list[str] = []
    if report.get("model") is not None:
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
                      _fmt(m["corr9_gain"], "{:+.3f}"), _fmt(m["ssim"]),
                      _fmt(m["psnr"], "{:.2f}"), "", _fmt(m["water_ratio"])])
        lines += _grid_lines(cells, rule_before_last=True)
        for r in report["pairs"]:
            if r["water"].get("skipped"):
                lines.append(f"water check skipped for {r['name']}: {r['water']['skipped']}")
        lines.append("")
    fit = report.get("fit") or {}
    cols = ["red", "nir", "ndvi", "ndwi", "best_single", "linear"]
    head = ["pol", "pair", "model", *[c.replace("_", " ") for c in cols], "water model",
            "water linear"]
    cells = [head]
    for pol, m in report["mean"]["polarisations"].items():
        for r in report["pairs"]:
            pr = r["polarisations"].get(pol)
            if pr is None:
                continue
            cells.append([pol, r["name"], _fmt(pr["corr9_output"]),
                          *[_fmt(pr["baselines"].get(c)) for c in cols],
                          _fmt(pr["water"].get("ratio")),
                          _fmt((pr.get("water_linear") or {}).get("ratio"))])
        cells.append([pol, "mean", _fmt(m["corr9_output"]),
                      *[_fmt(m["baselines"].get(c)) for c in cols], _fmt(m["water_ratio"]),
                      _fmt(m["water_ratio_linear"])])
    lines.append("corr9 with the real SAR in dB (9x9 box-filtered), per polarisation; water: "
                 "(land - water) / the real SAR's, NIR < 4 % is water")
    lines += _grid_lines(cells)
    for pol in ("VV", "VH"):
        if pol in fit:
            f = fit[pol]
            lines.append(f"best single {pol}: {'-' if f['sign'] < 0 else ''}{f['best_single']} "
                         f"(|mean corr9| on the fitting pairs: "
                         f"{', '.join(f'{k} {v:+.3f}' for k, v in f['fit_corr9'].items())})")
    if fit:
        lines.append(f"linear: dB ~ red, green, blue, nir, ndvi, ndwi (least squares with "
                     f"intercept) fitted on {fit['source']}")
    lines += [f"note: {n}" for n in report.get("notes", [])]
    if report.get("model") is not None:
        a = report["acceptance"]
        verdict = {True: "PASS", False: "FAIL", None: "not measured"}
        lines.append(f"issue 14: water ratio >= {a['water_ratio_min']} "
                     f"({a['pairs_with_water']} pair(s) with water): "
                     f"{verdict[a['water_passed']]}; corr9 gain over the red band >= "
                     f"{a['corr9_gain_min']}: {verdict[a['corr9_passed']]}")
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

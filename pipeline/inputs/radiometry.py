"""Radiometry: THE place where EO input scaling is decided, for every entry point.

`python -m pipeline run` (pipeline/run/scene.py, pipeline/run/inference.py), `python -m pipeline
tiles` (training tiles), `python -m pipeline quicklook` and `app.py` all call the functions
below, so one model is fed the same numbers whichever command runs it, and a model is fed
at run time what it saw in training (DESIGN.md, invariants 2 and 8).

THE RULE (scale "auto", the default; also recorded as `EO_RULE` in checkpoints):
  * uint8 input: x / 255, never stretched. The network was trained on 8-bit images as
    they are; stretching them would feed it a contrast it never saw.
  * any other dtype: a PER-BAND 2-98 % percentile stretch (percentiles from the model's
    radiometric contract when it has one), computed ONCE per image/scene over its valid
    pixels (a decimated read of the whole scene, at most `stats_size` px on the longer
    side). Never per tile: a per-tile stretch gives every tile its own brightness and
    the mosaic a checkerboard. Per band rather than one pair of limits for all bands:
    16-bit sensors have very different ranges per band (Landsat 8 blue sits far above
    red over land), so one pair would tint every scene blue; per band is also what the
    pipeline always did, so its outputs stay as they were.
  * fill: a pixel that is 0 in EVERY selected band of non-uint8 data is fill, i.e.
    INVALID (the collar of Landsat, Sentinel-2 and most 16-bit products, which rarely
    carry a nodata tag). It is left out of the statistics and its output is nodata, so
    `--nodata 0` is no longer needed for such scenes. uint8 black (0, 0, 0) stays valid:
    8-bit images keep the seed's behaviour, and dark 8-bit pixels are real.
  * invalid pixels (fill, nodata, masks, alpha, NaN) enter the network as unit 0 (black,
    -1 in the model range): what a training tile holds there (an 8-bit PNG has no mask;
    its invalid pixels are 0), what 8-bit products show around scenes, and what app.py
    always did with alpha. Their outputs are nodata anyway.
Other modes (`PipelineConfig.scale`): fixed - per-band (or one for all bands) min/max from
the config (e.g. values a model was trained with); none - data already reflectance in
[0, 1]; reflectance - a PHYSICAL scale, the same for every scene: each band's values
become surface (or TOA) reflectance by the product's own linear scale and offset
(Sentinel-2 (DN + offset) / 10000, Landsat C2 L2 2.75e-5 x DN - 0.2; recorded as GDAL
band Scale/Offset by the product readers, or declared by the user), and reflectance
[0, 0.5] maps to [0, 1] (`REFLECTANCE_RANGE`; the contract records it). So "NIR below
4 %" is the same input number in every scene, which a per-scene stretch cannot give:
a stretch maps a scene's darkest 2 % to 0 whether it is a lake or a dark forest.
In every mode the result is clipped to [0, 1] and mapped to [-1, 1].

Validity: a pixel is valid when
  * rasterio's mask says so for AT LEAST ONE selected band (nodata value, internal mask
    or alpha band; "any band" is GDAL's own dataset-mask rule for nodata, so a pure red
    pixel (255, 0, 0) with nodata 0 stays valid), and
  * no selected band is NaN (NaN cannot go through the network), and
  * when a nodata value is declared by the user (`nodata`), not every selected band
    equals it. The declared value REPLACES the file's nodata tag (the user knows
    better), while internal masks and alpha bands still apply, and
  * for non-uint8 data, not every selected band is 0 (fill, above).

The model's contract: a trained checkpoint carries the radiometry of its training data
(`ugatit.load_checkpoint(p).radiometry`, schema in `eo_contract` below); `resolve_radiometry`
decides, once, whether each model-dependent setting (EO percentiles, SAR dB range) comes
from a flag, the config file, the model or the built-in default.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import rasterio
from rasterio.enums import MaskFlags, Resampling
from rasterio.windows import Window, subdivide

from pipeline.errors import ConfigError, InputError, ModelError

# When neither flag, config nor model sets them: the percentiles of the non-uint8 stretch
# and the SAR dB range (the model's contract defaults live with the model config).
from ugatit.config import DEFAULT_PERCENTILES, DEFAULT_SAR_DB_RANGE

#: Reflectance mapped to unit 0..1 by scale "reflectance": bright soil, sand and
#: vegetation NIR stay below 0.5; clouds and snow clip (they are no SAR signal anyway).
REFLECTANCE_RANGE = (0.0, 0.5)
SUPPORTED_DTYPES = ("uint8", "uint16", "int16", "float32", "float64")
MIN_STATS_SAMPLES = 256  # below this, the decimated read is too sparse: re-read full res
MAX_FULLRES_SAMPLES = 4_000_000  # cap of the full-resolution fallback (memory bound)
SCAN_BLOCK = 1024  # px: windows of the rare full-resolution scans (their memory bound)
#: One line that says the rule above; written into dataset.json and checkpoints.
EO_RULE = (
    "uint8: x/255, never stretched; other dtypes: per-band percentile stretch computed once "
    "per scene over valid pixels (pixels 0 in every band are fill: invalid); invalid -> 0"
)


@dataclass(frozen=True)
class Scaling:
    """How input values map to [0, 1]: per band `(x - low) / (high - low)`, clipped."""

    method: str  # "uint8" | "percentile" | "fixed" | "none" | "reflectance" | "empty"
    low: tuple[float, ...]
    high: tuple[float, ...]
    percentiles: tuple[float, float] | None = None
    samples: int = 0  # valid pixels the statistics were computed from

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "low": list(self.low),
            "high": list(self.high),
            "percentiles": None if self.percentiles is None else list(self.percentiles),
            "samples": self.samples,
        }


def select_bands(
    count: int, bands: tuple[int, ...] | None, path: str, dtypes: tuple[str, ...] = ()
) -> tuple[int, ...]:
    """Check the band selection against the file; None means "a 3-band file as is"."""
    if bands is None:
        if count != 3:
            raise InputError(
                f"has {count} band(s); the model needs 3 (RGB)",
                path=path,
                hint=(
                    "choose three with --bands, e.g. --bands 3,2,1 for B,G,R order or "
                    "--bands 1,1,1 for a single band"
                ),
            )
        bands = (1, 2, 3)
    if len(bands) != 3:
        raise ConfigError(
            f"--bands needs exactly 3 band numbers, got {len(bands)}",
            path=path,
            hint="give three 1-based band numbers in R,G,B order, e.g. --bands 3,2,1",
        )
    bad = [b for b in bands if not 1 <= b <= count]
    if bad:
        raise InputError(
            f"has {count} band(s), band(s) {', '.join(map(str, bad))} asked for",
            path=path,
            hint=f"band numbers are 1-based and at most {count}",
        )
    for b in bands:
        if dtypes and dtypes[b - 1] not in SUPPORTED_DTYPES:
            raise InputError(
                f"band {b} has dtype {dtypes[b - 1]}, not supported",
                path=path,
                hint="convert it first, e.g. gdal_translate -ot Float32 in.tif out.tif",
            )
    return tuple(bands)


def _use_gdal_mask(ds: rasterio.io.DatasetReader, band: int, nodata: float | None) -> bool:
    flags = ds.mask_flag_enums[band - 1]
    if MaskFlags.all_valid in flags:
        return False
    if nodata is not None and MaskFlags.nodata in flags:
        return False  # the user's nodata replaces the file's tag
    return True


def read_masked(
    ds: rasterio.io.DatasetReader,
    bands: tuple[int, ...],
    window: Window | None = None,
    *,
    nodata: float | None = None,
    out_shape: tuple[int, int] | None = None,
    zero_fill: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Read `bands` in `window` (optionally decimated to `out_shape`) with validity.

    Returns (data [C, H, W] in the file dtype, valid [H, W] bool). Reads are nearest
    neighbour so decimated values are real pixel values (for statistics). `zero_fill`:
    the EO fill rule of the module docstring (pass False for rasters that are not EO
    input, e.g. a SAR-like output whose 0 dB is a real value).
    """
    kwargs: dict[str, Any] = {"window": window}
    if out_shape is not None:
        kwargs["out_shape"] = (len(bands), *out_shape)
        kwargs["resampling"] = Resampling.nearest
    data = ds.read(list(bands), **kwargs)
    mask_bands = [b for b in bands if _use_gdal_mask(ds, b, nodata)]
    if len(mask_bands) == len(bands):
        if out_shape is not None:
            kwargs["out_shape"] = (len(bands), *out_shape)
        masks = ds.read_masks(list(bands), **kwargs)
        valid = (masks != 0).any(axis=0)
    else:
        # at least one band counts as valid everywhere -> "any band valid" is all True,
        # except for alpha/internal masks, which apply to every band alike
        valid = np.ones(data.shape[1:], dtype=bool)
        per_dataset = [
            b for b in mask_bands if MaskFlags.per_dataset in ds.mask_flag_enums[b - 1]
        ]
        if per_dataset:
            if out_shape is not None:
                kwargs["out_shape"] = (1, *out_shape)
            valid &= ds.read_masks([per_dataset[0]], **kwargs)[0] != 0
    valid &= valid_from_values(data, nodata, zero_fill=zero_fill)
    return data, valid


def valid_from_values(
    data: np.ndarray, nodata: float | None, *, zero_fill: bool = True
) -> np.ndarray:
    """Validity implied by the values of [C, H, W] alone: no NaN, not all bands == the
    declared nodata, and (`zero_fill`, non-uint8 data only) not all bands == 0."""
    valid = np.ones(data.shape[1:], dtype=bool)
    if data.dtype.kind == "f":
        valid &= ~np.isnan(data).any(axis=0)
    if nodata is not None and not math.isnan(nodata):
        valid &= ~(data == nodata).all(axis=0)
    if zero_fill and data.dtype != np.uint8:
        valid &= (data != 0).any(axis=0)
    return valid


def decimated_shape(width: int, height: int, max_size: int) -> tuple[int, int]:
    """(rows, cols) of a read whose longer side is at most `max_size` px."""
    factor = max(1.0, max(width, height) / max_size)
    return max(1, round(height / factor)), max(1, round(width / factor))


def compute_scaling(
    ds: rasterio.io.DatasetReader,
    bands: tuple[int, ...],
    *,
    scale: str = "auto",
    percentiles: tuple[float, float] = DEFAULT_PERCENTILES,
    fixed_min: tuple[float, ...] | None = None,
    fixed_max: tuple[float, ...] | None = None,
    nodata: float | None = None,
    stats_size: int = 1024,
    reflectance: Sequence[tuple[float, float]] | None = None,
    reflectance_range: tuple[float, float] = REFLECTANCE_RANGE,
) -> Scaling:
    """The scene's global scaling (see module docstring); bounded memory.

    scale "reflectance": `reflectance` gives each band's (scale, offset) to reflectance
    (`band_reflectance` finds them); no pixel is read.

    A percentile stretch reads the scene decimated to at most `stats_size` px on the
    longer side; if that sample holds fewer than MIN_STATS_SAMPLES valid pixels (a scene
    almost all nodata), it re-reads at full resolution block by block, keeping at most
    MAX_FULLRES_SAMPLES values. method "empty" means the scene has no valid pixel.
    """
    n = len(bands)
    dtypes = {ds.dtypes[b - 1] for b in bands}
    if scale == "none":
        return Scaling("none", (0.0,) * n, (1.0,) * n)
    if scale == "fixed":
        if fixed_min is None or fixed_max is None:
            raise ConfigError("scale=fixed needs fixed_min and fixed_max", path="config")
        if len(fixed_min) not in (1, n):
            raise ConfigError(
                f"fixed_min/fixed_max have {len(fixed_min)} values for {n} bands",
                path="config",
                hint="give one value for all bands or one per selected band",
            )
        lo = tuple(fixed_min) * (n if len(fixed_min) == 1 else 1)
        hi = tuple(fixed_max) * (n if len(fixed_max) == 1 else 1)
        return Scaling("fixed", tuple(map(float, lo)), tuple(map(float, hi)))
    if scale == "auto" and dtypes == {"uint8"}:
        return Scaling("uint8", (0.0,) * n, (255.0,) * n)
    if scale == "reflectance":
        if reflectance is None or len(reflectance) != n:
            raise ConfigError("scale=reflectance needs each band's scale and offset",
                              path="config", hint="see band_reflectance")
        return reflectance_scaling(reflectance, reflectance_range)

    rows, cols = decimated_shape(ds.width, ds.height, stats_size)
    data, valid = read_masked(ds, bands, nodata=nodata, out_shape=(rows, cols))
    samples = data[:, valid]
    if samples.shape[1] < MIN_STATS_SAMPLES and (rows, cols) != (ds.height, ds.width):
        samples = _fullres_samples(ds, bands, nodata)
    return scaling_from_samples(samples, percentiles)


def reflectance_scaling(reflectance: Sequence[tuple[float, float]],
                        reflectance_range: tuple[float, float] = REFLECTANCE_RANGE) -> Scaling:
    """Scaling "reflectance" as per-band DN limits: reflectance = scale x DN + offset, and
    reflectance `reflectance_range` -> unit [0, 1], so low = (lo - offset) / scale and
    high = (hi - offset) / scale (scale_to_unit then does the rest, as for any mode)."""
    lo, hi = reflectance_range
    low, high = [], []
    for scale, offset in reflectance:
        if not (scale > 0 and math.isfinite(scale) and math.isfinite(offset)):
            raise ConfigError(f"reflectance scale {scale:g} / offset {offset:g} is not a "
                              "valid linear map", path="--reflectance-scale",
                              hint="e.g. 0.0001 for Sentinel-2 DN, 0.0000275,-0.2 for "
                              "Landsat Collection 2 Level-2")
        low.append((lo - offset) / scale)
        high.append((hi - offset) / scale)
    return Scaling("reflectance", tuple(low), tuple(high))


def band_reflectance(ds: rasterio.io.DatasetReader, bands: tuple[int, ...], path: str,
                     declared: tuple[float, float] | None = None
                     ) -> list[tuple[float, float]]:
    """Each selected band's (scale, offset) to reflectance: `declared` by the user (one
    pair for all bands: --reflectance-scale), else the raster's GDAL band Scale/Offset
    (written by the product readers: Sentinel-2 SAFE, Landsat C2, band folders), else
    unknown: an InputError, because a reflectance-trained model fed a stretch or raw DN
    would be given numbers it never saw."""
    if declared is not None:
        return [(float(declared[0]), float(declared[1]))] * len(bands)
    scales = [float(ds.scales[b - 1]) for b in bands]
    offsets = [float(ds.offsets[b - 1]) for b in bands]
    if all(sc == 1.0 for sc in scales) and all(o == 0.0 for o in offsets):
        raise InputError(
            "reflectance scale unknown: the raster does not say how its values become "
            "reflectance (no band Scale/Offset), and a reflectance model must not be fed "
            "a guess",
            path=path,
            hint="give a Sentinel-2 SAFE, a Landsat Collection 2 folder, a band folder or "
            "a STAC Item (they carry the scale), or declare it: --reflectance-scale 0.0001 "
            "for Sentinel-2 DN (x 10000), --reflectance-scale 0.0000275,-0.2 for Landsat "
            "C2 Level-2",
        )
    return list(zip(scales, offsets, strict=True))


def scaling_from_samples(samples: np.ndarray, percentiles: tuple[float, float]) -> Scaling:
    """The percentile stretch of valid values `samples` [C, N] (method "empty" if N == 0).

    The statistics step of `compute_scaling`, for callers that hold an image in memory
    (app.py, quicklook): the same numbers from the same pixels.
    """
    n = samples.shape[0]
    if samples.shape[1] == 0:
        return Scaling("empty", (0.0,) * n, (1.0,) * n, percentiles=percentiles)
    lo_q, hi_q = np.percentile(samples.astype(np.float64), percentiles, axis=1)
    low: list[float] = []
    high: list[float] = []
    for a, b in zip(lo_q.tolist(), hi_q.tolist(), strict=True):
        if not b > a:  # a flat band: map its value to 0 and anything above up
            b = a + (1.0 if float(a).is_integer() else max(abs(a) * 1e-6, 1e-12))
        low.append(float(a))
        high.append(float(b))
    return Scaling(
        "percentile", tuple(low), tuple(high), percentiles=percentiles, samples=samples.shape[1]
    )


def image_scaling(
    data: np.ndarray, valid: np.ndarray, percentiles: tuple[float, float] = DEFAULT_PERCENTILES
) -> Scaling:
    """Scale "auto" of an image held in memory ([C, H, W], validity from `read_masked` or
    `valid_from_values`): uint8 -> /255, else the percentile stretch over valid pixels."""
    n = data.shape[0]
    if data.dtype == np.uint8:
        return Scaling("uint8", (0.0,) * n, (255.0,) * n)
    return scaling_from_samples(data[:, valid], percentiles)


def _fullres_samples(
    ds: rasterio.io.DatasetReader, bands: tuple[int, ...], nodata: float | None
) -> np.ndarray:
    """Valid pixel values at full resolution, block by block, at most MAX_FULLRES_SAMPLES."""
    step = max(1, math.ceil(ds.width * ds.height / MAX_FULLRES_SAMPLES))
    chunks: list[np.ndarray] = []
    for win in subdivide(Window(0, 0, ds.width, ds.height), SCAN_BLOCK, SCAN_BLOCK):
        data, valid = read_masked(ds, bands, win, nodata=nodata)
        values = data[:, valid]
        if values.shape[1]:
            chunks.append(values[:, ::step])
    if not chunks:
        return np.zeros((len(bands), 0))
    return np.concatenate(chunks, axis=1)


def scene_is_empty(ds: rasterio.io.DatasetReader, bands: tuple[int, ...], scaling: Scaling,
                   *, nodata: float | None = None, stats_size: int = 1024) -> bool:
    """Whether the scene has no valid pixel, given the scaling already computed for it: a
    percentile scaling was computed FROM valid pixels (no second read); uint8 / fixed /
    none scalings read no pixel, so `has_valid_pixel` looks."""
    if scaling.method == "empty":
        return True
    if scaling.method == "percentile":
        return False
    return not has_valid_pixel(ds, bands, nodata=nodata, stats_size=stats_size)


def has_valid_pixel(
    ds: rasterio.io.DatasetReader,
    bands: tuple[int, ...],
    *,
    nodata: float | None = None,
    stats_size: int = 1024,
) -> bool:
    """Whether any pixel of the scene is valid: a decimated read first, then (only if it
    saw none) a full-resolution scan block by block that stops at the first valid one."""
    rows, cols = decimated_shape(ds.width, ds.height, stats_size)
    _, valid = read_masked(ds, bands, nodata=nodata, out_shape=(rows, cols))
    if valid.any():
        return True
    if (rows, cols) == (ds.height, ds.width):
        return False
    scan = subdivide(Window(0, 0, ds.width, ds.height), SCAN_BLOCK, SCAN_BLOCK)
    return any(read_masked(ds, bands, win, nodata=nodata)[1].any() for win in scan)


def scale_to_unit(data: np.ndarray, scaling: Scaling) -> np.ndarray:
    """[C, H, W] raw values -> float32 [0, 1], per band, clipped; NaN -> 0."""
    low = np.asarray(scaling.low, dtype=np.float64)[:, None, None]
    high = np.asarray(scaling.high, dtype=np.float64)[:, None, None]
    out = (data.astype(np.float64) - low) / (high - low)
    np.clip(out, 0.0, 1.0, out=out)
    np.nan_to_num(out, copy=False, nan=0.0)
    return out.astype(np.float32)


def unit_to_model(x: np.ndarray) -> np.ndarray:
    """[0, 1] -> [-1, 1] (the seed's mean 0.5 / std 0.5 normalisation)."""
    return (x * np.float32(2.0) - np.float32(1.0)).astype(np.float32)


def to_unit(data: np.ndarray, valid: np.ndarray, scaling: Scaling) -> np.ndarray:
    """Raw [C, H, W] + validity -> float32 [C, H, W] in [0, 1], invalid pixels 0 (black).

    What every entry point feeds the model, before the [-1, 1] mapping: a training tile is
    `round(255 * to_unit(...))`, a quicklook panel the same, app.py resizes it in float.
    """
    x = scale_to_unit(data, scaling)
    x[:, ~valid] = 0.0
    return x


def to_model_input(data: np.ndarray, valid: np.ndarray, scaling: Scaling) -> np.ndarray:
    """Raw [C, H, W] + validity -> float32 [C, H, W] in [-1, 1], invalid pixels -1."""
    return unit_to_model(to_unit(data, valid, scaling))


# ---------------------------------------------------------------------------------------
# The model's radiometric contract

#: Settings a model's contract may fix: name -> (contract section, key).
CONTRACT_KEYS = {"percentiles": ("eo", "percentiles"), "db_range": ("sar", "db_range")}


def eo_contract(bands: tuple[int, ...] | None, percentiles: tuple[float, float]) -> dict[str, Any]:
    """The "eo" part of a radiometric contract (dataset.json -> checkpoint), e.g.
    ``{"method": "auto", "percentiles": [2.0, 98.0], "bands": [3, 2, 1], "rule": EO_RULE}``.
    """
    return {
        "method": "auto",
        "percentiles": [float(p) for p in percentiles],
        "bands": None if bands is None else [int(b) for b in bands],
        "rule": EO_RULE,
    }


def _contract_pair(value: Any, what: str, source: str) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ModelError(
            f"radiometric contract: {what} is {value!r}, not two numbers",
            path=source,
            hint="re-save the checkpoint with a valid radiometry, or set the value with a flag",
        ) from None
    ok = 0.0 <= lo < hi <= 100.0 if what == "eo.percentiles" else lo < hi
    if not ok:
        raise ModelError(
            f"radiometric contract: {what} [{lo:g}, {hi:g}] is not a valid range",
            path=source,
            hint="re-save the checkpoint with a valid radiometry, or set the value with a flag",
        )
    return lo, hi


def model_values(contract: Mapping[str, Any] | None, source: str) -> dict[str, tuple[float, float]]:
    """What a model's contract fixes, validated: {"percentiles": .., "db_range": ..}.

    A seed checkpoint has no contract ({}), and a contract may leave a value out. An EO
    method other than "auto" or "reflectance" is refused: it would feed the model input
    it never saw.
    """
    if not contract:
        return {}
    eo = contract.get("eo") or {}
    method = eo.get("method", "auto") if isinstance(eo, Mapping) else "auto"
    if method not in (None, "auto", "reflectance"):
        raise ModelError(
            f"radiometric contract: EO method {method!r} is unknown to this eo2sar",
            path=source,
            hint="methods 'auto' (uint8 /255, else a percentile stretch) and 'reflectance' "
            "are supported",
        )
    out: dict[str, tuple[float, float]] = {}
    for name, (section, key) in CONTRACT_KEYS.items():
        part = contract.get(section)
        if isinstance(part, Mapping) and part.get(key) is not None:
            out[name] = _contract_pair(part[key], f"{section}.{key}", source)
    return out


def is_relative_db(contract: Mapping[str, Any] | None) -> bool:
    """True when the model learned RELATIVE backscatter (dataset.json's
    `sar.db_scale: relative`): its outputs have no one dB range to map back to."""
    sar = (contract or {}).get("sar")
    return isinstance(sar, Mapping) and sar.get("db_scale") == "relative"


def check_absolute_db(contract: Mapping[str, Any] | None, source: str) -> None:
    """Refuse to invent a dB scale for a model that learned RELATIVE backscatter.

    A model trained on SAR tiles stretched per scene ("auto" ranges, e.g. uncalibrated
    Sentinel-1 DN^2) or on scenes of differing ranges has no one dB range its outputs map
    back to (dataset.json records `sar.db_scale: relative` and no `db_range`); the default
    [-25, 0] would label its output with numbers it never meant.
    """
    if is_relative_db(contract):
        raise ModelError(
            "--output-scale db: this model was trained on SAR with per-scene dB ranges "
            "(relative backscatter), so its output has no absolute dB scale",
            path=source,
            hint="pass --db-range LO,HI to choose the dB range yourself, or use "
            "--output-scale unit",
        )


def resolve_radiometry(
    given: Mapping[str, tuple[Any, str]],
    contract: Mapping[str, Any] | None,
    source: str = "checkpoint",
) -> dict[str, tuple[tuple[float, float], str]]:
    """Decide each model-dependent setting ONCE: {name: (value, origin)}.

    `given` maps a name of CONTRACT_KEYS to (value or None, "flag" | "config"). A value
    set by the user wins; else the model's contract; else the built-in default. Origins:
    "flag", "config", "model", "default" (recorded in outputs, printed by app.py).
    """
    defaults = {"percentiles": DEFAULT_PERCENTILES, "db_range": DEFAULT_SAR_DB_RANGE}
    model = model_values(contract, source)
    out: dict[str, tuple[tuple[float, float], str]] = {}
    for name in CONTRACT_KEYS:
        value, origin = given.get(name, (None, ""))
        if value is not None:
            out[name] = (tuple(value), origin or "config")
        elif name in model:
            out[name] = (model[name], "model")
        else:
            out[name] = (tuple(defaults[name]), "default")
    return out


# ---------------------------------------------------------------------------------------
# SAR targets
#
# The B domain of the training tiles: one polarisation band of a SAR scene, as backscatter
# in dB, clipped to a dB range and scaled linearly to 0..255 (replicated to 3 channels by
# the tile writer). Linear intensity (power) becomes dB by 10 log10; a value <= 0 or NaN
# has no dB and is invalid. The default range [-25, 0] dB is the SEN12MS convention for
# calibrated sigma0; VH users pass [-32.5, 0]. "auto" ranges are per-scene 2-98 %
# percentiles of the valid dB values: needed for UNCALIBRATED data (e.g. Sentinel-1 DN^2,
# 30-50 dB), which a fixed [-25, 0] would turn all white. The range used is recorded per
# scene, so that `--output-scale db` can map model outputs back to dB.

SAR_UNITS = ("linear", "db")
SAR_AUTO_PERCENTILES = (2.0, 98.0)


def sar_to_db(values: np.ndarray, units: str) -> tuple[np.ndarray, np.ndarray]:
    """SAR values -> (dB as float64, valid mask). `units` is "linear" or "db".

    Linear intensity: 10 log10(x), valid where x > 0 and finite (log of 0 or a negative
    power is not a backscatter). dB: passed through unchanged, valid where finite.
    """
    if units not in SAR_UNITS:
        raise ConfigError(
            f"unknown SAR units {units!r}", path="--sar-units", hint="use linear or db"
        )
    x = np.asarray(values, dtype=np.float64)
    valid = np.isfinite(x)
    if units == "db":
        return np.where(valid, x, 0.0), valid
    valid &= x > 0
    db = np.zeros_like(x)
    db[valid] = 10.0 * np.log10(x[valid])
    return db, valid


def sar_db_range_auto(
    db: np.ndarray, valid: np.ndarray, percentiles: tuple[float, float] = SAR_AUTO_PERCENTILES
) -> tuple[float, float] | None:
    """Per-scene (low, high) dB percentiles of the valid values; None if none is valid.

    A flat scene gets a 1 dB wide range (low, low + 1) so that scaling never divides by 0.
    """
    samples = db[valid]
    if samples.size == 0:
        return None
    lo, hi = (float(v) for v in np.percentile(samples, percentiles))
    if not hi > lo:
        hi = lo + 1.0
    return lo, hi


def sar_db_to_unit(db: np.ndarray, db_range: tuple[float, float]) -> np.ndarray:
    """dB -> [0, 1]: (db - low) / (high - low), clipped (float64)."""
    lo, hi = db_range
    return np.clip((np.asarray(db, dtype=np.float64) - lo) / (hi - lo), 0.0, 1.0)


def sar_to_uint8(
    values: np.ndarray, units: str, db_range: tuple[float, float]
) -> tuple[np.ndarray, np.ndarray]:
    """SAR values -> (uint8 0..255 = round(unit * 255), valid mask); invalid pixels 0.

    E.g. linear 0.01 -> -20 dB -> (-20 + 25) / 25 = 0.2 -> 51 with the default range.
    """
    db, valid = sar_to_db(values, units)
    out = np.rint(sar_db_to_unit(db, db_range) * 255.0).astype(np.uint8)
    out[~valid] = 0
    return out, valid


def compute_sar_db_range(
    ds: rasterio.io.DatasetReader,
    band: int,
    units: str,
    *,
    percentiles: tuple[float, float] = SAR_AUTO_PERCENTILES,
    stats_size: int = 1024,
) -> tuple[float, float] | None:
    """The "auto" dB range of a SAR scene: global, from a decimated read of the WHOLE
    scene (like the EO stretch, never per tile: every tile of a scene gets the same
    mapping). Masks and the nodata tag apply (read_masked). None: no valid pixel."""
    rows, cols = decimated_shape(ds.width, ds.height, stats_size)
    data, valid = read_masked(ds, (band,), out_shape=(rows, cols), zero_fill=False)
    db, db_valid = sar_to_db(data[0], units)
    return sar_db_range_auto(db, valid & db_valid, percentiles)

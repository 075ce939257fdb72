"""Evaluation of eo2sar checkpoints: load test tiles, run generators, compute metrics,
compare with baselines, rank checkpoints.

GAN outputs swing between checkpoints, so the demo checkpoint is picked by these numbers,
not by the last step. Every number is also computed for two baselines (the input's
grayscale as a SAR guess, and a random-weight generator of the same architecture) and,
where it means something, for the real SAR itself, so that a value can be read against
"doing nothing" and "the target". docs/evaluation.md explains how to read them.

Ranking (issue 14): on PAIRED tiles by the correlation of the 9x9 box-filtered output
with the real SAR (higher is better): the one measure that rewards putting the radar's
bright and dark where they are. On UNPAIRED tiles by radiometry (dB histogram distance
and speckle), among checkpoints that keep the input's structure above STRUCTURE_FLOOR.
Resembling the optical input is never penalised by itself: real SAR shares its geometry.

Baselines "a spreadsheet could do" (issue 21 item 8) sit beside every model: the
input's grayscale, its red band, a random-weight generator and, on multiband reflectance
tiles, NIR, NDVI, NDWI, the best of those single features (chosen on the FITTING pairs)
and a per-pixel linear regression of the SAR dB on the input bands (+ NDVI, NDWI) fitted
on the FITTING pairs (the dataset's trainA/trainB tiles of the same names, or
``fit_pairs``); docs/evaluation.md states the splits.

This module reads tiles (no rasters): 8-bit PNGs with PIL, or the multiband float32
GeoTIFF tiles of ``pipeline tiles --eo-bands ... --sar-pols ...`` with tifffile
(ugatit.data.load_array). Either way the SAR is on the unit dB grid of its polarisation
(u = (dB - lo) / (hi - lo)); a PNG's level / 255 is that u.
"""

from __future__ import annotations

import json
import math
import re
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from ugatit import metrics
from ugatit.checkpoint import load_checkpoint
from ugatit.config import DEFAULT_SAR_DB_RANGE, ModelConfig
from ugatit.data import TIFF_SUFFIXES, load_array
from ugatit.device import set_tf32
from ugatit.errors import EvaluationError, UgatitError
from ugatit.io import atomic_write_text
from ugatit.networks import ResnetGenerator, build_network

#: Bins of the streaming histograms on the unit grid (W1 error <= range / HIST_BINS).
HIST_BINS = 4096
#: Pixels at the ends of the 8-bit grid are clipped or nodata: their speckle is not speckle.
CLIP_MARGIN = 0.5 / 255
#: Smallest tile side: SSIM's 11 px window, and a few 8 px speckle windows.
MIN_TILE_PX = 16
#: Unpaired ranking: a checkpoint whose structure (metrics.structure with its input, mean
#: over tiles) is below this floor ranks after every checkpoint above it, whatever its
#: radiometry. Calibrated on the four co-registered BigEarthNet Sentinel-1 VV / Sentinel-2
#: pairs (120 px, docs/evaluation.md): real VV keeps -0.02..0.24 of its optical twin's
#: edges by this measure (mean 0.12: speckle and the sensors' different physics), while
#: 1-look speckle painted without regard to the input gives 0.00 +- 0.02 per tile. 0.05
#: on a set mean sits between the two; a model that learns the input's geometry is
#: typically far above it (it is smoother than real SAR).
STRUCTURE_FLOOR = 0.05
_EIGHT_BIT_MODES = ("L", "LA", "RGB", "RGBA", "P")
#: dB range of a polarisation when neither the checkpoint nor dataset.json gives one (the
#: tile builder's defaults: VV [-25, 0] as SEN12MS, VH 7.5 dB lower).
DEFAULT_POL_DB_RANGES = {"VV": (-25.0, 0.0), "VH": (-32.5, 0.0), "HH": (-25.0, 0.0),
                         "HV": (-32.5, 0.0)}
#: Common names of a PNG tile's channels, and of a 3/4-band TIFF without dataset.json.
RGB_NAMES = ("red", "green", "blue")
DEFAULT_MS_NAMES = ("red", "green", "blue", "nir")


# ----------------------------------------------------------------------------------------
# Tiles


@dataclass
class EvalData:
    """What a run is evaluated on. ``eo`` feeds the generators; ``sar`` is the real SAR
    (unit dB grid); ``paired`` says ``sar[i]`` is co-registered with ``eo[i]``.

    Lists, not stacked arrays: one folder may hold tiles of several sizes (120 px
    BigEarthNet patches beside 128 and 256 px crops); metrics group tiles by size.
    """

    eo: list[np.ndarray]  # each [H, W, 3] uint8 (PNG) or [H, W, C] float32 0..1 (TIFF)
    eo_names: list[str]
    sar: list[np.ndarray]  # each [H', W'] float64, 0..1: the (first) polarisation
    sar_names: list[str]
    paired: bool
    eo_dir: Path
    sar_dir: Path
    dataset_db_range: tuple[float, float] | None = None
    notes: list[str] = field(default_factory=list)
    #: "png" (8-bit RGB; SAR gray) or "tiff" (multiband float32 unit-scale tiles)
    kind: str = "png"
    #: common names of the EO channels (dataset.json eo.common_names; PNG: red, green, blue)
    eo_bands: tuple[str, ...] = RGB_NAMES
    #: reflectance of an EO unit value 1 (dataset.json eo.reflectance_range[1]); None when
    #: the tiles are not reflectance (PNG, percentile stretches): no spectral index then
    reflectance_max: float | None = None
    #: SAR polarisations (dataset.json sar.polarisations); one unnamed for PNG
    pols: tuple[str, ...] = ("SAR",)
    #: every polarisation of each SAR tile, [H, W, P] float64 (TIFF only; sar = [..., 0])
    sar_all: list[np.ndarray] | None = None
    dataset_db_ranges: list[tuple[float, float]] | None = None
    #: the FITTING pairs of the fitted baselines: (EO tile paths, SAR tile paths, source)
    fit: tuple[list[Path], list[Path], str] | None = None

    @property
    def eo_gray(self) -> list[np.ndarray]:
        """Grayscale of the inputs on 0..1: the mean of R, G, B (the same reduction that
        turns a 3-channel model output into one SAR value, so the two compare like for
        like); on multiband tiles the mean of the red, green and blue bands (all bands
        when they are not named so)."""
        if self.kind == "png":
            return [t.astype(np.float64).mean(axis=-1) / 255.0 for t in self.eo]
        idx = [self.eo_bands.index(n) for n in RGB_NAMES if n in self.eo_bands]
        idx = idx if len(idx) == 3 else list(range(len(self.eo_bands)))
        return [t[..., idx].astype(np.float64).mean(axis=-1) for t in self.eo]

    @property
    def n_pols(self) -> int:
        return len(self.pols)

    def for_pol(self, k: int) -> EvalData:
        """The same data with polarisation ``k`` as ``sar`` (every metric of this module
        runs on one polarisation at a time)."""
        if self.sar_all is None:
            if k:
                raise IndexError(k)
            return self
        sar = [t[..., k] for t in self.sar_all]
        rng = self.dataset_db_ranges[k] if self.dataset_db_ranges else None
        return EvalData(**{**self.__dict__, "sar": sar, "dataset_db_range": rng})

    @property
    def tile_sizes(self) -> list[list[int]]:
        """The distinct [H, W] of the inputs, sorted."""
        return [list(hw) for hw in sorted({t.shape[:2] for t in self.eo})]


def list_pngs(folder: Path, what: str) -> list[Path]:
    """The tiles of a folder (PNG, or multiband TIFF), sorted by name, or a typed error
    saying what is wrong. One kind per folder."""
    if not folder.is_dir():
        raise EvaluationError(f"{folder}: {what} folder not found")
    files = sorted(p for p in folder.iterdir()
                   if p.suffix.lower() in (".png", *TIFF_SUFFIXES)
                   and not p.name.startswith("."))
    if not files:
        raise EvaluationError(f"{folder}: no PNG tiles in the {what} folder (nor TIFF tiles)")
    kinds = {_kind(p) for p in files}
    if len(kinds) > 1:
        raise EvaluationError(f"{folder}: PNG and TIFF tiles mixed in the {what} folder; a "
                              f"folder holds one kind (cut them again with `pipeline tiles`)")
    return files


def _kind(path: Path) -> str:
    return "tiff" if path.suffix.lower() in TIFF_SUFFIXES else "png"


def read_arrays(paths: Sequence[Path]) -> list[np.ndarray]:
    """Multiband TIFF tiles (ugatit.data.load_array: unit scale, NaN -> 0) as float32
    [H, W, C] arrays (sizes may differ)."""
    arrays = []
    for p in paths:
        try:
            arrays.append(np.moveaxis(load_array(p), 0, -1))
        except UgatitError as exc:
            raise EvaluationError(str(exc)) from exc
        h, w = arrays[-1].shape[:2]
        if min(h, w) < MIN_TILE_PX:
            raise EvaluationError(f"{p}: tile of {w}x{h} px: evaluation needs at least "
                                  f"{MIN_TILE_PX} px (SSIM window, speckle windows)")
    return arrays


def read_tiles(paths: Sequence[Path]) -> list[np.ndarray]:
    """8-bit PNGs as uint8 [H, W, 3] arrays (sizes may differ)."""
    arrays = []
    for p in paths:
        try:
            with Image.open(p) as im:
                if im.mode not in _EIGHT_BIT_MODES:
                    raise EvaluationError(f"{p}: PNG mode {im.mode!r} is not 8-bit; tiles "
                                          f"are 8-bit RGB (or gray) PNGs")
                arrays.append(np.asarray(im.convert("RGB")))
        except OSError as exc:
            raise EvaluationError(f"{p}: not a readable PNG ({exc})") from exc
        h, w = arrays[-1].shape[:2]
        if min(h, w) < MIN_TILE_PX:
            raise EvaluationError(f"{p}: tile of {w}x{h} px: evaluation needs at least "
                                  f"{MIN_TILE_PX} px (SSIM window, speckle windows)")
    return arrays


def _pair(eo: list[Path], sar: list[Path], strict: bool,
          notes: list[str] | None = None) -> tuple[list[Path], list[Path], bool]:
    """Match EO and SAR tiles by file name. ``strict``: every name must have its partner.
    ``notes`` given (multiband TIFF datasets, which `pipeline tiles` cuts from paired and
    unpaired scenes into one folder) and only some names shared: the shared names are the
    test pairs, the others are left out (a note). PNG datasets stay as they were: paired
    only when every name pairs."""
    a, b = {p.name: p for p in eo}, {p.name: p for p in sar}
    if set(a) == set(b):
        names = sorted(a)
        return [a[n] for n in names], [b[n] for n in names], True
    shared = sorted(set(a) & set(b))
    if shared and not strict and notes is not None:
        notes.append(f"{len(shared)} EO/SAR tiles pair by name: evaluated on those pairs "
                     f"only; {len(a) - len(shared)} EO-only and {len(b) - len(shared)} "
                     f"SAR-only tiles left out")
        return [a[n] for n in shared], [b[n] for n in shared], True
    if strict:
        only_a, only_b = sorted(set(a) - set(b)), sorted(set(b) - set(a))
        raise EvaluationError(
            f"EO and SAR tiles do not pair by name: {len(only_a)} EO-only (e.g. "
            f"{only_a[:3]}), {len(only_b)} SAR-only (e.g. {only_b[:3]}); --pairs needs "
            f"co-registered tiles of identical names")
    return eo, sar, False


def read_dataset_db_range(dataset_json: Path) -> tuple[float, float] | None:
    """``radiometry.sar.db_range`` of a tile builder's dataset.json, None when absent."""
    if not dataset_json.is_file():
        return None
    try:
        doc = json.loads(dataset_json.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise EvaluationError(f"{dataset_json}: not readable JSON ({exc})") from exc
    rng = ((doc.get("radiometry") or {}).get("sar") or {}).get("db_range") \
        if isinstance(doc, dict) else None
    return None if rng is None else check_db_range(rng, str(dataset_json))


@dataclass
class DatasetMeta:
    """What evaluation reads from a tile builder's dataset.json (all optional)."""

    db_range: tuple[float, float] | None = None
    db_ranges: list[tuple[float, float]] | None = None
    pols: tuple[str, ...] | None = None
    common_names: tuple[str, ...] | None = None
    reflectance_max: float | None = None


def read_dataset_meta(dataset_json: Path) -> DatasetMeta:
    """``radiometry`` of a dataset.json: SAR dB range(s) and polarisations, EO common names
    and, for ``eo.method`` "reflectance", the reflectance of a unit value 1."""
    meta = DatasetMeta(db_range=read_dataset_db_range(dataset_json))
    if not dataset_json.is_file():
        return meta
    doc = json.loads(dataset_json.read_text())
    rad = (doc.get("radiometry") or {}) if isinstance(doc, dict) else {}
    sar, eo = rad.get("sar") or {}, rad.get("eo") or {}
    if isinstance(sar.get("polarisations"), list) and sar["polarisations"]:
        meta.pols = tuple(str(p) for p in sar["polarisations"])
    if isinstance(sar.get("db_ranges"), list) and sar["db_ranges"]:
        meta.db_ranges = [check_db_range(r, str(dataset_json)) for r in sar["db_ranges"]]
    if isinstance(eo.get("common_names"), list) and eo["common_names"]:
        meta.common_names = tuple(str(n).lower() for n in eo["common_names"])
    rr = eo.get("reflectance_range")
    if eo.get("method") == "reflectance" and isinstance(rr, list) and len(rr) == 2:
        lo, hi = check_db_range(rr, f"{dataset_json} eo.reflectance_range")
        if lo != 0:
            raise EvaluationError(f"{dataset_json}: eo.reflectance_range {rr} does not start "
                                  f"at 0; indices need unit value x reflectance")
        meta.reflectance_max = hi
    return meta


def check_db_range(rng: Any, where: str) -> tuple[float, float]:
    """A [lo, hi] pair of finite numbers with lo < hi, or a typed error naming its source."""
    try:
        lo, hi = (float(v) for v in rng)
    except (TypeError, ValueError) as exc:
        raise EvaluationError(f"{where}: sar db_range {rng!r} is not [lo, hi]") from exc
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise EvaluationError(f"{where}: sar db_range {rng!r} needs finite lo < hi")
    return lo, hi


def load_data(dataset: Path | None = None, pairs: tuple[Path, Path] | None = None,
              limit: int | None = None, fit_pairs: tuple[Path, Path] | None = None
              ) -> EvalData:
    """Tiles of a tile-builder dataset (testA -> generators, testB = real SAR, paired on
    the names they share) or of two folders of co-registered tiles of identical names.

    ``limit`` keeps the first N inputs (sorted by name) for quick looks. Tiles may differ
    in size; a pair's two tiles may not (co-registered means the same grid). The FITTING
    pairs of the fitted baselines: ``fit_pairs`` (two folders, same-name tiles), else the
    dataset's trainA/trainB tiles of the same names (listed here, read when fitted).
    """
    if (dataset is None) == (pairs is None):
        raise EvaluationError("give either a dataset folder or a pair of EO/SAR folders")
    if dataset is not None:
        if not dataset.is_dir():
            raise EvaluationError(f"{dataset}: dataset folder not found")
        eo_dir, sar_dir, strict, meta = dataset / "testA", dataset / "testB", False, dataset
    else:
        eo_dir, sar_dir = pairs
        strict, meta = True, eo_dir.parent
    notes: list[str] = []
    eo_l, sar_l = list_pngs(eo_dir, "EO (A)"), list_pngs(sar_dir, "SAR (B)")
    eo_p, sar_p, paired = _pair(eo_l, sar_l, strict,
                                notes if _kind(eo_l[0]) == "tiff" else None)
    if not paired:
        notes.append(f"{eo_dir.name}/{sar_dir.name} tiles do not pair by name (an unpaired "
                     f"test split): paired metrics (SSIM, PSNR, correlation) skipped; ranked "
                     f"by radiometry")
    if limit is not None and limit > 0:
        eo_p = eo_p[:limit]
        sar_p = sar_p[:limit]
    kind = _kind(eo_p[0])
    if _kind(sar_p[0]) != kind:
        raise EvaluationError(f"{eo_dir} holds {kind.upper()} tiles but {sar_dir} "
                              f"{_kind(sar_p[0]).upper()} tiles; cut both with one "
                              f"`pipeline tiles` run")
    dmeta = read_dataset_meta(meta / "dataset.json")
    extra: dict[str, Any] = {}
    if kind == "png":
        eo = read_tiles(eo_p)
        sar = [t[..., 0].astype(np.float64) / 255.0 for t in read_tiles(sar_p)]
    else:
        eo = read_arrays(eo_p)
        sar_all = [t.astype(np.float64) for t in read_arrays(sar_p)]
        extra = _tiff_meta(eo, sar_all, dmeta, eo_dir, sar_dir, notes)
        sar = [t[..., 0] for t in sar_all]
        extra["sar_all"] = sar_all
    if paired:
        for pe, e, s in zip(eo_p, eo, sar, strict=True):
            if e.shape[:2] != s.shape:
                raise EvaluationError(
                    f"{pe.name}: EO tile is {e.shape[1]}x{e.shape[0]} px but its SAR tile "
                    f"{s.shape[1]}x{s.shape[0]}: pairs must be co-registered (same grid)")
    sizes = {t.shape[:2] for t in eo}
    if len(sizes) > 1:
        notes.append(f"inputs of {len(sizes)} tile sizes "
                     f"({', '.join(f'{w}x{h}' for h, w in sorted(sizes))} px): each tile "
                     f"is run at its own size (full generators: resized to img_size)")
    if fit_pairs is not None:
        fa, fb = _same_names(*fit_pairs)
        if not fa:
            raise EvaluationError(f"--fit-pairs {fit_pairs[0]} {fit_pairs[1]}: no tile name "
                                  f"in both folders (fitting pairs are same-name tiles)")
        fit = (fa, fb, f"{fit_pairs[0]} + {fit_pairs[1]}, same-name tiles (--fit-pairs)")
    elif dataset is not None and (dataset / "trainA").is_dir() \
            and (dataset / "trainB").is_dir():
        fa, fb = _same_names(dataset / "trainA", dataset / "trainB")
        fit = (fa, fb, f"{dataset}/trainA + trainB, same-name tiles") if fa else None
    else:
        fit = None
    if fit is not None and _kind(fit[0][0]) != kind:
        raise EvaluationError(f"fitting pairs ({fit[2]}) are {_kind(fit[0][0]).upper()} "
                              f"tiles, the test tiles {kind.upper()}")
    return EvalData(eo=eo, eo_names=[p.name for p in eo_p], sar=sar,
                    sar_names=[p.name for p in sar_p], paired=paired, eo_dir=eo_dir,
                    sar_dir=sar_dir, dataset_db_range=dmeta.db_range, notes=notes,
                    kind=kind, fit=fit, **extra)


def _same_names(eo_dir: Path, sar_dir: Path) -> tuple[list[Path], list[Path]]:
    """The tiles of the same names in two folders (e.g. trainA/trainB: co-registered pairs
    cut with `pipeline tiles --paired`), sorted; empty when they share no name."""
    a = {p.name: p for p in list_pngs(eo_dir, f"fitting EO ({eo_dir.name})")}
    b = {p.name: p for p in list_pngs(sar_dir, f"fitting SAR ({sar_dir.name})")}
    names = sorted(set(a) & set(b))
    return [a[n] for n in names], [b[n] for n in names]


def _tiff_meta(eo: list[np.ndarray], sar: list[np.ndarray], dmeta: DatasetMeta,
               eo_dir: Path, sar_dir: Path, notes: list[str]) -> dict[str, Any]:
    """Band names, polarisations and dB ranges of multiband tiles (dataset.json, checked
    against the tiles' channel counts)."""
    n_eo, n_sar = {t.shape[-1] for t in eo}, {t.shape[-1] for t in sar}
    if len(n_eo) > 1 or len(n_sar) > 1:
        raise EvaluationError(f"{eo_dir if len(n_eo) > 1 else sar_dir}: tiles of "
                              f"{sorted(n_eo if len(n_eo) > 1 else n_sar)} bands; a folder's "
                              f"tiles must all have the same bands")
    c, p = n_eo.pop(), n_sar.pop()
    names = dmeta.common_names
    if names is None or len(names) != c:
        names = DEFAULT_MS_NAMES[:c] if c in (3, 4) else tuple(f"band{i + 1}" for i in range(c))
        notes.append(f"EO band names not in dataset.json (or not {c}): taken as "
                     f"{', '.join(names)}")
    pols = dmeta.pols
    if pols is None or len(pols) != p:
        pols = ("VV", "VH")[:p] if p <= 2 else tuple(f"pol{i + 1}" for i in range(p))
        notes.append(f"SAR polarisations not in dataset.json (or not {p}): taken as "
                     f"{', '.join(pols)}")
    ranges = dmeta.db_ranges
    if ranges is not None and len(ranges) != p:
        raise EvaluationError(f"dataset.json gives {len(ranges)} SAR dB ranges for tiles of "
                              f"{p} polarisations")
    if ranges is None and dmeta.db_range is not None and p == 1:
        ranges = [dmeta.db_range]
    return {"eo_bands": names, "pols": pols, "dataset_db_ranges": ranges,
            "reflectance_max": dmeta.reflectance_max}


def resolve_db_range(radiometry: dict[str, Any] | None,
                     dataset_range: tuple[float, float] | None,
                     where: str) -> tuple[tuple[float, float], str]:
    """The SAR dB range and where it came from: checkpoint > dataset.json > default."""
    rng = ((radiometry or {}).get("sar") or {}).get("db_range")
    if rng is not None:
        return check_db_range(rng, where), "checkpoint"
    if dataset_range is not None:
        return dataset_range, "dataset.json"
    return DEFAULT_SAR_DB_RANGE, "default"


def _by_size(tiles: Sequence[np.ndarray]) -> dict[tuple[int, ...], list[int]]:
    """Indices of the tiles grouped by shape (first-seen order): every set operation runs
    on stacks of one size."""
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, t in enumerate(tiles):
        groups.setdefault(tuple(t.shape), []).append(i)
    return groups


def per_tile(fn: Callable[..., np.ndarray], *sets: Sequence[np.ndarray]) -> np.ndarray:
    """``fn`` (a per-tile metric on stacks [N, H, W]) over lists of tiles of mixed sizes,
    in tile order; ``[N]``. Tiles of one size go through ``fn`` in one stack."""
    out = np.empty(len(sets[0]))
    for idx in _by_size(sets[0]).values():
        out[idx] = fn(*(np.stack([s[i] for i in idx]) for s in sets))
    return out


# ----------------------------------------------------------------------------------------
# Generators


def apply_precision(device: torch.device, tf32: bool = False) -> None:
    """The project's one float32 policy (ugatit.device.set_tf32): on CUDA, TF32 only when
    asked, so evaluation numbers are float32 numbers, as train, pipeline and app.py do."""
    if device.type == "cuda":
        set_tf32(tf32)


def _fit(net: nn.Module, h: int, w: int) -> tuple[tuple[int, int], tuple[int, int] | None]:
    """How a tile of h x w is fed to ``net``: (pad bottom/right, resize-to) .

    The light generator takes any H, W divisible by 4 and >= 8: other sizes are
    reflect-padded up to that and the output cropped back (a few edge pixels of context,
    no resampling). The full generator takes only its img_size: tiles are resized to it
    (bilinear, antialiased) and the output resized back (a documented approximation).
    """
    cfg = getattr(net, "config", None)
    if cfg is None:  # not one of ours (tests' stand-ins): fed as is
        return (0, 0), None
    if not cfg.light:
        return (0, 0), None if (h, w) == (cfg.img_size, cfg.img_size) \
            else (cfg.img_size, cfg.img_size)
    ph, pw = max(8, -(-h // 4) * 4) - h, max(8, -(-w // 4) * 4) - w
    return (ph, pw), None


def generate(net: nn.Module, eo: Sequence[np.ndarray], device: torch.device,
             batch_size: int = 16, what: str = "genA2B", mean: bool = True
             ) -> list[np.ndarray]:
    """Run genA2B on tiles (any sizes; uint8 PNG tiles or unit-scale float multiband
    tiles); the SAR guesses on the unit grid at each tile's size.

    ``mean`` (PNG models, whose SAR tiles are gray stored as RGB): the output's channels
    are averaged, each guess [H, W]. Else each guess is [H, W, out_ch], channel k the
    guess of polarisation k. Values are mapped from [-1, 1] to [0, 1]. Tiles are batched
    by size.
    """
    out: list[np.ndarray] = [np.empty(0)] * len(eo)
    for (h, w, c), idx in _by_size(eo).items():
        (ph, pw), resize = _fit(net, h, w)
        if isinstance(net, ResnetGenerator):
            size = resize or (h + ph, w + pw)
            try:
                net.check_input(torch.empty(1, c, *size, device="meta"))
            except ValueError as exc:
                raise EvaluationError(f"{what}: {exc} (the tiles have {c} bands)") from exc
        with torch.inference_mode():
            for i in range(0, len(idx), batch_size):
                part = idx[i:i + batch_size]
                x = torch.from_numpy(np.stack([eo[j] for j in part])).to(device)
                if x.dtype == torch.uint8:
                    x = x.permute(0, 3, 1, 2).float().div(127.5).sub(1.0)
                else:  # unit-scale float tiles: Normalize(0.5, 0.5), as ugatit.data
                    x = x.permute(0, 3, 1, 2).float().mul(2.0).sub(1.0)
                if ph or pw:
                    x = torch.nn.functional.pad(x, (0, pw, 0, ph), mode="reflect")
                if resize is not None:
                    x = torch.nn.functional.interpolate(x, size=resize, mode="bilinear",
                                                        align_corners=False, antialias=True)
                y = net(x)[0]
                if resize is not None:
                    y = torch.nn.functional.interpolate(y, size=(h, w), mode="bilinear",
                                                        align_corners=False, antialias=True)
                y = y[:, :, :h, :w]
                y = (y.mean(dim=1) if mean else y.permute(0, 2, 3, 1)).add(1.0).div(2.0)
                y = y.clamp(0.0, 1.0)
                for j, t in zip(part, y.double().cpu().numpy(), strict=True):
                    out[j] = t
    return out


def random_generator(config: ModelConfig, seed: int, device: torch.device) -> nn.Module:
    """genA2B with PyTorch's default init, seeded: the "untrained" baseline."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = build_network("genA2B", config)
    return net.to(device).eval().requires_grad_(False)


# ----------------------------------------------------------------------------------------
# Metrics of one row


@dataclass
class Reference:
    """Real-SAR statistics that every row is compared with, for one dB range."""

    db_range: tuple[float, float]
    hist: np.ndarray
    speckle_cv: float
    speckle_windows: int
    mean_db: float
    std_db: float
    identity: float | None  # real SAR vs its own EO input (paired only)
    structure: float | None  # the same, by metrics.structure (paired only)
    features: np.ndarray | None = None


def _valid(u: np.ndarray) -> np.ndarray:
    return (u > CLIP_MARGIN) & (u < 1.0 - CLIP_MARGIN)


def _hist(tiles: Sequence[np.ndarray]) -> np.ndarray:
    h = np.zeros(HIST_BINS, dtype=np.int64)
    for u in tiles:
        h += np.histogram(np.clip(u, 0.0, 1.0), bins=HIST_BINS, range=(0.0, 1.0))[0]
    return h


def _speckle(tiles: Sequence[np.ndarray], db_range: tuple[float, float],
             keep: float = metrics.SPECKLE_KEEP) -> tuple[float, int]:
    """metrics.speckle_cv over a set of tiles of mixed sizes: windows of every tile pooled,
    then the same rank screening as for one stack."""
    cv2s, hets = [], []
    for idx in _by_size(tiles).values():
        u = np.stack([tiles[i] for i in idx])
        c, h = metrics.speckle_windows(metrics.db_to_linear(metrics.unit_to_db(u, db_range)),
                                       _valid(u))
        cv2s.append(c)
        hets.append(h)
    cv2, het = np.concatenate(cv2s), np.concatenate(hets)
    if not len(cv2):
        return math.nan, 0
    n_keep = max(1, int(round(keep * len(cv2))))
    sel = np.argsort(het, kind="stable")[:n_keep]
    return float(np.sqrt(cv2[sel].mean())), int(n_keep)


def _db_moments(tiles: Sequence[np.ndarray], db_range: tuple[float, float]) -> tuple[float, float]:
    db = np.concatenate([metrics.unit_to_db(t, db_range).ravel() for t in tiles])
    return float(db.mean()), float(db.std())


FeatureFn = Callable[[Sequence[np.ndarray]], np.ndarray]


def make_reference(data: EvalData, db_range: tuple[float, float],
                   features: FeatureFn | None) -> Reference:
    mean_db, std_db = _db_moments(data.sar, db_range)
    cv, nwin = _speckle(data.sar, db_range)
    gray = data.eo_gray
    ident = float(per_tile(metrics.pearson, data.sar, gray).mean()) if data.paired else None
    struct = float(per_tile(metrics.structure, data.sar, gray).mean()) if data.paired \
        else None
    return Reference(db_range=db_range, hist=_hist(data.sar), speckle_cv=cv,
                     speckle_windows=nwin, mean_db=mean_db, std_db=std_db,
                     identity=ident, structure=struct,
                     features=None if features is None else features(data.sar))


def row_metrics(pred: Sequence[np.ndarray], data: EvalData, ref: Reference,
                features: FeatureFn | None) -> dict[str, Any]:
    """Every metric of one SAR guess (model, baseline) against the real SAR."""
    lo, hi = ref.db_range
    mean_db, std_db = _db_moments(pred, ref.db_range)
    cv, nwin = _speckle(pred, ref.db_range)
    gray = data.eo_gray
    ident = per_tile(metrics.pearson, pred, gray)
    struct = per_tile(metrics.structure, pred, gray)
    m: dict[str, Any] = {
        "structure": float(struct.mean()),
        "identity": float(ident.mean()),
        "hist_w1_db": metrics.histogram_wasserstein(_hist(pred), ref.hist, (hi - lo) / HIST_BINS),
        "mean_db": mean_db, "std_db": std_db,
        "speckle_cv": cv, "speckle_windows": nwin,
        "speckle_cv_ratio": cv / ref.speckle_cv if ref.speckle_cv > 0 else math.nan,
        "per_tile": {"names": list(data.eo_names), "structure": struct.round(6).tolist(),
                     "identity": ident.round(6).tolist()},
    }
    m["radiometry"] = radiometry_score(m, ref)
    if data.paired:
        s, p = per_tile(metrics.ssim, pred, data.sar), per_tile(metrics.psnr, pred, data.sar)
        c = per_tile(metrics.pearson, pred, data.sar)
        c9 = per_tile(metrics.box_pearson, pred, data.sar)
        m.update(ssim=float(s.mean()), psnr=float(p.mean()), corr=float(c.mean()),
                 corr_box9=float(c9.mean()))
        m["per_tile"].update(ssim=s.round(6).tolist(), psnr=p.round(4).tolist(),
                             corr=c.round(6).tolist(), corr_box9=c9.round(6).tolist())
    if features is not None and ref.features is not None:
        f = features(pred)
        if min(len(f), len(ref.features)) >= 2:  # both need a covariance / an off-diagonal
            m.update(kid=metrics.kid(f, ref.features), fid=metrics.fid(f, ref.features))
    return m


def radiometry_score(m: dict[str, Any], ref: Reference) -> float:
    """How far the output's radiometry is from real SAR's; lower is better, 0 = real SAR.

    radiometry = W1 / std_real               (dB histogram off, in units of the real spread)
               + |ln(CV_out / CV_real)|      (speckle too weak or too strong; ln 2 = 0.69)
    Each term is ~0 for a faithful model and ~0.5-1 for a clearly wrong one. A missing
    speckle estimate (no homogeneous window) counts as ln 10. Resemblance to the optical
    input is deliberately NOT a term (issue 14): real SAR shares its input's geometry, and
    penalising it ranked a generator that ignores its input best.
    """
    hist = m["hist_w1_db"] / max(ref.std_db, 1e-6)
    ratio = m["speckle_cv_ratio"]
    speck = abs(math.log(ratio)) if ratio > 0 and math.isfinite(ratio) else math.log(10.0)
    return float(hist + speck)


#: The ranking keys, as the report states them.
RANK_KEYS = {
    "paired": {"name": "corr_box9", "better": "higher",
               "rule": "mean over tiles of the Pearson correlation between the output and "
                       "the real SAR (dB), both 9x9 box-filtered"},
    "unpaired": {"name": "radiometry", "better": "lower",
                 "rule": f"W1_dB / std_dB(real) + |ln CV ratio|, among checkpoints with "
                         f"structure >= {STRUCTURE_FLOOR}; those below the floor rank after "
                         f"them"},
}


def rank_order(rows: Sequence[dict[str, Any]], paired: bool) -> list[int]:
    """Indices of ``rows`` best first, by the stated key (RANK_KEYS); ties by path.

    Paired: corr_box9, higher first (NaN last). Unpaired: rows with structure at or above
    STRUCTURE_FLOOR first, each group by radiometry, lower first.
    """
    def key(i: int) -> tuple[Any, ...]:
        r = rows[i]
        if paired:
            v = r["corr_box9"]
            return (not math.isfinite(v), -v if math.isfinite(v) else 0.0, r["path"])
        v = r["radiometry"]
        return (not r["structure"] >= STRUCTURE_FLOOR, v, r["path"])

    return sorted(range(len(rows)), key=key)


def reference_row(ref: Reference) -> dict[str, Any]:
    """The real SAR's own statistics (distances to itself are 0 by definition: left out)."""
    row: dict[str, Any] = {"mean_db": ref.mean_db, "std_db": ref.std_db,
                           "speckle_cv": ref.speckle_cv, "speckle_windows": ref.speckle_windows,
                           "speckle_cv_ratio": 1.0}
    if ref.identity is not None:
        row["identity"] = ref.identity
    if ref.structure is not None:
        row["structure"] = ref.structure
    return row


# ----------------------------------------------------------------------------------------
# Feature extractor (KID / FID)


def load_features(path: Path, device: torch.device, batch_size: int = 16) -> FeatureFn:
    """A TorchScript model mapping [N, 3, H, W] in [0, 1] to [N, D]; nothing is downloaded.

    SAR guesses are one channel; it is repeated to three, for the real SAR and every row
    alike. Tiles of different sizes go in separate batches (the extractor must pool).
    """
    try:
        with warnings.catch_warnings():  # torch >= 2.9 deprecates TorchScript; still works
            warnings.simplefilter("ignore", DeprecationWarning)
            model = torch.jit.load(str(path), map_location=device).eval()
    except (RuntimeError, ValueError, OSError) as exc:
        raise EvaluationError(f"{path}: not a TorchScript feature extractor "
                              f"({str(exc).splitlines()[0] if str(exc) else exc})") from exc

    def run(tiles: Sequence[np.ndarray]) -> np.ndarray:
        feats: list[np.ndarray] = [np.empty(0)] * len(tiles)
        with torch.inference_mode():
            for idx in _by_size(tiles).values():
                for i in range(0, len(idx), batch_size):
                    part = idx[i:i + batch_size]
                    x = torch.from_numpy(np.stack([tiles[j] for j in part])).float().to(device)
                    f = model(x[:, None].expand(-1, 3, -1, -1).contiguous())
                    if f.ndim != 2 or f.shape[0] != x.shape[0]:
                        raise EvaluationError(f"{path}: features of shape {list(f.shape)}, "
                                              f"expected [N, D]")
                    for j, row in zip(part, f.double().cpu().numpy(), strict=True):
                        feats[j] = row
        return np.stack(feats)

    return run


# ----------------------------------------------------------------------------------------
# Baselines a user would try first (issue 21 item 8)

#: Single-feature candidates, in table order; "best single" is picked among those present.
SINGLE_FEATURES = ("red", "nir", "ndvi", "ndwi")
#: The spectral indices (need reflectance: NIR, red, green of a reflectance tile).
INDICES = {"ndvi": ("red", "nir"), "ndwi": ("green", "nir")}


def spectral(tile: np.ndarray, data: EvalData) -> dict[str, np.ndarray]:
    """The features of one EO tile [H, W, C] that baselines are made of, float64 [H, W]:
    every band by its common name (PNG: red, green, blue as level / 255; TIFF: the unit
    value, or reflectance = unit x reflectance_max when the tiles are reflectance) and,
    on reflectance tiles with the bands, ``ndvi`` and ``ndwi``."""
    t = tile.astype(np.float64)
    if data.kind == "png":
        return {n: t[..., i] / 255.0 for i, n in enumerate(RGB_NAMES)}
    scale = data.reflectance_max or 1.0
    out = {n: t[..., i] * scale for i, n in enumerate(data.eo_bands)}
    if data.reflectance_max is not None:
        if {"red", "nir"} <= set(out):
            out["ndvi"] = metrics.ndvi(out["red"], out["nir"])
        if {"green", "nir"} <= set(out):
            out["ndwi"] = metrics.ndwi(out["green"], out["nir"])
    return out


def as_guess(name: str, feats: dict[str, np.ndarray], data: EvalData) -> np.ndarray:
    """A single feature as a SAR guess on [0, 1] by a fixed increasing map (Pearson, hence
    corr9, is the feature's own, signed): a band's unit value (reflectance /
    reflectance_max; PNG level / 255), an index (x + 1) / 2."""
    x = feats[name]
    if name in INDICES:
        return (x + 1.0) / 2.0
    return x / (data.reflectance_max or 1.0) if data.kind != "png" else x


def single_candidates(data: EvalData) -> list[str]:
    """The single-feature baselines that apply: PNG tiles only the red band (no NIR, no
    reflectance); multiband tiles every one of SINGLE_FEATURES they can give."""
    names = set(spectral(data.eo[0], data)) if data.eo else set()
    return [n for n in SINGLE_FEATURES if n in names] if data.kind != "png" else ["red"]


def linear_features(data: EvalData) -> list[str]:
    """Features of the linear regression: every band (PNG: R, G, B) and the indices."""
    names = list(spectral(data.eo[0], data))
    return names


@dataclass
class Fitted:
    """The fitted baselines of one polarisation (FITTING pairs only)."""

    features: list[str]
    coef: np.ndarray  # on the SAR tiles' unit grid, intercept first
    n_pixels: int
    fit_corr_box9: dict[str, float]  # every single candidate's mean corr9 on the fitting set
    best: str | None
    sign: int


def _fill(tile: np.ndarray) -> np.ndarray:
    """EO fill pixels (0 in every band, what `pipeline tiles` writes where invalid)."""
    return ~np.any(tile != 0, axis=-1)


def fit_baselines(data: EvalData, log: Callable[[str], None] = lambda s: None
                  ) -> list[Fitted] | None:
    """Fit the best-single choice and the linear regression on the FITTING pairs
    (``data.fit``), per polarisation; None when there are none.

    Linear: least squares with intercept of the SAR tile's unit value (= the dB, up to
    the tiles' fixed affine map) on ``linear_features``, over pixels where the SAR is not
    clipped (not at 0 or 1 of its grid: nodata or out of range) and the EO is not fill.
    Best single: the candidate with the largest |mean corr9| over the fitting pairs,
    sign +1 or -1 as that mean's.
    """
    if data.fit is None:
        return None
    fa, fb, source = data.fit
    names, cands = linear_features(data), single_candidates(data)
    fits = [metrics.LinearFit(len(names)) for _ in range(data.n_pols)]
    c9: list[dict[str, list[float]]] = [{c: [] for c in cands} for _ in range(data.n_pols)]
    n_bands = data.eo[0].shape[-1]
    for pa, pb in zip(fa, fb, strict=True):
        if data.kind == "png":
            eo = read_tiles([pa])[0]
            sar = read_tiles([pb])[0][..., :1].astype(np.float64) / 255.0
        else:
            eo, sar = read_arrays([pa])[0], read_arrays([pb])[0].astype(np.float64)
        if eo.shape[-1] != n_bands or sar.shape[-1] != data.n_pols \
                or eo.shape[:2] != sar.shape[:2]:
            raise EvaluationError(
                f"fitting pair {pa.name}: EO {eo.shape[1]}x{eo.shape[0]} px of "
                f"{eo.shape[-1]} bands, SAR {sar.shape[1]}x{sar.shape[0]} px of "
                f"{sar.shape[-1]}; the test tiles have {n_bands} EO bands and "
                f"{data.n_pols} polarisations, a pair one grid")
        f = spectral(eo, data)
        x = np.stack([f[n] for n in names])
        ok_eo = ~_fill(eo)
        for k in range(data.n_pols):
            u = sar[..., k]
            ok = ok_eo & _valid(u)
            fits[k].add(x[:, ok], u[ok])
            for c in cands:
                c9[k][c].append(float(metrics.box_pearson(as_guess(c, f, data), u)[0]))
    out = []
    for k, pol in enumerate(data.pols):
        try:
            coef = fits[k].solve()
        except ValueError as exc:
            raise EvaluationError(f"fitting pairs ({source}), {pol}: {exc}") from exc
        means = {c: float(np.mean(v)) for c, v in c9[k].items()}
        best = max(means, key=lambda c: (abs(means[c]), -cands.index(c))) if means else None
        sign = -1 if best is not None and means[best] < 0 else 1
        out.append(Fitted(features=names, coef=coef, n_pixels=fits[k].n,
                          fit_corr_box9=means, best=best, sign=sign))
        log(f"fitted on {len(fa)} pairs, {pol}: linear on {', '.join(names)}; best single "
            f"{'-' if sign < 0 else ''}{best}")
    return out


def baseline_guesses(data: EvalData, fitted: list[Fitted] | None
                     ) -> list[tuple[str, list[list[np.ndarray]], list[dict[str, Any]]]]:
    """(name, per-polarisation guesses, per-polarisation extra JSON) of every baseline
    but the random generator, in table order."""
    feats = [spectral(t, data) for t in data.eo]
    gray = data.eo_gray
    out: list[tuple[str, list[list[np.ndarray]], list[dict[str, Any]]]] = [
        ("gray", [gray] * data.n_pols, [{}] * data.n_pols)]
    for c in single_candidates(data):
        g = [as_guess(c, f, data) for f in feats]
        out.append((c, [g] * data.n_pols, [{}] * data.n_pols))
    if fitted is None:
        return out
    best, lin, bx, lx = [], [], [], []
    for fit in fitted:
        if fit.best is not None:
            g = [as_guess(fit.best, f, data) for f in feats]
            best.append(g if fit.sign > 0 else [1.0 - v for v in g])
            bx.append({"feature": fit.best, "sign": fit.sign,
                       "fit_corr_box9": fit.fit_corr_box9})
        x = [np.stack([f[n] for n in fit.features]) for f in feats]
        lin.append([np.clip(metrics.linear_predict(fit.coef, v), 0.0, 1.0) for v in x])
        lx.append({"features": fit.features, "n_fit_pixels": fit.n_pixels,
                   "coef_unit": {n: float(c) for n, c in
                                 zip(["intercept", *fit.features], fit.coef, strict=True)}})
    if data.kind != "png" and len(best) == data.n_pols:
        out.append(("best_single", best, bx))
    out.append(("linear", lin, lx))
    return out


def _coef_db(coef_unit: dict[str, float], rng: tuple[float, float]) -> dict[str, float]:
    """Coefficients on the unit grid -> in dB (dB = lo + u (hi - lo))."""
    lo, hi = rng
    return {n: lo + c * (hi - lo) if n == "intercept" else c * (hi - lo)
            for n, c in coef_unit.items()}


# ----------------------------------------------------------------------------------------
# A whole run


def find_checkpoints(items: Sequence[Path]) -> list[Path]:
    """Expand folders to their ``*.pt`` files (or their ``checkpoints/`` subfolder's, the
    trainer's layout), sorted by name; files stay as given."""
    out: list[Path] = []
    for item in items:
        if item.is_dir():
            found = sorted(p for p in item.glob("*.pt") if not p.name.startswith("."))
            if not found and (item / "checkpoints").is_dir():
                found = sorted(p for p in (item / "checkpoints").glob("*.pt")
                               if not p.name.startswith("."))
            if not found:
                raise EvaluationError(f"{item}: no *.pt checkpoints in this folder")
            out += found
        elif item.exists():
            out.append(item)
        else:
            raise EvaluationError(f"{item}: checkpoint not found")
    if not out:
        raise EvaluationError("no checkpoint given")
    return out


def _step_of(path: Path, meta: dict[str, Any]) -> int | None:
    """The training step: recorded by the trainer in the file (kept by `export`), else
    the trainer's file name `params_NNNNNNN` (a name like `demo_ngf16.pt` is no step)."""
    if isinstance(meta.get("step"), int):
        return int(meta["step"])
    m = re.fullmatch(r"params_(\d+)", path.stem)
    return int(m.group(1)) if m else None


@dataclass
class Options:
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    batch_size: int = 16
    seed: int = 0
    features: Path | None = None
    tf32: bool = False  # allow TF32 on CUDA (faster, not float32-exact); off by default


def resolve_db_ranges(radiometry: dict[str, Any] | None, data: EvalData, where: str
                      ) -> tuple[list[tuple[float, float]], str]:
    """The dB range of each polarisation and where they came from: checkpoint
    (``sar.db_ranges``, or ``sar.db_range`` for one polarisation) > dataset.json > the
    tile builder's defaults (DEFAULT_POL_DB_RANGES)."""
    sar = (radiometry or {}).get("sar") or {}
    ranges = sar.get("db_ranges")
    if isinstance(ranges, list) and len(ranges) == data.n_pols:
        return [check_db_range(r, where) for r in ranges], "checkpoint"
    if data.n_pols == 1:
        rng, src = resolve_db_range(radiometry, data.dataset_db_range, where)
        return [rng], src
    if data.dataset_db_ranges is not None:
        return list(data.dataset_db_ranges), "dataset.json"
    return [DEFAULT_POL_DB_RANGES.get(p.upper(), DEFAULT_SAR_DB_RANGE) for p in data.pols], \
        "default"


def split_pols(guesses: list[np.ndarray], data: EvalData, what: str) -> list[list[np.ndarray]]:
    """A generator's guesses per polarisation: PNG (already one gray guess) as is; else
    output channel k for polarisation k, or the channels' mean for one polarisation."""
    if data.kind == "png":
        return [guesses]
    n = guesses[0].shape[-1]
    if n == data.n_pols:
        return [[g[..., k] for g in guesses] for k in range(n)]
    if data.n_pols == 1:
        return [[g.mean(axis=-1) for g in guesses]]
    raise EvaluationError(f"{what}: {n} output channels, but the SAR tiles have "
                          f"{data.n_pols} polarisations ({', '.join(data.pols)})")


#: Row keys averaged over polarisations on multi-polarisation sets (the ranking keys).
_POL_MEANS = ("corr_box9", "corr", "ssim", "psnr", "structure", "radiometry")


def _combine(per_pol: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """One row of several polarisations: the per-polarisation metrics under
    ``polarisations``, and the mean over polarisations of the keys that rank."""
    if len(per_pol) == 1:
        return next(iter(per_pol.values()))
    row: dict[str, Any] = {"polarisations": per_pol}
    for k in _POL_MEANS:
        vals = [m[k] for m in per_pol.values() if k in m]
        if vals:
            row[k] = float(np.mean(vals))
    return row


def evaluate(checkpoints: Sequence[Path], data: EvalData, opts: Options,
             log: Callable[[str], None] = lambda s: None) -> dict[str, Any]:
    """Evaluate checkpoints and the baselines on ``data``; the report (JSON-ready dict).

    Several polarisations: every metric per polarisation (output channel k against
    polarisation k, on its own dB range), and the ranking keys averaged over them."""
    t0 = time.perf_counter()
    apply_precision(opts.device, opts.tf32)
    feats = load_features(opts.features, opts.device, opts.batch_size) if opts.features else None
    refs: dict[tuple[int, tuple[float, float]], Reference] = {}
    views = [data.for_pol(k) for k in range(data.n_pols)]
    rows, config = [], None
    key = RANK_KEYS["paired" if data.paired else "unpaired"]["name"]
    mean = data.kind == "png"
    for path in checkpoints:
        ck = load_checkpoint(path, device=opts.device, networks=("genA2B",))
        ranges, src = resolve_db_ranges(ck.radiometry, data, str(path))
        for k, rng in enumerate(ranges):
            if (k, rng) not in refs:
                refs[(k, rng)] = make_reference(views[k], rng, feats)
        config = config or ck.config
        t1 = time.perf_counter()
        outs = split_pols(generate(ck.genA2B, data.eo, opts.device, opts.batch_size, str(path),
                                   mean=mean), data, str(path))
        m = _combine({pol: row_metrics(outs[k], views[k], refs[(k, ranges[k])], feats)
                      for k, pol in enumerate(data.pols)})
        rows.append({"path": str(path), "step": _step_of(path, ck.meta),
                     "db_range": list(ranges[0]), "db_range_source": src,
                     **({"db_ranges": [list(r) for r in ranges]} if data.n_pols > 1 else {}),
                     "db_scale": _db_scale(ck.radiometry),
                     "config": ck.config.to_dict(),
                     "seconds": round(time.perf_counter() - t1, 3), **m})
        log(f"{path.name}: {key} {m[key]:.4f} ({rows[-1]['seconds']:.1f} s)")
        del ck
    ranges0 = [tuple(r) for r in rows[0].get("db_ranges", [rows[0]["db_range"]])]
    ref = [refs[(k, rng)] for k, rng in enumerate(ranges0)]
    fitted = fit_baselines(data, log)
    baselines: dict[str, dict[str, Any]] = {}
    for name, guesses, extra in baseline_guesses(data, fitted):
        per_pol = {}
        for k, pol in enumerate(data.pols):
            per_pol[pol] = {**row_metrics(guesses[k], views[k], ref[k], feats), **extra[k]}
            tile_rng = views[k].dataset_db_range  # the grid the tiles were cut on
            if "coef_unit" in extra[k] and data.kind != "png" and tile_rng is not None:
                per_pol[pol]["coef_db"] = _coef_db(extra[k]["coef_unit"], tile_rng)
        baselines[name] = _combine(per_pol)
    rand = random_generator(config, opts.seed, opts.device)
    outs = split_pols(generate(rand, data.eo, opts.device, opts.batch_size, mean=mean), data,
                      "random generator")
    baselines["random"] = _combine({pol: row_metrics(outs[k], views[k], ref[k], feats)
                                    for k, pol in enumerate(data.pols)})
    if data.paired:
        for r in rows:
            r["corr_box9_gain_vs_gray"] = r["corr_box9"] - baselines["gray"]["corr_box9"]
            r["corr_box9_gain_vs"] = {n: r["corr_box9"] - b["corr_box9"]
                                      for n, b in baselines.items()}
    return _report(rows, baselines, ref, data, opts, time.perf_counter() - t0,
                   sources={r["db_range_source"] for r in rows}, fitted=fitted)


def _db_scale(radiometry: dict[str, Any] | None) -> str | None:
    """The checkpoint's SAR dB scale: "relative" (trained on per-scene SAR stretches: its
    0..1 has no one dB meaning), "absolute", or None when it does not say."""
    value = ((radiometry or {}).get("sar") or {}).get("db_scale")
    return value if isinstance(value, str) else None


def baseline_notes(data: EvalData, fitted: list[Fitted] | None) -> list[str]:
    """What the baseline rows are, said in the report (docs/evaluation.md, Baselines)."""
    notes = []
    if data.kind == "png":
        notes.append("baselines on PNG (RGB, 8-bit stretched) tiles: no NIR band and no "
                     "reflectance, so only gray, the red band and the linear regression on "
                     "R, G, B apply (no NIR, NDVI, NDWI, best single)")
    elif data.reflectance_max is None:
        notes.append("EO tiles not on a reflectance scale (dataset.json eo.method): no "
                     "spectral index (NDVI, NDWI) baselines")
    if fitted is None:
        notes.append("no fitting pairs (trainA/trainB share no tile name; --fit-pairs EO_DIR "
                     "SAR_DIR gives others): best-single and linear baselines not computed")
        return notes
    src, n = data.fit[2], len(data.fit[0])
    pols = data.pols
    if data.kind != "png":
        picks = ", ".join(f"{p} {'-' if f.sign < 0 else ''}{f.best} (fit corr9 "
                          f"{f.fit_corr_box9[f.best]:+.3f})" for p, f in zip(pols, fitted,
                                                                             strict=True))
        notes.append(f"best single: of {', '.join(single_candidates(data))}, the one with "
                     f"the largest |mean corr9| on the fitting pairs, used with the sign of "
                     f"that mean (a negative one flipped: a user would take -ndwi): {picks}; "
                     f"every candidate's own row shows its signed corr9 here")
    notes.append(f"linear: least squares with intercept of each polarisation's dB on "
                 f"{', '.join(fitted[0].features)}, fitted on {n} fitting pairs ({src}), "
                 f"applied to these tiles")
    return notes


def _report(rows: list[dict[str, Any]], baselines: dict[str, dict[str, Any]],
            refs: list[Reference], data: EvalData, opts: Options, seconds: float,
            sources: set[str], fitted: list[Fitted] | None = None) -> dict[str, Any]:
    order = rank_order(rows, data.paired)
    for rank, i in enumerate(order, 1):
        rows[i]["rank"] = rank
    rank_key = dict(RANK_KEYS["paired" if data.paired else "unpaired"])
    multi = data.n_pols > 1
    if multi:
        rank_key["rule"] = (f"mean over the polarisations ({', '.join(data.pols)}) of: "
                            f"{rank_key['rule']}")
    notes = list(data.notes)
    ranges_of = [tuple(tuple(x) for x in r.get("db_ranges", [r["db_range"]])) for r in rows]
    if len(set(ranges_of)) > 1:
        notes.append("checkpoints disagree on the SAR dB range: radiometry is not comparable "
                     "across ranges; baselines use the first checkpoint's")
    data_ranges = tuple(data.dataset_db_ranges) if multi and data.dataset_db_ranges else \
        ((data.dataset_db_range,) if data.dataset_db_range else None)
    if data_ranges and any(r != data_ranges for r in ranges_of):
        notes.append(f"a checkpoint's dB range differs from dataset.json's "
                     f"{[list(r) for r in data_ranges] if multi else list(data_ranges[0])}")
    relative = [Path(r["path"]).name for r in rows if r["db_scale"] == "relative"]
    if relative:
        notes.append(f"relative-dB model(s) ({', '.join(relative)}): trained on per-scene SAR "
                     f"stretches, their output is read on the tiles' dB range; W1 and mean "
                     f"dB then measure brightness on that grid, not calibrated dB")
    low = [Path(r["path"]).name for r in rows if not r["structure"] >= STRUCTURE_FLOOR]
    if low and not data.paired:
        notes.append(f"structure below the floor {STRUCTURE_FLOOR} (output ignores its input; "
                     f"ranked last): {', '.join(low)}")
    notes += baseline_notes(data, fitted)
    best = rows[order[0]]
    reference = {p: reference_row(r) for p, r in zip(data.pols, refs, strict=True)}
    return {
        "tool": "ugatit evaluate",
        "data": {"eo_dir": str(data.eo_dir), "sar_dir": str(data.sar_dir),
                 "n_inputs": len(data.eo), "n_real_sar": len(data.sar), "paired": data.paired,
                 "tile_px": data.tile_sizes, "kind": data.kind,
                 "eo_bands": list(data.eo_bands), "polarisations": list(data.pols),
                 "reflectance_max": data.reflectance_max,
                 "fit": None if data.fit is None else
                 {"source": data.fit[2], "n_pairs": len(data.fit[0])}},
        "radiometry": {"db_range": list(refs[0].db_range), "sources": sorted(sources),
                       "dataset_json_db_range": list(data.dataset_db_range)
                       if data.dataset_db_range else None,
                       **({"db_ranges": [list(r.db_range) for r in refs]} if multi else {})},
        "options": {"device": str(opts.device), "batch_size": opts.batch_size,
                    "seed": opts.seed, "features": str(opts.features) if opts.features else None,
                    "tf32": opts.tf32},
        "rank_key": {**rank_key, "structure_floor": STRUCTURE_FLOOR},
        "checkpoints": rows,
        "baselines": baselines,
        "reference": {"polarisations": reference} if multi else reference[data.pols[0]],
        "ranking": [rows[i]["path"] for i in order],
        "best": {"path": best["path"], "step": best["step"], "key": rank_key["name"],
                 "value": best[rank_key["name"]]},
        "notes": notes,
        "seconds": round(seconds, 3),
    }


# ----------------------------------------------------------------------------------------
# Output


_COLUMNS = (("corr_box9", "corr9", "{:.3f}"), ("corr", "corr", "{:.3f}"),
            ("ssim", "SSIM", "{:.4f}"), ("psnr", "PSNR dB", "{:.2f}"),
            ("structure", "structure", "{:.3f}"), ("identity", "identity", "{:.3f}"),
            ("hist_w1_db", "W1 dB", "{:.3f}"), ("mean_db", "mean dB", "{:.2f}"),
            ("speckle_cv", "CV", "{:.3f}"), ("speckle_cv_ratio", "CV ratio", "{:.3f}"),
            ("kid", "KID", "{:.4f}"), ("fid", "FID", "{:.2f}"),
            ("radiometry", "radiometry", "{:.4f}"))


def _baseline_label(name: str, m: dict[str, Any]) -> str:
    if name == "best_single" and "feature" in m:
        return f"baseline: best single ({'-' if m['sign'] < 0 else ''}{m['feature']})"
    if name == "linear" and "features" in m:
        return f"baseline: linear ({len(m['features'])} features)"
    return f"baseline: {name}"


def _grid(rows: list[tuple[str, dict[str, Any]]]) -> list[str]:
    cols = [c for c in _COLUMNS if any(c[0] in r for _, r in rows)]
    cells = [["row"] + [c[1] for c in cols]]
    for name, r in rows:
        cells.append([name] + [_fmt(r.get(key), fmt) for key, _, fmt in cols])
    widths = [max(len(c[i]) for c in cells) for i in range(len(cells[0]))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                       for i, (c, w) in enumerate(zip(row, widths, strict=True)))
             for row in cells]
    lines.insert(1, "-" * len(lines[0]))
    return lines


def format_table(report: dict[str, Any]) -> str:
    """A plain-text table: checkpoints by rank, then baselines and the real SAR (one table
    per polarisation when there are several, then the ranking key's means)."""
    ckpts = sorted(report["checkpoints"], key=lambda r: r["rank"])
    pols = report["data"].get("polarisations") or ["SAR"]
    key = report["rank_key"]
    if len(pols) == 1:
        rows = [(f"#{r['rank']} {Path(r['path']).name}", r) for r in ckpts]
        rows += [(_baseline_label(k, v), v) for k, v in report["baselines"].items()]
        rows.append(("real SAR", report["reference"]))
        lines = _grid(rows)
    else:
        lines = []
        for pol in pols:
            rows = [(f"#{r['rank']} {Path(r['path']).name}", r["polarisations"][pol])
                    for r in ckpts]
            rows += [(_baseline_label(k, v["polarisations"][pol]), v["polarisations"][pol])
                     for k, v in report["baselines"].items()]
            rows.append(("real SAR", report["reference"]["polarisations"][pol]))
            lines += [f"{pol}:"] + _grid(rows) + [""]
        rows = [(f"#{r['rank']} {Path(r['path']).name}", r) for r in ckpts]
        rows += [(k if k.startswith("baseline") else f"baseline: {k}", v)
                 for k, v in report["baselines"].items()]
        lines.append(f"mean over {', '.join(pols)}:")
        keys = [k for k in ("corr_box9", "structure", "radiometry")]
        cells = [["row"] + keys] + [[n] + [_fmt(r.get(k), "{:.4f}") for k in keys]
                                    for n, r in rows]
        widths = [max(len(c[i]) for c in cells) for i in range(len(cells[0]))]
        lines += ["  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                            for i, (c, w) in enumerate(zip(row, widths, strict=True)))
                  for row in cells]
    rad = report["radiometry"]
    rng = (", ".join(f"{p} {r}" for p, r in zip(pols, rad["db_ranges"], strict=True))
           if "db_ranges" in rad else str(rad["db_range"]))
    lines.append(f"dB range {rng} (from {', '.join(rad['sources'])}); "
                 f"{report['data']['n_inputs']} inputs, {report['data']['n_real_sar']} real SAR"
                 f"{', paired' if report['data']['paired'] else ', unpaired'}")
    lines.append(f"ranked by {key['name']} ({key['better']} is better): {key['rule']}")
    lines += [f"note: {n}" for n in report["notes"]]
    best = report["best"]
    lines.append(f"best: {best['path']} ({best['key']} {_fmt(best['value'], '{:.4f}')})")
    return "\n".join(lines)


def _fmt(value: Any, fmt: str) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and not math.isfinite(value):
        return "nan"
    return fmt.format(value)


def _finite(obj: Any) -> Any:
    """NaN/inf -> None: JSON has no such numbers (json.dumps would write invalid JSON)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    return obj


def write_json(report: dict[str, Any], path: Path) -> Path:
    """Write the report atomically (temporary name, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(_finite(report), indent=1, allow_nan=False))
    return path


def default_json_path(given: Sequence[Path]) -> Path:
    """Beside a single checkpoint file, inside a single checkpoint folder, else the cwd."""
    if len(given) == 1:
        item = given[0]
        return item / "evaluation.json" if item.is_dir() else \
            item.with_name(f"{item.stem}_evaluation.json")
    return Path.cwd() / "evaluation.json"

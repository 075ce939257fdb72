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

This module reads PNG tiles with PIL and tensors only (no rasters): the tile builder in
``pipeline`` wrote them on the unit dB grid (level / 255 = (dB - lo) / (hi - lo)).
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
from ugatit.device import set_tf32
from ugatit.errors import EvaluationError
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


# ----------------------------------------------------------------------------------------
# Tiles


@dataclass
class EvalData:
    """What a run is evaluated on. ``eo`` feeds the generators; ``sar`` is the real SAR
    (unit dB grid); ``paired`` says ``sar[i]`` is co-registered with ``eo[i]``.

    Lists, not stacked arrays: one folder may hold tiles of several sizes (120 px
    BigEarthNet patches beside 128 and 256 px crops); metrics group tiles by size.
    """

    eo: list[np.ndarray]  # each [H, W, 3] uint8
    eo_names: list[str]
    sar: list[np.ndarray]  # each [H', W'] float64, 0..1
    sar_names: list[str]
    paired: bool
    eo_dir: Path
    sar_dir: Path
    dataset_db_range: tuple[float, float] | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def eo_gray(self) -> list[np.ndarray]:
        """Grayscale of the inputs on 0..1: the mean of R, G, B (the same reduction that
        turns a 3-channel model output into one SAR value, so the two compare like for
        like)."""
        return [t.astype(np.float64).mean(axis=-1) / 255.0 for t in self.eo]

    @property
    def tile_sizes(self) -> list[list[int]]:
        """The distinct [H, W] of the inputs, sorted."""
        return [list(hw) for hw in sorted({t.shape[:2] for t in self.eo})]


def list_pngs(folder: Path, what: str) -> list[Path]:
    """The PNG files of a folder, sorted by name, or a typed error saying what is wrong."""
    if not folder.is_dir():
        raise EvaluationError(f"{folder}: {what} folder not found")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() == ".png"
                   and not p.name.startswith("."))
    if not files:
        raise EvaluationError(f"{folder}: no PNG tiles in the {what} folder")
    return files


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


def _pair(eo: list[Path], sar: list[Path], strict: bool) -> tuple[list[Path], list[Path], bool]:
    """Match EO and SAR tiles by file name. ``strict``: every name must have its partner."""
    a, b = {p.name: p for p in eo}, {p.name: p for p in sar}
    if set(a) == set(b):
        names = sorted(a)
        return [a[n] for n in names], [b[n] for n in names], True
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
              limit: int | None = None) -> EvalData:
    """Tiles of a tile-builder dataset (testA -> generators, testB = real SAR, paired when
    the names match) or of two folders of co-registered tiles of identical names.

    ``limit`` keeps the first N inputs (sorted by name) for quick looks. Tiles may differ
    in size; a pair's two tiles may not (co-registered means the same grid).
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
    eo_p, sar_p, paired = _pair(list_pngs(eo_dir, "EO (A)"), list_pngs(sar_dir, "SAR (B)"),
                                strict)
    notes = [] if paired else [f"{eo_dir.name}/{sar_dir.name} tiles do not pair by name "
                               f"(an unpaired test split): paired metrics (SSIM, PSNR, "
                               f"correlation) skipped; ranked by radiometry"]
    if limit is not None and limit > 0:
        eo_p = eo_p[:limit]
        sar_p = sar_p[:limit]
    eo = read_tiles(eo_p)
    sar = [t[..., 0].astype(np.float64) / 255.0 for t in read_tiles(sar_p)]
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
    return EvalData(eo=eo, eo_names=[p.name for p in eo_p], sar=sar,
                    sar_names=[p.name for p in sar_p], paired=paired, eo_dir=eo_dir,
                    sar_dir=sar_dir, dataset_db_range=read_dataset_db_range(
                        meta / "dataset.json"), notes=notes)


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
             batch_size: int = 16, what: str = "genA2B") -> list[np.ndarray]:
    """Run genA2B on uint8 tiles (any sizes); the SAR guesses on the unit grid, each
    [H, W] float64 at its tile's size.

    The output's three channels are averaged (the trainer's SAR tiles are gray stored as
    RGB) and mapped from [-1, 1] to [0, 1]. Tiles are batched by size.
    """
    out: list[np.ndarray] = [np.empty(0)] * len(eo)
    for (h, w, _), idx in _by_size(eo).items():
        (ph, pw), resize = _fit(net, h, w)
        if isinstance(net, ResnetGenerator):
            size = resize or (h + ph, w + pw)
            try:
                net.check_input(torch.empty(1, 3, *size, device="meta"))
            except ValueError as exc:
                raise EvaluationError(f"{what}: {exc}") from exc
        with torch.inference_mode():
            for i in range(0, len(idx), batch_size):
                part = idx[i:i + batch_size]
                x = torch.from_numpy(np.stack([eo[j] for j in part])).to(device)
                x = x.permute(0, 3, 1, 2).float().div(127.5).sub(1.0)
                if ph or pw:
                    x = torch.nn.functional.pad(x, (0, pw, 0, ph), mode="reflect")
                if resize is not None:
                    x = torch.nn.functional.interpolate(x, size=resize, mode="bilinear",
                                                        align_corners=False, antialias=True)
                y = net(x)[0]
                if resize is not None:
                    y = torch.nn.functional.interpolate(y, size=(h, w), mode="bilinear",
                                                        align_corners=False, antialias=True)
                y = y[:, :, :h, :w].mean(dim=1).add(1.0).div(2.0).clamp(0.0, 1.0)
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


def evaluate(checkpoints: Sequence[Path], data: EvalData, opts: Options,
             log: Callable[[str], None] = lambda s: None) -> dict[str, Any]:
    """Evaluate checkpoints and the baselines on ``data``; the report (JSON-ready dict)."""
    t0 = time.perf_counter()
    apply_precision(opts.device, opts.tf32)
    feats = load_features(opts.features, opts.device, opts.batch_size) if opts.features else None
    refs: dict[tuple[float, float], Reference] = {}
    rows, config = [], None
    key = RANK_KEYS["paired" if data.paired else "unpaired"]["name"]
    for path in checkpoints:
        ck = load_checkpoint(path, device=opts.device, networks=("genA2B",))
        rng, src = resolve_db_range(ck.radiometry, data.dataset_db_range, str(path))
        if rng not in refs:
            refs[rng] = make_reference(data, rng, feats)
        config = config or ck.config
        t1 = time.perf_counter()
        m = row_metrics(generate(ck.genA2B, data.eo, opts.device, opts.batch_size, str(path)),
                        data, refs[rng], feats)
        rows.append({"path": str(path), "step": _step_of(path, ck.meta), "db_range": list(rng),
                     "db_range_source": src, "db_scale": _db_scale(ck.radiometry),
                     "config": ck.config.to_dict(),
                     "seconds": round(time.perf_counter() - t1, 3), **m})
        log(f"{path.name}: {key} {m[key]:.4f} ({rows[-1]['seconds']:.1f} s)")
        del ck
    rng0 = tuple(rows[0]["db_range"])
    ref = refs[rng0]
    rand = random_generator(config, opts.seed, opts.device)
    baselines = {
        "gray": row_metrics(data.eo_gray, data, ref, feats),
        "random": row_metrics(generate(rand, data.eo, opts.device, opts.batch_size), data,
                              ref, feats),
    }
    if data.paired:
        for r in rows:
            r["corr_box9_gain_vs_gray"] = r["corr_box9"] - baselines["gray"]["corr_box9"]
    return _report(rows, baselines, ref, data, opts, time.perf_counter() - t0,
                   sources={r["db_range_source"] for r in rows})


def _db_scale(radiometry: dict[str, Any] | None) -> str | None:
    """The checkpoint's SAR dB scale: "relative" (trained on per-scene SAR stretches: its
    0..1 has no one dB meaning), "absolute", or None when it does not say."""
    value = ((radiometry or {}).get("sar") or {}).get("db_scale")
    return value if isinstance(value, str) else None


def _report(rows: list[dict[str, Any]], baselines: dict[str, dict[str, Any]], ref: Reference,
            data: EvalData, opts: Options, seconds: float, sources: set[str]) -> dict[str, Any]:
    order = rank_order(rows, data.paired)
    for rank, i in enumerate(order, 1):
        rows[i]["rank"] = rank
    rank_key = dict(RANK_KEYS["paired" if data.paired else "unpaired"])
    notes = list(data.notes)
    if len({tuple(r["db_range"]) for r in rows}) > 1:
        notes.append("checkpoints disagree on the SAR dB range: radiometry is not comparable "
                     "across ranges; baselines use the first checkpoint's")
    if data.dataset_db_range and any(tuple(r["db_range"]) != data.dataset_db_range
                                     for r in rows):
        notes.append(f"a checkpoint's dB range differs from dataset.json's "
                     f"{list(data.dataset_db_range)}")
    relative = [Path(r["path"]).name for r in rows if r["db_scale"] == "relative"]
    if relative:
        notes.append(f"relative-dB model(s) ({', '.join(relative)}): trained on per-scene SAR "
                     f"stretches, their output is read on the tiles' dB range; W1 and mean "
                     f"dB then measure brightness on that grid, not calibrated dB")
    low = [Path(r["path"]).name for r in rows if not r["structure"] >= STRUCTURE_FLOOR]
    if low and not data.paired:
        notes.append(f"structure below the floor {STRUCTURE_FLOOR} (output ignores its input; "
                     f"ranked last): {', '.join(low)}")
    best = rows[order[0]]
    return {
        "tool": "ugatit evaluate",
        "data": {"eo_dir": str(data.eo_dir), "sar_dir": str(data.sar_dir),
                 "n_inputs": len(data.eo), "n_real_sar": len(data.sar), "paired": data.paired,
                 "tile_px": data.tile_sizes},
        "radiometry": {"db_range": list(ref.db_range), "sources": sorted(sources),
                       "dataset_json_db_range": list(data.dataset_db_range)
                       if data.dataset_db_range else None},
        "options": {"device": str(opts.device), "batch_size": opts.batch_size,
                    "seed": opts.seed, "features": str(opts.features) if opts.features else None,
                    "tf32": opts.tf32},
        "rank_key": {**rank_key, "structure_floor": STRUCTURE_FLOOR},
        "checkpoints": rows,
        "baselines": baselines,
        "reference": reference_row(ref),
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


def format_table(report: dict[str, Any]) -> str:
    """A plain-text table: checkpoints by rank, then baselines and the real SAR."""
    rows = [(f"#{r['rank']} {Path(r['path']).name}", r)
            for r in sorted(report["checkpoints"], key=lambda r: r["rank"])]
    rows += [(f"baseline: {k}", v) for k, v in report["baselines"].items()]
    rows.append(("real SAR", report["reference"]))
    cols = [c for c in _COLUMNS if any(c[0] in r for _, r in rows)]
    cells = [["row"] + [c[1] for c in cols]]
    for name, r in rows:
        cells.append([name] + [_fmt(r.get(key), fmt) for key, _, fmt in cols])
    widths = [max(len(c[i]) for c in cells) for i in range(len(cells[0]))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                       for i, (c, w) in enumerate(zip(row, widths, strict=True)))
             for row in cells]
    lines.insert(1, "-" * len(lines[0]))
    rad = report["radiometry"]
    lines.append(f"dB range {rad['db_range']} (from {', '.join(rad['sources'])}); "
                 f"{report['data']['n_inputs']} inputs, {report['data']['n_real_sar']} real SAR"
                 f"{', paired' if report['data']['paired'] else ', unpaired'}")
    key = report["rank_key"]
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

"""Evaluation of eo2sar checkpoints: load test tiles, run generators, compute metrics,
compare with baselines, rank checkpoints.

GAN outputs swing between checkpoints, so the demo checkpoint is picked by these numbers,
not by the last step. Every number is also computed for two baselines (the input's
grayscale as a SAR guess, and a random-weight generator of the same architecture) and,
where it means something, for the real SAR itself, so that a value can be read against
"doing nothing" and "the target". docs/evaluation.md explains how to read them.

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
from ugatit.errors import EvaluationError
from ugatit.io import atomic_write_text
from ugatit.networks import ResnetGenerator, build_network

#: Bins of the streaming histograms on the unit grid (W1 error <= range / HIST_BINS).
HIST_BINS = 4096
#: Pixels at the ends of the 8-bit grid are clipped or nodata: their speckle is not speckle.
CLIP_MARGIN = 0.5 / 255
#: Smallest tile side: SSIM's 11 px window, and a few 8 px speckle windows.
MIN_TILE_PX = 16
_EIGHT_BIT_MODES = ("L", "LA", "RGB", "RGBA", "P")


# ----------------------------------------------------------------------------------------
# Tiles


@dataclass
class EvalData:
    """What a run is evaluated on. ``eo`` feeds the generators; ``sar`` is the real SAR
    (unit dB grid); ``paired`` says ``sar[i]`` is co-registered with ``eo[i]``."""

    eo: np.ndarray  # [N, H, W, 3] uint8
    eo_names: list[str]
    sar: np.ndarray  # [M, H', W'] float64, 0..1
    sar_names: list[str]
    paired: bool
    eo_dir: Path
    sar_dir: Path
    dataset_db_range: tuple[float, float] | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def eo_gray(self) -> np.ndarray:
        """Grayscale of the inputs on 0..1: the mean of R, G, B (the same reduction that
        turns a 3-channel model output into one SAR value, so the two compare like for
        like)."""
        return self.eo.astype(np.float64).mean(axis=-1) / 255.0


def list_pngs(folder: Path, what: str) -> list[Path]:
    """The PNG files of a folder, sorted by name, or a typed error saying what is wrong."""
    if not folder.is_dir():
        raise EvaluationError(f"{folder}: {what} folder not found")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() == ".png"
                   and not p.name.startswith("."))
    if not files:
        raise EvaluationError(f"{folder}: no PNG tiles in the {what} folder")
    return files


def read_tiles(paths: Sequence[Path]) -> np.ndarray:
    """Stack 8-bit PNGs as uint8 [N, H, W, 3]; all tiles must have one size."""
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
        if arrays[-1].shape != arrays[0].shape:
            raise EvaluationError(f"{p}: tile is {arrays[-1].shape[1]}x{arrays[-1].shape[0]} "
                                  f"px but {paths[0].name} is {arrays[0].shape[1]}x"
                                  f"{arrays[0].shape[0]}: tiles of one set must match")
    return np.stack(arrays)


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

    ``limit`` keeps the first N inputs (sorted by name) for quick looks.
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
                               f"(an unpaired test split): paired metrics (SSIM, PSNR) skipped"]
    if limit is not None and limit > 0:
        eo_p = eo_p[:limit]
        sar_p = sar_p[:limit]
    eo = read_tiles(eo_p)
    sar = read_tiles(sar_p)[..., 0].astype(np.float64) / 255.0
    if min(*eo.shape[1:3], *sar.shape[1:]) < MIN_TILE_PX:
        raise EvaluationError(f"tiles of {eo.shape[2]}x{eo.shape[1]} (EO) and "
                              f"{sar.shape[2]}x{sar.shape[1]} (SAR) px: evaluation needs at "
                              f"least {MIN_TILE_PX} px (SSIM window, speckle windows)")
    if paired and eo.shape[1:3] != sar.shape[1:]:
        raise EvaluationError(f"EO tiles are {eo.shape[2]}x{eo.shape[1]} px but SAR tiles "
                              f"{sar.shape[2]}x{sar.shape[1]}: pairs must be co-registered")
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


# ----------------------------------------------------------------------------------------
# Generators


def generate(net: nn.Module, eo: np.ndarray, device: torch.device,
             batch_size: int = 16, what: str = "genA2B") -> np.ndarray:
    """Run genA2B on uint8 tiles; the SAR guess on the unit grid, [N, H, W] float64.

    The output's three channels are averaged (the trainer's SAR tiles are gray stored as
    RGB) and mapped from [-1, 1] to [0, 1].
    """
    if isinstance(net, ResnetGenerator):
        try:  # tile size vs architecture (full variant: one size; light: multiple of 4)
            net.check_input(torch.empty(1, 3, *eo.shape[1:3], device="meta"))
        except ValueError as exc:
            raise EvaluationError(f"{what}: {exc}") from exc
    out = np.empty(eo.shape[:3], dtype=np.float64)
    with torch.inference_mode():
        for i in range(0, len(eo), batch_size):
            x = torch.from_numpy(eo[i:i + batch_size]).to(device).permute(0, 3, 1, 2)
            x = x.float().div(127.5).sub(1.0)
            y = net(x)[0].mean(dim=1).add(1.0).div(2.0).clamp(0.0, 1.0)
            out[i:i + batch_size] = y.double().cpu().numpy()
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
    features: np.ndarray | None = None


def _valid(u: np.ndarray) -> np.ndarray:
    return (u > CLIP_MARGIN) & (u < 1.0 - CLIP_MARGIN)


def _hist(u: np.ndarray) -> np.ndarray:
    return np.histogram(np.clip(u, 0.0, 1.0), bins=HIST_BINS, range=(0.0, 1.0))[0]


def _speckle(u: np.ndarray, db_range: tuple[float, float]) -> tuple[float, int]:
    return metrics.speckle_cv(metrics.db_to_linear(metrics.unit_to_db(u, db_range)), _valid(u))


FeatureFn = Callable[[np.ndarray], np.ndarray]


def make_reference(data: EvalData, db_range: tuple[float, float],
                   features: FeatureFn | None) -> Reference:
    db = metrics.unit_to_db(data.sar, db_range)
    cv, nwin = _speckle(data.sar, db_range)
    ident = float(metrics.pearson(data.sar, data.eo_gray).mean()) if data.paired else None
    return Reference(db_range=db_range, hist=_hist(data.sar), speckle_cv=cv,
                     speckle_windows=nwin, mean_db=float(db.mean()), std_db=float(db.std()),
                     identity=ident, features=None if features is None else features(data.sar))


def row_metrics(pred: np.ndarray, data: EvalData, ref: Reference,
                features: FeatureFn | None) -> dict[str, Any]:
    """Every metric of one SAR guess (model, baseline) against the real SAR."""
    lo, hi = ref.db_range
    db = metrics.unit_to_db(pred, ref.db_range)
    cv, nwin = _speckle(pred, ref.db_range)
    ident = metrics.pearson(pred, data.eo_gray)
    m: dict[str, Any] = {
        "identity": float(ident.mean()),
        "hist_w1_db": metrics.histogram_wasserstein(_hist(pred), ref.hist, (hi - lo) / HIST_BINS),
        "mean_db": float(db.mean()), "std_db": float(db.std()),
        "speckle_cv": cv, "speckle_windows": nwin,
        "speckle_cv_ratio": cv / ref.speckle_cv if ref.speckle_cv > 0 else math.nan,
        "per_tile": {"names": list(data.eo_names), "identity": ident.round(6).tolist()},
    }
    if data.paired:
        s, p = metrics.ssim(pred, data.sar), metrics.psnr(pred, data.sar)
        m.update(ssim=float(s.mean()), psnr=float(p.mean()))
        m["per_tile"].update(ssim=s.round(6).tolist(), psnr=p.round(4).tolist())
    if features is not None and ref.features is not None:
        f = features(pred)
        if min(len(f), len(ref.features)) >= 2:  # both need a covariance / an off-diagonal
            m.update(kid=metrics.kid(f, ref.features), fid=metrics.fid(f, ref.features))
    m["score"] = score(m, ref)
    return m


def score(m: dict[str, Any], ref: Reference) -> float:
    """One number to rank checkpoints by; lower is better, 0 is the real SAR itself.

    score = W1 / std_real                (histogram off, in units of the real spread)
          + |ln(CV_out / CV_real)|       (speckle too weak or too strong; ln 2 = 0.69)
          + max(0, identity - id_real)   (resembles its optical input more than real SAR
                                          does; id_real = 0 without pairs)
          + (1 - SSIM)                   (paired only)
    Each term is ~0 for a perfect model and ~0.5-1 for a clearly wrong one, so no single
    term dominates. A missing speckle estimate (no homogeneous window) counts as ln 10.
    """
    hist = m["hist_w1_db"] / max(ref.std_db, 1e-6)
    ratio = m["speckle_cv_ratio"]
    speck = abs(math.log(ratio)) if ratio > 0 and math.isfinite(ratio) else math.log(10.0)
    ident = max(0.0, m["identity"] - (ref.identity or 0.0))
    paired = 1.0 - m["ssim"] if "ssim" in m else 0.0
    return float(hist + speck + ident + paired)


def reference_row(ref: Reference) -> dict[str, Any]:
    """The real SAR's own statistics (distances to itself are 0 by definition: left out)."""
    row: dict[str, Any] = {"mean_db": ref.mean_db, "std_db": ref.std_db,
                           "speckle_cv": ref.speckle_cv, "speckle_windows": ref.speckle_windows,
                           "speckle_cv_ratio": 1.0}
    if ref.identity is not None:
        row["identity"] = ref.identity
    return row


# ----------------------------------------------------------------------------------------
# Feature extractor (KID / FID)


def load_features(path: Path, device: torch.device, batch_size: int = 16) -> FeatureFn:
    """A TorchScript model mapping [N, 3, H, W] in [0, 1] to [N, D]; nothing is downloaded.

    SAR guesses are one channel; it is repeated to three, for the real SAR and every row
    alike.
    """
    try:
        with warnings.catch_warnings():  # torch >= 2.9 deprecates TorchScript; still works
            warnings.simplefilter("ignore", DeprecationWarning)
            model = torch.jit.load(str(path), map_location=device).eval()
    except (RuntimeError, ValueError, OSError) as exc:
        raise EvaluationError(f"{path}: not a TorchScript feature extractor "
                              f"({str(exc).splitlines()[0] if str(exc) else exc})") from exc

    def run(u: np.ndarray) -> np.ndarray:
        feats = []
        with torch.inference_mode():
            for i in range(0, len(u), batch_size):
                x = torch.from_numpy(u[i:i + batch_size]).float().to(device)
                f = model(x[:, None].expand(-1, 3, -1, -1).contiguous())
                if f.ndim != 2 or f.shape[0] != x.shape[0]:
                    raise EvaluationError(f"{path}: features of shape {list(f.shape)}, "
                                          f"expected [N, D]")
                feats.append(f.double().cpu().numpy())
        return np.concatenate(feats)

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


def evaluate(checkpoints: Sequence[Path], data: EvalData, opts: Options,
             log: Callable[[str], None] = lambda s: None) -> dict[str, Any]:
    """Evaluate checkpoints and the baselines on ``data``; the report (JSON-ready dict)."""
    t0 = time.perf_counter()
    feats = load_features(opts.features, opts.device, opts.batch_size) if opts.features else None
    refs: dict[tuple[float, float], Reference] = {}
    rows, config = [], None
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
                     "db_range_source": src, "config": ck.config.to_dict(),
                     "seconds": round(time.perf_counter() - t1, 3), **m})
        log(f"{path.name}: score {m['score']:.4f} ({rows[-1]['seconds']:.1f} s)")
        del ck
    rng0 = tuple(rows[0]["db_range"])
    ref = refs[rng0]
    rand = random_generator(config, opts.seed, opts.device)
    baselines = {
        "gray": row_metrics(data.eo_gray, data, ref, feats),
        "random": row_metrics(generate(rand, data.eo, opts.device, opts.batch_size), data,
                              ref, feats),
    }
    return _report(rows, baselines, ref, data, opts, time.perf_counter() - t0,
                   sources={r["db_range_source"] for r in rows})


def _report(rows: list[dict[str, Any]], baselines: dict[str, dict[str, Any]], ref: Reference,
            data: EvalData, opts: Options, seconds: float, sources: set[str]) -> dict[str, Any]:
    order = sorted(range(len(rows)), key=lambda i: (rows[i]["score"], rows[i]["path"]))
    for rank, i in enumerate(order, 1):
        rows[i]["rank"] = rank
    notes = list(data.notes)
    if len({tuple(r["db_range"]) for r in rows}) > 1:
        notes.append("checkpoints disagree on the SAR dB range: scores are not comparable "
                     "across ranges; baselines use the first checkpoint's")
    if data.dataset_db_range and any(tuple(r["db_range"]) != data.dataset_db_range
                                     for r in rows):
        notes.append(f"a checkpoint's dB range differs from dataset.json's "
                     f"{list(data.dataset_db_range)}")
    best = rows[order[0]]
    return {
        "tool": "ugatit evaluate",
        "data": {"eo_dir": str(data.eo_dir), "sar_dir": str(data.sar_dir),
                 "n_inputs": len(data.eo), "n_real_sar": len(data.sar), "paired": data.paired,
                 "tile_px": list(data.eo.shape[1:3])},
        "radiometry": {"db_range": list(ref.db_range), "sources": sorted(sources),
                       "dataset_json_db_range": list(data.dataset_db_range)
                       if data.dataset_db_range else None},
        "options": {"device": str(opts.device), "batch_size": opts.batch_size,
                    "seed": opts.seed, "features": str(opts.features) if opts.features else None},
        "checkpoints": rows,
        "baselines": baselines,
        "reference": reference_row(ref),
        "ranking": [rows[i]["path"] for i in order],
        "best": {"path": best["path"], "score": best["score"], "step": best["step"]},
        "notes": notes,
        "seconds": round(seconds, 3),
    }


# ----------------------------------------------------------------------------------------
# Output


_COLUMNS = (("ssim", "SSIM", "{:.4f}"), ("psnr", "PSNR dB", "{:.2f}"),
            ("identity", "identity", "{:.3f}"), ("hist_w1_db", "W1 dB", "{:.3f}"),
            ("mean_db", "mean dB", "{:.2f}"), ("speckle_cv", "CV", "{:.3f}"),
            ("speckle_cv_ratio", "CV ratio", "{:.3f}"), ("kid", "KID", "{:.4f}"),
            ("fid", "FID", "{:.2f}"), ("score", "score", "{:.4f}"))


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
    lines += [f"note: {n}" for n in report["notes"]]
    lines.append(f"best: {report['best']['path']} (score {report['best']['score']:.4f})")
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

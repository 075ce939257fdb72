"""Metric functions of ``ugatit evaluate``: plain numpy/torch on arrays, no files.

Conventions shared by every function here:
- An image set is a float array ``[N, H, W]`` on the *unit dB grid*: 0..1, where
  ``u = (dB - lo) / (hi - lo)`` for the SAR dB range ``[lo, hi]``. That is the scale the
  training tiles are stored on (level / 255), so SSIM/PSNR use a data range of 1.
- Per-tile functions return one value per tile (``[N]``); callers average.
- Speckle and histogram statistics go back to physical units (dB, linear intensity),
  because "the histogram is off by 2 dB" and "speckle CV 1.0 vs 0.3" are what a SAR user
  reads, and the ratio of CVs is only meaningful in linear intensity.

Why these definitions are written down here and in docs/evaluation.md: GAN checkpoints are
chosen by these numbers, so the numbers must mean the same thing in every run.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from pytorch_msssim import ssim as _msssim_ssim

#: SSIM window (Wang et al. 2004): Gaussian, 11 px, sigma 1.5; K1 = .01, K2 = .03.
SSIM_WIN = 11
SSIM_SIGMA = 1.5
SSIM_K = (0.01, 0.03)
#: PSNR of identical tiles is infinite; cap it so that means and JSON stay finite.
PSNR_CAP_DB = 100.0
#: Speckle windows: non-overlapping SPECKLE_WIN x SPECKLE_WIN px blocks, split in 4 quadrants.
SPECKLE_WIN = 8
#: A window counts only if at least this fraction of its pixels is valid (not clipped).
SPECKLE_MIN_VALID = 0.9
#: Fraction of valid windows kept as "homogeneous": those whose quadrant means agree best.
SPECKLE_KEEP = 0.25


def _as_batch(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 2:
        x = x[None]
    if x.ndim != 3:
        raise ValueError(f"expected an image [H, W] or a set [N, H, W], got shape {x.shape}")
    return x


def _check_same(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x, y = _as_batch(x), _as_batch(y)
    if x.shape != y.shape:
        raise ValueError(f"image sets differ in shape: {x.shape} vs {y.shape}")
    return x, y


def _gauss_win() -> torch.Tensor:
    """The 1-D Gaussian window in float64. pytorch-msssim builds its own in float32, whose
    sum misses 1 by ~1e-7; with C2 = 9e-4 that moves SSIM of flat tiles by ~1e-5."""
    r = torch.arange(SSIM_WIN, dtype=torch.float64) - SSIM_WIN // 2
    g = torch.exp(-(r ** 2) / (2 * SSIM_SIGMA ** 2))
    return (g / g.sum()).reshape(1, 1, 1, -1)  # [C=1, 1, 1, W], as pytorch-msssim wants


def ssim(x: np.ndarray, y: np.ndarray, data_range: float = 1.0) -> np.ndarray:
    """Per-tile SSIM (Wang et al. 2004) of two sets ``[N, H, W]``; ``[N]``.

    pytorch-msssim computes it with the paper's Gaussian window (11 px, sigma 1.5) over
    valid positions only (no padding), as the authors' MATLAB code does. Computed in
    float64: float32 loses ~1e-4 in the variance terms of flat tiles.
    """
    x, y = _check_same(x, y)
    if min(x.shape[1:]) < SSIM_WIN:
        raise ValueError(f"SSIM needs tiles of at least {SSIM_WIN} px, got {x.shape[1:]}")
    tx = torch.from_numpy(x)[:, None]
    ty = torch.from_numpy(y)[:, None]
    val = _msssim_ssim(tx, ty, data_range=data_range, size_average=False, win=_gauss_win(),
                       K=SSIM_K)
    return val.numpy().reshape(-1)


def psnr(x: np.ndarray, y: np.ndarray, data_range: float = 1.0) -> np.ndarray:
    """Per-tile PSNR in dB, ``10 log10(range^2 / MSE)``, capped at PSNR_CAP_DB; ``[N]``."""
    x, y = _check_same(x, y)
    mse = ((x - y) ** 2).reshape(len(x), -1).mean(axis=1)
    floor = data_range ** 2 * 10 ** (-PSNR_CAP_DB / 10)
    return 10 * np.log10(data_range ** 2 / np.maximum(mse, floor))


def pearson(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Per-tile Pearson correlation of pixel values; ``[N]``.

    A constant tile has no defined correlation; it gets 0 (it resembles nothing), so a
    model that outputs flat tiles is not mistaken for one that copies its input.
    """
    x, y = _check_same(x, y)
    xc = x.reshape(len(x), -1)
    yc = y.reshape(len(y), -1)
    xc = xc - xc.mean(axis=1, keepdims=True)
    yc = yc - yc.mean(axis=1, keepdims=True)
    den = np.sqrt((xc ** 2).sum(axis=1) * (yc ** 2).sum(axis=1))
    num = (xc * yc).sum(axis=1)
    out = np.zeros(len(x))
    ok = den > 1e-12
    out[ok] = num[ok] / den[ok]
    return np.clip(out, -1.0, 1.0)


#: Side of the box filter of the paired ranking key and of the structure measure: 9 px
#: averages ~80 pixels, enough to take single-look speckle's pixel-scale noise (CV 1)
#: down to ~0.11 so that what is compared is the backscatter pattern, not the speckle
#: draw (speckle is random: no model can predict it, and unfiltered correlation is
#: capped by it), while field borders, roads and shores at 10 m (a few px) survive.
BOX = 9


def box_filter(x: np.ndarray, size: int = BOX) -> np.ndarray:
    """Mean over ``size`` x ``size`` windows at every *valid* position (no padding, so no
    edge invents values); ``[N, H, W]`` -> ``[N, H - size + 1, W - size + 1]``.

    Summed-area table in float64: exact to ~1e-15 of the values, O(1) per pixel.
    """
    x = _as_batch(x)
    if min(x.shape[1:]) < size:
        raise ValueError(f"box filter of {size} px needs tiles of at least {size} px, "
                         f"got {x.shape[1:]}")
    c = np.zeros((len(x), x.shape[1] + 1, x.shape[2] + 1))
    c[:, 1:, 1:] = x.cumsum(axis=1).cumsum(axis=2)
    s = c[:, size:, size:] - c[:, :-size, size:] - c[:, size:, :-size] + c[:, :-size, :-size]
    return s / (size * size)


def box_pearson(x: np.ndarray, y: np.ndarray, size: int = BOX) -> np.ndarray:
    """Per-tile Pearson correlation of the two sets after a ``size`` px box filter; ``[N]``.

    Pearson is invariant to a positive linear map of either side, so on the unit dB grid
    it is the correlation in dB (u = (dB - lo) / (hi - lo)). With real SAR this is "is the
    output bright where the radar is bright", speckle averaged away.
    """
    x, y = _check_same(x, y)
    return pearson(box_filter(x, size), box_filter(y, size))


def gradient_magnitude(x: np.ndarray) -> np.ndarray:
    """|grad| by central differences, interior pixels only; ``[N, H - 2, W - 2]``."""
    x = _as_batch(x)
    gx = (x[:, 1:-1, 2:] - x[:, 1:-1, :-2]) / 2.0
    gy = (x[:, 2:, 1:-1] - x[:, :-2, 1:-1]) / 2.0
    return np.hypot(gx, gy)


def structure(x: np.ndarray, y: np.ndarray, size: int = BOX) -> np.ndarray:
    """Per-tile "structure kept": Pearson correlation of the gradient magnitudes of the two
    sets, each box-filtered by ``size`` px first; ``[N]``.

    Edges (shores, field borders, roads, buildings' outlines) are where an optical image
    and its SAR twin agree, whatever the brightness of either side: SAR inverts or
    flattens brightness (dark water, bright towns) but keeps the boundaries. Gradient
    magnitude is blind to the sign of an edge, so an output that is dark where its input
    is bright still keeps structure, while one that paints texture regardless of its
    input scores ~0. The box filter first keeps speckle (pixel-scale gradients of a
    random field) from swamping the edges.
    """
    x, y = _check_same(x, y)
    return pearson(gradient_magnitude(box_filter(x, size)),
                   gradient_magnitude(box_filter(y, size)))


def unit_to_db(u: np.ndarray, db_range: tuple[float, float]) -> np.ndarray:
    """Unit dB grid (level / 255) -> dB."""
    lo, hi = db_range
    return lo + np.asarray(u, dtype=np.float64) * (hi - lo)


def db_to_linear(db: np.ndarray) -> np.ndarray:
    """dB -> linear intensity (power): 10^(dB/10)."""
    return np.power(10.0, np.asarray(db, dtype=np.float64) / 10.0)


def wasserstein_1d(u: np.ndarray, v: np.ndarray) -> float:
    """Exact 1-D Wasserstein-1 distance between two samples: integral of |F_u - F_v|.

    In the samples' own units (dB when given dB). Used directly for small samples and in
    tests; ``histogram_wasserstein`` is the streaming form used on whole image sets.
    """
    u = np.sort(np.asarray(u, dtype=np.float64).ravel())
    v = np.sort(np.asarray(v, dtype=np.float64).ravel())
    if not len(u) or not len(v):
        raise ValueError("Wasserstein distance of an empty sample")
    allv = np.concatenate([u, v])
    allv.sort()
    deltas = np.diff(allv)
    cdf_u = np.searchsorted(u, allv[:-1], side="right") / len(u)
    cdf_v = np.searchsorted(v, allv[:-1], side="right") / len(v)
    return float(np.sum(np.abs(cdf_u - cdf_v) * deltas))


def histogram_wasserstein(counts_a: np.ndarray, counts_b: np.ndarray, bin_width: float) -> float:
    """Wasserstein-1 distance between two histograms on the same regular bins.

    Exact for samples at bin centres; otherwise off by at most one bin width. Histograms
    let whole test sets stream through without keeping every pixel.
    """
    a = np.asarray(counts_a, dtype=np.float64)
    b = np.asarray(counts_b, dtype=np.float64)
    if a.shape != b.shape or a.sum() <= 0 or b.sum() <= 0:
        raise ValueError("histograms must have the same bins and be non-empty")
    return float(np.abs(np.cumsum(a / a.sum()) - np.cumsum(b / b.sum())).sum() * bin_width)


def speckle_windows(intensity: np.ndarray, valid: np.ndarray | None = None,
                    win: int = SPECKLE_WIN,
                    min_valid: float = SPECKLE_MIN_VALID) -> tuple[np.ndarray, np.ndarray]:
    """Per-window (CV^2, heterogeneity) of non-overlapping ``win`` x ``win`` blocks.

    CV^2 = var (ddof 1) / mean^2 of linear intensity in the window. Heterogeneity =
    (max - min) / mean of the window's four quadrant means: an edge, a field border or a
    gradient makes quadrants disagree, while speckle (a pixel-scale process) averages out
    within each quadrant. Windows with fewer than ``min_valid`` valid pixels are dropped;
    in the others, invalid (clipped) pixels count at their clipped value: 1-look speckle
    in dark areas dips below the dB range's floor every few pixels, so dropping every
    window that touches the floor would keep only bright ground.
    """
    x = _as_batch(intensity)
    n, h, w = x.shape
    hh, ww = (h // win) * win, (w // win) * win
    blocks = x[:, :hh, :ww].reshape(n, hh // win, win, ww // win, win).transpose(0, 1, 3, 2, 4)
    blocks = blocks.reshape(-1, win, win)
    if valid is not None:
        vb = _as_batch(valid)[:, :hh, :ww].reshape(n, hh // win, win, ww // win, win)
        frac = vb.transpose(0, 1, 3, 2, 4).reshape(-1, win * win).mean(axis=1)
        keep = frac >= min_valid
        blocks = blocks[keep]
    flat = blocks.reshape(len(blocks), win * win)
    mean = flat.mean(axis=1)
    ok = mean > 0
    flat, blocks, mean = flat[ok], blocks[ok], mean[ok]
    cv2 = flat.var(axis=1, ddof=1) / mean ** 2
    q = win // 2
    quads = blocks.reshape(len(blocks), 2, q, 2, q).mean(axis=(2, 4)).reshape(len(blocks), 4)
    het = (quads.max(axis=1) - quads.min(axis=1)) / mean
    return cv2, het


def speckle_cv(intensity: np.ndarray, valid: np.ndarray | None = None,
               win: int = SPECKLE_WIN, keep: float = SPECKLE_KEEP) -> tuple[float, int]:
    """Speckle coefficient of variation of linear intensity in homogeneous windows.

    "Homogeneous" is relative, not a fixed threshold: the ``keep`` fraction of valid
    windows whose quadrant means agree best (see ``speckle_windows``). A fixed threshold
    would have to depend on the speckle strength being measured (1-look speckle makes
    quadrant means of 16 px differ by ~50 %); a rank does not, and real SAR and model
    outputs are screened by the same rule. The CV is the RMS over kept windows of each
    window's own CV (each window normalised by its own mean, so brightness differences
    between windows do not count as speckle). Fully developed 1-look speckle gives ~1,
    L-look 1/sqrt(L), a speckle-free (smooth) image ~0.

    Returns (cv, number of windows used); cv is NaN when no window qualifies.
    """
    cv2, het = speckle_windows(intensity, valid, win)
    if not len(cv2):
        return math.nan, 0
    n_keep = max(1, int(round(keep * len(cv2))))
    idx = np.argsort(het, kind="stable")[:n_keep]
    return float(np.sqrt(cv2[idx].mean())), int(n_keep)


# ----------------------------------------------------------------------------------------
# Feature-based distances (only with a user-supplied feature extractor)


def _poly_kernel(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a @ b.T / a.shape[1] + 1.0) ** 3


def kid(fx: np.ndarray, fy: np.ndarray, subsets: int = 10, subset_size: int = 1000,
        seed: int = 0) -> float:
    """Kernel Inception Distance (Binkowski et al. 2018): unbiased MMD^2 with the cubic
    polynomial kernel k(a, b) = (a.b / d + 1)^3, averaged over random subsets.

    Unbiased, so it is ~0 (and may be slightly negative) for two samples of one
    distribution, unlike FID, which is biased upwards for small sets.
    """
    fx = np.asarray(fx, dtype=np.float64)
    fy = np.asarray(fy, dtype=np.float64)
    m = min(len(fx), len(fy), subset_size)
    if m < 2:
        raise ValueError("KID needs at least 2 samples in each set")
    rng = np.random.default_rng(seed)
    vals = []
    for _ in range(subsets):
        x = fx[rng.choice(len(fx), m, replace=False)]
        y = fy[rng.choice(len(fy), m, replace=False)]
        kxx, kyy, kxy = _poly_kernel(x, x), _poly_kernel(y, y), _poly_kernel(x, y)
        off = m * (m - 1)
        vals.append((kxx.sum() - np.trace(kxx)) / off + (kyy.sum() - np.trace(kyy)) / off
                    - 2 * kxy.mean())
    return float(np.mean(vals))


def _sqrt_psd(c: torch.Tensor) -> torch.Tensor:
    w, v = torch.linalg.eigh(c)
    return (v * w.clamp(min=0).sqrt()) @ v.T


def fid(fx: np.ndarray, fy: np.ndarray) -> float:
    """Frechet distance between Gaussians fitted to two feature sets (Heusel et al. 2017):
    |mu_x - mu_y|^2 + tr(Cx + Cy - 2 (Cx^1/2 Cy Cx^1/2)^1/2).

    The matrix square root goes through symmetric eigendecompositions in float64 (no
    scipy): Cx^1/2 Cy Cx^1/2 is symmetric PSD, and its square root has the same trace as
    (Cx Cy)^1/2.
    """
    x = torch.as_tensor(np.asarray(fx), dtype=torch.float64)
    y = torch.as_tensor(np.asarray(fy), dtype=torch.float64)
    if len(x) < 2 or len(y) < 2:
        raise ValueError("FID needs at least 2 samples in each set")
    cx, cy = torch.cov(x.T).reshape(x.shape[1], -1), torch.cov(y.T).reshape(y.shape[1], -1)
    sx = _sqrt_psd(cx)
    mid = sx @ cy @ sx
    tr_sqrt = torch.linalg.eigvalsh((mid + mid.T) / 2).clamp(min=0).sqrt().sum()
    d = ((x.mean(0) - y.mean(0)) ** 2).sum() + torch.trace(cx) + torch.trace(cy) - 2 * tr_sqrt
    return float(d.clamp(min=0))


# ----------------------------------------------------------------------------------------
# Baselines "a spreadsheet could do": spectral indices and a per-pixel linear regression
# (ugatit.evaluate and pipeline evaluate-pairs share these definitions).


def normalized_difference(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``(a - b) / (a + b)`` of two reflectance arrays; 0 where ``a + b`` is ~0 (no
    signal, e.g. fill pixels: no index can be read there). In [-1, 1] for reflectances
    >= 0."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    s = a + b
    ok = np.abs(s) > 1e-9
    return np.where(ok, (a - b) / np.where(ok, s, 1.0), 0.0)


def ndvi(red: np.ndarray, nir: np.ndarray) -> np.ndarray:
    """NDVI = (nir - red) / (nir + red) (Rouse et al. 1974): high on vegetation, ~0 on
    soil and towns, negative on water."""
    return normalized_difference(nir, red)


def ndwi(green: np.ndarray, nir: np.ndarray) -> np.ndarray:
    """NDWI = (green - nir) / (green + nir) (McFeeters 1996): positive on open water.
    Water is dark in SAR, so NDWI correlates NEGATIVELY with VV backscatter."""
    return normalized_difference(green, nir)


class LinearFit:
    """Least squares with intercept, ``y ~ c0 + sum_j c_j x_j``, accumulated tile by tile
    through the normal equations in float64 (exact least squares without holding every
    pixel: ``X'X`` is (F+1) x (F+1)). Features are centred and scaled by running sums
    inside ``solve`` (the system is solved on standardised features with ``lstsq``, so
    correlated bands do not blow up the conditioning)."""

    def __init__(self, n_features: int) -> None:
        self.n_features = n_features
        self.xtx = np.zeros((n_features + 1, n_features + 1))
        self.xty = np.zeros(n_features + 1)
        self.yty = 0.0
        self.n = 0

    def add(self, features: np.ndarray, target: np.ndarray) -> None:
        """``features`` [F, ...] and ``target`` [...] of the pixels to fit (already
        restricted to valid pixels; any shape, flattened)."""
        x = np.asarray(features, dtype=np.float64).reshape(self.n_features, -1)
        y = np.asarray(target, dtype=np.float64).ravel()
        if x.shape[1] != y.size:
            raise ValueError(f"{x.shape[1]} feature pixels but {y.size} target pixels")
        xa = np.concatenate([np.ones((1, y.size)), x])
        self.xtx += xa @ xa.T
        self.xty += xa @ y
        self.yty += float(y @ y)
        self.n += int(y.size)

    def solve(self) -> np.ndarray:
        """Coefficients ``[c0, c1, ..., cF]`` (intercept first). A feature constant over
        the fitting pixels gets 0 (minimum-norm solution)."""
        if self.n < self.n_features + 1:
            raise ValueError(f"{self.n} pixels cannot fit {self.n_features + 1} coefficients")
        mean = self.xtx[0, 1:] / self.n
        cov = self.xtx[1:, 1:] / self.n - np.outer(mean, mean)
        xy = self.xty[1:] / self.n - mean * self.xty[0] / self.n
        scale = np.sqrt(np.clip(np.diag(cov), 0.0, None))
        ok = scale > 1e-12 * max(1.0, float(np.abs(mean).max(initial=0.0)))
        coef = np.zeros(self.n_features)
        if ok.any():
            s = scale[ok]
            c = cov[np.ix_(ok, ok)] / np.outer(s, s)
            b = np.linalg.lstsq(c, xy[ok] / s, rcond=1e-10)[0]
            coef[ok] = b / s
        return np.concatenate([[self.xty[0] / self.n - mean @ coef], coef])


def linear_predict(coef: np.ndarray, features: np.ndarray) -> np.ndarray:
    """``c0 + sum_j c_j x_j`` for ``features`` [F, ...] -> [...]."""
    x = np.asarray(features, dtype=np.float64)
    return coef[0] + np.tensordot(coef[1:], x, axes=(0, 0))

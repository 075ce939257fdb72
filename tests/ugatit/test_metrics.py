"""ugatit.metrics on known values: each metric against a case whose answer is known in
closed form, or against an independent implementation written here from the paper."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ugatit import metrics


def _ssim_reference(x: np.ndarray, y: np.ndarray, data_range: float = 1.0) -> float:
    """SSIM written from Wang et al. 2004 / their MATLAB ssim_index.m: an 11x11 Gaussian
    window (sigma 1.5, normalised), 'valid' filtering, K = (.01, .03), mean of the map.
    Direct 2-D sums, no separable trick and no library: independent of pytorch-msssim."""
    r = np.arange(11) - 5
    g = np.exp(-(r[:, None] ** 2 + r[None, :] ** 2) / (2 * 1.5 ** 2))
    g /= g.sum()

    def filt(a: np.ndarray) -> np.ndarray:
        h, w = a.shape[0] - 10, a.shape[1] - 10
        return np.array([[np.sum(a[i:i + 11, j:j + 11] * g) for j in range(w)]
                         for i in range(h)])

    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mx, my = filt(x), filt(y)
    sxx, syy, sxy = filt(x * x) - mx ** 2, filt(y * y) - my ** 2, filt(x * y) - mx * my
    m = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx ** 2 + my ** 2 + c1) * (sxx + syy + c2))
    return float(m.mean())


def test_ssim_identical_is_one_and_matches_independent_reference() -> None:
    rng = np.random.default_rng(1)
    x = rng.random((2, 24, 28))
    assert metrics.ssim(x, x) == pytest.approx([1.0, 1.0], abs=1e-12)
    # A structured image and a noisy, darkened copy: SSIM well inside (0, 1).
    yy, xx = np.mgrid[:24, :28]
    a = 0.5 + 0.3 * np.sin(xx / 3.0) * np.cos(yy / 4.0)
    b = np.clip(0.8 * a + 0.05 + rng.normal(0, 0.05, a.shape), 0, 1)
    got = metrics.ssim(np.stack([a, x[0]]), np.stack([b, x[1]]))
    want = [_ssim_reference(a, b), _ssim_reference(x[0], x[1])]
    # Both compute the same sums in float64; only summation order differs.
    assert got == pytest.approx(want, abs=1e-9)
    assert 0.2 < got[0] < 0.95


def test_ssim_of_constant_images_has_closed_form() -> None:
    # Flat images: variances and covariance are 0, so SSIM = luminance term only.
    a, b = 0.3, 0.6
    c1 = 0.01 ** 2
    want = (2 * a * b + c1) / (a * a + b * b + c1)
    got = metrics.ssim(np.full((16, 16), a), np.full((16, 16), b))
    assert got[0] == pytest.approx(want, rel=1e-9)


def test_ssim_rejects_tiles_smaller_than_the_window() -> None:
    with pytest.raises(ValueError, match="at least 11"):
        metrics.ssim(np.zeros((8, 8)), np.zeros((8, 8)))


def test_psnr_of_known_noise() -> None:
    x = np.full((3, 16, 16), 0.5)
    # Noise of exactly +-0.01 (alternating sign): MSE = 1e-4, PSNR = 40 dB.
    noise = 0.01 * np.where((np.indices((16, 16)).sum(0) % 2) == 0, 1.0, -1.0)
    assert metrics.psnr(x, x + noise) == pytest.approx([40.0] * 3, abs=1e-9)
    # Gaussian noise sigma 0.1: 20 dB, within the MSE estimate's error for 4096 px
    # (relative sd sqrt(2/4096) = 2.2 % of MSE -> 0.1 dB; 0.3 dB is three sd).
    rng = np.random.default_rng(0)
    y = rng.random((1, 64, 64))
    assert metrics.psnr(y, y + rng.normal(0, 0.1, y.shape))[0] == pytest.approx(20.0, abs=0.3)
    assert metrics.psnr(y, y)[0] == metrics.PSNR_CAP_DB


def test_pearson_known_values() -> None:
    rng = np.random.default_rng(2)
    x = rng.random((1, 10, 10))
    assert metrics.pearson(x, 2 * x + 3)[0] == pytest.approx(1.0, abs=1e-12)
    assert metrics.pearson(x, 1 - x)[0] == pytest.approx(-1.0, abs=1e-12)
    assert metrics.pearson(x, np.full_like(x, 0.4))[0] == 0.0  # flat output: defined as 0


def test_wasserstein_of_a_shift_is_the_shift() -> None:
    rng = np.random.default_rng(3)
    u = rng.normal(-12.0, 3.0, 5000)
    assert metrics.wasserstein_1d(u, u + 2.5) == pytest.approx(2.5, abs=1e-9)
    assert metrics.wasserstein_1d(u, u) == 0.0
    # Two point masses: all mass moves 1 unit.
    assert metrics.wasserstein_1d([0, 0], [1, 1, 1]) == pytest.approx(1.0)


def test_histogram_wasserstein_matches_exact_within_a_bin() -> None:
    rng = np.random.default_rng(4)
    u, v = rng.random(20000) * 0.5, rng.random(30000) * 0.5 + 0.1
    bins = 1000
    hu = np.histogram(u, bins=bins, range=(0, 1))[0]
    hv = np.histogram(v, bins=bins, range=(0, 1))[0]
    assert metrics.histogram_wasserstein(hu, hv, 1 / bins) == pytest.approx(
        metrics.wasserstein_1d(u, v), abs=1 / bins)
    # A shift by a whole number of bins is exact.
    shifted = np.roll(hu, 100)
    assert metrics.histogram_wasserstein(hu, shifted, 1 / bins) == pytest.approx(0.1)


def test_speckle_cv_of_exponential_speckle_is_one() -> None:
    rng = np.random.default_rng(5)
    # Fully developed 1-look speckle: exponential intensity, CV 1. Measured on 8x8 windows,
    # keeping the quarter whose quadrant means agree best: that screening removes a little
    # true speckle variance too (quadrant means carry 3/63 of it), so ~0.96; tolerance 0.07.
    one_look = rng.exponential(1.0, (10, 128, 128))
    cv, n = metrics.speckle_cv(one_look)
    assert cv == pytest.approx(1.0, abs=0.07)
    assert n == round(0.25 * 10 * 16 * 16)
    # 4-look (gamma, shape 4): CV 1/sqrt(4) = 0.5.
    assert metrics.speckle_cv(rng.gamma(4.0, 0.25, (10, 128, 128)))[0] == pytest.approx(
        0.5, abs=0.04)
    # No speckle: 0.
    assert metrics.speckle_cv(np.full((2, 32, 32), 3.0))[0] == 0.0


def test_speckle_cv_ignores_edges_and_invalid_pixels() -> None:
    rng = np.random.default_rng(6)
    # Fields 100x brighter than their neighbours, in 12 px stripes: half of the 8 px
    # windows hold an edge (CV^2 ~2 there), so plain CV over all windows is ~1.25; the
    # homogeneous quarter is edge-free and gives the speckle's own CV.
    scene = np.where((np.arange(128) // 12) % 2 == 0, 100.0, 1.0)[None, None, :]
    img = rng.exponential(1.0, (10, 128, 128)) * scene
    cv2, _ = metrics.speckle_windows(img)
    assert math.sqrt(cv2.mean()) > 1.2
    assert metrics.speckle_cv(img)[0] == pytest.approx(1.0, abs=0.1)
    # Invalid pixels drop their windows; nothing valid -> NaN.
    valid = np.ones(img.shape, dtype=bool)
    valid[:, :8, :] = False
    valid[:, 8, ::8] = False  # 1 pixel of 64 in each window of the next row: kept
    valid[:, 16:18, :] = False  # 16 of 64 in the row after: dropped
    assert metrics.speckle_windows(img, valid)[0].size == 10 * 14 * 16
    cv, n = metrics.speckle_cv(img, np.zeros(img.shape, dtype=bool))
    assert math.isnan(cv) and n == 0


def test_db_conversions() -> None:
    assert metrics.unit_to_db(np.array([0.0, 0.5, 1.0]), (-25, 0)) == pytest.approx(
        [-25, -12.5, 0])
    assert metrics.db_to_linear(np.array([-10.0, 0.0, 10.0])) == pytest.approx([0.1, 1, 10])


def test_kid_and_fid_known_behaviour() -> None:
    rng = np.random.default_rng(7)
    x, x2 = rng.normal(0, 1, (300, 8)), rng.normal(0, 1, (300, 8))
    shifted = x2 + 1.0
    # Same distribution: KID ~0 (unbiased; estimator sd ~1e-2 at n = 300), shifted: large.
    same, far = metrics.kid(x, x2), metrics.kid(x, shifted)
    assert abs(same) < 0.05 and far > 1.0
    # FID of a set with itself is exactly 0; a mean shift of 1 in 8 dims adds |d|^2 = 8.
    assert metrics.fid(x, x) == pytest.approx(0.0, abs=1e-8)
    assert metrics.fid(x, x + 1.0) == pytest.approx(8.0, abs=1e-6)
    # Scaling by 2: means m, 2m and covariances C, 4C give |m|^2 + tr(C + 4C - 2 * 2C)
    # = |m|^2 + tr(C) (C^1/2 and 4C commute).
    m, c = x.mean(0), np.cov(x.T)
    assert metrics.fid(x, 2 * x) == pytest.approx(m @ m + np.trace(c), rel=1e-9)


def test_box_filter_is_the_valid_window_mean() -> None:
    rng = np.random.default_rng(3)
    x = rng.random((2, 13, 17))
    got = metrics.box_filter(x, 9)
    assert got.shape == (2, 5, 9)
    want = np.array([[[x[n, i:i + 9, j:j + 9].mean() for j in range(9)] for i in range(5)]
                     for n in range(2)])
    # Summed-area table vs direct sums of the same 81 float64 values: rounding only.
    np.testing.assert_allclose(got, want, atol=1e-13)
    with pytest.raises(ValueError, match="at least 9 px"):
        metrics.box_filter(x[:, :8], 9)


def test_box_pearson_is_unit_free_and_sees_through_speckle() -> None:
    """Pearson is invariant to positive linear maps: on the unit dB grid it equals the
    correlation in dB. A scene under fresh 1-look speckle correlates far better with its
    clean self after the 9x9 filter than before."""
    rng = np.random.default_rng(4)
    yy, xx = np.mgrid[:64, :64]
    clean_db = -15 + 6 * np.sin(xx / 9.0) * np.cos(yy / 11.0)
    noisy_db = 10 * np.log10(10 ** (clean_db / 10) * rng.exponential(1.0, clean_db.shape))
    unit = (noisy_db + 25) / 25
    assert metrics.box_pearson(unit, clean_db)[0] == pytest.approx(
        metrics.box_pearson(noisy_db, clean_db)[0], abs=1e-12)
    raw = metrics.pearson(noisy_db, clean_db)[0]
    box = metrics.box_pearson(noisy_db, clean_db)[0]
    # 1-look speckle in dB has std 5.6 dB against a 6 dB pattern: raw r ~ 0.5; 81-pixel
    # means cut the noise ~9x: r > 0.9.
    assert raw < 0.7 and box > 0.9


def test_structure_is_sign_blind_and_zero_for_input_free_texture() -> None:
    rng = np.random.default_rng(6)
    yy, xx = np.mgrid[:96, :96]
    optical = (0.3 + 0.4 * (np.hypot(xx - 40, yy - 50) < 25)
               + 0.2 * (xx > 70)).astype(float)  # a lake and a field border
    inverted = 1.0 - optical  # SAR-like: dark where the optical is bright
    assert metrics.structure(inverted, optical)[0] == pytest.approx(1.0, abs=1e-12)
    painted = rng.exponential(1.0, (8, 96, 96))  # texture that ignores the input
    s = metrics.structure(painted, np.repeat(optical[None], 8, 0))
    # Independent fields: mean correlation ~0, one tile's spread ~1/sqrt(effective
    # samples) ~0.1 at this size; 8 tiles' mean within 0.1.
    assert abs(s.mean()) < 0.1


# ----------------------------------------------------------------------------------------
# Baselines: indices and the linear regression


def test_ndvi_ndwi_on_hand_values() -> None:
    red, green, nir = np.array([0.1, 0.05, 0.0]), np.array([0.2, 0.3, 0.0]), \
        np.array([0.3, 0.02, 0.0])
    # (0.3 - 0.1) / 0.4 = 0.5; (0.02 - 0.05) / 0.07; no signal -> 0, not NaN
    np.testing.assert_allclose(metrics.ndvi(red, nir), [0.5, -0.03 / 0.07, 0.0], atol=1e-12)
    # NDWI = (green - nir) / (green + nir): water (low NIR) positive
    np.testing.assert_allclose(metrics.ndwi(green, nir), [-0.2, 0.28 / 0.32, 0.0], atol=1e-12)


def test_linear_fit_recovers_known_coefficients_chunk_by_chunk() -> None:
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 0.5, (3, 4000))
    x[2] = 0.7 * x[0] + 0.3 * rng.uniform(0, 0.5, 4000)  # correlated bands, as in optics
    y = -14.0 + 8.0 * x[0] - 20.0 * x[1] + 5.0 * x[2]
    fit = metrics.LinearFit(3)
    for part in np.array_split(np.arange(4000), 7):  # tiles of several sizes
        fit.add(x[:, part], y[part])
    coef = fit.solve()
    # exact data: float64 normal equations on standardised features, error ~1e-10
    np.testing.assert_allclose(coef, [-14.0, 8.0, -20.0, 5.0], atol=1e-8)
    np.testing.assert_allclose(metrics.linear_predict(coef, x), y, atol=1e-8)
    # with noise it is the ordinary least-squares solution (numpy's, on stacked pixels)
    yn = y + rng.normal(0, 1.0, y.shape)
    fit = metrics.LinearFit(3)
    fit.add(x, yn)
    ref = np.linalg.lstsq(np.vstack([np.ones(4000), x]).T, yn, rcond=None)[0]
    np.testing.assert_allclose(fit.solve(), ref, atol=1e-8)


def test_linear_fit_constant_feature_and_too_few_pixels() -> None:
    x = np.vstack([np.linspace(0, 1, 50), np.full(50, 0.3)])
    fit = metrics.LinearFit(2)
    fit.add(x, 2.0 + 3.0 * x[0])
    # a feature constant over the fitting pixels says nothing: coefficient 0, intercept
    # takes its mean
    np.testing.assert_allclose(fit.solve(), [2.0, 3.0, 0.0], atol=1e-10)
    few = metrics.LinearFit(2)
    few.add(x[:, :2], np.zeros(2))
    with pytest.raises(ValueError, match="cannot fit"):
        few.solve()

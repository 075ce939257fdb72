"""Tests for pipeline.metrics.seam_ratio.

Reference numbers: for iid Gaussian noise of std 1, the difference of two pixels is
N(0, 2), whose mean absolute value is 2 / sqrt(pi) = 1.1284. A step of d = 10 on top of
it gives E|10 + N(0, 2)| = 10.000 (the correction, 2 * sqrt(2) * phi(10 / sqrt(2)) terms,
is ~1e-11). So a grid of +10 steps on unit noise has a seam ratio of 10 / 1.1284 = 8.862.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from pipeline.metrics import boundary_lines, seam_ratio

SIZE = 512
TILE = 64


def _smooth_field(size: int, sigma: float, seed: int) -> np.ndarray:
    """Periodic Gaussian-filtered white noise (FFT), no preferred positions, no scipy."""
    rng = np.random.default_rng(seed)
    noise = rng.standard_normal((size, size))
    f = np.fft.fftfreq(size)
    kernel = np.exp(-2.0 * (math.pi * sigma) ** 2 * (f[:, None] ** 2 + f[None, :] ** 2))
    return np.real(np.fft.ifft2(np.fft.fft2(noise) * kernel))


def _tile_edges(length: int, tile: int, overlap: int) -> list[int]:
    """Tile starts and ends inside (0, length), listed tile by tile (independent of the
    modular arithmetic in boundary_lines)."""
    stride = tile - overlap
    edges: set[int] = set()
    start = 0
    while start < length:
        edges.update(e for e in (start, start + tile) if 0 < e < length)
        start += stride
    return sorted(edges)


def _stepped(size: int, tile: int, overlap: int, d: float, seed: int) -> np.ndarray:
    """Unit iid noise plus +d at every tile edge line, in both directions."""
    steps = np.zeros(size)
    for e in _tile_edges(size, tile, overlap):
        steps[e:] += d
    rng = np.random.default_rng(seed)
    return rng.standard_normal((size, size)) + steps[:, None] + steps[None, :]


EXPECTED_STEP_RATIO = 10.0 / (2.0 / math.sqrt(math.pi))  # 8.862, see module docstring


def test_boundary_lines_match_tile_edges() -> None:
    for overlap in (0, 16, 32):
        mask = boundary_lines(300, TILE, overlap)
        assert list(np.flatnonzero(mask)) == _tile_edges(300, TILE, overlap)


def test_linear_ramp_is_exactly_one() -> None:
    # every horizontal and every vertical difference is 1: nothing distinguishes any line
    y, x = np.mgrid[0:SIZE, 0:300]
    assert seam_ratio((x + y).astype(np.float32), TILE, 16) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("overlap", [0, 32])
def test_smooth_field_is_about_one(overlap: int) -> None:
    # Correlation length ~8 px, so the ~14 boundary lines of 512 px hold ~900 independent
    # differences: the relative standard error of their mean is ~0.75/30 = 2.5 %. 0.1 is
    # four standard errors (and the value is deterministic for the seed).
    img = _smooth_field(SIZE, sigma=8.0, seed=1)
    assert seam_ratio(img, TILE, overlap) == pytest.approx(1.0, abs=0.1)


def test_flat_image_is_one() -> None:
    assert seam_ratio(np.full((100, 100), 7.0), 32, 0) == 1.0


@pytest.mark.parametrize("overlap", [0, 16])
def test_step_at_every_tile_edge_is_large(overlap: int) -> None:
    # ~7-14 lines x 512 px x 2 directions >= 7000 boundary pairs: the standard error of the
    # boundary mean is sqrt(2)/sqrt(7000) = 0.017 on 10, so 1 % relative is > 5 SE.
    img = _stepped(SIZE, TILE, overlap, d=10.0, seed=2)
    assert seam_ratio(img, TILE, overlap) == pytest.approx(EXPECTED_STEP_RATIO, rel=0.01)


@pytest.mark.parametrize("overlap", [0, 16])
def test_local_reference_sees_the_same_steps(overlap: int) -> None:
    # neighbouring lines of unit noise have the same mean |difference| as all lines
    img = _stepped(SIZE, TILE, overlap, d=10.0, seed=2)
    assert seam_ratio(img, TILE, overlap, near=4) == pytest.approx(EXPECTED_STEP_RATIO,
                                                                   rel=0.02)


def test_local_reference_removes_texture_heterogeneity() -> None:
    # Noise whose amplitude is 1 on the tile lines and up to 9 between them (calm water on
    # the grid, a busy town between): no seam, yet the global ratio is far below 1
    # (boundary pairs have amplitude ~1, the average pair ~5). Near the lines (<= 2 px) the
    # amplitude is 1 + 8 * sin^2(pi * 2 / 64) <= 1.08, so the local ratio is within ~5 %
    # of 1 (plus sampling noise: >= 7000 pairs per set, ~1 %).
    rng = np.random.default_rng(10)
    x = np.arange(SIZE)
    amp = 1.0 + 8.0 * np.sin(np.pi * x / TILE) ** 2
    img = rng.standard_normal((SIZE, SIZE)) * np.sqrt(amp[:, None] * amp[None, :])
    assert seam_ratio(img, TILE, 0) < 0.5
    assert seam_ratio(img, TILE, 0, near=2) == pytest.approx(1.0, abs=0.08)


def test_steps_off_the_grid_do_not_count() -> None:
    # Same seamed image, measured on a grid shifted by half a tile: the steps are now in
    # the "other" lines, so the ratio drops below 1 (it can only fall, never rise).
    img = _stepped(SIZE, TILE, 0, d=10.0, seed=3)
    assert seam_ratio(img, TILE, 0, origin=(TILE // 2, TILE // 2)) < 1.0


def test_origin_for_a_crop() -> None:
    img = _stepped(SIZE, TILE, 0, d=10.0, seed=4)
    crop = img[10:400, 20:450]
    # tile grid starts 10 rows / 20 columns before the crop
    assert seam_ratio(crop, TILE, 0, origin=(-10, -20)) == pytest.approx(
        seam_ratio(img[:390, :430], TILE, 0), rel=0.05
    )
    assert seam_ratio(crop, TILE, 0, origin=(-10, -20)) > 7.0


def test_invalid_pixels_are_ignored() -> None:
    img = _smooth_field(SIZE, sigma=8.0, seed=5)
    valid = np.ones(img.shape, dtype=bool)
    valid[:100, :] = False  # a "nodata collar" of garbage that straddles tile lines
    img[:100, :] = np.random.default_rng(6).uniform(-1e3, 1e3, (100, SIZE))
    assert seam_ratio(img, TILE, 0, valid=valid) == pytest.approx(1.0, abs=0.1)
    # without the mask the garbage dominates both means and the ratio is not the same
    assert seam_ratio(img, TILE, 0) != pytest.approx(seam_ratio(img, TILE, 0, valid=valid))


def test_nan_and_masked_array_are_invalid() -> None:
    img = _stepped(SIZE, TILE, 0, d=10.0, seed=7)
    img[:, :64] = np.nan
    assert math.isfinite(seam_ratio(img, TILE, 0))
    masked = np.ma.masked_invalid(img)
    assert seam_ratio(masked, TILE, 0) == pytest.approx(seam_ratio(img, TILE, 0))


def test_band_stack_pools_bands() -> None:
    a = _stepped(256, TILE, 0, d=10.0, seed=8)
    b = _stepped(256, TILE, 0, d=10.0, seed=9)
    stacked = seam_ratio(np.stack([a, b]), TILE, 0)
    assert min(seam_ratio(a, TILE, 0), seam_ratio(b, TILE, 0)) <= stacked
    assert stacked <= max(seam_ratio(a, TILE, 0), seam_ratio(b, TILE, 0))


def test_bad_arguments() -> None:
    img = np.zeros((100, 100))
    with pytest.raises(ValueError, match="overlap"):
        seam_ratio(img, 64, 64)
    with pytest.raises(ValueError, match="tile_size"):
        seam_ratio(img, 0, 0)
    with pytest.raises(ValueError, match="2-D"):
        seam_ratio(np.zeros(10), 4, 0)
    with pytest.raises(ValueError, match="valid mask shape"):
        seam_ratio(img, 32, 0, valid=np.ones((10, 10), bool))
    with pytest.raises(ValueError, match="near"):
        seam_ratio(img, 32, 0, near=0)
    with pytest.raises(ValueError, match="no valid pixel pair crosses"):
        seam_ratio(np.zeros((50, 50)), 64, 0)  # image inside one tile

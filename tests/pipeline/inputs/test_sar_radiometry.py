"""The "SAR targets" section of pipeline/inputs/radiometry.py on known values: linear -> dB ->
[0, 1] -> 8 bit, dB passed through, clipping, invalid values, and the per-scene auto range
(on a known array and on a real, uncalibrated Sentinel-1 patch)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import rasterio

from pipeline.errors import ConfigError
from pipeline.inputs.radiometry import (
    DEFAULT_SAR_DB_RANGE,
    compute_sar_db_range,
    sar_db_range_auto,
    sar_db_to_unit,
    sar_to_db,
    sar_to_uint8,
)
from tests.helpers import DATA

S1 = DATA / "s1_labrador_dualpol_intensity.tif"


def test_linear_to_db_to_uint8_known_values() -> None:
    linear = np.array([0.01, 1.0, 0.1, 1e-3, 10.0], dtype=np.float32)
    db, valid = sar_to_db(linear, "linear")
    # float32 inputs: 10 log10 is exact to ~1e-6 dB
    np.testing.assert_allclose(db, [-20.0, 0.0, -10.0, -30.0, 10.0], atol=1e-5)
    assert valid.all()
    u8, valid = sar_to_uint8(linear, "linear", DEFAULT_SAR_DB_RANGE)
    # -20 dB -> (-20 + 25) / 25 = 0.2 -> 51; 0 dB -> 255; -10 -> 0.6 -> 153;
    # -30 dB clips to 0; +10 dB clips to 255
    assert u8.tolist() == [51, 255, 153, 0, 255]
    assert u8.dtype == np.uint8


def test_db_input_passes_unchanged() -> None:
    db_in = np.array([-20.0, -7.5, 3.0, -40.0])
    db, valid = sar_to_db(db_in, "db")
    assert np.array_equal(db, db_in) and valid.all()
    u8, _ = sar_to_uint8(db_in, "db", (-25.0, 0.0))
    assert u8.tolist() == [51, round(17.5 / 25 * 255), 255, 0]
    # another range: VH users' [-32.5, 0]
    np.testing.assert_allclose(sar_db_to_unit(np.array([-32.5, -16.25, 0.0]), (-32.5, 0.0)),
                               [0.0, 0.5, 1.0])


def test_invalid_values() -> None:
    linear = np.array([0.0, -1.0, np.nan, np.inf, 0.5])
    db, valid = sar_to_db(linear, "linear")
    assert valid.tolist() == [False, False, False, False, True]
    assert np.isfinite(db).all()  # invalid pixels carry a harmless 0, not -inf/NaN
    u8, valid = sar_to_uint8(linear, "linear", (-25.0, 0.0))
    assert u8[:4].tolist() == [0, 0, 0, 0] and u8[4] == round((10 * np.log10(0.5) + 25) / 25
                                                              * 255)
    # in dB, 0 and negatives are real values; only NaN/inf are invalid
    _, valid = sar_to_db(np.array([0.0, -3.0, np.nan]), "db")
    assert valid.tolist() == [True, True, False]
    with pytest.raises(ConfigError, match="units"):
        sar_to_db(linear, "amplitude")


def test_auto_range_known_array() -> None:
    db = np.arange(101, dtype=np.float64) - 50.0  # -50 .. 50 dB, one value per percent
    valid = np.ones_like(db, dtype=bool)
    lo, hi = sar_db_range_auto(db, valid)
    assert (lo, hi) == pytest.approx((-48.0, 48.0))  # numpy's linear percentiles 2 and 98
    valid[db > 0] = False  # invalid values are not counted
    assert sar_db_range_auto(db, valid) == pytest.approx((-49.0, -1.0))
    assert sar_db_range_auto(db, np.zeros_like(valid)) is None
    assert sar_db_range_auto(np.full(5, -7.0), np.ones(5, bool)) == (-7.0, -6.0)  # flat


def test_auto_range_of_a_real_uncalibrated_patch() -> None:
    """Sentinel-1 DN^2: 30-50 dB, far outside [-25, 0]; the auto range is the scene's
    2-98 % of the valid (> 0) values (256 px: the "decimated" read is the full image)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
        with rasterio.open(S1) as ds:
            raw = ds.read(1).astype(np.float64)
            lo, hi = compute_sar_db_range(ds, 1, "linear")
    expected = np.percentile(10 * np.log10(raw[raw > 0]), [2, 98])
    assert (lo, hi) == pytest.approx(tuple(expected), abs=1e-9)
    assert 10 < lo < hi < 50
    u8, _ = sar_to_uint8(raw, "linear", DEFAULT_SAR_DB_RANGE)
    assert (u8[raw > 0] == 255).mean() > 0.99  # why a fixed [-25, 0] is useless here

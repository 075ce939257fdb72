"""Band selection, validity rules and the global scaling."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from rasterio.windows import Window

from pipeline.errors import ConfigError, InputError
from pipeline.inputs.radiometry import (
    Scaling,
    compute_scaling,
    decimated_shape,
    has_valid_pixel,
    read_masked,
    scale_to_unit,
    select_bands,
    to_model_input,
    valid_from_values,
)
from tests.helpers import L8, SN6, crop


def test_select_bands():
    assert select_bands(3, None, "f") == (1, 2, 3)
    with pytest.raises(InputError, match="has 4 band"):
        select_bands(4, None, "f")
    with pytest.raises(InputError, match="band\\(s\\) 5"):
        select_bands(4, (5, 2, 1), "f")
    with pytest.raises(ConfigError, match="exactly 3"):
        select_bands(4, (1, 2), "f")
    with pytest.raises(InputError, match="complex64"):
        select_bands(3, (1, 2, 3), "f", ("complex64",) * 3)


def test_valid_from_values():
    d = np.array([[[0.0, 1.0, np.nan]], [[0.0, 0.0, 1.0]]])
    assert valid_from_values(d, None, zero_fill=False).tolist() == [[True, True, False]]
    assert valid_from_values(d, 0).tolist() == [[False, True, False]]  # all bands == 0
    # the fill rule: 0 in every band of non-uint8 data is fill, without a declared nodata
    assert valid_from_values(d, None).tolist() == [[False, True, False]]
    # ... but uint8 black is a real 8-bit pixel (seed behaviour)
    u8 = np.array([[[0, 1, 0]], [[0, 0, 0]]], dtype=np.uint8)
    assert valid_from_values(u8, None).tolist() == [[True, True, True]]


def test_l8_percentiles_are_global_and_exclude_the_collar():
    with rasterio.open(L8) as ds:
        s = compute_scaling(ds, (3, 2, 1), nodata=0, stats_size=512)
        full, valid = read_masked(ds, (3, 2, 1), nodata=0)
        no_mask = compute_scaling(ds, (3, 2, 1), stats_size=512)
        _, valid_no_tag = read_masked(ds, (3, 2, 1))
    assert s.method == "percentile" and s.samples > 50_000
    # the decimated estimate is close to the full-resolution percentiles (0.5 % of range)
    ref = np.percentile(full[:, valid].astype(np.float64), (2, 98), axis=1)
    span = ref[1] - ref[0]
    assert np.all(np.abs(np.array(s.low) - ref[0]) < 0.005 * span)
    assert np.all(np.abs(np.array(s.high) - ref[1]) < 0.005 * span)
    # the zero collar is fill without --nodata 0 too (it used to drag the low limit to 0)
    assert no_mask == s
    np.testing.assert_array_equal(valid_no_tag, valid)
    assert 0.1 < 1 - valid.mean() < 0.25  # the collar is ~16 % of this scene


def test_modes_uint8_fixed_none_and_flat_band(tmp_path):
    with rasterio.open(SN6) as ds:
        assert compute_scaling(ds, (1, 2, 3)).method == "uint8"
        f = compute_scaling(ds, (1, 2, 3), scale="fixed", fixed_min=(10,), fixed_max=(200,))
        assert f.low == (10.0,) * 3 and f.high == (200.0,) * 3
        assert compute_scaling(ds, (1, 2, 3), scale="none").high == (1.0,) * 3
        p = compute_scaling(ds, (1, 2, 3), scale="auto", percentiles=(0, 100), stats_size=1024)
    assert p.method == "uint8"  # auto on uint8 never stretches
    flat = crop(SN6, tmp_path / "flat.tif", Window(0, 0, 20, 20), dtype="uint16")
    with rasterio.open(flat, "r+") as ds:
        ds.write(np.full((3, 20, 20), 7, dtype=np.uint16))
    with rasterio.open(flat) as ds:
        s = compute_scaling(ds, (1, 2, 3))
    assert s.low == (7.0,) * 3 and s.high == (8.0,) * 3  # no division by zero


def test_sparse_valid_pixels_fall_back_to_full_resolution(tmp_path):
    src = crop(SN6, tmp_path / "sparse.tif", Window(0, 0, 200, 200), dtype="float32")
    with rasterio.open(src, "r+") as ds:
        d = np.full((3, 200, 200), np.nan, dtype=np.float32)
        d[:, 101, 101] = 0.25  # one valid pixel that a 16 x 16 decimated read misses
        ds.write(d)
    with rasterio.open(src) as ds:
        assert decimated_shape(200, 200, 16) == (16, 16)
        assert has_valid_pixel(ds, (1, 2, 3), stats_size=16)
        s = compute_scaling(ds, (1, 2, 3), stats_size=16)
    assert s.method == "percentile" and s.samples == 1 and s.low == (0.25,) * 3


def test_model_input_range_and_invalid_fill():
    s = Scaling("fixed", (0.0,) * 3, (100.0,) * 3)
    d = np.array([[[-5, 0, 50, 100, 500]]] * 3, dtype=np.float64)
    np.testing.assert_array_equal(scale_to_unit(d, s)[0, 0], [0, 0, 0.5, 1, 1])
    valid = np.array([[True, True, True, True, False]])
    x = to_model_input(d, valid, s)
    assert x.dtype == np.float32
    # invalid -> -1 (unit 0, black): what a training tile holds there
    np.testing.assert_array_equal(x[0, 0], [-1, -1, 0, 1, -1])


def test_scene_is_empty_reads_only_when_the_scaling_saw_no_pixel(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline.inputs import radiometry as r

    calls: list[int] = []
    monkeypatch.setattr(r, "has_valid_pixel", lambda *a, **k: calls.append(1) or False)
    pct = r.Scaling("percentile", (0.0,), (1.0,), samples=10)
    assert r.scene_is_empty(None, (1,), pct) is False and calls == []  # computed from pixels
    assert r.scene_is_empty(None, (1,), r.Scaling("empty", (0.0,), (1.0,))) is True
    assert r.scene_is_empty(None, (1,), r.Scaling("uint8", (0.0,), (255.0,))) is True
    assert calls == [1]  # only the uint8 scaling, which read no pixel, had to look

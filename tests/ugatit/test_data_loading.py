"""How the trainer reads tile files (ugatit/data.py `load_rgb`, `eval_transform`,
`fixed_samples`): 8-bit modes only, alpha dropped, grey repeated, mixed tile sizes.

Why: PIL's convert("RGB") clips a 16-bit grey PNG at 255, so a 16-bit SAR tile trained as
white, silently; small Sentinel patches give 120 px tiles beside 256 px ones in one folder.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ugatit.data import UnpairedDataset, eval_transform, fixed_samples, index_domain, load_rgb
from ugatit.errors import TrainingError


def test_a_16_bit_grey_tile_is_refused_naming_the_file_and_the_fix(tmp_path: Path) -> None:
    folder = tmp_path / "trainB"
    folder.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(folder / "a.png")
    wide = folder / "s1_vv_16bit.png"
    Image.fromarray(rng.integers(0, 65535, (64, 64)).astype(np.uint16)).save(wide)
    with Image.open(wide) as im:
        assert im.mode.startswith("I;16")  # what PIL makes of a 16-bit grey PNG
        clipped = np.asarray(im.convert("RGB"))
    assert (clipped == 255).mean() > 0.99  # the silent failure being refused
    with pytest.raises(TrainingError) as err:
        load_rgb(wide)
    message = str(err.value)
    assert str(wide) in message and "16-bit" in message and "pipeline tiles" in message
    assert len(message.splitlines()) == 1
    with pytest.raises(TrainingError, match="s1_vv_16bit.png"):
        index_domain(folder, 0.02)
    Image.fromarray(rng.random((8, 8)).astype(np.float32)).save(tmp_path / "f.tif")
    with pytest.raises(TrainingError, match=r"32-bit image \(PIL mode F\)"):
        load_rgb(tmp_path / "f.tif")


def test_rgba_alpha_is_dropped_grey_and_palette_become_rgb(tmp_path: Path) -> None:
    rgba = np.zeros((4, 4, 4), dtype=np.uint8)
    rgba[..., 0], rgba[..., 1], rgba[..., 2] = 200, 100, 50
    rgba[0, 0, 3] = 0  # transparent: keeps its colour (not composited)
    rgba[1:, :, 3] = 255
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "rgba.png")
    got = np.asarray(load_rgb(tmp_path / "rgba.png"))
    assert got.shape == (4, 4, 3) and (got == [200, 100, 50]).all()
    grey = np.arange(16, dtype=np.uint8).reshape(4, 4) * 10
    Image.fromarray(grey, mode="L").save(tmp_path / "grey.png")
    got = np.asarray(load_rgb(tmp_path / "grey.png"))
    assert all((got[..., c] == grey).all() for c in range(3))
    Image.fromarray(np.dstack([grey] * 3)).convert("P").save(tmp_path / "pal.png")
    assert np.asarray(load_rgb(tmp_path / "pal.png")).shape == (4, 4, 3)


def test_tiles_of_mixed_sizes_load_at_img_size(tmp_path: Path) -> None:
    """120 px (small Sentinel patches) and 256 px tiles in one folder: every training crop
    and every test image comes out img_size (both transforms resize first)."""
    rng = np.random.default_rng(1)
    for domain in ("trainA", "trainB"):
        (tmp_path / domain).mkdir()
        for i, size in enumerate((120, 256, 120, 200)):
            Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(
                tmp_path / domain / f"t{i}_{size}.png")
    files = {d: index_domain(tmp_path / f"train{d}", 0.02) for d in "AB"}
    data = UnpairedDataset(files["A"], files["B"], img_size=96)
    for p in range(8):
        a, b = data[p]
        assert a.shape == b.shape == (3, 96, 96)
    rows = fixed_samples(files["A"], 4, 96, 0.02)
    assert rows.shape == (4, 3, 96, 96)
    assert torch.isfinite(rows).all()
    assert eval_transform(load_rgb(files["A"][0]), 96).shape == (3, 96, 96)


# ---------------------------------------------------------------- multiband TIFF tiles


def test_multiband_tiff_tiles_read_in_either_interleave(tmp_path: Path) -> None:
    """tifffile reads band-interleaved (what `pipeline tiles` writes) and pixel-interleaved
    TIFFs as [C, H, W] unit values; uint16 is / 65535; a domain mixing band counts or
    PNG and TIFF is refused naming the files."""
    import tifffile

    from ugatit.data import channels_of, load_array

    rng = np.random.default_rng(0)
    a = rng.random((4, 16, 12)).astype(np.float32)
    tifffile.imwrite(tmp_path / "band.tif", a, photometric="minisblack", planarconfig="separate")
    tifffile.imwrite(tmp_path / "pixel.tif", np.moveaxis(a, 0, -1), photometric="minisblack",
                     planarconfig="contig")
    tifffile.imwrite(tmp_path / "u16.tif", (a[:2] * 65535).astype(np.uint16),
                     photometric="minisblack", planarconfig="separate")
    assert np.array_equal(load_array(tmp_path / "band.tif"), a)
    assert np.array_equal(load_array(tmp_path / "pixel.tif"), a)
    np.testing.assert_allclose(load_array(tmp_path / "u16.tif"), a[:2], atol=1 / 65535)
    assert channels_of([tmp_path / "band.tif", tmp_path / "pixel.tif"]) == 4
    with pytest.raises(TrainingError, match="tiles of 4 and 2 channels"):
        channels_of([tmp_path / "band.tif", tmp_path / "u16.tif"])


def test_multiband_crops_follow_the_same_draws_as_the_png_path(tmp_path: Path) -> None:
    """The array path makes the same random draws (flip, then the crop offset) from the
    same generator as PIL's: with a constant-free ramp, the crop's position shows where
    the window landed, and a flip mirrors it."""
    import tifffile

    from ugatit.data import random_crop, seeded_generator

    ramp = np.tile(np.linspace(0, 1, 40, dtype=np.float32), (2, 40, 1))  # [2, 40, 40]
    tifffile.imwrite(tmp_path / "r.tif", ramp, photometric="minisblack",
                     planarconfig="separate")
    for p in range(6):
        crop = random_crop(ramp, 8, seeded_generator(0, 0, 0, 1, p))
        g = seeded_generator(0, 0, 0, 1, p)
        flipped = torch.rand(1, generator=g).item() < 0.5
        assert crop.shape == (2, 8, 8)
        row = crop[0, 0]
        assert (row[0] > row[-1]) == flipped  # a flipped ramp falls left to right

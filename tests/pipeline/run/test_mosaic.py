"""Blending arithmetic and output encodings."""

from __future__ import annotations

import numpy as np
import pytest
from rasterio.windows import Window

from pipeline.run.mosaic import BlockAccumulator, encode, overview_count, tmp_block_size
from pipeline.run.tiling import weight_window


def test_blend_is_weighted_mean_and_block_independent():
    rng = np.random.default_rng(0)
    t, o = 16, 4
    w = weight_window(t, o)
    tiles = {(r, c): rng.uniform(-1, 1, (1, t, t)) for r in (0, 12) for c in (0, 12)}
    valid = np.ones((28, 28), dtype=bool)
    valid[0, 0] = False
    whole = BlockAccumulator(Window(0, 0, 28, 28), 1)
    for (r, c), y in tiles.items():
        whole.add(r, c, y, w)
    ref = whole.blended(valid)
    assert np.isnan(ref[0, 0, 0]) and np.isfinite(ref[0][valid]).all()
    # pixel (13, 13) is covered by all four tiles
    num = sum(y[0, 13 - r, 13 - c] * w[13 - r, 13 - c] for (r, c), y in tiles.items())
    den = sum(w[13 - r, 13 - c] for (r, c) in tiles)
    assert ref[0, 13, 13] == num / den
    # any block split gives the same bits (same additions in the same order)
    for bs in (5, 7, 16):
        out = np.full((1, 28, 28), np.nan)
        for r0 in range(0, 28, bs):
            for c0 in range(0, 28, bs):
                win = Window(c0, r0, min(bs, 28 - c0), min(bs, 28 - r0))
                acc = BlockAccumulator(win, 1)
                for (r, c), y in tiles.items():
                    acc.add(r, c, y, w)
                sl = (slice(r0, r0 + int(win.height)), slice(c0, c0 + int(win.width)))
                out[(slice(None), *sl)] = acc.blended(valid[sl])
        assert out.tobytes() == ref.tobytes()


def test_encodings():
    y = np.array([[[-1.0, 0.0, 1.0, np.nan, -0.999]]])
    u = encode(y, "unit", (-25, 0))
    assert u.dtype == np.float32
    np.testing.assert_array_equal(u[0, 0, :3], [0.0, 0.5, 1.0])
    assert np.isnan(u[0, 0, 3])
    q = encode(y, "uint8", (-25, 0))
    assert q.dtype == np.uint8 and q.tolist() == [[[1, 128, 255, 0, 1]]]  # 0 only for nodata
    d = encode(y, "db", (-25, 0))
    np.testing.assert_array_equal(d[0, 0, :3], [-25.0, -12.5, 0.0])
    assert np.isnan(d[0, 0, 3])


def test_overview_count_and_temp_tiles():
    assert overview_count(200, 200) == 1  # small scenes still get a pyramid
    assert overview_count(1, 1) == 0 and overview_count(3, 1) == 1
    assert overview_count(2041, 1860) == 3  # 1021, 511, 256
    assert overview_count(16384, 16384) == 6
    assert tmp_block_size(1024) == 512 and tmp_block_size(96) == 32


def test_stale_temps_of_dead_writers_are_removed(tmp_path):
    """A killed run leaves hidden temporaries; the next run writing the same output
    removes those of dead processes on this host and keeps the others."""
    from pipeline.run.mosaic import remove_stale_temps, temp_name
    from ugatit.io import TMP_MARK, _host

    final = tmp_path / "o.tif"
    dead_pid = 2**22 + 1  # above Linux's largest pid_max: no such process
    prefix = f".o.tif{TMP_MARK}-"
    dead = tmp_path / f"{prefix}{_host()}-{dead_pid}-abc.part.tif"
    dead_ovr = tmp_path / f"{prefix}{_host()}-{dead_pid}-abc.cog.tif.ovr.tmp"  # GDAL's
    live = temp_name(final, "part")  # this (live) process
    other_host = tmp_path / f"{prefix}otherhost-{dead_pid}-abc.part.tif"
    other_output = tmp_path / f".p.tif{TMP_MARK}-{_host()}-{dead_pid}-abc.part.tif"
    for p in (dead, dead_ovr, live, other_host, other_output):
        p.write_bytes(b"x")
    assert sorted(remove_stale_temps(final)) == sorted([dead, dead_ovr])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        p.name for p in (live, other_host, other_output))


def test_the_private_gdal_error_class_is_still_there():
    """pipeline/run/mosaic.py imports CPLE_BaseError from rasterio's PRIVATE `_err` module (no
    public equivalent): GDAL errors rasterio.shutil.copy raises unwrapped, such as a full
    disk during the COG copy. If a rasterio release moves or renames it, this fails here
    (and the full-disk detection with it: tests/faults/test_disk_full.py)."""
    import rasterio._err
    import rasterio.errors

    from pipeline.run import mosaic

    assert mosaic.CPLE_BaseError is rasterio._err.CPLE_BaseError
    assert issubclass(rasterio._err.CPLE_AppDefinedError, mosaic.CPLE_BaseError)
    assert mosaic.CPLE_BaseError in mosaic.WRITE_ERRORS
    assert not hasattr(rasterio.errors, "CPLE_BaseError")  # if it appears: use that one
    from pathlib import Path

    repo = Path(mosaic.__file__).resolve().parents[2]
    users = [p.relative_to(repo).as_posix() for d in ("pipeline", "ugatit", "app.py")
             for p in ((repo / d).rglob("*.py") if (repo / d).is_dir() else [repo / d])
             if "rasterio._err" in p.read_text(encoding="utf-8")]
    assert users == ["pipeline/run/mosaic.py"]  # ONE place


def test_overwrite_keeps_the_mode_of_the_output_it_replaces(tiny_checkpoint, tmp_path):
    """`--overwrite` of a 0600 output leaves a 0600 output (the COG is renamed into place
    with the replaced file's mode, not the umask's)."""
    from pipeline import load_config, run_scene
    from tests.helpers import SN6, crop

    scene = crop(SN6, tmp_path / "s.tif", Window(0, 0, 64, 64))
    out = tmp_path / "o.tif"
    cfg = load_config(None, {"tile_size": 64, "overlap": 16})
    run_scene(scene, out, model_path=tiny_checkpoint, config=cfg, progress=False)
    out.chmod(0o600)
    run_scene(scene, out, model_path=tiny_checkpoint, config=cfg, progress=False,
              overwrite=True)
    assert out.stat().st_mode & 0o777 == 0o600


def test_a_torn_cog_is_caught_before_the_rename(tmp_path):
    """Issue 16 item 10: the COG is written with every core, and checked block by block
    (full resolution and overviews) before it is renamed into place: a file cut short,
    as a full disk unreported by a compression thread leaves it, raises OSError."""
    import shutil

    import rasterio
    import rasterio.shutil
    from rasterio.transform import from_origin

    from pipeline.run.mosaic import check_cog_blocks

    src = tmp_path / "part.tif"
    data = np.random.default_rng(0).random((2, 700, 900)).astype(np.float32)
    with rasterio.open(src, "w", driver="GTiff", width=900, height=700, count=2,
                       dtype="float32", crs="EPSG:32631", transform=from_origin(0, 0, 1, 1),
                       tiled=True, blockxsize=256, blockysize=256) as ds:
        ds.write(data)
    cog = tmp_path / "cog.tif"
    rasterio.shutil.copy(str(src), str(cog), driver="COG", COMPRESS="DEFLATE",
                         BLOCKSIZE=512, OVERVIEW_COUNT=2, NUM_THREADS="ALL_CPUS")
    check_cog_blocks(cog)  # complete: no error
    with rasterio.open(cog) as ds:
        assert np.array_equal(ds.read(), data)
    torn = tmp_path / "torn.tif"
    shutil.copy(cog, torn)
    with open(torn, "r+b") as f:
        f.truncate(cog.stat().st_size - 1000)
    with pytest.raises(OSError, match="incomplete COG"):
        check_cog_blocks(torn)

"""Fuzzed rasters (issue 10, item 6): mutated GeoTIFFs through the plan and the run.

Two small real GeoTIFFs written by rasterio (a tiled DEFLATE WorldView-2 chip, a striped
uncompressed Landsat 8 crop) are mutated by byte surgery on their TIFF structure (struct,
no TIFF library): truncated at many offsets, header and tile bytes flipped, tags given
wrong types, absurd widths / heights / band counts / tile sizes declared, zero-size.
Each case runs `pipeline run --dry-run` and `pipeline.run_scene` with a tiny model in a
forked child (tests/faults/fuzzdriver.py) under a time and an address-space bound; it
must end in our typed error (nothing written) or a valid output on the input's grid;
never a crash, a hang or an allocation beyond the bound. A file the pipeline refuses also
goes through app.py, which must refuse it in one `error:` line.

The default run is a fixed list plus a few seeded random mutations (48 cases, ~15 s on
2 cores); the slow sweep (`make test-all`) adds 300 more (~70 s), same rules.
"""

from __future__ import annotations

import json
import os
import random
import struct
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import rasterio
from rasterio.windows import Window

from pipeline.errors import InputError
from pipeline.run import checks
from tests.helpers import L8, REPO, SN6, crop

MODEL = REPO / "checkpoints" / "eo2sar_demo_ngf8_random.pt"
#: per case (a plan and a run of a 64 px scene take ~0.5 s): a hang is anything longer
CASE_TIMEOUT_S = 30
#: address space of a case: the imported stack maps ~1.5 GiB; a 64 px scene needs little
CASE_MEMORY = 4 << 30
SEED = 20261126

# TIFF tags and field types used below (TIFF 6.0)
WIDTH, HEIGHT, BITS, COMPRESSION, SAMPLES = 256, 257, 258, 259, 277
STRIP_OFFSETS, ROWS_PER_STRIP, STRIP_BYTES, PLANAR = 273, 278, 279, 284
TILE_W, TILE_H, TILE_OFFSETS, TILE_BYTES, SAMPLE_FORMAT = 322, 323, 324, 325, 339
PIXEL_SCALE, TIEPOINT, GEOKEYS = 33550, 33922, 34735
ASCII, SHORT, LONG, RATIONAL, DOUBLE = 2, 3, 4, 5, 12
TYPE_SIZE = {1: 1, ASCII: 1, SHORT: 2, LONG: 4, RATIONAL: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8,
             11: 4, DOUBLE: 8}


# ---------------------------------------------------------------- TIFF byte surgery


@dataclass(frozen=True)
class Entry:
    """One IFD entry of a little-endian classic TIFF: where it is and what it says."""

    at: int  # byte offset of the 12-byte entry
    tag: int
    type: int
    count: int
    value: int  # the value itself when it fits in 4 bytes, else the offset of the values

    @property
    def data_at(self) -> int:
        """Where the values are: inline in the entry, or at the offset."""
        inline = self.count * TYPE_SIZE.get(self.type, 1) <= 4
        return self.at + 8 if inline else self.value


def ifd(data: bytes) -> tuple[int, dict[int, Entry]]:
    """(offset of the first IFD, {tag: entry}) of a rasterio-written GeoTIFF."""
    assert data[:4] == b"II*\x00", "fixtures are little-endian classic TIFF"
    off = struct.unpack_from("<I", data, 4)[0]
    n = struct.unpack_from("<H", data, off)[0]
    entries = {}
    for i in range(n):
        at = off + 2 + 12 * i
        tag, typ, count, value = struct.unpack_from("<HHII", data, at)
        entries[tag] = Entry(at, tag, typ, count, value)
    return off, entries


def patched(data: bytes, at: int, fmt: str, *values: int | float) -> bytes:
    buf = bytearray(data)
    struct.pack_into(fmt, buf, at, *values)
    return bytes(buf)


def set_value(tag: int, value: int, typ: int = LONG) -> Callable[[bytes], bytes]:
    """The tag holds one number `value`, stored with type `typ` (SHORT or LONG)."""
    def mutate(data: bytes) -> bytes:
        e = ifd(data)[1][tag]
        fmt = "<HHIH2x" if typ == SHORT else "<HHII"
        return patched(data, e.at, fmt, tag, typ, 1, value)
    return mutate


def set_values(tag: int, fmt: str, value: int | float) -> Callable[[bytes], bytes]:
    """Every value of the tag (in its own type, struct format `fmt`) becomes `value`."""
    def mutate(data: bytes) -> bytes:
        e = ifd(data)[1][tag]
        size = struct.calcsize("<" + fmt)
        for i in range(e.count):
            data = patched(data, e.data_at + i * size, "<" + fmt, value)
        return data
    return mutate


def set_type(tag: int, typ: int) -> Callable[[bytes], bytes]:
    """The entry claims another field type; its count and bytes stay (a wrong tag type)."""
    def mutate(data: bytes) -> bytes:
        return patched(data, ifd(data)[1][tag].at + 2, "<H", typ)
    return mutate


def set_count(tag: int, count: int) -> Callable[[bytes], bytes]:
    def mutate(data: bytes) -> bytes:
        return patched(data, ifd(data)[1][tag].at + 4, "<I", count)
    return mutate


def chain(*mutations: Callable[[bytes], bytes]) -> Callable[[bytes], bytes]:
    def mutate(data: bytes) -> bytes:
        for m in mutations:
            data = m(data)
        return data
    return mutate


def truncated(fraction: float) -> Callable[[bytes], bytes]:
    return lambda data: data[:int(len(data) * fraction)]


def flipped(rng: random.Random, region: str, n: int) -> Callable[[bytes], bytes]:
    """`n` random bytes of the header+IFD ("header") or of the pixel data ("data") set to
    random values, drawn now (the case is fixed by the seed)."""
    picks = [(rng.random(), rng.randrange(256)) for _ in range(n)]

    def mutate(data: bytes) -> bytes:
        off, entries = ifd(data)
        ifd_end = off + 2 + 12 * len(entries) + 4
        offsets = entries.get(TILE_OFFSETS) or entries[STRIP_OFFSETS]
        first = struct.unpack_from("<I", data, offsets.data_at)[0] if offsets.count > 1 \
            else offsets.value
        lo, hi = (0, ifd_end) if region == "header" else (first, len(data))
        buf = bytearray(data)
        for where, byte in picks:
            buf[lo + int(where * (hi - lo))] = byte
        return bytes(buf)
    return mutate


# ---------------------------------------------------------------- the cases


def fixed_cases() -> dict[str, tuple[str, Callable[[bytes], bytes]]]:
    """name -> (base, mutation): every kind of damage the issue lists, at least once."""
    cases: dict[str, tuple[str, Callable[[bytes], bytes]]] = {
        "zero-size": ("tiled", lambda d: b""),
        "byte-order-MM": ("tiled", lambda d: b"MM" + d[2:]),
        "magic-bigtiff": ("tiled", lambda d: patched(d, 2, "<H", 43)),
        "ifd-offset-past-eof": ("tiled", lambda d: patched(d, 4, "<I", len(d) + 100)),
        "ifd-entries-65535": ("tiled", lambda d: patched(d, ifd(d)[0], "<H", 0xFFFF)),
        "ifd-loops-to-itself": ("tiled", lambda d: patched(
            d, ifd(d)[0] + 2 + 12 * len(ifd(d)[1]), "<I", ifd(d)[0])),
        # declared sizes
        "width-2^31-1": ("tiled", set_value(WIDTH, 2**31 - 1)),
        "width-zero": ("strip", set_value(WIDTH, 0)),
        "height-10^6-strips": ("strip", set_value(HEIGHT, 10**6)),
        "huge-width-height-consistent-tiles": ("tiled", chain(  # still 2 x 2 tiles
            set_value(WIDTH, 2**17), set_value(HEIGHT, 2**17),
            set_value(TILE_W, 2**16), set_value(TILE_H, 2**16))),
        "one-12-GiB-tile": ("tiled", chain(  # 1.3e10 samples: within bounds, one tile
            set_value(WIDTH, 2**16), set_value(HEIGHT, 2**16),
            set_value(TILE_W, 2**16), set_value(TILE_H, 2**16))),
        "huge-tiles": ("tiled", chain(set_value(TILE_W, 2**20), set_value(TILE_H, 2**20))),
        "bands-65535": ("tiled", set_value(SAMPLES, 65535, SHORT)),
        "bands-zero": ("strip", set_value(SAMPLES, 0, SHORT)),
        "bands-4": ("strip", set_value(SAMPLES, 4, SHORT)),
        "bits-64": ("tiled", set_values(BITS, "H", 64)),
        "bits-12": ("strip", set_values(BITS, "H", 12)),
        "float-8-bit": ("tiled", set_values(SAMPLE_FORMAT, "H", 3)),
        "complex-float": ("strip", chain(set_values(SAMPLE_FORMAT, "H", 6),
                                         set_values(BITS, "H", 32))),
        "compression-unknown": ("tiled", set_value(COMPRESSION, 99, SHORT)),
        "compression-jpeg": ("tiled", set_value(COMPRESSION, 7, SHORT)),
        "planar-separate": ("tiled", set_value(PLANAR, 2, SHORT)),
        "tile-width-17": ("tiled", set_value(TILE_W, 17)),
        "tile-width-zero": ("tiled", set_value(TILE_W, 0)),
        "tile-offsets-past-eof": ("tiled", set_values(TILE_OFFSETS, "I", 2**31)),
        "tile-bytes-4GiB": ("tiled", set_values(TILE_BYTES, "H", 0xFFFF)),
        "tile-offsets-count-2^30": ("tiled", set_count(TILE_OFFSETS, 2**30)),
        "rows-per-strip-zero": ("strip", set_value(ROWS_PER_STRIP, 0)),
        "strip-bytes-zero": ("strip", set_values(STRIP_BYTES, "I", 0)),
        "pixel-scale-nan": ("tiled", set_values(PIXEL_SCALE, "d", float("nan"))),
        "pixel-scale-zero": ("strip", set_values(PIXEL_SCALE, "d", 0.0)),
        # wrong tag types
        "width-as-ascii": ("tiled", set_type(WIDTH, ASCII)),
        "width-as-rational": ("strip", set_type(WIDTH, RATIONAL)),
        "width-as-double": ("tiled", set_type(WIDTH, DOUBLE)),
        "width-type-99": ("tiled", set_type(WIDTH, 99)),
        "tile-offsets-as-short": ("tiled", set_type(TILE_OFFSETS, SHORT)),
        "bits-as-long": ("strip", set_type(BITS, LONG)),
        "geokeys-as-ascii": ("tiled", set_type(GEOKEYS, ASCII)),
        "tiepoint-as-long": ("strip", set_type(TIEPOINT, LONG)),
    }
    for frac in (0.001, 0.5, 0.999):
        for base in ("tiled", "strip"):
            cases[f"truncated-{frac:g}-{base}"] = (base, truncated(frac))
    return cases


def random_cases(seed: int, n: int) -> dict[str, tuple[str, Callable[[bytes], bytes]]]:
    """`n` seeded cases: flipped header or data bytes, truncations at random offsets."""
    rng = random.Random(seed)
    cases = {}
    for i in range(n):
        base = rng.choice(("tiled", "strip"))
        kind = rng.choice(("header", "data", "cut"))
        if kind == "cut":
            cases[f"r{i}-cut-{base}"] = (base, truncated(rng.random()))
        else:
            cases[f"r{i}-flip-{kind}-{base}"] = (base, flipped(rng, kind, rng.randint(1, 4)))
    return cases


@pytest.fixture(scope="module")
def bases(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    root = tmp_path_factory.mktemp("fuzz_bases")
    tiled = crop(SN6, root / "tiled.tif", Window(60, 60, 64, 64), tiled=True,
                 blockxsize=32, blockysize=32, compress="deflate")
    strip = crop(L8, root / "strip.tif", Window(700, 600, 64, 48))
    return {"tiled": tiled.read_bytes(), "strip": strip.read_bytes()}


def run_cases(cases: dict[str, tuple[str, Callable[[bytes], bytes]]], bases: dict[str, bytes],
              root: Path) -> dict[str, dict]:
    """Write each mutated file, run them all in one driver process, return its results."""
    spec = []
    for name, (base, mutate) in cases.items():
        path = root / "in" / f"{name}.tif"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(mutate(bases[base]))
        spec.append({"name": name, "input": str(path), "out_dir": str(root / "out" / name)})
    (root / "cases.json").write_text(json.dumps({
        "model": str(MODEL), "cases": spec, "timeout_s": CASE_TIMEOUT_S,
        "memory_bytes": CASE_MEMORY}))
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "tests.faults.fuzzdriver",
                           str(root / "cases.json"), str(root / "results.json")],
                          cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=60 + CASE_TIMEOUT_S * len(cases), check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((root / "results.json").read_text())


def problems(results: dict[str, dict]) -> list[str]:
    """Every case that did not end in a typed error with nothing written, or a valid output."""
    bad = []
    for name, r in results.items():
        if r["end"] != "returned":
            bad.append(f"{name}: {r['end']}")
            continue
        for stage in ("plan", "run", "app"):
            if not (r.get(stage, "ok") == "ok" or r[stage].startswith("typed:")):
                bad.append(f"{name}: {stage} {r[stage]}")
        if r["run"] == "ok":
            facts = r["facts"]
            # the output and its STAC Item (run_scene writes it, as the CLI does)
            if not facts["same_grid"] or facts["count"] != 1 or r["left"] != [
                    "sar.stac.json", "sar.tif"]:
                bad.append(f"{name}: output not on the input's grid or extra files: {r}")
        elif r["left"]:
            bad.append(f"{name}: refused but left {r['left']}")
    return bad


#: cases found by this test (a 30 s hang, a 4-12 GiB allocation, an output on a NaN grid),
#: now refused up front by pipeline/run/checks.py: case -> what the refusal says
FOUND = {
    "width-2^31-1": "declares 2147483647 x 64 px x 3 bands",
    "huge-width-height-consistent-tiles": "declares 131072 x 131072 px x 3 bands",
    "one-12-GiB-tile": "blocks of 12,288 MiB each, more than the 1,024 MiB one read may decode",
    "huge-tiles": "one read may decode",
    "pixel-scale-nan": "has a degenerate geotransform",
}

#: the same for app.py (a whole-image reader: its bound is PIL's decompression-bomb limit)
APP_FOUND = {
    "truncated-0.5-tiled": "cannot read pixel data (",
    "tile-offsets-past-eof": "TIFFReadEncodedTile() failed",
    "width-2^31-1": "translate large scenes with python -m pipeline run",
    "huge-tiles": "one read may decode",
}


def test_fuzzed_rasters_end_typed_or_valid(bases: dict[str, bytes], tmp_path: Path) -> None:
    cases = {**fixed_cases(), **random_cases(SEED, 3)}
    results = run_cases(cases, bases, tmp_path)
    assert set(results) == set(cases)
    assert not problems(results), "\n".join(problems(results))
    for name, needle in FOUND.items():
        for stage in ("plan", "run"):
            assert results[name][stage].startswith("typed:"), (name, results[name])
            assert needle in results[name][stage], (name, results[name][stage])
    # a read error names GDAL's cause (which block, which decoder), not "see previous"
    assert "TIFFReadEncodedTile() failed" in results["truncated-0.5-tiled"]["run"]
    # app.py: a RasterioIOError traceback before (found by this test), now one line
    for name, needle in APP_FOUND.items():
        assert results[name]["app"].startswith("typed:error: "), (name, results[name])
        assert needle in results[name]["app"], (name, results[name]["app"])
    # the mutations that keep a readable file prove the harness also sees valid outputs
    assert sum(r["run"] == "ok" for r in results.values()) >= 5


def test_declared_size_limits_are_inclusive_and_name_the_fix(
        bases: dict[str, bytes], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The two bounds of check_declared_size at their edge, on the real tiled chip
    (64 x 64 px, 3 bands uint8, 32 px pixel-interleaved tiles: 3072 bytes a block)."""
    path = tmp_path / "chip.tif"
    path.write_bytes(bases["tiled"])
    with rasterio.open(path) as ds:
        monkeypatch.setattr(checks, "MAX_SCENE_SAMPLES", 64 * 64 * 3)
        monkeypatch.setattr(checks, "MAX_BLOCK_BYTES", 32 * 32 * 3)
        checks.check_declared_size(ds, (1, 2, 3), path)  # exactly at both bounds: accepted
        monkeypatch.setattr(checks, "MAX_SCENE_SAMPLES", 64 * 64 * 3 - 1)
        with pytest.raises(InputError, match="declares 64 x 64 px x 3 bands") as exc:
            checks.check_declared_size(ds, (1, 2, 3), path)
        assert "gdal_translate -srcwin" in (exc.value.hint or "")
        monkeypatch.setattr(checks, "MAX_SCENE_SAMPLES", 64 * 64 * 3)
        monkeypatch.setattr(checks, "MAX_BLOCK_BYTES", 32 * 32 * 3 - 1)
        # pixel-interleaved: one block read decodes all 3 bands, even when 1 is asked
        with pytest.raises(InputError, match="band 1 is stored in 32 x 32 px blocks of 3072 "
                                             "bytes each, more than the 3071 bytes") as exc:
            checks.check_declared_size(ds, (1, 1, 1), path)
        assert "TILED=YES" in (exc.value.hint or "")


@pytest.mark.slow
def test_fuzzed_rasters_sweep(bases: dict[str, bytes], tmp_path: Path) -> None:
    cases = random_cases(SEED + 1, 300)
    results = run_cases(cases, bases, tmp_path)
    assert not problems(results), "\n".join(problems(results))


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")  # PIL's, 1-2x limit
@pytest.mark.parametrize("base, kind", [("tiled", "tif"), ("strip", "vrt")])
def test_app_refuses_more_pixels_than_pil_allows(base: str, kind: str, bases: dict[str, bytes],
                                                 tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """app.py decodes whole images: its bound is PIL's MAX_IMAGE_PIXELS, checked on the
    header, whichever reader decodes: PIL opens the 8-bit RGB TIFF, only rasterio the VRT
    (the limit is lowered here to the chip's size)."""
    import rasterio.shutil
    from PIL import Image

    from tests.faults.fuzzdriver import app

    path = tmp_path / "chip.tif"
    path.write_bytes(bases[base])
    if kind == "vrt":
        rasterio.shutil.copy(path, tmp_path / "chip.vrt", driver="VRT")
        path = tmp_path / "chip.vrt"
    with rasterio.open(path) as ds:
        size = (ds.width, ds.height)
    pixels = size[0] * size[1]
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", pixels)
    assert app.read_input(path).image.size == size
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", pixels - 1)
    with pytest.raises(app.AppError, match=f"px is more than app.py decodes at once "
                                           f"\\({pixels - 1} px\\); translate large scenes"):
        app.read_input(path)

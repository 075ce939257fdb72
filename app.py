#!/usr/bin/env python3
"""Single-image EO -> SAR-like translation: the seed's command, same flags, same output name.

    python app.py --device cpu --model_path eo2sar_params_latest.pt --img eo.png
    -> ./gen_sar_eo.png  (8-bit, 3-channel PNG, --out_img_size x --out_img_size)

What the seed did, and this keeps: the image is resized to 256 x 256 with PIL bilinear
(aspect not kept), scaled to [0, 1], normalised with mean 0.5 / std 0.5, passed through
``genA2B`` only, mapped back with ``x * 0.5 + 0.5``, resized to the output size (PIL
bilinear, on the float image), rounded and clipped to 8 bits and written as
``gen_sar_<input stem>.png`` in the current directory. For an 8-bit RGB input the result is
the seed's up to float32 summation order (+-1 level on rare pixels).

Radiometry is the pipeline's (``pipeline.inputs.radiometry``, one rule for every entry point): for
the same pixels app.py feeds the model what ``python -m pipeline run`` feeds it.

What the seed got wrong, and this fixes (each conversion is printed in one line):
- RGBA / LA / transparent palette: alpha is dropped by compositing over black, because
  transparent pixels carry no scene and black is what the network saw around scenes.
- Grayscale (L, I;16, I, F, one-band rasters): replicated to 3 channels.
- 16-bit, 32-bit and float data: the pipeline's per-band percentile stretch (2-98 %, or
  the model's radiometric contract, or ``--percentiles``; the line "radiometry:" says which),
  computed once over the image's valid pixels; pixels 0 in every band are fill (invalid,
  black) and left out of the statistics. The stretched image stays float: it is resized in
  float (PIL mode "F" per band, bilinear) and never quantised to 8 bits. 8-bit data is
  never stretched: the network was trained on 8-bit images as they are.
- Multiband rasters (e.g. RGB+NIR, Landsat): the first three bands, or ``--bands 3,2,1``
  (1-based, rasterio order). TIFFs are read with rasterio when PIL cannot read them or
  would hide bands; rasterio's nodata / mask becomes black like alpha.
- A missing or broken checkpoint is an error (non-zero exit, nothing written), not a run
  with random weights; a checkpoint saved on CUDA loads on a CPU machine; ``--device
  cuda:N`` without CUDA is an error; inference runs under ``torch.inference_mode()``.
- ``--ch --n_res --n_dis --img_size --img_ch`` are accepted for old scripts and ignored:
  the architecture is read from the checkpoint.

Multispectral models (issue 21: a model that takes other bands than R, G, B, e.g. red,
green, blue, nir, and gives VV and VH) take RGB images no more than the scene pipeline
does: app.py refuses them on an RGB image, with a message naming the model's bands.
Given a multiband GeoTIFF and ``--bands`` with as many band numbers as the model takes
(in its order), it runs them with the model's own radiometry (a reflectance model reads
the bands' Scale/Offset: a raster without it is refused) and writes the first
polarisation (VV) as a gray PNG. Georeferenced, named and in dB: ``python -m pipeline
run``.

The scene-sized, georeferenced path is ``python -m pipeline run``; this is the small one.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio.errors
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError

from pipeline.errors import PipelineError
from pipeline.inputs.radiometry import (
    DEFAULT_PERCENTILES,
    Scaling,
    compute_scaling,
    image_scaling,
    read_masked,
    resolve_radiometry,
    to_unit,
    unit_to_model,
    valid_from_values,
)
from pipeline.run.checks import check_declared_size, read_error
from ugatit import UgatitError, atomic_path, load_checkpoint, resolve_device, set_tf32

#: The seed's network input size (the published model's img_size).
SEED_SIZE = 256
#: Flags the seed needed to build the network; the checkpoint now says all of it.
IGNORED_FLAGS = ("ch", "n_res", "n_dis", "img_size", "img_ch")


class AppError(Exception):
    """A user-facing failure: printed as one line on stderr, exit status 1."""


@dataclass
class Loaded:
    """An input image as the network will see it, and what was done to get it."""

    #: mode RGB, 8 bits per channel: what the network sees for 8-bit input (the seed's
    #: path); for other input only the picture under the heatmap (round(255 * unit))
    image: Image.Image
    note: str  # one line: the conversion that was applied
    #: non-8-bit input: float32 [3, H, W] in [0, 1] from the shared stretch (the network's
    #: input before resizing); None for 8-bit input
    unit: np.ndarray | None = None

    @classmethod
    def from_unit(cls, unit: np.ndarray, note: str) -> Loaded:
        """Float [C, H, W] in [0, 1] (C = 1 is replicated to 3 channels)."""
        if unit.shape[0] == 1:
            unit = np.repeat(unit, 3, axis=0)
            note += ", replicated to 3 channels"
        display = np.round(unit * 255.0).astype(np.uint8).transpose(1, 2, 0)
        return cls(Image.fromarray(np.ascontiguousarray(display), "RGB"), note, unit)


# ----------------------------------------------------------------------------------------
# Reading and converting the input


def composite_over_black(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Drop alpha by compositing 8-bit RGB [H,W,3] over black: round(rgb * alpha / 255)."""
    out = (rgb.astype(np.uint32) * alpha[..., None].astype(np.uint32) + 127) // 255
    return out.astype(np.uint8)


def _select(arr: np.ndarray, bands: tuple[int, ...] | None, what: str) -> np.ndarray:
    """Pick 1-based channels of an [H,W,C] array; one channel is replicated to three."""
    if bands is None:
        return arr
    n = arr.shape[-1]
    bad = [b for b in bands if not 1 <= b <= n]
    if bad:
        raise AppError(f"--bands {','.join(map(str, bands))}: {what} has {n} band(s) "
                       f"(1..{n}); no band {bad[0]}")
    out = arr[..., [b - 1 for b in bands]]
    return np.repeat(out, 3, axis=-1) if out.shape[-1] == 1 else out


def _stretch_note(scaling: Scaling) -> str:
    pct = scaling.percentiles or (0.0, 100.0)
    return (f"per-band {pct[0]:g}-{pct[1]:g}% stretch low {_fmt(scaling.low)} "
            f"high {_fmt(scaling.high)} -> [0, 1]")


def _fmt(values: tuple[float, ...]) -> str:
    return "[" + ", ".join(f"{v:g}" for v in values) + "]"


def _from_pil(img: Image.Image, bands: tuple[int, ...] | None,
              percentiles: tuple[float, float]) -> Loaded:
    """Convert whatever PIL opened to 8-bit RGB (or, for 16/32-bit and float grayscale, the
    shared stretch in float), saying how."""
    mode = img.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        gray = np.asarray(img)
        if gray.ndim != 2:
            raise AppError(f"unexpected {mode} image of shape {gray.shape}")
        data = gray[None]
        valid = valid_from_values(data, None)  # NaN and zero fill, as the pipeline
        scaling = image_scaling(data, valid, percentiles)
        loaded = Loaded.from_unit(to_unit(data, valid, scaling),
                                  f"grayscale {mode} ({gray.dtype}): {_stretch_note(scaling)}")
        if bands is not None:  # the bands of the image replicated to RGB: all the same
            _select(np.zeros((1, 1, 3)), bands, f"the {mode} image converted to RGB")
        return loaded
    if mode in ("RGBA", "LA", "PA", "La", "RGBa") or (
            mode == "P" and "transparency" in img.info):
        rgba = np.asarray(img.convert("RGBA"))
        rgb = composite_over_black(rgba[..., :3], rgba[..., 3])
        note = f"{mode}: alpha dropped by compositing over black"
        if mode in ("LA", "La"):
            note += " (grayscale replicated to 3 channels)"
    elif mode == "RGB":
        rgb = np.asarray(img)
        note = "RGB 8-bit: no conversion"
    elif mode in ("L", "1"):
        rgb = np.asarray(img.convert("RGB"))
        note = f"grayscale {mode} 8-bit: replicated to 3 channels (no stretch)"
    else:  # P, CMYK, YCbCr, LAB, HSV, RGBX, ...
        rgb = np.asarray(img.convert("RGB"))
        note = f"{mode}: converted to RGB by PIL"
    if bands is not None:
        rgb = _select(rgb, bands, f"the {mode} image converted to RGB")
        note += f"; bands {','.join(map(str, bands))}"
    return Loaded(Image.fromarray(np.ascontiguousarray(rgb), "RGB"), note)


def _rasterio_preferred(path: Path, pil_img: Image.Image | None,
                        bands: tuple[int, ...] | None) -> bool:
    """Whether rasterio should read this file instead of PIL.

    PIL reads 3-band 8-bit TIFFs exactly as the seed did, so those stay with PIL. It fails
    on multiband 16-bit TIFFs and silently shows only RGB of an RGB+NIR TIFF, so
    multiband, non-8-bit and band-selected rasters go to rasterio (paletted ones stay with
    PIL, which applies the palette).
    """
    if pil_img is not None and pil_img.format != "TIFF":
        return False
    import rasterio  # imported here: most PNG/JPEG users never need GDAL

    try:
        with rasterio.open(path) as ds:
            palette = ds.count == 1 and ds.colorinterp[0] == rasterio.enums.ColorInterp.palette
            plain_rgb = ds.count == 3 and ds.dtypes[0] == "uint8" and ds.nodata is None
    except rasterio.errors.RasterioIOError:
        return False
    if pil_img is None:
        return True
    return not palette and (bands is not None or not plain_rgb)


def _from_rasterio(path: Path, bands: tuple[int, ...] | None,
                   percentiles: tuple[float, float]) -> Loaded:
    """Read bands of a raster with rasterio: 8-bit as RGB, anything else through the
    pipeline's own scaling (the same statistics and validity), saying how."""
    import rasterio
    from rasterio.enums import ColorInterp

    with rasterio.open(path) as ds:
        check_pixels(ds.width, ds.height, path)
        alpha_idx = [i + 1 for i, ci in enumerate(ds.colorinterp) if ci == ColorInterp.alpha]
        data_idx = [i for i in range(1, ds.count + 1) if i not in alpha_idx]
        if bands is not None:
            bad = [b for b in bands if not 1 <= b <= ds.count]
            if bad:
                raise AppError(f"--bands {','.join(map(str, bands))}: {path} has {ds.count} "
                               f"band(s) (1..{ds.count}); no band {bad[0]}")
            chosen = list(bands)
            how = f"bands {','.join(map(str, chosen))} (--bands)"
        elif len(data_idx) >= 3:
            chosen = data_idx[:3]
            how = (f"{len(data_idx)} bands: using bands {','.join(map(str, chosen))} "
                   f"(choose with --bands)" if len(data_idx) > 3 else "3 bands")
        else:
            chosen = data_idx[:1]
            how = (f"{len(data_idx)} bands: using band {chosen[0]} as grayscale"
                   if len(data_idx) > 1 else "1 band (grayscale)")
        try:  # the pipeline's bound on one block read (a header can declare 12 GiB tiles)
            check_declared_size(ds, tuple(chosen), path)
        except PipelineError as exc:
            raise AppError(exc.format()) from None
        # the pipeline's validity (nodata, masks, alpha, NaN, zero fill) and statistics
        data, valid = read_masked(ds, tuple(chosen))
        if data.dtype != np.uint8:
            scaling = compute_scaling(ds, tuple(chosen), percentiles=percentiles)
            note = f"GeoTIFF {data.dtype}, {how}: {_stretch_note(scaling)}"
            if not valid.all():
                note += "; fill/nodata pixels black"
            return Loaded.from_unit(to_unit(data, valid, scaling), note)
    rgb = np.moveaxis(data, 0, -1)  # [H, W, C] uint8
    note = f"GeoTIFF uint8, {how}: no stretch"
    if not valid.all():
        rgb = composite_over_black(rgb, np.where(valid, 255, 0).astype(np.uint8))
        note += "; masked (nodata/alpha) pixels set to black"
    if rgb.shape[-1] == 1:
        rgb = np.repeat(rgb, 3, axis=-1)
        note += ", replicated to 3 channels"
    return Loaded(Image.fromarray(np.ascontiguousarray(rgb), "RGB"), note)


LARGE_HINT = "translate large scenes with python -m pipeline run (tiled, bounded memory)"


def check_pixels(width: int, height: int, path: Path) -> None:
    """app.py decodes the whole image in memory: refuse, from the header alone, what PIL
    calls a decompression bomb (more than Image.MAX_IMAGE_PIXELS), for the files rasterio
    reads too (a 10 KB TIFF can declare 2**31 px wide)."""
    limit = Image.MAX_IMAGE_PIXELS
    if limit is not None and width * height > limit:
        raise AppError(f"{path}: {width} x {height} px is more than app.py decodes at once "
                       f"({limit} px); {LARGE_HINT}")


def read_input(path: str | os.PathLike[str], bands: tuple[int, ...] | None = None,
               percentiles: tuple[float, float] = DEFAULT_PERCENTILES) -> Loaded:
    """Open any image PIL or rasterio can read and convert it for the network (module doc):
    8-bit RGB as is, anything else by the shared stretch with `percentiles`.

    Raises:
        AppError: missing or unreadable file, or bands that the file does not have.
    """
    path = Path(path)
    if not path.is_file():
        raise AppError(f"{path}: input image not found")
    pil_img: Image.Image | None
    try:
        pil_img = Image.open(path)  # reads the header only: the pixels are decoded once,
    except (UnidentifiedImageError, OSError, ValueError):  # by whichever reader is chosen
        pil_img = None
    except Image.DecompressionBombError as exc:  # over 2x the limit: PIL refuses to open
        raise AppError(f"{path}: {str(exc).rstrip('.')}; {LARGE_HINT}") from None
    try:
        if pil_img is not None:
            check_pixels(*pil_img.size, path)
        if pil_img is not None and not _rasterio_preferred(path, pil_img, bands):
            try:
                pil_img.load()
                return _from_pil(pil_img, bands, percentiles)
            except (UnidentifiedImageError, OSError, ValueError):
                pass  # opened but not decodable by PIL (e.g. multiband 16-bit TIFF)
        if _rasterio_preferred(path, None, bands):
            try:
                return _from_rasterio(path, bands, percentiles)
            except rasterio.errors.RasterioIOError as exc:  # truncated or corrupt pixels
                raise AppError(read_error(exc, path).format()) from None
        raise AppError(f"{path}: neither PIL nor rasterio can read this image")
    finally:
        if pil_img is not None:
            pil_img.close()


# ----------------------------------------------------------------------------------------
# The seed's processing


def preprocess(img: Image.Image | Loaded, size: int = SEED_SIZE) -> torch.Tensor:
    """Input -> [1, 3, size, size] float32 in [-1, 1].

    8-bit (an RGB image, or a Loaded without `unit`), as the seed's transforms did:
    Resize((size, size)) with PIL bilinear, ToTensor (/255, HWC -> CHW), Normalize(0.5,
    0.5). Stretched non-8-bit input (`Loaded.unit`): each band resized with PIL bilinear in
    float (mode "F"; no 8-bit rounding), then mapped to [-1, 1] like the pipeline's tiles.
    """
    if isinstance(img, Loaded):
        if img.unit is not None:
            unit = img.unit
            if unit.shape[1:] != (size, size):
                unit = np.stack([np.asarray(Image.fromarray(c, "F").resize(
                    (size, size), Image.BILINEAR)) for c in unit])
            return torch.from_numpy(unit_to_model(unit)).unsqueeze(0)
        img = img.image
    resized = img.convert("RGB").resize((size, size), Image.BILINEAR)
    x = torch.from_numpy(np.asarray(resized, dtype=np.uint8).copy())
    x = x.permute(2, 0, 1).float().div(255.0)
    return ((x - 0.5) / 0.5).unsqueeze(0)


def translate(gen: torch.nn.Module, x: torch.Tensor, device: torch.device | str = "cpu",
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """Run genA2B once; return (out [1,3,H,W] in [-1, 1], heatmap [1,1,H/4,W/4]) on CPU.

    On CUDA, TF32 is turned off: with it an H200 moved the seed model's 8-bit output by
    one level on 3% of pixels against the CPU; without it, float32 parity holds.
    """
    set_tf32(False)
    with torch.inference_mode():
        out, _cam_logit, heatmap = gen(x.to(device))
    return out.float().cpu(), heatmap.float().cpu()


def read_model_bands(path: Path, bands: tuple[int, ...], contract: dict | None,
                     percentiles: tuple[float, float]) -> Loaded:
    """A multispectral model's input: `bands` of a GeoTIFF, scaled by the model's rule
    (reflectance from the bands' Scale/Offset for a reflectance model, else the pipeline's
    auto rule); the picture is the first three bands."""
    import rasterio

    from pipeline.inputs.radiometry import REFLECTANCE_RANGE, band_reflectance

    eo = (contract or {}).get("eo") or {}
    with rasterio.open(path) as ds:
        check_pixels(ds.width, ds.height, path)
        bad = [b for b in bands if not 1 <= b <= ds.count]
        if bad:
            raise AppError(f"--bands {','.join(map(str, bands))}: {path} has {ds.count} "
                           f"band(s) (1..{ds.count}); no band {bad[0]}")
        try:
            check_declared_size(ds, bands, path)
            if eo.get("method") == "reflectance":
                rng = tuple(eo.get("reflectance_range") or REFLECTANCE_RANGE)
                scaling = compute_scaling(ds, bands, scale="reflectance",
                                          reflectance=band_reflectance(ds, bands, str(path)),
                                          reflectance_range=(float(rng[0]), float(rng[1])))
            else:
                scaling = compute_scaling(ds, bands, percentiles=percentiles)
        except PipelineError as exc:
            raise AppError(exc.format()) from None
        data, valid = read_masked(ds, bands)
    unit = to_unit(data, valid, scaling)
    display = np.round(unit[:3] * 255.0).astype(np.uint8).transpose(1, 2, 0)
    note = (f"GeoTIFF {data.dtype}, bands {','.join(map(str, bands))} (--bands): "
            f"{scaling.method} scaling, the model's radiometry")
    return Loaded(Image.fromarray(np.ascontiguousarray(display), "RGB"), note, unit)


def check_model_input(ckpt: Any, args: argparse.Namespace) -> bool:
    """Whether the model is a multispectral one (fed `--bands` of a GeoTIFF); an AppError
    when the input cannot feed it: app.py reads RGB images for RGB models."""
    from pipeline.inputs.bandnames import RGB, model_band_names

    cfg = ckpt.config
    names = model_band_names(ckpt.radiometry, cfg.in_ch)
    if cfg.in_ch == 3 and names == RGB:
        if args.bands is not None and len(args.bands) not in (1, 3):
            raise AppError(f"--bands {','.join(map(str, args.bands))}: give three bands "
                           "(or one) for this RGB model")
        return False
    wanted = ", ".join(names) if names else f"{cfg.in_ch} bands"
    if args.bands is None or len(args.bands) != cfg.in_ch:
        raise AppError(
            f"{args.model_path}: the model takes {cfg.in_ch} bands ({wanted}), not an RGB "
            f"image; give a multiband GeoTIFF and --bands with {cfg.in_ch} band numbers in "
            "that order, or use python -m pipeline run (picks the bands by name)")
    return True


def postprocess(out: torch.Tensor, size: int) -> Image.Image:
    """[1,3,H,W] in [-1, 1] -> 8-bit RGB of size x size, in the seed's order: x*0.5+0.5,
    resize, then *255, round and clip. The resize (PIL bilinear, as for the input) runs on
    the float image, one channel at a time, so the result is rounded once, not twice.
    """
    x = (out[0].float() * 0.5 + 0.5).numpy()  # [3, H, W] in [0, 1]
    if x.shape[0] != 3:  # a VV/VH model: its first polarisation, as gray
        x = np.repeat(x[:1], 3, axis=0)
    if x.shape[1:] != (size, size):
        x = np.stack([np.asarray(Image.fromarray(c, "F").resize((size, size), Image.BILINEAR))
                      for c in x])
    arr = np.clip(np.round(x * 255.0), 0, 255).astype(np.uint8).transpose(1, 2, 0)
    return Image.fromarray(np.ascontiguousarray(arr), "RGB")


def jet(x: np.ndarray) -> np.ndarray:
    """Jet-like colour map: [...] in [0, 1] -> [..., 3] float in [0, 1] (blue->red)."""
    x = np.clip(x, 0.0, 1.0)[..., None]
    centres = np.array([0.75, 0.5, 0.25])  # r, g, b peaks
    return np.clip(1.5 - np.abs(4.0 * x - 4.0 * centres), 0.0, 1.0)


def heatmap_overlay(img: Image.Image, heatmap: torch.Tensor, size: int) -> Image.Image:
    """The CAM heatmap, upsampled bilinearly to size x size, min-max normalised to [0, 1]
    and jet-coloured as the original U-GAT-IT's ``cam()`` figure panel does, then blended
    50/50 over the input (resized to the same size): where the model looked.
    """
    hm = F.interpolate(heatmap.float(), size=(size, size), mode="bilinear",
                       align_corners=False)[0, 0].numpy()
    span = float(hm.max() - hm.min())
    hm01 = (hm - hm.min()) / span if span > 0 else np.zeros_like(hm)
    base = np.asarray(img.convert("RGB").resize((size, size), Image.BILINEAR), np.float32)
    blend = 0.5 * base + 0.5 * 255.0 * jet(hm01)
    return Image.fromarray(np.clip(np.round(blend), 0, 255).astype(np.uint8), "RGB")


def save_png(img: Image.Image, path: Path) -> None:
    """Write a PNG atomically: a killed run never leaves a half-written file under `path`."""
    with atomic_path(path) as tmp:
        img.save(tmp, format="PNG")


# ----------------------------------------------------------------------------------------
# Command line


def parse_bands(text: str) -> tuple[int, ...]:
    """'3,2,1' -> (3, 2, 1): three bands (or one, replicated), 1-based."""
    try:
        bands = tuple(int(t) for t in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected 1-based band numbers like 3,2,1") from None
    if min(bands) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: give three bands (or one) numbered from 1")
    return bands  # three or one for an RGB model (checked in run), or a model's count


def parse_percentiles(text: str) -> tuple[float, float]:
    """'2,98' -> (2.0, 98.0), with 0 <= low < high <= 100."""
    try:
        lo, hi = (float(t) for t in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected LOW,HIGH, e.g. 2,98") from None
    if not 0.0 <= lo < hi <= 100.0:
        raise argparse.ArgumentTypeError(f"{text!r}: need 0 <= LOW < HIGH <= 100")
    return lo, hi


def input_percentiles(args: argparse.Namespace, contract: dict | None) -> tuple[float, float]:
    """The stretch percentiles (flag > model's contract > default), printed with their origin.
    The pipeline's resolution function, so both commands pick the same value."""
    try:
        resolved = resolve_radiometry({"percentiles": (args.percentiles, "flag")}, contract,
                                      str(args.model_path))
    except PipelineError as exc:
        raise AppError(exc.format()) from exc
    pct, origin = resolved["percentiles"]
    print(f"radiometry: percentiles {pct[0]:g},{pct[1]:g} ({origin}; used for non-8-bit "
          f"input only: 8-bit input is never stretched)")
    return pct[0], pct[1]


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="Translate one optical image into a SAR-like PNG with U-GAT-IT (genA2B).")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    p.add_argument("--model_path", default="eo2sar_params_latest.pt",
                   help="checkpoint: the published seed file or an eo2sar file "
                        "(default: eo2sar_params_latest.pt)")
    p.add_argument("--img", required=True, help="input image (PNG, JPEG, TIFF/GeoTIFF, ...)")
    p.add_argument("--out_img_size", type=_positive, default=SEED_SIZE,
                   help="side of the square output in pixels (default: 256)")
    p.add_argument("--out", default=None,
                   help="output path (default: ./gen_sar_<input stem>.png); a directory "
                        "gets gen_sar_<input stem>.png inside it")
    p.add_argument("--bands", type=parse_bands, default=None,
                   help="1-based bands to use as RGB for multiband rasters, e.g. 3,2,1 "
                        "(default: the first three)")
    p.add_argument("--percentiles", type=parse_percentiles, default=None,
                   help="LOW,HIGH percentiles of the stretch of non-8-bit input (default: the "
                        "model's radiometric contract, else 2,98)")
    p.add_argument("--heatmap", action="store_true",
                   help="also write the CAM heatmap over the input as <output stem>_heatmap.png")
    for name in IGNORED_FLAGS:
        p.add_argument(f"--{name}", type=int, default=None,
                       help="ignored (seed compatibility): the checkpoint gives the architecture")
    return p


def output_paths(img: Path, out: str | None) -> tuple[Path, Path]:
    """(image, heatmap) output paths: the seed's name in the cwd unless --out says else."""
    name = f"gen_sar_{img.stem}.png"
    if out is None:
        path = Path.cwd() / name
    else:
        path = Path(out)
        if path.is_dir():
            path = path / name
    if not path.parent.is_dir():
        raise AppError(f"{path.parent}: output directory does not exist")
    return path, path.with_name(f"{path.stem}_heatmap.png")


def run(args: argparse.Namespace) -> None:
    ignored = [f"--{n}" for n in IGNORED_FLAGS if getattr(args, n) is not None]
    if ignored:
        print(f"note: {' '.join(ignored)} ignored: the architecture is read from the checkpoint",
              file=sys.stderr)
    out_path, heat_path = output_paths(Path(args.img), args.out)
    try:
        device = resolve_device(args.device)  # fail on a missing GPU before any work
    except UgatitError as exc:
        raise AppError(str(exc)) from exc
    if not Path(args.img).is_file():
        raise AppError(f"{args.img}: input image not found")
    try:
        ckpt = load_checkpoint(args.model_path, device=device, networks=("genA2B",))
    except UgatitError as exc:
        raise AppError(f"cannot load checkpoint: {exc}") from exc
    if check_model_input(ckpt, args):
        loaded = read_model_bands(Path(args.img), args.bands, ckpt.radiometry,
                                  input_percentiles(args, ckpt.radiometry))
    else:
        loaded = read_input(args.img, args.bands, input_percentiles(args, ckpt.radiometry))
    print(f"input: {args.img} {loaded.image.size[0]}x{loaded.image.size[1]}: {loaded.note}")
    cfg = ckpt.config
    size = cfg.img_size if not cfg.light else SEED_SIZE
    print(f"model: {args.model_path} ({ckpt.format} format, ngf={cfg.ngf}, n_res={cfg.n_res}, "
          f"{'light' if cfg.light else 'full'}) on {device}")
    t0 = time.perf_counter()
    out, heatmap = translate(ckpt.genA2B, preprocess(loaded, size), device)
    seconds = time.perf_counter() - t0
    if out.shape[1] != 3:
        sar = (ckpt.radiometry or {}).get("sar") or {}
        pols = sar.get("polarisations") or [f"channel 1 of {out.shape[1]}"]
        print(f"output: {pols[0]} as gray (the model gives {out.shape[1]} channels)")
    save_png(postprocess(out, args.out_img_size), out_path)
    print(f"wrote {out_path} ({args.out_img_size}x{args.out_img_size}, {seconds:.2f} s)")
    if args.heatmap:
        save_png(heatmap_overlay(loaded.image, heatmap, args.out_img_size), heat_path)
        print(f"wrote {heat_path} (CAM heatmap over the input)")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        run(args)
    except AppError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

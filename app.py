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

What the seed got wrong, and this fixes (each conversion is printed in one line):
- RGBA / LA / transparent palette: alpha is dropped by compositing over black, because
  transparent pixels carry no scene and black is what the network saw around scenes.
- Grayscale (L, I;16, I, F, one-band rasters): replicated to 3 channels.
- 16-bit, 32-bit and float data: one global 2nd-98th percentile stretch to [0, 1] over all
  used bands (one pair of limits, so colour balance is kept). 8-bit data is never
  stretched: the network was trained on 8-bit images as they are.
- Multiband rasters (e.g. RGB+NIR, Landsat): the first three bands, or ``--bands 3,2,1``
  (1-based, rasterio order). TIFFs are read with rasterio when PIL cannot read them or
  would hide bands; rasterio's nodata / mask becomes black like alpha.
- A missing or broken checkpoint is an error (non-zero exit, nothing written), not a run
  with random weights; a checkpoint saved on CUDA loads on a CPU machine; ``--device
  cuda:N`` without CUDA is an error; inference runs under ``torch.inference_mode()``.
- ``--ch --n_res --n_dis --img_size --img_ch`` are accepted for old scripts and ignored:
  the architecture is read from the checkpoint.

The scene-sized, georeferenced path is ``python -m pipeline run``; this is the small one.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError

from ugatit import UgatitError, load_checkpoint, resolve_device, set_tf32

#: The seed's network input size (the published model's img_size).
SEED_SIZE = 256
#: Percentiles of the global stretch applied to non-8-bit data.
STRETCH_PERCENTILES = (2.0, 98.0)
#: Flags the seed needed to build the network; the checkpoint now says all of it.
IGNORED_FLAGS = ("ch", "n_res", "n_dis", "img_size", "img_ch")


class AppError(Exception):
    """A user-facing failure: printed as one line on stderr, exit status 1."""


@dataclass
class Loaded:
    """An input image as the network will see it, and what was done to get it."""

    image: Image.Image  # mode RGB, 8 bits per channel
    note: str  # one line: the conversion that was applied


# ----------------------------------------------------------------------------------------
# Reading and converting the input


def composite_over_black(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Drop alpha by compositing 8-bit RGB [H,W,3] over black: round(rgb * alpha / 255)."""
    out = (rgb.astype(np.uint32) * alpha[..., None].astype(np.uint32) + 127) // 255
    return out.astype(np.uint8)


def percentile_stretch(data: np.ndarray, valid: np.ndarray | None = None,
                       percentiles: tuple[float, float] = STRETCH_PERCENTILES,
                       ) -> tuple[np.ndarray, float, float]:
    """Scale [H,W,C] data to float32 [0, 1] with ONE pair of percentile limits for all bands.

    Why global and shared by bands: per-band limits would recolour the scene, and limits
    are taken over the whole image (not per tile) so the same radiance maps to the same
    grey everywhere. Statistics skip invalid pixels (nodata, NaN) and pixels that are 0 in
    every band (the fill collar of Landsat and similar products, which has no nodata tag);
    those pixels come out black. Returns (scaled, lo, hi).
    """
    data = data.astype(np.float64, copy=False)
    finite = np.isfinite(data).all(axis=-1)
    stat_mask = finite & ~(data == 0).all(axis=-1)
    if valid is not None:
        stat_mask &= valid
    sample = data[stat_mask]
    if sample.size == 0:  # nothing valid: everything is fill
        return np.zeros(data.shape, np.float32), 0.0, 0.0
    lo, hi = (float(v) for v in np.percentile(sample, percentiles))
    scale = hi - lo if hi > lo else 1.0  # a flat image maps to black rather than dividing by 0
    out = np.clip((np.nan_to_num(data, nan=lo) - lo) / scale, 0.0, 1.0)
    if valid is not None:
        out[~valid] = 0.0
    out[~finite] = 0.0
    return out.astype(np.float32), lo, hi


def _to_uint8(x01: np.ndarray) -> np.ndarray:
    return np.clip(np.round(x01 * 255.0), 0, 255).astype(np.uint8)


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


def _from_pil(img: Image.Image, bands: tuple[int, ...] | None) -> Loaded:
    """Convert whatever PIL opened to 8-bit RGB, saying how."""
    mode = img.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        gray = np.asarray(img)
        if gray.ndim != 2:
            raise AppError(f"unexpected {mode} image of shape {gray.shape}")
        x01, lo, hi = percentile_stretch(gray[..., None])
        rgb = np.repeat(_to_uint8(x01), 3, axis=-1)
        note = (f"grayscale {mode} ({gray.dtype}): global {STRETCH_PERCENTILES[0]:g}-"
                f"{STRETCH_PERCENTILES[1]:g}% stretch [{lo:g}, {hi:g}] -> [0, 1], "
                f"replicated to 3 channels")
    elif mode in ("RGBA", "LA", "PA", "La", "RGBa") or (
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


def _from_rasterio(path: Path, bands: tuple[int, ...] | None) -> Loaded:
    """Read bands of a raster with rasterio and convert them to 8-bit RGB, saying how."""
    import rasterio
    from rasterio.enums import ColorInterp

    with rasterio.open(path) as ds:
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
        data = np.moveaxis(ds.read(chosen), 0, -1)  # [H, W, C]
        valid = ds.dataset_mask() > 0  # nodata, alpha and internal masks, as GDAL defines
        dtype = np.dtype(ds.dtypes[chosen[0] - 1])
    if dtype == np.uint8:
        rgb = data
        note = f"GeoTIFF uint8, {how}: no stretch"
        if not valid.all():
            rgb = composite_over_black(rgb, np.where(valid, 255, 0).astype(np.uint8))
            note += "; masked (nodata/alpha) pixels set to black"
    else:
        x01, lo, hi = percentile_stretch(data, valid)
        rgb = _to_uint8(x01)
        note = (f"GeoTIFF {dtype}, {how}: global {STRETCH_PERCENTILES[0]:g}-"
                f"{STRETCH_PERCENTILES[1]:g}% stretch [{lo:g}, {hi:g}] -> [0, 1]")
    if rgb.shape[-1] == 1:
        rgb = np.repeat(rgb, 3, axis=-1)
        note += ", replicated to 3 channels"
    return Loaded(Image.fromarray(np.ascontiguousarray(rgb), "RGB"), note)


def read_input(path: str | os.PathLike[str], bands: tuple[int, ...] | None = None) -> Loaded:
    """Open any image PIL or rasterio can read and convert it to 8-bit RGB (see module doc).

    Raises:
        AppError: missing or unreadable file, or bands that the file does not have.
    """
    path = Path(path)
    if not path.is_file():
        raise AppError(f"{path}: input image not found")
    pil_img: Image.Image | None
    try:
        pil_img = Image.open(path)
        pil_img.load()
    except (UnidentifiedImageError, OSError, ValueError):
        pil_img = None  # e.g. multiband 16-bit TIFF: rasterio below
    if _rasterio_preferred(path, pil_img, bands):
        return _from_rasterio(path, bands)
    if pil_img is None:
        raise AppError(f"{path}: neither PIL nor rasterio can read this image")
    return _from_pil(pil_img, bands)


# ----------------------------------------------------------------------------------------
# The seed's processing


def preprocess(img: Image.Image, size: int = SEED_SIZE) -> torch.Tensor:
    """RGB image -> [1, 3, size, size] float32 in [-1, 1], as the seed's transforms did.

    Resize((size, size)) with PIL bilinear, ToTensor (/255, HWC -> CHW), Normalize(0.5, 0.5).
    """
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


def postprocess(out: torch.Tensor, size: int) -> Image.Image:
    """[1,3,H,W] in [-1, 1] -> 8-bit RGB of size x size, in the seed's order: x*0.5+0.5,
    resize, then *255, round and clip. The resize (PIL bilinear, as for the input) runs on
    the float image, one channel at a time, so the result is rounded once, not twice.
    """
    x = (out[0].float() * 0.5 + 0.5).numpy()  # [3, H, W] in [0, 1]
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
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        img.save(tmp, format="PNG")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


# ----------------------------------------------------------------------------------------
# Command line


def parse_bands(text: str) -> tuple[int, ...]:
    """'3,2,1' -> (3, 2, 1): three bands (or one, replicated), 1-based."""
    try:
        bands = tuple(int(t) for t in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected 1-based band numbers like 3,2,1") from None
    if len(bands) not in (1, 3) or min(bands) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: give three bands (or one) numbered from 1")
    return bands


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
    loaded = read_input(args.img, args.bands)
    print(f"input: {args.img} {loaded.image.size[0]}x{loaded.image.size[1]}: {loaded.note}")
    cfg = ckpt.config
    size = cfg.img_size if not cfg.light else SEED_SIZE
    print(f"model: {args.model_path} ({ckpt.format} format, ngf={cfg.ngf}, n_res={cfg.n_res}, "
          f"{'light' if cfg.light else 'full'}) on {device}")
    t0 = time.perf_counter()
    out, heatmap = translate(ckpt.genA2B, preprocess(loaded.image, size), device)
    seconds = time.perf_counter() - t0
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

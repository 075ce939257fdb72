"""Stack single-band rasters on one grid into a VRT (what `gdalbuildvrt -separate` does),
without GDAL's command-line tools: `python -m scripts.stack_bands OUT.vrt B04.tif B03.tif
B02.tif [B08.tif]`; `--like REF.tif` first warps the (one) file onto REF's grid, bilinear,
for pairs whose grids differ slightly (SSL4EO-S12's S1 and S2 patches).

Sentinel-2 patches of BigEarthNet / SSL4EO come as one file per band; `pipeline run`,
`pipeline tiles` and `pipeline evaluate-pairs` read a multi-band raster, so the demo's
make targets stack red, green, blue (and NIR) into a VRT that references the band files
(nothing is copied). Band files on different grids are refused (pipeline.inputs.sources).
"""

from __future__ import annotations

import sys
from pathlib import Path

from pipeline.errors import PipelineError
from pipeline.inputs.sources import Band, write_stack_vrt


def stack(out: Path, files: list[Path]) -> Path:
    """Write OUT as a VRT of ``files`` (band 1 of each), in order; absolute source paths."""
    bands = [Band(name=f.stem, path=str(f.resolve())) for f in files]
    out.parent.mkdir(parents=True, exist_ok=True)
    return write_stack_vrt(bands, out)


def warp_like(out: Path, src: Path, ref: Path) -> Path:
    """Write OUT as a warped VRT of band 1 of ``src`` on ``ref``'s grid (CRS, transform,
    size), bilinear; pixels with no source become nodata (-9999), never a fake value."""
    import rasterio
    import rasterio.shutil
    from rasterio.enums import Resampling
    from rasterio.vrt import WarpedVRT

    out.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(ref) as r, rasterio.open(src.resolve()) as s, WarpedVRT(
            s, crs=r.crs, transform=r.transform, width=r.width, height=r.height,
            resampling=Resampling.bilinear, nodata=-9999.0) as v:
        rasterio.shutil.copy(v, out, driver="VRT")
    return out


def main(argv: list[str]) -> int:
    if len(argv) < 2 or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 2
    try:
        if argv[0] == "--like":
            if len(argv) != 4:
                print("usage: --like REF OUT.vrt SRC", file=sys.stderr)
                return 2
            warp_like(Path(argv[2]), Path(argv[3]), Path(argv[1]))
        else:
            stack(Path(argv[0]), [Path(a) for a in argv[1:]])
    except PipelineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

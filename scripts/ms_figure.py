"""The README's picture of the multispectral demo model beside real Sentinel-1, VV and VH.

    python -m scripts.ms_figure MODEL docs/demo_model/ms_vs_sentinel1.png

Each row is one scene through the real scene pipeline (`run_scene`, default options,
`--output-scale db`): the Sentinel-2 input (red, green, blue), its NIR, the model's VV and
the real VV, the model's VH and the real VH, on FIXED dB colour scales (VV -25..0 dB,
VH -32.5..0 dB: the contract's ranges), so darker is darker in every panel and a model
that draws water brighter than land shows it. Rows: the held-out BigEarthNet report
patches (36_85, 4_55; never in training) and the Sen1Floods11 India_900498 flood chip
(its right-hand blocks held out by the tile split; the left ones were training pairs).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import rasterio

from pipeline import PipelineWarning, load_config, run_scene

D = Path("data/sentinel1")
BEN = D / "bigearthnet"
S1 = "S1A_IW_GRDH_1SDV_"
ROWS = [
    ("BigEarthNet 36_85 (held out)", BEN / "S2A_MSIL2A_20170617T113321_36_85",
     BEN / f"{S1}20170617T064724_29UPU_36_85", None),
    ("BigEarthNet 4_55 (held out)", BEN / "S2A_MSIL2A_20170617T113321_4_55",
     BEN / f"{S1}20170617T064724_29UPU_4_55", None),
    ("Sen1Floods11 India flood", D / "sen1floods11/S2/India_900498_S2Hand.tif",
     D / "sen1floods11/S1/India_900498_S1Hand.tif", "0.0001"),
]


def _optical(src: Path) -> tuple[np.ndarray, np.ndarray]:
    """(RGB reflectance [H, W, 3], NIR reflectance [H, W])."""
    if src.is_dir():
        bands = [rasterio.open(next(src.glob(f"*_{b}.tif"))).read(1) for b in
                 ("B04", "B03", "B02", "B08")]
    else:
        with rasterio.open(src) as ds:
            bands = [ds.read(i) for i in (4, 3, 2, 8)]
    refl = np.stack(bands).astype(np.float64) * 1e-4
    return np.moveaxis(refl[:3], 0, -1), refl[3]


def _sar(src: Path) -> dict[str, np.ndarray]:
    if src.is_dir():
        return {p: rasterio.open(next(src.glob(f"*_{p}.tif"))).read(1) for p in ("VV", "VH")}
    with rasterio.open(src) as ds:
        return {"VV": ds.read(1), "VH": ds.read(2)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model", type=Path)
    p.add_argument("png", type=Path)
    args = p.parse_args(argv)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = ["Sentinel-2 (RGB)", "NIR", "eo2sar VV", "real VV", "eo2sar VH", "real VH"]
    fig, axes = plt.subplots(len(ROWS), len(cols), figsize=(2.2 * len(cols),
                                                             2.3 * len(ROWS)))
    with tempfile.TemporaryDirectory() as tmp:
        for r, (title, optical, sar_src, scale) in enumerate(ROWS):
            out = Path(tmp) / f"{r}.tif"
            settings = {"output_scale": "db"}
            if scale:
                settings["reflectance_scale"] = scale
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", PipelineWarning)
                run_scene(optical, out, model_path=args.model,
                          config=load_config(None, settings), progress=False)
            with rasterio.open(out) as ds:
                model = {"VV": ds.read(1), "VH": ds.read(2)}
            rgb, nir = _optical(optical)
            real = _sar(sar_src)
            panels = [(np.clip(rgb / 0.25, 0, 1), None), (nir, (0, 0.5)),
                      (model["VV"], (-25, 0)), (real["VV"], (-25, 0)),
                      (model["VH"], (-32.5, 0)), (real["VH"], (-32.5, 0))]
            for c, (img, rng) in enumerate(panels):
                ax = axes[r, c]
                if rng is None:
                    ax.imshow(img)
                else:
                    ax.imshow(img, cmap="gray", vmin=rng[0], vmax=rng[1])
                ax.set_xticks([])
                ax.set_yticks([])
                if r == 0:
                    ax.set_title(cols[c], fontsize=9)
                if c == 0:
                    ax.set_ylabel(title, fontsize=8)
    fig.suptitle("eo2sar multispectral demo model (red, green, blue, NIR in; VV, VH out): "
                 "fixed dB scales, VV -25..0, VH -32.5..0", fontsize=9)
    fig.tight_layout()
    args.png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.png, dpi=90)
    print(f"wrote {args.png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

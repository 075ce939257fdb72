"""Choose the demo checkpoint by evaluation, never by the last step (`make demo-model`).

    python -m scripts.select_demo_model runs/demo_s1/checkpoints --json runs/demo_s1/selection.json

Every checkpoint runs through the real scene pipeline (`pipeline evaluate-pairs`' code,
default options: scene-consistent normalisation once it is the default) on

* the SELECTION pairs: BigEarthNet Sentinel-2 / Sentinel-1 patches 87_48 (33UUP, June
  2017) and 56_35 (29SND, December 2017), never used in training; measure: correlation of
  the 9 x 9 box-filtered output with the real VV in dB (corr9);
* two optical scenes with open water and a NIR band, Landsat 7 Olinda (coast) and the Haiti
  RGB+NIR scene (sea): the output's mean over water (NDWI = (green - NIR) / (green + NIR)
  > 0.2) against land (NDWI < 0), in dB. They have no SAR partner, and their optical tiles
  are in the training set (unpaired), so this is a physical sanity check, not a held-out
  score: real Sentinel-1 VV puts calm water about 10 dB below land (pyroSAR's scene: -21
  against -11 dB).

Ranking key, fixed before looking: the highest mean corr9 on the selection pairs among the
checkpoints whose water is at least WATER_MIN_DB darker than land on both water scenes; if
none qualifies, the highest corr9 overall (and the report says so). The report pairs
(36_85, 4_55) are evaluated on the chosen checkpoint only, by `make demo-model`.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import rasterio

from pipeline import PipelineWarning, load_config, run_scene
from pipeline.run.evaluate_pairs import OpticalOptions, Pair, evaluate_pairs

BEN = Path("tests/data/sentinel1/bigearthnet")
SELECTION = [
    Pair(BEN / "S2A_MSIL2A_20170613T101031_87_48",
         BEN / "S1A_IW_GRDH_1SDV_20170613T165043_33UUP_87_48", "ben_87_48"),
    Pair(BEN / "S2A_MSIL2A_20171221T112501_56_35",
         BEN / "S1A_IW_GRDH_1SDV_20171221T064238_29SND_56_35", "ben_56_35"),
]
REPORT = [
    Pair(BEN / "S2A_MSIL2A_20170617T113321_36_85",
         BEN / "S1A_IW_GRDH_1SDV_20170617T064724_29UPU_36_85", "ben_36_85"),
    Pair(BEN / "S2A_MSIL2A_20170617T113321_4_55",
         BEN / "S1A_IW_GRDH_1SDV_20170617T064724_29UPU_4_55", "ben_4_55"),
]
#: (raster, R,G,B bands, green band, NIR band)
WATER_SCENES = {
    "l7_olinda": (Path("tests/data/l7_olinda_6band_uint8.tif"), (3, 2, 1), 2, 4),
    "haiti": (Path("tests/data/haiti_rgbn_uint8.tif"), (1, 2, 3), 2, 4),
}
WATER_MIN_DB = 3.0
NDWI_WATER, NDWI_LAND = 0.2, 0.0


def water_contrast_db(model: Path, tmp: Path) -> dict[str, float]:
    """Land minus water mean of the output in dB, per water scene (positive: water darker)."""
    out: dict[str, float] = {}
    for name, (path, rgb, green_band, nir_band) in WATER_SCENES.items():
        dst = tmp / f"{name}.tif"
        cfg = load_config(None, {"bands": rgb, "output_scale": "db"})
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", PipelineWarning)
            run_scene(path, dst, model_path=model, config=cfg, overwrite=True,
                      progress=False)
        with rasterio.open(dst) as o, rasterio.open(path) as src:
            db = o.read(1, masked=True).astype(np.float64).filled(np.nan)
            green = src.read(green_band).astype(np.float64)
            nir = src.read(nir_band).astype(np.float64)
        ndwi = (green - nir) / np.maximum(green + nir, 1e-6)
        water = (ndwi > NDWI_WATER) & np.isfinite(db)
        land = (ndwi < NDWI_LAND) & np.isfinite(db)
        out[name] = float(np.mean(db[land]) - np.mean(db[water]))
    return out


def step_of(path: Path) -> int:
    m = re.search(r"(\d+)", path.stem)
    return int(m.group(1)) if m else -1


def rank(rows: list[dict[str, Any]]) -> tuple[dict[str, Any], str]:
    ok = [r for r in rows if min(r["water_db"].values()) >= WATER_MIN_DB]
    pool, rule = (ok, f"highest corr9 among water >= {WATER_MIN_DB} dB darker") if ok else \
        (rows, f"NO checkpoint has water >= {WATER_MIN_DB} dB darker: highest corr9 overall")
    return max(pool, key=lambda r: r["corr9"]), rule


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoints", type=Path, nargs="+",
                    help="folders of params_*.pt and/or checkpoint files (all ranked together)")
    ap.add_argument("--json", type=Path, required=True, help="selection report")
    args = ap.parse_args(argv)
    files = [f for c in args.checkpoints
             for f in (sorted(c.glob("*.pt"), key=step_of) if c.is_dir() else [c])]
    if not files:
        print(f"error: no checkpoint in {' '.join(map(str, args.checkpoints))}",
              file=sys.stderr)
        return 1
    rows = []
    print(f"{'checkpoint':<36} {'corr9 sel':>9} {'red':>6}  water dB darker (Olinda, Haiti)")
    with tempfile.TemporaryDirectory(prefix="eo2sar_select_") as tmp:
        for f in files:
            rep = evaluate_pairs(SELECTION, f, {}, OpticalOptions())
            water = water_contrast_db(f, Path(tmp))
            rows.append({"path": str(f), "step": step_of(f),
                         "corr9": rep["mean"]["corr9_output"],
                         "corr9_red": rep["mean"]["corr9_red"],
                         "corr9_pairs": {r["name"]: r["corr9_output"] for r in rep["pairs"]},
                         "water_db": water})
            name = f"{f.parent.parent.name}/{f.name}" if f.parent.name == "checkpoints" \
                else f.name
            print(f"{name:<36} {rows[-1]['corr9']:>9.3f} {rows[-1]['corr9_red']:>6.3f}  "
                  + ", ".join(f"{v:+.1f}" for v in water.values()), flush=True)
    best, rule = rank(rows)
    doc = {"rule": rule, "water_min_db": WATER_MIN_DB,
           "selection_pairs": [p.name for p in SELECTION], "best": best, "all": rows}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"best: {best['path']} ({rule}); wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

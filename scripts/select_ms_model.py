"""Choose the multispectral demo checkpoint by evaluation, never by the last step.

    python -m scripts.select_ms_model runs/demo_ms/checkpoints --json runs/demo_ms/selection.json

The rule, fixed before any checkpoint was looked at (DESIGN.md: GAN outputs swing between
checkpoints; choose on a selection split, report on another):

* SELECTION pairs: the BigEarthNet Sentinel-2 / Sentinel-1 patches 87_48 (33UUP, June 2017)
  and 56_35 (29SND, December 2017), never in training. Each whole 120 px patch goes
  through the generator in one forward (for a one-tile scene that is exactly what the
  pipeline's scene normalisation computes), red, green, blue, NIR as reflectance / 0.5,
  as `pipeline tiles --eo-scale reflectance` cut the training tiles. Measure: corr9, the
  correlation of the 9 x 9 box-filtered output with the real backscatter in dB, for VV
  and for VH (pipeline.run.evaluate_pairs.masked_box_corr). KEY = the mean of the four.
* WATER GATE: the Sen1Floods11 India_900498 flood pair's held-out spatial blocks (the
  testA/testB tiles of the dataset: the tile builder's split kept them out of training)
  with the chip's hand-drawn water label: the output's VV land - water contrast (dB) as a
  fraction of the real VV's on the same pixels. A checkpoint passes with >= WATER_GATE.
* CHOICE: the highest KEY among the checkpoints that pass the gate; if none passes, the
  highest KEY overall, and the JSON says so.

The report pairs (36_85, 4_55) are evaluated on the chosen checkpoint only
(`pipeline evaluate-pairs`). Baselines on the selection pairs (red band, NIR, NDVI,
-NDWI) are recorded beside, for reading, never for choosing.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import rasterio.windows
import torch

from pipeline.run.evaluate_pairs import masked_box_corr
from ugatit import load_checkpoint

BEN = Path("data/sentinel1/bigearthnet")
S1 = "S1A_IW_GRDH_1SDV_"
SELECTION = {
    "ben_87_48": ("S2A_MSIL2A_20170613T101031_87_48", S1 + "20170613T165043_33UUP_87_48"),
    "ben_56_35": ("S2A_MSIL2A_20171221T112501_56_35", S1 + "20171221T064238_29SND_56_35"),
}
REPORT = {
    "ben_36_85": ("S2A_MSIL2A_20170617T113321_36_85", S1 + "20170617T064724_29UPU_36_85"),
    "ben_4_55": ("S2A_MSIL2A_20170617T113321_4_55", S1 + "20170617T064724_29UPU_4_55"),
}
FLOOD_LABEL = Path("data/sentinel1/sen1floods11/Labels/India_900498_LabelHand.tif")
WATER_GATE = 0.5
S2_BANDS = ("B04", "B03", "B02", "B08")  # red, green, blue, nir: the model's order
REFLECTANCE_HIGH = 0.5  # the contract's reflectance_range: [0, 0.5] -> unit [0, 1]
CKPT_RE = re.compile(r"params_(\d+)\.pt$")


def read_patch(name: str) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(reflectance [4, H, W] red, green, blue, nir; {"VV": dB, "VH": dB})."""
    s2, s1 = SELECTION.get(name) or REPORT[name]
    refl = []
    for band in S2_BANDS:
        with rasterio.open(BEN / s2 / f"{s2}_{band}.tif") as ds:
            refl.append(ds.read(1).astype(np.float64) * 1e-4)
    sar = {}
    for pol in ("VV", "VH"):
        with rasterio.open(BEN / s1 / f"{s1}_{pol}.tif") as ds:
            sar[pol] = ds.read(1).astype(np.float64)
    return np.stack(refl), sar


def translate(gen: torch.nn.Module, unit: np.ndarray, db_ranges: list[list[float]]
              ) -> list[np.ndarray]:
    """unit [C, H, W] in [0, 1] -> the generator's outputs in dB, one per polarisation."""
    x = torch.from_numpy(unit.astype(np.float32))[None] * 2 - 1
    with torch.no_grad():
        y = gen(x)[0][0].double().numpy()
    return [lo + (y[i] + 1) / 2 * (hi - lo) for i, (lo, hi) in enumerate(db_ranges)]


def refl_to_unit(refl: np.ndarray) -> np.ndarray:
    fill = (refl == 0).all(axis=0)
    unit = np.clip(refl / REFLECTANCE_HIGH, 0.0, 1.0)
    unit[:, fill] = 0.0
    return unit


def baselines(refl: np.ndarray) -> dict[str, np.ndarray]:
    red, green, _, nir = refl
    with np.errstate(invalid="ignore", divide="ignore"):
        return {"red": red, "nir": nir, "ndvi": (nir - red) / (nir + red),
                "-ndwi": -(green - nir) / (green + nir)}


def flood_tiles(dataset: Path) -> list[tuple[Path, Path, np.ndarray]]:
    """(testA tile, testB tile, label window) of the India flood pair's held-out blocks."""
    index = json.loads((dataset / "index.geojson").read_text())
    out = []
    with rasterio.open(FLOOD_LABEL) as lab:
        for f in index["features"]:
            p = f["properties"]
            if p["file"].startswith("testA/India_900498"):
                w = p["window"]
                win = rasterio.windows.Window(w["col_off"], w["row_off"], w["width"],
                                              w["height"])
                out.append((dataset / p["file"], dataset / p["file"].replace("testA", "testB"),
                            lab.read(1, window=win)))
    return out


def water_ratio(gen: torch.nn.Module, tiles: list[tuple[Path, Path, np.ndarray]],
                db_ranges: list[list[float]]) -> dict[str, Any]:
    """Output VV land - water contrast / real VV's, over every held-out flood tile."""
    from ugatit.data import load_array

    out_w, out_l, real_w, real_l = [], [], [], []
    for a, b, label in tiles:
        vv = translate(gen, load_array(a), db_ranges)[0]
        lo, hi = db_ranges[0]
        real = lo + load_array(b)[0].astype(np.float64) * (hi - lo)
        water, land = label == 1, label == 0
        out_w.append(vv[water])
        out_l.append(vv[land])
        real_w.append(real[water])
        real_l.append(real[land])
    ow, ol = np.concatenate(out_w), np.concatenate(out_l)
    rw, rl = np.concatenate(real_w), np.concatenate(real_l)
    real_c = float(rl.mean() - rw.mean())
    out_c = float(ol.mean() - ow.mean())
    return {"tiles": len(tiles), "water_px": int(ow.size), "land_px": int(ol.size),
            "output_contrast_db": out_c, "real_contrast_db": real_c,
            "ratio": out_c / real_c if real_c > 0 else math.nan}


def score(path: Path, pairs: list[str], tiles: list[tuple[Path, Path, np.ndarray]]
          ) -> dict[str, Any]:
    ck = load_checkpoint(path)
    gen = ck.genA2B.eval()
    db_ranges = ck.radiometry["sar"]["db_ranges"]
    row: dict[str, Any] = {"path": str(path), "corr9": {}}
    for name in pairs:
        refl, sar = read_patch(name)
        valid = ~(refl == 0).all(axis=0)
        outs = translate(gen, refl_to_unit(refl), db_ranges)
        for pol, out in zip(("VV", "VH"), outs, strict=True):
            row["corr9"][f"{name}_{pol}"] = masked_box_corr(out, sar[pol], valid)
    row["key"] = float(np.mean(list(row["corr9"].values())))
    if tiles:
        row["water"] = water_ratio(gen, tiles, db_ranges)
    return row


def baseline_rows(pairs: list[str]) -> dict[str, dict[str, float]]:
    rows: dict[str, dict[str, float]] = {}
    for name in pairs:
        refl, sar = read_patch(name)
        valid = ~(refl == 0).all(axis=0)
        for b, img in baselines(refl).items():
            for pol in ("VV", "VH"):
                rows.setdefault(b, {})[f"{name}_{pol}"] = masked_box_corr(img, sar[pol], valid)
    for b in rows:
        rows[b]["mean"] = float(np.mean(list(rows[b].values())))
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoints", type=Path, nargs="+", help="checkpoint files or folders")
    p.add_argument("--dataset", type=Path, default=Path("data/demo_ms/dataset"),
                   help="the training dataset (its testA/testB flood tiles: water gate)")
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--report", action="store_true",
                   help="score the REPORT pairs instead (the chosen checkpoint only)")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    files = sorted((f for c in args.checkpoints
                    for f in ([c] if c.is_file() else c.glob("params_*.pt"))),
                   key=lambda f: int(m.group(1)) if (m := CKPT_RE.search(f.name)) else 0)
    pairs = list(REPORT if args.report else SELECTION)
    tiles = flood_tiles(args.dataset) if (args.dataset / "index.geojson").exists() else []
    rows = []
    for f in files:
        row = score(f, pairs, tiles)
        rows.append(row)
        w = row.get("water", {}).get("ratio", math.nan)
        print(f"{f.name}: key {row['key']:.3f}  water ratio {w:.2f}  "
              + "  ".join(f"{k} {v:.3f}" for k, v in row["corr9"].items()), flush=True)
    passing = [r for r in rows if r.get("water", {}).get("ratio", -1) >= WATER_GATE]
    best = max(passing or rows, key=lambda r: r["key"])
    doc = {"rule": __doc__.split("The report pairs")[0], "pairs": pairs,
           "water_gate": WATER_GATE, "gate_passed_by": len(passing),
           "best": best, "rows": rows, "baselines": baseline_rows(pairs)}
    if not passing:
        doc["note"] = "no checkpoint passed the water gate: chosen by key alone"
    print(f"best: {best['path']} (key {best['key']:.3f}; {len(passing)} of {len(rows)} pass "
          f"the water gate)")
    for b, r in doc["baselines"].items():
        print(f"baseline {b}: mean corr9 {r['mean']:.3f}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(doc, indent=1, default=float) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

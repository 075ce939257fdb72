"""Seams: overlap + raised-cosine blending hides the per-tile normalisation of U-GAT-IT.

A random-weight narrow model is the worst case for per-tile statistics (nothing trained
it to be consistent across tiles). Reference numbers (seam_ratio, 1-band output of the
full Landsat 8 scene, ngf 4 / n_res 1 seed 0, see docs/pipeline.md): overlap 0 (pasted)
1.96; overlap 16..128 1.07-1.10. A seamless whole-scene forward of the same model already
scores ~1.06 on these grid lines: the generator's two x2 nearest upsamplings leave a
4-periodic pattern and every tile edge falls on a multiple of 4, so ~1.06 is the floor
and 1.10 leaves a margin for noise, while pasted tiles are far above.
"""

from __future__ import annotations

import numpy as np
import rasterio

from pipeline import load_config, metrics, run_scene
from pipeline.config import PipelineConfig
from tests.helpers import L8


def seam_of(ckpt, tmp_path, overlap: int) -> float:
    out = tmp_path / f"seam_{overlap}.tif"
    cfg = load_config(None, {"bands": (3, 2, 1), "nodata": 0, "overlap": overlap})
    run_scene(L8, out, model_path=ckpt, config=cfg, progress=False)
    with rasterio.open(L8) as ds:
        valid = ~(ds.read() == 0).all(axis=0)
    with rasterio.open(out) as ds:
        y = ds.read(1)
    return metrics.seam_ratio(y, 256, overlap, valid=valid & np.isfinite(y))


def test_default_overlap_hides_seams_pasting_does_not(tiny_checkpoint, tmp_path):
    default = PipelineConfig().overlap
    blended = seam_of(tiny_checkpoint, tmp_path, default)
    pasted = seam_of(tiny_checkpoint, tmp_path, 0)
    assert blended <= 1.10, blended
    assert pasted >= 1.5, pasted  # measured 1.96: the seams are plainly there
    assert pasted > blended + 0.4

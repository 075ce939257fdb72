"""The rasters a run writes: the SAR-like product and the optional CAM heatmap.

Each is a `RasterTarget` (pipeline/mosaic.py: temporary GeoTIFF -> COG -> final name)
on the input's grid, carrying provenance tags: software version, input name and bands,
model hash and description, the settings that change the pixels (and their hash, the
directory runner's up-to-date key), the scaling, and, apart, the scheduling settings,
which never change the pixels.
"""

from __future__ import annotations

import json
import math
from typing import Any

from pipeline.config import PipelineConfig
from pipeline.mosaic import RasterTarget, output_profile
from pipeline.plan import ScenePlan, radiometry_sources

TAG_PREFIX = "EO2SAR_"


def provenance_tags(plan: ScenePlan, config: PipelineConfig, kind: str) -> dict[str, str]:
    """The EO2SAR_* tags of an output of `kind` ("sar_like" or "cam_heatmap")."""
    from pipeline import __version__

    return {
        f"{TAG_PREFIX}VERSION": __version__,
        f"{TAG_PREFIX}PRODUCT": kind,
        f"{TAG_PREFIX}INPUT": plan.input.name,
        f"{TAG_PREFIX}BANDS": ",".join(map(str, plan.bands)),
        f"{TAG_PREFIX}MODEL_SHA256": plan.model_sha256,
        f"{TAG_PREFIX}MODEL": plan.model_desc,
        f"{TAG_PREFIX}CONFIG": json.dumps(config.output_dict(), sort_keys=True),
        f"{TAG_PREFIX}CONFIG_HASH": config.config_hash(),
        f"{TAG_PREFIX}SCALING": json.dumps(plan.scaling.to_dict(), sort_keys=True),
        # where the model-dependent settings came from (flag/config/model/default), and
        # the model's own contract
        f"{TAG_PREFIX}RADIOMETRY": json.dumps(
            {**radiometry_sources(config), "model": plan.contract}, sort_keys=True
        ),
        # scheduling settings: recorded for provenance, they never change the pixels
        f"{TAG_PREFIX}RUNTIME": json.dumps(
            {k: v for k, v in config.to_dict().items() if k not in config.output_dict()},
            sort_keys=True,
        ),
    }


def output_targets(
    plan: ScenePlan, config: PipelineConfig, src_profile: dict[str, Any]
) -> list[RasterTarget]:
    """[SAR-like product, heatmap (when asked)], on the input's grid."""
    bands = config.output_bands
    targets = [
        RasterTarget(
            final=plan.output,
            profile=output_profile(
                src_profile,
                count=bands,
                dtype=plan.output_dtype,
                nodata=plan.output_nodata,
                block_size=config.block_size,
            ),
            tags=provenance_tags(plan, config, "sar_like"),
            band_descriptions=(
                ("sar_like",) if bands == 1 else tuple(f"sar_like_{i + 1}" for i in range(bands))
            ),
            compress=config.compress,
        )
    ]
    if plan.heatmap is not None:
        targets.append(
            RasterTarget(
                final=plan.heatmap,
                profile=output_profile(
                    src_profile, count=1, dtype="float32", nodata=math.nan,
                    block_size=config.block_size,
                ),
                tags=provenance_tags(plan, config, "cam_heatmap"),
                band_descriptions=("cam_heatmap",),
                compress=config.compress,
            )
        )
    return targets

"""The rasters a run writes: the SAR-like product and the optional CAM heatmap.

Each is a `RasterTarget` (pipeline/run/mosaic.py: temporary GeoTIFF -> COG -> final name)
on the input's grid, carrying provenance tags: software version, input name and bands,
model hash and description, the settings that change the pixels (and their hash, the
directory runner's up-to-date key), the scaling, and, apart, the scheduling settings,
which never change the pixels. And what QGIS and `gdalinfo` show: band descriptions,
units, a DN -> dB scale/offset for uint8 output where a dB range is known (`db_mapping`),
gray colour interpretation and exact statistics (written by RasterTarget).
"""

from __future__ import annotations

import json
import math
from typing import Any

from pipeline.config import PipelineConfig
from pipeline.inputs.radiometry import is_relative_db
from pipeline.run.mosaic import RasterTarget, output_profile
from pipeline.run.plan import ScenePlan, radiometry_sources
from pipeline.version import __version__

TAG_PREFIX = "EO2SAR_"


def provenance_tags(plan: ScenePlan, config: PipelineConfig, kind: str) -> dict[str, str]:
    """The EO2SAR_* tags of an output of `kind` ("sar_like" or "cam_heatmap")."""
    named = {} if not plan.band_names else {
        # a multispectral model's bands, by name, in the order EO2SAR_BANDS numbers them
        f"{TAG_PREFIX}BAND_NAMES": ",".join(plan.band_names)}
    return {
        **named,
        f"{TAG_PREFIX}VERSION": __version__,
        f"{TAG_PREFIX}PRODUCT": kind,
        f"{TAG_PREFIX}INPUT": plan.source or plan.input.name,
        f"{TAG_PREFIX}BANDS": ",".join(map(str, plan.bands)),
        f"{TAG_PREFIX}MODEL_SHA256": plan.model_sha256,
        f"{TAG_PREFIX}MODEL": plan.model_desc,
        f"{TAG_PREFIX}CONFIG": json.dumps(config.output_dict(), sort_keys=True),
        f"{TAG_PREFIX}CONFIG_HASH": config.config_hash(),
        f"{TAG_PREFIX}SCALING": json.dumps(plan.scaling.to_dict(), sort_keys=True),
        # how the generator was normalised: per tile, or the scene's pooled statistics
        # (sample requested, tiles pooled, whether they were all fully valid)
        f"{TAG_PREFIX}NORM": json.dumps(plan.norm_dict(), sort_keys=True),
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


SAR_DESCRIPTION = "SAR-like backscatter"
HEATMAP_DESCRIPTION = "CAM attention heatmap (generator A->B, not normalised)"


def db_mapping(plan: ScenePlan, config: PipelineConfig) -> tuple[float, float] | None:
    """The dB range the output's 0..1 maps to, or None when there is none to claim.

    None exactly when `--output-scale db` would refuse (pipeline.inputs.radiometry
    .check_absolute_db): the model learned RELATIVE backscatter (per-scene SAR
    stretches) and nobody chose a range. A range given by flag or config, an absolute
    model's own range, or the seed model's default [-25, 0] (what `--output-scale db`
    uses for it) are all claimed.
    """
    if config.db_range is None:
        return None
    if config.origin("db_range") == "default" and is_relative_db(plan.contract):
        return None
    return config.db_range


def sar_band_metadata(
    plan: ScenePlan, config: PipelineConfig
) -> tuple[str, tuple[float, float] | None, dict[str, str]]:
    """(units, (scale, offset) or None, tags) of the SAR-like product.

    db: values are dB. uint8: DN 1..255 encode u = DN / 255, so with a known dB range
    dB = low + DN * (high - low) / 255, i.e. scale (high - low) / 255 and offset low
    (GDAL: value = DN * scale + offset), and GDAL/QGIS read the band as dB; without one
    no scale/offset. unit: 0..1, no units. The tag EO2SAR_DB_SCALE says which held.
    """
    db = db_mapping(plan, config)
    scale = config.output_scale
    record: dict[str, Any] = {"db_scale": "relative" if db is None else "absolute",
                              "db_range": None if db is None else list(db),
                              "from": config.origin("db_range")}
    if config.polarisations:  # a VV/VH model: each band's own range
        record["polarisations"] = list(config.polarisations)
        record["db_ranges"] = None if db is None else [list(r) for r in plan.db_ranges]
    tag = {f"{TAG_PREFIX}DB_SCALE": json.dumps(record, sort_keys=True)}
    if scale == "db":
        return "dB", None, tag
    if scale == "uint8" and db is not None:
        lo, hi = db
        return "dB", ((hi - lo) / 255.0, lo), tag
    return "", None, tag


def output_targets(
    plan: ScenePlan, config: PipelineConfig, src_profile: dict[str, Any]
) -> list[RasterTarget]:
    """[SAR-like product, heatmap (when asked)], on the input's grid."""
    bands = plan.output_count
    units, scale_offset, db_tag = sar_band_metadata(plan, config)
    pols = config.polarisations or ()
    per_band = None
    if pols and scale_offset is not None:  # uint8 DN -> dB, each band on its own range
        per_band = tuple(((hi - lo) / 255.0, lo) for lo, hi in plan.db_ranges)
        scale_offset = None
    if pols:
        descriptions: tuple[str, ...] = tuple(pols)
        db_tag[f"{TAG_PREFIX}POLARISATIONS"] = ",".join(pols)
    elif bands == 1:
        descriptions = (SAR_DESCRIPTION,)
    else:
        descriptions = tuple(f"{SAR_DESCRIPTION}, generator channel {i + 1}"
                             for i in range(bands))
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
            tags={**provenance_tags(plan, config, "sar_like"), **db_tag},
            band_descriptions=descriptions,
            compress=config.compress,
            units=units,
            scale_offset=scale_offset,
            band_scale_offsets=per_band,
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
                band_descriptions=(HEATMAP_DESCRIPTION,),
                compress=config.compress,
            )
        )
    return targets

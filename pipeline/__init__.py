"""eo2sar scene pipeline: optical GeoTIFF/VRT scenes -> georeferenced SAR-like COGs.

Library entry points (the CLI `python -m pipeline run` is a thin layer over them):
    from pipeline import load_config, run_scene
    cfg = load_config(None, {"bands": (3, 2, 1), "nodata": 0})
    run_scene(Path("in.tif"), Path("out.tif"), model_path=Path("model.pt"), config=cfg)
    # a product, an Item (file or URL) or a remote raster, as the CLI takes them; the STAC
    # Item is written beside the output (write_stac=False: not)
    run_scene("S2A_MSIL2A_....SAFE", "s2.tif", model_path="model.pt", config=cfg)
    # a folder of products, or every Item of a STAC catalog, resumable
    run_directory(Path("downloads"), Path("out"), model_path=Path("model.pt"), config=cfg)
    run_products(catalog_products("search.json"), Path("out"), model_path=..., config=cfg)
    # an xarray DataArray (band, y, x) or (time, band, y, x) in, a lazy DataArray out, the
    # same pixels as `pipeline run` (pip install 'eo2sar[xarray]'; docs/xarray.md)
    sar = translate(stack, "model.pt", output_scale="db")
"""

from __future__ import annotations

from pipeline.config import PipelineConfig, load_config
from pipeline.errors import (
    ConfigError,
    DeviceError,
    InputError,
    ModelError,
    OutputError,
    PipelineError,
    PipelineWarning,
)
from pipeline.inputs.catalogs import catalog_products
from pipeline.inputs.discovery import find_products
from pipeline.run.arrays import translate
from pipeline.run.batch import run_directory, run_products
from pipeline.run.scene import (
    SceneRequest,
    SceneResult,
    model_sha256,
    run_request,
    run_scene,
)
from pipeline.version import __version__

__all__ = [
    "ConfigError",
    "DeviceError",
    "InputError",
    "ModelError",
    "OutputError",
    "PipelineConfig",
    "PipelineError",
    "PipelineWarning",
    "SceneRequest",
    "SceneResult",
    "__version__",
    "catalog_products",
    "find_products",
    "load_config",
    "model_sha256",
    "run_directory",
    "run_products",
    "run_request",
    "run_scene",
    "translate",
]

"""eo2sar scene pipeline: optical GeoTIFF/VRT scenes -> georeferenced SAR-like COGs.

Library entry points (the CLI `python -m pipeline run` is a thin layer over them):
    from pipeline import load_config, run_scene
    cfg = load_config(None, {"bands": (3, 2, 1), "nodata": 0})
    run_scene(Path("in.tif"), Path("out.tif"), model_path=Path("model.pt"), config=cfg)
"""

from __future__ import annotations

__version__ = "0.1.0"

from pipeline.config import PipelineConfig, load_config  # noqa: E402
from pipeline.errors import (  # noqa: E402
    ConfigError,
    DeviceError,
    InputError,
    ModelError,
    OutputError,
    PipelineError,
    PipelineWarning,
)
from pipeline.scene import SceneResult, model_sha256, run_scene  # noqa: E402

__all__ = [
    "ConfigError",
    "DeviceError",
    "InputError",
    "ModelError",
    "OutputError",
    "PipelineConfig",
    "PipelineError",
    "PipelineWarning",
    "SceneResult",
    "__version__",
    "load_config",
    "model_sha256",
    "run_scene",
]

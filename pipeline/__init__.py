"""eo2sar scene pipeline: optical GeoTIFF/VRT scenes -> georeferenced SAR-like COGs.

Library entry points (the CLI `python -m pipeline run` is a thin layer over them):
    from pipeline import load_config, run_scene
    cfg = load_config(None, {"bands": (3, 2, 1), "nodata": 0})
    run_scene(Path("in.tif"), Path("out.tif"), model_path=Path("model.pt"), config=cfg)
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("eo2sar")  # one source: pyproject.toml
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"

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
from pipeline.scene import (  # noqa: E402
    SceneRequest,
    SceneResult,
    model_sha256,
    run_request,
    run_scene,
)

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
    "load_config",
    "model_sha256",
    "run_request",
    "run_scene",
]

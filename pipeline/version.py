"""The package version, read once from the installed metadata (one source: pyproject.toml).

Modules inside `pipeline/` take it from here, never from `pipeline/__init__.py`, so that no
module depends on the public API's imports."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("eo2sar")
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"

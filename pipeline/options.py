"""Shared click options of the `python -m pipeline` commands, rasterio-style.

Each setting of `PipelineConfig` becomes a flag (`tile_size` -> `--tile-size`) whose
help text and `[default: ...]` come from the dataclass field (pipeline/config.py), so a
default is written once. Such flags default to None, "not given": the YAML file's value
or the dataclass default then applies, in `load_config`, which validates them all the
same way. `field_option` (ugatit/options.py) does the same for any other dataclass (the
`tiles` command's TilesConfig), and the small options every command shares (`--model`,
`--overwrite`, `--dry-run`, `-q`, `-v`) are defined once below.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from pipeline.config import settings
from ugatit.options import field_option, given, option_for

__all__ = [
    "config_file_option",
    "config_option",
    "config_options",
    "dry_run_option",
    "field_option",
    "given",
    "model_option",
    "overwrite_option",
    "quiet_option",
    "verbose_option",
]

F = TypeVar("F", bound=Callable[..., Any])


def config_option(name: str) -> Callable[[F], F]:
    """The flag of PipelineConfig setting `name`."""
    field = next(f for f in settings() if f.name == name)
    meta = field.metadata
    kwargs: dict[str, Any] = {}
    if meta["choices"]:
        kwargs["type"] = click.Choice(list(meta["choices"]))
    elif meta["type"] is not None:
        kwargs["type"] = meta["type"]
    if meta.get("metavar"):
        kwargs["metavar"] = meta["metavar"]
    return option_for(field, meta["help"], **kwargs)


def config_options(*names: str) -> Callable[[F], F]:
    """Flags of several PipelineConfig settings (every command-line setting if none are
    named), listed in the given order."""
    chosen = names or tuple(f.name for f in settings() if f.metadata["flag"])

    def decorate(fn: F) -> F:
        for name in reversed(chosen):
            fn = config_option(name)(fn)
        return fn

    return decorate


model_option = click.option(
    "--model", "model_path", required=True, type=click.Path(path_type=Path),
    help="U-GAT-IT checkpoint (published eo2sar file or ours). Required.",
)
config_file_option = click.option(
    "--config", "config_path", type=click.Path(path_type=Path), default=None,
    help="YAML file of settings (see configs/pipeline.yaml); flags override it. "
    "[default: none, built-in defaults]",
)
overwrite_option = click.option(
    "--overwrite", is_flag=True, default=False, help="Replace existing outputs. [default: refuse]"
)
verbose_option = click.option(
    "-v", "--verbose", count=True,
    help="More log output (-v: info, -vv: debug). [default: warnings]",
)


def dry_run_option(what: str) -> Callable[[F], F]:
    """`--dry-run`: `what` a dry run of this command does."""
    return click.option("--dry-run", is_flag=True, default=False,
                        help=f"{what} [default: off]")


def quiet_option(what: str) -> Callable[[F], F]:
    """`-q/--quiet`: `what` it leaves out."""
    return click.option("-q", "--quiet", is_flag=True, default=False,
                        help=f"{what} [default: off]")

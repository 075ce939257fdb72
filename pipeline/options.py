"""Shared click options of the `python -m pipeline` commands, rasterio-style.

Each setting of `PipelineConfig` becomes a flag (`tile_size` -> `--tile-size`) whose
help text and `[default: ...]` come from the dataclass field (pipeline/config.py), so a
default is written once. Such flags default to None, "not given": the YAML file's value
or the dataclass default then applies, in `load_config`, which validates them all the
same way. `field_option` does the same for any other dataclass (the `tiles` command's
TilesConfig), and the small options every command shares (`--model`, `--overwrite`,
`--dry-run`, `-q`, `-v`) are defined once below.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from pipeline.config import settings

F = TypeVar("F", bound=Callable[..., Any])


def default_text(field: dataclasses.Field) -> str:
    """What `[default: ...]` says for a field: its description, or its value as a flag
    would be written (off/on, 2,98, 256)."""
    text = field.metadata.get("default_text")
    if text:
        return text
    value = field.default
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, tuple):
        return ",".join(f"{v:g}" for v in value)
    return str(value)


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _option(field: dataclasses.Field, help: str, text: str | None = None, **kwargs: Any
            ) -> Callable[[F], F]:
    if field.type in (bool, "bool"):
        kwargs.setdefault("is_flag", True)
    shown = text or default_text(field)
    return click.option(_flag(field.name), field.name, default=None,
                        help=f"{help} [default: {shown}]", **kwargs)


def config_option(name: str) -> Callable[[F], F]:
    """The flag of PipelineConfig setting `name`."""
    field = next(f for f in settings() if f.name == name)
    meta = field.metadata
    kwargs: dict[str, Any] = {}
    if meta["choices"]:
        kwargs["type"] = click.Choice(list(meta["choices"]))
    elif meta["type"] is not None:
        kwargs["type"] = meta["type"]
    return _option(field, meta["help"], **kwargs)


def config_options(*names: str) -> Callable[[F], F]:
    """Flags of several PipelineConfig settings (every command-line setting if none are
    named), listed in the given order."""
    chosen = names or tuple(f.name for f in settings() if f.metadata["flag"])

    def decorate(fn: F) -> F:
        for name in reversed(chosen):
            fn = config_option(name)(fn)
        return fn

    return decorate


def field_option(cls: type, name: str, help: str, *, default_text: str | None = None,
                 **kwargs: Any) -> Callable[[F], F]:
    """A flag for field `name` of dataclass `cls`, its default shown from the field
    (`default_text` describes a None default).

    The flag defaults to None: the command passes only the given values on, so the
    dataclass default applies (`given`)."""
    field = next(f for f in dataclasses.fields(cls) if f.name == name)
    return _option(field, help, default_text, **kwargs)


def given(options: dict[str, Any]) -> dict[str, Any]:
    """The options that were set on the command line (None: not given)."""
    return {k: v for k, v in options.items() if v is not None}


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

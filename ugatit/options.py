"""click options made from dataclass fields: a default is written once, in the dataclass.

`field_option(cls, name, help)` makes `--name-with-dashes` for field `name` of dataclass
`cls`, with `[default: ...]` in its help taken from the field (or from `default_text`,
which describes a None default). The flag itself defaults to None, "not given", so a
command merges only the given flags (`given`) over its YAML file and the dataclass
defaults, and one dataclass decides. Used by `ugatit train` (TrainConfig) and by the
pipeline's commands (pipeline/options.py: PipelineConfig, TilesConfig); tests parse
`--help` back and compare with `dataclasses.fields`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])


def default_text(field: dataclasses.Field) -> str:
    """What `[default: ...]` says for a field: the metadata's `default_text`, or the
    value as a flag would be written (off/on, 2,98, 256, 0.0001)."""
    text = field.metadata.get("default_text")
    if text:
        return text
    value = field.default
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, tuple):
        return ",".join(f"{v:g}" for v in value)
    return str(value)


def option_for(field: dataclasses.Field, help: str, text: str | None = None,
               **kwargs: Any) -> Callable[[F], F]:
    """The flag of `field`: `--name-with-dashes`, default None, help + its default."""
    if field.type in (bool, "bool"):
        kwargs.setdefault("is_flag", True)
    shown = text or default_text(field)
    return click.option("--" + field.name.replace("_", "-"), field.name, default=None,
                        help=f"{help} [default: {shown}]", **kwargs)


def field_option(cls: type, name: str, help: str, *, default_text: str | None = None,
                 **kwargs: Any) -> Callable[[F], F]:
    """A flag for field `name` of dataclass `cls` (see the module docstring)."""
    field = next(f for f in dataclasses.fields(cls) if f.name == name)
    return option_for(field, help, default_text, **kwargs)


def given(options: dict[str, Any]) -> dict[str, Any]:
    """The options that were set on the command line (None: not given)."""
    return {k: v for k, v in options.items() if v is not None}

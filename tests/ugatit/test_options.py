"""ugatit.options: flags from dataclass fields, default shown once, None = not given."""

from __future__ import annotations

import dataclasses

import click
from click.testing import CliRunner

from ugatit.options import default_text, field_option, given


@dataclasses.dataclass(frozen=True)
class Settings:
    size: int = 256
    pair: tuple[float, float] = (2.0, 98.0)
    fast: bool = False
    width: int | None = None


def test_default_text_writes_values_as_flags_would() -> None:
    f = {x.name: x for x in dataclasses.fields(Settings)}
    assert [default_text(f[n]) for n in ("size", "pair", "fast")] == ["256", "2,98", "off"]


def test_only_given_flags_override_the_dataclass() -> None:
    @click.command()
    @field_option(Settings, "size", "Tile side.", type=int)
    @field_option(Settings, "fast", "Go fast.")
    @field_option(Settings, "width", "Width.", type=int, default_text="= size")
    def cmd(**options: object) -> None:
        click.echo(repr(Settings(**given(options))))

    out = CliRunner().invoke(cmd, ["--fast"]).output
    assert out.strip() == repr(Settings(fast=True))
    text = " ".join(CliRunner().invoke(cmd, ["--help"]).output.split())
    assert "Tile side. [default: 256]" in text and "Width. [default: = size]" in text
    assert "--fast Go fast. [default: off]" in text

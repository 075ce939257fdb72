"""pipeline.options: every flag's `[default: ...]` in `--help` IS the dataclass default.

The help text is parsed back (click's own type conversion, then the setting's parser)
and compared with `dataclasses.fields`, for `run` (PipelineConfig) and `tiles`
(TilesConfig): a default changed in the dataclass cannot leave a stale help behind.
"""

from __future__ import annotations

import dataclasses

import click
import pytest

from pipeline.cli import main
from pipeline.config import PipelineConfig, load_config, settings
from pipeline.dataset.tiles import TilesConfig, parse_db_range
from tests.helpers import help_defaults


@pytest.mark.parametrize(("command", "cls"), [("run", PipelineConfig), ("tiles", TilesConfig)])
def test_help_defaults_are_the_dataclass_defaults(command: str, cls: type) -> None:
    shown = help_defaults(main, command)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    checked = 0
    for name, (param, text) in shown.items():
        field = fields.get(name)
        if field is None:
            continue  # not a setting (--model, --overwrite, ...)
        # None: "not given", the file or the dataclass decides; else the same value
        assert param.default in (None, field.default), (name, param.default)
        if field.default is None:
            assert text and text != "None", (name, text)  # a description of "not set"
            continue
        value = param.type_cast_value(click.Context(main.commands[command]), text)
        if cls is PipelineConfig:
            value = field.metadata["parse"](value, name)
        elif name == "sar_db_range":
            value = parse_db_range(value)
        assert value == field.default, (name, text, field.default)
        checked += 1
    assert checked >= (8 if cls is PipelineConfig else 6)


def test_every_command_line_setting_has_a_flag_and_yaml_key() -> None:
    shown = help_defaults(main, "run")
    flags = {f.name for f in settings() if f.metadata["flag"]}
    assert flags <= set(shown)
    assert set(load_config(None, {}).to_dict()) == {f.name for f in settings()}


def test_flags_reach_the_config_through_the_same_parsers(tmp_path) -> None:
    """A flag, a YAML key and a constructor argument are validated alike."""
    from pipeline.errors import ConfigError

    for build in (lambda: PipelineConfig(tile_size=250),
                  lambda: load_config(None, {"tile_size": "250"})):
        with pytest.raises(ConfigError, match="multiple of 4"):
            build()
    yaml_file = tmp_path / "c.yaml"
    yaml_file.write_text("tile_size: 250\n")
    with pytest.raises(ConfigError, match="multiple of 4") as err:
        load_config(yaml_file, {})
    assert err.value.path == str(yaml_file)
    assert PipelineConfig(output_bands="3", device=" CUDA:1 ").output_bands == 3

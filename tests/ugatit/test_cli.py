"""`python -m ugatit` commands: export, init, info."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch
from click.testing import CliRunner

from ugatit import load_checkpoint
from ugatit.cli import main


def test_init_then_info(tmp_path: Path) -> None:
    out = tmp_path / "ck.pt"
    res = CliRunner().invoke(main, ["init", str(out), "--ngf", "4", "--n-res", "1",
                                    "--all-networks", "--seed-format", "--ndf", "4"])
    assert res.exit_code == 0, res.output
    assert "random weights" in res.output
    res = CliRunner().invoke(main, ["info", str(out)])
    assert res.exit_code == 0, res.output
    info = json.loads(res.output)
    assert info["format"] == "seed"
    assert info["config"]["ngf"] == 4 and info["config"]["n_res"] == 1
    assert set(info["networks"]) == {"genA2B", "genB2A", "disGA", "disGB", "disLA", "disLB"}


def test_export_generator_only_fp16(tmp_path: Path) -> None:
    src = tmp_path / "seed.pt"
    CliRunner().invoke(main, ["init", str(src), "--ngf", "8", "--n-res", "1", "--all-networks",
                              "--seed-format", "--ndf", "8"], catch_exceptions=False)
    dst = tmp_path / "gen16.pt"
    res = CliRunner().invoke(main, ["export", str(src), str(dst), "--fp16"])
    assert res.exit_code == 0, res.output
    stored = torch.load(dst, weights_only=True)
    assert list(stored["networks"]) == ["genA2B"]
    assert all(t.dtype == torch.float16 for t in stored["networks"]["genA2B"].values())
    ck = load_checkpoint(dst)
    assert ck.available == ("genA2B",)
    # Refuses to overwrite without the flag, and leaves the file alone.
    before = dst.read_bytes()
    res = CliRunner().invoke(main, ["export", str(src), str(dst)])
    assert res.exit_code != 0 and "--overwrite" in res.output
    assert dst.read_bytes() == before


def test_export_bad_source_is_one_line_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pt"
    bad.write_text("hello")
    res = CliRunner().invoke(main, ["export", str(bad), str(tmp_path / "o.pt")])
    assert res.exit_code == 1
    assert "bad.pt" in res.output and "Traceback" not in res.output
    assert not (tmp_path / "o.pt").exists()


def test_module_entry_point(tmp_path: Path) -> None:
    res = subprocess.run([sys.executable, "-m", "ugatit", "--help"], capture_output=True, text=True)
    assert res.returncode == 0 and "export" in res.stdout and "init" in res.stdout


def test_train_help_defaults_are_trainconfig_defaults() -> None:
    """Every `ugatit train --help` default is parsed back and equals TrainConfig's."""
    import dataclasses

    import click

    from tests.helpers import help_defaults
    from ugatit.train import TrainConfig

    fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    ctx = click.Context(main.commands["train"])
    checked = 0
    for name, (param, text) in help_defaults(main, "train").items():
        field = fields[name]
        assert param.default is None  # not given: the YAML file or TrainConfig decides
        if field.default is None:
            assert text == "= ngf", (name, text)
            continue
        assert param.type_cast_value(ctx, text) == field.default, (name, text)
        checked += 1
    assert checked >= 15


def test_train_config_yaml_bomb_is_one_line(tmp_path: Path) -> None:
    """The alias bomb refused by `pipeline run --config` is refused by `ugatit train
    --config` too (one reader, ugatit.io.read_yaml_config), before anything expands."""
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text('a: &a ["x","x","x","x","x","x","x","x","x"]\n'
                    + "".join(f"{c}: &{c} [{', '.join(['*' + p] * 9)}]\n"
                              for p, c in zip("abcdefgh", "bcdefghi", strict=True)))
    result = CliRunner().invoke(main, ["train", "--config", str(bomb), "--out",
                                       str(tmp_path / "out")])
    assert result.exit_code == 1
    assert "YAML aliases are not accepted" in result.output
    assert not (tmp_path / "out").exists()


def test_info_shows_the_radiometric_contract(tmp_path: Path) -> None:
    """`ugatit info` names the bands a model takes and the polarisations it gives."""
    from ugatit import ModelConfig, init_checkpoint
    from ugatit.checkpoint import save_checkpoint

    cfg = ModelConfig(ngf=4, n_res=1, img_size=32, in_ch=4, out_ch=2)
    raw = init_checkpoint(tmp_path / "raw.pt", cfg)
    nets = torch.load(raw, weights_only=True)["networks"]
    contract = {"eo": {"method": "reflectance", "common_names": ["red", "green", "blue", "nir"]},
                "sar": {"polarisations": ["VV", "VH"], "db_ranges": [[-25, 0], [-32.5, 0]]}}
    path = save_checkpoint(tmp_path / "ms.pt", nets, cfg, extra={"radiometry": contract})
    res = CliRunner().invoke(main, ["info", str(path)])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.output)
    assert doc["radiometry"]["eo"]["common_names"] == ["red", "green", "blue", "nir"]
    assert doc["config"]["in_ch"] == 4 and doc["config"]["out_ch"] == 2

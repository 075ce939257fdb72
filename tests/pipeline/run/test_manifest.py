"""Tests for pipeline.run.manifest: config fingerprints, atomic writes, manifest checks
(input fingerprints: tests/pipeline/inputs/test_fingerprint.py)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from pipeline.config import PipelineConfig
from pipeline.inputs.fingerprint import fingerprint_input
from pipeline.run.manifest import (
    check_manifest,
    config_fingerprint,
    manifest_path,
    read_manifest,
    sha256_file,
    write_manifest,
)


def test_manifest_path_keeps_the_output_name() -> None:
    assert manifest_path(Path("out/x.tif")) == Path("out/x.tif.manifest.json")


def test_config_fingerprint_uses_the_config_hash() -> None:
    cfg = PipelineConfig(overlap=32)
    h, settings = config_fingerprint(cfg)
    assert h == cfg.config_hash() and settings is not None and settings["overlap"] == 32
    # runtime-only fields do not change it (PipelineConfig's rule, relied upon by batch)
    assert config_fingerprint(cfg.replace(threads=1))[0] == h
    assert config_fingerprint(cfg.replace(overlap=64))[0] != h


def test_config_fingerprint_of_plain_values() -> None:
    @dataclasses.dataclass
    class Small:
        a: int = 1

    assert config_fingerprint({"a": 1})[0] == config_fingerprint(Small())[0]
    assert config_fingerprint({"a": 1})[0] != config_fingerprint({"a": 2})[0]
    assert config_fingerprint(None)[1] is None
    with pytest.raises(TypeError):
        config_fingerprint(3.5)


def _write(tmp_path: Path) -> tuple[Path, Path]:
    inp = tmp_path / "in.tif"
    inp.write_bytes(b"input")
    out = tmp_path / "out.tif"
    out.write_bytes(b"output!")
    write_manifest(out, input_path=inp, input_fingerprint=fingerprint_input(inp),
                   model_path=inp, model_sha256="m" * 64, config_hash="c" * 64,
                   config_settings={"overlap": 64}, started_at="2026-01-01T00:00:00Z",
                   result={"tiles_total": 9})
    return inp, out


def test_write_and_check(tmp_path: Path) -> None:
    inp, out = _write(tmp_path)
    doc = read_manifest(out)
    assert doc is not None
    assert doc["output"] == {"path": str(out.resolve()), "size": 7,
                             "sha256": sha256_file(out)}
    assert doc["result"] == {"tiles_total": 9}
    kw = dict(input_fingerprint=fingerprint_input(inp), model_sha256="m" * 64,
              config_hash="c" * 64)
    assert check_manifest(out, **kw) == (True, "up to date")
    assert check_manifest(out, **{**kw, "model_sha256": "x"}) == (False, "model changed")
    assert check_manifest(out, **{**kw, "config_hash": "x"}) == (False, "config changed")
    inp.write_bytes(b"INPUT")  # same size, new content (and maybe the same mtime)
    ok, reason = check_manifest(out, **{**kw, "input_fingerprint": fingerprint_input(inp)})
    assert not ok and reason.startswith("input changed")


def test_unreadable_or_foreign_manifest_is_none(tmp_path: Path) -> None:
    _, out = _write(tmp_path)
    manifest_path(out).write_text("{ truncated")
    assert read_manifest(out) is None
    manifest_path(out).write_text(json.dumps({"schema": "something-else/1"}))
    assert read_manifest(out) is None
    manifest_path(out).write_text(json.dumps({"schema": "eo2sar.scene-manifest/1"}))
    inp = tmp_path / "in.tif"
    assert check_manifest(out, input_fingerprint=fingerprint_input(inp), model_sha256="m",
                          config_hash="c") == (False, "manifest incomplete")

"""PipelineConfig: defaults < YAML file < flags, validation up front, config_hash scope."""

from __future__ import annotations

import pytest

from pipeline.config import PipelineConfig, load_config
from pipeline.errors import ConfigError, DeviceError


def test_defaults_file_then_overrides(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("tile_size: 128\noverlap: 32\nbands: [3, 2, 1]\npercentiles: [1, 99]\n")
    cfg = load_config(f, {"overlap": 16, "batch_size": None})
    assert cfg.tile_size == 128  # from the file
    assert cfg.overlap == 16  # flag wins
    assert cfg.batch_size == PipelineConfig().batch_size  # None = not given
    assert cfg.bands == (3, 2, 1) and cfg.percentiles == (1.0, 99.0)


def test_pipeline_section_and_string_lists(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("pipeline:\n  bands: '3,2,1'\n  db_range: [-30, 5]\n")
    cfg = load_config(f, {})
    assert cfg.bands == (3, 2, 1) and cfg.db_range == (-30.0, 5.0)


@pytest.mark.parametrize(
    ("values", "needle"),
    [
        ({"tile_size": 250}, "multiple of 4"),
        ({"overlap": 200}, "more than half"),
        ({"block_size": 100}, "multiple of 16"),
        ({"output_bands": 2}, "1 or 3"),
        ({"output_scale": "log"}, "one of unit, uint8, db"),
        ({"percentiles": (98, 2)}, "0 <= low < high <= 100"),
        ({"scale": "fixed"}, "needs fixed_min and fixed_max"),
        ({"scale": "fixed", "fixed_min": 5, "fixed_max": 1}, "below fixed_max"),
        ({"bands": "a,b,c"}, "bands"),
        ({"batch_size": 0}, "batch_size"),
        ({"workers": 2, "scheduler": "tcp://x:8786"}, "exclusive"),
        ({"tile_sise": 1}, "unknown key(s) tile_sise"),
    ],
)
def test_bad_values_raise_config_error(values, needle):
    with pytest.raises(ConfigError) as err:
        load_config(None, values)
    assert needle in err.value.format()
    assert err.value.exit_code == 2 and err.value.hint


def test_bad_device_and_missing_file(tmp_path):
    with pytest.raises(DeviceError, match="unknown device"):
        load_config(None, {"device": "gpu"})
    assert load_config(None, {"device": "CUDA:1"}).device == "cuda:1"
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "none.yaml", {})
    bad = tmp_path / "bad.yaml"
    bad.write_text("- just\n- a list\n")
    with pytest.raises(ConfigError, match="not a mapping"):
        load_config(bad, {})


def test_config_hash_ignores_scheduling_only():
    base = PipelineConfig()
    same = base.replace(device="cuda:0", threads=3, workers=2, batch_size=9, block_size=512,
                        micro_batch=8, channels_last=True, compile=True)
    assert same.config_hash() == base.config_hash()
    for change in ({"overlap": 32}, {"bands": (3, 2, 1)}, {"nodata": 0},
                   {"output_scale": "db"}, {"compress": "ZSTD"}, {"precision": "bf16"},
                   {"precision": "fp16", "device": "cuda"}, {"precision": "tf32"}, {"norm": "tile"},
                   {"norm_sample": 7}):
        assert base.replace(**change).config_hash() != base.config_hash(), change


def test_precision_folds_tf32_and_keeps_earlier_hashes():
    """`tf32: true` (older configs) and `--precision tf32` are one setting, and the
    precision field added later leaves the fingerprint of fp32/tf32 configs as it was
    (so a directory rerun does not redo outputs made before it existed): the hash of the
    default config with --norm tile (the per-tile normalisation of those outputs; scene
    normalisation is the default since, and changes the pixels) is the one recorded by
    eo2sar 0.1 manifests."""
    assert PipelineConfig(tf32=True).precision == "tf32"
    assert PipelineConfig(precision="tf32").tf32 is True
    assert PipelineConfig(tf32=True).config_hash() == PipelineConfig(precision="tf32").config_hash()
    assert "precision" not in PipelineConfig().output_dict()
    assert PipelineConfig(precision="bf16").output_dict()["precision"] == "bf16"
    assert PipelineConfig(norm="tile").config_hash() == (
        "754ce970e0527f544f3eb524948ed184839622319eade637fce70f52eaf10b47")
    assert PipelineConfig().config_hash() != PipelineConfig(norm="tile").config_hash()
    with pytest.raises(ConfigError, match="contradict"):
        PipelineConfig(tf32=True, precision="bf16")
    with pytest.raises(ConfigError, match="precision"):
        PipelineConfig(precision="fp8")


@pytest.mark.parametrize(("device", "batch", "micro", "forward", "task"), [
    ("cpu", 4, None, 1, 4), ("cuda", 4, None, 32, 32), ("cuda:1", 40, None, 32, 64),
    ("cpu", 5, 4, 4, 8), ("cuda", 8, 8, 8, 8),
])
def test_micro_batch_and_task_size(device, batch, micro, forward, task):
    """Forwards have one shape (1 tile on CPU, 32 on CUDA unless --micro-batch); a task
    holds a multiple of it so only a scene's last forward is padded."""
    c = PipelineConfig(device=device, batch_size=batch, micro_batch=micro)
    assert (c.forward_micro_batch(), c.task_tiles()) == (forward, task)


def test_to_dict_is_json_ready_with_nan_nodata():
    import json

    d = load_config(None, {"nodata": "nan", "bands": (1, 1, 1)}).to_dict()
    assert d["nodata"] == "nan" and d["bands"] == [1, 1, 1]
    json.dumps(d, allow_nan=False)  # strict JSON: no bare NaN


def test_shipped_yaml_is_the_defaults():
    from pathlib import Path

    shipped = Path(__file__).resolve().parents[2] / "configs" / "pipeline.yaml"
    assert load_config(shipped, {}) == PipelineConfig()

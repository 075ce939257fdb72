"""pipeline.run.checks: refusals before any work, each naming the file and the fix."""

from __future__ import annotations

import pytest
import rasterio
import torch

from pipeline.config import PipelineConfig
from pipeline.errors import DeviceError, ModelError, OutputError
from pipeline.run.checks import (
    check_device,
    check_not_input,
    check_output_paths,
    check_readable,
    load_model_info,
    model_sha256,
)
from tests.helpers import SN6
from ugatit.io import sha256_file


def test_output_paths(tmp_path):
    out, heat = tmp_path / "o.tif", tmp_path / "h.tif"
    check_output_paths(SN6, out, heat, overwrite=False)  # all fine: nothing raised
    with pytest.raises(OutputError, match="heatmap path is the output"):
        check_output_paths(SN6, out, out, overwrite=False)
    with pytest.raises(OutputError, match="output is the input"):
        check_not_input(SN6, SN6)
    out.write_bytes(b"x")
    with pytest.raises(OutputError, match="already exists") as err:
        check_output_paths(SN6, out, None, overwrite=False)
    assert "--overwrite" in err.value.hint
    check_output_paths(SN6, out, None, overwrite=True)
    with pytest.raises(OutputError, match="directory does not exist"):
        check_output_paths(SN6, tmp_path / "no" / "o.tif", None, overwrite=False)


def test_first_and_last_block_of_a_readable_file_are_read():
    with rasterio.open(SN6) as ds:
        check_readable(ds, (1, 2, 3), SN6)  # nothing raised


def test_device_errors_are_pipeline_usage_errors(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(DeviceError) as err:
        check_device("cuda:0")
    assert err.value.exit_code == 2 and err.value.path == "--device"
    check_device("cpu")


def test_model_info_and_hash(tiny_checkpoint, make_checkpoint, tmp_path):
    sha, desc = load_model_info(tiny_checkpoint, PipelineConfig())
    assert sha == model_sha256(tiny_checkpoint) == sha256_file(tiny_checkpoint)
    assert desc == "U-GAT-IT light ngf 4 n_res 1"
    full = make_checkpoint(ngf=4, n_res=1, light=False, img_size=64)
    with pytest.raises(ModelError, match="for 64 px tiles, tile size 256 asked") as err:
        load_model_info(full, PipelineConfig())
    assert err.value.hint == "use --tile-size 64 with this model"
    with pytest.raises(ModelError, match="checkpoint not found"):
        model_sha256(tmp_path / "none.pt")

"""ugatit.device: the one device policy (syntax, presence) and its DeviceError."""

from __future__ import annotations

import pytest
import torch

from ugatit import CheckpointError, DeviceError, UgatitError, load_checkpoint
from ugatit.device import check_device, parse_device, resolve_device


def test_device_strings_are_normalised() -> None:
    assert parse_device(" CUDA:1 ") == "cuda:1"
    assert parse_device(torch.device("cuda", 2)) == "cuda:2"
    for text in ("cpu", "cuda", "mps"):
        assert parse_device(text) == text
    assert resolve_device("cpu") == torch.device("cpu")


@pytest.mark.parametrize("text", ["gpu0", "cuda:", "cuda:x", "cpu:0", ""])
def test_malformed_device_is_a_device_error(text: str) -> None:
    with pytest.raises(DeviceError, match="unknown device") as info:
        parse_device(text)
    assert "cuda:N" in info.value.hint
    assert isinstance(info.value, UgatitError) and not isinstance(info.value, CheckpointError)


def test_absent_cuda_is_refused_with_a_hint(monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # also on GPU boxes
    with pytest.raises(DeviceError, match="CUDA is not available") as info:
        check_device("cuda:0")
    assert "--device cpu" in info.value.hint
    assert "--device cpu" in str(info.value)  # one line for app.py


def test_gpu_index_out_of_range(monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert check_device("cuda:1") == "cuda:1"
    with pytest.raises(DeviceError, match="only 2 CUDA device"):
        check_device("cuda:2")


def test_load_checkpoint_reports_a_device_problem_as_such(tiny_checkpoint) -> None:
    with pytest.raises(DeviceError):
        load_checkpoint(tiny_checkpoint, device="gpu0")

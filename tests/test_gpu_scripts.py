"""The GPU session's scripts on the CPU (issue 16 item 8): a lent GPU machine's call may be
cut short, so both scripts write their JSON after every section, and every subprocess has
its own timeout. The code paths are the GPU's; `--device cpu` / `--gpu-device cpu` only
change where the tensors live (fp16 is left out on a CPU)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from pipeline.run.scheduling import torch_threads_kept


class _Stop(RuntimeError):
    """Stands for a call cut short after the first section."""


def _stop(*args, **kwargs):
    raise _Stop("cut short")


def test_gpu_determinism_saves_the_first_section_before_the_next(tmp_path, monkeypatch):
    from scripts import gpu_determinism

    monkeypatch.setenv("OUT", str(tmp_path))
    monkeypatch.setattr(gpu_determinism, "write_scene", _stop)  # the second section's start
    with torch_threads_kept(), pytest.raises(_Stop):
        gpu_determinism.main(["--device", "cpu", "--ngf", "4",
                              "--sections", "model", "pipeline"])
    doc = json.loads((tmp_path / "gpu_determinism.json").read_text())
    assert doc["partial"] is True and doc["sections_done"] == ["model"]
    assert doc["fixed_shape_permuted_bitwise_equal"] is True
    assert doc["fixed_shape_padded_bitwise_equal"] is True
    # the batch sizes compared are distinct tasks at micro-batch 32, not one rounded up
    assert gpu_determinism.BATCHES == (32, 64, 96)
    assert all(b % gpu_determinism.CUDA_MICRO_BATCH == 0 for b in gpu_determinism.BATCHES)


def test_gpu_determinism_subprocesses_have_their_own_timeout():
    from scripts.gpu_determinism import _run

    got = _run([sys.executable, "-c", "import time; time.sleep(30)"], timeout=0.5)
    assert got["timeout"] is True and got["exit"] is None and got["seconds"] < 30


def _bench_args(out: Path, *extra: str) -> list[str]:
    return ["--gpu-only", "--gpu-device", "cpu", "--ngf", "4", "--seconds", "0.2",
            "--micro-batch", "2", "--no-compile", "--out", str(out), *extra]


def test_bench_speed_gpu_section_saves_after_each_section(tmp_path, monkeypatch):
    import pipeline.synthetic
    from benchmarks import bench_speed

    monkeypatch.setattr(pipeline.synthetic, "write_synthetic_scene", _stop)  # scene section
    with torch_threads_kept(), pytest.raises(_Stop):
        bench_speed.main(_bench_args(tmp_path))
    doc = json.loads((tmp_path / "speed_gpu.json").read_text())
    gpu = doc["gpu"]
    assert doc["partial"] is True and gpu["sections_done"] == ["ceiling", "model"]
    variants = [r["variant"] for r in gpu["model"]]
    assert variants[0].startswith("naive") and "ours fp32" in variants
    assert not any("fp16" in v for v in variants)  # never fp16 on a CPU
    assert all(r["tiles_per_s"] > 0 for r in gpu["model"])
    assert all("prepare_s" in r for r in gpu["model"][1:])  # compile time apart


@pytest.mark.slow
def test_bench_speed_gpu_smoke_runs_to_the_end(tmp_path):
    """The whole GPU section on the CPU, a 256 px 'scene': scene rows with the warm-up
    (model load, compilation) apart and the full-size estimate."""
    from benchmarks import bench_speed

    with torch_threads_kept():
        bench_speed.main(_bench_args(tmp_path, "--s2-size", "256"))
    doc = json.loads((tmp_path / "speed_gpu.json").read_text())
    gpu = doc["gpu"]
    assert doc["partial"] is False
    assert gpu["sections_done"] == ["ceiling", "model", "s2_scene"]
    for row in gpu["s2_scene"]:
        assert row["tiles"] >= 1 and row["warmup_s"] > 0
        assert row["full_size_seconds_estimate"] == pytest.approx(
            row["seconds"] * (bench_speed.S2_SIZE / 256) ** 2)


def test_bench_speed_leaves_out_what_would_start_past_its_budget(tmp_path, monkeypatch):
    import pipeline.synthetic
    from benchmarks import bench_speed

    monkeypatch.setattr(pipeline.synthetic, "write_synthetic_scene", _stop)
    with torch_threads_kept(), pytest.raises(_Stop):
        bench_speed.main(_bench_args(tmp_path, "--budget-s", "1e-9"))
    gpu = json.loads((tmp_path / "speed_gpu.json").read_text())["gpu"]
    assert all(r.get("skipped") == "time budget" for r in gpu["model"][1:])
    assert torch.get_num_threads() >= 1

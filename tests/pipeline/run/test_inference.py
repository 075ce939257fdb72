"""pipeline.run.inference: the batch task's forward pass (shapes, order, execution options)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch

from pipeline import load_config, run_scene
from pipeline.run.inference import (
    CUDA_MICRO_BATCH,
    _cached_runner,
    _compiled_or_eager,
    forward_fixed_shape,
)
from tests.helpers import SN6


def _recording_gen(shapes: list[int]):
    def fake_gen(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        shapes.append(t.shape[0])
        return t * 2, t[:, :2, 0, 0], t[:, :1, ::4, ::4]

    return fake_gen


@pytest.mark.parametrize("micro", [1, 4, CUDA_MICRO_BATCH])
def test_forwards_have_one_fixed_shape(micro: int) -> None:
    """Every forward gets `micro` tiles whatever --batch-size is, so the kernels (oneDNN,
    cuDNN) run the same algorithm and a tile's bytes do not depend on the batch (see
    pipeline/run/inference.py); checked with a recording stand-in for the generator."""
    shapes: list[int] = []
    for n in (1, 3, micro, micro + 5):
        shapes.clear()
        x = torch.arange(n * 3 * 8 * 8, dtype=torch.float32).reshape(n, 3, 8, 8)
        out, heat = forward_fixed_shape(_recording_gen(shapes), x, torch.device("cpu"), micro,
                                        heatmap=True)
        assert set(shapes) == {micro}
        assert len(shapes) == -(-n // micro)
        assert torch.equal(out, x * 2)  # real rows only, in order
        # the 1/4-resolution heatmap comes back upsampled to the tile, per tile
        want = torch.nn.functional.interpolate(x[:, :1, ::4, ::4], size=(8, 8),
                                               mode="bilinear", align_corners=False)
        assert heat is not None and torch.equal(heat, want)


def _generator(ngf: int = 4):
    from ugatit import ModelConfig
    from ugatit.networks import build_network

    torch.manual_seed(0)
    return build_network("genA2B", ModelConfig(ngf=ngf, n_res=1)).eval()


def test_precision_and_memory_format_stay_close_to_fp32() -> None:
    """bf16 autocast and channels_last change the arithmetic, not the function: on real
    image content (SN6 chip, [-1, 1]) the generator output moves by at most a few bf16
    steps (bf16 has 8 bits of mantissa: 2^-8 = 0.004 relative per rounding; 0.1 bounds
    the accumulated error through ~20 layers on this tiny model), channels_last by float32
    rounding only."""
    gen = _generator()
    with rasterio.open(SN6) as ds:
        img = ds.read([1, 2, 3], window=rasterio.windows.Window(0, 0, 64, 64))
    x = torch.from_numpy(img.astype(np.float32) / 127.5 - 1.0)[None]
    dev = torch.device("cpu")
    ref, _ = forward_fixed_shape(gen, x, dev, 1, heatmap=False)
    bf, _ = forward_fixed_shape(gen, x, dev, 1, heatmap=False, precision="bf16")
    assert bf.dtype == torch.float32
    assert 0 < (bf - ref).abs().max() < 0.1
    cl_gen = _generator().to(memory_format=torch.channels_last)
    cl, _ = forward_fixed_shape(cl_gen, x, dev, 1, heatmap=False, channels_last=True)
    assert (cl - ref).abs().max() < 1e-5
    same, _ = forward_fixed_shape(gen, x, dev, 1, heatmap=False, precision="tf32")
    assert torch.equal(same, ref)  # tf32 is fp32 on a CPU


def test_compile_falls_back_to_eager_when_it_cannot_compile(monkeypatch, caplog) -> None:
    """--compile must never fail a run that eager finishes: a compiler error at the
    warm-up forward returns the eager generator, and says so in the log."""
    gen = _generator()

    def broken_compile(model, **kwargs):
        def call(x):
            raise RuntimeError("no C++ compiler found\nmore detail")
        return call

    monkeypatch.setattr(torch, "compile", broken_compile)
    with caplog.at_level(logging.INFO, logger="pipeline"):
        got = _compiled_or_eager(gen, (1, 3, 16), torch.device("cpu"), "fp32", False)
    assert got is gen
    assert "torch.compile unavailable" in caplog.text and "no C++ compiler" in caplog.text


def test_compile_keeps_a_working_compiled_model(monkeypatch) -> None:
    """When the warm-up forward works, the compiled callable is what runs."""
    calls: list[tuple[int, ...]] = []

    def fake_compile(model, **kwargs):
        def call(x):
            calls.append(tuple(x.shape))
            return model(x)
        return call

    monkeypatch.setattr(torch, "compile", fake_compile)
    gen = _generator()
    got = _compiled_or_eager(gen, (2, 3, 16), torch.device("cpu"), "bf16", True)
    assert got is not gen and calls == [(2, 3, 16, 16)]  # warmed up at the fixed shape


def _run(inp: Path, out: Path, ckpt: Path, **cfg) -> np.ndarray:
    run_scene(inp, out, model_path=ckpt, config=load_config(None, cfg), progress=False)
    with rasterio.open(out) as ds:
        return ds.read(1)


@pytest.mark.parametrize("changes", [{"batch_size": 3}, {"batch_size": 6, "threads": 1}])
def test_same_bytes_for_a_fixed_micro_batch(tiny_checkpoint, tmp_path, changes) -> None:
    """With --micro-batch 2 (a forward shape of 2 tiles on CPU too) the bytes do not
    depend on --batch-size (tasks hold a multiple of 2 tiles) or the thread count."""
    base = {"micro_batch": 2, "batch_size": 2}
    a = _run(SN6, tmp_path / "a.tif", tiny_checkpoint, **base)
    b = _run(SN6, tmp_path / "b.tif", tiny_checkpoint, **{**base, **changes})
    assert a.tobytes() == b.tobytes()


def test_execution_options_end_to_end(tiny_checkpoint, tmp_path) -> None:
    """channels_last, bf16 and compile (eager fallback or compiled) run a scene; the
    output stays within the documented deviation of fp32 (unit scale: |y| / 2)."""
    ref = _run(SN6, tmp_path / "ref.tif", tiny_checkpoint)
    cl = _run(SN6, tmp_path / "cl.tif", tiny_checkpoint, channels_last=True)
    bf = _run(SN6, tmp_path / "bf.tif", tiny_checkpoint, precision="bf16")
    valid = ~np.isnan(ref)
    assert np.array_equal(valid, ~np.isnan(cl)) and np.array_equal(valid, ~np.isnan(bf))
    assert np.abs(cl - ref)[valid].max() < 1e-5
    assert np.abs(bf - ref)[valid].max() < 0.05
    _cached_runner.cache_clear()


def _counting_backend(monkeypatch):
    """A torch.compile backend that counts the graphs dynamo compiles and runs them as
    traced (no C++ compiler needed), put where --compile looks for its backend."""
    from torch._dynamo.testing import CompileCounter

    from pipeline.run import inference

    counter = CompileCounter()
    monkeypatch.setattr(inference, "COMPILE_BACKEND", counter)
    _cached_runner.cache_clear()
    torch._dynamo.reset()
    return counter


@pytest.mark.parametrize("channels_last", [False, True])
def test_compile_compiles_once_per_shape_across_tasks_and_scenes(monkeypatch, channels_last
                                                                 ) -> None:
    """Issue 16 item 1: the warm-up forward is a real call, so the first real task does
    not recompile (it did: its inputs were made inside inference mode, the warm-up's
    outside, and dynamo's guard on the dispatch keys failed). Full and padded forwards,
    statistics fresh from `collect_stats` (inference tensors) and a second scene's that
    crossed a process boundary (pickled: normal tensors), all run the one graph."""
    import pickle

    from pipeline.run.inference import prepare_generator

    counter = _counting_backend(monkeypatch)
    gen = _generator()
    dev = torch.device("cpu")
    runner = prepare_generator(gen, dev, (2, 3, 16), channels_last=channels_last,
                               compile=True, scene_norm=True)
    assert counter.frame_count == 1  # the warm-up compiled
    torch.manual_seed(1)
    x = torch.rand(5, 3, 16, 16) * 2 - 1
    with torch.inference_mode():
        scene1 = gen.collect_stats(x[:4]).to("cpu")
        scene2 = pickle.loads(pickle.dumps(gen.collect_stats(-x[1:])))
    for stats, tiles in ((scene1, x), (scene1, x[:4]), (scene2, x[:3]), (scene2, x)):
        got, _ = forward_fixed_shape(runner, tiles, dev, 2, False, stats=stats,
                                     channels_last=channels_last)
        want, _ = forward_fixed_shape(gen, tiles, dev, 2, False, stats=stats)
        assert torch.allclose(got, want, atol=1e-5)
    assert counter.frame_count == 1, "a real forward compiled the generator again"
    _cached_runner.cache_clear()


def test_compile_once_per_process_through_two_scenes(tiny_checkpoint, tmp_path,
                                                     monkeypatch) -> None:
    """The whole path (plan, scene statistics pass, batch tasks on 2 threads, a second
    scene with other statistics): one compilation in the process."""
    counter = _counting_backend(monkeypatch)
    other = tmp_path / "inverted.tif"
    with rasterio.open(SN6) as src:
        profile, data = src.profile, src.read()
    with rasterio.open(other, "w", **profile) as dst:
        dst.write(255 - data)
    cfg = {"compile": True, "tile_size": 64, "overlap": 16, "batch_size": 2, "threads": 2}
    a = _run(SN6, tmp_path / "a.tif", tiny_checkpoint, **cfg)
    b = _run(other, tmp_path / "b.tif", tiny_checkpoint, **cfg)
    assert counter.frame_count == 1
    assert not np.array_equal(a, b)
    _cached_runner.cache_clear()


def test_band_mean_has_the_bytes_of_the_host_mean() -> None:
    """Issue 16 item 10: the 3 -> 1 band mean moved from numpy on the host to the device;
    same operations in the same order, so the same float32 bytes as numpy's float64
    mean (the CPU path's outputs do not change)."""
    from pipeline.run.inference import band_mean, device_band_mean

    gen = torch.Generator().manual_seed(3)
    y = torch.rand((6, 3, 32, 32), generator=gen) * 2 - 1
    y[0, :, 0, :4] = torch.tensor([1.0, -1.0, 1 / 3, 2 / 3])[:, None].T  # awkward values
    want = y.numpy().mean(axis=1, keepdims=True, dtype=np.float64).astype(np.float32)
    for fn in (band_mean, device_band_mean):  # the GPU's operations, run here on the CPU
        got = fn(y)
        assert got.dtype == torch.float32 and got.shape == (6, 1, 32, 32)
        assert got.numpy().tobytes() == want.tobytes()


def test_padding_is_written_into_the_one_input_buffer() -> None:
    """Issue 16 item 4: the padded last forward comes from the same preallocated (on CUDA
    pinned) buffer as the others, not from a torch.cat with new zeros (pageable memory,
    whose non-blocking copy synchronises)."""
    from pipeline.run.inference import padded_input

    x = torch.rand(5, 3, 8, 8)
    buf = padded_input(x, 4, pin=False)
    assert buf.shape == (8, 3, 8, 8)
    assert torch.equal(buf[:5], x) and not buf[5:].any()
    chunks = [buf[i : i + 4] for i in range(0, 8, 4)]
    assert all(c.untyped_storage().data_ptr() == buf.untyped_storage().data_ptr()
               for c in chunks)
    seen: list[torch.Tensor] = []

    def gen(t: torch.Tensor):
        seen.append(t)
        return t * 2, t[:, :2, 0, 0], t[:, :1, ::4, ::4]

    out, _ = forward_fixed_shape(gen, x, torch.device("cpu"), 4, heatmap=False)
    assert torch.equal(out, x * 2)
    # on the CPU the forwards get views of one buffer, the padded one included
    assert len({t.untyped_storage().data_ptr() for t in seen}) == 1


def test_forwards_take_turns_per_gpu_not_on_cpu() -> None:
    """Issue 16 item 3: two tasks per GPU; their forwards share one lock per process and
    GPU (reads are outside it); CPU forwards take no lock (one core each, in parallel)."""
    import contextlib
    import threading

    from pipeline.run.inference import forward_lock

    assert isinstance(forward_lock(torch.device("cpu")), contextlib.nullcontext)
    lock = forward_lock(torch.device("cuda"))
    assert isinstance(lock, type(threading.Lock()))
    assert forward_lock(torch.device("cuda:0")) is lock
    assert forward_lock(torch.device("cuda:1")) is not lock

"""pipeline.inference: the batch task's forward pass (shapes, order)."""

from __future__ import annotations

import torch

from pipeline.inference import CUDA_MICRO_BATCH, forward_fixed_shape


def test_gpu_forwards_have_one_fixed_shape() -> None:
    """On CUDA every forward gets CUDA_MICRO_BATCH tiles whatever --batch-size is, so cuDNN
    runs the same algorithm and a tile's bytes do not depend on the batch (see
    pipeline/inference.py); checked here with a recording stand-in for the generator."""
    shapes: list[int] = []

    def fake_gen(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        shapes.append(t.shape[0])
        return t * 2, t[:, :2, 0, 0], t[:, :1, ::4, ::4]

    for n in (1, 3, CUDA_MICRO_BATCH, CUDA_MICRO_BATCH + 5):
        shapes.clear()
        x = torch.arange(n * 3 * 8 * 8, dtype=torch.float32).reshape(n, 3, 8, 8)
        out, heat = forward_fixed_shape(fake_gen, x, torch.device("cpu"), CUDA_MICRO_BATCH,
                                        heatmap=True)
        assert set(shapes) == {CUDA_MICRO_BATCH}
        assert torch.equal(out, x * 2)  # real rows only, in order
        assert heat is not None and torch.equal(heat, x[:, :1, ::4, ::4])

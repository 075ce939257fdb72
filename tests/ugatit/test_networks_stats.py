"""Scene normalisation statistics of the generator (ugatit/networks.py: NormStats,
ResnetGenerator.collect_stats, forward(x, stats)); DESIGN.md invariant 3.

Narrow generators (ngf 4-8) with random weights scaled up (std 0.2) so that outputs are
not flat and per-tile statistics visibly differ from pooled ones.
"""

from __future__ import annotations

import contextlib

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from ugatit.config import ModelConfig
from ugatit.networks import InstanceNorm, NormStats, ResnetGenerator

SIZE = 64


def _generator(light: bool = True, ngf: int = 8, n_res: int = 1, seed: int = 0
               ) -> ResnetGenerator:
    torch.manual_seed(seed)
    gen = ResnetGenerator(ModelConfig(ngf=ngf, n_res=n_res, light=light, img_size=SIZE))
    with torch.no_grad():
        for p in gen.parameters():
            p.normal_(0.0, 0.2)
    return gen.eval()


def _scene(h: int = SIZE, w: int = 2 * SIZE, seed: int = 1) -> Tensor:
    """A smooth image with a left/right brightness ramp: tiles have different statistics."""
    g = torch.Generator().manual_seed(seed)
    noise = F.avg_pool2d(torch.rand(1, 3, h, w, generator=g), 5, stride=1, padding=2)
    ramp = torch.linspace(-0.6, 0.6, w)[None, None, None, :]
    return (noise * 2 - 1 + ramp).clamp(-1, 1)


def _old_forward(gen: ResnetGenerator, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """The forward as it was written before scene statistics existed, through the
    modules' plain calls (nn.Sequential, the blocks' 1- and 3-argument forwards)."""
    x = gen.DownBlock(x)
    b = x.shape[0]
    gap_logit = gen.gap_fc(F.adaptive_avg_pool2d(x, 1).reshape(b, -1))
    gmp_logit = gen.gmp_fc(F.adaptive_max_pool2d(x, 1).reshape(b, -1))
    gap = x * gen.gap_fc.weight[:, :, None, None]
    gmp = x * gen.gmp_fc.weight[:, :, None, None]
    cam_logit = torch.cat([gap_logit, gmp_logit], dim=1)
    x = gen.relu(gen.conv1x1(torch.cat([gap, gmp], dim=1)))
    heatmap = torch.sum(x, dim=1, keepdim=True)
    z = F.adaptive_avg_pool2d(x, 1).reshape(b, -1) if gen.config.light else x.reshape(b, -1)
    z = gen.FC(z)
    gamma, beta = gen.gamma(z), gen.beta(z)
    for i in range(1, gen.config.n_res + 1):
        x = getattr(gen, f"UpBlock1_{i}")(x, gamma, beta)
    return gen.UpBlock2(x), cam_logit, heatmap


@pytest.mark.parametrize("light", [True, False], ids=["light", "full"])
def test_without_stats_the_forward_is_unchanged_bit_for_bit(light: bool) -> None:
    gen = _generator(light, n_res=2)
    x = _scene(w=SIZE).repeat(3, 1, 1, 1) * torch.tensor([1.0, 0.5, -0.7])[:, None, None, None]
    with torch.no_grad():
        new, old = gen(x), _old_forward(gen, x)
    for a, b in zip(new, old, strict=True):
        assert torch.equal(a, b)


def test_state_dict_has_no_statistics_keys() -> None:
    """The norm layers' statistics key is an attribute, not state: checkpoints unchanged."""
    gen = _generator()
    assert not any("stats" in k for k in gen.state_dict())
    norms = [m for m in gen.modules() if isinstance(m, InstanceNorm)]
    assert norms and all(not list(m.state_dict()) for m in norms)


@pytest.mark.parametrize("light", [True, False], ids=["light", "full"])
def test_one_sample_statistics_reproduce_its_own_forward(light: bool) -> None:
    """Pooled over a batch of ONE image, the statistics are that image's own: the
    forward with them equals the per-sample forward (float32 rounding apart)."""
    gen = _generator(light)
    x = _scene(w=SIZE)
    with torch.no_grad():
        stats = gen.collect_stats(x)
        a, b = gen(x, stats), gen(x)
    for u, v in zip(a, b, strict=True):
        assert (u - v).abs().max() < 1e-4


def test_pooled_statistics_are_over_batch_and_space() -> None:
    """The first encoder norm pools its input over every sample and pixel (biased var,
    like torch's InstanceNorm2d); ILN/adaILN use the unbiased variance (FORMAT)."""
    gen = _generator()
    x = torch.cat([_scene(w=SIZE, seed=2), _scene(w=SIZE, seed=3) * 0.5])
    with torch.no_grad():
        stats = gen.collect_stats(x)
        h = gen.DownBlock[:2](x)  # pad + first conv: what DownBlock.2 normalises
    var, mean = torch.var_mean(h, dim=(0, 2, 3), keepdim=True, unbiased=False)
    first = stats.layers["DownBlock.2"]
    assert torch.allclose(first.mean, mean, atol=1e-6)
    assert torch.allclose(first.var, var, rtol=1e-5)
    assert first.ln_mean is None
    ada = stats.layers["UpBlock1_1.norm1"]
    assert ada.mean.shape == (1, 8 * 4, 1, 1) and ada.ln_var.shape == (1, 1, 1, 1)
    n_norms = 3 + 2 * 1 + 2 * 1 + 2  # encoder IN, ResnetBlock IN, adaILN, ILN
    assert len(stats.layers) == n_norms and stats.samples == 2
    assert stats.z is not None and stats.z.shape == (1, 32)


def test_fixed_statistics_make_tiles_agree_with_the_whole_image() -> None:
    """With the scene's statistics, a tile's output is a function of its neighbourhood
    only: the left half run alone equals the whole image's forward away from the cut
    (the receptive field, ~30 px at n_res 1, meets the reflect padding there). Without
    them the half has its own brightness: a large difference everywhere."""
    gen = _generator()
    x = _scene()
    with torch.no_grad():
        stats = gen.collect_stats(x)
        whole = gen(x, stats)[0]
        half = gen(x[..., :SIZE], stats)[0]
        whole_tile, half_tile = gen(x)[0], gen(x[..., :SIZE])[0]
    keep = slice(0, SIZE - 32)
    assert (whole[..., keep] - half[..., keep]).abs().max() < 1e-5
    assert (whole_tile[..., keep] - half_tile[..., keep]).abs().mean() > 1e-2


def test_tiles_in_a_batch_are_independent_with_fixed_statistics() -> None:
    """A tile's output does not depend on its companions (the pipeline batches tiles)."""
    gen = _generator()
    x = _scene()
    tiles = torch.cat([x[..., :SIZE], x[..., SIZE:]])
    with torch.no_grad():
        stats = gen.collect_stats(tiles)
        both = gen(tiles, stats)[0]
        alone = gen(tiles[1:], stats)[0]
    assert (both[1:] - alone).abs().max() < 1e-5


@pytest.mark.parametrize("light", [True, False], ids=["light", "full"])
def test_gamma_beta_pooled_for_light_per_tile_for_full(light: bool) -> None:
    """Light: one gamma/beta for the scene (from the pooled z). Full: its gamma/beta
    come from each tile's flattened bottleneck, so they stay per tile (NormStats.z None)
    while its norm layers use the pooled statistics."""
    gen = _generator(light)
    x = _scene()
    tiles = torch.cat([x[..., :SIZE], x[..., SIZE:]])
    seen: list[Tensor] = []
    hook = gen.gamma.register_forward_hook(lambda m, i, o: seen.append(o.expand(2, -1)))
    with torch.no_grad():
        stats = gen.collect_stats(tiles)
        seen.clear()
        gen(tiles, stats)
    hook.remove()
    gamma = seen[0]
    assert (stats.z is not None) is light
    assert len(stats.layers) == 9
    same = torch.equal(gamma[0], gamma[1])
    assert same is light


def test_statistics_are_float32_under_autocast_and_move_to_a_device() -> None:
    gen = _generator(ngf=4)
    x = _scene(w=SIZE)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        stats = gen.collect_stats(x)
        out_bf16 = gen(x, stats)[0].float()
    tensors = [t for s in stats.layers.values()
               for t in (s.mean, s.var, s.ln_mean, s.ln_var) if t is not None]
    assert all(t.dtype == torch.float32 for t in [*tensors, stats.z])
    moved = stats.to("cpu")
    assert isinstance(moved, NormStats) and moved.layers.keys() == stats.layers.keys()
    with torch.no_grad():
        out = gen(x, moved)[0]
    assert (out - out_bf16).abs().mean() < 0.05  # bf16 forward, float32 statistics


def _tiles(n: int = 5) -> Tensor:
    return torch.cat([_scene(seed=s)[..., :SIZE] for s in range(n)])


def _in(dtype: torch.dtype | None):
    def context():  # what the pipeline enters per thread: inference mode (+ autocast)
        stack = contextlib.ExitStack()
        stack.enter_context(torch.inference_mode())
        if dtype is not None:
            stack.enter_context(torch.autocast("cpu", dtype=dtype))
        return stack
    return context


@pytest.mark.parametrize("dtype", [None, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("light", [True, False], ids=["light", "full"])
def test_pooled_outputs_are_a_later_fixed_forward_bit_for_bit(light: bool, dtype) -> None:
    """The pooled pass's outputs of each chunk equal forwarding that chunk again with the
    statistics it produced (same bytes), in float32 and under bf16 autocast: the
    pipeline keeps them instead of forwarding the sampled tiles twice."""
    gen = _generator(light, n_res=2)
    x = _tiles()
    chunks = [x[i : i + 1] for i in range(len(x))]
    stats, outs = gen.pooled_forward(chunks, workers=2, context=_in(dtype))
    assert stats.samples == len(x) and (stats.z is not None) is light
    with _in(dtype)():
        for chunk, got in zip(chunks, outs, strict=True):
            again = gen(chunk, stats)
            assert all(torch.equal(a, b) for a, b in zip(got, again, strict=True))


def test_pooled_statistics_do_not_depend_on_threads_or_companions() -> None:
    """The statistics are a function of the sample: the same bytes with 1 or 3 chunks
    computing at once, and padding samples (real counts) never enter them."""
    gen = _generator()
    x = _tiles(3)
    one, _ = gen.pooled_forward([x[i : i + 1] for i in range(3)], workers=1)
    three, _ = gen.pooled_forward([x[i : i + 1] for i in range(3)], workers=3)
    zeros = [x[:2], torch.cat([x[2:], torch.zeros_like(x[:1])])]
    noise = [x[:2], torch.cat([x[2:], torch.rand_like(x[:1])])]
    padded0, _ = gen.pooled_forward(zeros, real=[2, 1], workers=2)
    padded1, _ = gen.pooled_forward(noise, real=[2, 1], workers=2)
    for a, b in ((one, three), (padded0, padded1)):
        assert a.layers.keys() == b.layers.keys()
        for k, s in a.layers.items():
            assert torch.equal(s.mean, b.layers[k].mean) and torch.equal(s.var, b.layers[k].var)
        assert torch.equal(a.z, b.z)
    for k, s in one.layers.items():  # and (float32 rounding apart) whatever the chunking
        assert torch.allclose(s.mean, padded0.layers[k].mean, atol=1e-5), k
        assert torch.allclose(s.var, padded0.layers[k].var, rtol=1e-4, atol=1e-6), k


def test_pooled_pass_equals_the_one_forward_collect() -> None:
    """Chunked and pooled layer by layer, the statistics are those of the sample as one
    batch (what collect_stats of all of them in one forward gives)."""
    gen = _generator()
    x = _tiles(4)
    whole = gen.collect_stats(x)
    chunked = gen.collect_stats(x, micro=1, workers=2)
    for k, s in whole.layers.items():
        assert torch.allclose(s.mean, chunked.layers[k].mean, atol=1e-5), k
        assert torch.allclose(s.var, chunked.layers[k].var, rtol=1e-4, atol=1e-6), k


def test_a_failing_chunk_fails_the_pass_without_hanging() -> None:
    """A chunk that raises mid-forward (here in the decoder, after several barriers)
    releases the others waiting at the next barrier; its error is the one raised."""
    gen = _generator()
    x = _tiles(3)
    calls = []

    def broken(module, args):  # the second chunk to reach the decoder's first conv
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("chunk 1 broke")

    hook = gen.UpBlock1_1.conv1.register_forward_pre_hook(broken)
    try:
        with pytest.raises(RuntimeError, match="chunk 1 broke"):
            gen.pooled_forward([x[i : i + 1] for i in range(3)], workers=2)
    finally:
        hook.remove()
    bad = [x[:1], x[1:2, :, :, :SIZE - 2]]  # not a multiple of 4: refused before any thread
    with pytest.raises(ValueError):
        gen.pooled_forward(bad)


def test_a_weighted_sample_counts_as_that_many_copies() -> None:
    """A sample of weight 2 (a tile standing for a run of two, pipeline/run/
    norm_sample.py) pools as the same tile given twice: float64 pooling, so equal to
    float32 rounding; weights of 1 are the unweighted pass bit for bit."""
    gen = _generator()
    x = _tiles(2)
    twice, _ = gen.pooled_forward([x[:1], x[:1], x[1:]])
    weighted, _ = gen.pooled_forward([x[:1], x[1:]], weights=[[2.0], [1.0]])
    plain, _ = gen.pooled_forward([x[:1], x[1:]])
    ones, _ = gen.pooled_forward([x[:1], x[1:]], weights=[[1.0], [1.0]])
    for k, s in twice.layers.items():
        assert torch.allclose(s.mean, weighted.layers[k].mean, atol=1e-6), k
        assert torch.allclose(s.var, weighted.layers[k].var, rtol=1e-5, atol=1e-7), k
        assert torch.equal(plain.layers[k].var, ones.layers[k].var), k
        assert not torch.allclose(s.mean, plain.layers[k].mean, atol=1e-6), k
    assert torch.allclose(twice.z, weighted.z, atol=1e-6) and torch.equal(plain.z, ones.z)

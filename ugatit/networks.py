"""U-GAT-IT networks: one generator (light and full variants) and one discriminator.

This file reads top to bottom: normalisation layers (and the scene statistics they can
use instead of each sample's own), the two residual blocks, the generator, the
discriminator. Module names and ``nn.Sequential`` indices are chosen so
that ``state_dict()`` keys are *identical* to the published checkpoint (see
``tests/data/manifests``): seed files load with no renaming. The math reproduces the
original code exactly; the subtle points are marked "FORMAT:" and each one is pinned by a
test in ``tests/ugatit/test_numerics.py``.

Shapes are written for the published model (ngf=64, 256x256 input, batch B).
"""

from __future__ import annotations

import contextlib
import math
import threading
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils import spectral_norm

from ugatit.config import ModelConfig

EPS = 1e-5


# ----------------------------------------------------------------------------------------
# Normalisation
#
# Every normalisation layer of the generator can take its statistics from one of three
# sources, chosen per forward by a `NormPass` handed down the layers (None = the first):
#   * per sample ("tile"): each sample's own statistics, the published model's exact math;
#   * pooled: the samples of a scene treated as ONE image, layer by layer. The sample is
#     forwarded as several chunks (micro-batches), each chunk's forward a Python
#     generator (`steps`) that stops at every norm layer with its per-sample partial
#     statistics; when every chunk has stopped at the layer, the partials are combined
#     (float64, fixed sample order) into the layer's statistics, recorded in a
#     `NormStats` and sent back, and every chunk normalises with them and goes on to the
#     next layer (`ResnetGenerator.pooled_forward`; a few worker threads advance the
#     chunks, no thread per chunk). So each layer's statistics are those of the whole
#     sample given the layers before, which is what the whole-scene forward computes, and
#     each chunk runs exactly the ops of a later fixed forward of it (the same `_apply`
#     of each norm layer, the same helpers of the generator), with the same statistics
#     tensors: its outputs ARE that forward's, bit for bit (the pipeline keeps them);
#   * fixed: the recorded `NormStats` of a scene, applied to every sample, so tiles cut
#     from one scene are normalised alike (docs/DESIGN.md invariant 3).
# The pass object lives for one forward call, never on a module: a generator shared by
# threads (the pipeline's Dask tasks) stays safe.


@dataclass(frozen=True)
class LayerStats:
    """The statistics one normalisation layer uses (float32 tensors, broadcastable).

    mean/var: per channel, [1, C, 1, 1] (biased variance for the encoder's InstanceNorm,
    unbiased for ILN/adaILN, as each layer's per-sample math has it). ln_mean/ln_var: the
    layer-norm pair of ILN/adaILN, [1, 1, 1, 1]; None for InstanceNorm.
    """

    mean: Tensor
    var: Tensor
    ln_mean: Tensor | None = None
    ln_var: Tensor | None = None

    def to(self, device: torch.device | str, *, copy: bool = False) -> LayerStats:
        return LayerStats(self.mean.to(device, copy=copy), self.var.to(device, copy=copy),
                          _to(self.ln_mean, device, copy), _to(self.ln_var, device, copy))


def _to(t: Tensor | None, device: torch.device | str, copy: bool = False) -> Tensor | None:
    return None if t is None else t.to(device, copy=copy)


@dataclass(frozen=True)
class NormStats:
    """A scene's normalisation statistics, from `ResnetGenerator.collect_stats`.

    layers: per normalisation layer, keyed by its module name (``DownBlock.2``,
    ``DownBlock.12.conv_block.2``, ``UpBlock1_1.norm1``, ``UpBlock2.3``, ...), in forward
    order. z: the light generator's pooled CAM feature [1, dim] (the mean over every
    sample and pixel), from which gamma/beta follow; None for the full generator, whose
    gamma/beta come from each tile's flattened bottleneck and so stay per tile. Tensors,
    not Python numbers, so a compiled generator sees new values, not a new graph.
    """

    layers: dict[str, LayerStats]
    z: Tensor | None
    samples: int  # how many samples (tiles) were pooled

    def to(self, device: torch.device | str, *, copy: bool = False) -> NormStats:
        """The same statistics on `device` (float32 kept). `copy`: always new tensors,
        even on the same device; made under `torch.inference_mode()` they are then
        inference tensors whatever these were (a compiled generator's guards check the
        dispatch keys of its inputs, so every call must pass the same kind)."""
        return NormStats({k: v.to(device, copy=copy) for k, v in self.layers.items()},
                         _to(self.z, device, copy), self.samples)


@dataclass
class _Partial:
    """What one chunk's forward stops with at a norm layer (or at the light generator's
    CAM feature, key "z"): per real sample and channel, the mean and the biased variance
    over the sample's pixels that count (its region), with their count (float64, on the
    CPU), and how the pooled statistics are wanted."""

    key: str
    means: Tensor  # [k, C]
    variances: Tensor | None  # [k, C]; None for z
    pixels: Tensor  # [k]
    unbiased: bool
    layer: bool
    device: torch.device


#: A chunk's forward in the pooled pass: yields `_Partial`s, is sent back the pooled
#: LayerStats (or z), returns (out, cam_logit, heatmap).
Steps = Generator[_Partial, Any, Any]

#: A sample's region that counts in the pooled statistics: rows r0:r1, columns c0:c1 of
#: its input (full resolution; scaled to each layer's).
Region = tuple[int, int, int, int]


def _combine(parts: Sequence[_Partial]) -> LayerStats | Tensor:
    """The statistics of one layer pooled over every chunk's partials, each sample
    weighted by its pixel count (in chunk order: the result depends on the samples, not
    on the chunking); z: the mean feature over every pixel that counts."""
    first = parts[0]
    means = torch.cat([p.means for p in parts])  # [S, C] float64, sample order
    counts = torch.cat([p.pixels for p in parts])[:, None]  # [S, 1]
    if first.variances is None:
        z = (means * counts).sum(dim=0, keepdim=True) / counts.sum()
        return z.float().to(first.device)  # [1, C]
    variances = torch.cat([p.variances for p in parts if p.variances is not None])
    dev, unbiased = first.device, first.unbiased
    mean, var = _pool(means, variances, counts, unbiased)  # [C]
    ln_mean = ln_var = None
    if first.layer:
        every = counts.expand_as(means).reshape(-1)
        ln_m, ln_v = _pool(means.reshape(-1), variances.reshape(-1), every, unbiased)
        ln_mean, ln_var = _as_stat(ln_m, (1, 1, 1, 1), dev), _as_stat(ln_v, (1, 1, 1, 1), dev)
    shape = (1, -1, 1, 1)
    return LayerStats(_as_stat(mean, shape, dev), _as_stat(var, shape, dev), ln_mean, ln_var)


def _pool(means: Tensor, variances: Tensor, counts: Tensor, unbiased: bool
          ) -> tuple[Tensor, Tensor]:
    """Mean and variance over the union of groups (dim 0) of `counts` values each, from
    the groups' means and biased variances (float64; Chan et al.'s parallel formula)."""
    n = counts.sum(dim=0)
    mean = (means * counts).sum(dim=0) / n
    m2 = (variances * counts).sum(dim=0) + (counts * (means - mean) ** 2).sum(dim=0)
    return mean, m2 / (n - (1 if unbiased else 0))


def _as_stat(t: Tensor, shape: tuple[int, ...], device: torch.device) -> Tensor:
    return t.float().reshape(shape).to(device)


def _channel_moments(part: Tensor) -> tuple[Tensor, Tensor]:
    """Per-channel mean and biased variance of part [1, C, h, w] (float32, [C] each).

    torch's batch-norm statistics kernel (CPU, CUDA) reads the tensor in place, strided
    region included, ~4x faster than `var_mean` over dims (2, 3) on the CPU (64 x 256^2:
    5.5 ms against 23.6 ms on one core) with the same float32 accuracy (relative error
    5e-8 against float64); `var_mean` where the kernel is missing (MPS)."""
    if part.device.type in ("cpu", "cuda"):
        c = part.shape[1]
        running = (torch.zeros(c, device=part.device), torch.ones(c, device=part.device))
        mean, var = torch.batch_norm_update_stats(part, *running, 1.0)
        return mean, var
    var, mean = torch.var_mean(part, dim=(0, 2, 3), unbiased=False)
    return mean, var


class NormPass:
    """Where the norm layers of ONE forward get their statistics (see the section top):
    `fixed` statistics (`stats`), or, for the `steps` of one chunk of a pooled pass,
    the pooled ones (`pooled`). `real`: the chunk's samples that count (the rest is
    padding, e.g. the zero tiles of a fixed-shape forward); `regions`: per real sample
    the part of it that counts (None: all of it), in the chunk's `size` (H, W);
    `weights`: per real sample, how many samples it stands for (None: 1 each): the
    inverse of its chance to be drawn, so that a sample drawn with unequal chances still
    estimates the whole population's statistics (Horvitz-Thompson)."""

    def __init__(self, fixed: NormStats | None = None, *, real: int = 0,
                 regions: Sequence[Region] | None = None, size: tuple[int, int] = (0, 0),
                 weights: Sequence[float] | None = None) -> None:
        self.fixed, self.real, self.regions, self.size = fixed, real, regions, size
        self.weights = weights

    def stats(self, key: str, x: Tensor, *, unbiased: bool, layer: bool) -> LayerStats:
        """The fixed statistics of layer `key`."""
        assert self.fixed is not None, "a pooled pass runs the layers' steps"
        return self.fixed.layers[key]

    def _moments(self, x: Tensor, variance: bool
                 ) -> tuple[Tensor, Tensor | None, Tensor]:
        """Per real sample of x [B, C, h, w], over its region scaled to h x w: mean and
        biased variance per channel [k, C] (float32 moments, `_channel_moments`; returned
        float64 on the CPU) and the pixel count [k]."""
        h, w = x.shape[2], x.shape[3]
        regions = self.regions or [(0, self.size[0], 0, self.size[1])] * self.real
        fy, fx = h / self.size[0], w / self.size[1]
        means, variances, pixels = [], [], []
        for k, (r0, r1, c0, c1) in enumerate(regions):
            a, b = int(r0 * fy), max(int(r0 * fy) + 1, math.ceil(r1 * fy))
            c, d = int(c0 * fx), max(int(c0 * fx) + 1, math.ceil(c1 * fx))
            if b - a < 2 or d - c < 2:  # a region of a few pixels (a tiny scene): the
                a, b, c, d = 0, h, 0, w  # whole sample, padding included, as per tile
            part = x[k : k + 1, :, a:b, c:d].float()  # [1, C, b-a, d-c], a view in fp32
            if variance:
                m, v = _channel_moments(part)
                variances.append(v)
            else:
                m = part.mean(dim=(0, 2, 3))
            means.append(m)
            weight = 1.0 if self.weights is None else float(self.weights[k])
            pixels.append(float((b - a) * (d - c)) * weight)
        var = torch.stack(variances).double().cpu() if variance else None
        return (torch.stack(means).double().cpu(), var,
                torch.tensor(pixels, dtype=torch.float64))

    def pooled(self, key: str, x: Tensor, *, unbiased: bool, layer: bool
               ) -> Generator[_Partial, Any, LayerStats]:
        """Stop with x's partial statistics; return the pooled ones sent back."""
        mean, var, counts = self._moments(x, variance=True)
        return (yield _Partial(key, mean, var, counts, unbiased, layer, x.device))

    def pooled_z(self, x: Tensor) -> Generator[_Partial, Any, Tensor]:
        """Stop with the per-sample mean CAM feature; return the scene's z [1, C]."""
        mean, _, counts = self._moments(x, variance=False)
        return (yield _Partial("z", mean, None, counts, False, False, x.device))


def _affine(x: Tensor, scale: Tensor, shift: Tensor) -> Tensor:
    """x * scale + shift per channel in ONE pass over x: with a scene's statistics every
    norm layer (and ILN's mix and affine) is such a map, and folding it into two [B|1, C,
    1, 1] tensors instead of normalising twice and mixing saves ~10 passes over the
    largest activations (64 x 256^2 on one core: 3 ms against 27 ms for one
    (x - mean) / sqrt(var + eps) with its temporaries; docs/performance.md)."""
    return torch.addcmul(shift, x, scale)


def _in_affine(s: LayerStats) -> tuple[Tensor, Tensor]:
    """InstanceNorm with fixed statistics, (x - mean) / sqrt(var + eps), as scale/shift."""
    inv = torch.rsqrt(s.var + EPS)
    return inv, -s.mean * inv


def _iln_affine(s: LayerStats, rho: Tensor) -> tuple[Tensor, Tensor]:
    """rho * IN(x) + (1 - rho) * LN(x) with fixed statistics, as scale/shift [1, C, 1, 1]."""
    assert s.ln_mean is not None and s.ln_var is not None
    inv_in, inv_ln = torch.rsqrt(s.var + EPS), torch.rsqrt(s.ln_var + EPS)
    scale = rho * inv_in + (1 - rho) * inv_ln
    shift = -(rho * (s.mean * inv_in) + (1 - rho) * (s.ln_mean * inv_ln))
    return scale, shift


def _instance_layer_norm(x: Tensor, rho: Tensor) -> Tensor:
    """rho * IN(x) + (1 - rho) * LN(x), both with the UNBIASED variance (FORMAT), per
    sample (with a scene's statistics: `_iln_affine`)."""
    in_mean = x.mean(dim=(2, 3), keepdim=True)  # [B,C,1,1]
    in_var = x.var(dim=(2, 3), keepdim=True, unbiased=True)
    out_in = (x - in_mean) / torch.sqrt(in_var + EPS)
    ln_mean = x.mean(dim=(1, 2, 3), keepdim=True)  # [B,1,1,1]
    ln_var = x.var(dim=(1, 2, 3), keepdim=True, unbiased=True)
    out_ln = (x - ln_mean) / torch.sqrt(ln_var + EPS)
    return rho * out_in + (1 - rho) * out_ln  # rho: [1,C,1,1]


class InstanceNorm(nn.InstanceNorm2d):
    """The encoder's affine-free InstanceNorm2d (biased variance, eps 1e-5), which can
    also use a scene's statistics. A subclass without parameters: state_dict keys stay."""

    stats_key = ""  # its module name, set by ResnetGenerator

    def forward(self, x: Tensor, norms: NormPass | None = None) -> Tensor:
        if norms is None:
            return super().forward(x)  # torch's own kernel: the published math, bit for bit
        return self.apply_stats(x, norms.stats(self.stats_key, x, unbiased=False, layer=False))

    def steps(self, x: Tensor, norms: NormPass) -> Generator[_Partial, Any, Tensor]:
        s = yield from norms.pooled(self.stats_key, x, unbiased=False, layer=False)
        return self.apply_stats(x, s)

    def apply_stats(self, x: Tensor, s: LayerStats) -> Tensor:
        return _affine(x, *_in_affine(s))


class AdaILN(nn.Module):
    """Adaptive instance-layer norm: gamma/beta come from the CAM features, per sample."""

    stats_key = ""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.rho = nn.Parameter(torch.full((1, num_features, 1, 1), 0.9))

    def forward(self, x: Tensor, gamma: Tensor, beta: Tensor,
                norms: NormPass | None = None) -> Tensor:
        s = None if norms is None else norms.stats(self.stats_key, x, unbiased=True, layer=True)
        return self.apply_stats(x, gamma, beta, s)

    def steps(self, x: Tensor, gamma: Tensor, beta: Tensor, norms: NormPass
              ) -> Generator[_Partial, Any, Tensor]:
        s = yield from norms.pooled(self.stats_key, x, unbiased=True, layer=True)
        return self.apply_stats(x, gamma, beta, s)

    def apply_stats(self, x: Tensor, gamma: Tensor, beta: Tensor, s: LayerStats | None
                    ) -> Tensor:
        # FORMAT: gamma/beta are used as they are (not 1 + gamma).  [B,C] -> [B,C,1,1]
        g, b = gamma[:, :, None, None], beta[:, :, None, None]
        if s is None:
            return _instance_layer_norm(x, self.rho) * g + b
        scale, shift = _iln_affine(s, self.rho)  # [1,C,1,1]
        return _affine(x, scale * g, shift * g + b)  # [B,C,1,1]: per sample's gamma/beta


class ILN(nn.Module):
    """Instance-layer norm with its own learned affine (decoder upsampling path)."""

    stats_key = ""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.rho = nn.Parameter(torch.zeros(1, num_features, 1, 1))
        self.gamma = nn.Parameter(torch.ones(1, num_features, 1, 1))
        self.beta = nn.Parameter(torch.zeros(1, num_features, 1, 1))

    def forward(self, x: Tensor, norms: NormPass | None = None) -> Tensor:
        s = None if norms is None else norms.stats(self.stats_key, x, unbiased=True, layer=True)
        return self.apply_stats(x, s)

    def steps(self, x: Tensor, norms: NormPass) -> Generator[_Partial, Any, Tensor]:
        s = yield from norms.pooled(self.stats_key, x, unbiased=True, layer=True)
        return self.apply_stats(x, s)

    def apply_stats(self, x: Tensor, s: LayerStats | None) -> Tensor:
        if s is None:
            return _instance_layer_norm(x, self.rho) * self.gamma + self.beta
        scale, shift = _iln_affine(s, self.rho)
        return _affine(x, scale * self.gamma, shift * self.gamma + self.beta)


def _run_sequential(seq: nn.Sequential, x: Tensor, norms: NormPass | None) -> Tensor:
    """`seq(x)`, handing `norms` to the layers that normalise (nn.Sequential passes one
    argument only); the same ops in the same order as `seq(x)` when norms is None."""
    for layer in seq:
        x = layer(x, norms) if isinstance(layer, (InstanceNorm, ILN, ResnetBlock)) else layer(x)
    return x


def _sequential_steps(seq: nn.Sequential, x: Tensor | list[Tensor], norms: NormPass
                      ) -> Generator[_Partial, Any, Tensor]:
    """`_run_sequential` of a pooled pass: the same layers, norm layers as steps.

    x given as a one-element list: the caller hands over its only reference, so that
    the input is freed once the first layer has run instead of staying alive in the
    caller's frame for every stop (a pass parks every chunk at each stop: the decoder's
    input held beside its 64 x 256^2 activations was 4 of 20 MiB a tile at ngf 64)."""
    if isinstance(x, list):
        x = x.pop()
    for layer in seq:
        if isinstance(layer, (InstanceNorm, ILN, ResnetBlock)):
            x = yield from layer.steps(x, norms)
        else:
            x = layer(x)
    return x


# ----------------------------------------------------------------------------------------
# Residual blocks


class ResnetBlock(nn.Module):
    """Encoder block: x + IN(conv(ReLU(IN(conv(x))))); no ReLU after the add."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        # Indices 1 and 5 are the convs: keys DownBlock.<i>.conv_block.{1,5}.weight.
        self.conv_block = nn.Sequential(
            nn.ReflectionPad2d(1),
            nn.Conv2d(dim, dim, kernel_size=3, bias=False),
            InstanceNorm(dim),  # affine-free, biased variance, eps 1e-5
            nn.ReLU(True),
            nn.ReflectionPad2d(1),
            nn.Conv2d(dim, dim, kernel_size=3, bias=False),
            InstanceNorm(dim),
        )

    def forward(self, x: Tensor, norms: NormPass | None = None) -> Tensor:
        return x + _run_sequential(self.conv_block, x, norms)

    def steps(self, x: Tensor, norms: NormPass) -> Generator[_Partial, Any, Tensor]:
        return x + (yield from _sequential_steps(self.conv_block, x, norms))


class ResnetAdaILNBlock(nn.Module):
    """Decoder block: x + adaILN(conv(ReLU(adaILN(conv(x))))) with per-sample gamma/beta."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.pad1 = nn.ReflectionPad2d(1)
        self.conv1 = nn.Conv2d(dim, dim, kernel_size=3, bias=False)
        self.norm1 = AdaILN(dim)
        self.relu1 = nn.ReLU(True)
        self.pad2 = nn.ReflectionPad2d(1)
        self.conv2 = nn.Conv2d(dim, dim, kernel_size=3, bias=False)
        self.norm2 = AdaILN(dim)

    def forward(self, x: Tensor, gamma: Tensor, beta: Tensor,
                norms: NormPass | None = None) -> Tensor:
        out = self.relu1(self.norm1(self.conv1(self.pad1(x)), gamma, beta, norms))
        out = self.norm2(self.conv2(self.pad2(out)), gamma, beta, norms)
        return x + out

    def steps(self, x: Tensor, gamma: Tensor, beta: Tensor, norms: NormPass
              ) -> Generator[_Partial, Any, Tensor]:
        out = yield from self.norm1.steps(self.conv1(self.pad1(x)), gamma, beta, norms)
        out = yield from self.norm2.steps(self.conv2(self.pad2(self.relu1(out))), gamma, beta,
                                          norms)
        return x + out


# ----------------------------------------------------------------------------------------
# Generator


class ResnetGenerator(nn.Module):
    """U-GAT-IT generator. forward(x) -> (out, cam_logit, heatmap).

    x: [B, in_ch, H, W] in [-1, 1]; out: [B, out_ch, H, W] in [-1, 1] (tanh);
    cam_logit: [B, 2] raw logits [gap, gmp]; heatmap: [B, 1, H/4, W/4], non-negative.
    The light variant is fully convolutional (any H, W divisible by 4); the full variant
    flattens the bottleneck and so accepts exactly ``config.img_size``.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        ngf, n_res = config.ngf, config.n_res
        dim = ngf * 4  # bottleneck width (two stride-2 downsamplings double it twice)

        # Registration order follows the original so state_dict() lists keys in its order.
        self.gap_fc = nn.Linear(dim, 1, bias=False)
        self.gmp_fc = nn.Linear(dim, 1, bias=False)
        self.conv1x1 = nn.Conv2d(dim * 2, dim, kernel_size=1, bias=True)  # the one conv with bias
        self.relu = nn.ReLU(True)
        self.gamma = nn.Linear(dim, dim, bias=False)
        self.beta = nn.Linear(dim, dim, bias=False)
        for i in range(1, n_res + 1):
            setattr(self, f"UpBlock1_{i}", ResnetAdaILNBlock(dim))

        # Encoder. Sequential indices: 1, 5, 9 convs; 12.. residual blocks.
        down: list[nn.Module] = [
            nn.ReflectionPad2d(3),
            nn.Conv2d(config.in_ch, ngf, kernel_size=7, bias=False),
            InstanceNorm(ngf),
            nn.ReLU(True),
        ]
        for mult in (1, 2):
            down += [
                nn.ReflectionPad2d(1),
                nn.Conv2d(ngf * mult, ngf * mult * 2, kernel_size=3, stride=2, bias=False),
                InstanceNorm(ngf * mult * 2),
                nn.ReLU(True),
            ]
        down += [ResnetBlock(dim) for _ in range(n_res)]
        self.DownBlock = nn.Sequential(*down)

        # gamma/beta MLP. Light: input is the spatial mean [B, dim]; full: the NCHW flatten
        # [B, dim * (img_size/4)^2] (FORMAT: C,H,W order).
        fc_in = dim if config.light else dim * (config.img_size // 4) ** 2
        self.FC = nn.Sequential(
            nn.Linear(fc_in, dim, bias=False),
            nn.ReLU(True),
            nn.Linear(dim, dim, bias=False),
            nn.ReLU(True),
        )

        # Decoder upsampling. Indices: 2, 7 convs with ILN at 3, 8; 11 the output conv.
        up: list[nn.Module] = []
        for mult in (4, 2):
            up += [
                nn.Upsample(scale_factor=2, mode="nearest"),
                nn.ReflectionPad2d(1),
                nn.Conv2d(ngf * mult, ngf * mult // 2, kernel_size=3, bias=False),
                ILN(ngf * mult // 2),
                nn.ReLU(True),
            ]
        up += [
            nn.ReflectionPad2d(3),
            nn.Conv2d(ngf, config.out_ch, kernel_size=7, bias=False),
            nn.Tanh(),
        ]
        self.UpBlock2 = nn.Sequential(*up)

        # Each norm layer knows its module name: the key of its statistics in NormStats
        # (a plain attribute, not in state_dict).
        for name, module in self.named_modules():
            if isinstance(module, (InstanceNorm, ILN, AdaILN)):
                module.stats_key = name

    def check_input(self, x: Tensor) -> None:
        """Fail with a readable message instead of a shape error deep inside the net."""
        cfg = self.config
        if x.ndim != 4 or x.shape[1] != cfg.in_ch:
            raise ValueError(f"expected input [B, {cfg.in_ch}, H, W], got {list(x.shape)}")
        h, w = x.shape[-2:]
        # Two stride-2 convs: the bottleneck is H/4 x W/4, and its reflection padding and
        # instance norms need at least 2 x 2 of it, hence >= 8 px.
        if cfg.light and (h % 4 or w % 4 or h < 8 or w < 8):
            raise ValueError(
                f"the light generator needs H, W divisible by 4 and >= 8, got {h}x{w}"
            )
        if not cfg.light and (h, w) != (cfg.img_size, cfg.img_size):
            raise ValueError(
                f"the full generator accepts exactly {cfg.img_size}x{cfg.img_size} inputs, "
                f"got {h}x{w}"
            )

    def forward(self, x: Tensor, stats: NormStats | None = None
                ) -> tuple[Tensor, Tensor, Tensor]:
        """stats None: every sample normalised by its own statistics (the published
        model). stats given (`collect_stats` of a scene): every norm layer uses the
        scene's statistics, and the light generator the scene's gamma/beta, so tiles of
        one scene are normalised alike. cam_logit and heatmap stay per sample."""
        self.check_input(x)
        return self._forward(x, None if stats is None else NormPass(stats))

    @torch.no_grad()
    def collect_stats(self, x: Tensor, *, micro: int | None = None, workers: int = 1
                      ) -> NormStats:
        """The normalisation statistics of the samples x [N, in_ch, H, W] pooled as ONE
        image (`pooled_forward` of x cut into chunks of `micro` samples, default all in
        one), in the caller's precision (autocast) with the statistics pooled in float64
        and kept in float32. The full generator's gamma/beta are not pooled (they come
        from each tile's own flattened bottleneck, which only a tile of img_size has), so
        NormStats.z is None for it."""
        micro = micro or x.shape[0]
        chunks = [x[i : i + micro] for i in range(0, x.shape[0], micro)]
        return self.pooled_forward(chunks, workers=workers)[0]

    def pooled_forward(
        self,
        chunks: Sequence[Tensor],
        real: Sequence[int] | None = None,
        *,
        regions: Sequence[Sequence[Region]] | None = None,
        weights: Sequence[Sequence[float]] | None = None,
        workers: int = 1,
        context: Callable[[], contextlib.AbstractContextManager[Any]] | None = None,
        finish: Callable[[int, tuple[Tensor, Tensor, Tensor]], Any] | None = None,
    ) -> tuple[NormStats, list[Any]]:
        """One scene's sample, given as `chunks` (micro-batches [B, in_ch, H, W] of one
        shape; `real[i]`: how many leading samples of chunk i count, default all), pooled
        layer by layer (see the section top): (its NormStats, per chunk `finish(i,
        (out, cam_logit, heatmap))`, default the triple itself). `regions[i]`: per real
        sample of chunk i the rows/columns (r0, r1, c0, c1) whose pixels enter the
        statistics (scaled to each layer's resolution; default: every pixel), e.g. the
        part of a tile that no other tile of a scene covers (pipeline/run/inference.py);
        `weights[i]`: per real sample of chunk i how many samples it stands for (NormPass).

        `workers` threads (one: the caller's) advance the chunks' forwards, taking the
        next chunk as they come free, each thread inside `context()` (autocast and
        inference mode are per thread: pass the run's) and no_grad; they meet at each
        norm layer, where the last to arrive pools the statistics. Chunk i's outputs are
        bit for bit those of `self(chunks[i], stats)` run afterwards under the same
        context: the same ops on the same tensors, the statistics being the same float32
        values. Memory: every chunk's activations at one layer (and a residual input)
        while the others catch up, plus `workers` forwards' working memory; never the
        whole sample's forward."""
        for chunk in chunks:
            self.check_input(chunk)
        n = len(chunks)
        real = [c.shape[0] for c in chunks] if real is None else list(real)
        workers = max(1, min(workers, n))
        parts: list[_Partial | None] = [None] * n
        results: list[Any] = [None] * n
        recorded: dict[str, LayerStats] = {}
        pooled: list[Any] = [None, None]  # [the last pooled answer, z]
        errors: list[BaseException] = []
        enter = context or contextlib.nullcontext

        steps = [self._steps(chunks[i], NormPass(
            real=real[i], regions=None if regions is None else regions[i],
            weights=None if weights is None else weights[i],
            size=(chunks[i].shape[2], chunks[i].shape[3]))) for i in range(n)]
        # one round per stop: the next chunk to advance, whether any chunk stopped (else
        # every chunk finished), whether the pass is over
        state = {"next": 0, "stopped": False, "over": False}
        take = threading.Lock()

        def pool() -> None:  # one thread, every chunk stopped at the same layer (or done)
            if state["stopped"]:
                got = _combine([p for p in parts if p is not None])
                key = parts[0].key if parts[0] is not None else ""
                if isinstance(got, LayerStats):
                    recorded[key] = got
                else:
                    pooled[1] = got
                pooled[0] = got
            else:
                state["over"] = True
            state["next"], state["stopped"] = 0, False

        barrier = threading.Barrier(workers, action=pool)

        def work() -> None:
            # Each round, the threads take the chunks in turn (whichever thread is free
            # takes the next: a thread the OS holds back delays the round by one chunk at
            # most), advance each to its next stop, and meet; the last to arrive pools
            # the layer. Autocast and grad modes are the same in every thread, so a
            # chunk's forward may move between threads: the same single-threaded ops.
            try:
                with torch.no_grad(), enter():
                    while not state["over"]:
                        answer = pooled[0]
                        while True:
                            with take:
                                i = state["next"]
                                state["next"] = i + 1
                            if i >= n:
                                break
                            try:
                                parts[i] = steps[i].send(answer)
                                state["stopped"] = True
                            except StopIteration as done:
                                results[i] = done.value if finish is None else finish(
                                    i, done.value)
                        barrier.wait()
            except threading.BrokenBarrierError:
                pass  # another thread failed: its error is the one to raise
            except BaseException as exc:  # noqa: BLE001 - re-raised in the caller below
                errors.append(exc)
                barrier.abort()

        if workers == 1:
            work()
        else:
            threads = [threading.Thread(target=work, name=f"eo2sar-pool-{w}")
                       for w in range(workers)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        if errors:
            raise errors[0]
        return NormStats(recorded, pooled[1], samples=sum(real)), results

    def _forward(self, x: Tensor, norms: NormPass | None) -> tuple[Tensor, Tensor, Tensor]:
        """(out, cam_logit, heatmap); norms None = per sample."""
        x = _run_sequential(self.DownBlock, x, norms)  # [B, 256, 64, 64]
        b = x.shape[0]
        x, cam_logit, heatmap = self._cam(x)
        if not self.config.light:
            z = x.reshape(b, -1)  # [B, 256*64*64], C,H,W order: per tile in every mode
        elif norms is not None and norms.fixed is not None and norms.fixed.z is not None:
            z = norms.fixed.z  # [1, 256]
        else:
            z = F.adaptive_avg_pool2d(x, 1).reshape(b, -1)  # [B, 256]
        gamma, beta = self._gamma_beta(z, b)
        for i in range(1, self.config.n_res + 1):
            x = getattr(self, f"UpBlock1_{i}")(x, gamma, beta, norms)  # [B, 256, 64, 64]
        out = _run_sequential(self.UpBlock2, x, norms)  # [B, 3, 256, 256]
        return out, cam_logit, heatmap

    def _steps(self, x: Tensor, norms: NormPass) -> Steps:
        """`_forward` of one chunk of a pooled pass (section top): the same modules and
        helpers, each norm layer (and the light generator's z) a stop."""
        x = yield from _sequential_steps(self.DownBlock, x, norms)
        b = x.shape[0]
        x, cam_logit, heatmap = self._cam(x)
        if not self.config.light:
            z = x.reshape(b, -1)
        else:
            z = yield from norms.pooled_z(x)  # [1, 256]: the scene's z
        gamma, beta = self._gamma_beta(z, b)
        for i in range(1, self.config.n_res + 1):
            x = yield from getattr(self, f"UpBlock1_{i}").steps(x, gamma, beta, norms)
        handed = [x]
        del x  # UpBlock2 holds the only reference (_sequential_steps)
        out = yield from _sequential_steps(self.UpBlock2, handed, norms)
        return out, cam_logit, heatmap

    def _cam(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Class activation map: the two CAM classifiers' weights re-weight the channels.
        (features [B, 256, 64, 64], cam_logit [B, 2], heatmap [B, 1, 64, 64])"""
        b = x.shape[0]
        gap_logit = self.gap_fc(F.adaptive_avg_pool2d(x, 1).reshape(b, -1))  # [B, 1]
        gmp_logit = self.gmp_fc(F.adaptive_max_pool2d(x, 1).reshape(b, -1))  # [B, 1]
        gap = x * self.gap_fc.weight[:, :, None, None]  # [1,256] -> [1,256,1,1]
        gmp = x * self.gmp_fc.weight[:, :, None, None]
        cam_logit = torch.cat([gap_logit, gmp_logit], dim=1)  # [B, 2]: [gap, gmp]
        x = self.relu(self.conv1x1(torch.cat([gap, gmp], dim=1)))  # [B, 512->256, 64, 64]
        heatmap = torch.sum(x, dim=1, keepdim=True)  # [B, 1, 64, 64]
        return x, cam_logit, heatmap

    def _gamma_beta(self, z: Tensor, b: int) -> tuple[Tensor, Tensor]:
        """gamma, beta [B, 256] from z [B or 1, ...]; a scene's z [1, 256] gives one
        gamma/beta, computed once, the same for every sample."""
        z = self.FC(z)  # [B or 1, 256]
        return self.gamma(z).expand(b, -1), self.beta(z).expand(b, -1)


# ----------------------------------------------------------------------------------------
# Discriminator


class Discriminator(nn.Module):
    """PatchGAN discriminator with a CAM head. forward(x) -> (out, cam_logit, heatmap).

    Every conv except ``conv1x1``, and both CAM Linear layers, carry classic
    ``spectral_norm`` (keys ``weight_orig``/``weight_u``/``weight_v``). In eval mode the
    weight is ``weight_orig / (u . W v)`` with the stored u, v; in train mode each forward
    runs one power iteration. n_layers=7 is the global discriminator (input >= 96 px),
    n_layers=5 the local one.
    """

    def __init__(self, in_ch: int = 3, ndf: int = 64, n_layers: int = 5) -> None:
        super().__init__()
        if n_layers < 3:
            raise ValueError(f"n_layers must be >= 3, got {n_layers}")
        self.n_layers = n_layers
        dim = ndf * 2 ** (n_layers - 2)  # CAM width: 2048 (global) / 512 (local) at ndf 64

        self.gap_fc = spectral_norm(nn.Linear(dim, 1, bias=False))
        self.gmp_fc = spectral_norm(nn.Linear(dim, 1, bias=False))
        self.conv1x1 = nn.Conv2d(dim * 2, dim, kernel_size=1, bias=True)
        self.leaky_relu = nn.LeakyReLU(0.2, True)
        self.pad = nn.ReflectionPad2d(1)
        self.conv = spectral_norm(nn.Conv2d(dim, 1, kernel_size=4, bias=False))

        # Sequential indices 1, 4, 7, ... are the SN convs; the last one has stride 1.
        model: list[nn.Module] = [
            nn.ReflectionPad2d(1),
            spectral_norm(nn.Conv2d(in_ch, ndf, kernel_size=4, stride=2, bias=True)),
            nn.LeakyReLU(0.2, True),
        ]
        for i in range(1, n_layers - 2):
            c = ndf * 2 ** (i - 1)
            model += [
                nn.ReflectionPad2d(1),
                spectral_norm(nn.Conv2d(c, c * 2, kernel_size=4, stride=2, bias=True)),
                nn.LeakyReLU(0.2, True),
            ]
        c = ndf * 2 ** (n_layers - 3)
        model += [
            nn.ReflectionPad2d(1),
            spectral_norm(nn.Conv2d(c, c * 2, kernel_size=4, stride=1, bias=True)),
            nn.LeakyReLU(0.2, True),
        ]
        self.model = nn.Sequential(*model)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        x = self.model(x)  # global: [B, 2048, 7, 7] at 256 px; local: [B, 512, 31, 31]
        b = x.shape[0]
        gap_logit = self.gap_fc(F.adaptive_avg_pool2d(x, 1).reshape(b, -1))  # [B, 1]
        gmp_logit = self.gmp_fc(F.adaptive_max_pool2d(x, 1).reshape(b, -1))
        # FORMAT: the re-weighting uses weight_orig (not the normalised weight), as the
        # original took `list(self.gap_fc.parameters())[0]`.
        gap = x * self.gap_fc.weight_orig[:, :, None, None]
        gmp = x * self.gmp_fc.weight_orig[:, :, None, None]
        cam_logit = torch.cat([gap_logit, gmp_logit], dim=1)  # [B, 2]
        x = self.leaky_relu(self.conv1x1(torch.cat([gap, gmp], dim=1)))
        heatmap = torch.sum(x, dim=1, keepdim=True)  # [B, 1, h, w]
        out = self.conv(self.pad(x))  # patch logits [B, 1, h-1, w-1]
        return out, cam_logit, heatmap


# ----------------------------------------------------------------------------------------
# The six networks of a checkpoint

GENERATORS = ("genA2B", "genB2A")
DISCRIMINATORS = ("disGA", "disGB", "disLA", "disLB")
NETWORK_NAMES = GENERATORS + DISCRIMINATORS


def build_network(name: str, config: ModelConfig) -> nn.Module:
    """Construct one of the six networks by its checkpoint key."""
    if name == "genA2B":
        return ResnetGenerator(config)
    if name == "genB2A":  # B -> A: the channel counts swap
        return ResnetGenerator(replace(config, in_ch=config.out_ch, out_ch=config.in_ch))
    if name in DISCRIMINATORS:  # dis{G,L}{A,B}: global or local, judging domain A or B
        in_ch = config.in_ch if name.endswith("A") else config.out_ch
        n_layers = config.n_dis_global if name[3] == "G" else config.n_dis_local
        return Discriminator(in_ch, config.ndf, n_layers)
    raise KeyError(f"unknown network {name!r}; expected one of {NETWORK_NAMES}")

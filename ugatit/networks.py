"""U-GAT-IT networks: one generator (light and full variants) and one discriminator.

This file reads top to bottom: normalisation layers, the two residual blocks, the
generator, the discriminator. Module names and ``nn.Sequential`` indices are chosen so
that ``state_dict()`` keys are *identical* to the published checkpoint (see
``tests/data/manifests``): seed files load with no renaming. The math reproduces the
original code exactly; the subtle points are marked "FORMAT:" and each one is pinned by a
test in ``tests/ugatit/test_numerics.py``.

Shapes are written for the published model (ngf=64, 256x256 input, batch B).
"""

from __future__ import annotations

from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils import spectral_norm

from ugatit.config import ModelConfig

EPS = 1e-5


# ----------------------------------------------------------------------------------------
# Normalisation


def _instance_layer_norm(x: Tensor, rho: Tensor) -> Tensor:
    """rho * IN(x) + (1 - rho) * LN(x), both with the UNBIASED variance (FORMAT)."""
    in_mean = x.mean(dim=(2, 3), keepdim=True)  # [B,C,1,1]
    in_var = x.var(dim=(2, 3), keepdim=True, unbiased=True)
    out_in = (x - in_mean) / torch.sqrt(in_var + EPS)
    ln_mean = x.mean(dim=(1, 2, 3), keepdim=True)  # [B,1,1,1]
    ln_var = x.var(dim=(1, 2, 3), keepdim=True, unbiased=True)
    out_ln = (x - ln_mean) / torch.sqrt(ln_var + EPS)
    return rho * out_in + (1 - rho) * out_ln  # rho: [1,C,1,1]


class AdaILN(nn.Module):
    """Adaptive instance-layer norm: gamma/beta come from the CAM features, per sample."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.rho = nn.Parameter(torch.full((1, num_features, 1, 1), 0.9))

    def forward(self, x: Tensor, gamma: Tensor, beta: Tensor) -> Tensor:
        out = _instance_layer_norm(x, self.rho)
        # FORMAT: gamma/beta are used as they are (not 1 + gamma).  [B,C] -> [B,C,1,1]
        return out * gamma[:, :, None, None] + beta[:, :, None, None]


class ILN(nn.Module):
    """Instance-layer norm with its own learned affine (decoder upsampling path)."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.rho = nn.Parameter(torch.zeros(1, num_features, 1, 1))
        self.gamma = nn.Parameter(torch.ones(1, num_features, 1, 1))
        self.beta = nn.Parameter(torch.zeros(1, num_features, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        return _instance_layer_norm(x, self.rho) * self.gamma + self.beta


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
            nn.InstanceNorm2d(dim),  # affine-free, biased variance, eps 1e-5
            nn.ReLU(True),
            nn.ReflectionPad2d(1),
            nn.Conv2d(dim, dim, kernel_size=3, bias=False),
            nn.InstanceNorm2d(dim),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv_block(x)


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

    def forward(self, x: Tensor, gamma: Tensor, beta: Tensor) -> Tensor:
        out = self.relu1(self.norm1(self.conv1(self.pad1(x)), gamma, beta))
        out = self.norm2(self.conv2(self.pad2(out)), gamma, beta)
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
            nn.InstanceNorm2d(ngf),
            nn.ReLU(True),
        ]
        for mult in (1, 2):
            down += [
                nn.ReflectionPad2d(1),
                nn.Conv2d(ngf * mult, ngf * mult * 2, kernel_size=3, stride=2, bias=False),
                nn.InstanceNorm2d(ngf * mult * 2),
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

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        self.check_input(x)
        x = self.DownBlock(x)  # [B, 256, 64, 64]
        b = x.shape[0]

        # Class activation map: the two CAM classifiers' weights re-weight the channels.
        gap_logit = self.gap_fc(F.adaptive_avg_pool2d(x, 1).reshape(b, -1))  # [B, 1]
        gmp_logit = self.gmp_fc(F.adaptive_max_pool2d(x, 1).reshape(b, -1))  # [B, 1]
        gap = x * self.gap_fc.weight[:, :, None, None]  # [1,256] -> [1,256,1,1]
        gmp = x * self.gmp_fc.weight[:, :, None, None]
        cam_logit = torch.cat([gap_logit, gmp_logit], dim=1)  # [B, 2]: [gap, gmp]
        x = self.relu(self.conv1x1(torch.cat([gap, gmp], dim=1)))  # [B, 512->256, 64, 64]
        heatmap = torch.sum(x, dim=1, keepdim=True)  # [B, 1, 64, 64]

        if self.config.light:
            z = F.adaptive_avg_pool2d(x, 1).reshape(b, -1)  # [B, 256]
        else:
            z = x.reshape(b, -1)  # [B, 256*64*64], C,H,W order
        z = self.FC(z)  # [B, 256]
        gamma, beta = self.gamma(z), self.beta(z)  # [B, 256] each

        for i in range(1, self.config.n_res + 1):
            x = getattr(self, f"UpBlock1_{i}")(x, gamma, beta)  # [B, 256, 64, 64]
        out = self.UpBlock2(x)  # [B, 3, 256, 256]
        return out, cam_logit, heatmap


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

"""Independent functional reference of the U-GAT-IT generator and discriminator.

Why this exists: ``ugatit.networks`` must compute exactly the function of the published
checkpoints (``reference/UGATIT_FORMAT.md``). Comparing the modules with a second
implementation written straight from that spec, as pure functions over a state dict and
``torch.nn.functional`` only, catches the mistakes a module-level review misses (a biased
variance, a swapped rho blend, a wrong flatten order...). Nothing here is imported by the
package; it lives in the tests so it can never drift into "testing the code against itself".

Every tensor is read by its checkpoint key (the manifest keys), so the reference also pins
the meaning of each key. ``RefOptions`` switches deliberately break one fact at a time: a
test that shows the broken variant differs from the modules proves the comparison would
have caught that mistake (the test is sensitive, not vacuous).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

StateDict = dict[str, Tensor]

EPS = 1e-5  # InstanceNorm2d, ILN and adaILN epsilon in the original code
SN_EPS = 1e-12  # torch.nn.utils.spectral_norm normalisation epsilon
LEAKY_SLOPE = 0.2


@dataclass(frozen=True)
class RefOptions:
    """One switch per numerical fact; the defaults are the published behaviour.

    Each non-default value is a plausible re-implementation mistake, used by tests to show
    that the module-vs-reference comparison is sensitive to that fact.
    """

    iln_unbiased: bool = True  # ILN/adaILN variance divides by N-1
    encoder_in_unbiased: bool = False  # encoder InstanceNorm divides by N
    rho_swapped: bool = False  # mistake: (1-rho)*IN + rho*LN
    one_plus_gamma: bool = False  # mistake: adaILN scales by (1+gamma)
    pad_mode: str = "reflect"  # mistake: "constant" (zero padding)
    upsample_mode: str = "nearest"  # mistake: "bilinear"
    flatten_nhwc: bool = False  # mistake (full variant): flatten in H,W,C order
    light_pool: str = "mean"  # mistake: "max" pooling before the light FC
    cam_order_swapped: bool = False  # mistake: cam_logit = [gmp, gap]
    cam_features_swapped: bool = False  # mistake: conv1x1 input cat[x*w_gmp, x*w_gap]
    relu_after_residual: bool = False  # mistake: encoder block ReLU(x + F(x))
    dis_slope: float = LEAKY_SLOPE  # mistake: another LeakyReLU slope in the discriminator
    heatmap_pre_relu: bool = False  # mistake: heatmap from the pre-activation conv1x1 output
    no_tanh: bool = False  # mistake: output left un-squashed
    dis_reweight_normalised: bool = False  # mistake: CAM re-weighting with the SN weight


DEFAULT = RefOptions()


# --------------------------------------------------------------------------- normalisation


def _var(x: Tensor, dims: tuple[int, ...], unbiased: bool) -> Tensor:
    """Variance written out (mean of squared deviations) so it does not lean on torch.var's
    default correction: the N vs N-1 choice is exactly what the tests pin."""
    n = 1
    for d in dims:
        n *= x.shape[d]
    mean = x.mean(dim=dims, keepdim=True)
    ss = ((x - mean) ** 2).sum(dim=dims, keepdim=True)
    return ss / (n - 1 if unbiased else n)


def ref_instance_norm(x: Tensor, *, unbiased: bool = False, eps: float = EPS) -> Tensor:
    """Encoder InstanceNorm: affine-free, no running stats, BIASED variance, eps 1e-5."""
    dims = (2, 3)
    return (x - x.mean(dim=dims, keepdim=True)) / torch.sqrt(_var(x, dims, unbiased) + eps)


def _iln_blend(x: Tensor, rho: Tensor, *, unbiased: bool, swapped: bool) -> Tensor:
    """rho*IN + (1-rho)*LN with IN over (H,W), LN over (C,H,W), both UNBIASED variance."""
    hw, chw = (2, 3), (1, 2, 3)
    x_in = (x - x.mean(dim=hw, keepdim=True)) / torch.sqrt(_var(x, hw, unbiased) + EPS)
    x_ln = (x - x.mean(dim=chw, keepdim=True)) / torch.sqrt(_var(x, chw, unbiased) + EPS)
    rho = rho.reshape(1, -1, 1, 1)
    if swapped:
        return (1 - rho) * x_in + rho * x_ln
    return rho * x_in + (1 - rho) * x_ln


def ref_iln(
    x: Tensor, rho: Tensor, gamma: Tensor, beta: Tensor, *, opts: RefOptions = DEFAULT
) -> Tensor:
    """Decoder ILN: learned per-channel rho, gamma, beta (each stored as [1,C,1,1])."""
    out = _iln_blend(x, rho, unbiased=opts.iln_unbiased, swapped=opts.rho_swapped)
    return out * gamma.reshape(1, -1, 1, 1) + beta.reshape(1, -1, 1, 1)


def ref_adailn(
    x: Tensor, rho: Tensor, gamma: Tensor, beta: Tensor, *, opts: RefOptions = DEFAULT
) -> Tensor:
    """adaILN: per-sample gamma, beta [B,C] from the FC head, applied as-is (not 1+gamma)."""
    out = _iln_blend(x, rho, unbiased=opts.iln_unbiased, swapped=opts.rho_swapped)
    scale = gamma[:, :, None, None]
    if opts.one_plus_gamma:
        scale = 1 + scale
    return out * scale + beta[:, :, None, None]


# --------------------------------------------------------------------------- spectral norm


def ref_sn_weight(weight_orig: Tensor, u: Tensor, v: Tensor) -> Tensor:
    """Eval-mode spectral norm: W / sigma with sigma = u . (W_mat v), W_mat = W.reshape(out, -1),
    using the STORED u and v (no power iteration)."""
    w_mat = weight_orig.reshape(weight_orig.shape[0], -1)
    sigma = torch.dot(u, w_mat @ v)
    return weight_orig / sigma


def ref_power_iteration(weight_orig: Tensor, u: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
    """One train-mode power iteration of classic spectral_norm: v <- W^T u / |.|, then
    u <- W v / |.| (norms clamped at 1e-12). Returns the new (u, v); ``v`` only matters
    through the update of u, it is accepted to keep the signature symmetric."""
    del v  # the classic update recomputes v from u first
    w_mat = weight_orig.reshape(weight_orig.shape[0], -1)
    v_new = F.normalize(w_mat.t() @ u, dim=0, eps=SN_EPS)
    u_new = F.normalize(w_mat @ v_new, dim=0, eps=SN_EPS)
    return u_new, v_new


def _sn(sd: StateDict, prefix: str) -> Tensor:
    return ref_sn_weight(sd[f"{prefix}.weight_orig"], sd[f"{prefix}.weight_u"],
                         sd[f"{prefix}.weight_v"])


# --------------------------------------------------------------------------- building blocks


def _conv(x: Tensor, w: Tensor, *, pad: int, mode: str, stride: int = 1,
          bias: Tensor | None = None) -> Tensor:
    """Explicit padding (reflect in the original) then an unpadded convolution."""
    if pad:
        x = F.pad(x, (pad, pad, pad, pad), mode=mode)
    return F.conv2d(x, w, bias, stride=stride)


def _cam(x: Tensor, gap_w: Tensor, gmp_w: Tensor, gap_rw: Tensor, gmp_rw: Tensor,
         conv_w: Tensor, conv_b: Tensor, opts: RefOptions, *, leaky: bool
         ) -> tuple[Tensor, Tensor, Tensor]:
    """Class activation map block shared by generator and discriminator.

    ``gap_w``/``gmp_w`` give the logits, ``gap_rw``/``gmp_rw`` the channel re-weighting
    (identical in the generator; weight_orig vs normalised weight in the discriminator).
    Returns (features after activation, cam_logit [N,2], heatmap [N,1,h,w]).
    """
    gap_logit = x.mean(dim=(2, 3)) @ gap_w.t()  # [N,1]
    gmp_logit = x.amax(dim=(2, 3)) @ gmp_w.t()
    logits = [gmp_logit, gap_logit] if opts.cam_order_swapped else [gap_logit, gmp_logit]
    cam_logit = torch.cat(logits, dim=1)
    parts = [x * gap_rw.reshape(1, -1, 1, 1), x * gmp_rw.reshape(1, -1, 1, 1)]
    feats = torch.cat(parts[::-1] if opts.cam_features_swapped else parts, dim=1)
    pre = F.conv2d(feats, conv_w, conv_b)
    post = F.leaky_relu(pre, opts.dis_slope) if leaky else F.relu(pre)
    heatmap = (pre if opts.heatmap_pre_relu else post).sum(dim=1, keepdim=True)
    return post, cam_logit, heatmap


# --------------------------------------------------------------------------- networks


def ref_generator(sd: StateDict, x: Tensor, *, n_res: int, light: bool,
                  opts: RefOptions = DEFAULT) -> tuple[Tensor, Tensor, Tensor]:
    """U-GAT-IT ResnetGenerator forward from a state dict: (out, cam_logit, heatmap)."""
    pm = opts.pad_mode

    def enc_in(t: Tensor) -> Tensor:
        return ref_instance_norm(t, unbiased=opts.encoder_in_unbiased)

    # Encoder: 7x7, then two stride-2 3x3 convs; each IN + ReLU.
    h = F.relu(enc_in(_conv(x, sd["DownBlock.1.weight"], pad=3, mode=pm)))
    h = F.relu(enc_in(_conv(h, sd["DownBlock.5.weight"], pad=1, mode=pm, stride=2)))
    h = F.relu(enc_in(_conv(h, sd["DownBlock.9.weight"], pad=1, mode=pm, stride=2)))
    for i in range(n_res):
        p = f"DownBlock.{12 + i}.conv_block"
        r = F.relu(enc_in(_conv(h, sd[f"{p}.1.weight"], pad=1, mode=pm)))
        r = enc_in(_conv(r, sd[f"{p}.5.weight"], pad=1, mode=pm))
        h = h + r  # no activation after the residual add
        if opts.relu_after_residual:
            h = F.relu(h)

    gap_w, gmp_w = sd["gap_fc.weight"], sd["gmp_fc.weight"]
    h, cam_logit, heatmap = _cam(h, gap_w, gmp_w, gap_w, gmp_w, sd["conv1x1.weight"],
                                 sd["conv1x1.bias"], opts, leaky=False)

    # gamma/beta head.
    if light:
        z = h.mean(dim=(2, 3)) if opts.light_pool == "mean" else h.amax(dim=(2, 3))
    elif opts.flatten_nhwc:
        z = h.permute(0, 2, 3, 1).reshape(h.shape[0], -1)
    else:
        z = h.reshape(h.shape[0], -1)  # C,H,W order
    z = F.relu(z @ sd["FC.0.weight"].t())
    z = F.relu(z @ sd["FC.2.weight"].t())
    gamma, beta = z @ sd["gamma.weight"].t(), z @ sd["beta.weight"].t()

    # Decoder bottleneck: adaILN residual blocks.
    for i in range(1, n_res + 1):
        p = f"UpBlock1_{i}"
        r = _conv(h, sd[f"{p}.conv1.weight"], pad=1, mode=pm)
        r = F.relu(ref_adailn(r, sd[f"{p}.norm1.rho"], gamma, beta, opts=opts))
        r = _conv(r, sd[f"{p}.conv2.weight"], pad=1, mode=pm)
        r = ref_adailn(r, sd[f"{p}.norm2.rho"], gamma, beta, opts=opts)
        h = h + r

    # Up-sampling: nearest x2, 3x3 conv halving channels, ILN, ReLU (twice).
    for conv_i, norm_i in ((2, 3), (7, 8)):
        h = F.interpolate(h, scale_factor=2, mode=opts.upsample_mode)
        h = _conv(h, sd[f"UpBlock2.{conv_i}.weight"], pad=1, mode=pm)
        n = f"UpBlock2.{norm_i}"
        h = F.relu(ref_iln(h, sd[f"{n}.rho"], sd[f"{n}.gamma"], sd[f"{n}.beta"], opts=opts))
    out = _conv(h, sd["UpBlock2.11.weight"], pad=3, mode=pm)
    if not opts.no_tanh:
        out = torch.tanh(out)
    return out, cam_logit, heatmap


def dis_conv_indices(n_layers: int) -> list[int]:
    """Sequential indices of the SN convs in ``model``: pad, conv, LeakyReLU per layer."""
    return [1 + 3 * i for i in range(n_layers - 1)]


def ref_discriminator(sd: StateDict, x: Tensor, *, n_layers: int,
                      opts: RefOptions = DEFAULT) -> tuple[Tensor, Tensor, Tensor]:
    """U-GAT-IT Discriminator forward (eval-mode spectral norm): (out, cam_logit, heatmap).

    n_layers - 1 SN convs 4x4: all stride 2 but the last (stride 1), each reflect-pad 1 and
    LeakyReLU 0.2; CAM whose logits use the normalised Linear weights but whose channel
    re-weighting uses ``weight_orig`` (the original reads ``parameters()[0]``); final
    reflect-pad 1 + SN conv 4x4 without bias.
    """
    pm = opts.pad_mode
    idx = dis_conv_indices(n_layers)
    h = x
    for k, i in enumerate(idx):
        stride = 1 if k == len(idx) - 1 else 2
        h = _conv(h, _sn(sd, f"model.{i}"), pad=1, mode=pm, stride=stride,
                  bias=sd[f"model.{i}.bias"])
        h = F.leaky_relu(h, opts.dis_slope)

    gap_w, gmp_w = _sn(sd, "gap_fc"), _sn(sd, "gmp_fc")
    if opts.dis_reweight_normalised:
        gap_rw, gmp_rw = gap_w, gmp_w
    else:
        gap_rw, gmp_rw = sd["gap_fc.weight_orig"], sd["gmp_fc.weight_orig"]
    h, cam_logit, heatmap = _cam(h, gap_w, gmp_w, gap_rw, gmp_rw, sd["conv1x1.weight"],
                                 sd["conv1x1.bias"], opts, leaky=True)
    out = _conv(h, _sn(sd, "conv"), pad=1, mode=pm)
    return out, cam_logit, heatmap


def sn_prefixes(sd: StateDict) -> list[str]:
    """Every spectrally normalised layer of a discriminator state dict."""
    return sorted(k[: -len(".weight_orig")] for k in sd if k.endswith(".weight_orig"))

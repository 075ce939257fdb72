"""Numerical parity of ``ugatit.networks`` with the published U-GAT-IT function.

Two layers of checks:

1. The independent reference (``tests/ugatit/reference.py``) is checked piece by piece
   against formulas written out here on tiny tensors (plain loops over Python floats where
   practical), and against torch's own implementations where one exists.
2. The package's modules are compared with that reference on random weights, in float64
   (<= 1e-10 relative: only summation order differs; measured ~4e-15) and float32 (<= 1e-4
   relative: the spec measures float32 reordering effects at ~1e-6..2e-5, measured here
   ~2e-6, so 1e-4 leaves 5x headroom over the spec yet sits 5x below MISTAKE_MIN). Each
   numerical fact of the spec also gets a *sensitivity* check: the reference with that one
   fact broken must differ from the modules by far more than the tolerance, which proves the
   comparison would have caught that mistake.

Relative error here is max|a - b| / max|b| (scale of the whole tensor), which is stricter
than a norm ratio and does not blow up on entries near zero.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tests.ugatit.reference import (
    DEFAULT,
    RefOptions,
    ref_adailn,
    ref_discriminator,
    ref_generator,
    ref_iln,
    ref_instance_norm,
    ref_power_iteration,
    ref_sn_weight,
    sn_prefixes,
)
from ugatit.config import ModelConfig
from ugatit.networks import Discriminator, ResnetGenerator

F64_TOL = 1e-10
F32_TOL = 1e-4
# A deliberate mistake must move some output by at least this much (relative): 5x the float32
# tolerance, so every mistake listed would also fail the float32 comparison. The smallest one,
# biased ILN/adaILN variance, measures 1.1e-3..2.2e-3 on these models over seeds 0-4 (the spec:
# ~2e-4 on the ngf-64 light model, whose 64x64 bottleneck makes N vs N-1 matter less).
MISTAKE_MIN = 5e-4

NGF, N_RES, IMG = 8, 2, 32
NDF = 8
DIS_SIZE = {7: 96, 5: 40}  # global needs >= 96 px (5 stride-2 convs + two 4x4 convs)


# --------------------------------------------------------------------------- helpers


def rel_err(a: Tensor, b: Tensor) -> float:
    """max|a-b| / max|b| in float64; shapes must agree exactly."""
    assert a.shape == b.shape, f"shape {tuple(a.shape)} != reference {tuple(b.shape)}"
    a64, b64 = a.detach().double(), b.detach().double()
    return ((a64 - b64).abs().max() / b64.abs().max().clamp_min(1e-300)).item()


def max_rel_err(outs: tuple[Tensor, ...], refs: tuple[Tensor, ...]) -> float:
    return max(rel_err(a, b) for a, b in zip(outs, refs, strict=True))


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Deterministic init without leaking RNG state into other tests."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def state(module: nn.Module) -> dict[str, Tensor]:
    """Detached copy of the state dict: the reference must not see later in-place updates."""
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def make_generator(light: bool, dtype: torch.dtype = torch.float64, seed: int = 0,
                   ngf: int = NGF, n_res: int = N_RES, img_size: int = IMG) -> ResnetGenerator:
    """Eval-mode generator with rho moved off its init values (0.9 / 0) and ILN gamma/beta
    off 1/0: with init values a rho or gamma mistake could be invisible."""
    with seeded(seed):
        gen = ResnetGenerator(ModelConfig(ngf=ngf, n_res=n_res, light=light, img_size=img_size))
        with torch.no_grad():
            for key, p in gen.named_parameters():
                if key.endswith(".rho"):
                    p.uniform_(0.0, 1.0)
                elif key.endswith(".gamma"):
                    p.uniform_(0.5, 1.5)
                elif key.endswith(".beta"):
                    p.normal_(0.0, 0.2)
    return gen.to(dtype).eval()


def make_discriminator(n_layers: int, dtype: torch.dtype = torch.float64, seed: int = 0,
                       converged: bool = True) -> Discriminator:
    """Eval-mode discriminator with u, v set by the reference power iteration.

    converged=True: 5 iterations from a random v, a realistic trained state. False: one
    half-step (u = W v / |W v| for random v), so sigma > 0 but any extra power iteration
    done by the module in eval mode would change sigma measurably.
    """
    with seeded(seed):
        dis = Discriminator(in_ch=3, ndf=NDF, n_layers=n_layers).to(dtype)
        sd = dis.state_dict()
        new = {}
        for p in sn_prefixes(sd):
            w = sd[f"{p}.weight_orig"]
            v = F.normalize(torch.randn(sd[f"{p}.weight_v"].shape, dtype=dtype), dim=0)
            u = F.normalize(w.reshape(w.shape[0], -1) @ v, dim=0)
            for _ in range(5 if converged else 0):
                u, v = ref_power_iteration(w, u, v)
            new[f"{p}.weight_u"], new[f"{p}.weight_v"] = u, v
        dis.load_state_dict({**sd, **new})
    return dis.eval()


def gen_input(dtype: torch.dtype = torch.float64, h: int = IMG, w: int = IMG,
              seed: int = 1) -> Tensor:
    """Batch of 2: a norm computed across the batch instead of per sample would show."""
    with seeded(seed):
        return (torch.rand(2, 3, h, w, dtype=torch.float64) * 2 - 1).to(dtype)


def run(module: nn.Module, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    with torch.no_grad():
        out, cam, heat = module(x)
    return out, cam, heat


@pytest.fixture(scope="module")
def light_gen() -> ResnetGenerator:
    return make_generator(light=True)


@pytest.fixture(scope="module")
def full_gen() -> ResnetGenerator:
    return make_generator(light=False)


# --------------------------------------------------------------------------- reference vs formulas


def _tiny(seed: int = 3, shape: tuple[int, ...] = (2, 3, 4, 5)) -> Tensor:
    with seeded(seed):
        return torch.randn(shape, dtype=torch.float64) * 2 + 0.5


def _loop_stats(values: list[float], unbiased: bool) -> tuple[float, float]:
    n = len(values)
    mean = sum(values) / n
    var = sum((v - mean) ** 2 for v in values) / (n - 1 if unbiased else n)
    return mean, var


def _loop_in_ln(x: Tensor, unbiased: bool) -> tuple[Tensor, Tensor]:
    """IN (per sample, channel over H,W) and LN (per sample over C,H,W) by explicit loops."""
    b, c, _, _ = x.shape
    x_in, x_ln = torch.empty_like(x), torch.empty_like(x)
    for i in range(b):
        m, v = _loop_stats(x[i].flatten().tolist(), unbiased)
        x_ln[i] = (x[i] - m) / math.sqrt(v + 1e-5)
        for j in range(c):
            m, v = _loop_stats(x[i, j].flatten().tolist(), unbiased)
            x_in[i, j] = (x[i, j] - m) / math.sqrt(v + 1e-5)
    return x_in, x_ln


def test_ref_instance_norm_is_biased_affine_free_eps_1e5() -> None:
    x = _tiny()
    expect, _ = _loop_in_ln(x, unbiased=False)
    assert rel_err(ref_instance_norm(x), expect) < 1e-12
    # torch's InstanceNorm2d (affine=False, no running stats) is the original's encoder norm.
    torch_in = nn.InstanceNorm2d(3, eps=1e-5, affine=False, track_running_stats=False)
    assert rel_err(ref_instance_norm(x), torch_in(x)) < 1e-12
    # N vs N-1 over 20 values moves the result by ~2.5%: the check above can tell them apart.
    assert rel_err(ref_instance_norm(x, unbiased=True), expect) > 1e-2


def test_ref_iln_uses_unbiased_variance() -> None:
    x = _tiny()
    rho = torch.tensor([0.2, 0.5, 0.9], dtype=torch.float64).reshape(1, 3, 1, 1)
    gamma = torch.tensor([1.5, 0.7, 1.1], dtype=torch.float64).reshape(1, 3, 1, 1)
    beta = torch.tensor([0.1, -0.3, 0.2], dtype=torch.float64).reshape(1, 3, 1, 1)
    x_in, x_ln = _loop_in_ln(x, unbiased=True)
    expect = (rho * x_in + (1 - rho) * x_ln) * gamma + beta
    assert rel_err(ref_iln(x, rho, gamma, beta), expect) < 1e-12
    biased = ref_iln(x, rho, gamma, beta, opts=RefOptions(iln_unbiased=False))
    assert rel_err(biased, expect) > 1e-2


def test_ref_rho_blends_in_then_ln() -> None:
    x = _tiny()
    ones = torch.ones(1, 3, 1, 1, dtype=torch.float64)
    x_in, x_ln = _loop_in_ln(x, unbiased=True)
    assert rel_err(ref_iln(x, ones, ones, 0 * ones), x_in) < 1e-12  # rho = 1: pure IN
    assert rel_err(ref_iln(x, 0 * ones, ones, 0 * ones), x_ln) < 1e-12  # rho = 0: pure LN
    assert rel_err(x_in, x_ln) > 1e-2  # the two ends really differ on this tensor


def test_ref_adailn_gamma_beta_used_as_is() -> None:
    x = _tiny()
    rho = torch.full((1, 3, 1, 1), 0.9, dtype=torch.float64)
    gamma = torch.tensor([[0.5, 2.0, -1.0], [1.5, 0.25, 3.0]], dtype=torch.float64)
    beta = torch.tensor([[0.1, 0.2, 0.3], [-0.1, -0.2, -0.3]], dtype=torch.float64)
    x_in, x_ln = _loop_in_ln(x, unbiased=True)
    blend = 0.9 * x_in + 0.1 * x_ln
    expect = blend * gamma[:, :, None, None] + beta[:, :, None, None]  # per sample, per channel
    assert rel_err(ref_adailn(x, rho, gamma, beta), expect) < 1e-12
    # gamma = 0 leaves exactly beta: the scale is gamma, not 1 + gamma.
    zero = ref_adailn(x, rho, torch.zeros_like(gamma), beta)
    assert torch.equal(zero, beta[:, :, None, None].expand_as(x))


def test_ref_sn_weight_formula_and_torch_eval_mode() -> None:
    with seeded(4):
        w = torch.randn(5, 3, 4, 4, dtype=torch.float64)
        u = F.normalize(torch.randn(5, dtype=torch.float64), dim=0)
        v = F.normalize(torch.randn(48, dtype=torch.float64), dim=0)
    sigma = sum(u[i].item() * sum(w[i].flatten()[j].item() * v[j].item() for j in range(48))
                for i in range(5))
    assert rel_err(ref_sn_weight(w, u, v), w / sigma) < 1e-12
    conv = nn.utils.spectral_norm(nn.Conv2d(3, 5, 4, bias=False).double())
    conv.load_state_dict({"weight_orig": w, "weight_u": u, "weight_v": v})
    conv.eval()
    x = _tiny(shape=(1, 3, 6, 6))
    assert rel_err(conv(x), F.conv2d(x, ref_sn_weight(w, u, v))) < 1e-12
    assert torch.equal(conv.weight_u, u)
    assert torch.equal(conv.weight_v, v)


def test_ref_power_iteration_matches_torch_train_mode() -> None:
    with seeded(5):
        w = torch.randn(6, 2, 3, 3, dtype=torch.float64)
        u = F.normalize(torch.randn(6, dtype=torch.float64), dim=0)
        v = F.normalize(torch.randn(18, dtype=torch.float64), dim=0)
    conv = nn.utils.spectral_norm(nn.Conv2d(2, 6, 3, bias=False).double())
    conv.load_state_dict({"weight_orig": w, "weight_u": u, "weight_v": v})
    conv.train()
    x = _tiny(shape=(1, 2, 5, 5))
    y = conv(x)
    u1, v1 = ref_power_iteration(w, u, v)
    assert rel_err(conv.weight_u, u1) < 1e-12
    assert rel_err(conv.weight_v, v1) < 1e-12
    assert rel_err(y, F.conv2d(x, ref_sn_weight(w, u1, v1))) < 1e-12


# --------------------------------------------------------------------------- modules vs reference


@pytest.mark.parametrize("light", [True, False], ids=["light", "full"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
def test_generator_matches_reference(light: bool, dtype: torch.dtype) -> None:
    gen = make_generator(light, dtype)
    x = gen_input(dtype)
    outs = run(gen, x)
    assert all(t.dtype == dtype for t in outs)
    sd = state(gen)
    if dtype == torch.float64:
        assert max_rel_err(outs, ref_generator(sd, x, n_res=N_RES, light=light)) <= F64_TOL
    else:
        assert max_rel_err(outs, ref_generator(sd, x, n_res=N_RES, light=light)) <= F32_TOL
        # Also against the float64 evaluation of the same float32 weights (ground truth).
        sd64 = {k: v.double() for k, v in sd.items()}
        ref64 = ref_generator(sd64, x.double(), n_res=N_RES, light=light)
        assert max_rel_err(outs, ref64) <= F32_TOL


@pytest.mark.parametrize("n_layers", [7, 5], ids=["global7", "local5"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
def test_discriminator_matches_reference(n_layers: int, dtype: torch.dtype) -> None:
    dis = make_discriminator(n_layers, dtype)
    size = DIS_SIZE[n_layers]
    x = gen_input(dtype, size, size)
    outs = run(dis, x)
    sd = state(dis)
    tol = F64_TOL if dtype == torch.float64 else F32_TOL
    assert max_rel_err(outs, ref_discriminator(sd, x, n_layers=n_layers)) <= tol
    if dtype == torch.float32:
        sd64 = {k: v.double() for k, v in sd.items()}
        ref64 = ref_discriminator(sd64, x.double(), n_layers=n_layers)
        assert max_rel_err(outs, ref64) <= F32_TOL


# One entry per fact of UGATIT_FORMAT.md that the generator comparison depends on:
# (test id, the mistake, variant it applies to).
GENERATOR_MISTAKES = [
    ("iln_adailn_biased_variance_light", RefOptions(iln_unbiased=False), True),
    ("iln_adailn_biased_variance_full", RefOptions(iln_unbiased=False), False),
    ("rho_blend_swapped", RefOptions(rho_swapped=True), True),
    ("adailn_one_plus_gamma", RefOptions(one_plus_gamma=True), True),
    ("encoder_in_unbiased_variance", RefOptions(encoder_in_unbiased=True), True),
    ("zero_padding", RefOptions(pad_mode="constant"), True),
    ("bilinear_upsampling", RefOptions(upsample_mode="bilinear"), True),
    ("light_gamma_beta_from_max_pool", RefOptions(light_pool="max"), True),
    ("full_gamma_beta_nhwc_flatten", RefOptions(flatten_nhwc=True), False),
    ("cam_logit_order_gmp_gap", RefOptions(cam_order_swapped=True), True),
    ("cam_features_order_gmp_gap", RefOptions(cam_features_swapped=True), True),
    ("encoder_relu_after_residual_add", RefOptions(relu_after_residual=True), True),
    ("heatmap_before_relu", RefOptions(heatmap_pre_relu=True), True),
    ("output_without_tanh", RefOptions(no_tanh=True), True),
]


@pytest.mark.parametrize(("mistake", "light"), [(m[1], m[2]) for m in GENERATOR_MISTAKES],
                         ids=[m[0] for m in GENERATOR_MISTAKES])
def test_generator_fact_is_pinned(mistake: RefOptions, light: bool,
                                  light_gen: ResnetGenerator, full_gen: ResnetGenerator) -> None:
    """The module matches the correct reference and NOT the reference with one fact broken."""
    gen = light_gen if light else full_gen
    x = gen_input()
    outs = run(gen, x)
    sd = state(gen)
    assert max_rel_err(outs, ref_generator(sd, x, n_res=N_RES, light=light)) <= F64_TOL
    wrong = ref_generator(sd, x, n_res=N_RES, light=light, opts=mistake)
    assert max_rel_err(outs, wrong) > MISTAKE_MIN


def test_full_flatten_order_is_nchw(full_gen: ResnetGenerator) -> None:
    """Spelled out on the gamma/beta path alone: NHWC order gives other gamma and beta."""
    x = gen_input()
    outs = run(full_gen, x)
    sd = state(full_gen)
    nchw = ref_generator(sd, x, n_res=N_RES, light=False)
    nhwc = ref_generator(sd, x, n_res=N_RES, light=False, opts=RefOptions(flatten_nhwc=True))
    assert max_rel_err(outs, nchw) <= F64_TOL
    # cam_logit and heatmap come before the flatten, so only the image may differ ...
    assert torch.equal(nchw[1], nhwc[1])
    assert torch.equal(nchw[2], nhwc[2])
    assert rel_err(outs[0], nhwc[0]) > MISTAKE_MIN


def test_dis_cam_reweighting_uses_weight_orig() -> None:
    dis = make_discriminator(5)
    x = gen_input(h=DIS_SIZE[5], w=DIS_SIZE[5])
    outs = run(dis, x)
    sd = state(dis)
    assert max_rel_err(outs, ref_discriminator(sd, x, n_layers=5)) <= F64_TOL
    wrong = ref_discriminator(sd, x, n_layers=5, opts=RefOptions(dis_reweight_normalised=True))
    assert rel_err(outs[0], wrong[0]) > MISTAKE_MIN
    # The logits themselves use the normalised weight: identical in both variants.
    assert torch.equal(wrong[1], ref_discriminator(sd, x, n_layers=5)[1])


@pytest.mark.parametrize("mistake", [RefOptions(pad_mode="constant"),
                                     RefOptions(cam_order_swapped=True),
                                     RefOptions(cam_features_swapped=True),
                                     RefOptions(dis_slope=0.01)],
                         ids=["zero_padding", "cam_logit_order_gmp_gap",
                              "cam_features_order_gmp_gap", "leaky_slope_torch_default"])
def test_discriminator_fact_is_pinned(mistake: RefOptions) -> None:
    dis = make_discriminator(7)
    x = gen_input(h=DIS_SIZE[7], w=DIS_SIZE[7])
    outs = run(dis, x)
    wrong = ref_discriminator(state(dis), x, n_layers=7, opts=mistake)
    assert max_rel_err(outs, wrong) > MISTAKE_MIN


# --------------------------------------------------------------------------- single facts


def test_module_norms_match_formulas(light_gen: ResnetGenerator) -> None:
    """The generator's ILN and adaILN layers (addressed by their checkpoint key prefixes)
    against the loop formulas: unbiased variance, rho*IN + (1-rho)*LN, gamma as-is."""
    c = 4 * NGF
    with seeded(6):
        x = torch.randn(2, c, 5, 6, dtype=torch.float64) * 1.5 + 0.3
        gamma = torch.randn(2, c, dtype=torch.float64)
        beta = torch.randn(2, c, dtype=torch.float64)
    x_in, x_ln = _loop_in_ln(x, unbiased=True)
    ada = light_gen.get_submodule("UpBlock1_1.norm1")
    rho = ada.rho.detach()
    expect = (rho * x_in + (1 - rho) * x_ln) * gamma[:, :, None, None] + beta[:, :, None, None]
    with torch.no_grad():
        assert rel_err(ada(x, gamma, beta), expect) < 1e-12

    iln = light_gen.get_submodule("UpBlock2.3")
    x2 = x[:, : 2 * NGF]
    x_in, x_ln = _loop_in_ln(x2, unbiased=True)
    r, g, b = (iln.get_parameter(n).detach() for n in ("rho", "gamma", "beta"))
    with torch.no_grad():
        assert rel_err(iln(x2), (r * x_in + (1 - r) * x_ln) * g + b) < 1e-12


def test_norm_epsilon_is_1e5(light_gen: ResnetGenerator) -> None:
    """eps 1e-5 in ILN, adaILN and the encoder's InstanceNorm. On an input whose variance
    is ~1e-5, eps 1e-6 or 1e-4 would move the normalised values by tens of percent."""
    c = 4 * NGF
    with seeded(7):
        x = torch.randn(2, c, 4, 4, dtype=torch.float64) * 3e-3
        gamma, beta = torch.ones(2, c, dtype=torch.float64), torch.zeros(2, c, dtype=torch.float64)
    ada = light_gen.get_submodule("UpBlock1_1.norm1")
    rho = ada.rho.detach()

    def formula(eps: float) -> Tensor:
        m_in, m_ln = x.mean((2, 3), keepdim=True), x.mean((1, 2, 3), keepdim=True)
        v_in, v_ln = x.var((2, 3), keepdim=True), x.var((1, 2, 3), keepdim=True)  # N-1
        return (rho * (x - m_in) / torch.sqrt(v_in + eps)
                + (1 - rho) * (x - m_ln) / torch.sqrt(v_ln + eps))

    with torch.no_grad():
        got = ada(x, gamma, beta)
    assert rel_err(got, formula(1e-5)) < 1e-12
    assert rel_err(got, formula(1e-6)) > 0.1 and rel_err(got, formula(1e-4)) > 0.1
    norms = [m for m in light_gen.DownBlock.modules() if isinstance(m, nn.InstanceNorm2d)]
    assert len(norms) == 3 + 2 * N_RES
    for m in norms:  # affine-free, no running statistics, eps 1e-5
        assert (m.eps, m.affine, m.track_running_stats) == (1e-5, False, False)
    x_enc = x[:, : norms[0].num_features]
    with torch.no_grad():
        assert rel_err(norms[0](x_enc), ref_instance_norm(x_enc, eps=1e-5)) < 1e-12
    assert rel_err(ref_instance_norm(x, eps=1e-5), ref_instance_norm(x, eps=1e-6)) > 0.1


@pytest.mark.parametrize("light", [True, False], ids=["light", "full"])
def test_float32_invariant_to_batch_and_channels_last(light: bool) -> None:
    """UGATIT_FORMAT.md: batch size, thread count or channels_last move float32 outputs by
    ~2e-5 relative at most (per-sample norms; the full variant's NCHW flatten must use
    reshape, which a channels_last tensor needs). Held to F32_TOL."""
    gen = make_generator(light=light, dtype=torch.float32)
    x = gen_input(torch.float32)
    base = run(gen, x)
    singles = [run(gen, x[i : i + 1]) for i in range(x.shape[0])]
    for k in range(3):
        assert rel_err(torch.cat([s[k] for s in singles]), base[k]) <= F32_TOL
    gen_cl = make_generator(light=light, dtype=torch.float32).to(memory_format=torch.channels_last)
    outs = run(gen_cl, x.contiguous(memory_format=torch.channels_last))
    assert max_rel_err(outs, base) <= F32_TOL


def test_light_generator_smallest_input_is_8px(light_gen: ResnetGenerator) -> None:
    """The light variant runs on any size divisible by 4, down to 8 px (a 2 x 2
    bottleneck); 4 px is refused."""
    x = gen_input(h=8, w=12)
    outs = run(light_gen, x)
    assert outs[0].shape == (2, 3, 8, 12) and outs[2].shape == (2, 1, 2, 3)
    assert max_rel_err(outs, ref_generator(state(light_gen), x, n_res=N_RES, light=True)) <= F64_TOL
    with pytest.raises(ValueError, match=">= 8"):
        run(light_gen, gen_input(h=4, w=8))


def test_global_discriminator_needs_96px() -> None:
    """Five stride-2 convs leave 3 x 3 at 96 px, and the two stride-1 4x4 convs (pad 1)
    each take one pixel: 96 px gives a 1 x 1 patch map, 95 px nothing."""
    with seeded(0):
        dis = Discriminator(in_ch=3, ndf=4, n_layers=7).eval()
    out, cam, heat = run(dis, torch.rand(1, 3, 96, 96))
    assert out.shape == (1, 1, 1, 1) and cam.shape == (1, 2) and heat.shape == (1, 1, 2, 2)
    with pytest.raises(RuntimeError):
        run(dis, torch.rand(1, 3, 95, 95))


def test_heatmap_is_quarter_size_channel_sum_non_negative(light_gen: ResnetGenerator) -> None:
    x = gen_input(h=36, w=44)
    _, cam, heat = run(light_gen, x)
    assert heat.shape == (2, 1, 9, 11)
    assert cam.shape == (2, 2)
    assert heat.min() >= 0  # sum of post-ReLU activations
    assert heat.max() > 0
    ref = ref_generator(state(light_gen), x, n_res=N_RES, light=True)
    assert rel_err(heat, ref[2]) <= F64_TOL
    # Not normalised: neither to a max of 1 nor to a unit sum.
    assert not math.isclose(heat.amax().item(), 1.0, rel_tol=1e-3)
    assert not torch.allclose(heat.sum(dim=(2, 3)), torch.ones(2, 1, dtype=heat.dtype))


def test_output_is_tanh_bounded() -> None:
    """Scaled-up final conv drives the pre-activation far past +-1: outputs saturate near,
    never beyond, +-1 and still match tanh of the reference (no clamp, no rescale)."""
    gen = make_generator(light=True)
    with torch.no_grad():
        gen.get_parameter("UpBlock2.11.weight").mul_(50.0)
    x = gen_input()
    outs = run(gen, x)
    assert outs[0].abs().max() <= 1.0
    assert outs[0].abs().max() > 0.999
    assert outs[0].min() < -0.999 < 0.999 < outs[0].max()
    assert max_rel_err(outs, ref_generator(state(gen), x, n_res=N_RES, light=True)) <= F64_TOL


def test_light_generator_runs_on_non_square_size(light_gen: ResnetGenerator) -> None:
    x = gen_input(h=36, w=44)
    outs = run(light_gen, x)
    assert outs[0].shape == (2, 3, 36, 44)
    assert max_rel_err(outs, ref_generator(state(light_gen), x, n_res=N_RES, light=True)) <= F64_TOL


@pytest.mark.parametrize(("h", "w"), [(36, 44), (64, 64), (28, 28)])
def test_full_generator_refuses_other_sizes(full_gen: ResnetGenerator, h: int, w: int) -> None:
    """Its FC head is sized for img_size: the error must name the size it accepts."""
    with pytest.raises(ValueError, match=f"{IMG}x{IMG}"):
        run(full_gen, gen_input(h=h, w=w))


def test_light_generator_refuses_size_not_divisible_by_4(light_gen: ResnetGenerator) -> None:
    """34 px would come back as 36 px (17 -> 9 -> 36): refused rather than silently resized."""
    with pytest.raises(ValueError, match="divisible by 4"):
        run(light_gen, gen_input(h=34, w=44))


def test_init_values() -> None:
    with seeded(0):
        gen = ResnetGenerator(ModelConfig(ngf=NGF, n_res=N_RES, light=True, img_size=IMG))
    sd = gen.state_dict()
    for i in range(1, N_RES + 1):
        for n in (1, 2):
            rho = sd[f"UpBlock1_{i}.norm{n}.rho"]
            assert rho.shape == (1, 4 * NGF, 1, 1)
            assert torch.all(rho == torch.tensor(0.9, dtype=rho.dtype))  # float32(0.9) exactly
    for k in ("UpBlock2.3", "UpBlock2.8"):
        assert torch.all(sd[f"{k}.rho"] == 0)
        assert torch.all(sd[f"{k}.gamma"] == 1)
        assert torch.all(sd[f"{k}.beta"] == 0)


@pytest.mark.parametrize("light", [True, False], ids=["light", "full"])
def test_generator_has_no_bias_except_conv1x1(light: bool) -> None:
    gen = ResnetGenerator(ModelConfig(ngf=4, n_res=1, light=light, img_size=16))
    assert [k for k in gen.state_dict() if k.endswith("bias")] == ["conv1x1.bias"]
    for name, m in gen.named_modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)) and name != "conv1x1":
            assert m.bias is None, f"{name} has a bias"
    with torch.device("meta"):  # and the discriminator's last conv has none either
        dis = Discriminator(in_ch=3, ndf=4, n_layers=5)
    assert "conv.bias" not in dis.state_dict()


# --------------------------------------------------------------------------- spectral norm state


def _uv(module: nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()
            if k.endswith(("weight_u", "weight_v"))}


def test_sn_eval_uses_stored_uv_and_keeps_them() -> None:
    """Non-converged u, v: any power iteration done in eval mode would change sigma."""
    dis = make_discriminator(5, converged=False)
    before = _uv(dis)
    assert len(before) == 2 * 7  # 4 model convs + gap_fc + gmp_fc + conv, u and v each ...
    x = gen_input(h=DIS_SIZE[5], w=DIS_SIZE[5])
    outs = run(dis, x)
    outs_again = run(dis, x)
    after = _uv(dis)
    assert all(torch.equal(before[k], after[k]) for k in before)
    sd = state(dis)
    assert max_rel_err(outs, ref_discriminator(sd, x, n_layers=5)) <= F64_TOL
    assert all(torch.equal(a, b) for a, b in zip(outs, outs_again, strict=True))
    # ... and the stored state really is off the fixed point, so the check above has teeth.
    moved = {p: ref_power_iteration(sd[f"{p}.weight_orig"], sd[f"{p}.weight_u"],
                                    sd[f"{p}.weight_v"]) for p in sn_prefixes(sd)}
    sd_moved = {**sd, **{f"{p}.weight_u": uv[0] for p, uv in moved.items()},
                **{f"{p}.weight_v": uv[1] for p, uv in moved.items()}}
    assert max_rel_err(outs, ref_discriminator(sd_moved, x, n_layers=5)) > MISTAKE_MIN


def test_sn_train_mode_runs_one_power_iteration_per_forward() -> None:
    dis = make_discriminator(5, converged=False)
    sd = state(dis)
    x = gen_input(h=DIS_SIZE[5], w=DIS_SIZE[5])
    dis.train()
    for _ in range(2):  # each forward: exactly one iteration from the current u, v
        expect = dict(sd)
        for p in sn_prefixes(sd):
            u, v = ref_power_iteration(sd[f"{p}.weight_orig"], sd[f"{p}.weight_u"],
                                       sd[f"{p}.weight_v"])
            expect[f"{p}.weight_u"], expect[f"{p}.weight_v"] = u, v
        outs = run(dis, x)
        got = state(dis)
        for k in _uv(dis):
            assert rel_err(got[k], expect[k]) <= F64_TOL, k
        # The train-mode output already uses the updated u, v.
        assert max_rel_err(outs, ref_discriminator(expect, x, n_layers=5)) <= F64_TOL
        sd = got
    # Back in eval mode the updated vectors are used as stored.
    dis.eval()
    assert max_rel_err(run(dis, x), ref_discriminator(sd, x, n_layers=5)) <= F64_TOL


def test_default_options_are_the_published_behaviour() -> None:
    """Guards the reference itself: a changed default would silently retarget every test."""
    assert RefOptions(
        iln_unbiased=True, encoder_in_unbiased=False, rho_swapped=False, one_plus_gamma=False,
        pad_mode="reflect", upsample_mode="nearest", flatten_nhwc=False, light_pool="mean",
        cam_order_swapped=False, cam_features_swapped=False, relu_after_residual=False,
        dis_slope=0.2, heatmap_pre_relu=False, no_tanh=False,
        dis_reweight_normalised=False) == DEFAULT

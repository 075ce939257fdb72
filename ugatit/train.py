"""U-GAT-IT training, the original recipe (Kim et al. 2020) with the fixes users asked for.

Read :func:`train` top to bottom: options -> data -> six networks and two Adam optimisers
-> (resume) -> the loop (lr schedule, :func:`train_step`, NaN guard, CSV, sample sheet,
checkpoint). Everything else here is a small helper of it.

The recipe (defaults of :class:`TrainConfig`, documented in configs/train.yaml):
- LSGAN discriminators (global 7 layers, local 5) on both domains with CAM logits;
  generator loss = adv 1 * LSGAN + cycle 10 * L1 + identity 10 * L1 + cam 1000 * BCE;
  Adam(lr 1e-4, betas (0.5, 0.999), weight_decay 1e-4), one optimiser for both
  generators, one for the four discriminators; 1,000,000 iterations of batch 1; the lr is
  constant for the first half, then falls linearly to 0; after each G update every
  AdaILN/ILN ``rho`` is clipped to [0, 1].
Fixes (same math, less waste, no crashes):
- The D step judges DETACHED fakes (the original backpropagated D's loss through both
  generators and threw the gradients away: same D gradients, one backward less), and the
  G step reuses those translations (the original recomputed them with unchanged
  generator weights: same values, two forwards less); discriminator parameters are frozen
  during the G step (their gradients were computed and then zeroed unused).
- Sample sheets run under ``no_grad`` and ``eval()`` (the original ran out of memory).
- A DataLoader with workers and an infinite sampler; the sample at step k is a function
  of (seed, rank, k) (see :mod:`ugatit.data`), so resume is exact.
- A non-finite loss stops training with :class:`TrainingError` naming the step and the
  last good checkpoint; weights with NaN are never saved.
- Channel counts come from the data (3 for PNG tiles, the band count of multiband TIFF
  tiles: e.g. 4 optical bands in, VV and VH out). When the domains differ in channels
  the identity term ``genA2B(B) ~ B`` cannot be formed (genA2B takes 4 bands, B has 2):
  it is skipped, and so is the identity half of the CAM term (the "not source" logit of
  a generator on its own domain); the options printout says so. Equal channel counts
  keep the original recipe bit for bit.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import random
import re
import time
from collections.abc import Iterator, Mapping
from contextlib import nullcontext
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.utils.spectral_norm import SpectralNorm
from torch.utils.data import DataLoader

from ugatit.checkpoint import SEED_META_KEY, TRAIN_STATE_KEY, first_non_finite, save_checkpoint
from ugatit.config import ModelConfig
from ugatit.data import (
    DEFAULT_MIN_STD,
    StreamSampler,
    UnpairedDataset,
    channels_of,
    find_pairs,
    fixed_samples,
    index_domain,
    list_images,
)
from ugatit.device import resolve_device, set_tf32
from ugatit.errors import DeviceError, TrainingError
from ugatit.io import atomic_write_text, fault_point, no_space_reason, remove_stale_temps_in
from ugatit.losses import adversarial_term, cam_term, discriminator_term, l1
from ugatit.networks import DISCRIMINATORS, GENERATORS, NETWORK_NAMES, build_network
from ugatit.sheets import LossLog, loss_curve, sample_sheet

log = logging.getLogger(__name__)

CHECKPOINT_RE = re.compile(r"^params_(\d{7,})\.pt$")
#: Loss terms logged to losses.csv, in order (D_* / G_* are unweighted sums; see losses.py).
LOSS_TERMS = ("D_loss", "G_loss", "D_GA", "D_LA", "D_GB", "D_LB", "G_adv_A", "G_adv_B",
              "G_cycle_A", "G_cycle_B", "G_identity_A", "G_identity_B", "G_cam_A", "G_cam_B")
#: EO->SAR outputs of the fixed samples with a std below this are "blank" (collapse).
COLLAPSE_STD = 1e-3
#: Largest full-variant gamma/beta input layer we build (parameters): the original full
#: model at 256 px / ngf 64, 268 M (1 GiB per generator, 4 GiB with Adam's state). The
#: layer grows with img_size^2 * ngf^2: 512 px would need 16 GiB per generator.
MAX_FULL_FC_PARAMS = 256 * (256 // 4) ** 2 * 256


# ----------------------------------------------------------------------------------------
# Options


@dataclass(frozen=True)
class TrainConfig:
    """Every training option and its default: the one home of defaults.

    configs/train.yaml documents each key; the CLI merges YAML and flags through
    :meth:`from_dict` (flags win), and the instance validates itself.
    """

    dataset: str = "dataset"  # folder with trainA (EO), trainB (SAR), testA, testB
    out: str = "runs/train"  # output folder: checkpoints/, samples/, losses.csv, ...
    # --- model (ugatit.ModelConfig) ---
    light: bool = True  # light (fully convolutional; the original defaults to full); False = full
    ngf: int = 64  # generator base width (the original's --ch)
    ndf: int | None = None  # discriminator width; None = ngf (the original used one --ch)
    n_res: int = 4  # residual blocks (the original's --n_res)
    n_dis_global: int = 7  # layers of disGA/disGB (original: 7)
    n_dis_local: int = 5  # layers of disLA/disLB (original: 5)
    img_size: int = 256  # training crop size (original: 256)
    # --- recipe ---
    iterations: int = 1_000_000  # training steps (original: 1,000,000)
    batch_size: int = 1  # images per domain per step and per process (original: 1)
    lr: float = 1e-4  # Adam learning rate (original: 0.0001)
    beta1: float = 0.5  # Adam betas (original: (0.5, 0.999))
    beta2: float = 0.999
    weight_decay: float = 1e-4  # Adam weight decay (original: 0.0001)
    decay: bool = True  # linear lr decay to 0 over the second half (original: decay_flag)
    adv_weight: float = 1.0  # GAN loss weight (original: 1)
    cycle_weight: float = 10.0  # cycle-consistency L1 weight (original: 10)
    identity_weight: float = 10.0  # identity L1 weight (original: 10)
    cam_weight: float = 1000.0  # generator CAM BCE weight (original: 1000)
    # L1 in dB between A->B of a co-registered pair (same file name in trainA and trainB)
    # and its real SAR; 0 = the original recipe, bit for bit (not in the original)
    paired_weight: float = 0.0
    # --- run ---
    device: str = "auto"  # auto (cuda if available, else cpu), cpu, cuda, cuda:N
    precision: str = "fp32"  # fp32 (reference) or bf16 (torch.autocast)
    tf32: bool = False  # allow TF32 on CUDA (faster, not float32-exact)
    seed: int = 0  # weights, sample order and augmentation
    workers: int = 4  # DataLoader worker processes (0: load in the main process)
    # torch intra-op threads per process; 0 = torch's default (one per core). On a shared
    # or loaded CPU, 1 is the fast choice (benchmarks/bench_train.py --cpu-options).
    threads: int = 0
    save_every: int = 100_000  # checkpoint period in steps (original save_freq: 100,000)
    sample_every: int = 1_000  # sample sheet + loss curve period (original print_freq: 1,000)
    log_every: int = 10  # losses.csv row and progress-bar period
    keep: int = 3  # checkpoints kept (older ones are deleted); 0 keeps all
    n_samples: int = 4  # fixed train rows and test rows of the sample sheet
    min_std: float = DEFAULT_MIN_STD  # near-constant images/crops skipped ([-1, 1] std)
    resume: bool = False  # continue from the latest OUT/checkpoints/params_*.pt

    def __post_init__(self) -> None:
        positive = ("ngf", "n_res", "iterations", "batch_size", "save_every", "sample_every",
                    "log_every")
        bad = [f"{n}={getattr(self, n)}" for n in positive if getattr(self, n) < 1]
        bad += [f"{n}={getattr(self, n)}" for n in ("workers", "threads", "keep", "n_samples",
                                                      "lr",
                                                      "weight_decay", "min_std",
                                                      "paired_weight")
                if getattr(self, n) < 0]
        if self.ndf is not None and self.ndf < 1:
            bad.append(f"ndf={self.ndf}")
        if bad:
            raise TrainingError(f"invalid options: {', '.join(bad)} (must be positive)")
        if self.precision not in ("fp32", "bf16"):
            raise TrainingError(f"precision {self.precision!r}: use fp32 or bf16")
        if self.img_size % 4:
            raise TrainingError(f"img_size {self.img_size} is not a multiple of 4 (the "
                                f"generator downsamples twice by 2); try "
                                f"{self.img_size // 4 * 4 or 4}")
        self._check_sizes()

    def _check_sizes(self) -> None:
        """Discriminators need enough pixels; the full variant's MLP grows with size^2."""
        for layers, name in ((self.n_dis_global, "global"), (self.n_dis_local, "local")):
            if dis_output_size(self.img_size, layers) < 1:
                need = next(s for s in range(4, 4096, 4) if dis_output_size(s, layers) >= 1)
                raise TrainingError(
                    f"img_size {self.img_size} is too small for the {name} discriminator "
                    f"({layers} layers): it needs >= {need} px; raise --img-size or lower "
                    f"--n-dis-{name}")
        if not self.light:
            dim = 4 * self.ngf
            fc = dim * (self.img_size // 4) ** 2 * dim
            if fc > MAX_FULL_FC_PARAMS:
                raise TrainingError(
                    f"--full with img_size {self.img_size} and ngf {self.ngf} needs a "
                    f"{fc / 1e9:.1f} G-parameter gamma/beta layer per generator (the full "
                    f"variant flattens the {self.img_size // 4}^2 bottleneck; the original "
                    f"full model at 256 px / ngf 64 has 0.27 G); use --light, or a smaller "
                    f"--img-size or --ngf")

    @property
    def model(self) -> ModelConfig:
        return ModelConfig(ngf=self.ngf, n_res=self.n_res, light=self.light,
                           img_size=self.img_size, ndf=self.ndf or self.ngf,
                           n_dis_global=self.n_dis_global, n_dis_local=self.n_dis_local)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TrainConfig:
        """Build from YAML/flags; unknown keys are an error (a typo must not be ignored)."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise TrainingError(f"unknown training options {unknown}; known: {sorted(names)}")
        return cls(**{k: _coerce(k, v) for k, v in d.items()})


def _coerce(name: str, value: Any) -> Any:
    """YAML 1.1 reads ``1e-4`` as a string and ``1`` as an int: give each option the type
    of its default, or say which option is wrong."""
    default = getattr(TrainConfig, name)
    kind = int if name == "ndf" else type(default)  # ndf: int or None (= ngf)
    if value is None or (isinstance(value, kind) and not isinstance(value, bool)) \
            or kind is bool and isinstance(value, bool):
        return value
    if kind is float and isinstance(value, (int, str)) and not isinstance(value, bool):
        try:
            return float(value)
        except ValueError:
            pass
    if kind is int and isinstance(value, float) and value.is_integer():
        return int(value)
    raise TrainingError(f"option {name}: {value!r} is not a {kind.__name__}")


def dis_output_size(size: int, n_layers: int) -> int:
    """Side of a Discriminator's patch logits for a size x size input (0: too small).

    n_layers - 2 stride-2 convs, one stride-1 conv and the output conv, all 4x4 with
    reflection padding 1 (which needs an input of at least 2 px).
    """
    for _ in range(n_layers - 2):
        if size < 2:
            return 0
        size = (size + 2 - 4) // 2 + 1
    for _ in range(2):
        if size < 2:
            return 0
        size -= 1
    return size


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Learning rate of step ``step`` (1-based): constant, then linear to 0 over the second
    half. The original subtracted lr / (iterations // 2) at every step after the half; this
    closed form gives the same values without state to restore on resume."""
    half = cfg.iterations // 2
    if not cfg.decay or step <= half or half == 0:
        return cfg.lr
    return max(cfg.lr - (step - half) * cfg.lr / half, 0.0)


def set_lr(optimizers: tuple[torch.optim.Optimizer, ...], lr: float) -> float:
    for opt in optimizers:
        for group in opt.param_groups:
            group["lr"] = lr
    return lr


# ----------------------------------------------------------------------------------------
# Processes and devices


@dataclass(frozen=True)
class Dist:
    """This process's place in a data-parallel run (rank 0 of 1 without torchrun)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(cfg: TrainConfig) -> tuple[Dist, torch.device]:
    """Join the torchrun process group if there is one; pick this process's device.

    gloo on CPU, NCCL on CUDA; under torchrun each process takes cuda:LOCAL_RANK.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    name = cfg.device
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = resolve_device(name)
    except DeviceError as exc:
        raise TrainingError(str(exc)) from exc
    if world <= 1:
        return Dist(), device
    d = Dist(rank=int(os.environ["RANK"]), world=world,
             local_rank=int(os.environ.get("LOCAL_RANK", "0")))
    if device.type == "cuda":
        device = torch.device("cuda", d.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return d, device


def autocast(cfg: TrainConfig, device: torch.device) -> Any:
    """bf16 autocast on the device (CUDA or CPU) for --precision bf16, else nothing."""
    if cfg.precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return nullcontext()


# ----------------------------------------------------------------------------------------
# Networks, optimisers, one step


def build_networks(model: ModelConfig, seed: int, device: torch.device) -> dict[str, nn.Module]:
    """The six networks, in train mode, initialised (PyTorch defaults) from ``seed``; the
    discriminators' spectral norms computed in float32 under any autocast."""
    torch.manual_seed(seed)
    nets = {n: build_network(n, model).to(device).train() for n in NETWORK_NAMES}
    for name in DISCRIMINATORS:
        spectral_norm_in_fp32(nets[name])
    return nets


class _Fp32SpectralNorm:
    """A SpectralNorm forward pre-hook run with autocast off.

    Why: on CUDA, bf16/fp16 autocast runs ``torch.mv`` in reduced precision, so the power
    iteration (u, v) and sigma of every spectral-normalised layer would be estimated in
    bf16 (8 bits of mantissa) and the Lipschitz constraint would drift; on CPU autocast
    leaves ``mv`` alone, which is why CPU runs never showed it. The weights and u/v stay
    float32; only the convolution itself then runs in bf16, as autocast intends.
    """

    def __init__(self, hook: SpectralNorm) -> None:
        self.hook = hook

    def __call__(self, module: nn.Module, inputs: Any) -> None:
        device_type = inputs[0].device.type if inputs and isinstance(inputs[0], Tensor) \
            else "cpu"
        with torch.autocast(device_type=device_type, enabled=False):
            self.hook(module, inputs)


def spectral_norm_in_fp32(net: nn.Module) -> None:
    """Wrap every spectral-norm hook of ``net`` in :class:`_Fp32SpectralNorm` (in place;
    state_dict keys and values are unchanged)."""
    for m in net.modules():
        for key, hook in list(m._forward_pre_hooks.items()):
            if isinstance(hook, SpectralNorm):
                m._forward_pre_hooks[key] = _Fp32SpectralNorm(hook)


def make_optimizers(nets: Mapping[str, nn.Module], cfg: TrainConfig
                    ) -> tuple[torch.optim.Adam, torch.optim.Adam]:
    """(G_optim over both generators, D_optim over the four discriminators).

    On CUDA the fused Adam kernel updates all parameters of an optimiser in a few launches
    instead of several per parameter (the step is launch-bound at batch 1); on CPU the
    default implementation stays, the reference that is bit-identical to the original.
    """
    def adam(names: tuple[str, ...]) -> torch.optim.Adam:
        params = [p for n in names for p in nets[n].parameters()]
        fused = params[0].device.type == "cuda"
        return torch.optim.Adam(params, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2),
                                weight_decay=cfg.weight_decay, fused=fused or None)
    return adam(GENERATORS), adam(DISCRIMINATORS)


def average_gradients(params: list[nn.Parameter], world: int) -> None:
    """All-reduce (mean) the gradients of ``params`` across processes, in one flat buffer.

    Why not DistributedDataParallel: U-GAT-IT calls each generator three times per step
    (translation, cycle, identity) and each discriminator on real and fake batches. DDP's
    reducer expects one forward per backward; it needs find_unused_parameters or
    static_graph tricks for that, re-broadcasts buffers at every forward (the spectral-norm
    u/v vectors, which change at each call), and the translations shared by the D and G
    steps would be reduced at the wrong backward. Averaging gradients once after each
    backward is the same math, explicit, and keeps the networks plain modules whose
    state_dict keys match the seed format.
    """
    grads = [p.grad for p in params if p.grad is not None]
    if world <= 1 or not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= world
    offset = 0
    for g in grads:
        g.copy_(flat[offset:offset + g.numel()].view_as(g))
        offset += g.numel()


def clip_rho(generators: list[nn.Module]) -> None:
    """The original's RhoClipper(0, 1) on every AdaILN/ILN ``rho`` of the generators."""
    with torch.no_grad():
        for g in generators:
            for name, p in g.named_parameters():
                if name.endswith("rho"):
                    p.clamp_(0.0, 1.0)


def train_step(nets: Mapping[str, nn.Module], opt_g: torch.optim.Optimizer,
               opt_d: torch.optim.Optimizer, real_a: Tensor, real_b: Tensor,
               cfg: TrainConfig, world: int = 1,
               pair: tuple[Tensor, Tensor] | None = None,
               db_per_unit: float | Tensor = 1.0) -> dict[str, Tensor]:
    """One U-GAT-IT iteration: a discriminator update, then a generator update.

    ``pair`` (EO, SAR) of co-registered crops adds ``cfg.paired_weight`` x the L1 between
    genA2B(EO) and the SAR, in dB (``db_per_unit``: dB per unit of the [-1, 1] tile scale,
    half the dataset's dB range) to the generator loss; the discriminators never see it.
    Returns the loss terms (0-d float32 tensors, not synchronised: callers ``.item()``
    them only when logging).
    """
    g_a2b, g_b2a = nets["genA2B"], nets["genB2A"]
    dis = {n: nets[n] for n in DISCRIMINATORS}
    amp = autocast(cfg, real_a.device)
    out: dict[str, Tensor] = {}

    # The translations A->B and B->A, WITH their graph: the D step judges them detached,
    # then the G step reuses them. The original translated twice (once for D, once for G)
    # with the same generator weights (only D is updated in between): the same values,
    # two generator forwards and a useless backward through them less.
    with amp:
        fake_a2b, a2b_cam, _ = g_a2b(real_a)
        fake_b2a, b2a_cam, _ = g_b2a(real_b)

    # --- D step (on detached fakes: identical D gradients, see module doc)
    opt_d.zero_grad(set_to_none=True)
    with amp:
        for name, real, fake in (("GA", real_a, fake_b2a), ("LA", real_a, fake_b2a),
                                 ("GB", real_b, fake_a2b), ("LB", real_b, fake_a2b)):
            out[f"D_{name}"] = discriminator_term(dis[f"dis{name}"], real, fake.detach())
    d_loss = cfg.adv_weight * (out["D_GA"] + out["D_LA"] + out["D_GB"] + out["D_LB"])
    d_loss.backward()
    average_gradients([p for d in dis.values() for p in d.parameters()], world)
    opt_d.step()

    # --- G step (discriminators frozen: their gradients would be zeroed unused anyway)
    opt_g.zero_grad(set_to_none=True)
    for d in dis.values():
        d.requires_grad_(False)
    try:
        with amp:
            g_loss = _generator_losses(g_a2b, g_b2a, dis, real_a, real_b, cfg, out,
                                       (fake_a2b, a2b_cam, fake_b2a, b2a_cam))
            if pair is not None and cfg.paired_weight > 0:
                out["G_paired"] = paired_term(g_a2b, *pair, db_per_unit)
                g_loss = g_loss + cfg.paired_weight * out["G_paired"]
        g_loss.backward()
    finally:
        for d in dis.values():
            d.requires_grad_(True)
    average_gradients([p for g in (g_a2b, g_b2a) for p in g.parameters()], world)
    opt_g.step()
    clip_rho([g_a2b, g_b2a])

    out["D_loss"] = d_loss.detach()
    out["G_loss"] = g_loss.detach()
    return {k: v.detach().float() for k, v in out.items()}


def paired_term(g_a2b: nn.Module, eo: Tensor, sar: Tensor,
                db_per_unit: float | Tensor = 1.0) -> Tensor:
    """L1 between the translation of co-registered EO crops and their real SAR, in dB:
    per polarisation (channel) |fake - real| in the [-1, 1] tile scale times that
    polarisation's dB per unit (``db_per_unit``: a number, or a [C] tensor when VV and
    VH were cut on different dB ranges), averaged over pixels and polarisations."""
    fake, _, _ = g_a2b(eo)
    err = (fake.float() - sar.float()).abs().mean(dim=(0, 2, 3))  # [C]
    return (err * db_per_unit).mean()


def _generator_losses(g_a2b: nn.Module, g_b2a: nn.Module, dis: Mapping[str, nn.Module],
                      real_a: Tensor, real_b: Tensor, cfg: TrainConfig,
                      out: dict[str, Tensor],
                      translated: tuple[Tensor, Tensor, Tensor, Tensor] | None = None
                      ) -> Tensor:
    """The original's G_loss_A + G_loss_B; fills the unweighted terms into ``out``.

    ``translated``: (fake_A2B, its CAM logit, fake_B2A, its CAM logit) already computed
    with their graph by the caller, or None to translate here (as the original did).
    """
    if translated is None:
        fake_a2b, a2b_cam, _ = g_a2b(real_a)
        fake_b2a, b2a_cam, _ = g_b2a(real_b)
    else:
        fake_a2b, a2b_cam, fake_b2a, b2a_cam = translated
    fake_a2b2a = g_b2a(fake_a2b)[0]
    fake_b2a2b = g_a2b(fake_b2a)[0]
    identity = real_a.shape[1] == real_b.shape[1]  # else: no identity (module doc)
    if identity:
        fake_a2a, a2a_cam, _ = g_b2a(real_a)
        fake_b2b, b2b_cam, _ = g_a2b(real_b)

    out["G_adv_A"] = adversarial_term(dis["disGA"], fake_b2a) \
        + adversarial_term(dis["disLA"], fake_b2a)
    out["G_adv_B"] = adversarial_term(dis["disGB"], fake_a2b) \
        + adversarial_term(dis["disLB"], fake_a2b)
    out["G_cycle_A"] = l1(fake_a2b2a, real_a)
    out["G_cycle_B"] = l1(fake_b2a2b, real_b)
    if identity:
        out["G_identity_A"] = l1(fake_a2a, real_a)
        out["G_identity_B"] = l1(fake_b2b, real_b)
        out["G_cam_A"] = cam_term(b2a_cam, a2a_cam)
        out["G_cam_B"] = cam_term(a2b_cam, b2b_cam)
    else:  # logged as 0: losses.csv keeps its columns
        out["G_identity_A"] = out["G_identity_B"] = torch.zeros((), device=real_a.device)
        out["G_cam_A"] = cam_term(b2a_cam, None)
        out["G_cam_B"] = cam_term(a2b_cam, None)
    total = 0.0
    for side in ("A", "B"):
        total = total + cfg.adv_weight * out[f"G_adv_{side}"] \
            + cfg.cycle_weight * out[f"G_cycle_{side}"] \
            + cfg.identity_weight * out[f"G_identity_{side}"] \
            + cfg.cam_weight * out[f"G_cam_{side}"]
    return total  # type: ignore[return-value]


# ----------------------------------------------------------------------------------------
# Checkpoints and RNG state


def list_checkpoints(out: Path) -> list[tuple[int, Path]]:
    """(step, path) of OUT/checkpoints/params_*.pt, oldest first."""
    folder = out / "checkpoints"
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := CHECKPOINT_RE.match(p.name))]
    return sorted(found)


def checkpoint_path(out: Path, step: int) -> Path:
    return out / "checkpoints" / f"params_{step:07d}.pt"


def rng_state() -> dict[str, Any]:
    """Every RNG's state as tensors, numbers and lists (torch.load weights_only-safe)."""
    version, mt, gauss = random.getstate()
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "python": [version, list(mt), gauss],
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)),
                  int(np_state[2]), int(np_state[3]), float(np_state[4])],
    }


def set_rng_state(state: Mapping[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(list(state["cuda"])[:torch.cuda.device_count()])
    version, mt, gauss = state["python"]
    random.setstate((version, tuple(mt), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))


def all_finite(nets: Mapping[str, nn.Module]) -> bool:
    """Every weight finite (one host synchronisation for all parameters)."""
    flags = [torch.isfinite(p).all() for m in nets.values() for p in m.parameters()]
    return bool(torch.stack(flags).all())


def save_training_checkpoint(out: Path, step: int, nets: Mapping[str, nn.Module],
                             opt_g: torch.optim.Optimizer, opt_d: torch.optim.Optimizer,
                             cfg: TrainConfig, radiometry: Any,
                             model: ModelConfig | None = None) -> Path:
    """OUT/checkpoints/params_{step:07d}.pt, seed format + metadata + training state,
    written atomically; then prune to the last ``keep``."""
    if not all_finite(nets):
        raise TrainingError(f"step {step}: non-finite weights; not saving them. "
                            f"{_last_good(out)}")
    path = checkpoint_path(out, step)
    extra = {"train": cfg.to_dict(), "step": step, "dataset": Path(cfg.dataset).name}
    if radiometry is not None:
        extra["radiometry"] = radiometry
    state = {"step": step, "optim_G": opt_g.state_dict(), "optim_D": opt_d.state_dict(),
             "rng": rng_state()}
    try:
        save_checkpoint(path, nets, model or cfg.model, fmt="seed", extra=extra,
                        train_state=state)
    except (RuntimeError, OSError) as exc:  # torch's writer fails as RuntimeError
        reason = no_space_reason(exc, path.parent) or str(exc).splitlines()[0]
        raise TrainingError(f"step {step}: cannot write {path} ({reason}); training "
                            f"stopped. {_last_good(out)}") from exc
    if cfg.keep:
        for _, old in list_checkpoints(out)[:-cfg.keep]:
            old.unlink(missing_ok=True)
    return path


def _last_good(out: Path) -> str:
    found = list_checkpoints(out)
    if not found:
        return "No checkpoint was written yet."
    return f"Last good checkpoint: {found[-1][1]} (rerun with --resume to continue from it)."


#: Options that decide which sample (and crop) each step draws: a resumed run that changed
#: them would not continue the same run, so they are refused. Others that shape the
#: trajectory (iterations -> the lr schedule, lr, loss weights) may be changed on purpose
#: (e.g. to train longer) and are only reported.
RESUME_FIXED = ("seed", "batch_size", "img_size", "min_std")
RESUME_REPORTED = ("iterations", "lr", "decay", "adv_weight", "cycle_weight",
                   "identity_weight", "cam_weight", "precision", "paired_weight")


def _check_resume_options(stored: Mapping[str, Any], cfg: TrainConfig, path: Path) -> None:
    now = cfg.to_dict()
    fixed = [k for k in RESUME_FIXED if k in stored and stored[k] != now.get(k)]
    if fixed:
        diff = ", ".join(f"{k} {stored[k]!r} -> {now.get(k)!r}" for k in fixed)
        raise TrainingError(f"{path}: --resume with other data options ({diff}) would not "
                            f"continue the same run; resume with the run's options "
                            f"(OUT/options.yaml) or start a new --out")
    for k in RESUME_REPORTED:
        if k in stored and stored[k] != now.get(k):
            log.warning("resuming with %s %r (the run used %r): the trajectory changes from "
                        "here on", k, now.get(k), stored[k])


def resume_from(path: Path, nets: Mapping[str, nn.Module], opt_g: torch.optim.Optimizer,
                opt_d: torch.optim.Optimizer, cfg: TrainConfig,
                model: ModelConfig | None = None) -> int:
    """Restore weights, optimisers and RNG from a training checkpoint; return its step."""
    try:  # not memory-mapped: Adam updates its restored state tensors in place
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, OSError, EOFError, ValueError, pickle.UnpicklingError) as exc:
        raise TrainingError(f"{path}: cannot resume from it, the file does not load "
                            f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__}); "
                            f"delete it to resume from the one before") from exc
    missing = [n for n in NETWORK_NAMES
               if not (isinstance(obj, Mapping) and isinstance(obj.get(n), Mapping))]
    if missing:
        raise TrainingError(f"{path}: holds no {', '.join(missing)}: not a training checkpoint "
                            f"of `ugatit train`")
    for name in NETWORK_NAMES:  # NaN weights would only diverge again, one step later
        bad = first_non_finite(obj[name])
        if bad is not None:
            raise TrainingError(f"{path}: {name} key {bad!r} holds NaN or Inf values; cannot "
                                f"resume from it: delete it to resume from the one before")
    state = obj.get(TRAIN_STATE_KEY)
    if not isinstance(state, Mapping):
        raise TrainingError(f"{path}: no training state (not written by `ugatit train`); "
                            f"cannot resume from it")
    meta = obj.get(SEED_META_KEY, {})
    _check_resume_options(meta.get("train") or {}, cfg, path)
    model = model or cfg.model
    stored = meta.get("config", {})
    if ModelConfig.from_dict(stored) != model:
        raise TrainingError(f"{path}: trained with {ModelConfig.from_dict(stored)}, but the "
                            f"options ask for {model}; resume with the same model options")
    for name, net in nets.items():
        net.load_state_dict(obj[name])
    opt_g.load_state_dict(state["optim_G"])
    opt_d.load_state_dict(state["optim_D"])
    set_rng_state(state["rng"])
    return int(state["step"])


# ----------------------------------------------------------------------------------------
# The run


def prepare_out(cfg: TrainConfig, d: Dist) -> tuple[Path, Path | None]:
    """Check OUT; return (OUT, checkpoint to resume from or None)."""
    out = Path(cfg.out)
    found = list_checkpoints(out)
    if found and not cfg.resume:
        raise TrainingError(f"{out} already holds checkpoints (latest {found[-1][1].name}); "
                            f"pass --resume to continue that run, or choose another --out")
    if cfg.resume and not found and d.main:
        log.warning("--resume: no checkpoint in %s/checkpoints, starting at step 0", out)
    if d.main:
        for sub in ("checkpoints", "samples"):
            (out / sub).mkdir(parents=True, exist_ok=True)
            # what a killed run left half-written (a checkpoint can be 512 MiB)
            if removed := remove_stale_temps_in(out / sub):
                log.info("removed %d stale temporary file(s) in %s", len(removed), out / sub)
        remove_stale_temps_in(out)
    return out, (found[-1][1] if found and cfg.resume else None)


def read_radiometry(dataset: Path) -> Any:
    """The "radiometry" object of DATASET/dataset.json (copied into checkpoints), or None."""
    meta = dataset / "dataset.json"
    if not meta.is_file():
        return None
    try:
        return json.loads(meta.read_text()).get("radiometry")
    except (OSError, ValueError, AttributeError) as exc:
        raise TrainingError(f"{meta}: unreadable ({exc}); fix or remove it") from exc


def write_options(cfg: TrainConfig, out: Path, d: Dist, model: ModelConfig | None = None
                  ) -> None:
    """Print the options (defaults marked) and what the data decided (channels; the
    identity term when the domains differ in channels), and save them as
    OUT/options.yaml."""
    import yaml

    if not d.main:
        return
    default = TrainConfig()
    lines = ["----------------- Options ---------------"]
    for k, v in cfg.to_dict().items():
        note = "" if v == getattr(default, k) else f"\t[default: {getattr(default, k)}]"
        lines.append(f"{k:>16}: {v}{note}")
    if model is not None:
        lines.append(f"{'channels':>16}: {model.in_ch} in (trainA), {model.out_ch} out "
                     f"(trainB)\t[from the data]")
        if model.in_ch != model.out_ch:
            lines.append(f"{'identity':>16}: SKIPPED: genA2B takes {model.in_ch} channels and "
                         f"B has {model.out_ch}, so genA2B(B) ~ B has no meaning; the "
                         f"identity L1 and the identity half of the CAM term are left out "
                         f"(identity_weight unused)")
    lines.append("----------------- End -------------------")
    print("\n".join(lines), flush=True)
    atomic_write_text(out / "options.yaml", yaml.safe_dump(cfg.to_dict(), sort_keys=False))


def batches(data: UnpairedDataset, cfg: TrainConfig, start_step: int, device: torch.device
            ) -> Iterator[tuple[Tensor, ...]]:
    """Endless (real_A, real_B) batches from step ``start_step + 1`` on, on ``device``
    (plus a (pair EO, pair SAR) batch when the dataset has pairs)."""
    loader = DataLoader(data, batch_size=cfg.batch_size,
                        sampler=StreamSampler(start_step * cfg.batch_size),
                        num_workers=cfg.workers, pin_memory=device.type == "cuda",
                        persistent_workers=cfg.workers > 0,
                        prefetch_factor=4 if cfg.workers > 0 else None)
    for batch in loader:
        yield tuple(t.to(device, non_blocking=True) for t in batch)


class FiniteGuard:
    """Watches every step's losses for NaN/Inf on the DEVICE and looks only when asked.

    Why: reading a loss on the host (``.item()``, ``bool()``) waits for the GPU to finish
    the step, and a per-step check kept a launch-bound step from queueing the next one. So
    :meth:`update` only records, in device tensors, the first step whose losses were not
    finite and which terms; :meth:`check` (one host synchronisation) is called every log
    step and always before a checkpoint is written, so a non-finite step never reaches a
    checkpoint, and the error still names the step and the terms.
    """

    def __init__(self, device: torch.device, start_step: int) -> None:
        self.start = start_step
        self.terms: list[str] = []
        self.seen = torch.zeros((), dtype=torch.int64, device=device)  # steps recorded
        self.first_bad = torch.zeros((), dtype=torch.int64, device=device)  # 0 = none yet
        self.bad_terms = torch.zeros(0, dtype=torch.bool, device=device)

    def update(self, losses: Mapping[str, Tensor]) -> None:
        if not self.terms:
            self.terms = list(losses)
            self.bad_terms = torch.zeros(len(self.terms), dtype=torch.bool,
                                         device=self.seen.device)
        self.seen += 1
        bad = ~torch.isfinite(torch.stack([losses[t] for t in self.terms]))  # [T]
        new = bad.any() & (self.first_bad == 0)
        self.first_bad = torch.where(new, self.seen, self.first_bad)
        self.bad_terms = torch.where(new, bad, self.bad_terms)

    def check(self, out: Path, world: int) -> None:
        """Raise TrainingError if any step so far, on ANY process, had a non-finite loss
        (reduced across processes, so that all stop at the same check instead of some
        waiting forever in the next all-reduce)."""
        first = self.first_bad.clone()
        if world > 1:
            dist.all_reduce(first, op=dist.ReduceOp.MAX)
        offset = int(first)  # the one host synchronisation
        if not offset:
            return
        mine = [t for t, b in zip(self.terms, self.bad_terms.tolist(), strict=True) if b]
        raise TrainingError(f"step {self.start + offset}: non-finite loss "
                            f"({', '.join(mine) or 'on another process'}); training "
                            f"stopped, weights not saved. {_last_good(out)} Check the data "
                            f"for constant tiles or lower --lr.")


def loss_values(losses: Mapping[str, Tensor]) -> dict[str, float]:
    """The loss terms as Python floats, in ONE device-to-host transfer."""
    return dict(zip(losses, torch.stack(list(losses.values())).tolist(), strict=True))


def write_samples(nets: Mapping[str, nn.Module], samples: Tensor, n_train: int, out: Path,
                  step: int, loss_log: LossLog) -> None:
    """Sample sheet + loss curve; warn when the EO->SAR output has collapsed to blank."""
    stds = sample_sheet(nets["genA2B"], nets["genB2A"], samples,
                        out / "samples" / f"A2B_{step:07d}.png", n_train)
    loss_curve(loss_log, out / "loss_curve.png")
    if stds and max(stds) < COLLAPSE_STD:
        log.warning("step %d: EO->SAR output is blank on every fixed sample (std %.2g < "
                    "%g): the generator has collapsed; restart from an earlier checkpoint, "
                    "or use a wider model (--ngf) or another --seed", step, max(stds),
                    COLLAPSE_STD)


@dataclass
class _Run:
    """What :func:`setup` prepares for the loop: data, networks, optimisers, state."""

    out: Path
    model: ModelConfig
    nets: dict[str, nn.Module]
    opt_g: torch.optim.Adam
    opt_d: torch.optim.Adam
    start: int
    last: Path
    radiometry: Any
    data: UnpairedDataset
    samples: Tensor
    n_train_rows: int
    db_per_unit: float | Tensor
    terms: list[str]


def data_model(cfg: TrainConfig, files_a: list[Path], files_b: list[Path]) -> ModelConfig:
    """The model the options ask for, with the channel counts the tiles have (3 for PNG
    tiles; the band count of multiband TIFF tiles)."""
    return replace(cfg.model, in_ch=channels_of(files_a), out_ch=channels_of(files_b))


def setup(cfg: TrainConfig, d: Dist, device: torch.device) -> _Run:
    """Options -> data -> six networks and two Adam optimisers -> (resume)."""
    out, resume_path = prepare_out(cfg, d)
    dataset = Path(cfg.dataset)
    files_a = index_domain(dataset / "trainA", cfg.min_std)
    files_b = index_domain(dataset / "trainB", cfg.min_std)
    model = data_model(cfg, files_a, files_b)
    radiometry = read_radiometry(dataset)
    pairs, db_per_unit = paired_setup(cfg, files_a, files_b, radiometry, dataset)
    write_options(cfg, out, d, model)

    nets = build_networks(model, cfg.seed, device)
    opt_g, opt_d = make_optimizers(nets, cfg)
    start = resume_from(resume_path, nets, opt_g, opt_d, cfg, model) if resume_path else 0
    if d.world > 1:  # same seed gives the same init; broadcasting makes sure of it
        for p in (t for m in nets.values() for t in m.state_dict().values()):
            dist.broadcast(p, src=0)
    if resume_path and d.main:
        log.info("resumed from %s at step %d", resume_path, start)

    train_rows = fixed_samples(files_a, cfg.n_samples, cfg.img_size, cfg.min_std,
                               model.in_ch)
    samples = torch.cat([train_rows, fixed_samples(_test_files(dataset), cfg.n_samples,
                                                   cfg.img_size, cfg.min_std, model.in_ch)])
    if isinstance(db_per_unit, Tensor):
        db_per_unit = db_per_unit.to(device)
    data = UnpairedDataset(files_a, files_b, cfg.img_size, cfg.seed, d.rank, cfg.min_std,
                           pairs=pairs)
    return _Run(out, model, nets, opt_g, opt_d, start,
                resume_path or checkpoint_path(out, start), radiometry, data, samples,
                len(train_rows), db_per_unit, [*LOSS_TERMS, *(["G_paired"] if pairs else [])])


def train(cfg: TrainConfig) -> Path:
    """Train U-GAT-IT as configured; return the final checkpoint's path.

    Raises TrainingError for bad options or data, an existing run without --resume, and a
    non-finite loss.
    """
    d, device = init_distributed(cfg)
    if device.type == "cuda":
        set_tf32(cfg.tf32)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    run = setup(cfg, d, device)
    out, nets, start = run.out, run.nets, run.start
    loss_log = LossLog(out / "losses.csv", [*run.terms, "lr", "seconds"])
    if d.main:
        loss_log.start(start)
    stream = batches(run.data, cfg, start, device)
    last = run.last
    t0 = time.perf_counter()
    guard = FiniteGuard(device, start)
    with _progress(d, start, cfg.iterations) as bar:  # closed on errors too
        for step in range(start + 1, cfg.iterations + 1):
            lr = set_lr((run.opt_g, run.opt_d), lr_at(step, cfg))
            real_a, real_b, *pair = next(stream)
            losses = train_step(nets, run.opt_g, run.opt_d, real_a, real_b, cfg, d.world,
                                (pair[0], pair[1]) if pair else None, run.db_per_unit)
            fault_point("train-step")  # test hook (tests/faults)
            guard.update(losses)  # no host synchronisation: the next step queues at once
            logging_step = step % cfg.log_every == 0 or step == cfg.iterations
            saving_step = step % cfg.save_every == 0 or step == cfg.iterations
            if logging_step or saving_step or step % cfg.sample_every == 0:
                guard.check(out, d.world)  # the same steps on every process
            if d.main and logging_step:
                values = loss_values(losses)
                loss_log.append(step, {**values, "lr": lr, "seconds": time.perf_counter() - t0})
                bar.set_postfix(D=f"{values['D_loss']:.3f}", G=f"{values['G_loss']:.3f}")
            if d.main and step % cfg.sample_every == 0:
                write_samples(nets, run.samples, run.n_train_rows, out, step, loss_log)
            if saving_step:  # rank 0 writes
                last = checkpoint_path(out, step)
                if d.main:
                    save_training_checkpoint(out, step, nets, run.opt_g, run.opt_d, cfg,
                                             run.radiometry, run.model)
            bar.update(1)
    if d.world > 1:
        dist.barrier()  # rank 0 has written the last checkpoint before anyone returns
    return last


def paired_setup(cfg: TrainConfig, files_a: list[Path], files_b: list[Path],
                 radiometry: Any, dataset: Path
                 ) -> tuple[list[tuple[Path, Path]], float | Tensor]:
    """(pairs, dB per tile unit) for ``--paired-weight``; ([], 1.0) when it is 0.

    The term is an L1 in dB, so it needs the dB range the SAR tiles were cut with
    (dataset.json, written by `pipeline tiles --sar-db-range LOW,HIGH`): a tile unit of
    the [-1, 1] scale is half that range (12.5 dB for [-25, 0]).
    """
    if cfg.paired_weight <= 0:
        return [], 1.0
    pairs = find_pairs(files_a, files_b)
    if not pairs:
        raise TrainingError(f"--paired-weight {cfg.paired_weight}: {dataset}/trainA and "
                            f"trainB share no file name, so there are no co-registered pairs "
                            f"(cut them with `pipeline tiles --paired`)")
    sar = radiometry.get("sar") if isinstance(radiometry, Mapping) else None
    ranges = sar.get("db_ranges") if isinstance(sar, Mapping) else None
    if isinstance(ranges, (list, tuple)) and ranges and all(
            isinstance(r, (list, tuple)) and len(r) == 2 for r in ranges):
        log.info("paired term: %d co-registered pairs, weight %g per dB, per polarisation "
                 "(%s)", len(pairs), cfg.paired_weight,
                 ", ".join(str(p) for p in sar.get("polarisations") or ()))
        return pairs, torch.tensor([(float(hi) - float(lo)) / 2 for lo, hi in ranges])
    db_range = sar.get("db_range") if isinstance(sar, Mapping) else None
    if not (isinstance(db_range, (list, tuple)) and len(db_range) == 2):
        raise TrainingError(f"--paired-weight: {dataset}/dataset.json states no single "
                            f"absolute dB range for the SAR tiles, so the paired L1 has no dB "
                            f"scale; cut the tiles with `pipeline tiles --sar-db-range LOW,HIGH`")
    log.info("paired term: %d co-registered pairs, weight %g per dB", len(pairs),
             cfg.paired_weight)
    return pairs, (float(db_range[1]) - float(db_range[0])) / 2


def _test_files(dataset: Path) -> list[Path]:
    folder = dataset / "testA"
    return list_images(folder) if folder.is_dir() else []


def _progress(d: Dist, start: int, total: int) -> Any:
    """A tqdm bar on rank 0 (it/s and D/G losses); a no-op object elsewhere."""
    from tqdm import tqdm

    return tqdm(total=total, initial=start, disable=not d.main, dynamic_ncols=True,
                unit="it", smoothing=0.05)



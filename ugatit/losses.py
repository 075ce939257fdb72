"""U-GAT-IT's loss terms, as the original computes them (LSGAN + L1 + CAM BCE).

Each function returns the UNWEIGHTED sum the original names (``D_loss_A`` parts,
``G_ad_loss_GA + G_ad_cam_loss_GA``, ...); the trainer applies adv/cycle/identity/cam
weights, so the CSV logs terms a reader can compare with the paper's.
Losses are computed in float32 even under bf16 autocast (``.float()``): the LSGAN and
BCE reductions are where reduced precision would hurt.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def mse_to(x: Tensor, target: float) -> Tensor:
    """MSE(x, target * ones): the least-squares GAN loss against a constant label."""
    x = x.float()
    return F.mse_loss(x, torch.full_like(x, target))


def bce_to(x: Tensor, target: float) -> Tensor:
    """BCEWithLogits(x, target * ones): the generator's CAM (source/target) classifier."""
    x = x.float()
    return F.binary_cross_entropy_with_logits(x, torch.full_like(x, target))


def l1(x: Tensor, y: Tensor) -> Tensor:
    return F.l1_loss(x.float(), y.float())


def discriminator_term(dis: nn.Module, real: Tensor, fake: Tensor) -> Tensor:
    """One discriminator's LSGAN loss: real patch/CAM logits -> 1, fake ones -> 0."""
    logit, cam_logit, _ = dis(real)
    f_logit, f_cam_logit, _ = dis(fake)
    return mse_to(logit, 1.0) + mse_to(f_logit, 0.0) + mse_to(cam_logit, 1.0) \
        + mse_to(f_cam_logit, 0.0)


def adversarial_term(dis: nn.Module, fake: Tensor) -> Tensor:
    """The generator's LSGAN loss against one discriminator: fake patch/CAM logits -> 1."""
    logit, cam_logit, _ = dis(fake)
    return mse_to(logit, 1.0) + mse_to(cam_logit, 1.0)


def cam_term(cam_translated: Tensor, cam_identity: Tensor | None) -> Tensor:
    """CAM loss of one generator: its logit on the other domain's image is "source" (1),
    on its own domain's image (identity) "not source" (0).

    ``cam_identity`` None: the domains have different channel counts (4 optical bands in,
    VV and VH out), so a generator cannot take its own domain's image and only the
    "source" half is left (the trainer says so in its options printout)."""
    if cam_identity is None:
        return bce_to(cam_translated, 1.0)
    return bce_to(cam_translated, 1.0) + bce_to(cam_identity, 0.0)

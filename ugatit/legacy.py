"""The seed (original U-GAT-IT) checkpoint format, kept apart from our own.

A seed file is ``torch.save`` of a plain dict of six state dicts (``genA2B``, ``genB2A``,
``disGA``, ``disGB``, ``disLA``, ``disLB``) and records no architecture, so the config is
inferred from tensor shapes here. Everything that knows about that format lives in this
module, so the rest of the package deals only with :class:`ugatit.config.ModelConfig`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

from torch import Tensor

from ugatit.config import ModelConfig
from ugatit.errors import CheckpointError
from ugatit.networks import GENERATORS, NETWORK_NAMES

StateDict = Mapping[str, Tensor]

# A bare generator state dict (someone saved genA2B.state_dict() alone) is recognised by it.
_GENERATOR_MARKER = "DownBlock.1.weight"


def is_seed_checkpoint(obj: Any) -> bool:
    """A dict whose keys include at least one network name mapped to a state dict."""
    return isinstance(obj, Mapping) and any(
        isinstance(obj.get(name), Mapping) for name in NETWORK_NAMES
    )


def is_bare_generator(obj: Any) -> bool:
    return isinstance(obj, Mapping) and isinstance(obj.get(_GENERATOR_MARKER), Tensor)


def _shape(sd: StateDict, key: str, where: str) -> tuple[int, ...]:
    if key not in sd:
        raise CheckpointError(f"{where}: missing key {key!r}: not a U-GAT-IT network")
    return tuple(sd[key].shape)


def infer_config(networks: Mapping[str, StateDict], where: str = "checkpoint") -> ModelConfig:
    """Recover ngf, n_res, light, img_size (and discriminator sizes) from shapes.

    ngf = out channels of ``DownBlock.1.weight``; n_res = number of ``UpBlock1_<i>``
    prefixes; light when ``FC.0.weight`` is square [4ngf, 4ngf], full when it is
    [4ngf, (img_size/4)^2 * 4ngf], which gives img_size.
    """
    gen_name = next((n for n in GENERATORS if n in networks), None)
    kwargs: dict[str, Any] = {}
    if gen_name is not None:
        sd = networks[gen_name]
        w = f"{where}: {gen_name}"
        ngf, in_ch = _shape(sd, "DownBlock.1.weight", w)[:2]
        out_ch = _shape(sd, "UpBlock2.11.weight", w)[0]
        if gen_name == "genB2A":
            in_ch, out_ch = out_ch, in_ch
        n_res = len({m.group(1) for k in sd if (m := re.match(r"UpBlock1_(\d+)\.", k))})
        fc_out, fc_in = _shape(sd, "FC.0.weight", w)
        dim = 4 * ngf
        if fc_out != dim:
            raise CheckpointError(
                f"{w}: key 'FC.0.weight' has shape {[fc_out, fc_in]}, expected [{dim}, ...] "
                f"for ngf={ngf} (from DownBlock.1.weight)"
            )
        if fc_in == dim:
            light, img_size = True, 256  # fully convolutional; 256 is the training size
        else:
            side = math.isqrt(fc_in // dim) if fc_in % dim == 0 else 0
            if side == 0 or side * side * dim != fc_in:
                raise CheckpointError(
                    f"{w}: key 'FC.0.weight' has shape {[fc_out, fc_in]}: expected [{dim}, {dim}] "
                    f"(light) or [{dim}, (img_size/4)^2 * {dim}] (full)"
                )
            light, img_size = False, side * 4
        kwargs.update(ngf=ngf, n_res=n_res, light=light, img_size=img_size, in_ch=in_ch,
                      out_ch=out_ch)
    for names, field in ((("disGA", "disGB"), "n_dis_global"), (("disLA", "disLB"), "n_dis_local")):
        name = next((n for n in names if n in networks), None)
        if name is not None:
            sd = networks[name]
            convs = [k for k in sd if re.fullmatch(r"model\.\d+\.weight_orig", k)]
            kwargs[field] = len(convs) + 1  # n_layers - 1 strided/stride-1 convs in `model`
            kwargs["ndf"] = _shape(sd, "model.1.weight_orig", f"{where}: {name}")[0]
    if gen_name is None and not kwargs:
        raise CheckpointError(f"{where}: holds no U-GAT-IT network ({', '.join(NETWORK_NAMES)})")
    try:
        return ModelConfig(**kwargs)
    except ValueError as exc:  # e.g. a generator with no UpBlock1_<i> block: n_res = 0
        raise CheckpointError(f"{where}: shapes give no valid architecture: {exc}") from exc

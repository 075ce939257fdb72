"""The networks' state dicts match the published checkpoint layout key for key.

Why: a user's existing checkpoint (the 512 MiB eo2sar file, or a 2.5 GiB full-variant one)
must load with ``strict=True`` and no renaming. ``tests/data/manifests/`` holds every key,
shape, dtype and parameter/buffer kind of all six networks of both variants, measured on the
original code (copied from the project's reference folder). The full-size networks are built
on the ``meta`` device: shapes without the 2.5 GiB of memory.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from ugatit.config import ModelConfig
from ugatit.legacy import infer_config
from ugatit.networks import Discriminator, ResnetGenerator, build_network

MANIFESTS = Path(__file__).resolve().parents[1] / "data" / "manifests"
VARIANTS = ("light", "full")
NETWORKS = ("genA2B", "genB2A", "disGA", "disGB", "disLA", "disLB")


@cache
def manifest(variant: str) -> dict[str, Any]:
    with open(MANIFESTS / f"manifest_{variant}.json", encoding="utf-8") as f:
        return json.load(f)


def config_of(variant: str) -> ModelConfig:
    c = manifest(variant)["config"]
    return ModelConfig(ngf=c["ngf"], n_res=c["n_blocks"], light=c["light"],
                       img_size=c["img_size"], in_ch=c["input_nc"], out_ch=c["output_nc"],
                       ndf=64, n_dis_global=c["disG_n_layers"], n_dis_local=c["disL_n_layers"])


def build_direct(variant: str, name: str) -> nn.Module:
    """The constructors as a user of ``ugatit.networks`` calls them (on meta)."""
    c = manifest(variant)["config"]
    with torch.device("meta"):
        if name.startswith("gen"):
            return ResnetGenerator(config_of(variant))
        n_layers = c["disG_n_layers"] if name.startswith("disG") else c["disL_n_layers"]
        return Discriminator(c["input_nc"], 64, n_layers)


def describe(module: nn.Module) -> dict[str, tuple[tuple[int, ...], torch.dtype, str]]:
    """key -> (shape, dtype, 'parameter' | 'buffer') for every state-dict entry."""
    params = dict(module.named_parameters())
    buffers = dict(module.named_buffers())
    out = {}
    for key, t in module.state_dict().items():
        kind = "parameter" if key in params else "buffer" if key in buffers else "other"
        out[key] = (tuple(t.shape), t.dtype, kind)
    return out


def expected(variant: str, name: str) -> dict[str, tuple[tuple[int, ...], torch.dtype, str]]:
    entries = manifest(variant)["networks"][name]["keys"]
    assert all(e["dtype"] == "float32" for e in entries)
    return {e["key"]: (tuple(e["shape"]), torch.float32, e["kind"]) for e in entries}


def assert_layout(module: nn.Module, variant: str, name: str) -> None:
    got, want = describe(module), expected(variant, name)
    missing, extra = sorted(want.keys() - got.keys()), sorted(got.keys() - want.keys())
    assert (missing, extra) == ([], []), f"{variant}/{name}: missing {missing}, unexpected {extra}"
    wrong = {k: (got[k], want[k]) for k in want if got[k] != want[k]}
    assert not wrong, f"{variant}/{name}: (got, manifest) differ for {wrong}"

    info = manifest(variant)["networks"][name]
    n_params = sum(p.numel() for p in module.parameters())
    n_buffer = sum(b.numel() for b in module.buffers())
    assert len(got) == info["num_keys"]
    assert n_params == info["num_parameters"]
    assert n_buffer == info["num_buffer_elements"]
    assert sum(t.numel() * t.element_size() for t in module.state_dict().values()) == \
        info["state_dict_bytes"]


@pytest.mark.parametrize("name", NETWORKS)
@pytest.mark.parametrize("variant", VARIANTS)
def test_constructor_layout_matches_manifest(variant: str, name: str) -> None:
    assert_layout(build_direct(variant, name), variant, name)


@pytest.mark.parametrize("name", NETWORKS)
@pytest.mark.parametrize("variant", VARIANTS)
def test_build_network_layout_matches_manifest(variant: str, name: str) -> None:
    with torch.device("meta"):
        module = build_network(name, config_of(variant))
    assert_layout(module, variant, name)


@pytest.mark.parametrize("variant", VARIANTS)
def test_whole_checkpoint_size(variant: str) -> None:
    """134 M parameters / 512 MiB (light), 671 M / 2.5 GiB (full), as the spec states."""
    total_params = total_bytes = 0
    for name in NETWORKS:
        module = build_direct(variant, name)
        total_params += sum(p.numel() for p in module.parameters())
        total_bytes += sum(t.numel() * t.element_size() for t in module.state_dict().values())
    totals = manifest(variant)["totals"]
    assert (total_params, total_bytes) == (totals["num_parameters"], totals["state_dict_bytes"])


@pytest.mark.parametrize("variant", VARIANTS)
def test_infer_config_from_manifest_shapes(variant: str) -> None:
    """The seed format records no architecture: ngf, n_res, light, img_size and the
    discriminator depths must come back from the shapes alone."""
    networks = {
        name: {e["key"]: torch.empty(e["shape"], device="meta")
               for e in manifest(variant)["networks"][name]["keys"]}
        for name in NETWORKS
    }
    assert infer_config(networks, where=f"manifest_{variant}") == config_of(variant)


def _params(variant: str, names: tuple[str, ...]) -> int:
    return sum(p.numel() for n in names for p in build_direct(variant, n).parameters())


def test_format_doc_sizes() -> None:
    """The sizes UGATIT_FORMAT.md quotes, counted on our modules (not read from the
    manifests): 512 MiB / 134 M parameters, 106 M in the two global discriminators, a
    10.59 M-parameter (42 MB) generator, and a 2.5 GiB full variant."""
    def state_bytes(variant: str) -> int:
        return sum(t.numel() * t.element_size() for n in NETWORKS
                   for t in build_direct(variant, n).state_dict().values())

    assert round(_params("light", NETWORKS) / 1e6) == 134
    assert round(state_bytes("light") / 2**20) == 512
    assert round(_params("light", ("disGA", "disGB")) / 1e6) == 106
    assert round(_params("light", ("genA2B",)) / 1e6, 2) == 10.59
    gen_bytes = sum(t.numel() * 4 for t in build_direct("light", "genA2B").state_dict().values())
    assert round(gen_bytes / 1e6) == 42
    assert round(state_bytes("full") / 2**30, 1) == 2.5


def test_light_generator_costs_105_gflop_per_tile() -> None:
    """UGATIT_FORMAT.md, Cost: 105 GFLOP per 256 x 256 tile (multiply-adds counted as 2),
    counted by torch's FLOP counter on the meta device (no memory, no time)."""
    from torch.utils.flop_counter import FlopCounterMode

    gen = build_direct("light", "genA2B")
    with FlopCounterMode(display=False) as counter, torch.device("meta"):
        gen(torch.empty(1, 3, 256, 256))
    assert round(counter.get_total_flops() / 1e9) == 105

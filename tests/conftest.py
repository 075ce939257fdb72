"""Shared fixtures: small random-weight checkpoints made once per test session.

Tests use narrow models (ngf 4-8) so the suite runs in minutes on 2 cores; the real
loading code is the same one that reads the published 512 MiB file.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch

from tests.helpers import DATA
from ugatit import ModelConfig, init_checkpoint
from ugatit.networks import GENERATORS, NETWORK_NAMES


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return DATA


@pytest.fixture(scope="session")
def make_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """Factory: make_checkpoint(ngf=4, n_res=1, light=True, img_size=256, seed=0,
    fmt="eo2sar", all_networks=False) -> Path, cached per argument set."""
    root = tmp_path_factory.mktemp("checkpoints")
    cache: dict[tuple, Path] = {}

    def make(ngf: int = 4, n_res: int = 1, light: bool = True, img_size: int = 256,
             seed: int = 0, fmt: str = "eo2sar", all_networks: bool = False,
             ndf: int = 8) -> Path:
        key = (ngf, n_res, light, img_size, seed, fmt, all_networks, ndf)
        if key not in cache:
            cfg = ModelConfig(ngf=ngf, n_res=n_res, light=light, img_size=img_size, ndf=ndf)
            name = "_".join(map(str, key)) + ".pt"
            cache[key] = init_checkpoint(root / name, cfg, seed=seed, fmt=fmt,
                                         networks=NETWORK_NAMES if all_networks else GENERATORS)
        return cache[key]

    return make


@pytest.fixture(scope="session")
def tiny_checkpoint(make_checkpoint: Callable[..., Path]) -> Path:
    """ngf 4, n_res 1, light, generators only, seed 0, eo2sar format."""
    return make_checkpoint(ngf=4, n_res=1)


#: The radiometric contract of a multispectral model (issue 21): red, green, blue and
#: near-infrared reflectance in, VV and VH dB out (what `pipeline tiles --eo-bands
#: red,green,blue,nir --eo-scale reflectance --sar-pols VV,VH` data trains).
MS_CONTRACT = {
    "eo": {"method": "reflectance", "common_names": ["red", "green", "blue", "nir"],
           "reflectance_range": [0.0, 0.5], "percentiles": [2.0, 98.0], "bands": None,
           "rule": "reflectance [0, 0.5] -> [0, 1]"},
    "sar": {"units": "db", "polarisations": ["VV", "VH"],
            "db_ranges": [[-25.0, 0.0], [-32.5, 0.0]], "db_range": [-25.0, 0.0],
            "db_scale": "absolute", "band": 1},
}


@pytest.fixture(scope="session")
def ms_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 4 -> 2 model (ngf 4, n_res 1, light, random weights) with MS_CONTRACT."""
    from ugatit.checkpoint import save_checkpoint

    path = tmp_path_factory.mktemp("ms_checkpoint") / "ms_4to2.pt"
    cfg = ModelConfig(ngf=4, n_res=1, img_size=64, in_ch=4, out_ch=2)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        from ugatit.networks import build_network

        nets = {n: build_network(n, cfg) for n in GENERATORS}
    return save_checkpoint(path, nets, cfg, extra={"radiometry": MS_CONTRACT})


@pytest.fixture
def torch_one_thread() -> Iterator[None]:
    """torch on one intra-op thread for the test (as training subprocesses run with
    OMP_NUM_THREADS=1): the same ops in the same order, for bit-exact comparisons."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)

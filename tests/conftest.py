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


@pytest.fixture
def torch_one_thread() -> Iterator[None]:
    """torch on one intra-op thread for the test (as training subprocesses run with
    OMP_NUM_THREADS=1): the same ops in the same order, for bit-exact comparisons."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)

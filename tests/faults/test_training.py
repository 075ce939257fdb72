"""Items 2 and 3: a training run killed (mid-run, mid-checkpoint-write) and one diverging.

Each fault hits a real `python -m ugatit train` subprocess (tiny model: ngf 4, 32 px
crops, one thread). A kill comes from the test hook (``EO2SAR_FAULT_POINT``):
``train-step@3`` right after step 3 (the last checkpoint is step 2's), ``checkpoint@2``
while the second checkpoint (step 4) is written: the file is complete under its
temporary name, not yet renamed. Divergence is forced as it happens at 3 a.m.: a run
resumed with an absurd learning rate (1e30; --resume allows another --lr).
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
import yaml
from click.testing import CliRunner

from tests.faults.faultlib import KILLED, run_module, temps
from tests.helpers import make_dataset
from ugatit import load_checkpoint
from ugatit.cli import main as ugatit_main
from ugatit.networks import NETWORK_NAMES
from ugatit.train import TrainConfig, train

SMALL = dict(ngf=4, ndf=4, n_res=1, img_size=32, n_dis_global=5, save_every=2,
             sample_every=100, log_every=1, workers=0, device="cpu", n_samples=2, keep=0)


pytestmark = pytest.mark.usefixtures("torch_one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("faults_train") / "ds")


def config_file(dataset: Path, out: Path, iterations: int) -> Path:
    """The run's options as a YAML file (the CLI has no flag for n_samples)."""
    path = out.parent / f"{out.name}.yaml"
    path.write_text(yaml.safe_dump({**SMALL, "dataset": str(dataset), "out": str(out),
                                    "iterations": iterations}))
    return path


def train_cli(config: Path, *flags: str, fault: str | None = None):
    return run_module("ugatit", "train", "--config", config, *flags, fault=fault)


def weights(path: Path) -> dict[str, torch.Tensor]:
    obj = torch.load(path, map_location="cpu", weights_only=True)
    return {f"{n}.{k}": v for n in NETWORK_NAMES for k, v in obj[n].items()}


@pytest.fixture(scope="module")
def uninterrupted(dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Step 4's checkpoint of a run never killed (the reference of the resumed runs)."""
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("whole") / "run"
    return train(TrainConfig(**SMALL, dataset=str(dataset), out=str(out), iterations=4))


@pytest.mark.parametrize("fault, left_temp", [
    pytest.param("train-step@3", False, marks=pytest.mark.slow),
    ("checkpoint@2", True),
])
def test_killed_training_keeps_a_loadable_checkpoint_and_resumes(
        fault: str, left_temp: bool, dataset: Path, uninterrupted: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    killed = train_cli(config_file(dataset, out, 4), fault=fault)
    assert killed.returncode == KILLED, killed.stderr[-2000:]
    ckpts = out / "checkpoints"
    # the latest checkpoint on disk is step 2's, complete: it loads, with training state
    assert sorted(p.name for p in ckpts.iterdir() if not p.name.startswith(".")) == [
        "params_0000002.pt"]
    assert load_checkpoint(ckpts / "params_0000002.pt").config.ngf == 4
    state = torch.load(ckpts / "params_0000002.pt", weights_only=True)["train_state"]
    assert state["step"] == 2
    # mid-write, step 4's file was complete but only under its hidden temporary name
    assert bool(temps(ckpts)) == left_temp, temps(ckpts)

    resumed = train(TrainConfig(**SMALL, dataset=str(dataset), out=str(out), iterations=4,
                                resume=True))
    assert resumed == ckpts / "params_0000004.pt"
    assert temps(out) == []  # the dead run's half-written checkpoint is removed
    a, b = weights(uninterrupted), weights(resumed)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # one loss history: the killed run's rows after step 2 were replaced, not repeated
    with (out / "losses.csv").open(newline="") as f:
        assert [row["step"] for row in csv.DictReader(f)] == ["1", "2", "3", "4"]


def test_diverging_training_stops_naming_the_step_and_keeps_the_last_good_checkpoint(
        dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    good = train(TrainConfig(**SMALL, dataset=str(dataset), out=str(out), iterations=2))
    before = good.read_bytes()

    diverged = CliRunner().invoke(ugatit_main, [  # in this process: same code, no start-up
        "train", "--config", str(config_file(dataset, out, 2)), "--resume",
        "--iterations", "6", "--lr", "1e30"])
    assert diverged.exit_code == 1, diverged.output[-2000:]
    error = [line for line in diverged.stderr.splitlines() if line.startswith("Error:")]
    assert len(error) == 1, diverged.output[-2000:]
    assert "step 3: non-finite loss" in error[0]
    assert f"Last good checkpoint: {good}" in error[0] and "--resume" in error[0]
    # nothing non-finite was saved; the good checkpoint is untouched and finite
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == [good.name]
    assert good.read_bytes() == before
    assert all(torch.isfinite(v).all() for v in weights(good).values())

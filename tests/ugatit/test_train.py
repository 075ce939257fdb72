"""The trainer: options, the step's math, checkpoints, exact resume, the NaN guard, the CLI.

Models are tiny (ngf 4, n_res 1, 32 px crops, a 5-layer global discriminator: the
original 7 layers need >= 96 px) and run in one thread: on the shared 2-core machine, two
OpenMP threads under load are ~10x slower than one, and results must not depend on it.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import yaml
from click.testing import CliRunner

import ugatit.train as tr
from tests.helpers import RADIOMETRY, make_dataset, make_multiband_dataset
from ugatit import load_checkpoint
from ugatit.checkpoint import export_generator
from ugatit.cli import main
from ugatit.errors import TrainingError
from ugatit.losses import discriminator_term
from ugatit.networks import DISCRIMINATORS, GENERATORS, NETWORK_NAMES
from ugatit.train import TrainConfig, lr_at, train

ROOT = Path(__file__).resolve().parents[2]


pytestmark = pytest.mark.usefixtures("torch_one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("train") / "ds")


def tiny(dataset: Path, out: Path, **kw: object) -> TrainConfig:
    base = dict(dataset=str(dataset), out=str(out), ngf=4, ndf=4, n_res=1, img_size=32,
                n_dis_global=5, iterations=4, save_every=2, sample_every=2, log_every=1,
                workers=0, device="cpu", n_samples=2, keep=0)
    return TrainConfig(**{**base, **kw})


def params(path: Path) -> dict[str, torch.Tensor]:
    obj = torch.load(path, map_location="cpu", weights_only=True)
    return {f"{n}.{k}": v for n in NETWORK_NAMES for k, v in obj[n].items()}


# ----------------------------------------------------------------------------------------
# Options


@pytest.mark.parametrize("kw, message", [
    ({"img_size": 30}, "not a multiple of 4"),
    ({"img_size": 64}, "too small for the global discriminator"),  # 7 layers need 96 px
    ({"light": False, "img_size": 512}, "use --light"),
    ({"precision": "fp16"}, "use fp32 or bf16"),
    ({"iterations": 0}, "iterations=0"),
])
def test_bad_options_are_refused(kw: dict, message: str) -> None:
    with pytest.raises(TrainingError, match=message):
        TrainConfig(**kw)


def test_defaults_are_the_original_recipe_and_yaml_repeats_them() -> None:
    cfg = TrainConfig()
    assert (cfg.iterations, cfg.batch_size, cfg.lr, cfg.beta1, cfg.beta2, cfg.weight_decay) \
        == (1_000_000, 1, 1e-4, 0.5, 0.999, 1e-4)
    assert (cfg.adv_weight, cfg.cycle_weight, cfg.identity_weight, cfg.cam_weight) \
        == (1, 10, 10, 1000)
    assert cfg.model.ndf == cfg.ngf == 64 and replace(cfg, ngf=16).model.ndf == 16
    assert TrainConfig.from_dict(yaml.safe_load((ROOT / "configs/train.yaml").read_text())) \
        == cfg
    with pytest.raises(TrainingError, match="unknown training options"):
        TrainConfig.from_dict({"iteration": 5})
    # YAML 1.1 reads 1e-4 as a string: options take the type of their default.
    got = TrainConfig.from_dict({"lr": "1e-4", "iterations": 10.0, "ndf": 8, "light": False})
    assert (got.lr, got.iterations, got.ndf, got.light) == (1e-4, 10, 8, False)
    for bad, message in (({"ngf": "a"}, "ngf: 'a' is not a int"),
                         ({"light": "yes"}, "light: 'yes' is not a bool"),
                         ({"ndf": True}, "ndf: True is not a int")):
        with pytest.raises(TrainingError, match=message):
            TrainConfig.from_dict(bad)


def test_lr_schedule_matches_the_original_running_subtraction() -> None:
    cfg = TrainConfig(iterations=10, lr=1e-4)
    lr, expected = cfg.lr, []
    for step in range(1, 11):  # the original: at each step > iteration // 2, lr -= lr0 / 5
        if step > 5:
            lr -= cfg.lr / 5
        expected.append(lr)
    assert [lr_at(s, cfg) for s in range(1, 11)] == pytest.approx(expected, abs=1e-15)
    assert lr_at(10, cfg) == 0.0 and lr_at(7, replace(cfg, decay=False)) == cfg.lr


# ----------------------------------------------------------------------------------------
# The step


def test_fakes_without_graph_give_the_same_d_gradients(dataset: Path, tmp_path: Path) -> None:
    """Why the D step may judge detached fakes: the discriminators' gradients are the same
    whether the fakes carry the generators' graph (the original) or not. (That our whole
    step equals the original iteration is test_our_step_is_the_original_iteration.)"""
    cfg = tiny(dataset, tmp_path)
    torch.manual_seed(0)
    a, b = torch.rand(2, 1, 3, 32, 32) * 2 - 1
    grads = []
    for detach in (True, False):
        nets = tr.build_networks(cfg.model, 0, torch.device("cpu"))
        ctx = torch.no_grad() if detach else torch.enable_grad()
        with ctx:
            fa2b, fb2a = nets["genA2B"](a)[0], nets["genB2A"](b)[0]
        loss = sum(discriminator_term(nets[f"dis{n}"], real, fake) for n, real, fake in
                   (("GA", a, fb2a), ("LA", a, fb2a), ("GB", b, fa2b), ("LB", b, fa2b)))
        loss.backward()
        grads.append([p.grad.clone() for d in DISCRIMINATORS for p in nets[d].parameters()])
    assert all(torch.equal(x, y) for x, y in zip(*grads, strict=True))


def original_iteration(nets: dict, opt_g: torch.optim.Optimizer, opt_d: torch.optim.Optimizer,
                       real_a: torch.Tensor, real_b: torch.Tensor) -> None:
    """UGATIT-pytorch's train() loop body, transcribed (weights 1 / 10 / 10 / 1000)."""
    mse, l1, bce = torch.nn.MSELoss(), torch.nn.L1Loss(), torch.nn.BCEWithLogitsLoss()

    def d_adv(d: torch.nn.Module, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        rl, rc, _ = d(real)
        fl, fc, _ = d(fake)
        return mse(rl, torch.ones_like(rl)) + mse(rc, torch.ones_like(rc)) \
            + mse(fl, torch.zeros_like(fl)) + mse(fc, torch.zeros_like(fc))

    def g_adv(d: torch.nn.Module, fake: torch.Tensor) -> torch.Tensor:
        fl, fc, _ = d(fake)
        return mse(fl, torch.ones_like(fl)) + mse(fc, torch.ones_like(fc))

    ga2b, gb2a = nets["genA2B"], nets["genB2A"]
    opt_d.zero_grad()
    fake_a2b, _, _ = ga2b(real_a)
    fake_b2a, _, _ = gb2a(real_b)
    d_loss_a = d_adv(nets["disGA"], real_a, fake_b2a) + d_adv(nets["disLA"], real_a, fake_b2a)
    d_loss_b = d_adv(nets["disGB"], real_b, fake_a2b) + d_adv(nets["disLB"], real_b, fake_a2b)
    (1 * (d_loss_a + d_loss_b)).backward()
    opt_d.step()

    opt_g.zero_grad()
    fake_a2b, a2b_cam, _ = ga2b(real_a)
    fake_b2a, b2a_cam, _ = gb2a(real_b)
    fake_a2b2a, _, _ = gb2a(fake_a2b)
    fake_b2a2b, _, _ = ga2b(fake_b2a)
    fake_a2a, a2a_cam, _ = gb2a(real_a)
    fake_b2b, b2b_cam, _ = ga2b(real_b)
    adv_a = g_adv(nets["disGA"], fake_b2a) + g_adv(nets["disLA"], fake_b2a)
    adv_b = g_adv(nets["disGB"], fake_a2b) + g_adv(nets["disLB"], fake_a2b)
    cam_a = bce(b2a_cam, torch.ones_like(b2a_cam)) + bce(a2a_cam, torch.zeros_like(a2a_cam))
    cam_b = bce(a2b_cam, torch.ones_like(a2b_cam)) + bce(b2b_cam, torch.zeros_like(b2b_cam))
    g_loss_a = 1 * adv_a + 10 * l1(fake_a2b2a, real_a) + 10 * l1(fake_a2a, real_a) + 1000 * cam_a
    g_loss_b = 1 * adv_b + 10 * l1(fake_b2a2b, real_b) + 10 * l1(fake_b2b, real_b) + 1000 * cam_b
    (g_loss_a + g_loss_b).backward()
    opt_g.step()
    for g in (ga2b, gb2a):  # RhoClipper(0, 1)
        for name, p in g.named_parameters():
            if "rho" in name:
                p.data.clamp_(0, 1)


def test_our_step_is_the_original_iteration(dataset: Path, tmp_path: Path) -> None:
    """Detached D step, reused translations, frozen D in the G step: the same weights and
    Adam state as the transcribed original after 3 iterations, bit for bit on CPU."""
    cfg = tiny(dataset, tmp_path)
    torch.manual_seed(1)
    batches = [torch.rand(2, 1, 3, 32, 32) * 2 - 1 for _ in range(3)]
    runs = []
    for ours in (True, False):
        nets = tr.build_networks(cfg.model, 0, torch.device("cpu"))
        opt_g, opt_d = tr.make_optimizers(nets, cfg)
        for a, b in batches:
            if ours:
                tr.train_step(nets, opt_g, opt_d, a, b, cfg)
            else:
                original_iteration(nets, opt_g, opt_d, a, b)
        runs.append(({f"{n}.{k}": v for n, m in nets.items() for k, v in m.state_dict().items()},
                     opt_g.state_dict()["state"]))
    (ours_sd, ours_adam), (orig_sd, orig_adam) = runs
    assert all(torch.equal(ours_sd[k], orig_sd[k]) for k in orig_sd)
    assert all(torch.equal(ours_adam[i]["exp_avg"], orig_adam[i]["exp_avg"]) for i in orig_adam)


def test_step_updates_every_network_and_clips_rho(dataset: Path, tmp_path: Path) -> None:
    cfg = tiny(dataset, tmp_path, lr=0.5)  # a huge lr pushes some rho outside [0, 1]
    nets = tr.build_networks(cfg.model, 0, torch.device("cpu"))
    before = {n: [p.clone() for p in m.parameters()] for n, m in nets.items()}
    opt_g, opt_d = tr.make_optimizers(nets, cfg)
    a, b = torch.rand(2, 1, 3, 32, 32) * 2 - 1
    losses = tr.train_step(nets, opt_g, opt_d, a, b, cfg)
    assert set(losses) == set(tr.LOSS_TERMS)
    expected_g = sum(w * losses[f"{term}_{s}"] for s in "AB" for term, w in
                     (("G_adv", 1), ("G_cycle", 10), ("G_identity", 10), ("G_cam", 1000)))
    assert float(losses["G_loss"]) == pytest.approx(float(expected_g), rel=1e-5)
    for name, m in nets.items():
        assert any(not torch.equal(p, q) for p, q in zip(m.parameters(), before[name],
                                                         strict=True)), name
        assert all(p.requires_grad for p in m.parameters())  # D unfrozen after the G step
    rhos = [p.detach() for g in GENERATORS for n, p in nets[g].named_parameters()
            if n.endswith("rho")]
    assert rhos and all(0.0 <= float(r.min()) <= float(r.max()) <= 1.0 for r in rhos)


# ----------------------------------------------------------------------------------------
# Runs


def test_run_writes_loadable_checkpoints_csv_and_options(dataset: Path, tmp_path: Path) -> None:
    cfg = tiny(dataset, tmp_path / "run", keep=1)
    final = train(cfg)
    out = tmp_path / "run"
    assert final == out / "checkpoints" / "params_0000004.pt"
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["params_0000004.pt"]  # keep 1
    ck = load_checkpoint(final)
    assert ck.format == "seed" and set(ck.available) == set(NETWORK_NAMES)
    assert ck.radiometry == RADIOMETRY
    assert ck.meta["step"] == 4 and ck.meta["dataset"] == "ds"
    assert ck.meta["train"]["ngf"] == 4 and ck.config == cfg.model
    state = torch.load(final, map_location="cpu", weights_only=True)["train_state"]
    assert state["step"] == 4 and set(state["rng"]) == {"torch", "cuda", "python", "numpy"}
    assert state["optim_G"]["param_groups"][0]["lr"] == pytest.approx(lr_at(4, cfg))
    rows = (out / "losses.csv").read_text().splitlines()
    assert rows[0].split(",")[:3] == ["step", "D_loss", "G_loss"] and len(rows) == 5
    assert yaml.safe_load((out / "options.yaml").read_text()) == cfg.to_dict()
    assert sorted(p.name for p in (out / "samples").iterdir()) == ["A2B_0000002.png",
                                                                     "A2B_0000004.png"]
    assert (out / "loss_curve.png").stat().st_size > 0
    with pytest.raises(TrainingError, match="--resume"):
        train(cfg)


def test_resume_is_exact(dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """4 steps in one go == a run killed during step 3 (last checkpoint: step 2), resumed
    to 4 with a DataLoader worker.

    Bit-identical on CPU: the same ops run in the same order on the same inputs (the
    sample at step k is a function of (seed, rank, k); weights, Adam state, lr schedule and
    RNG restored), so torch.equal, no tolerance.
    """
    whole = train(tiny(dataset, tmp_path / "whole"))
    real_step = tr.train_step

    def killed_at_3(*args: object, **kw: object) -> dict[str, torch.Tensor]:
        if len(list((tmp_path / "split" / "checkpoints").iterdir())) == 1:  # after step 2
            raise KeyboardInterrupt
        return real_step(*args, **kw)

    monkeypatch.setattr(tr, "train_step", killed_at_3)
    with pytest.raises(KeyboardInterrupt):
        train(tiny(dataset, tmp_path / "split"))
    monkeypatch.setattr(tr, "train_step", real_step)
    resumed = train(tiny(dataset, tmp_path / "split", resume=True, workers=1))
    a, b = params(whole), params(resumed)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    sa = torch.load(whole, weights_only=True)["train_state"]["optim_G"]["state"]
    sb = torch.load(resumed, weights_only=True)["train_state"]["optim_G"]["state"]
    assert all(torch.equal(sa[i]["exp_avg_sq"], sb[i]["exp_avg_sq"]) for i in sa)
    # losses.csv of the split run is one history, the same losses as the whole run's.
    rows = [[{k: v for k, v in r.items() if k != "seconds"}
             for r in csv.DictReader((tmp_path / run / "losses.csv").open())]
            for run in ("whole", "split")]
    assert [r["step"] for r in rows[1]] == ["1", "2", "3", "4"] and rows[0] == rows[1]


def test_resume_refuses_other_data_options_and_reports_others(
        dataset: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """--resume continues THE run: another seed (another sample stream) is refused before
    any step; a longer --iterations (another lr schedule) is allowed and reported."""
    train(tiny(dataset, tmp_path / "run", iterations=2, save_every=2))
    with pytest.raises(TrainingError, match=r"seed 0 -> 1"):
        train(tiny(dataset, tmp_path / "run", iterations=4, seed=1, resume=True))
    assert [p.name for p in (tmp_path / "run" / "checkpoints").iterdir()] == [
        "params_0000002.pt"]  # nothing trained or written by the refused resume
    with caplog.at_level("WARNING", logger="ugatit"):
        last = train(tiny(dataset, tmp_path / "run", iterations=4, resume=True))
    assert last.name == "params_0000004.pt"
    assert "resuming with iterations 4 (the run used 2)" in caplog.text


def test_resume_from_a_damaged_checkpoint_is_a_clear_error(dataset: Path, tmp_path: Path) -> None:
    train(tiny(dataset, tmp_path / "run", iterations=2, save_every=2))
    ckpt = tmp_path / "run" / "checkpoints" / "params_0000002.pt"
    ckpt.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 2])  # truncated
    with pytest.raises(TrainingError, match="cannot resume from it, the file does not load"):
        train(tiny(dataset, tmp_path / "run", iterations=4, resume=True))


def test_non_finite_loss_stops_with_the_last_good_checkpoint(
        dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_step = tr.train_step
    calls = []

    def poisoned(*args: object, **kw: object) -> dict[str, torch.Tensor]:
        losses = real_step(*args, **kw)
        calls.append(1)
        if len(calls) == 3:
            losses["G_cam_A"] = losses["G_loss"] = torch.tensor(float("nan"))
        return losses

    monkeypatch.setattr(tr, "train_step", poisoned)
    with pytest.raises(TrainingError, match=r"step 3: non-finite loss \(G_cam_A, G_loss\)"
                       r".*params_0000002\.pt"):
        train(tiny(dataset, tmp_path / "nan"))
    assert [p.name for p in (tmp_path / "nan" / "checkpoints").iterdir()] == \
        ["params_0000002.pt"]


def test_bf16_autocast_runs_on_cpu(dataset: Path, tmp_path: Path) -> None:
    final = train(tiny(dataset, tmp_path / "bf16", iterations=1, precision="bf16"))
    assert all(torch.isfinite(v).all() for v in params(final).values())
    assert all(v.dtype == torch.float32 for v in params(final).values())  # weights stay fp32


def test_data_and_device_errors(dataset: Path, tmp_path: Path) -> None:
    with pytest.raises(TrainingError, match="trainA: missing"):
        train(tiny(tmp_path / "nowhere", tmp_path / "o1"))
    if not torch.cuda.is_available():
        with pytest.raises(TrainingError, match="CUDA is not available"):
            train(tiny(dataset, tmp_path / "o2", device="cuda"))


# ----------------------------------------------------------------------------------------
# CLI


def test_cli_merges_yaml_and_flags(dataset: Path, tmp_path: Path) -> None:
    conf = tmp_path / "t.yaml"
    conf.write_text(yaml.safe_dump({"ngf": 8, "n_res": 1, "img_size": 32, "n_dis_global": 5,
                                    "iterations": 50, "workers": 0, "device": "cpu",
                                    "n_samples": 1}))
    out = tmp_path / "cli"
    args = ["train", "--config", str(conf), "--dataset", str(dataset), "--out", str(out),
            "--ngf", "4", "--iterations", "2", "--save-every", "1", "--keep", "1"]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    opts = yaml.safe_load((out / "options.yaml").read_text())
    assert (opts["ngf"], opts["n_res"], opts["iterations"], opts["ndf"]) == (4, 1, 2, None)
    assert load_checkpoint(out / "checkpoints" / "params_0000002.pt").config.ndf == 4
    res = CliRunner().invoke(main, args)  # same OUT again: refused, one line, a hint
    assert res.exit_code == 1 and "--resume" in res.output and "Traceback" not in res.output
    res = CliRunner().invoke(main, args + ["--img-size", "30"])
    assert res.exit_code == 1 and "multiple of 4" in res.output


def test_python_m_ugatit_train_help() -> None:
    res = subprocess.run([sys.executable, "-m", "ugatit", "train", "--help"],
                         capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert res.returncode == 0
    for flag in ("--dataset", "--out", "--iterations", "--batch-size", "--ngf", "--n-res",
                 "--img-size", "--light / --full", "--device", "--precision", "--seed",
                 "--save-every", "--sample-every", "--keep", "--resume"):
        assert flag in res.stdout, flag


# ----------------------------------------------------------------------------------------
# Data parallel

DDP_SCRIPT = '''
import sys

import torch
import torch.distributed as dist

import ugatit.train as tr

seen = {}
real_step = tr.train_step


def spy(nets, *args, **kw):  # keeps this rank's networks to dump them after training
    seen.update(nets)
    return real_step(nets, *args, **kw)


tr.train_step = spy
cfg = tr.TrainConfig(dataset=sys.argv[1], out=sys.argv[2], ngf=4, ndf=4, n_res=1,
                     img_size=32, n_dis_global=5, iterations=3, save_every=3, sample_every=3,
                     workers=0, device="cpu", n_samples=1)
final = tr.train(cfg)
params = {f"{n}.{k}": v for n, m in seen.items() for k, v in m.state_dict().items()}
torch.save({"final": str(final), "world": dist.get_world_size(), "params": params},
           f"{sys.argv[2]}/rank{dist.get_rank()}.pt")
'''


def torchrun_two(dataset: Path, tmp_path: Path) -> tuple[dict, dict, Path]:
    """DDP_SCRIPT under torchrun with 2 CPU processes (gloo): (rank 0's dump, rank 1's,
    the run's folder)."""
    script = tmp_path / "ddp.py"
    script.write_text(DDP_SCRIPT)
    out = tmp_path / "ddp"
    res = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                          "--nproc-per-node", "2", str(script), str(dataset), str(out)],
                         capture_output=True, text=True, cwd=ROOT, timeout=120,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert res.returncode == 0, res.stderr[-3000:]
    r0, r1 = (torch.load(out / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    return r0, r1, out


def test_torchrun_two_processes_keep_identical_weights(dataset: Path, tmp_path: Path) -> None:
    """2 CPU processes (gloo): gradients averaged each step, so weights stay identical."""
    r0, r1, out = torchrun_two(dataset, tmp_path)
    assert r0["world"] == r1["world"] == 2 and r0["final"] == r1["final"]
    assert r0["params"].keys() == r1["params"].keys()
    assert all(torch.equal(r0["params"][k], r1["params"][k]) for k in r0["params"])
    ck = load_checkpoint(r0["final"])
    saved = {f"{n}.{k}": v for n, m in ck.networks.items() for k, v in m.state_dict().items()}
    assert all(torch.equal(saved[k], r0["params"][k]) for k in saved)
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["params_0000003.pt"]


# ----------------------------------------------------------------------------------------
# The optional paired term (--paired-weight)


def test_paired_weight_zero_ignores_pairs(dataset: Path, tmp_path: Path) -> None:
    """The default (0) is the original recipe: a dataset whose trainA/trainB share names
    trains to the same bytes as the same images under names that share nothing."""
    import shutil

    renamed = tmp_path / "renamed"
    shutil.copytree(dataset, renamed)
    for f in sorted((renamed / "trainB").iterdir()):  # "000.png" -> "b000.png": same order
        f.rename(f.with_name("b" + f.name))
    runs = [train(tiny(ds, tmp_path / name, iterations=2, sample_every=10))
            for ds, name in ((dataset, "paired_names"), (renamed, "no_pairs"))]
    a, b = (params(p) for p in runs)
    assert all(torch.equal(a[k], b[k]) for k in a)
    header = (tmp_path / "paired_names" / "losses.csv").read_text().splitlines()[0]
    assert "G_paired" not in header


def test_paired_term_is_the_l1_in_db(dataset: Path, tmp_path: Path) -> None:
    """G_paired = mean |genA2B(EO) - SAR| in dB (tile unit x 12.5 dB for [-25, 0]) and
    enters G_loss with its weight; it only moves the generators' update."""
    cfg = tiny(dataset, tmp_path, paired_weight=0.5)
    torch.manual_seed(3)
    a, b, pa, pb = torch.rand(4, 1, 3, 32, 32) * 2 - 1
    nets = tr.build_networks(cfg.model, 0, torch.device("cpu"))
    with torch.no_grad():
        expected = float((nets["genA2B"](pa)[0] - pb).abs().mean()) * 12.5
    opt_g, opt_d = tr.make_optimizers(nets, cfg)
    losses = tr.train_step(nets, opt_g, opt_d, a, b, cfg, pair=(pa, pb), db_per_unit=12.5)
    assert float(losses["G_paired"]) == pytest.approx(expected, rel=1e-5)
    base = sum(w * losses[f"{term}_{s}"] for s in "AB" for term, w in
               (("G_adv", 1), ("G_cycle", 10), ("G_identity", 10), ("G_cam", 1000)))
    assert float(losses["G_loss"]) == pytest.approx(float(base) + 0.5 * expected, rel=1e-5)
    # the same step without the pair: the discriminators move identically, genA2B does not
    nets0 = tr.build_networks(cfg.model, 0, torch.device("cpu"))
    opt_g0, opt_d0 = tr.make_optimizers(nets0, cfg)
    tr.train_step(nets0, opt_g0, opt_d0, a, b, cfg)
    for name in DISCRIMINATORS:
        assert all(torch.equal(p, q) for p, q in zip(nets[name].parameters(),
                                                     nets0[name].parameters(), strict=True))
    assert any(not torch.equal(p, q) for p, q in zip(nets["genA2B"].parameters(),
                                                     nets0["genA2B"].parameters(), strict=True))


def test_paired_run_logs_the_term(dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    train(tiny(dataset, out, iterations=2, sample_every=10, paired_weight=1.0))
    with open(out / "losses.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 and all(float(r["G_paired"]) > 0 for r in rows)


def test_paired_weight_needs_pairs_and_a_db_range(dataset: Path, tmp_path: Path) -> None:
    import json
    import shutil

    no_pairs = tmp_path / "no_pairs"
    shutil.copytree(dataset, no_pairs)
    for f in (no_pairs / "trainB").iterdir():
        f.rename(f.with_name("b" + f.name))
    with pytest.raises(TrainingError, match="no co-registered pairs"):
        train(tiny(no_pairs, tmp_path / "o1", paired_weight=1.0))
    relative = tmp_path / "relative"
    shutil.copytree(dataset, relative)
    (relative / "dataset.json").write_text(json.dumps(
        {"radiometry": {"sar": {"units": "linear", "db_range": None}}}))
    with pytest.raises(TrainingError, match="absolute dB range"):
        train(tiny(relative, tmp_path / "o2", paired_weight=1.0))


# ----------------------------------------------------------------------------------------
# Host synchronisations and precision (issue: the step on a GPU)


SYNC_METHODS = ("item", "__bool__", "__float__", "__int__", "tolist", "cpu", "numpy")


def test_steps_between_checks_never_wait_for_the_device(
        dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Counting on CPU what would stall a GPU: no host synchronisation inside a step or in
    the NaN guard's per-step update; one look at the losses per log/checkpoint step."""
    counts = {"step": 0, "update": 0, "check": 0}
    where: list[str] = []
    for name in SYNC_METHODS:
        original = getattr(torch.Tensor, name)

        def spy(self: torch.Tensor, *a: object, _orig: object = original, **k: object) -> object:
            # Adam's step counter is a CPU tensor by design (also on CUDA, unless fused or
            # capturable): its .item() never waits for the GPU, so it is not counted.
            if where and "torch/optim" not in sys._getframe(1).f_code.co_filename:
                counts[where[-1]] += 1
            return _orig(self, *a, **k)  # type: ignore[operator]
        monkeypatch.setattr(torch.Tensor, name, spy)

    def within(label: str, fn: object) -> object:
        def wrapped(*a: object, **k: object) -> object:
            where.append(label)
            try:
                return fn(*a, **k)  # type: ignore[operator]
            finally:
                where.pop()
        return wrapped

    checks = []
    real_check = tr.FiniteGuard.check
    monkeypatch.setattr(tr, "train_step", within("step", tr.train_step))
    monkeypatch.setattr(tr.FiniteGuard, "update", within("update", tr.FiniteGuard.update))
    monkeypatch.setattr(tr.FiniteGuard, "check",
                        lambda self, *a: (checks.append(1), within("check", real_check)(self, *a)))
    train(tiny(dataset, tmp_path / "run", iterations=12, log_every=4, save_every=6,
               sample_every=100))
    assert counts["step"] == 0 and counts["update"] == 0
    assert len(checks) == 4  # steps 4, 6, 8, 12 (log or checkpoint), not 12 times
    assert counts["check"] == len(checks)  # one transfer per check


def test_non_finite_step_between_checks_is_named_and_never_saved(
        dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """NaN at step 3 is found at the next check (step 4, a checkpoint step), named as step
    3, and the checkpoint of step 4 is not written."""
    real_step = tr.train_step
    calls = []

    def poisoned(*args: object, **kw: object) -> dict[str, torch.Tensor]:
        losses = real_step(*args, **kw)
        calls.append(1)
        if len(calls) == 3:
            losses["D_GB"] = torch.tensor(float("inf"))
        return losses

    monkeypatch.setattr(tr, "train_step", poisoned)
    with pytest.raises(TrainingError, match=r"step 3: non-finite loss \(D_GB\)"):
        train(tiny(dataset, tmp_path / "nan", iterations=6, log_every=4, save_every=4))
    assert not (tmp_path / "nan" / "checkpoints").exists() or \
        not list((tmp_path / "nan" / "checkpoints").iterdir())


def test_spectral_norm_runs_in_fp32_under_autocast(
        dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The power iteration runs with autocast OFF: on CUDA bf16 autocast would run its
    torch.mv in bf16 (CPU autocast leaves mv alone, so the state is what we can check)."""
    cfg = tiny(dataset, tmp_path)
    seen: list[bool] = []
    real_mv = torch.mv

    def spy(*a: object, **k: object) -> torch.Tensor:
        seen.append(torch.is_autocast_enabled("cpu"))
        return real_mv(*a, **k)  # type: ignore[arg-type]

    monkeypatch.setattr(torch, "mv", spy)
    nets = tr.build_networks(cfg.model, 0, torch.device("cpu"))
    plain = tr.build_network("disGA", cfg.model).train()  # without the wrapper
    x = torch.rand(1, 3, 32, 32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        nets["disGA"](x)
        wrapped, seen[:] = list(seen), []
        plain(x)
    assert wrapped and not any(wrapped)
    assert seen and all(seen)  # the control: an unwrapped hook runs under autocast
    assert set(nets["disGA"].state_dict()) == set(plain.state_dict())


# ----------------------------------------------------------------------------------------
# Multiband: 4 optical bands in, VV and VH out (float32 GeoTIFF tiles of `pipeline tiles`)


@pytest.fixture(scope="module")
def multiband(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_multiband_dataset(tmp_path_factory.mktemp("mb") / "ds")


def test_a_4_to_2_model_trains_from_the_tiles_channel_counts(
        multiband: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Channels come from the tiles (4 in, 2 out), identity is skipped and said so, the
    checkpoint carries the contract with band names and polarisations, and it exports
    and translates like a 3 -> 3 one (generator output: 2 channels)."""
    final = train(tiny(multiband, tmp_path / "run", paired_weight=1.0))
    printed = capsys.readouterr().out
    assert "channels: 4 in (trainA), 2 out (trainB)" in printed
    assert "identity: SKIPPED" in printed
    ck = load_checkpoint(final)
    assert (ck.config.in_ch, ck.config.out_ch) == (4, 2)
    assert ck.radiometry["eo"]["common_names"] == ["red", "green", "blue", "nir"]
    assert ck.radiometry["sar"]["polarisations"] == ["VV", "VH"]
    rows = list(csv.DictReader((tmp_path / "run" / "losses.csv").open()))
    assert all(float(r["G_identity_A"]) == 0.0 == float(r["G_identity_B"]) for r in rows)
    assert all(float(r["G_paired"]) > 0 for r in rows)
    exported = export_generator(final, tmp_path / "gen.pt")
    gen = load_checkpoint(exported).genA2B
    with torch.no_grad():
        out, cam, heat = gen(torch.zeros(1, 4, 32, 32))
    assert out.shape == (1, 2, 32, 32) and torch.isfinite(out).all()
    with pytest.raises(ValueError):  # the 4-band generator refuses an RGB batch
        gen.check_input(torch.zeros(1, 3, 32, 32))


def test_a_4_to_2_run_resumes_bit_exactly(multiband: Path, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """As test_resume_is_exact, on multiband tiles with the per-polarisation paired term:
    the array path draws the same flips and crops from the same streams."""
    kw = {"paired_weight": 1.0}
    whole = train(tiny(multiband, tmp_path / "whole", **kw))
    real_step = tr.train_step

    def killed_at_3(*args: object, **kwargs: object) -> dict[str, torch.Tensor]:
        if len(list((tmp_path / "split" / "checkpoints").iterdir())) == 1:
            raise KeyboardInterrupt
        return real_step(*args, **kwargs)

    monkeypatch.setattr(tr, "train_step", killed_at_3)
    with pytest.raises(KeyboardInterrupt):
        train(tiny(multiband, tmp_path / "split", **kw))
    monkeypatch.setattr(tr, "train_step", real_step)
    resumed = train(tiny(multiband, tmp_path / "split", resume=True, workers=1, **kw))
    a, b = params(whole), params(resumed)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_torchrun_two_processes_train_a_4_to_2_model(multiband: Path, tmp_path: Path) -> None:
    r0, r1, _ = torchrun_two(multiband, tmp_path)
    assert all(torch.equal(r0["params"][k], r1["params"][k]) for k in r0["params"])
    assert load_checkpoint(r0["final"]).config.in_ch == 4


def test_the_paired_term_is_per_polarisation_in_db() -> None:
    """VV and VH cut on [-25, 0] and [-32.5, 0] dB: one tile unit is 12.5 and 16.25 dB, so
    an error of 0.1 units in each is (1.25 + 1.625) / 2 dB."""

    class Const(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, None, None]:
            return torch.zeros(1, 2, 4, 4), None, None

    sar = torch.full((1, 2, 4, 4), 0.1)
    got = tr.paired_term(Const(), torch.zeros(1, 4, 4, 4), sar, torch.tensor([12.5, 16.25]))
    assert float(got) == pytest.approx((1.25 + 1.625) / 2, rel=1e-6)

"""Checkpoint I/O: both formats round-trip, config inference, safety and clear errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ugatit import (
    CheckpointError,
    ModelConfig,
    export_generator,
    init_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from ugatit.checkpoint import read_state_dicts
from ugatit.legacy import infer_config
from ugatit.networks import NETWORK_NAMES, build_network

SMALL = ModelConfig(ngf=4, n_res=2, ndf=4)


def _networks(cfg: ModelConfig, seed: int = 1) -> dict[str, torch.nn.Module]:
    torch.manual_seed(seed)
    nets = {n: build_network(n, cfg).eval() for n in NETWORK_NAMES}
    # Move every ILN/adaILN parameter off its init value, so a loader that silently kept
    # the initial values would be caught by the output comparison.
    with torch.no_grad():
        for net in nets.values():
            for name, p in net.named_parameters():
                if name.endswith(("rho", "gamma", "beta")) and p.ndim == 4:
                    p.uniform_(0.2, 0.8)
    return nets


def _same_outputs(a: torch.nn.Module, b: torch.nn.Module, x: torch.Tensor) -> None:
    with torch.inference_mode():
        for ya, yb in zip(a(x), b(x), strict=True):
            # Same weights, same code, same input: bitwise equality is expected.
            assert torch.equal(ya, yb)


@pytest.mark.parametrize("fmt", ["seed", "eo2sar"])
def test_round_trip_all_six_networks(tmp_path: Path, fmt: str) -> None:
    nets = _networks(SMALL)
    path = save_checkpoint(tmp_path / "ck.pt", nets, SMALL, fmt=fmt)
    ck = load_checkpoint(path)
    assert ck.format == fmt
    assert ck.config == SMALL
    assert ck.available == NETWORK_NAMES
    x = torch.rand(2, 3, 128, 128) * 2 - 1
    for name in NETWORK_NAMES:
        net = getattr(ck, name)
        assert not net.training
        assert not any(p.requires_grad for p in net.parameters())
        _same_outputs(nets[name], net, x)


def test_seed_format_is_the_original_plain_dict(tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path / "seed.pt", _networks(SMALL), SMALL, fmt="seed")
    obj = torch.load(path, weights_only=True)
    assert sorted(obj) == sorted(NETWORK_NAMES)
    assert all(t.dtype == torch.float32 for sd in obj.values() for t in sd.values())
    assert "DownBlock.1.weight" in obj["genA2B"]
    assert "model.1.weight_orig" in obj["disGA"] and "model.1.weight" not in obj["disGA"]


def test_eo2sar_format_carries_config_and_version(tmp_path: Path) -> None:
    path = init_checkpoint(tmp_path / "ck.pt", SMALL)
    obj = torch.load(path, weights_only=True)
    assert obj["format"] == "eo2sar" and obj["format_version"] == 1
    assert ModelConfig.from_dict(obj["config"]) == SMALL
    assert set(obj["networks"]) == {"genA2B", "genB2A"}


@pytest.mark.parametrize(
    "cfg",
    [ModelConfig(ngf=4, n_res=3), ModelConfig(ngf=8, n_res=1, light=False, img_size=32),
     ModelConfig(ngf=4, n_res=2, ndf=8, n_dis_global=6, n_dis_local=4)],
)
def test_config_inferred_from_seed_shapes(tmp_path: Path, cfg: ModelConfig) -> None:
    path = init_checkpoint(tmp_path / "s.pt", cfg, networks=NETWORK_NAMES, fmt="seed")
    fmt, _, inferred = read_state_dicts(path)
    assert fmt == "seed"
    # Light configs here use img_size 256, the value inferred when the file cannot tell.
    assert inferred == cfg


def test_full_variant_seed_file_loads_and_computes(tmp_path: Path) -> None:
    """A full-variant seed file (img_size from the FC shape) loads and gives the same outputs."""
    cfg = ModelConfig(ngf=4, n_res=1, light=False, img_size=32, ndf=4)
    nets = _networks(cfg)
    path = save_checkpoint(tmp_path / "full.pt", nets, cfg, fmt="seed")
    ck = load_checkpoint(path)
    assert ck.format == "seed" and ck.config == cfg
    _same_outputs(nets["genA2B"], ck.genA2B, torch.rand(2, 3, 32, 32) * 2 - 1)
    _same_outputs(nets["genB2A"], ck.genB2A, torch.rand(1, 3, 32, 32) * 2 - 1)


@pytest.mark.parametrize("case", ["no_residual_blocks", "network_not_a_dict",
                                  "unknown_network_in_eo2sar", "discriminator_without_model_1"])
def test_malformed_files_are_checkpoint_errors(tmp_path: Path, case: str) -> None:
    """Files that unpickle but are not usable must fail as CheckpointError (one line, naming
    the file), never as a KeyError/ValueError traceback from deep inside the loader."""
    nets = {n: net.state_dict() for n, net in _networks(SMALL).items()}
    obj: object
    if case == "no_residual_blocks":
        obj = {"genA2B": {k: v for k, v in nets["genA2B"].items()
                          if not k.startswith("UpBlock1_")}}
        match = "no valid architecture"
    elif case == "network_not_a_dict":
        obj = {**nets, "genB2A": torch.zeros(3)}
        match = "genB2A is a Tensor"
    elif case == "unknown_network_in_eo2sar":
        path = init_checkpoint(tmp_path / "ck.pt", SMALL)
        obj = torch.load(path, weights_only=True)
        obj["networks"]["genC2D"] = obj["networks"]["genA2B"]
        match = "unknown networks"
    else:
        obj = {"disGA": {k: v for k, v in nets["disGA"].items() if not k.startswith("model.1.")}}
        match = "missing key 'model.1.weight_orig'"
    torch.save(obj, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match=match) as err:
        load_checkpoint(tmp_path / "bad.pt")
    assert "bad.pt" in str(err.value) and "\n" not in str(err.value)


def test_full_variant_img_size_from_fc_shape() -> None:
    dim = 4 * 4
    sd = {"DownBlock.1.weight": torch.zeros(4, 3, 7, 7),
          "UpBlock2.11.weight": torch.zeros(3, 4, 7, 7),
          "FC.0.weight": torch.zeros(dim, dim * 12 * 12), "UpBlock1_1.conv1.weight": torch.zeros(1)}
    cfg = infer_config({"genA2B": sd})
    assert (cfg.light, cfg.img_size, cfg.ngf, cfg.n_res) == (False, 48, 4, 1)
    sd["FC.0.weight"] = torch.zeros(dim, dim * 10)  # 10 is not a square
    with pytest.raises(CheckpointError, match="FC.0.weight"):
        infer_config({"genA2B": sd})


def test_bare_generator_state_dict_loads_as_genA2B(tmp_path: Path) -> None:
    net = _networks(SMALL)["genA2B"]
    torch.save(net.state_dict(), tmp_path / "g.pt")
    ck = load_checkpoint(tmp_path / "g.pt")
    assert ck.available == ("genA2B",)
    _same_outputs(net, ck.genA2B, torch.rand(1, 3, 32, 32))


def test_selective_load_builds_only_what_is_asked(tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path / "ck.pt", _networks(SMALL), SMALL, fmt="seed")
    ck = load_checkpoint(path, networks=("genA2B",))
    assert set(ck.networks) == {"genA2B"}
    assert ck.available == NETWORK_NAMES
    with pytest.raises(AttributeError, match="not loaded"):
        _ = ck.disGA
    with pytest.raises(CheckpointError, match="holds no disGA"):
        load_checkpoint(init_checkpoint(tmp_path / "g.pt", SMALL), networks=("disGA",))


class _Exploit:
    """A pickle payload that would create a marker file when unpickled."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def test_pickle_that_runs_code_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"genA2B": {"DownBlock.1.weight": torch.zeros(1)}, "x": _Exploit(str(marker))},
               path)
    with pytest.raises(CheckpointError, match="refused"):
        load_checkpoint(path)
    assert not marker.exists()


@pytest.mark.parametrize(
    "content", [b"", b"hello", b"not a checkpoint at all", b"PK\x03\x04garbage", b"\x80\x02}q\x00."]
)
def test_garbage_file_is_a_checkpoint_error(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match="bad.pt: not a") as err:
        load_checkpoint(path)
    assert "refused" not in str(err.value)  # garbage is not reported as a code-running pickle


def test_truncated_file_is_a_checkpoint_error(tmp_path: Path) -> None:
    good = init_checkpoint(tmp_path / "good.pt", SMALL)
    data = good.read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="cut.pt"):
        load_checkpoint(tmp_path / "cut.pt")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nope.pt")


def test_not_a_ugatit_dict(tmp_path: Path) -> None:
    torch.save({"model": {"w": torch.zeros(2)}}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a U-GAT-IT checkpoint"):
        load_checkpoint(tmp_path / "other.pt")


def test_wrong_shape_names_key_and_both_shapes(tmp_path: Path) -> None:
    nets = {n: net.state_dict() for n, net in _networks(SMALL).items()}
    nets["genA2B"]["conv1x1.bias"] = torch.zeros(7)
    torch.save(nets, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(tmp_path / "bad.pt")
    msg = str(err.value)
    assert "genA2B" in msg and "'conv1x1.bias'" in msg and "[7]" in msg and "[16]" in msg


def test_config_that_disagrees_with_weights(tmp_path: Path) -> None:
    path = init_checkpoint(tmp_path / "ck.pt", SMALL)
    obj = torch.load(path, weights_only=True)
    obj["config"]["ngf"] = 8
    torch.save(obj, path)
    msg = r"key 'gap_fc.weight' has shape \[1, 16\], expected \[1, 32\]"
    with pytest.raises(CheckpointError, match=msg):
        load_checkpoint(path)


def test_missing_key(tmp_path: Path) -> None:
    nets = {n: net.state_dict() for n, net in _networks(SMALL).items()}
    del nets["disLA"]["conv.weight_u"]
    torch.save(nets, tmp_path / "bad.pt")
    load_checkpoint(tmp_path / "bad.pt", networks=("genA2B",))  # the broken net is not asked
    with pytest.raises(CheckpointError, match=r"disLA.*missing \['conv.weight_u'\]"):
        load_checkpoint(tmp_path / "bad.pt")


def test_newer_format_version_refused(tmp_path: Path) -> None:
    path = init_checkpoint(tmp_path / "ck.pt", SMALL)
    obj = torch.load(path, weights_only=True)
    obj["format_version"] = 99
    torch.save(obj, path)
    with pytest.raises(CheckpointError, match="newer"):
        load_checkpoint(path)


def test_cuda_saved_checkpoint_loads_on_cpu(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Write a file whose storages are tagged 'cuda:0', as torch.save does on a GPU."""
    from torch import serialization

    nets = _networks(SMALL)
    monkeypatch.setattr(serialization, "location_tag", lambda storage: "cuda:0")
    path = save_checkpoint(tmp_path / "cuda.pt", nets, SMALL, fmt="seed")
    monkeypatch.undo()
    if not torch.cuda.is_available():
        # Proof that the file really is CUDA-tagged: a plain load fails on this machine.
        with pytest.raises(RuntimeError, match="CUDA"):
            torch.load(path, weights_only=True)
    ck = load_checkpoint(path, device="cpu")
    _same_outputs(nets["genA2B"], ck.genA2B, torch.rand(1, 3, 32, 32))


@pytest.mark.parametrize("half", [False, True])
def test_export_generator_only(tmp_path: Path, half: bool) -> None:
    nets = _networks(SMALL)
    src = save_checkpoint(tmp_path / "seed.pt", nets, SMALL, fmt="seed")
    dst = export_generator(src, tmp_path / "gen.pt", half=half)
    ck = load_checkpoint(dst)
    assert ck.available == ("genA2B",) and ck.config == SMALL
    assert next(ck.genA2B.parameters()).dtype == torch.float32  # fp16 storage loads as fp32
    x = torch.rand(1, 3, 64, 64) * 2 - 1
    if half:
        with torch.inference_mode():
            a, b = nets["genA2B"](x)[0], ck.genA2B(x)[0]
        # fp16 weights carry ~3 significant digits; tanh outputs in [-1, 1] move by ~1e-3.
        assert (a - b).abs().max() < 2e-2
        assert dst.stat().st_size < 0.6 * export_generator(src, tmp_path / "f32.pt").stat().st_size
    else:
        _same_outputs(nets["genA2B"], ck.genA2B, x)
    assert dst.stat().st_size < src.stat().st_size


def test_seed_format_refuses_half(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="float32"):
        save_checkpoint(tmp_path / "x.pt", _networks(SMALL), SMALL, fmt="seed", half=True)


def test_save_is_atomic_on_failure(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        save_checkpoint(tmp_path / "x.pt", {"nope": torch.nn.Linear(1, 1)}, SMALL)
    assert list(tmp_path.iterdir()) == []


def test_saved_file_permissions_follow_umask(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        path = init_checkpoint(tmp_path / "ck.pt", SMALL)
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644  # not mkstemp's 0600


def test_init_is_deterministic_and_keeps_global_rng(tmp_path: Path) -> None:
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = init_checkpoint(tmp_path / "a.pt", SMALL, seed=5)
    after = torch.rand(1)
    b = init_checkpoint(tmp_path / "b.pt", SMALL, seed=5)
    assert torch.equal(before, after)
    sa, sb = (torch.load(p, weights_only=True)["networks"]["genA2B"] for p in (a, b))
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_only_requested_networks_are_resident(tmp_path: Path) -> None:
    """Loading genA2B from a file with big discriminators must not read them into memory.

    Two subprocesses load the same file (ngf 4 generators, ndf 64 discriminators: ~430 MB
    of which ~2 MB generators); peak RSS differs by roughly the discriminators' size.
    """
    cfg = ModelConfig(ngf=4, n_res=1, ndf=64)
    path = init_checkpoint(tmp_path / "big.pt", cfg, networks=NETWORK_NAMES, fmt="seed")
    size_mb = path.stat().st_size / 2**20
    assert size_mb > 400
    code = (
        # VmHWM (peak RSS of this exec'd image); ru_maxrss would inherit the parent's peak.
        "import re, sys, json; from ugatit import load_checkpoint; "
        "nets = None if sys.argv[2] == 'all' else ('genA2B',); "
        "ck = load_checkpoint(sys.argv[1], networks=nets); "
        "hwm = re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1); "
        "print(json.dumps(int(hwm) / 1024))"
    )
    peaks = {}
    for which in ("gen", "all"):
        out = subprocess.run([sys.executable, "-c", code, str(path), which], check=True,
                             capture_output=True, text=True).stdout
        peaks[which] = json.loads(out)
    # Loading everything holds >= 400 MB more; the generator-only load stays far below that.
    assert peaks["all"] - peaks["gen"] > 0.8 * 400, peaks


def test_set_tf32_toggles_both_backends() -> None:
    from ugatit import set_tf32

    before = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    try:
        set_tf32(False)
        assert not torch.backends.cudnn.allow_tf32
        assert not torch.backends.cuda.matmul.allow_tf32
        set_tf32(True)
        assert torch.backends.cudnn.allow_tf32 and torch.backends.cuda.matmul.allow_tf32
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = before

"""Hostile checkpoints (issue 10, item 7), as users hit them: `pipeline run`, app.py,
`ugatit info` and `ugatit train --resume`.

Each file is crafted the way an attacker or a broken disk would make it: a pickle that
runs code, a zip whose member names climb out of the folder, tensors that declare absurd
shapes or dtypes, a truncated zip, NaN/Inf weights. The outcome is always a typed,
one-line refusal (CheckpointError -> ModelError / AppError / ClickException), nothing
executed, nothing written outside (or inside) the output path; a file that declares
terabytes is refused from its shapes alone, under a hard address-space limit.
"""

from __future__ import annotations

import collections
import io
import json
import os
import pickle
import subprocess
import sys
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from click.testing import CliRunner

import pipeline.cli
import ugatit.cli
from tests.faults.fuzzdriver import app  # app.py, loaded once
from tests.helpers import REPO, SN6, make_dataset
from ugatit import CheckpointError, ModelConfig, load_checkpoint, save_checkpoint
from ugatit.checkpoint import read_state_dicts
from ugatit.errors import TrainingError
from ugatit.networks import build_network
from ugatit.train import TrainConfig, train

#: address-space cap of the subprocess that opens files declaring terabytes: importing
#: torch + rasterio + dask maps ~1.5 GiB; the crafted files below ask for 13 GiB or more
MEMORY_LIMIT = 4 << 30


# ---------------------------------------------------------------- crafting files


class _Storage:
    """Pickled as torch's persistent id of a storage: ("storage", type, key, "cpu", numel)."""

    def __init__(self, key: str, numel: int, kind: type = torch.FloatStorage) -> None:
        self.key, self.numel, self.kind = key, numel, kind


class _Tensor:
    """Pickled as torch._utils._rebuild_tensor_v2(storage, 0, size, stride): the exact
    opcodes torch.save writes, with any size/stride we like."""

    def __init__(self, storage: _Storage, size: tuple[int, ...],
                 stride: tuple[int, ...] | None = None) -> None:
        self.storage, self.size = storage, size
        self.stride = stride if stride is not None else _contiguous(size)

    def __reduce__(self) -> tuple[Any, ...]:
        return (torch._utils._rebuild_tensor_v2,
                (self.storage, 0, self.size, self.stride, False, collections.OrderedDict()))


def _contiguous(size: tuple[int, ...]) -> tuple[int, ...]:
    stride, acc = [], 1
    for d in reversed(size):
        stride.insert(0, acc)
        acc *= d
    return tuple(stride)


class _Pickler(pickle.Pickler):
    def persistent_id(self, obj: Any) -> Any:
        if isinstance(obj, _Storage):
            return ("storage", obj.kind, obj.key, "cpu", obj.numel)
        return None


def craft_torch_zip(path: Path, obj: Any, records: dict[str, bytes]) -> Path:
    """A torch zip checkpoint whose data.pkl pickles `obj` (with _Tensor/_Storage stand-ins)
    and whose data/KEY records hold `records`: what torch.save would write for them."""
    buf = io.BytesIO()
    _Pickler(buf, protocol=2).dump(obj)
    writer = torch._C.PyTorchFileWriter(str(path))
    for name, data in {"data.pkl": buf.getvalue(), "version": b"3\n",
                       **{f"data/{k}": v for k, v in records.items()}}.items():
        writer.write_record(name, data, len(data))
    writer.write_end_of_file()
    return path


def stride0_generator(path: Path, cfg: ModelConfig, fmt: str) -> Path:
    """genA2B of `cfg` where every tensor is a stride-0 view of ONE 16-byte storage: the
    shapes (and, for the eo2sar format, the stored config) are consistent, so without a
    size check the networks would be built at the declared size."""
    with torch.device("meta"):
        shapes = {k: tuple(v.shape) for k, v in build_network("genA2B", cfg).state_dict().items()}
    one = _Storage("0", 4)
    sd = {k: _Tensor(one, s, (0,) * len(s)) for k, s in shapes.items()}
    obj: dict[str, Any] = {"genA2B": sd}
    if fmt == "eo2sar":
        obj = {"format": "eo2sar", "format_version": 1, "config": cfg.to_dict(),
               "networks": obj, "meta": {}}
    return craft_torch_zip(path, obj, {"0": bytes(16)})


class _RunsCode:
    """Unpickling it would create the marker file: the test proves it never appears."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch '{self.marker}'",))


def _poisoned(src: Path, dst: Path, value: float, key: str) -> Path:
    """A copy of checkpoint `src` with one element of genA2B[key] set to `value`."""
    _, nets, cfg = read_state_dicts(src)
    sd = {k: v.clone() for k, v in nets["genA2B"].items()}
    sd[key].view(-1)[0] = value
    return save_checkpoint(dst, {"genA2B": sd}, cfg)


# ---------------------------------------------------------------- the three entry points


def files_under(root: Path) -> set[str]:
    """Every file and folder under `root`, hidden ones included."""
    return {p.relative_to(root).as_posix() for p in root.rglob("*")}


def run_all(model: Path, work: Path) -> dict[str, tuple[int, str]]:
    """Use `model` as a user would, in this process: `pipeline run` on a real scene,
    app.py on the same chip, `ugatit info`. {entry: (exit status, last output line)};
    every output goes under work/out."""
    out = work / "out"
    out.mkdir(parents=True, exist_ok=True)
    res = CliRunner().invoke(pipeline.cli.main, [
        "run", str(SN6), str(out / "sar.tif"), "--model", str(model), "-q",
        "--tile-size", "64", "--overlap", "16"])
    got = {"pipeline": (res.exit_code, _last_line(res.output))}
    err = io.StringIO()
    with _redirect_stderr(err):
        status = app.main(["--device", "cpu", "--model_path", str(model), "--img", str(SN6),
                           "--out", str(out / "app.png")])
    got["app"] = (status, _last_line(err.getvalue()))
    res = CliRunner().invoke(ugatit.cli.main, ["info", str(model)])
    got["info"] = (res.exit_code, _last_line(res.output))
    return got


def _last_line(text: str) -> str:
    lines = [ln for ln in text.replace("\r", "\n").splitlines() if ln.strip()]
    return lines[-1] if lines else ""


class _redirect_stderr:
    def __init__(self, stream: io.StringIO) -> None:
        self.stream = stream

    def __enter__(self) -> None:
        self.saved, sys.stderr = sys.stderr, self.stream

    def __exit__(self, *exc: object) -> None:
        sys.stderr = self.saved


def assert_refused_everywhere(model: Path, work: Path, *needles: str) -> None:
    """All three entry points exit 1 with one line naming the file and each needle, and
    write nothing at all (no output, no temporary file) under work."""
    before = files_under(work)
    got = run_all(model, work)
    for entry, (status, line) in got.items():
        assert status == 1, (entry, line)
        assert str(model) in line, (entry, line)
        for needle in needles:
            assert needle in line, (entry, line)
    assert files_under(work) - before <= {"out"}, files_under(work) - before
    assert not any((work / "out").iterdir())


@pytest.fixture
def work(tmp_path: Path) -> Path:
    (tmp_path / "work").mkdir()
    return tmp_path / "work"


# ---------------------------------------------------------------- code in the pickle


@pytest.mark.filterwarnings("ignore:Detected pickle protocol 4")  # torch's, on raw-pickle-4
@pytest.mark.parametrize("form", ["torch-zip", "raw-pickle-2", "raw-pickle-4"])
def test_a_pickle_that_runs_code_is_refused_and_never_runs(form: str, tmp_path: Path,
                                                           work: Path) -> None:
    marker = tmp_path / "MARKER"
    model = tmp_path / "evil.pt"
    payload = {"genA2B": _RunsCode(marker)}
    if form == "torch-zip":
        torch.save(payload, model)
    else:
        model.write_bytes(pickle.dumps(payload, protocol=int(form[-1])))
    with pytest.raises(CheckpointError):
        load_checkpoint(model)
    # a pickle of protocol 4 fails on its frame opcode, before the global: "does not decode"
    needle = "refused" if form != "raw-pickle-4" else "not a PyTorch checkpoint"
    assert_refused_everywhere(model, work, needle)
    assert not marker.exists()
    if form != "raw-pickle-4":  # the refusal says why, and names the blocked callable
        assert "system" in str(pytest.raises(CheckpointError, load_checkpoint, model).value)


# ---------------------------------------------------------------- path traversal


def test_zip_members_climbing_out_are_refused_and_nothing_is_written(
        tiny_checkpoint: Path, tmp_path: Path, work: Path) -> None:
    """Extra members '../../x' and an absolute path; and every member under '../': torch
    never extracts a member, and refuses an archive whose members leave its folder."""
    climbing = tmp_path / "nest" / "climb.pt"
    climbing.parent.mkdir()
    climbing.write_bytes(tiny_checkpoint.read_bytes())
    with zipfile.ZipFile(climbing, "a") as z:
        z.writestr("../../escape.txt", "x")
        z.writestr(str(tmp_path / "abs_escape.txt"), "x")
    renamed = tmp_path / "nest" / "renamed.pt"
    with zipfile.ZipFile(tiny_checkpoint) as src, zipfile.ZipFile(renamed, "w") as dst:
        for info in src.infolist():
            dst.writestr("../" + info.filename, src.read(info))
    everything = files_under(tmp_path)
    for model in (climbing, renamed):
        assert_refused_everywhere(model, work, "not a readable PyTorch checkpoint")
    assert files_under(tmp_path) - everything <= {"work/out"}
    assert not list(tmp_path.parent.glob("*escape*")) and not list(Path("/").glob("escape*"))


# ---------------------------------------------------------------- absurd shapes / dtypes


def test_a_storage_declaring_a_terabyte_is_refused_by_torch(work: Path, tmp_path: Path
                                                            ) -> None:
    """torch checks each storage against its record's size (16 bytes here)."""
    model = craft_torch_zip(tmp_path / "tb.pt",
                            {"genA2B": {"w": _Tensor(_Storage("0", 10**12), (10**12,))}},
                            {"0": bytes(16)})
    assert_refused_everywhere(model, work, "not a readable PyTorch checkpoint")


@pytest.mark.parametrize("kind, needle", [(torch.ComplexFloatStorage, "complex64"),
                                          (torch.IntStorage, "int32")])
def test_a_weight_of_another_dtype_is_refused(kind: type, needle: str, tiny_checkpoint: Path,
                                              work: Path, tmp_path: Path) -> None:
    """Right keys and shapes, wrong dtype (complex, int): refused before loading weights.
    `ugatit info` only reports the file and exits 0."""
    _, nets, cfg = read_state_dicts(tiny_checkpoint)
    records, sd = {}, {}
    for i, (key, t) in enumerate(nets["genA2B"].items()):
        records[str(i)] = bytes(t.numel() * 8)
        sd[key] = _Tensor(_Storage(str(i), t.numel(), kind), tuple(t.shape))
    model = craft_torch_zip(tmp_path / "dtype.pt", {"format": "eo2sar", "format_version": 1,
                                                    "config": cfg.to_dict(),
                                                    "networks": {"genA2B": sd}}, records)
    with pytest.raises(CheckpointError, match=f"dtype torch.{needle}, expected float"):
        load_checkpoint(model)
    got = run_all(model, work)
    assert got["pipeline"][0] == 1 and f"dtype torch.{needle}, expected float" in \
        got["pipeline"][1]
    assert got["app"][0] == 1 and f"dtype torch.{needle}" in got["app"][1]
    assert got["info"][0] == 0
    assert not any((work / "out").iterdir())


_MEMORY_DRIVER = """
import json, resource
from pathlib import Path
import tests.faults.test_hostile_checkpoints as t  # imports first: bound what follows
resource.setrlimit(resource.RLIMIT_AS, ({limit}, {limit}))
print(json.dumps({{m: t.run_all(Path(m), Path(w)) for m, w in {cases!r}}}))
"""


def test_shapes_declaring_13_gib_in_a_3_kb_file_are_refused_before_allocating(
        tmp_path: Path) -> None:
    """Stride-0 views make a 3 KB file declare a consistent ngf-2048 generator (13 GiB in
    float32). Found by this test: the networks were built at that size (an allocation
    failure at best, the OOM killer at worst). Now the declared bytes are checked against
    the file size first. Run in a subprocess under a 4 GiB address-space limit, so a
    regression fails this test instead of exhausting the machine."""
    cfg = ModelConfig(ngf=2048, n_res=1)
    cases = []
    for fmt in ("eo2sar", "seed"):  # stored config / config inferred from the shapes
        model = stride0_generator(tmp_path / f"stride0_{fmt}.pt", cfg, fmt)
        assert model.stat().st_size < 8192
        (tmp_path / fmt).mkdir()
        cases.append((str(model), str(tmp_path / fmt)))
    driver = _MEMORY_DRIVER.format(limit=MEMORY_LIMIT, cases=cases)
    proc = subprocess.run([sys.executable, "-c", driver], cwd=REPO, capture_output=True,
                          text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    for model, per_entry in results.items():
        for entry, (status, line) in per_entry.items():
            assert status == 1, (model, entry, line)
            assert "refused" in line and "bytes but the file holds only" in line, line
    for _, out in cases:
        assert not any((Path(out) / "out").iterdir())


# ---------------------------------------------------------------- truncated zips


@pytest.mark.parametrize("keep", [0.0, 0.01, 0.5, 0.97, -1])
def test_a_truncated_checkpoint_is_refused(keep: float, tiny_checkpoint: Path, tmp_path: Path,
                                          work: Path) -> None:
    data = tiny_checkpoint.read_bytes()
    cut = len(data) - 1 if keep == -1 else int(len(data) * keep)
    model = tmp_path / "cut.pt"
    model.write_bytes(data[:cut])
    with pytest.raises(CheckpointError, match="not a"):
        load_checkpoint(model)
    if keep in (0.5, -1):  # the entry points share load_checkpoint: two cuts suffice there
        assert_refused_everywhere(model, work, "not a")


# ---------------------------------------------------------------- NaN / Inf weights


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_nan_or_inf_weights_stop_before_any_output(value: float, tiny_checkpoint: Path,
                                                   tmp_path: Path, work: Path) -> None:
    """The file is well formed; its weights would make every output pixel NaN. pipeline
    run and app.py refuse it before writing; `ugatit info` still describes it."""
    model = _poisoned(tiny_checkpoint, tmp_path / "nan.pt", value, "UpBlock2.11.weight")
    with pytest.raises(CheckpointError, match="genA2B key 'UpBlock2.11.weight' holds NaN or "
                                              "Inf values"):
        load_checkpoint(model)
    got = run_all(model, work)
    for entry in ("pipeline", "app"):
        status, line = got[entry]
        assert status == 1 and "holds NaN or Inf values" in line and str(model) in line, line
    assert got["info"][0] == 0
    assert not any((work / "out").iterdir())  # no output, no temporary file


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[Path], Path]]:
    """copy(dst) -> a copy at dst of a 2-step training run (ngf 4, 32 px)."""
    root = tmp_path_factory.mktemp("hostile_train")
    dataset = make_dataset(root / "ds")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    cfg = TrainConfig(dataset=str(dataset), out=str(root / "run"), ngf=4, ndf=4, n_res=1,
                      img_size=32, n_dis_global=5, iterations=2, save_every=2, sample_every=2,
                      log_every=1, workers=0, device="cpu", n_samples=2, keep=0)
    train(cfg)
    torch.set_num_threads(before)

    def copy(dst: Path) -> Path:
        import shutil
        shutil.copytree(root / "run", dst)
        (dst / "options.yaml").write_text((root / "run" / "options.yaml").read_text()
                                          .replace(str(root / "run"), str(dst)))
        return dst

    yield copy


def test_resume_from_nan_weights_is_refused_and_keeps_the_file(trained_run: Callable[[Path],
                                                                                     Path],
                                                               tmp_path: Path) -> None:
    run = trained_run(tmp_path / "run")
    ckpt = run / "checkpoints" / "params_0000002.pt"
    obj = torch.load(ckpt, map_location="cpu", weights_only=True)
    obj["genA2B"]["FC.0.weight"].view(-1)[3] = float("nan")
    torch.save(obj, ckpt)
    poisoned = ckpt.read_bytes()
    with pytest.raises(TrainingError, match="genA2B key 'FC.0.weight' holds NaN or Inf"):
        train(TrainConfig.from_dict({**_options(run), "iterations": 4, "resume": True}))
    res = CliRunner().invoke(ugatit.cli.main, ["train", "--config", str(run / "options.yaml"),
                                               "--iterations", "4", "--resume"])
    assert res.exit_code == 1, res.output
    line = _last_line(res.output)
    assert line.startswith("Error: ") and "holds NaN or Inf values; cannot resume" in line
    assert str(ckpt) in line
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["params_0000002.pt"]
    assert ckpt.read_bytes() == poisoned  # kept as it was: the user decides


def _options(run: Path) -> dict[str, Any]:
    import yaml
    return yaml.safe_load((run / "options.yaml").read_text())

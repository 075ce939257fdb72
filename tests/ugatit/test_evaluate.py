"""`python -m ugatit evaluate` and ugatit.evaluate on a tiny synthetic PNG dataset.

The dataset mimics the tile builder's output: testA EO tiles, testB SAR tiles of the same
names on the unit dB grid (level / 255 = (dB - lo) / (hi - lo)) with exponential
(1-look) speckle over a scene that follows the EO structure, and a dataset.json.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from ugatit import ModelConfig, init_checkpoint, save_checkpoint
from ugatit import evaluate as ev
from ugatit.cli import main
from ugatit.errors import CheckpointError, EvaluationError
from ugatit.networks import build_network

PX = 32
N = 6
DB_RANGE = [-20.0, 0.0]
CFG = ModelConfig(ngf=4, n_res=1, ndf=4)
METRICS = ("ssim", "psnr", "identity", "hist_w1_db", "mean_db", "std_db", "speckle_cv",
           "speckle_cv_ratio", "score")


def _write_tiles(root: Path, n: int = N, px: int = PX, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    for d in ("testA", "testB"):
        (root / d).mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[:px, :px]
    for i in range(n):
        base = 0.5 + 0.25 * np.sin(xx / 5 + i) * np.cos(yy / 7)
        eo = np.stack([base, 0.8 * base, 1 - base], -1) * 255
        Image.fromarray(eo.round().astype(np.uint8)).save(root / "testA" / f"t{i:02d}.png")
        db = 10 * np.log10(10 ** ((-6 + 4 * base) / 10) * rng.exponential(1.0, (px, px)))
        lv = np.round(np.clip((db - DB_RANGE[0]) / (DB_RANGE[1] - DB_RANGE[0]), 0, 1) * 255)
        Image.fromarray(np.repeat(lv.astype(np.uint8)[..., None], 3, -1)).save(
            root / "testB" / f"t{i:02d}.png")
    return root


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = _write_tiles(tmp_path_factory.mktemp("ds"))
    (root / "dataset.json").write_text(json.dumps({"radiometry": {"sar": {
        "units": "db", "db_range": DB_RANGE}}}))
    return root


@pytest.fixture(scope="module")
def ckpt_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two ngf-4 checkpoints in the trainer's file naming (seed format, six networks)."""
    d = tmp_path_factory.mktemp("run") / "checkpoints"
    for step, seed in ((1000, 1), (2000, 2)):
        init_checkpoint(d / f"params_{step:07d}.pt", CFG, seed=seed, fmt="seed",
                        networks=("genA2B", "genB2A", "disGA", "disGB", "disLA", "disLB"))
    return d


def _run(args: list[str]) -> tuple[int, str]:
    res = CliRunner().invoke(main, ["evaluate", *args])
    return res.exit_code, res.output


def test_cli_end_to_end_ranks_checkpoints(dataset: Path, ckpt_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    code, text = _run(["--checkpoint", str(ckpt_dir.parent), "--dataset", str(dataset),
                       "--json", str(out)])
    assert code == 0, text
    for row in ("params_0001000.pt", "params_0002000.pt", "baseline: gray",
                "baseline: random", "real SAR", "SSIM", "CV ratio", "best:"):
        assert row in text
    assert "dataset.json" in text  # the dB range's source is said
    rep = json.loads(out.read_text())
    assert rep["data"]["paired"] and rep["data"]["n_inputs"] == N
    rows = rep["checkpoints"] + list(rep["baselines"].values())
    assert len(rows) == 4
    for row in rows:
        for key in METRICS:
            assert isinstance(row[key], float), key
        assert len(row["per_tile"]["ssim"]) == N
    for row in rep["checkpoints"]:
        assert row["db_range"] == DB_RANGE and row["db_range_source"] == "dataset.json"
    assert sorted(r["rank"] for r in rep["checkpoints"]) == [1, 2]
    best = min(rep["checkpoints"], key=lambda r: r["score"])
    assert rep["best"]["path"] == best["path"] and best["rank"] == 1
    assert rep["ranking"][0] == best["path"] and rep["best"]["step"] in (1000, 2000)
    assert rep["reference"]["speckle_cv_ratio"] == 1.0 and "identity" in rep["reference"]


def test_gray_baseline_identity_is_the_maximum(dataset: Path, ckpt_dir: Path) -> None:
    data = ev.load_data(dataset=dataset)
    rep = ev.evaluate(ev.find_checkpoints([ckpt_dir]), data, ev.Options())
    gray = rep["baselines"]["gray"]
    assert gray["identity"] == pytest.approx(1.0, abs=1e-9)
    assert all(r["identity"] <= gray["identity"] + 1e-12
               for r in rep["checkpoints"] + [rep["baselines"]["random"]])
    # The real SAR's speckle on the fixture: 1-look exponential speckle quantised to
    # 20/255 dB steps and clipped at -20 dB (~4 % of pixels) on 8 px windows: ~1
    # (screening, quantisation and clipping move it by < 0.15).
    assert rep["reference"]["speckle_cv"] == pytest.approx(1.0, abs=0.15)
    # The gray baseline has no speckle of the SAR kind (smooth EO): far below real SAR.
    assert gray["speckle_cv_ratio"] < 0.3


def test_random_baseline_is_the_seeded_init(dataset: Path, tmp_path: Path) -> None:
    """A checkpoint holding exactly the random baseline's weights scores like it."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(7)
        net = build_network("genA2B", CFG)
    ck = save_checkpoint(tmp_path / "same.pt", {"genA2B": net}, CFG)
    rep = ev.evaluate([ck], ev.load_data(dataset=dataset), ev.Options(seed=7))
    assert rep["checkpoints"][0]["score"] == pytest.approx(rep["baselines"]["random"]["score"],
                                                           abs=1e-9)


def test_pairs_mode_and_db_range_precedence(dataset: Path, tmp_path: Path) -> None:
    # Checkpoint radiometry wins over dataset.json; --pairs reads dataset.json from the
    # folder above EO_DIR (the tile builder's layout).
    ck = save_checkpoint(tmp_path / "rad.pt", {"genA2B": build_network("genA2B", CFG)}, CFG,
                         extra={"radiometry": {"sar": {"db_range": [-30.0, 5.0]}}})
    out = tmp_path / "r.json"
    code, text = _run(["--checkpoint", str(ck), "--pairs", str(dataset / "testA"),
                       str(dataset / "testB"), "--json", str(out)])
    assert code == 0, text
    row = json.loads(out.read_text())["checkpoints"][0]
    assert row["db_range"] == [-30.0, 5.0] and row["db_range_source"] == "checkpoint"
    assert "differs from dataset.json" in text
    # Without dataset.json: the default range, and it says so.
    bare = _write_tiles(tmp_path / "bare", n=2)
    rep = ev.evaluate([ev.find_checkpoints([tmp_path / "rad.pt"])[0]],
                      ev.load_data(dataset=bare), ev.Options())
    assert rep["radiometry"]["dataset_json_db_range"] is None
    plain = init_checkpoint(tmp_path / "plain.pt", CFG)
    rep = ev.evaluate([plain], ev.load_data(dataset=bare), ev.Options())
    assert rep["checkpoints"][0]["db_range_source"] == "default"
    assert rep["checkpoints"][0]["db_range"] == list(ev.DEFAULT_SAR_DB_RANGE)


def test_default_json_path_beside_checkpoint(dataset: Path, tmp_path: Path) -> None:
    ck = init_checkpoint(tmp_path / "m.pt", CFG)
    code, text = _run(["--checkpoint", str(ck), "--dataset", str(dataset), "--limit", "2"])
    assert code == 0, text
    rep = json.loads((tmp_path / "m_evaluation.json").read_text())
    assert rep["data"]["n_inputs"] == 2


def test_unpaired_dataset_skips_paired_metrics(tmp_path: Path) -> None:
    root = _write_tiles(tmp_path / "u", n=3)
    (root / "testB" / "t00.png").rename(root / "testB" / "other.png")
    ck = init_checkpoint(tmp_path / "m.pt", CFG)
    rep = ev.evaluate([ck], ev.load_data(dataset=root), ev.Options())
    assert not rep["data"]["paired"] and "ssim" not in rep["checkpoints"][0]
    assert any("do not pair" in n for n in rep["notes"])
    assert "identity" not in rep["reference"]
    assert "SSIM" not in ev.format_table(rep).splitlines()[0]


class _TinyFeatures(torch.nn.Module):
    """An 'Inception-like' extractor for tests: per-channel mean and std and a 4x4
    average-pooled thumbnail, [N, 3, H, W] -> [N, 54]."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = torch.nn.functional.adaptive_avg_pool2d(x, 4).flatten(1)
        return torch.cat([x.mean(dim=(2, 3)), x.std(dim=(2, 3)), pooled], dim=1)


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")
def test_kid_fid_with_a_torchscript_extractor(dataset: Path, ckpt_dir: Path,
                                              tmp_path: Path) -> None:
    feats = tmp_path / "feats.pt"
    torch.jit.script(_TinyFeatures()).save(str(feats))
    out = tmp_path / "k.json"
    code, text = _run(["--checkpoint", str(ckpt_dir / "params_0001000.pt"), "--dataset",
                       str(dataset), "--features", str(feats), "--json", str(out)])
    assert code == 0, text
    assert "KID" in text and "FID" in text
    rep = json.loads(out.read_text())
    for row in rep["checkpoints"] + list(rep["baselines"].values()):
        assert row["fid"] >= 0 and isinstance(row["kid"], float)
    # Through the same loader: a set against itself ~0, a shifted set much larger.
    fn = ev.load_features(feats, torch.device("cpu"))
    real = ev.load_data(dataset=dataset).sar
    f_real = fn(real)
    from ugatit import metrics
    assert metrics.fid(f_real, f_real) == pytest.approx(0.0, abs=1e-9)
    assert metrics.fid(f_real, fn(np.clip(real + 0.3, 0, 1))) > 0.1
    assert metrics.kid(f_real, fn(np.clip(real + 0.3, 0, 1))) > 10 * abs(
        metrics.kid(f_real, f_real))
    # One tile has no covariance: KID/FID are left out, the rest still runs.
    rep = ev.evaluate([ckpt_dir / "params_0001000.pt"], ev.load_data(dataset=dataset, limit=1),
                      ev.Options(features=feats))
    assert "kid" not in rep["checkpoints"][0] and "ssim" in rep["checkpoints"][0]


@pytest.mark.parametrize("case", ["missing_dir", "no_pngs", "unpaired_names", "no_gen",
                                  "missing_ckpt", "bad_features", "both_inputs"])
def test_errors_are_one_line_and_nonzero(case: str, dataset: Path, ckpt_dir: Path,
                                         tmp_path: Path) -> None:
    ck = str(ckpt_dir / "params_0001000.pt")
    data = ["--dataset", str(dataset)]
    if case == "missing_dir":
        args, needle = ["--checkpoint", ck, "--dataset", str(tmp_path / "nope")], "not found"
    elif case == "no_pngs":
        (tmp_path / "testA").mkdir()
        (tmp_path / "testB").mkdir()
        args, needle = ["--checkpoint", ck, "--dataset", str(tmp_path)], "no PNG tiles"
    elif case == "unpaired_names":
        b = tmp_path / "b"
        b.mkdir()
        (b / "zz.png").write_bytes((dataset / "testB" / "t00.png").read_bytes())
        args, needle = ["--checkpoint", ck, "--pairs", str(dataset / "testA"), str(b)], \
            "do not pair"
    elif case == "no_gen":
        p = save_checkpoint(tmp_path / "b2a.pt", {"genB2A": build_network("genB2A", CFG)}, CFG)
        args, needle = ["--checkpoint", str(p), *data], "holds no genA2B"
    elif case == "missing_ckpt":
        args, needle = ["--checkpoint", str(tmp_path / "x.pt"), *data], "checkpoint not found"
    elif case == "bad_features":
        (tmp_path / "f.pt").write_bytes(b"not torchscript")
        args, needle = ["--checkpoint", ck, *data, "--features", str(tmp_path / "f.pt")], \
            "TorchScript"
    else:
        args, needle = ["--checkpoint", ck, *data, "--pairs", "a", "b"], "exactly one"
    code, text = _run(args)
    assert code != 0
    assert needle in text, text
    assert "Traceback" not in text
    assert len([ln for ln in text.splitlines() if ln.startswith("Error")]) == 1


def test_library_errors_are_typed(tmp_path: Path) -> None:
    with pytest.raises(EvaluationError, match="no \\*.pt"):
        ev.find_checkpoints([tmp_path])
    with pytest.raises(CheckpointError):
        ev.evaluate([tmp_path / "none.pt"], ev.load_data(dataset=_write_tiles(tmp_path / "d", 1)),
                    ev.Options())
    root = _write_tiles(tmp_path / "mixed", n=1)
    Image.new("RGB", (16, 16)).save(root / "testA" / "t99.png")
    with pytest.raises(EvaluationError, match="must match"):
        ev.read_tiles(ev.list_pngs(root / "testA", "EO"))
    full = init_checkpoint(tmp_path / "full.pt", ModelConfig(ngf=4, n_res=1, light=False,
                                                             img_size=64))
    with pytest.raises(EvaluationError, match="full.pt: the full generator accepts exactly 64"):
        ev.evaluate([full], ev.load_data(dataset=tmp_path / "d"), ev.Options())
    tiny = _write_tiles(tmp_path / "tiny", n=1, px=12)
    with pytest.raises(EvaluationError, match="at least 16 px"):
        ev.load_data(dataset=tiny)
    (tmp_path / "dataset.json").write_text('{"radiometry": {"sar": {"db_range": [0, -5]}}}')
    with pytest.raises(EvaluationError, match="lo < hi"):
        ev.read_dataset_db_range(tmp_path / "dataset.json")


def test_step_comes_from_the_file_not_from_digits_in_its_name() -> None:
    from ugatit.evaluate import _step_of

    assert _step_of(Path("run/checkpoints/params_0003750.pt"), {}) == 3750
    assert _step_of(Path("eo2sar_demo_ngf16.pt"), {"step": 3750}) == 3750  # exported
    assert _step_of(Path("eo2sar_demo_ngf16.pt"), {}) is None  # "16" is a width, not a step

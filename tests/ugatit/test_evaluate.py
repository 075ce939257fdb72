"""`python -m ugatit evaluate` and ugatit.evaluate on a tiny synthetic PNG dataset.

The dataset mimics the tile builder's output: testA EO tiles, testB SAR tiles of the same
names on the unit dB grid (level / 255 = (dB - lo) / (hi - lo)) with exponential
(1-look) speckle over a scene that follows the EO structure, and a dataset.json.
"""

from __future__ import annotations

import json
import math
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
METRICS = ("ssim", "psnr", "corr", "corr_box9", "structure", "identity", "hist_w1_db",
           "mean_db", "std_db", "speckle_cv", "speckle_cv_ratio", "radiometry")


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
    # PNG tiles without training pairs: gray, red, random (no NIR, no fitting pairs)
    assert list(rep["baselines"]) == ["gray", "red", "random"]
    assert len(rows) == 5
    for row in rows:
        for key in METRICS:
            assert isinstance(row[key], float), key
        assert len(row["per_tile"]["ssim"]) == N
    for row in rep["checkpoints"]:
        assert row["db_range"] == DB_RANGE and row["db_range_source"] == "dataset.json"
    assert sorted(r["rank"] for r in rep["checkpoints"]) == [1, 2]
    # Paired: ranked by the stated key, the 9x9 box-filtered correlation, higher first.
    assert rep["rank_key"]["name"] == "corr_box9" and rep["rank_key"]["better"] == "higher"
    best = max(rep["checkpoints"], key=lambda r: r["corr_box9"])
    assert rep["best"]["path"] == best["path"] and best["rank"] == 1
    assert rep["best"]["key"] == "corr_box9" and rep["best"]["value"] == best["corr_box9"]
    gray = rep["baselines"]["gray"]["corr_box9"]
    assert all(r["corr_box9_gain_vs_gray"] == pytest.approx(r["corr_box9"] - gray)
               for r in rep["checkpoints"])
    assert "ranked by corr_box9" in text
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
    for key in ("corr_box9", "radiometry", "structure"):
        assert rep["checkpoints"][0][key] == pytest.approx(rep["baselines"]["random"][key],
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
    shifted = [np.clip(t + 0.3, 0, 1) for t in real]
    assert metrics.fid(f_real, f_real) == pytest.approx(0.0, abs=1e-9)
    assert metrics.fid(f_real, fn(shifted)) > 0.1
    assert metrics.kid(f_real, fn(shifted)) > 10 * abs(metrics.kid(f_real, f_real))
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
    Image.new("RGB", (16, 16)).save(root / "testB" / "t00.png")
    with pytest.raises(EvaluationError, match="t00.png: EO tile is 32x32 px but its SAR "
                                              "tile 16x16"):
        ev.load_data(pairs=(root / "testA", root / "testB"))
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


def _mixed_dataset(root: Path) -> Path:
    """Paired tiles of three sizes in one folder: 32 px, 28 px (divisible by 4) and 30 px
    (not: the light generator gets it reflect-padded to 32)."""
    for px, n, seed in ((32, 2, 0), (28, 1, 1), (30, 1, 2)):
        tmp = _write_tiles(root / f"_{px}", n=n, px=px, seed=seed)
        for d in ("testA", "testB"):
            (root / d).mkdir(parents=True, exist_ok=True)
            for f in (tmp / d).iterdir():
                f.rename(root / d / f"s{px}_{f.name}")
    return root


def test_mixed_tile_sizes_in_one_folder(tmp_path: Path) -> None:
    data = ev.load_data(dataset=_mixed_dataset(tmp_path / "mix"))
    assert data.tile_sizes == [[28, 28], [30, 30], [32, 32]]
    assert any("3 tile sizes" in n for n in data.notes)
    light = init_checkpoint(tmp_path / "light.pt", CFG, seed=3)
    rep = ev.evaluate([light], data, ev.Options())
    row = rep["checkpoints"][0]
    assert rep["data"]["tile_px"] == [[28, 28], [30, 30], [32, 32]]
    assert len(row["per_tile"]["corr_box9"]) == 4 and all(
        math.isfinite(v) for v in row["per_tile"]["ssim"])
    # Batching by size changes nothing: each tile alone gives the same output.
    net = ev.load_checkpoint(light, networks=("genA2B",)).genA2B
    together = ev.generate(net, data.eo, torch.device("cpu"))
    for tile, out in zip(data.eo, together, strict=True):
        alone = ev.generate(net, [tile], torch.device("cpu"))[0]
        assert out.shape == tile.shape[:2]
        # float32 forwards of different batch compositions: identical math per sample,
        # so only summation order can differ (~1e-7 of a [0, 1] value).
        np.testing.assert_allclose(out, alone, atol=1e-5)
    # The full generator takes only img_size: other sizes are resized to it and back,
    # and a tile already of img_size goes through untouched.
    full_cfg = ModelConfig(ngf=4, n_res=1, ndf=4, light=False, img_size=32)
    full = init_checkpoint(tmp_path / "full.pt", full_cfg, seed=4)
    fnet = ev.load_checkpoint(full, networks=("genA2B",)).genA2B
    outs = ev.generate(fnet, data.eo, torch.device("cpu"))
    assert [o.shape for o in outs] == [t.shape[:2] for t in data.eo]
    i32 = next(i for i, t in enumerate(data.eo) if t.shape[0] == 32)
    with torch.inference_mode():
        x = torch.from_numpy(data.eo[i32].copy()).permute(2, 0, 1)[None].float() / 127.5 - 1
        direct = fnet(x)[0].mean(dim=1).add(1).div(2).clamp(0, 1)[0].double().numpy()
    np.testing.assert_allclose(outs[i32], direct, atol=1e-6)
    assert ev.evaluate([full], data, ev.Options())["checkpoints"][0]["rank"] == 1


def test_evaluate_applies_the_tf32_policy(dataset: Path, ckpt_dir: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[bool] = []
    monkeypatch.setattr(ev, "set_tf32", calls.append)
    ev.apply_precision(torch.device("cuda"))
    ev.apply_precision(torch.device("cuda"), tf32=True)
    ev.apply_precision(torch.device("cpu"))  # no CUDA, nothing to set
    assert calls == [False, True]
    seen: list[tuple[str, bool]] = []
    monkeypatch.setattr(ev, "apply_precision", lambda d, t=False: seen.append((d.type, t)))
    ev.evaluate([ckpt_dir / "params_0001000.pt"], ev.load_data(dataset=dataset, limit=1),
                ev.Options())
    assert seen == [("cpu", False)]
    code, text = _run(["--checkpoint", str(ckpt_dir / "params_0001000.pt"), "--dataset",
                       str(dataset), "--limit", "1", "--tf32", "--json",
                       str(ckpt_dir / "t.json")])
    assert code == 0, text
    assert seen[-1] == ("cpu", True)


def test_unpaired_ranking_keeps_structure_and_does_not_punish_resemblance(
        dataset: Path) -> None:
    """Issue 14: a generator that paints SAR texture whatever its input must not win.

    'painter': 1-look speckle around the real SAR's mean, independent of the input (its
    radiometry is nearly perfect). 'faithful': the real SAR co-registered with each input
    (structure as real SAR has it). Unpaired ranking puts faithful first although its
    radiometry is no better, because the painter's structure is under the floor."""
    data = ev.load_data(dataset=dataset)
    data.paired = False
    ref = ev.make_reference(data, tuple(DB_RANGE), None)
    rng = np.random.default_rng(5)
    mean_lin = 10 ** (ref.mean_db / 10)
    painter = [np.clip((10 * np.log10(mean_lin * rng.exponential(1.0, t.shape)) - DB_RANGE[0])
                       / (DB_RANGE[1] - DB_RANGE[0]), 0, 1) for t in data.sar]
    faithful = list(data.sar)
    rows = []
    for name, pred in (("painter", painter), ("faithful", faithful)):
        rows.append({"path": name, **ev.row_metrics(pred, data, ref, None)})
    by = {r["path"]: r for r in rows}
    assert by["painter"]["structure"] < ev.STRUCTURE_FLOOR < by["faithful"]["structure"]
    assert "identity" in by["faithful"] and "ssim" not in by["faithful"]
    order = [rows[i]["path"] for i in ev.rank_order(rows, paired=False)]
    assert order == ["faithful", "painter"]
    # Among rows above the floor, radiometry decides, lower first; structure beyond the
    # floor earns nothing and resemblance to the input costs nothing.
    hand = [{"path": "a", "structure": 0.9, "radiometry": 0.5},
            {"path": "b", "structure": 0.2, "radiometry": 0.3},
            {"path": "c", "structure": 0.0, "radiometry": 0.0}]
    assert [hand[i]["path"] for i in ev.rank_order(hand, paired=False)] == ["b", "a", "c"]
    paired = [{"path": "a", "corr_box9": 0.2}, {"path": "b", "corr_box9": math.nan},
              {"path": "c", "corr_box9": 0.6}]
    assert [paired[i]["path"] for i in ev.rank_order(paired, paired=True)] == ["c", "a", "b"]


# ----------------------------------------------------------------------------------------
# Multiband TIFF tiles (pipeline tiles --eo-bands red,green,blue,nir --eo-scale reflectance
# --sar-pols VV,VH) and the baselines a user would try first


MS_PX = 32
VV_RANGE, VH_RANGE = (-25.0, 0.0), (-32.5, 0.0)


def _ms_bands(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Four independent smooth reflectance fields (random phases and frequencies), so
    that every 9x9 window varies and no band is a function of another."""
    yy, xx = np.mgrid[:MS_PX, :MS_PX].astype(np.float64)

    def field(lo: float, hi: float) -> np.ndarray:
        fx, fy, px, py = rng.uniform(0.08, 0.3, 2).tolist() + rng.uniform(0, 6, 2).tolist()
        return lo + (hi - lo) * (0.5 + 0.25 * np.sin(fx * xx + px) + 0.25 * np.cos(fy * yy + py))

    return {"red": field(0.03, 0.2), "green": field(0.05, 0.15), "blue": field(0.02, 0.12),
            "nir": field(0.04, 0.4)}


def _ms_truth(b: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """The SAR dB, exact functions of the bands: VV mostly -NDWI (water dark) plus NIR,
    VH a pure affine function of NDVI."""
    ndwi = (b["green"] - b["nir"]) / (b["green"] + b["nir"])
    ndvi = (b["nir"] - b["red"]) / (b["nir"] + b["red"])
    return -10.0 - 8.0 * ndwi + 3.0 * b["nir"], -22.0 + 8.0 * ndvi


def _write_ms(root: Path, split: str, names: list[str], rng: np.random.Generator,
              eo: bool = True, sar: bool = True) -> None:
    import tifffile

    for d, on in ((f"{split}A", eo), (f"{split}B", sar)):
        if on:
            (root / d).mkdir(parents=True, exist_ok=True)
    for name in names:
        b = _ms_bands(rng)
        vv, vh = _ms_truth(b)
        if eo:
            unit = np.stack([b[n] / 0.5 for n in ("red", "green", "blue", "nir")])
            tifffile.imwrite(root / f"{split}A" / name, unit.astype(np.float32),
                             photometric="minisblack")
        if sar:
            u = np.stack([(vv - VV_RANGE[0]) / (VV_RANGE[1] - VV_RANGE[0]),
                          (vh - VH_RANGE[0]) / (VH_RANGE[1] - VH_RANGE[0])])
            assert (u > 0.01).all() and (u < 0.99).all()  # nothing clipped: exact dB
            tifffile.imwrite(root / f"{split}B" / name, u.astype(np.float32),
                             photometric="minisblack")


@pytest.fixture(scope="module")
def ms_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """4 training pairs (+ 2 unpaired SAR), 3 test pairs (+ 2 SAR-only test tiles), the
    tile builder's dataset.json radiometry."""
    root = tmp_path_factory.mktemp("ms")
    rng = np.random.default_rng(7)
    _write_ms(root, "train", [f"p{i}.tif" for i in range(4)], rng)
    _write_ms(root, "train", ["u0.tif", "u1.tif"], rng, eo=False)
    _write_ms(root, "test", [f"q{i}.tif" for i in range(3)], rng)
    _write_ms(root, "test", ["s0.tif", "s1.tif"], rng, eo=False)
    (root / "dataset.json").write_text(json.dumps({"radiometry": {
        "eo": {"method": "reflectance", "common_names": ["red", "green", "blue", "nir"],
               "reflectance_range": [0.0, 0.5]},
        "sar": {"units": "db", "db_range": list(VV_RANGE), "polarisations": ["VV", "VH"],
                "db_ranges": [list(VV_RANGE), list(VH_RANGE)], "db_scale": "absolute"}}}))
    return root


MS_CFG = ModelConfig(ngf=4, n_res=1, ndf=4, in_ch=4, out_ch=2)


def test_multiband_baselines_reach_the_known_answers(ms_dataset: Path, tmp_path: Path) -> None:
    data = ev.load_data(dataset=ms_dataset)
    assert data.kind == "tiff" and data.pols == ("VV", "VH") and data.paired
    assert data.eo_names == ["q0.tif", "q1.tif", "q2.tif"]  # the SAR-only tiles left out
    assert any("3 EO/SAR tiles pair by name" in n for n in data.notes)
    assert data.fit is not None and [p.name for p in data.fit[0]] == \
        [f"p{i}.tif" for i in range(4)]  # the same-name training tiles, not u0/u1
    ck = init_checkpoint(tmp_path / "ms.pt", MS_CFG, seed=2)
    rep = ev.evaluate([ck], data, ev.Options())
    b = rep["baselines"]
    assert list(b) == ["gray", "red", "nir", "ndvi", "ndwi", "best_single", "linear", "random"]
    vv = {k: v["polarisations"]["VV"] for k, v in b.items()}
    vh = {k: v["polarisations"]["VH"] for k, v in b.items()}
    # VH is an affine function of NDVI: the NDVI baseline correlates exactly (the float32
    # tiles hold the dB to ~1e-7 of the range).
    assert vh["ndvi"]["corr_box9"] == pytest.approx(1.0, abs=1e-5)
    assert vh["best_single"]["feature"] == "ndvi" and vh["best_single"]["sign"] == 1
    # VV is mostly -NDWI: NDWI's own row is negative, the best single is -ndwi, whose corr9
    # is exactly minus NDWI's (1 - x is a decreasing map).
    assert vv["ndwi"]["corr_box9"] < -0.9
    assert vv["best_single"]["feature"] == "ndwi" and vv["best_single"]["sign"] == -1
    assert vv["best_single"]["corr_box9"] == pytest.approx(-vv["ndwi"]["corr_box9"], abs=1e-9)
    assert vv["best_single"]["fit_corr_box9"]["ndwi"] < -0.9  # chosen on the fitting pairs
    # The linear regression (bands + NDVI + NDWI, fitted on the 4 training pairs) holds
    # both exact relations: correlation ~1 on the unseen test pairs, and the coefficients.
    for m in (vv, vh):
        assert m["linear"]["corr_box9"] == pytest.approx(1.0, abs=1e-5)
        assert m["linear"]["features"] == ["red", "green", "blue", "nir", "ndvi", "ndwi"]
    c = vv["linear"]["coef_db"]
    # float32 unit tiles (~6e-8 x 25 dB of rounding): coefficients to ~1e-3
    assert c["intercept"] == pytest.approx(-10.0, abs=1e-3)
    assert c["ndwi"] == pytest.approx(-8.0, abs=1e-3) and c["nir"] == pytest.approx(3.0, abs=1e-3)
    assert vh["linear"]["coef_db"]["ndvi"] == pytest.approx(8.0, abs=1e-3)
    # Ranked by one stated key: the mean over polarisations of corr9.
    row = rep["checkpoints"][0]
    assert rep["rank_key"]["name"] == "corr_box9" and "VV, VH" in rep["rank_key"]["rule"]
    assert row["corr_box9"] == pytest.approx(np.mean(
        [row["polarisations"][p]["corr_box9"] for p in ("VV", "VH")]))
    assert row["db_ranges"] == [list(VV_RANGE), list(VH_RANGE)]
    assert row["db_range_source"] == "dataset.json"
    assert row["corr_box9_gain_vs"]["linear"] == pytest.approx(
        row["corr_box9"] - b["linear"]["corr_box9"])
    # Every number is in the JSON; the table names each baseline and the -ndwi pick.
    text = ev.format_table(rep)
    for s in ("VV:", "VH:", "baseline: best single (-ndwi)", "baseline: best single (ndvi)",
              "baseline: linear (6 features)", "mean over VV, VH", "ranked by corr_box9"):
        assert s in text, s
    json.loads(ev.write_json(rep, tmp_path / "r.json").read_text())


def test_output_channel_k_is_compared_with_polarisation_k(
        ms_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A stand-in generator returning the true VV, VH on channels 0, 1: corr9 1 on both;
    swapped, each channel meets the other polarisation and corr9 drops."""
    data = ev.load_data(dataset=ms_dataset)
    ck = init_checkpoint(tmp_path / "ms.pt", MS_CFG, seed=2)
    swap = {"on": False}

    def fake(net: object, eo: list, *a: object, **k: object) -> list[np.ndarray]:
        assert k.get("mean") is False  # multiband: per channel, not averaged
        return [t[..., ::-1] if swap["on"] else t for t in data.sar_all]

    monkeypatch.setattr(ev, "random_generator", lambda *a: None)
    monkeypatch.setattr(ev, "generate", fake)
    row = ev.evaluate([ck], data, ev.Options())["checkpoints"][0]
    for p in ("VV", "VH"):
        assert row["polarisations"][p]["corr_box9"] == pytest.approx(1.0, abs=1e-9)
    swap["on"] = True
    row = ev.evaluate([ck], data, ev.Options())["checkpoints"][0]
    assert row["polarisations"]["VV"]["corr_box9"] < 0.99
    assert row["polarisations"]["VH"]["corr_box9"] < 0.99


def test_multiband_cli_with_fit_pairs_and_a_model_of_the_wrong_channels(
        ms_dataset: Path, tmp_path: Path) -> None:
    ck = init_checkpoint(tmp_path / "ms.pt", MS_CFG, seed=2)
    out = tmp_path / "r.json"
    code, text = _run(["--checkpoint", str(ck), "--dataset", str(ms_dataset), "--json",
                       str(out), "--fit-pairs", str(ms_dataset / "testA"),
                       str(ms_dataset / "testB")])
    assert code == 0, text
    rep = json.loads(out.read_text())
    assert rep["data"]["fit"]["n_pairs"] == 3 and "--fit-pairs" in rep["data"]["fit"]["source"]
    assert "baseline: linear" in text and "best: " in text
    # A 3 -> 3 (RGB PNG) model cannot read 4-band tiles: one line, non-zero.
    rgb = init_checkpoint(tmp_path / "rgb.pt", CFG)
    code, text = _run(["--checkpoint", str(rgb), "--dataset", str(ms_dataset)])
    assert code != 0 and "4 bands" in text and "Traceback" not in text


def _write_rgb_linear(root: Path, split: str, n: int, rng: np.random.Generator) -> None:
    """PNG pairs whose SAR level is an exact affine function of independent R, G, B
    fields: 0.15 + 0.5 R + 0.3 G - 0.2 B (on 0..1), rounded to 8 bits like the EO."""
    for d in ("A", "B"):
        (root / f"{split}{d}").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        b = _ms_bands(rng)
        rgb = np.stack([b["red"] / 0.2, b["green"] / 0.15, b["blue"] / 0.12], -1)
        lv = np.round(rgb * 255).astype(np.uint8)
        u = 0.15 + (lv.astype(np.float64) / 255) @ np.array([0.5, 0.3, -0.2])
        Image.fromarray(lv).save(root / f"{split}A" / f"t{i}.png")
        Image.fromarray(np.repeat(np.round(u * 255).astype(np.uint8)[..., None], 3, -1)
                        ).save(root / f"{split}B" / f"t{i}.png")


def test_png_dataset_with_training_pairs_gets_red_and_linear_on_rgb(tmp_path: Path) -> None:
    root = tmp_path / "png"
    rng = np.random.default_rng(3)
    _write_rgb_linear(root, "train", 4, rng)
    _write_rgb_linear(root, "test", 3, rng)
    ck = init_checkpoint(tmp_path / "m.pt", CFG)
    rep = ev.evaluate([ck], ev.load_data(dataset=root), ev.Options())
    b = rep["baselines"]
    assert list(b) == ["gray", "red", "linear", "random"]  # no NIR: no index, no best single
    assert b["linear"]["features"] == ["red", "green", "blue"]
    # fitted on the training pairs, exact up to the SAR's 8-bit rounding (+-0.5/255 per
    # pixel, against a spread of ~0.1, and 81-pixel means): corr9 ~1, coefficients ~2e-3
    assert b["linear"]["corr_box9"] == pytest.approx(1.0, abs=1e-3)
    coef = b["linear"]["coef_unit"]
    assert [coef[k] for k in ("intercept", "red", "green", "blue")] == pytest.approx(
        [0.15, 0.5, 0.3, -0.2], abs=0.01)
    assert b["red"]["corr_box9"] < 0.95  # one band alone does not hold it
    assert any("PNG (RGB" in n and "only gray, the red band" in n for n in rep["notes"])
    # Without training pairs the old rows are what they were: the new baselines add rows,
    # they change no other number.
    for d in ("trainA", "trainB"):
        for f in (root / d).iterdir():
            f.unlink()
        (root / d).rmdir()
    plain = ev.evaluate([ck], ev.load_data(dataset=root), ev.Options())
    assert list(plain["baselines"]) == ["gray", "red", "random"]
    assert plain["checkpoints"][0]["corr_box9"] == rep["checkpoints"][0]["corr_box9"]
    assert plain["baselines"]["gray"] == b["gray"]


def test_multiband_unpaired_split_ranks_by_mean_radiometry(ms_dataset: Path,
                                                          tmp_path: Path) -> None:
    """testA/testB sharing no name: per-polarisation radiometry, ranked by its mean over
    VV and VH (structure floor on the mean structure); the fitted baselines still come
    from the training pairs."""
    import shutil

    root = tmp_path / "u"
    shutil.copytree(ms_dataset, root)
    for f in (root / "testB").glob("q*.tif"):
        f.rename(f.with_name("r" + f.name[1:]))
    data = ev.load_data(dataset=root)
    assert not data.paired and len(data.sar) == 5 and len(data.eo) == 3
    cks = [init_checkpoint(tmp_path / f"m{s}.pt", MS_CFG, seed=s) for s in (2, 3)]
    rep = ev.evaluate(cks, data, ev.Options())
    assert rep["rank_key"]["name"] == "radiometry" and "VV, VH" in rep["rank_key"]["rule"]
    for r in rep["checkpoints"]:
        pol = r["polarisations"]
        assert "corr_box9" not in pol["VV"] and "corr_box9" not in r
        assert r["radiometry"] == pytest.approx(
            (pol["VV"]["radiometry"] + pol["VH"]["radiometry"]) / 2)
    rows = sorted(rep["checkpoints"], key=lambda r: r["rank"])
    key = [(not r["structure"] >= ev.STRUCTURE_FLOOR, r["radiometry"]) for r in rows]
    assert key == sorted(key) and rep["best"]["path"] == rows[0]["path"]
    assert "linear" in rep["baselines"]  # fitted on trainA/trainB all the same

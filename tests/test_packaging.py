"""The project skeleton: pip and conda users get the same dependencies, the configs say
what the code does, the bundled data is what its README claims, and the demo has what it
needs. These break silently otherwise (an environment.yml nobody runs, a data file
re-compressed lossily, a demo pointing at a deleted checkpoint).
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import fields
from pathlib import Path

import pytest
import rasterio
import torch
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from ugatit import ModelConfig, load_checkpoint

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the dev extra installs tomli there
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"

# conda-forge names that differ from the PyPI ones.
CONDA_TO_PIP = {"pytorch": "torch"}


def _pins(requirements: list[str], python: str) -> dict[str, str]:
    """name -> version specifier ("" when unpinned) of PEP 508 requirements or conda specs
    such as 'pytorch>=2.1'. A requirement whose marker does not hold for `python` is left
    out; 'dask[distributed]' stands for both dask and distributed (conda splits them)."""
    pins = {}
    for text in requirements:
        req = Requirement(text)
        if req.marker is not None and not req.marker.evaluate({"python_version": python}):
            continue
        name = canonicalize_name(req.name)
        name = CONDA_TO_PIP.get(name, name)
        spec = str(req.specifier)
        pins[name] = spec
        if name == "dask":
            pins.update({canonicalize_name(e): spec for e in req.extras})
    return pins


@pytest.fixture(scope="module")
def pyproject() -> dict:
    with open(ROOT / "pyproject.toml", "rb") as f:
        return tomllib.load(f)


@pytest.fixture(scope="module")
def environment() -> dict:
    return yaml.safe_load((ROOT / "environment.yml").read_text())


def test_conda_and_pip_dependencies_agree(pyproject: dict, environment: dict) -> None:
    """Same packages AND same version bounds, for the Python that environment.yml pins."""
    conda = [d for d in environment["dependencies"] if isinstance(d, str)]
    python = next(d.split("=")[1] for d in conda if d.startswith("python="))
    project = pyproject["project"]
    runtime = _pins(project["dependencies"], python)
    dev = _pins(project["optional-dependencies"]["dev"], python)
    conda_pins = _pins([d for d in conda if d.split("=")[0] not in ("python", "pip")], python)
    assert {"pytest", "ruff"} <= dev.keys()
    assert {"torch", "rasterio", "dask", "distributed", "numpy"} <= runtime.keys()
    assert conda_pins == {**runtime, **dev}
    assert environment["name"] == "eo2sar" and "conda-forge" in environment["channels"]


def test_python_versions(pyproject: dict, environment: dict) -> None:
    assert pyproject["project"]["requires-python"] == ">=3.10"
    conda_python = next(d for d in environment["dependencies"]
                        if isinstance(d, str) and d.startswith("python="))
    major, minor = map(int, conda_python.split("=")[1].split(".")[:2])
    assert (major, minor) >= (3, 10)


def test_tool_configuration(pyproject: dict) -> None:
    tool = pyproject["tool"]
    assert tool["ruff"]["line-length"] == 100
    assert set(tool["ruff"]["lint"]["select"]) == {"E", "F", "W", "I", "B", "UP"}
    ini = tool["pytest"]["ini_options"]
    assert ini["testpaths"] == ["tests"]
    assert "not slow" in ini["addopts"]
    assert any(m.startswith("slow:") for m in ini["markers"])
    include = tool["setuptools"]["packages"]["find"]["include"]
    assert {"ugatit", "pipeline"} <= set(include)


def test_model_yaml_documents_the_published_config() -> None:
    text = (ROOT / "configs" / "model.yaml").read_text()
    cfg = yaml.safe_load(text)
    assert set(cfg) == {f.name for f in fields(ModelConfig)}
    assert ModelConfig(**cfg) == ModelConfig()  # the published eo2sar values
    assert cfg["light"] is True and cfg["ngf"] == 64 and cfg["n_res"] == 4
    lines = text.splitlines()
    for key in cfg:  # every key has a comment right above it
        i = next(i for i, line in enumerate(lines) if line.startswith(f"{key}:"))
        assert lines[i - 1].startswith("#"), f"{key} has no comment"


def _data_table() -> dict[str, dict[str, str]]:
    rows = {}
    for line in (DATA / "README.md").read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 7 and cells[0].endswith(".tif"):
            rows[cells[0]] = {"grid": cells[2], "crs": cells[3], "sha": cells[4],
                              "source": cells[5], "licence": cells[6]}
    return rows


def test_data_readme_lists_every_raster() -> None:
    table = _data_table()
    on_disk = {p.name for p in DATA.glob("*.tif")}
    assert on_disk and set(table) == on_disk
    assert all(row["source"] and row["licence"] for row in table.values())
    total = sum(p.stat().st_size for p in DATA.rglob("*") if p.is_file())
    assert total < 25e6, f"tests/data is {total / 1e6:.1f} MB"


@pytest.mark.parametrize("name", sorted(_data_table()))
def test_data_files_match_readme(name: str) -> None:
    row = _data_table()[name]
    with rasterio.open(DATA / name) as ds:
        pixels = ds.read()
        grid = f"{ds.count} x {ds.dtypes[0]}, {ds.width}x{ds.height}"
        if row["crs"] == "none":  # the SAR patches ship without georeferencing
            assert ds.crs is None and ds.transform.is_identity
        else:
            assert ds.crs is not None and ds.crs.to_string() == row["crs"]
            assert ds.transform.is_rectilinear and not ds.transform.is_identity
        assert ds.nodata is None
    assert grid == row["grid"]
    digest = hashlib.sha256(pixels.astype(pixels.dtype.newbyteorder("<")).tobytes())
    assert digest.hexdigest()[:16] == row["sha"]


def test_landsat_copy_keeps_source_grid() -> None:
    # The re-compressed file: 30 m UTM 21S grid of the source, no nodata, a zero collar.
    with rasterio.open(DATA / "l8_224078_parana_bgr_uint16.tif") as ds:
        assert tuple(ds.transform)[:6] == (30.0, 0.0, 717345.0, 0.0, -30.0, -2776995.0)
        assert ds.compression is not None and ds.nodata is None
        corner = ds.read(window=((0, 8), (0, 8)))
    assert (corner == 0).all()


def test_demo_checkpoint_and_image() -> None:
    """`make demo` uses the trained demo model: small, generator-only, carrying the
    radiometric contract of its training data and how it was trained, and labelled
    honestly beside it; the random-weight file stays for tests and says so."""
    makefile = (ROOT / "Makefile").read_text()
    settings = dict(re.findall(r"^(DEMO_\w+) \?= (\S+)$", makefile, flags=re.M))
    assert (ROOT / settings["DEMO_IMG"]).is_file()
    path = ROOT / settings["DEMO_MODEL"]
    assert path.stat().st_size < 10 * 2**20
    ckpt = load_checkpoint(path, networks=("genA2B",))
    assert (ckpt.config.ngf, ckpt.config.n_res, ckpt.config.light) == (16, 4, True)
    with torch.inference_mode():
        out = ckpt.genA2B(torch.zeros(1, 3, 64, 64))[0]
    assert out.shape == (1, 3, 64, 64) and bool(torch.isfinite(out).all())
    contract = ckpt.radiometry
    assert contract is not None and contract["eo"]["percentiles"] == [2.0, 98.0]
    # trained against calibrated Sentinel-1 on one absolute scale: --output-scale db works
    assert contract["sar"]["db_scale"] == "absolute"
    assert contract["sar"]["db_range"] == [-25.0, 0.0]
    assert ckpt.meta["train"]["ngf"] == 16 and ckpt.meta["step"] > 0
    readme = (ROOT / "checkpoints" / "README.md").read_text()
    assert f"{path.name}: trained against calibrated Sentinel-1" in readme
    assert "not a production model" in readme

    random_file = ROOT / "checkpoints" / "eo2sar_demo_ngf8_random.pt"
    meta = torch.load(random_file, weights_only=True)["meta"]
    assert "random weights" in meta["note"] and "not trained" in meta["note"]
    assert f"{random_file.name}: RANDOM weights, not a trained model" in readme


def test_makefile_targets_and_ci() -> None:
    makefile = (ROOT / "Makefile").read_text()
    targets = set(re.findall(r"^([a-z][\w-]*):", makefile, flags=re.M))
    assert {"install", "test", "test-all", "lint", "demo", "bench", "clean"} <= targets
    assert re.search(r"^TORCH_SPEC \?= torch==", makefile, flags=re.M)
    run = ROOT / ".ci" / "run"
    assert os.access(run, os.X_OK)
    text = run.read_text()
    assert text.startswith("#!/usr/bin/env bash") and "set -euo pipefail" in text
    assert "make test" in text


def test_gitignore() -> None:
    ignored = set((ROOT / ".gitignore").read_text().split())
    assert {".venv/", "__pycache__/", "*.egg-info/", "demo_out/", "bench_out/"} <= ignored

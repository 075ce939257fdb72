"""The example notebooks run (examples/): executed with nbclient, so they never rot.

Skipped only where the xarray extra or the notebook runner is missing locally; `make
install` installs both, so CI runs them.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import REPO

NOTEBOOKS = sorted((REPO / "examples").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs(path: Path, tmp_path, monkeypatch) -> None:
    pytest.importorskip("xarray", reason="the xarray extra: pip install 'eo2sar[xarray]'")
    pytest.importorskip("rioxarray", reason="the xarray extra: pip install 'eo2sar[xarray]'")
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    monkeypatch.setenv("EO2SAR_EXAMPLES_OUT", str(tmp_path))
    nb = nbformat.read(path, as_version=4)
    # run from the repository root: the kernel imports this checkout's packages
    nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(REPO)}}).execute()
    assert list(tmp_path.glob("*.tif"))

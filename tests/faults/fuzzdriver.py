"""Runs fuzzed rasters through the pipeline, one forked child per case (used by
tests/faults/test_fuzz_rasters.py; not a test module).

    python -m tests.faults.fuzzdriver CASES.json RESULTS.json

CASES.json: {"model": path, "cases": [{"name", "input", "out_dir"}, ...], "timeout_s",
"memory_bytes"}. This process imports the stack once; each case runs in a fork()ed child
(cheap: the imports are shared) under an address-space limit, so that a crash (a signal),
a hang (killed at timeout_s) or an allocation beyond the limit ends that case alone, and
is recorded as such instead of taking the test run with it. A child runs the plan as
`pipeline run --dry-run` does (the CLI, in process), then `pipeline.run_scene`, and, for
a file the pipeline refused, app.py's main() (the files it accepts cost a 256 px
inference each there and are covered by tests/test_app.py); each outcome is "ok",
"typed:<the error>" or "untyped:<exception>".
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import os
import resource
import signal
import sys
import time
import traceback
import warnings
from pathlib import Path
from types import ModuleType
from typing import Any

import rasterio
from click.testing import CliRunner

import pipeline.cli
from pipeline import PipelineConfig, run_scene
from pipeline.errors import PipelineError, PipelineWarning
from tests.helpers import REPO

#: settings of every case: 64 px tiles keep a 64 px scene at a few tiles
RUN_FLAGS = ("--tile-size", "64", "--overlap", "16", "--device", "cpu", "-q")
CONFIG = PipelineConfig(tile_size=64, overlap=16, device="cpu")


def dry_run(inp: Path, out: Path, model: Path) -> str:
    """The plan through the CLI, as a user's `--dry-run`: "ok", "typed:..." or "untyped:..."."""
    res = CliRunner().invoke(pipeline.cli.main, ["run", str(inp), str(out), "--model",
                                                 str(model), "--dry-run", *RUN_FLAGS])
    if res.exit_code == 0:
        return "ok"
    if isinstance(res.exception, SystemExit) and res.output.strip().splitlines()[-1].startswith(
            "Error: "):
        return f"typed:exit {res.exit_code}: {res.output.strip().splitlines()[-1]}"
    exc = res.exception
    return f"untyped:{type(exc).__name__}: {exc}" if exc else f"untyped:exit {res.exit_code}"


def full_run(inp: Path, out: Path, model: Path) -> tuple[str, dict[str, Any]]:
    """run_scene: (outcome, facts of the output to check: grid, dtype, count)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", PipelineWarning)
            run_scene(inp, out, model_path=model, config=CONFIG, progress=False)
    except PipelineError as exc:
        return f"typed:{type(exc).__name__}: {exc.format()}", {}
    except Exception as exc:  # noqa: BLE001 - the point: anything else is a finding
        return f"untyped:{type(exc).__name__}: {exc}", {"traceback": traceback.format_exc()}
    with rasterio.open(inp) as a, rasterio.open(out) as b:
        return "ok", {"same_grid": (a.crs == b.crs and a.transform == b.transform
                                    and (a.width, a.height) == (b.width, b.height)),
                      "count": b.count, "dtype": b.dtypes[0]}


def _load_app() -> ModuleType:
    spec = importlib.util.spec_from_file_location("eo2sar_app_fuzz", REPO / "app.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while executing
    spec.loader.exec_module(module)
    return module


app = _load_app()  # once, before the forks


def single_image(inp: Path, out: Path, model: Path) -> str:
    """app.py's main() on the same file: "ok", "typed:<its error line>" or "untyped:..."."""
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            status = app.main(["--device", "cpu", "--model_path", str(model), "--img",
                               str(inp), "--out", str(out)])
    except Exception as exc:  # noqa: BLE001 - the point: anything else is a finding
        return f"untyped:{type(exc).__name__}: {exc}"
    lines = err.getvalue().strip().splitlines()
    if status == 0:
        return "ok" if out.is_file() else "untyped:exit 0 without an output"
    if lines and lines[-1].startswith("error: "):
        return f"typed:{lines[-1]}"
    return f"untyped:exit {status}: {lines[-1] if lines else ''}"


def child(case: dict[str, Any], model: Path, memory: int, result_path: Path) -> None:
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    inp, out_dir = Path(case["input"]), Path(case["out_dir"])
    out = out_dir / "sar.tif"
    got: dict[str, Any] = {"plan": dry_run(inp, out, model)}
    got["run"], got["facts"] = full_run(inp, out, model)
    if got["run"] != "ok":  # a file the pipeline refuses: app.py must refuse it cleanly too
        got["app"] = single_image(inp, out_dir.with_name(out_dir.name + "_app.png"), model)
    got["left"] = sorted(p.name for p in out_dir.iterdir())
    result_path.write_text(json.dumps(got))


def run_case(case: dict[str, Any], model: Path, timeout: float, memory: int,
             result_path: Path) -> dict[str, Any]:
    """Fork, run, wait at most `timeout` s; the child's result or how it ended."""
    t0 = time.monotonic()
    pid = os.fork()
    if pid == 0:  # child: never returns into the parent's code
        status = 0
        try:
            child(case, model, memory, result_path)
        except BaseException:  # noqa: BLE001 - reported by the parent as a crash
            traceback.print_exc()
            status = 3
        os._exit(status)
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() - t0 > timeout:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return {"end": f"timeout after {timeout:g} s"}
        time.sleep(0.02)
    seconds = round(time.monotonic() - t0, 2)
    if os.WIFSIGNALED(status):
        return {"end": f"killed by {signal.Signals(os.WTERMSIG(status)).name}", "s": seconds}
    if os.WEXITSTATUS(status) != 0 or not result_path.exists():
        return {"end": f"child exit {os.WEXITSTATUS(status)}", "s": seconds}
    return {"end": "returned", "s": seconds, **json.loads(result_path.read_text())}


def warm_up(model: Path) -> None:
    """Load the model and run one forward here, once: the children inherit torch's lazy
    initialisation (0.5 s each otherwise). One torch thread: nothing to break in a fork."""
    import torch

    torch.set_num_threads(1)
    gen = app.load_checkpoint(model, networks=("genA2B",)).genA2B
    with torch.inference_mode():
        gen(torch.zeros(1, 3, 64, 64))


def main(cases_path: str, results_path: str) -> None:
    spec = json.loads(Path(cases_path).read_text())
    model = Path(spec["model"])
    warm_up(model)
    results = {}
    for case in spec["cases"]:
        Path(case["out_dir"]).mkdir(parents=True, exist_ok=True)
        results[case["name"]] = run_case(case, model, spec["timeout_s"], spec["memory_bytes"],
                                         Path(case["out_dir"]).with_suffix(".json"))
    Path(results_path).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main(*sys.argv[1:3])

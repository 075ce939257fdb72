"""What the fault tests share: running a command as a user does, killed at a named point.

Faults are cross-cutting (a killed run touches the scene writer, the manifest and the
directory runner at once), so their tests live together in tests/faults/ rather than
mirroring one module each. Each test injects one fault into a real process: a
subprocess started like a user's command, killed with SIGKILL by the test hook
`ugatit.io.fault_point` (``EO2SAR_FAULT_POINT=NAME@N``), or by the test itself.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import rasterio

from tests.helpers import REPO
from ugatit.io import FAULT_ENV, TMP_MARK

#: a subprocess that should finish in seconds; a hang fails the test instead of CI
RUN_TIMEOUT_S = 120
#: small and fast: 128 px tiles on a 320 px scene are 9 tiles (ngf 4 model); one 512 px
#: block per scene, so a fault point counted per block (mid-scene@2) is the 2nd scene's,
#: whatever the default block size
RUN_FLAGS = ("--bands", "3,2,1", "--tile-size", "128", "--overlap", "32", "--block-size", "512")
KILLED = -signal.SIGKILL  # subprocess's returncode of a SIGKILLed child


def env(fault: str | None = None, **extra: str) -> dict[str, str]:
    """This checkout importable, one thread, and the fault point (None: no fault)."""
    e = dict(os.environ, OMP_NUM_THREADS="1", **extra)
    e["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), e.get("PYTHONPATH")]))
    e.pop(FAULT_ENV, None)
    if fault is not None:
        e[FAULT_ENV] = fault
    return e


def run_module(module: str, *args: str | Path, fault: str | None = None,
               timeout: float = RUN_TIMEOUT_S, **extra_env: str
               ) -> subprocess.CompletedProcess[str]:
    """`python -m MODULE ARGS` in a subprocess, as a user runs it."""
    cmd = [sys.executable, "-m", module, *map(str, args)]
    return subprocess.run(cmd, cwd=REPO, env=env(fault, **extra_env), capture_output=True,
                          text=True, timeout=timeout, check=False)


def pipeline_run(*args: str | Path, fault: str | None = None, quiet: bool = True,
                 **extra_env: str) -> subprocess.CompletedProcess[str]:
    """`python -m pipeline run ARGS` with the small tiling of RUN_FLAGS (and -q: no
    progress bar, and a directory run's table lists only failures)."""
    quiet_flag = ("-q",) if quiet else ()
    return run_module("pipeline", "run", *args, *RUN_FLAGS, *quiet_flag, fault=fault,
                      **extra_env)


def temps(folder: Path) -> list[str]:
    """Names of eo2sar temporary files anywhere under `folder`."""
    return sorted(p.name for p in folder.rglob(f"*{TMP_MARK}*"))


def visible(folder: Path) -> list[str]:
    """Relative paths of the non-hidden files under `folder` (what a user sees)."""
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")
                  if p.is_file() and not p.name.startswith("."))


def same_bytes(a: Path, b: Path) -> bool:
    return a.read_bytes() == b.read_bytes()


def raster_values(path: Path) -> np.ndarray:
    with rasterio.open(path) as ds:
        return ds.read()

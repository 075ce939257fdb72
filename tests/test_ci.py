"""CI runs the viewer's browser test: .ci/ensure_chromium installs Chromium when missing
(idempotent) and EO2SAR_REQUIRE_CHROMIUM=1 turns the test's skip into a failure.

The install script runs against fake `apt-get`, `id` and browser commands on a private
PATH: nothing is installed on this machine, and the test needs no network.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.chromium import REQUIRE_ENV, chromium_or_skip
from tests.helpers import REPO

SCRIPT = REPO / ".ci" / "ensure_chromium"


def _fake_bin(folder: Path, uid: int, installs: bool) -> Path:
    """A PATH folder with `id -u` -> uid and an `apt-get` that logs its arguments (and
    'installs' chromium, a stub, on `install`)."""
    folder.mkdir()
    log = folder / "apt.log"
    (folder / "id").write_text(f"#!/bin/sh\necho {uid}\n")
    make = f'[ "$1" = install ] && printf "#!/bin/sh\\n" > "{folder}/chromium" && ' \
           f'chmod +x "{folder}/chromium"\n' if installs else ""
    (folder / "apt-get").write_text(f'#!/bin/sh\necho "$@" >> "{log}"\n{make}exit 0\n')
    for name in ("id", "apt-get"):
        (folder / name).chmod(0o755)
    return log


def test_ci_installs_chromium_only_when_missing(tmp_path):
    """PATH is only the fakes' folder (the script needs nothing else: bash builtins), so
    the browser is 'missing' even where the machine has one."""
    fake = tmp_path / "bin"
    log = _fake_bin(fake, uid=0, installs=True)
    env = {"PATH": str(fake), "HOME": str(tmp_path)}
    bash = "/bin/bash" if Path("/bin/bash").exists() else "/usr/bin/bash"
    run = subprocess.run([bash, str(SCRIPT)], env=env, capture_output=True, text=True,
                         timeout=60, check=False)
    assert run.returncode == 0, run.stderr
    assert log.read_text().splitlines() == ["update", "install -y chromium"]
    again = subprocess.run([bash, str(SCRIPT)], env=env, capture_output=True, text=True,
                           timeout=60, check=False)
    assert again.returncode == 0 and "present, nothing to install" in again.stdout
    assert log.read_text().splitlines() == ["update", "install -y chromium"]  # idempotent


def test_ci_without_root_says_what_to_do_and_fails(tmp_path):
    fake = tmp_path / "bin"
    log = _fake_bin(fake, uid=1000, installs=True)
    bash = "/bin/bash" if Path("/bin/bash").exists() else "/usr/bin/bash"
    run = subprocess.run([bash, str(SCRIPT)], env={"PATH": str(fake), "HOME": str(tmp_path)},
                         capture_output=True, text=True, timeout=60, check=False)
    assert run.returncode == 1 and "apt-get install chromium" in run.stderr
    assert not log.exists()


def test_ci_run_requires_the_browser_test():
    text = (REPO / ".ci" / "run").read_text()
    assert ".ci/ensure_chromium" in text and f"export {REQUIRE_ENV}=1" in text
    assert text.index(".ci/ensure_chromium") < text.index("\nmake test\n")
    assert os.access(SCRIPT, os.X_OK) and os.access(REPO / ".ci" / "run", os.X_OK)


def test_a_missing_browser_skips_locally_and_fails_where_required(monkeypatch):
    monkeypatch.setenv("CHROMIUM", "/nonexistent/chromium")
    monkeypatch.delenv(REQUIRE_ENV, raising=False)
    with pytest.raises(pytest.skip.Exception):
        chromium_or_skip()
    monkeypatch.setenv(REQUIRE_ENV, "1")
    with pytest.raises(pytest.fail.Exception, match=REQUIRE_ENV):
        chromium_or_skip()

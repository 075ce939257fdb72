"""Acceptance: a real cluster started from the command line gives the local run's bytes.

A `dask scheduler` and two `dask worker ADDRESS --nworkers 1 --nthreads 1` processes are
started on the loopback interface exactly as docs/cluster.md tells a user to start them
on two machines; `python -m pipeline run ... --scheduler ADDRESS` (a subprocess, as a
user runs it) translates one scene and a directory of three; every output must equal,
array for array, the in-process run's, with the same CRS, transform and nodata. The
workers' model caches are read back (`client.run`) to check that each worker process
loaded the checkpoint once, however many batches and scenes it ran, and that the
batches were spread over both workers.

Every wait is bounded (process start, worker registration, each run), and every process
is terminated in the fixture's teardown, so a hung cluster fails here instead of
hanging CI.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner
from rasterio.windows import Window

from pipeline.cli import main
from tests.helpers import L8, REPO, crop

distributed = pytest.importorskip("distributed")

START_TIMEOUT_S = 30  # scheduler file written, both workers registered
RUN_TIMEOUT_S = 45  # one `python -m pipeline run`
# 128 px tiles, one per task: a 320 px scene is 9 batches, more than the two workers
RUN_FLAGS = ("--bands", "3,2,1", "--nodata", "0", "--tile-size", "128", "--overlap", "32",
             "--batch-size", "1")


@dataclass
class CommandLineCluster:
    address: str
    client: Any
    logs: Path

    def log_text(self) -> str:
        """The processes' logs, for a failure message."""
        return "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}"
                         for p in sorted(self.logs.glob("*.log")))


def _dask_command(sub: str) -> list[str]:
    """`dask scheduler` / `dask worker` of this environment (the console script beside
    this Python, else the module behind it)."""
    script = Path(sys.executable).with_name("dask")
    if script.exists():
        return [str(script), sub]
    return [sys.executable, "-m", f"distributed.cli.dask_{sub}"]


def _env() -> dict[str, str]:
    """The workers import this checkout's `pipeline`, one torch thread each."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def _start(cmd: list[str], log: Path) -> subprocess.Popen:
    with log.open("wb") as fh:
        return subprocess.Popen(cmd, cwd=REPO, env=_env(), stdout=fh, stderr=subprocess.STDOUT)


def _wait_for_file(path: Path, proc: subprocess.Popen, deadline: float) -> dict[str, Any]:
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the scheduler exited with {proc.returncode}")
        if path.exists() and path.stat().st_size:
            try:
                return json.loads(path.read_text())
            except json.JSONDecodeError:
                pass  # being written
        time.sleep(0.1)
    raise TimeoutError(f"no scheduler file after {START_TIMEOUT_S} s")


def _stop(procs: list[subprocess.Popen]) -> None:
    """Workers first, then the scheduler; SIGTERM, then SIGKILL after 10 s."""
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@pytest.fixture(scope="module")
def cli_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CommandLineCluster]:
    """`dask scheduler` on 127.0.0.1 (free port, read from its scheduler file) and two
    `dask worker ADDRESS --nworkers 1 --nthreads 1`, all started as a user would."""
    logs = tmp_path_factory.mktemp("cluster")
    scheduler_file = logs / "scheduler.json"
    procs: list[subprocess.Popen] = []
    client = None
    try:
        procs.append(_start([*_dask_command("scheduler"), "--host", "127.0.0.1", "--port", "0",
                             "--no-dashboard", "--scheduler-file", str(scheduler_file)],
                            logs / "scheduler.log"))
        deadline = time.monotonic() + START_TIMEOUT_S
        address = _wait_for_file(scheduler_file, procs[0], deadline)["address"]
        assert address.startswith("tcp://127.0.0.1:"), address
        for i in range(2):
            procs.insert(0, _start(
                [*_dask_command("worker"), address, "--nworkers", "1", "--nthreads", "1",
                 "--host", "127.0.0.1", "--no-dashboard", "--name", f"w{i}",
                 "--local-directory", str(logs / f"w{i}")],
                logs / f"worker{i}.log"))
        client = distributed.Client(address, timeout="10s")
        client.wait_for_workers(2, timeout=max(1.0, deadline - time.monotonic()))
        yield CommandLineCluster(address, client, logs)
    finally:
        if client is not None:
            client.close()
        _stop(procs)


def _model_calls(client: Any) -> dict[str, tuple[int, int]]:
    """Per worker: (checkpoint loads, model look-ups) of its per-process model cache."""

    def counts() -> tuple[int, int]:
        from pipeline.run.inference import _cached_generator, _cached_runner

        runner = _cached_runner.cache_info()  # every batch task asks for its runner
        return _cached_generator.cache_info().misses, runner.hits + runner.misses

    return client.run(counts)


def _run_cli(cluster: CommandLineCluster, *args: str | Path) -> None:
    """`python -m pipeline run ARGS --scheduler ADDRESS`, as a user runs it."""
    cmd = [sys.executable, "-m", "pipeline", "run", *map(str, args), *RUN_FLAGS, "-q",
           "--scheduler", cluster.address]
    proc = subprocess.run(cmd, cwd=REPO, env=_env(), capture_output=True, text=True,
                          timeout=RUN_TIMEOUT_S, check=False)
    assert proc.returncode == 0, proc.stderr + cluster.log_text()


def _run_local(*args: str | Path) -> None:
    """The same command in this process, on Dask's in-process threads."""
    result = CliRunner().invoke(main, ["run", *map(str, args), *RUN_FLAGS, "-q"])
    assert result.exit_code == 0, result.output


def assert_same_raster(a: Path, b: Path) -> None:
    """Equal arrays (NaN where NaN), dtype, CRS, transform and nodata."""
    with rasterio.open(a) as da, rasterio.open(b) as db:
        assert (db.crs, db.transform, db.dtypes) == (da.crs, da.transform, da.dtypes)
        assert db.nodata == da.nodata or (np.isnan(db.nodata) and np.isnan(da.nodata))
        ya, yb = da.read(), db.read()
    assert ya.tobytes() == yb.tobytes(), (a, b, np.nanmax(np.abs(ya - yb)))


@pytest.fixture(scope="module")
def scenes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three 320 x 320 px Landsat 8 crops, one with part of the zero collar."""
    root = tmp_path_factory.mktemp("scenes")
    for name, (col, row) in {"a": (0, 0), "b": (700, 600), "c": (1500, 1200)}.items():
        crop(L8, root / f"{name}.tif", Window(col, row, 320, 320))
    return root


def test_scene_on_a_command_line_cluster_equals_the_local_run(
    cli_cluster, scenes, tiny_checkpoint, tmp_path
):
    scene = scenes / "a.tif"
    local, remote = tmp_path / "local.tif", tmp_path / "cluster.tif"
    # one tile in the statistics pass (a task of its own; its output is kept), so 8 of
    # the 9 one-tile batches forward a tile
    sample = ("--norm-sample", "1")
    _run_local(scene, local, "--model", tiny_checkpoint, *sample)
    before = _model_calls(cli_cluster.client)
    _run_cli(cli_cluster, scene, remote, "--model", tiny_checkpoint, *sample)
    assert_same_raster(local, remote)
    after = _model_calls(cli_cluster.client)
    # the pass + 8 batches over two worker processes, each asking for its runner: both
    # ran some, each loaded the model once
    assert sum(after[w][1] - before[w][1] for w in after) == 9
    assert all(after[w][1] > before[w][1] for w in after), (before, after)
    assert all(loads == 1 for loads, _ in after.values()), after


def test_directory_on_a_command_line_cluster_equals_the_local_run(
    cli_cluster, scenes, tiny_checkpoint, tmp_path
):
    local, remote = tmp_path / "local", tmp_path / "cluster"
    sample = ("--norm-sample", "1")  # per scene: the pass + 8 batches that forward a tile
    _run_local(scenes, local, "--model", tiny_checkpoint, *sample)
    before = _model_calls(cli_cluster.client)
    _run_cli(cli_cluster, scenes, remote, "--model", tiny_checkpoint, *sample)
    report = json.loads((remote / "eo2sar_run_report.json").read_text())
    assert report["counts"] == {"total": 3, "done": 3, "skipped": 0, "failed": 0}
    for name in ("a", "b", "c"):
        assert_same_raster(local / f"{name}.tif", remote / f"{name}.tif")
    after = _model_calls(cli_cluster.client)
    # 3 scenes x 9 runner look-ups, spread over both workers; the model stays loaded
    assert sum(after[w][1] - before[w][1] for w in after) == 27
    assert all(after[w][1] > before[w][1] for w in after), (before, after)
    assert all(loads == 1 for loads, _ in after.values()), after
    shutil.rmtree(remote)


def test_cuda_asked_of_workers_without_a_gpu_resource_names_the_fix(
    cli_cluster, scenes, tiny_checkpoint, tmp_path
):
    """The command-line workers advertise no GPU: --device cuda stops with exit 2 and the
    `dask worker --resources GPU=1` fix, writes nothing, and runs no task."""
    before = _model_calls(cli_cluster.client)
    for inp, out in ((scenes / "a.tif", tmp_path / "o.tif"), (scenes, tmp_path / "out")):
        result = CliRunner().invoke(main, ["run", str(inp), str(out), "--model",
                                           str(tiny_checkpoint), *RUN_FLAGS, "-q",
                                           "--device", "cuda", "--scheduler",
                                           cli_cluster.address])
        assert result.exit_code == 2, result.output
        assert "advertises a GPU resource" in result.output
        assert "--resources GPU=1" in result.output
        assert not out.exists() or not any(out.iterdir())
    assert _model_calls(cli_cluster.client) == before


# --- TLS: a remote scheduler reached with Dask's own TLS settings (docs/cluster.md) -------


def _self_signed_tls(folder: Path) -> dict[str, Path]:
    """A throw-away CA and one certificate it signs for 127.0.0.1 (scheduler, worker and
    client share it here; on a real cluster each gets its own): ca.pem, cert.pem, key.pem,
    and a second CA's certificate (rogue.pem) that this CA does not trust."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    life = (now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=1))

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def cert(subject: str, key: Any, issuer: str, issuer_key: Any, ca: bool) -> x509.Certificate:
        b = (x509.CertificateBuilder().subject_name(name(subject)).issuer_name(name(issuer))
             .public_key(key.public_key()).serial_number(x509.random_serial_number())
             .not_valid_before(life[0]).not_valid_after(life[1])
             .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if not ca:
            import ipaddress

            b = b.add_extension(x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False)
        return b.sign(issuer_key, hashes.SHA256())

    def pem(c: x509.Certificate) -> bytes:
        return c.public_bytes(serialization.Encoding.PEM)

    ca_key, key, rogue_key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(3))
    out = {"ca": folder / "ca.pem", "cert": folder / "cert.pem", "key": folder / "key.pem",
           "rogue": folder / "rogue.pem", "rogue_key": folder / "rogue-key.pem"}
    out["ca"].write_bytes(pem(cert("eo2sar test CA", ca_key, "eo2sar test CA", ca_key, True)))
    out["cert"].write_bytes(pem(cert("127.0.0.1", key, "eo2sar test CA", ca_key, False)))
    out["rogue"].write_bytes(pem(cert("127.0.0.1", rogue_key, "rogue", rogue_key, False)))
    for path, k in ((out["key"], key), (out["rogue_key"], rogue_key)):
        path.write_bytes(k.private_bytes(serialization.Encoding.PEM,
                                         serialization.PrivateFormat.PKCS8,
                                         serialization.NoEncryption()))
        path.chmod(0o600)
    return out


def _tls_env(ca: Path, cert: Path, key: Path) -> dict[str, str]:
    """Dask's TLS configuration as environment variables (what a user sets, or writes in
    ~/.config/dask/distributed.yaml: docs/cluster.md)."""
    return {"DASK_DISTRIBUTED__COMM__TLS__CA_FILE": str(ca),
            "DASK_DISTRIBUTED__COMM__TLS__CLIENT__CERT": str(cert),
            "DASK_DISTRIBUTED__COMM__TLS__CLIENT__KEY": str(key),
            "DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION": "True"}


def _pipeline(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    base = {k: v for k, v in _env().items() if not k.startswith("DASK_")}
    return subprocess.run([sys.executable, "-m", "pipeline", "run", *args], cwd=REPO,
                          env={**base, **env}, capture_output=True, text=True,
                          timeout=RUN_TIMEOUT_S, check=False)


@pytest.mark.slow  # three processes and four runs: about 30 s on 2 cores
def test_tls_scheduler_and_worker_on_loopback(tmp_path: Path, tiny_checkpoint: Path) -> None:
    """A `dask scheduler --protocol tls` and a TLS `dask worker` on 127.0.0.1 (certificates
    made here): `pipeline run --scheduler tls://...` with Dask's TLS settings in the
    environment gives the in-process run's bytes. Without them it is refused before
    connecting (exit 2, one line); with a certificate the cluster's CA did not sign, or
    over plain tcp://, the scheduler does not let it in (exit 1, one line); nothing is
    written in either case."""
    tls = _self_signed_tls(tmp_path)
    flags = ["--tls-ca-file", str(tls["ca"]), "--tls-cert", str(tls["cert"]),
             "--tls-key", str(tls["key"])]
    scheduler_file = tmp_path / "scheduler.json"
    procs: list[subprocess.Popen] = []
    scene = crop(L8, tmp_path / "scene.tif", Window(700, 600, 200, 200))
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    args = [str(scene), str(out_dir / "o.tif"), "--model", str(tiny_checkpoint), *RUN_FLAGS,
            "-q"]
    try:
        procs.append(_start([*_dask_command("scheduler"), "--protocol", "tls", "--host",
                             "127.0.0.1", "--port", "0", "--no-dashboard", "--scheduler-file",
                             str(scheduler_file), *flags], tmp_path / "scheduler.log"))
        deadline = time.monotonic() + START_TIMEOUT_S
        address = _wait_for_file(scheduler_file, procs[0], deadline)["address"]
        assert address.startswith("tls://127.0.0.1:"), address
        procs.insert(0, _start([*_dask_command("worker"), address, "--nworkers", "1",
                                "--nthreads", "1", "--host", "127.0.0.1", "--no-dashboard",
                                "--local-directory", str(tmp_path / "w"), *flags],
                               tmp_path / "worker.log"))

        # the attacks: no TLS settings, a certificate of another CA, plain tcp://
        bare = _pipeline([*args, "--scheduler", address], {})
        assert bare.returncode == 2, bare.stderr
        assert bare.stderr.startswith("Error: --scheduler: a tls:// scheduler, but no TLS CA")
        rogue = _pipeline([*args, "--scheduler", address],
                          _tls_env(tls["ca"], tls["rogue"], tls["rogue_key"]))
        plain = _pipeline([*args, "--scheduler", address.replace("tls://", "tcp://")], {})
        for refused in (rogue, plain):
            assert refused.returncode == 1, refused.stderr
            last = refused.stderr.strip().splitlines()[-1]
            assert last.startswith("Error: ") and "cannot reach the Dask scheduler" in last
        assert list(out_dir.iterdir()) == []

        good = _pipeline([*args, "--scheduler", address],
                         _tls_env(tls["ca"], tls["cert"], tls["key"]))
        logs = "".join(p.read_text()[-2000:] for p in tmp_path.glob("*.log"))
        assert good.returncode == 0, good.stderr + logs
    finally:
        _stop(procs)
    _run_local(scene, tmp_path / "local.tif", "--model", tiny_checkpoint)
    assert_same_raster(tmp_path / "local.tif", out_dir / "o.tif")

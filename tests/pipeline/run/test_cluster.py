"""pipeline.run.cluster and iter_distributed: GPU workers, resources, retries, bounded flight.

CI has no GPU: the choice of cluster is a pure function tested with fake GPU ids, and the
no-dask-cuda GPU cluster is built for real on CPU (CUDA_VISIBLE_DEVICES is only an
environment variable to a worker that never touches CUDA).
"""

from __future__ import annotations

import threading
from typing import Any

import pytest

from pipeline.config import PipelineConfig
from pipeline.errors import ConfigError, DeviceError, PipelineError
from pipeline.run import cluster, inference
from pipeline.run.cluster import (
    GPU_RESOURCE,
    WorkerPlan,
    check_gpu_workers,
    cluster_arguments,
    gpu_worker_plan,
    task_resources,
    wait_for_workers,
)
from pipeline.run.scheduling import TASK_RETRIES, describe, iter_distributed, scheduler_client


def test_cpu_workers_are_one_thread_processes_without_resources():
    plan = gpu_worker_plan(3, "cpu", ["0", "1"], have_dask_cuda=True)
    assert plan == WorkerPlan(n=3, threads=1)
    assert plan.resources is None and plan.env(0) == {}


@pytest.mark.parametrize("dask_cuda", [True, False])
def test_cuda_workers_one_process_per_gpu_each_seeing_its_own(dask_cuda):
    # the parent sees GPUs 2,5,7 (its CUDA_VISIBLE_DEVICES): worker i gets the i-th of those
    plan = gpu_worker_plan(2, "cuda", ["2", "5", "7"], have_dask_cuda=dask_cuda)
    assert plan.n == 2 and plan.gpus == ("2", "5") and plan.dask_cuda is dask_cuda
    assert [plan.env(i) for i in range(2)] == [
        {"CUDA_VISIBLE_DEVICES": "2"}, {"CUDA_VISIBLE_DEVICES": "5"}]
    assert plan.resources == {GPU_RESOURCE: 1}
    assert gpu_worker_plan(1, "cuda:0", ["0"], False).gpus == ("0",)


def test_a_gpu_worker_runs_two_tasks_at_once():
    """Issue 16 item 3: a GPU worker (GPU=1, 2 threads) fits two CUDA tasks, so one reads
    its tiles while the other's forwards run (they take turns on the forward lock:
    tests/pipeline/run/test_inference.py); a CPU task asks for nothing."""
    plan = gpu_worker_plan(1, "cuda", ["0"], have_dask_cuda=False)
    share = task_resources("cuda")[GPU_RESOURCE]
    assert plan.resources[GPU_RESOURCE] / share == plan.threads == 2
    kind, kwargs = cluster_arguments(plan)
    opts = kwargs["workers"]["gpu-0"]["options"]
    assert kind == "SpecCluster" and opts["nthreads"] == 2
    assert opts["resources"][GPU_RESOURCE] / share == 2


def test_cuda_workers_refused_beyond_the_visible_gpus_or_for_another_index():
    with pytest.raises(ConfigError, match="needs 3 GPUs, 2 visible") as err:
        gpu_worker_plan(3, "cuda", ["0", "1"], have_dask_cuda=False)
    assert "--workers 2" in err.value.hint
    with pytest.raises(ConfigError, match="each worker sees only its own GPU") as err:
        gpu_worker_plan(1, "cuda:1", ["0", "1"], have_dask_cuda=False)
    assert "CUDA_VISIBLE_DEVICES" in err.value.hint


def test_visible_gpus_follow_cuda_visible_devices(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3, 1")
    assert cluster.visible_gpus() == ["3", "1"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert cluster.visible_gpus() == []
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    import torch

    assert cluster.visible_gpus() == [str(i) for i in range(torch.cuda.device_count())]


def test_task_resources_and_describe():
    assert task_resources("cpu") is None
    assert task_resources("cuda") == task_resources("cuda:1") == {GPU_RESOURCE: 0.5}
    assert "one GPU each" in describe(PipelineConfig(workers=2, device="cuda"), None)


class FakeClient:
    """What iter_distributed and the checks use of a distributed Client; records calls."""

    def __init__(self, nthreads: int = 2, resources: list[dict] | None = None) -> None:
        self._nthreads = nthreads
        self._resources = resources if resources is not None else [{}]
        self.in_flight = 0
        self.max_in_flight = 0
        self.submits: list[dict[str, Any]] = []
        self.cancelled = 0

    def nthreads(self) -> dict[str, int]:
        return {"tcp://w:1": self._nthreads}

    def scheduler_info(self) -> dict[str, Any]:
        return {"workers": {f"tcp://w:{i}": {"resources": r}
                            for i, r in enumerate(self._resources)}}

    def wait_for_workers(self, n: int, timeout: float | None = None) -> None:
        raise TimeoutError

    def submit(self, fn, *args, **kwargs) -> FakeFuture:
        self.submits.append(kwargs)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        return FakeFuture(self, fn(*args))


class FakeFuture:
    def __init__(self, client: FakeClient, value: Any) -> None:
        self.client, self.value = client, value

    def result(self) -> Any:
        return self.value

    def release(self) -> None:
        self.client.in_flight -= 1

    def cancel(self) -> None:
        self.client.cancelled += 1
        self.client.in_flight -= 1


@pytest.fixture
def fake_batches(monkeypatch):
    monkeypatch.setattr(inference, "run_batch", lambda job, tiles: [t * 10 for t in tiles])
    return [(b, (b,)) for b in range(50)]


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_distributed_work_in_flight_is_bounded_retried_and_gpu_tagged(fake_batches, device):
    client = FakeClient(nthreads=2)
    job = type("Job", (), {"device": device})()
    got = list(iter_distributed(job, fake_batches, client))
    assert got == [(b, [b * 10]) for b, _ in fake_batches]  # order kept
    assert client.max_in_flight == 4  # 2 per worker thread, never the 50 batches
    assert all(s["retries"] == TASK_RETRIES >= 1 for s in client.submits)
    want = {GPU_RESOURCE: 0.5} if device == "cuda" else None
    assert all(s["resources"] == want for s in client.submits)
    assert len({s["key"] for s in client.submits}) == 50


def test_distributed_stop_early_cancels_what_is_in_flight(fake_batches):
    client = FakeClient(nthreads=1)
    job = type("Job", (), {"device": "cpu"})()
    it = iter_distributed(job, fake_batches, client)
    next(it)
    it.close()  # e.g. the writer failed
    assert client.cancelled == 1 and client.in_flight == 0


def test_cuda_on_a_cluster_without_gpu_workers_names_the_fix():
    check_gpu_workers(FakeClient(resources=[{}]), "cpu")  # CPU needs nothing
    check_gpu_workers(FakeClient(resources=[{}, {GPU_RESOURCE: 1}]), "cuda")
    with pytest.raises(DeviceError, match="no worker of tcp://h:8786 advertises") as err:
        check_gpu_workers(FakeClient(resources=[{}, {"MEM": 4}]), "cuda:0", "tcp://h:8786")
    assert "dask worker tcp://h:8786" in err.value.hint
    assert "--resources GPU=1" in err.value.hint
    assert err.value.exit_code == 2


def test_a_callers_client_without_gpu_workers_is_refused_for_cuda():
    with pytest.raises(DeviceError), scheduler_client(PipelineConfig(device="cuda"),
                                                      FakeClient()):
        pass  # pragma: no cover - never entered


def test_no_worker_on_the_scheduler_is_a_clear_error():
    with pytest.raises(PipelineError, match="no Dask worker connected") as err:
        wait_for_workers(FakeClient(), "tcp://h:8786", timeout=0.1)
    assert "dask worker tcp://h:8786" in err.value.hint


def _worker_env(name: str) -> str | None:
    """Runs on a worker (a bound os.environ.get would carry this process's copy)."""
    import os

    return os.environ.get(name)


def test_gpu_local_cluster_without_dask_cuda_gives_each_worker_its_gpu(monkeypatch):
    """--workers 2 --device cuda on a machine 'with' GPUs 4 and 6 and no dask-cuda: two
    Nanny processes, CUDA_VISIBLE_DEVICES 4 and 6, each advertising GPU=1."""
    pytest.importorskip("distributed")
    monkeypatch.setattr(cluster, "visible_gpus", lambda: ["4", "6"])
    monkeypatch.setattr(cluster, "_have_dask_cuda", lambda: False)
    with scheduler_client(PipelineConfig(workers=2, device="cuda"), None) as client:
        client.wait_for_workers(2, timeout=30)
        envs = client.run(_worker_env, "CUDA_VISIBLE_DEVICES")
        assert sorted(envs.values()) == ["4", "6"]
        info = client.scheduler_info()["workers"].values()
        assert [w["resources"] for w in info] == [{GPU_RESOURCE: 1}] * 2
        assert sorted(client.nthreads().values()) == [2, 2]
        check_gpu_workers(client, "cuda")
        # two tasks asking what a CUDA batch task asks run at the same time on ONE GPU
        # worker: each waits for the other at a barrier (one task per GPU would time out)
        first = next(iter(client.scheduler_info()["workers"]))
        futures = [client.submit(_meet_another_task, i, resources=task_resources("cuda"),
                                 workers=[first], pure=False) for i in range(2)]
        assert client.gather(futures) == [True, True]


_TWO_TASKS = threading.Barrier(2)


def _meet_another_task(i: int) -> bool:
    """Runs on a worker: returns once a second task reached the same barrier."""
    _TWO_TASKS.wait(timeout=20)
    return True


def _fail_once_then_run(marker: str, job: Any, tiles: Any) -> Any:
    """A batch task whose first attempt (any batch) fails like a flaky network read: the
    marker file is the state, so it survives the task being pickled to a worker."""
    from pathlib import Path

    flag = Path(marker)
    if not flag.exists():
        flag.write_text("failed once")
        raise OSError("transient read error")
    return _real_run_batch(job, tiles)


_real_run_batch = inference.run_batch


def test_a_failed_task_is_retried_and_the_bytes_kept(tiny_checkpoint, tmp_path, monkeypatch):
    """One batch task raises once on a real (in-process) cluster: the scene still
    completes, with the in-process run's bytes."""
    import functools

    import rasterio
    from distributed import Client, LocalCluster

    from pipeline import load_config, run_scene
    from tests.helpers import SN6

    cfg = {"tile_size": 64, "overlap": 16, "batch_size": 2}
    local, remote = tmp_path / "local.tif", tmp_path / "remote.tif"
    run_scene(SN6, local, model_path=tiny_checkpoint, config=load_config(None, cfg),
              progress=False)
    marker = tmp_path / "failed.flag"
    monkeypatch.setattr(inference, "run_batch",
                        functools.partial(_fail_once_then_run, str(marker)))
    with LocalCluster(n_workers=1, threads_per_worker=2, processes=False,
                      dashboard_address=None) as lc, Client(lc) as client:
        run_scene(SN6, remote, model_path=tiny_checkpoint, config=load_config(None, cfg),
                  client=client, progress=False)
    assert marker.exists()  # the failure happened, and was absorbed by a retry
    with rasterio.open(local) as a, rasterio.open(remote) as b:
        assert a.read().tobytes() == b.read().tobytes()


# --- network exposure of the clusters made here (docs/faults.md, Security) ----------------


def _listeners() -> list[tuple[int, str, int]]:
    """(pid, address, port) of every listening inet socket of this process and its
    children (the cluster's scheduler thread, nanny and worker processes)."""
    import psutil

    me = psutil.Process()
    found = []
    for proc in [me, *me.children(recursive=True)]:
        try:
            conns = proc.net_connections(kind="inet")
        except psutil.Error:
            continue  # exited meanwhile
        found += [(proc.pid, c.laddr.ip, c.laddr.port) for c in conns
                  if c.status == psutil.CONN_LISTEN]
    return found


def _outside_addresses() -> list[str]:
    """This machine's non-loopback IPv4 addresses: where another host would connect."""
    import ipaddress

    import psutil

    return [a.address for addrs in psutil.net_if_addrs().values() for a in addrs
            if a.family.name == "AF_INET" and not ipaddress.ip_address(a.address).is_loopback]


def _assert_loopback_only(before: set[tuple[int, str, int]]) -> None:
    """Every new listener is on 127.0.0.1, none on 8787, and connecting to those ports
    through the machine's other addresses is refused (the attack from the network)."""
    import socket

    new = [x for x in _listeners() if x not in before]
    assert new, "the cluster listens nowhere?"
    assert {ip for _, ip, _ in new} == {"127.0.0.1"}, new
    assert 8787 not in {port for _, _, port in new}
    for ip in _outside_addresses():
        for _, _, port in new:
            with socket.socket() as s:
                s.settimeout(5)
                assert s.connect_ex((ip, port)) != 0, f"{ip}:{port} accepted a connection"


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_local_clusters_listen_on_loopback_only(monkeypatch, device):
    """`--workers 1` (CPU: LocalCluster; `--device cuda` without dask-cuda: a SpecCluster
    of Nannies) binds its scheduler, nanny, worker and HTTP servers to 127.0.0.1 only.
    Was: with `--device cuda` they listened on 0.0.0.0 and [::] (the scheduler's HTTP
    server on 8787), the nanny on the machine's address: any host on the network could
    submit code to the workers."""
    pytest.importorskip("distributed")
    pytest.importorskip("psutil")
    monkeypatch.setattr(cluster, "visible_gpus", lambda: ["4"])
    monkeypatch.setattr(cluster, "_have_dask_cuda", lambda: False)
    before = set(_listeners())
    with scheduler_client(PipelineConfig(workers=1, device=device), None) as client:
        client.wait_for_workers(1, timeout=30)
        _assert_loopback_only(before)


def test_the_dask_cuda_cluster_is_asked_for_loopback_only():
    """The LocalCUDACluster branch cannot run here (no dask-cuda, no GPU): its arguments
    are checked, and, LocalCUDACluster being a LocalCluster that passes them on, the same
    arguments (less its CUDA_VISIBLE_DEVICES) build a LocalCluster listening on loopback
    only."""
    from distributed import LocalCluster

    kind, kwargs = cluster.cluster_arguments(gpu_worker_plan(2, "cuda", ["3", "5"], True))
    assert kind == "LocalCUDACluster" and kwargs["CUDA_VISIBLE_DEVICES"] == "3,5"
    assert kwargs["host"] == "127.0.0.1"
    assert kwargs["dashboard_address"] is None and kwargs["worker_dashboard_address"] is None
    assert kwargs["scheduler_kwargs"] == {"dashboard": False,
                                          "dashboard_address": "127.0.0.1:0"}
    pytest.importorskip("psutil")
    base = {k: v for k, v in kwargs.items() if k != "CUDA_VISIBLE_DEVICES"}
    base.update(n_workers=1)
    before = set(_listeners())
    with LocalCluster(**base) as lc:
        assert lc.scheduler_address.startswith("tcp://127.0.0.1:")
        _assert_loopback_only(before)


def test_every_cluster_kind_binds_loopback():
    for plan in (gpu_worker_plan(2, "cpu", [], False), gpu_worker_plan(1, "cuda", ["0"], False)):
        kind, kwargs = cluster.cluster_arguments(plan)
        if kind == "SpecCluster":
            assert kwargs["scheduler"]["options"]["host"] == "127.0.0.1"
            assert all(w["options"]["host"] == "127.0.0.1" for w in kwargs["workers"].values())
        else:
            assert kwargs["host"] == "127.0.0.1" and kwargs["processes"] is True


def test_remote_security_reads_dasks_tls_settings_and_refuses_what_would_leak(caplog):
    """--scheduler tls://... needs Dask's TLS settings (a CA to check the scheduler); a
    configuration that requires encryption refuses a plain address; a plain address of
    another machine is allowed with a warning, loopback quietly."""
    import dask

    from pipeline.run.cluster import remote_security

    with pytest.raises(ConfigError, match="no TLS CA file") as err:
        remote_security("tls://10.0.0.5:8786")
    assert err.value.exit_code == 2 and "DASK_DISTRIBUTED__COMM__TLS__" in err.value.hint
    with dask.config.set({"distributed.comm.tls.ca-file": "/ca.pem",
                          "distributed.comm.tls.client.cert": "/c.pem",
                          "distributed.comm.require-encryption": True}):
        sec = remote_security("tls://10.0.0.5:8786")
        assert sec.tls_ca_file == "/ca.pem" and sec.tls_client_cert == "/c.pem"
        with pytest.raises(ConfigError, match="requires encryption"):
            remote_security("tcp://10.0.0.5:8786")
    caplog.clear()
    with caplog.at_level("WARNING", logger="pipeline"):
        remote_security("tcp://127.0.0.1:8786")
        remote_security("localhost:8786")
        assert not caplog.records
        remote_security("tcp://gpu1:8786")
    assert "not encrypted" in caplog.text and "tcp://gpu1:8786" in caplog.text


def test_workers_filter_their_log_lines_for_secrets():
    """A worker's own log lines (`Compute Failed ... Exception: RasterioIOError('x.tif?sig=
    ...')`, GDAL's warnings through the last-resort handler) go to the run's stderr: every
    handler of the worker process, present when the cluster is connected, redacts them
    (pipeline/run/cluster.py `redact_worker_logs`). **Was**: only the client's handlers."""
    pytest.importorskip("distributed")

    def worker_side() -> tuple[bool, str]:
        import logging

        from pipeline.urls import RedactingFilter

        record = logging.LogRecord(
            "distributed.worker", logging.WARNING, "w", 1, "Compute Failed: Exception: "
            "RasterioIOError('x.tif?sig=S3CRET&X-Amz-Signature=S3CRET: read error')",
            None, None)
        handlers = [logging.lastResort, *logging.getLogger().handlers,
                    *logging.getLogger("distributed").handlers]
        filtered = all(any(isinstance(f, RedactingFilter) for f in h.filters)
                       for h in handlers if h is not None)
        for handler in handlers:
            if handler is not None:
                handler.filter(record)
        return filtered, record.getMessage()

    with scheduler_client(PipelineConfig(workers=1), None) as client:
        client.wait_for_workers(1, timeout=30)
        (result,) = client.run(worker_side).values()
    filtered, message = result
    assert filtered
    assert "S3CRET" not in message and "x.tif: read error" in message

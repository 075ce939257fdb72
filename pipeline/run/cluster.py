"""The Dask clusters the pipeline makes or joins, and what their workers must offer.

Three ways to run on dask.distributed (docs/cluster.md):

* `--workers N` (CPU): a LocalCluster of N processes x 1 thread on this machine.
* `--workers N --device cuda`: one worker process per GPU, each seeing only its own GPU
  (`CUDA_VISIBLE_DEVICES`), so every worker uses device `cuda` (its GPU 0) and one
  process never touches another's memory. dask-cuda's LocalCUDACluster does exactly
  this when installed; otherwise a SpecCluster of Nannies, worker i with the i-th
  visible GPU in its environment. Every worker advertises the resource `GPU=1`.
* `--scheduler ADDRESS`: an existing cluster. With a CUDA device its workers must
  advertise a `GPU` resource (`dask worker ADDRESS --resources GPU=1`): the batch tasks
  ask for half a GPU each (`TASK_GPU_SHARE`), so they land only on GPU workers and two
  batch tasks run per GPU: one reads and scales its tiles while the other's forwards
  run. Their forwards take turns on a per-process lock (pipeline/run/inference.py:
  `forward_lock`), so the GPU's memory still holds one task's forwards at a time.
  Asked of a cluster with no GPU worker, the run stops before any work with a
  DeviceError naming that fix, instead of waiting forever for a worker that can never
  take the tasks.

Which of these to build is decided by `gpu_worker_plan` (pure: unit-tested with a fake
GPU count, as CI has no GPU); `cluster_arguments` turns it into the constructor's
arguments (pure too, so the dask-cuda branch is tested without dask-cuda) and
`build_cluster` only calls the constructor.

Network exposure. A worker runs whatever task it is sent, so a scheduler or worker that
another machine can reach is remote code execution for anyone on the network. Every
cluster made here listens on loopback only: the scheduler, each nanny and worker
(`host=127.0.0.1`) and their HTTP servers (health, metrics, the dashboard when bokeh is
installed: off, and on 127.0.0.1 on a free port rather than 8787 on every interface).
Left to its defaults, distributed binds a SpecCluster's scheduler and workers to
0.0.0.0 and [::] and a nanny to the machine's address. A remote `--scheduler` is
reached with Dask's own TLS settings (`remote_security`, docs/cluster.md).
"""

from __future__ import annotations

import ipaddress
import logging
import os
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from pipeline.errors import ConfigError, DeviceError, PipelineError

log = logging.getLogger("pipeline")

#: The only interface a local cluster listens on (see the module docstring).
LOOPBACK = "127.0.0.1"
#: Where a local cluster's HTTP servers listen: loopback, a free port.
LOOPBACK_HTTP = f"{LOOPBACK}:0"

#: The resource a GPU worker advertises (1 per GPU) and a CUDA batch task asks for.
GPU_RESOURCE = "GPU"
#: What one CUDA task asks of it: half, so two tasks share a GPU worker and one reads
#: its tiles while the other's forwards run (with one task per GPU, as before issue 16,
#: the reads of the next task never overlapped a forward). The forwards themselves take
#: turns (pipeline/run/inference.py: forward_lock).
TASK_GPU_SHARE = 0.5
#: Seconds `--scheduler` waits for a first worker before giving up with a clear error.
WORKER_WAIT_S = 30.0
WORKER_HINT = ("start one worker per GPU: CUDA_VISIBLE_DEVICES=i dask worker {address}"
               " --nworkers 1 --resources GPU=1 (docs/cluster.md)")


def is_cuda(device: str) -> bool:
    """`cuda` or `cuda:N` (not a prefix test: a device string is validated elsewhere)."""
    return device == "cuda" or device.startswith("cuda:")


def task_resources(device: str) -> dict[str, float] | None:
    """What one batch task asks of a worker: half a GPU on CUDA (two tasks per GPU
    worker, see TASK_GPU_SHARE), nothing on CPU."""
    return {GPU_RESOURCE: TASK_GPU_SHARE} if is_cuda(device) else None


def visible_gpus() -> list[str]:
    """The GPU ids this process may hand out, in order: CUDA_VISIBLE_DEVICES's entries when
    set (so worker i gets the i-th of *those*, not physical GPU i), else 0..count-1."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [g.strip() for g in env.split(",") if g.strip()]
    import torch

    return [str(i) for i in range(torch.cuda.device_count())]


@dataclass(frozen=True)
class WorkerPlan:
    """What `--workers N` builds: N processes x `threads`, each with its own environment
    (`env[i]`, empty on CPU) and resources; `dask_cuda`: build it with LocalCUDACluster."""

    n: int
    threads: int
    gpus: tuple[str, ...] = ()
    dask_cuda: bool = False

    @property
    def resources(self) -> dict[str, float] | None:
        return {GPU_RESOURCE: 1} if self.gpus else None

    def env(self, i: int) -> dict[str, str]:
        return {"CUDA_VISIBLE_DEVICES": self.gpus[i]} if self.gpus else {}


def gpu_worker_plan(workers: int, device: str, gpus: list[str], have_dask_cuda: bool
                    ) -> WorkerPlan:
    """The local cluster for `--workers N --device D`, given the visible GPU ids.

    CPU: N processes x 1 thread (one core each; see pipeline/run/inference.py on why 1).
    CUDA: one process per GPU, the first N visible ones; 2 threads, as in-process on a
    GPU, and GPU=1, of which each task asks TASK_GPU_SHARE: two tasks at once, one
    reading tiles while the other's forwards hold the GPU (the forward lock). Each
    worker sees only its GPU, so the device must be `cuda` or `cuda:0` (its GPU 0).
    """
    if not is_cuda(device):
        return WorkerPlan(n=workers, threads=1)
    if device not in ("cuda", "cuda:0"):
        raise ConfigError(
            f"--workers with --device {device}: each worker sees only its own GPU",
            path="--device",
            hint="use --device cuda; choose the GPUs with CUDA_VISIBLE_DEVICES=1,2,...",
        )
    if workers > len(gpus):
        raise ConfigError(
            f"--workers {workers} with --device cuda needs {workers} GPUs,"
            f" {len(gpus)} visible",
            path="--workers",
            hint=f"use --workers {max(1, len(gpus))} (one worker process per GPU)",
        )
    return WorkerPlan(n=workers, threads=2, gpus=tuple(gpus[:workers]),
                      dask_cuda=have_dask_cuda)


def _have_dask_cuda() -> bool:
    try:
        import dask_cuda  # noqa: F401 - only whether it imports
    except ImportError:
        return False
    return True


def make_local_cluster(workers: int, device: str) -> Any:
    """Build the `--workers` cluster (see `gpu_worker_plan`): loopback only, no dashboard."""
    gpus = visible_gpus() if is_cuda(device) else []
    plan = gpu_worker_plan(workers, device, gpus, _have_dask_cuda() if gpus else False)
    return build_cluster(plan)


def cluster_arguments(plan: WorkerPlan) -> tuple[str, dict[str, Any]]:
    """(constructor name, keyword arguments) of the `--workers` cluster for `plan`:
    "LocalCUDACluster", "SpecCluster" or "LocalCluster". Every listener on loopback and
    no dashboard (module docstring): the scheduler, the workers (and nannies) and their
    HTTP servers get `127.0.0.1`."""
    if plan.dask_cuda:
        return "LocalCUDACluster", {
            "CUDA_VISIBLE_DEVICES": ",".join(plan.gpus), "n_workers": plan.n,
            "threads_per_worker": plan.threads, "resources": plan.resources,
            "host": LOOPBACK, "dashboard_address": None,
            "worker_dashboard_address": None,
            "scheduler_kwargs": {"dashboard": False, "dashboard_address": LOOPBACK_HTTP},
        }
    if plan.gpus:
        from distributed import Nanny, Scheduler

        spec = {
            f"gpu-{i}": {"cls": Nanny, "options": {
                "nthreads": plan.threads, "env": plan.env(i), "resources": plan.resources,
                # the nanny's host is also its worker's (distributed passes it on)
                "host": LOOPBACK, "dashboard": False, "dashboard_address": LOOPBACK_HTTP,
            }}
            for i in range(plan.n)
        }
        scheduler = {"cls": Scheduler, "options": {
            "host": LOOPBACK, "dashboard": False, "dashboard_address": LOOPBACK_HTTP}}
        return "SpecCluster", {"workers": spec, "scheduler": scheduler}
    return "LocalCluster", {
        "n_workers": plan.n, "threads_per_worker": plan.threads, "processes": True,
        "host": LOOPBACK, "dashboard_address": None, "worker_dashboard_address": None,
        "scheduler_kwargs": {"dashboard": False, "dashboard_address": LOOPBACK_HTTP},
    }


def build_cluster(plan: WorkerPlan) -> Any:
    """A LocalCUDACluster, a SpecCluster of one Nanny per GPU, or a LocalCluster, with the
    arguments of `cluster_arguments`."""
    kind, kwargs = cluster_arguments(plan)
    if kind == "LocalCUDACluster":  # pragma: no cover - needs dask-cuda and GPUs
        from dask_cuda import LocalCUDACluster

        return LocalCUDACluster(**kwargs)
    if kind == "SpecCluster":
        from distributed import SpecCluster

        return SpecCluster(**kwargs)
    from distributed import LocalCluster

    return LocalCluster(**kwargs)


def redact_worker_logs(client: Any) -> None:
    """Every worker of `client`'s cluster, present and future (a nanny's restart
    included), filters its log handlers as the CLI does (pipeline/urls.py
    `redact_log_handlers`): a worker's own log lines (`Compute Failed ... Exception:
    RasterioIOError('x.tif?sig=...')`, GDAL's warnings) go to the run's stderr unfiltered
    otherwise. A scheduler plugin would not reach the workers' processes; a worker plugin
    registered on the scheduler does."""
    from distributed.diagnostics.plugin import WorkerPlugin

    class RedactLogs(WorkerPlugin):
        name = "eo2sar-redact-logs"

        def setup(self, worker: Any) -> None:
            from pipeline.urls import redact_log_handlers

            redact_log_handlers()

    client.register_plugin(RedactLogs())


TLS_HINT = ("set Dask's TLS settings (distributed.comm.tls.ca-file, .client.cert, "
            ".client.key) in a Dask config file or the DASK_DISTRIBUTED__COMM__TLS__* "
            "environment variables (docs/cluster.md, TLS)")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def remote_security(address: str) -> Any:
    """The `distributed.Security` to reach `address` with: Dask's own TLS configuration
    (config files, `DASK_DISTRIBUTED__COMM__TLS__*` variables), read explicitly so the
    checks below see what the client will use.

    Refused before connecting (ConfigError, exit 2): a `tls://` address without a CA
    file (the scheduler's certificate could not be verified), and a plain address when
    the configuration requires encryption. A plain `tcp://` address of another machine
    is allowed, with a warning: anyone on that network can run code on its workers.
    """
    from distributed.security import Security

    security = Security()
    scheme = address.split("://", 1)[0] if "://" in address else "tcp"
    if scheme == "tls":
        if not security.tls_ca_file:
            raise ConfigError("a tls:// scheduler, but no TLS CA file is configured",
                              path="--scheduler", hint=TLS_HINT)
        return security
    if security.require_encryption:
        raise ConfigError(
            f"{address} is not encrypted, and the Dask configuration requires encryption"
            " (distributed.comm.require-encryption)", path="--scheduler",
            hint="use the scheduler's tls:// address")
    host = urlsplit(address if "://" in address else f"tcp://{address}").hostname or ""
    if scheme == "tcp" and not _is_loopback(host):
        log.warning("the connection to %s is not encrypted: anyone who can reach the "
                    "scheduler or its workers can run code on them. Use tls:// "
                    "(docs/cluster.md, TLS)", address)
    return security


def wait_for_workers(client: Any, address: str, timeout: float = WORKER_WAIT_S) -> None:
    """At least one worker connected, or a PipelineError naming the fix: submitted tasks
    would otherwise wait forever on a scheduler with no worker."""
    try:
        client.wait_for_workers(1, timeout=timeout)
    except TimeoutError:
        raise PipelineError(
            f"no Dask worker connected to the scheduler within {timeout:.0f} s",
            path=address,
            hint=WORKER_HINT.format(address=address),
        ) from None


def check_gpu_workers(client: Any, device: str, address: str = "the cluster") -> None:
    """With a CUDA device, some worker must advertise the GPU resource the tasks ask for
    (DeviceError otherwise: those tasks could never be scheduled)."""
    if not is_cuda(device):
        return
    workers = client.scheduler_info().get("workers", {})
    if any(w.get("resources", {}).get(GPU_RESOURCE, 0) >= 1 for w in workers.values()):
        return
    raise DeviceError(
        f"--device {device}, but no worker of {address} advertises a {GPU_RESOURCE}"
        f" resource ({len(workers)} worker(s))",
        path="--scheduler",
        hint=WORKER_HINT.format(address=address),
    )

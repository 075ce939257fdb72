"""Where the batch tasks run: the Dask client's lifetime and the batch iterators.

The embedded default is Dask's threaded scheduler in this process; `--workers N`
starts a LocalCluster, `--scheduler ADDRESS` connects to an existing dask.distributed
cluster, and a library caller may pass its own client (DESIGN.md invariant 5). Both
iterators yield batch results in the order the blend needs them with a bounded
look-ahead, so at most a window of batch outputs waits in memory whatever the scene
size. The task itself (`run_batch`) is pipeline/run/inference.py's; it is looked up on that
module at call time so that tests can stand in for it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import uuid
from collections.abc import Callable, Iterator, MutableMapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from pipeline.config import PipelineConfig
from pipeline.errors import PipelineError
from pipeline.run import inference
from pipeline.run.cluster import (
    check_gpu_workers,
    is_cuda,
    make_local_cluster,
    redact_worker_logs,
    remote_security,
    task_resources,
    wait_for_workers,
)
from pipeline.run.inference import InferenceJob, TileOutput

log = logging.getLogger("pipeline")

#: Times a failed batch task is rerun before the scene fails (docs/cluster.md).
TASK_RETRIES = 2

BatchResult = tuple[int, list[TileOutput | None]]
BatchOrder = Sequence[tuple[int, tuple[int, ...]]]
OnDone = Callable[[int], None] | None  # progress: called with the tiles of each batch


def local_threads(threads: int | None, device: str) -> int:
    """Dask threads of the in-process scheduler: one per core on CPU, 2 on a GPU."""
    if threads:
        return threads
    if is_cuda(device):
        return 2  # one reads tiles while the other waits on the GPU
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1)


def local_window(threads: int) -> int:
    """Batches per graph of the in-process scheduler (see iter_local)."""
    return min(64, max(4, 4 * threads))


def is_remote(config: PipelineConfig, client: Any) -> bool:
    """Whether the tiles run on machines other than this one, whose devices this process
    cannot check: `--scheduler`, or a client passed in by a library caller. A client made
    for `--workers` is a LocalCluster on this machine, so its device is checked here."""
    return bool(config.scheduler) or (client is not None and not config.workers)


def describe(config: PipelineConfig, client: Any) -> str:
    """Where the tiles will run, for the plan (`--dry-run`)."""
    if client is not None:
        where = f"dask.distributed client {getattr(client, 'dashboard_link', '')}".strip()
    elif config.scheduler:
        where = f"dask.distributed scheduler {config.scheduler}"
    elif config.workers and is_cuda(config.device):
        where = f"dask local GPU cluster, {config.workers} worker process(es), one GPU each"
    elif config.workers:
        where = f"dask LocalCluster, {config.workers} worker process(es) x 1 thread"
    else:
        where = f"dask local threads x {local_threads(config.threads, config.device)}"
    return f"{where}, device {config.device}"


class scheduler_client:
    """Context manager yielding a distributed Client or None (in-process threads).

    A client passed in is the caller's and stays open; one made here (for `--scheduler`
    or `--workers`) is closed on exit, with its LocalCluster.
    """

    def __init__(self, config: PipelineConfig, client: Any) -> None:
        self.config, self.client = config, client
        self.owned: list[Any] = []

    def __enter__(self) -> Any:
        if self.client is not None:
            check_gpu_workers(self.client, self.config.device)
            return self.client
        if not (self.config.scheduler or self.config.workers):
            return None
        try:
            from distributed import Client
        except ImportError:
            raise PipelineError(
                "dask.distributed is not installed",
                path="--scheduler/--workers",
                hint="pip install distributed, or run without --scheduler/--workers",
            ) from None
        try:
            client = self._connect(Client)
            redact_worker_logs(client)  # worker log lines name URLs too
        except OSError as exc:
            self.__exit__(None, None, None)
            tls = (self.config.scheduler or "").startswith("tls://")
            raise PipelineError(
                f"cannot reach the Dask scheduler ({' '.join(str(exc).split())})",
                path=self.config.scheduler or "LocalCluster",
                hint=("check the address, that the scheduler runs, and the TLS settings"
                      " (CA file, client certificate: docs/cluster.md, TLS)") if tls else
                "check the address (tcp://host:8786) and that the scheduler runs",
            ) from None
        except PipelineError:
            self.__exit__(None, None, None)
            raise
        return client

    def _connect(self, client_cls: Any) -> Any:
        """The scheduler's client (TLS from Dask's configuration), with a worker present
        and GPU workers for CUDA; or a new local cluster's client (pipeline/run/cluster.py
        builds it, listening on loopback only)."""
        address = self.config.scheduler
        if address:
            # Dask's own TLS configuration (pipeline/run/cluster.py: remote_security)
            client = client_cls(address, timeout="10s", security=remote_security(address))
            self.owned.append(client)
            wait_for_workers(client, address)
            check_gpu_workers(client, self.config.device, address)
            return client
        cluster = make_local_cluster(self.config.workers or 1, self.config.device)
        self.owned.append(cluster)
        client = client_cls(cluster)
        self.owned.insert(0, client)
        return client

    def __exit__(self, *exc: Any) -> None:
        for obj in self.owned:
            try:
                obj.close()
            except Exception:  # noqa: BLE001 - closing must not mask the real error
                log.debug("closing %r failed", obj, exc_info=True)
        self.owned.clear()


@contextlib.contextmanager
def torch_threads_kept() -> Iterator[None]:
    """Restore torch's intra-op thread count on exit: CPU tasks pin it to 1 in this
    process (pipeline/run/inference.py), which a library caller should not inherit."""
    import torch

    before = torch.get_num_threads()
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


def batch_results(
    job: InferenceJob,
    order: BatchOrder,
    config: PipelineConfig,
    client: Any,
    on_done: OnDone = None,
    known: MutableMapping[int, TileOutput] | None = None,
) -> Iterator[BatchResult]:
    """The batches of `order`, in that order, on `client` or on in-process threads.

    `known`: outputs made before the batches (the statistics pass's tiles, which
    `run_batch` skips: `job.done`), put in their batches' results in their place and
    dropped from `known` as they are handed over."""
    if client is not None:
        results = iter_distributed(job, order, client, on_done=on_done)
    else:
        threads = local_threads(config.threads, config.device)
        results = iter_local(job, order, threads=threads, on_done=on_done)
    return results if not known else with_known(results, order, known)


def with_known(results: Iterator[BatchResult], order: BatchOrder,
               known: MutableMapping[int, TileOutput]) -> Iterator[BatchResult]:
    """`results` with each tile of `known` given its known output (see batch_results);
    closing this closes `results` (the batches in flight finish or are cancelled)."""
    tiles_of = dict(order)
    try:
        for bi, outs in results:
            yield bi, [known.pop(t) if t in known else out
                       for t, out in zip(tiles_of[bi], outs, strict=True)]
    finally:
        close = getattr(results, "close", None)
        if close is not None:
            close()


def iter_local(job: InferenceJob, order: BatchOrder, *, threads: int, on_done: OnDone = None
               ) -> Iterator[BatchResult]:
    """Dask's in-process threaded scheduler, a window of `4 * threads` batches per graph,
    the NEXT window computing while the caller consumes the current one.

    `dask.compute` blocks until its graph is done, so computed in the caller's thread no
    task would run while the caller blends and writes a window (a probe with 50 ms tasks
    and a 50 ms consumer: 2.66 s, against 1.61 s overlapped; issue 16). So one helper
    thread computes window k + 1 while window k is handed over: results keep their
    order, and at most two windows of batch outputs wait in memory (the one consumed and
    the one computing) whatever the scene size (4 tiles x 256 KiB per batch for 1-band
    output). Each window is a barrier: threads idle while its last batch finishes, so
    it spans several batches per thread (at most 1/4 of a batch per thread lost per
    window) but is capped at 64 batches. The tasks and their bytes are those of a
    sequential run (each tile's forward does not depend on what runs beside it:
    pipeline/run/inference.py). If the caller stops early (an error while writing), the
    window in flight is finished, not abandoned, before this generator closes.
    """
    window = local_window(threads)
    chunks = [order[start : start + window] for start in range(0, len(order), window)]
    inference.pin_threads(job.device, job.precision)
    if not chunks:
        return
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="eo2sar-window") as ahead:
        pending = ahead.submit(_compute_window, job, chunks[0], threads, on_done)
        for k, chunk in enumerate(chunks):
            outs = pending.result()
            if k + 1 < len(chunks):  # one window ahead, no more (bounded memory)
                pending = ahead.submit(_compute_window, job, chunks[k + 1], threads, on_done)
            yield from zip((bi for bi, _ in chunk), outs, strict=True)


def _compute_window(job: InferenceJob, chunk: BatchOrder, threads: int, on_done: OnDone
                    ) -> tuple[Any, ...]:
    """The batches of one window, computed by Dask's local scheduler (blocks).

    The progress callback is passed to this compute only: a callback registered globally
    (`with Callback():`) would see the tasks of another scene in flight, and Dask swaps
    its global callback set out during a compute made without explicit callbacks."""
    import dask
    from dask.callbacks import Callback

    class _Progress(Callback):
        def _posttask(self, key: Any, result: Any, dsk: Any, state: Any, worker_id: Any) -> None:
            if on_done is not None and isinstance(result, list):
                on_done(len(result))

    tasks = [
        dask.delayed(inference.run_batch, pure=True)(job, tiles, dask_key_name=f"eo2sar-batch-{bi}")
        for bi, tiles in chunk
    ]
    scheduler = "synchronous" if threads == 1 else "threads"
    return dask.compute(*tasks, scheduler=scheduler, num_workers=threads,
                        callbacks=[_Progress()._callback])


def run_one_task(client: Any, device: str, fn: Callable[..., Any], *args: Any) -> Any:
    """fn(*args) where the batch tasks run: in this process (client None), or as one
    task on the cluster, asking for a GPU like them and retried like them (the scene's
    normalisation statistics need the model on the run's device)."""
    if client is None:
        return fn(*args)
    future = client.submit(fn, *args, pure=False, retries=TASK_RETRIES,
                           resources=task_resources(device))
    try:
        return future.result()
    finally:
        future.release()


def distributed_window(client: Any) -> int:
    """Batches in flight on a cluster: 2 per worker thread (one running, one queued, so no
    thread waits on this process), never the whole scene."""
    nthreads = sum(client.nthreads().values()) or 1
    return max(2, 2 * nthreads)


def iter_distributed(job: InferenceJob, order: BatchOrder, client: Any, *, on_done: OnDone = None
                     ) -> Iterator[BatchResult]:
    """A dask.distributed client: at most `distributed_window` batches submitted and not
    yet handed over, whatever the scene size (bounded memory on the workers and here).

    Each task is retried TASK_RETRIES times if it raises (a flaky read of a network
    filesystem, a worker lost mid-task is rescheduled by Dask itself); its result does not
    depend on the worker or the attempt (pipeline/run/inference.py), so a retry keeps the
    bytes. With a CUDA device each task asks for one GPU (pipeline/run/cluster.py). Futures
    not yet consumed are cancelled when the caller stops early (an error while writing).
    """
    window = distributed_window(client)
    token = uuid.uuid4().hex[:12]  # unique per run: results are never shared across runs
    resources = task_resources(job.device)
    pending: list[tuple[int, Any]] = []
    position = 0
    try:
        while position < len(order) or pending:
            while position < len(order) and len(pending) < window:
                bi, tiles = order[position]
                fut = client.submit(
                    inference.run_batch, job, tiles, key=f"eo2sar-{token}-{bi}", pure=False,
                    retries=TASK_RETRIES, resources=resources,
                )
                pending.append((bi, fut))
                position += 1
            bi, fut = pending.pop(0)
            result = fut.result()
            fut.release()
            if on_done is not None:
                on_done(len(result))
            yield bi, result
    finally:
        for _, fut in pending:
            fut.cancel()

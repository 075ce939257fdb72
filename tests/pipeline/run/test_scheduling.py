"""pipeline.run.scheduling: where tasks run, client ownership, ordered bounded iteration."""

from __future__ import annotations

import torch

from pipeline.config import PipelineConfig
from pipeline.run import inference
from pipeline.run.scheduling import (
    describe,
    is_remote,
    iter_local,
    local_threads,
    scheduler_client,
    torch_threads_kept,
)


def test_threads_and_where_tiles_run():
    assert local_threads(3, "cpu") == 3 and local_threads(None, "cuda:0") == 2
    assert local_threads(None, "cpu") >= 1
    cfg = PipelineConfig(threads=2)
    assert describe(cfg, None) == "dask local threads x 2, device cpu"
    assert "LocalCluster, 3 worker" in describe(PipelineConfig(workers=3), None)
    assert not is_remote(cfg, None) and is_remote(cfg, object())
    assert is_remote(PipelineConfig(scheduler="tcp://x:8786"), None)
    assert not is_remote(PipelineConfig(workers=2), object())  # a LocalCluster: this machine


def test_a_callers_client_is_used_and_left_open():
    class Client:
        closed = False

        def close(self) -> None:
            self.closed = True

    client = Client()
    with scheduler_client(PipelineConfig(), client) as got:
        assert got is client
    assert not client.closed
    with scheduler_client(PipelineConfig(), None) as got:
        assert got is None  # in-process threads


def test_iter_local_yields_in_order_and_reports_progress(monkeypatch):
    monkeypatch.setattr(inference, "run_batch", lambda job, tiles: [t * 10 for t in tiles])
    monkeypatch.setattr(inference, "pin_threads", lambda device, precision: None)
    job = type("Job", (), {"device": "cpu", "precision": "fp32"})()
    order = [(b, (2 * b, 2 * b + 1)) for b in (3, 0, 2, 1, 4)]
    done: list[int] = []
    got = list(iter_local(job, order, threads=2, on_done=done.append))
    assert got == [(b, [t * 10 for t in tiles]) for b, tiles in order]
    assert sum(done) == 10


def test_torch_threads_are_restored():
    before = torch.get_num_threads()
    with torch_threads_kept():
        torch.set_num_threads(1)
    assert torch.get_num_threads() == before


def _instrumented(monkeypatch, window1: set[int]):
    """run_batch stand-in recording the batches started and finished; a task of the
    second window sets `second_window_started`."""
    import threading

    log: dict[str, list[int]] = {"started": [], "finished": []}
    lock = threading.Lock()
    second = threading.Event()

    def run_batch(job, tiles):
        bi = tiles[0]
        with lock:
            log["started"].append(bi)
        if bi in window1:
            second.set()
        with lock:
            log["finished"].append(bi)
        return [t * 10 for t in tiles]

    monkeypatch.setattr(inference, "run_batch", run_batch)
    monkeypatch.setattr(inference, "pin_threads", lambda device, precision: None)
    return log, second


def test_iter_local_computes_the_next_window_while_one_is_consumed(monkeypatch):
    """Issue 16 item 2: while the caller blends and writes window k (here: waits holding
    its first batch), the tasks of window k + 1 run; never those of window k + 2 (one
    window ahead, bounded memory); results come in order."""
    from pipeline.run.scheduling import local_window

    threads = 2
    window = local_window(threads)
    order = [(b, (b,)) for b in range(3 * window)]
    log, second = _instrumented(monkeypatch, set(range(window, 2 * window)))
    job = type("Job", (), {"device": "cpu", "precision": "fp32"})()
    got = []
    for bi, result in iter_local(job, order, threads=threads):
        if bi % window == 0:  # the first batch of a window: the consumer is busy
            k = bi // window
            started = set(log["started"])
            assert max(started) < (k + 2) * window, "more than one window ahead"
            if k == 0:
                assert second.wait(timeout=30), "no task ran while the window was consumed"
        got.append((bi, result))
    assert got == [(b, [b * 10]) for b, _ in order]


def test_iter_local_stopped_early_leaves_no_task_running(monkeypatch):
    """An error while writing closes the iterator: the window in flight finishes before
    close() returns (no task still reading the input after the run has failed)."""
    from pipeline.run.scheduling import local_window

    window = local_window(1)
    order = [(b, (b,)) for b in range(3 * window)]
    log, _ = _instrumented(monkeypatch, set())
    job = type("Job", (), {"device": "cpu", "precision": "fp32"})()
    it = iter_local(job, order, threads=1)
    assert next(it) == (0, [0])
    it.close()
    assert sorted(log["started"]) == sorted(log["finished"])
    assert len(log["started"]) <= 2 * window

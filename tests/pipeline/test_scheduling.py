"""pipeline.scheduling: where tasks run, client ownership, ordered bounded iteration."""

from __future__ import annotations

import torch

from pipeline import inference
from pipeline.config import PipelineConfig
from pipeline.scheduling import (
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

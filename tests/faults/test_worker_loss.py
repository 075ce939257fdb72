"""Item 4: a Dask worker process dies mid-run; the run completes with the local bytes.

The cluster is the one `--workers 2` builds (pipeline.run.cluster.make_local_cluster: two
one-thread worker processes under nannies). A worker plugin kills its own process with
SIGKILL when it starts its second task (mid-task: that result is never delivered, and
results it held are lost with it); a marker file created with O_EXCL makes it happen
exactly once, in one process, though the nanny restarts the worker with the plugin.
Dask reschedules the lost tasks on the survivor and the restarted worker; the result of
a batch depends only on the batch (pipeline/run/inference.py), so the output must be the
in-process run's, byte for byte (the same settings, so the same provenance tags; the
cluster is passed as `client`, as the directory CLI does).
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import pytest

from pipeline.config import PipelineConfig
from pipeline.run.cluster import make_local_cluster
from pipeline.run.scene import run_scene
from tests.faults.faultlib import same_bytes

distributed = pytest.importorskip("distributed")

CONFIG = dict(bands=(3, 2, 1), tile_size=128, overlap=32, batch_size=1)  # 9 batches


class KillOnce(distributed.WorkerPlugin):
    """SIGKILL this worker's process when it starts its 2nd task, once per marker."""

    def __init__(self, marker: str) -> None:
        self.marker, self.started = marker, 0

    def transition(self, key: Any, start: str, finish: str, **kwargs: Any) -> None:
        if finish != "executing":
            return
        self.started += 1
        if self.started < 2:
            return
        try:
            os.close(os.open(self.marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            return  # another worker (or this one before its restart) already died
        os.kill(os.getpid(), signal.SIGKILL)


@pytest.mark.slow  # a cluster start, a worker restart: ~15 s on 2 busy cores
def test_run_survives_a_killed_worker_with_the_local_bytes(
        two_scenes: Path, tiny_checkpoint: Path, tmp_path: Path) -> None:
    scene = two_scenes / "a.tif"
    local, remote = tmp_path / "local.tif", tmp_path / "cluster.tif"
    run_scene(scene, local, model_path=tiny_checkpoint, config=PipelineConfig(**CONFIG),
              progress=False)
    marker = tmp_path / "worker-killed"
    with make_local_cluster(2, "cpu") as cluster, distributed.Client(cluster) as client:
        client.wait_for_workers(2, timeout=60)
        before = set(client.run(os.getpid).values())
        client.register_plugin(KillOnce(str(marker)), name="kill-once")
        result = run_scene(scene, remote, model_path=tiny_checkpoint,
                           config=PipelineConfig(**CONFIG), client=client,
                           progress=False)
        assert marker.exists()  # a worker was killed mid-run...
        client.wait_for_workers(2, timeout=60)
        after = set(client.run(os.getpid).values())
    assert len(before - after) == 1  # ...exactly one process, replaced by its nanny
    assert result.tiles_run == result.tiles_total == 9
    assert same_bytes(local, remote)

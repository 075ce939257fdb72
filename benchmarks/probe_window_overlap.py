"""Probe of issue 16 item 2: does the local scheduler compute while the client consumes?

32 batch tasks of a 50 ms sleep on 2 Dask threads, the consumer sleeping 50 ms per batch
(standing for blending and writing). Without overlap the time is the sum (~0.8 s of
tasks + 1.6 s of consumer), with one window in flight ahead ~1.6 s + the first window.
Not part of `make bench` (it measures the scheduler's structure, not the machine).

    python -m benchmarks.probe_window_overlap
"""

from __future__ import annotations

import time

from pipeline.run import inference, scheduling


def main() -> float:
    def run_batch(job: object, tiles: tuple[int, ...]) -> list[int]:
        time.sleep(0.05)
        return list(tiles)

    inference.run_batch = run_batch  # type: ignore[assignment]  # a stand-in task
    inference.pin_threads = lambda device, precision="fp32": None  # type: ignore[assignment]
    job = type("Job", (), {"device": "cpu", "precision": "fp32"})()
    order = [(b, (b,)) for b in range(32)]
    best = []
    for _ in range(2):
        t0 = time.perf_counter()
        for _bi, _result in scheduling.iter_local(job, order, threads=2):  # type: ignore[arg-type]
            time.sleep(0.05)
        best.append(time.perf_counter() - t0)
    print(f"32 batches x 50 ms on 2 threads, 50 ms consumer: {min(best):.2f} s")
    return min(best)


if __name__ == "__main__":
    main()

"""Speed of the generator and of the pipeline around it, in one run (issue 8's table).

Why: the pipeline's speed is judged against the bare model, and the bare model against
the machine. Every figure below is measured in the same process, one after the other,
so the RATIOS hold on a shared, noisy machine even when absolute tiles/s do not.

Sections (seed-size light generator unless --ngf: ngf 64, 4 blocks, 256 px tiles,
105.0 GFLOP per tile counted by torch.utils.flop_counter; random weights, seed 0):

  model      model-only tiles/s of
               naive    an eager loop mirroring the original code: batches of 8, fp32,
                        torch's default intra-op threads (all cores), torch defaults
               ours     the pipeline's layout and forward (pipeline.run.inference): on CPU
                        one thread per core, each forwarding 1 tile with 1 intra-op
                        thread; on CUDA one stream of fixed micro-batches (--micro-batch)
               variants the same layout with the speed options (precision,
                        channels_last, compile); "fastest" is the best of them
             with achieved GFLOP/s and its share of the measured ceiling
  layouts    fp32 eager tiles/s of each way to use the cores: threads x intra-op
             threads x tiles per forward, and one process per core
  ceiling    GFLOP/s of the generator's dominant convolution (3x3, 4 ngf -> 4 ngf
             channels at 1/4 resolution) in the same layout, fp32 and bf16
  deviation  each option's output against fp32 through the whole pipeline on a real
             scene (the bundled Landsat 8 crop) with the demo model (trained, ngf 16):
             max and mean absolute difference on the unit scale (what `run` writes)
  pipeline   `run_scene` end to end on the real scene crop with the seed-size model for
             ours (fp32) and the fastest option, against the model-only tiles/s of the
             same option: the pipeline's overhead
  gpu        with CUDA present: the model table on the GPU and a pipeline run on a
             Sentinel-2-like synthetic scene (--s2-size, 10980 x 10980 x 3 uint16 by
             default) with the GPU's busy fraction sampled every 100 ms (NVML through
             torch, or nvidia-smi); compile/model-load time reported apart (warmup_s),
             results saved after every row (--gpu-only: speed_gpu.json, `partial`)

    python -m benchmarks.bench_speed [--quick] [--seconds 20] [--rounds 2] [--ngf 64]
"""

from __future__ import annotations

import argparse
import copy
import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks._common import DEFAULT_OUT, REPO, format_table, make_checkpoint, write_json

DEMO_MODEL = REPO / "checkpoints" / "eo2sar_demo_ngf16.pt"
L8 = REPO / "tests" / "data" / "l8_224078_parana_bgr_uint16.tif"
S2_SIZE = 10980


@dataclass(frozen=True)
class Variant:
    """A set of the pipeline's execution options (pipeline.config)."""

    name: str
    precision: str = "fp32"
    channels_last: bool = False
    compile: bool = False

    def options(self) -> dict[str, Any]:
        return {"precision": self.precision, "channels_last": self.channels_last,
                "compile": self.compile}


CPU_VARIANTS = (
    Variant("fp32"),
    Variant("fp32+channels_last", channels_last=True),
    Variant("fp32+compile", compile=True),
    Variant("bf16", "bf16"),
    Variant("bf16+channels_last", "bf16", channels_last=True),
    Variant("bf16+compile", "bf16", compile=True),
)
CUDA_VARIANTS = (
    Variant("fp32"),
    Variant("tf32", "tf32"),
    Variant("bf16", "bf16"),
    Variant("fp16", "fp16"),
    Variant("fp16+channels_last", "fp16", channels_last=True),
    Variant("bf16+channels_last", "bf16", channels_last=True),
    Variant("fp16+channels_last+compile", "fp16", channels_last=True, compile=True),
)


def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _sync(dev: Any) -> None:
    import torch

    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def rate(step: Callable[[], int], seconds: float, dev: Any, workers: int = 1) -> float:
    """Work units per second of `step` (returns the units it did), run by `workers`
    threads at once after one warm-up call each, over a common window of `seconds`."""
    done = [0] * workers
    start = threading.Barrier(workers + 1)
    stop = threading.Event()

    def loop(i: int) -> None:
        step()
        _sync(dev)
        start.wait()
        while not stop.is_set():
            done[i] += step()
        _sync(dev)

    threads = [threading.Thread(target=loop, args=(i,)) for i in range(workers)]
    for t in threads:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join()
    return sum(done) / (time.perf_counter() - t0)


def flops_per_tile(gen: Any, tile: int) -> float:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        gen(torch.zeros(1, 3, tile, tile))
    return counter.get_total_flops()


def build_generator(ngf: int, n_res: int = 4) -> Any:
    import torch

    from ugatit import ModelConfig
    from ugatit.networks import build_network

    torch.manual_seed(0)
    return build_network("genA2B", ModelConfig(ngf=ngf, n_res=n_res)).eval()


def model_rows(gen: Any, dev: Any, tile: int, micro: int, variants: tuple[Variant, ...],
               seconds: float, on_row: Callable[[list[dict[str, Any]]], None] | None = None,
               in_budget: Callable[[], bool] = lambda: True) -> list[dict[str, Any]]:
    """Model-only tiles/s: naive loop, then each variant in the pipeline's layout.

    `prepare_s` is each variant's preparation (the compilation for compile rows), kept
    apart: tiles/s is timed after it and a warm-up call. `on_row(rows)` after each row
    (the GPU section saves partial results); variants are left out once `in_budget()`
    is false."""
    import torch

    from pipeline.run.inference import forward_fixed_shape, pin_threads, prepare_generator

    gen = gen.to(dev)
    x8 = (torch.rand(8, 3, tile, tile, generator=torch.Generator().manual_seed(0)) * 2 - 1)
    naive_x = x8.to(dev)
    torch.set_num_threads(cores())
    torch.backends.cudnn.deterministic = False  # torch's defaults, as the original ran
    if dev.type == "cuda":
        torch.backends.cudnn.allow_tf32 = True

    def naive() -> int:
        with torch.no_grad():
            gen(naive_x)
        return 8

    rows = [{"variant": "naive (original loop, batch 8)", "tiles_per_s": rate(naive, seconds,
                                                                             dev)}]
    if on_row:
        on_row(rows)
    workers = cores() if dev.type == "cpu" else 1
    xs = x8.repeat(max(1, -(-micro // 8)), 1, 1, 1)[:micro]
    for v in variants:
        if not in_budget():
            rows.append({"variant": f"ours {v.name}", **v.options(), "tiles_per_s": None,
                         "skipped": "time budget"})
            continue
        pin_threads(str(dev), v.precision)
        t0 = time.perf_counter()
        runner = prepare_generator(copy.deepcopy(gen), dev, (micro, 3, tile),
                                   precision=v.precision, channels_last=v.channels_last,
                                   compile=v.compile)
        prep_s = time.perf_counter() - t0

        def ours(runner: Any = runner, v: Variant = v) -> int:
            forward_fixed_shape(runner, xs, dev, micro, False, precision=v.precision,
                                channels_last=v.channels_last)
            return micro

        rows.append({"variant": f"ours {v.name}", **v.options(),
                     "tiles_per_s": rate(ours, seconds, dev, workers), "prepare_s": prep_s})
        if on_row:
            on_row(rows)
    return rows


def _process_rate(ngf: int, seconds: float) -> float:
    """One worker process of the process layout: 1 intra-op thread, 1 tile per forward."""
    import torch

    torch.set_num_threads(1)
    gen = build_generator(ngf)
    x = torch.rand(1, 3, 256, 256) * 2 - 1

    def step() -> int:
        with torch.inference_mode():
            gen(x)
        return 1

    return rate(step, seconds, torch.device("cpu"))


def layout_rows(gen: Any, ngf: int, seconds: float) -> list[dict[str, Any]]:
    """CPU layouts of the same fp32 forward: which way of using the cores is fastest.

    threads x intra-op threads x tiles per forward; "processes" runs one process per
    core (what `--workers N` does), each 1 intra-op thread and 1 tile per forward."""
    import multiprocessing

    import torch

    n = cores()
    rows = []
    for threads, intra, batch in ((n, 1, 1), (n, 1, 4), (1, n, 1), (1, n, 4), (1, n, 8)):
        torch.set_num_threads(intra)
        x = torch.rand(batch, 3, 256, 256) * 2 - 1

        def step(x: Any = x, batch: int = batch) -> int:
            with torch.inference_mode():
                gen(x)
            return batch

        rows.append({"layout": f"{threads} thread(s) x {intra} intra-op x {batch} tile(s)",
                     "tiles_per_s": rate(step, seconds, torch.device("cpu"), threads)})
    with multiprocessing.get_context("spawn").Pool(n) as pool:
        rates = pool.starmap(_process_rate, [(ngf, seconds)] * n)
    rows.append({"layout": f"{n} processes x 1 intra-op x 1 tile", "tiles_per_s": sum(rates)})
    best = max(r["tiles_per_s"] for r in rows)
    for r in rows:
        r["vs_best"] = r["tiles_per_s"] / best
    return rows


def ceiling(dev: Any, ngf: int, tile: int, micro: int, seconds: float) -> list[dict[str, Any]]:
    """GFLOP/s of the residual blocks' 3x3 convolution in the pipeline's layout."""
    import torch

    from pipeline.run.inference import pin_threads

    pin_threads(str(dev))
    c, s = 4 * ngf, tile // 4
    conv = torch.nn.Conv2d(c, c, 3, padding=1, bias=False).to(dev).eval()
    x = torch.rand(micro, c, s, s, device=dev)
    flop = 2.0 * c * c * 9 * s * s * micro
    workers = cores() if dev.type == "cpu" else 1
    rows = []
    for name, dtype in (("fp32", None), ("bf16", torch.bfloat16)):
        def step(dtype: Any = dtype) -> int:
            with torch.inference_mode(), torch.autocast(dev.type, dtype=dtype,
                                                        enabled=dtype is not None):
                conv(x)
            return 1

        rows.append({"conv": f"3x3 {c}->{c} @ {s}x{s} x{micro} {name}",
                     "gflop_per_s": rate(step, seconds, dev, workers) * flop / 1e9})
    return rows


def run_pipeline(scene: Path, out: Path, model: Path, **options: Any) -> dict[str, Any]:
    """`run_scene` end to end; tiles/s over the whole call (planning, COG included).
    --norm tile: this measures the tiles' path against the model's rate; the scene
    normalisation's one statistics pass per scene is benchmarks/bench_norm.py's."""
    from pipeline import load_config, run_scene

    config = load_config(None, {"bands": (3, 2, 1), "norm": "tile", **options})
    res = run_scene(scene, out, model_path=model, config=config, progress=False,
                    overwrite=True)
    return {"tiles": res.tiles_run, "seconds": res.seconds,
            "tiles_per_s": res.tiles_run / res.seconds}


def _read_unit(path: Path) -> np.ndarray:
    import rasterio

    with rasterio.open(path) as ds:
        return ds.read(1)


def deviation_rows(scene: Path, work: Path, variants: tuple[Variant, ...], device: str
                   ) -> list[dict[str, Any]]:
    """Each option's pipeline output against fp32's (demo model, unit scale)."""
    ref_path = work / "dev_fp32.tif"
    run_pipeline(scene, ref_path, DEMO_MODEL, device=device)
    ref = _read_unit(ref_path)
    valid = ~np.isnan(ref)
    rows = []
    for v in variants:
        if v.name == "fp32":
            continue
        path = work / f"dev_{v.name}.tif"
        run_pipeline(scene, path, DEMO_MODEL, device=device, **v.options())
        diff = np.abs(_read_unit(path) - ref)[valid]
        rows.append({"variant": v.name, "max_abs": float(diff.max()),
                     "mean_abs": float(diff.mean()), "pixels": int(valid.sum())})
    return rows


class BusySampler:
    """GPU utilisation (%) sampled every 100 ms while a run goes on: NVML through
    torch.cuda.utilization (needs pynvml), else `nvidia-smi`; None when neither works."""

    def __init__(self, index: int = 0) -> None:
        self.index, self.samples, self._stop = index, [], threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _read(self) -> float | None:
        import torch

        try:
            return float(torch.cuda.utilization(self.index))
        except Exception:  # noqa: BLE001 - no NVML: try the command line tool
            if not shutil.which("nvidia-smi"):
                return None
            out = subprocess.run(
                ["nvidia-smi", "-i", str(self.index), "--query-gpu=utilization.gpu",
                 "--format=csv,noheader,nounits"], capture_output=True, text=True)
            return float(out.stdout.strip() or "nan")

    def _loop(self) -> None:
        while not self._stop.is_set():
            value = self._read()
            if value is None:
                return
            self.samples.append(value)
            time.sleep(0.1)

    def __enter__(self) -> BusySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()

    def busy_fraction(self) -> float | None:
        return float(np.mean(self.samples)) / 100 if self.samples else None


def _best(rows: list[dict[str, Any]]) -> dict[str, Any]:
    ours = [r for r in rows if r["variant"].startswith("ours ") and r["tiles_per_s"]]
    return max(ours, key=lambda r: r["tiles_per_s"]) if ours else rows[1]


def _annotate(rows: list[dict[str, Any]], gflop: float, ceilings: dict[str, float]) -> None:
    """Ratios to the naive loop and to our fp32 path, GFLOP/s, and the share of the
    convolution ceiling of the row's arithmetic (bf16/fp16 rows: the bf16 ceiling)."""
    naive = rows[0]["tiles_per_s"]
    fp32 = next(r for r in rows if r["variant"] == "ours fp32")["tiles_per_s"]
    for r in rows:
        if not r["tiles_per_s"]:
            continue  # left out (time budget)
        half = r.get("precision") in ("bf16", "fp16")
        r["vs_naive"] = r["tiles_per_s"] / naive
        r["vs_ours_fp32"] = r["tiles_per_s"] / fp32 if fp32 else None
        r["gflop_per_s"] = r["tiles_per_s"] * gflop / 1e9
        r["of_ceiling"] = r["gflop_per_s"] / ceilings["bf16" if half else "fp32"]


def _ceilings(rows: list[dict[str, Any]]) -> dict[str, float]:
    return {r["conv"].rsplit(" ", 1)[1]: r["gflop_per_s"] for r in rows}


def pipeline_rows(scene: Path, work: Path, model: Path, models: list[dict[str, Any]],
                  device: str, micro: int | None = None) -> list[dict[str, Any]]:
    """ours fp32 and the fastest option end to end against their model-only tiles/s."""
    rows = []
    best = _best(models)
    for r in {id(x): x for x in (models[1], best)}.values():
        options = {k: r[k] for k in ("precision", "channels_last", "compile")}
        got = run_pipeline(scene, work / "pipe.tif", model, device=device, micro_batch=micro,
                           **options)
        # model load + compilation happen once per process, in this run: left out of the
        # steady rate (prepare_s is the model-only measurement of the same preparation)
        steady = got["tiles"] / max(1e-9, got["seconds"] - r.get("prepare_s", 0.0))
        rows.append({"variant": r["variant"], **got, "steady_tiles_per_s": steady,
                     "model_only_tiles_per_s": r["tiles_per_s"],
                     "pipeline_vs_model": steady / r["tiles_per_s"]})
    return rows


def gpu_section(args: argparse.Namespace, work: Path,
                save: Callable[[dict[str, Any]], None] = lambda doc: None) -> dict[str, Any]:
    """The same table on the GPU, and a Sentinel-2-like scene with busy fraction.

    Built for a lent GPU machine's short time (issue 16): `save(doc)` is called after
    every row and section with what is measured so far (`sections_done`), so a call cut
    short still returns results; once `--budget-s` seconds are spent the remaining model
    variants and scene runs are left out (recorded as skipped). The scene is
    `--s2-size` px a side (10980 is a whole Sentinel-2 tile; the session script passes
    a smaller one that fits the budget, and `full_size_seconds_estimate` scales its time
    by area). Each scene run is preceded by a warm-up run of the same options on a small
    scene in the same process, so the model load and compilation (`warmup_s`) are not
    in the scene's seconds. On a CPU (`--gpu-device cpu`, a smoke run of this code) the
    fp16 variants are left out: CPU fp16 is refused by the pipeline (minutes per tile).
    """
    import torch

    from pipeline.config import CUDA_MICRO_BATCH
    from pipeline.synthetic import write_synthetic_scene

    t0 = time.monotonic()

    def in_budget() -> bool:
        return not args.budget_s or time.monotonic() - t0 < args.budget_s

    dev = torch.device(args.gpu_device)
    micro = args.micro_batch or CUDA_MICRO_BATCH
    name = torch.cuda.get_device_name(0) if dev.type == "cuda" else f"{dev} (smoke run)"
    doc: dict[str, Any] = {"device": name, "micro_batch": micro, "s2_size": args.s2_size,
                           "budget_s": args.budget_s, "sections_done": [], "model": [],
                           "ceiling": [], "s2_scene": []}

    def done(section: str) -> None:
        doc["sections_done"].append(section)
        doc["elapsed_s"] = time.monotonic() - t0
        save(doc)

    gen = build_generator(args.ngf)
    variants = tuple(v for v in CUDA_VARIANTS if not (args.no_compile and v.compile)
                     and (dev.type == "cuda" or v.precision != "fp16"))
    ceil = ceiling(dev, args.ngf, 256, micro, args.seconds)
    doc["ceiling"] = ceil
    done("ceiling")
    models = model_rows(gen, dev, 256, micro, variants, args.seconds,
                        on_row=lambda rows: (doc.__setitem__("model", rows), save(doc)),
                        in_budget=in_budget)
    _annotate(models, flops_per_tile(gen.cpu(), 256), _ceilings(ceil))
    doc["model"] = models
    done("model")
    scene = write_synthetic_scene(work / "s2.tif", args.s2_size, dtype="uint16")
    warm_scene = write_synthetic_scene(work / "warm.tif", min(512, args.s2_size),
                                       dtype="uint16")
    model = make_checkpoint(work / f"ngf{args.ngf}.pt", ngf=args.ngf, n_res=4)
    area = (S2_SIZE / args.s2_size) ** 2
    for r in {id(x): x for x in (models[1], _best(models))}.values():
        if not in_budget() or not r["tiles_per_s"]:
            doc["s2_scene"].append({"variant": r["variant"], "skipped": "time budget"})
            continue
        options = {k: r[k] for k in ("precision", "channels_last", "compile")}
        warm = run_pipeline(warm_scene, work / "warm_out.tif", model,
                            device=args.gpu_device, micro_batch=micro, **options)
        with BusySampler() as busy:
            got = run_pipeline(scene, work / "s2_out.tif", model, device=args.gpu_device,
                               micro_batch=micro, **options)
        doc["s2_scene"].append({
            "variant": r["variant"], **got, "warmup_s": warm["seconds"],
            "full_size_seconds_estimate": got["seconds"] * area,
            "busy_fraction": busy.busy_fraction(),
            "model_only_tiles_per_s": r["tiles_per_s"],
            "pipeline_vs_model": got["tiles_per_s"] / r["tiles_per_s"]})
        save(doc)
    done("s2_scene")
    return doc


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ngf", type=int, default=64, help="generator width (64 = seed size)")
    p.add_argument("--seconds", type=float, default=20.0, help="per model measurement")
    p.add_argument("--rounds", type=int, default=1, help="best of N rounds (shared machines)")
    p.add_argument("--no-compile", action="store_true",
                   help="leave out the torch.compile variants (each compiles for minutes on CPU)")
    p.add_argument("--crop", type=int, default=768, help="side of the real scene crop (px)")
    p.add_argument("--micro-batch", type=int, default=None, help="GPU forward size")
    p.add_argument("--s2-size", type=int, default=S2_SIZE, help="GPU scene side (px)")
    p.add_argument("--budget-s", type=float, default=0.0,
                   help="GPU section: leave out what would start after this many seconds "
                        "(0: no limit); results are saved after every row either way")
    p.add_argument("--gpu-only", action="store_true",
                   help="only the GPU section (a lent GPU machine's time is short)")
    p.add_argument("--gpu-device", default="cuda",
                   help="device of the GPU section (cpu: a smoke run of its code)")
    p.add_argument("--quick", action="store_true",
                   help="ngf 16, 3 s, no compile: a smoke run (~2 minutes)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = p.parse_args(argv)
    if args.quick:
        args.ngf, args.seconds, args.rounds, args.crop, args.s2_size = 16, 3.0, 1, 512, 2048
        args.no_compile = True
    variants = tuple(v for v in CPU_VARIANTS if not (args.no_compile and v.compile))
    import torch
    from rasterio.windows import Window

    from pipeline.synthetic import crop_raster

    dev = torch.device("cpu")
    if args.gpu_only:
        def save(gpu: dict[str, Any]) -> None:
            write_json(args.out, "speed_gpu", {"gpu": gpu, "ngf": args.ngf, "partial": True})

        with tempfile.TemporaryDirectory(prefix="eo2sar_speed_") as tmp:
            doc = {"gpu": gpu_section(args, Path(tmp), save), "ngf": args.ngf,
                   "partial": False}
        _print_gpu(doc["gpu"])
        path = write_json(args.out, "speed_gpu", doc)
        print(f"wrote {path}")
        return doc
    with tempfile.TemporaryDirectory(prefix="eo2sar_speed_") as tmp:
        work = Path(tmp)
        gen = build_generator(args.ngf)
        gflop = flops_per_tile(gen, 256)
        rounds = [model_rows(gen, dev, 256, 1, variants, args.seconds)
                  for _ in range(args.rounds)]
        models = [max(rs, key=lambda r: r["tiles_per_s"]) for rs in zip(*rounds, strict=True)]
        ceil = ceiling(dev, args.ngf, 256, 1, args.seconds)
        _annotate(models, gflop, _ceilings(ceil))
        layouts = layout_rows(gen, args.ngf, args.seconds)
        scene = crop_raster(L8, work / "l8_crop.tif", Window(500, 500, args.crop, args.crop))
        deviation = deviation_rows(scene, work, variants, "cpu")
        model = make_checkpoint(work / f"ngf{args.ngf}.pt", ngf=args.ngf, n_res=4)
        pipeline = pipeline_rows(scene, work, model, models, "cpu")
        doc: dict[str, Any] = {
            "gflop_per_tile": gflop / 1e9, "ngf": args.ngf, "cores": cores(),
            "seconds_per_measurement": args.seconds, "rounds": args.rounds,
            "variants": [asdict(v) for v in variants], "model": models,
            "ceiling": ceil, "layouts": layouts, "deviation": deviation, "pipeline": pipeline,
            "scene": f"{L8.name} crop {args.crop}x{args.crop} at (500, 500)",
        }
        if torch.cuda.is_available():
            doc["gpu"] = gpu_section(args, work)
    _print(doc)
    path = write_json(args.out, "speed", doc)
    print(f"wrote {path}")
    return doc


def _print(doc: dict[str, Any]) -> None:
    cols = ["variant", "tiles_per_s", "vs_naive", "vs_ours_fp32", "gflop_per_s", "of_ceiling"]
    print(f"\nmodel only, CPU, ngf {doc['ngf']} ({doc['gflop_per_tile']:.1f} GFLOP/tile), "
          f"{doc['cores']} cores")
    print(format_table(doc["model"], cols))
    print("\nCPU layouts, fp32 eager")
    print(format_table(doc["layouts"]))
    print("\nconvolution ceiling")
    print(format_table(doc["ceiling"]))
    print("\ndeviation from fp32 through the pipeline (demo model, real scene, unit scale)")
    print(format_table([{**r, "max_abs": f"{r['max_abs']:.2e}", "mean_abs": f"{r['mean_abs']:.2e}"}
                        for r in doc["deviation"]]))
    print("\npipeline end to end vs model only (same option)")
    print(format_table(doc["pipeline"], ["variant", "tiles", "seconds", "tiles_per_s",
                                         "steady_tiles_per_s", "model_only_tiles_per_s",
                                         "pipeline_vs_model"]))
    if doc.get("gpu"):
        _print_gpu(doc["gpu"])


def _print_gpu(gpu: dict[str, Any]) -> None:
    cols = ["variant", "tiles_per_s", "vs_naive", "vs_ours_fp32", "gflop_per_s", "of_ceiling"]
    print(f"\nGPU {gpu['device']}, micro-batch {gpu['micro_batch']}")
    print(format_table(gpu["model"], cols))
    print(format_table(gpu["ceiling"]))
    print(format_table(gpu["s2_scene"], ["variant", "tiles", "seconds", "tiles_per_s",
                                         "warmup_s", "full_size_seconds_estimate",
                                         "busy_fraction", "pipeline_vs_model"]))


if __name__ == "__main__":
    main()

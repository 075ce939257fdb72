"""Run the benchmarks (``make bench``), print their tables, collect bench_out/bench.json.

Each benchmark runs in its own process (torch thread settings and memory of one do not
leak into the next) and writes its own JSON; this script collects them into
``bench_out/bench.json`` and prints a summary. No benchmark asserts anything: numbers are
for reading, comparing runs on the same machine, and the docs.

The default run takes ~35 minutes on 2 cores: bench_norm ~20 (seed-size scenes, fp32
and compiled, and the statistics pass's memory) and the memory benchmark at the
acceptance size, 16384 x 16384 (7225 tiles), most of the rest; ``--memory-size 8192``
(1849 tiles) takes a quarter of the latter, ``--quick`` is a ~2-4 minute smoke run of
every script.

    python -m benchmarks.run [--only speed seams norm throughput memory train dask xarray]
                             [--quick]
                             [--memory-size 16384]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks._common import DEFAULT_OUT, REPO, format_table, machine
from ugatit.io import atomic_write_text

ALL = ("speed", "seams", "norm", "throughput", "memory", "train", "train_options", "dask",
       "xarray")


def _commands(args: argparse.Namespace) -> dict[str, tuple[list[str], str]]:
    """name -> (command line, JSON file it writes)."""
    out = ["--out", str(args.out)]
    size = 2048 if args.quick else args.memory_size
    seams = ["--cases", "sn6", "l8"] if args.quick else []
    thr = ["--ngf", "4", "--seconds", "1", "--scene-size", "512"] if args.quick else []
    return {
        "speed": (["-m", "benchmarks.bench_speed", *(["--quick"] if args.quick else []), *out],
                  "speed.json"),
        "seams": (["-m", "benchmarks.bench_seams", *seams, *out], "seams.json"),
        "norm": (["-m", "benchmarks.bench_norm", *(["--quick"] if args.quick else []), *out],
                 "norm.json"),
        "throughput": (["-m", "benchmarks.bench_throughput", *thr, *out], "throughput.json"),
        "memory": (["-m", "benchmarks.bench_memory", "--size", str(size), *out],
                   f"memory_{size}.json"),
        "train": (["-m", "benchmarks.bench_train",
                   *(["--models", "small", "--steps-small", "2"] if args.quick else []), *out],
                  "train.json"),
        "train_options": (["-m", "benchmarks.bench_train", "--cpu-options",
                           "--steps-options", "2" if args.quick else "6", *out],
                          "train_cpu_options.json"),
        "dask": (["-m", "benchmarks.bench_dask", *(["--quick"] if args.quick else []), *out],
                 "dask.json"),
        "xarray": (["-m", "benchmarks.bench_xarray", *(["--quick"] if args.quick else []),
                    *out], "xarray.json"),
    }


def _summary(name: str, doc: dict[str, Any]) -> list[dict[str, Any]]:
    """A few headline rows per benchmark for the closing table."""
    rows: list[dict[str, Any]] = []
    if name == "memory":
        rows.append({"benchmark": name, "what": f"{doc['size']}^2 peak RSS GiB",
                     "value": doc["peak_rss_gib"]})
        rows.append({"benchmark": name, "what": f"{doc['size']}^2 tiles/s",
                     "value": doc["tiles_per_s"]})
    elif name == "seams":
        by: dict[tuple[str, int], list[float]] = {}
        for r in doc["rows"]:
            by.setdefault((r["data"], r["overlap"]), []).append(r["seam_local"])
        for (data, overlap), vals in by.items():
            rows.append({"benchmark": name, "what": f"{data} overlap {overlap} local ratio",
                         "value": sum(vals) / len(vals)})
    elif name == "train":
        for r in doc["rows"]:
            rows.append({"benchmark": name, "what": f"ngf {r['ngf']} {r['img_size']} px s/step",
                         "value": r["ours_s_per_step"]})
            rows.append({"benchmark": name, "what": f"ngf {r['ngf']} original/ours step time",
                         "value": r["speedup"]})
    elif name == "train_options":
        for r in doc["rows"]:
            rows.append({"benchmark": name, "what": f"4->2 step {r['variant']} "
                         f"{r['threads']} thread(s) s", "value": r["s_per_step"]})
    elif name == "dask":
        for r in doc["rows"]:
            rows.append({"benchmark": name, "what": f"{r['workers']} worker(s) tiles/s",
                         "value": r["tiles_per_s"]})
        rows.append({"benchmark": name, "what": "last/first workers tiles/s",
                     "value": doc["rows"][-1]["ratio_vs_first"]})
    elif name == "xarray":
        rows.append({"benchmark": name, "what": "translate (Dask array) / pipeline run s",
                     "value": doc["ratio"]})
        rows.append({"benchmark": name, "what": "translate + COG / pipeline run s",
                     "value": doc["ratio_with_cog"]})
    elif name == "speed":
        rows += _speed_summary(doc)
    elif name == "norm":
        default = doc.get("default_sample")
        for r in doc["rows"]:
            if r["norm"] == "tile" or r["sample"] == default or str(r["sample"]).startswith(
                    "all"):
                what = f"{r['scene']} --norm {r['norm']}" + (
                    f" sample {r['sample']}" if r["sample"] else "")
                rows.append({"benchmark": name, "what": f"{what} box-33 |tiled - whole|",
                             "value": r["box_mean_abs_diff"]})
        for r in doc.get("speed", {}).get("rows", []):
            where = f"{r['variant']}, {r['tiles_run']} tiles"
            rows.append({"benchmark": name, "what": f"{where}: pipeline / original loop",
                         "value": r["vs_original_loop"]})
            rows.append({"benchmark": name, "what": f"{where}: statistics pass share",
                         "value": r["pass_share"]})
        for r in doc.get("memory", []):
            rows.append({"benchmark": name,
                         "what": f"pass peak GiB, {r['how']}, {r['samples']} tiles",
                         "value": r["pass_peak_gib"]})
    elif name == "throughput":
        for s in doc["settings"]:
            last = s["rows"][-1]
            rows.append({"benchmark": name,
                         "what": f"ngf {s['ngf']} {s['setting']} b{last['batch']}/b1",
                         "value": last["ratio_vs_b1"]})
    return rows


def _speed_summary(doc: dict[str, Any]) -> list[dict[str, Any]]:
    rows = [{"benchmark": "speed", "what": f"model {r['variant']} vs naive",
             "value": r["vs_naive"]} for r in doc["model"][1:]]
    rows += [{"benchmark": "speed", "what": f"pipeline/model {r['variant']}",
              "value": r["pipeline_vs_model"]} for r in doc["pipeline"]]
    for r in doc.get("gpu", {}).get("s2_scene", []):
        rows.append({"benchmark": "speed", "what": f"GPU S2 scene s {r['variant']}",
                     "value": r["seconds"]})
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", nargs="+", choices=ALL, default=list(ALL))
    p.add_argument("--memory-size", type=int, default=16384)
    p.add_argument("--quick", action="store_true", help="small sizes: a smoke run (~1 min)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)

    collected: dict[str, Any] = {}
    summary: list[dict[str, Any]] = []
    failed = []
    for name, (cmd, json_name) in _commands(args).items():
        if name not in args.only:
            continue
        print(f"\n== {name}: {' '.join(cmd)}", flush=True)
        t0 = time.perf_counter()
        rc = subprocess.run([sys.executable, *cmd], cwd=REPO).returncode
        seconds = time.perf_counter() - t0
        path = args.out / json_name
        if rc != 0 or not path.exists():
            failed.append(name)
            collected[name] = {"error": f"exit status {rc}", "seconds": seconds}
            continue
        doc = json.loads(path.read_text())
        doc["bench_seconds"] = seconds
        collected[name] = doc
        summary += _summary(name, doc)
    print("\n== summary")
    print(format_table(summary, ["benchmark", "what", "value"]))
    bench = args.out / "bench.json"
    doc = {"machine": machine(), "benchmarks": collected}
    atomic_write_text(bench, json.dumps(doc, indent=2) + "\n")
    print(f"wrote {bench}")
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

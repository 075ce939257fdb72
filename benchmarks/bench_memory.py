"""Peak memory of ``python -m pipeline run`` on a large synthetic scene.

Invariant 4 of DESIGN.md: memory is bounded by the block and the batch, not the scene.
This writes a ``--size`` x ``--size`` 3-band uint8 GeoTIFF block by block (never a full
array), a random-weight ngf 4 / n_res 1 checkpoint, then runs the CLI in a subprocess
under ``/usr/bin/time -v`` and reads its "Maximum resident set size" (the kernel's
ru_maxrss of the process and its waited-for children; when GNU time is absent the same
number comes from ``os.wait4``). Acceptance target: peak RSS < 2 GiB at 16384 x 16384.

Measured on the 2-core dev box (23 GiB RAM, shared, ngf 4, tile 256, overlap 64):
  4096^2   (441 tiles)   0.62 GiB peak, 27 s, 16.5 tiles/s
  16384^2 (7225 tiles)   1.05 GiB peak, 241 s, 29.9 tiles/s   (target: < 2 GiB)
Before pipeline.run.mosaic.gdal_env bounded GDAL's block cache (its default is 5 % of the machine's
RAM: 1.2 GiB here, 6.4 GiB on a 128 GiB server), the 16384^2 run peaked at 2.07 GiB;
the COG copy of a 16384^2 float32 output alone takes 1.36 GiB with the default cache and
0.39 GiB with 256 MiB. ``--env GDAL_CACHEMAX=...`` reproduces such variants. Writing the
scene takes ~1 minute at 16384^2. ``python -m benchmarks.run`` runs 16384 by default (~5
minutes here); ``--memory-size`` picks another size.

    python -m benchmarks.bench_memory --size 16384 [--keep DIR] [--env GDAL_CACHEMAX=256]
        [-- extra CLI flags]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks._common import (
    DEFAULT_OUT,
    REPO,
    format_table,
    make_checkpoint,
    write_json,
)
from pipeline.synthetic import write_synthetic_scene

GNU_TIME = "/usr/bin/time"
TARGET_GIB = 2.0


def _tiles(size: int, tile: int = 256, overlap: int = 64) -> int:
    stride = tile - overlap
    n = 1 + max(0, -(-(size - tile) // stride))
    return n * n


def run_measured(cmd: list[str], env: dict[str, str]) -> dict[str, Any]:
    """Run ``cmd``; return exit status, wall seconds, peak RSS (KiB) and the output tail."""
    use_time = shutil.which(GNU_TIME) is not None or os.path.exists(GNU_TIME)
    full = [GNU_TIME, "-v", *cmd] if use_time else cmd
    t0 = time.perf_counter()
    proc = subprocess.Popen(full, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                            cwd=REPO, text=True)
    out, err = proc.communicate()
    wall = time.perf_counter() - t0
    rss_kib: int | None = None
    method = "gnu-time"
    if use_time:
        m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", err)
        rss_kib = int(m.group(1)) if m else None
        # GNU time reports the child's own status in its last lines
        err = "\n".join(ln for ln in err.splitlines() if not ln.startswith("\t"))
    if rss_kib is None:
        method = "wait4"
        # fall back: rerun under os.wait4 (same ru_maxrss the kernel gives GNU time)
        t0 = time.perf_counter()
        p2 = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE)
        _, status, usage = os.wait4(p2.pid, 0)
        wall = time.perf_counter() - t0
        p2.returncode = os.waitstatus_to_exitcode(status)
        err = p2.stderr.read().decode(errors="replace") if p2.stderr else ""
        rss_kib = usage.ru_maxrss
        proc = p2
    return {"returncode": proc.returncode, "wall_s": wall, "max_rss_kib": rss_kib,
            "rss_method": method, "stderr_tail": err[-2000:], "stdout_tail": (out or "")[-500:]}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=16384, help="scene side in px")
    p.add_argument("--ngf", type=int, default=4)
    p.add_argument("--keep", type=Path, default=None,
                   help="work directory to keep (and reuse a scene already written there)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                   help="environment for the run, e.g. GDAL_CACHEMAX=256 (repeatable)")
    p.add_argument("extra", nargs="*", help="extra flags for `pipeline run` (after --)")
    args = p.parse_args(argv)

    tmp = None
    if args.keep is not None:
        work = args.keep
        work.mkdir(parents=True, exist_ok=True)
    else:
        tmp = tempfile.TemporaryDirectory(prefix="eo2sar_mem_")
        work = Path(tmp.name)
    try:
        scene = work / f"synthetic_{args.size}.tif"
        t0 = time.perf_counter()
        if not scene.exists():
            write_synthetic_scene(scene, args.size)
        write_s = time.perf_counter() - t0
        ckpt = make_checkpoint(work / f"ngf{args.ngf}.pt", ngf=args.ngf, n_res=1)
        out = work / "out.tif"
        out.unlink(missing_ok=True)
        cmd = [sys.executable, "-m", "pipeline", "run", str(scene), str(out), "--model",
               str(ckpt), "-q", *args.extra]
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
        for item in args.env:
            key, _, value = item.partition("=")
            env[key] = value
        print(f"running: {' '.join(cmd)}", file=sys.stderr)
        res = run_measured(cmd, env)
        out_size = out.stat().st_size if out.exists() else None
    finally:
        if tmp is not None:
            tmp.cleanup()
    tiles = _tiles(args.size)
    peak_gib = res["max_rss_kib"] / 2**20 if res["max_rss_kib"] else float("nan")
    row = {
        "size": args.size,
        "env": " ".join(args.env),
        "tiles": tiles,
        "exit": res["returncode"],
        "peak_rss_gib": peak_gib,
        "wall_s": res["wall_s"],
        "tiles_per_s": tiles / res["wall_s"],
        "target_gib": TARGET_GIB,
        "within_target": bool(peak_gib < TARGET_GIB),
    }
    print(format_table([row]))
    if res["returncode"] != 0:
        print(res["stderr_tail"], file=sys.stderr)
    payload = {**row, "scene_write_s": write_s, "input_bytes_raw": 3 * args.size**2,
               "output_bytes": out_size, "command": cmd, "extra_flags": args.extra,
               "env": args.env,
               "rss_method": res["rss_method"], "stderr_tail": res["stderr_tail"],
               "load_average_after": os.getloadavg()}
    path = write_json(args.out, f"memory_{args.size}", payload)
    print(f"wrote {path}")
    return payload


if __name__ == "__main__":
    main()

"""Build a random-valued checkpoint at the published seed size and time loading it.

The published eo2sar checkpoint (light, ngf 64, 512 MiB, six networks) cannot be
downloaded here, so this script writes a file with exactly its keys and shapes, taken from
``tests/data/manifests/manifest_light.json`` (NOT from our own networks, so a key or shape
mistake in ``ugatit`` would make the load fail), filled with random values of sensible
scale. It then measures, each in a fresh subprocess so peak memory is that load's alone:

- ``load_checkpoint(path, networks=("genA2B",))``: time and peak RSS (inference path);
- ``load_checkpoint(path)``: all six networks;
- ``app.py`` translating a real sample image with it on CPU (``/usr/bin/time -v``).

Usage: python -m scripts.seed_size_check [--variant light] [--keep] [--json OUT.json]
"""

from __future__ import annotations

import argparse
import json
import math
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
MANIFESTS = ROOT / "tests" / "data" / "manifests"
SAMPLE = ROOT / "tests" / "data" / "sn6_rotterdam_eo_rgb.tif"


def random_state_dicts(manifest: dict, seed: int = 0) -> dict[str, dict[str, torch.Tensor]]:
    """Random tensors with the manifest's keys and shapes, at the scale of a trained net."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for net, spec in manifest["networks"].items():
        sd = {}
        for k in spec["keys"]:
            shape, key = k["shape"], k["key"]
            if key.endswith(".rho"):
                t = torch.rand(shape, generator=g)
            elif key.endswith(".gamma") and len(shape) == 4:
                t = 1 + 0.1 * torch.randn(shape, generator=g)
            elif key.endswith((".beta", ".bias")) and len(shape) in (1, 4):
                t = 0.05 * torch.randn(shape, generator=g)
            elif key.endswith(("_u", "_v")):
                t = torch.nn.functional.normalize(torch.randn(shape, generator=g), dim=0)
            else:
                fan_in = math.prod(shape[1:]) if len(shape) > 1 else shape[0]
                t = torch.randn(shape, generator=g) / math.sqrt(fan_in)
            sd[key] = t.float()
        out[net] = sd
    return out


LOAD_CODE = """
import json, re, sys, time
t0 = time.perf_counter()
from ugatit import load_checkpoint
t1 = time.perf_counter()
nets = None if sys.argv[2] == "all" else ("genA2B",)
ck = load_checkpoint(sys.argv[1], networks=nets)
t2 = time.perf_counter()
status = open("/proc/self/status").read()
hwm = int(re.search(r"VmHWM:\\s+(\\d+)", status).group(1)) / 1024
print(json.dumps({"import_s": t1 - t0, "load_s": t2 - t1, "peak_rss_mib": hwm,
                  "config": ck.config.to_dict(), "networks": sorted(ck.networks)}))
"""

BASELINE_CODE = """
import json, re
import torch, ugatit
hwm = int(re.search(r"VmHWM:\\s+(\\d+)", open("/proc/self/status").read()).group(1)) / 1024
print(json.dumps({"peak_rss_mib": hwm}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variant", default="light", choices=["light", "full"])
    ap.add_argument("--json", type=Path, default=ROOT / "bench_out" / "seed_checkpoint.json")
    ap.add_argument("--keep", action="store_true", help="keep the generated checkpoint")
    args = ap.parse_args()

    manifest = json.loads((MANIFESTS / f"manifest_{args.variant}.json").read_text())
    work = Path(tempfile.mkdtemp(prefix="seedsize_"))
    ck = work / "eo2sar_params_latest.pt"
    t0 = time.perf_counter()
    torch.save(random_state_dicts(manifest), ck)  # the original's plain six-dict format
    result: dict = {"variant": args.variant, "file_mib": ck.stat().st_size / 2**20,
                    "write_s": time.perf_counter() - t0}

    def run(code: str, *argv: str) -> dict:
        out = subprocess.run([sys.executable, "-c", code, *argv], check=True, cwd=ROOT,
                             capture_output=True, text=True).stdout
        return json.loads(out.strip().splitlines()[-1])

    result["baseline_import_torch_ugatit"] = run(BASELINE_CODE)
    result["load_genA2B_only"] = run(LOAD_CODE, str(ck), "gen")
    result["load_all_six"] = run(LOAD_CODE, str(ck), "all")

    if args.variant == "light":
        t0 = time.perf_counter()
        proc = subprocess.run(
            ["/usr/bin/time", "-v", sys.executable, str(ROOT / "app.py"), "--device", "cpu",
             "--model_path", str(ck), "--img", str(SAMPLE), "--out", str(work / "out.png")],
            cwd=work, capture_output=True, text=True)
        m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr)
        result["app_py"] = {"exit": proc.returncode, "wall_s": time.perf_counter() - t0,
                            "peak_rss_mib": int(m.group(1)) / 1024 if m else None,
                            "output_exists": (work / "out.png").exists(),
                            "stdout_tail": proc.stdout.strip().splitlines()[-3:]}

    rows = [("file size (MiB)", f"{result['file_mib']:.1f}"),
            ("python+torch+ugatit import, peak RSS (MiB)",
             f"{result['baseline_import_torch_ugatit']['peak_rss_mib']:.0f}")]
    for k in ("load_genA2B_only", "load_all_six"):
        r = result[k]
        rows.append((f"{k}: load s / peak RSS MiB", f"{r['load_s']:.2f} / {r['peak_rss_mib']:.0f}"))
    if "app_py" in result:
        a = result["app_py"]
        rows.append(("app.py end to end: exit / wall s / peak RSS MiB",
                     f"{a['exit']} / {a['wall_s']:.1f} / {a['peak_rss_mib']:.0f}"))
    width = max(len(r[0]) for r in rows)
    for name, val in rows:
        print(f"{name:<{width}}  {val}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=1))
    print(f"wrote {args.json}")
    if not args.keep:
        for p in work.iterdir():
            p.unlink()
        work.rmdir()


if __name__ == "__main__":
    main()

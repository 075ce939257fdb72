"""Shared helpers of the benchmark scripts: tables, JSON output, checkpoints.

The synthetic scene is pipeline.synthetic (shared with the GPU scripts). Benchmarks
are modules run with ``python -m benchmarks.NAME``, not tests: they measure and print,
they never assert a time.
Each writes ``bench_out/<name>.json`` (directory overridable with ``--out``) with the
machine it ran on, so numbers from different machines are never compared by accident.
"""

from __future__ import annotations

import json
import math
import os
import platform
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ugatit.io import atomic_write_text

REPO = Path(__file__).resolve().parents[1]

DEFAULT_OUT = REPO / "bench_out"


def machine() -> dict[str, Any]:
    """Where the numbers come from (CPU count, torch threads, versions)."""
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        # shared machines: a load above the core count means the timings are pessimistic
        "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
    }
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
        info["cuda"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except ImportError:
        info["torch"] = None
    return info


def write_json(out_dir: Path, name: str, payload: dict[str, Any]) -> Path:
    """Write ``out_dir/name.json`` (atomically) with the machine description added."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.json"
    doc = {"benchmark": name, "machine": machine(), **payload}
    atomic_write_text(path, json.dumps(doc, indent=2, default=str) + "\n")
    return path


def format_table(rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> str:
    """Fixed-width text table; floats with 3 significant decimals."""
    if not rows:
        return "(no rows)"
    columns = list(columns or rows[0].keys())

    def cell(v: Any) -> str:
        if isinstance(v, float):
            if math.isnan(v) or math.isinf(v):
                return str(v)
            return f"{v:.3f}" if abs(v) < 1000 else f"{v:.0f}"
        return "" if v is None else str(v)

    table = [[str(c) for c in columns]] + [[cell(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(columns))]
    lines = ["  ".join(v.rjust(w) for v, w in zip(r, widths, strict=True)) for r in table]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def make_checkpoint(path: Path, ngf: int = 4, n_res: int = 1, seed: int = 0) -> Path:
    """Random-weight light checkpoint (generators only), made once and reused."""
    if path.exists():
        return path
    from ugatit import ModelConfig, init_checkpoint

    return init_checkpoint(path, ModelConfig(ngf=ngf, n_res=n_res), seed=seed,
                           networks=("genA2B", "genB2A"))

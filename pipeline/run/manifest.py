"""Per-scene manifests: what made an output, so a directory rerun can skip what is current.

A directory run (``python -m pipeline run scenes/ out/``) writes, beside every finished
output ``out/x.tif``, a small JSON file ``out/x.tif.manifest.json`` naming the input (a
fingerprint), the model (sha256), the settings (config hash), the output (size, sha256),
when it finished and the software versions. The manifest is written atomically and only
after the output is complete, so "output + matching manifest" means "finished, from these
inputs"; anything else (no manifest, a different input, model or config, an output of
another size) is redone. The name keeps the full output file name (``x.tif.manifest.json``,
like GDAL's ``x.tif.aux.xml``) so it sorts beside its raster and never collides with
another output's sidecar.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import platform
import sys
import threading
from collections.abc import Mapping
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from pipeline.errors import OutputError
from pipeline.inputs.fingerprint import InputFingerprint

# the one atomic writer and file hash (re-exported: the pipeline's small files use them)
from ugatit.io import (
    atomic_path,
    atomic_write_bytes,
    atomic_write_text,
    fault_point,
    no_space_reason,
    sha256_file,
)

__all__ = [
    "MANIFEST_SCHEMA",
    "MANIFEST_SUFFIX",
    "atomic_write_bytes",
    "atomic_write_text",
    "cached_sha256",
    "check_manifest",
    "config_fingerprint",
    "manifest_path",
    "read_manifest",
    "sha256_file",
    "software_versions",
    "utc_now",
    "write_manifest",
]

MANIFEST_SCHEMA = "eo2sar.scene-manifest/1"
MANIFEST_SUFFIX = ".manifest.json"



def utc_now() -> str:
    """ISO 8601 UTC timestamp with seconds precision, e.g. ``2026-11-26T02:14:00Z``."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def manifest_path(output_path: Path) -> Path:
    """``out/x.tif`` -> ``out/x.tif.manifest.json``."""
    output_path = Path(output_path)
    return output_path.with_name(output_path.name + MANIFEST_SUFFIX)


_sha_cache: dict[tuple[str, int, int], str] = {}
_sha_lock = threading.Lock()


def cached_sha256(path: Path) -> str:
    """`sha256_file`, cached per process by (resolved path, mtime, size).

    The model file is hashed by the directory runner, the scene planner and (via the
    CLI) the up-front checks; a published checkpoint is 512 MiB, so it is read once.
    A file rewritten in place changes its mtime or size and is hashed again.
    """
    p = Path(path).resolve()
    st = p.stat()
    key = (str(p), st.st_mtime_ns, st.st_size)
    with _sha_lock:
        if key not in _sha_cache:
            _sha_cache[key] = sha256_file(p)
        return _sha_cache[key]


def config_fingerprint(config: Any) -> tuple[str, dict[str, Any] | None]:
    """(hash, settings dict) of a pipeline config.

    Uses the config's own ``config_hash()`` / ``to_dict()`` when it has them (the
    PipelineConfig decides which settings change the output: a device or worker count
    should not force a redo). Plain mappings and dataclasses are hashed as sorted JSON so
    library users and tests can pass something simpler.
    """
    settings: dict[str, Any] | None
    if config is None:
        settings = None
    elif hasattr(config, "to_dict"):
        settings = dict(config.to_dict())
    elif isinstance(config, Mapping):
        settings = dict(config)
    elif dataclasses.is_dataclass(config) and not isinstance(config, type):
        settings = dataclasses.asdict(config)
    else:
        raise TypeError(f"cannot fingerprint a config of type {type(config).__name__}")
    if hasattr(config, "config_hash"):
        return str(config.config_hash()), settings
    blob = json.dumps(settings, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest(), settings


def software_versions() -> dict[str, str]:
    """Versions that can change an output's bytes, read from installed metadata.

    ``importlib.metadata`` does not import the packages, so this stays cheap; GDAL's
    version comes from rasterio, which the pipeline has imported anyway.
    """
    versions = {"python": platform.python_version()}
    for dist in ("eo2sar", "torch", "numpy", "rasterio", "dask", "distributed"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = "not installed"
    rasterio = sys.modules.get("rasterio")
    if rasterio is not None:
        versions["gdal"] = str(getattr(rasterio, "__gdal_version__", "unknown"))
    return versions


def write_manifest(
    output_path: Path,
    *,
    input_path: Path | str,
    input_fingerprint: InputFingerprint,
    model_path: Path,
    model_sha256: str,
    config_hash: str,
    config_settings: dict[str, Any] | None,
    started_at: str,
    result: Mapping[str, Any] | None = None,
    heatmap_path: Path | None = None,
    hash_output: bool = True,
    input_kind: str = "raster",
) -> Path:
    """Write ``<output>.manifest.json`` atomically; call only once the output is complete.

    The output's sha256 costs one read of the output; it lets anyone verify a copied
    result later. ``hash_output=False`` skips it (the skip check uses the size only).
    ``input_kind``: what the input is (pipeline/inputs/sources.py's kinds: "raster", "stac",
    "landsat", "sentinel2", "remote"); a URL input is recorded without its secrets.
    """
    from pipeline.urls import redact_url

    output_path = Path(output_path)
    out_stat = os.stat(output_path)
    text = str(input_path)
    # a local input as the run was given it (absolute, symlinks kept): `pipeline view`
    # judges the path a folder named (a symlink out of it is refused), which the resolved
    # target would hide (pipeline/viewing/view_inputs.py)
    recorded = (redact_url(text) if "://" in text or text.startswith("/vsi")
                else os.path.abspath(text))
    doc: dict[str, Any] = {
        "schema": MANIFEST_SCHEMA,
        "input": {"path": recorded, "kind": input_kind, **input_fingerprint.to_dict()},
        "model": {"path": str(Path(model_path).resolve()), "sha256": model_sha256},
        "config": {"hash": config_hash, "settings": config_settings},
        "output": {
            "path": str(output_path.resolve()),
            "size": out_stat.st_size,
            "sha256": sha256_file(output_path) if hash_output else None,
        },
        "heatmap": None,
        "result": dict(result) if result is not None else None,
        "started_at": started_at,
        "finished_at": utc_now(),
        "versions": software_versions(),
    }
    if heatmap_path is not None:
        hp = Path(heatmap_path)
        doc["heatmap"] = {"path": str(hp.resolve()), "size": os.stat(hp).st_size}
    mpath = manifest_path(output_path)
    try:
        with atomic_path(mpath) as tmp:
            tmp.write_text(json.dumps(doc, indent=2, default=str) + "\n", encoding="utf-8")
            fault_point("manifest")  # test hook (tests/faults): written, not yet renamed
    except OSError as exc:  # the output is complete, but without a manifest it is redone
        reason = no_space_reason(exc, mpath.parent) or f"cannot write it ({exc.strerror})"
        raise OutputError(reason, path=mpath, hint="free some space there or fix its "
                          "permissions; the scene is redone by the next run") from None
    return mpath


def read_manifest(output_path: Path) -> dict[str, Any] | None:
    """The manifest beside ``output_path``, or None if absent or unreadable.

    Unreadable (truncated by a crash, hand-edited) means "not known to be finished":
    the scene is redone, which is always safe.
    """
    try:
        with open(manifest_path(output_path), encoding="utf-8") as f:
            doc = json.load(f)
    except (OSError, ValueError):
        return None
    if not isinstance(doc, dict) or doc.get("schema") != MANIFEST_SCHEMA:
        return None
    return doc


def check_manifest(
    output_path: Path,
    *,
    input_fingerprint: InputFingerprint,
    model_sha256: str,
    config_hash: str,
    heatmap_path: Path | None = None,
) -> tuple[bool, str]:
    """Is ``output_path`` a finished output of exactly these inputs? -> (current, reason).

    ``reason`` says why not ("no manifest", "input changed (mtime)", ...); it goes into the
    run report so a user sees why a scene was redone.
    """
    output_path = Path(output_path)
    if not output_path.exists():
        return False, "no output"
    doc = read_manifest(output_path)
    if doc is None:
        return False, "no manifest"
    try:
        old_in = doc["input"]
        for key in ("size", "mtime_ns", "method", "sha256"):
            if old_in[key] != getattr(input_fingerprint, key):
                return False, f"input changed ({key})"
        if doc["model"]["sha256"] != model_sha256:
            return False, "model changed"
        if doc["config"]["hash"] != config_hash:
            return False, "config changed"
        if doc["output"]["size"] != os.stat(output_path).st_size:
            return False, "output size differs from manifest"
        if heatmap_path is not None:
            hp = Path(heatmap_path)
            if doc.get("heatmap") is None or not hp.exists():
                return False, "heatmap missing"
            if doc["heatmap"]["size"] != os.stat(hp).st_size:
                return False, "heatmap size differs from manifest"
    except (KeyError, TypeError):
        return False, "manifest incomplete"
    return True, "up to date"

"""Resolved settings of one pipeline run.

A run is configured from three layers, later ones winning: the defaults below, a YAML
file (`--config`, see configs/pipeline.yaml), and command-line flags. `load_config`
merges them and validates every value once, up front, so that a bad value fails before
any raster is read (invariant 7 of DESIGN.md).

Two settings depend on the model: the EO `percentiles` and the SAR `db_range`. A trained
checkpoint carries the values of its training data (its radiometric contract), so they
default to None ("not set") here, and `resolve_for_model` fills them in ONCE, when the plan
is made (flag > config file > model > built-in default), remembering where each came from
(`origins`, recorded in the output tags). Seed checkpoints carry no contract: 2-98 and
[-25, 0], as before.

`PipelineConfig.config_hash()` fingerprints only the fields that change the output
pixels or file: the directory runner uses it (with the model hash) to decide whether an
existing output is up to date. Scheduling fields (device, threads, workers, scheduler)
and the batch and block sizes are left out ON PURPOSE: the pipeline guarantees the same
output bytes whatever their values (see pipeline/mosaic.py and pipeline/inference.py),
so changing them must not force a recomputation. The device is the one caveat: a GPU
computes float32 convolutions in another order than a CPU, so outputs differ by ~1e-6
relative; we still treat them as the same product.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

import ugatit.errors
from pipeline.errors import ConfigError, DeviceError
from pipeline.radiometry import CONTRACT_KEYS, check_absolute_db, resolve_radiometry
from ugatit.device import parse_device

SCALE_MODES = ("auto", "fixed", "none")
OUTPUT_SCALES = ("unit", "uint8", "db")
COMPRESSIONS = ("DEFLATE", "ZSTD", "LZW", "NONE")

# Fields that never change the output bytes (see module docstring).
RUNTIME_FIELDS = frozenset(
    {"device", "threads", "workers", "scheduler", "batch_size", "block_size"}
)


@dataclass(frozen=True)
class PipelineConfig:
    """Every setting of a scene run; defaults are the documented product defaults."""

    # --- input radiometry -------------------------------------------------------------
    bands: tuple[int, ...] | None = None  # 1-based band indexes fed as R,G,B; None: 3-band as is
    scale: str = "auto"  # auto | fixed | none (see pipeline/radiometry.py)
    percentiles: tuple[float, float] | None = None  # non-uint8 "auto"; None: model's, 2,98
    fixed_min: tuple[float, ...] | None = None  # per band (or one for all), scale=fixed
    fixed_max: tuple[float, ...] | None = None
    nodata: float | None = None  # declare the input nodata when the file has no tag
    stats_size: int = 1024  # longest side of the decimated read used for percentiles
    # --- tiling / inference -----------------------------------------------------------
    tile_size: int = 256
    overlap: int = 64  # pixels shared by neighbouring tiles (stride = tile - overlap)
    batch_size: int = 4  # tiles per Dask task
    block_size: int = 1024  # output block written at a time (multiple of 16)
    # --- output -----------------------------------------------------------------------
    output_bands: int = 1  # 1: mean of the generator's 3 channels; 3: all of them
    output_scale: str = "unit"  # unit (float32 0..1) | uint8 (1..255, 0 = nodata) | db
    db_range: tuple[float, float] | None = None  # dB of unit 0..1; None: model's, -25,0
    compress: str = "DEFLATE"
    tf32: bool = False  # CUDA only: TF32 convolutions, ~3.7x faster, outputs move ~2e-3
    # --- runtime (not in config_hash) -------------------------------------------------
    device: str = "cpu"
    threads: int | None = None  # local Dask threads; None: number of CPU cores
    workers: int | None = None  # start a LocalCluster with this many worker processes
    scheduler: str | None = None  # address of an existing dask.distributed scheduler
    # --- bookkeeping (not a setting): who set what, ("percentiles", "flag"), ... -------
    origins: tuple[tuple[str, str], ...] = dataclasses.field(default=(), compare=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict of every setting (tuples as lists, NaN nodata as "nan")."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            if f.name == "origins":
                continue
            value = getattr(self, f.name)
            if isinstance(value, tuple):
                value = list(value)
            if isinstance(value, float) and math.isnan(value):
                value = "nan"
            out[f.name] = value
        return out

    def output_dict(self) -> dict[str, Any]:
        """The settings that change the output (what `config_hash` fingerprints)."""
        return {k: v for k, v in self.to_dict().items() if k not in RUNTIME_FIELDS}

    def config_hash(self) -> str:
        """sha256 of the canonical JSON of the output-changing settings."""
        blob = json.dumps(self.output_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()

    def replace(self, **changes: Any) -> PipelineConfig:
        """Copy with some fields changed (set like flags), validated like `load_config`."""
        merged = self.to_dict()
        merged.update(changes)
        origins = {**dict(self.origins), **{k: "flag" for k in changes}}
        return _build(merged, source="replace()", origins=origins)

    def origin(self, name: str) -> str:
        """Where a setting came from: "flag", "config" (file or code), "model" or "default"."""
        given = dict(self.origins).get(name)
        if given:
            return given
        return "default" if getattr(self, name) == getattr(PipelineConfig(), name) else "config"

    @property
    def resolved(self) -> bool:
        """Whether the model-dependent settings are set (see `resolve_for_model`)."""
        return all(getattr(self, name) is not None for name in CONTRACT_KEYS)


def resolve_for_model(config: PipelineConfig, contract: dict[str, Any] | None,
                      source: str = "checkpoint") -> PipelineConfig:
    """The config with the model-dependent settings resolved (flag > config > model >
    default) and their origins recorded. The one place this is decided; call it where the
    plan is made, before hashing the config. Idempotent. Raises ModelError for a contract
    whose values are unusable."""
    given = {name: (getattr(config, name), config.origin(name)) for name in CONTRACT_KEYS}
    resolved = resolve_radiometry(given, contract, source)
    if config.output_scale == "db" and resolved["db_range"][1] == "default":
        check_absolute_db(contract, source)
    origins = {**dict(config.origins), **{k: origin for k, (_, origin) in resolved.items()}}
    return dataclasses.replace(
        config,
        **{k: value for k, (value, _) in resolved.items()},
        origins=tuple(sorted(origins.items())),
    )


def load_config(path: Path | None, overrides: dict[str, Any] | None = None) -> PipelineConfig:
    """Defaults, then the YAML file at `path`, then `overrides` (None values ignored).

    Keys set by the file get origin "config", overrides (the command-line flags) "flag".
    Raises ConfigError naming the file and key for an unknown key or a bad value.
    """
    values: dict[str, Any] = {}
    origins: dict[str, str] = {}
    source = "config"
    if path is not None:
        path = Path(path)
        source = str(path)
        try:
            loaded = yaml.safe_load(path.read_text())
        except FileNotFoundError:
            raise ConfigError(
                "config file not found", path=path, hint="check the --config path"
            ) from None
        except (OSError, yaml.YAMLError) as exc:
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise ConfigError(
                f"cannot read the config file ({first})",
                path=path,
                hint="it must be a YAML mapping of keys as in configs/pipeline.yaml",
            ) from None
        if loaded is None:
            loaded = {}
        if isinstance(loaded, dict) and set(loaded) == {"pipeline"}:
            loaded = loaded["pipeline"] or {}
        if not isinstance(loaded, dict):
            raise ConfigError(
                "config file is not a mapping of keys to values",
                path=path,
                hint="write `key: value` lines as in configs/pipeline.yaml",
            )
        values.update(loaded)
        origins.update({k: "config" for k, v in loaded.items() if v is not None})
    for key, value in (overrides or {}).items():
        if value is not None:
            values[key] = value
            origins[key] = "flag"
    return _build(values, source=source, origins=origins)


def validate_device_string(device: str) -> str:
    """Normalise and check the syntax of a device string (ugatit.device's policy)."""
    try:
        return parse_device(device)
    except ugatit.errors.DeviceError as exc:
        raise DeviceError.from_ugatit(exc) from None


# ---------------------------------------------------------------------------------------
# validation helpers


def _build(
    values: dict[str, Any], *, source: str, origins: dict[str, str] | None = None
) -> PipelineConfig:
    known = {f.name for f in dataclasses.fields(PipelineConfig)} - {"origins"}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(
            f"unknown key(s) {', '.join(unknown)}",
            path=source,
            hint=f"known keys: {', '.join(sorted(known))}",
        )
    d = dict(values)
    kw: dict[str, Any] = {}
    kw["bands"] = _int_tuple(d.get("bands"), "bands", source, minimum=1)
    kw["scale"] = _choice(d.get("scale", "auto"), SCALE_MODES, "scale", source)
    kw["percentiles"], kw["db_range"] = _model_pairs(d, source)
    kw["fixed_min"] = _float_tuple(d.get("fixed_min"), "fixed_min", source)
    kw["fixed_max"] = _float_tuple(d.get("fixed_max"), "fixed_max", source)
    if kw["scale"] == "fixed":
        if kw["fixed_min"] is None or kw["fixed_max"] is None:
            raise ConfigError(
                "scale=fixed needs fixed_min and fixed_max",
                path=source,
                hint="set fixed_min: [..] and fixed_max: [..] (one value or one per band)",
            )
        if len(kw["fixed_min"]) != len(kw["fixed_max"]):
            raise ConfigError(
                "fixed_min and fixed_max have different lengths",
                path=source,
                hint="give one value for all bands or one per band in both",
            )
        if any(a >= b for a, b in zip(kw["fixed_min"], kw["fixed_max"], strict=True)):
            raise ConfigError(
                "fixed_min must be below fixed_max for every band",
                path=source,
                hint="swap or correct the values",
            )
    kw["nodata"] = _optional_float(d.get("nodata"), "nodata", source)
    kw["stats_size"] = _int(d.get("stats_size", 1024), "stats_size", source, minimum=16)
    kw["tile_size"] = _int(d.get("tile_size", 256), "tile_size", source, minimum=16)
    if kw["tile_size"] % 4:
        raise ConfigError(
            f"tile_size must be a multiple of 4, got {kw['tile_size']}",
            path=source,
            hint="the generator downsamples twice by 2; use e.g. 256",
        )
    kw["overlap"] = _int(d.get("overlap", 64), "overlap", source, minimum=0)
    if 2 * kw["overlap"] > kw["tile_size"]:
        raise ConfigError(
            f"overlap {kw['overlap']} is more than half the tile size {kw['tile_size']}",
            path=source,
            hint="keep overlap <= tile_size / 2 (64 for 256 px tiles is the default)",
        )
    kw["batch_size"] = _int(d.get("batch_size", 4), "batch_size", source, minimum=1)
    kw["block_size"] = _int(d.get("block_size", 1024), "block_size", source, minimum=16)
    if kw["block_size"] % 16:
        raise ConfigError(
            f"block_size must be a multiple of 16, got {kw['block_size']}",
            path=source,
            hint="GeoTIFF tiles are multiples of 16; use e.g. 512 or 1024",
        )
    kw["output_bands"] = _int(d.get("output_bands", 1), "output_bands", source, minimum=1)
    if kw["output_bands"] not in (1, 3):
        raise ConfigError(
            f"output_bands must be 1 or 3, got {kw['output_bands']}",
            path=source,
            hint="1 = mean of the generator's 3 channels, 3 = all channels",
        )
    kw["output_scale"] = _choice(
        d.get("output_scale", "unit"), OUTPUT_SCALES, "output_scale", source
    )
    kw["compress"] = _choice(
        str(d.get("compress", "DEFLATE")).upper(), COMPRESSIONS, "compress", source
    )
    kw["tf32"] = _bool(d.get("tf32", False), "tf32", source)
    kw["device"] = validate_device_string(d.get("device", "cpu"))
    kw["threads"] = _optional_int(d.get("threads"), "threads", source)
    kw["workers"] = _optional_int(d.get("workers"), "workers", source)
    sched = d.get("scheduler")
    kw["scheduler"] = None if sched in (None, "") else str(sched)
    if kw["scheduler"] and kw["workers"]:
        raise ConfigError(
            "scheduler and workers are exclusive",
            path=source,
            hint="--scheduler uses an existing cluster; --workers starts a local one",
        )
    kw["origins"] = tuple(sorted((k, v) for k, v in (origins or {}).items() if k in known))
    return PipelineConfig(**kw)


def _bad(key: str, value: Any, source: str, want: str) -> ConfigError:
    return ConfigError(f"bad value for {key}: {value!r}", path=source, hint=f"expected {want}")


def _split(value: Any) -> list[Any]:
    if isinstance(value, str):
        return [p for p in re.split(r"[,\s]+", value.strip()) if p]
    if isinstance(value, (list, tuple)):
        return list(value)
    return [value]


def _bool(value: Any, key: str, source: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "yes", "1", "on"):
        return True
    if text in ("false", "no", "0", "off"):
        return False
    raise _bad(key, value, source, "true or false")


def _int(value: Any, key: str, source: str, *, minimum: int) -> int:
    if isinstance(value, bool):
        raise _bad(key, value, source, f"an integer >= {minimum}")
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise _bad(key, value, source, f"an integer >= {minimum}") from None
    if number != float(value) or number < minimum:
        raise _bad(key, value, source, f"an integer >= {minimum}")
    return number


def _optional_int(value: Any, key: str, source: str) -> int | None:
    return None if value is None else _int(value, key, source, minimum=1)


def _float(value: Any, key: str, source: str) -> float:
    if isinstance(value, bool):
        raise _bad(key, value, source, "a number")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise _bad(key, value, source, "a number") from None


def _optional_float(value: Any, key: str, source: str) -> float | None:
    return None if value is None else _float(value, key, source)


def _int_tuple(value: Any, key: str, source: str, *, minimum: int) -> tuple[int, ...] | None:
    if value is None:
        return None
    parts = _split(value)
    if not parts:
        raise _bad(key, value, source, "a comma-separated list of integers, e.g. 3,2,1")
    try:
        return tuple(_int(p, key, source, minimum=minimum) for p in parts)
    except ConfigError:
        raise _bad(key, value, source, "a comma-separated list of band numbers (1-based)") from None


def _float_tuple(value: Any, key: str, source: str) -> tuple[float, ...] | None:
    if value is None:
        return None
    parts = _split(value)
    if not parts:
        raise _bad(key, value, source, "one number or a list of numbers")
    return tuple(_float(p, key, source) for p in parts)


def _float_pair(value: Any, key: str, source: str) -> tuple[float, float]:
    parts = _split(value)
    if len(parts) != 2:
        raise _bad(key, value, source, "two numbers, e.g. [2, 98]")
    return (_float(parts[0], key, source), _float(parts[1], key, source))


def _model_pairs(d: dict[str, Any], source: str) -> tuple[tuple[float, float] | None, ...]:
    """`percentiles` and `db_range`, checked; None = not set (the model's, else default)."""
    pct = None if d.get("percentiles") is None else _float_pair(
        d["percentiles"], "percentiles", source)
    if pct is not None and not (0.0 <= pct[0] < pct[1] <= 100.0):
        raise ConfigError(
            f"percentiles must satisfy 0 <= low < high <= 100, got {pct[0]}, {pct[1]}",
            path=source,
            hint="e.g. percentiles: [2, 98]",
        )
    db = None if d.get("db_range") is None else _float_pair(d["db_range"], "db_range", source)
    if db is not None and not db[0] < db[1]:
        raise ConfigError(
            f"db_range must be [low, high] with low < high, got {list(db)}",
            path=source,
            hint="e.g. db_range: [-25, 0]",
        )
    return pct, db


def _choice(value: Any, choices: tuple[str, ...], key: str, source: str) -> str:
    text = str(value)
    if text not in choices:
        raise _bad(key, value, source, "one of " + ", ".join(choices))
    return text

"""Resolved settings of one pipeline run, and the one home of their defaults.

A run is configured from three layers, later ones winning: the defaults below, a YAML
file (`--config`, see configs/pipeline.yaml), and command-line flags. Every default is
written once, as a field default of `PipelineConfig`, next to its help text and its
parser (field metadata): the command-line options are generated from those fields
(pipeline/options.py), so a flag's `[default: ...]` is the dataclass default, and a test
checks it. `PipelineConfig` validates itself in `__post_init__`, so EVERY construction
(YAML, flags, `replace`, a library caller's `PipelineConfig(tile_size=250)`) is checked,
and a bad value fails before any raster is read (invariant 7 of DESIGN.md). Parsers
accept the text forms of YAML and flags ("3,2,1", "nan", "true") and normalise them
("cuda:1" for "CUDA:1"), so a value means the same from every layer.

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
output bytes whatever their values (see pipeline/run/mosaic.py and pipeline/run/inference.py),
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
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ugatit.errors
from pipeline.errors import ConfigError, DeviceError, ModelError
from pipeline.inputs.radiometry import (
    CONTRACT_KEYS,
    DEFAULT_PERCENTILES,
    DEFAULT_SAR_DB_RANGE,
    check_absolute_db,
    resolve_radiometry,
)
from ugatit.device import parse_device
from ugatit.io import MAX_CONFIG_BYTES, YamlConfigError, read_yaml_config

SCALE_MODES = ("auto", "fixed", "none", "reflectance")
OUTPUT_SCALES = ("unit", "uint8", "db")
COMPRESSIONS = ("DEFLATE", "ZSTD", "LZW", "NONE")
PRECISIONS = ("fp32", "tf32", "bf16", "fp16")
NORM_MODES = ("scene", "tile")
# Tiles pooled for the scene's normalisation statistics (--norm-sample). A scene with no
# more fully valid tiles than the sample pools every one of them, and its tiled output then
# matches the model's whole-scene forward (33 px box mean |diff| 0.000-0.001, correlation
# 1.000 on Landsat 8 crops of 49 and 64 tiles and Landsat 7; each tile's statistics over
# its core, pipeline/run/norm_sample.py). Fewer spread tiles of the same scenes (3 draws
# each) fall short of 0.01: 16 -> 0.010-0.020, 32 -> 0.002-0.016, 48 of 64 -> 0.008-0.014
# (docs/performance.md, "Scene statistics"). The pass's tiles are part of the output, so
# the size costs memory, not time: the pass parks every sampled tile's activations at one
# norm layer at a time, ~1.7 x 4 bytes x ngf x tile^2 a tile (26 MiB at ngf 64, 256 px,
# measured: +0.54 / 0.98 / 1.76 GiB resident for 16 / 32 / 64 tiles, bench_norm). So
# the default, "auto", is as many tiles as NORM_PASS_BUDGET holds for the
# model at hand: 64 for a seed-size model (ngf 64), 128 for the demo models (ngf 16),
# i.e. every tile of a scene up to ~2200 px for them (auto_norm_sample). The ceiling,
# 128, is well below the tile count of a 4096 px scene (441 at 256 px tiles): the pass
# of a 4k scene is then as large as a 16k scene's for any model, and the sampled tiles'
# outputs, which wait for their blocks, stay few: the memory bound (DESIGN.md invariant
# 4: 16k within 1.2x of 4k) holds with narrow models too (a ceiling of 256: 1.21x).
DEFAULT_NORM_SAMPLE = "auto"
NORM_PASS_BUDGET = 1.75 * 2**30  # bytes of parked activations the automatic sample may use
NORM_PASS_TILE_BYTES = 4 * 1.7  # parked bytes per tile pixel and ngf (measured, above)
NORM_SAMPLE_LIMITS = (16, 128)  # the automatic sample's floor and ceiling
# Tiles per generator forward on a GPU unless --micro-batch says otherwise. The bare
# light generator (ngf 64, fp32) ran 552 tiles/s at batch 8 and 647 at batch 32 on an
# H200 (issue 8); 32 keeps the card fed and its activations (~1 GiB) fit any GPU we target.
CUDA_MICRO_BATCH = 32

# Fields that never change the output bytes (see module docstring). The execution
# settings (micro_batch, channels_last, compile) are here like the device: for fixed
# values the bytes do not depend on batch, block or worker count, and between values
# they move float32 results in the last bits only (docs/performance.md), the same
# product.
RUNTIME_FIELDS = frozenset(
    {"device", "threads", "workers", "scheduler", "batch_size", "block_size",
     "micro_batch", "channels_last", "compile", "scenes_in_flight"}
)
# Settings added after outputs were first fingerprinted enter `config_hash` only when
# they differ from their earlier behaviour, so outputs made before they existed stay up
# to date in a directory rerun (precision fp32/tf32 is what `tf32` already recorded).
HASHED_UNLESS = {"precision": ("fp32", "tf32"), "norm": ("tile",),
                 # multispectral models (issue 21): unset for every RGB model's output
                 "reflectance_scale": (None,), "polarisations": (None,)}
# Settings that change the output only together with another setting's value: hashed
# only then (the sample size means nothing with per-tile normalisation).
HASHED_ONLY_WITH = {"norm_sample": ("norm", "scene")}

Parser = Callable[[Any, str], Any]


# ---------------------------------------------------------------------------------------
# parsers: (value, key) -> normalised value, or ConfigError (path filled in by the caller)


def _bad(key: str, value: Any, want: str, source: str | None = None) -> ConfigError:
    return ConfigError(f"bad value for {key}: {value!r}", path=source, hint=f"expected {want}")


def _split(value: Any) -> list[Any]:
    if isinstance(value, str):
        return [p for p in re.split(r"[,\s]+", value.strip()) if p]
    if isinstance(value, (list, tuple)):
        return list(value)
    return [value]


def parse_bool(value: Any, key: str, source: str | None = None) -> bool:
    """True/False from a bool or yes/no, true/false, on/off, 1/0."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "yes", "1", "on"):
        return True
    if text in ("false", "no", "0", "off"):
        return False
    raise _bad(key, value, "true or false", source)


def parse_int(value: Any, key: str, source: str | None = None, *, minimum: int = 1) -> int:
    """A whole number >= minimum (3.0 and "3" too, not 3.5 or True)."""
    if isinstance(value, bool):
        raise _bad(key, value, f"an integer >= {minimum}", source)
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise _bad(key, value, f"an integer >= {minimum}", source) from None
    if number != float(value) or number < minimum:
        raise _bad(key, value, f"an integer >= {minimum}", source)
    return number


def parse_float(value: Any, key: str, source: str | None = None) -> float:
    """A number ("nan" included)."""
    if isinstance(value, bool):
        raise _bad(key, value, "a number", source)
    try:
        return float(value)
    except (TypeError, ValueError):
        raise _bad(key, value, "a number", source) from None


def _items(value: Any, key: str, source: str | None, want: str) -> list[Any] | None:
    """The items of a list setting ("3,2,1", "3 2 1", a list, one value); None stays None."""
    if value is None:
        return None
    parts = _split(value)
    if not parts:
        raise _bad(key, value, want, source)
    return parts


def parse_int_tuple(
    value: Any, key: str, source: str | None = None, *, minimum: int = 1
) -> tuple[int, ...] | None:
    """None, or integers from "3,2,1", "3 2 1" or a list."""
    parts = _items(value, key, source, "a comma-separated list of integers, e.g. 3,2,1")
    try:
        return None if parts is None else tuple(
            parse_int(p, key, source, minimum=minimum) for p in parts)
    except ConfigError:
        raise _bad(key, value, "a comma-separated list of band numbers (1-based)",
                   source) from None


def parse_float_tuple(value: Any, key: str, source: str | None = None
                      ) -> tuple[float, ...] | None:
    """None, or numbers from "1,2", a list, or one number."""
    parts = _items(value, key, source, "one number or a list of numbers")
    return None if parts is None else tuple(parse_float(p, key, source) for p in parts)


def parse_float_pair(value: Any, key: str, source: str | None = None) -> tuple[float, float]:
    """Two numbers from "2,98" or a list."""
    parts = _split(value)
    if len(parts) != 2:
        raise _bad(key, value, "two numbers, e.g. [2, 98]", source)
    return (parse_float(parts[0], key, source), parse_float(parts[1], key, source))


def _optional(parse: Parser) -> Parser:
    return lambda value, key: None if value is None else parse(value, key)


def _choice(choices: tuple[str, ...], *, upper: bool = False) -> Parser:
    def parse(value: Any, key: str) -> str:
        text = str(value).upper() if upper else str(value)
        if text not in choices:
            raise _bad(key, value, "one of " + ", ".join(choices))
        return text

    return parse


def _int_min(minimum: int, multiple: int = 1, why: str = "") -> Parser:
    def parse(value: Any, key: str) -> int:
        number = parse_int(value, key, minimum=minimum)
        if number % multiple:
            raise ConfigError(f"{key} must be a multiple of {multiple}, got {number}", hint=why)
        return number

    return parse


def _int_min_or_auto(value: Any, key: str) -> int | str:
    if isinstance(value, str) and value.strip().lower() == "auto":
        return "auto"
    try:
        return parse_int(value, key)
    except ConfigError:
        raise _bad(key, value, "auto or an integer >= 1") from None


def auto_norm_sample(ngf: int, tile: int, budget: float = NORM_PASS_BUDGET) -> int:
    """`--norm-sample auto`: the tiles whose parked activations fit `budget` (see
    DEFAULT_NORM_SAMPLE), a multiple of 16 within NORM_SAMPLE_LIMITS. Depends on the
    model's width and the tile size only, so a scene's sample (and bytes) stay a
    function of the scene, model and settings."""
    per_tile = NORM_PASS_TILE_BYTES * ngf * tile * tile
    n = int(budget // per_tile) // 16 * 16
    return max(NORM_SAMPLE_LIMITS[0], min(NORM_SAMPLE_LIMITS[1], n))


def _percentiles(value: Any, key: str) -> tuple[float, float] | None:
    if value is None:
        return None
    lo, hi = parse_float_pair(value, key)
    if not 0.0 <= lo < hi <= 100.0:
        raise ConfigError(f"percentiles must satisfy 0 <= low < high <= 100, got {lo}, {hi}",
                          hint="e.g. percentiles: [2, 98]")
    return lo, hi


def _db_range(value: Any, key: str) -> tuple[float, float] | None:
    if value is None:
        return None
    lo, hi = parse_float_pair(value, key)
    if not lo < hi:
        raise ConfigError(f"db_range must be [low, high] with low < high, got {[lo, hi]}",
                          hint="e.g. db_range: [-25, 0]")
    return lo, hi


def _output_bands(value: Any, key: str) -> int:
    bands = parse_int(value, key)
    if bands not in (1, 3):
        raise ConfigError(f"output_bands must be 1 or 3, got {bands}",
                          hint="1 = mean of the generator's 3 channels, 3 = all channels")
    return bands


def _reflectance_scale(value: Any, key: str) -> tuple[float, float] | None:
    """None, or (scale, offset) from "SCALE", "SCALE,OFFSET" or a list."""
    if value is None:
        return None
    parts = _split(value)
    if len(parts) not in (1, 2):
        raise _bad(key, value, "SCALE or SCALE,OFFSET, e.g. 0.0001 or 0.0000275,-0.2")
    scale = parse_float(parts[0], key)
    offset = parse_float(parts[1], key) if len(parts) == 2 else 0.0
    if not (scale > 0 and math.isfinite(scale) and math.isfinite(offset)):
        raise _bad(key, value, "a positive SCALE (and a finite OFFSET), e.g. 0.0001")
    return scale, offset


def _polarisations(value: Any, key: str) -> tuple[str, ...] | None:
    """None, or polarisation names from "VV,VH" or a list (upper case)."""
    parts = _items(value, key, None, "polarisation names, e.g. VV,VH")
    if parts is None:
        return None
    names = tuple(str(p).strip().upper() for p in parts)
    if len(set(names)) != len(names):
        raise _bad(key, value, "each polarisation once, e.g. VV,VH")
    return names


def _device(value: Any, key: str) -> str:
    try:
        return parse_device(value)
    except ugatit.errors.DeviceError as exc:
        raise DeviceError.from_ugatit(exc) from None


def _scheduler(value: Any, key: str) -> str | None:
    return None if value in (None, "") else str(value)


def _pair_text(pair: tuple[float, float]) -> str:
    return ",".join(f"{v:g}" for v in pair)


def setting(default: Any, parse: Parser, help: str, *, default_text: str | None = None,
            flag: bool = True, choices: tuple[str, ...] | None = None,
            flag_type: type | None = None, metavar: str | None = None) -> Any:
    """A PipelineConfig field: its default, parser and help text, in one place.

    `default_text` describes a None default ("the model's ... else 2,98"); `flag=False`
    keeps a setting out of the command line (YAML and library only); `choices` and
    `flag_type` are the click option's (pipeline/options.py).
    """
    return dataclasses.field(default=default, metadata={
        "parse": parse, "help": help, "default_text": default_text, "flag": flag,
        "choices": choices, "type": flag_type, "metavar": metavar,
    })


@dataclass(frozen=True)
class PipelineConfig:
    """Every setting of a scene run; defaults are the documented product defaults."""

    # --- input radiometry -------------------------------------------------------------
    bands: tuple[int, ...] | None = setting(
        None, _optional(parse_int_tuple),
        "1-based input bands in the model's order: three fed as R,G,B (3,2,1 for B,G,R "
        "files); a multispectral model takes as many as it names (e.g. 3,2,1,4).",
        default_text="a 3-band input as is; a multispectral model's bands by name; "
        "anything else needs --bands")
    scale: str = setting(
        "auto", _choice(SCALE_MODES),
        "Input scaling to [0,1]: auto = uint8/255, else a global per-band percentile "
        "stretch; fixed = fixed_min/fixed_max from the config; none = already 0..1; "
        "reflectance = the product's reflectance scale, reflectance 0..0.5 -> 0..1 (the "
        "default for a model trained on reflectance).",
        choices=SCALE_MODES)
    reflectance_scale: tuple[float, float] | None = setting(
        None, _reflectance_scale,
        "SCALE[,OFFSET]: declare how the input's values become reflectance (value x SCALE "
        "+ OFFSET), for a reflectance model fed a raster without band Scale/Offset: "
        "0.0001 for Sentinel-2 DN, 0.0000275,-0.2 for Landsat C2 Level-2.",
        default_text="the band Scale/Offset of the input (products carry it)")
    percentiles: tuple[float, float] | None = setting(
        None, _percentiles, "LOW,HIGH percentiles of the auto stretch of non-uint8 input.",
        default_text="the model's radiometric contract, else "
        + _pair_text(DEFAULT_PERCENTILES))
    fixed_min: tuple[float, ...] | None = setting(
        None, parse_float_tuple, "scale=fixed: per band (or one for all) low values.",
        default_text="none", flag=False)
    fixed_max: tuple[float, ...] | None = setting(
        None, parse_float_tuple, "scale=fixed: per band (or one for all) high values.",
        default_text="none", flag=False)
    nodata: float | None = setting(
        None, _optional(parse_float),
        "Declare the input nodata value (replaces the file's tag). Not needed for the "
        "zero collar of 16-bit products: pixels 0 in every band of non-uint8 input are fill.",
        default_text="the file's nodata, masks, NaN and that fill rule")
    stats_size: int = setting(
        1024, _int_min(16), "Longest side (px) of the decimated read of the statistics.",
        flag=False)
    # --- tiling / inference -----------------------------------------------------------
    tile_size: int = setting(
        256, _int_min(16, 4, "the generator downsamples twice by 2; use e.g. 256"),
        "Tile size in px (multiple of 4; a full model needs its own size).", flag_type=int)
    overlap: int = setting(
        64, _int_min(0), "Pixels shared by neighbouring tiles, blended away.", flag_type=int)
    batch_size: int = setting(
        4, _int_min(1), "Tiles per Dask task (does not change the output).", flag_type=int)
    block_size: int = setting(
        1024, _int_min(16, 16, "GeoTIFF tiles are multiples of 16; use e.g. 512 or 1024"),
        "Output block side written at a time, multiple of 16 (bounds memory; does not "
        "change the output).", flag_type=int)
    norm: str = setting(
        "scene", _choice(NORM_MODES),
        "Normalisation statistics of the generator: scene = computed once per scene from "
        "a sample of valid tiles and used by every tile (tiles match the model's "
        "whole-scene output, no per-tile brightness); tile = each tile its own (the "
        "behaviour before scene statistics; for comparison, or a model trained that way).",
        choices=NORM_MODES)
    norm_sample: int | str = setting(
        DEFAULT_NORM_SAMPLE, _int_min_or_auto,
        "--norm scene: tiles pooled for the statistics, spread over the scene, fully valid "
        "pixels only; a scene with no more tiles uses all of them and matches the model's "
        "whole-scene forward. Their outputs are the run's, pooled layer by layer: memory "
        "grows with it (~26 MiB a tile at ngf 64), time does not. auto = as many as 1.75 "
        "GiB of activations hold for the model (64 at ngf 64, 128 at ngf 16 and narrower).",
        flag_type=str, metavar="auto|N")
    # --- output -----------------------------------------------------------------------
    output_bands: int = setting(
        1, _output_bands, "1 = mean of the generator's 3 channels, 3 = all. A model "
        "that names polarisations writes one band per polarisation instead (choose them "
        "with --polarisations; 3 is refused).",
        choices=("1", "3"))
    polarisations: tuple[str, ...] | None = setting(
        None, _polarisations,
        "The polarisations written, one band each, of a model that names them (e.g. VV "
        "or VV,VH).",
        default_text="all the model names")
    output_scale: str = setting(
        "unit", _choice(OUTPUT_SCALES),
        "unit = float32 0..1 (nodata NaN); uint8 = 1..255 (nodata 0); db = float32 mapped "
        "linearly onto --db-range (nodata NaN).", choices=OUTPUT_SCALES)
    db_range: tuple[float, float] | None = setting(
        None, _db_range,
        "LOW,HIGH dB that output 0..1 maps to with --output-scale db, e.g. "
        "--db-range=-25,0.",
        default_text="the model's radiometric contract, else "
        + _pair_text(DEFAULT_SAR_DB_RANGE))
    compress: str = setting(
        "DEFLATE", _choice(COMPRESSIONS, upper=True), "Compression of the output COG.",
        flag=False)
    precision: str = setting(
        "fp32", _choice(PRECISIONS),
        "Arithmetic of the generator: fp32 = float32, the parity path; tf32 = CUDA TF32 "
        "convolutions (= fp32 on CPU); bf16 / fp16 = autocast (CPU bf16 is fast only with "
        "AVX512-BF16 or AMX). Speed and deviation from fp32: docs/performance.md.",
        choices=PRECISIONS)
    tf32: bool = setting(
        False, parse_bool,
        "Same as --precision tf32 (kept for older configs).")
    # --- runtime (not in config_hash) -------------------------------------------------
    device: str = setting(
        "cpu", _device, "cpu, cuda, cuda:N (N = GPU index, as torch counts them) or mps.")
    micro_batch: int | None = setting(
        None, _optional(_int_min(1)),
        "Tiles per generator forward, a fixed shape (the last forward of a task is padded), "
        "so outputs do not depend on --batch-size. On CUDA tasks hold a multiple of it.",
        default_text="1 on CPU, 32 on CUDA", flag_type=int)
    channels_last: bool = setting(
        False, parse_bool, "Run the generator in channels-last (NHWC) memory format.")
    compile: bool = setting(
        False, parse_bool,
        "torch.compile the generator once per worker (eager when it cannot compile).")
    scenes_in_flight: int | None = setting(
        None, _optional(_int_min(1)),
        "Directory runs: scenes run at once (each plans and writes on the host while the "
        "others compute; memory grows with it). Ctrl-C lets the running ones finish.",
        default_text="2 on CUDA, 1 on CPU", flag_type=int)
    threads: int | None = setting(
        None, _optional(_int_min(1)), "Threads of the in-process scheduler.",
        default_text="CPU cores; 2 on CUDA", flag_type=int)
    workers: int | None = setting(
        None, _optional(_int_min(1)),
        "Start a local cluster of N worker processes (1 thread each).",
        default_text="in-process threads", flag_type=int)
    scheduler: str | None = setting(
        None, _scheduler,
        "Address of an existing dask.distributed scheduler (tcp://host:8786).",
        default_text="in-process threads")
    # --- bookkeeping (not a setting): who set what, ("percentiles", "flag"), ... -------
    origins: tuple[tuple[str, str], ...] = dataclasses.field(default=(), compare=False)

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            parse = f.metadata.get("parse")
            if parse is not None:
                object.__setattr__(self, f.name, parse(getattr(self, f.name), f.name))
        _check_combinations(self)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict of every setting (tuples as lists, NaN nodata as "nan")."""
        out: dict[str, Any] = {}
        for f in settings():
            value = getattr(self, f.name)
            if isinstance(value, tuple):
                value = list(value)
            if isinstance(value, float) and math.isnan(value):
                value = "nan"
            out[f.name] = value
        return out

    def output_dict(self) -> dict[str, Any]:
        """The settings that change the output (what `config_hash` fingerprints)."""
        values = self.to_dict()
        return {
            k: v for k, v in values.items()
            if k not in RUNTIME_FIELDS and v not in HASHED_UNLESS.get(k, ())
            and (k not in HASHED_ONLY_WITH
                 or values[HASHED_ONLY_WITH[k][0]] == HASHED_ONLY_WITH[k][1])
        }

    def forward_micro_batch(self) -> int:
        """Tiles per generator forward: the setting, else 1 on CPU (every tile alone,
        pipeline/run/inference.py) and CUDA_MICRO_BATCH on a GPU."""
        if self.micro_batch:
            return self.micro_batch
        return CUDA_MICRO_BATCH if self.device.startswith("cuda") else 1

    def task_tiles(self) -> int:
        """Tiles per Dask task: --batch-size, rounded up to a multiple of the micro-batch
        so that no forward but a scene's last is padded."""
        micro = self.forward_micro_batch()
        return -(-self.batch_size // micro) * micro

    def config_hash(self) -> str:
        """sha256 of the canonical JSON of the output-changing settings."""
        blob = json.dumps(self.output_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()

    def replace(self, **changes: Any) -> PipelineConfig:
        """Copy with some fields changed (set like flags), validated like `load_config`."""
        merged = self.to_dict()
        merged.update(changes)
        origins = {**dict(self.origins), **{k: "flag" for k in changes}}
        return from_values(merged, source="replace()", origins=origins)

    def origin(self, name: str) -> str:
        """Where a setting came from: "flag", "config" (file or code), "model" or "default"."""
        given = dict(self.origins).get(name)
        if given:
            return given
        return "default" if getattr(self, name) == DEFAULTS[name] else "config"

    @property
    def resolved(self) -> bool:
        """Whether the model-dependent settings are set (see `resolve_for_model`)."""
        return all(getattr(self, name) is not None for name in CONTRACT_KEYS) and (
            self.norm_sample != "auto")


def settings() -> tuple[dataclasses.Field, ...]:
    """The fields of PipelineConfig that are settings (all but the `origins` record)."""
    return tuple(f for f in dataclasses.fields(PipelineConfig) if "parse" in f.metadata)


DEFAULTS: dict[str, Any] = {f.name: f.default for f in settings()}


def setting_parser(name: str) -> Parser:
    """The parser of setting `name` (the `tiles` command shares run's)."""
    return next(f for f in settings() if f.name == name).metadata["parse"]


def _check_combinations(c: PipelineConfig) -> None:
    """The rules between fields (each field's own rule is its parser's)."""
    if c.tf32 and c.precision not in ("fp32", "tf32"):
        raise ConfigError(
            f"tf32 and precision {c.precision} contradict each other",
            hint="tf32 is the same as --precision tf32; pass one precision",
        )
    if c.precision == "fp16" and c.device == "cpu":
        # Measured (issue 16): a 4-tile seed-size scene ran for over 8 minutes under fp16
        # autocast on this project's CPU (fp32: seconds); CPU kernels have no fast fp16
        # convolution. Refused here, before any model is loaded or any forward runs.
        raise ConfigError(
            "precision fp16 on the CPU is pathologically slow (minutes per tile)",
            path="--precision",
            hint="use --precision bf16 on a CPU (fast with AVX512-BF16 or AMX), or fp32",
        )
    if c.tf32 or c.precision == "tf32":  # one spelling from here on (frozen: setattr)
        object.__setattr__(c, "precision", "tf32")
        object.__setattr__(c, "tf32", True)
    if 2 * c.overlap > c.tile_size:
        raise ConfigError(
            f"overlap {c.overlap} is more than half the tile size {c.tile_size}",
            hint="keep overlap <= tile_size / 2 (64 for 256 px tiles is the default)",
        )
    if c.scheduler and c.workers:
        raise ConfigError(
            "scheduler and workers are exclusive",
            hint="--scheduler uses an existing cluster; --workers starts a local one",
        )
    if c.scale != "fixed":
        return
    if c.fixed_min is None or c.fixed_max is None:
        raise ConfigError(
            "scale=fixed needs fixed_min and fixed_max",
            hint="set fixed_min: [..] and fixed_max: [..] (one value or one per band)",
        )
    if len(c.fixed_min) != len(c.fixed_max):
        raise ConfigError(
            "fixed_min and fixed_max have different lengths",
            hint="give one value for all bands or one per band in both",
        )
    if any(a >= b for a, b in zip(c.fixed_min, c.fixed_max, strict=True)):
        raise ConfigError(
            "fixed_min must be below fixed_max for every band",
            hint="swap or correct the values",
        )


def from_values(values: dict[str, Any], *, source: str,
                origins: dict[str, str] | None = None) -> PipelineConfig:
    """A validated PipelineConfig from a mapping of setting names (YAML, flags); an
    error names `source` (the file, "config" or "replace()") unless it names a flag."""
    known = set(DEFAULTS)
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(
            f"unknown key(s) {', '.join(unknown)}",
            path=source,
            hint=f"known keys: {', '.join(sorted(known))}",
        )
    kept = tuple(sorted((k, v) for k, v in (origins or {}).items() if k in known))
    try:
        return PipelineConfig(**values, origins=kept)
    except ConfigError as err:
        if err.path is None:
            err.path = source
        raise


def resolve_for_model(config: PipelineConfig, contract: dict[str, Any] | None,
                      source: str = "checkpoint", out_ch: int | None = None,
                      ngf: int | None = None) -> PipelineConfig:
    """The config with the model-dependent settings resolved (flag > config > model >
    default) and their origins recorded. The one place this is decided; call it where the
    plan is made, before hashing the config. Idempotent. Raises ModelError for a contract
    whose values are unusable.

    A model trained on reflectance (contract `eo.method: reflectance`) gets scale
    "reflectance" unless a flag (or a config file value other than the default "auto")
    chose another scale; a model whose contract names polarisations gets `polarisations`
    (all of them unless chosen), so its outputs hash apart from the 3-channel models'.
    `out_ch`: the generator's output channels, checked against the polarisations.
    `ngf`: the generator's width, which sizes `--norm-sample auto` (auto_norm_sample;
    a seed-size model's 64 when not given)."""
    given = {name: (getattr(config, name), config.origin(name)) for name in CONTRACT_KEYS}
    resolved = resolve_radiometry(given, contract, source)
    if config.output_scale == "db" and resolved["db_range"][1] == "default":
        check_absolute_db(contract, source)
    origins = {**dict(config.origins), **{k: origin for k, (_, origin) in resolved.items()}}
    changes: dict[str, Any] = {k: value for k, (value, _) in resolved.items()}
    if config.norm_sample == "auto":
        changes["norm_sample"] = auto_norm_sample(ngf or 64, config.tile_size)
        origins["norm_sample"] = "model"
    eo = (contract or {}).get("eo")
    method = eo.get("method") if isinstance(eo, dict) else None
    scale_origin = config.origin("scale")
    if method == "reflectance" and (scale_origin == "default" or (
            scale_origin == "config" and config.scale == "auto")):
        changes["scale"] = "reflectance"
        origins["scale"] = "model"
    pols = model_polarisations(contract, out_ch, source)
    if pols:
        if config.output_bands == 3:
            raise ConfigError(
                f"3 asked, and this model writes polarisations {', '.join(pols)}, one "
                "band each", path="--output-bands",
                hint=f"leave --output-bands out; choose with --polarisations (e.g. "
                f"--polarisations {pols[0]})")
        chosen = config.polarisations
        if chosen is not None:
            unknown = [p for p in chosen if p not in pols]
            if unknown:
                raise ConfigError(
                    f"the model has no {', '.join(unknown)} (its polarisations: "
                    f"{', '.join(pols)})",
                    path="--polarisations", hint=f"choose among {','.join(pols)}")
        else:
            changes["polarisations"] = pols
            origins["polarisations"] = "model"
    elif config.polarisations is not None:
        raise ConfigError(
            f"{','.join(config.polarisations)} asked, and this model names no "
            "polarisations (a 3-channel model)", path="--polarisations",
            hint="leave --polarisations out; --output-bands 1 or 3 chooses its bands")
    return dataclasses.replace(config, **changes, origins=tuple(sorted(origins.items())))


def model_polarisations(contract: dict[str, Any] | None, out_ch: int | None,
                        source: str = "checkpoint") -> tuple[str, ...]:
    """The polarisations a model's output channels hold, in order (contract
    `sar.polarisations`); () for a model without them (the 3-channel RGB-like models,
    whose channels are averaged or written as they are). A model whose output channel
    count is not 3 must name them, one per channel."""
    sar = (contract or {}).get("sar")
    names = sar.get("polarisations") if isinstance(sar, dict) else None
    pols = tuple(str(p).strip().upper() for p in names) if isinstance(
        names, (list, tuple)) else ()
    if out_ch is not None and pols and len(pols) != out_ch:
        raise ModelError(
            f"radiometric contract: {len(pols)} polarisations ({', '.join(pols)}) for "
            f"{out_ch} output channels", path=source,
            hint="re-save the checkpoint with one polarisation per output channel")
    if out_ch is not None and not pols and out_ch != 3:
        raise ModelError(
            f"the model has {out_ch} output channel(s) and its contract names no "
            "polarisations", path=source,
            hint="re-save the checkpoint with sar.polarisations (one per output channel)")
    return pols


#: bytes a config file may have: configs/pipeline.yaml, every key commented, is ~5 KB


def _read_yaml(path: Path) -> dict[str, Any]:
    """The mapping of a YAML config file (keys may sit under a `pipeline:` section).

    Bounded (ugatit.io.read_yaml_config, shared with `ugatit train --config`): at most
    MAX_CONFIG_BYTES read, aliases refused, a nesting too deep for the parser an error,
    not a RecursionError traceback."""
    try:
        loaded = read_yaml_config(path, MAX_CONFIG_BYTES)
    except FileNotFoundError:
        raise ConfigError(
            "config file not found", path=path, hint="check the --config path"
        ) from None
    except YamlConfigError as exc:
        hint = "write the value out instead of &anchor / *alias" if "aliases" in str(exc) \
            else "it must be a YAML mapping of keys as in configs/pipeline.yaml"
        raise ConfigError(str(exc), path=path, hint=hint) from None
    except OSError as exc:
        raise ConfigError(f"cannot read the config file ({exc.strerror or exc})", path=path,
                          hint="check the --config path") from None
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
    return loaded


def load_config(path: Path | None, overrides: dict[str, Any] | None = None) -> PipelineConfig:
    """Defaults, then the YAML file at `path`, then `overrides` (None values ignored).

    Keys set by the file get origin "config", overrides (the command-line flags) "flag".
    Raises ConfigError naming the file and key for an unknown key or a bad value.
    """
    values: dict[str, Any] = {}
    origins: dict[str, str] = {}
    source = "config"
    if path is not None:
        source = str(path)
        loaded = _read_yaml(Path(path))
        values.update(loaded)
        origins.update({k: "config" for k, v in loaded.items() if v is not None})
    for key, value in (overrides or {}).items():
        if value is not None:
            values[key] = value
            origins[key] = "flag"
    return from_values(values, source=source, origins=origins)


def validate_device_string(device: str) -> str:
    """Normalise and check the syntax of a device string (ugatit.device's policy)."""
    return _device(device, "device")

"""Checkpoint I/O: read seed and eo2sar files safely, build eval-mode networks, write both.

Why it looks like this:
- ``torch.load(..., weights_only=True)`` always: a checkpoint is data, and a pickle that
  tries to run code is refused with :class:`CheckpointError`.
- ``map_location="cpu"`` first, then ``.to(device)``: a file saved on CUDA loads on a
  CPU-only machine.
- ``mmap=True``: inference needs only genA2B (42 MB) of a 512 MiB seed file. With a
  memory-mapped load, tensors of networks that are not asked for are never read from
  disk, so they never count in the process's resident memory.
- Networks are constructed on the ``meta`` device and materialised with ``to_empty`` and a
  strict ``load_state_dict``: no time is spent on random initialisation that the file
  overwrites, and keys/shapes are checked first so that a wrong file names the key, the
  expected and the actual shape.

Our own format (``format: "eo2sar"``) stores the config and a format version beside the
state dicts; the seed format is the original six-network dict (see :mod:`ugatit.legacy`).
"""

from __future__ import annotations

import os
import pickle
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ugatit.config import ModelConfig
from ugatit.device import resolve_device
from ugatit.errors import CheckpointError
from ugatit.io import atomic_path, fault_point
from ugatit.legacy import infer_config, is_bare_generator, is_seed_checkpoint
from ugatit.networks import GENERATORS, NETWORK_NAMES, build_network

FORMAT_NAME = "eo2sar"
FORMAT_VERSION = 1
#: Key of our metadata block inside a seed-format (six-network) file. The original
#: U-GAT-IT code reads only the network keys, so the extra key does not disturb it.
SEED_META_KEY = "eo2sar"
#: Key of the training state (optimisers, step, RNG) inside a training checkpoint.
TRAIN_STATE_KEY = "train_state"


@dataclass
class Checkpoint:
    """Networks read from one file, in eval mode, on one device.

    Access networks as attributes (``ckpt.genA2B``) or through ``ckpt.networks``.
    ``available`` lists every network the file holds, loaded or not.
    """

    path: Path
    format: str  # "seed" or "eo2sar"
    config: ModelConfig
    networks: dict[str, nn.Module]
    available: tuple[str, ...]
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    #: Plain metadata stored with the weights (our files only; {} for a published file):
    #: "radiometry" (the contract of the training data), "train" (training options), ...
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def radiometry(self) -> dict[str, Any] | None:
        """The radiometric contract the model was trained with, or None (seed files).

        Schema (written by ``pipeline tiles`` into dataset.json, copied by the trainer)::

            {"eo": {"method": "auto", "percentiles": [2.0, 98.0], "bands": null, ...},
             "sar": {"units": "linear" | "db" | "mixed", "band": 1,
                     "db_range": [-25.0, 0.0], ...}}
        """
        value = self.meta.get("radiometry")
        return dict(value) if isinstance(value, Mapping) else None

    def __getattr__(self, name: str) -> nn.Module:
        # Only called when normal lookup fails, i.e. for network names.
        if name in NETWORK_NAMES:
            nets = self.__dict__.get("networks", {})
            if name in nets:
                return nets[name]
            if name in self.__dict__.get("available", ()):
                raise AttributeError(f"{name} is in {self.path} but was not loaded; "
                                     f"pass networks=(..., {name!r}) to load_checkpoint")
            raise AttributeError(f"{self.path} holds no {name}")
        raise AttributeError(name)


# ----------------------------------------------------------------------------------------
# Reading


def _torch_load(path: Path) -> Any:
    """torch.load with weights_only, on CPU, memory-mapped when the file allows it."""
    if not path.exists():
        raise CheckpointError(f"{path}: checkpoint not found")
    if path.is_dir():
        raise CheckpointError(f"{path}: is a directory, not a checkpoint file")
    try:
        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as exc:
            # Files written by torch < 1.6 (legacy tar format) cannot be memory-mapped.
            if "mmap" not in str(exc) and "zipfile" not in str(exc):
                raise
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # Only a pickle naming a global (a callable to import and run) is an attempt to run
        # code; anything else the unpickler rejects is simply not a checkpoint.
        if "global" not in str(exc).lower():
            raise CheckpointError(f"{path}: not a PyTorch checkpoint (its pickle stream does "
                                  f"not decode)") from exc
        raise CheckpointError(
            f"{path}: refused: the file holds Python objects beyond tensors and plain "
            f"containers, which could run code when loaded (weights_only=True). If you trust "
            f"it, convert it once in an isolated environment. Detail: {_unpickler_detail(exc)}"
        ) from exc
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError, KeyError,
            IndexError, TypeError, AttributeError) as exc:
        # Non-zip files go through the legacy unpickler, which fails in many ways.
        raise CheckpointError(
            f"{path}: not a readable PyTorch checkpoint (truncated or another kind of file): "
            f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
        ) from exc


def _unpickler_detail(exc: Exception) -> str:
    """The one informative line of torch's long weights_only message."""
    lines = [ln.strip() for ln in str(exc).splitlines()]
    return next((ln for ln in lines if "GLOBAL" in ln or "WeightsUnpickler" in ln),
                lines[0] if lines else type(exc).__name__)


def _networks_of(obj: Mapping[str, Any], path: Path) -> dict[str, Mapping[str, Any]]:
    """The {network: state_dict} entries of a file, each checked to be a mapping."""
    nets = {k: v for k, v in obj.items() if k in NETWORK_NAMES}
    for name, sd in nets.items():
        if not isinstance(sd, Mapping):
            raise CheckpointError(f"{path}: {name} is a {type(sd).__name__}, expected a "
                                  f"state dict (a mapping of tensor names to tensors)")
    return nets


def read_state_dicts(path: str | os.PathLike[str]) -> tuple[str, dict[str, Any], ModelConfig]:
    """Open a checkpoint and return (format, {network: state_dict}, config).

    Tensors are memory-mapped where possible: nothing is read until it is used.
    """
    fmt, nets, config, _ = _read(Path(path))
    return fmt, nets, config


def _read(path: Path) -> tuple[str, dict[str, Any], ModelConfig, dict[str, Any]]:
    """read_state_dicts plus the metadata block, from one load of the file."""
    obj = _torch_load(path)
    if isinstance(obj, Mapping) and obj.get("format") == FORMAT_NAME:
        version = obj.get("format_version")
        if not isinstance(version, int):
            raise CheckpointError(f"{path}: eo2sar file without an integer format_version "
                                  f"(found {version!r}): the file is damaged")
        if version > FORMAT_VERSION:
            raise CheckpointError(f"{path}: eo2sar format version {version} is newer than "
                                  f"this code reads ({FORMAT_VERSION}); upgrade eo2sar")
        stored = obj.get("networks")
        if not isinstance(stored, Mapping):
            raise CheckpointError(f"{path}: eo2sar file without a 'networks' mapping")
        unknown = sorted(map(str, set(stored) - set(NETWORK_NAMES)))
        if unknown:
            raise CheckpointError(f"{path}: unknown networks {unknown}; expected some of "
                                  f"{', '.join(NETWORK_NAMES)}")
        nets = _networks_of(stored, path)
        try:
            config = ModelConfig.from_dict(dict(obj["config"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"{path}: bad or missing config: {exc}") from exc
        fmt = FORMAT_NAME
    elif is_seed_checkpoint(obj):
        nets = _networks_of(obj, path)
        config = infer_config(nets, where=str(path))
        stored_cfg = _meta_of(obj).get("config")
        if isinstance(stored_cfg, Mapping):  # our trainer's file: the config is explicit
            try:
                config = ModelConfig.from_dict(dict(stored_cfg))
            except (TypeError, ValueError) as exc:
                raise CheckpointError(f"{path}: bad stored config: {exc}") from exc
        fmt = "seed"
    elif is_bare_generator(obj):
        nets = {"genA2B": obj}
        config = infer_config(nets, where=str(path))
        fmt = "seed"
    else:
        what = f"a dict with keys {sorted(map(str, obj))[:6]}" if isinstance(obj, Mapping) \
            else type(obj).__name__
        raise CheckpointError(f"{path}: not a U-GAT-IT checkpoint: found {what}, expected the "
                              f"networks {', '.join(NETWORK_NAMES)}")
    if not nets:
        raise CheckpointError(f"{path}: holds no network")
    check_declared_bytes(path, nets)
    return fmt, nets, config, _meta_of(obj)


def check_declared_bytes(path: Path, nets: Mapping[str, Mapping[str, Any]]) -> None:
    """Refuse tensors that declare more bytes than the file holds, before any allocation.

    Why: ``weights_only`` makes a load safe from code, not from size. torch checks that
    each storage fits its record in the file, but a tensor can be a stride-0 view of a
    16-byte storage that declares a [10**6, 10**6] shape; with a config (or, in a seed
    file, shapes) to match, building the networks allocates the declared size (a crafted
    3 KB file asked for 13 GiB). A real state dict stores every element once, so the
    tensors' total bytes cannot exceed the file size: a cheap bound on shapes alone.
    """
    limit = path.stat().st_size
    total = 0
    for name, sd in nets.items():
        for key, t in sd.items():
            if not isinstance(t, Tensor):
                continue  # check_state_dict names it when the network is built
            nbytes = t.numel() * t.element_size()
            total += nbytes
            if total > limit:
                raise CheckpointError(
                    f"{path}: refused: {name} key {key!r} declares shape {list(t.shape)} "
                    f"{t.dtype}; the tensors declare {total} bytes but the file holds only "
                    f"{limit}: the file is damaged or crafted, not a saved state dict")


def first_non_finite(sd: Mapping[str, Any]) -> str | None:
    """The first key of ``sd`` whose floating tensor holds a NaN or an Inf, else None."""
    for key, t in sd.items():
        if isinstance(t, Tensor) and t.is_floating_point() and not bool(torch.isfinite(t).all()):
            return str(key)
    return None


def read_meta(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The plain metadata of a checkpoint: ``meta`` of an eo2sar file, the ``eo2sar`` block
    of a seed-format file written by our trainer, ``{}`` for a published file.

    Cheap: tensors are memory-mapped and never read.
    """
    return _meta_of(_torch_load(Path(path)))


def _meta_of(obj: Any) -> dict[str, Any]:
    if not isinstance(obj, Mapping):
        return {}
    block = obj.get("meta") if obj.get("format") == FORMAT_NAME else obj.get(SEED_META_KEY)
    return dict(block) if isinstance(block, Mapping) else {}


def check_state_dict(module: nn.Module, sd: Mapping[str, Tensor], where: str) -> None:
    """Compare keys and shapes before loading, so the error names the key and both shapes."""
    expected = module.state_dict()
    missing = [k for k in expected if k not in sd]
    unexpected = [k for k in sd if k not in expected]
    if missing or unexpected:
        raise CheckpointError(
            f"{where}: keys do not match the architecture; missing {missing[:5]}"
            f"{'...' if len(missing) > 5 else ''}, unexpected {unexpected[:5]}"
            f"{'...' if len(unexpected) > 5 else ''}"
        )
    for k, ref in expected.items():
        got = sd[k]
        if not isinstance(got, Tensor):
            raise CheckpointError(f"{where}: key {k!r} is a {type(got).__name__}, not a tensor")
        if tuple(got.shape) != tuple(ref.shape):
            raise CheckpointError(f"{where}: key {k!r} has shape {list(got.shape)}, "
                                  f"expected {list(ref.shape)}")
        if not got.is_floating_point():
            raise CheckpointError(f"{where}: key {k!r} has dtype {got.dtype}, expected float")


def materialise(name: str, config: ModelConfig, sd: Mapping[str, Tensor], device: torch.device,
                where: str) -> nn.Module:
    """Build network ``name`` directly from ``sd`` on ``device``, in eval mode."""
    with torch.device("meta"):
        module = build_network(name, config)
    check_state_dict(module, sd, f"{where}: {name}")
    module = module.to_empty(device=device)
    # Strict load copies (and casts fp16 -> fp32) every parameter and buffer.
    module.load_state_dict(sd, strict=True)
    # NaN/Inf weights (a diverged or damaged run) would turn every output pixel into
    # NaN: refuse them here, before a caller writes any output.
    bad = first_non_finite(module.state_dict())
    if bad is not None:
        raise CheckpointError(f"{where}: {name} key {bad!r} holds NaN or Inf values: the "
                              f"weights are damaged (a diverged training run?); use an "
                              f"earlier checkpoint")
    return module.eval().requires_grad_(False)


def load_checkpoint(path: str | os.PathLike[str], device: str | torch.device = "cpu",
                    networks: Sequence[str] | None = None) -> Checkpoint:
    """Load a seed-format or eo2sar checkpoint into eval-mode networks.

    Args:
        path: the checkpoint file.
        device: where the networks live (``"cpu"``, ``"cuda"``, ``"cuda:1"``).
        networks: names to build (e.g. ``("genA2B",)`` for inference); ``None`` builds all
            that the file holds. Networks not asked for are never read from disk.

    Raises:
        CheckpointError: missing, unsafe, unreadable or mismatched file.
        DeviceError: a device string that is malformed or absent on this machine.
    """
    path = Path(path)
    dev = resolve_device(device)
    fmt, state_dicts, config, meta = _read(path)
    wanted = tuple(state_dicts) if networks is None else tuple(networks)
    for name in wanted:
        if name not in NETWORK_NAMES:
            raise CheckpointError(f"unknown network {name!r}; expected one of {NETWORK_NAMES}")
        if name not in state_dicts:
            raise CheckpointError(f"{path}: holds no {name} (it has {', '.join(state_dicts)})")
    built = {n: materialise(n, config, state_dicts[n], dev, str(path)) for n in wanted}
    return Checkpoint(path=path, format=fmt, config=config, networks=built,
                      available=tuple(state_dicts), device=dev, meta=meta)


# ----------------------------------------------------------------------------------------
# Writing


def _to_state_dict(net: nn.Module | Mapping[str, Tensor], half: bool) -> dict[str, Tensor]:
    sd = net.state_dict() if isinstance(net, nn.Module) else dict(net)
    out = {}
    for k, v in sd.items():
        v = v.detach().to("cpu").contiguous()
        out[k] = v.half() if half and v.is_floating_point() else v.clone()
    return out


def _atomic_save(obj: Any, path: Path) -> None:
    """torch.save through ugatit.io.atomic_path: no half-written file under ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)
        fault_point("checkpoint")  # test hook (tests/faults): written, not yet renamed


def save_checkpoint(path: str | os.PathLike[str],
                    networks: Mapping[str, nn.Module | Mapping[str, Tensor]],
                    config: ModelConfig, fmt: str = FORMAT_NAME, half: bool = False,
                    extra: Mapping[str, Any] | None = None,
                    train_state: Mapping[str, Any] | None = None) -> Path:
    """Write networks as an eo2sar file (config + version) or a seed-format six-network dict.

    ``half`` stores floating tensors as fp16 (eo2sar format only: the original tools expect
    float32). ``extra`` adds plain metadata (str/int/float and nested lists/dicts of them,
    e.g. ``{"radiometry": {...}}``) to the file's ``meta``; a seed-format file gets it, with
    the config, under the extra key ``"eo2sar"`` (ignored by the original code).
    ``train_state`` (optimiser state dicts, step, RNG states: tensors and plain values
    only, so that ``weights_only`` loading accepts it) is stored under ``"train_state"``.
    """
    path = Path(path)
    unknown = [n for n in networks if n not in NETWORK_NAMES]
    if unknown:
        raise ValueError(f"unknown network names {unknown}; expected {NETWORK_NAMES}")
    if fmt == "seed":
        if half:
            raise ValueError("the seed format is float32 only; use fmt='eo2sar' with half=True")
        obj: dict[str, Any] = {n: _to_state_dict(net, False) for n, net in networks.items()}
        if extra or train_state is not None:
            obj[SEED_META_KEY] = {"format_version": FORMAT_VERSION, "config": config.to_dict(),
                                  "torch": str(torch.__version__), **dict(extra or {})}
    elif fmt == FORMAT_NAME:
        obj = {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "config": config.to_dict(),
            "networks": {n: _to_state_dict(net, half) for n, net in networks.items()},
            "meta": {"torch": str(torch.__version__), "dtype": "float16" if half else "float32",
                     "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                     **dict(extra or {})},
        }
    else:
        raise ValueError(f"unknown checkpoint format {fmt!r}: use 'eo2sar' or 'seed'")
    if train_state is not None:
        obj[TRAIN_STATE_KEY] = dict(train_state)
    _atomic_save(obj, path)
    return path


def init_checkpoint(path: str | os.PathLike[str], config: ModelConfig, seed: int = 0,
                    networks: Iterable[str] = GENERATORS, fmt: str = FORMAT_NAME) -> Path:
    """Write a randomly initialised checkpoint (tests, benchmarks, demos: NOT a trained model).

    Initialisation is PyTorch's default for each layer, seeded, so the same arguments give
    the same file contents.
    """
    with torch.random.fork_rng(devices=[]):  # leave the caller's global RNG untouched
        torch.manual_seed(seed)
        nets = {n: build_network(n, config) for n in networks}
    return save_checkpoint(path, nets, config, fmt=fmt,
                           extra={"note": f"random weights (seed {seed}), not trained"}
                           if fmt == FORMAT_NAME else None)


def export_generator(src: str | os.PathLike[str], dst: str | os.PathLike[str],
                     half: bool = False, networks: Sequence[str] = ("genA2B",)) -> Path:
    """Write a generator-only eo2sar file (42 MB instead of 512 MiB for the published model)."""
    fmt, state_dicts, config, meta = _read(Path(src))
    missing = [n for n in networks if n not in state_dicts]
    if missing:
        raise CheckpointError(f"{src}: holds no {', '.join(missing)}")
    # Build and check each network so an export never writes a file that would not load.
    nets = {n: materialise(n, config, state_dicts[n], torch.device("cpu"), str(src))
            for n in networks}
    # Keep what the model needs at run time (its radiometric contract, how it was
    # trained); drop what only the source file's own bookkeeping needs.
    kept = {k: v for k, v in meta.items()
            if k not in ("format_version", "config", "torch", "created", "dtype")}
    return save_checkpoint(dst, nets, config, half=half,
                           extra={**kept, "exported_from": Path(src).name, "source_format": fmt})

"""What a model takes and gives, by name: its optical bands and its polarisations.

The published model (and every 3-channel model without band names) takes red, green and
blue and gives 3 channels: those keep the pipeline's RGB behaviour exactly (a 3-band
raster as is, `--bands` for others, products' red/green/blue). A model whose radiometric
contract names other bands (`eo.common_names`, e.g. red, green, blue, nir), or takes
another channel count, is fed BY NAME (pipeline/inputs/bandnames.py): products give the
named bands, a GeoTIFF's band descriptions say which band is which, and `--bands` numbers
them by hand (as many as the model takes) for a raster that does not say. Its output
channels are the polarisations its contract names (`sar.polarisations`), one band each,
each mapped to dB by its own range (`sar.db_ranges`).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.config import PipelineConfig, model_polarisations
from pipeline.errors import ConfigError, InputError, ModelError, PipelineWarning
from pipeline.inputs.bandnames import RGB, bands_by_description, model_band_names
from pipeline.inputs.radiometry import REFLECTANCE_RANGE
from pipeline.run.checks import model_sha256
from pipeline.run.inference import get_generator
from ugatit import UgatitError, read_meta


@dataclass(frozen=True)
class ModelIO:
    """The channels of a model's generator, named."""

    in_ch: int
    out_ch: int
    #: common names of the input bands, in channel order (() when the model does not say
    #: and is not a 3-channel model: only --bands can feed it)
    band_names: tuple[str, ...]
    #: the polarisations of the output channels (() for a 3-channel model)
    polarisations: tuple[str, ...]
    contract: Mapping[str, Any] | None = None
    #: the generator's width (sizes --norm-sample auto: pipeline.config.auto_norm_sample)
    ngf: int = 64

    @property
    def by_name(self) -> bool:
        """Fed by band name (a multispectral model) rather than as RGB."""
        return self.in_ch != 3 or tuple(self.band_names) != RGB

    def input_names(self) -> tuple[str, ...] | None:
        """The band names products must give (None: the RGB path, as always)."""
        return self.band_names if self.by_name and self.band_names else None

    def describe_bands(self) -> str:
        return ", ".join(self.band_names) if self.band_names else f"{self.in_ch} bands"


def model_contract(model_path: Path) -> dict[str, Any] | None:
    """The radiometric contract a checkpoint carries (None for the published seed file)."""
    try:
        value = read_meta(model_path).get("radiometry")
    except (UgatitError, OSError, RuntimeError) as exc:
        raise ModelError(
            f"cannot read the checkpoint's metadata ({str(exc).splitlines()[0]})",
            path=model_path,
            hint="pass an eo2sar/U-GAT-IT checkpoint with --model",
        ) from None
    return dict(value) if isinstance(value, dict) else None


def model_io(model_path: str | Path, contract: Mapping[str, Any] | None = None) -> ModelIO:
    """The ModelIO of a checkpoint (its generator is loaded once per process, on the
    CPU: pipeline/run/inference.py's cache, which the plan uses anyway)."""
    path = Path(model_path)
    sha = model_sha256(path)
    _, cfg = get_generator(str(path.resolve()), sha, "cpu")
    if contract is None:
        contract = model_contract(path)
    return ModelIO(cfg.in_ch, cfg.out_ch, model_band_names(contract, cfg.in_ch),
                   model_polarisations(dict(contract or {}), cfg.out_ch, str(path)),
                   contract, cfg.ngf)


def input_names(model_path: str | Path) -> tuple[str, ...] | None:
    """The band names a product must give for this model; None for an RGB model (the
    products' red, green, blue, as always). Used before the input is resolved, so a
    checkpoint that cannot be read gives None here: the plan's checks report it, in
    their order (input first)."""
    from pipeline.errors import PipelineError

    try:
        return model_io(model_path).input_names()
    except PipelineError:
        return None


def pick_bands(io: ModelIO, descriptions: Sequence[str | None], count: int,
               given: tuple[int, ...] | None, where: str) -> tuple[int, ...]:
    """The 1-based bands of a raster fed to a by-name model: `given` (--bands, as many
    as the model takes), else by the raster's band descriptions; a one-line error naming
    the model's bands otherwise."""
    wanted = io.describe_bands()
    if given is not None:
        if len(given) != io.in_ch:
            raise ConfigError(
                f"--bands gives {len(given)} band(s); the model takes {io.in_ch} "
                f"({wanted})", path=where,
                hint=f"give {io.in_ch} 1-based band numbers in that order")
        bad = [b for b in given if not 1 <= b <= count]
        if bad:
            raise InputError(f"has {count} band(s), band(s) {', '.join(map(str, bad))} "
                             "asked for", path=where,
                             hint=f"band numbers are 1-based and at most {count}")
        return tuple(given)
    if not io.band_names:
        raise ConfigError(
            f"the model takes {io.in_ch} bands and does not name them", path=where,
            hint=f"choose {io.in_ch} bands with --bands in the model's order")
    if not any(descriptions) and count != 13:
        raise InputError(
            f"the model takes bands {wanted}, and this raster's {count} band(s) have no "
            "descriptions naming them", path=where,
            hint=f"choose {io.in_ch} bands with --bands in that order (e.g. --bands "
            f"{','.join(str(i) for i in range(1, io.in_ch + 1))}), or give a product, a "
            "STAC Item or a GeoTIFF whose band descriptions name them (B04, red, ...)")
    bands, notes = bands_by_description(descriptions, count, io.band_names, where)
    for note in notes:
        warnings.warn(f"{where}: {note}", PipelineWarning, stacklevel=3)
    return bands


def output_db_ranges(config: PipelineConfig, contract: Mapping[str, Any] | None
                     ) -> tuple[tuple[float, float], ...]:
    """The dB range of each output band of a model with polarisations: a range set by
    flag or config file for all of them, else each polarisation's own from the contract
    (`sar.db_ranges`, in the contract's polarisation order), else the resolved db_range."""
    pols = config.polarisations or ()
    assert config.db_range is not None  # resolved
    if not pols or config.origin("db_range") in ("flag", "config"):
        return (config.db_range,) * max(1, len(pols))
    sar = (contract or {}).get("sar")
    names = [str(p).upper() for p in (sar.get("polarisations") or ())] if isinstance(
        sar, Mapping) else []
    ranges = sar.get("db_ranges") if isinstance(sar, Mapping) else None
    out = []
    for p in pols:
        i = names.index(p) if p in names else -1
        try:
            lo, hi = (float(v) for v in ranges[i]) if ranges and i >= 0 else config.db_range
        except (TypeError, ValueError, IndexError):
            lo, hi = config.db_range
        out.append((lo, hi))
    return tuple(out)


def output_channels(config: PipelineConfig, contract: Mapping[str, Any] | None
                    ) -> tuple[int, ...] | None:
    """The generator channels written, in order, for a model with polarisations (the
    index of each chosen polarisation); None for a 3-channel model (mean or all)."""
    pols = config.polarisations
    if not pols:
        return None
    sar = (contract or {}).get("sar")
    names = [str(p).upper() for p in (sar.get("polarisations") or ())] if isinstance(
        sar, Mapping) else []
    return tuple(names.index(p) for p in pols)


def reflectance_range(contract: Mapping[str, Any] | None) -> tuple[float, float]:
    """The reflectance range the model's unit 0..1 spans (contract eo.reflectance_range,
    else REFLECTANCE_RANGE)."""
    eo = (contract or {}).get("eo")
    value = eo.get("reflectance_range") if isinstance(eo, Mapping) else None
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        return REFLECTANCE_RANGE
    return (lo, hi) if lo < hi else REFLECTANCE_RANGE

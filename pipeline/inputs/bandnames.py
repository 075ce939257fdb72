"""Band names: which optical band a file, product or array holds, in STAC's words.

A multispectral model names the bands it takes by their STAC `eo:common_name`
(``red``, ``green``, ``blue``, ``nir``, ``swir16``, ...; its radiometric contract's
``eo.common_names``), so one checkpoint can be fed from a Sentinel-2 SAFE, a Landsat
Collection 2 folder, a STAC Item, a folder of band files, a GeoTIFF whose band
descriptions say ``B04`` or an xarray ``band`` coordinate, without the user numbering
bands by hand. This module is the one vocabulary all of those use.

Why the tables are per sensor: "B4" is red on Sentinel-2 and Landsat 8/9 but
near-infrared on Landsat 4-7, and "B8" is near-infrared on Sentinel-2 but panchromatic on
Landsat 8. A product folder knows its sensor (SAFE metadata, MTL); a bare GeoTIFF does
not, so for descriptions the rule is stated: ``B1..B12``/``B01..B12``/``B8A`` are
Sentinel-2 (the usual single-file exports: Sen1Floods11, SEN12MS), ``SR_B1..SR_B7`` are
Landsat 8/9 OLI Collection 2 (for Landsat 4-7 give the product folder: its MTL names
the sensor), and common names are taken as they are.

Near-infrared: STAC calls Sentinel-2's broad B08 (842 nm) ``nir`` and the narrow
865 nm bands (Sentinel-2 B8A, Landsat 8/9 B5) ``nir08``. Over water, vegetation and
soil the two agree to a few per cent of reflectance, far less than the contrast a
SAR-like model uses them for, so a model asking for ``nir`` takes ``nir08`` when the
input has no ``nir`` (and the other way round), and the run says so.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from pipeline.errors import ConfigError

#: STAC eo:common_name of each Sentinel-2 MSI band.
SENTINEL2 = {
    "B01": "coastal", "B02": "blue", "B03": "green", "B04": "red", "B05": "rededge071",
    "B06": "rededge075", "B07": "rededge078", "B08": "nir", "B8A": "nir08",
    "B09": "nir09", "B10": "cirrus", "B11": "swir16", "B12": "swir22",
}
#: The band order of 13-band Sentinel-2 exports (SEN12MS, Sen1Floods11, GEE).
SENTINEL2_ORDER = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09",
                   "B10", "B11", "B12")
#: Landsat 8/9 OLI (band number -> common name).
LANDSAT_OLI = {1: "coastal", 2: "blue", 3: "green", 4: "red", 5: "nir08", 6: "swir16",
               7: "swir22", 8: "pan", 9: "cirrus"}
#: Landsat 4/5 TM and 7 ETM+.
LANDSAT_TM = {1: "blue", 2: "green", 3: "red", 4: "nir08", 5: "swir16", 7: "swir22",
              8: "pan"}
#: Every name a band may be called by that is a common name already.
COMMON_NAMES = frozenset({*SENTINEL2.values(), *LANDSAT_OLI.values(), *LANDSAT_TM.values(),
                          "rededge", "lwir", "lwir11", "lwir12"})
#: A model's band -> what may stand in for it when the input lacks it (module doc).
SUBSTITUTES = {"nir": ("nir08",), "nir08": ("nir",)}
#: The bands of a model without `common_names` in its contract: the RGB of the seed.
RGB = ("red", "green", "blue")

_S2 = re.compile(r"^B0?(\d{1,2}|8A)$", re.IGNORECASE)
_LANDSAT_SR = re.compile(r"^SR_B(\d)$", re.IGNORECASE)


def sentinel2_band_id(name: str) -> str | None:
    """"B4", "B04", "b8a" -> "B04", "B8A"; None when not a Sentinel-2 band name."""
    m = _S2.match(name.strip())
    if not m:
        return None
    digits = m.group(1).upper()
    band = "B8A" if digits == "8A" else f"B{int(digits):02d}"
    return band if band in SENTINEL2 else None


def landsat_common_name(number: int, spacecraft: str) -> str | None:
    """The common name of Landsat band `number` on `spacecraft` ("8", "9", "7", ...)."""
    table = LANDSAT_OLI if spacecraft in ("8", "9") else LANDSAT_TM
    return table.get(number)


def common_name(label: str) -> str | None:
    """The common name a band label means (module doc's rule for bare descriptions):
    a common name as it is, a Sentinel-2 band id, a Landsat 8/9 ``SR_B*``; else None."""
    text = label.strip()
    m = re.match(r"^(\S+) \((.+)\)$", text)  # eo2sar's own VRTs: "red (B04)"
    if m:
        return common_name(m.group(1)) or common_name(m.group(2))
    if text.lower() in COMMON_NAMES:
        return text.lower()
    s2 = sentinel2_band_id(text)
    if s2 is not None:
        return SENTINEL2[s2]
    m = _LANDSAT_SR.match(text)
    if m:
        return LANDSAT_OLI.get(int(m.group(1)))
    return None


def model_band_names(contract: Mapping[str, object] | None, in_ch: int) -> tuple[str, ...]:
    """The common names of the bands a model takes, in channel order: the contract's
    ``eo.common_names``, else red, green, blue for a 3-channel model (the seed's RGB).
    A model of another channel count without names cannot be fed by name (None-like
    empty tuple: the caller asks for --bands)."""
    eo = (contract or {}).get("eo") if isinstance(contract, Mapping) else None
    names = eo.get("common_names") if isinstance(eo, Mapping) else None
    if isinstance(names, (list, tuple)) and names:
        return tuple(str(n) for n in names)
    return RGB if in_ch == 3 else ()


def match_bands(wanted: Sequence[str], available: Sequence[str | None], where: str,
                ) -> tuple[list[int], list[str]]:
    """Pick the model's bands by name: (0-based indices into `available`, notes).

    `available` holds each input band's common name (None: unknown). A band the model
    needs and the input lacks, with no substitute (SUBSTITUTES), is a ConfigError naming
    both lists; `notes` says which substitutes were used.
    """
    index: dict[str, int] = {}
    for i, name in enumerate(available):
        if name is not None and name not in index:
            index[name] = i
    picked, notes, missing = [], [], []
    for name in wanted:
        if name in index:
            picked.append(index[name])
            continue
        sub = next((s for s in SUBSTITUTES.get(name, ()) if s in index), None)
        if sub is None:
            missing.append(name)
            continue
        picked.append(index[sub])
        notes.append(f"{name} <- {sub}")
    if missing:
        have = ", ".join(n or "?" for n in available) or "none named"
        raise ConfigError(
            f"the model takes bands {', '.join(wanted)}; the input has no "
            f"{', '.join(missing)} (its bands: {have})",
            path=where,
            hint="give an input with those bands (a Sentinel-2 or Landsat product, a "
            "STAC Item, or a GeoTIFF whose band descriptions name them), or choose "
            f"{len(wanted)} bands with --bands in the model's order",
        )
    return picked, notes


def bands_by_description(descriptions: Sequence[str | None], count: int,
                         names: Sequence[str], where: str) -> tuple[tuple[int, ...], list[str]]:
    """The 1-based bands of a raster that hold the model's bands `names`, by the raster's
    band descriptions (``B04``, ``B4``, ``SR_B4``, ``red``, ``red (B04)``: common_name),
    and notes on what was assumed or substituted (for a warning or a log line).

    A raster of 13 bands without any description is taken as a Sentinel-2 export in the
    band order every 13-band export uses (SEN12MS, Sen1Floods11, GEE: B01..B08, B8A,
    B09..B12), with a note saying so. Otherwise a band the model needs that no
    description names is a ConfigError naming both lists (match_bands). Pure: the
    `pipeline tiles` builder and `pipeline run` share it.
    """
    available: list[str | None] = [common_name(d) if d else None for d in descriptions]
    available += [None] * (count - len(available))
    notes: list[str] = []
    if not any(available) and count == len(SENTINEL2_ORDER):
        notes.append(f"13 bands without descriptions, taken as Sentinel-2 "
                     f"{','.join(SENTINEL2_ORDER)}")
        available = [SENTINEL2[b] for b in SENTINEL2_ORDER]
    picked, subs = match_bands(names, available, where)
    return tuple(i + 1 for i in picked), notes + subs

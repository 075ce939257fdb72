"""Where the input lives: turn what the user gave as INPUT into one raster the pipeline reads.

`pipeline run INPUT OUT` accepts, besides a GeoTIFF / VRT path (used as it is):

* a STAC Item (a `.json` file or URL): the red, green and blue assets chosen by their
  `eo:bands` common names (STAC 1.0 eo extension) or `bands[].eo:common_name` (STAC 1.1),
  else a `visual` asset; `--assets a,b,c` names them instead;
* a Landsat Collection 2 Level-1 / Level-2 folder (an `*_MTL.txt` or `*_MTL.xml` and the
  per-band GeoTIFFs), or its MTL file;
* a Sentinel-2 L1C / L2A SAFE folder or its zip (the 10 m B04/B03/B02 JP2 files of
  GRANULE/*/IMG_DATA, `R10m/` for L2A);
* a remote raster: `https://`, `http://`, `s3://`, `gs://` or a GDAL `/vsi...` path, read in
  place through GDAL's virtual file systems (only the bytes of the blocks read travel).

Everything but a local raster becomes a small GDAL VRT in a temporary directory (removed
when the run ends): the bands stacked in R, G, B order, each a reference to its file, so no
pixel is copied. A VRT because the whole pipeline (checks, radiometry, Dask workers in
other processes) opens a local path; for a remote raster it also keeps the URL's `//`,
which a pathlib.Path would fold. Workers of a remote Dask cluster must see the temporary
directory (set TMPDIR to shared storage) or be given a local raster.

Radiometry of products (docs/data_sources.md): the fill value (0 for Landsat C2 and
Sentinel-2) is set as each band's nodata, so fill never enters the statistics and comes
out as nodata. The product's per-band linear scale and offset to reflectance (Landsat L2
SR 2.75e-05 x DN - 0.2; Sentinel-2 (DN + BOA_ADD_OFFSET) / 10000 from baseline 04.00) are
recorded in the VRT (GDAL band Scale/Offset: `gdalinfo` shows them) but not applied: the
pipeline's per-band percentile stretch maps the 2nd and 98th percentile of each band to 0
and 1, and a linear map with a positive scale moves a band's values and its percentiles
alike, so the stretched result is the same number for raw DN and for reflectance. Only
with `--scale fixed` (min/max given) does it matter: give them in the product's DN.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import tempfile
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from xml.etree import ElementTree
from xml.sax.saxutils import escape

import rasterio
import rasterio.errors
import rasterio.shutil

from pipeline.errors import ConfigError, InputError

__all__ = [
    "Band",
    "ResolvedInput",
    "gdal_path",
    "is_remote",
    "landsat_bands",
    "resolve_input",
    "sentinel2_bands",
    "stac_bands",
    "write_stack_vrt",
]

RGB = ("red", "green", "blue")
REMOTE_PREFIXES = ("http://", "https://", "s3://", "gs://", "az://", "/vsi")
#: URL scheme -> GDAL virtual file system (rasterio maps the same ones)
_VSI = {"http": "/vsicurl/", "https": "/vsicurl/", "s3": "/vsis3/", "gs": "/vsigs/",
        "az": "/vsiaz/"}


@dataclass(frozen=True)
class Band:
    """One band of the stack: `path` (a GDAL path) and `band` in it, with what the
    product's metadata says about it."""

    name: str  # the asset / product band name, e.g. "B04", "SR_B4", "red"
    path: str
    band: int = 1
    common_name: str = ""
    nodata: float | None = None
    scale: float | None = None
    offset: float | None = None


@dataclass
class ResolvedInput:
    """INPUT as the pipeline reads it: `path`, a local raster (the input itself or a VRT
    made here); `source` what the user gave; `description` the line printed."""

    source: str
    path: Path
    kind: str  # "raster" | "remote" | "stac" | "landsat" | "sentinel2"
    description: str = ""
    acquired: datetime | None = None
    bands: list[Band] = field(default_factory=list)


def is_remote(text: str) -> bool:
    """A URL or GDAL virtual-file-system path, read in place (not a local file)."""
    return str(text).startswith(REMOTE_PREFIXES)


def gdal_path(text: str) -> str:
    """`https://h/x.tif` -> `/vsicurl/https://h/x.tif`, `s3://b/k` -> `/vsis3/b/k`;
    a `/vsi...` path or a local path unchanged."""
    scheme, sep, rest = str(text).partition("://")
    if not sep or scheme not in _VSI:
        return str(text)
    return _VSI[scheme] + (text if scheme in ("http", "https") else rest)


def parse_assets(text: str | None) -> tuple[str, str, str] | None:
    """`--assets red,green,blue` -> three names (R, G, B order)."""
    if text is None:
        return None
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    if len(names) != 3:
        raise ConfigError(f"--assets needs exactly 3 names, got {len(names)}",
                          path="--assets", hint="give the R,G,B assets (or product bands), "
                          "e.g. --assets B04,B03,B02")
    return names  # type: ignore[return-value]


# ---------------------------------------------------------------- the VRT


def _source_facts(band: Band) -> dict[str, Any]:
    try:
        with rasterio.open(band.path) as ds:
            if not 1 <= band.band <= ds.count:
                raise InputError(f"asset {band.name} has {ds.count} band(s), band "
                                 f"{band.band} asked", path=band.path,
                                 hint="check the eo:bands / bands list of the asset")
            return {"crs": ds.crs, "transform": ds.transform, "width": ds.width,
                    "height": ds.height, "dtype": ds.dtypes[band.band - 1],
                    "nodata": ds.nodatavals[band.band - 1],
                    "block": ds.block_shapes[band.band - 1]}
    except rasterio.errors.RasterioIOError as exc:
        raise InputError(f"cannot open asset {band.name} ({str(exc).splitlines()[0]})",
                         path=band.path,
                         hint="check the file is there (a remote one: the URL, credentials "
                         "and network; docs/data_sources.md)") from None


def _check_same_grid(bands: Sequence[Band], facts: Sequence[Mapping[str, Any]]) -> None:
    """Stacked bands must share CRS, pixel size, grid and dtype: the VRT does not warp."""
    first = facts[0]
    for band, f in zip(bands[1:], facts[1:], strict=True):
        if f["crs"] != first["crs"]:
            raise InputError(
                f"assets {bands[0].name} and {band.name} have different CRS "
                f"({first['crs']} vs {f['crs']})", path=band.path,
                hint="pick assets in one CRS with --assets, or warp them onto one grid "
                "first (gdalwarp -t_srs ...)")
        if (f["transform"], f["width"], f["height"]) != (
                first["transform"], first["width"], first["height"]):
            res = (abs(first["transform"].a), abs(f["transform"].a))
            raise InputError(
                f"assets {bands[0].name} and {band.name} are not on the same pixel grid "
                f"(resolution {res[0]:g} vs {res[1]:g}, size {first['width']}x"
                f"{first['height']} vs {f['width']}x{f['height']})", path=band.path,
                hint="pick assets of one resolution with --assets (e.g. the 10 m bands), "
                "or resample them onto one grid first (gdalwarp -tr ... -te ...)")
        if f["dtype"] != first["dtype"]:
            raise InputError(
                f"assets {bands[0].name} and {band.name} have different data types "
                f"({first['dtype']} vs {f['dtype']})", path=band.path,
                hint="pick assets of one data type with --assets")


_GDAL_TYPES = {"uint8": "Byte", "uint16": "UInt16", "int16": "Int16", "uint32": "UInt32",
               "int32": "Int32", "float32": "Float32", "float64": "Float64"}


def _band_xml(i: int, band: Band, f: Mapping[str, Any], gdal_type: str) -> str:
    nodata = band.nodata if band.nodata is not None else f["nodata"]
    block_y, block_x = f["block"]
    common = band.common_name or ""
    parts = [f'  <VRTRasterBand dataType="{gdal_type}" band="{i}">']
    parts.append(f"    <Description>{escape(f'{common} ({band.name})' if common else band.name)}"
                 "</Description>")
    if common in RGB:
        parts.append(f"    <ColorInterp>{common.capitalize()}</ColorInterp>")
    if nodata is not None:
        parts.append(f"    <NoDataValue>{nodata!r}</NoDataValue>")
    if band.scale is not None:
        parts.append(f"    <Offset>{band.offset or 0.0!r}</Offset>")
        parts.append(f"    <Scale>{band.scale!r}</Scale>")
    w, h = f["width"], f["height"]
    parts += [
        "    <SimpleSource>",
        f'      <SourceFilename relativeToVRT="0">{escape(band.path)}</SourceFilename>',
        f"      <SourceBand>{band.band}</SourceBand>",
        f'      <SourceProperties RasterXSize="{w}" RasterYSize="{h}" '
        f'DataType="{gdal_type}" BlockXSize="{block_x}" BlockYSize="{block_y}"/>',
        f'      <SrcRect xOff="0" yOff="0" xSize="{w}" ySize="{h}"/>',
        f'      <DstRect xOff="0" yOff="0" xSize="{w}" ySize="{h}"/>',
        "    </SimpleSource>",
        "  </VRTRasterBand>",
    ]
    return "\n".join(parts)


def write_stack_vrt(bands: Sequence[Band], path: Path) -> Path:
    """A VRT at `path` stacking `bands` in order (each a reference, nothing copied), with
    the product's nodata and scale/offset; InputError if they are not on one grid."""
    facts = [_source_facts(b) for b in bands]
    _check_same_grid(bands, facts)
    first = facts[0]
    gdal_type = _GDAL_TYPES.get(first["dtype"])
    if gdal_type is None:
        raise InputError(f"unsupported data type {first['dtype']}", path=bands[0].path,
                         hint="convert the bands to uint16 or float32 first")
    t = first["transform"]
    lines = [
        f'<VRTDataset rasterXSize="{first["width"]}" rasterYSize="{first["height"]}">',
        f'  <SRS dataAxisToSRSAxisMapping="1,2">{escape(first["crs"].to_wkt())}</SRS>',
        f"  <GeoTransform>{t.c!r}, {t.a!r}, {t.b!r}, {t.f!r}, {t.d!r}, {t.e!r}</GeoTransform>",
        *(_band_xml(i, b, f, gdal_type) for i, (b, f) in enumerate(zip(bands, facts,
                                                                        strict=True), 1)),
        "</VRTDataset>",
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def _describe(bands: Sequence[Band]) -> str:
    return ", ".join(f"{b.common_name or f'band {i}'}={b.name}"
                     + (f"[{b.band}]" if b.band != 1 else "")
                     for i, b in enumerate(bands, 1))


# ---------------------------------------------------------------- STAC Items


def _asset_common_names(asset: Mapping[str, Any]) -> list[str]:
    """Common name of each band of an asset: STAC 1.0 `eo:bands[].common_name` or
    STAC 1.1 `bands[].eo:common_name` ("" where a band has none)."""
    if isinstance(asset.get("eo:bands"), list):
        return [str(b.get("common_name", "")) for b in asset["eo:bands"]]
    if isinstance(asset.get("bands"), list):
        return [str(b.get("eo:common_name", b.get("common_name", ""))) for b in asset["bands"]]
    return []


def _read_stac(source: str) -> dict[str, Any]:
    import pystac

    try:
        text = pystac.StacIO.default().read_text(source)
        data = json.loads(text)
    except (OSError, ValueError) as exc:  # urllib's and file errors are OSErrors
        raise InputError(f"cannot read the STAC Item ({str(exc).splitlines()[0]})",
                         path=source, hint="check the path or URL") from None
    if not isinstance(data, dict) or data.get("type") != "Feature" or not isinstance(
            data.get("assets"), dict):
        raise InputError("is JSON but not a STAC Item (a Feature with assets)", path=source,
                         hint="give a STAC Item; for a Collection, pick one of its Items")
    return data


def _asset_href(href: str, source: str) -> str:
    """An asset href made absolute against the Item's own location, as a GDAL path."""
    if is_remote(href) or Path(href).is_absolute():
        return gdal_path(href)
    if is_remote(source):
        from urllib.parse import urljoin

        return gdal_path(urljoin(source, href))
    return str((Path(source).resolve().parent / href).resolve())


def stac_bands(item: Mapping[str, Any], source: str,
               assets: Sequence[str] | None = None) -> tuple[list[Band], str]:
    """(R, G, B bands, how they were chosen) of a STAC Item dict."""
    table = item["assets"]
    if assets is not None:
        missing = [a for a in assets if a not in table]
        if missing:
            raise InputError(f"the Item has no asset {', '.join(missing)}", path=source,
                             hint=f"its assets: {', '.join(sorted(table))}")
        chosen = [Band(a, _asset_href(table[a]["href"], source), 1,
                       (_asset_common_names(table[a]) or [""])[0]) for a in assets]
        return chosen, "--assets"
    found: dict[str, Band] = {}
    for key, asset in table.items():
        for i, name in enumerate(_asset_common_names(asset), 1):
            if name in RGB and name not in found:
                found[name] = Band(key, _asset_href(asset["href"], source), i, name)
    if all(c in found for c in RGB):
        return [found[c] for c in RGB], "eo:bands common names"
    if "visual" in table:
        href = _asset_href(table["visual"]["href"], source)
        return [Band("visual", href, i, c) for i, c in enumerate(RGB, 1)], "the visual asset"
    raise InputError(
        "no red, green and blue assets found (no eo:bands / bands common names, no "
        "visual asset)", path=source,
        hint=f"name three with --assets R,G,B; the Item's assets: {', '.join(sorted(table))}")


def _stac_datetime(item: Mapping[str, Any]) -> datetime | None:
    from pystac.utils import str_to_datetime

    props = item.get("properties", {})
    text = props.get("datetime") or props.get("start_datetime")
    try:
        return str_to_datetime(text) if text else None
    except ValueError:
        return None


# ---------------------------------------------------------------- Landsat Collection 2


def parse_mtl_text(text: str) -> dict[str, dict[str, str]]:
    """Landsat MTL (ODL text): {group: {key: value}} with quotes removed (the innermost
    group: `LEVEL2_SURFACE_REFLECTANCE_PARAMETERS`, `PRODUCT_CONTENTS`...)."""
    groups: dict[str, dict[str, str]] = {}
    stack: list[str] = []
    for line in text.splitlines():
        key, sep, value = (s.strip() for s in line.partition("="))
        if not sep:
            continue
        if key == "GROUP":
            stack.append(value)
        elif key == "END_GROUP":
            if stack:
                stack.pop()
        elif stack:
            groups.setdefault(stack[-1], {})[key] = value.strip('"')
    return groups


def parse_mtl_xml(text: str) -> dict[str, dict[str, str]]:
    """Landsat MTL (XML): the same {group: {key: value}} as parse_mtl_text."""
    root = ElementTree.fromstring(text)
    return {g.tag: {k.tag: (k.text or "").strip() for k in g} for g in root}


#: Landsat 8/9 OLI: B4, B3, B2; Landsat 4-5 TM and 7 ETM+: B3, B2, B1
_LANDSAT_RGB = {"8": (4, 3, 2), "9": (4, 3, 2)}
_LANDSAT_OLD_RGB = (3, 2, 1)


def _landsat_scaling(mtl: Mapping[str, Mapping[str, str]], level2: bool,
                     n: int) -> tuple[float | None, float | None]:
    group = ("LEVEL2_SURFACE_REFLECTANCE_PARAMETERS" if level2
             else "LEVEL1_RADIOMETRIC_RESCALING")
    g = mtl.get(group, {})
    try:
        return float(g[f"REFLECTANCE_MULT_BAND_{n}"]), float(g[f"REFLECTANCE_ADD_BAND_{n}"])
    except (KeyError, ValueError):
        return None, None


def _landsat_file(folder: Path, contents: Mapping[str, str], n: int, level2: bool) -> Path:
    name = contents.get(f"FILE_NAME_BAND_{n}")
    if name:
        return folder / name
    pattern = f"*_SR_B{n}.TIF" if level2 else f"*_B{n}.TIF"
    found = sorted(folder.glob(pattern))
    if not found:
        raise InputError(f"no file for band {n} ({pattern})", path=folder,
                         hint="the product folder is incomplete: download its band files")
    return found[0]


def landsat_bands(mtl_path: Path, names: Sequence[str] | None = None
                  ) -> tuple[list[Band], str, datetime | None]:
    """(R, G, B bands, description, acquisition time) of a Landsat C2 L1/L2 product."""
    text = mtl_path.read_text(errors="replace")
    mtl = parse_mtl_xml(text) if text.lstrip().startswith("<") else parse_mtl_text(text)
    contents = mtl.get("PRODUCT_CONTENTS", {})
    attrs = mtl.get("IMAGE_ATTRIBUTES", {})
    level = contents.get("PROCESSING_LEVEL", "")
    level2 = level.startswith("L2") or any(
        v.endswith(tuple(f"_SR_B{n}.TIF" for n in range(1, 8))) for v in contents.values())
    sat = attrs.get("SPACECRAFT_ID", "").removeprefix("LANDSAT_")
    numbers = (_LANDSAT_RGB.get(sat, _LANDSAT_OLD_RGB) if names is None
               else tuple(_landsat_band_number(n, mtl_path) for n in names))
    bands = []
    for n, common in zip(numbers, RGB if names is None else ("",) * 3, strict=True):
        scale, offset = _landsat_scaling(mtl, level2, n)
        path = _landsat_file(mtl_path.parent, contents, n, level2)
        if not path.is_file():
            raise InputError(f"band file {path.name} named in the MTL is missing",
                             path=path.parent, hint="download the product's band files")
        name = f"SR_B{n}" if level2 else f"B{n}"
        bands.append(Band(name, str(path), 1, common, nodata=0.0, scale=scale, offset=offset))
    product = contents.get("LANDSAT_PRODUCT_ID", mtl_path.stem.removesuffix("_MTL"))
    what = "surface reflectance" if level2 else "TOA reflectance"
    s = bands[0]
    scaling = (f"{what} = {s.scale:g} x DN {s.offset:+g}, " if s.scale is not None else "")
    desc = (f"Landsat {sat or '?'} {level or ('L2' if level2 else 'L1')} product {product}: "
            f"{_describe(bands)} ({scaling}fill 0 -> nodata)")
    return bands, desc, _landsat_datetime(attrs)


def _band_match(pattern: str, name: str, where: Path, product: str, hint: str) -> str:
    """The band number part of an --assets name of a product, or a ConfigError."""
    match = re.fullmatch(pattern, name.strip(), flags=re.IGNORECASE)
    if not match:
        raise ConfigError(f"--assets {name!r} is not a {product} band", path=str(where),
                          hint=hint)
    return match.group(1).upper()


def _landsat_band_number(name: str, where: Path) -> int:
    return int(_band_match(r"(?:SR_)?B?(\d{1,2})", name, where, "Landsat",
                           "name bands as B4,B3,B2 (or SR_B4,SR_B3,SR_B2)"))


def _landsat_datetime(attrs: Mapping[str, str]) -> datetime | None:
    day, time = attrs.get("DATE_ACQUIRED"), attrs.get("SCENE_CENTER_TIME", "00:00:00Z")
    if not day:
        return None
    time = re.sub(r"(\.\d{6})\d*", r"\1", time.strip('"'))  # microseconds at most
    try:
        return datetime.fromisoformat(f"{day}T{time.replace('Z', '+00:00')}")
    except ValueError:
        return None


# ---------------------------------------------------------------- Sentinel-2 SAFE


_S2_RGB = ("B04", "B03", "B02")
#: band_id of the product metadata (BOA_ADD_OFFSET band_id="3" is B04): B8A sits at 8
_S2_BAND_IDS = {name: i for i, name in enumerate(
    ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11",
     "B12"))}


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _find_text(root: ElementTree.Element, name: str) -> str | None:
    for el in root.iter():
        if _local(el.tag) == name and el.text:
            return el.text.strip()
    return None


def _s2_offsets(root: ElementTree.Element) -> dict[int, float]:
    """band_id -> additive offset (BOA_ADD_OFFSET for L2A, RADIO_ADD_OFFSET for L1C;
    present from processing baseline 04.00)."""
    offsets = {}
    for el in root.iter():
        if _local(el.tag) in ("BOA_ADD_OFFSET", "RADIO_ADD_OFFSET") and el.text:
            offsets[int(el.get("band_id", "-1"))] = float(el.text)
    return offsets


class _Safe:
    """A SAFE product as a folder or a zip: its member names and how to read them."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.zip = path.suffix.lower() == ".zip"
        if self.zip:
            try:
                with zipfile.ZipFile(path) as zf:
                    self.names = zf.namelist()
            except zipfile.BadZipFile:
                raise InputError("not a readable zip", path=path,
                                 hint="re-download the product") from None
        else:
            self.names = [p.relative_to(path).as_posix() for p in path.rglob("*")]

    def read(self, name: str) -> bytes:
        if self.zip:
            with zipfile.ZipFile(self.path) as zf:
                return zf.read(name)
        return (self.path / name).read_bytes()

    def gdal(self, name: str) -> str:
        return f"/vsizip/{self.path.resolve()}/{name}" if self.zip else str(self.path / name)

    def metadata_name(self) -> str | None:
        found = [n for n in self.names if re.search(r"(^|/)MTD_MSIL(1C|2A)\.xml$", n)]
        return min(found, key=len) if found else None


def _s2_band_file(safe: _Safe, band: str) -> str:
    """The JP2 of `band` at its finest resolution (L2A has R10m/R20m/R60m; L1C one file)."""
    pattern = re.compile(rf"GRANULE/[^/]+/IMG_DATA/(R\d+m/)?[^/]*_{band}(_(\d+)m)?\.jp2$")
    matches = [(m, n) for n in safe.names if (m := pattern.search(n))]
    found = [n for m, n in sorted(matches, key=lambda mn: (int(mn[0].group(3) or 0), mn[1]))]
    if not found:
        raise InputError(f"no {band} image in GRANULE/*/IMG_DATA", path=safe.path,
                         hint="the SAFE product is incomplete: re-download it")
    granules = {n.split("GRANULE/")[1].split("/")[0] for n in found}  # 1 since 2016
    if len(granules) > 1:
        raise InputError(f"{len(granules)} granules in one product", path=safe.path,
                         hint="give the granule's band files as a VRT "
                         "(gdalbuildvrt -separate) or a STAC Item")
    return found[0]


def sentinel2_bands(path: Path, names: Sequence[str] | None = None
                    ) -> tuple[list[Band], str, datetime | None]:
    """(R, G, B bands, description, acquisition time) of a Sentinel-2 SAFE folder/zip."""
    safe = _Safe(path)
    mtd = safe.metadata_name()
    if mtd is None:
        raise InputError("no MTD_MSIL1C.xml / MTD_MSIL2A.xml in the SAFE product", path=path,
                         hint="give the product's .SAFE folder or its zip, complete")
    root = ElementTree.fromstring(safe.read(mtd))
    level = "L2A" if mtd.endswith("MTD_MSIL2A.xml") else "L1C"
    quant = _find_text(root, "BOA_QUANTIFICATION_VALUE" if level == "L2A"
                       else "QUANTIFICATION_VALUE")
    q = float(quant) if quant else 10000.0
    offsets = _s2_offsets(root)
    baseline = _find_text(root, "PROCESSING_BASELINE") or "?"
    wanted = _S2_RGB if names is None else tuple(_s2_band_name(n, path) for n in names)
    bands = []
    for band, common in zip(wanted, RGB if names is None else ("",) * 3, strict=True):
        offset = offsets.get(_S2_BAND_IDS.get(band, -1), 0.0)
        bands.append(Band(band, safe.gdal(_s2_band_file(safe, band)), 1, common,
                          nodata=0.0, scale=1.0 / q, offset=offset / q))
    product = _find_text(root, "PRODUCT_URI") or path.name
    what = "BOA" if level == "L2A" else "TOA"
    desc = (f"Sentinel-2 {level} product {product} (baseline {baseline}): {_describe(bands)} "
            f"({what} reflectance = (DN {offsets.get(3, 0.0):+g}) / {q:g}, 0 -> nodata)")
    start = _find_text(root, "PRODUCT_START_TIME") or _find_text(root, "DATATAKE_SENSING_START")
    return bands, desc, _iso(start)


def _s2_band_name(name: str, where: Path) -> str:
    digits = _band_match(r"B?(\d{1,2}|8A)", name, where, "Sentinel-2",
                         "name bands as B04,B03,B02 (or B08, B8A...)")
    return "B8A" if digits == "8A" else f"B{int(digits):02d}"


def _iso(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


# ---------------------------------------------------------------- recognising INPUT


def _landsat_mtl(path: Path) -> Path | None:
    if path.is_file() and re.search(r"_MTL\.(txt|xml)$", path.name, re.IGNORECASE):
        return path
    if path.is_dir():
        found = sorted(path.glob("*_MTL.txt")) or sorted(path.glob("*_MTL.xml"))
        return found[0] if found else None
    return None


def _is_safe(path: Path) -> bool:
    if path.is_dir():
        return path.suffix.upper() == ".SAFE" or any(path.glob("MTD_MSIL[12][CA].xml"))
    return path.is_file() and path.suffix.lower() == ".zip" and bool(
        re.search(r"MSIL(1C|2A)", path.name))


def product_kind(source: str) -> str:
    """What INPUT is: "remote", "stac", "landsat", "sentinel2", "directory" or "raster"
    (a local file, or a path that does not exist: the raster checks report it)."""
    if is_remote(source):
        # a static Item (x.json) or a STAC API Item (.../collections/C/items/ID)
        url = source.split("?")[0]
        return "stac" if url.lower().endswith(".json") or "/items/" in url else "remote"
    path = Path(source)
    if path.is_file() and path.suffix.lower() == ".json":
        return "stac"
    if _landsat_mtl(path) is not None:
        return "landsat"
    if _is_safe(path):
        return "sentinel2"
    return "directory" if path.is_dir() else "raster"


def _safe_stem(text: str) -> str:
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(text.rstrip("/").split("?")[0]).name)
    for suffix in (".json", ".SAFE", ".zip", ".tif", ".TIF", ".tiff", "_MTL.txt", "_MTL.xml"):
        stem = stem.removesuffix(suffix)
    return stem or "input"


def _resolve_bands(source: str, kind: str, assets: Sequence[str] | None
                   ) -> tuple[list[Band], str, datetime | None, str]:
    """(bands, description, acquisition time, VRT stem) of a STAC Item or product."""
    if kind == "stac":
        item = _read_stac(source)
        bands, how = stac_bands(item, source, assets)
        desc = f"STAC Item {item.get('id', '?')}: {_describe(bands)} (by {how})"
        return bands, desc, _stac_datetime(item), _safe_stem(str(item.get("id") or source))
    path = Path(source)
    if kind == "landsat":
        mtl = _landsat_mtl(path) or path  # product_kind found it
        bands, desc, when = landsat_bands(mtl, assets)
        return bands, desc, when, mtl.name.rsplit("_MTL", 1)[0]
    bands, desc, when = sentinel2_bands(path, assets)
    return bands, desc, when, _safe_stem(path.name)


@contextlib.contextmanager
def resolve_input(source: str, *, assets: Sequence[str] | None = None,
                  bands_given: bool = False) -> Iterator[ResolvedInput]:
    """INPUT -> a ResolvedInput whose `path` the pipeline opens; a VRT made here lives in a
    temporary directory until the `with` ends. A local raster or directory is passed
    through untouched. `bands_given`: the user passed --bands (refused for a stack made
    here, whose bands are already R, G, B: --assets chooses them)."""
    kind = product_kind(source)
    if kind in ("raster", "directory"):
        if assets is not None:
            raise ConfigError("--assets applies to a STAC Item or a Landsat/Sentinel-2 "
                              "product", path=source, hint="use --bands for a raster file")
        yield ResolvedInput(source, Path(source), kind)
        return
    tmp = Path(tempfile.mkdtemp(prefix="eo2sar-input-"))
    try:
        if kind == "remote":
            yield _remote(source, tmp, assets)
            return
        if bands_given:
            raise ConfigError("--bands selects bands of a raster file", path=source,
                              hint="for a STAC Item or a product, name them with --assets")
        bands, desc, when, stem = _resolve_bands(source, kind, assets)
        vrt = write_stack_vrt(bands, tmp / f"{stem}.vrt")
        yield ResolvedInput(source, vrt, kind, desc, when, bands)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _remote(source: str, tmp: Path, assets: Sequence[str] | None) -> ResolvedInput:
    """A remote raster wrapped in a VRT (GDAL CreateCopy to VRT: references, no pixels)."""
    if assets is not None:
        raise ConfigError("--assets applies to a STAC Item or a product", path=source,
                          hint="use --bands for a raster file")
    vsi = gdal_path(source)
    vrt = tmp / f"{_safe_stem(source)}.vrt"
    try:
        with rasterio.open(vsi) as ds:
            rasterio.shutil.copy(ds, vrt, driver="VRT")
            desc = (f"remote raster {source}: read in place through {vsi.split('/')[1]}, "
                    f"{ds.width} x {ds.height} px, {ds.count} band(s)")
    except rasterio.errors.RasterioIOError as exc:
        raise InputError(f"cannot open the remote raster ({str(exc).splitlines()[0]})",
                         path=source,
                         hint="check the URL, the credentials (AWS_*, GDAL_HTTP_*) and the "
                         "network; docs/data_sources.md") from None
    return ResolvedInput(source, vrt, "remote", desc)

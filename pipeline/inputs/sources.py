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
pixel is copied. For a multispectral model (`names`: the common names its contract lists,
pipeline/run/model_io.py) the product's bands are found BY NAME instead and stacked in the
model's order (SAFE band ids, the MTL's sensor table, an Item's common names or asset
keys, a band folder's file names; pipeline/inputs/bandnames.py). A VRT because the whole
pipeline (checks, radiometry, Dask workers in other processes) opens a local path; for a
remote raster it also keeps the URL's `//`, which a pathlib.Path would fold. Workers of a
remote Dask cluster must see the temporary directory (set TMPDIR to shared storage) or be
given a local raster.

Radiometry of products (docs/data_sources.md): the fill value (0 for Landsat C2 and
Sentinel-2) is set as each band's nodata, so fill never enters the statistics and comes
out as nodata. The product's per-band linear scale and offset to reflectance (Landsat L2
SR 2.75e-05 x DN - 0.2; Sentinel-2 (DN + BOA_ADD_OFFSET) / 10000 from baseline 04.00) are
recorded in the VRT (GDAL band Scale/Offset: `gdalinfo` shows them) but not applied: the
pipeline's per-band percentile stretch maps the 2nd and 98th percentile of each band to 0
and 1, and a linear map with a positive scale moves a band's values and its percentiles
alike, so the stretched result is the same number for raw DN and for reflectance. Only
with `--scale fixed` (min/max given) does it matter: give them in the product's DN. A
model trained on reflectance (scale "reflectance") uses them: that is why they are kept.
"""

from __future__ import annotations

import contextlib
import json
import math
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

from pipeline.errors import ConfigError, InputError, brief
from pipeline.urls import http_timeout, network_defaults, redact_url

__all__ = [
    "Band",
    "ResolvedInput",
    "gdal_path",
    "is_remote",
    "is_sentinel2_product",
    "join_url",
    "landsat_mtl",
    "landsat_bands",
    "read_stac_bytes",
    "resolve_input",
    "sentinel2_bands",
    "sentinel2_granules",
    "stac_bands",
    "write_stack_vrt",
]

RGB = ("red", "green", "blue")
REMOTE_PREFIXES = ("http://", "https://", "s3://", "gs://", "az://", "/vsi")
#: URL scheme -> GDAL virtual file system (rasterio maps the same ones)
_VSI = {"http": "/vsicurl/", "https": "/vsicurl/", "s3": "/vsis3/", "gs": "/vsigs/",
        "az": "/vsiaz/"}
#: GDAL drivers a remote raster may be read with: self-contained formats. A VRT (or an
#: ERS/ENVI header, a GDAL tile index...) names further files, and one served by a
#: stranger could name local files that GDAL would then read into the output
REMOTE_DRIVERS = frozenset({"GTiff", "JP2OpenJPEG", "JPEG", "PNG", "WEBP"})
#: URL schemes an asset of an Item fetched from a URL may have (after resolving a
#: relative href against the Item's URL): URLs only, never a local file or /vsi chain
REMOTE_ASSET_SCHEMES = ("http", "https", "s3", "gs", "az")
#: bytes a STAC Item may have (real ones are a few KB, STAC API Items tens of KB)
MAX_ITEM_BYTES = 8 * 2**20
#: bytes of a product's metadata file read (Sentinel-2 MTD_MSIL2A.xml ~60 KB, Landsat
#: MTL ~15 KB): checked against the zip's declared size and by a bounded read, so a zip
#: bomb's metadata (1 MB inflating to 1 GiB) is refused without being inflated
MAX_METADATA_BYTES = 16 * 2**20
#: characters of a name taken from an input (an Item id) used in a file name
_MAX_STEM = 100


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


#: GDAL virtual file systems that read over the network (a chain such as
#: /vsizip//vsicurl/... reads over the network too)
_NETWORK_VSI = ("/vsicurl", "/vsis3", "/vsigs", "/vsiaz", "/vsiadls", "/vsioss", "/vsiswift",
                "/vsiwebhdfs", "/vsihdfs")


def is_network(text: str) -> bool:
    """Read over the network: a URL, or a GDAL path through a network file system."""
    text = str(text)
    return "://" in text.split("/vsi", 1)[0] or any(v in text for v in _NETWORK_VSI)


def gdal_path(text: str) -> str:
    """`https://h/x.tif` -> `/vsicurl/https://h/x.tif`, `s3://b/k` -> `/vsis3/b/k`;
    a `/vsi...` path or a local path unchanged. An S3 bucket that is not a valid bucket
    name is an InputError (pipeline/inputs/s3.py `check_s3_path`: GDAL would sign a
    request to the host it names)."""
    from pipeline.inputs.s3 import check_s3_path

    check_s3_path(text)
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


def check_remote_dataset(ds: Any, label: str) -> None:
    """Refuse a remote dataset (opened from a /vsi... path) that is not a self-contained
    raster: a VRT and friends name other files, and GDAL resolves them on this machine
    (`<SourceFilename>/home/you/secret.tif`), so a stranger's server could make the run
    read local files into its output. Checked after the open (rasterio takes one allowed
    driver at most), before any pixel is read: opening a VRT opens its sources, raw bands
    included, but reads none of their pixels. GDAL_VRT_ENABLE_RAWRASTERBAND=NO would be a
    second guard, but the wheel's GDAL 3.10 ignores it (a build option there)."""
    local = [f for f in ds.files if not is_network(f)]
    if ds.driver not in REMOTE_DRIVERS or local:
        what = (f"names local files ({brief(local[0])})" if ds.driver in REMOTE_DRIVERS
                else f"is a {ds.driver} dataset")
        raise InputError(
            f"refused: the remote raster {what}; a remote input must be a self-contained "
            f"raster ({', '.join(sorted(REMOTE_DRIVERS))}), since a VRT or header file "
            "served by someone else could make GDAL read files of this machine",
            path=label, hint="download it, check what it refers to, and give the local "
            "file")


#: the allowed driver tried first for a file name's suffix (then the others)
_SUFFIX_DRIVER = {".tif": "GTiff", ".tiff": "GTiff", ".jp2": "JP2OpenJPEG", ".png": "PNG",
                  ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP"}


def open_self_contained(path: str, label: str | None = None) -> Any:
    """`path` (a band file of a product, a zip member, an Item's asset, a remote raster)
    opened by one of REMOTE_DRIVERS only, each tried in turn (rasterio restricts GDAL to
    the one driver it names). GDAL picks a format by content, not by name: a `B04.jp2`
    that is a VRT would otherwise be opened as one, its sources with it (a private local
    raster read into the output, a raw band reading ~/.ssh/id_rsa, a `/vsis3/` source
    signed for a host the file names) before a check after the open could refuse it.
    Refused (InputError) when none of them recognises the file; other failures (missing,
    truncated, a 404) raise the RasterioIOError of the driver its suffix suggests."""
    import posixpath

    first = _SUFFIX_DRIVER.get(posixpath.splitext(str(path).split("?")[0])[1].lower(),
                               "GTiff")
    errors: dict[str, rasterio.errors.RasterioIOError] = {}
    for driver in (first, *sorted(REMOTE_DRIVERS - {first})):
        try:
            return rasterio.open(path, driver=driver)
        except rasterio.errors.RasterioIOError as exc:
            errors[driver] = exc
            if "not recognized as" not in str(exc):
                break  # missing, unreachable, timed out: no other driver will do better
    if all("not recognized as" in str(e) for e in errors.values()):
        remote = is_network(path)
        where = "the remote raster" if remote else "a file inside a product"
        raise InputError(
            f"refused: {'it' if remote else 'the file'} is not a raster of a "
            f"self-contained format; {where} must be a self-contained raster "
            f"({', '.join(sorted(REMOTE_DRIVERS))}), since a VRT or header file handed over "
            "by someone else could make GDAL read files of this machine (or send its "
            "credentials elsewhere)", path=label or path,
            hint="if the file is a VRT of yours, give the VRT itself as INPUT" if not remote
            else "download it, check what it refers to, and give the local file")
    raise errors[first] if "not recognized as" not in str(errors[first]) else next(
        e for e in errors.values() if "not recognized as" not in str(e))


def check_contained(ds: Any, label: str) -> None:
    """Refuse a product's band file (opened by `open_self_contained`) that brings in files
    from outside its own folder: GDAL's side-cars (`x.tif.ovr`, `.msk`, `.aux.xml`) are
    read from beside it, by the path as given (a symlinked band folder is judged where
    the product put it)."""
    import posixpath

    folder = posixpath.dirname(str(ds.name))
    outside = [f for f in ds.files if posixpath.dirname(str(f)) != folder]
    if outside:
        raise InputError(f"refused: the file brings in {brief(outside[0])}, outside its "
                         "folder; a file inside a product must be a self-contained raster",
                         path=label, hint="check the product's files")


def _network_hint(gdal_message: str) -> str:
    """The hint of a remote read that failed; a timeout names the settings to raise."""
    if "timed out" in gdal_message.lower() or "timeout" in gdal_message.lower():
        return ("the server did not answer in time: check the URL and the network; for a "
                "slow server raise GDAL_HTTP_TIMEOUT / GDAL_HTTP_CONNECTTIMEOUT "
                "(docs/data_sources.md)")
    return ("check the URL, the credentials (AWS_*, GDAL_HTTP_*) and the network; "
            "docs/data_sources.md")


def _source_facts(band: Band) -> dict[str, Any]:
    try:
        with open_self_contained(band.path) as ds:
            if is_network(band.path):
                check_remote_dataset(ds, band.path)
            else:
                check_contained(ds, band.path)
            if not 1 <= band.band <= ds.count:
                raise InputError(f"asset {band.name} has {ds.count} band(s), band "
                                 f"{band.band} asked", path=band.path,
                                 hint="check the eo:bands / bands list of the asset")
            return {"crs": ds.crs, "transform": ds.transform, "width": ds.width,
                    "height": ds.height, "dtype": ds.dtypes[band.band - 1],
                    "nodata": ds.nodatavals[band.band - 1],
                    "block": ds.block_shapes[band.band - 1]}
    except rasterio.errors.RasterioIOError as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(f"cannot open asset {_short(band.name)} ({first})", path=band.path,
                         hint="check the file is there" + (
                             f" ({_network_hint(first)})" if is_network(band.path) else "")
                         ) from None


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
    return ", ".join(f"{_short(b.common_name) or f'band {i}'}={_short(b.name)}"
                     + (f"[{b.band}]" if b.band != 1 else "")
                     for i, b in enumerate(bands, 1))


# ---------------------------------------------------------------- STAC Items


def _asset_common_names(asset: Mapping[str, Any]) -> list[str]:
    """Common name of each band of an asset: STAC 1.0 `eo:bands[].common_name` or
    STAC 1.1 `bands[].eo:common_name` ("" where a band has none). The lists were checked
    to hold mappings (`_check_item`)."""
    if isinstance(asset.get("eo:bands"), list):
        return [str(b.get("common_name", "")) for b in asset["eo:bands"]]
    if isinstance(asset.get("bands"), list):
        return [str(b.get("eo:common_name", b.get("common_name", ""))) for b in asset["bands"]]
    return []


def _http_get(url: str, limit: int, headers: Mapping[str, str] | None = None) -> bytes:
    """The body of `url` (http/https), at most `limit` bytes, within http_timeout()
    seconds overall: pystac's reader (urllib without a timeout) waits forever on a server
    that accepts the connection and never answers, and reads a body of any size. The
    deadline holds against a server trickling bytes, and credentials never follow a
    redirect (pipeline/inputs/fetch.py)."""
    from pipeline.inputs.fetch import http_get

    return http_get(url, limit, http_timeout(), headers)


def read_stac_bytes(source: str) -> bytes:
    """The Item's bytes: a local file, an http(s) URL or an s3:// URL (signed with the
    user's AWS settings: pipeline/inputs/s3.py), with timeouts, bounded."""
    if is_remote(source):
        scheme = source.partition("://")[0].lower()
        if scheme == "s3":
            from pipeline.inputs.s3 import s3_request

            url, headers = s3_request(source)
            return _http_get(url, MAX_ITEM_BYTES, headers)
        if scheme not in ("http", "https"):
            raise InputError("a STAC Item is read from a local file, an http(s):// or an "
                             "s3:// URL", path=source, hint="download it first (gcloud "
                             "storage cp, azcopy) and give the local file")
        return _http_get(source, MAX_ITEM_BYTES)
    with open(source, "rb") as f:
        data = f.read(MAX_ITEM_BYTES + 1)
    if len(data) > MAX_ITEM_BYTES:
        raise InputError(f"the STAC Item is larger than {MAX_ITEM_BYTES // 2**20} MiB",
                         path=source, hint="is this file a STAC Item?")
    return data


def _read_stac(source: str) -> dict[str, Any]:
    import urllib.error

    try:
        data = json.loads(read_stac_bytes(source))
    except TimeoutError as exc:  # socket.timeout is TimeoutError since Python 3.10
        raise InputError(f"cannot read the STAC Item: no answer within {http_timeout():g} s "
                         f"({exc})", path=source,
                         hint="check the URL and the network; a slow server: raise "
                         "GDAL_HTTP_TIMEOUT (docs/data_sources.md)") from None
    except urllib.error.URLError as exc:
        reason = getattr(exc, "reason", exc)
        if isinstance(reason, TimeoutError):
            raise InputError(f"cannot read the STAC Item: no connection within "
                             f"{http_timeout():g} s", path=source,
                             hint="check the URL and the network; raise GDAL_HTTP_TIMEOUT "
                             "for a slow server (docs/data_sources.md)") from None
        raise InputError(f"cannot read the STAC Item ({_short(str(exc), 200)})", path=source,
                         hint="check the path or URL") from None
    except RecursionError:
        raise InputError("is not a STAC Item: its JSON is nested too deeply to read",
                         path=source, hint="give a STAC Item") from None
    except (OSError, ValueError) as exc:  # file errors, http.client errors, bad JSON
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(f"cannot read the STAC Item ({_short(first, 200)})",
                         path=source, hint="check the path or URL") from None
    _check_item(data, source)
    return data


def _check_item(data: Any, source: str) -> None:
    """The fields of an Item this module uses have the types it uses them as: a hostile
    or broken Item (an asset that is a string, `eo:bands` of strings, properties a list)
    gets one InputError naming the field, never an AttributeError/TypeError traceback.
    Hrefs are checked where an asset is chosen (`_href_of`)."""
    if not isinstance(data, dict) or data.get("type") != "Feature" or not isinstance(
            data.get("assets"), dict):
        raise InputError("is JSON but not a STAC Item (a Feature with assets)", path=source,
                         hint="give a STAC Item; for a Collection, pick one of its Items")
    _check_fields(data, source)


def _check_fields(data: Mapping[str, Any], source: str) -> None:
    """`_check_item` without the `type`: an Item dict given to stac_bands by a caller."""
    if not isinstance(data.get("assets"), dict):
        raise InputError("malformed STAC Item: no assets object", path=source,
                         hint="give a STAC Item; for a Collection, pick one of its Items")

    def bad(field: str, what: str) -> InputError:
        return InputError(f"malformed STAC Item: {field} {what}", path=source,
                          hint="fix the Item (https://github.com/radiantearth/stac-spec)")

    for key, asset in data["assets"].items():
        if not isinstance(asset, dict):
            raise bad(f"asset {_short(key)}", f"is a {type(asset).__name__}, not an object")
        for name in ("eo:bands", "bands"):
            bands = asset.get(name)
            if bands is not None and not (isinstance(bands, list)
                                          and all(isinstance(b, dict) for b in bands)):
                raise bad(f"{name} of asset {_short(key)}", "is not a list of objects")
    props = data.get("properties")
    if props is not None and not isinstance(props, dict):
        raise bad("properties", f"is a {type(props).__name__}, not an object")
    for name in ("datetime", "start_datetime"):
        value = (props or {}).get(name)
        if value is not None and not isinstance(value, str):
            raise bad(f"properties.{name}", "is not a string")


def _href_of(table: Mapping[str, Any], key: str, source: str) -> str:
    href = table[key].get("href")
    if not isinstance(href, str) or not href.strip():
        raise InputError(f"malformed STAC Item: asset {_short(key)} has no href string "
                         f"(href: {brief(href)})", path=source,
                         hint="fix the Item, or pick other assets with --assets")
    return href


def _asset_href(href: str, source: str) -> str:
    """An asset href made absolute against the Item's own location, as a GDAL path.

    An Item read from a URL names URLs only: a relative href, or one that is an absolute
    path (`/data/x.tif`: a path on the Item's server, RFC 3986), resolves against the
    Item's URL; a `/vsi` chain, `file:` or another scheme is refused. Otherwise a server
    could point the run at files of this machine (`/vsizip//home/you/...`) and write
    their pixels into an output. A local Item may name local files and URLs."""
    if is_remote(source):
        from urllib.parse import urlsplit

        url = "" if href.startswith("/vsi") else join_url(source, href)
        if urlsplit(url).scheme.lower() not in REMOTE_ASSET_SCHEMES:
            raise InputError(
                f"refused: the Item was read from a URL and its asset href "
                f"{brief(redact_url(href))} is not a URL (an Item from the network may "
                f"only name URLs: {', '.join(s + '://' for s in REMOTE_ASSET_SCHEMES)}, or "
                "paths relative to it)", path=source,
                hint="download the Item and its files and give the local Item")
        from pipeline.inputs.fetch import check_link_target

        check_link_target(source, url, "asset names")
        return gdal_path(url)
    if is_remote(href) or Path(href).is_absolute():
        return gdal_path(href)
    return str((Path(source).resolve().parent / href).resolve())


def join_url(base: str, href: str) -> str:
    """`href` resolved against the URL `base` (urljoin; for an `s3://` base, which urljoin
    does not resolve against, a relative href is a key beside the document's)."""
    import posixpath
    from urllib.parse import urljoin

    if base.lower().startswith("s3://") and "://" not in href:
        bucket, _, key = base[5:].split("?", 1)[0].partition("/")
        joined = href.lstrip("/") if href.startswith("/") else posixpath.join(
            posixpath.dirname(key), href)
        parts: list[str] = []
        for part in joined.split("/"):  # normpath without leaving the bucket
            if part == "..":
                if parts:
                    parts.pop()
            elif part not in ("", "."):
                parts.append(part)
        return f"s3://{bucket}/{'/'.join(parts)}"
    return urljoin(base, href)


def _asset_scale(asset: Mapping[str, Any], i: int) -> tuple[float | None, float | None]:
    """(scale, offset) of band `i` (1-based) of an asset from the STAC raster extension
    (`raster:bands[].scale/offset`, STAC 1.0; `bands[].raster:scale/offset`, 1.1)."""
    for key, sk, ok in (("raster:bands", "scale", "offset"),
                        ("bands", "raster:scale", "raster:offset")):
        bands = asset.get(key)
        if isinstance(bands, list) and len(bands) >= i and isinstance(bands[i - 1], dict):
            b = bands[i - 1]
            try:
                scale = float(b[sk]) if sk in b else None
                offset = float(b.get(ok, 0.0))
            except (TypeError, ValueError):
                return None, None
            if scale is not None and scale > 0 and math.isfinite(scale) \
                    and math.isfinite(offset):
                return scale, offset
    return None, None


def stac_named_bands(item: Mapping[str, Any], source: str, names: Sequence[str]
                     ) -> tuple[list[Band], str]:
    """The bands a multispectral model names (common names, bandnames.py), in its order,
    from a STAC Item: each asset band's `eo:bands` / `bands[].eo:common_name`, else the
    asset key read as a band name (B04, red, SR_B4); each with the raster extension's
    scale/offset to reflectance when the Item gives it. A ConfigError naming both lists
    when a band is missing."""
    from pipeline.inputs.bandnames import common_name, match_bands

    _check_fields(item, source)
    table = item["assets"]
    found: list[tuple[str, int, str]] = []
    for key, asset in table.items():
        commons = _asset_common_names(asset)
        if commons:
            found += [(key, i, c) for i, c in enumerate(commons, 1) if c]
        elif (c := common_name(str(key))) is not None:
            found.append((key, 1, c))
    picked, notes = match_bands(names, [c for _, _, c in found], source)
    bands = []
    for k in picked:
        key, i, common = found[k]
        scale, offset = _asset_scale(table[key], i)
        bands.append(Band(key, _asset_href(_href_of(table, key, source), source), i, common,
                          scale=scale, offset=offset))
    how = "common names" + (f" ({'; '.join(notes)})" if notes else "")
    return bands, how


def stac_bands(item: Mapping[str, Any], source: str,
               assets: Sequence[str] | None = None) -> tuple[list[Band], str]:
    """(R, G, B bands, how they were chosen) of a STAC Item dict (checked by _check_item
    when read by this module)."""
    _check_fields(item, source)
    table = item["assets"]
    if assets is not None:
        missing = [a for a in assets if a not in table]
        if missing:
            raise InputError(f"the Item has no asset {', '.join(map(_short, missing))}",
                             path=source, hint=f"its assets: {_asset_list(table)}")
        chosen = [Band(a, _asset_href(_href_of(table, a, source), source), 1,
                       (_asset_common_names(table[a]) or [""])[0]) for a in assets]
        return chosen, "--assets"
    found: dict[str, Band] = {}
    for key, asset in table.items():
        for i, name in enumerate(_asset_common_names(asset), 1):
            if name in RGB and name not in found:
                found[name] = Band(key, _asset_href(_href_of(table, key, source), source),
                                   i, name)
    if all(c in found for c in RGB):
        return [found[c] for c in RGB], "eo:bands common names"
    if "visual" in table:
        href = _asset_href(_href_of(table, "visual", source), source)
        return [Band("visual", href, i, c) for i, c in enumerate(RGB, 1)], "the visual asset"
    raise InputError(
        "no red, green and blue assets found (no eo:bands / bands common names, no "
        "visual asset)", path=source,
        hint=f"name three with --assets R,G,B; the Item's assets: {_asset_list(table)}")


def _short(name: str, limit: int = 80) -> str:
    """A name read from an input, cut for a message (an asset key may be megabytes)."""
    name = str(name)
    return name if len(name) <= limit else f"{name[:limit - 3]}..."


def _asset_list(table: Mapping[str, Any]) -> str:
    """The asset names for a hint, bounded (an Item may hold thousands)."""
    names = sorted(map(str, table))
    shown = ", ".join(_short(n) for n in names[:30])
    return shown + (f" and {len(names) - 30} more" if len(names) > 30 else "")


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


def landsat_bands(mtl_path: Path, names: Sequence[str] | None = None, *,
                  common: Sequence[str] | None = None
                  ) -> tuple[list[Band], str, datetime | None]:
    """(R, G, B bands, description, acquisition time) of a Landsat C2 L1/L2 product;
    `names`: the --assets band names instead; `common`: the common names of a
    multispectral model's bands (the MTL's SPACECRAFT_ID picks the OLI or TM table)."""
    with mtl_path.open("rb") as f:
        raw = f.read(MAX_METADATA_BYTES + 1)
    if len(raw) > MAX_METADATA_BYTES:
        raise InputError(f"larger than {MAX_METADATA_BYTES // 2**20} MiB, not a Landsat MTL",
                         path=mtl_path, hint="re-download the product (an MTL is ~15 KB)")
    text = raw.decode("utf-8", errors="replace")
    try:
        mtl = parse_mtl_xml(text) if text.lstrip().startswith("<") else parse_mtl_text(text)
    except ElementTree.ParseError as exc:
        raise InputError(f"is not a readable MTL ({_short(str(exc), 200)})", path=mtl_path,
                         hint="re-download the product") from None
    contents = mtl.get("PRODUCT_CONTENTS", {})
    attrs = mtl.get("IMAGE_ATTRIBUTES", {})
    level = contents.get("PROCESSING_LEVEL", "")
    level2 = level.startswith("L2") or any(
        v.endswith(tuple(f"_SR_B{n}.TIF" for n in range(1, 8))) for v in contents.values())
    sat = attrs.get("SPACECRAFT_ID", "").removeprefix("LANDSAT_")
    numbers = (_LANDSAT_RGB.get(sat, _LANDSAT_OLD_RGB) if names is None
               else tuple(_landsat_band_number(n, mtl_path) for n in names))
    commons: Sequence[str] = RGB if names is None else ("",) * 3
    if common is not None and names is None:
        numbers, commons = _landsat_named(mtl_path, contents, sat, level2, common)
    bands = []
    for n, common_name in zip(numbers, commons, strict=True):
        scale, offset = _landsat_scaling(mtl, level2, n)
        path = _landsat_file(mtl_path.parent, contents, n, level2)
        if not path.is_file():
            raise InputError(f"band file {path.name} named in the MTL is missing",
                             path=path.parent, hint="download the product's band files")
        name = f"SR_B{n}" if level2 else f"B{n}"
        bands.append(Band(name, str(path), 1, common_name, nodata=0.0, scale=scale,
                          offset=offset))
    product = contents.get("LANDSAT_PRODUCT_ID", mtl_path.stem.removesuffix("_MTL"))
    what = "surface reflectance" if level2 else "TOA reflectance"
    s = bands[0]
    scaling = (f"{what} = {s.scale:g} x DN {s.offset:+g}, " if s.scale is not None else "")
    desc = (f"Landsat {sat or '?'} {level or ('L2' if level2 else 'L1')} product {product}: "
            f"{_describe(bands)} ({scaling}fill 0 -> nodata)")
    return bands, desc, _landsat_datetime(attrs)


def _landsat_named(mtl_path: Path, contents: Mapping[str, str], sat: str, level2: bool,
                   common: Sequence[str]) -> tuple[tuple[int, ...], tuple[str, ...]]:
    """(band numbers, their common names) of the bands a model names, among the bands
    the product has files for (Level-2: SR_B1..SR_B7), on its sensor's table."""
    from pipeline.inputs.bandnames import landsat_common_name, match_bands

    have = []
    for n in range(1, 8 if level2 else 10):
        pattern = f"*_SR_B{n}.TIF" if level2 else f"*_B{n}.TIF"
        if contents.get(f"FILE_NAME_BAND_{n}") or any(mtl_path.parent.glob(pattern)):
            have.append(n)
    names = [landsat_common_name(n, sat) for n in have]
    picked, _ = match_bands(common, names, str(mtl_path.parent))
    return tuple(have[i] for i in picked), tuple(names[i] or "" for i in picked)


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

    def read(self, name: str, limit: int = MAX_METADATA_BYTES) -> bytes:
        """A metadata member's bytes, at most `limit`: the zip's declared size is checked
        first and the read is bounded too (a declared size may lie), so a zip bomb is
        refused without being inflated."""
        too_big = InputError(f"{name} is larger than {limit // 2**20} MiB, not a "
                             "product's metadata file", path=self.path,
                             hint="re-download the product (a metadata file is ~100 KB)")
        try:
            if self.zip:
                with zipfile.ZipFile(self.path) as zf:
                    if zf.getinfo(name).file_size > limit:
                        raise too_big
                    with zf.open(name) as member:
                        data = member.read(limit + 1)
            else:
                with (self.path / name).open("rb") as f:
                    data = f.read(limit + 1)
        except (OSError, zipfile.BadZipFile, EOFError, RuntimeError, NotImplementedError,
                ValueError) as exc:  # damaged member, encrypted, unknown compression
            raise InputError(f"cannot read {name} ({_short(str(exc), 200)})", path=self.path,
                             hint="re-download the product") from None
        if len(data) > limit:
            raise too_big
        return data

    def gdal(self, name: str) -> str:
        return f"/vsizip/{self.path.resolve()}/{name}" if self.zip else str(self.path / name)

    def metadata_name(self) -> str | None:
        """The product metadata: `MTD_MSIL1C.xml` / `MTD_MSIL2A.xml` (since 2016), or the
        old format's `S2A_OPER_MTD_SAFL1C_PDMC_....xml` (multi-granule products)."""
        found = [n for n in self.names if _S2_MTD.search(n)]
        return min(found, key=len) if found else None

    def granules(self) -> list[str]:
        """Ids (folder names) of the granules that hold band images, sorted."""
        return sorted({m.group(1) for n in self.names if (m := _S2_GRANULE_IMAGE.search(n))})


#: product metadata of a SAFE: the current name, or the old (pre-2016) format's
_S2_MTD = re.compile(
    r"(^|/)(MTD_MSIL(1C|2A)|S2[A-D]_(OPER|USER)_MTD_SAFL(1C|2A)_[^/]*)\.xml$")
_S2_GRANULE_IMAGE = re.compile(r"GRANULE/([^/]+)/IMG_DATA/(R\d+m/)?[^/]*\.jp2$")


def _s2_band_file(safe: _Safe, band: str, granule: str | None = None) -> str:
    """The JP2 of `band` at its finest resolution (L2A has R10m/R20m/R60m; L1C one file),
    in `granule` (a product of several granules, the old format, must name one)."""
    pattern = re.compile(rf"GRANULE/([^/]+)/IMG_DATA/(R\d+m/)?[^/]*_{band}(_(\d+)m)?\.jp2$")
    matches = [(m, n) for n in safe.names if (m := pattern.search(n))
               and (granule is None or m.group(1) == granule)]
    found = [n for m, n in sorted(matches, key=lambda mn: (int(mn[0].group(4) or 0), mn[1]))]
    if not found:
        where = f"GRANULE/{granule}/IMG_DATA" if granule else "GRANULE/*/IMG_DATA"
        raise InputError(f"no {band} image in {where}", path=safe.path,
                         hint="the SAFE product is incomplete: re-download it")
    granules = {n.split("GRANULE/")[1].split("/")[0] for n in found}  # 1 since 2016
    if len(granules) > 1:
        raise InputError(f"{len(granules)} granules in one product (the old, pre-2016 "
                         "format)", path=safe.path,
                         hint="give an output directory: each granule becomes one output "
                         "(docs/data_sources.md, whole folders and catalogs)")
    return found[0]


def _s2_has_band(safe: _Safe, band: str, granule: str | None) -> bool:
    pattern = re.compile(rf"GRANULE/([^/]+)/IMG_DATA/(R\d+m/)?[^/]*_{band}(_(\d+)m)?\.jp2$")
    return any((m := pattern.search(n)) and (granule is None or m.group(1) == granule)
               for n in safe.names)


def sentinel2_granules(path: Path) -> list[str]:
    """The granule ids of a SAFE folder or zip that hold band images (one since 2016;
    the old format's products hold several, each its own tile)."""
    return _Safe(path).granules()


def sentinel2_bands(path: Path, names: Sequence[str] | None = None,
                    granule: str | None = None, *, common: Sequence[str] | None = None
                    ) -> tuple[list[Band], str, datetime | None]:
    """(R, G, B bands, description, acquisition time) of a Sentinel-2 SAFE folder/zip
    (of its granule `granule`, for a product of several); `names`: the --assets band
    names instead; `common`: the common names of a multispectral model's bands, taken
    from the band images the product holds (B08 for nir, B8A for nir08, ...)."""
    safe = _Safe(path)
    mtd = safe.metadata_name()
    if mtd is None:
        raise InputError("no MTD_MSIL1C.xml / MTD_MSIL2A.xml (or old-format "
                         "*_MTD_SAFL1C_*.xml) in the SAFE product", path=path,
                         hint="give the product's .SAFE folder or its zip, complete")
    level = "L2A" if re.search(r"(MSIL|SAFL)2A", mtd.rsplit("/", 1)[-1]) else "L1C"
    try:
        root = ElementTree.fromstring(safe.read(mtd))
        quant = _find_text(root, "BOA_QUANTIFICATION_VALUE" if level == "L2A"
                           else "QUANTIFICATION_VALUE")
        q = float(quant) if quant else 10000.0
        offsets = _s2_offsets(root)
    except (ElementTree.ParseError, ValueError) as exc:  # expat refuses entity bombs too
        raise InputError(f"{mtd} is not readable product metadata ({_short(str(exc), 200)})",
                         path=path, hint="re-download the product") from None
    if not (q > 0 and math.isfinite(q)):
        raise InputError(f"{mtd} declares a quantification value of {q:g}", path=path,
                         hint="re-download the product")
    baseline = _find_text(root, "PROCESSING_BASELINE") or "?"
    wanted = _S2_RGB if names is None else tuple(_s2_band_name(n, path) for n in names)
    commons: Sequence[str] = RGB if names is None else ("",) * 3
    if common is not None and names is None:
        from pipeline.inputs.bandnames import SENTINEL2, match_bands

        have = [b for b in _S2_BAND_IDS if _s2_has_band(safe, b, granule)]
        picked, _ = match_bands(common, [SENTINEL2[b] for b in have], str(path))
        wanted = tuple(have[i] for i in picked)
        commons = tuple(SENTINEL2[b] for b in wanted)
    bands = []
    for band, common_name in zip(wanted, commons, strict=True):
        offset = offsets.get(_S2_BAND_IDS.get(band, -1), 0.0)
        bands.append(Band(band, safe.gdal(_s2_band_file(safe, band, granule)), 1,
                          common_name, nodata=0.0, scale=1.0 / q, offset=offset / q))
    product = _find_text(root, "PRODUCT_URI") or path.name
    if granule is not None:
        product += f" granule {_short(granule)}"
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


def landsat_mtl(path: Path) -> Path | None:
    """The MTL of a Landsat C2 product: `path` itself, or the one in the folder `path`."""
    if path.is_file() and re.search(r"_MTL\.(txt|xml)$", path.name, re.IGNORECASE):
        return path
    if path.is_dir():
        found = sorted(path.glob("*_MTL.txt")) or sorted(path.glob("*_MTL.xml"))
        return found[0] if found else None
    return None


def is_sentinel2_product(path: Path) -> bool:
    """A Sentinel-2 SAFE folder (or a folder holding its product metadata), or its zip."""
    if path.is_dir():
        return path.suffix.upper() == ".SAFE" or any(path.glob("MTD_MSIL[12][CA].xml")) \
            or any(path.glob("S2?_*_MTD_SAFL[12][CA]_*.xml"))
    return path.is_file() and path.suffix.lower() == ".zip" and bool(
        re.search(r"MSIL(1C|2A)", path.name))


#: A Sentinel-2 band file by name: BigEarthNet's `<patch>_B04.tif`, SSL4EO's `B4.tif`.
S2_BAND_FILE = re.compile(r"(?:^|_)B0?([2-4])\.(?:tif|tiff|jp2)$", re.IGNORECASE)
_S2_FOLDER_RGB = (("4", "B04", "red"), ("3", "B03", "green"), ("2", "B02", "blue"))


def s2_band_folder(folder: Path) -> dict[str, Path] | None:
    """The blue, green and red band files of a folder of single-band Sentinel-2 files
    (BigEarthNet `*_B02.tif ...`, SSL4EO-S12 `B2.tif ...`, as such archives ship their
    patches), by band number; None when the folder is not one (it lacks one of them, or
    has two of one)."""
    found: dict[str, list[Path]] = {}
    try:
        entries = list(folder.iterdir())
    except OSError:
        return None
    for f in entries:
        m = S2_BAND_FILE.search(f.name)
        if m and f.is_file():
            found.setdefault(m.group(1), []).append(f)
    if sorted(found) != ["2", "3", "4"] or any(len(v) != 1 for v in found.values()):
        return None
    return {k: v[0] for k, v in found.items()}


#: Any Sentinel-2 band file by name (B01 ... B12, B8A): a multispectral model's bands.
S2_ANY_BAND_FILE = re.compile(r"(?:^|_)(B0?\d{1,2}|B8A)\.(?:tif|tiff|jp2)$", re.IGNORECASE)
#: Band folders (BigEarthNet, SSL4EO-S12) store Sentinel-2 L2A reflectance x 10000 with
#: no offset (processing baselines before 04.00): the scale a reflectance model needs.
BAND_FOLDER_REFLECTANCE = (1e-4, 0.0)


def s2_band_files(folder: Path) -> dict[str, Path]:
    """Every Sentinel-2 band file of a band folder by band id ({"B04": path, "B08": ...});
    {} when the folder is not one (s2_band_folder's rule: B02, B03, B04 present once)."""
    from pipeline.inputs.bandnames import sentinel2_band_id

    if s2_band_folder(folder) is None:
        return {}
    found: dict[str, Path] = {}
    for f in sorted(folder.iterdir()):
        m = S2_ANY_BAND_FILE.search(f.name)
        band = sentinel2_band_id(m.group(1)) if m else None
        if band and f.is_file():
            found.setdefault(band, f)
    return found


def named_band_folder_bands(folder: Path, names: Sequence[str]) -> list[Band]:
    """The bands of a band folder that a model names by common name (bandnames.py), in
    the model's order, with the folder's reflectance scale (BAND_FOLDER_REFLECTANCE) and
    0 declared nodata; a ConfigError naming what is missing otherwise."""
    from pipeline.inputs.bandnames import SENTINEL2, match_bands

    files = s2_band_files(folder)
    ids = sorted(files)
    picked, _ = match_bands(names, [SENTINEL2[b] for b in ids], str(folder))
    scale, offset = BAND_FOLDER_REFLECTANCE
    return [Band(ids[i], str(files[ids[i]].resolve()), common_name=SENTINEL2[ids[i]],
                 nodata=0.0, scale=scale, offset=offset) for i in picked]


def band_folder_bands(files: Mapping[str, Path]) -> list[Band]:
    """The R, G, B stack (B04, B03, B02) of a band folder, 0 declared nodata (Sentinel-2's
    fill): the same stack `pipeline run` makes of a SAFE product, so a patch cut from a
    product is radiometrically that product."""
    return [Band(name, str(files[n].resolve()), common_name=common, nodata=0.0)
            for n, name, common in _S2_FOLDER_RGB]


def product_kind(source: str) -> str:
    """What INPUT is: "remote", "stac", "landsat", "sentinel2", "bandfolder" (a folder of
    Sentinel-2 band files), "directory" or "raster" (a local file, or a path that does
    not exist: the raster checks report it)."""
    if is_remote(source):
        # a static Item (x.json) or a STAC API Item (.../collections/C/items/ID)
        url = source.split("?")[0]
        return "stac" if url.lower().endswith(".json") or "/items/" in url else "remote"
    path = Path(source)
    if path.is_file() and path.suffix.lower() == ".json":
        return "stac"
    if landsat_mtl(path) is not None:
        return "landsat"
    if is_sentinel2_product(path):
        return "sentinel2"
    if path.is_dir() and s2_band_folder(path) is not None:
        return "bandfolder"
    return "directory" if path.is_dir() else "raster"


def _safe_stem(text: str) -> str:
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(text.rstrip("/").split("?")[0]).name)
    for suffix in (".json", ".SAFE", ".zip", ".tif", ".TIF", ".tiff", "_MTL.txt", "_MTL.xml"):
        stem = stem.removesuffix(suffix)
    return stem[:_MAX_STEM] or "input"  # a file name: an Item id may be megabytes


def _resolve_bands(source: str, kind: str, assets: Sequence[str] | None,
                   item: Mapping[str, Any] | None = None, granule: str | None = None,
                   names: Sequence[str] | None = None
                   ) -> tuple[list[Band], str, datetime | None, str]:
    """(bands, description, acquisition time, VRT stem) of a STAC Item or product.
    `item`: an Item already read (a feature of an ItemCollection), `source` the document
    it came from (relative hrefs resolve against it, and the URL-only rule applies).
    `names`: a multispectral model's bands by common name (None: red, green, blue)."""
    if names is not None and assets is not None:
        raise ConfigError("--assets names three R,G,B bands; this model takes bands "
                          f"{', '.join(names)}, picked by name", path=source,
                          hint="leave --assets out")
    if kind == "stac":
        if item is None:
            item = _read_stac(source)
        else:
            _check_item(item, source)
        bands, how = (stac_bands(item, source, assets) if names is None
                      else stac_named_bands(item, source, names))
        desc = f"STAC Item {_short(item.get('id', '?'))}: {_describe(bands)} (by {how})"
        return bands, desc, _stac_datetime(item), _safe_stem(str(item.get("id") or source))
    path = Path(source)
    if kind == "bandfolder":
        files = s2_band_folder(path)
        if files is None:  # product_kind found it; it changed since
            raise InputError("no longer a folder of B02, B03, B04 band files", path=path,
                             hint="check the folder")
        if assets is not None:
            raise ConfigError("--assets applies to a STAC Item or a Landsat/Sentinel-2 "
                              "product", path=source, hint="a band folder is read as "
                              "B04, B03, B02 (red, green, blue)")
        bands = band_folder_bands(files) if names is None else named_band_folder_bands(
            path, names)
        scaling = "" if names is None else (
            f" (reflectance = DN x {BAND_FOLDER_REFLECTANCE[0]:g}, 0 -> nodata)")
        return (bands, f"Sentinel-2 band files: {_describe(bands)}{scaling}", None,
                _safe_stem(path.name))
    if kind == "landsat":
        mtl = landsat_mtl(path) or path  # product_kind found it
        bands, desc, when = landsat_bands(mtl, assets, common=names)
        return bands, desc, when, mtl.name.rsplit("_MTL", 1)[0]
    bands, desc, when = sentinel2_bands(path, assets, granule, common=names)
    stem = _safe_stem(path.name) + (f"__{_safe_stem(granule)}" if granule else "")
    return bands, desc, when, stem


@contextlib.contextmanager
def resolve_input(source: str, *, assets: Sequence[str] | None = None,
                  bands_given: bool = False, item: Mapping[str, Any] | None = None,
                  granule: str | None = None, names: Sequence[str] | None = None
                  ) -> Iterator[ResolvedInput]:
    """INPUT -> a ResolvedInput whose `path` the pipeline opens; a VRT made here lives in a
    temporary directory until the `with` ends. A local raster or directory is passed
    through untouched. `bands_given`: the user passed --bands (refused for a stack made
    here, whose bands are already R, G, B: --assets chooses them). `item`: a STAC Item
    already read from the document `source` (an ItemCollection's feature). `granule`:
    the granule of a Sentinel-2 product of several (old format). `names`: the bands of
    a multispectral model by common name (pipeline/run/model_io.py), stacked in its
    order; None: red, green, blue, as always."""
    network_defaults()  # timeouts for GDAL's /vsicurl/ and the Item reader (urls.py)
    kind = "stac" if item is not None else product_kind(source)
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
        bands, desc, when, stem = _resolve_bands(source, kind, assets, item, granule, names)
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
    vrt = tmp / f"{_safe_stem(redact_url(source))}.vrt"  # may name an output: no secrets
    try:
        with (open_self_contained(vsi, source) if is_network(vsi) else rasterio.open(vsi)
              ) as ds:
            if is_network(vsi):
                check_remote_dataset(ds, source)
            rasterio.shutil.copy(ds, vrt, driver="VRT")
            desc = (f"remote raster {redact_url(source)}: read in place through "
                    f"{vsi.split('/')[1]}, {ds.width} x {ds.height} px, {ds.count} band(s)")
    except rasterio.errors.RasterioIOError as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(f"cannot open the remote raster ({first})", path=source,
                         hint=_network_hint(first)) from None
    return ResolvedInput(source, vrt, "remote", desc)

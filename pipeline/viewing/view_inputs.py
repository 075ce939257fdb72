"""What `pipeline view` may read, and how: the folder it is pointed at may be someone else's.

The viewer embeds what it reads into a page that is then looked at, shared or served.
A folder prepared by another user (a shared project directory, a downloaded result) must
not be able to make that page carry a copy of one of the *viewer's* files. The attacks
this module stops (docs/faults.md, Security; tests/pipeline/viewing/test_view_inputs.py):

* a manifest whose `input.path` is a VRT with a raw band (`VRTRawRasterBand`) reading
  `~/.ssh/id_rsa`, next to an output whose scaling tags say "0..255, fixed": the
  optical layer was a byte-exact copy of the key;
* the same without a VRT: a symlink to the key plus an ENVI/EHdr `.hdr` header beside it
  (GDAL's raw formats read any file as pixels), named by the manifest or as the output;
* a VRT whose sources are elsewhere (`/home/victim/private.tif`, `../../x`, `/vsicurl/`),
  a `/vsi` chain or URL as the input, symlinks out of the folder.

The rules:

* outputs and heatmaps (pipeline outputs: always GeoTIFF/COG) are opened with the GTiff
  driver only, with GDAL's sibling-file discovery off (`GDAL_DISABLE_READDIR_ON_OPEN=
  EMPTY_DIR`: no `.hdr`, `.aux.xml`, `.ovr` or `.msk` planted beside them is read), and
  must not be symlinks pointing out of their folder;
* the input a manifest names is used only if it is a raster the user could have run: a
  local file (no `/vsi`, no URL), whose content still matches the fingerprint the
  manifest recorded (so the folder's author must have known its bytes), opened with an
  allow-list of drivers (`INPUT_DRIVERS`; rasterio opens one named driver at a time),
  not a symlink out of the viewed folder nor out of its own folder (judged on the path
  the manifest records, as the run was given it, not resolved), and if a VRT, one
  without raw bands or pixel functions whose sources are local files under the VRT's
  own directory, checked by the same rules (recursively). Otherwise `UnsafeInput`: the
  user passes `--input`;
* every read runs with GDAL's sibling-file discovery off and its VRT restrictions on
  (`view_env`): Python pixel functions off, raw VRT sources only beside the VRT (GDAL
  3.12's default; the GDAL in use here, 3.10, has no run-time switch for raw bands:
  `GDAL_VRT_ENABLE_RAWRASTERBAND` is a build option, so `check_vrt` enforces it). An
  `--input` the user names explicitly is theirs, read with any driver, but a VRT among
  them still may not read raw bytes from outside its folder.
"""

from __future__ import annotations

import contextlib
import os
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import rasterio
from rasterio.errors import RasterioError

from pipeline.errors import InputError

__all__ = ["INPUT_DRIVERS", "OUTPUT_DRIVERS", "UnsafeInput", "VIEW_GDAL_ENV", "check_vrt",
           "manifest_input", "open_allowed", "open_input", "refuse_symlink_out", "view_env"]

#: Pipeline outputs and heatmaps are COGs: GTiff is the only driver that may read them.
OUTPUT_DRIVERS: tuple[str, ...] = ("GTiff",)
#: Drivers a manifest's input may be read with: the formats `pipeline run` is used with
#: (GeoTIFF/COG, a VRT of band files, JPEG 2000 as in Sentinel-2, PNG/JPEG chips). Never
#: the raw formats (ENVI, EHdr, ...) that read any file as pixels given a header.
INPUT_DRIVERS: tuple[str, ...] = ("GTiff", "VRT", "JP2OpenJPEG", "PNG", "JPEG")
#: GDAL settings of every read of the viewer: no Python in VRTs; raw VRT sources only
#: beside the VRT (GDAL >= 3.12 reads this; older GDALs ignore it, and `check_vrt` does
#: the same); GDAL_VRT_ENABLE_RAWRASTERBAND is set too for builds that read it at run
#: time (it is a build option in GDAL 3.10).
VIEW_GDAL_ENV: dict[str, str] = {
    "GDAL_VRT_ENABLE_RAWRASTERBAND": "NO",
    "GDAL_VRT_ENABLE_PYTHON": "NO",
    "GDAL_VRT_RAWRASTERBAND_ALLOWED_SOURCE": "SIBLING_OR_CHILD_OF_VRT_PATH",
}
#: GDAL would otherwise list the folder and read sidecars (.hdr, .aux.xml, .ovr, .msk).
NO_SIDECARS: dict[str, str] = {"GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR"}
#: VRTs nested deeper than this are refused (a loop of VRTs would never end).
MAX_VRT_DEPTH = 4
_HINT = "pass the scene you ran with --input (a file you trust)"


class UnsafeInput(InputError):
    """A file a viewed folder names or holds that the viewer refuses to read: it could
    make the page carry a copy of another file of the user's."""


@contextlib.contextmanager
def view_env() -> Iterator[None]:
    """GDAL settings of all the viewer's reads: `VIEW_GDAL_ENV` and `NO_SIDECARS` (for
    the whole page, not only the opens: GDAL looks for an external `.ovr` lazily, at the
    first decimated read). An input of the user's with an external mask or overviews is
    read without them (the output's mask still applies)."""
    with rasterio.Env(**VIEW_GDAL_ENV, **NO_SIDECARS):
        yield


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def refuse_symlink_out(path: Path, folder: Path, what: str) -> None:
    """UnsafeInput if `path` (in `folder`) is, or passes through, a symlink that leads out
    of `folder`: the folder's author could point it at any file of the user's."""
    real, root = Path(os.path.realpath(path)), Path(os.path.realpath(folder))
    if not _inside(real, root):
        raise UnsafeInput(f"the {what} is a symlink out of its folder (to {real})",
                          path=path, hint=f"view the file it points to itself; {_HINT}"
                          if what == "input" else "view the file it points to itself")


def open_allowed(path: Path, drivers: Sequence[str], what: str
                 ) -> rasterio.io.DatasetReader:
    """`path` opened by the first of `drivers` that accepts it (rasterio restricts GDAL to
    the one driver named), else an InputError naming the allowed formats."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"the {what} raster does not exist (or is not a file)", path=path,
                         hint="check the path")
    last = ""
    for driver in drivers:
        try:
            return rasterio.open(path, driver=driver)
        except RasterioError as e:
            last = str(e)
    raise UnsafeInput(
        f"the {what} is not a raster of an allowed format ({', '.join(drivers)})",
        path=path, hint=_HINT if what == "input" else
        f"give a pipeline output (a GeoTIFF); GDAL said: {' '.join(last.split())[:120]}")


def check_vrt(path: Path, depth: int = 0, *, confined: bool = True) -> None:
    """UnsafeInput unless the VRT at `path` is safe to read.

    `confined` (a VRT a manifest named): it reads only local files under its own
    directory (after symlinks), each of an allowed format (nested VRTs checked the same
    way), with no raw band and no pixel-function code. Not `confined` (a VRT the user
    named with `--input`: their choice): only a raw band reading a file outside the
    VRT's directory is refused, GDAL 3.12's default (`GDAL_VRT_RAWRASTERBAND_ALLOWED_
    SOURCE=SIBLING_OR_CHILD_OF_VRT_PATH`), which the GDAL in use may predate; nested
    local VRTs are checked the same way.
    """
    if depth > MAX_VRT_DEPTH:
        raise UnsafeInput(f"VRTs nested more than {MAX_VRT_DEPTH} deep", path=path,
                          hint=_HINT)
    try:
        root = ET.parse(path).getroot()  # expat: no external entities are fetched
    except (ET.ParseError, OSError) as e:
        raise UnsafeInput(f"not a readable VRT ({e})", path=path, hint=_HINT) from None
    base = Path(os.path.realpath(path)).parent
    for band in root.iter("VRTRasterBand"):
        if band.get("subClass") != "VRTRawRasterBand":
            continue
        node = band.find("SourceFilename")
        name = "" if node is None else (node.text or "").strip()
        raw = (base / name) if node is not None and node.get("relativeToVRT") == "1" \
            else Path(name)
        if confined or not _inside(Path(os.path.realpath(raw)), base):
            raise UnsafeInput("a VRT with a raw band (VRTRawRasterBand: reads any file as "
                              f"pixels) reading {name!r}", path=path, hint=_HINT)
    if confined and any(root.find(f".//{tag}") is not None
                        for tag in ("PixelFunctionCode", "PixelFunctionLanguage")):
        raise UnsafeInput("a VRT with pixel-function code", path=path, hint=_HINT)
    for node in root.iter("SourceFilename"):
        name = (node.text or "").strip()
        relative = node.get("relativeToVRT") == "1"
        if not confined:
            source = (base / name) if relative else Path(name)
            if source.suffix.lower() == ".vrt" and source.is_file():
                check_vrt(source, depth + 1, confined=False)
            continue
        source = _local_source(name, base if relative else None, path)
        real = Path(os.path.realpath(source))
        if not _inside(real, base):
            raise UnsafeInput(f"a VRT source outside the VRT's folder ({name})", path=path,
                              hint=_HINT)
        with open_allowed(real, INPUT_DRIVERS, "VRT source") as ds:
            nested = ds.driver == "VRT"
        if nested:
            check_vrt(real, depth + 1)


def open_input(path: Path, trusted: bool) -> rasterio.io.DatasetReader:
    """The optical input: one the user named (`trusted`: any driver) or one a manifest
    named (vetted by `manifest_input`: the driver allow-list); a VRT is checked with
    `check_vrt` either way (confined unless trusted)."""
    ds = rasterio.open(path) if trusted else open_allowed(path, INPUT_DRIVERS, "input")
    try:
        if ds.driver == "VRT":
            check_vrt(Path(path), confined=not trusted)
    except BaseException:
        ds.close()
        raise
    return ds


def _local_source(name: str, base: Path | None, vrt: Path) -> Path:
    """A VRT source as a local path; UnsafeInput for `/vsi...`, URLs, `DRIVER:...` syntax
    and names that are not an existing file."""
    if not name or name.startswith("/vsi") or "://" in name:
        raise UnsafeInput(f"a VRT source that is not a local file ({name!r})", path=vrt,
                          hint=_HINT)
    source = (base / name) if base is not None else Path(name)
    if not source.is_file():
        raise UnsafeInput(f"a VRT source that is not an existing file ({name!r})", path=vrt,
                          hint=_HINT)
    return source


def manifest_input(doc: dict[str, Any], folder: Path) -> Path | None:
    """The input a manifest (`doc`, of an output in `folder`) records, if it may be read:
    None when it names none or the file is gone (a page without the optical layer, as
    before); UnsafeInput when it names one the viewer refuses (module docstring)."""
    from pipeline.inputs.fingerprint import fingerprint_input

    try:
        entry = doc["input"]
        raw = entry["path"]
    except (KeyError, TypeError):
        return None
    if not isinstance(raw, str) or not raw:
        return None
    if entry.get("kind", "raster") != "raster":
        # a product, STAC Item or URL (a directory or catalog run): what the run read was
        # a VRT made for the run and removed after it; it is never re-made from a
        # folder's manifest (a page without the optical layer; `--input` shows it)
        return None
    if raw.startswith("/vsi") or "://" in raw or not os.path.isabs(raw):
        raise UnsafeInput(f"the manifest's input is not a local absolute path ({raw!r})",
                          path=folder, hint=_HINT)
    path = Path(raw)
    if not path.exists():
        return None
    # the path as given (manifests record it unresolved): a symlink out of the folder it
    # stands in (a scene planted as `shared/scene.tif -> ~/private.tif`) is refused, as one
    # out of the viewed folder is
    refuse_symlink_out(path, path.parent, "input")
    if _inside(Path(os.path.abspath(path)), Path(os.path.abspath(folder))):
        refuse_symlink_out(path, folder, "input")
    if not path.is_file():
        raise UnsafeInput("the manifest's input is not a file", path=path, hint=_HINT)
    want = (entry.get("size"), entry.get("sha256"), entry.get("method"))
    got = fingerprint_input(path)
    if (got.size, got.sha256, got.method) != want:
        raise UnsafeInput("the manifest's input is not the file that run read (its content"
                          " does not match the manifest's fingerprint)", path=path,
                          hint=_HINT)
    with view_env():
        with open_allowed(path, INPUT_DRIVERS, "input") as ds:
            is_vrt = ds.driver == "VRT"
        if is_vrt:
            check_vrt(path)
    return path

"""Which products a directory (or a multi-granule SAFE) holds: one entry per product.

`python -m pipeline run downloads/ out/` must do something useful with what a download
folder holds: Sentinel-2 SAFE zips and folders, Landsat Collection 2 folders, STAC Item
JSON saved from a search, loose GeoTIFF/VRT scenes. Each of those is one *product*, run
into one output named after it, however many band files it holds: a SAFE folder is not
walked for its JP2 files, a Landsat folder not for its TIFs (their band files are found
by pipeline/inputs/sources.py when the product is read). Part of the future `pipeline/inputs/`
wing, with sources.py (one product -> one raster) and catalogs.py (STAC catalogs).

Rules (docs/data_sources.md, "Whole folders and catalogs"):

* Without `--pattern`, the entries of the directory itself are looked at (not its
  subfolders, as before: `--pattern '**/*'` searches them): product folders, SAFE zips,
  `.json` files that are STAC Items, and rasters (`.tif`, `.tiff`, `.vrt`, any case).
  Other files (a README, `collection.json`, a Catalog) are left out.
* With `--pattern` (a glob relative to the directory, `**` recurses), the matches are
  the candidates: a match inside a product folder stands for that product (counted
  once), and a file matching an explicit pattern that is no product is a raster scene,
  as before (a broken one is reported failed, like any unreadable product).
* `--exclude` globs drop candidates whose relative path matches (e.g. `'*.zip'` beside
  the unzipped folders).
* Hidden entries and the output directory are never candidates (a rerun must not take
  its own outputs for scenes).
* A multi-granule Sentinel-2 product (the old, pre-2016 format) is one product per
  granule, `<product>__<granule>.tif`.

Two products that would write one output (a SAFE zip beside its unzipped folder, two
Items with one id) are an InputError naming both, before anything runs.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import logging
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.errors import InputError, OutputError
from pipeline.inputs.fingerprint import InputFingerprint, fingerprint_input
from pipeline.urls import redact_url

__all__ = [
    "Product",
    "check_unique_outputs",
    "find_products",
    "fingerprint_product",
    "output_stem",
    "pack_item",
    "product_from_source",
    "unpack_item",
]

log = logging.getLogger(__name__)

#: file suffixes taken as raster scenes without --pattern
RASTER_SUFFIXES = (".tif", ".tiff", ".vrt")
#: characters of an output file stem
_MAX_STEM = 100


@dataclass(frozen=True)
class Product:
    """One input of a multi-product run, and where its output goes.

    `source` is what pipeline.inputs.sources reads (a path, a URL, or for an inline Item the
    document holding it); `name` the label of the table and report; `stem` and `subdir`
    make the output `OUT/subdir/stem.tif`; `item_json` an Item already read (a catalog's,
    or a feature of an ItemCollection: `pack_item`), `item` the Item itself; `granule` one
    granule of an old-format Sentinel-2 product; `item_href` the source Item's own
    location, linked from the output's Collection."""

    source: str
    name: str
    stem: str
    kind: str  # "raster" | "stac" | "landsat" | "sentinel2" | "bandfolder" | "remote"
    subdir: str = ""
    item_json: bytes | None = field(default=None, compare=False, repr=False)
    granule: str | None = None
    item_href: str | None = None

    @property
    def item(self) -> dict[str, Any] | None:
        """The Item already read (parsed anew at each access, see `pack_item`), or None."""
        return None if self.item_json is None else unpack_item(self.item_json)

    def output(self, output_dir: Path) -> Path:
        return Path(output_dir) / self.subdir / (self.stem + ".tif")

    @property
    def local_path(self) -> Path | None:
        """The product as a local path (None for a URL or an inline Item)."""
        if self.item_json is not None or "://" in self.source or self.source.startswith("/vsi"):
            return None
        return Path(self.source)

    @property
    def label(self) -> str:
        """The source as recorded in outputs: a URL without its secrets."""
        return redact_url(self.source)


def pack_item(item: Mapping[str, Any]) -> bytes:
    """An Item as a catalog walk keeps it until its product runs: compact JSON, zlib-
    compressed. A parsed Item costs ~20 times its JSON (one 8 MiB Item ~180 MiB), and a
    catalog may lead to thousands: kept parsed, 12 links to one hostile 8 MiB Item took a
    --dry-run to 2.7 GB (docs/faults.md, Security). Parsed again when it is run."""
    import zlib

    return zlib.compress(json.dumps(item, separators=(",", ":")).encode(), 6)


def unpack_item(data: bytes) -> dict[str, Any]:
    """The Item `pack_item` kept."""
    import zlib

    return json.loads(zlib.decompress(data))


def output_stem(text: str) -> str:
    """A file stem from a name read from an input (an Item id, a product folder name):
    path separators and odd characters become `_`, no leading dot (a hidden file, or
    `..`), at most _MAX_STEM characters (an id may be megabytes)."""
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", str(text)).lstrip(".")
    for suffix in (".json", ".SAFE", ".zip", ".tif", ".TIF", ".tiff", ".vrt"):
        stem = stem.removesuffix(suffix)
    return stem[:_MAX_STEM] or "input"


def _is_within(path: Path, parent: Path) -> bool:
    try:
        path.resolve().relative_to(parent.resolve())
    except (ValueError, OSError):
        return False
    return True


def _read_item_id(path: Path) -> str | None:
    """The `id` of a local STAC Item file (its stem if it has none), None if the file is
    not an Item (bounded read: an 8 MiB cap, like the Item reader's)."""
    doc = _read_json(path)
    if not isinstance(doc, dict) or doc.get("type") != "Feature":
        return None
    ident = doc.get("id")
    return ident if isinstance(ident, str) and ident else path.stem


_BROKEN = object()  # a .json file that is no JSON: a broken download, reported as failed


def _read_json(path: Path) -> Any:
    """The JSON of a local file, _BROKEN if it cannot be read or parsed, None if it is
    larger than an Item may be."""
    from pipeline.inputs.sources import MAX_ITEM_BYTES

    try:
        with path.open("rb") as f:
            data = f.read(MAX_ITEM_BYTES + 1)
        if len(data) > MAX_ITEM_BYTES:
            return None
        return json.loads(data)
    except (OSError, ValueError, RecursionError):
        return _BROKEN


def _product_root(path: Path, input_dir: Path, cache: dict[Path, Path | None]
                  ) -> Path | None:
    """The product folder `path` lies in (itself included), below `input_dir`, if any
    (`cache`: folder -> is it a product, shared by one search: `**/*` lists every file
    of every SAFE folder)."""
    from pipeline.inputs.sources import is_sentinel2_product, landsat_mtl, s2_band_folder

    rel = path.relative_to(input_dir)
    for i in range(1, len(rel.parts) + 1):
        candidate = input_dir.joinpath(*rel.parts[:i])
        if candidate not in cache:
            cache[candidate] = candidate if candidate.is_dir() and (
                landsat_mtl(candidate) is not None or is_sentinel2_product(candidate)
                or s2_band_folder(candidate) is not None) else None
        if cache[candidate] is not None:
            return candidate
    return None


def _classify(path: Path, explicit: bool) -> str | None:
    """The kind of one candidate, None if it is not a product (left out)."""
    from pipeline.inputs.sources import is_sentinel2_product, landsat_mtl, s2_band_folder

    if path.is_dir():
        if landsat_mtl(path) is not None:
            return "landsat"
        if is_sentinel2_product(path):
            return "sentinel2"
        return "bandfolder" if s2_band_folder(path) is not None else None
    if not path.is_file():
        return None
    suffix = path.suffix.lower()
    if suffix == ".zip":
        return "sentinel2" if is_sentinel2_product(path) else ("raster" if explicit else None)
    if suffix == ".json":  # an Item, or a file that is no JSON (a truncated download)
        return "stac" if explicit or _read_item_id(path) is not None or (
            _read_json(path) is _BROKEN) else None
    if suffix in RASTER_SUFFIXES or explicit:
        return "raster"
    return None


def _entries(input_dir: Path) -> list[Path]:
    """The entries of `input_dir` (sorted), or an InputError naming why it cannot be listed."""
    try:
        return sorted(input_dir.iterdir())
    except OSError as e:
        raise InputError(f"cannot list the input directory ({e.strerror})", path=input_dir,
                         hint="check it exists and is readable") from None


def find_products(input_dir: Path, pattern: str | None = None, *,
                  exclude: Path | None = None, excludes: Sequence[str] = ()
                  ) -> list[Product]:
    """The products under `input_dir` (module doc), sorted by their relative path.

    `pattern`: None for every kind, else a glob relative to `input_dir`; `exclude`: the
    output directory (never searched; the input directory itself is an OutputError:
    every output would land on its scene's name); `excludes`: globs of relative paths
    to leave out."""
    input_dir = Path(input_dir)
    if exclude is not None and Path(exclude).resolve() == input_dir.resolve():
        raise OutputError("the output directory is the input directory", path=exclude,
                          hint="give another output directory (one inside the input "
                          "directory is fine: it is never searched for scenes)")
    if pattern is None:
        candidates: Iterable[Path] = _entries(input_dir)
    else:
        try:
            candidates = list(input_dir.glob(pattern))
        except (NotImplementedError, ValueError) as e:  # absolute or empty pattern
            raise InputError(f"bad --pattern {pattern!r} ({e})", path=input_dir,
                             hint="give a glob relative to the input directory, e.g. "
                             "'*.tif'") from None
    chosen: dict[Path, str] = {}
    roots: dict[Path, Path | None] = {}
    for path in candidates:
        rel = path.relative_to(input_dir)
        if any(part.startswith(".") for part in rel.parts):
            continue
        if exclude is not None and _is_within(path, exclude):
            continue
        root = _product_root(path, input_dir, roots) if pattern is not None else None
        if root is not None:  # a band file or the MTL of a product: the product
            path, kind = root, _classify(root, explicit=False)
        else:
            kind = _classify(path, explicit=pattern is not None)
        if kind is None or path in chosen:
            continue
        rel_text = path.relative_to(input_dir).as_posix()
        if any(fnmatch.fnmatch(rel_text, g) or fnmatch.fnmatch(path.name, g)
               for g in excludes):
            continue
        chosen[path] = kind
    products: list[Product] = []
    for path in sorted(chosen):
        products.extend(_products_of(path, chosen[path], input_dir))
    return products


def _products_of(path: Path, kind: str, input_dir: Path) -> list[Product]:
    """One Product per output of `path`: one, or one per granule of an old-format SAFE."""
    rel = path.relative_to(input_dir)
    subdir = rel.parent.as_posix() if rel.parent != Path(".") else ""
    name = rel.as_posix()
    if kind == "stac":
        ident = _read_item_id(path)
        return [Product(str(path), name, output_stem(ident or path.stem), kind, subdir,
                        item_href=str(path.resolve()))]
    # names of local files and folders are the user's own: kept as they are (spaces,
    # brackets, non-ASCII), only a product's suffix goes; an Item id is sanitised
    if kind == "landsat":
        return [Product(str(path), name, path.name, kind, subdir)]
    if kind == "sentinel2":
        return sentinel2_products(path, name, subdir)
    return [Product(str(path), name, path.stem, kind, subdir)]


def sentinel2_products(path: Path, name: str, subdir: str = "") -> list[Product]:
    """A SAFE folder/zip as products: itself, or one per granule when it holds several
    (the old format). An unreadable product stays one product: its run reports why."""
    from pipeline.inputs.sources import sentinel2_granules

    stem = path.name
    for suffix in (".SAFE", ".zip", ".ZIP"):
        stem = stem.removesuffix(suffix)
    try:
        granules = sentinel2_granules(path)
    except InputError:
        granules = []
    if len(granules) <= 1:
        return [Product(str(path), name, stem, "sentinel2", subdir)]
    return [Product(str(path), f"{name}:{g}", f"{stem}__{output_stem(g)}", "sentinel2",
                    subdir, granule=g) for g in granules]


def product_from_source(source: str) -> list[Product]:
    """The products of one INPUT given on its own (a multi-granule SAFE gives several)."""
    from pipeline.inputs.sources import product_kind

    kind = product_kind(source)
    name = redact_url(source)
    if kind == "sentinel2":
        return sentinel2_products(Path(source), Path(source).name)
    stem = output_stem(Path(name.rstrip("/").split("?")[0]).name)
    if kind == "stac" and "://" not in source:
        stem = output_stem(_read_item_id(Path(source)) or Path(source).stem)
    return [Product(source, name, stem, kind)]


def check_unique_outputs(products: Sequence[Product], output_dir: Path
                         ) -> dict[Path, Product]:
    """output -> product; InputError naming both when two products share an output."""
    outputs: dict[Path, Product] = {}
    for product in products:
        out = product.output(output_dir)
        if out in outputs:
            other = outputs[out]
            raise InputError(
                f"{_described(other)} and {_described(product)} would both be written to "
                f"{out}", path=out.parent,
                hint="leave one out (--exclude '*.zip' for zips beside their unzipped "
                "folders, or narrow --pattern); Items of one id: give one of them")
        outputs[out] = product
    return outputs


def _described(product: Product) -> str:
    """A product for an error: its path or URL; an Item its id and where it came from."""
    if product.item_json is None:
        return product.label
    return f"{product.name} ({redact_url(product.item_href or product.source)})"


# ---------------------------------------------------------------- fingerprints


def _hash_listing(folder: Path) -> tuple[int, int, str]:
    """(total size, newest mtime, sha256 of every file's relative path, size and mtime)
    of a product folder: a replaced or added band file is seen without reading pixels.
    GDAL's side-car files (`*.aux.xml`, which reading may write beside a band file) and
    hidden files are not the product: they must not make every rerun a redo."""
    h = hashlib.sha256()
    size = newest = 0
    files = (p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".")
             and not p.name.lower().endswith(".aux.xml"))
    for path in sorted(files):
        st = path.stat()
        size += st.st_size
        newest = max(newest, st.st_mtime_ns)
        h.update(f"{path.relative_to(folder).as_posix()}\0{st.st_size}\0"
                 f"{st.st_mtime_ns}\n".encode())
    return size, newest, h.hexdigest()


def _redacted_item(item: Mapping[str, Any]) -> bytes:
    """An Item's JSON with every href without userinfo and query: a signed asset URL's
    signature changes on every search, and must neither force a redo nor be recorded."""
    def clean(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: (redact_url(v) if k == "href" and isinstance(v, str) else clean(v))
                    for k, v in value.items()}
        if isinstance(value, list):
            return [clean(v) for v in value]
        return value

    return json.dumps(clean(item), sort_keys=True, default=str).encode()


def _local_assets(item: Mapping[str, Any], base: Path) -> list[Path]:
    """Local files the Item's assets name (relative hrefs against its folder)."""
    found = []
    assets = item.get("assets")
    for asset in (assets.values() if isinstance(assets, dict) else []):
        href = asset.get("href") if isinstance(asset, dict) else None
        if not isinstance(href, str) or "://" in href or href.startswith("/vsi"):
            continue
        path = Path(href) if os.path.isabs(href) else base / href
        if path.is_file():
            found.append(path)
    return sorted(set(found))


def fingerprint_product(product: Product) -> InputFingerprint:
    """What a rerun compares to know the product is unchanged (pipeline/run/manifest.py).

    A file (raster, SAFE zip): its own fingerprint. A product folder: its listing (paths,
    sizes, mtimes) and the full hash of its metadata file. A local Item: its bytes and the
    stat of the local files it names. A URL or an inline Item: the redacted URL, or the
    Item with its hrefs redacted: nothing secret is hashed into a manifest, and a
    re-signed URL is the same input."""
    path = product.local_path
    item = product.item
    if item is not None:
        h = hashlib.sha256(_redacted_item(item))
        newest = 0
        if "://" not in product.source:  # a local catalog's Item may name local files
            for asset in _local_assets(item, Path(product.source).parent):
                st = asset.stat()
                newest = max(newest, st.st_mtime_ns)
                h.update(f"{asset.resolve()}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        return InputFingerprint(0, newest, h.hexdigest(), "stac-item-redacted")
    if path is None:
        digest = hashlib.sha256(redact_url(product.source).encode()).hexdigest()
        return InputFingerprint(0, 0, digest, "url-redacted")
    if path.is_dir():
        size, newest, digest = _hash_listing(path)
        return InputFingerprint(size, newest, digest, "folder-listing")
    fp = fingerprint_input(path)
    if product.kind != "stac":
        return fp
    try:
        item = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return fp
    h = hashlib.sha256(fp.sha256.encode())
    newest = fp.mtime_ns
    for asset in _local_assets(item if isinstance(item, dict) else {}, path.parent):
        st = asset.stat()
        newest = max(newest, st.st_mtime_ns)
        h.update(f"{asset.resolve()}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return InputFingerprint(fp.size, newest, h.hexdigest(), fp.method + "+assets")

"""STAC Catalogs, Collections and ItemCollections as INPUT: every Item becomes a scene.

`python -m pipeline run CATALOG.json OUT/` (a local file or an http(s) URL) runs each
Item the document leads to, like a directory run (resumable, one output per Item named
after its id, a report and an output Collection whose `derived_from` links name the
source Items). Part of the future `pipeline/inputs/` wing with sources.py and
discovery.py.

Why a walker of our own rather than pystac's `get_items(recursive=True)`: a catalog is a
graph of documents someone else wrote, and walking it must stay bounded whatever it
holds. pystac follows every link without a depth limit or cycle check (a child linking
back to its parent recurses until Python's stack gives out), reads URLs without a
timeout and a body of any size, and an ItemCollection's `next` pages are not its
business at all. Here:

* documents are read with the Item reader's bounds (pipeline/inputs/sources.py: 8 MiB, the
  HTTP timeouts of pipeline/urls.py);
* `child` / `item` links are followed MAX_DEPTH deep at most, each document once (cycle
  detection on its resolved location); MAX_DOCUMENTS documents at most in all;
* an ItemCollection's `next` link (GET; a POST search's body is not replayed) is followed
  for MAX_PAGES pages at most, then the run goes on with what it has and says so;
* a document read from a URL may only link to URLs (http(s), s3; relative links resolve
  against it), the rule of remote Items' assets: a server must not point the run at
  local files; documents on s3:// are read with the user's AWS settings (pipeline/inputs/s3.py);
* Items are checked as single Items are, and their assets resolved against the
  document they came from;
* memory stays bounded whatever the documents hold: one document is parsed at a time,
  and the Items found are kept packed (compressed JSON, MAX_KEPT_BYTES in all) until
  their product runs, never as parsed dicts (~20 times their size); hrefs are at most
  MAX_HREF_CHARS long.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pipeline.errors import InputError
from pipeline.inputs.discovery import Product, output_stem, pack_item
from pipeline.urls import redact_url

__all__ = ["CATALOG_TYPES", "MAX_DEPTH", "MAX_DOCUMENTS", "MAX_HREF_CHARS", "MAX_KEPT_BYTES",
           "MAX_PAGES", "catalog_products", "stac_type"]

log = logging.getLogger(__name__)

#: `type` of the STAC documents run as catalogs
CATALOG_TYPES = ("Catalog", "Collection", "FeatureCollection")
#: links followed from the root (catalog -> sub-catalog -> ... -> item)
MAX_DEPTH = 8
#: ItemCollection pages followed by their `next` link
MAX_PAGES = 50
#: documents read in one walk (catalogs, pages and Items together)
MAX_DOCUMENTS = 10_000
#: bytes of Items kept from the walk until they run, packed (discovery.pack_item): what
#: the walk holds at most, besides the one document it is reading (a parsed 8 MiB
#: document costs ~180 MiB while it is read)
MAX_KEPT_BYTES = 256 * 2**20
#: characters of a link's href (URLs of 8 KB are what servers accept; the walk keeps
#: every location it has seen)
MAX_HREF_CHARS = 8192


def read_document(source: str) -> dict[str, Any]:
    """A STAC JSON document (local file, http(s) or s3 URL), bounded and with timeouts;
    InputError if it cannot be read or is not a JSON object."""
    import json
    import urllib.error

    from pipeline.inputs.sources import _short, http_timeout, read_stac_bytes

    try:
        data = json.loads(read_stac_bytes(source))
    except TimeoutError:
        raise InputError(f"cannot read the STAC document: no answer within "
                         f"{http_timeout():g} s", path=source,
                         hint="check the URL and the network; raise GDAL_HTTP_TIMEOUT "
                         "for a slow server (docs/data_sources.md)") from None
    except urllib.error.URLError as exc:
        raise InputError(f"cannot read the STAC document ({_short(str(exc), 200)})",
                         path=source, hint="check the path or URL") from None
    except RecursionError:
        raise InputError("its JSON is nested too deeply to read", path=source,
                         hint="give a STAC Item, Catalog, Collection or ItemCollection"
                         ) from None
    except (OSError, ValueError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(f"cannot read the STAC document ({_short(first, 200)})",
                         path=source, hint="check the path or URL") from None
    if not isinstance(data, dict):
        raise InputError("is JSON but not a STAC document (an object)", path=source,
                         hint="give a STAC Item, Catalog, Collection or ItemCollection")
    return data


def stac_type(source: str) -> str | None:
    """The `type` of the STAC document at `source` ("Feature", "Catalog", ...), None if
    it cannot be read or has none (the single-Item path then reports why)."""
    try:
        kind = read_document(source).get("type")
    except InputError:
        return None
    return kind if isinstance(kind, str) else None


def _link_href(href: Any, base: str) -> str:
    """A link's target resolved against the document `base` it is in: a URL (relative
    against a URL base), or a local path (relative against a local base's folder). A
    document read from a URL may only link to http(s) URLs."""
    from urllib.parse import urlsplit

    from pipeline.inputs.fetch import check_link_target
    from pipeline.inputs.sources import brief, is_remote, join_url

    if not isinstance(href, str) or not href.strip() or len(href) > MAX_HREF_CHARS:
        raise InputError(f"malformed STAC link (href: {brief(href)})", path=base,
                         hint="fix the catalog (https://github.com/radiantearth/stac-spec)")
    if is_remote(base):
        url = "" if href.startswith("/vsi") else join_url(base, href)
        if urlsplit(url).scheme.lower() not in ("http", "https", "s3"):
            raise InputError(
                f"refused: the document was read from a URL and its link "
                f"{brief(redact_url(href))} is not an http(s) or s3 URL (a catalog from "
                "the network may only name URLs)", path=base,
                hint="download the catalog and give the local file")
        check_link_target(base, url, "link names")
        return url
    if "://" in href:
        return href
    if href.startswith("/vsi"):
        raise InputError(f"a STAC link to a GDAL path ({brief(redact_url(href))})", path=base,
                         hint="link to files or URLs")
    path = Path(href) if Path(href).is_absolute() else Path(base).resolve().parent / href
    return str(path.resolve())


def _links(doc: Mapping[str, Any], rel: str) -> list[Any]:
    links = doc.get("links")
    if not isinstance(links, list):
        return []
    return [ln.get("href") for ln in links if isinstance(ln, dict) and ln.get("rel") == rel
            and str(ln.get("method", "GET")).upper() == "GET"]


def _self_href(item: Mapping[str, Any]) -> str | None:
    for href in _links(item, "self"):
        if isinstance(href, str) and href:
            return href
    return None


class _Walk:
    """One bounded walk: documents seen (cycle detection), counts, the products found."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.seen: set[str] = set()
        self.products: list[Product] = []
        self.skipped: list[str] = []
        self.kept = 0  # bytes of the packed Items

    def _key(self, href: str) -> str | None:
        """None if `href` was seen already (a cycle, or two links to one document)."""
        key = href.split("#", 1)[0]
        if key in self.seen:
            return None
        if len(self.seen) >= MAX_DOCUMENTS:
            raise InputError(f"the catalog leads to more than {MAX_DOCUMENTS} documents",
                             path=self.root, hint="run a sub-catalog or a search's "
                             "ItemCollection instead")
        self.seen.add(key)
        return key

    def visit(self, href: str, depth: int, doc: dict[str, Any] | None = None) -> None:
        if self._key(href) is None:
            return
        if doc is None:
            doc = read_document(href)
        kind = doc.get("type")
        if kind == "Feature":
            self.add_item(doc, href, href)
        elif kind == "FeatureCollection":
            self.item_collection(href, doc)
        elif kind in ("Catalog", "Collection"):
            for rel in ("child", "item"):
                for link in _links(doc, rel):
                    target = _link_href(link, href)
                    if depth + 1 > MAX_DEPTH:
                        self.skipped.append(f"{redact_url(target)} (deeper than "
                                            f"{MAX_DEPTH} links)")
                        continue
                    self.visit(target, depth + 1)
        else:
            raise InputError(f"is not a STAC Item, Catalog, Collection or ItemCollection "
                             f"(type {_brief(kind)})", path=href,
                             hint="give a STAC document")

    def item_collection(self, href: str, doc: dict[str, Any]) -> None:
        """The features of an ItemCollection and of its `next` pages (MAX_PAGES)."""
        pages = 1
        while True:
            features = doc.get("features")
            if not isinstance(features, list):
                raise InputError("malformed ItemCollection: features is not a list",
                                 path=href, hint="give a STAC ItemCollection")
            for i, feature in enumerate(features):
                if not isinstance(feature, dict) or feature.get("type") != "Feature":
                    raise InputError(f"malformed ItemCollection: feature {i} is not a STAC "
                                     "Item", path=href, hint="give a STAC ItemCollection")
                self_href = _self_href(feature)
                item_href = _link_href(self_href, href) if self_href else href
                self.add_item(feature, href, item_href)
            nxt = _links(doc, "next")
            if not nxt:
                return
            target = _link_href(nxt[0], href)
            if pages >= MAX_PAGES:
                self.skipped.append(f"{redact_url(target)} (pages after the first "
                                    f"{MAX_PAGES})")
                return
            if self._key(target) is None:  # a page linking back: the walk is done
                return
            doc, href, pages = read_document(target), target, pages + 1

    def add_item(self, item: dict[str, Any], document: str, item_href: str) -> None:
        """Keep the Item packed (`pack_item`: compressed JSON, not the parsed dict), within
        MAX_KEPT_BYTES for the whole walk."""
        ident = item.get("id")
        ident = ident if isinstance(ident, str) and ident else f"item{len(self.products)}"
        packed = pack_item(item)
        self.kept += len(packed)
        if self.kept > MAX_KEPT_BYTES:
            raise InputError(f"the catalog's Items take more than {MAX_KEPT_BYTES // 2**20} "
                             "MiB (compressed) to keep until they run", path=self.root,
                             hint="run a sub-catalog or a search's ItemCollection instead")
        self.products.append(Product(document, ident, output_stem(ident), "stac",
                                     item_json=packed, item_href=item_href))


def _brief(value: Any) -> str:
    from pipeline.errors import brief

    return brief(value)


def catalog_products(source: str, doc: dict[str, Any] | None = None) -> list[Product]:
    """Every Item the STAC Catalog / Collection / ItemCollection at `source` leads to, as
    a Product (module doc: depth, page and document caps, cycles, URL-only links from a
    remote document); InputError if it has no Item. What a cap left out is logged as a
    warning (the CLI prints it)."""
    walk = _Walk(source)
    walk.visit(source, 0, doc)
    for what in walk.skipped:
        log.warning("%s: not followed: %s", redact_url(source), what)
    if not walk.products:
        raise InputError("the STAC document leads to no STAC Item", path=source,
                         hint="check its child / item links or features")
    return walk.products

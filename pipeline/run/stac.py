"""STAC out: a STAC Item beside every output of `pipeline run`, a Collection per directory run.

Why: users find and serve imagery through STAC catalogues; an output that carries its own
Item can be ingested (stac-fastapi, pgSTAC, a static catalogue) without a hand-written
wrapper, and says where it came from (the `derived_from` link) and what made it (the
processing extension, the model's sha256, the settings' hash).

Names: `out/x.tif` -> `out/x.stac.json` (the Item: assets `data` = x.tif, `heatmap` and
`quicklook` when written); a directory run also writes `out/collection.json` linking the
Items of every scene of the run. Both are written atomically (ugatit/io.py).

Everything in the Item is read back from the output COG itself (grid, CRS, the EO2SAR_*
provenance tags), never from the run's memory: one source of truth, and the Item of an
output made by an earlier run (a skipped scene of a directory rerun) is written the same.

Validation without network (`validate`): pystac's JsonSchemaSTACValidator with the core
STAC 1.1.0 schemas that the `pystac-core` wheel ships (pystac/validation/jsonschemas) and
any retrieval of another schema refused, so nothing is downloaded. The projection (v2.0.0)
and processing (v1.2.0) extension schemas are not shipped by any PyPI or npm package we
found (pystac, pystac-core, pystac-ext-*, stac-validator, stac-check, stac-node-validator,
stac-ts; @radiantearth/stac-spec is not on npm), so `validate` checks the core schema and
reports the extensions it could not check; the tests check the extension fields directly.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import rasterio
from rasterio.warp import transform_geom

from pipeline.errors import OutputError
from pipeline.urls import redact_url
from ugatit.io import atomic_write_text

__all__ = [
    "COG_MEDIA_TYPE",
    "COLLECTION_NAME",
    "PROCESSING_EXTENSION",
    "PROJECTION_EXTENSION",
    "add_quicklook",
    "build_collection",
    "build_item",
    "footprint",
    "item_path",
    "validate",
    "write_collection",
    "write_item",
]

COG_MEDIA_TYPE = "image/tiff; application=geotiff; profile=cloud-optimized"
PNG_MEDIA_TYPE = "image/png"
PROJECTION_EXTENSION = "https://stac-extensions.github.io/projection/v2.0.0/schema.json"
PROCESSING_EXTENSION = "https://stac-extensions.github.io/processing/v1.2.0/schema.json"
ITEM_SUFFIX = ".stac.json"
COLLECTION_NAME = "collection.json"
#: points per footprint edge: a reprojected straight edge is curved (UTM -> lon/lat), and
#: a bbox from the 4 corners alone can miss up to ~1e-4 deg of a UTM zone's edge
DENSIFY = 21
SIMPLIFY_DEG = 1e-7
_TAG = "EO2SAR_"


def item_path(output: str | os.PathLike[str]) -> Path:
    """`out/x.tif` -> `out/x.stac.json` (the Item written beside an output)."""
    output = Path(output)
    return output.with_name(output.stem + ITEM_SUFFIX)


def footprint(crs: Any, bounds: Sequence[float]) -> dict[str, Any]:
    """GeoJSON polygon in lon/lat (EPSG:4326) of the raster `bounds` in `crs`, each edge
    densified (DENSIFY points) before reprojection so the bbox holds the curved edges."""
    left, bottom, right, top = bounds
    ring: list[tuple[float, float]] = []
    edges = (((left, top), (right, top)), ((right, top), (right, bottom)),
             ((right, bottom), (left, bottom)), ((left, bottom), (left, top)))
    for (x0, y0), (x1, y1) in edges:
        for i in range(DENSIFY - 1):  # the edge's last point is the next edge's first
            f = i / (DENSIFY - 1)
            ring.append((x0 + f * (x1 - x0), y0 + f * (y1 - y0)))
    ring.append(ring[0])
    geom = {"type": "Polygon", "coordinates": [ring]}
    return transform_geom(crs, "EPSG:4326", geom)


def _geometry_and_bbox(crs: Any, bounds: Sequence[float]) -> tuple[dict[str, Any], list[float]]:
    """(footprint, bbox): the bbox of the densified ring; the geometry simplified to
    1e-7 deg (~1 cm) so a near-straight edge is a few vertices, not DENSIFY."""
    from shapely.geometry import mapping, shape

    dense = shape(footprint(crs, bounds))
    simple = dense.simplify(SIMPLIFY_DEG, preserve_topology=True)
    return dict(mapping(simple)), [round(v, 9) for v in dense.bounds]


def _json_tag(tags: Mapping[str, str], name: str) -> Any:
    text = tags.get(_TAG + name)
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text


_SCALE_TITLE = {"db": " (dB)", "unit": " (unitless, 0-1)", "uint8": " (8-bit, 1-255)"}


def _output_scale(tags: Mapping[str, str]) -> str:
    config = _json_tag(tags, "CONFIG")
    return str(config.get("output_scale", "")) if isinstance(config, dict) else ""


def _href(target: str | os.PathLike[str], start: Path) -> str:
    """A relative href ("./x.tif") for a file beside or under `start`, else absolute."""
    path = Path(target).resolve()
    try:
        rel = path.relative_to(start.resolve())
    except ValueError:
        return str(path)
    return "./" + rel.as_posix()


def _input_href(source: str | os.PathLike[str]) -> str:
    """The input as given when it is a URL or GDAL path (without userinfo and query:
    pipeline/urls.py), else its absolute path."""
    text = str(source)
    if "://" in text or text.startswith("/vsi"):
        return redact_url(text)
    return str(Path(text).resolve())


def _raster_facts(output: Path) -> dict[str, Any]:
    try:
        with rasterio.open(output) as ds:
            return {"crs": ds.crs, "bounds": tuple(ds.bounds), "shape": [ds.height, ds.width],
                    "transform": list(ds.transform)[:6], "tags": ds.tags()}
    except rasterio.errors.RasterioIOError as exc:
        raise OutputError(f"cannot read the output to describe it in STAC ({exc})",
                          path=output, hint="rerun with --overwrite") from None


def build_item(
    output: str | os.PathLike[str],
    *,
    source: str | os.PathLike[str],
    heatmap: str | os.PathLike[str] | None = None,
    quicklook: str | os.PathLike[str] | None = None,
    acquired: datetime | None = None,
    collection: str | None = None,
    collection_href: str | os.PathLike[str] | None = None,
    item_id: str | None = None,
) -> Any:
    """The pystac.Item describing `output` (read from the COG: grid and EO2SAR_* tags).

    `source`: the input as the user gave it (file, URL, STAC Item, product): the
    `derived_from` link. `acquired`: the input's acquisition time when its metadata says
    (STAC Item, Landsat MTL, Sentinel-2 MTD), else the Item's datetime is the time it is
    written (a derived product with no known acquisition time; documented).
    `collection` / `collection_href`: a directory run's Collection id and file.
    """
    import pystac
    from pystac.extensions.projection import ProjectionExtension

    output = Path(output)
    facts = _raster_facts(output)
    crs = facts["crs"]
    geometry, bbox = _geometry_and_bbox(crs, facts["bounds"])
    now = datetime.now(timezone.utc).replace(microsecond=0)
    tags = facts["tags"]
    item = pystac.Item(
        id=item_id or output.stem,
        geometry=geometry,
        bbox=bbox,
        datetime=acquired or now,
        properties={},
        collection=collection,
    )
    proj = ProjectionExtension.ext(item, add_if_missing=True)
    epsg = crs.to_epsg()
    if epsg is not None:
        proj.code = f"EPSG:{epsg}"
    else:
        proj.code = None
        proj.wkt2 = crs.to_wkt()
    proj.shape = facts["shape"]
    proj.transform = facts["transform"]
    item.stac_extensions.append(PROCESSING_EXTENSION)
    item.properties.update(_processing_fields(tags, now, source))
    base = output.parent
    pols = [p for p in tags.get(_TAG + "POLARISATIONS", "").split(",") if p]
    extra: dict[str, Any] = {}
    if pols:
        # the polarisations of a VV/VH model's bands, in band order. The SAR extension is
        # not declared: its schema requires an instrument mode, frequency band and product
        # type, which a SAR-like translation does not have; the field keeps its meaning.
        item.properties["sar:polarizations"] = pols
        unit = {"unit": "dB"} if _output_scale(tags) in ("db", "uint8") else {}
        extra["bands"] = [{"name": p, "description": f"SAR-like {p} backscatter", **unit}
                          for p in pols]
    item.add_asset("data", pystac.Asset(
        href=_href(output, base), media_type=COG_MEDIA_TYPE, roles=["data"],
        title="SAR-like backscatter" + (f" {', '.join(pols)}" if pols else "")
        + _SCALE_TITLE.get(_output_scale(tags), ""), extra_fields=extra,
    ))
    if heatmap is not None:
        item.add_asset("heatmap", pystac.Asset(
            href=_href(heatmap, base), media_type=COG_MEDIA_TYPE, roles=["data"],
            title="CAM attention heatmap of the generator",
        ))
    if quicklook is not None:
        item.add_asset("quicklook", pystac.Asset.from_dict(_quicklook_asset(quicklook, base)))
    item.add_link(pystac.Link("derived_from", _input_href(source),
                              title="optical input this output was translated from"))
    if collection_href is not None:
        href = os.path.relpath(Path(collection_href).resolve(), base.resolve())
        for rel in ("collection", "parent", "root"):
            item.add_link(pystac.Link(rel, Path(href).as_posix(),
                                      media_type="application/json"))
    return item


def _processing_fields(tags: Mapping[str, str], now: datetime, source: Any) -> dict[str, Any]:
    """processing:* (extension v1.2.0) and eo2sar:* fields from the output's tags."""
    from pipeline.run.manifest import software_versions

    versions = software_versions()
    software = {"eo2sar": tags.get(_TAG + "VERSION", versions.get("eo2sar", "unknown"))}
    software.update({k: versions[k] for k in ("torch", "rasterio", "gdal") if k in versions})
    sha = tags.get(_TAG + "MODEL_SHA256", "")
    cfg_hash = tags.get(_TAG + "CONFIG_HASH", "")
    return {
        "processing:software": software,
        "processing:datetime": now.isoformat().replace("+00:00", "Z"),
        "processing:lineage": (
            f"SAR-like translation of the optical input {Path(redact_url(source)).name} by "
            f"{tags.get(_TAG + 'MODEL', 'a U-GAT-IT generator')} (model sha256 {sha}), "
            f"settings hash {cfg_hash}, with eo2sar's scene pipeline"
        ),
        "eo2sar:model_sha256": sha,
        "eo2sar:config_hash": cfg_hash,
        "eo2sar:config": _json_tag(tags, "CONFIG"),
        "eo2sar:scaling": _json_tag(tags, "SCALING"),
        "eo2sar:bands": tags.get(_TAG + "BANDS"),
    }


def write_item(output: str | os.PathLike[str], **kwargs: Any) -> Path:
    """Build the Item of `output` (build_item's arguments) and write it atomically beside
    it as `<stem>.stac.json`; returns its path."""
    item = build_item(output, **kwargs)
    path = item_path(output)
    text = json.dumps(item.to_dict(include_self_link=False, transform_hrefs=False), indent=2)
    atomic_write_text(path, text + "\n")
    return path


def build_collection(
    output_dir: str | os.PathLike[str], items: Iterable[str | os.PathLike[str]],
    *, collection_id: str | None = None, description: str | None = None,
    sources: Iterable[str] = (),
) -> Any:
    """The pystac.Collection of a directory run: an `item` link per Item file, the extent
    the union of their bboxes and datetimes; a `derived_from` link per source (the STAC
    Items or catalog the run read: URLs without their secrets)."""
    import pystac

    output_dir = Path(output_dir)
    links, boxes, times = [], [], []
    for path in sorted(Path(p) for p in items):
        data = json.loads(path.read_text())
        boxes.append(data["bbox"])
        times.append(pystac.utils.str_to_datetime(data["properties"]["datetime"]))
        links.append(pystac.Link("item", _href(path, output_dir),
                                 media_type="application/geo+json", title=data["id"]))
    if boxes:
        bbox = [min(b[0] for b in boxes), min(b[1] for b in boxes),
                max(b[2] for b in boxes), max(b[3] for b in boxes)]
        interval = [min(times), max(times)]
    else:
        bbox, interval = [-180.0, -90.0, 180.0, 90.0], [datetime.now(timezone.utc), None]
    cid = collection_id or output_dir.resolve().name or "eo2sar"
    collection = pystac.Collection(
        id=cid,
        description=description or f"SAR-like rasters made by eo2sar into {cid}",
        extent=pystac.Extent(pystac.SpatialExtent([bbox]),
                             pystac.TemporalExtent([interval])),
        license="other",
        title=f"eo2sar outputs: {cid}",
    )
    for link in links:
        collection.add_link(link)
    for source in dict.fromkeys(sources):  # once each, in order
        collection.add_link(pystac.Link("derived_from", _input_href(source),
                                        media_type="application/json",
                                        title="source STAC document"))
    return collection


def write_collection(output_dir: str | os.PathLike[str],
                     items: Iterable[str | os.PathLike[str]], **kwargs: Any) -> Path:
    """Write `output_dir/collection.json` (atomically) linking the Item files `items`."""
    collection = build_collection(output_dir, items, **kwargs)
    path = Path(output_dir) / COLLECTION_NAME
    data = collection.to_dict(include_self_link=False, transform_hrefs=False)
    atomic_write_text(path, json.dumps(data, indent=2) + "\n")
    return path


def validate(stac: Mapping[str, Any]) -> list[str]:
    """Validate a STAC Item/Collection dict against the core STAC schema, offline.

    Raises pystac.errors.STACValidationError if it is invalid; returns the extension
    schema URIs it could NOT check (not shipped: module docstring). Never downloads.
    """
    from pystac.validation.stac_validator import GetSchemaError, JsonSchemaSTACValidator

    class _Offline(JsonSchemaSTACValidator):
        def _get_schema(self, schema_uri: str) -> dict[str, Any]:
            if schema_uri not in self.schema_cache:
                raise GetSchemaError(schema_uri, LookupError("schema not shipped: offline"))
            return self.schema_cache[schema_uri]

    import pystac

    data = dict(stac)
    kind = pystac.STACObjectType.ITEM if data.get("type") == "Feature" else (
        pystac.STACObjectType.COLLECTION if data.get("type") == "Collection"
        else pystac.STACObjectType.CATALOG)
    _Offline().validate_core(data, kind, data["stac_version"])
    return list(data.get("stac_extensions", []))



def _quicklook_asset(png: str | os.PathLike[str], base: Path) -> dict[str, Any]:
    return {"href": _href(png, base), "type": PNG_MEDIA_TYPE, "roles": ["overview"],
            "title": "optical input beside the SAR-like output"}


def add_quicklook(output: str | os.PathLike[str], png: str | os.PathLike[str]) -> Path | None:
    """Add (or replace) the `quicklook` asset of the Item beside `output`, if there is one
    (`pipeline quicklook` after `pipeline run`); returns the Item's path, or None."""
    path = item_path(output)
    if not path.is_file():
        return None
    data = json.loads(path.read_text())
    data.setdefault("assets", {})["quicklook"] = _quicklook_asset(png, path.parent)
    atomic_write_text(path, json.dumps(data, indent=2) + "\n")
    return path

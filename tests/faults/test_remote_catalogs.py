"""Remote STAC catalogs and ItemCollections, against servers on 127.0.0.1: what a walk of
someone else's documents may and may not do (pipeline/inputs/catalogs.py).

* a signed ItemCollection URL with a `next` page runs every Item, resumes, and no byte of
  the outputs, manifests, report, Items, Collection or the process's output holds the
  URL's userinfo or query;
* `next` pages are followed up to the cap (and a page linking back ends the walk);
* a document read from a URL may link to URLs only (as a remote Item's assets);
* a server that never answers ends the walk with a one-line error, not a hang.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
import rasterio
from rasterio.windows import Window

import pipeline.inputs.catalogs as catalogs
from pipeline.errors import InputError
from pipeline.inputs.catalogs import catalog_products
from pipeline.inputs.sources import resolve_input
from tests.faults.faultlib import run_module
from tests.helpers import SN6, crop, range_server
from tests.products import item_dict

SECRET = "S3CRET"
NET_ENV = {"NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost",
           "http_proxy": "", "HTTP_PROXY": "", "https_proxy": "", "HTTPS_PROXY": ""}


@pytest.fixture
def server(tmp_path, monkeypatch) -> Iterator[tuple[str, Path]]:
    """(base URL, served directory): tests/range_server.py in its own process."""
    for key, value in NET_ENV.items():
        monkeypatch.setenv(key, value)
    root = tmp_path / "www"
    root.mkdir()
    with range_server(root) as url:
        yield url, root


def rgb_assets(www: Path, chip: Path) -> dict:
    """red/green/blue single-band GeoTIFFs under www/assets, as Item assets (relative)."""
    (www / "assets").mkdir(exist_ok=True)
    with rasterio.open(chip) as ds:
        profile = {**ds.profile, "count": 1}
        for i, name in enumerate(("red", "green", "blue"), 1):
            with rasterio.open(www / "assets" / f"{name}.tif", "w", **profile) as out:
                out.write(ds.read(i), 1)
    return {c: (f"assets/{c}.tif", c) for c in ("red", "green", "blue")}


def pages(www: Path, ids: list[list[str]], assets: dict, loop: bool = False) -> None:
    """page1.json ... pageN.json, each an ItemCollection of the Items `ids[i]` linking
    the next page (the last one back to the first with `loop`)."""
    for i, page in enumerate(ids, 1):
        links = []
        if i < len(ids) or loop:
            links.append({"rel": "next", "href": f"page{i % len(ids) + 1}.json"})
        (www / f"page{i}.json").write_text(json.dumps({
            "type": "FeatureCollection", "links": links,
            "features": [item_dict(ident, assets) for ident in page]}))


def test_a_signed_item_collection_runs_resumes_and_keeps_its_secrets(
        server, tiny_checkpoint, tmp_path):
    base, www = server
    chip = crop(SN6, tmp_path / "chip.tif", Window(10, 10, 80, 64))
    pages(www, [["a", "b"], ["c"]], rgb_assets(www, chip))
    host = base.removeprefix("http://")
    url = f"http://alice:{SECRET}pw@{host}/page1.json?sig={SECRET}&token={SECRET}"
    out = tmp_path / "out"
    args = (url, out, "--model", tiny_checkpoint, "--tile-size", "128", "-v")
    proc = run_module("pipeline", "run", *args, **NET_ENV)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(p.name for p in out.glob("*.tif")) == ["a.tif", "b.tif", "c.tif"]
    files = {p.name: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    for data in (*files.values(), proc.stdout.encode(), proc.stderr.encode()):
        assert SECRET.encode() not in data and b"alice" not in data
    collection = json.loads(files["collection.json"])
    assert f"{base}/page1.json" in [ln["href"] for ln in collection["links"]
                                    if ln["rel"] == "derived_from"]
    again = run_module("pipeline", "run", *args, **NET_ENV)
    assert again.returncode == 0, again.stderr[-3000:]
    report = json.loads((out / "eo2sar_run_report.json").read_text())
    assert {s["status"] for s in report["scenes"]} == {"skipped"}


def test_next_pages_are_followed_up_to_the_cap(server, monkeypatch, caplog):
    base, www = server
    pages(www, [["a"], ["b"], ["c"], ["d"]], {}, loop=True)
    # a page linking back to the first ends the walk: each Item once
    assert [p.name for p in catalog_products(f"{base}/page1.json")] == ["a", "b", "c", "d"]
    monkeypatch.setattr(catalogs, "MAX_PAGES", 2)
    with caplog.at_level(logging.WARNING, logger="pipeline.inputs.catalogs"):
        assert [p.name for p in catalog_products(f"{base}/page1.json")] == ["a", "b"]
    assert f"{base}/page3.json (pages after the first 2)" in caplog.text


def test_a_remote_catalog_may_link_only_urls(server, tmp_path):
    base, www = server
    secret = tmp_path / "private.json"
    secret.write_text(json.dumps(item_dict("private", {})))
    for href, what in ((f"file://{secret}", r"is not an http\(s\) or s3 URL"),
                       (f"/vsizip/{secret}", r"is not an http\(s\) or s3 URL"),
                       (str(secret), "cannot read the STAC document")):  # on the server
        (www / "cat.json").write_text(json.dumps({
            "type": "Catalog", "id": "c", "links": [{"rel": "item", "href": href}]}))
        with pytest.raises(InputError, match=what):
            catalog_products(f"{base}/cat.json")
    # an Item of a remote ItemCollection names URLs only, like a remote Item
    (www / "s.json").write_text(json.dumps({"type": "FeatureCollection", "features": [
        item_dict("x", {c: (f"/vsizip/{secret}/{c}.tif", c) for c in ("red", "green",
                                                                       "blue")})]}))
    (product,) = catalog_products(f"{base}/s.json")
    with pytest.raises(InputError, match="an Item from the network may only name URLs"):
        with resolve_input(product.source, item=product.item):
            pass


def test_a_catalog_server_that_never_answers_is_a_one_line_error(stalled, monkeypatch):
    for key, value in {**NET_ENV, "GDAL_HTTP_TIMEOUT": "1"}.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(InputError, match="no answer within 1 s") as info:
        catalog_products(f"{stalled}/catalog.json")
    assert "GDAL_HTTP_TIMEOUT" in info.value.format()

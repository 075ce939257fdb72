"""Remote inputs read in place through GDAL's /vsicurl/: a COG and a STAC Item over HTTP.

The server is tests/range_server.py: HTTP/1.1 with byte ranges on 127.0.0.1, in its own
process, stopped at the end of each test. Nothing leaves the machine: the proxy variables
are cleared so curl talks to loopback directly.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner
from rasterio.windows import Window

from pipeline.cli import main
from pipeline.inputs.sources import gdal_path, product_kind
from tests.helpers import SN6, cog, crop, range_server
from tests.products import split_bands, stac_item


@pytest.fixture
def server(tmp_path, monkeypatch) -> Iterator[tuple[str, Path]]:
    """(base URL, served directory) of a range-capable server on loopback, in its own
    process (tests/range_server.py), stopped at the end of the test."""
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY",
                "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    root = tmp_path / "www"
    root.mkdir()
    with range_server(root) as url:
        yield url, root


def ranged_requests(root: Path) -> list[str]:
    log = root.parent / "requests.log"
    lines = log.read_text().splitlines() if log.exists() else []
    return [line for line in lines if "bytes=" in line]


def invoke(*args):
    return CliRunner().invoke(main, ["run", *map(str, args)])


def test_gdal_path_maps_urls_to_virtual_file_systems():
    assert gdal_path("https://h/a/x.tif") == "/vsicurl/https://h/a/x.tif"
    assert gdal_path("s3://bucket/k/x.tif") == "/vsis3/bucket/k/x.tif"
    assert gdal_path("gs://bucket/x.tif") == "/vsigs/bucket/x.tif"
    assert gdal_path("/vsizip/a.zip/x.tif") == "/vsizip/a.zip/x.tif"
    assert gdal_path("local/x.tif") == "local/x.tif"
    assert product_kind("https://h/x.tif") == "remote"
    assert product_kind("https://h/catalog/x.json?sig=1") == "stac"
    assert product_kind("https://h/api/collections/s2/items/S2A_1") == "stac"  # STAC API


def test_remote_cog_gives_the_local_files_output(server, tiny_checkpoint, tmp_path):
    base, www = server
    local = cog(crop(SN6, tmp_path / "chip.tif", Window(0, 0, 150, 120)), www / "chip.tif")
    out_local, out_remote = tmp_path / "local.tif", tmp_path / "remote.tif"
    assert invoke(local, out_local, "--model", tiny_checkpoint, "-q").exit_code == 0
    result = invoke(f"{base}/chip.tif", out_remote, "--model", tiny_checkpoint)
    assert result.exit_code == 0, result.output
    assert f"input: remote raster {base}/chip.tif: read in place through vsicurl" \
        in result.stderr
    assert ranged_requests(www)  # read by byte ranges
    with rasterio.open(out_local) as a, rasterio.open(out_remote) as b:
        assert (a.crs, a.transform, a.shape, a.dtypes) == (b.crs, b.transform, b.shape,
                                                           b.dtypes)
        assert a.read().tobytes() == b.read().tobytes()  # the same pixel bytes
        # the same provenance, but for the input's name: the URL the user gave, not the
        # temporary VRT that wraps it
        ta, tb = a.tags(), b.tags()
        assert (ta.pop("EO2SAR_INPUT"), tb.pop("EO2SAR_INPUT")) == ("chip.tif",
                                                                    f"{base}/chip.tif")
        assert ta == tb
    item = json.loads((tmp_path / "remote.stac.json").read_text())
    (link,) = [ln for ln in item["links"] if ln["rel"] == "derived_from"]
    assert link["href"] == f"{base}/chip.tif"


def test_stac_item_url_with_relative_asset_hrefs(server, tiny_checkpoint, tmp_path):
    base, www = server
    chip = crop(SN6, tmp_path / "chip.tif", Window(10, 10, 80, 64))
    split_bands(chip, www / "assets")  # red.tif, green.tif, blue.tif
    stac_item(www / "item.json", {c: (f"assets/{c}.tif", c) for c in ("blue", "green", "red")},
              ident="remote-item")
    out_ref, out = tmp_path / "ref.tif", tmp_path / "out.tif"
    assert invoke(chip, out_ref, "--model", tiny_checkpoint, "-q").exit_code == 0
    result = invoke(f"{base}/item.json", out, "--model", tiny_checkpoint)
    assert result.exit_code == 0, result.output
    assert "STAC Item remote-item: red=red, green=green, blue=blue" in result.stderr
    with rasterio.open(out_ref) as a, rasterio.open(out) as b:
        np.testing.assert_array_equal(a.read(), b.read())


def test_missing_remote_file_and_remote_output_are_refused(server, tiny_checkpoint,
                                                            tmp_path):
    base, _ = server
    result = invoke(f"{base}/nothing.tif", tmp_path / "o.tif", "--model", tiny_checkpoint)
    assert result.exit_code == 1
    assert "cannot open the remote raster" in result.stderr and "credentials" in result.stderr
    result = invoke(SN6, "s3://bucket/out.tif", "--model", tiny_checkpoint)
    assert result.exit_code == 1
    assert "outputs are written to local files" in result.stderr
    assert list(tmp_path.glob("o*")) == []

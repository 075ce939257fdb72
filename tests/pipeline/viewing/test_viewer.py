"""The HTML viewer (pipeline/viewing/viewer.py, pipeline/viewing/viewer_page.py, `pipeline view`).

Python-level tests decode the page's embedded layers and compare them with the rasters;
the browser test drives the real page in headless Chromium over the DevTools protocol
(tests/chromium.py) and is skipped where Chromium is not installed
(Debian: `apt-get install chromium`, or `make chromium`).
"""

from __future__ import annotations

import base64
import io
import json
import re
import threading
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner
from PIL import Image
from rasterio.transform import xy
from rasterio.warp import calculate_default_transform, reproject
from rasterio.warp import transform as warp_transform
from rasterio.windows import Window

from pipeline.cli import main as pipeline_cli
from pipeline.config import load_config
from pipeline.inputs.radiometry import decimated_shape, read_masked, to_unit
from pipeline.run.scene import run_scene
from pipeline.viewing.quicklook import run_scaling, to_display
from pipeline.viewing.viewer import (
    build_page,
    lonlat_grid,
    page_server,
    view_directory,
    write_viewer,
)
from pipeline.viewing.viewer_page import CSP, render_page
from tests.chromium import Chromium, chromium_or_skip
from tests.helpers import L8, SN6, crop


def page_data(text: str) -> dict:
    m = re.search(r'<script type="application/json" id="eo2sar-data">(.*?)</script>', text,
                  re.S)
    assert m, "no data block in the page"
    return json.loads(m.group(1))


def layer_rgba(data: dict, layer_id: str) -> np.ndarray:
    """A layer of the page decoded to [H, W, 4] uint8."""
    (src,) = [la["src"] for la in data["layers"] if la["id"] == layer_id]
    png = base64.b64decode(src.split(",", 1)[1])
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGBA"))


@pytest.fixture(scope="module")
def l8_run(tiny_checkpoint, tmp_path_factory) -> dict[str, Path]:
    """A 360 x 300 crop of the Landsat 8 scene (zero collar top-left) run with a heatmap."""
    d = tmp_path_factory.mktemp("view")
    scene = crop(L8, d / "scene.tif", Window(0, 0, 360, 300))
    out, heat = d / "out.tif", d / "heat.tif"
    run_scene(scene, out, model_path=tiny_checkpoint, heatmap_path=heat, progress=False,
              config=load_config(None, {"bands": (3, 2, 1), "tile_size": 128,
                                        "overlap": 32}))
    return {"scene": scene, "out": out, "heat": heat, "dir": d}



def to_lonlat(path, dst):
    """`path` reprojected to EPSG:4326 at `dst`: (dst, width, height)."""
    with rasterio.open(path) as src:
        t, w, h = calculate_default_transform(src.crs, "EPSG:4326", src.width, src.height,
                                              *src.bounds)
        profile = {**src.profile, "crs": "EPSG:4326", "transform": t, "width": w,
                   "height": h}
        with rasterio.open(dst, "w", **profile) as out:
            for b in range(1, src.count + 1):
                reproject(rasterio.band(src, b), rasterio.band(out, b))
    return dst, w, h

def test_layers_are_the_rasters_on_the_output_grid(l8_run):
    """Each layer has the decimated output shape; the optical one is the input scaled as
    the run recorded (exactly the shared radiometry); nodata is transparent everywhere."""
    data = page_data(build_page(l8_run["out"], input_path=l8_run["scene"],
                                heatmap=l8_run["heat"], max_size=200))
    shape = decimated_shape(360, 300, 200)
    assert data["image"] == [shape[1], shape[0]]
    assert (data["width"], data["height"]) == (360, 300)
    assert [la["id"] for la in data["layers"]] == ["optical", "sar", "heat"]
    scaling, bands = run_scaling(l8_run["out"])
    assert bands == (3, 2, 1)
    with rasterio.open(l8_run["scene"]) as src, rasterio.open(l8_run["out"]) as out:
        raw, valid = read_masked(src, bands, out_shape=shape)
        _, out_valid = read_masked(out, (1,), out_shape=shape, zero_fill=False)
        assert data["transform"] == list(out.transform.to_gdal())
    assert out_valid.any() and not out_valid.all()  # the collar is nodata
    expect = to_display(to_unit(raw, valid & out_valid, scaling))
    optical = layer_rgba(data, "optical")
    shown = optical[..., 3] == 255
    np.testing.assert_array_equal(optical[..., :3][shown], expect[shown])
    for layer in ("optical", "sar", "heat"):
        rgba = layer_rgba(data, layer)
        assert rgba.shape == (*shape, 4)
        if layer == "optical":
            # the input's own mask, decimated from full resolution, and the output's,
            # read from its overview, may differ by a pixel along the collar's edge
            assert not (rgba[..., 3] == 255)[~out_valid].any()
            assert (rgba[..., 3] == 255)[out_valid].mean() > 0.99
        else:
            np.testing.assert_array_equal(rgba[..., 3] == 255, out_valid)
    sar = layer_rgba(data, "sar")
    assert (sar[..., 0] == sar[..., 1]).all() and sar[..., 0][out_valid].std() > 10  # gray
    heat = layer_rgba(data, "heat")[out_valid]
    assert np.ptp(heat[:, 2].astype(int)) > 100  # jet: blue where low, not where high


def test_page_is_self_contained(l8_run, tmp_path):
    """No URL that would need a network; the CSP forbids loading anything anyway."""
    page = write_viewer(l8_run["out"], tmp_path / "v.html", input_path=l8_run["scene"],
                        max_size=64)
    text = page.read_text()
    assert f'content="{CSP}"' in text and "default-src 'none'" in CSP
    code = re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "", text)
    assert len(re.findall("data:image/png;base64,", text)) == 2  # optical, SAR-like
    assert not re.search(r"(?:https?:)?//[a-z0-9]", code, re.I)
    assert "<script src" not in text and "<link" not in text


def test_names_cannot_break_out_of_the_page():
    """A name with `</script>`, markup or a placeholder stays text (file names are the
    user's: `<` and `>` are legal on Linux)."""
    weird = "a</script><b>__DATA__ & __CSP__"
    text = render_page(weird, {"title": weird, "notes": [weird]})
    assert page_data(text) == {"title": weird, "notes": [weird]}
    head = text.split("<body>")[0]
    assert "<b>" not in head and "<title>a&lt;/script&gt;&lt;b&gt;__DATA__ &amp; __CSP__" in head
    assert text.count("</script>") == 2  # the data block's and the code's


HOSTILE_UNIT = "<!--<script>"


def with_unit(out: Path, dst: Path, unit: str) -> Path:
    """A copy of the output `out` whose band 1 has the unit `unit` (what the page's legend
    prints: text a folder's author controls)."""
    import shutil

    shutil.copyfile(out, dst)
    with rasterio.open(dst, "r+", IGNORE_COG_LAYOUT_BREAK="YES") as ds:
        ds.set_band_unit(1, unit)
    return dst


def test_comment_and_script_text_cannot_change_the_script_block(l8_run, tmp_path):
    """`<!--<script>` in a band unit (or any string) once put the HTML parser in the
    script's "double escaped" state, where the page's own `</script>` did not end the
    data block: every `<`, `>`, `&` of the JSON is now a \\u escape."""
    hostile = with_unit(l8_run["out"], tmp_path / "u.tif", HOSTILE_UNIT)
    text = build_page(hostile, max_size=32)
    block = text.split('id="eo2sar-data">', 1)[1].split("</script>", 1)[0]
    assert not set("<>&") & set(block)
    data = page_data(text)
    assert HOSTILE_UNIT in data["layers"][0]["legend"]  # the same string for JSON.parse
    weird = "x<!--<script>y</script>&amp;"
    assert page_data(render_page("t", {"notes": [weird]})) == {"notes": [weird]}


def test_optical_warped_onto_the_output_grid(l8_run, tmp_path):
    """An input in another CRS (here lon/lat) is warped onto the output grid: it lines
    up with the same-grid layer (high correlation), unlike a copy shifted by 4 px."""
    geo, w, h = to_lonlat(l8_run["scene"], tmp_path / "geo.tif")
    same = layer_rgba(page_data(build_page(l8_run["out"], input_path=l8_run["scene"])),
                      "optical")
    data = page_data(build_page(l8_run["out"], input_path=geo))
    warped = layer_rgba(data, "optical")
    assert "warped onto the output grid" in data["layers"][0]["legend"]
    assert warped.shape == same.shape
    both = (same[..., 3] == 255) & (warped[..., 3] == 255)
    assert both.mean() > 0.5
    a, b = same[..., 0].astype(float), warped[..., 0].astype(float)
    aligned = np.corrcoef(a[both], b[both])[0, 1]
    shifted = np.roll(b, 4, axis=1)
    both_s = both & np.roll(both, 4, axis=1)
    assert aligned > 0.9 and aligned > np.corrcoef(a[both_s], shifted[both_s])[0, 1] + 0.05


def test_lonlat_grid_matches_the_projection(l8_run):
    """Corner nodes are the exact lon/lat of the transform's corners; anywhere inside,
    bilinear interpolation is within (twice) the error measured at cell centres."""
    with rasterio.open(l8_run["out"]) as ds:
        g = lonlat_grid(ds, cells=8)
        x0, y0 = xy(ds.transform, 0, 0, offset="ul")
        lon0, lat0 = warp_transform(ds.crs, "EPSG:4326", [x0], [y0])
        rng = np.random.default_rng(0)
        cols, rows = rng.uniform(0, ds.width, 200), rng.uniform(0, ds.height, 200)
        xs, ys = xy(ds.transform, rows, cols, offset="ul")
        lon, lat = warp_transform(ds.crs, "EPSG:4326", list(xs), list(ys))
        w, h = ds.width, ds.height
    assert g["n"] == 8 and len(g["lon"]) == 9 and len(g["lon"][0]) == 9
    assert g["lon"][0][0] == pytest.approx(lon0[0], abs=1e-9)
    assert g["lat"][0][0] == pytest.approx(lat0[0], abs=1e-9)
    assert 0 <= g["error_m"] < 0.05  # 1.7 cm measured: 1.3 km cells of a smooth UTM
    fx, fy = cols / w * 8, rows / h * 8
    j, i = np.minimum(fx.astype(int), 7), np.minimum(fy.astype(int), 7)
    u, v = fx - j, fy - i
    glon, glat = np.array(g["lon"]), np.array(g["lat"])

    def bilinear(a: np.ndarray) -> np.ndarray:
        return ((1 - v) * ((1 - u) * a[i, j] + u * a[i, j + 1])
                + v * ((1 - u) * a[i + 1, j] + u * a[i + 1, j + 1]))

    lat = np.array(lat)
    err_m = np.hypot((bilinear(glon) - lon) * np.cos(np.radians(lat)),
                     bilinear(glat) - lat) * 111_320
    assert err_m.max() <= 2 * g["error_m"] + 1e-6


def test_cli_writes_the_page_and_rejects_bad_options(l8_run, tmp_path):
    page = tmp_path / "p.html"
    res = CliRunner().invoke(pipeline_cli, [
        "view", str(l8_run["out"]), "--input", str(l8_run["scene"]), "--heatmap",
        str(l8_run["heat"]), "--out", str(page), "--max-size", "100"])
    assert res.exit_code == 0, res.output
    data = page_data(page.read_text())
    assert [la["id"] for la in data["layers"]] == ["optical", "sar", "heat"]
    assert data["image"] == [100, 83]
    bad = CliRunner().invoke(pipeline_cli, ["view", str(l8_run["out"]), "--max-size", "4"])
    assert bad.exit_code == 2 and "--max-size" in bad.output
    missing = CliRunner().invoke(pipeline_cli, ["view", str(tmp_path / "nope.tif")])
    assert missing.exit_code == 1 and "nope.tif" in missing.output
    bands = CliRunner().invoke(pipeline_cli, ["view", str(l8_run["out"]), "--input",
                                              str(l8_run["scene"]), "--bands", "3,2,9"])
    assert bands.exit_code == 1 and "band(s) [9]" in bands.output
    # a heatmap of another run (another grid) is refused rather than stretched onto it
    other = crop(l8_run["heat"], tmp_path / "other.tif", Window(10, 10, 100, 100))
    heat = CliRunner().invoke(pipeline_cli, ["view", str(l8_run["out"]), "--heatmap",
                                             str(other)])
    assert heat.exit_code == 1 and "not on the output's grid" in heat.output
    assert not (l8_run["out"].with_suffix(".html")).exists()  # nothing written


def test_directory_index_links_a_page_per_output(tiny_checkpoint, tmp_path):
    """`pipeline view OUTDIR` after a directory run: index.html links one page per output;
    each page finds its input through the run's manifest and its NAME.heatmap.tif."""
    scenes, out = tmp_path / "scenes", tmp_path / "out"
    scenes.mkdir()
    crop(SN6, scenes / "a.tif", Window(0, 0, 96, 96))
    crop(SN6, scenes / "b.tif", Window(100, 100, 96, 96))
    res = CliRunner().invoke(pipeline_cli, ["run", str(scenes), str(out), "--model",
                                            str(tiny_checkpoint), "--heatmap", "on", "-q"])
    assert res.exit_code == 0, res.output
    index = view_directory(out, max_size=48)
    links = re.findall(r'href="([^"]+)"', index.read_text())
    assert links == ["a.html", "b.html"]
    for name in links:
        data = page_data((out / name).read_text())
        assert [la["id"] for la in data["layers"]] == ["optical", "sar", "heat"]


# --------------------------------------------------------------------------------------
# In a real browser

@pytest.fixture
def chromium() -> str:
    """The system Chromium; skipped without it, a failure where EO2SAR_REQUIRE_CHROMIUM=1
    (CI: .ci/run installs it and sets that)."""
    return chromium_or_skip()


def image_box(browser: Chromium) -> tuple[int, int, int, int]:
    """Viewport pixels (left, top, right, bottom) of the scene on the canvas, 2 px in."""
    v = browser.evaluate("JSON.parse(JSON.stringify(window.eo2sarViewer.view))")
    r = browser.rect("#map")
    iw, ih = browser.evaluate("[JSON.parse(document.getElementById('eo2sar-data')"
                              ".textContent).image[0], JSON.parse(document.getElementById("
                              "'eo2sar-data').textContent).image[1]]")
    left, top = r["left"] + v["x"], r["top"] + v["y"]
    return (int(left) + 2, int(top) + 2, int(left + iw * v["s"]) - 2,
            int(top + ih * v["s"]) - 2)


BACKGROUND = (0x1B, 0x1D, 0x21)  # the page's background, seen through nodata


def colourful(pixels: np.ndarray) -> float:
    """Mean spread between the RGB channels (0 for gray) of the pixels that are not the
    page's background."""
    p = pixels.astype(int)
    scene = (p != BACKGROUND).any(axis=-1)
    assert scene.mean() > 0.3
    return float((p.max(axis=-1) - p.min(axis=-1))[scene].mean())


def test_viewer_in_headless_chromium(l8_run, tmp_path, chromium):
    """The page loads without a console error; the optical, SAR-like and heatmap layers
    render and differ where the layers differ; clicking the slider moves the swipe; the
    checkbox shows the heatmap; wheel zooms about the cursor, a drag pans; the lon/lat
    under the cursor is the projection's to the stated accuracy."""
    page = write_viewer(l8_run["out"], tmp_path / "v.html", input_path=l8_run["scene"],
                        heatmap=l8_run["heat"], max_size=300)
    with Chromium(chromium, width=900, height=640) as browser:
        browser.open(page.as_uri())
        browser.wait_for("document.body.dataset.ready === '1'")
        left, top, right, bottom = image_box(browser)
        assert right - left > 200 and bottom - top > 150

        def scene() -> np.ndarray:
            return browser.screenshot()[top:bottom, left:right]

        half = scene()
        slider = browser.rect("#swipe")
        yc = slider["top"] + slider["height"] / 2
        browser.click(slider["left"] + 1, yc)   # far left: SAR-like everywhere
        assert browser.evaluate("window.eo2sarViewer.state.swipe") < 0.05
        sar = scene()
        browser.click(slider["right"] - 1, yc)  # far right: optical everywhere
        assert browser.evaluate("window.eo2sarViewer.state.swipe") > 0.95
        optical = scene()
        # the scene (valid part) is coloured in optical, gray in SAR-like; the collar
        # (transparent in both) shows the same page background
        assert colourful(sar) < 1.0 and colourful(optical) > 10
        differ = np.abs(sar.astype(int) - optical.astype(int)).sum(axis=-1) > 30
        assert differ.mean() > 0.3
        # the half-way swipe showed optical left of the line and SAR-like right of it
        split = int(0.5 * browser.rect("#map")["width"]) - left
        assert 20 < split < half.shape[1] - 20
        np.testing.assert_allclose(half[:, : split - 3], optical[:, : split - 3], atol=2)
        np.testing.assert_allclose(half[:, split + 3:], sar[:, split + 3:], atol=2)

        check = browser.rect("#heatOn")
        browser.click(check["left"] + check["width"] / 2, check["top"] + check["height"] / 2)
        assert browser.evaluate("window.eo2sarViewer.state.heatOn") is True
        heat = scene()
        assert colourful(heat) > 10 and np.abs(heat.astype(int) - optical).mean() > 5

        # zoom: the image point under the cursor stays under it
        # whole pixels: mouse events carry integer clientX/Y
        px, py = (left + right) // 2, (top + bottom) // 2
        m = browser.rect("#map")
        before = browser.evaluate(f"window.eo2sarViewer.toPixel({px - m['left']}, "
                                  f"{py - m['top']})")
        s0 = browser.evaluate("window.eo2sarViewer.view.s")
        browser.mouse("mouseWheel", px, py, deltaX=0, deltaY=-200)
        browser.wait_for(f"window.eo2sarViewer.view.s > {s0}")
        after = browser.evaluate(f"window.eo2sarViewer.toPixel({px - m['left']}, "
                                 f"{py - m['top']})")
        assert browser.evaluate("window.eo2sarViewer.view.s") == pytest.approx(s0 * 1.44)
        assert after == pytest.approx(before, abs=1e-6)
        zoomed = scene()
        assert np.abs(zoomed.astype(int) - heat).mean() > 5
        # pan: a drag moves the view by the drag
        x0 = browser.evaluate("window.eo2sarViewer.view.x")
        y0 = browser.evaluate("window.eo2sarViewer.view.y")
        browser.drag((px, py), (px + 60, py - 40))
        assert browser.evaluate("window.eo2sarViewer.view.x") == pytest.approx(x0 + 60)
        assert browser.evaluate("window.eo2sarViewer.view.y") == pytest.approx(y0 - 40)

        # lon/lat under the cursor
        qx, qy = px + 17, py + 11
        browser.mouse("mouseMoved", qx, qy)
        text = browser.evaluate("document.getElementById('coords').textContent")
        col, row = browser.evaluate(f"window.eo2sarViewer.toPixel({qx - m['left']}, "
                                    f"{qy - m['top']})")
        errors = browser.errors()
    got = re.search(r"lon (-?[\d.]+)\D+lat (-?[\d.]+)\D+x (-?[\d.]+)\s+y (-?[\d.]+)", text)
    assert got, text
    with rasterio.open(l8_run["out"]) as ds:
        x, y = xy(ds.transform, row, col, offset="ul")
        lon, lat = warp_transform(ds.crs, "EPSG:4326", [x], [y])
    assert float(got[3]) == pytest.approx(x, abs=0.006)  # printed with 2 decimals
    assert float(got[4]) == pytest.approx(y, abs=0.006)
    # 6 printed decimals (<= 5e-7 deg) + the grid's interpolation error (mm here)
    assert float(got[1]) == pytest.approx(lon[0], abs=1e-6)
    assert float(got[2]) == pytest.approx(lat[0], abs=1e-6)
    assert errors == []


def test_console_errors_are_caught(tmp_path, chromium):
    """The harness is not blind: a page with a script error reports it."""
    bad = tmp_path / "bad.html"
    bad.write_text("<html><body><script>console.error('boom'); undefinedCall();</script>"
                   "</body></html>")
    with Chromium(chromium, width=300, height=200) as browser:
        browser.open(bad.as_uri())
        errors = browser.errors()
    assert any("boom" in e for e in errors) and any("undefinedCall" in e for e in errors)


def test_hostile_unit_text_leaves_the_page_working_in_chromium(l8_run, tmp_path, chromium):
    """The page with `<!--<script>` in its band unit loads, runs its script and shows
    the unit as text, without a console error."""
    hostile = with_unit(l8_run["out"], tmp_path / "u.tif", HOSTILE_UNIT)
    page = write_viewer(hostile, tmp_path / "u.html", max_size=64)
    with Chromium(chromium, width=600, height=400) as browser:
        browser.open(page.as_uri())
        browser.wait_for("document.body.dataset.ready === '1'")
        legend = browser.evaluate("document.getElementById('legend').textContent")
        errors = browser.errors()
    assert HOSTILE_UNIT in legend and errors == []


def test_page_server_serves_the_page_on_loopback(l8_run, tmp_path):
    """--serve: the page's bytes over http on 127.0.0.1 (and nothing but loopback)."""
    page = write_viewer(l8_run["out"], tmp_path / "v.html", max_size=32)
    httpd, url = page_server(page)
    assert httpd.server_address[0] == "127.0.0.1" and url.endswith("/v.html")
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            assert r.read() == page.read_bytes()
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=10)


def test_warped_input_is_transparent_where_it_has_no_data(tiny_checkpoint, tmp_path):
    """An 8-bit input in lon/lat that covers only the west half of the output: the east
    half of the optical layer is transparent (not black: 0 is a valid 8-bit value)."""
    out = tmp_path / "out.tif"
    run_scene(SN6, out, model_path=tiny_checkpoint, config=load_config(None, {}),
              progress=False)
    geo, w, h = to_lonlat(SN6, tmp_path / "geo.tif")
    west = crop(geo, tmp_path / "west.tif", Window(0, 0, w // 2, h))
    with rasterio.open(west) as ds:
        assert ds.dtypes[0] == "uint8" and ds.nodata is None
    alpha = layer_rgba(page_data(build_page(out, input_path=west)), "optical")[..., 3]
    cols = alpha.shape[1]
    assert (alpha[:, : cols // 2 - 10] == 255).mean() > 0.95
    assert (alpha[:, cols // 2 + 10:] == 0).all()


def test_rewriting_a_private_page_keeps_it_private(l8_run, tmp_path):
    """`pipeline view` over a page its owner made 0600 leaves it 0600 (was: 0644)."""
    page = tmp_path / "p.html"
    args = ["view", str(l8_run["out"]), "--out", str(page), "--max-size", "32"]
    assert CliRunner().invoke(pipeline_cli, args).exit_code == 0
    page.chmod(0o600)
    res = CliRunner().invoke(pipeline_cli, args)
    assert res.exit_code == 0, res.output
    assert page.stat().st_mode & 0o777 == 0o600

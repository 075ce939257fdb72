"""The viewer's HTML page: one self-contained file, hand-written canvas viewer, no library.

Kept apart from pipeline/viewing/viewer.py (which reads rasters and fills the page) because it is
mostly HTML, CSS and JavaScript. Everything is inline: the page's Content-Security-Policy
allows no network at all (only inline script and style, and `data:` images), so the page
works offline, from a file:// URL, and cannot leak what it shows.

The data arrives as one JSON object in `<script type="application/json">`:
  title, width/height (full-resolution output grid), image [cols, rows] of the layers,
  layers: [{id, label, src (PNG data URI), legend}], crs, transform (GDAL order, pixel
  -> CRS), lonlat: {n, lon: [[...]], lat: [[...]], error_m} (a (n+1) x (n+1) grid of
  lon/lat at evenly spaced pixel positions, bilinearly interpolated under the cursor)
  or null, notes: [text].
Layers `optical` (left of the swipe line), `sar` (right of it) and `heat` (over both,
toggle and opacity; the URL fragment `#swipe=0.3&heat=1&alpha=0.5` sets them) are drawn
on one canvas with one view transform (zoom, pan), so they stay on the same grid
whatever the view. `window.eo2sarViewer` exposes the view state
and the pixel/lon-lat functions for tests and for scripting.
"""

from __future__ import annotations

import html
import json
import re
from typing import Any

CSP = ("default-src 'none'; img-src data:; style-src 'unsafe-inline'; "
       "script-src 'unsafe-inline'")

PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="__CSP__">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>__TITLE__</title>
<style>
  html, body { margin: 0; height: 100%; background: #1b1d21; color: #e8e8e8;
    font: 13px/1.35 system-ui, -apple-system, "Segoe UI", sans-serif; }
  body { display: flex; flex-direction: column; }
  header { display: flex; flex-wrap: wrap; gap: 6px 18px; align-items: center;
    padding: 7px 12px; background: #2a2d33; border-bottom: 1px solid #3b3f46; }
  header h1 { font-size: 14px; margin: 0 8px 0 0; font-weight: 600; }
  header label { display: inline-flex; align-items: center; gap: 6px; }
  header button { background: #3b3f46; color: #e8e8e8; border: 1px solid #555a63;
    border-radius: 3px; padding: 2px 9px; font: inherit; cursor: pointer; }
  #swipe { width: 200px; }
  #heatAlpha { width: 90px; }
  main { position: relative; flex: 1; min-height: 200px; overflow: hidden; }
  canvas { position: absolute; inset: 0; width: 100%; height: 100%; cursor: grab;
    touch-action: none; }
  canvas.dragging { cursor: grabbing; }
  .tag { position: absolute; top: 8px; padding: 2px 7px; background: rgba(0,0,0,.6);
    border-radius: 3px; pointer-events: none; }
  #tagLeft { left: 8px; } #tagRight { right: 8px; }
  footer { display: flex; flex-wrap: wrap; gap: 4px 18px; padding: 5px 12px;
    background: #2a2d33; border-top: 1px solid #3b3f46; font-size: 12px; }
  #coords { font-variant-numeric: tabular-nums; min-width: 330px; }
  .bar { display: inline-block; width: 80px; height: 9px; vertical-align: middle;
    border: 1px solid #666; margin: 0 4px; }
  .muted { color: #a0a4ab; }
  .legendItem { margin-right: 16px; }
</style>
</head>
<body>
<header>
  <h1 id="title"></h1>
  <label id="swipeBox">optical <input type="range" id="swipe" min="0" max="1000"
    value="500" aria-label="swipe between optical and SAR-like"> SAR-like</label>
  <label id="heatBox"><input type="checkbox" id="heatOn"> heatmap
    <input type="range" id="heatAlpha" min="0" max="100" value="60"
    aria-label="heatmap opacity"></label>
  <span><button id="zoomIn" title="zoom in">+</button>
    <button id="zoomOut" title="zoom out">&minus;</button>
    <button id="fit" title="whole scene">fit</button></span>
</header>
<main>
  <canvas id="map"></canvas>
  <span class="tag" id="tagLeft">optical</span>
  <span class="tag" id="tagRight">SAR-like</span>
</main>
<footer>
  <span id="coords" class="muted">move the pointer over the image</span>
  <span id="legend"></span>
  <span id="notes" class="muted"></span>
</footer>
<script type="application/json" id="eo2sar-data">__DATA__</script>
<script>
"use strict";
(function () {
  const D = JSON.parse(document.getElementById("eo2sar-data").textContent);
  const canvas = document.getElementById("map");
  const ctx = canvas.getContext("2d");
  const $ = (id) => document.getElementById(id);
  const iw = D.image[0], ih = D.image[1];
  const layers = {};
  const view = { s: 1, x: 0, y: 0 };      // screen px = s * image px + (x, y)
  const state = { swipe: 0.5, heatOn: false, heatAlpha: 0.6 };
  let dpr = 1;

  $("title").textContent = D.title;
  $("notes").textContent = D.notes.join(" \\u00b7 ");
  if (!D.layers.some((l) => l.id === "optical")) {
    $("swipeBox").style.display = "none"; $("tagLeft").style.display = "none";
    state.swipe = 0;
  }
  if (!D.layers.some((l) => l.id === "heat")) { $("heatBox").style.display = "none"; }
  const legend = $("legend");
  for (const l of D.layers) {
    const item = document.createElement("span");
    item.textContent = l.label + ": " + l.legend;
    if (l.id === "heat") {
      const bar = document.createElement("span");
      bar.className = "bar";
      bar.style.background = "linear-gradient(90deg,#00007f,#0000ff,#00ffff,#7fff7f,"
        + "#ffff00,#ff0000,#7f0000)";
      item.appendChild(bar);
    }
    item.className = "legendItem";
    legend.appendChild(item);
  }
  // initial state from the URL fragment, e.g. page.html#swipe=0.3&heat=1&alpha=0.5
  const params = new URLSearchParams(window.location.hash.slice(1));
  if (params.has("swipe") && $("swipeBox").style.display !== "none") {
    state.swipe = Math.min(Math.max(Number(params.get("swipe")) || 0, 0), 1);
    $("swipe").value = Math.round(state.swipe * 1000);
  }
  if (params.get("heat") === "1") { state.heatOn = true; $("heatOn").checked = true; }
  if (params.has("alpha")) {
    state.heatAlpha = Math.min(Math.max(Number(params.get("alpha")) || 0, 0), 1);
    $("heatAlpha").value = Math.round(state.heatAlpha * 100);
  }

  function resize() {
    dpr = window.devicePixelRatio || 1;
    const r = canvas.getBoundingClientRect();
    canvas.width = Math.max(1, Math.round(r.width * dpr));
    canvas.height = Math.max(1, Math.round(r.height * dpr));
  }
  function fit() {
    const w = canvas.width / dpr, h = canvas.height / dpr;
    view.s = Math.min(w / iw, h / ih);
    view.x = (w - iw * view.s) / 2;
    view.y = (h - ih * view.s) / 2;
  }
  function drawLayer(img, clip) {
    ctx.save();
    if (clip) {
      ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
      ctx.beginPath(); ctx.rect(clip[0], 0, clip[1] - clip[0], canvas.height); ctx.clip();
    }
    ctx.setTransform(dpr * view.s, 0, 0, dpr * view.s, dpr * view.x, dpr * view.y);
    ctx.imageSmoothingEnabled = view.s < 2;   // zoomed in: show the pixels as pixels
    ctx.drawImage(img, 0, 0, iw, ih);
    ctx.restore();
  }
  function draw() {
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.fillStyle = "#1b1d21";
    ctx.fillRect(0, 0, canvas.width, canvas.height);
    const w = canvas.width / dpr;
    const split = state.swipe * w;
    if (layers.optical) { drawLayer(layers.optical, [0, split]); }
    if (layers.sar) { drawLayer(layers.sar, [split, w]); }
    if (layers.heat && state.heatOn) {
      ctx.globalAlpha = state.heatAlpha; drawLayer(layers.heat, null); ctx.globalAlpha = 1;
    }
    if (layers.optical) {
      ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
      ctx.fillStyle = "#ffffff";
      ctx.fillRect(Math.round(split) - 1, 0, 2, canvas.height / dpr);
    }
  }
  function redraw() { resize(); draw(); }

  // pixel (col, row) of the full-resolution output under a point of the canvas (CSS px)
  function toPixel(px, py) {
    const ix = (px - view.x) / view.s, iy = (py - view.y) / view.s;
    return [ix * D.width / iw, iy * D.height / ih];
  }
  function toCrs(col, row) {
    const t = D.transform;   // GDAL order: x0, dx/dcol, dx/drow, y0, dy/dcol, dy/drow
    return [t[0] + col * t[1] + row * t[2], t[3] + col * t[4] + row * t[5]];
  }
  // bilinear interpolation in the lon/lat grid (nodes every width/n, height/n pixels)
  function toLonLat(col, row) {
    const g = D.lonlat;
    if (!g) { return null; }
    const fx = Math.min(Math.max(col / D.width * g.n, 0), g.n);
    const fy = Math.min(Math.max(row / D.height * g.n, 0), g.n);
    const j = Math.min(Math.floor(fx), g.n - 1), i = Math.min(Math.floor(fy), g.n - 1);
    const u = fx - j, v = fy - i;
    const lerp = (a) => (1 - v) * ((1 - u) * a[i][j] + u * a[i][j + 1])
      + v * ((1 - u) * a[i + 1][j] + u * a[i + 1][j + 1]);
    return [lerp(g.lon), lerp(g.lat)];
  }
  function showCoords(px, py) {
    const [col, row] = toPixel(px, py);
    const el = $("coords");
    if (col < 0 || row < 0 || col >= D.width || row >= D.height) {
      el.textContent = "outside the scene"; el.className = "muted"; return;
    }
    const ll = toLonLat(col, row);
    const xy = toCrs(col, row);
    el.className = "";
    el.textContent = (ll ? "lon " + ll[0].toFixed(6) + "\\u00b0  lat " + ll[1].toFixed(6)
      + "\\u00b0   " : "") + "x " + xy[0].toFixed(2) + "  y " + xy[1].toFixed(2)
      + "   col " + Math.floor(col) + "  row " + Math.floor(row);
  }
  function zoomAt(px, py, factor) {
    const s = Math.min(Math.max(view.s * factor, 0.05), 64);
    view.x = px - (px - view.x) * s / view.s;
    view.y = py - (py - view.y) * s / view.s;
    view.s = s;
    draw();
  }

  let drag = null;
  canvas.addEventListener("pointerdown", (e) => {
    drag = { x: e.clientX, y: e.clientY, vx: view.x, vy: view.y };
    canvas.setPointerCapture(e.pointerId); canvas.classList.add("dragging");
  });
  canvas.addEventListener("pointermove", (e) => {
    const r = canvas.getBoundingClientRect();
    if (drag) {
      view.x = drag.vx + e.clientX - drag.x; view.y = drag.vy + e.clientY - drag.y; draw();
    }
    showCoords(e.clientX - r.left, e.clientY - r.top);
  });
  const endDrag = () => { drag = null; canvas.classList.remove("dragging"); };
  canvas.addEventListener("pointerup", endDrag);
  canvas.addEventListener("pointercancel", endDrag);
  canvas.addEventListener("wheel", (e) => {
    e.preventDefault();
    const r = canvas.getBoundingClientRect();
    zoomAt(e.clientX - r.left, e.clientY - r.top, Math.pow(1.2, -e.deltaY / 100));
  }, { passive: false });
  const centre = () => [canvas.width / dpr / 2, canvas.height / dpr / 2];
  $("zoomIn").addEventListener("click", () => zoomAt(...centre(), 1.5));
  $("zoomOut").addEventListener("click", () => zoomAt(...centre(), 1 / 1.5));
  $("fit").addEventListener("click", () => { fit(); draw(); });
  $("swipe").addEventListener("input", (e) => { state.swipe = e.target.value / 1000; draw(); });
  $("heatOn").addEventListener("change", (e) => { state.heatOn = e.target.checked; draw(); });
  $("heatAlpha").addEventListener("input", (e) => {
    state.heatAlpha = e.target.value / 100; draw();
  });
  window.addEventListener("resize", () => { redraw(); });

  let pending = D.layers.length;
  for (const l of D.layers) {
    const img = new Image();
    img.onload = () => {
      layers[l.id] = img;
      pending -= 1;
      if (pending === 0) { redraw(); fit(); draw(); document.body.dataset.ready = "1"; }
    };
    img.onerror = () => { console.error("eo2sar viewer: cannot decode layer " + l.id); };
    img.src = l.src;
  }
  window.eo2sarViewer = { view, state, toPixel, toLonLat, toCrs, draw };
})();
</script>
</body>
</html>
"""


def script_json(data: Any) -> str:
    """`data` as JSON safe inside a `<script>` element: every `<`, `>` and `&` written as a
    \\u escape (the same string to JSON.parse). Escaping only `</` is not enough: text
    with `<!--<script>` (a band unit, a file name) puts the HTML parser in the "double
    escaped" state, where the page's own `</script>` no longer ends the element and the
    whole viewer script is swallowed."""
    text = json.dumps(data, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def render_page(title: str, data: dict[str, Any]) -> str:
    """The page for `data` (see the module docstring); the JSON goes through
    `script_json`, so no string in it can end or change the script element."""
    values = {
        "CSP": CSP,
        "TITLE": html.escape(title),
        "DATA": script_json(data),
    }
    # one pass: a title or data that happens to contain a placeholder stays as it is
    return re.sub(r"__(CSP|TITLE|DATA)__", lambda m: values[m.group(1)], PAGE)

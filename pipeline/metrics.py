"""Image-quality metrics for the tiled inference, starting with the seam ratio.

U-GAT-IT normalises every tile with statistics of that tile alone (instance norm,
adaILN, gamma/beta from the tile's own features), so two neighbouring tiles disagree
about brightness and texture. Pasted tiles therefore show a step along every tile edge:
a *seam*. Overlap plus a smooth blending window is meant to hide it. The seam ratio
measures whether it did, without needing a reference image: it compares the pixel-to-pixel
change across the lines where tiles start or end with the change across every other line.
On an image with no seam both are samples of the same texture and the ratio is ~1.0;
a visible seam makes the first larger, so the ratio grows (a step of a few grey levels on
texture that changes by one level per pixel gives a ratio of a few).

`tile_consistency` measures the same disagreement against a reference instead: the
model's whole-image output (`--norm scene` should match it, `--norm tile` does not).
"""

from __future__ import annotations

import numpy as np

__all__ = ["boundary_lines", "seam_ratio"]


def boundary_lines(length: int, tile_size: int, overlap: int, origin: int = 0) -> np.ndarray:
    """Boolean mask of the lines of a 1-D tile grid, indexed by line position.

    Line ``c`` (for ``1 <= c < length``) is the line between pixel ``c - 1`` and pixel ``c``.
    Tiles start at ``origin + k * stride`` (``stride = tile_size - overlap``, ``k >= 0``:
    ``origin`` is the first tile's first pixel) and cover ``tile_size`` pixels, so a tile's
    contribution starts at line ``origin + k * stride`` and ends at line
    ``origin + k * stride + tile_size``. Both are
    boundaries: with overlap, the start of tile ``k + 1`` lies inside tile ``k`` and the end
    of tile ``k`` lies inside tile ``k + 1``; a per-tile seam would show at either, and a
    blending window that does not fall to ~0 at the tile edge shows at both. Without overlap
    the two sets coincide.

    The grid continues to the end of the image: a tiling that clamps its last tile to the
    scene edge (rather than padding) has one extra boundary that this mask does not know
    about; it only dilutes the ratio slightly (one line out of many).

    Returns an array of ``length + 1`` booleans; entries 0 and ``length`` (the image edges,
    which have no pixel pair across them) are always False.
    """
    if tile_size <= 0:
        raise ValueError(f"tile_size must be positive, got {tile_size}")
    if not 0 <= overlap < tile_size:
        raise ValueError(f"overlap must be in [0, tile_size), got {overlap} for {tile_size}")
    stride = tile_size - overlap
    lines = np.arange(length + 1)
    starts = ((lines - origin) % stride == 0) & (lines >= origin)
    ends = ((lines - origin - tile_size) % stride == 0) & (lines >= origin + tile_size)
    mask = starts | ends
    mask[0] = False
    mask[length] = False
    return mask


def _near_lines(boundary: np.ndarray, near: int | None) -> np.ndarray:
    """Reference lines: every non-boundary line, or only those within ``near`` lines of one."""
    if near is None:
        return ~boundary
    pos = np.flatnonzero(boundary)
    lines = np.arange(boundary.size)
    if pos.size == 0:
        return np.zeros_like(boundary)
    k = np.clip(np.searchsorted(pos, lines), 1, pos.size) - 1
    dist = np.minimum(np.abs(lines - pos[k]), np.abs(lines - pos[np.minimum(k + 1, pos.size - 1)]))
    return ~boundary & (dist <= near)


def _pair_sums(
    diff: np.ndarray, pair_valid: np.ndarray, on_boundary: np.ndarray, reference: np.ndarray
) -> tuple[float, int, float, int]:
    """Sum and count of |diff| over valid pairs on boundary lines / on reference lines.

    The masks are already broadcast to ``diff``'s shape.
    """
    b = pair_valid & on_boundary
    o = pair_valid & reference
    return (
        float(diff[b].sum(dtype=np.float64)),
        int(b.sum()),
        float(diff[o].sum(dtype=np.float64)),
        int(o.sum()),
    )


def seam_ratio(
    arr: np.ndarray,
    tile_size: int,
    overlap: int,
    valid: np.ndarray | None = None,
    origin: tuple[int, int] = (0, 0),
    near: int | None = None,
) -> float:
    """Mean absolute difference across tile-boundary lines over that across all other lines.

    ``arr`` is a 2-D image (or a ``(bands, rows, cols)`` stack; all bands are pooled). The
    tile grid is the one the tiler used: tiles of ``tile_size`` pixels starting every
    ``stride = tile_size - overlap`` pixels from ``origin`` = (row, col) of the first tile's
    top-left corner in ``arr``'s pixel coordinates (negative if the tiler padded the scene;
    use the crop offset, negated, when ``arr`` is a crop of a larger output). See
    :func:`boundary_lines` for which lines count as boundaries (tile starts AND ends).

    Differences are taken between horizontally and vertically adjacent pixels; a pair counts
    only if both pixels are valid (``valid`` True, and finite), so nodata collars and the
    edge of the valid area never look like seams. Horizontal and vertical pairs are pooled.

    ``near``: compare with the lines at most ``near`` px from a boundary line only, instead
    of all other lines. Real scenes vary in texture from place to place, and a tile grid
    has only a few boundary lines, so with ``near=None`` the ratio of an image without any
    seam can be 0.7 or 1.3 just because the boundary lines happen to cross calm water or a
    busy town; the local version compares each boundary with its own neighbourhood and has
    a lower noise floor (use ~4-8 px: smaller than the texture's scale of change, larger
    than one pixel so a seam blurred over 2 px is not in its own reference).

    What it cannot see: a cross-fade (overlap) turns a brightness disagreement between two
    tiles into a gentle ramp over the overlap band, which has no step at any line. The
    ratio measures the step-like seams of pasted tiles and of windows that do not fall to
    ~0 at the tile edge; a ramp is judged by eye (``pipeline.viewing.quicklook``).

    Returns ~1.0 when there is no visible seam (the boundary lines are just more samples of
    the image's own texture); > 1 when tile edges stand out. A perfectly flat image returns
    1.0 (nothing anywhere, so no seam); flat texture with a step returns ``inf``.

    Raises ``ValueError`` for bad arguments or when no valid pair lies on a boundary (or off
    one): the metric is undefined then, and a silent NaN would end up in a benchmark table.
    """
    a = np.asarray(arr)
    if a.ndim not in (2, 3):
        raise ValueError(f"seam_ratio needs a 2-D image or a 3-D band stack, got shape {a.shape}")
    rows, cols = a.shape[-2:]
    if rows < 2 or cols < 2:
        raise ValueError(f"image too small for a seam ratio: {rows}x{cols}")
    a = a.astype(np.float64, copy=False)
    ok = np.isfinite(a)
    if valid is not None:
        v = np.asarray(valid, dtype=bool)
        if v.shape != (rows, cols):
            raise ValueError(f"valid mask shape {v.shape} != image shape {(rows, cols)}")
        ok = ok & v
    if np.ma.isMaskedArray(arr):
        ok = ok & ~np.ma.getmaskarray(arr)  # np.asarray above kept only the data

    if near is not None and near < 1:
        raise ValueError(f"near must be >= 1 (lines), got {near}")
    row0, col0 = origin
    col_b = boundary_lines(cols, tile_size, overlap, col0)[1:cols]  # lines 1..cols-1
    row_b = boundary_lines(rows, tile_size, overlap, row0)[1:rows]
    col_ref, row_ref = _near_lines(col_b, near), _near_lines(row_b, near)

    with np.errstate(invalid="ignore"):
        dx = np.abs(a[..., :, 1:] - a[..., :, :-1])  # pair across column line c = 1..cols-1
        dy = np.abs(a[..., 1:, :] - a[..., :-1, :])  # pair across row line r = 1..rows-1
    vx = ok[..., :, 1:] & ok[..., :, :-1]
    vy = ok[..., 1:, :] & ok[..., :-1, :]
    sbx, nbx, sox, nox = _pair_sums(
        dx, vx, np.broadcast_to(col_b[None, :], dx.shape), np.broadcast_to(col_ref, dx.shape)
    )
    sby, nby, soy, noy = _pair_sums(
        dy, vy, np.broadcast_to(row_b[:, None], dy.shape),
        np.broadcast_to(row_ref[:, None], dy.shape),
    )
    n_b, n_o = nbx + nby, nox + noy
    if n_b == 0:
        raise ValueError(
            f"no valid pixel pair crosses a tile boundary (tile {tile_size}, overlap {overlap},"
            f" image {rows}x{cols}, origin {origin}): image smaller than a tile, or all nodata"
        )
    if n_o == 0:
        raise ValueError("no valid pixel pair on the reference lines: stride too small")
    mean_b = (sbx + sby) / n_b
    mean_o = (sox + soy) / n_o
    if mean_o == 0.0:
        return 1.0 if mean_b == 0.0 else float("inf")
    return mean_b / mean_o


def box_mean(image: np.ndarray, size: int) -> np.ndarray:
    """Mean over every full `size` x `size` window of a 2-D float image ("valid" mode:
    (H - size + 1) x (W - size + 1)), by an integral image."""
    s = np.zeros((image.shape[0] + 1, image.shape[1] + 1), dtype=np.float64)
    s[1:, 1:] = image.astype(np.float64).cumsum(0).cumsum(1)
    total = s[size:, size:] - s[:-size, size:] - s[size:, :-size] + s[:-size, :-size]
    return total / (size * size)


def tile_consistency(tiled: np.ndarray, whole: np.ndarray, box: int = 33) -> dict[str, float]:
    """How far a tiled output is from the model's whole-image output (2-D, unit scale):
    at tile scale (both box-filtered over `box` px, where per-tile brightness shows) the
    mean |difference| and the correlation, and per pixel the mean |difference|.

    A per-tile normalisation gives every tile its own brightness: large at tile scale.
    """
    a, b = box_mean(tiled, box), box_mean(whole, box)
    return {
        "box_mean_abs_diff": float(np.abs(a - b).mean()),
        "box_corr": float(np.corrcoef(a.ravel(), b.ravel())[0, 1]),
        "pixel_mean_abs_diff": float(np.abs(tiled.astype(np.float64) - whole).mean()),
    }

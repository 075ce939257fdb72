"""The order of the blend: which batches to compute when, and which tile outputs to keep.

Output blocks are written row-major. A block needs every tile that overlaps it; a tile
belongs to one batch (a run of the global tile numbering, pipeline/run/tiling.py) and
usually to several blocks. `BlendOrder` turns that into

  * `order`: every needed batch once, in the order blocks first need them, which is
    the order the schedulers compute them in (bounded look-ahead);
  * a cache of tile outputs that keeps a tile from the batch that computed it until
    the LAST block that needs it has taken it, then drops it. Memory is then at most
    about one row of tiles across the scene, whatever the scene height.

Pure bookkeeping (no I/O, no arrays of its own): tested on its own in
tests/pipeline/run/test_blend_order.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class BlendOrder:
    """Batch order and tile-output cache for blocks written in `block_tiles` order.

    `block_tiles[k]`: the tiles (ascending) block k needs; `batches[b]`: the tiles of
    batch b. `empty=True` (a scene with no valid pixel) computes nothing: every block
    is then ready at once and gets no tile.
    """

    def __init__(
        self,
        block_tiles: Sequence[Sequence[int]],
        batches: Sequence[tuple[int, ...]],
        *,
        empty: bool = False,
    ) -> None:
        self.batches = list(batches)
        self._batch_of = {t: b for b, tiles in enumerate(self.batches) for t in tiles}
        self._uses: dict[int, int] = {}
        self.order: list[tuple[int, tuple[int, ...]]] = []
        seen: set[int] = set()
        for tiles in block_tiles:
            for t in tiles:
                self._uses[t] = self._uses.get(t, 0) + 1
                b = self._batch_of[t]
                if b not in seen and not empty:
                    seen.add(b)
                    self.order.append((b, self.batches[b]))
        self._done: set[int] = set(range(len(self.batches))) if empty else set()
        self._cache: dict[int, Any] = {}

    def ready(self, tiles: Sequence[int]) -> bool:
        """Whether every batch holding one of `tiles` has been added."""
        return all(self._batch_of[t] in self._done for t in tiles)

    def add(self, batch: int, outputs: Sequence[Any]) -> int:
        """Keep the outputs of `batch` (one per tile, None for a tile with no valid
        pixel); returns how many tiles were actually run."""
        self._done.add(batch)
        run = 0
        for t, out in zip(self.batches[batch], outputs, strict=True):
            self._cache[t] = out
            run += out is not None
        return run

    def take(self, tiles: Sequence[int]) -> list[tuple[int, Any]]:
        """(tile, output) for the `tiles` of the next block that have an output, in the
        given (ascending: the fixed blend) order; drops each tile this was the last
        block to need."""
        taken = []
        for t in tiles:
            out = self._cache.get(t)
            if out is not None:
                taken.append((t, out))
            self._uses[t] -= 1
            if self._uses[t] == 0:
                self._cache.pop(t, None)
        return taken

    def cached(self) -> int:
        """Tile outputs held now (memory bound checks)."""
        return len(self._cache)

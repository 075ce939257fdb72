"""The pictures and tables of a training run: sample sheets, losses.csv, loss_curve.png.

- The sample sheet is the original U-GAT-IT result figure, one row per fixed image (a few
  train, a few test), columns: real EO, CAM heatmap of EO->EO, EO->EO, heatmap of EO->SAR,
  EO->SAR, heatmap of EO->SAR->EO, EO->SAR->EO. Unlike the original it runs under
  ``torch.no_grad()`` and ``eval()`` (the original kept the autograd graph of every sample
  and ran out of GPU memory at step 1000).
- Heatmaps are the original's ``cam()``: min-max normalised, resized to the image (bilinear)
  and jet-coloured. The jet map is computed here (no OpenCV dependency).
- losses.csv is appended to as training goes; on resume the rows after the resumed step
  are dropped, so the file always describes one history.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn

from ugatit.io import atomic_path

#: Columns of the sample sheet (the original figure's rows, transposed).
SHEET_COLUMNS = ("EO", "EO->EO CAM", "EO->EO", "EO->SAR CAM", "EO->SAR", "EO->SAR->EO CAM",
                 "EO->SAR->EO")
SHORT_COLUMNS = ("EO", "CAM", "A2A", "CAM", "A2B", "CAM", "A2B2A")


def jet(x: np.ndarray) -> np.ndarray:
    """[H, W] in [0, 1] -> [H, W, 3] uint8 RGB with the classic jet colour map."""
    x = np.clip(x, 0.0, 1.0)[..., None]
    rgb = np.clip(1.5 - np.abs(4.0 * x - np.array([3.0, 2.0, 1.0])), 0.0, 1.0)
    return (rgb * 255.0 + 0.5).astype(np.uint8)


def heatmap_rgb(heatmap: Tensor, size: int) -> np.ndarray:
    """A generator's [1, h, w] CAM heatmap -> [size, size, 3] uint8, as the original's cam():
    x - min, / max, to uint8, resized, jet."""
    x = heatmap.detach().float().cpu().numpy()[0]
    x = x - x.min()
    peak = x.max()
    x = x / peak if peak > 0 else x  # a flat map stays flat instead of dividing by 0
    small = Image.fromarray(np.uint8(255 * x))
    big = np.asarray(small.resize((size, size), Image.Resampling.BILINEAR), dtype=np.float32)
    return jet(big / 255.0)


def image_rgb(x: Tensor) -> np.ndarray:
    """[C, H, W] in [-1, 1] -> [H, W, 3] uint8: three channels as they are; more than
    three: the first three (a multispectral tile stores red, green, blue first); fewer:
    the first as grey (VV of a VV, VH tile)."""
    x = x[:3] if x.shape[0] >= 3 else x[:1].expand(3, -1, -1)
    a = ((x.detach().float().cpu().clamp(-1, 1) + 1) * 127.5 + 0.5).to(torch.uint8)
    return a.permute(1, 2, 0).numpy()


@torch.no_grad()
def translate_row(gen_a2b: nn.Module, gen_b2a: nn.Module, real_a: Tensor
                  ) -> tuple[list[np.ndarray], float]:
    """The seven panels of one sheet row, and the std of the EO->SAR output (collapse check).

    real_a: [3, H, W] on the generators' device.
    """
    x = real_a[None]
    size = x.shape[-1]
    a2b, _, a2b_h = gen_a2b(x)
    a2b2a, _, a2b2a_h = gen_b2a(a2b)
    if a2b.shape[1] == x.shape[1]:  # genB2A takes what genA2B gives
        a2a, _, a2a_h = gen_b2a(x)
        identity = [heatmap_rgb(a2a_h[0], size), image_rgb(a2a[0])]
    else:  # 4 bands in, 2 out: no identity translation (ugatit.train); grey panels
        identity = [np.full((size, size, 3), 128, np.uint8)] * 2
    panels = [image_rgb(x[0]), *identity,
              heatmap_rgb(a2b_h[0], size), image_rgb(a2b[0]),
              heatmap_rgb(a2b2a_h[0], size), image_rgb(a2b2a[0])]
    return panels, float(a2b.float().std())


def sample_sheet(gen_a2b: nn.Module, gen_b2a: nn.Module, images: Tensor, path: Path,
                 n_train: int | None = None) -> list[float]:
    """Write the sample sheet PNG of ``images`` ([N, 3, H, W], train rows then test rows).

    A header names the columns; a white line separates the first ``n_train`` (train) rows
    from the test rows. Runs in eval mode under no_grad and restores the generators'
    train/eval mode after. Returns the per-row std of EO->SAR (about 0 for a generator
    collapsed to blank output).
    """
    modes = (gen_a2b.training, gen_b2a.training)
    gen_a2b.eval()
    gen_b2a.eval()
    device = next(gen_a2b.parameters()).device
    try:
        rows, stds = [], []
        for img in images:
            panels, std = translate_row(gen_a2b, gen_b2a, img.to(device))
            rows.append(np.concatenate(panels, axis=1))
            stds.append(std)
    finally:
        gen_a2b.train(modes[0])
        gen_b2a.train(modes[1])
    if rows:
        if n_train is not None and 0 < n_train < len(rows):
            line = np.full((2, *rows[0].shape[1:]), 255, np.uint8)
            rows.insert(n_train, line)
        body = np.concatenate(rows, axis=0)
        _save_png(_with_header(body, images.shape[-1]), path)
    return stds


def _with_header(body: np.ndarray, size: int) -> Image.Image:
    """The sheet with a 14 px strip naming each column (short names for narrow tiles)."""
    from PIL import ImageDraw

    sheet = Image.new("RGB", (body.shape[1], body.shape[0] + 14), (255, 255, 255))
    sheet.paste(Image.fromarray(body), (0, 14))
    draw = ImageDraw.Draw(sheet)
    names = SHEET_COLUMNS if size >= 96 else SHORT_COLUMNS
    for i, name in enumerate(names):
        draw.text((i * size + 2, 1), name, fill=(0, 0, 0))
    return sheet


def _save_png(img: Image.Image, path: Path) -> None:
    """Write a PNG atomically (a viewer refreshing it never sees half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        img.save(tmp, format="PNG")


class LossLog:
    """OUT/losses.csv: one row per logged step (step, every loss term, lr, seconds)."""

    def __init__(self, path: Path, columns: Sequence[str]) -> None:
        self.path = path
        self.columns = ["step", *columns]

    def start(self, step: int) -> None:
        """Open a run that starts after ``step``: keep rows up to it, drop later ones (a
        resumed run rewrites them), write the header if the file is new."""
        kept: list[dict[str, str]] = []
        if self.path.exists() and step > 0:
            with self.path.open(newline="") as f:
                kept = [r for r in csv.DictReader(f) if int(r["step"]) <= step]
        with atomic_path(self.path) as tmp, tmp.open("w", newline="") as f:
            w = csv.DictWriter(f, self.columns, extrasaction="ignore")
            w.writeheader()
            w.writerows(kept)

    def append(self, step: int, values: Mapping[str, float]) -> None:
        with self.path.open("a", newline="") as f:
            csv.DictWriter(f, self.columns, extrasaction="ignore").writerow(
                {"step": step, **{k: f"{v:.6g}" for k, v in values.items()}})

    def read(self) -> dict[str, np.ndarray]:
        """Columns as float arrays (empty arrays for a file with a header only)."""
        with self.path.open(newline="") as f:
            rows = list(csv.DictReader(f))
        return {c: np.array([float(r[c]) for r in rows if r.get(c) not in (None, "")])
                for c in self.columns}


def smooth(y: np.ndarray, window: int) -> np.ndarray:
    """Moving mean over ``window`` samples ("same" length; edges use fewer samples)."""
    if window <= 1:
        return y
    kernel = np.ones(window)
    return np.convolve(y, kernel, "same") / np.convolve(np.ones_like(y), kernel, "same")


def loss_curve(log: LossLog, path: Path, terms: Sequence[str] = ("D_loss", "G_loss")) -> None:
    """Plot D/G losses and every weighted-in term against step, log-scaled, to a PNG."""
    import matplotlib

    matplotlib.use("Agg")  # no display on training machines
    import matplotlib.pyplot as plt

    data = log.read()
    step = data["step"]
    if step.size == 0:
        return
    parts = [c for c in log.columns if c not in ("step", "lr", "seconds", *terms)]
    colours = plt.get_cmap("tab20").colors
    window = max(1, step.size // 200)  # GAN losses are noisy: a moving mean per 0.5 %
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for ax, names, title in ((axes[0], terms, "total losses"), (axes[1], parts, "terms")):
        for i, name in enumerate(names):
            y = data.get(name)
            if y is not None and y.size == step.size:
                ax.plot(step, np.maximum(smooth(y, window), 1e-8), label=name, lw=1,
                        color=colours[i % len(colours)])
        ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_title(title if window == 1 else f"{title} (mean of {window} rows)")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, ncol=2)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=90, format="png")
    finally:
        plt.close(fig)

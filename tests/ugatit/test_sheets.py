"""Sample sheets, the jet heatmap, losses.csv and the loss curve."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from ugatit import ModelConfig
from ugatit.networks import build_network
from ugatit.sheets import LossLog, heatmap_rgb, jet, loss_curve, sample_sheet, smooth


def test_jet_endpoints_and_middle() -> None:
    # Classic jet: dark blue at 0, green-ish cyan/yellow middle, dark red at 1.
    got = jet(np.array([[0.0, 0.5, 1.0]]))[0]
    assert got.tolist() == [[0, 0, 128], [128, 255, 128], [128, 0, 0]]


def test_heatmap_is_min_max_normalised_and_resized() -> None:
    h = torch.arange(16.0).reshape(1, 4, 4) * 3 + 7  # offset and scale must not matter
    a, b = heatmap_rgb(h, 16), heatmap_rgb((h - 7) / 3, 16)
    assert a.shape == (16, 16, 3) and np.array_equal(a, b)
    assert a[0, 0].tolist() == [0, 0, 128]  # the minimum is dark blue
    flat = heatmap_rgb(torch.full((1, 4, 4), 2.5), 8)  # no division by zero
    assert (flat == flat[0, 0]).all()


def _generators(ngf: int = 4) -> tuple[nn.Module, nn.Module]:
    cfg = ModelConfig(ngf=ngf, n_res=1, ndf=4)
    torch.manual_seed(0)
    return build_network("genA2B", cfg).train(), build_network("genB2A", cfg).train()


def test_sample_sheet_layout_modes_and_no_grad(tmp_path: Path) -> None:
    g_a2b, g_b2a = _generators()
    images = torch.rand(3, 3, 32, 32) * 2 - 1
    path = tmp_path / "s.png"
    stds = sample_sheet(g_a2b, g_b2a, images, path, n_train=2)
    sheet = np.asarray(Image.open(path))
    # 14 px header + 3 rows of 32 px + a 2 px train/test divider; 7 columns of 32 px.
    assert sheet.shape == (14 + 3 * 32 + 2, 7 * 32, 3)
    # First column of the first row is the input itself (to 8 bits).
    expected = ((images[0].clamp(-1, 1) + 1) * 127.5 + 0.5).to(torch.uint8).permute(1, 2, 0)
    assert np.array_equal(sheet[14:46, :32], expected.numpy())
    assert (sheet[14 + 64:14 + 66] == 255).all()  # the divider after two train rows
    assert g_a2b.training and g_b2a.training  # modes restored
    assert all(p.grad is None for g in (g_a2b, g_b2a) for p in g.parameters())
    assert len(stds) == 3 and min(stds) > 0.0


class _Blank(nn.Module):
    """A collapsed generator: constant output, whatever the input."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        b = x.shape[0]
        return torch.zeros_like(x) + self.w, torch.zeros(b, 2), torch.zeros(b, 1, 8, 8)


def test_blank_generator_gives_zero_std(tmp_path: Path) -> None:
    stds = sample_sheet(_Blank(), _Blank(), torch.rand(2, 3, 32, 32), tmp_path / "b.png")
    assert stds == [0.0, 0.0]


def test_loss_log_keeps_one_history_on_resume(tmp_path: Path) -> None:
    log = LossLog(tmp_path / "losses.csv", ["D_loss", "G_loss", "lr"])
    log.start(0)
    for step in range(1, 6):
        log.append(step, {"D_loss": step * 1.0, "G_loss": 10.0 * step, "lr": 1e-4})
    log.start(3)  # resumed at step 3: rows 4 and 5 are dropped, then rewritten
    log.append(4, {"D_loss": 40.0, "G_loss": 400.0, "lr": 1e-4})
    data = log.read()
    assert data["step"].tolist() == [1, 2, 3, 4]
    assert data["D_loss"].tolist() == [1, 2, 3, 40]
    assert data["lr"].tolist() == pytest.approx([1e-4] * 4)


def test_loss_curve_png(tmp_path: Path) -> None:
    log = LossLog(tmp_path / "losses.csv", ["D_loss", "G_loss", "D_GA", "lr", "seconds"])
    log.start(0)
    for step in range(1, 500):
        log.append(step, {"D_loss": 1 + np.sin(step), "G_loss": 100.0 / step, "D_GA": 0.5,
                          "lr": 1e-4, "seconds": step})
    png = tmp_path / "curve.png"
    loss_curve(log, png)
    img = Image.open(png)
    assert img.format == "PNG" and img.size[0] > 500
    assert not list(tmp_path.glob(".*tmp*"))  # written atomically, nothing left behind


def test_smooth_is_a_moving_mean() -> None:
    y = np.array([0.0, 3.0, 0.0, 3.0, 0.0])
    assert smooth(y, 1) is y
    assert smooth(y, 3).tolist() == pytest.approx([1.5, 1.0, 2.0, 1.0, 1.5])


def test_collapse_is_warned_in_the_log(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from ugatit.train import write_samples

    log = LossLog(tmp_path / "losses.csv", ["D_loss", "G_loss"])
    log.start(0)
    log.append(1, {"D_loss": 1.0, "G_loss": 2.0})
    nets = {"genA2B": _Blank(), "genB2A": _Blank()}
    with caplog.at_level("WARNING", logger="ugatit.train"):
        write_samples(nets, torch.rand(2, 3, 32, 32), 1, tmp_path, 7, log)
    assert "step 7: EO->SAR output is blank" in caplog.text
    assert (tmp_path / "samples" / "A2B_0000007.png").is_file()
    caplog.clear()
    g_a2b, g_b2a = _generators()
    with caplog.at_level("WARNING", logger="ugatit.train"):
        write_samples({"genA2B": g_a2b, "genB2A": g_b2a}, torch.rand(2, 3, 32, 32), 1,
                      tmp_path, 8, log)
    assert "blank" not in caplog.text

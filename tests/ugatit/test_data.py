"""The unpaired training dataset: indexing, pure per-position sampling, transforms."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from tests.helpers import make_dataset
from ugatit.data import (
    StreamSampler,
    UnpairedDataset,
    eval_transform,
    fixed_samples,
    image_std,
    index_domain,
    random_crop,
    to_tensor,
)
from ugatit.errors import TrainingError


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    return make_dataset(tmp_path / "ds")


def test_index_skips_constant_images_with_a_warning(dataset: Path,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="ugatit.data"):
        files = index_domain(dataset / "trainA", min_std=0.02)
    assert len(files) == 5 and all(not f.name.startswith("z") for f in files)
    assert "skipped 1 of 6 near-constant" in caplog.text


def test_index_errors_name_the_folder(tmp_path: Path) -> None:
    with pytest.raises(TrainingError, match="trainA: missing"):
        index_domain(tmp_path / "trainA", 0.02)
    (tmp_path / "trainB").mkdir()
    with pytest.raises(TrainingError, match="trainB: no images"):
        index_domain(tmp_path / "trainB", 0.02)
    make_dataset(tmp_path / "ds", n_a=0, n_const=2)
    with pytest.raises(TrainingError, match="all 2 images are near-constant"):
        index_domain(tmp_path / "ds" / "trainA", 0.02)


def _data(dataset: Path, **kw: int) -> UnpairedDataset:
    a = index_domain(dataset / "trainA", 0.02)
    b = index_domain(dataset / "trainB", 0.02)
    return UnpairedDataset(a, b, img_size=32, **kw)


def test_sample_is_a_pure_function_of_seed_rank_position(dataset: Path) -> None:
    d1, d2 = _data(dataset, seed=3), _data(dataset, seed=3)
    for p in (0, 7, 123):  # 123: a later epoch, the permutation is re-derived
        a1, b1 = d1[p]
        a2, b2 = d2[p]
        assert torch.equal(a1, a2) and torch.equal(b1, b2)
    other_rank, other_seed = _data(dataset, seed=3, rank=1), _data(dataset, seed=4)
    stream = torch.stack([d1[p][0] for p in range(6)])
    assert not torch.equal(stream, torch.stack([other_rank[p][0] for p in range(6)]))
    assert not torch.equal(stream, torch.stack([other_seed[p][0] for p in range(6)]))


def test_each_epoch_visits_every_image_once(dataset: Path) -> None:
    data = _data(dataset)
    n = len(data.files["A"])
    from ugatit.data import epoch_permutation

    for epoch in (0, 1):
        perm = epoch_permutation(n, 0, 0, 0, epoch)
        assert sorted(perm.tolist()) == list(range(n))
    assert epoch_permutation(n, 0, 0, 0, 0).tolist() != epoch_permutation(n, 0, 0, 0, 1).tolist()


def test_workers_do_not_change_the_stream(dataset: Path) -> None:
    data = _data(dataset)
    loader = DataLoader(data, batch_size=2, sampler=StreamSampler(4), num_workers=2)
    it = iter(loader)
    got = [next(it) for _ in range(3)]
    for k, (a, b) in enumerate(got):
        for i in range(2):
            ea, eb = data[4 + 2 * k + i]
            assert torch.equal(a[i], ea) and torch.equal(b[i], eb)


def test_constant_crops_are_redrawn(tmp_path: Path) -> None:
    # An image that is a nodata collar except for a 20 px textured corner: most crops of it
    # are constant, none may reach the network.
    img = np.zeros((64, 64, 3), np.uint8)
    img[:20, :20] = np.random.default_rng(1).integers(0, 255, (20, 20, 3))
    path = tmp_path / "collar.png"
    Image.fromarray(img).save(path)
    data = UnpairedDataset([path], [path], img_size=32, min_std=0.05)
    for p in range(20):
        assert image_std_tensor(data.sample("A", p)) >= 0.05


def image_std_tensor(x: torch.Tensor) -> float:
    return float(x.std(unbiased=False))


def test_transforms_follow_the_original() -> None:
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 256, (50, 60, 3), dtype=np.uint8))
    # ToTensor + Normalize(0.5, 0.5): 0 -> -1, 255 -> 1, exact in float32.
    t = to_tensor(Image.fromarray(np.array([[[0, 255, 51]]], np.uint8)))
    assert t.flatten().tolist() == [-1.0, 1.0, pytest.approx(51 / 127.5 - 1, abs=1e-7)]
    assert eval_transform(img, 32).shape == (3, 32, 32)
    g = torch.Generator().manual_seed(0)
    crop = random_crop(img, 32, g)
    assert crop.size == (32, 32)
    # The crop is a window of the image (flipped or not) resized to 62 x 62 (size + 30).
    bigs = [np.asarray(im.resize((62, 62), Image.Resampling.BILINEAR))
            for im in (img, img.transpose(Image.Transpose.FLIP_LEFT_RIGHT))]
    c = np.asarray(crop)
    assert any(np.array_equal(c, b[t:t + 32, s:s + 32])
               for b in bigs for t in range(31) for s in range(31))
    assert image_std(Image.fromarray(np.full((4, 4, 3), 9, np.uint8))) == 0.0


def test_fixed_samples_are_spread_and_skip_constant(dataset: Path) -> None:
    files = sorted((dataset / "trainA").glob("*.png"))  # 5 textured + 1 constant (last)
    x = fixed_samples(files, 3, 32, 0.02)
    assert x.shape == (2, 3, 32, 32)  # picks 0, 3 (textured), 5 (constant: dropped)
    assert fixed_samples([], 3, 32, 0.02).shape == (0, 3, 32, 32)


def test_pairs_are_cropped_alike_and_leave_the_unpaired_streams_alone(tmp_path: Path) -> None:
    """A pair's EO and SAR get one flip and crop (pixel (i, j) stays the same ground), and
    adding pairs does not change what the unpaired A and B streams draw."""
    from ugatit.data import UnpairedDataset, find_pairs

    rng = np.random.default_rng(1)
    for sub in ("A", "B"):
        (tmp_path / sub).mkdir()
    for i in range(3):
        img = Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8))
        img.save(tmp_path / "A" / f"{i}.png")
        img.save(tmp_path / "B" / f"{i}.png")  # B = A: identical crops prove one draw
    Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(
        tmp_path / "B" / "unpaired.png")
    files_a, files_b = sorted((tmp_path / "A").iterdir()), sorted((tmp_path / "B").iterdir())
    pairs = find_pairs(files_a, files_b)
    assert [(a.name, b.name) for a, b in pairs] == [("0.png",) * 2, ("1.png",) * 2,
                                                    ("2.png",) * 2]
    plain = UnpairedDataset(files_a, files_b, 32, seed=5)
    paired = UnpairedDataset(files_a, files_b, 32, seed=5, pairs=pairs)
    for p in range(6):
        a, b = plain[p]
        a2, b2, pa, pb = paired[p]
        assert torch.equal(a, a2) and torch.equal(b, b2)
        assert pa.shape == (3, 32, 32) and torch.equal(pa, pb)

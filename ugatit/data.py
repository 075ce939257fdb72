"""The unpaired image dataset of U-GAT-IT training: DATASET/{trainA,trainB,testA,testB}/*.png.

Why it looks like this:
- The original draws images with two shuffling DataLoaders and ``iter.next()``, so which
  image (and which crop) step k sees depends on loader state that is never saved. Here the
  sample at stream position ``p`` (``p = (step - 1) * batch + i``) is a PURE function of
  ``(seed, rank, p)``: its index comes from a per-epoch permutation seeded by
  ``(seed, rank, domain, epoch)`` and its flip/crop from a generator seeded by
  ``(seed, rank, domain, p)``. Resuming at step k just starts the sampler at position
  ``k * batch``; DataLoader workers, their number and prefetching cannot change results.
- A (nearly) constant crop -- a nodata collar of a scene -- makes every instance norm of
  the generator divide by sqrt(eps) and turns the weights to NaN within ~150 steps. Images
  that are constant as a whole are dropped when the folder is indexed (with a warning and
  the count); constant crops of the others are re-drawn (deterministically).
- Transforms are the original's, written with PIL (torchvision is not a dependency):
  train = RandomHorizontalFlip, Resize((s+30, s+30)), RandomCrop(s), ToTensor,
  Normalize(0.5, 0.5); test = Resize((s, s)), ToTensor, Normalize(0.5, 0.5).
- Multiband tiles (`pipeline tiles` writes them for more than three optical bands, a
  physical reflectance scale or two SAR polarisations): float32 GeoTIFFs of N bands in
  the model's unit scale [0, 1] (read with tifffile: ugatit reads images, never rasters).
  PIL cannot hold them (it clips at 8 bits and knows no 4-band float image), so the same
  flip / resize / crop is done on arrays (bilinear resize, the same random draws in the
  same order). The 8-bit PNG path is untouched, bit for bit.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterator, Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.nn import functional as F
from torch.utils.data import Dataset, Sampler

from ugatit.errors import TrainingError

log = logging.getLogger(__name__)

#: Extensions read from the domain folders (the tile builder writes PNG; the original's
#: ImageFolder also took JPEG).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
#: Multiband tiles: float32 (or 8/16-bit) TIFF, any number of bands, unit scale [0, 1].
TIFF_SUFFIXES = (".tif", ".tiff")
#: The original's Resize((img_size + 30, img_size + 30)) before RandomCrop(img_size).
RESIZE_MARGIN = 30
#: Crops re-drawn from one image before moving on to the next image of the permutation.
CROP_TRIES = 5
#: Draws in all before giving up (the dataset is then essentially nodata).
MAX_DRAWS = 200
DOMAINS = {"A": 0, "B": 1}


#: Images and crops whose pixel std ([-1, 1] units) is below this are near-constant and
#: skipped / re-drawn (one 8-bit level = 2/255 = 0.0078; 0.02 = 2.55 levels): U-GAT-IT's
#: instance norms divide by a tile's own spread, and a nodata collar drove its weights to
#: NaN within ~150 steps. The tile builder drops the same tiles (pipeline.dataset.tiles).
DEFAULT_MIN_STD = 0.02

def list_images(folder: Path) -> list[Path]:
    """Sorted image files of one domain folder (sorted: the index must not depend on the
    file system's listing order)."""
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


#: PIL modes of more than 8 bits per channel: 16-bit and 32-bit grey, float. PIL's
#: convert("RGB") CLIPS them at 255 (a 16-bit SAR tile of values in the thousands trains
#: as white: 99.6 % of one real tile), silently; they are refused instead.
WIDE_MODES = ("I", "I;16", "I;16L", "I;16B", "I;16N", "F")


def load_rgb(path: Path) -> Image.Image:
    """An 8-bit RGB PIL image of a tile, read as the original U-GAT-IT read it
    (ImageFolder's ``convert("RGB")``), for the 8-bit modes:

    - RGB as is; grey (L) and 1-bit images repeated to 3 channels; palette (P) images
      through their palette;
    - RGBA / LA / PA: the alpha band is DROPPED and the colour values are used as stored
      (not composited on a background, as the original did): a transparent pixel trains as
      its colour. Mark nodata by cutting tiles with `pipeline tiles` (invalid pixels 0,
      tiles below --min-valid dropped) rather than with alpha;
    - more than 8 bits per channel (16-bit grey PNG "I;16", 32-bit "I", float "F"):
      refused with a TrainingError naming the file, because PIL would clip them at 255.
    """
    try:
        with Image.open(path) as im:
            if im.mode in WIDE_MODES:
                raise TrainingError(
                    f"{path}: a {'16-bit' if '16' in im.mode else '32-bit'} image (PIL mode "
                    f"{im.mode}); the trainer reads 8-bit images and would clip it at 255 "
                    f"(white). Cut 8-bit tiles with `python -m pipeline tiles` (it scales "
                    f"SAR dB and optical reflectance to 0..255), or rescale it to 8-bit")
            return im.convert("RGB")
    except (OSError, ValueError) as exc:
        raise TrainingError(f"{path}: not a readable image ({exc})") from exc


def is_tiff(path: Path) -> bool:
    return path.suffix.lower() in TIFF_SUFFIXES


def load_array(path: Path) -> np.ndarray:
    """A multiband TIFF tile -> float32 [C, H, W] in the unit scale [0, 1].

    float tiles are taken as unit values (clipped to [0, 1]; NaN -> 0, what `pipeline
    tiles` writes for invalid pixels); 8-bit tiles are / 255 and 16-bit tiles / 65535.
    Anything else (complex, signed integers, a 1-pixel strip) is refused naming the file.
    """
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            axes, data = series.axes, series.asarray()
    except (OSError, ValueError, KeyError, IndexError, tifffile.TiffFileError) as exc:
        raise TrainingError(f"{path}: not a readable TIFF tile ({exc})") from exc
    if data.ndim == 2:
        data = data[None]
    elif data.ndim == 3 and axes.endswith("S"):  # pixel-interleaved: Y X S
        data = np.moveaxis(data, -1, 0)
    elif data.ndim != 3:
        raise TrainingError(f"{path}: a TIFF of shape {data.shape} (axes {axes}); a tile "
                            f"is one image of C bands x H x W")
    if data.dtype == np.uint8:
        return data.astype(np.float32) / 255.0
    if data.dtype == np.uint16:
        return data.astype(np.float32) / 65535.0
    if data.dtype.kind != "f":
        raise TrainingError(f"{path}: TIFF tiles of {data.dtype} are not read (float32 in "
                            f"the unit scale [0, 1], or 8/16-bit); cut tiles with "
                            f"`python -m pipeline tiles`")
    return np.clip(np.nan_to_num(data.astype(np.float32), nan=0.0), 0.0, 1.0)


def tiff_bands(path: Path) -> int:
    """The band count of a TIFF tile from its header alone (no pixel is decoded)."""
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            shape, axes = series.shape, series.axes
    except (OSError, ValueError, KeyError, IndexError, tifffile.TiffFileError) as exc:
        raise TrainingError(f"{path}: not a readable TIFF tile ({exc})") from exc
    if len(shape) == 2:
        return 1
    return int(shape[-1] if axes.endswith("S") else shape[0])


def array_std(a: np.ndarray) -> float:
    """Standard deviation in [-1, 1] units of a unit-scale array (the PIL twin: image_std)."""
    return float(a.std() * 2.0)


def load_tile(path: Path) -> Image.Image | np.ndarray:
    """An 8-bit RGB PIL image (PNG/JPEG: the original's reader) or a unit-scale float32
    array [C, H, W] (a multiband TIFF tile)."""
    return load_array(path) if is_tiff(path) else load_rgb(path)


def tile_std(img: Image.Image | np.ndarray) -> float:
    return array_std(img) if isinstance(img, np.ndarray) else image_std(img)


def tile_tensor(img: Image.Image | np.ndarray) -> Tensor:
    """[C, H, W] in [-1, 1] (Normalize(0.5, 0.5) of either kind of tile)."""
    if isinstance(img, np.ndarray):
        return (torch.from_numpy(np.ascontiguousarray(img, dtype=np.float32)) - 0.5) / 0.5
    return to_tensor(img)


def channels_of(files: Sequence[Path]) -> int:
    """The channel count of a domain's tiles: 3 for PNG/JPEG (read as RGB), the band
    count for TIFF tiles; mixed kinds or band counts are refused naming two files."""
    counts: dict[int, Path] = {}
    for f in files:
        n = tiff_bands(f) if is_tiff(f) else 3
        counts.setdefault(n, f)
    if len(counts) > 1:
        (n1, f1), (n2, f2) = list(counts.items())[:2]
        raise TrainingError(f"{f1.parent}: tiles of {n1} and {n2} channels ({f1.name}, "
                            f"{f2.name}); a domain's tiles must all have the same bands")
    kinds = {is_tiff(f) for f in files}
    if len(kinds) > 1:
        raise TrainingError(f"{files[0].parent}: PNG/JPEG and TIFF tiles mixed; a domain "
                            f"holds one kind (cut them again with `pipeline tiles`)")
    return next(iter(counts), 3)


def _resize_array(a: np.ndarray, size: int) -> np.ndarray:
    """Bilinear resize of [C, H, W] to [C, size, size] (PIL's BILINEAR for upsampling:
    half-pixel centres; torch, since PIL holds no multiband float image)."""
    if a.shape[1:] == (size, size):
        return a
    t = torch.from_numpy(np.ascontiguousarray(a))[None]
    return F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False,
                         antialias=a.shape[1] > size or a.shape[2] > size)[0].numpy()


def _flip(img: Image.Image | np.ndarray) -> Image.Image | np.ndarray:
    if isinstance(img, np.ndarray):
        return img[:, :, ::-1]
    return img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)


def _resize(img: Image.Image | np.ndarray, size: int) -> Image.Image | np.ndarray:
    if isinstance(img, np.ndarray):
        return _resize_array(img, size)
    return img.resize((size, size), Image.Resampling.BILINEAR)


def _crop(img: Image.Image | np.ndarray, left: int, top: int, size: int
          ) -> Image.Image | np.ndarray:
    if isinstance(img, np.ndarray):
        return img[:, top:top + size, left:left + size]
    return img.crop((left, top, left + size, top + size))


def to_tensor(img: Image.Image) -> Tensor:
    """ToTensor + Normalize(0.5, 0.5) with the original's float32 arithmetic: [3, H, W]."""
    x = torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1)
    return (x.float().div(255) - 0.5) / 0.5


def image_std(img: Image.Image) -> float:
    """Standard deviation of all pixel values, in [-1, 1] units (2/255 per 8-bit level)."""
    return float(np.asarray(img, dtype=np.float32).std() / 127.5)


def index_domain(folder: Path, min_std: float) -> list[Path]:
    """The usable images of a domain folder: near-constant images are skipped (warned)."""
    if not folder.is_dir():
        raise TrainingError(f"{folder}: missing; a dataset needs trainA/ (EO) and trainB/ "
                            f"(SAR) folders of PNG images (make them with `pipeline tiles`)")
    files = list_images(folder)
    if not files:
        raise TrainingError(f"{folder}: no images ({', '.join(IMAGE_SUFFIXES)}); "
                            f"nothing to train on")
    kept = [f for f in files if tile_std(load_tile(f)) >= min_std]
    if len(kept) < len(files):
        log.warning("%s: skipped %d of %d near-constant images (pixel std < %g in [-1, 1] "
                    "units: nodata collars would turn the weights to NaN)",
                    folder, len(files) - len(kept), len(files), min_std)
    if not kept:
        raise TrainingError(f"{folder}: all {len(files)} images are near-constant (std < "
                            f"{min_std}); check the tiles (nodata?) or lower --min-std")
    return kept


def seeded_generator(*key: int) -> torch.Generator:
    """A torch.Generator seeded from a tuple of ints (hashed by numpy's SeedSequence, so
    nearby keys give unrelated streams)."""
    state = np.random.SeedSequence([int(k) for k in key]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


@lru_cache(maxsize=8)
def epoch_permutation(n: int, seed: int, rank: int, domain: int, epoch: int) -> Tensor:
    """Visiting order of the n images of a domain in one epoch of this rank's stream."""
    return torch.randperm(n, generator=seeded_generator(seed, rank, domain, 0, epoch))


def random_crop(img: Image.Image | np.ndarray, size: int, g: torch.Generator
                ) -> Image.Image | np.ndarray:
    """RandomHorizontalFlip, Resize((size+30, size+30)), RandomCrop(size), drawn from g."""
    if torch.rand(1, generator=g).item() < 0.5:
        img = _flip(img)
    big = size + RESIZE_MARGIN
    img = _resize(img, big)
    top = int(torch.randint(0, RESIZE_MARGIN + 1, (1,), generator=g))
    left = int(torch.randint(0, RESIZE_MARGIN + 1, (1,), generator=g))
    return _crop(img, left, top, size)


def random_crop_pair(img_a: Image.Image | np.ndarray, img_b: Image.Image | np.ndarray,
                     size: int, g: torch.Generator
                     ) -> tuple[Image.Image | np.ndarray, Image.Image | np.ndarray]:
    """The same flip, resize and crop for both images of a co-registered pair (one draw
    from g), so that pixel (i, j) of the two crops still shows the same ground."""
    flip = torch.rand(1, generator=g).item() < 0.5
    big = size + RESIZE_MARGIN
    top = int(torch.randint(0, RESIZE_MARGIN + 1, (1,), generator=g))
    left = int(torch.randint(0, RESIZE_MARGIN + 1, (1,), generator=g))
    out = []
    for img in (img_a, img_b):
        if flip:
            img = _flip(img)
        out.append(_crop(_resize(img, big), left, top, size))
    return out[0], out[1]


def find_pairs(files_a: Sequence[Path], files_b: Sequence[Path]) -> list[tuple[Path, Path]]:
    """Co-registered pairs: an A image and a B image with the same file name (what
    `pipeline tiles --paired` writes), sorted by name."""
    by_name = {f.name: f for f in files_b}
    return [(f, by_name[f.name]) for f in sorted(files_a, key=lambda f: f.name)
            if f.name in by_name]


def eval_transform(img: Image.Image | np.ndarray, size: int) -> Tensor:
    """The original's test transform: Resize((size, size)), ToTensor, Normalize."""
    return tile_tensor(_resize(img, size))


#: Stream index of the paired draws (A = 0, B = 1): their own permutation and crops, so
#: that drawing pairs leaves the unpaired A and B streams exactly as they are.
PAIR_STREAM = 2


class UnpairedDataset(Dataset):
    """Item ``p`` (a position in this rank's sample stream) -> (EO tensor, SAR tensor),
    or (EO, SAR, pair EO, pair SAR) when ``pairs`` are given.

    A and B are drawn independently (the data is unpaired): each domain has its own
    per-epoch permutation and its own augmentation stream. ``pairs`` (co-registered A/B
    images, see :func:`find_pairs`) feed the optional paired term of training: they are
    drawn from a third stream with one crop for both images, and without pairs the
    dataset is exactly the unpaired one.
    """

    def __init__(self, files_a: Sequence[Path], files_b: Sequence[Path], img_size: int,
                 seed: int = 0, rank: int = 0, min_std: float = DEFAULT_MIN_STD,
                 pairs: Sequence[tuple[Path, Path]] = ()) -> None:
        self.files = {"A": list(files_a), "B": list(files_b)}
        self.pairs = list(pairs)
        self.img_size = img_size
        self.seed = seed
        self.rank = rank
        self.min_std = min_std

    def __len__(self) -> int:
        """Positions in one epoch of the larger domain (the stream itself is infinite)."""
        return max(len(f) for f in self.files.values())

    def __getitem__(self, p: int) -> tuple[Tensor, ...]:
        if self.pairs:
            return (self.sample("A", p), self.sample("B", p), *self.sample_pair(p))
        return self.sample("A", p), self.sample("B", p)

    def sample_pair(self, p: int) -> tuple[Tensor, Tensor]:
        """The pair at stream position ``p``: the same flip and crop for its A and B image
        (pure function of (seed, rank, p), like the unpaired draws). A crop whose EO side
        is near-constant is re-drawn."""
        n = len(self.pairs)
        g = seeded_generator(self.seed, self.rank, PAIR_STREAM, 1, p)
        for t in range(MAX_DRAWS):
            q = p + t // CROP_TRIES
            i = int(epoch_permutation(n, self.seed, self.rank, PAIR_STREAM, q // n)[q % n])
            path_a, path_b = self.pairs[i]
            crop_a, crop_b = random_crop_pair(load_tile(path_a), load_tile(path_b),
                                              self.img_size, g)
            if tile_std(crop_a) >= self.min_std:
                return tile_tensor(crop_a), tile_tensor(crop_b)
        raise TrainingError(f"{MAX_DRAWS} crops of paired images in a row have pixel std < "
                            f"{self.min_std}: the paired tiles are (almost) all nodata")

    def sample(self, domain: str, p: int) -> Tensor:
        """The augmented crop of ``domain`` at stream position ``p`` (pure function)."""
        files = self.files[domain]
        n, d = len(files), DOMAINS[domain]
        g = seeded_generator(self.seed, self.rank, d, 1, p)
        idx, img = -1, None
        for t in range(MAX_DRAWS):  # near-constant crop: re-draw, moving on to other images
            q = p + t // CROP_TRIES
            i = int(epoch_permutation(n, self.seed, self.rank, d, q // n)[q % n])
            if i != idx:
                idx, img = i, load_tile(files[i])
            crop = random_crop(img, self.img_size, g)
            if tile_std(crop) >= self.min_std:
                return tile_tensor(crop)
        raise TrainingError(f"{MAX_DRAWS} crops of {domain} images in a row have pixel std < "
                            f"{self.min_std}: the tiles are (almost) all nodata")


class StreamSampler(Sampler[int]):
    """Infinite positions start, start+1, ... (replaces the original's re-created iterators)."""

    def __init__(self, start: int = 0) -> None:
        self.start = start

    def __iter__(self) -> Iterator[int]:
        return itertools.count(self.start)


def fixed_samples(files: Sequence[Path], n: int, img_size: int, min_std: float,
                  channels: int = 3) -> Tensor:
    """n images spread evenly over ``files``, test-transformed: [n, C, s, s] (the sample
    sheet's rows; the same images at every sample step)."""
    if n <= 0 or not files:
        return torch.empty(0, channels, img_size, img_size)
    picks = sorted({round(i * (len(files) - 1) / max(n - 1, 1)) for i in range(n)})
    out = []
    for i in picks:
        img = load_tile(files[i])
        if tile_std(img) >= min_std:
            out.append(eval_transform(img, img_size))
    return torch.stack(out) if out else torch.empty(0, channels, img_size, img_size)

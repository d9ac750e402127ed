"""Real-data cells: ELPV electroluminescence images of mono solar cells.

A ``kind = "elpv"`` cell uses the optional package ``elpv-dataset`` (extra
``elpv``): 2,624 greyscale 300x300 cells, each labelled with a defect
probability (0, 1/3, 2/3 or 1) and a type (mono or poly). The images are
licensed CC BY-NC-SA 4.0, so they are read from the installed package at run
time and nothing derived from them is stored in the repository.

Split (mono cells only; normal = probability 0, defective = probability 1).
The rows of ``labels.csv`` are ordered by module and neighbouring cells are
near-duplicates, so rows are grouped into blocks of 100 (``row // 100``).
Blocks, in an order drawn from ``train.seed``, go whole into training until
at least ``train_normals`` normal cells are in. The normal cells of the other
blocks are shuffled (same generator) and the first ``covariance_normals`` of
them estimate ``Sigma`` and the reference; the rest are the test normals. The
defective cells of the other blocks, shuffled, are the real defects.

Preprocessing: each cell is reduced to ``side x side`` by area averaging
(each output pixel is the mean of the input area it covers, with fractional
weights at its edges), then standardized by one global mean and standard
deviation, computed over every pixel of every training normal after the
reduction.

Cells:

* ``defect = "none"``: image ``i`` is test normal ``i`` (type I error), so a
  cell holds at most as many images as there are test normals;
* ``defect = "synthetic"``: test normal ``i mod N`` plus a synthetic dark
  defect of known mask (power and Dice): a crack (pixels whose centre lies
  within 0.5 pixel of a random segment of length ``defect_size``) or an
  inactive area (an axis-aligned rectangle with sides drawn from
  ``ceil(defect_size / 2) .. defect_size``), to which ``defect_contrast``
  (in units of the global standard deviation) is added, its seed drawn
  from ``SeedSequence([seed, i])``;
* ``defect = "real"``: image ``i`` is real defective cell ``i``; there is no
  pixel mask, so the rate is an image-level detection rate.

The reference image is the mean of the covariance normals (``c_ref = 1 /
covariance_normals``), ``Sigma`` is diagonal with their per-pixel sample
variances, and every pixel is eligible for the region.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Callable

import numpy as np

from dalverify.errors import InputError

#: Rows of ``labels.csv`` per block; a block goes whole into training or not at all.
BLOCK_ROWS = 100
DEFECTS = ("none", "synthetic", "real")
DEFECT_SHAPES = ("crack", "inactive")
#: Pixels whose centre lies within this distance (pixels) of the crack segment form the crack.
CRACK_HALF_WIDTH = 0.5
MISSING_PACKAGE = ("kind='elpv' needs the elpv-dataset package, which is not installed; install it with "
                   "pip install 'dalverify[elpv]' (or pip install elpv-dataset==1.0.0.post1)")


def load_source() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Load all cells from the installed package: ``(images (N, H, W), probabilities (N,), types (N,))``."""
    try:
        from elpv_dataset.utils import load_dataset
    except ImportError as error:
        raise InputError(MISSING_PACKAGE) from error
    images, probabilities, types = load_dataset()
    return np.asarray(images), np.asarray(probabilities, dtype=np.float64), np.asarray(types).astype(str)


# ---------------------------------------------------------------------------
# Split and preprocessing.

@dataclass(frozen=True)
class ElpvSplit:
    """Row indices (into the package's ``labels.csv`` order) of each part of the split."""

    train: np.ndarray
    covariance: np.ndarray
    test_normal: np.ndarray
    defective: np.ndarray
    training_blocks: np.ndarray


def split_rows(probabilities: np.ndarray, types: np.ndarray, *, train_normals: int, covariance_normals: int,
               seed: int) -> ElpvSplit:
    """Split the mono rows into training (whole 100-row blocks), covariance, test-normal and defective rows."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    types = np.asarray(types).astype(str)
    rng = np.random.default_rng(np.random.SeedSequence([seed, 2018]))
    rows = np.arange(len(types))
    mono = types == "mono"
    normal = mono & (probabilities == 0.0)
    defective = mono & (probabilities == 1.0)
    blocks = rows // BLOCK_ROWS
    in_training = np.zeros(len(rows), dtype=bool)
    chosen = []
    for block in rng.permutation(np.unique(blocks)):
        if np.count_nonzero(in_training & normal) >= train_normals:
            break
        in_training |= blocks == block
        chosen.append(int(block))
    if np.count_nonzero(in_training & normal) < train_normals:
        raise InputError(f"train_normals={train_normals}: the data hold only {np.count_nonzero(normal)} normal "
                         f"mono cells; lower train_normals")
    rest = rng.permutation(rows[normal & ~in_training])
    if len(rest) <= covariance_normals:
        raise InputError(
            f"covariance_normals={covariance_normals}: only {len(rest)} normal mono cells lie outside the "
            f"training blocks, so no test normal would remain; lower covariance_normals or train_normals"
        )
    return ElpvSplit(
        train=rows[normal & in_training],
        covariance=np.sort(rest[:covariance_normals]),
        test_normal=rest[covariance_normals:],
        defective=rng.permutation(rows[defective & ~in_training]),
        training_blocks=np.array(sorted(chosen), dtype=np.int64),
    )


def _area_weights(length: int, side: int) -> np.ndarray:
    """Return the ``(side, length)`` matrix whose row ``i`` averages the input interval ``[i f, (i + 1) f)``, ``f = length / side``."""
    scale = length / side
    low = np.arange(side)[:, None] * scale
    high = low + scale
    start = np.arange(length)[None, :]
    covered = np.clip(np.minimum(start + 1, high) - np.maximum(start, low), 0.0, None)
    return covered / scale


def area_downsample(image: np.ndarray, side: int) -> np.ndarray:
    """Reduce a 2-D image to ``side x side`` by area averaging (float64)."""
    image = np.asarray(image, dtype=np.float64)
    if image.ndim != 2:
        raise InputError(f"area_downsample expects a 2-D image, got shape {image.shape}")
    if side > min(image.shape):
        raise InputError(f"side={side} exceeds the image size {image.shape}; area averaging only reduces")
    return _area_weights(image.shape[0], side) @ image @ _area_weights(image.shape[1], side).T


@dataclass(frozen=True)
class ElpvData:
    """Standardized ``(N, 1, side, side)`` stacks of each part of the split and the quantities derived from them."""

    split: ElpvSplit
    train: np.ndarray
    covariance: np.ndarray
    test_normal: np.ndarray
    defective: np.ndarray
    mean: float
    sd: float
    variances: np.ndarray
    reference: np.ndarray
    names: tuple[str, ...]


#: Loader of the raw cells; tests replace it with a fake source.
SOURCE: Callable[[], tuple[np.ndarray, np.ndarray, np.ndarray]] = load_source


@lru_cache(maxsize=4)
def elpv_data(side: int, train_normals: int, covariance_normals: int, seed: int) -> ElpvData:
    """Load, split and preprocess the cells (cached per process)."""
    images, probabilities, types = SOURCE()
    split = split_rows(probabilities, types, train_normals=train_normals, covariance_normals=covariance_normals,
                       seed=seed)

    def reduce(rows: np.ndarray) -> np.ndarray:
        if len(rows) == 0:
            return np.empty((0, 1, side, side))
        return np.stack([area_downsample(images[row], side) for row in rows])[:, None]

    train = reduce(split.train)
    mean, sd = float(train.mean()), float(train.std())
    if not sd > 0:
        raise InputError("the training normals are constant after downsampling; the data are invalid")
    parts = [(reduce(rows) - mean) / sd for rows in (split.train, split.covariance, split.test_normal,
                                                      split.defective)]
    covariance = parts[1]
    variances = covariance.reshape(len(covariance), -1).var(axis=0, ddof=1)
    positive = variances[variances > 0]
    if positive.size == 0:
        raise InputError("every pixel of the covariance normals is constant; the data are invalid")
    # A pixel constant across the covariance normals gets the median positive variance (as in brain cells).
    variances[variances == 0] = float(np.median(positive))
    names = tuple(f"cell{row:04d}" for row in range(len(types)))
    return ElpvData(split, parts[0], covariance, parts[2], parts[3], mean, sd, variances,
                    covariance.mean(axis=0), names)


def clear_caches() -> None:
    """Forget the loaded data and covariances (after replacing :data:`SOURCE`)."""
    elpv_data.cache_clear()
    _covariance.cache_clear()


def data_of(config) -> ElpvData:
    """Return the split and preprocessed data of a cell (the split seed is ``config.train.seed``)."""
    return elpv_data(config.side, config.train_normals, config.covariance_normals, config.train.seed)


def training_images(config) -> np.ndarray:
    """Return the standardized training normals ``(N, 1, side, side)`` of a cell."""
    return data_of(config).train


def available_images(config) -> int:
    """Return the number of distinct images a cell can test (test normals or real defects)."""
    data = data_of(config)
    return len(data.defective) if config.defect == "real" else len(data.test_normal)


@lru_cache(maxsize=4)
def _covariance(side: int, train_normals: int, covariance_normals: int, seed: int):
    from dalverify.methods.covariance import Diagonal

    return Diagonal(elpv_data(side, train_normals, covariance_normals, seed).variances)


def elpv_covariance(config):
    """Return the diagonal :class:`~dalverify.methods.covariance.Covariance` of the covariance normals."""
    return _covariance(config.side, config.train_normals, config.covariance_normals, config.train.seed)


# ---------------------------------------------------------------------------
# Synthetic defects.

def crack_mask(side: int, start: tuple[float, float], end: tuple[float, float]) -> np.ndarray:
    """Mark the pixels whose centre ``(row, col)`` lies within ``CRACK_HALF_WIDTH`` of the segment ``start``-``end``."""
    rows, cols = np.mgrid[0:side, 0:side].astype(np.float64)
    a = np.asarray(start, dtype=np.float64)
    direction = np.asarray(end, dtype=np.float64) - a
    length2 = float(direction @ direction)
    if length2 == 0:
        t = np.zeros_like(rows)
    else:
        t = np.clip(((rows - a[0]) * direction[0] + (cols - a[1]) * direction[1]) / length2, 0.0, 1.0)
    distance = np.hypot(rows - (a[0] + t * direction[0]), cols - (a[1] + t * direction[1]))
    return distance <= CRACK_HALF_WIDTH


def rectangle_mask(side: int, top: int, left: int, height: int, width: int) -> np.ndarray:
    """Mark the ``height x width`` rectangle whose top-left pixel is ``(top, left)``."""
    mask = np.zeros((side, side), dtype=bool)
    mask[top:top + height, left:left + width] = True
    return mask


def draw_defect(side: int, shape: str, size: float, rng: np.random.Generator) -> tuple[np.ndarray, dict[str, Any]]:
    """Draw a random defect mask lying wholly inside the image; return it and its geometry."""
    if shape == "crack":
        angle = float(rng.uniform(0.0, math.pi))
        half_rows, half_cols = 0.5 * size * math.sin(angle), 0.5 * size * math.cos(angle)
        centre_row = float(rng.uniform(abs(half_rows), side - 1 - abs(half_rows)))
        centre_col = float(rng.uniform(abs(half_cols), side - 1 - abs(half_cols)))
        start = (centre_row - half_rows, centre_col - half_cols)
        end = (centre_row + half_rows, centre_col + half_cols)
        return crack_mask(side, start, end), {"start": list(start), "end": list(end)}
    if shape == "inactive":
        smallest = max(1, math.ceil(size / 2))
        height = int(rng.integers(smallest, int(size) + 1))
        width = int(rng.integers(smallest, int(size) + 1))
        top = int(rng.integers(0, side - height + 1))
        left = int(rng.integers(0, side - width + 1))
        return rectangle_mask(side, top, left, height, width), {"top": top, "left": left, "height": height,
                                                                 "width": width}
    raise InputError(f"defect_shape={shape!r} is unknown; use one of {DEFECT_SHAPES}")


# ---------------------------------------------------------------------------
# Images of a cell.

@dataclass
class ElpvCase:
    """Inputs of one ELPV image and the facts recorded about it."""

    image: np.ndarray
    reference: np.ndarray
    mask: np.ndarray | None
    reference_scale: float
    defect: np.ndarray | None
    facts: dict[str, Any] = field(default_factory=dict)


def elpv_case(config, index: int) -> ElpvCase:
    """Build image ``index`` of an ELPV cell (see the module notes for the rules)."""
    data = data_of(config)
    pool, rows = (data.defective, data.split.defective) if config.defect == "real" else (
        data.test_normal, data.split.test_normal)
    total = len(pool)
    if total == 0:
        raise InputError(f"the split leaves no {'defective' if config.defect == 'real' else 'test normal'} cell")
    if config.defect != "synthetic" and index >= total:
        raise InputError(f"image {index} of an ELPV cell with defect={config.defect!r} is invalid: the split "
                         f"contains {total} such cells; use an index below {total}")
    rng = np.random.default_rng(np.random.SeedSequence([config.seed, index]))
    number = index % total
    row = int(rows[number])
    image = pool[number].copy()
    facts: dict[str, Any] = {"cell": data.names[row], "row": row,
                             "reference_count": len(data.covariance)}
    defect = None
    if config.defect == "synthetic":
        defect_seed = int(rng.integers(0, 2**31 - 1))
        defect, geometry = draw_defect(config.side, config.defect_shape, config.defect_size,
                                       np.random.default_rng(defect_seed))
        image[0][defect] += config.defect_contrast
        facts.update(defect_seed=defect_seed, defect_pixels=int(defect.sum()), defect_geometry=geometry)
    facts["permutation_seed"] = int(rng.integers(0, 2**31 - 1))
    return ElpvCase(image, data.reference.copy(), None, 1.0 / len(data.covariance), defect, facts)

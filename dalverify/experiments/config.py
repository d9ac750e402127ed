"""Experiment configuration: one TOML (or YAML) file, expanded into sweep cells.

A file describes one experiment. List-valued sweep keys (``delta`` for power,
``distance`` and ``family`` for robustness) expand into one *cell* per
combination; each cell has its own results file. Every random draw is seeded
from ``seed`` and the image index, so a cell is reproducible on any number of
workers.

Example (TOML)::

    name = "type1_n64"
    kind = "type1"          # type1 | power | robustness
    side = 8                # image side; n = side^2
    covariance = "identity" # identity | ar1
    rho = 0.5               # AR(1) correlation (ar1 only)
    threshold = 0.8         # lambda
    kernel_size = 3
    t_start = 460           # T'
    ddim_steps = 5          # k
    eta = 1.0
    methods = ["selective", "overconditioned", "naive", "bonferroni"]
    alpha = 0.05
    images = 300
    seed = 1
    model = "/work/work_data/experiments/ddpm_8x8_identity.dalv"
    search = "adaptive"     # or a number of standard deviations
    relative_width = 1e-6

    [train]                 # used by `dalverify experiment train-model`
    images = 2000
    steps = 600
    base_width = 4
    depth = 1
"""

from __future__ import annotations

import copy
import itertools
import json
import math
import os
import tomllib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from dalverify.errors import InputError

KINDS = ("type1", "power", "robustness", "brain", "elpv")
#: Kinds on real images, with a diagonal Sigma and the intensity-threshold baseline.
REAL_DATA_KINDS = ("brain", "elpv")
COVARIANCES = ("identity", "ar1", "diagonal")
METHODS = ("selective", "overconditioned", "naive", "bonferroni", "permutation", "baseline_selective",
           "baseline_naive")
#: Methods of the intensity-threshold baseline (``brain`` and ``elpv`` cells only).
BASELINE_METHODS = ("baseline_selective", "baseline_naive")


@dataclass
class TrainSettings:
    """Settings of the small DDPM trained on synthetic normal images ``N(0, Sigma)``."""

    images: int = 2000
    steps: int = 600
    batch_size: int = 32
    lr: float = 2e-3
    base_width: int = 4
    depth: int = 1
    seed: int = 0
    ema: float = 0.99


@dataclass
class ExperimentConfig:
    """One experiment cell (after expansion, every sweep key is a scalar).

    Attributes
    ----------
    name : str
        Cell name; results go to ``<out>/<name>/``.
    kind : str
        ``"type1"`` (null images), ``"power"`` (a shift ``delta`` on a random
        ``region_side x region_side`` square), ``"robustness"`` (null
        images with non-Gaussian noise at Wasserstein distance ``distance``),
        ``"brain"`` (the bundled real brain slices, see
        :mod:`dalverify.experiments.brain`) or ``"elpv"`` (ELPV solar cells
        from the optional ``elpv-dataset`` package, see
        :mod:`dalverify.experiments.elpv`).
    side : int
        Image side; the number of pixels is ``n = side^2``.
    covariance, rho
        ``"identity"`` (``Sigma = I``) or ``"ar1"`` (``Sigma_ij = rho^|i-j|``
        over the row-major vectorized pixels); ``"diagonal"`` (brain and
        elpv cells only: the per-pixel variances of the covariance images).
    threshold, kernel_size, t_start, ddim_steps, eta, reconstruction_seed
        DAL-Test and DDIM settings (``lambda``, ``K``, ``T'``, ``k``, ``eta``).
    methods, alpha
        p-values to report and the level of the tests.
    images, seed
        Number of images and the base seed (image ``i`` uses ``[seed, i]``).
    model
        Path of the ``.dalv`` model (written by ``train-model``), or
        ``"bundled"`` for the bundled brain model of side ``side``.
    search, relative_width
        Search of the line: ``"adaptive"`` with the target relative width
        of the selective p-value's enclosure, or a fixed half-width in sd.
    permutations, permutation_images
        ``B`` of the permutation p-value and the number of leading images
        (indices ``0 .. permutation_images - 1``) on which it is computed.
    delta, region_side
        Shift added to the region for ``power``, and the region's side.
    family, distance
        Noise family and its ``W1`` distance from N(0, 1) for ``robustness``.
    lesion_contrast, lesion_radius
        Brain cells: core intensity (in sd of the standardized slices) and
        radius (pixels) of the synthetic lesion; contrast 0 means normal
        slices (type I error).
    defect, defect_shape, defect_contrast, defect_size
        ELPV cells: ``"none"`` (test normals), ``"synthetic"`` (test normals
        with a ``"crack"`` or ``"inactive"`` defect of known mask, intensity
        ``defect_contrast`` in sd of the standardized cells, size
        ``defect_size`` pixels) or ``"real"`` (real defective cells).
    train_normals, covariance_normals
        ELPV cells: minimum number of training normals (taken in whole
        100-row blocks) and number of covariance-estimation normals; the
        split is drawn from ``train.seed``.
    """

    name: str
    kind: str = "type1"
    side: int = 8
    covariance: str = "identity"
    rho: float = 0.5
    threshold: float = 0.8
    kernel_size: int = 3
    t_start: int = 460
    ddim_steps: int = 5
    eta: float = 1.0
    reconstruction_seed: int = 0
    methods: list[str] = field(default_factory=lambda: ["selective", "overconditioned", "naive", "bonferroni"])
    alpha: float = 0.05
    images: int = 100
    seed: int = 0
    model: str = ""
    search: str | float = "adaptive"
    relative_width: float = 1e-6
    permutations: int = 0
    permutation_images: int = 0
    delta: float = 0.0
    region_side: int = 2
    family: str = "normal"
    distance: float = 0.0
    lesion_contrast: float = 0.0
    lesion_radius: float = 2.0
    defect: str = "none"
    defect_shape: str = "crack"
    defect_contrast: float = 0.0
    defect_size: float = 8.0
    train_normals: int = 300
    covariance_normals: int = 100
    train: TrainSettings = field(default_factory=TrainSettings)

    @property
    def n(self) -> int:
        return self.side * self.side

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def validate(self) -> ExperimentConfig:
        """Check every field; raise :class:`InputError` naming the value and the fix."""
        if self.kind not in KINDS:
            raise InputError(f"kind={self.kind!r} is unknown; use one of {KINDS}")
        if self.covariance not in COVARIANCES:
            raise InputError(f"covariance={self.covariance!r} is unknown; use one of {COVARIANCES}")
        if not (-1 < self.rho < 1):
            raise InputError(f"rho={self.rho!r} must satisfy -1 < rho < 1")
        if self.side < 2:
            raise InputError(f"side={self.side!r} must be >= 2")
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown or not self.methods:
            raise InputError(f"methods={self.methods!r}: each must be one of {METHODS}")
        if not (0 < self.alpha < 1):
            raise InputError(f"alpha={self.alpha!r} must lie in (0, 1)")
        if self.images < 1:
            raise InputError(f"images={self.images!r} must be >= 1")
        if self.search != "adaptive":
            try:
                value = float(self.search)
            except (TypeError, ValueError) as error:
                raise InputError(f"search={self.search!r}: use 'adaptive' or a positive number of sd") from error
            if not (math.isfinite(value) and value > 0):
                raise InputError(f"search={self.search!r} must be a positive number of sd")
            self.search = value
        if self.kind == "power" and not (1 <= self.region_side <= self.side):
            raise InputError(f"region_side={self.region_side!r} must lie in [1, side={self.side}]")
        if self.kind == "robustness":
            from dalverify.experiments.noise import FAMILIES

            if self.family not in FAMILIES and not (self.family == "normal" and self.distance == 0):
                raise InputError(f"family={self.family!r} is unknown; use one of {FAMILIES}")
        if self.permutations < 0 or self.permutation_images < 0:
            raise InputError("permutations and permutation_images must be >= 0")
        if "permutation" in self.methods and self.permutations == 0:
            raise InputError("methods lists 'permutation' but permutations=0; set permutations (e.g. 100)")
        self._validate_brain()
        if not self.model:
            raise InputError(f"experiment {self.name!r} has no model path; set model = \"PATH.dalv\"")
        return self

    def _validate_brain(self) -> None:
        baseline = [m for m in self.methods if m in BASELINE_METHODS]
        if self.kind not in REAL_DATA_KINDS:
            if self.covariance == "diagonal":
                raise InputError("covariance='diagonal' is for kind='brain' or 'elpv' only; use 'identity' or 'ar1'")
            if baseline:
                raise InputError(f"methods {baseline} are for kind='brain' or 'elpv' only; remove them")
        if self.kind != "brain" and self.model == "bundled":
            raise InputError("model='bundled' is for kind='brain' only; give the path of a .dalv model")
        if self.kind == "elpv":
            self._validate_elpv()
        if self.kind != "brain":
            return
        from dalverify.experiments.brain import BRAIN_MODELS, slice_count

        if self.side not in BRAIN_MODELS:
            raise InputError(f"side={self.side!r}: brain slices are bundled at sides {sorted(BRAIN_MODELS)}")
        if self.covariance != "diagonal":
            raise InputError(f"covariance={self.covariance!r}: brain cells use covariance = 'diagonal'")
        if "permutation" in self.methods:
            raise InputError("the permutation p-value is not available in brain cells; remove 'permutation'")
        if not (math.isfinite(self.lesion_radius) and self.lesion_radius > 0):
            raise InputError(f"lesion_radius={self.lesion_radius!r} must be a positive number of pixels")
        if not math.isfinite(self.lesion_contrast):
            raise InputError(f"lesion_contrast={self.lesion_contrast!r} must be finite")
        total = slice_count(self.side)
        if self.lesion_contrast == 0 and self.images > total:
            raise InputError(
                f"images={self.images}: the bundled data hold {total} normal test slices of side {self.side}; "
                f"set images <= {total} (each normal slice is tested once)"
            )

    def _validate_elpv(self) -> None:
        from dalverify.experiments.elpv import DEFECT_SHAPES, DEFECTS, available_images

        if self.covariance != "diagonal":
            raise InputError(f"covariance={self.covariance!r}: elpv cells use covariance = 'diagonal'")
        if "permutation" in self.methods:
            raise InputError("the permutation p-value is not available in elpv cells; remove 'permutation'")
        if self.defect not in DEFECTS:
            raise InputError(f"defect={self.defect!r} is unknown; use one of {DEFECTS}")
        if self.train_normals < 1 or self.covariance_normals < 2:
            raise InputError(f"train_normals={self.train_normals} and covariance_normals={self.covariance_normals}: "
                             "need train_normals >= 1 and covariance_normals >= 2 (a sample variance needs two)")
        if self.defect == "synthetic":
            if self.defect_shape not in DEFECT_SHAPES:
                raise InputError(f"defect_shape={self.defect_shape!r} is unknown; use one of {DEFECT_SHAPES}")
            if not (math.isfinite(self.defect_contrast) and self.defect_contrast != 0):
                raise InputError(f"defect_contrast={self.defect_contrast!r}: a synthetic defect needs a finite, "
                                 "non-zero contrast (negative values make it dark)")
            if not (1 <= self.defect_size <= self.side - 1):
                raise InputError(f"defect_size={self.defect_size!r} must lie in [1, side - 1 = {self.side - 1}] "
                                 "pixels")
        elif self.defect_contrast != 0:
            raise InputError(f"defect_contrast={self.defect_contrast!r} applies to defect='synthetic' only; "
                             f"set it to 0 for defect={self.defect!r}")
        # Loading the split here makes a missing package or an impossible split fail before any image runs.
        total = available_images(self)
        if self.defect != "synthetic":
            if self.images > total:
                pool = "real defective mono cells" if self.defect == "real" else "test normal mono cells"
                raise InputError(f"images={self.images} is too many: the split contains {total} {pool} outside "
                                 f"the training blocks; set images <= {total} (each cell is tested once)")


#: Keys that may hold a list in a file; each list expands into cells.
SWEEP_KEYS = ("side", "delta", "family", "distance", "lesion_contrast", "defect", "defect_shape", "defect_contrast")
#: Sweep keys that only matter for synthetic ELPV defects; other ELPV cells take their default.
SYNTHETIC_DEFECT_KEYS = ("defect_shape", "defect_contrast")


def read_mapping(path: str | os.PathLike) -> dict[str, Any]:
    """Read the raw mapping of a ``.toml`` file (or ``.yaml``/``.yml`` when PyYAML is installed)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"config file {str(path)!r} does not exist")
    suffix = path.suffix.lower()
    if suffix == ".toml":
        try:
            return tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as error:
            raise InputError(f"config file {str(path)!r} is not valid TOML: {error}") from error
    if suffix in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError as error:
            raise InputError(f"config file {str(path)!r} is YAML; install pyyaml or use TOML") from error
        data = yaml.safe_load(path.read_text())
        if not isinstance(data, dict):
            raise InputError(f"config file {str(path)!r} does not hold a mapping")
        return data
    raise InputError(f"config file {str(path)!r} has suffix {suffix!r}; use .toml (or .yaml with pyyaml)")


def from_mapping(data: dict[str, Any], *, name: str | None = None) -> ExperimentConfig:
    """Build one cell from a mapping whose sweep keys are scalars."""
    data = copy.deepcopy(dict(data))
    known = {f.name for f in fields(ExperimentConfig)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise InputError(f"unknown config keys {unknown}; known keys are {sorted(known)}")
    train = data.pop("train", {}) or {}
    train_known = {f.name for f in fields(TrainSettings)}
    bad = sorted(set(train) - train_known)
    if bad:
        raise InputError(f"unknown [train] keys {bad}; known keys are {sorted(train_known)}")
    if name is not None:
        data["name"] = name
    if "name" not in data:
        raise InputError("the config has no name; set name = \"...\"")
    if isinstance(data.get("model"), str):
        # The model path may name the cell's image side and covariance.
        data["model"] = data["model"].format(side=data.get("side", 8), covariance=data.get("covariance", "identity"))
    return ExperimentConfig(**data, train=TrainSettings(**train)).validate()


def expand(data: dict[str, Any]) -> list[ExperimentConfig]:
    """Cells of a mapping: one per combination of its list-valued sweep keys."""
    base = dict(data)
    lists = {key: base[key] for key in SWEEP_KEYS if isinstance(base.get(key), list)}
    if not lists:
        return [from_mapping(base)]
    cells = []
    names = set()
    keys = list(lists)
    defaults = ExperimentConfig(name="").to_dict()
    for combination in itertools.product(*(lists[key] for key in keys)):
        cell = dict(base)
        suffix = []
        for key, value in zip(keys, combination):
            cell[key] = value
        for key, value in zip(keys, combination):
            if key in SYNTHETIC_DEFECT_KEYS and cell.get("defect") != "synthetic":
                # A normal or real-defect cell has no synthetic defect, so the
                # shape and contrast lists do not multiply it.
                cell[key] = defaults[key]
                continue
            suffix.append(f"{key}{value}")
        name = base.get("name", "experiment")
        if suffix:
            name = f"{name}_{'_'.join(suffix)}"
        if name in names:
            continue
        names.add(name)
        cells.append(from_mapping(cell, name=name))
    return cells


def load_config(path: str | os.PathLike) -> list[ExperimentConfig]:
    """Read a config file and expand it into its cells."""
    return expand(read_mapping(path))


def config_json(config: ExperimentConfig) -> str:
    """Canonical JSON text of a cell (sorted keys), as stored next to its results."""
    return json.dumps(config.to_dict(), indent=2, sort_keys=True)

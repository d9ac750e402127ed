"""The DAL-Test: selective inference for a region found by reconstruction.

One run, in order:

1. reconstruct the test image, filter the residual and select the region
   ``M = {i eligible : |r_i| >= lambda}``;
2. build the statistic ``T = nu^T (x; x_ref)`` and the line
   ``(x; x_ref) = a + b z`` through the data (``z = t_obs`` at the data);
3. walk the line through the reconstruction graph, cutting every linear
   piece where a filtered residual crosses ``+-lambda``, and keep the
   intervals whose region equals ``M``: their union is ``Z``;
4. compute the selective p-value over ``Z`` with its enclosure for the part
   of the line that was not searched, and the over-conditioned, naive and
   Bonferroni p-values (permutation on request).

The range grows until the selective p-value's enclosure is narrower than
``relative_width`` (adaptive mode), or is fixed (a number of standard
deviations, or the whole line).
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from dalverify.errors import InputError, NumericalError
from dalverify.graph.ir import Graph
from dalverify.images import validate_image
from dalverify.line import rule
from dalverify.line.walk import Partition, make_backend, walk_line
from dalverify.methods.covariance import Covariance
from dalverify.methods.pvalues import (
    PValue,
    bonferroni_pvalue,
    naive_pvalue,
    permutation_pvalue,
    selective_pvalue,
    selective_pvalue_enclosure,
)
from dalverify.methods.statistic import Line, line_from_images
from dalverify.numerics.intervals import IntervalUnion
from dalverify.selection.event import LambdaCuts, residual_line
from dalverify.selection.region import check_threshold, residual_scores, select_region

logger = logging.getLogger(__name__)

#: Compatibility profiles: the default follows the definitions of this
#: package; "si4onnx" reproduces the choices of the si4onnx package.
PROFILES = ("default", "si4onnx")

#: Initial half-width of the adaptive range beyond |t_obs|, in standard
#: deviations of T, and the amount it grows by per step.
_ADAPTIVE_START_SD = 4.0
_ADAPTIVE_GROWTH_SD = 3.0
_ADAPTIVE_MAX_STEPS = 40


class RegionCuts:
    """Cut set of the selection event for the line walk.

    The cut functions are the filtered residual minus and plus ``lambda`` on
    the eligible pixels. An interval's label is True when its region equals
    the observed one.
    """

    def __init__(self, a_image: np.ndarray, b_image: np.ndarray, lambda_cuts: LambdaCuts, kernel_size: int,
                 profile: str, observed: np.ndarray) -> None:
        self.a_image = a_image
        self.b_image = b_image
        self.lambda_cuts = lambda_cuts
        self.kernel_size = kernel_size
        self.filter_profile = "si4onnx" if profile == "si4onnx" else "inside"
        self.observed = observed

    def residual(self, out_alpha: np.ndarray, out_beta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return residual_line(self.a_image, self.b_image, out_alpha, out_beta, self.kernel_size, self.filter_profile)

    def functions(self, out_alpha: np.ndarray, out_beta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.lambda_cuts.cuts(*self.residual(out_alpha, out_beta))

    def label(self, signs: np.ndarray) -> bool:
        return bool(np.array_equal(self.lambda_cuts.region_from_signs(signs), self.observed))


@dataclass
class TestResult:
    """Everything one DAL-Test run produced.

    ``status`` is ``"ok"`` or ``"no_region"`` (the threshold selected no
    pixel: there is no hypothesis and no p-value). p-values are
    :class:`~dalverify.methods.pvalues.PValue` objects; the selective one
    carries its enclosure ``[p_lo, p_hi]``.
    """

    __test__ = False  # not a pytest test class

    status: str
    region: np.ndarray
    settings: dict[str, Any]
    graph_digest: str
    t_obs: float | None = None
    sd: float | None = None
    pvalues: dict[str, PValue] = field(default_factory=dict)
    truncation: IntervalUnion | None = None
    overconditioned: IntervalUnion | None = None
    searched: tuple[float, float] | None = None
    pieces: int = 0
    network_pieces: int = 0
    timings: dict[str, float] = field(default_factory=dict)
    reconstruction: np.ndarray | None = None
    line: Line | None = None
    partition: Partition | None = None
    enclosure_width: float | None = None
    stopped_early: bool = False
    graph: Graph | None = None
    covariance: Covariance | None = None
    mask: np.ndarray | None = None

    @property
    def region_size(self) -> int:
        return int(self.region.sum())

    @property
    def selective(self) -> PValue | None:
        return self.pvalues.get("selective")

    def to_dict(self) -> dict[str, Any]:
        """JSON-compatible summary (p-values as decimal strings with log10)."""
        out: dict[str, Any] = {
            "status": self.status,
            "region_size": self.region_size,
            "region_pixels": np.argwhere(self.region).tolist(),
            "graph_digest": self.graph_digest,
            "settings": self.settings,
            "t_obs": self.t_obs,
            "sd": self.sd,
            "z_obs": None if self.t_obs is None else self.t_obs / self.sd,
            "pvalues": {name: p.to_json() for name, p in self.pvalues.items()},
            "searched_range": None if self.searched is None else [float(v) for v in self.searched],
            "enclosure_relative_width": self.enclosure_width,
            "stopped_early": self.stopped_early,
            "truncation_intervals": None if self.truncation is None else len(self.truncation),
            "truncation": None if self.truncation is None else self.truncation.to_json(),
            "overconditioned": None if self.overconditioned is None else self.overconditioned.to_json(),
            "pieces": self.pieces,
            "network_pieces": self.network_pieces,
            "timings_seconds": self.timings,
        }
        return out

    def to_json(self, **kwargs: Any) -> str:
        return json.dumps(self.to_dict(), **kwargs)


def _as_graph(reconstruction: Any, image_shape: tuple[int, ...] | None) -> Graph:
    if isinstance(reconstruction, Graph):
        return reconstruction
    if isinstance(reconstruction, str) or hasattr(reconstruction, "__fspath__"):
        from dalverify.graph.io import load_graph

        return load_graph(reconstruction)
    try:
        import torch
    except ImportError as error:  # pragma: no cover - torch is a dependency
        raise InputError("a torch module needs torch; pass an exported Graph instead") from error
    if isinstance(reconstruction, torch.nn.Module):
        if image_shape is None:
            raise InputError("a torch module needs image_shape=(C, H, W) to be exported")
        from dalverify.export import export

        metadata = reconstruction.settings() if hasattr(reconstruction, "settings") else None
        return export(reconstruction, torch.zeros((1,) + tuple(image_shape), dtype=torch.float64), metadata=metadata)
    raise InputError(
        f"reconstruction is a {type(reconstruction).__name__}; pass a Graph, a path to a .dalg file or a torch module"
    )


class DALTest:
    """Selective test of the region found by a piecewise-linear reconstruction.

    Parameters
    ----------
    reconstruction
        The map ``D``: a :class:`~dalverify.graph.ir.Graph`, a path to a
        saved graph, or a piecewise-linear ``torch.nn.Module`` (exported on
        first use; pass ``image_shape``).
    threshold
        ``lambda > 0`` on the absolute filtered residual.
    kernel_size
        Odd size ``K`` of the averaging filter.
    covariance
        ``Sigma`` of the test image's noise (a :mod:`~dalverify.methods.covariance` object).
    reference_scale
        ``c_ref``: the reference image's noise is ``N(0, c_ref Sigma)`` (1 for
        one image, ``1/N`` for a mean of ``N``, 0 for a fixed template).
    mask
        Optional boolean ``(H, W)`` eligibility mask.
    two_sided
        ``"symmetric"`` (default) or ``"equal-tailed"``.
    search
        ``"adaptive"`` (default: grow the range until the enclosure's relative
        width is below ``relative_width``), ``"whole"`` (the whole line), or a
        number ``R``: search ``[-R sd, R sd]`` beyond nothing else.
    relative_width
        Target ``(p_hi - p_lo) / p_hi`` of the adaptive search.
    decide_at
        Early stopping (adaptive search only; default None, off): stop
        growing the range as soon as the certified enclosure ``[p_lo, p_hi]``
        lies entirely below ``decide_at`` or entirely at or above it, so
        that the decision ``p < decide_at`` is known. The selective p-value is
        then reported with that enclosure, which may be wide, and
        ``TestResult.stopped_early`` is True. A certificate of such a result
        certifies the enclosure, not a point value.
    profile
        ``"default"`` or ``"si4onnx"``: zero-padded filter dividing by K^2,
        strict ``> lambda``, threshold rounded to float32, equal-tailed
        p-values and the range ``[-(10 + |z|), 10 + |z|]`` in sd units.
    permutations
        Number ``B`` of permutations for the permutation p-value (0: skip).
    seed
        Seed of the permutation baseline.
    backend
        Line-walk engine (see :func:`dalverify.line.walk.walk_line`):
        ``"auto"`` (the layer-major sweep), ``"layer"``, ``"numpy"`` or
        ``"torch"``. Single passes (the reconstruction) use torch when it is
        importable, else numpy.
    dps
        Working decimal precision of the p-values (checked at twice it).
    workers
        Worker processes for the walk (each with one torch thread): with 2,
        the two halves of the range and the two sides of each extension of
        the adaptive range are walked at the same time. The partition is the
        same as with 1.
    """

    def __init__(
        self,
        reconstruction: Any,
        *,
        threshold: float,
        covariance: Covariance,
        kernel_size: int = 3,
        reference_scale: float = 1.0,
        mask: np.ndarray | None = None,
        two_sided: str = "symmetric",
        search: str | float = "adaptive",
        relative_width: float = 1e-9,
        decide_at: float | None = None,
        profile: str = "default",
        permutations: int = 0,
        seed: int = 0,
        backend: str = "auto",
        dps: int = 50,
        image_shape: tuple[int, int, int] | None = None,
        progress: bool | None = None,
        max_pieces: int | None = None,
        workers: int = 1,
    ) -> None:
        if profile not in PROFILES:
            raise InputError(f"profile={profile!r} is unknown; use one of {PROFILES}")
        threshold = check_threshold(threshold)
        if profile == "si4onnx":
            threshold = float(np.float32(threshold))
            two_sided = "equal-tailed"
            search = "si4onnx"
        if two_sided not in ("symmetric", "equal-tailed"):
            raise InputError(f"two_sided={two_sided!r} is invalid; use 'symmetric' or 'equal-tailed'")
        if not (isinstance(search, str) and search in ("adaptive", "whole", "si4onnx")):
            try:
                search = float(search)
            except (TypeError, ValueError) as error:
                raise InputError(f"search={search!r} is invalid; use 'adaptive', 'whole' or a positive number of sd") from error
            if not (math.isfinite(search) and search > 0):
                raise InputError(f"search={search!r} must be a positive number of standard deviations")
        if not (0 < relative_width < 1):
            raise InputError(f"relative_width={relative_width!r} must lie in (0, 1)")
        if decide_at is not None:
            if not (isinstance(decide_at, (int, float)) and 0 < decide_at < 1):
                raise InputError(f"decide_at={decide_at!r} must be a significance level in (0, 1), or None")
            if search != "adaptive":
                raise InputError(f"decide_at={decide_at!r} needs search='adaptive', not search={search!r}")
        if int(permutations) < 0:
            raise InputError(f"permutations={permutations!r} must be >= 0")
        self.graph = _as_graph(reconstruction, image_shape)
        if len(self.graph.input_shape) != 3 or self.graph.input_shape != self.graph.output_shape:
            raise InputError(
                f"the reconstruction maps shape {self.graph.input_shape} to {self.graph.output_shape}; "
                "it must map a (C, H, W) image to an image of the same shape"
            )
        self.threshold = threshold
        self.kernel_size = int(kernel_size)
        self.covariance = covariance
        self.reference_scale = float(reference_scale)
        self.mask = None if mask is None else np.asarray(mask, dtype=bool)
        self.two_sided = two_sided
        self.search = search
        self.relative_width = float(relative_width)
        self.decide_at = None if decide_at is None else float(decide_at)
        self.profile = profile
        self.permutations = int(permutations)
        self.seed = int(seed)
        self.backend = backend
        self.dps = int(dps)
        self.progress = progress
        self.max_pieces = max_pieces
        if int(workers) < 1:
            raise InputError(f"workers={workers!r} must be at least 1")
        self.workers = int(workers)
        self._pool = None
        self._stopped_early = False

    # ------------------------------------------------------------------
    def settings(self) -> dict[str, Any]:
        """The settings of the test, JSON-compatible."""
        return {
            "threshold": self.threshold,
            "kernel_size": self.kernel_size,
            "reference_scale": self.reference_scale,
            "two_sided": self.two_sided,
            "search": self.search,
            "relative_width": self.relative_width,
            "decide_at": self.decide_at,
            "profile": self.profile,
            "permutations": self.permutations,
            "seed": self.seed,
            "dps": self.dps,
            "covariance": self.covariance.digest(),
            "mask_pixels": None if self.mask is None else int(self.mask.sum()),
        }

    def reconstruct(self, image: np.ndarray) -> np.ndarray:
        """``D(image)`` in float64 through the graph."""
        engine = make_backend(self.graph, image, np.zeros_like(image), self.backend)
        step = engine.line_pass(0.0)
        return np.asarray(step.out_alpha)

    def observed_region(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Region ``M(x)`` and the reconstruction ``D(x)`` of a validated image."""
        reconstruction = self.reconstruct(image)
        filter_profile = "si4onnx" if self.profile == "si4onnx" else "inside"
        scores = residual_scores(image, reconstruction, self.kernel_size, profile=filter_profile)
        region = select_region(scores, self.threshold, self.mask, strict=self.profile == "si4onnx")
        return region, reconstruction

    # ------------------------------------------------------------------
    def run(self, image: Any, reference: Any) -> TestResult:
        """Run the test on ``image`` against ``reference`` (both (C, H, W))."""
        timings: dict[str, float] = {}
        started = time.perf_counter()
        x = validate_image(image, name="image", expected_shape=self.graph.input_shape)
        ref = validate_image(reference, name="reference", expected_shape=x.shape)

        # 1. Region of the observed image.
        region, reconstruction = self.observed_region(x)
        timings["region"] = time.perf_counter() - started
        result = TestResult("no_region", region, self.settings(), self.graph.digest(), reconstruction=reconstruction,
                            graph=self.graph, covariance=self.covariance, mask=self.mask)
        if not region.any():
            logger.info("no anomalous region at threshold %g", self.threshold)
            result.timings = timings
            return result

        # 2. Statistic and line.
        line = line_from_images(x, ref, region, self.covariance, self.reference_scale)
        result.status, result.line, result.t_obs, result.sd = "ok", line, line.t_obs, line.sd
        lambda_cuts = LambdaCuts(self.threshold, x.shape[1:], self.mask, strict=self.profile == "si4onnx")
        cuts = RegionCuts(line.a_image, line.b_image, lambda_cuts, self.kernel_size, self.profile, region)

        # 3. Walk the line and build Z.
        walk_started = time.perf_counter()
        self._stopped_early = False
        try:
            self._open_pool(line, cuts)
            partition, unexplored, enclosure = self._search(line, cuts)
        finally:
            self._close_pool()
        timings["walk"] = time.perf_counter() - walk_started
        z_pieces = [(piece.lo, piece.hi) for piece in partition.pieces if piece.label]
        truncation = IntervalUnion(z_pieces)
        observed_piece = partition.piece_at(line.t_obs)
        if not observed_piece.label or line.t_obs not in truncation:
            raise NumericalError(
                f"the region on the line at t_obs={line.t_obs!r} differs from the observed region: a filtered "
                f"residual lies within rounding of the threshold {self.threshold!r}; move the threshold slightly"
            )
        result.partition, result.truncation = partition, truncation
        result.pieces, result.network_pieces = len(partition.pieces), partition.network_pieces
        result.searched = (partition.lo, partition.hi)
        result.stopped_early = self._stopped_early

        # 4. p-values.
        pvalue_started = time.perf_counter()
        if enclosure is None:
            enclosure = selective_pvalue_enclosure(line.t_obs, line.sd, truncation, unexplored,
                                                   two_sided=self.two_sided, dps=self.dps)
        p_lo, p_hi = enclosure
        selective = selective_pvalue(line.t_obs, line.sd, truncation, two_sided=self.two_sided, dps=self.dps)
        result.pvalues["selective"] = selective.with_enclosure(p_lo, p_hi) if hasattr(selective, "with_enclosure") else selective
        result.enclosure_width = _relative_width(p_lo, p_hi)
        result.overconditioned = self._overconditioned(partition, cuts, line)
        result.pvalues["overconditioned"] = selective_pvalue(
            line.t_obs, line.sd, result.overconditioned, two_sided=self.two_sided, dps=self.dps)
        result.pvalues["naive"] = naive_pvalue(line.t_obs, line.sd, dps=self.dps)
        eligible = int(region.size if self.mask is None else self.mask.sum())
        result.pvalues["bonferroni"] = bonferroni_pvalue(line.t_obs, line.sd, eligible, dps=self.dps)
        timings["pvalues"] = time.perf_counter() - pvalue_started
        if self.permutations:
            permutation_started = time.perf_counter()
            result.pvalues["permutation"] = self._permutation(x, ref, line.t_obs)
            timings["permutation"] = time.perf_counter() - permutation_started
        timings["total"] = time.perf_counter() - started
        result.timings = timings
        logger.info("region of %d pixels, t_obs=%.6g, sd=%.6g, selective p=%s, %d pieces",
                    result.region_size, line.t_obs, line.sd, result.pvalues["selective"].text, result.pieces)
        return result

    # ------------------------------------------------------------------
    def _open_pool(self, line: Line, cuts: RegionCuts) -> None:
        if self.workers < 2:
            return
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        from dalverify.graph.io import graph_to_bytes

        backend = self.backend if isinstance(self.backend, str) else "auto"
        self._pool = ProcessPoolExecutor(
            max_workers=self.workers, mp_context=multiprocessing.get_context("spawn"), initializer=_start_worker,
            initargs=(graph_to_bytes(self.graph), line.a_image, line.b_image, cuts, backend, self.max_pieces),
        )

    def _close_pool(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None

    def _walk(self, line: Line, cuts: RegionCuts, lo: float, hi: float) -> Partition:
        return walk_line(self.graph, line.a_image, line.b_image, lo, hi, cuts=cuts, backend=self.backend,
                         progress=self.progress, max_pieces=self.max_pieces)

    def _walk_ranges(self, line: Line, cuts: RegionCuts, ranges: list[tuple[float, float]]) -> list[Partition]:
        """Walk several disjoint ranges, in the worker processes when there are any."""
        if self._pool is None:
            return [self._walk(line, cuts, lo, hi) for lo, hi in ranges]
        futures = [self._pool.submit(_walk_in_worker, lo, hi) for lo, hi in ranges]
        return [future.result() for future in futures]

    def _walk_split(self, line: Line, cuts: RegionCuts, lo: float, hi: float) -> Partition:
        """Walk ``[lo, hi]``; with workers, as two halves split at the middle (or 0)."""
        if self._pool is None:
            return self._walk(line, cuts, lo, hi)
        middle = 0.0 if not (math.isfinite(lo) and math.isfinite(hi)) else (lo + hi) / 2
        if not lo < middle < hi:
            return self._walk(line, cuts, lo, hi)
        return _join(*self._walk_ranges(line, cuts, [(lo, middle), (middle, hi)]))

    def _search(self, line: Line, cuts: RegionCuts) -> tuple[Partition, IntervalUnion, Any]:
        """Walk the configured range.

        Returns the partition, the unexplored part of the line, and the
        selective p-value's enclosure when the adaptive search already
        computed it for the final partition (``None`` otherwise).
        """
        sd, z_obs = line.sd, line.t_obs / line.sd
        if self.search == "whole":
            return self._walk_split(line, cuts, -math.inf, math.inf), IntervalUnion([]), None
        if self.search == "si4onnx" or isinstance(self.search, float):
            half = (10.0 + abs(z_obs)) * sd if self.search == "si4onnx" else self.search * sd
            half = max(half, abs(line.t_obs) * (1 + 1e-12) + sd * 1e-9)
            partition = self._walk_split(line, cuts, -half, half)
            return partition, IntervalUnion([(-math.inf, -half), (half, math.inf)]), None

        # Adaptive: grow [-R, R] until the enclosure is narrow enough.
        half = (abs(z_obs) + _ADAPTIVE_START_SD) * sd
        partition = self._walk_split(line, cuts, -half, half)
        for _ in range(_ADAPTIVE_MAX_STEPS):
            unexplored = IntervalUnion([(-math.inf, partition.lo), (partition.hi, math.inf)])
            z_now = IntervalUnion([(p.lo, p.hi) for p in partition.pieces if p.label])
            p_lo, p_hi = selective_pvalue_enclosure(line.t_obs, sd, z_now, unexplored,
                                                    two_sided=self.two_sided, dps=self.dps)
            if _relative_width(p_lo, p_hi) <= self.relative_width:
                return partition, unexplored, (p_lo, p_hi)
            if self.decide_at is not None and _decided(p_lo, p_hi, self.decide_at):
                logger.info("stopped early at half-width %g sd: the enclosure [%s, %s] decides p < %g",
                            -partition.lo / sd, p_lo, p_hi, self.decide_at)
                self._stopped_early = True
                return partition, unexplored, (p_lo, p_hi)
            new_half = -partition.lo + _ADAPTIVE_GROWTH_SD * sd
            left, right = self._walk_ranges(line, cuts, [(-new_half, partition.lo), (partition.hi, new_half)])
            partition = _join(left, partition, right)
        logger.warning("adaptive search stopped after %d steps at half-width %g sd", _ADAPTIVE_MAX_STEPS, -partition.lo / sd)
        return partition, IntervalUnion([(-math.inf, partition.lo), (partition.hi, math.inf)]), None

    def _overconditioned(self, partition: Partition, cuts: RegionCuts, line: Line) -> IntervalUnion:
        """The interval around ``t_obs`` on which the network pattern, the region
        and the signs of the eligible residuals are all constant."""
        observed = partition.piece_at(line.t_obs)
        same = [p for p in partition.pieces if p.network_piece == observed.network_piece]
        index = same.index(observed)
        lo_index = index
        while lo_index > 0 and same[lo_index - 1].label:
            lo_index -= 1
        hi_index = index
        while hi_index < len(same) - 1 and same[hi_index + 1].label:
            hi_index += 1
        lo, hi = same[lo_index].lo, same[hi_index].hi

        # Residual zero crossings inside [lo, hi] cut further (same rule as the walk).
        engine = make_backend(self.graph, line.a_image, line.b_image, self.backend)
        step = engine.line_pass(same[0].lo)
        r_alpha, r_beta = cuts.residual(step.out_alpha, step.out_beta)
        eligible = cuts.lambda_cuts.eligible_index
        alpha, beta = r_alpha[eligible], r_beta[eligible]
        with np.errstate(divide="ignore", invalid="ignore"):
            roots = rule.roots(np, alpha, beta)
        crossing = roots[(beta != 0) & (roots > lo) & (roots < hi)]
        below = crossing[crossing <= line.t_obs]
        above = crossing[crossing > line.t_obs]
        if below.size:
            lo = float(below.max())
        if above.size:
            hi = float(above.min())
        return IntervalUnion([(lo, hi)])

    def _permutation(self, x: np.ndarray, ref: np.ndarray, t_obs: float) -> PValue:
        """Permutation baseline: shuffle pixel positions of the test image."""
        rng = np.random.default_rng(self.seed)
        channels, height, width = x.shape
        pixels = x.reshape(channels, -1)
        extreme = 0
        for _ in range(self.permutations):
            order = rng.permutation(height * width)
            shuffled = pixels[:, order].reshape(x.shape)
            region, _ = self.observed_region(shuffled)
            if not region.any():
                continue
            selected = np.broadcast_to(region, x.shape)
            t_b = float((shuffled[selected].sum() - ref[selected].sum()) / region.sum())
            if abs(t_b) >= abs(t_obs):
                extreme += 1
        return permutation_pvalue(extreme, self.permutations)


def _decided(p_lo: Any, p_hi: Any, level: float) -> bool:
    """Return whether every p-value in ``[p_lo, p_hi]`` gives the same result for ``p < level``."""
    lo = p_lo.value if hasattr(p_lo, "value") else p_lo
    hi = p_hi.value if hasattr(p_hi, "value") else p_hi
    return bool(hi < level or lo >= level)


def _relative_width(p_lo: Any, p_hi: Any) -> float:
    lo = p_lo.value if hasattr(p_lo, "value") else p_lo
    hi = p_hi.value if hasattr(p_hi, "value") else p_hi
    if hi == 0:
        return 0.0
    return float((hi - lo) / hi)


def _join(*parts: Partition) -> Partition:
    """Concatenate adjacent partitions into one.

    At each joint (a range end of an inner walk, not a breakpoint) the two
    touching pieces have the same pattern and cut signs. They are merged back
    into one piece, so the result equals a single walk over the union.
    """
    pieces: list = []
    offset = 0
    for part in parts:
        first = True
        for piece in part.pieces:
            index = piece.network_piece + offset
            if first and pieces and pieces[-1].hi == piece.lo and pieces[-1].pattern == piece.pattern:
                previous = pieces[-1]
                offset -= 1
                index = previous.network_piece
                if previous.signs == piece.signs:
                    pieces[-1] = replace(previous, hi=piece.hi, end_units=piece.end_units)
                    first = False
                    continue
            pieces.append(replace(piece, network_piece=index))
            first = False
        offset += part.network_pieces
    network_pieces = pieces[-1].network_piece + 1 if pieces else 0
    return Partition(parts[0].lo, parts[-1].hi, pieces, network_pieces, sum(part.seconds for part in parts),
                     parts[0].backend)


# State of a walk worker process, set once by _start_worker.
_WORKER: dict[str, Any] = {}


def _start_worker(graph_bytes: bytes, a_image: np.ndarray, b_image: np.ndarray, cuts: "RegionCuts", backend: str,
                  max_pieces: int | None) -> None:
    import tempfile

    from dalverify.graph.io import load_graph

    with tempfile.TemporaryDirectory() as folder:
        path = f"{folder}/graph.dalg"
        with open(path, "wb") as stream:
            stream.write(graph_bytes)
        graph = load_graph(path)
    _WORKER.update(graph=graph, a=a_image, b=b_image, cuts=cuts, backend=backend, max_pieces=max_pieces)


def _walk_in_worker(lo: float, hi: float) -> Partition:
    state = _WORKER
    return walk_line(state["graph"], state["a"], state["b"], lo, hi, cuts=state["cuts"], backend=state["backend"],
                     progress=False, max_pieces=state["max_pieces"])

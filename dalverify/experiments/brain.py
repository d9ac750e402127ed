"""Real-data cells: the bundled brain T1 slices, normal and with synthetic lesions.

A ``kind = "brain"`` cell tests the bundled held-out normal test slices
(:func:`dalverify.data.load_bundled_slices`) with the bundled brain model:

* image ``i`` is test slice ``i mod N`` (``N`` slices are bundled); with
  ``lesion_contrast = 0`` the cell measures the type I error and may hold at
  most ``N`` images (each slice once);
* with ``lesion_contrast != 0`` a synthetic lesion of known mask
  (:func:`dalverify.lesions.insert_lesion`, radius ``lesion_radius`` pixels,
  seed drawn from ``SeedSequence([seed, i])``) is added inside the brain
  mask, and the cell measures the power; each record contains the overlap
  of the detected region with the lesion mask;
* the reference image is the slice's own reference (the mean of the
  ``count`` training slices of the same brain within 8 axial slices, so
  ``c_ref = 1 / count``);
* ``Sigma`` is diagonal, the per-pixel variances of the bundled
  covariance-estimation slices (constant background pixels get the median
  positive variance), and only pixels inside the slice's brain mask are
  eligible for the region.

The *intensity-threshold baseline* uses no reconstruction: its filtered
residual is ``r = F(x - x_ref)`` (``F`` the same K x K mean filter), its
region is ``{i in the brain mask : |r_i| >= lambda}``, and it is tested with
the same statistic (the mean of ``x - x_ref`` over the region). Along the
line ``(x; x_ref) = a + b z`` this residual is affine in ``z``, so the set of
``z`` on which the baseline selects the same region is a finite union of
intervals computed exactly (:func:`dalverify.selection.event.truncation_from_lemma`)
over the whole line; ``baseline_selective`` is the selective p-value over that
set and ``baseline_naive`` ignores the selection.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np

from dalverify.errors import InputError, NumericalError

#: Bundled model file of each supported slice side.
BRAIN_MODELS = {32: "brain_t1_32.dalv", 64: "brain_t1_64.dalv"}


@lru_cache(maxsize=4)
def _slices(side: int):
    from dalverify.data import load_bundled_slice_references, load_bundled_slices

    stack = load_bundled_slices(size=side)
    references, counts = load_bundled_slice_references(size=side)
    return stack, references, counts


def slice_count(side: int) -> int:
    """Return the number of bundled held-out normal test slices of the given side."""
    return int(len(_slices(side)[0].images))


@lru_cache(maxsize=4)
def brain_variances(side: int) -> np.ndarray:
    """Return the per-pixel variances (row-major) of the bundled covariance-estimation slices.

    Sample variances with ``ddof = 1``; pixels constant across the slices
    (background) get the median of the positive variances.
    """
    from dalverify.data import load_bundled_covariance_slices

    stack = load_bundled_covariance_slices(size=side).images
    variances = stack.reshape(len(stack), -1).var(axis=0, ddof=1)
    positive = variances[variances > 0]
    if positive.size == 0:
        raise InputError("every pixel of the bundled covariance slices is constant: the data files are invalid; "
                         "reinstall dalverify")
    variances[variances == 0] = float(np.median(positive))
    return variances


@dataclass
class BrainCase:
    """Inputs of one brain image and the facts recorded about it."""

    image: np.ndarray
    reference: np.ndarray
    mask: np.ndarray
    reference_scale: float
    lesion: np.ndarray | None
    facts: dict[str, Any] = field(default_factory=dict)


def brain_case(config, index: int) -> BrainCase:
    """Build image ``index`` of a brain cell (see the module notes for the rules)."""
    stack, references, counts = _slices(config.side)
    total = len(stack.images)
    if config.lesion_contrast == 0 and index >= total:
        raise InputError(f"image {index} of a normal brain cell is invalid: {total} normal slices are bundled; "
                         f"use an index below {total}")
    rng = np.random.default_rng(np.random.SeedSequence([config.seed, index]))
    number = index % total
    count = int(counts[number])
    image = stack.images[number].copy()
    mask = stack.masks[number].copy()
    facts: dict[str, Any] = {"slice": number, "source": str(stack.source[number]), "z": int(stack.z[number]),
                             "reference_count": count}
    lesion = None
    if config.lesion_contrast != 0:
        from dalverify.lesions import insert_lesion

        lesion_seed = int(rng.integers(0, 2**31 - 1))
        image, lesion = insert_lesion(image, mask, radius=config.lesion_radius, contrast=config.lesion_contrast,
                                      seed=lesion_seed)
        facts.update(lesion_seed=lesion_seed, lesion_pixels=int(lesion.sum()))
    facts["permutation_seed"] = int(rng.integers(0, 2**31 - 1))
    return BrainCase(image, references[number].copy(), mask, 1.0 / count, lesion, facts)


def overlap_facts(region: np.ndarray, lesion: np.ndarray | None, prefix: str = "") -> dict[str, Any]:
    """Count the pixels of ``region`` inside ``lesion`` and compute the Dice coefficient ``2|A & B| / (|A| + |B|)``."""
    if lesion is None:
        return {}
    region = np.asarray(region, dtype=bool).reshape(lesion.shape)
    both = int(np.logical_and(region, lesion).sum())
    total = int(region.sum()) + int(lesion.sum())
    return {f"{prefix}overlap": both, f"{prefix}dice": 2.0 * both / total if total else 0.0}


def threshold_baseline(image: np.ndarray, reference: np.ndarray, covariance, reference_scale: float, *,
                       threshold: float, kernel_size: int, mask: np.ndarray | None, dps: int = 50) -> dict[str, Any]:
    """Test the region of the intensity-threshold baseline (no reconstruction).

    Returns a dict with ``status`` (``"ok"`` or ``"no_region"``),
    ``region`` (boolean ``(H, W)``), and for ``"ok"``: ``t_obs``, ``sd``,
    ``truncation`` (the exact :class:`~dalverify.numerics.intervals.IntervalUnion`
    of ``z`` giving the same region, over the whole line) and ``pvalues``
    (``baseline_selective``, ``baseline_naive``, as
    :class:`~dalverify.methods.pvalues.PValue`).
    """
    from dalverify.images import validate_image
    from dalverify.methods.pvalues import naive_pvalue, selective_pvalue
    from dalverify.methods.statistic import line_from_images
    from dalverify.numerics.intervals import IntervalUnion
    from dalverify.selection.event import LambdaCuts, residual_line, truncation_from_lemma
    from dalverify.selection.region import residual_scores, select_region

    x = validate_image(image, name="image")
    ref = validate_image(reference, name="reference", expected_shape=x.shape)
    region = select_region(residual_scores(x, ref, kernel_size), threshold, mask)
    if not region.any():
        return {"status": "no_region", "region": region}
    line = line_from_images(x, ref, region, covariance, reference_scale)
    n = x.size
    ref_a = np.asarray(line.a[n:], dtype=np.float64).reshape(x.shape)
    ref_b = np.asarray(line.b[n:], dtype=np.float64).reshape(x.shape)
    r_alpha, r_beta = residual_line(line.a_image, line.b_image, ref_a, ref_b, kernel_size)
    eligible = LambdaCuts(threshold, region.shape, mask).eligible_index
    pairs = truncation_from_lemma(r_alpha[eligible], r_beta[eligible], threshold, region.reshape(-1)[eligible],
                                  -math.inf, math.inf)
    truncation = IntervalUnion(pairs)
    if line.t_obs not in truncation:
        raise NumericalError(
            f"the baseline region on the line at t_obs={line.t_obs!r} differs from the observed one: a filtered "
            f"difference lies within rounding of the threshold {threshold!r}; move the threshold slightly"
        )
    return {
        "status": "ok",
        "region": region,
        "t_obs": line.t_obs,
        "sd": line.sd,
        "truncation": truncation,
        "pvalues": {
            "baseline_selective": selective_pvalue(line.t_obs, line.sd, truncation, dps=dps),
            "baseline_naive": naive_pvalue(line.t_obs, line.sd, dps=dps),
        },
    }


@lru_cache(maxsize=4)
def brain_covariance(side: int):
    """Return the diagonal :class:`~dalverify.methods.covariance.Covariance` of :func:`brain_variances`."""
    from dalverify.methods.covariance import Diagonal

    return Diagonal(brain_variances(side))

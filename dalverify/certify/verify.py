"""Independent verifier of dalverify audit certificates.

This module re-derives a certified DAL-Test result from the certificate, the
graph file, the images and the covariance. It shares no code with the
producer except the graph package (IR, file reader, numpy reference
semantics), the exact interval and truncated-normal routines of
:mod:`dalverify.numerics`, the error classes and the named tolerances. It
imports neither torch nor :mod:`dalverify.line`, :mod:`dalverify.methods`,
:mod:`dalverify.selection` or the producer's certification code: the sign
rule, the residual filter, the statistic and the line, the region rule and
the p-value formulas are re-implemented below in a few lines each. Its
third-party imports are numpy and mpmath, optionally cvxpy (the LP
re-check) and threadpoolctl (one BLAS thread during the float passes).

Order of the checks
-------------------
1. Every hash: sidecar file, images, mask, settings, graph, covariance
   (:class:`~dalverify.errors.TamperedError` naming the field).
2. The observed region, ``t_obs``, ``sd`` and the line ``(a, b)`` recomputed
   from the images and ``Sigma``.
3. The tiling of the searched range by the stored intervals (exact float
   comparisons) and the stored truncation set.
4. The p-values of the stored truncation set, recomputed at this module's
   own precision and compared with the stored decimal strings.
5. Every interval: its pattern read at an interior point with the sign rule,
   its cut signs and region flag, the roots of the units named at its end,
   and the interval on which its pattern is proven valid (exact Fraction
   arithmetic for small graphs, a float64 midpoint with a rigorous radius
   otherwise).
6. The certified truncation set and the unresolved part of the range, and
   the selective p-value's enclosure from them.

Outcomes: ``certified`` (nothing unresolved and the stored numbers agree),
``enclosure_only`` (the stored p-value lies in the verified enclosure, whose
relative width is reported) and ``rejected: <field>: <reason>``.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import logging
import math
import os
import sys
import time
from dataclasses import dataclass, field as _field
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
from mpmath import mp, mpf
from numpy.lib.stride_tricks import sliding_window_view

from dalverify.errors import CertificateError, DalverifyError, GraphFileError, TamperedError
from dalverify.graph.io import graph_digest, load_graph
from dalverify.graph.ir import Graph, Node
from dalverify.graph.reference import apply_linear, evaluate, last_uses, pool_windows
from dalverify.numerics.intervals import IntervalUnion, endpoint_from_text
from dalverify.numerics.truncnorm import log_tail, log_union_mass, logsumexp
from dalverify.tolerances import LINE_RECOMPUTE_RTOL, LINE_RECONSTRUCTION_ULPS, LP_END_RTOL, PVALUE_PRECISION_RTOL

logger = logging.getLogger(__name__)

_U = 2.0**-53
_INF = math.inf
_PL = ("relu", "leaky_relu", "abs", "max_pool2d")
_BIAS = np.array([True, False])
_NOBIAS = np.array([False, False])

#: Exact verification is used when the certificate's intervals were
#: certified exactly and the Fraction operations (multiply-adds of one pass
#: times the network pieces) stay below this budget.
VERIFY_EXACT_BUDGET = 3 * 10**7

#: Largest number of near-zero units tried flipped to match a recorded digest.
_MAX_AMBIGUOUS = 6


def _gamma(n: int) -> float:
    nu = n * _U
    return nu * (1.0 + 2.0 * nu) * (1.0 + 2.0**-50)


# ---------------------------------------------------------------------------
# Report and rejections.


@dataclass
class VerifyReport:
    """Outcome of :func:`verify`.

    Attributes
    ----------
    outcome : str
        ``"certified"``, ``"enclosure_only"`` or ``"rejected: <field>: <reason>"``.
    reasons : list of str
        Why the outcome is not ``certified``, and notes on checks that could
        not be made (for example a permutation p-value).
    field : str or None
        The certificate field named by a rejection.
    enclosure : (str, str) or None
        Verified enclosure of the selective p-value (decimal strings).
    relative_width : float or None
        ``(p_hi - p_lo) / p_hi`` of that enclosure.
    unresolved_width : float
        Total width of the part of the searched range whose label is not proven.
    method : str or None
        ``"exact"`` or ``"enclosure"``: how the intervals were checked.
    counts : dict
        Numbers of intervals, pattern flips tried, LP solves, ...
    seconds : float
        Wall time.
    """

    outcome: str
    reasons: list[str] = _field(default_factory=list)
    field: str | None = None
    enclosure: tuple[str, str] | None = None
    relative_width: float | None = None
    unresolved_width: float = 0.0
    method: str | None = None
    counts: dict[str, Any] = _field(default_factory=dict)
    seconds: float = 0.0
    error: Exception | None = None

    @property
    def certified(self) -> bool:
        return self.outcome == "certified"

    @property
    def rejected(self) -> bool:
        return self.outcome.startswith("rejected")

    def to_dict(self) -> dict[str, Any]:
        """JSON-compatible dict of the report."""
        return {
            "outcome": self.outcome,
            "reasons": list(self.reasons),
            "field": self.field,
            "enclosure": None if self.enclosure is None else list(self.enclosure),
            "relative_width": self.relative_width,
            "unresolved_width": self.unresolved_width,
            "method": self.method,
            "counts": dict(self.counts),
            "seconds": self.seconds,
        }

    def to_json(self, **kwargs: Any) -> str:
        """Return the report as JSON text."""
        return json.dumps(self.to_dict(), **kwargs)


def _reject(name: str, reason: str, *, tampered: bool = False) -> None:
    error = (TamperedError if tampered else CertificateError)(f"{name}: {reason}")
    error.field = name  # type: ignore[attr-defined]
    raise error


# ---------------------------------------------------------------------------
# Hashes.


def _image_hash(image: np.ndarray) -> str:
    array = np.ascontiguousarray(np.asarray(image, dtype="<f8"))
    hasher = hashlib.sha256(b"dalverify-image/1\n")
    hasher.update(json.dumps(list(array.shape)).encode() + b"\n")
    hasher.update(array.tobytes())
    return hasher.hexdigest()


def _mask_hash(mask: np.ndarray) -> str:
    array = np.ascontiguousarray(np.asarray(mask, dtype=bool))
    hasher = hashlib.sha256(b"dalverify-mask/1\n")
    hasher.update(json.dumps(list(array.shape)).encode() + b"\n")
    hasher.update(np.packbits(array.ravel()).tobytes())
    return hasher.hexdigest()


def _settings_hash(settings: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _bits_digest(bits: dict[int, np.ndarray]) -> str:
    hasher = hashlib.sha256()
    for node_id in sorted(bits):
        hasher.update(int(node_id).to_bytes(4, "little"))
        hasher.update(np.packbits(bits[node_id]).tobytes())
    return hasher.hexdigest()


def _signs_digest(signs: np.ndarray) -> str:
    return hashlib.sha256(np.packbits(signs).tobytes()).hexdigest()


# ---------------------------------------------------------------------------
# Covariance: reader, digest and products (the formats of dalverify's covariance files).


class _Sigma:
    """A covariance read from its parameters: kind, parameters, ``apply`` and ``apply_abs``."""

    def __init__(self, kind: str, params: dict[str, np.ndarray]) -> None:
        self.kind, self.params = kind, params

    def digest(self) -> str:
        hasher = hashlib.sha256(f"dalverify.covariance/1\n{self.kind}\n".encode())
        for name, value in sorted(self.params.items()):
            arr = np.asarray(value)
            dtype = "<f8" if arr.dtype.kind == "f" else "<i8"
            hasher.update(f"{name}:{dtype}:{arr.shape}\n".encode())
            hasher.update(arr.astype(dtype).tobytes(order="C"))
        return hasher.hexdigest()

    def apply(self, v: np.ndarray, absolute: bool = False) -> np.ndarray:
        """``Sigma v`` (or ``|Sigma| v``) in float64."""
        p = self.params
        if self.kind == "isotropic":
            return float(p["sigma"]) ** 2 * v
        if self.kind == "diagonal":
            return p["variances"] * v
        if self.kind == "dense":
            return (np.abs(p["matrix"]) if absolute else p["matrix"]) @ v
        if self.kind == "ar1":
            rho = abs(float(p["rho"])) if absolute else float(p["rho"])
            forward, backward = np.empty_like(v), np.empty_like(v)
            acc = 0.0
            for i in range(v.size):
                acc = v[i] + rho * acc
                forward[i] = acc
            acc = 0.0
            for i in range(v.size - 1, -1, -1):
                acc = v[i] + rho * acc
                backward[i] = acc
            return float(p["sigma"]) ** 2 * (forward + backward - v)
        _reject("covariance", f"kind {self.kind!r} is not known to this verifier")
        raise AssertionError


def _read_covariance(source: Any) -> _Sigma:
    if hasattr(source, "parameters") and hasattr(source, "kind"):
        return _Sigma(source.kind, {k: np.asarray(v) for k, v in source.parameters().items()})
    try:
        with np.load(source, allow_pickle=False) as npz:
            header = json.loads(str(npz["header"]))
            params = {key[len("param_"):]: npz[key] for key in npz.files if key.startswith("param_")}
    except (OSError, ValueError, KeyError) as error:
        _reject("covariance", f"cannot read covariance file {str(source)!r} ({error})")
    return _Sigma(str(header.get("kind")), params)


# ---------------------------------------------------------------------------
# The sign rule, the filter and the region.


def _active(alpha: np.ndarray, beta: np.ndarray, z: float) -> np.ndarray:
    """Non-negative on ``[z, next)``: the float root ``-alpha / beta`` is compared with ``z``.

    ``beta > 0``: active when ``root <= z``; ``beta < 0``: when ``root > z``;
    ``beta == 0`` (either zero): when ``alpha >= 0``, so a unit that is
    identically zero counts as active and a max-pool tie keeps the earlier
    candidate.
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        root = -alpha / beta
    moving = ((beta > 0) & (root <= z)) | ((beta < 0) & (root > z))
    return moving | ((beta == 0) & (alpha >= 0))


def _filter(image2d: np.ndarray, k: int, zero_pad: bool) -> np.ndarray:
    """``K x K`` mean over in-image neighbours (or zero padding and division by K^2)."""
    half = k // 2
    height, width = image2d.shape
    padded = np.zeros((height + 2 * half, width + 2 * half), dtype=image2d.dtype)
    padded[half : half + height, half : half + width] = image2d
    total = sum(padded[i : i + height, j : j + width] for i in range(k) for j in range(k))
    if zero_pad:
        counts = np.full((height, width), k * k)
    else:
        rows = np.minimum(np.arange(height) + half, height - 1) - np.maximum(np.arange(height) - half, 0) + 1
        cols = np.minimum(np.arange(width) + half, width - 1) - np.maximum(np.arange(width) - half, 0) + 1
        counts = np.outer(rows, cols)
    return total / (counts.astype(object) if image2d.dtype == object else counts)


class _Selection:
    """Residual ``F(mean_c(x(z) - D(x(z))))``, its cuts at ``+-lam`` and the region rule."""

    def __init__(self, a_img, b_img, lam: float, k: int, zero_pad: bool, eligible: np.ndarray, region: np.ndarray) -> None:
        self.a_img, self.b_img, self.lam, self.k, self.zero_pad = a_img, b_img, lam, k, zero_pad
        self.eligible = np.flatnonzero(eligible.ravel())
        self.region = region
        self.shape = region.shape
        self.terms = a_img.shape[0] + k * k + 3

    def residual(self, out_alpha, out_beta):
        channels = self.a_img.shape[0]
        r_alpha = _filter((self.a_img - out_alpha).sum(axis=0) / channels, self.k, self.zero_pad).ravel()
        r_beta = _filter((self.b_img - out_beta).sum(axis=0) / channels, self.k, self.zero_pad).ravel()
        return r_alpha, r_beta

    def cuts(self, out: np.ndarray, out_rad: np.ndarray):
        """Float cut functions and their radii."""
        r_alpha, r_beta = self.residual(out[0], out[1])
        e, n, channels = self.eligible, self.terms, self.a_img.shape[0]

        def bound(rad, line, value):
            through = _filter(rad.sum(axis=0) / channels, self.k, self.zero_pad).ravel()
            size = _filter((np.abs(line) + np.abs(value)).sum(axis=0) / channels, self.k, self.zero_pad).ravel()
            return (through + _gamma(n) * size) * (1 + 3 * _gamma(n + 2)) + (n + 1) * 2.0**-1073

        rad_r_alpha, rad_r_beta = bound(out_rad[0], self.a_img, out[0]), bound(out_rad[1], self.b_img, out[1])
        alpha = np.concatenate([r_alpha[e] - self.lam, r_alpha[e] + self.lam])
        beta = np.concatenate([r_beta[e], r_beta[e]])
        rad_alpha = (np.concatenate([rad_r_alpha[e]] * 2) + _gamma(1) * (np.abs(alpha) + self.lam)) * (1 + 3 * _gamma(3))
        return alpha, beta, rad_alpha, np.concatenate([rad_r_beta[e]] * 2)

    def exact_cuts(self, out_alpha, out_beta):
        if not hasattr(self, "exact_line"):
            self.exact_line = (_frac(self.a_img), _frac(self.b_img))
        channels = self.a_img.shape[0]
        r_alpha = _filter((self.exact_line[0] - out_alpha).sum(axis=0) / channels, self.k, self.zero_pad).ravel()
        r_beta = _filter((self.exact_line[1] - out_beta).sum(axis=0) / channels, self.k, self.zero_pad).ravel()
        lam = Fraction(self.lam)
        e = self.eligible
        return np.concatenate([r_alpha[e] - lam, r_alpha[e] + lam]), np.concatenate([r_beta[e], r_beta[e]])

    def region_of(self, signs: np.ndarray) -> np.ndarray:
        m = self.eligible.size
        member = signs[:m] | ~signs[m:]
        region = np.zeros(self.shape[0] * self.shape[1], dtype=bool)
        region[self.eligible] = member
        return region.reshape(self.shape)


# ---------------------------------------------------------------------------
# Float64 pass with a rigorous radius (Higham: |fl(sum) - sum| <= gamma_n sum |terms|).


def _terms(node: Node) -> int:
    p = node.params
    if node.kind == "dense":
        return p["weight"].shape[1] + 1
    if node.kind == "conv2d":
        return int(np.prod(p["weight"].shape[1:])) + 1
    if node.kind == "conv_transpose2d":
        w = p["weight"]
        return w.shape[0] * w.shape[2] * w.shape[3] + 1
    if node.kind == "avg_pool2d":
        return int(np.prod(node.attrs["kernel_size"])) + 1
    if node.kind == "upsample_bilinear":
        return p["rows"].shape[1] * p["cols"].shape[1] + 2
    return {"scale_shift": 2, "add_const": 1, "mul_const": 1, "add": 1, "sub": 1}.get(node.kind, 0)


def _smallest(*arrays) -> float:
    values = [np.abs(a)[np.abs(a) > 0].min() for a in arrays if np.any(a)]
    return float(min(values)) if values else _INF


class _Groups:
    """Units of one pass: per key (node id, or -1 for cuts) alpha, beta, radii and bits."""

    def __init__(self) -> None:
        self.data: dict[int, list] = {}

    def add(self, key, alpha, beta, bits, rad_alpha=None, rad_beta=None) -> None:
        self.data[key] = [alpha, beta, bits, rad_alpha, rad_beta]

    @classmethod
    def copy_of(cls, other: "_Groups") -> "_Groups":
        """Return a shallow copy, so that adding the cut functions leaves ``other`` unchanged."""
        copy = cls()
        copy.data = dict(other.data)
        return copy


def _float_pass(graph: Graph, a_img, b_img, z: float, force: dict | None = None):
    """Midpoints exactly as the numpy walk computes them, radii, bits decided at ``z``."""
    abs_nodes = _abs_nodes(graph)
    last = last_uses(graph)
    value = {0: np.stack([a_img, b_img])}
    radius = {0: np.zeros_like(value[0])}
    groups, bits = _Groups(), {}
    for node in graph.nodes[1:]:
        xs, rs = [value[i] for i in node.inputs], [radius[i] for i in node.inputs]
        if node.kind in _PL:
            out, out_rad, unit = _pl_float(node, xs[0], rs[0], z, (force or {}).get(node.id, {}))
            groups.add(node.id, *unit)
            bits[node.id] = unit[2]
        else:
            out = apply_linear(node, xs, bias_mask=_BIAS)
            if node.kind in ("concat", "reshape", "upsample_nearest"):
                out_rad = apply_linear(node, rs, bias_mask=_NOBIAS)
            else:
                n = _terms(node)
                if node.kind in ("add", "sub"):
                    spread, size, tiny = rs[0] + rs[1], np.abs(xs[0]) + np.abs(xs[1]), False
                else:
                    both = apply_linear(abs_nodes[node.id][0], [np.concatenate([rs[0], np.abs(xs[0])])],
                                        bias_mask=np.array([False, False, True, False]))
                    spread, size = both[:2], both[2:]
                    tiny = _smallest(xs[0]) * abs_nodes[node.id][1] < 2.0**-1000
                out_rad = (spread + _gamma(n) * size) * (1 + 3 * _gamma(n + 2)) + ((n + 1) * 2.0**-1073 if tiny else 0.0)
        value[node.id], radius[node.id] = out, out_rad
        for source in set(node.inputs):
            if last[source] == node.id:
                del value[source], radius[source]
    return bits, groups, value[graph.output], radius[graph.output]


_ABS_CACHE: dict[int, tuple[Graph, dict[int, tuple[Node, float]]]] = {}


def _abs_nodes(graph: Graph) -> dict[int, tuple[Node, float]]:
    """Per linear node: the node with absolute parameters, and its smallest non-zero |parameter|."""
    cached = _ABS_CACHE.get(id(graph))
    if cached is None or cached[0] is not graph:
        nodes = {n.id: (Node(n.id, "add" if n.kind == "sub" else n.kind, n.inputs, n.shape, dict(n.attrs),
                             {k: np.abs(v) for k, v in n.params.items()}, n.name),
                        _smallest(*n.params.values()) if n.params else 1.0 / max(1, _terms(n)))
                 for n in graph.nodes[1:] if n.kind not in _PL}
        cached = _ABS_CACHE[id(graph)] = (graph, nodes)
    return cached[1]


def _pl_float(node: Node, x, r, z, force):
    if node.kind == "max_pool2d":
        win, rwin = (pool_windows(v, node.attrs["kernel_size"], node.attrs["stride"]) for v in (x, r))
        best, best_r = win[..., 0], rwin[..., 0]
        size = best[0].size
        parts = []
        for stage in range(1, win.shape[-1]):
            diff = best - win[..., stage]
            diff_r = (best_r + rwin[..., stage] + _gamma(2) * np.abs(diff)) * (1 + 3 * _gamma(4))
            keep = _active(diff[0], diff[1], z).ravel()
            for index, bit in force.items():
                if (stage - 1) * size <= index < stage * size:
                    keep[index - (stage - 1) * size] = bit
            shaped = keep.reshape(best.shape[1:])
            best, best_r = np.where(shaped, best, win[..., stage]), np.where(shaped, best_r, rwin[..., stage])
            parts.append((diff[0].ravel(), diff[1].ravel(), keep, diff_r[0].ravel(), diff_r[1].ravel()))
        if not parts:
            return best, best_r, [np.zeros(0), np.zeros(0), np.zeros(0, bool), np.zeros(0), np.zeros(0)]
        return best, best_r, [np.concatenate([part[j] for part in parts]) for j in range(5)]
    on = _active(x[0], x[1], z).ravel()
    for index, bit in force.items():
        on[index] = bit
    shaped = on.reshape(x.shape[1:])
    if node.kind == "relu":
        out, out_r = np.where(shaped, x, 0.0), np.where(shaped, r, 0.0)
    elif node.kind == "leaky_relu":
        s = node.attrs["negative_slope"]
        out = np.where(shaped, x, s * x)
        tiny = _smallest(x) * abs(s) < 2.0**-1000 if s else False
        bound = (abs(s) * r + _gamma(1) * np.abs(s * x)) * (1 + 3 * _gamma(3)) + (2 * 2.0**-1073 if tiny else 0)
        out_r = np.where(shaped, r, bound)
    else:
        out, out_r = np.where(shaped, x, -x), r
    return out, out_r, [x[0].ravel(), x[1].ravel(), on, r[0].ravel(), r[1].ravel()]


# ---------------------------------------------------------------------------
# Exact pass with Fractions.


def _frac(array) -> np.ndarray:
    out = np.empty(np.shape(array), dtype=object)
    out.ravel()[:] = [Fraction(float(v)) for v in np.ravel(array)]
    return out


_FRACTION_PARAMS: dict[int, tuple[Graph, dict[int, dict[str, np.ndarray]]]] = {}


def _exact_params(graph: Graph) -> dict[int, dict[str, np.ndarray]]:
    cached = _FRACTION_PARAMS.get(id(graph))
    if cached is None or cached[0] is not graph:
        params = {n.id: {k: _frac(v) for k, v in n.params.items()} for n in graph.nodes}
        cached = _FRACTION_PARAMS[id(graph)] = (graph, params)
    return cached[1]


def _zeros(shape) -> np.ndarray:
    return np.zeros(shape, dtype=object)


def _exact_linear(node: Node, p: dict[str, np.ndarray], xs: list[np.ndarray]) -> np.ndarray:
    kind, at = node.kind, node.attrs
    x = xs[0] if xs else None
    bias = None
    if kind == "dense":
        out, bias = np.tensordot(x, p["weight"], axes=([1], [1])), p.get("bias")
    elif kind == "conv2d":
        w = p["weight"]
        (sh, sw), (ph, pw), (dh, dw), groups = at["stride"], at["padding"], at["dilation"], at["groups"]
        o, cg, kh, kw = w.shape
        padded = _zeros(x.shape[:2] + (x.shape[2] + 2 * ph, x.shape[3] + 2 * pw))
        padded[:, :, ph : ph + x.shape[2], pw : pw + x.shape[3]] = x
        oh = (padded.shape[2] - dh * (kh - 1) - 1) // sh + 1
        ow = (padded.shape[3] - dw * (kw - 1) - 1) // sw + 1
        win = sliding_window_view(padded, (dh * (kh - 1) + 1, dw * (kw - 1) + 1), axis=(2, 3))
        win = win[:, :, ::sh, ::sw, ::dh, ::dw][:, :, :oh, :ow]
        per = o // groups
        parts = []
        for g in range(groups):
            part = np.tensordot(win[:, g * cg : (g + 1) * cg], w[g * per : (g + 1) * per], axes=([1, 4, 5], [1, 2, 3]))
            parts.append(part.transpose(0, 3, 1, 2))
        out = np.concatenate(parts, axis=1)
        bias = None if "bias" not in p else p["bias"].reshape(-1, 1, 1)
    elif kind == "conv_transpose2d":
        w = p["weight"]
        (sh, sw), (ph, pw), (oph, opw), (dh, dw) = at["stride"], at["padding"], at["output_padding"], at["dilation"]
        _, o, kh, kw = w.shape
        h, wd = x.shape[2:]
        full = _zeros((x.shape[0], o, (h - 1) * sh + dh * (kh - 1) + 1 + oph, (wd - 1) * sw + dw * (kw - 1) + 1 + opw))
        for i in range(kh):
            for j in range(kw):
                full[:, :, i * dh : i * dh + (h - 1) * sh + 1 : sh, j * dw : j * dw + (wd - 1) * sw + 1 : sw] += \
                    np.tensordot(x, w[:, :, i, j], axes=([1], [0])).transpose(0, 3, 1, 2)
        out_h = (h - 1) * sh - 2 * ph + dh * (kh - 1) + oph + 1
        out_w = (wd - 1) * sw - 2 * pw + dw * (kw - 1) + opw + 1
        out = full[:, :, ph : ph + out_h, pw : pw + out_w]
        bias = None if "bias" not in p else p["bias"].reshape(-1, 1, 1)
    elif kind == "avg_pool2d":
        (kh, kw), (ph, pw) = at["kernel_size"], at["padding"]
        padded = _zeros(x.shape[:2] + (x.shape[2] + 2 * ph, x.shape[3] + 2 * pw))
        padded[:, :, ph : ph + x.shape[2], pw : pw + x.shape[3]] = x
        sums = pool_windows(padded, (kh, kw), at["stride"]).sum(axis=-1)
        if at["count_include_pad"] or (ph == 0 and pw == 0):
            return sums / (kh * kw)
        ones = np.pad(np.ones(x.shape[2:]), ((ph, ph), (pw, pw)))[None, None]
        counts = pool_windows(ones, (kh, kw), at["stride"]).sum(axis=-1)[0, 0].astype(np.int64)
        return sums / np.vectorize(int, otypes=[object])(counts)
    elif kind == "upsample_nearest":
        return np.repeat(np.repeat(x, at["scale"][0], axis=2), at["scale"][1], axis=3)
    elif kind == "upsample_bilinear":
        return np.tensordot(np.tensordot(x, p["rows"], axes=([2], [1])), p["cols"], axes=([2], [1]))
    elif kind == "scale_shift":
        shape = (1, -1) + (1,) * (x.ndim - 2)
        out, bias = x * p["scale"].reshape(shape), p["shift"].reshape(shape[1:])
    elif kind == "add_const":
        out, bias = x.copy(), p["const"]
    elif kind == "mul_const":
        return x * p["const"]
    elif kind == "add":
        return xs[0] + xs[1]
    elif kind == "sub":
        return xs[0] - xs[1]
    elif kind == "concat":
        return np.concatenate(xs, axis=at["axis"] + 1)
    elif kind == "reshape":
        return x.reshape((2,) + tuple(node.shape))
    else:
        raise CertificateError(f"graph: node {node.id} has kind {kind!r}, unknown to the verifier")
    if bias is not None:
        out = out.copy()
        out[0] = out[0] + bias
    return out


def _exact_pass(graph: Graph, a_img, b_img, bits: dict[int, np.ndarray]):
    params = _exact_params(graph)
    last = last_uses(graph)
    value = {0: np.stack([_frac(a_img), _frac(b_img)])}
    groups = _Groups()
    for node in graph.nodes[1:]:
        xs = [value[i] for i in node.inputs]
        if node.kind in _PL:
            x, on = xs[0], bits[node.id]
            if node.kind == "max_pool2d":
                win = pool_windows(x, node.attrs["kernel_size"], node.attrs["stride"])
                best, size, alphas, betas = win[..., 0], win[0, ..., 0].size, [], []
                for stage in range(1, win.shape[-1]):
                    diff = best - win[..., stage]
                    alphas.append(diff[0].ravel())
                    betas.append(diff[1].ravel())
                    best = np.where(on[(stage - 1) * size : stage * size].reshape(best.shape[1:]), best, win[..., stage])
                empty = np.zeros(0, dtype=object)
                alpha = np.concatenate(alphas) if alphas else empty
                beta = np.concatenate(betas) if betas else empty
                groups.add(node.id, alpha, beta, on)
                out = best
            else:
                shaped = on.reshape(x.shape[1:])
                groups.add(node.id, x[0].ravel(), x[1].ravel(), on)
                if node.kind == "relu":
                    out = np.where(shaped, x, 0)
                elif node.kind == "leaky_relu":
                    out = np.where(shaped, x, x * Fraction(node.attrs["negative_slope"]))
                else:
                    out = np.where(shaped, x, -x)
        else:
            out = _exact_linear(node, params[node.id], xs)
        value[node.id] = out
        for source in set(node.inputs):
            if last[source] == node.id:
                del value[source]
    return groups, value[graph.output]


# ---------------------------------------------------------------------------
# Proven validity intervals.


def _float_zone(alpha, beta, rad_alpha, rad_beta, sign):
    """Return the interval where ``sign (alpha* + beta* z) >= 0`` is proven.

    The proof covers every ``alpha*``, ``beta*`` in the boxes of radii
    ``rad_alpha``, ``rad_beta`` around the float midpoints.

    The lower bound ``A + B z`` (slope ``B`` for ``z >= 0``, ``B'`` for
    ``z <= 0``) of the concave function ``s alpha + s beta z - r_a - r_b |z|``
    is reduced by margins that cover this evaluation's rounding. Each
    computed end is moved one ulp inward.
    """
    a0 = sign * alpha - rad_alpha - 8 * _U * (np.abs(alpha) + rad_alpha)
    mb = rad_beta + 8 * _U * (np.abs(beta) + rad_beta)
    b_pos, b_neg = sign * beta - mb, sign * beta + mb
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        up = np.nextafter(-a0 / b_pos, -_INF)
        down_neg = np.nextafter(-a0 / b_neg, _INF)
        start_pos = np.nextafter(-a0 / b_pos, _INF)
        end_neg = np.nextafter(-a0 / b_neg, -_INF)
    contains_zero = a0 >= 0
    lo = np.where(contains_zero, np.where(b_neg <= 0, -_INF, down_neg),
                  np.where(b_pos > 0, start_pos, np.where(b_neg < 0, -_INF, _INF)))
    hi = np.where(contains_zero, np.where(b_pos >= 0, _INF, up),
                  np.where(b_pos > 0, _INF, np.where(b_neg < 0, end_neg, -_INF)))
    return np.nan_to_num(lo, nan=_INF), np.nan_to_num(hi, nan=-_INF)


def _float_root_box(alpha, beta, rad_alpha, rad_beta):
    """Return an interval that contains the unit's root (outside it the sign is proven)."""
    args = [np.array([float(v)]) for v in (alpha, beta, rad_alpha, rad_beta)]
    right = 1.0 if beta > 0 else -1.0
    left_end = _float_zone(*args, -right)[1][0]
    right_start = _float_zone(*args, right)[0][0]
    return (left_end if math.isfinite(left_end) else -_INF, right_start if math.isfinite(right_start) else _INF)


def _exact_zone(alpha, beta, bit) -> tuple[Any, Any]:
    """Exact interval where ``s (alpha + beta z) >= 0`` (``s = +1`` when ``bit``)."""
    s = 1 if bit else -1
    if beta == 0:
        return (-_INF, _INF) if s * alpha >= 0 else (_INF, -_INF)
    root = -Fraction(alpha) / Fraction(beta)
    return (root, _INF) if s * beta > 0 else (-_INF, root)


def _zones(groups: _Groups, cache: dict[int, tuple] | None = None) -> dict[int, tuple]:
    """Per group key: the float zones ``(lo, hi)`` of its units and their extremes.

    Entries already in ``cache`` (the network groups of a pattern shared by
    several intervals) are reused, since they do not depend on ``z``.
    """
    out = {}
    for key, (alpha, beta, bits, rad_alpha, rad_beta) in groups.data.items():
        if cache is not None and key in cache:
            out[key] = cache[key]
            continue
        zlo, zhi = _float_zone(alpha, beta, rad_alpha, rad_beta, np.where(bits, 1.0, -1.0))
        extremes = (float(zlo.max()) if zlo.size else -_INF, float(zhi.min()) if zhi.size else _INF)
        out[key] = (zlo, zhi) + extremes
        if cache is not None and key != -1:
            cache[key] = out[key]
    return out


def _proven_float(zones: dict[int, tuple], skip: set[tuple[int, int]]) -> tuple[float, float]:
    """Intersection of the float zones of every unit not in ``skip``."""
    lo, hi = -_INF, _INF
    for key, (zlo, zhi, lo_max, hi_min) in zones.items():
        left_out = [index for k, index in skip if k == key]
        if left_out:
            keep = np.ones(zlo.size, dtype=bool)
            keep[left_out] = False
            if not keep.any():
                continue
            lo_max, hi_min = float(zlo[keep].max()), float(zhi[keep].min())
        lo, hi = max(lo, lo_max), min(hi, hi_min)
    return lo, hi


def _proven(groups: _Groups, exact: bool, skip: set[tuple[int, int]]) -> tuple[Any, Any]:
    """Intersection of the proven zones of every unit not in ``skip``."""
    if not exact:
        return _proven_float(_zones(groups), skip)
    lo, hi = -_INF, _INF
    for key, (alpha, beta, bits, rad_alpha, rad_beta) in groups.data.items():
        keep = np.ones(len(alpha), dtype=bool)
        for k, index in skip:
            if k == key:
                keep[index] = False
        if not keep.any():
            continue
        for i in np.flatnonzero(keep):
            zlo, zhi = _exact_zone(alpha[i], beta[i], bits[i])
            if zlo > lo:
                lo = zlo
            if zhi < hi:
                hi = zhi
    return lo, hi


# ---------------------------------------------------------------------------
# p-values.


def _mass(union: IntervalUnion, dps: int) -> mpf:
    return log_union_mass(union, dps)


def _ratio(num: mpf, den: mpf) -> mpf:
    if mp.isinf(num) and num < 0:
        return mpf("-inf")
    return min(num - den, mpf(0))


def _selective_log(z_union: IntervalUnion, t: Fraction, sd: Fraction, two_sided: str, dps: int) -> mpf:
    with mp.workdps(dps + 20):
        std = z_union.scaled(1 / sd)
        c = t / sd
        if two_sided == "symmetric":
            extreme = IntervalUnion([(-_INF, -abs(c)), (abs(c), _INF)])
            return _ratio(_mass(std & extreme, dps), _mass(std, dps))
        total = _mass(std, dps)
        below = _ratio(_mass(std & IntervalUnion([(-_INF, c)]), dps), total)
        above = _ratio(_mass(std & IntervalUnion([(c, _INF)]), dps), total)
        return min(mp.ln2 + min(below, above), mpf(0))


def _enclosure_logs(known: IntervalUnion, unknown: IntervalUnion, t: Fraction, sd: Fraction, two_sided: str, dps: int):
    """``log p_lo``, ``log p_hi`` over every truncation set ``known ∪ S`` with ``S`` inside ``unknown``."""
    with mp.workdps(dps + 20):
        k, u, c = known.scaled(1 / sd), unknown.scaled(1 / sd), t / sd
        lse = lambda values: logsumexp(values, dps + 10)  # noqa: E731
        if two_sided == "symmetric":
            extreme = IntervalUnion([(-_INF, -abs(c)), (abs(c), _INF)])
            inner = extreme.complement()
            a, b = _mass(k & extreme, dps), _mass(k & inner, dps)
            u1, u0 = _mass(u & extreme, dps), _mass(u & inner, dps)
            return _ratio(a, lse([a, b, u0])), _ratio(lse([a, u1]), lse([a, b, u1]))
        below, above = IntervalUnion([(-_INF, c)]), IntervalUnion([(c, _INF)])
        left, right = _mass(k & below, dps), _mass(k & above, dps)
        u_left, u_right = _mass(u & below, dps), _mass(u & above, dps)
        f_min = _ratio(left, lse([left, right, u_right]))
        one_minus_f_min = _ratio(lse([right, u_right]), lse([left, right, u_right]))
        f_max = _ratio(lse([left, u_left]), lse([left, u_left, right]))
        one_minus_f_max = _ratio(right, lse([left, u_left, right]))
        low = min(mp.ln2 + min(f_min, one_minus_f_max), mpf(0))
        if f_min <= -mp.ln2 <= f_max:
            high = mpf(0)
        else:
            high = min(mp.ln2 + (f_max if f_max < -mp.ln2 else one_minus_f_min), mpf(0))
        return low, high


def _agrees(log_value: mpf, text: str, rtol: float = PVALUE_PRECISION_RTOL) -> bool:
    """Does the stored decimal ``text`` equal ``exp(log_value)`` to ``rtol`` relative?"""
    with mp.workdps(60):
        stored = mpf(text)
        if stored == 0 or (mp.isinf(log_value) and log_value < 0):
            return stored == 0 and mp.isinf(log_value)
        return abs(mp.expm1(mp.log(stored) - log_value)) <= rtol


def _decimal(log_value: mpf) -> str:
    with mp.workdps(40):
        return "0.0" if mp.isinf(log_value) else mp.nstr(mp.exp(log_value), 20)


def _check_pvalue(name: str, stored: dict, log_value: mpf) -> None:
    if not _agrees(log_value, str(stored.get("value"))):
        _reject(f"pvalues.{name}.value", f"stored {stored.get('value')} differs from the recomputed {_decimal(log_value)}")
    log10 = stored.get("log10")
    if log10 is not None and log10 != "-inf":
        with mp.workdps(40):
            recomputed = log_value / mp.ln(10)
            if abs(mpf(log10) - recomputed) > 1e-12 * max(mpf(1), abs(recomputed)):
                _reject(f"pvalues.{name}.log10", f"stored {log10} differs from the recomputed {mp.nstr(recomputed, 17)}")


# ---------------------------------------------------------------------------
# The verifier.


def _float_hex(text: Any, name: str) -> float:
    try:
        if text in ("inf", "-inf"):
            return float(text)
        return float.fromhex(text)
    except (TypeError, ValueError):
        _reject(name, f"{text!r} is not a float.hex string")
        raise AssertionError


def _interior(lo: float, hi: float) -> float:
    if math.isinf(lo) and math.isinf(hi):
        return 0.0
    if math.isinf(lo):
        return hi - max(1.0, abs(hi))
    if math.isinf(hi):
        return lo + max(1.0, abs(lo))
    mid = lo + (hi - lo) / 2 if math.isfinite(hi - lo) else lo / 2 + hi / 2
    return mid if lo <= mid < hi else lo


def _near_zero(groups: _Groups, z: float) -> list[tuple[int, int]]:
    found = []
    for key, (alpha, beta, _, ra, rb) in groups.data.items():
        if len(alpha):
            slack = 2 * (ra + rb * abs(z)) + 16 * _U * (np.abs(alpha) + np.abs(beta * z))
            found += [(key, int(i)) for i in np.flatnonzero(np.abs(alpha + beta * z) <= slack)]
    return found


def _load_array(value: Any, name: str) -> np.ndarray:
    if value is None:
        return None
    if isinstance(value, (str, os.PathLike)):
        try:
            value = np.load(value, allow_pickle=False)
        except (OSError, ValueError) as error:
            _reject(name, f"cannot read {str(value)!r} as a .npy array ({error})")
    return np.asarray(value)


class _Verifier:
    def __init__(self, cert_path, graph, image, reference, covariance, mask, exact, lp, dps):
        self.path = Path(cert_path)
        self.args = dict(graph=graph, image=image, reference=reference, covariance=covariance, mask=mask)
        self.exact_request, self.lp, self.dps = exact, lp, int(dps)
        self.reasons: list[str] = []
        self.counts: dict[str, Any] = {}

    # 1. Hashes ---------------------------------------------------------
    def read(self) -> None:
        try:
            with open(self.path, encoding="utf-8") as stream:
                cert = json.load(stream)
        except FileNotFoundError:
            _reject("certificate", f"file {str(self.path)!r} not found")
        except (OSError, ValueError) as error:
            _reject("certificate", f"{str(self.path)!r} is not readable JSON ({error})")
        if not isinstance(cert, dict) or cert.get("format") != "dalverify-certificate" or cert.get("version") != 1:
            _reject("format", "not a dalverify-certificate version 1 file")
        self.cert = cert
        self.hashes = cert.get("hashes", {})
        files = cert.get("files") or {}
        base = self.path.parent

        sidecar = files.get("sidecar")
        if not sidecar or not (base / sidecar).is_file():
            _reject("files.sidecar", f"sidecar file {sidecar!r} not found next to the certificate")
        data = (base / sidecar).read_bytes()
        if hashlib.sha256(data).hexdigest() != self.hashes.get("sidecar"):
            _reject("sidecar", "the sha256 of the sidecar file differs from the recorded one", tampered=True)
        with np.load(base / sidecar, allow_pickle=False) as npz:
            self.arrays = {k: npz[k] for k in npz.files}

        for name in ("image", "reference"):
            given = _load_array(self.args[name], name)
            array = given if given is not None else self.arrays.get(name)
            if array is not None and array.ndim == 2:
                array = array[np.newaxis]
            if array is None or _image_hash(np.asarray(array, dtype=np.float64)) != self.hashes.get(name):
                _reject(name, f"the sha256 of the {name} differs from the recorded one", tampered=True)
            setattr(self, name, np.asarray(array, dtype=np.float64))
        for name in ("image", "reference"):
            if _image_hash(self.arrays.get(name)) != self.hashes.get(name):
                _reject(f"sidecar.{name}", f"the sidecar's {name} differs from the recorded hash", tampered=True)

        settings = cert.get("settings")
        if not isinstance(settings, dict) or _settings_hash(settings) != self.hashes.get("settings"):
            _reject("settings", "the sha256 of the settings differs from the recorded one", tampered=True)
        self.settings = settings

        mask = _load_array(self.args["mask"], "mask")
        mask = self.arrays.get("mask") if mask is None else mask.astype(bool)
        if self.hashes.get("mask") is not None:
            if mask is None or _mask_hash(mask) != self.hashes["mask"]:
                _reject("mask", "the sha256 of the eligibility mask differs from the recorded one", tampered=True)
        elif settings.get("mask_pixels") is not None:
            _reject("mask", f"the run used an eligibility mask of {settings['mask_pixels']} pixels that the "
                    "certificate does not record")
        else:
            mask = None
        shape = tuple(cert.get("image_shape", ()))
        self.shape = shape
        self.eligible = np.ones(shape[1:], dtype=bool) if mask is None else np.asarray(mask, dtype=bool)

        graph = self.args["graph"]
        if isinstance(graph, Graph):
            if graph_digest(graph) != self.hashes.get("graph"):
                _reject("graph", "the digest of the graph passed differs from the recorded one", tampered=True)
        else:
            graph_path = graph
            if graph_path is None and files.get("graph"):
                graph_path = base / files["graph"]
            if graph_path is None:
                _reject("files.graph", "the certificate names no graph file; pass --graph")
            try:
                graph = load_graph(graph_path, expected_digest=self.hashes.get("graph"))
            except GraphFileError as error:
                _reject("graph", str(error), tampered=True)
        self.graph = graph

        cov = self.args["covariance"]
        if cov is None and files.get("covariance"):
            cov = base / files["covariance"]
        if cov is None:
            _reject("files.covariance", "the certificate names no covariance file; pass --covariance")
        sigma = _read_covariance(cov)
        if sigma.digest() != self.hashes.get("covariance"):
            _reject("covariance", "the digest of the covariance differs from the recorded one", tampered=True)
        self.sigma = sigma

    # 2. Statistic and line ----------------------------------------------
    def statistic(self) -> None:
        st, s = self.cert["statistic"], self.settings
        channels, height, width = self.shape
        self.lam = float(s["threshold"])
        self.k = int(s["kernel_size"])
        profile = s.get("profile", "default")
        self.zero_pad, self.strict = profile == "si4onnx", profile == "si4onnx"
        self.two_sided = s.get("two_sided", "symmetric")
        region = np.zeros((height, width), dtype=bool)
        for i, j in st["region"]:
            region[i, j] = True
        if not np.array_equal(region, self.arrays.get("region")):
            _reject("statistic.region", "the region listed differs from the sidecar's region")
        recon = evaluate(self.graph, self.image[None])[0]
        scores = np.abs(_filter((self.image - recon).sum(axis=0) / channels, self.k, self.zero_pad))
        observed = ((scores > self.lam) if self.strict else (scores >= self.lam)) & self.eligible
        if not np.array_equal(observed, region):
            i, j = np.argwhere(observed != region)[0]
            _reject("statistic.region", f"pixel ({i}, {j}) has score {float(scores[i, j])!r} at threshold {self.lam!r}, "
                    "so the observed region differs from the recorded one")
        self.region = region

        t_obs, sd = _float_hex(st["t_obs"], "statistic.t_obs"), _float_hex(st["sd"], "statistic.sd")
        c_ref = float(s["reference_scale"])
        size = int(region.sum())
        select = np.repeat(region.ravel(), channels)
        x_vec = self.image.transpose(1, 2, 0).ravel()
        ref_vec = self.reference.transpose(1, 2, 0).ravel()
        exact_sum = sum((Fraction(float(v)) for v in x_vec[select]), Fraction(0))
        exact_sum -= sum((Fraction(float(v)) for v in ref_vec[select]), Fraction(0))
        if float(exact_sum) / size != t_obs:
            _reject("statistic.t_obs", f"stored {t_obs!r}, recomputed {float(exact_sum) / size!r} from the images")
        indicator = select.astype(np.float64)
        w, w_abs = self.sigma.apply(indicator), self.sigma.apply(indicator, absolute=True)
        q, q_abs = math.fsum(w[select].tolist()), math.fsum(w_abs[select].tolist())
        if not q > 0:
            _reject("covariance", "1_M^T Sigma 1_M is not positive")
        sd_v = math.sqrt((1 + c_ref) * q / (size * size))
        if abs(sd_v - sd) > LINE_RECOMPUTE_RTOL * (1 + c_ref) * q_abs / (2 * size * size * sd_v) + 4 * _U * sd_v:
            _reject("statistic.sd", f"stored {sd!r}, recomputed {sd_v!r}")
        a, b = self.arrays["a"], self.arrays["b"]
        n = channels * height * width
        if a.shape != (2 * n,) or b.shape != (2 * n,):
            _reject("sidecar.a", f"the line has shape {a.shape}, {b.shape}; expected ({2 * n},)")
        scale = size / ((1 + c_ref) * q)
        top = scale * w
        bound = LINE_RECOMPUTE_RTOL * scale * (w_abs + np.abs(w) * q_abs / q) + 4 * _U * np.abs(top)
        top_off = np.abs(b[:n] - top) > bound
        bottom_off = np.abs(b[n:] + c_ref * top) > c_ref * bound + 4 * _U * np.abs(b[n:])
        if np.any(top_off) or np.any(bottom_off):
            _reject("line.b", "the stored direction b differs from Sigma-tilde nu / s^2 recomputed from Sigma "
                    "and the region")
        data = np.concatenate([x_vec, ref_vec])
        shift = b * t_obs
        if np.any(np.abs((a + shift) - data) > LINE_RECONSTRUCTION_ULPS * _U * (np.abs(data) + np.abs(shift))):
            _reject("line.a", "a + b t_obs does not reproduce the images within the float64 bound")
        self.t_obs, self.sd = t_obs, sd
        self.a_img = a[:n].reshape(height, width, channels).transpose(2, 0, 1).copy()
        self.b_img = b[:n].reshape(height, width, channels).transpose(2, 0, 1).copy()
        self.selection = _Selection(self.a_img, self.b_img, self.lam, self.k, self.zero_pad, self.eligible, region)

    # 3. Tiling and the stored truncation set --------------------------------
    def tiling(self) -> None:
        search = self.cert["search"]
        lo, hi = _float_hex(search["lo"], "search.lo"), _float_hex(search["hi"], "search.hi")
        records = self.cert.get("intervals")
        if not isinstance(records, list) or not records:
            _reject("intervals", "no intervals")
        self.intervals = []
        for k, rec in enumerate(records):
            name = f"intervals[{k}]"
            start, end = _float_hex(rec.get("lo"), f"{name}.lo"), _float_hex(rec.get("hi"), f"{name}.hi")
            if not start < end:
                _reject(f"{name}.hi", f"[{start!r}, {end!r}] has zero or negative width")
            expected = lo if k == 0 else self.intervals[-1]["hi"]
            if start != expected:
                kind = "gap" if start > expected else "overlap"
                _reject(f"{name}.lo", f"{kind}: starts at {start!r}, the previous interval ends at {expected!r}")
            units = rec.get("end_units", [])
            if not all(isinstance(u, list) and len(u) == 2 and all(isinstance(v, int) for v in u) for u in units):
                _reject(f"{name}.end_units", "malformed unit list")
            self.intervals.append(dict(lo=start, hi=end, pattern=rec.get("pattern"), signs=rec.get("signs"),
                                       units=[tuple(u) for u in units], in_z=rec.get("in_z"),
                                       net=rec.get("network_piece"), roots=rec.get("end_roots")))
            if not isinstance(rec.get("in_z"), bool):
                _reject(f"{name}.in_z", "must be true or false")

        if self.intervals[-1]["hi"] != hi:
            _reject(f"intervals[{len(records) - 1}].hi", f"the last interval ends at {self.intervals[-1]['hi']!r}, "
                    f"not at the range end {hi!r}")
        self.range = (lo, hi)
        self.z_stored = IntervalUnion([(iv["lo"], iv["hi"]) for iv in self.intervals if iv["in_z"]])
        stored = self.cert.get("truncation")
        if stored is not None and IntervalUnion.from_json(stored) != self.z_stored:
            _reject("truncation", "the stored truncation set is not the union of the intervals flagged in_z")
        if self.t_obs not in self.z_stored:
            _reject("statistic.t_obs", "t_obs lies outside the intervals flagged in_z")
        ends = [iv["lo"] for iv in self.intervals]
        self.obs_index = int(np.searchsorted(np.array(ends), self.t_obs, side="right")) - 1
        if not self.intervals[self.obs_index]["in_z"]:
            _reject(f"intervals[{self.obs_index}].in_z", "the interval that contains t_obs is not flagged in_z")

    # 4. p-values of the stored truncation set -----------------------------------
    def pvalues(self) -> None:
        stored = self.cert.get("pvalues", {})
        t, sd, dps = Fraction(self.t_obs), Fraction(self.sd), self.dps
        outside = IntervalUnion([(-_INF, self.range[0]), (self.range[1], _INF)])
        if "selective" not in stored:
            _reject("pvalues.selective", "missing")
        _check_pvalue("selective", stored["selective"], _selective_log(self.z_stored, t, sd, self.two_sided, dps))
        enclosure = stored["selective"].get("enclosure")
        if enclosure is not None:
            low, high = _enclosure_logs(self.z_stored, outside, t, sd, self.two_sided, dps)
            for text, value, end in ((enclosure[0], low, "lo"), (enclosure[1], high, "hi")):
                if not _agrees(value, text):
                    _reject(f"pvalues.selective.enclosure.{end}",
                            f"stored {text} differs from the recomputed {_decimal(value)}")
        c_abs = abs(t) / sd
        with mp.workdps(dps + 20):
            log_naive = min(mp.ln2 + log_tail(c_abs, dps + 10), mpf(0))
            if "naive" in stored:
                _check_pvalue("naive", stored["naive"], log_naive)
            if "bonferroni" in stored:
                m = int(self.eligible.sum())
                _check_pvalue("bonferroni", stored["bonferroni"], min(m * mp.ln2 + log_naive, mpf(0)))
        if "permutation" in stored:
            self.reasons.append("pvalues.permutation: not verifiable (it depends on random permutations)")

    # 5. Intervals --------------------------------------------------------
    def choose_method(self) -> str:
        claimed = (self.cert.get("certification") or {}).get("method")
        cost = sum(2 * n.size * max(1, _terms(n)) for n in self.graph.nodes[1:]) * max(1, len(self.intervals))
        if self.exact_request is not None:
            return "exact" if self.exact_request else "enclosure"
        if claimed == "exact" and cost <= VERIFY_EXACT_BUDGET:
            return "exact"
        if claimed == "exact":
            self.reasons.append(f"intervals were certified exactly; this verifier used the float enclosure "
                                f"(the exact check would cost {cost:.2e} Fraction operations)")
        return "enclosure"

    def pieces(self) -> None:
        method = self.method = self.choose_method()
        exact = method == "exact"
        strict_roots = exact and (self.cert.get("certification") or {}).get("method") == "exact"
        sel = self.selection
        states, proofs = [], []
        flipped = 0
        last: dict[str, Any] = {}
        for k, iv in enumerate(self.intervals):
            name = f"intervals[{k}]"
            z = _interior(iv["lo"], iv["hi"])
            # With the bits fixed a pass does not depend on z: the intervals of one
            # network piece share it (validity is still proven on each of them).
            if last.get("pattern") == iv["pattern"]:
                bits, groups, out, out_rad = last["float"]
                groups = _Groups.copy_of(groups)
            else:
                last = {"pattern": iv["pattern"], "float": _float_pass(self.graph, self.a_img, self.b_img, z)}
                bits, groups, out, out_rad = last["float"]
                groups = _Groups.copy_of(groups)
            if _bits_digest(bits) != iv["pattern"]:
                found = None
                near = _near_zero(groups, z)
                if 0 < len(near) <= _MAX_AMBIGUOUS:
                    for count in range(1, len(near) + 1):
                        for subset in itertools.combinations(near, count):
                            force: dict[int, dict[int, bool]] = {}
                            for key, i in subset:
                                force.setdefault(key, {})[i] = not bool(bits[key][i])
                            trial = _float_pass(self.graph, self.a_img, self.b_img, z, force)
                            if _bits_digest(trial[0]) == iv["pattern"]:
                                found = trial
                                break
                        if found:
                            break
                if found is None:
                    _reject(f"{name}.pattern", f"the pattern read at z={z!r} has another digest")
                bits, groups, out, out_rad = found
                last["float"] = found
                last.pop("zones", None)
                groups = _Groups.copy_of(groups)
                flipped += 1
            alpha, beta, rad_alpha, rad_beta = sel.cuts(out, out_rad)
            signs = _active(alpha, beta, z)
            if _signs_digest(signs) != iv["signs"]:
                cut_groups = _Groups()
                cut_groups.add(-1, alpha, beta, signs, rad_alpha, rad_beta)
                near = [i for _, i in _near_zero(cut_groups, z)]
                candidates = []
                if len(near) <= _MAX_AMBIGUOUS:
                    candidates = [s for c in range(1, len(near) + 1) for s in itertools.combinations(near, c)]
                for subset in candidates:
                    trial = signs.copy()
                    trial[list(subset)] = ~trial[list(subset)]
                    if _signs_digest(trial) == iv["signs"]:
                        signs = trial
                        break
                else:
                    _reject(f"{name}.signs", f"the cut signs read at z={z!r} have another digest")
            label = bool(np.array_equal(sel.region_of(signs), self.region))
            if label != iv["in_z"]:
                _reject(f"{name}.in_z", f"the cut signs give region flag {label}, the certificate records {iv['in_z']}")
            groups.add(-1, alpha, beta, signs, rad_alpha, rad_beta)
            proof = groups
            if exact:
                if "exact" not in last:
                    last["exact"] = _exact_pass(self.graph, self.a_img, self.b_img, bits)
                proof, exact_out = last["exact"]
                proof = _Groups.copy_of(proof)
                cut_alpha, cut_beta = sel.exact_cuts(exact_out[0], exact_out[1])
                proof.add(-1, cut_alpha, cut_beta, signs)
            self._check_end(k, iv, groups, proof if exact else None, strict_roots)
            named_lo = set(self.intervals[k - 1]["units"]) if k else set()
            if exact:
                proofs.append(tuple(_proven(proof, True, skip) for skip in (set(), named_lo, set(iv["units"]))))
            else:
                zones = _zones(proof, last.setdefault("zones", {}))
                proofs.append(tuple(_proven_float(zones, skip) for skip in (set(), named_lo, set(iv["units"]))))
            states.append((bits, signs))
            if k == self.obs_index:
                self._overconditioned(out, out_rad)
        self.counts.update(intervals=len(self.intervals), patterns_matched_by_flips=flipped)
        self._coverage(proofs, states)

    def _check_end(self, k: int, iv: dict, groups: _Groups, exact: _Groups | None, strict: bool) -> None:
        name = f"intervals[{k}]"
        roots = iv["roots"]
        if roots is not None and len(roots) != len(iv["units"]):
            _reject(f"{name}.end_roots", "one exact root per named unit is required")
        for j, (key, i) in enumerate(iv["units"]):
            data = groups.data.get(key)
            if data is None or not 0 <= i < len(data[0]):
                _reject(f"{name}.end_units", f"unit ({key}, {i}) does not exist")
            alpha, beta, _, ra, rb = (v[i] for v in data)
            if beta == 0:
                _reject(f"{name}.end_units", f"unit ({key}, {i}) has slope 0 and cannot bind")
            lo, hi = _float_root_box(alpha, beta, 2 * ra, 2 * rb)
            if not lo <= iv["hi"] <= hi:
                _reject(f"{name}.hi", f"{iv['hi']!r} is not a root of named unit ({key}, {i}) "
                        f"(its root lies in [{lo!r}, {hi!r}])")
            if exact is None:
                continue
            e_alpha, e_beta = exact.data[key][0][i], exact.data[key][1][i]
            if e_beta == 0:
                _reject(f"{name}.end_units", f"unit ({key}, {i}) has exact slope 0 and cannot bind")
            root = -Fraction(e_alpha) / Fraction(e_beta)
            if roots is not None:
                if endpoint_from_text(roots[j]) != root:
                    _reject(f"{name}.end_roots", f"the recorded exact root of unit ({key}, {i}) is not its root")
            elif strict and float(root) != iv["hi"]:
                _reject(f"{name}.hi", f"{iv['hi']!r} is not the correctly rounded root {float(root)!r} of named "
                        f"unit ({key}, {i})")

    def _overconditioned(self, out: np.ndarray, out_rad: np.ndarray) -> None:
        stored = self.cert.get("overconditioned")
        pvalue = self.cert.get("pvalues", {}).get("overconditioned")
        if stored is None or pvalue is None:
            return
        interval = IntervalUnion.from_json(stored)
        if len(interval) != 1:
            _reject("overconditioned", "must be one interval")
        lo_s, hi_s = interval.intervals[0]

        # The labelled run of intervals of t_obs's network piece.
        obs = self.intervals[self.obs_index]
        same = [i for i, iv in enumerate(self.intervals) if iv["net"] == obs["net"]]
        first = last = self.obs_index
        while first - 1 in same and self.intervals[first - 1]["in_z"]:
            first -= 1
        while last + 1 in same and self.intervals[last + 1]["in_z"]:
            last += 1
        lo, hi = self.intervals[first]["lo"], self.intervals[last]["hi"]

        # Residual zero crossings inside it cut it further.
        r_alpha, r_beta = self.selection.residual(out[0], out[1])
        e = self.selection.eligible
        alpha, beta = r_alpha[e], r_beta[e]
        rad = self.selection.cuts(out, out_rad)
        rad_alpha, rad_beta = rad[2][: e.size], rad[3][: e.size]
        with np.errstate(divide="ignore", invalid="ignore"):
            roots = -alpha / beta
        inside = np.flatnonzero((beta != 0) & (roots > lo) & (roots < hi))
        below = [i for i in inside if roots[i] <= self.t_obs]
        above = [i for i in inside if roots[i] > self.t_obs]
        for end, stored_end, chosen, pick in (("lo", lo_s, below, max), ("hi", hi_s, above, min)):
            default = lo if end == "lo" else hi
            if not chosen:
                ok = stored_end == default
            else:
                i = pick(chosen, key=lambda j: roots[j])
                box = _float_root_box(alpha[i], beta[i], 2 * rad_alpha[i], 2 * rad_beta[i])
                ok = stored_end == roots[i] or box[0] <= float(stored_end) <= box[1]
            if not ok:
                _reject(f"overconditioned.{end}", f"{float(stored_end)!r} is neither a range end nor the residual root")
        log_p = _selective_log(interval, Fraction(self.t_obs), Fraction(self.sd), self.two_sided, self.dps)
        _check_pvalue("overconditioned", pvalue, log_p)

    # 6. Coverage, certified Z and the enclosure -------------------------
    def _coverage(self, proofs: list, states: list) -> None:
        lo, hi = self.range
        covered, in_z = [], []

        def clip(pair):
            if pair is None:
                return None
            start, end = max(pair[0], lo), min(pair[1], hi)
            return (start, end) if start < end else None

        for (full, _, _), iv in zip(proofs, self.intervals):
            part = clip(full if full[0] <= full[1] else None)
            if part is not None:
                covered.append(part)
                if iv["in_z"]:
                    in_z.append(part)
        resolved = 0
        for k in range(len(self.intervals) - 1):
            (left, _, left_minus), (right, right_minus, _) = proofs[k], proofs[k + 1]
            gap = (left[1], right[0])
            if self.intervals[k]["in_z"] != self.intervals[k + 1]["in_z"] or not gap[0] < gap[1]:
                flags_differ = self.intervals[k]["in_z"] != self.intervals[k + 1]["in_z"]
                if gap[0] > gap[1] and flags_differ and clip((right[0], left[1])):
                    _reject(f"intervals[{k}]", "two neighbouring intervals with different flags are both proven "
                            "on an overlap")
                continue
            named = set(self.intervals[k]["units"])
            if len(named) != 1 or left[0] > left[1] or right[0] > right[1]:
                continue
            (bits_a, signs_a), (bits_b, signs_b) = states[k], states[k + 1]
            flips = {(n, int(i)) for n in bits_a for i in np.flatnonzero(bits_a[n] != bits_b[n])}
            flips |= {(-1, int(i)) for i in np.flatnonzero(signs_a != signs_b)}
            if flips == named and left_minus[0] <= gap[0] and gap[1] <= left_minus[1] and \
                    right_minus[0] <= gap[0] and gap[1] <= right_minus[1]:
                part = clip(gap)
                if part:
                    covered.append(part)
                    if self.intervals[k]["in_z"]:
                        in_z.append(part)
                    resolved += 1
        self.covered = IntervalUnion(covered)
        self.in_z = IntervalUnion(in_z)
        self.unresolved = self.covered.complement(lo, hi)
        self.counts["resolved_slivers"] = resolved
        self.counts["unresolved_slivers"] = len(self.unresolved)

    def enclosure(self) -> VerifyReport:
        t, sd = Fraction(self.t_obs), Fraction(self.sd)
        if self.t_obs not in self.in_z:
            if not any(a <= self.t_obs <= b for a, b in self.unresolved):
                _reject("statistic.t_obs", "t_obs lies in a part of the range proven outside Z")
            self.reasons.append("t_obs lies in an unresolved sliver; the enclosure is [0, 1]")
            return VerifyReport("enclosure_only", self.reasons, enclosure=("0", "1"), relative_width=1.0)
        outside = IntervalUnion([(-_INF, self.range[0]), (self.range[1], _INF)])
        unknown = outside | self.unresolved
        log_lo, log_hi = _enclosure_logs(self.in_z, unknown, t, sd, self.two_sided, self.dps)
        with mp.workdps(self.dps + 10):
            p_lo, p_hi = mp.exp(log_lo), mp.exp(log_hi)
            stored = self.cert["pvalues"]["selective"]
            value = mpf(stored["value"])
            eps = PVALUE_PRECISION_RTOL
            if not p_lo * (1 - eps) <= value <= p_hi * (1 + eps):
                _reject("pvalues.selective.value", f"{stored['value']} lies outside the verified enclosure "
                        f"[{mp.nstr(p_lo, 17)}, {mp.nstr(p_hi, 17)}]")
            width = float((p_hi - p_lo) / p_hi) if p_hi > 0 else 0.0
            enclosure = (mp.nstr(p_lo, 20), mp.nstr(p_hi, 20))
            unresolved_width = float(sum(b - a for a, b in self.unresolved)) if self.unresolved else 0.0
            outcome = "certified"
            if not self.unresolved.is_empty:
                outcome = "enclosure_only"
                self.reasons.append(f"{len(self.unresolved)} unresolved sliver(s) of total width {unresolved_width:.3e} "
                                    f"widen the enclosure")
            stored_enclosure = stored.get("enclosure")
            if outcome == "certified" and stored_enclosure is not None:
                if not (_agrees(log_lo, stored_enclosure[0]) and _agrees(log_hi, stored_enclosure[1])):
                    outcome = "enclosure_only"
                    self.reasons.append("the stored enclosure (float interval ends) differs from the exact one "
                                        "by more than the p-value tolerance")
        return VerifyReport(outcome, self.reasons, enclosure=enclosure, relative_width=width,
                            unresolved_width=unresolved_width)

    # Optional LP cross-check ------------------------------------------------
    @staticmethod
    @contextlib.contextmanager
    def _quiet():
        """Keep the C++ solver's banner (written to file descriptor 1) out of the output."""
        sys.stdout.flush()
        saved, null = os.dup(1), os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, 1)
        try:
            yield
        finally:
            os.dup2(saved, 1)
            os.close(saved)
            os.close(null)

    def lp_check(self) -> None:
        try:
            import cvxpy as cp
        except ImportError:
            self.reasons.append("lp: cvxpy is not installed; the LP cross-check was skipped")
            return
        z = cp.Variable()
        rows = 4
        A, B = cp.Parameter(2 * rows), cp.Parameter(2 * rows)
        problems = {"lo": cp.Problem(cp.Minimize(z), [A + cp.multiply(B, z) >= 0]),
                    "hi": cp.Problem(cp.Maximize(z), [A + cp.multiply(B, z) >= 0])}
        worst, solves = 0.0, 0
        for k, iv in enumerate(self.intervals):
            point = _interior(iv["lo"], iv["hi"])
            bits, groups, out, out_rad = _float_pass(self.graph, self.a_img, self.b_img, point)
            alpha, beta, _, _ = self.selection.cuts(out, out_rad)
            groups.add(-1, alpha, beta, _active(alpha, beta, point))
            al = np.concatenate([g[0] for g in groups.data.values()])
            be = np.concatenate([g[1] for g in groups.data.values()])
            s = np.concatenate([np.where(g[2], 1.0, -1.0) for g in groups.data.values()])
            with np.errstate(divide="ignore", invalid="ignore"):
                root = -al / be
            lower = np.flatnonzero(s * be > 0)
            upper = np.flatnonzero(s * be < 0)
            lower, upper = lower[np.argsort(-root[lower])][:rows], upper[np.argsort(root[upper])][:rows]
            a_val, b_val = np.ones(2 * rows), np.zeros(2 * rows)
            for offset, chosen in ((0, lower), (rows, upper)):
                scale = np.maximum(np.abs(al[chosen]), np.abs(be[chosen]))
                a_val[offset : offset + chosen.size] = s[chosen] * al[chosen] / scale
                b_val[offset : offset + chosen.size] = s[chosen] * be[chosen] / scale
            A.value, B.value = a_val, b_val
            for end, chosen in (("lo", lower), ("hi", upper)):
                target = iv[end]
                if not chosen.size or math.isinf(target) or target in self.range:
                    continue
                with self._quiet():
                    problems[end].solve(solver=cp.HIGHS)
                solves += 1
                if problems[end].status != "optimal":
                    self.reasons.append(f"lp: intervals[{k}].{end}: status {problems[end].status!r}")
                    continue
                gap = abs(float(z.value) - target) / max(1.0, abs(target))
                worst = max(worst, gap)
                if gap > LP_END_RTOL:
                    self.reasons.append(f"lp: intervals[{k}].{end}: optimum {float(z.value)!r} differs from {target!r}")
        self.counts.update(lp_solves=solves, lp_worst_relative_disagreement=worst)


@contextlib.contextmanager
def _one_blas_thread():
    """Limit BLAS to one thread while the passes run.

    Their products are small, and extra threads slow them several-fold when
    the cores are shared. Without ``threadpoolctl`` the block runs unchanged.
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        yield
        return
    with threadpool_limits(limits=1, user_api="blas"):
        yield


def verify(
    cert_path: str | os.PathLike,
    *,
    graph: Any = None,
    image: Any = None,
    reference: Any = None,
    covariance: Any = None,
    mask: Any = None,
    exact: bool | None = None,
    lp: bool = False,
    dps: int = 60,
) -> VerifyReport:
    """Verify an audit certificate independently of the code that wrote it.

    Parameters
    ----------
    cert_path
        The certificate JSON file; the files it names are looked up next to it.
    graph
        A :class:`~dalverify.graph.ir.Graph` or a ``.dalg`` path that replaces
        the certificate's graph file (it must have the recorded digest).
    image, reference
        Arrays or ``.npy`` paths that replace the sidecar's images (they must
        have the recorded hashes).
    covariance
        A covariance file written by dalverify (or a covariance object) when
        the certificate names none.
    mask
        The eligibility mask, when the certificate's sidecar lacks it.
    exact
        Force exact (True) or float-enclosure (False) checks of the
        intervals; None chooses exact when the certificate was certified
        exactly and the cost is below :data:`VERIFY_EXACT_BUDGET`.
    lp
        Also re-solve every interval's ends as LPs with HiGHS (reported, never
        decisive).
    dps
        Decimal digits of this verifier's p-value computations.

    Returns
    -------
    VerifyReport
        A malformed or altered certificate gives a report whose outcome is
        ``rejected`` with the field named, not an exception.
    """
    started = time.perf_counter()
    checker = _Verifier(cert_path, graph, image, reference, covariance, mask, exact, lp, dps)
    try:
        checker.read()
        checker.statistic()
        checker.tiling()
        checker.pvalues()
        with _one_blas_thread():
            checker.pieces()
        report = checker.enclosure()
        if lp:
            checker.lp_check()
        report.reasons = checker.reasons
    except CertificateError as error:
        name = getattr(error, "field", "certificate")
        report = VerifyReport(f"rejected: {error}", checker.reasons + [str(error)], field=name, error=error)
    except (DalverifyError, ValueError, KeyError, TypeError, IndexError, AttributeError, OSError) as error:
        report = VerifyReport(f"rejected: certificate: malformed ({type(error).__name__}: {error})",
                              checker.reasons + [str(error)], field="certificate", error=error)
    report.method = getattr(checker, "method", None)
    report.counts = dict(checker.counts)
    report.seconds = time.perf_counter() - started
    logger.info("verified %s: %s in %.2f s", cert_path, report.outcome, report.seconds)
    return report


__all__ = ["VERIFY_EXACT_BUDGET", "VerifyReport", "verify"]

"""Side-by-side timing and agreement of si4onnx and dalverify on one ONNX reconstruction.

Both tools test the same region of the same images through the same ONNX
file, over the same range of the line, and their results are compared.

Setting
-------
- Model: ``UNet(channels=1, base_width=8, depth=3)`` (max-pool down,
  transposed-convolution up, concatenation skips, weights drawn after
  ``torch.manual_seed(seed)``) inside ``Reconstruction(unet, t_start=460,
  steps=5, eta=1.0, seed=seed)``, in float64. It is exported once with the
  legacy ONNX exporter (``dynamo=False``) through a module that computes
  the carried term ``c1 * x_t`` of every DDIM step before the U-Net call of
  that step (same values and the same rounding as ``Reconstruction``).
  si4onnx's incremental re-evaluation (``memoization``, ``NN.forward_si``
  in ``si4onnx/nn.py``) restarts after the last node whose interval
  contains the new point. That is only right when no later node reads an
  earlier input-dependent value outside that node's ancestry, which a
  ``c1 * x_t`` placed after the U-Net would do. ``Identity`` nodes (the
  exporter's aliases of shared initializers) are rewired to their source
  and ``Constant`` nodes become float64 initializers: si4onnx 0.1.13 has
  no ``Identity`` handler, and its ``Constant`` layer reads only float32
  and int64 tensors.
- Images: a ``N(0, I)`` test image with a bright block (``+3``, side
  ``max(2, n // 8)``) at the centre, and an independent ``N(0, I)``
  reference, both from ``numpy.random.default_rng(seed)``.
- Test: the residual is ``|F(D(x) - x)|`` with the 3x3 mean filter that
  pads with zeros and divides by 9. The region is ``score > lambda`` with
  ``lambda = 0.8``, rounded to float32 as si4onnx does, and lowered by
  factors of 0.75 while the region is empty. The statistic is
  ``mean_M(x - x_ref)`` and ``Sigma = I`` for both images. si4onnx: ``ReferenceMeanDiff(threshold, post_process=[InputDiff(),
  AverageFilter(3), Abs()])`` with ``var=1.0``. dalverify:
  ``DALTest(graph, threshold, covariance=Isotropic(1.0, n * n),
  profile="si4onnx")``, which searches ``[-(10 + |z|), 10 + |z|]`` standard
  deviations and reports the equal-tailed p-value, as si4onnx does.
- si4onnx runs twice per case: ``inference_mode="exhaustive"`` (search until
  the same range is covered) and its default (``"parametric"``, which stops
  once the p-value's bounds from the unsearched part of the line are
  closer than 0.001). Every run of either tool is its own process, with
  ``--threads`` torch threads (default 1); ``--dalverify-workers 2`` lets
  dalverify walk the two halves of the range in two processes.
- NOTE: in sicore 3.0.0 the exhaustive mode's own search strategy is never
  selected (``SelectiveInference._create_search_strategy`` matches the mode
  string against a tuple pattern), so the exhaustive run also moves outward
  from the statistic by a step of 1e-6, shrunk down to 1e-11 where that
  point is already searched. Only its stopping rule differs from the
  default mode.

Structure
---------
The script runs under the environment that has dalverify. It builds the
model, the ONNX file and the images of each case in a case folder, starts
the si4onnx runs with ``--si4onnx-python`` (an interpreter whose
environment has si4onnx; that side imports only numpy, torch, onnx and
si4onnx) and then the dalverify run, which also compares each si4onnx
result with its own through :func:`dalverify.crosscheck.compare`. Without
``--si4onnx-python`` (or when the interpreter is missing) only dalverify
runs and each record says that si4onnx was skipped. With
``--reuse-si4onnx`` a si4onnx result already in the case folder is kept
when the sha256 of its inputs (ONNX file, both images, threshold, kernel
size, variance) matches, so that the dalverify side can be measured again
alone. ``--timeout`` stops any single run and records it as timed out.

Output: one JSON line per case on stdout (and in ``--out``), then a
Markdown table of every run and a summary per size.

    python benchmarks/si4onnx_side_by_side.py --sizes 16 32 --seeds 0 1 2 \\
        --si4onnx-python /work/si4onnx_venv/bin/python --out side_by_side.jsonl

si4onnx's own environment (it needs numpy < 2; the torch pin first, so that
pip takes the CPU build):

    python -m venv /work/si4onnx_venv
    /work/si4onnx_venv/bin/pip install torch==2.13.0
    /work/si4onnx_venv/bin/pip install "numpy<2" si4onnx==0.1.13 sicore==3.0.0
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# Only the standard library is imported here: the si4onnx side runs this file
# with an interpreter whose environment has no dalverify.

#: si4onnx modes timed in each case: label -> keyword arguments of ``inference``.
PEER_MODES: dict[str, dict[str, Any]] = {
    "exhaustive": {"inference_mode": "exhaustive"},
    "default": {},
}

#: Search step of sicore's parametric search (``step`` of ``inference``,
#: default 1e-6 in sicore 3.0.0), in standard deviations of the statistic.
PEER_SEARCH_STEP = 1e-6

#: Diagnosis kinds of :func:`dalverify.crosscheck.compare` about the truncation sets.
INTERVAL_KINDS = frozenset({"missing_narrow_interval", "missing_interval", "merged_gap", "extra_interval"})

#: Diagnosis kinds about the selective p-value.
PVALUE_KINDS = frozenset({"pvalue_mismatch", "tail_precision_loss", "pvalue_definition_mismatch",
                          "statistic_outside_their_intervals"})

#: Diagnosis kinds about the observed statistic and its standard deviation.
STATISTIC_KINDS = frozenset({"statistic_mismatch", "sd_mismatch"})

#: Factor applied to the threshold while it selects no pixel, and the number of tries.
THRESHOLD_FACTOR = 0.75
THRESHOLD_TRIES = 12

_CASE_FILES = {"model": "model.onnx", "image": "image.npy", "reference": "reference.npy", "spec": "case.json"}


# ---------------------------------------------------------------------------
# Model, ONNX file and images (dalverify environment).


def build_reconstruction(size: int, seed: int, *, base_width: int = 8, depth: int = 3, steps: int = 5,
                         t_start: int = 460):
    """Build the seeded float64 reconstruction ``D`` for ``size x size`` greyscale images.

    The U-Net's weights are drawn after ``torch.manual_seed(seed)``; the DDIM
    noise comes from ``Reconstruction``'s own generator seeded with ``seed``.

    Returns
    -------
    dalverify.diffusion.reconstruction.Reconstruction
    """
    import torch

    from dalverify.diffusion.reconstruction import Reconstruction
    from dalverify.diffusion.unet import UNet

    torch.manual_seed(seed)
    unet = UNet(channels=1, base_width=base_width, depth=depth)
    return Reconstruction(unet, t_start=t_start, steps=steps, eta=1.0, seed=seed, image_shape=(1, size, size))


def _export_module(reconstruction):
    """Build a module equal to ``reconstruction`` whose trace computes ``c1 * x_t`` before each U-Net call.

    The coefficients come from ``step_coefficients()`` and the schedule,
    with the same float64 operations as ``Reconstruction.forward``, so the
    two modules agree bit for bit.
    """
    import torch
    from torch import nn

    alpha_bar_start = float(reconstruction.schedule.alpha_bar[reconstruction.t_start])
    input_scale = math.sqrt(alpha_bar_start)
    noise_scale = math.sqrt(1.0 - alpha_bar_start)
    plan = [(step["t"], step["c1"], step["c2"], step["sigma"], reconstruction.taus.index(step["t"]))
            for step in reconstruction.step_coefficients()]

    class CarriedTermFirst(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = reconstruction.model
            self.register_buffer("noise", reconstruction.noise.detach().clone())

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x_t = input_scale * x + noise_scale * self.noise[0]
            for t, c1, c2, sigma, noise_index in plan:
                carried = c1 * x_t
                eps = self.model(x_t, t)
                x_t = carried + c2 * eps
                if sigma != 0.0:
                    x_t = x_t + sigma * self.noise[noise_index]
            return x_t

    return CarriedTermFirst().eval()


def export_onnx(reconstruction, path: str | os.PathLike[str]):
    """Export ``reconstruction`` to an ONNX file that both si4onnx and dalverify read.

    Parameters
    ----------
    reconstruction
        A float64 ``Reconstruction`` (see :func:`build_reconstruction`).
    path
        Output ``.onnx`` file.

    Returns
    -------
    onnx.ModelProto
        The saved model: float64 initializers, no ``Identity`` and no
        ``Constant`` nodes, every ``Mul`` placed before the other consumers
        of its input-dependent operand (checked by
        :func:`mul_order_violations`).

    Raises
    ------
    dalverify.errors.GraphFileError
        If the exported graph still has a ``Mul`` after another consumer of
        its operand (the trace order changed), which would make si4onnx's
        memoization reuse stale values.
    """
    import io
    import warnings

    import onnx
    import torch

    from dalverify.errors import GraphFileError

    module = _export_module(reconstruction)
    shape = (1, *reconstruction.image_shape)
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, torch.zeros(shape, dtype=torch.float64), buffer, dynamo=False,
                          input_names=["image"], output_names=["reconstruction"])
    model = onnx.load_from_string(buffer.getvalue())
    _inline_identity_and_constants(model)
    onnx.checker.check_model(model)
    violations = mul_order_violations(model)
    if violations:
        raise GraphFileError(
            f"the exported model multiplies after another consumer of the same tensor at {violations[:3]}; "
            "compute c1 * x_t before the U-Net call in the exported module"
        )
    onnx.save(model, str(path))
    return model


def _inline_identity_and_constants(model) -> None:
    """Rewire ``Identity`` outputs to their sources and turn ``Constant`` nodes into initializers, in place."""
    from onnx import helper, numpy_helper

    graph = model.graph
    outputs = {value.name for value in graph.output}
    alias: dict[str, str] = {}
    kept = []
    for node in graph.node:
        if node.op_type == "Identity" and node.output[0] not in outputs:
            alias[node.output[0]] = alias.get(node.input[0], node.input[0])
        elif node.op_type == "Constant" and len(node.attribute) == 1 and node.attribute[0].name == "value":
            array = numpy_helper.to_array(helper.get_attribute_value(node.attribute[0]))
            graph.initializer.append(numpy_helper.from_array(array, name=node.output[0]))
        else:
            kept.append(node)
    for node in kept:
        for position, name in enumerate(node.input):
            if name in alias:
                node.input[position] = alias[name]
    del graph.node[:]
    graph.node.extend(kept)


def case_sha256(folder: str | os.PathLike[str], spec: dict[str, Any]) -> str:
    """Return the sha256 of a case's inputs: the ONNX file, both images, threshold, kernel size and variance."""
    import hashlib

    digest = hashlib.sha256()
    for name in ("model", "image", "reference"):
        digest.update((Path(folder) / _CASE_FILES[name]).read_bytes())
    settings = [spec["threshold"], spec["kernel_size"], spec["variance"]]
    digest.update(json.dumps(settings).encode())
    return digest.hexdigest()


def mul_order_violations(model) -> list[tuple[int, int]]:
    """Pairs ``(mul_index, consumer_index)`` where a ``Mul`` comes after another consumer of its operand.

    Only operands computed by a node (not initializers or constants) count:
    those are the input-dependent tensors. An empty list means every ``Mul``
    precedes every other node that reads the same input-dependent tensor.
    """
    graph = model.graph
    produced = {name for node in graph.node for name in node.output}
    produced.update(value.name for value in graph.input)
    produced -= {init.name for init in graph.initializer}
    consumers: dict[str, list[int]] = {}
    for index, node in enumerate(graph.node):
        for name in node.input:
            consumers.setdefault(name, []).append(index)
    violations = []
    for index, node in enumerate(graph.node):
        if node.op_type != "Mul":
            continue
        for name in node.input:
            if name in produced:
                violations.extend((index, other) for other in consumers[name] if other < index)
    return violations


def make_images(size: int, seed: int, *, amplitude: float = 3.0):
    """Test image with a bright block and an independent reference, both ``(1, size, size)``.

    Both are ``N(0, I)`` draws from ``numpy.random.default_rng(seed)`` (test
    image first); a block of side ``max(2, size // 8)`` at the centre of the
    test image is raised by ``amplitude``.
    """
    import numpy as np

    rng = np.random.default_rng(seed)
    image, reference = rng.normal(size=(2, 1, size, size))
    side = max(2, size // 8)
    start = (size - side) // 2
    image[0, start:start + side, start:start + side] += amplitude
    return image, reference


def make_test(graph, threshold: float, *, kernel_size: int = 3, **options):
    """Build the DAL-Test with si4onnx's conventions on ``graph`` for ``Sigma = I`` on both images."""
    from dalverify.methods.covariance import Isotropic
    from dalverify.methods.dal_test import DALTest

    size = int(math.prod(graph.input_shape))
    return DALTest(graph, threshold=threshold, kernel_size=kernel_size, covariance=Isotropic(1.0, size),
                   profile="si4onnx", progress=False, **options)


def choose_threshold(graph, image, threshold: float, *, kernel_size: int = 3) -> float:
    """Return ``threshold``, or the first of ``threshold * 0.75**k`` whose region is not empty.

    Raises
    ------
    dalverify.errors.InputError
        If the region is still empty after 12 reductions.
    """
    from dalverify.errors import InputError

    value = float(threshold)
    for _ in range(THRESHOLD_TRIES):
        region, _ = make_test(graph, value, kernel_size=kernel_size).observed_region(image)
        if region.any():
            return value
        value *= THRESHOLD_FACTOR
    raise InputError(
        f"no pixel is selected at any threshold from {threshold!r} down to {value / THRESHOLD_FACTOR!r}; "
        "check the model and the images"
    )


def prepare_case(folder: str | os.PathLike[str], size: int, seed: int, threshold: float, *,
                 kernel_size: int = 3, base_width: int = 8, depth: int = 3, steps: int = 5) -> dict[str, Any]:
    """Write the ONNX model, the two images and ``case.json`` of one case into ``folder``.

    Returns the case specification (also written to ``case.json``): size,
    seed, the threshold after :func:`choose_threshold`, kernel size, the
    variance and the export's node counts.
    """
    import numpy as np
    import torch

    from dalverify.graph import from_onnx

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    reconstruction = build_reconstruction(size, seed, base_width=base_width, depth=depth, steps=steps)
    model = export_onnx(reconstruction, folder / _CASE_FILES["model"])
    image, reference = make_images(size, seed)
    np.save(folder / _CASE_FILES["image"], image)
    np.save(folder / _CASE_FILES["reference"], reference)
    graph = from_onnx(folder / _CASE_FILES["model"])
    chosen = choose_threshold(graph, image, threshold, kernel_size=kernel_size)
    spec = {
        "size": size, "seed": seed, "threshold_requested": float(threshold), "threshold": chosen,
        "kernel_size": kernel_size, "variance": 1.0,
        "model": {"unet": {"base_width": base_width, "depth": depth}, "t_start": reconstruction.t_start,
                  "steps": reconstruction.steps, "eta": reconstruction.eta,
                  "onnx_nodes": len(model.graph.node), "onnx_opset": model.opset_import[0].version,
                  "piecewise_units": graph.count_units(), "torch": torch.__version__},
    }
    spec["inputs_sha256"] = case_sha256(folder, spec)
    (folder / _CASE_FILES["spec"]).write_text(json.dumps(spec, indent=1))
    return spec


# ---------------------------------------------------------------------------
# dalverify side and the comparison (dalverify environment).


def run_dalverify(graph, image, reference, threshold: float, *, kernel_size: int = 3, workers: int = 1):
    """Run the DAL-Test with si4onnx's conventions; return ``(result, seconds)``.

    ``seconds`` is the wall time of ``DALTest.run`` (region, walk over
    ``[-(10 + |z|), 10 + |z|]`` sd and every p-value), with ``workers``
    walk processes.
    """
    test = make_test(graph, threshold, kernel_size=kernel_size, workers=workers)
    started = time.perf_counter()
    result = test.run(image, reference)
    return result, time.perf_counter() - started


def dalverify_summary(result, seconds: float) -> dict[str, Any]:
    """JSON summary of a dalverify run: time, pieces, p-values, the truncation set."""
    from dalverify.methods.pvalues import selective_pvalue

    record: dict[str, Any] = {"status": result.status, "seconds": seconds, "region_size": result.region_size}
    if result.status != "ok":
        return record
    selective = result.pvalues["selective"]
    symmetric = selective_pvalue(result.t_obs, result.sd, result.truncation, two_sided="symmetric")
    record.update({
        "t_obs": result.t_obs, "sd": result.sd, "z_obs": result.t_obs / result.sd,
        "searched": list(result.searched), "searched_sd": [v / result.sd for v in result.searched],
        "network_pieces": result.network_pieces, "intervals": result.pieces,
        "pieces_per_second": result.network_pieces / seconds if seconds > 0 else None,
        "truncation_components": len(result.truncation),
        "truncation": result.truncation.to_json(),
        "p_equal_tailed": selective.text, "p_symmetric": symmetric.text,
        "naive": result.pvalues["naive"].text,
        "timings": result.timings,
    })
    return record


def speed_ratio(peer_seconds: float | None, our_seconds: float | None) -> float | None:
    """si4onnx seconds divided by dalverify seconds (above 1: dalverify is faster); None when unknown."""
    if peer_seconds is None or our_seconds is None or our_seconds <= 0:
        return None
    return peer_seconds / our_seconds


def search_coverage(searches: list[list[float]], result, *, rtol: float | None = None) -> dict[str, Any]:
    """Measure how the peer's searches sit on dalverify's network pieces, in standardized units.

    Parameters
    ----------
    searches
        ``[z, lo, hi]`` of every peer search: the point evaluated and the
        interval returned for it.
    result
        dalverify's ``TestResult`` (its partition gives the pieces).
    rtol
        Breakpoints within ``rtol * max(1, |end|)`` of an end of a search
        interval count as that end (default
        ``dalverify.tolerances.CROSSCHECK_ENDPOINT_RTOL``).

    Returns
    -------
    dict
        - ``network_pieces``: our network pieces that lie inside the hull
          of the peer's search intervals (and in the range we searched).
        - ``searches``: the number of peer searches.
        - ``unvisited_pieces``: our pieces that contain no peer search point.
        - ``narrowest_unvisited``: the width of the narrowest of them.
        - ``spanning_searches``: peer intervals with one of our network
          breakpoints strictly inside, so they are not one linear piece.
        - ``breakpoints_inside_searches`` and
          ``breakpoint_kinds_inside_searches``: those breakpoints, counted
          once each, and the node kinds of the units that end there.
        - ``pieces_below_step`` and ``narrowest_piece``: our pieces narrower
          than the peer's search step, and the narrowest width.
    """
    import numpy as np

    from dalverify.tolerances import CROSSCHECK_ENDPOINT_RTOL

    rtol = CROSSCHECK_ENDPOINT_RTOL if rtol is None else rtol
    sd = result.sd
    # Network pieces in standardized units, and the unit kinds that end each one.
    spans: dict[int, list[Any]] = {}
    for piece in result.partition.pieces:
        span = spans.setdefault(piece.network_piece, [piece.lo, piece.hi, ()])
        span[0], span[1] = min(span[0], piece.lo), max(span[1], piece.hi)
        if piece.hi == span[1]:
            span[2] = piece.end_units
    table = np.array(searches, dtype=np.float64).reshape(-1, 3)
    points = np.sort(table[:, 0])
    # Only pieces inside the hull of the peer's search intervals count, so an
    # early-stopping run is judged on the part of the line it searched.
    hull_lo, hull_hi = table[:, 1].min(), table[:, 2].max()
    ordered = [spans[index] for index in sorted(spans)
               if spans[index][0] / sd >= hull_lo and spans[index][1] / sd <= hull_hi]
    lows = np.array([span[0] for span in ordered], dtype=np.float64) / sd
    highs = np.array([span[1] for span in ordered], dtype=np.float64) / sd
    widths = highs - lows
    inner = highs[:-1]
    inner_kinds = [_unit_kinds(result.graph, span[2]) for span in ordered[:-1]]

    # A piece is visited when a search point lies in [lo, hi].
    unvisited = np.searchsorted(points, highs, side="right") <= np.searchsorted(points, lows, side="left")
    slack = rtol * np.maximum(1.0, np.abs(inner))
    spanning = 0
    covered = np.zeros(inner.size, dtype=bool)
    for _, lo, hi in table:
        inside = (inner - slack > lo) & (inner + slack < hi)
        if inside.any():
            spanning += 1
            covered |= inside
    kinds: dict[str, int] = {}
    for index in np.flatnonzero(covered):
        for kind in inner_kinds[index]:
            kinds[kind] = kinds.get(kind, 0) + 1
    return {
        "network_pieces": int(lows.size),
        "searches": int(table.shape[0]),
        "unvisited_pieces": int(unvisited.sum()),
        "narrowest_unvisited": float(widths[unvisited].min()) if unvisited.any() else None,
        "spanning_searches": int(spanning),
        "breakpoints_inside_searches": int(covered.sum()),
        "breakpoint_kinds_inside_searches": kinds,
        "pieces_below_step": int((widths < PEER_SEARCH_STEP).sum()),
        "narrowest_piece": float(widths.min()) if widths.size else None,
    }


def _unit_kinds(graph, units) -> tuple[str, ...]:
    """Kinds of the graph nodes of ``units`` (``"cut"`` for a selection cut), without repeats."""
    kinds = []
    for node_id, _ in units:
        kind = "cut" if node_id < 0 or graph is None else graph.nodes[node_id].kind
        if kind not in kinds:
            kinds.append(kind)
    return tuple(kinds)


def compare_with_peer(peer: dict[str, Any], result) -> dict[str, Any]:
    """Compare one si4onnx run (its worker JSON) with dalverify's result.

    Returns
    -------
    dict
        - ``verdict`` of :func:`dalverify.crosscheck.compare`.
        - ``statistic_agree``, ``truncation_agree`` (no interval missed or
          added in the range both searched) and ``pvalue_agree`` (their
          p-value within ``CROSSCHECK_PVALUE_RTOL`` of our equal-tailed one).
        - The p-values, and ``ours_within_their_bounds``: whether ours lies
          in their ``[inf_p, sup_p]`` (to the same relative tolerance).
        - The relative differences of their statistic and its sd in units
          of ``T``.
        - The diagnoses (kind, severity, message), and
          :func:`search_coverage` when the run lists its searches.
    """
    from dalverify.crosscheck import compare
    from dalverify.tolerances import CROSSCHECK_PVALUE_RTOL

    fields = {key: peer[key] for key in ("tool", "scale", "stat", "sd", "intervals", "searched_intervals",
                                         "p_value", "two_sided", "naive_p_value", "search_count", "search_step")
              if key in peer}
    report = compare(fields, result)
    errors = {d.kind for d in report.diagnoses if d.severity == "error"}
    ours = report.pvalues["ours"]
    on_theirs = report.pvalues.get("exact_on_their_intervals") or {}
    out: dict[str, Any] = {
        "verdict": report.verdict,
        "statistic_agree": not errors & STATISTIC_KINDS,
        "truncation_agree": not errors & INTERVAL_KINDS,
        "pvalue_agree": not errors & PVALUE_KINDS,
        "p_value": peer.get("p_value"),
        "p_ours_equal_tailed": ours["equal-tailed"].text,
        "p_exact_on_their_intervals": on_theirs["equal-tailed"].text if "equal-tailed" in on_theirs else None,
        "their_components": report.intervals["theirs_count"],
        "our_components": report.intervals["ours_count"],
        "common_range_sd": report.intervals["common_range"],
        "diagnoses": [{"kind": d.kind, "severity": d.severity, "message": d.message} for d in report.diagnoses],
    }
    if peer.get("inf_p") is not None and peer.get("sup_p") is not None:
        # Their bounds are float64 values; a relative slack of
        # CROSSCHECK_PVALUE_RTOL keeps a collapsed bound (inf_p == sup_p after
        # a complete search) from failing on its last digits.
        value = float(ours["equal-tailed"].value)
        out["ours_within_their_bounds"] = bool(peer["inf_p"] * (1 - CROSSCHECK_PVALUE_RTOL) <= value
                                               <= peer["sup_p"] * (1 + CROSSCHECK_PVALUE_RTOL))
    if peer.get("stat_statistic_units") is not None:
        out["statistic_units_relative_difference"] = abs(peer["stat_statistic_units"] / result.t_obs - 1.0)
    if peer.get("sd") is not None:
        out["sd_relative_difference"] = abs(peer["sd"] / result.sd - 1.0)
    if peer.get("searches_standardized"):
        out["coverage"] = search_coverage(peer["searches_standardized"], result)
    return out


# ---------------------------------------------------------------------------
# The si4onnx side (si4onnx environment; no dalverify import).


def _package_versions(names: list[str]) -> dict[str, str | None]:
    from importlib import metadata

    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def _json_end(value: float) -> float | str:
    value = float(value)
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return value


def run_si4onnx_worker(case_dir: str, mode: str, out_path: str, *, memoization: bool = True,
                       threads: int = 1) -> dict[str, Any]:
    """Run si4onnx on one case folder and write its result as JSON (runs in the si4onnx environment).

    The JSON has the field names read by :func:`dalverify.crosscheck.compare`,
    with ``stat`` and the intervals in standardized units (the units of the
    search). It adds ``stat_statistic_units`` and ``sd`` (sicore's
    ``eta^T x`` and ``sqrt(eta^T Sigma eta)``), ``seconds`` (wall time of
    ``inference``), ``searches_standardized`` (``[z, lo, hi]`` of every
    search), ``inf_p``/``sup_p`` and the package versions. A failure of
    si4onnx is recorded with ``status = "error"`` and its message.
    """
    import numpy as np
    import onnx
    import si4onnx
    import torch
    from si4onnx.hypothesis import ReferenceMeanDiff
    from si4onnx.operators import Abs, AverageFilter, InputDiff

    torch.set_num_threads(threads)
    folder = Path(case_dir)
    spec = json.loads((folder / _CASE_FILES["spec"]).read_text())
    model = onnx.load(str(folder / _CASE_FILES["model"]))
    image = torch.from_numpy(np.load(folder / _CASE_FILES["image"])[None])
    reference = torch.from_numpy(np.load(folder / _CASE_FILES["reference"])[None])
    hypothesis = ReferenceMeanDiff(
        threshold=spec["threshold"],
        post_process=[InputDiff(), AverageFilter(kernel_size=spec["kernel_size"]), Abs()],
    )
    si_model = si4onnx.load(model, hypothesis=hypothesis, memoization=memoization)

    searches: list[tuple[float, float, float]] = []
    algorithm = si_model.algorithm

    def recorded(a, b, z, **kwargs):
        selected, (lo, hi) = algorithm(a, b, z, **kwargs)
        searches.append((float(z), float(lo), float(hi)))
        return selected, [lo, hi]

    si_model.algorithm = recorded
    record: dict[str, Any] = {
        "tool": f"si4onnx {si4onnx_version()}", "mode": mode, "memoization": memoization, "threads": threads,
        "options": PEER_MODES[mode], "versions": _package_versions(["si4onnx", "sicore", "torch", "numpy", "onnx"]),
        "inputs_sha256": case_sha256(folder, spec), "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    record["load_average_before"] = _load_average()
    started = time.perf_counter()
    try:
        result = si_model.inference((image, reference), var=float(spec["variance"]), **PEER_MODES[mode])
    except Exception as error:  # si4onnx's own failures are results of the benchmark
        record.update({"status": "error", "error": f"{type(error).__name__}: {error}",
                       "seconds": time.perf_counter() - started, "search_count": len(searches)})
        print(f"si4onnx {mode} failed on {case_dir} after {len(searches)} searches: {record['error']}",
              file=sys.stderr, flush=True)
    else:
        seconds = time.perf_counter() - started
        # sicore 3 reports the statistic and the intervals multiplied by
        # stat_scale; dividing by it returns to the standardized units in
        # which the search ran.
        scale = float(si_model.si_calculator.stat_scale)
        record.update({
            "status": "ok", "seconds": seconds, "scale": "standardized",
            "stat": float(si_model.si_calculator.stat), "stat_statistic_units": float(result.stat), "sd": scale,
            "intervals": [[_json_end(lo / scale), _json_end(hi / scale)] for lo, hi in result.truncated_intervals],
            "searched_intervals": [[_json_end(lo / scale), _json_end(hi / scale)]
                                   for lo, hi in result.searched_intervals],
            "p_value": float(result.p_value), "inf_p": float(result.inf_p), "sup_p": float(result.sup_p),
            "two_sided": "equal-tailed", "naive_p_value": float(result.naive_p_value()),
            "search_count": int(result.search_count), "detect_count": int(result.detect_count),
            "search_step": PEER_SEARCH_STEP, "region_size": int(np.asarray(result.roi).sum()),
            "searches_per_second": result.search_count / seconds if seconds > 0 else None,
            "searches_standardized": [list(s) for s in searches],
        })
    record["load_average_after"] = _load_average()
    Path(out_path).write_text(json.dumps(record))
    return record


def _load_average() -> list[float] | None:
    """Return the 1, 5 and 15 minute load averages of the machine (None where unavailable)."""
    try:
        return [round(value, 2) for value in os.getloadavg()]
    except OSError:
        return None


def si4onnx_version() -> str:
    from importlib import metadata

    return metadata.version("si4onnx")


# ---------------------------------------------------------------------------
# Orchestration (dalverify environment).


def _run_process(command: list[str], timeout: float | None) -> tuple[int | None, float, str]:
    """Run ``command``; return ``(exit status or None on timeout, wall seconds, last lines of stderr)``."""
    started = time.perf_counter()
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as expired:
        tail = expired.stderr or ""
        if isinstance(tail, bytes):
            tail = tail.decode(errors="replace")
        return None, time.perf_counter() - started, tail[-2000:]
    return done.returncode, time.perf_counter() - started, done.stderr[-2000:]


def _peer_summary(peer: dict[str, Any]) -> dict[str, Any]:
    """Return a si4onnx result without its long lists (intervals and searches)."""
    return {key: value for key, value in peer.items()
            if key not in ("searches_standardized", "intervals", "searched_intervals")}


def run_case(folder: Path, size: int, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    """Prepare one case, run the si4onnx modes and dalverify in their own processes, return the record."""
    previous = {}
    for mode in PEER_MODES:
        path = folder / f"si4onnx_{mode}.json"
        if path.exists():
            if args.reuse_si4onnx:
                previous[mode] = json.loads(path.read_text())
            path.unlink()
    if (folder / "dalverify.json").exists():
        (folder / "dalverify.json").unlink()
    spec = prepare_case(folder, size, seed, args.threshold, kernel_size=args.kernel_size,
                        base_width=args.base_width, steps=args.ddim_steps)
    script = str(Path(__file__).resolve())
    record: dict[str, Any] = {"size": size, "seed": seed, "threshold": spec["threshold"],
                              "piecewise_units": spec["model"]["piecewise_units"], "si4onnx": {}}
    peer_python = args.si4onnx_python
    if peer_python and Path(peer_python).exists():
        for mode in args.modes:
            out = folder / f"si4onnx_{mode}.json"
            earlier = previous.get(mode)
            if earlier and earlier.get("status") == "ok" and earlier.get("inputs_sha256") == spec["inputs_sha256"]:
                # The same ONNX file, images and settings: the earlier si4onnx result is kept.
                out.write_text(json.dumps(earlier))
                record["si4onnx"][mode] = _peer_summary(earlier)
                record["si4onnx"][mode]["reused"] = True
                continue
            command = [peer_python, script, "--worker", "si4onnx", "--case", str(folder), "--mode", mode,
                       "--result", str(out), "--threads", str(args.threads),
                       "--si4onnx-memoization", args.si4onnx_memoization]
            status, wall, stderr = _run_process(command, args.timeout)
            if status is None:
                record["si4onnx"][mode] = {"status": "timeout", "seconds": wall,
                                           "note": f"stopped after {args.timeout:g} s"}
                print(f"si4onnx {mode} timed out after {wall:.0f} s (size {size}, seed {seed})",
                      file=sys.stderr, flush=True)
            elif status != 0 or not out.exists():
                record["si4onnx"][mode] = {"status": "failed", "seconds": wall, "stderr": stderr}
                print(f"si4onnx {mode} failed with exit status {status} (size {size}, seed {seed}): "
                      f"{stderr[-300:]}", file=sys.stderr, flush=True)
            else:
                record["si4onnx"][mode] = _peer_summary(json.loads(out.read_text()))
                record["si4onnx"][mode]["process_seconds"] = wall
    else:
        reason = "no --si4onnx-python given" if not peer_python else f"{peer_python} does not exist"
        record["si4onnx_skipped"] = reason
        print(f"si4onnx skipped for size {size}, seed {seed}: {reason}", file=sys.stderr, flush=True)

    out = folder / "dalverify.json"
    command = [sys.executable, script, "--worker", "dalverify", "--case", str(folder), "--result", str(out),
               "--threads", str(args.threads), "--dalverify-workers", str(args.dalverify_workers)]
    status, wall, stderr = _run_process(command, args.timeout)
    if status is None:
        record["dalverify"] = {"status": "timeout", "seconds": wall, "note": f"stopped after {args.timeout:g} s"}
        print(f"dalverify timed out after {wall:.0f} s (size {size}, seed {seed})", file=sys.stderr, flush=True)
    elif status != 0 or not out.exists():
        record["dalverify"] = {"status": "failed", "seconds": wall, "stderr": stderr}
        print(f"dalverify failed with exit status {status} (size {size}, seed {seed}): {stderr[-300:]}",
              file=sys.stderr, flush=True)
    else:
        ours = json.loads(out.read_text())
        record["dalverify"] = ours["dalverify"]
        record["dalverify"]["process_seconds"] = wall
        for mode, comparison in ours["comparisons"].items():
            record["si4onnx"].setdefault(mode, {})["comparison"] = comparison
    our_seconds = None
    if record["dalverify"].get("status") == "ok":
        our_seconds = record["dalverify"]["seconds"]
    for peer in record["si4onnx"].values():
        peer_seconds = peer.get("seconds") if peer.get("status") == "ok" else None
        peer["ratio"] = speed_ratio(peer_seconds, our_seconds)
    return record


def _source_state() -> dict[str, Any]:
    """Return the git commit of the dalverify checkout and its uncommitted files under ``dalverify/``."""
    import dalverify

    root = Path(dalverify.__file__).resolve().parents[1]
    state: dict[str, Any] = {"git_commit": None, "uncommitted": None}
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=30)
        changes = subprocess.run(["git", "status", "--porcelain", "--", "dalverify"], cwd=root, capture_output=True,
                                 text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return state
    if commit.returncode == 0:
        state["git_commit"] = commit.stdout.strip()
        state["uncommitted"] = [line[3:] for line in changes.stdout.splitlines()]
    return state


def _dalverify_worker(case_dir: str, out_path: str, threads: int, workers: int = 1) -> None:
    import numpy as np
    import torch

    from dalverify.graph import from_onnx

    torch.set_num_threads(threads)
    folder = Path(case_dir)
    spec = json.loads((folder / _CASE_FILES["spec"]).read_text())
    started = time.perf_counter()
    graph = from_onnx(folder / _CASE_FILES["model"])
    import_seconds = time.perf_counter() - started
    image = np.load(folder / _CASE_FILES["image"])
    reference = np.load(folder / _CASE_FILES["reference"])
    load_before = _load_average()
    result, seconds = run_dalverify(graph, image, reference, spec["threshold"], kernel_size=spec["kernel_size"],
                                    workers=workers)
    summary = dalverify_summary(result, seconds)
    summary["workers"] = workers
    summary["load_average_before"], summary["load_average_after"] = load_before, _load_average()
    summary["import_seconds"] = import_seconds
    summary["versions"] = _package_versions(["dalverify", "torch", "numpy", "onnx", "mpmath"])
    summary["versions"].update(_source_state())
    summary["date"] = time.strftime("%Y-%m-%d %H:%M:%S")
    if result.partition is not None:
        summary["walk_backend"] = result.partition.backend
    comparisons = {}
    if result.status == "ok":
        for mode in PEER_MODES:
            path = folder / f"si4onnx_{mode}.json"
            if path.exists():
                peer = json.loads(path.read_text())
                if peer.get("status") == "ok":
                    comparisons[mode] = compare_with_peer(peer, result)
    Path(out_path).write_text(json.dumps({"dalverify": summary, "comparisons": comparisons}))


# ---------------------------------------------------------------------------
# Tables.


def _number(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:.{digits}g}" if abs(value) < 1000 else f"{value:,.0f}"


def _flag(value: Any) -> str:
    if value is None:
        return "-"
    return "yes" if value else "no"


def _short_p(text: Any) -> str:
    if text is None:
        return "-"
    try:
        return f"{float(text):.6g}"
    except (TypeError, ValueError):
        return str(text)


def table_rows(record: dict[str, Any]) -> list[list[str]]:
    """Rows of the per-run table for one case record: dalverify, then each si4onnx mode."""
    ours = record.get("dalverify", {})
    base = [str(record["size"]), str(record["seed"]), _number(record.get("threshold")),
            _number(ours.get("region_size")), _number(ours.get("z_obs"), 4)]
    rows = [base + ["dalverify", ours.get("status", "-"), _number(ours.get("seconds")),
                    _number(ours.get("network_pieces")), _number(ours.get("pieces_per_second")), "1",
                    "-", "-", "-", _short_p(ours.get("p_equal_tailed"))]]
    if "si4onnx_skipped" in record:
        rows.append(base + ["si4onnx", "skipped", "-", "-", "-", "-", "-", "-", "-", "-"])
    for mode, peer in record.get("si4onnx", {}).items():
        comparison = peer.get("comparison", {})
        rows.append(base + [f"si4onnx {mode}", peer.get("status", "-"), _number(peer.get("seconds")),
                            _number(peer.get("search_count")), _number(peer.get("searches_per_second")),
                            _number(peer.get("ratio")), _flag(comparison.get("truncation_agree")),
                            _flag(comparison.get("pvalue_agree")),
                            _flag(comparison.get("ours_within_their_bounds")), _short_p(peer.get("p_value"))])
    return rows


def _median(values: list[float]) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def summary_rows(records: list[dict[str, Any]]) -> list[list[str]]:
    """Build one row per size and tool/mode: cases, median seconds, pieces, pieces/s, ratio, agreement counts."""
    rows = []
    for size in sorted({r["size"] for r in records}):
        group = [r for r in records if r["size"] == size]
        ours = [r.get("dalverify", {}) for r in group if r.get("dalverify", {}).get("status") == "ok"]
        rows.append([str(size), "dalverify", f"{len(ours)}/{len(group)}",
                     _number(_median([o.get("seconds") for o in ours])),
                     _number(_median([o.get("network_pieces") for o in ours])),
                     _number(_median([o.get("pieces_per_second") for o in ours])), "1", "-", "-"])
        modes = sorted({m for r in group for m in r.get("si4onnx", {})})
        for mode in modes:
            runs = [r["si4onnx"][mode] for r in group if r.get("si4onnx", {}).get(mode, {}).get("status") == "ok"]
            compared = [run["comparison"] for run in runs if "comparison" in run]
            rows.append([str(size), f"si4onnx {mode}", f"{len(runs)}/{len(group)}",
                         _number(_median([run.get("seconds") for run in runs])),
                         _number(_median([run.get("search_count") for run in runs])),
                         _number(_median([run.get("searches_per_second") for run in runs])),
                         _number(_median([run.get("ratio") for run in runs])),
                         f"{sum(bool(c['truncation_agree']) for c in compared)}/{len(compared)}",
                         f"{sum(bool(c['pvalue_agree']) for c in compared)}/{len(compared)}"])
    return rows


def _markdown(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    lines.extend("| " + " | ".join(row) + " |" for row in rows)
    return "\n".join(lines)


def markdown_table(records: list[dict[str, Any]]) -> str:
    """Format Markdown tables: every run of every case, then medians per size.

    "pieces" is dalverify's number of network pieces walked and si4onnx's
    number of searches. The ratio is si4onnx seconds over dalverify seconds
    for the same case. "Z agrees", "p agrees" and "ours in their p bounds"
    come from :func:`compare_with_peer`.
    """
    per_run = _markdown(
        ["size", "seed", "lambda", "region px", "z_obs", "tool", "status", "s per p-value", "pieces",
         "pieces/s", "ratio", "Z agrees", "p agrees", "ours in their p bounds", "p-value"],
        [row for record in records for row in table_rows(record)],
    )
    per_size = _markdown(
        ["size", "tool", "cases", "median s", "median pieces", "median pieces/s", "median ratio",
         "Z agrees", "p agrees"],
        summary_rows(records),
    )
    return per_run + "\n\n" + per_size


# ---------------------------------------------------------------------------
# Command line.


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[16], help="image sides (default 16)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="seeds of model and images (default 0)")
    parser.add_argument("--threshold", type=float, default=0.8, help="lambda (default 0.8; lowered if no region)")
    parser.add_argument("--kernel-size", type=int, default=3, help="mean filter size (default 3)")
    parser.add_argument("--base-width", type=int, default=8, help="U-Net base width (default 8)")
    parser.add_argument("--ddim-steps", type=int, default=5, help="DDIM steps k (default 5)")
    parser.add_argument("--out", default=None, help="also write the JSON lines to this file")
    parser.add_argument("--table", default=None, help="also write the Markdown tables to this file")
    parser.add_argument("--si4onnx-python", default=None,
                        help="interpreter of an environment with si4onnx (skip si4onnx when absent)")
    parser.add_argument("--si4onnx-memoization", choices=["on", "off"], default="on",
                        help="si4onnx's incremental re-evaluation (default on)")
    parser.add_argument("--modes", nargs="+", choices=sorted(PEER_MODES), default=list(PEER_MODES),
                        help="si4onnx modes to time (default: exhaustive default)")
    parser.add_argument("--reuse-si4onnx", action="store_true",
                        help="keep a si4onnx result already in a case folder when its inputs are byte-identical")
    parser.add_argument("--threads", type=int, default=1, help="torch threads in every run (default 1)")
    parser.add_argument("--dalverify-workers", type=int, default=1,
                        help="walk processes of dalverify (default 1; 2 uses both cores of a 2-core machine)")
    parser.add_argument("--timeout", type=float, default=None, help="stop any single run after this many seconds")
    parser.add_argument("--workdir", default=None, help="keep the case folders here (default: a temporary folder)")
    parser.add_argument("--worker", choices=["si4onnx", "dalverify"], help=argparse.SUPPRESS)
    parser.add_argument("--case", help=argparse.SUPPRESS)
    parser.add_argument("--mode", choices=sorted(PEER_MODES), help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.worker == "si4onnx":
        run_si4onnx_worker(args.case, args.mode, args.result, memoization=args.si4onnx_memoization == "on",
                           threads=args.threads)
        return 0
    if args.worker == "dalverify":
        _dalverify_worker(args.case, args.result, args.threads, args.dalverify_workers)
        return 0

    records = []
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(args.workdir or scratch)
        for size in args.sizes:
            for seed in args.seeds:
                record = run_case(root / f"n{size}_s{seed}", size, seed, args)
                record["machine"] = {"platform": platform.platform(), "cpus": os.cpu_count(), "date":
                                     time.strftime("%Y-%m-%d")}
                records.append(record)
                line = json.dumps(record)
                print(line, flush=True)
                if args.out:
                    with open(args.out, "a") as stream:
                        stream.write(line + "\n")
    table = markdown_table(records)
    print(table)
    if args.table:
        Path(args.table).write_text(table + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

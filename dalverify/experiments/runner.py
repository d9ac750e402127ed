"""Sweeps of the DAL-Test over simulated images, one independent task per image.

Image ``i`` of a cell draws everything (test image, reference image, the
anomalous square, the permutation seed) from
``numpy.random.default_rng(SeedSequence([seed, i]))``, so its record does
not depend on the order in which images run or on the number of workers.

Results are appended to ``<out>/<cell>/results.jsonl``, one JSON object per
image, each written with a single ``write`` followed by ``flush`` and
``os.fsync``. A rerun reads the finished indices and runs only the missing
ones; a last line cut short by a crash is dropped (the file is cut back to
its last complete line first). ``config.json`` and ``environment.json``
beside it record the exact cell and the package versions.

Search of the line: ``search = "adaptive"`` with ``relative_width = 1e-6``
grows the range until the selective p-value's enclosure (the bounds left
open by the unexplored tails) is within 1e-6 relative width, so every
reported selective p-value is exact to that relative width whatever
``|z_obs|`` is; a fixed half-width in sd (for example 12) is the
alternative, whose enclosure is then reported per image.
"""

from __future__ import annotations

import json
import logging
import math
import os
import platform
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable

import numpy as np

from dalverify.errors import InputError
from dalverify.experiments.config import ExperimentConfig, config_json, from_mapping

logger = logging.getLogger(__name__)

#: Line-walk engine of the sweeps ("auto" is the layer-major sweep). Engines
#: cut the line into the same pieces, with ends equal up to float64 rounding,
#: and each record names its engine.
WALK_BACKEND = "auto"

RESULTS_FILE = "results.jsonl"
CONFIG_FILE = "config.json"
ENVIRONMENT_FILE = "environment.json"


# ---------------------------------------------------------------------------
# Simulated data.

def correlate(config: ExperimentConfig, standard: np.ndarray) -> np.ndarray:
    """Map i.i.d. standardized draws (last axis of length n) to covariance ``Sigma``.

    For AR(1) the recursion ``x_0 = z_0``, ``x_i = rho x_{i-1} + sqrt(1 - rho^2) z_i``
    gives ``Cov(x_i, x_j) = rho^|i-j|`` (it is the lower Cholesky factor of
    ``Sigma`` applied to ``z``).
    """
    if config.covariance == "identity":
        return standard
    from scipy.signal import lfilter

    scale = math.sqrt(1.0 - config.rho * config.rho)
    head = standard[..., :1]
    tail = scale * standard[..., 1:]
    driven = np.concatenate([head, tail], axis=-1)
    return lfilter([1.0], [1.0, -config.rho], driven, axis=-1)


def covariance_of(config: ExperimentConfig):
    """Return the :class:`~dalverify.methods.covariance.Covariance` of a cell."""
    from dalverify.methods.covariance import AR1, Isotropic

    if config.covariance == "identity":
        return Isotropic(1.0, config.n)
    return AR1(config.rho, config.n)


def training_images(config: ExperimentConfig) -> np.ndarray:
    """``config.train.images`` normal images ``N(0, Sigma)`` of shape ``(N, 1, side, side)``."""
    rng = np.random.default_rng(np.random.SeedSequence([config.train.seed, 7919]))
    standard = rng.standard_normal((config.train.images, config.n))
    return correlate(config, standard).reshape(config.train.images, 1, config.side, config.side)


def image_seed(config: ExperimentConfig, index: int) -> int:
    """Return a 63-bit integer that identifies image ``index``'s random stream (recorded per image)."""
    return int(np.random.SeedSequence([config.seed, index]).generate_state(2, np.uint32).astype(np.uint64)
               .dot(np.array([1, 1 << 31], dtype=np.uint64)) & np.uint64((1 << 63) - 1))


def simulate(config: ExperimentConfig, index: int) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Test image, reference image (both ``(1, side, side)``) and facts about image ``index``."""
    rng = np.random.default_rng(np.random.SeedSequence([config.seed, index]))
    noise = None
    if config.kind == "robustness" and config.distance > 0:
        from dalverify.experiments.noise import noise_for_distance

        noise = _cached_noise(config.family, config.distance, noise_for_distance)
    from dalverify.experiments.noise import standard_draws

    draws = standard_draws(noise, rng, (2, config.n))
    pair = correlate(config, draws).reshape(2, 1, config.side, config.side)
    image, reference = pair[0].copy(), pair[1].copy()
    facts: dict[str, Any] = {}
    if noise is not None:
        facts["noise_parameter"] = noise.parameter
    if config.kind == "power":
        top = int(rng.integers(0, config.side - config.region_side + 1))
        left = int(rng.integers(0, config.side - config.region_side + 1))
        image[0, top:top + config.region_side, left:left + config.region_side] += config.delta
        facts["anomaly_top_left"] = [top, left]
    facts["permutation_seed"] = int(rng.integers(0, 2**31 - 1))
    return image, reference, facts


_NOISE_CACHE: dict[tuple[str, float], Any] = {}


def _cached_noise(family: str, distance: float, make: Callable) -> Any:
    key = (family, float(distance))
    if key not in _NOISE_CACHE:
        _NOISE_CACHE[key] = make(family, distance)
    return _NOISE_CACHE[key]


# ---------------------------------------------------------------------------
# The test of one image.

_GRAPH_CACHE: dict[tuple, Any] = {}


def model_file(config: ExperimentConfig) -> Path:
    """Path of the cell's model (``"bundled"``: the bundled brain model of the cell's side)."""
    if config.model == "bundled":
        from dalverify.data import bundled_path
        from dalverify.experiments.brain import BRAIN_MODELS

        return bundled_path(BRAIN_MODELS[config.side])
    return Path(config.model)


def reconstruction_graph(config: ExperimentConfig):
    """Export the DDIM reconstruction of the cell's model as a Graph (cached per process)."""
    path = model_file(config)
    if not path.is_file():
        raise InputError(
            f"model file {str(path)!r} does not exist; train it with `dalverify experiment train-model CONFIG`"
        )
    key = (str(path.resolve()), path.stat().st_mtime_ns, config.side, config.t_start, config.ddim_steps,
           config.eta, config.reconstruction_seed)
    if key not in _GRAPH_CACHE:
        import torch

        from dalverify.diffusion.checkpoint import load_model
        from dalverify.diffusion.reconstruction import Reconstruction
        from dalverify.export import export

        model, _ = load_model(path)
        shape = (1, config.side, config.side)
        reconstruction = Reconstruction(model, t_start=config.t_start, steps=config.ddim_steps, eta=config.eta,
                                        seed=config.reconstruction_seed, image_shape=shape)
        _GRAPH_CACHE[key] = export(reconstruction, torch.zeros((1,) + shape, dtype=torch.float64),
                                   metadata=reconstruction.settings())
    return _GRAPH_CACHE[key]


def _log10(p: Any) -> float | None:
    value = getattr(p, "log10", None)
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def run_image(config_data: dict[str, Any], index: int) -> dict[str, Any]:
    """Run the DAL-Test on image ``index`` of a cell; never raises.

    Returns the image's record: ``index``, ``seed``, ``status`` (``"ok"``,
    ``"no_region"`` or ``"error"``), ``region_size``, ``t_obs``, ``sd``,
    ``pvalues`` and ``log10_pvalues`` (dicts by method), ``pieces``,
    ``seconds``, and ``error`` for a failed image.
    """
    started = time.perf_counter()
    record: dict[str, Any] = {"index": int(index)}
    try:
        config = from_mapping(config_data)
        record["seed"] = image_seed(config, index)
        import torch

        torch.set_num_threads(1)
        from dalverify.methods.dal_test import DALTest

        case = anomaly_mask = None
        if config.kind == "brain":
            from dalverify.experiments.brain import brain_case, brain_covariance

            case = brain_case(config, index)
            image, reference, facts = case.image, case.reference, case.facts
            covariance, reference_scale, mask = brain_covariance(config.side), case.reference_scale, case.mask
            anomaly_mask = case.lesion
        elif config.kind == "elpv":
            from dalverify.experiments.elpv import elpv_case, elpv_covariance

            case = elpv_case(config, index)
            image, reference, facts = case.image, case.reference, case.facts
            covariance, reference_scale, mask = elpv_covariance(config), case.reference_scale, case.mask
            anomaly_mask = case.defect
        else:
            image, reference, facts = simulate(config, index)
            covariance, reference_scale, mask = covariance_of(config), 1.0, None
        record.update(facts)
        permutations = config.permutations if index < config.permutation_images else 0
        test = DALTest(reconstruction_graph(config), threshold=config.threshold, covariance=covariance,
                       kernel_size=config.kernel_size, reference_scale=reference_scale, mask=mask, search=config.search,
                       relative_width=config.relative_width, permutations=permutations,
                       seed=facts["permutation_seed"], backend=WALK_BACKEND, progress=False)
        result = test.run(image, reference)
        record.update(status=result.status, region_size=result.region_size, t_obs=result.t_obs, sd=result.sd,
                      pieces=result.pieces, network_pieces=result.network_pieces, walk_backend=WALK_BACKEND)
        wanted = [m for m in config.methods if m in result.pvalues]
        record["pvalues"] = {m: float(result.pvalues[m]) for m in wanted}
        record["log10_pvalues"] = {m: _log10(result.pvalues[m]) for m in wanted}
        if result.status == "ok":
            record["enclosure_relative_width"] = result.enclosure_width
            record["searched_sd"] = [v / result.sd for v in result.searched]
        if config.kind == "power" and result.status == "ok":
            top, left = facts["anomaly_top_left"]
            truth = np.zeros((config.side, config.side), dtype=bool)
            truth[top:top + config.region_side, left:left + config.region_side] = True
            record["overlap"] = int(np.logical_and(truth, np.asarray(result.region).reshape(truth.shape)).sum())
        if case is not None:
            record.update(_real_data_extras(config, case, anomaly_mask, result, image, reference, covariance))
    except Exception as error:  # a failed image is recorded and the sweep goes on
        record.update(status="error", error=f"{type(error).__name__}: {error}",
                      traceback=traceback.format_exc(limit=5))
        logger.warning("image %d failed: %s", index, error)
    record["seconds"] = time.perf_counter() - started
    return record


def _real_data_extras(config: ExperimentConfig, case, anomaly_mask, result, image, reference,
                      covariance) -> dict[str, Any]:
    """Overlap with the known ``anomaly_mask`` (None: no mask) and, on request, the intensity-threshold baseline."""
    from dalverify.experiments.brain import overlap_facts, threshold_baseline
    from dalverify.experiments.config import BASELINE_METHODS

    extras = overlap_facts(np.asarray(result.region), anomaly_mask)
    wanted = [m for m in config.methods if m in BASELINE_METHODS]
    if not wanted:
        return extras
    baseline = threshold_baseline(image, reference, covariance, case.reference_scale, threshold=config.threshold,
                                  kernel_size=config.kernel_size, mask=case.mask)
    extras["baseline_status"] = baseline["status"]
    extras["baseline_region_size"] = int(baseline["region"].sum())
    extras.update(overlap_facts(baseline["region"], anomaly_mask, prefix="baseline_"))
    pvalues = dict(result_pvalues(result, config))
    logs = {}
    if baseline["status"] == "ok":
        extras["baseline_t_obs"], extras["baseline_sd"] = baseline["t_obs"], baseline["sd"]
        extras["baseline_truncation_intervals"] = len(baseline["truncation"])
        for method in wanted:
            pvalues[method] = float(baseline["pvalues"][method])
            logs[method] = _log10(baseline["pvalues"][method])
    extras["pvalues"] = pvalues
    extras["log10_pvalues"] = {**{m: _log10(result.pvalues[m]) for m in pvalues if m in result.pvalues}, **logs}
    return extras


def result_pvalues(result, config: ExperimentConfig) -> dict[str, float]:
    """Return the requested DAL-Test p-values of a result as floats."""
    return {m: float(result.pvalues[m]) for m in config.methods if m in result.pvalues}


# ---------------------------------------------------------------------------
# Results files.

def read_results(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Records of a results file; a last line without its newline or not valid JSON is ignored."""
    path = Path(path)
    if not path.exists():
        return []
    records = []
    lines = path.read_bytes().split(b"\n")
    for number, line in enumerate(lines):
        if not line.strip():
            continue
        last = number == len(lines) - 1  # no newline after it: possibly cut short
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            if last:
                logger.warning("ignoring a truncated last line in %s", path)
                continue
            raise InputError(f"{str(path)!r} line {number + 1} is not valid JSON; the file is damaged") from None
        if last:
            logger.warning("ignoring a last line without its newline in %s", path)
            continue
        records.append(record)
    return records


def _repair(path: Path) -> None:
    """Cut the file back to its last complete line (after a crash mid-write)."""
    if not path.exists():
        return
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1
    if end != len(data):
        with open(path, "r+b") as handle:
            handle.truncate(end)
            handle.flush()
            os.fsync(handle.fileno())


def append_record(handle, record: dict[str, Any]) -> None:
    """Append one record as a line: one write, then flush and fsync."""
    handle.write((json.dumps(record, sort_keys=True) + "\n").encode())
    handle.flush()
    os.fsync(handle.fileno())


def environment() -> dict[str, Any]:
    """Versions of Python, the platform and the packages a sweep depends on."""
    from importlib import metadata

    versions = {}
    for package in ("dalverify", "numpy", "scipy", "torch", "mpmath", "dask", "distributed"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return {"python": sys.version, "platform": platform.platform(), "packages": versions}


def _write_text(path: Path, text: str) -> None:
    from dalverify.graph.io import atomic_write_bytes

    atomic_write_bytes(path, text.encode())


# ---------------------------------------------------------------------------
# The sweep.

def run_sweep(
    config: ExperimentConfig,
    out_dir: str | os.PathLike,
    *,
    workers: int = 1,
    scheduler: str | None = None,
    progress: bool = True,
    limit: int | None = None,
) -> Path:
    """Run (or resume) one cell; return its results file.

    Parameters
    ----------
    config
        The cell.
    out_dir
        Parent folder; the cell writes to ``out_dir / config.name``.
    workers
        1: run serially in this process. More: a ``dask.distributed``
        LocalCluster with that many single-threaded worker processes.
    scheduler
        Address of a running Dask scheduler (overrides ``workers``).
    progress
        Show a tqdm progress bar.
    limit
        Run at most this many of the missing images (for staged runs).
    """
    cell_dir = Path(out_dir) / config.name
    cell_dir.mkdir(parents=True, exist_ok=True)
    results = cell_dir / RESULTS_FILE
    text = config_json(config) + "\n"
    config_path = cell_dir / CONFIG_FILE
    if config_path.exists() and results.exists() and not _same_cell(config_path.read_text(), text):
        raise InputError(
            f"{str(cell_dir)!r} contains results of a different configuration; use another output folder "
            "or remove the old results"
        )
    _write_text(config_path, text)
    env = environment()
    from dalverify.diffusion.checkpoint import model_bytes_sha256

    model = model_file(config)
    if not model.is_file():
        raise InputError(
            f"model file {str(model)!r} does not exist; train it with `dalverify experiment train-model CONFIG`"
        )
    env["model_sha256"] = model_bytes_sha256(model)
    _write_text(cell_dir / ENVIRONMENT_FILE, json.dumps(env, indent=2, sort_keys=True) + "\n")

    _repair(results)
    done = {int(record["index"]) for record in read_results(results)}
    pending = [i for i in range(config.images) if i not in done]
    if limit is not None:
        pending = pending[:limit]
    logger.info("cell %s: %d of %d images done, %d to run", config.name, len(done), config.images, len(pending))
    if not pending:
        return results
    data = config.to_dict()
    from tqdm.auto import tqdm

    bar = tqdm(total=len(pending), desc=config.name, disable=not progress)
    with open(results, "ab") as handle:
        if scheduler is None and workers <= 1:
            for index in pending:
                append_record(handle, _task(data, index))
                bar.update(1)
        else:
            _run_dask(data, pending, handle, bar, workers, scheduler)
    bar.close()
    return results


def _same_cell(old_text: str, new_text: str) -> bool:
    """True when two stored cells differ at most in their number of images.

    A key missing from the stored cell (a setting added to the configuration
    after those results were written) matches when the new cell contains that
    setting's default value.
    """
    old, new = json.loads(old_text), json.loads(new_text)
    old.pop("images", None)
    new.pop("images", None)
    defaults = ExperimentConfig(name="").to_dict()
    for key in set(new) - set(old):
        if key in defaults and new[key] == defaults[key]:
            new.pop(key)
    return old == new


def _task(data: dict[str, Any], index: int) -> dict[str, Any]:
    """Run one image (looked up at call time, so tests can replace it)."""
    return run_image(data, index)


def _run_dask(data: dict[str, Any], pending: list[int], handle, bar, workers: int, scheduler: str | None) -> None:
    try:
        from dask.distributed import Client, LocalCluster, as_completed
    except ImportError as error:
        raise InputError(
            "parallel sweeps need dask.distributed; install the 'experiments' extra "
            "(pip install 'dalverify[experiments]') or run with --workers 1"
        ) from error
    cluster = None
    if scheduler is None:
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None)
        client = Client(cluster)
    else:
        client = Client(scheduler)
    try:
        futures = [client.submit(run_image, data, index, pure=False) for index in pending]
        for future in as_completed(futures):
            try:
                record = future.result()
            except Exception as error:  # the worker itself died
                index = pending[futures.index(future)]
                record = {"index": index, "status": "error", "error": f"{type(error).__name__}: {error}"}
            append_record(handle, record)
            bar.update(1)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def train_model(config: ExperimentConfig, *, progress: bool = True, max_seconds: float | None = None) -> Path:
    """Train the cell's small DDPM and save it to ``config.model``.

    Simulated kinds train on ``N(0, Sigma)`` images; ``elpv`` cells train on
    the standardized training normals of their split (``[train] images`` is
    then unused).
    """
    import torch

    from dalverify.diffusion.checkpoint import save_model
    from dalverify.diffusion.train import train
    from dalverify.diffusion.unet import UNet

    if config.kind == "brain" or config.model == "bundled":
        raise InputError(f"cell {config.name!r} uses the bundled brain model; there is nothing to train")
    settings = config.train
    torch.manual_seed(settings.seed)
    model = UNet(1, settings.base_width, settings.depth)
    if config.kind == "elpv":
        from dalverify.experiments import elpv

        images = elpv.training_images(config)
        data = elpv.data_of(config)
        source = (f"ELPV mono normal cells, {len(images)} training normals in 100-row blocks "
                  f"{data.split.training_blocks.tolist()} (split seed {settings.seed}), side={config.side}, "
                  f"area-averaged, standardized by mean {data.mean!r} and sd {data.sd!r}")
    else:
        images = training_images(config)
        source = f"N(0, Sigma), covariance={config.covariance}, rho={config.rho}, side={config.side}"
    result = train(model, images, steps=settings.steps, batch_size=settings.batch_size, lr=settings.lr,
                   seed=settings.seed, ema=settings.ema, progress=progress, max_seconds=max_seconds)
    trained = getattr(result, "model", None) or model
    path = Path(config.model)
    path.parent.mkdir(parents=True, exist_ok=True)
    extra = {"training": {k: getattr(settings, k) for k in settings.__dataclass_fields__},
             "data": source,
             "final_loss": float(result.final_loss)}
    save_model(path, trained, extra=extra)
    return path

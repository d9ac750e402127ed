"""Model files (``.dalv``): one zip container with safetensors weights and a JSON manifest.

Layout of the zip archive (members stored uncompressed or deflated):

- ``manifest.json``: ``{"format": "dalverify-model", "version": 1,
  "architecture": "UNet", "config": {...}, "extra": {...},
  "weights_sha256": "...", "tensors": {name: {"shape": [...], "dtype": "..."}}}``
- ``weights.safetensors``: the state dict in the safetensors format.

Loading parses JSON and safetensors only, so it never executes code from
the file (no pickle). Files are written to a temporary file in the target
folder and renamed into place, so a reader never sees a half-written file.

The same container, with format ``"dalverify-training-state"``, stores
resumable training checkpoints (:func:`write_container` /
:func:`read_container`).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import zipfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as safetensors_load
from safetensors.torch import save as safetensors_save

from dalverify.diffusion.unet import UNet, build_unet
from dalverify.graph.io import atomic_write_bytes
from dalverify.errors import GraphFileError, InputError

logger = logging.getLogger(__name__)

MODEL_FORMAT = "dalverify-model"
FORMAT_VERSION = 1
_MANIFEST = "manifest.json"
_TENSORS = "weights.safetensors"


def write_container(path: str | os.PathLike, manifest: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
    """Write ``manifest`` and ``tensors`` to one zip file, atomically.

    The manifest gains ``weights_sha256`` (of the safetensors bytes) and a
    ``tensors`` table of names, shapes and dtypes. The file is written to a
    temporary file in the same folder, flushed to disk and renamed onto ``path``.
    """
    path = Path(path)
    contiguous = {name: t.detach().cpu().contiguous() for name, t in tensors.items()}
    blob = safetensors_save(contiguous)
    manifest = dict(manifest)
    manifest["weights_sha256"] = hashlib.sha256(blob).hexdigest()
    manifest["tensors"] = {
        name: {"shape": list(t.shape), "dtype": str(t.dtype).replace("torch.", "")}
        for name, t in sorted(contiguous.items())
    }
    text = json.dumps(manifest, indent=2, sort_keys=True).encode("utf-8")

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(_MANIFEST, text)
        archive.writestr(_TENSORS, blob)
    atomic_write_bytes(path, buffer.getvalue())


def read_container(path: str | os.PathLike, expected_format: str) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Read and check a container written by :func:`write_container`.

    Checks, in order: the file exists and is a readable zip archive with
    both members (zip CRCs detect truncation and corruption); the manifest
    is JSON with the expected ``format`` and a supported ``version``; the
    sha256 of the tensor bytes equals ``weights_sha256``; the tensors parse
    and match the manifest's table of names, shapes and dtypes.

    Raises
    ------
    GraphFileError
        On any failed check; the message names the file and what is wrong.
    """
    path = Path(path)
    if not path.is_file():
        raise GraphFileError(f"model file {str(path)!r} does not exist")
    try:
        with zipfile.ZipFile(path, "r") as archive:
            names = set(archive.namelist())
            members = {name: archive.read(name) for name in (_MANIFEST, _TENSORS) if name in names}
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, ValueError) as exc:
        raise GraphFileError(
            f"{str(path)!r} is truncated or corrupt ({exc}); write the file again"
        ) from exc
    missing = sorted({_MANIFEST, _TENSORS} - set(members))
    if missing:
        raise GraphFileError(f"{str(path)!r} is not a dalverify file: member(s) {missing} are missing")
    manifest_bytes, blob = members[_MANIFEST], members[_TENSORS]

    try:
        manifest = json.loads(manifest_bytes.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise GraphFileError(f"{str(path)!r} has an unreadable manifest: {exc}") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != expected_format:
        found = manifest.get("format") if isinstance(manifest, dict) else type(manifest).__name__
        raise GraphFileError(
            f"{str(path)!r} has format {found!r}, expected {expected_format!r}"
        )
    if manifest.get("version") != FORMAT_VERSION:
        raise GraphFileError(
            f"{str(path)!r} has format version {manifest.get('version')!r}; this dalverify "
            f"reads version {FORMAT_VERSION}"
        )
    digest = hashlib.sha256(blob).hexdigest()
    if digest != manifest.get("weights_sha256"):
        raise GraphFileError(
            f"{str(path)!r}: the sha256 of the weights is {digest}, the manifest records "
            f"{manifest.get('weights_sha256')!r}; the file was altered"
        )
    try:
        tensors = dict(safetensors_load(blob))
    except Exception as exc:  # safetensors raises its own error types on malformed bytes
        raise GraphFileError(f"{str(path)!r} has unreadable weights: {exc}") from exc

    table = manifest.get("tensors")
    if not isinstance(table, dict):
        raise GraphFileError(f"{str(path)!r}: the manifest has no tensor table")
    if set(table) != set(tensors):
        raise GraphFileError(
            f"{str(path)!r}: the tensor table lists {sorted(set(table) - set(tensors))} "
            f"that are missing and omits {sorted(set(tensors) - set(table))}"
        )
    for name, tensor in tensors.items():
        entry = table[name]
        if list(tensor.shape) != entry.get("shape"):
            raise GraphFileError(
                f"{str(path)!r}: tensor {name!r} has shape {list(tensor.shape)}, "
                f"the manifest records {entry.get('shape')}"
            )
    return manifest, tensors


def save_model(
    path: str | os.PathLike,
    model: UNet,
    config: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> None:
    """Save a :class:`UNet` and its configuration as one ``.dalv`` file.

    Parameters
    ----------
    path
        Target file; written atomically (temporary file, then rename).
    model
        The network. Its weights are stored in their current dtype.
    config
        Constructor arguments of the architecture; default ``model.config()``.
        It must rebuild a network with exactly the model's tensor names and shapes.
    extra
        JSON-serialisable metadata (training settings, data description, losses).

    Raises
    ------
    InputError
        If ``config`` does not describe ``model`` or ``extra`` is not JSON-serialisable.
    """
    config = dict(model.config() if config is None else config)
    state = model.state_dict()
    reference = build_unet(config).state_dict()
    _compare_state(reference, state, lambda msg: InputError(f"config does not describe the model: {msg}"))
    try:
        json.dumps(extra or {})
    except TypeError as exc:
        raise InputError(f"extra metadata is not JSON-serialisable: {exc}") from exc
    manifest = {
        "format": MODEL_FORMAT,
        "version": FORMAT_VERSION,
        "architecture": "UNet",
        "config": config,
        "extra": extra or {},
        "torch_version": torch.__version__,
    }
    write_container(path, manifest, state)
    logger.info("saved model to %s", path)


def load_model(
    path: str | os.PathLike,
    *,
    dtype: torch.dtype = torch.float64,
    expected_config: dict[str, Any] | None = None,
) -> tuple[UNet, dict[str, Any]]:
    """Load a ``.dalv`` model file without executing code from it.

    Parameters
    ----------
    path
        File written by :func:`save_model`.
    dtype
        Dtype of the returned network (default float64, the exact path).
    expected_config
        If given, the stored configuration must equal it key by key.

    Returns
    -------
    (UNet, dict)
        The network in eval mode and the manifest (``config``, ``extra``,
        ``weights_sha256``, ...).

    Raises
    ------
    GraphFileError
        If the file is missing, truncated, corrupt or altered, describes
        another architecture, or its tensors do not match the architecture
        (missing, extra or wrongly shaped tensors); the message names the
        file and each mismatch.
    """
    manifest, tensors = read_container(path, MODEL_FORMAT)
    where = repr(str(path))
    if manifest.get("architecture") != "UNet":
        raise GraphFileError(f"{where} contains architecture {manifest.get('architecture')!r}, not 'UNet'")
    config = manifest.get("config")
    if not isinstance(config, dict):
        raise GraphFileError(f"{where} has no architecture configuration")
    if expected_config is not None:
        diffs = [
            f"{key}: file {config.get(key)!r}, expected {expected_config.get(key)!r}"
            for key in sorted(set(config) | set(expected_config))
            if config.get(key) != expected_config.get(key)
        ]
        if diffs:
            raise GraphFileError(f"{where} contains another architecture: " + "; ".join(diffs))
    try:
        model = build_unet(config)
    except (InputError, TypeError) as exc:
        raise GraphFileError(f"{where} has an invalid configuration {config}: {exc}") from exc
    _compare_state(model.state_dict(), tensors, lambda msg: GraphFileError(f"{where}: {msg}"))
    model.load_state_dict(tensors)
    return model.to(dtype).eval(), manifest


def _compare_state(reference: dict[str, torch.Tensor], state: dict[str, torch.Tensor], error) -> None:
    """Raise ``error(message)`` listing missing, extra and wrongly shaped tensors."""
    missing = sorted(set(reference) - set(state))
    extra = sorted(set(state) - set(reference))
    shapes = [
        f"{name} has shape {list(state[name].shape)}, expected {list(reference[name].shape)}"
        for name in sorted(set(reference) & set(state))
        if state[name].shape != reference[name].shape
    ]
    problems = []
    if missing:
        problems.append(f"missing tensors {missing}")
    if extra:
        problems.append(f"unexpected tensors {extra}")
    problems.extend(shapes)
    if problems:
        raise error("; ".join(problems))


def model_bytes_sha256(path: str | os.PathLike) -> str:
    """Return the sha256 of a model file's bytes (for citing the file in reports)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


"""Saving and loading graphs, and their content digest.

File format (``.dalg``): a numpy ``.npz`` archive (a zip file) that holds
one float64 array per parameter, named ``n<id>.<param>``, and a JSON
manifest stored as the uint8 array ``manifest``. The manifest lists every
node (kind, inputs, shape, attributes, name, parameter names), the output
id, the graph metadata, the format version, the graph digest and one digest
per node. Loading uses ``allow_pickle=False``, so no code is executed.

The digest is sha256 over a canonical JSON of kinds, wiring, shapes,
attributes and metadata, followed by the name, shape and exact little-endian
bytes of every parameter in node order. Names of nodes are not covered.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from dalverify.errors import GraphFileError
from dalverify.graph.ir import Graph, Node

FORMAT = "dalverify-graph"
FORMAT_VERSION = 1


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return value


def _node_structure(node: Node) -> dict[str, Any]:
    return {
        "id": node.id,
        "kind": node.kind,
        "inputs": list(node.inputs),
        "shape": list(node.shape),
        "attrs": {k: _jsonable(node.attrs[k]) for k in sorted(node.attrs)},
        "params": sorted(node.params),
    }


def _update_with_params(hasher: "hashlib._Hash", node: Node) -> None:
    for name in sorted(node.params):
        array = np.ascontiguousarray(node.params[name], dtype="<f8")
        hasher.update(f"{node.id}.{name}:{list(array.shape)}".encode())
        hasher.update(array.tobytes())


def node_digest(node: Node) -> str:
    """sha256 of one node's structure and parameter bytes."""
    hasher = hashlib.sha256(json.dumps(_node_structure(node), sort_keys=True).encode())
    _update_with_params(hasher, node)
    return hasher.hexdigest()


def graph_digest(graph: Graph) -> str:
    """sha256 over the structure, metadata and exact parameter bytes of ``graph``."""
    structure = {
        "format": FORMAT,
        "nodes": [_node_structure(node) for node in graph.nodes],
        "output": graph.output,
        "metadata": _jsonable(dict(graph.metadata)),
    }
    hasher = hashlib.sha256(json.dumps(structure, sort_keys=True).encode())
    for node in graph.nodes:
        _update_with_params(hasher, node)
    return hasher.hexdigest()


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path``, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        # mkstemp creates the file with mode 0600; give it the usual mode under the umask.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise


def graph_to_bytes(graph: Graph) -> bytes:
    """Serialize ``graph`` to the ``.dalg`` format in memory."""
    manifest = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "output": graph.output,
        "metadata": _jsonable(dict(graph.metadata)),
        "nodes": [dict(_node_structure(node), name=node.name) for node in graph.nodes],
        "node_digests": [node_digest(node) for node in graph.nodes],
        "digest": graph_digest(graph),
    }
    arrays = {f"n{node.id}.{name}": np.asarray(value, dtype="<f8") for node in graph.nodes for name, value in node.params.items()}
    arrays["manifest"] = np.frombuffer(json.dumps(manifest, sort_keys=True).encode(), dtype=np.uint8)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def save_graph(graph: Graph, path: str | os.PathLike) -> str:
    """Write ``graph`` to ``path`` atomically and return its digest."""
    atomic_write_bytes(path, graph_to_bytes(graph))
    return graph_digest(graph)


def _attrs_from_json(attrs: dict[str, Any]) -> dict[str, Any]:
    return {k: tuple(v) if isinstance(v, list) else v for k, v in attrs.items()}


def load_graph(path: str | os.PathLike, *, expected_digest: str | None = None) -> Graph:
    """Read a ``.dalg`` file, recompute its digest and return the graph.

    Raises
    ------
    GraphFileError
        If the file is missing, is not a valid archive (for example
        truncated), lacks a parameter, or if a recomputed digest differs
        from the stored one or from ``expected_digest``. The message names
        the file and the first node whose content does not match.
    """
    path = Path(path)
    if not path.is_file():
        raise GraphFileError(f"graph file {str(path)!r} not found; export one with 'dalverify export'")
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as error:
        raise GraphFileError(f"graph file {str(path)!r} is corrupt or truncated ({error}); re-export it") from error
    if "manifest" not in arrays:
        raise GraphFileError(f"graph file {str(path)!r} has no manifest; it is not a dalverify graph")
    try:
        manifest = json.loads(arrays.pop("manifest").tobytes().decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise GraphFileError(f"graph file {str(path)!r} has an unreadable manifest ({error})") from error
    if manifest.get("format") != FORMAT or manifest.get("version") != FORMAT_VERSION:
        raise GraphFileError(
            f"graph file {str(path)!r} has format {manifest.get('format')!r} version "
            f"{manifest.get('version')!r}; this dalverify reads {FORMAT!r} version {FORMAT_VERSION}"
        )

    nodes = []
    for entry in manifest["nodes"]:
        params = {}
        for name in entry["params"]:
            key = f"n{entry['id']}.{name}"
            if key not in arrays:
                raise GraphFileError(f"graph file {str(path)!r} lacks parameter {key!r}")
            params[name] = arrays[key]
        nodes.append(
            Node(entry["id"], entry["kind"], tuple(entry["inputs"]), tuple(entry["shape"]),
                 _attrs_from_json(entry["attrs"]), params, entry.get("name", ""))
        )
    graph = Graph(tuple(nodes), manifest["output"], manifest.get("metadata", {}))

    digest = graph_digest(graph)
    if digest != manifest.get("digest"):
        stored = manifest.get("node_digests", [])
        changed = [n.id for n, d in zip(graph.nodes, stored) if node_digest(n) != d]
        where = f"node {changed[0]} ({graph.nodes[changed[0]].kind} {graph.nodes[changed[0]].name})" if changed else "the graph structure or metadata"
        raise GraphFileError(
            f"graph file {str(path)!r} was altered: its content digest {digest[:16]}... does not "
            f"match the stored digest {str(manifest.get('digest'))[:16]}...; first mismatch in {where}"
        )
    if expected_digest is not None and digest != expected_digest:
        raise GraphFileError(
            f"graph file {str(path)!r} has digest {digest}, but {expected_digest} was expected"
        )
    return graph

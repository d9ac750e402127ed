"""Import the checking scripts of ``proofs/`` as modules, for the tests that run them."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

PROOFS = Path(__file__).resolve().parents[2] / "proofs"


def load_proof_script(name: str) -> ModuleType:
    """Load ``proofs/<name>.py`` as a fresh module."""
    spec = importlib.util.spec_from_file_location(name, PROOFS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module

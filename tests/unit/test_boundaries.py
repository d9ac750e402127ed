"""Import boundaries: the exact path and the verifier never import torch."""

from __future__ import annotations

import subprocess
import sys

import pytest

#: Python code that makes every later "import torch" fail, without putting a
#: placeholder into sys.modules (scipy inspects sys.modules["torch"]).
BLOCK_TORCH = (
    "import sys\n"
    "class _BlockTorch:\n"
    "    def find_spec(self, name, path=None, target=None):\n"
    "        if name == 'torch' or name.startswith('torch.'):\n"
    "            raise ImportError('torch is blocked in this test')\n"
    "sys.meta_path.insert(0, _BlockTorch())\n"
)

TORCH_FREE = [
    "dalverify.graph",
    "dalverify.graph.io",
    "dalverify.graph.reference",
    "dalverify.line",
    "dalverify.line.walk",
    "dalverify.numerics",
    "dalverify.selection",
    "dalverify.methods.pvalues",
    "dalverify.methods.covariance",
    "dalverify.methods.statistic",
    "dalverify.methods.dal_test",
]


@pytest.mark.parametrize("module", TORCH_FREE)
def test_module_imports_without_torch(module):
    code = BLOCK_TORCH + f"import {module}\nassert 'torch' not in sys.modules\nprint('ok')"
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip() == "ok"


def test_walk_runs_without_torch():
    code = BLOCK_TORCH + (
        "import numpy as np\n"
        "from dalverify.graph import GraphBuilder\n"
        "from dalverify.line import walk_line\n"
        "from dalverify.line.walk import make_backend\n"
        "b = GraphBuilder((1,)); g = b.build(b.relu(b.dense(0, np.array([[1.0], [-1.0]]), np.array([0.0, 1.0]))))\n"
        "p = walk_line(g, np.array([0.0]), np.array([1.0]))\n"
        "q = walk_line(g, np.array([0.0]), np.array([1.0]), backend='numpy')\n"
        "print(p.backend, q.backend, make_backend(g, np.zeros(1), np.ones(1)).name, [float(v) for v in p.ends()])\n"
    )
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip() == "layer numpy numpy [-inf, 0.0, 1.0, inf]"

"""End-to-end tests of the command-line interface."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from dalverify.cli import EXIT_BAD_INPUT, EXIT_NO_REGION, EXIT_OK, main
from dalverify.graph import GraphBuilder, save_graph

SIZE = 8


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A tiny conv reconstruction graph and an image pair with one bright spot."""
    folder = tmp_path_factory.mktemp("cli")
    rng = np.random.default_rng(4)
    builder = GraphBuilder((1, SIZE, SIZE))
    hidden = builder.relu(builder.conv2d(0, rng.normal(size=(3, 1, 3, 3)) / 3, rng.normal(size=3) / 4, padding=1))
    out = builder.conv2d(hidden, rng.normal(size=(1, 3, 3, 3)) / 4, padding=1)
    graph_path = folder / "tiny.dalg"
    save_graph(builder.build(out), graph_path)
    image = rng.normal(size=(1, SIZE, SIZE))
    image[0, 3:5, 3:5] += 4.0
    reference = rng.normal(size=(1, SIZE, SIZE))
    np.save(folder / "x.npy", image)
    np.save(folder / "ref.npy", reference)
    return folder, graph_path


def run_test(files, out, *extra):
    folder, graph = files
    return main(["test", str(folder / "x.npy"), "--reference", str(folder / "ref.npy"), "--model", str(graph),
                 "--threshold", "1.0", "--sigma", "1.0", "--out", str(out), "--quiet", *extra])


def test_test_command_writes_outputs(files, tmp_path):
    assert run_test(files, tmp_path / "out") == EXIT_OK
    result = json.loads((tmp_path / "out" / "result.json").read_text())
    assert result["status"] == "ok"
    assert result["region_size"] > 0
    for name in ("selective", "overconditioned", "naive", "bonferroni"):
        value = float(result["pvalues"][name]["value"])
        assert 0.0 < value <= 1.0, name
    assert (tmp_path / "out" / "report.png").stat().st_size > 1000
    assert not list((tmp_path / "out").glob("*.tmp"))


def test_certificate_verifies(files, tmp_path):
    certificate = tmp_path / "out" / "cert.json"
    assert run_test(files, tmp_path / "out", "--certificate", str(certificate)) == EXIT_OK
    assert main(["verify", str(certificate), "--quiet"]) == EXIT_OK


def test_no_region_exit_code(files, tmp_path):
    folder, graph = files
    code = main(["test", str(folder / "x.npy"), "--reference", str(folder / "ref.npy"), "--model", str(graph),
                 "--threshold", "1000", "--sigma", "1.0", "--out", str(tmp_path / "out"), "--quiet"])
    assert code == EXIT_NO_REGION
    assert json.loads((tmp_path / "out" / "result.json").read_text())["status"] == "no_region"


def _bad(folder, name, array):
    path = folder / name
    np.save(path, array)
    return path


@pytest.mark.parametrize("case", ["nan", "reference_shape", "channels", "mask_shape", "mask_empty",
                                  "missing_model", "corrupt_model", "threshold"])
def test_bad_input_exit_code_and_no_output(files, tmp_path, case, capsys):
    folder, graph = files
    image, reference = folder / "x.npy", folder / "ref.npy"
    extra: list[str] = []
    model = str(graph)
    threshold = "1.0"
    if case == "nan":
        broken = np.load(image)
        broken[0, 2, 2] = np.nan
        image = _bad(tmp_path, "nan.npy", broken)
    elif case == "reference_shape":
        reference = _bad(tmp_path, "small.npy", np.zeros((1, SIZE - 2, SIZE - 2)))
    elif case == "channels":
        image = _bad(tmp_path, "rgb.npy", np.zeros((3, SIZE, SIZE)))
        reference = _bad(tmp_path, "rgb_ref.npy", np.zeros((3, SIZE, SIZE)))
    elif case == "mask_shape":
        extra = ["--mask", str(_bad(tmp_path, "mask.npy", np.ones((SIZE + 1, SIZE + 1))))]
    elif case == "mask_empty":
        extra = ["--mask", str(_bad(tmp_path, "mask.npy", np.zeros((SIZE, SIZE))))]
    elif case == "missing_model":
        model = str(tmp_path / "absent.dalg")
    elif case == "corrupt_model":
        corrupt = tmp_path / "corrupt.dalg"
        corrupt.write_bytes(graph.read_bytes()[:-100])
        model = str(corrupt)
    elif case == "threshold":
        threshold = "-1"

    out = tmp_path / "out"
    code = main(["test", str(image), "--reference", str(reference), "--model", model, "--threshold", threshold,
                 "--sigma", "1.0", "--out", str(out), "--quiet", *extra])

    assert code == EXIT_BAD_INPUT
    message = capsys.readouterr().err
    assert message.startswith("dalverify: error:")
    assert not (out / "result.json").exists()
    assert not (out / "report.png").exists()


def test_export_command_writes_loadable_graph(tmp_path):
    from dalverify.graph import load_graph

    path = tmp_path / "brain.dalg"
    assert main(["export", "--out", str(path), "--quiet"]) == EXIT_OK
    graph = load_graph(path)
    assert graph.input_shape == (1, 64, 64)
    assert graph.metadata["t_start"] == 300


def test_demo_end_to_end(tmp_path):
    # The README's main command, through a real process.
    out = tmp_path / "demo"
    completed = subprocess.run([sys.executable, "-m", "dalverify.cli", "demo", "--out", str(out), "--json"],
                               capture_output=True, text=True, timeout=600)
    assert completed.returncode == EXIT_OK, completed.stderr
    cases = json.loads((out / "result.json").read_text())["cases"]
    assert set(cases) == {"normal", "lesion"}
    assert cases["lesion"]["inserted_lesion_pixels"] > 0
    for case in cases.values():
        assert case["status"] == "ok"
        assert case["region_size"] > 0
        for name in ("selective", "overconditioned", "naive", "bonferroni"):
            assert 0.0 < float(case["pvalues"][name]["value"]) <= 1.0
        assert case["certificate"].endswith(".certificate.json")
    assert (out / "report_lesion.png").is_file()
    assert (out / "report_normal.png").is_file()

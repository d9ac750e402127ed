"""DDIM reconstruction D(x): coefficients, noise handling, tracing and piecewise linearity."""

from __future__ import annotations

import math
import operator

import mpmath
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dalverify.diffusion.reconstruction import Reconstruction
from dalverify.diffusion.schedule import tau_sequence
from dalverify.diffusion.unet import UNet
from dalverify.errors import InputError
from dalverify.tolerances import EVALUATOR_ATOL_SCALE, EVALUATOR_RTOL


def mp_alpha_bar(dps=50):
    """abar_t, t = 0..1000, from exact decimal betas at ``dps`` digits."""
    with mpmath.workdps(dps):
        start, end = mpmath.mpf("1e-4"), mpmath.mpf("2e-2")
        step = (end - start) / 999
        values = [mpmath.mpf(1)]
        for t in range(1, 1001):
            values.append(values[-1] * (1 - (start + (t - 1) * step)))
    return values


ABAR_MP = mp_alpha_bar()


def tiny_unet(seed=0, **kwargs) -> UNet:
    torch.manual_seed(seed)
    options = {"channels": 1, "base_width": 2, "depth": 1}
    options.update(kwargs)
    model = UNet(**options)
    with torch.no_grad():
        for module in model.modules():
            if hasattr(module, "time_bias"):
                module.time_bias.normal_(std=0.3)
    return model


def textbook_ddim(model, x, noise, taus, eta):
    """D(x) in the textbook form (f, then x_s), with abar from mpmath."""
    abar = [float(v) for v in ABAR_MP]
    t_start = taus[-1]
    x_t = math.sqrt(abar[t_start]) * x + math.sqrt(1 - abar[t_start]) * noise[0]
    for i in range(len(taus) - 1, 0, -1):
        t, s = taus[i], taus[i - 1]
        eps = model(x_t, t)
        f = (x_t - math.sqrt(1 - abar[t]) * eps) / math.sqrt(abar[t])
        sigma = eta * math.sqrt((1 - abar[s]) / (1 - abar[t])) * math.sqrt(1 - abar[t] / abar[s])
        x_t = math.sqrt(abar[s]) * f + math.sqrt(1 - abar[s] - sigma**2) * eps + sigma * noise[i]
    return x_t


@pytest.mark.parametrize(("t_start", "steps", "eta"), [(460, 5, 1.0), (300, 4, 0.0), (300, 8, 0.5)])
def test_coefficients_match_mpmath(t_start, steps, eta):
    recon = Reconstruction(tiny_unet(), t_start, steps, eta, 0, (1, 8, 8))
    taus = tau_sequence(t_start, steps)
    plan = recon.step_coefficients()
    assert [p["t"] for p in plan] == taus[:0:-1]
    with mpmath.workdps(50):
        eta_mp = mpmath.mpf(eta)
        for p in plan:
            a_t, a_s = ABAR_MP[p["t"]], ABAR_MP[p["s"]]
            sigma = eta_mp * mpmath.sqrt((1 - a_s) / (1 - a_t)) * mpmath.sqrt(1 - a_t / a_s)
            c1 = mpmath.sqrt(a_s) / mpmath.sqrt(a_t)
            c2 = mpmath.sqrt(1 - a_s - sigma**2) - mpmath.sqrt(a_s) * mpmath.sqrt(1 - a_t) / mpmath.sqrt(a_t)
            assert p["c1"] == pytest.approx(float(c1), rel=1e-12)
            assert p["c2"] == pytest.approx(float(c2), rel=1e-12)
            assert p["sigma"] == pytest.approx(float(sigma), rel=1e-12, abs=0.0)


def test_last_step_has_zero_sigma():
    plan = Reconstruction(tiny_unet(), 460, 5, 1.0, 0, (1, 8, 8)).step_coefficients()
    assert plan[-1]["s"] == 0
    assert plan[-1]["sigma"] == 0.0
    assert all(p["sigma"] > 0.0 for p in plan[:-1])


@pytest.mark.parametrize("eta", [0.0, 1.0, 0.3])
def test_forward_matches_textbook_form(eta):
    recon = Reconstruction(tiny_unet(), 300, 5, eta, 4, (1, 8, 8))
    x = torch.randn(3, 1, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = textbook_ddim(recon.model, x, recon.noise, recon.taus, eta)
        got = recon(x)
    assert got.dtype == torch.float64
    np.testing.assert_allclose(got.numpy(), expected.numpy(), rtol=1e-10, atol=1e-12)


def test_noise_buffer_shape_and_seed():
    recon = Reconstruction(tiny_unet(), 460, 5, 1.0, 7, (1, 8, 16))
    assert recon.noise.shape == (6, 1, 8, 16)
    assert recon.noise.dtype == torch.float64
    assert "noise" in dict(recon.named_buffers())
    direct = torch.randn((6, 1, 8, 16), generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    assert torch.equal(recon.noise, direct)


def test_eta_one_reproducible_across_constructions():
    x = torch.randn(2, 1, 8, 8, dtype=torch.float64)
    first = Reconstruction(tiny_unet(), 460, 5, 1.0, 3, (1, 8, 8))
    second = Reconstruction(tiny_unet(), 460, 5, 1.0, 3, (1, 8, 8))
    with torch.no_grad():
        assert torch.equal(first(x), second(x))


def test_different_seeds_differ():
    x = torch.randn(2, 1, 8, 8, dtype=torch.float64)
    with torch.no_grad():
        a = Reconstruction(tiny_unet(), 460, 5, 1.0, 3, (1, 8, 8))(x)
        b = Reconstruction(tiny_unet(), 460, 5, 1.0, 4, (1, 8, 8))(x)
    assert not torch.allclose(a, b)


def test_eta_zero_ignores_step_noise():
    # With eta = 0 every sigma is 0, so only e_0 (the initial noising) matters.
    x = torch.randn(2, 1, 8, 8, dtype=torch.float64)
    recon = Reconstruction(tiny_unet(), 300, 5, 0.0, 3, (1, 8, 8))
    with torch.no_grad():
        before = recon(x)
        recon.noise[1:] = torch.randn_like(recon.noise[1:])
        assert torch.equal(recon(x), before)
        recon.noise[0] = torch.randn_like(recon.noise[0])
        assert not torch.allclose(recon(x), before)


def test_eta_one_uses_step_noise_except_last():
    # e_i belongs to the step leaving tau_i; the step leaving tau_1 has sigma = 0.
    x = torch.randn(2, 1, 8, 8, dtype=torch.float64)
    recon = Reconstruction(tiny_unet(), 300, 5, 1.0, 3, (1, 8, 8))
    with torch.no_grad():
        before = recon(x)
        recon.noise[1] = torch.randn_like(recon.noise[1])
        assert torch.equal(recon(x), before)
        for index in range(2, 6):
            recon.noise[index] = torch.randn_like(recon.noise[index])
            changed = recon(x)
            assert not torch.allclose(changed, before)
            before = changed


def test_caller_model_unchanged():
    model = tiny_unet()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    Reconstruction(model, 460, 5, 1.0, 0, (1, 8, 8))
    assert next(model.parameters()).dtype == torch.float32
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


def test_fx_trace_unrolls_steps():
    recon = Reconstruction(tiny_unet(), 460, 5, 1.0, 0, (1, 8, 8))
    traced = torch.fx.symbolic_trace(recon)
    functions = {n.target for n in traced.graph.nodes if n.op == "call_function"}
    assert functions <= {torch.cat, operator.add, operator.mul, operator.getitem}
    modules = [n for n in traced.graph.nodes if n.op == "call_module"]
    # 5 steps x (2 convs per block x 3 blocks + pool + up + head) module calls.
    assert len(modules) == 5 * (6 + 3 + 3 + 1 + 1 + 1)
    x = torch.randn(2, 1, 8, 8, dtype=torch.float64)
    with torch.no_grad():
        assert torch.equal(traced(x), recon(x))


def _activation_keys(recon: Reconstruction, x: torch.Tensor) -> list[bytes]:
    """Per sample, the signs of every ReLU output and the argmax of every max-pool window."""
    records: list[np.ndarray] = []

    def relu_hook(_module, _inputs, output):
        records.append((output > 0).reshape(output.shape[0], -1).numpy())

    def pool_hook(module, inputs, _output):
        _, index = F.max_pool2d(inputs[0], module.kernel_size, return_indices=True)
        records.append(index.reshape(index.shape[0], -1).numpy())

    handles = []
    for module in recon.modules():
        if isinstance(module, nn.ReLU):
            handles.append(module.register_forward_hook(relu_hook))
        elif isinstance(module, nn.MaxPool2d):
            handles.append(module.register_forward_hook(pool_hook))
    try:
        with torch.no_grad():
            recon(x)
    finally:
        for handle in handles:
            handle.remove()
    stacked = np.concatenate([r.astype(np.int64) for r in records], axis=1)
    return [row.tobytes() for row in stacked]


def test_reconstruction_piecewise_linear_along_line():
    recon = Reconstruction(tiny_unet(seed=2), 300, 5, 1.0, 0, (1, 8, 8))
    generator = torch.Generator().manual_seed(5)
    start = torch.randn(1, 1, 8, 8, dtype=torch.float64, generator=generator)
    direction = torch.randn(1, 1, 8, 8, dtype=torch.float64, generator=generator)
    z = torch.linspace(-4.0, 4.0, 4001, dtype=torch.float64)
    points = start + z[:, None, None, None] * direction
    with torch.no_grad():
        values = recon(points).reshape(len(z), -1).numpy()
    keys = _activation_keys(recon, points)

    # On a piece (same pattern at three consecutive grid points) D is affine, so the
    # second finite difference vanishes up to float64 rounding.
    second = values[2:] - 2.0 * values[1:-1] + values[:-2]
    scale = 1.0 + np.max(np.abs(values))
    same = np.array([keys[j - 1] == keys[j] == keys[j + 1] for j in range(1, len(z) - 1)])
    assert same.sum() > 1000
    assert np.max(np.abs(second[same])) < 1e-10 * scale
    # Across kinks the slope changes: the check above would catch a smooth part.
    assert (~same).sum() > 5
    assert np.max(np.abs(second[~same])) > 1e-6


def test_settings_contents():
    recon = Reconstruction(tiny_unet(), 300, 5, 1.0, 9, (1, 8, 8))
    settings = recon.settings()
    assert settings["t_start"] == 300
    assert settings["steps"] == 5
    assert settings["eta"] == 1.0
    assert settings["seed"] == 9
    assert settings["taus"] == [0, 60, 120, 180, 240, 300]
    assert settings["schedule"] == {
        "name": "linear", "num_steps": 1000, "beta_start": 1e-4, "beta_end": 2e-2
    }
    other = Reconstruction(tiny_unet(), 300, 5, 1.0, 10, (1, 8, 8)).settings()
    assert other["noise_sha256"] != settings["noise_sha256"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"eta": 1.5}, "eta"),
        ({"eta": -0.1}, "eta"),
        ({"steps": 500, "t_start": 300}, "steps"),
        ({"t_start": 1001}, "t_start"),
        ({"image_shape": (1, 9, 12)}, "divisible"),
        ({"image_shape": (3, 8, 8)}, "channel"),
        ({"seed": -1}, "seed"),
    ],
)
def test_rejects_bad_settings(kwargs, message):
    options = {"t_start": 460, "steps": 5, "eta": 1.0, "seed": 0, "image_shape": (1, 8, 8)}
    options.update(kwargs)
    with pytest.raises(InputError, match=message):
        Reconstruction(tiny_unet(), **options)


def test_rejects_model_schedule_mismatch():
    with pytest.raises(InputError, match="T=50"):
        Reconstruction(tiny_unet(num_steps=50), 30, 5, 1.0, 0, (1, 8, 8))


@pytest.mark.parametrize(
    "options",
    [
        {"base_width": 2, "depth": 2},
        {"base_width": 2, "depth": 2, "pool": "avg", "upsample": "bilinear"},
        {"base_width": 2, "depth": 1, "upsample": "nearest", "channels": 3},
    ],
)
def test_export_matches_torch(options):
    try:
        from dalverify.export import export
        from dalverify.graph import evaluate
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.startswith("dalverify"):
            pytest.skip(f"{exc.name} is not available")
        raise
    channels = options.get("channels", 1)
    recon = Reconstruction(tiny_unet(**options), 300, 5, 1.0, 0, (channels, 16, 16))
    graph = export(recon, torch.zeros(1, channels, 16, 16, dtype=torch.float64))
    x = torch.randn(3, channels, 16, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected = recon(x).numpy()
    got = evaluate(graph, x.numpy())
    assert got.shape == expected.shape
    atol = EVALUATOR_ATOL_SCALE * float(np.max(np.abs(expected)))
    np.testing.assert_allclose(got, expected, rtol=EVALUATOR_RTOL, atol=atol)

"""The piecewise-linear U-Net: shapes, parts, input checks and how the timestep enters."""

from __future__ import annotations

import operator

import pytest
import torch
from torch import nn

from dalverify.diffusion.unet import UNet, build_unet
from dalverify.errors import InputError

ALLOWED_LEAVES = (nn.Conv2d, nn.ConvTranspose2d, nn.ReLU, nn.MaxPool2d, nn.AvgPool2d, nn.Upsample)


def small_unet(**kwargs) -> UNet:
    torch.manual_seed(0)
    options = {"channels": 1, "base_width": 2, "depth": 2, "num_steps": 20}
    options.update(kwargs)
    model = UNet(**options).double()
    with torch.no_grad():
        for block in model.modules():
            if hasattr(block, "time_bias"):
                block.time_bias.normal_()
    return model


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("depth", [1, 2, 3, 4])
def test_output_shape_equals_input(channels, depth):
    model = small_unet(channels=channels, depth=depth)
    x = torch.randn(2, channels, 16, 32, dtype=torch.float64)
    assert model(x, 5).shape == x.shape


@pytest.mark.parametrize("pool", ["max", "avg"])
@pytest.mark.parametrize("upsample", ["transpose", "nearest", "bilinear"])
def test_variants_run(pool, upsample):
    model = small_unet(pool=pool, upsample=upsample)
    x = torch.randn(1, 1, 8, 8, dtype=torch.float64)
    assert model(x, 3).shape == x.shape
    pool_type = nn.MaxPool2d if pool == "max" else nn.AvgPool2d
    assert any(isinstance(m, pool_type) for m in model.modules())


def test_only_piecewise_linear_parts():
    for upsample in ("transpose", "nearest", "bilinear"):
        model = UNet(3, 4, 3, upsample=upsample, pool="avg")
        for name, module in model.named_modules():
            if len(list(module.children())) == 0:
                assert isinstance(module, ALLOWED_LEAVES), f"{name} is a {type(module).__name__}"


def test_skip_connection_count():
    model = UNet(1, 4, 3)
    assert len(model.down_blocks) == 3
    assert len(model.up_blocks) == 3
    # Decoder block l takes its upsampled input concatenated with the skip of level l.
    assert [b.conv1.in_channels for b in model.up_blocks] == [16 + 16, 8 + 8, 4 + 4]


def test_timestep_enters_only_through_its_table_row():
    model = small_unet()
    x = torch.randn(2, 1, 8, 8, dtype=torch.float64)
    before_3, before_7 = model(x, 3), model(x, 7)
    with torch.no_grad():
        for block in model.modules():
            if hasattr(block, "time_bias"):
                block.time_bias[7] += 1.0
    assert torch.equal(model(x, 3), before_3)
    assert not torch.equal(model(x, 7), before_7)
    with torch.no_grad():
        for block in model.modules():
            if hasattr(block, "time_bias"):
                block.time_bias.zero_()
    assert torch.equal(model(x, 3), model(x, 7))


def test_tensor_timesteps_match_int_timesteps():
    model = small_unet()
    x = torch.randn(2, 1, 8, 8, dtype=torch.float64)
    batched = model(x, torch.tensor([3, 11]))
    assert torch.equal(batched[0:1], model(x[0:1], 3))
    assert torch.equal(batched[1:2], model(x[1:2], 11))


class _Wrapper(nn.Module):
    def __init__(self, net: UNet, t: int) -> None:
        super().__init__()
        self.net, self.t = net, t

    def forward(self, x):
        return self.net(x, self.t)


def test_fx_trace_uses_constant_timestep():
    model = small_unet()
    traced = torch.fx.symbolic_trace(_Wrapper(model, 9))
    functions = {node.target for node in traced.graph.nodes if node.op == "call_function"}
    assert functions <= {torch.cat, operator.add, operator.getitem}
    getitems = [n for n in traced.graph.nodes if n.target is operator.getitem]
    assert getitems and all(n.args[1] == 9 for n in getitems)
    x = torch.randn(3, 1, 8, 8, dtype=torch.float64)
    assert torch.equal(traced(x), model(x, 9))


def test_config_round_trip():
    model = UNet(3, 4, 2, pool="avg", upsample="bilinear", num_steps=50)
    rebuilt = build_unet(model.config())
    assert rebuilt.config() == model.config()
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {
        k: v.shape for k, v in model.state_dict().items()
    }


@pytest.mark.parametrize(
    "kwargs",
    [
        {"channels": 2},
        {"depth": 0},
        {"depth": 5},
        {"base_width": 0},
        {"pool": "lp"},
        {"upsample": "bicubic"},
        {"depth": 2.0},
    ],
)
def test_constructor_rejects_bad_options(kwargs):
    with pytest.raises(InputError):
        UNet(**kwargs)


def test_build_unet_rejects_unknown_key():
    with pytest.raises(InputError, match="unknown"):
        build_unet({"channels": 1, "activation": "silu"})


@pytest.mark.parametrize(
    ("shape", "message"),
    [
        ((1, 12, 16), "divisible"),
        ((1, 4, 8), "outside"),
        ((1, 256, 256), "outside"),
        ((3, 16, 16), "channel"),
        ((16, 16), "shape"),
    ],
)
def test_check_image_shape_rejects(shape, message):
    model = UNet(1, 4, 3)
    with pytest.raises(InputError, match=message):
        model.check_image_shape(shape)


def test_check_image_shape_accepts_limits():
    assert UNet(1, 4, 3).check_image_shape((1, 8, 128)) == (1, 8, 128)
    assert UNet(3, 4, 4).check_image_shape((2, 3, 16, 128)) == (3, 16, 128)


def test_forward_rejects_timestep_out_of_range():
    model = small_unet()
    x = torch.zeros(1, 1, 8, 8, dtype=torch.float64)
    with pytest.raises(InputError, match="timestep"):
        model(x, 21)
    with pytest.raises(InputError, match="timestep"):
        model(x, -1)

"""Model files (.dalv): round trip, rejection of damaged or mismatched files, resumable training."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest
import torch

from dalverify.diffusion.checkpoint import MODEL_FORMAT, load_model, save_model, write_container
from dalverify.diffusion.train import train
from dalverify.diffusion.unet import UNet
from dalverify.errors import GraphFileError, InputError


def small_model(seed=0, **kwargs) -> UNet:
    torch.manual_seed(seed)
    options = {"channels": 1, "base_width": 2, "depth": 1, "num_steps": 20}
    options.update(kwargs)
    return UNet(**options)


@pytest.fixture
def saved(tmp_path):
    model = small_model()
    path = tmp_path / "model.dalv"
    save_model(path, model, extra={"note": "unit test", "loss": 0.25})
    return path, model


def rewrite_member(src, dst, member, new_bytes):
    with zipfile.ZipFile(src) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    members[member] = new_bytes
    with zipfile.ZipFile(dst, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)


def test_round_trip_weights_config_extra(saved):
    path, model = saved
    loaded, manifest = load_model(path)
    assert manifest["config"] == model.config()
    assert manifest["extra"] == {"note": "unit test", "loss": 0.25}
    assert manifest["format"] == MODEL_FORMAT
    for name, tensor in model.state_dict().items():
        restored = loaded.state_dict()[name]
        assert restored.dtype == torch.float64
        assert torch.equal(restored, tensor.to(torch.float64)), name
    assert not loaded.training


def test_file_holds_only_json_and_safetensors(saved):
    path, _ = saved
    with zipfile.ZipFile(path) as archive:
        assert sorted(archive.namelist()) == ["manifest.json", "weights.safetensors"]
        manifest = json.loads(archive.read("manifest.json"))
    assert len(manifest["weights_sha256"]) == 64
    assert set(manifest["tensors"]) == set(small_model().state_dict())


def test_write_leaves_no_temporary_file(saved):
    path, _ = saved
    assert [p.name for p in path.parent.iterdir()] == ["model.dalv"]


def test_missing_file(tmp_path):
    with pytest.raises(GraphFileError, match="does not exist"):
        load_model(tmp_path / "absent.dalv")


def test_truncated_file(saved, tmp_path):
    path, _ = saved
    data = path.read_bytes()
    for cut in (10, len(data) // 2, len(data) - 30):
        broken = tmp_path / f"cut{cut}.dalv"
        broken.write_bytes(data[:cut])
        with pytest.raises(GraphFileError, match=f"cut{cut}.dalv"):
            load_model(broken)


def test_flipped_byte_in_weights(saved, tmp_path):
    path, _ = saved
    with zipfile.ZipFile(path) as archive:
        blob = bytearray(archive.read("weights.safetensors"))
    blob[-5] ^= 0xFF
    altered = tmp_path / "altered.dalv"
    rewrite_member(path, altered, "weights.safetensors", bytes(blob))
    with pytest.raises(GraphFileError, match="altered"):
        load_model(altered)


def test_corrupt_archive_bytes(saved, tmp_path):
    path, _ = saved
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 8] = b"\x00" * 8
    broken = tmp_path / "corrupt.dalv"
    broken.write_bytes(bytes(data))
    with pytest.raises(GraphFileError, match="corrupt.dalv"):
        load_model(broken)


def test_not_a_model_file(tmp_path):
    junk = tmp_path / "junk.dalv"
    junk.write_text("not a zip archive")
    with pytest.raises(GraphFileError, match="truncated or corrupt"):
        load_model(junk)


def test_wrong_format_name(tmp_path):
    path = tmp_path / "other.dalv"
    write_container(path, {"format": "something-else", "version": 1}, {"w": torch.zeros(2)})
    with pytest.raises(GraphFileError, match="something-else"):
        load_model(path)


def test_missing_tensor_named(tmp_path):
    model = small_model()
    state = model.state_dict()
    dropped = "head.weight"
    state.pop(dropped)
    path = tmp_path / "missing.dalv"
    manifest = {"format": MODEL_FORMAT, "version": 1, "architecture": "UNet", "config": model.config()}
    write_container(path, manifest, state)
    with pytest.raises(GraphFileError, match=dropped):
        load_model(path)


def test_extra_tensor_named(tmp_path):
    model = small_model()
    state = dict(model.state_dict())
    state["stray.weight"] = torch.zeros(3)
    path = tmp_path / "extra.dalv"
    manifest = {"format": MODEL_FORMAT, "version": 1, "architecture": "UNet", "config": model.config()}
    write_container(path, manifest, state)
    with pytest.raises(GraphFileError, match="stray.weight"):
        load_model(path)


def test_wrong_shape_named(tmp_path):
    model = small_model()
    other = small_model(base_width=3)
    path = tmp_path / "shapes.dalv"
    # The manifest claims the width-2 architecture, the tensors are width 3.
    manifest = {"format": MODEL_FORMAT, "version": 1, "architecture": "UNet", "config": model.config()}
    write_container(path, manifest, other.state_dict())
    with pytest.raises(GraphFileError, match=r"head.weight has shape \[1, 3, 3, 3\]"):
        load_model(path)


def test_expected_config_mismatch(saved):
    path, model = saved
    expected = dict(model.config(), depth=2)
    with pytest.raises(GraphFileError, match="depth: file 1, expected 2"):
        load_model(path, expected_config=expected)


def test_invalid_config_in_file(tmp_path):
    model = small_model()
    path = tmp_path / "badconfig.dalv"
    config = dict(model.config(), depth=9)
    manifest = {"format": MODEL_FORMAT, "version": 1, "architecture": "UNet", "config": config}
    write_container(path, manifest, model.state_dict())
    with pytest.raises(GraphFileError, match="invalid configuration"):
        load_model(path)


def test_save_rejects_config_of_other_model(tmp_path):
    model = small_model()
    with pytest.raises(InputError, match="does not describe"):
        save_model(tmp_path / "x.dalv", model, config=dict(model.config(), base_width=4))
    assert not (tmp_path / "x.dalv").exists()


def test_training_resume_is_bit_identical(tmp_path):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _check_resume(tmp_path)
    finally:
        torch.set_num_threads(threads)


def _check_resume(tmp_path):
    images = np.random.default_rng(0).normal(size=(6, 1, 8, 8))
    straight = train(small_model(), images, steps=6, batch_size=3, seed=1, progress=False)

    state = tmp_path / "state.dalv"
    first = train(small_model(), images, steps=3, batch_size=3, seed=1, progress=False, checkpoint_path=state)
    assert first.step == 3
    # A fresh model with other initial weights: everything must come from the checkpoint.
    resumed = train(small_model(seed=9), images, steps=6, batch_size=3, seed=1, progress=False, checkpoint_path=state)
    assert resumed.step == 6
    assert resumed.losses == straight.losses
    for name, tensor in straight.model.state_dict().items():
        assert torch.equal(resumed.model.state_dict()[name], tensor), name


def test_training_resume_rejects_other_settings(tmp_path):
    images = np.random.default_rng(0).normal(size=(6, 1, 8, 8))
    state = tmp_path / "state.dalv"
    train(small_model(), images, steps=2, batch_size=3, seed=1, progress=False, checkpoint_path=state)
    with pytest.raises(InputError, match="settings"):
        train(small_model(), images, steps=4, batch_size=2, seed=1, progress=False, checkpoint_path=state)


def test_train_from_paths_writes_loadable_model(tmp_path):
    from dalverify.diffusion.train import train_from_paths

    images = np.random.default_rng(0).normal(size=(4, 16, 16))
    np.save(tmp_path / "normals.npy", images)
    out = tmp_path / "trained.dalv"
    result = train_from_paths(
        tmp_path / "normals.npy", 8, out, base_width=2, depth=1, steps=3, batch_size=2, progress=False
    )
    model, manifest = load_model(out)
    assert result.step == 3
    assert manifest["config"]["base_width"] == 2
    assert manifest["extra"]["training"]["num_images"] == 4
    assert manifest["extra"]["training"]["image_size"] == 8
    for name, tensor in result.model.state_dict().items():
        assert torch.equal(model.state_dict()[name], tensor.to(torch.float64)), name

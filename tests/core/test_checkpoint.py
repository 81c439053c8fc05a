"""Checkpoints: safetensors + JSON round trip, content ids, and clear errors for bad files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import vqtok
from vqtok.checkpoint import CONFIG_FILE, WEIGHTS_FILE, CheckpointError
from vqtok.models.identity import content_hash


def trained_tiny_model() -> vqtok.VQTokenizer:
    """A tiny image model after one training step, so weights and codebook moved from init."""
    torch.manual_seed(0)
    model = vqtok.create_model(
        "image-vq-f8", widths=(8, 8, 8, 8), latent_dim=8, quantizer_options={"codebook_size": 16}
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    _, losses, _ = model(torch.rand(2, 3, 24, 24) * 2 - 1)
    sum(losses.values()).backward()
    optimizer.step()
    return model.eval()


@pytest.fixture
def saved(tmp_path: Path) -> tuple[vqtok.VQTokenizer, Path]:
    model = trained_tiny_model()
    return model, vqtok.save(model, tmp_path / "ckpt")


def test_round_trip_gives_identical_outputs_and_model_id(saved) -> None:
    model, path = saved
    loaded = vqtok.load(path)
    x = torch.rand(2, 3, 21, 30) * 2 - 1
    assert loaded.model_id == model.model_id
    assert loaded.config == model.config
    assert not loaded.training
    assert torch.equal(loaded.encode(x), model.encode(x))
    with torch.no_grad():
        torch.testing.assert_close(loaded(x)[0], model(x)[0], rtol=0, atol=0)


def test_config_json_describes_the_model_for_other_tools(saved) -> None:
    model, path = saved
    record = json.loads((path / CONFIG_FILE).read_text())
    assert record["model_id"] == model.model_id
    assert record["vqtok_version"] == vqtok.__version__
    assert record["preset"] == "image-vq-f8"
    assert record["quantizer"] == "vq"
    assert record["codebook_size"] == 16
    assert record["strides"] == [8, 8]
    assert record["sample_rate"] is None and record["fps"] is None


def test_load_accepts_either_file_of_the_checkpoint(saved) -> None:
    model, path = saved
    assert vqtok.load(path / WEIGHTS_FILE).model_id == model.model_id
    assert vqtok.load(path / CONFIG_FILE).model_id == model.model_id


def test_model_id_changes_with_the_weights(saved) -> None:
    model, _ = saved
    before = model.model_id
    with torch.no_grad():
        model.decoder.layers[0].conv.bias.add_(1e-3)
    assert model.model_id != before


def test_load_never_unpickles(saved, monkeypatch) -> None:
    _, path = saved

    def refuse(*args, **kwargs):
        raise AssertionError("load must not unpickle")

    monkeypatch.setattr(torch, "load", refuse)
    monkeypatch.setattr("pickle.load", refuse)
    monkeypatch.setattr("pickle.loads", refuse)
    vqtok.load(path)


def test_missing_checkpoint_or_file_raises_checkpoint_error(saved, tmp_path: Path) -> None:
    _, path = saved
    with pytest.raises(CheckpointError, match="no checkpoint directory"):
        vqtok.load(tmp_path / "nowhere")
    (path / WEIGHTS_FILE).unlink()
    with pytest.raises(CheckpointError, match=f"{WEIGHTS_FILE} is missing"):
        vqtok.load(path)


def test_tampered_weights_raise_checkpoint_error(saved) -> None:
    _, path = saved
    data = bytearray((path / WEIGHTS_FILE).read_bytes())
    data[-3] ^= 0xFF  # a byte of tensor data: the file still parses, the hash does not match
    (path / WEIGHTS_FILE).write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="modified or come from different checkpoints"):
        vqtok.load(path)


def test_truncated_weights_raise_checkpoint_error(saved) -> None:
    _, path = saved
    data = (path / WEIGHTS_FILE).read_bytes()
    (path / WEIGHTS_FILE).write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt or unreadable weights"):
        vqtok.load(path)


def test_edited_config_raises_checkpoint_error(saved) -> None:
    _, path = saved
    record = json.loads((path / CONFIG_FILE).read_text())
    record["config"]["quantizer_options"]["beta"] = 0.5  # same shapes, different model
    (path / CONFIG_FILE).write_text(json.dumps(record))
    with pytest.raises(CheckpointError, match="modified"):
        vqtok.load(path)
    record["config"]["widths"] = [8, 8, 8, 16]
    (path / CONFIG_FILE).write_text(json.dumps(record))
    with pytest.raises(CheckpointError, match="do not fit the configured model"):
        vqtok.load(path)


def test_mismatched_pair_of_files_raises_checkpoint_error(saved, tmp_path: Path) -> None:
    _, path = saved
    other = vqtok.save(
        vqtok.create_model(
            "image-vq-f8",
            widths=(8, 8, 8, 8),
            latent_dim=8,
            quantizer_options={"codebook_size": 16},
        ),
        tmp_path / "other",
    )
    (path / WEIGHTS_FILE).write_bytes((other / WEIGHTS_FILE).read_bytes())
    with pytest.raises(CheckpointError, match="different checkpoints"):
        vqtok.load(path)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "unreadable checkpoint config"),
        ('{"format": "something-else"}', "not a vqtok tokenizer checkpoint"),
        ('{"format": "vqtok-tokenizer", "format_version": 99}', "upgrade vqtok"),
        (
            '{"format": "vqtok-tokenizer", "format_version": 1, "model_id": "x", '
            '"config": {"preset": "p"}}',
            "cannot rebuild",
        ),
    ],
)
def test_bad_config_json_raises_checkpoint_error(saved, content: str, message: str) -> None:
    _, path = saved
    (path / CONFIG_FILE).write_text(content)
    with pytest.raises(CheckpointError, match=message):
        vqtok.load(path)


def test_checkpoint_from_before_new_quantizer_options_keeps_its_id(tmp_path):
    """A checkpoint written before `center` and `rotation_trick` existed (they are absent
    from its config, which its id hashes) still loads, keeps the id its codes name, and
    re-saves under that id; a changed weight still gets a new id."""
    model = vqtok.create_model("image-vq-f8", widths=(8, 8, 8, 8))
    old = tmp_path / "old"
    vqtok.save(model, old)
    record = json.loads((old / "config.json").read_text())
    for option in ("center", "center_decay", "rotation_trick"):
        record["config"]["quantizer_options"].pop(option)
    record["model_id"] = content_hash(record["config"], model.state_dict())
    (old / "config.json").write_text(json.dumps(record))
    weights = load_file(str(old / "model.safetensors"))
    save_file(weights, str(old / "model.safetensors"),
              metadata={"format": "pt", "model_id": record["model_id"]})

    loaded = vqtok.load(old)
    assert loaded.model_id == record["model_id"] != model.model_id
    vqtok.save(loaded, tmp_path / "again")
    assert vqtok.load(tmp_path / "again").model_id == record["model_id"]
    with torch.no_grad():
        next(loaded.parameters()).add_(1.0)
    assert loaded.model_id not in (record["model_id"], model.model_id)

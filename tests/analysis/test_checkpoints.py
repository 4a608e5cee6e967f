"""Weight files: safetensors header checks, weights_only state dicts, export, strict
loading."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import zipfile

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from analysis.architectures import build_model
from analysis.checkpoints import (
    load_model,
    load_weights_into,
    read_checkpoint,
)
from analysis.errors import (
    CheckpointMismatchError,
    FileTooLargeError,
    InvalidInputError,
    UnknownArchitectureError,
    UnsafeFileError,
)

MLP = {"in_features": 4, "widths": [3], "out_features": 2}


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return build_model("mlp", MLP)


class _Payload:
    """Unpickling this opens (creates) ``path`` for writing."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def _st_file(path, header: dict, data: bytes, *, length: int | None = None) -> str:
    """A safetensors file with a hand-made header (keys may repeat in a list)."""
    raw = header if isinstance(header, str) else json.dumps(header)
    hb = raw.encode()
    n = len(hb) if length is None else length
    path.write_bytes(n.to_bytes(8, "little") + hb + data)
    return str(path)


def _entry(dtype="F32", shape=(2,), offsets=(0, 8)):
    return {"dtype": dtype, "shape": list(shape), "data_offsets": list(offsets)}


def test_safetensors_round_trip(tmp_path):
    model = _mlp()
    path = tmp_path / "m.safetensors"
    save_file(model.state_dict(), str(path), metadata={"arch": "mlp"})
    ckpt = read_checkpoint(path)
    assert ckpt.format == "safetensors" and ckpt.module is None
    assert ckpt.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert ckpt.size == path.stat().st_size
    assert ckpt.metadata == {"arch": "mlp"} and ckpt.nonfinite == {}
    assert ckpt.tensors is not None
    for k, v in model.state_dict().items():
        torch.testing.assert_close(ckpt.tensors[k], v)


@pytest.mark.parametrize(
    ("header", "data", "match"),
    [
        (
            '{"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},'
            ' "a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}',
            bytes(8),
            "duplicate key 'a'",
        ),
        ({"a": _entry(dtype="C64")}, bytes(8), "dtype 'C64' not accepted"),
        ({"a": _entry(offsets=(0, 16))}, bytes(8), "outside the data section"),
        (
            {"a": _entry(offsets=(0, 8)), "b": _entry(offsets=(4, 12))},
            bytes(12),
            "overlaps",
        ),
        ({"a": _entry(shape=(3,))}, bytes(8), "expected 12"),
        ({"a": _entry()}, bytes(12), "4 bytes after the last tensor"),
        ({"a": _entry(), "__metadata__": {"k": 1}}, bytes(8), "__metadata__"),
        ({"a": _entry(shape=(-2,))}, bytes(8), "bad shape"),
        ({"a": {"dtype": "F32", "shape": [2]}}, bytes(8), "data_offsets"),
    ],
)
def test_safetensors_header_rejections(tmp_path, header, data, match):
    path = _st_file(tmp_path / "bad.safetensors", header, data)
    with pytest.raises(InvalidInputError, match=match):
        read_checkpoint(path)


def test_safetensors_header_length_beyond_file(tmp_path):
    path = _st_file(tmp_path / "x.safetensors", {"a": _entry()}, bytes(8), length=10**6)
    with pytest.raises(InvalidInputError, match="header length 1000000"):
        read_checkpoint(path)


def test_size_cap(tmp_path):
    path = tmp_path / "m.safetensors"
    save_file({"w": torch.zeros(100)}, str(path))
    with pytest.raises(FileTooLargeError, match="limit of 100"):
        read_checkpoint(path, max_bytes=100)


def test_zip_that_unpacks_beyond_cap(tmp_path):
    path = tmp_path / "bomb.pt"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("m/data.pkl", bytes(10**6))
    assert path.stat().st_size < 100_000
    with pytest.raises(FileTooLargeError, match="unpacks"):
        read_checkpoint(path, max_archive_bytes=100_000)


def test_nonfinite_counted(tmp_path):
    path = tmp_path / "nan.safetensors"
    w = torch.tensor([1.0, float("nan"), float("inf"), -float("inf")])
    save_file({"w": w, "ok": torch.ones(2), "i": torch.arange(3)}, str(path))
    assert read_checkpoint(path).nonfinite == {"w": 3}


@pytest.mark.parametrize("nest", [None, "state_dict", "model"])
def test_state_dict_round_trip(tmp_path, nest):
    model = _mlp()
    obj = model.state_dict() if nest is None else {nest: model.state_dict(), "epoch": 3}
    path = tmp_path / "m.pth"
    torch.save(obj, path)
    ckpt = read_checkpoint(path)
    assert ckpt.format == "state_dict" and ckpt.tensors is not None
    assert ckpt.tensors.keys() == model.state_dict().keys()
    if nest:
        assert ckpt.metadata == {"nested_under": nest, "ignored_keys": "epoch"}


@pytest.mark.parametrize("stem", ["models", "code", "constants"])
def test_archive_root_named_like_a_marker(tmp_path, stem):
    path = tmp_path / f"{stem}.pt"  # torch.save names the archive's root folder so
    torch.save(_mlp().state_dict(), path)
    assert read_checkpoint(path).format == "state_dict"


def test_legacy_torch_save_format(tmp_path):
    path = tmp_path / "legacy.pt"
    torch.save(_mlp().state_dict(), path, _use_new_zipfile_serialization=False)
    assert read_checkpoint(path).format == "state_dict"


def test_non_tensor_values_refused(tmp_path):
    path = tmp_path / "m.pt"
    torch.save({"w": torch.ones(2), "lr": 0.1, "steps": [1, 2]}, path)
    with pytest.raises(InvalidInputError, match=r"'lr' \(float\).*'steps' \(list\)"):
        read_checkpoint(path)
    torch.save([torch.ones(2)], path)
    with pytest.raises(InvalidInputError, match="holds a list, not a state dict"):
        read_checkpoint(path)


def test_raw_pickle_payload_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    path.write_bytes(pickle.dumps({"w": _Payload(marker)}, protocol=2))
    with pytest.raises(UnsafeFileError, match=r"torch\.save\(model\.state_dict\(\)"):
        read_checkpoint(path)
    assert not marker.exists()
    pickle.loads(path.read_bytes())  # the oracle: unsafe loading does create it
    assert marker.exists()


@pytest.mark.parametrize("suffix", [".pt", ".safetensors", ".bin"])
def test_torch_save_payload_never_runs(tmp_path, suffix):
    marker = tmp_path / "pwned"
    path = tmp_path / f"evil{suffix}"  # the extension does not matter
    torch.save({"w": torch.ones(2), "p": _Payload(marker)}, path)
    with pytest.raises(UnsafeFileError, match="save_file"):
        read_checkpoint(path)
    assert not marker.exists()


def test_pickled_whole_model_refused_with_advice(tmp_path):
    path = tmp_path / "model.pt"
    torch.save(_mlp(), path)
    with pytest.raises(UnsafeFileError) as info:
        read_checkpoint(path)
    msg = str(info.value)
    assert "torch.save(model.state_dict(), path)" in msg
    assert "weights_only=False" not in msg


def _export(tmp_path) -> str:
    model = _mlp().eval()
    batch = torch.export.Dim("batch")
    ep = torch.export.export(model, (torch.randn(2, 4),), dynamic_shapes=({0: batch},))
    path = tmp_path / "m.pt2"
    torch.export.save(ep, path)
    return str(path)


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_export_refused_by_default_and_hooks_work_when_allowed(tmp_path):
    path = _export(tmp_path)
    with pytest.raises(UnsafeFileError, match="allow_code_checkpoints"):
        read_checkpoint(path)
    model, ckpt = load_model(None, None, path, allow_code_checkpoints=True)
    assert ckpt.format == "export" and ckpt.tensors is None
    assert model is ckpt.module
    seen = []
    handle = model.get_submodule("fc0").register_forward_hook(
        lambda m, i, o: seen.append(tuple(o.shape))
    )
    x = torch.randn(5, 4)  # another batch size than at export
    out = model(x)
    handle.remove()
    assert seen == [(5, 3)]
    torch.testing.assert_close(out, _mlp().eval()(x))


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_torchscript_always_refused(tmp_path):
    path = tmp_path / "m.pt"  # content, not the extension, decides
    torch.jit.save(torch.jit.script(_mlp()), str(path))
    with pytest.raises(UnsafeFileError, match="TorchScript"):
        read_checkpoint(path, allow_code_checkpoints=True)


def test_unknown_format_lists_accepted(tmp_path):
    path = tmp_path / "m.onnx"
    path.write_bytes(b"\x08\x07\x12\x04onnx" * 4)
    accepted = r"unknown weight file format; accepted: safetensors"
    with pytest.raises(InvalidInputError, match=accepted):
        read_checkpoint(path)


def test_not_a_regular_file(tmp_path):
    with pytest.raises(InvalidInputError, match="not a regular file"):
        read_checkpoint(tmp_path)
    link = tmp_path / "dev.safetensors"
    os.symlink("/dev/zero", link)
    with pytest.raises(InvalidInputError, match="not a regular file"):
        read_checkpoint(link)
    with pytest.raises(InvalidInputError, match="cannot read"):
        read_checkpoint(tmp_path / "missing.pt")


def test_strict_loading_lists_every_problem():
    model = build_model("resnet", {"layers": [1], "widths": [4], "stem_width": 4})
    sd = dict(model.state_dict())
    del sd["fc.bias"]
    sd["extra.weight"] = torch.zeros(1)
    sd["fc.weight"] = torch.zeros(3, 3)
    sd["bn1.running_mean"] = sd["bn1.running_mean"].double()
    sd["bn1.num_batches_tracked"] = sd["bn1.num_batches_tracked"].int()
    before = model.fc.weight.clone()
    with pytest.raises(CheckpointMismatchError) as info:
        load_weights_into(model, sd)
    msg = str(info.value)
    assert "missing keys (1): fc.bias" in msg
    assert "unexpected keys (1): extra.weight" in msg
    assert "fc.weight: expected (1000, 16), got (3, 3)" in msg
    assert "bn1.running_mean: expected torch.float32, got torch.float64" in msg
    assert "bn1.num_batches_tracked: expected torch.int64, got torch.int32" in msg
    assert torch.equal(model.fc.weight, before)  # nothing loaded


def test_strict_loading_caps_the_listing():
    model = nn.Sequential(*[nn.Linear(1, 1) for _ in range(15)])  # 30 keys
    with pytest.raises(CheckpointMismatchError, match=r"missing keys \(30\).*10 more"):
        load_weights_into(model, {})


def test_load_model_safetensors(tmp_path):
    trained = _mlp()
    path = tmp_path / "m.safetensors"
    save_file(trained.state_dict(), str(path))
    model, ckpt = load_model("mlp", MLP, path)
    assert not model.training and ckpt.format == "safetensors"
    x = torch.randn(3, 4)
    torch.testing.assert_close(model(x), trained(x))


def test_load_model_fails_fast_and_needs_architecture(tmp_path):
    with pytest.raises(UnknownArchitectureError):
        load_model("nope", None, tmp_path / "missing.pt")
    path = tmp_path / "m.safetensors"
    save_file(_mlp().state_dict(), str(path))
    with pytest.raises(InvalidInputError, match="name the architecture"):
        load_model(None, None, path)
    with pytest.raises(CheckpointMismatchError, match="wrong shapes"):
        load_model("mlp", {**MLP, "widths": [5]}, path)

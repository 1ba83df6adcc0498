"""``torch.save`` files read without running anything in them (engine.core.safe_pickle): exact round trips of
what the project saves, and crafted files that must fail fast, as one CheckpointError, allocating little."""

from __future__ import annotations

import io
import pickle
import struct
import tracemalloc
import zipfile
from collections import OrderedDict
from pathlib import Path

import pytest
import torch

from engine.core import safe_pickle
from engine.core.errors import CheckpointError
from engine.core.safe_pickle import load_torch


def _saved() -> dict:
    """Everything a project checkpoint holds: state dicts (with torch's _metadata), optimizer state, RNG
    bytes, views sharing a storage, the element types in use, and plain values."""
    torch.manual_seed(0)
    layer = torch.nn.Linear(3, 2)
    optimizer = torch.optim.Adam(layer.parameters(), betas=(0.9, 0.99))
    layer(torch.randn(4, 3)).sum().backward()
    optimizer.step()
    base = torch.randn(4, 5)
    return {"model": layer.state_dict(), "optimizer": optimizer.state_dict(),
            "generator": torch.Generator().get_state(), "base": base, "row": base[1], "transposed": base.t(),
            "half": torch.randn(3).half(), "bf16": torch.randn(3).bfloat16(), "mask": torch.tensor([True, False]),
            "steps": torch.arange(3), "complex": torch.randn(2, dtype=torch.complex64), "empty": torch.empty(0, 3),
            "scalar": torch.tensor(2.5), "seconds": 12.5,
            "config": {"betas": (0.9, 0.99), "name": "fast", "levels": [16, 2], "limit": 2**70, "none": None}}


def _assert_same(actual, expected) -> None:
    assert type(actual) is type(expected) or isinstance(actual, dict), (type(actual), type(expected))
    if isinstance(expected, torch.Tensor):
        assert (actual.dtype, actual.shape, actual.stride()) == (expected.dtype, expected.shape, expected.stride())
        assert torch.equal(actual, expected)
    elif isinstance(expected, dict):
        assert list(actual) == list(expected)
        for key in expected:
            _assert_same(actual[key], expected[key])
    elif isinstance(expected, (list, tuple)):
        assert len(actual) == len(expected)
        for a, e in zip(actual, expected):
            _assert_same(a, e)
    else:
        assert actual == expected


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_what_the_project_saves_reads_back_exactly(tmp_path, zip_format):
    saved = _saved()
    path = tmp_path / "step_0000010.pt"
    torch.save(saved, path, _use_new_zipfile_serialization=zip_format)
    loaded = load_torch(path)
    _assert_same(loaded, saved)
    assert loaded["model"]._metadata == saved["model"]._metadata  # what load_state_dict reads versions from
    loaded["base"][1, 0] = 42.0  # views still share their storage
    assert loaded["row"][0] == 42 and loaded["transposed"][0, 1] == 42
    layer = torch.nn.Linear(3, 2)
    layer.load_state_dict(loaded["model"])
    torch.Generator().set_state(loaded["generator"])


def _zip_with(obj, old: bytes = b"", new: bytes = b"", compress: int = zipfile.ZIP_STORED, fill: int = 0) -> bytes:
    """``torch.save(obj)`` with ``old`` replaced by ``new`` in its data.pkl, its entries written with
    ``compress``, and storage 0 replaced by ``fill`` zero bytes when given."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    source, out = zipfile.ZipFile(io.BytesIO(buffer.getvalue())), io.BytesIO()
    with zipfile.ZipFile(out, "w", compress) as target:
        for info in source.infolist():
            data = source.read(info.filename)
            if info.filename.endswith("data.pkl"):
                assert old in data
                data = data.replace(old, new)
            if fill and info.filename.endswith("data/0"):
                data = bytes(fill)
            target.writestr(info.filename, data)
    return out.getvalue()


def _refused(path: Path, data: bytes, match: str, peak_mib: float = 8) -> None:
    """Reading ``data`` as ``path`` fails fast with one CheckpointError sentence naming it, matching
    ``match``, and Python allocates at most ``peak_mib`` on the way."""
    path.write_bytes(data)
    tracemalloc.start()
    try:
        with pytest.raises(CheckpointError, match=match) as error:
            load_torch(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    message = str(error.value)
    assert str(path) in message and "\n" not in message
    assert peak < peak_mib * 2**20, f"{peak / 2**20:.1f} MiB allocated"


# torch.save({"w": torch.arange(4.0)}) writes the size (4,) as BININT1 4, TUPLE1 after offset BININT1 0
LAYOUT = b"K\x00K\x04\x85"


@pytest.mark.parametrize("layout, problem", [
    (b"K\x00M\xe8\x03\x85", "reaches past its storage of 4 elements"),  # size 1000
    (b"K\x03K\x04\x85", "reaches past its storage of 4 elements"),  # offset 3
    (b"K\x00J\xff\xff\xff\xff\x85", "impossible layout"),  # size -1
    (b"J\xff\xff\xff\xffK\x04\x85", "impossible layout"),  # offset -1
    (b"K\x00\x8a\x08\x00\x00\x00\x00\x00\x00\x00\x40\x85", "impossible layout"),  # size 2**62
], ids=["size", "offset", "negative-size", "negative-offset", "overflow"])
def test_tensors_reaching_past_their_storage_are_refused(tmp_path, layout, problem):
    _refused(tmp_path / "step_0000001.pt", _zip_with({"w": torch.arange(4.0)}, LAYOUT, layout), problem)


def test_compressed_entries_are_refused_before_they_are_inflated(tmp_path):
    bomb = _zip_with({"w": torch.arange(4.0)}, compress=zipfile.ZIP_DEFLATED, fill=64 * 2**20)
    assert len(bomb) < 200_000
    _refused(tmp_path / "bomb.pt", bomb, "compressed or oversized entries")


def test_a_global_outside_the_table_is_refused_by_name(tmp_path):
    # bytearray(1 << 34) in a zip's data.pkl: torch's own weights-only loader would allocate 16 GiB
    alloc = b"cbuiltins\nbytearray\n\x8a\x05\x00\x00\x00\x00\x04\x85R."
    _refused(tmp_path / "alloc.pt", _zip_with({"w": torch.arange(4.0)}, b"}q\x00", alloc),
             "it asks to run builtins.bytearray")


def test_a_legacy_storage_larger_than_the_file_is_refused(tmp_path):
    buffer = io.BytesIO()
    torch.save(torch.arange(4.0), buffer, _use_new_zipfile_serialization=False)
    data = buffer.getvalue()
    declared = b"K\x04Nt"  # numel 4, no view, closing the storage reference
    assert data.count(declared) == 1
    _refused(tmp_path / "legacy.pt", data.replace(declared, b"J\x00\x00\x00\x10Nt"), "larger than the file")


def _pickle(body: bytes) -> bytes:
    """A protocol-4 pickle around ``body`` (torch.save's legacy header lets load_torch reach it)."""
    return b"\x80\x04" + body + b"."


@pytest.mark.parametrize("body, problem", [
    (b"Nr\xff\xff\xff\xff", "memo index 4294967295"),  # LONG_BINPUT: C pickle's memo would take 32 GiB
    (b"Np99999999999\n", "memo index 99999999999"),
    (b"(" * 100_000, "nests more than 100 levels deep"),
    (b"\x96" + struct.pack("<Q", 2**40), "declares 1099511627776 bytes"),  # BYTEARRAY8
    (b"\x8e" + struct.pack("<Q", 2**40), "truncated"),  # BINBYTES8: never allocated
    (b"\x95" + struct.pack("<Q", 2**40) + b"N", "truncated"),  # FRAME
    (b"]q\x00" + b"K\x01a" * 100_000 + b"cbuiltins\nset\nq\x01" + b"h\x01h\x00\x85R" * 2_000,
     "copy far more data than the file holds"),  # one list copied 2 000 times
], ids=["long-binput", "put", "marks", "bytearray8", "binbytes8", "frame", "copies"])
def test_crafted_pickles_fail_fast_without_allocating(tmp_path, body, problem):
    _refused(tmp_path / "crafted.pt", _pickle(body), problem)


def test_the_number_of_instructions_is_limited(tmp_path, monkeypatch):
    monkeypatch.setattr(safe_pickle, "MAX_OPCODES", 1_000)
    _refused(tmp_path / "long.pt", _pickle(b"N0" * 1_000 + b"N"), "more than 1000 pickle instructions")


def test_deeply_nested_data_is_refused(tmp_path):
    deep: list = []
    for _ in range(150):
        deep = [deep]
    buffer = io.BytesIO()
    torch.save({"kwargs": deep}, buffer)
    _refused(tmp_path / "deep.pt", buffer.getvalue(), "nests more than 100 levels deep")


def test_data_containing_itself_is_refused(tmp_path):
    loop: list = []
    loop.append(loop)
    buffer = io.BytesIO()
    torch.save({"loop": loop}, buffer)
    _refused(tmp_path / "loop.pt", buffer.getvalue(), "its data contains itself")


def test_a_dict_method_cannot_be_shadowed(tmp_path):
    class ShadowsGet(dict):
        def __reduce__(self):
            return OrderedDict, (), {"get": None}, None, iter(self.items())

    buffer = io.BytesIO()
    torch.save(ShadowsGet(train_seconds=1.0), buffer)
    _refused(tmp_path / "shadow.pt", buffer.getvalue(), r"it asks to set attributes or state of an OrderedDict")
    assert pickle.loads(pickle.dumps(ShadowsGet(a=1))).get is None  # what an ordinary unpickler makes of it


def test_a_loaded_state_can_be_saved_again_and_reread(tmp_path):
    model = torch.nn.Linear(3, 2)
    path = tmp_path / "state.pt"
    torch.save({"model": model.state_dict()}, path)
    torch.save(load_torch(path), path)  # e.g. a checkpoint copied forward by a later job
    again = load_torch(path)["model"]
    assert list(again) == ["weight", "bias"] and again._metadata == model.state_dict()._metadata
    torch.testing.assert_close(again["weight"], model.weight.detach())

"""EG3D checkpoint import: official-style pickles, Live3D/3DPE-style .pth, safetensors, and hostile files.

Official pickles are written through the stand-in ``torch_utils.persistence`` of tests/eg3d_pickles.py,
which pickles each network as ``torch_utils.persistence._reconstruct_persistent_obj(meta)`` with the
module source, class name and ``__dict__`` state, as NVIDIA's checkpoints do: here for the toy networks
below (odd state a loader must cope with) and for a real generator.  The stand-in packages are
importable only while a pickle is written; loading must work (and run nothing) without them.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import resource
import sys
import time
import tracemalloc
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
from eg3d_pickles import STAND_IN_PACKAGES, nvidia_style_packages, write_live3d_pth, write_official_pickle
from safetensors.torch import save_file
from tiny_portrait import tiny_kwargs

from engine.core.errors import UserInputError
from engine.portrait.checkpoints import (GENERATOR_FILE, META_FILE, CheckpointError, GeneratorCheckpoint,
                                         read_generator_checkpoint, write_converted)
from engine.portrait.eg3d import build_generator, generator_from_checkpoint, load_generator

SHARED_GOLDEN = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "eg3d-golden-2x"

NETWORKS_SRC = '''
"""Toy networks with the state official ones carry: numpy scalars, dtypes, plain tensors, unused buffers."""
import numpy as np
import torch

from torch_utils import persistence


@persistence.persistent_class
class FullyConnected(torch.nn.Module):
    def __init__(self, in_features, out_features, bias=True):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.randn(out_features, in_features))
        self.bias = torch.nn.Parameter(torch.randn(out_features)) if bias else None
        self.weight_gain = np.float64(1 / np.sqrt(in_features))


@persistence.persistent_class
class Conv(torch.nn.Module):
    def __init__(self, channels, resolution):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.randn(channels, channels, 3, 3))
        self.register_buffer("noise_const", torch.randn(resolution, resolution))
        self.register_buffer("scratch", torch.zeros(4), persistent=False)


@persistence.persistent_class
class Block(torch.nn.Module):
    def __init__(self, channels, resolution):
        super().__init__()
        self.conv1 = Conv(channels, resolution)
        self.register_buffer("resample_filter", torch.rand(4, 4))


@persistence.persistent_class
class Mapping(torch.nn.Module):
    def __init__(self, z_dim, w_dim, num_layers):
        super().__init__()
        for i in range(num_layers):
            setattr(self, f"fc{i}", FullyConnected(z_dim if i == 0 else w_dim, w_dim))
        self.register_buffer("w_avg", torch.randn(w_dim))


@persistence.persistent_class
class Synthesis(torch.nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.b4 = Block(channels, 4)
        self.block_resolutions = [4]


@persistence.persistent_class
class Backbone(torch.nn.Module):
    def __init__(self, z_dim, w_dim, mapping_kwargs):
        super().__init__()
        self.mapping = Mapping(z_dim, w_dim, **mapping_kwargs)
        self.synthesis = Synthesis(2)


@persistence.persistent_class
class Decoder(torch.nn.Module):
    def __init__(self, features):
        super().__init__()
        self.net = torch.nn.Sequential(FullyConnected(features, 8), torch.nn.Softplus(), FullyConnected(8, 5, bias=False))


@persistence.persistent_class
class TriPlaneGenerator(torch.nn.Module):
    def __init__(self, z_dim, c_dim, w_dim, img_resolution, img_channels, mapping_kwargs={}, rendering_kwargs={},
                 **synthesis_kwargs):
        super().__init__()
        self.backbone = Backbone(z_dim, w_dim, mapping_kwargs)
        self.decoder = Decoder(4)
        self.plane_axes = torch.eye(3)
        self.rendering_kwargs = rendering_kwargs
        self.neural_rendering_resolution = 64
        self.compute_dtype = torch.float16
        self.camera_table = np.arange(6, dtype=np.float32).reshape(2, 3)
'''

EXPECTED_KWARGS = {
    "z_dim": 4, "c_dim": 25, "w_dim": 4, "img_resolution": 32, "img_channels": 3,
    "mapping_kwargs": {"num_layers": 2},
    "rendering_kwargs": {"superresolution_module": "training.superresolution.SuperresolutionHybrid2X",
                         "avg_camera_pivot": [0, 0, 0.2], "ray_start": 2.25, "box_warp": 1},
    "channel_base": 64, "conv_clamp": None,
}


TOY_NETWORKS = {"training/networks.py": NETWORKS_SRC}
"""extra files for nvidia_style_packages: the toy networks as training.networks"""


def _generator(pkgs: SimpleNamespace, seed: int):
    """A toy generator built with a few positional args, the rest keywords (left rendering at the
    constructor's 64)."""
    torch.manual_seed(seed)
    ed = pkgs.EasyDict
    rendering = ed(superresolution_module="training.superresolution.SuperresolutionHybrid2X",
                   avg_camera_pivot=[0, 0, 0.2], ray_start=2.25, box_warp=1)
    return pkgs.modules["training.networks"].TriPlaneGenerator(4, 25, 4, img_resolution=32, img_channels=3,
                                                               mapping_kwargs=ed(num_layers=2),
                                                               rendering_kwargs=rendering, channel_base=64,
                                                               conv_clamp=None)


def _assert_same_tensors(actual: dict, expected: dict) -> None:
    assert sorted(actual) == sorted(expected)
    for name, tensor in expected.items():
        assert actual[name].dtype == tensor.dtype, name
        assert actual[name].shape == tensor.shape, name
        assert torch.equal(actual[name], tensor), name


def _write_snapshot(path: Path, source_prefix: str = "", protocol: int | None = None,
                    keys: tuple[str, ...] = ("G", "D", "G_ema", "augment_pipe", "training_set_kwargs")) -> dict:
    """An official-style network snapshot pickle of the toy networks at ``path`` (G_ema trained on to
    render at 128); returns G_ema's and G's true state dicts."""
    with nvidia_style_packages(source_prefix, TOY_NETWORKS) as pkgs:
        nets = {"G": _generator(pkgs, 0), "G_ema": _generator(pkgs, 1),
                "D": pkgs.modules["training.dual_discriminator"].DualDiscriminator(25, 32), "augment_pipe": None,
                "training_set_kwargs": pkgs.EasyDict(path="ffhq.zip", resolution=32, use_labels=True)}
        nets["G_ema"].neural_rendering_resolution = 128
        with path.open("wb") as f:
            pickle.dump({k: nets[k] for k in keys}, f, protocol=protocol)
        return {k: nets[k].state_dict() for k in ("G", "G_ema")}


@pytest.mark.parametrize("protocol", range(6))
def test_official_style_pickle_gives_g_ema_names_values_and_kwargs(tmp_path, protocol):
    path = tmp_path / "network-snapshot-000000.pkl"
    expected = _write_snapshot(path, protocol=protocol)
    kwargs, state, resolution = read_generator_checkpoint(path)
    assert kwargs == EXPECTED_KWARGS and resolution == 128
    _assert_same_tensors(state, expected["G_ema"])
    assert list(state) == list(expected["G_ema"])
    assert "backbone.mapping.fc0.weight" in state and "backbone.synthesis.b4.conv1.weight" in state
    assert "backbone.synthesis.b4.conv1.noise_const" in state and "decoder.net.0.weight" in state
    assert "decoder.net.2.bias" not in state
    assert not any(name.endswith("scratch") or name == "plane_axes" for name in state)
    assert not any(m.split(".")[0] in STAND_IN_PACKAGES for m in sys.modules)


@pytest.mark.parametrize("writer, name", [(write_official_pickle, "network-snapshot.pkl"),
                                          (write_live3d_pth, "ffhqrebalanced.pth")], ids=["pkl", "pth"])
def test_a_real_generator_reads_back_exactly(tmp_path, writer, name):
    torch.manual_seed(0)
    generator = build_generator(tiny_kwargs())
    generator.neural_rendering_resolution = 16
    kwargs, state, resolution = read_generator_checkpoint(writer(tmp_path / name, generator, tiny_kwargs()))
    assert kwargs == tiny_kwargs() and resolution == 16
    assert list(state) == list(generator.state_dict())  # the official names, in order
    _assert_same_tensors(state, generator.state_dict())


def test_pickle_without_g_ema_falls_back_to_g(tmp_path):
    path = tmp_path / "g-only.pkl"
    expected = _write_snapshot(path, keys=("G", "D"))
    _, state, resolution = read_generator_checkpoint(path)
    _assert_same_tensors(state, expected["G"])
    assert resolution == 64


def test_given_kwargs_update_the_recorded_ones(tmp_path):
    path = tmp_path / "snapshot.pkl"
    _write_snapshot(path)
    kwargs, _, _ = read_generator_checkpoint(path, {"img_resolution": 64, "sr_num_fp16_res": 0})
    assert kwargs == {**EXPECTED_KWARGS, "img_resolution": 64, "sr_num_fp16_res": 0}


def test_module_source_in_the_pickle_is_never_run(tmp_path):
    marker = tmp_path / "module_src_ran"
    path = tmp_path / "snapshot.pkl"
    _write_snapshot(path, source_prefix=f"open({str(marker)!r}, 'w').close()\n")
    read_generator_checkpoint(path)
    assert not marker.exists()


def test_discriminator_only_pickle_names_what_it_holds(tmp_path):
    path = tmp_path / "d-only.pkl"
    _write_snapshot(path, keys=("D", "training_set_kwargs"))
    with pytest.raises(CheckpointError) as err:
        read_generator_checkpoint(path)
    message = str(err.value)
    assert str(path) in message and "no generator" in message and "'D'" in message and "training_set_kwargs" in message


class _RunsOsSystem:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _RunsExec:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').close()",))


def _snapshot_with(path: Path, change: Callable[[Any], None]) -> Path:
    """A pickle of the toy G_ema at ``path``, ``change`` applied to it first."""
    with nvidia_style_packages(extra_files=TOY_NETWORKS) as pkgs:
        generator = _generator(pkgs, 0)
        change(generator)
        path.write_bytes(pickle.dumps({"G_ema": generator}))
    return path


def test_payload_hidden_inside_a_network_state_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = _snapshot_with(tmp_path / "evil.pkl", lambda generator: setattr(generator, "extra", _RunsOsSystem(marker)))
    with pytest.raises(CheckpointError, match=r"it asks to run posix\.system$"):
        read_generator_checkpoint(path)
    assert not marker.exists()


class _EvilStorage:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (torch.storage._load_from_bytes, (pickle.dumps(_RunsOsSystem(self.marker), protocol=2),))


@pytest.mark.parametrize("payload, asked", [(_RunsOsSystem, "posix.system"), (_RunsExec, "builtins.exec"),
                                            (_EvilStorage, "posix.system")],
                         ids=["os.system", "exec", "payload-in-storage-bytes"])
def test_malicious_pickle_is_refused_and_runs_nothing(tmp_path, payload, asked):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"G_ema": payload(marker)}))
    with pytest.raises(CheckpointError) as err:
        read_generator_checkpoint(path)
    assert str(err.value) == f"refusing to load {path}: it asks to run {asked}"
    assert not marker.exists()


@pytest.mark.parametrize("raw, asked", [(b"cbuiltins\ngetattr\n.", "builtins.getattr"),
                                        (b"csubprocess\nPopen\n.", "subprocess.Popen"),
                                        (b"cbuiltins\neval\n.", "builtins.eval"),
                                        (b"ctorch\nload\n.", "torch.load"),
                                        (b"c_codecs\nencode\n(Vx\nVrot13\ntR.", "_codecs.encode with encoding 'rot13'")],
                         ids=["getattr", "Popen", "eval", "torch.load", "codecs-rot13"])
def test_other_globals_are_refused(tmp_path, raw, asked):
    path = tmp_path / "evil.pkl"
    path.write_bytes(raw)
    with pytest.raises(CheckpointError) as err:
        read_generator_checkpoint(path)
    assert str(err.value) == f"refusing to load {path}: it asks to run {asked}"


def test_damaged_module_state_is_reported(tmp_path):
    path = _snapshot_with(tmp_path / "damaged.pkl", lambda generator: object.__setattr__(
        generator.backbone.mapping, "_parameters", ["not", "a", "mapping"]))
    with pytest.raises(CheckpointError) as err:
        read_generator_checkpoint(path)
    assert str(err.value) == f"{path} is damaged: _parameters of module backbone.mapping is a list"


def test_truncated_pickle_is_reported(tmp_path):
    path = tmp_path / "snapshot.pkl"
    _write_snapshot(path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated") as err:
        read_generator_checkpoint(path)
    assert str(path) in str(err.value)


@pytest.mark.parametrize("suffix", [".pkl", ".pth", ".safetensors"])
def test_random_bytes_are_reported(tmp_path, suffix):
    path = tmp_path / f"noise{suffix}"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(CheckpointError) as err:
        read_generator_checkpoint(path)
    assert str(path) in str(err.value)


def test_missing_empty_and_unknown_files_are_reported(tmp_path):
    with pytest.raises(CheckpointError, match="file not found"):
        read_generator_checkpoint(tmp_path / "absent.pkl")
    (tmp_path / "empty.pkl").write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty.pkl is empty"):
        read_generator_checkpoint(tmp_path / "empty.pkl")
    (tmp_path / "weights.ckpt").write_bytes(b"x")
    with pytest.raises(CheckpointError, match=r"weights\.ckpt: unknown checkpoint type '\.ckpt'"):
        read_generator_checkpoint(tmp_path / "weights.ckpt")
    assert issubclass(CheckpointError, UserInputError)


def test_folders_are_explained(tmp_path):
    pipeline = tmp_path / "instruct-pix2pix"
    pipeline.mkdir()
    (pipeline / "model_index.json").write_text("{}")
    with pytest.raises(CheckpointError, match="diffusers pipeline folder, not an EG3D generator"):
        read_generator_checkpoint(pipeline)
    with pytest.raises(CheckpointError, match=f"folder without {GENERATOR_FILE}"):
        read_generator_checkpoint(tmp_path / "instruct-pix2pix" / "..")


def _tiny_state_dict() -> dict[str, torch.Tensor]:
    torch.manual_seed(3)
    return {"backbone.mapping.fc0.weight": torch.randn(4, 4), "backbone.mapping.w_avg": torch.randn(4),
            "decoder.net.0.bias": torch.randn(8)}


def test_live3d_style_pth(tmp_path):
    path = tmp_path / "ffhqrebalanced512-128.pth"
    state = _tiny_state_dict()
    with nvidia_style_packages() as pkgs:
        ed = pkgs.EasyDict
        rendering = ed(EXPECTED_KWARGS["rendering_kwargs"], depth_resolution=48)
        torch.save({"G_init_args": (4, 25), "G_init_kwargs": ed({k: v for k, v in EXPECTED_KWARGS.items()
                                                                 if k not in ("z_dim", "c_dim")}),
                    "G": state, "G_neural_rendering_resolution": 128, "G_renderinig_kwargs": rendering,
                    "D_init_args": (), "D_init_kwargs": ed(c_dim=25), "D": {"fc.weight": torch.ones(1, 25)},
                    "training_set_kwargs": ed(path="ffhq.zip")}, path)
    kwargs, loaded, resolution = read_generator_checkpoint(path)
    assert resolution == 128
    assert kwargs == {**EXPECTED_KWARGS, "rendering_kwargs": {**EXPECTED_KWARGS["rendering_kwargs"],
                                                              "depth_resolution": 48}}
    _assert_same_tensors(loaded, state)


def test_triplanenet_style_pth(tmp_path):
    path = tmp_path / "ffhq512-128.pth"
    state = _tiny_state_dict()
    torch.save({"G_ema": state, "init_kwargs": EXPECTED_KWARGS, "latent_avg": torch.zeros(4)}, path)
    kwargs, loaded, resolution = read_generator_checkpoint(path)
    assert kwargs == EXPECTED_KWARGS and resolution is None
    _assert_same_tensors(loaded, state)


def test_bare_state_dict_pth_takes_kwargs_from_meta_json(tmp_path):
    path = tmp_path / "generator.pt"
    state = _tiny_state_dict()
    torch.save(state, path)
    with pytest.raises(CheckpointError, match="generator_kwargs"):
        read_generator_checkpoint(path)
    (tmp_path / META_FILE).write_text(json.dumps({"generator_kwargs": EXPECTED_KWARGS,
                                                  "neural_rendering_resolution": 64}))
    kwargs, loaded, resolution = read_generator_checkpoint(path)
    assert kwargs == EXPECTED_KWARGS and resolution == 64
    _assert_same_tensors(loaded, state)


def test_pth_without_a_state_dict_is_reported(tmp_path):
    path = tmp_path / "options.pth"
    torch.save({"opts": {"lr": 0.1}, "step": 10}, path)
    with pytest.raises(CheckpointError) as err:
        read_generator_checkpoint(path)
    assert str(path) in str(err.value) and "no generator state dict" in str(err.value) and "'opts'" in str(err.value)


def test_pth_holding_pickled_networks_is_refused(tmp_path):
    path = tmp_path / "modules.pth"
    with nvidia_style_packages(extra_files=TOY_NETWORKS) as pkgs:
        torch.save({"G_ema": _generator(pkgs, 0)}, path)
    with pytest.raises(CheckpointError) as err:
        read_generator_checkpoint(path)
    assert str(err.value) == (f"refusing to load {path}: it asks to run "
                              "torch_utils.persistence._reconstruct_persistent_obj")


@pytest.mark.parametrize("sidecar", [META_FILE, "config.json"])
def test_safetensors_with_sidecar_kwargs(tmp_path, sidecar):
    state = _tiny_state_dict()
    save_file(state, str(tmp_path / "weights.safetensors"))
    (tmp_path / sidecar).write_text(json.dumps({"generator_kwargs": EXPECTED_KWARGS, "neural_rendering_resolution": 96,
                                                "note": "other keys are fine"}))
    kwargs, loaded, resolution = read_generator_checkpoint(tmp_path / "weights.safetensors")
    assert kwargs == EXPECTED_KWARGS and resolution == 96
    _assert_same_tensors(loaded, state)


def test_safetensors_with_explicit_kwargs_and_without_any(tmp_path):
    state = _tiny_state_dict()
    path = tmp_path / "weights.safetensors"
    save_file(state, str(path))
    with pytest.raises(CheckpointError) as err:
        read_generator_checkpoint(path)
    assert str(path) in str(err.value) and "generator_kwargs" in str(err.value) and META_FILE in str(err.value)
    kwargs, loaded, resolution = read_generator_checkpoint(path, EXPECTED_KWARGS)
    assert kwargs == EXPECTED_KWARGS and resolution is None
    _assert_same_tensors(loaded, state)


def test_unreadable_sidecar_is_reported(tmp_path):
    save_file(_tiny_state_dict(), str(tmp_path / "weights.safetensors"))
    (tmp_path / META_FILE).write_text("{not json")
    with pytest.raises(CheckpointError, match=f"{META_FILE}: unreadable JSON"):
        read_generator_checkpoint(tmp_path / "weights.safetensors")


def test_write_converted_round_trip(tmp_path):
    source = tmp_path / "snapshot.pkl"
    expected = _write_snapshot(source)
    kwargs, state, _ = read_generator_checkpoint(source)
    out = tmp_path / "converted"
    weights = write_converted(out, kwargs, state, neural_rendering_resolution=128)
    assert weights == out / GENERATOR_FILE
    assert sorted(p.name for p in out.iterdir()) == [GENERATOR_FILE, META_FILE]
    assert json.loads((out / META_FILE).read_text()) == {"generator_kwargs": EXPECTED_KWARGS,
                                                         "neural_rendering_resolution": 128}
    for target in (weights, out):
        kwargs_back, state_back, resolution = read_generator_checkpoint(target)
        assert kwargs_back == EXPECTED_KWARGS and resolution == 128
        _assert_same_tensors(state_back, expected["G_ema"])


@pytest.mark.skipif(not (SHARED_GOLDEN / GENERATOR_FILE).exists(),
                    reason=f"the EG3D golden fixture is not at {SHARED_GOLDEN} (../shared is absent in a user's clone)")
def test_reads_the_shared_golden_generator_folder():
    kwargs, state, resolution = read_generator_checkpoint(SHARED_GOLDEN)
    meta = json.loads((SHARED_GOLDEN / META_FILE).read_text())
    assert kwargs == meta["generator_kwargs"] and resolution == meta["neural_rendering_resolution"]
    assert len(state) == meta["num_state_tensors"]


# Files that run no code but abuse the reader (issue 12 §3): each fails fast as one CheckpointError naming it.

class _Tensor:
    """Pickles as ``torch._utils._rebuild_tensor_v2`` of a real storage of ``elements`` floats with the
    layout given, which may reach past it (an ordinary unpickler then grows the storage: heap bytes)."""

    def __init__(self, elements: int, offset: int, size: tuple[int, ...], stride: tuple[int, ...]) -> None:
        self.elements, self.offset, self.size, self.stride = elements, offset, size, stride

    def __reduce__(self):
        storage = torch.zeros(self.elements)._typed_storage()
        return torch._utils._rebuild_tensor_v2, (storage, self.offset, self.size, self.stride, False, OrderedDict())


@pytest.mark.parametrize("offset, size, stride", [(0, (1000,), (1,)), (3, (2,), (1,)), (0, (2, 2), (1, 3)),
                                                  (0, (2**40, 2**40), (1, 1))],
                         ids=["size", "offset", "stride", "huge"])
def test_a_tensor_reaching_past_its_storage_is_refused(tmp_path, offset, size, stride):
    path = tmp_path / "snapshot.pkl"
    path.write_bytes(pickle.dumps({"G_ema": _Tensor(4, offset, size, stride)}))
    with pytest.raises(CheckpointError) as err:
        read_generator_checkpoint(path)
    assert str(err.value) == (f"{path} is damaged: a tensor of size {size} (stride {stride}, offset {offset}) "
                              "reaches past its storage of 4 elements")
    if size == (1000,):  # what an ordinary unpickler makes of it
        assert pickle.loads(path.read_bytes())["G_ema"].untyped_storage().nbytes() == 4000


def test_a_complete_generator_with_one_weight_past_its_storage_is_refused(tmp_path):
    generator = build_generator(tiny_kwargs())
    weight = generator.backbone.mapping.fc0.weight
    generator.backbone.mapping.fc0._parameters["weight"] = _Tensor(8, 0, tuple(weight.shape), weight.stride())
    path = write_official_pickle(tmp_path / "network-snapshot.pkl", generator, tiny_kwargs())
    with pytest.raises(CheckpointError, match=r"reaches past its storage of 8 elements$") as err:
        load_generator(path)
    assert str(err.value).startswith(f"{path} is damaged: a tensor of size {tuple(weight.shape)}")


def test_shared_submodules_are_refused_without_walking_every_path(tmp_path):
    module = torch.nn.Linear(2, 2)
    for _ in range(20):  # 2**20 paths down to the one Linear
        module = torch.nn.Sequential(module, module)
    path = tmp_path / "shared.pkl"
    path.write_bytes(pickle.dumps({"G_ema": module}))
    assert path.stat().st_size < 16_000
    start = time.perf_counter()
    with pytest.raises(CheckpointError, match=f"^{path} is damaged: module [0.]+1 appears more than once in the"):
        read_generator_checkpoint(path)
    assert time.perf_counter() - start < 2


def _nested(levels: int) -> list:
    deep: list = []
    for _ in range(levels):
        deep = [deep]
    return deep


@pytest.mark.parametrize("suffix", [".pkl", ".pth"])
def test_deeply_nested_arguments_are_refused(tmp_path, suffix):
    path = tmp_path / f"deep{suffix}"
    if suffix == ".pkl":  # 5 000 levels: the kwargs conversion used to die of RecursionError
        path.write_bytes(b"\x80\x02}X\x05\x00\x00\x00G_ema" + b"]" * 5_000 + b"a" * 4_999 + b"s.")
    else:  # torch.save itself cannot write much deeper
        torch.save({"G": _tiny_state_dict(), "G_init_kwargs": {"mapping_kwargs": _nested(150)}}, path)
    with pytest.raises(CheckpointError, match=f"^{path} is damaged: its data nests more than 100 levels deep$"):
        read_generator_checkpoint(path)


class _ShadowsGet(dict):
    """A dict that pickles as an OrderedDict whose state sets an attribute ``get`` (None)."""

    def __reduce__(self):
        return OrderedDict, (), {"get": None}, None, iter(self.items())


@pytest.mark.parametrize("suffix", [".pkl", ".pth"])
def test_state_shadowing_a_dict_method_is_refused(tmp_path, suffix):
    path = tmp_path / f"shadow{suffix}"
    data = _ShadowsGet(G_ema=_tiny_state_dict())
    if suffix == ".pkl":
        path.write_bytes(pickle.dumps(data))
    else:
        torch.save(data, path)
    with pytest.raises(CheckpointError) as err:
        read_generator_checkpoint(path)
    assert str(err.value) == f"refusing to load {path}: it asks to set attributes or state of an OrderedDict"


def test_a_failure_converting_the_loaded_network_is_one_checkpoint_error(tmp_path):
    # `name not in [array]` asks the array for a truth value: a ValueError the reader never foresaw
    path = _snapshot_with(tmp_path / "odd.pkl", lambda generator: object.__setattr__(
        generator.backbone.synthesis.b4, "_non_persistent_buffers_set", [np.arange(2)]))
    with pytest.raises(CheckpointError) as err:
        read_generator_checkpoint(path)
    message = str(err.value)
    assert message.startswith(f"{path} is not a readable EG3D checkpoint") and "(ValueError: " in message


def test_an_eight_byte_pickle_cannot_claim_a_huge_memo(tmp_path):
    path = tmp_path / "memo.pkl"
    path.write_bytes(b"Nr\xff\xff\xff\xff.")  # LONG_BINPUT 2**32 - 1: the C unpickler sizes its memo to it
    tracemalloc.start()
    try:
        with pytest.raises(CheckpointError, match=f"^refusing to load {path}: it stores a value at memo index"):
            read_generator_checkpoint(path)
        assert tracemalloc.get_traced_memory()[1] < 2**20
    finally:
        tracemalloc.stop()


def test_constructor_arguments_are_checked_before_anything_is_allocated(tmp_path):
    path = write_official_pickle(tmp_path / "snapshot.pkl", build_generator(tiny_kwargs()),
                                 tiny_kwargs() | {"z_dim": 10**7})  # 20 GB of mapping weights
    peak_kib, start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, time.perf_counter()
    with pytest.raises(CheckpointError) as err:
        load_generator(path)
    assert str(err.value) == (f"{path}: the generator argument z_dim is 10000000: it must be a whole number "
                              "from 0 to 2048")
    assert time.perf_counter() - start < 5
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_kib < 256 * 1024


def _rendering(**change) -> dict:
    return {"rendering_kwargs": tiny_kwargs()["rendering_kwargs"] | change}


@pytest.mark.parametrize("change, problem", [
    ({"channel_base": 2**20, "channel_max": 2048, "w_dim": 2048},
     r"these arguments describe a generator of \d+\.\d GiB, more than the 1 GiB an EG3D generator can hold"),
    ({"mapping_kwargs": [2]}, re.escape("mapping_kwargs is [2]: it must be a dict or null")),
    ({"channel_max": 16.5}, "channel_max is 16.5: it must be a whole number from 1 to 2048"),
    (_rendering(depth_resolution="48"), "rendering_kwargs.depth_resolution is '48': it must be a whole number"),
    (_rendering(box_warp=float("nan")), r"rendering_kwargs.box_warp is nan: it must be a number from 1e-06 to 1e\+06"),
    (_rendering(avg_camera_pivot=[0, 0]), re.escape("avg_camera_pivot is [0, 0]: it must be three numbers")),
    (_rendering(ray_start="near"), "ray_start is 'near': it must be \"auto\" or a number from 0 to 1000"),
], ids=["bytes", "table", "whole", "type", "nan", "pivot", "ray"])
def test_generator_arguments_beyond_their_limits_are_refused(change, problem):
    checkpoint = GeneratorCheckpoint(tiny_kwargs() | change, _tiny_state_dict(), None)
    with pytest.raises(CheckpointError, match=f"^generator.pth: .*{problem}"):
        generator_from_checkpoint(checkpoint, "generator.pth")


def test_an_absurd_neural_rendering_resolution_is_refused(tmp_path):
    generator = build_generator(tiny_kwargs())
    generator.neural_rendering_resolution = 10**6
    path = write_official_pickle(tmp_path / "snapshot.pkl", generator, tiny_kwargs())
    with pytest.raises(CheckpointError, match="records a neural rendering resolution of 1000000, beyond the 1024"):
        read_generator_checkpoint(path)

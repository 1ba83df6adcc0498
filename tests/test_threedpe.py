"""3DPE's official network against the golden fixture recorded from the official code
(../shared/fixtures/3dpe-golden), its parameter names against the manifest of the published
checkpoint, and safe reading of ``3dpe.pt`` files."""

from __future__ import annotations

import hashlib
import json
import math
import os
import pickle
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from engine.core.errors import CheckpointError
from engine.portrait.threedpe import ThreeDPE, read_checkpoint, reference_tensor

SHARED = Path(__file__).resolve().parents[2] / "shared"
GOLDEN = SHARED / "fixtures" / "3dpe-golden"
MANIFEST = SHARED / "fixtures" / "3dpe_manifest.json"
needs_golden = pytest.mark.skipif(not GOLDEN.is_dir(), reason="../shared/fixtures/3dpe-golden is not beside the repo")
needs_manifest = pytest.mark.skipif(not MANIFEST.is_file(), reason="../shared/fixtures/3dpe_manifest.json is missing")

DEVICE = os.environ.get("RETOUCH3D_TEST_DEVICE", "cpu")
"""where the golden comparison runs: RETOUCH3D_TEST_DEVICE=cuda proves the official path on a GPU (TF32 off, so the
fixture's float32 tolerances apply)"""

FACTOR = {"renderer.decoder.net.0.weight": 64.0, "renderer.decoder.net.2.weight": 16.0}


def formula(name: str, shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    """The fixture's weight of parameter ``name`` (README section 2)."""
    g = torch.Generator().manual_seed((zlib.crc32(name.encode()) + seed) % 2**31)
    if len(shape) >= 2:
        v = torch.randn(shape, generator=g, dtype=torch.float32) / math.sqrt(math.prod(shape[1:]))
    elif name.endswith("weight") or name.endswith("affine.bias"):
        v = 1 + 0.1 * torch.randn(shape, generator=g, dtype=torch.float32)
    else:
        v = 0.02 * torch.randn(shape, generator=g, dtype=torch.float32)
    return v * FACTOR[name] if name in FACTOR else v


def formula_state(net: ThreeDPE) -> tuple[dict, dict]:
    """(encoder_state_dict, renderer_state_dict): parameters by formula, buffers as the network made them."""
    states = []
    for prefix, module in (("encoder.", net.encoder), ("renderer.", net.renderer)):
        parameters = {name for name, _ in module.named_parameters()}
        states.append({name: formula(prefix + name, tuple(value.shape)) if name in parameters else value.clone()
                       for name, value in module.state_dict().items()})
    return states[0], states[1]


TOLERANCE = {"resnet_feature": 1e-2, "low_feature": 5e-3, "high_feature": 2e-3, "f_feature": 2e-4,
             "ref_query_tokens": 1e-4, "mae_tokens": 5e-5, "high_ref_feature": 5e-5, "planes": 1e-4, "image": 5e-4,
             "image_raw": 1e-3, "feature_image": 1e-3, "image_depth": 2e-4, "sr_block0_x": 1e-3, "sr_block1_x": 5e-4}
"""the fixture README's suggested absolute tolerances (section 6)"""


@pytest.fixture(scope="module")
def golden():
    """The network with the fixture's weights, its recorded features and renders from both cameras."""
    expected = load_file(GOLDEN / "expected.safetensors")
    encoder_state, renderer_state = formula_state(ThreeDPE())
    net = ThreeDPE.from_state_dicts(encoder_state, renderer_state).to(DEVICE)
    if DEVICE.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    features: dict[str, torch.Tensor] = {}

    def record(name, pick=lambda out: out):
        return lambda module, args, out: features.__setitem__(name, pick(out).cpu())

    enc = net.encoder
    hooks = [enc.encoder.register_forward_hook(record("resnet_feature")),
             enc.decoder.register_forward_hook(record("low_feature")),
             enc.F_encoder.register_forward_hook(record("f_feature")),
             enc.EHigh_encoder.register_forward_hook(record("high_feature")),
             enc.Ref_encoder.patch_emb.register_forward_hook(record("ref_query_tokens", lambda out: out[0])),
             enc.Ref_encoder.mae_encoder.register_forward_hook(record("mae_tokens")),
             enc.Ref_encoder.register_forward_hook(record("high_ref_feature"))]
    planes = net.encode(expected["input"].to(DEVICE), expected["ref_mae"].to(DEVICE))
    features["planes"] = planes.cpu()
    sr = net.renderer.superresolution
    for camera in ("front", "side"):
        hooks += [sr.block0.register_forward_hook(record(f"sr_block0_x_{camera}", lambda out: out[0])),
                  sr.block1.register_forward_hook(record(f"sr_block1_x_{camera}", lambda out: out[0]))]
        out = net.render(planes, expected[f"c_{camera}"].to(DEVICE), deterministic_sampling=True)
        for hook in hooks[-2:]:
            hook.remove()
        features.update({f"{key}_{camera}": value.cpu() for key, value in out.items()})
    for hook in hooks:
        hook.remove()
    return expected, features, (encoder_state, renderer_state)


def _differences(expected: dict, name: str, value: torch.Tensor) -> list[float]:
    """Max differences to every stored form of ``name``: full tensor, sampled values, channel means."""
    found = []
    if name in expected:
        assert value.shape == expected[name].shape, name
        found.append((value - expected[name]).abs().max().item())
    if f"{name}_flat_index" in expected:
        sampled = value.reshape(-1)[expected[f"{name}_flat_index"]]
        found.append((sampled - expected[f"{name}_flat_values"]).abs().max().item())
    if f"{name}_mean_per_channel" in expected:
        channel = 1 if value.ndim == 4 else value.ndim - 1
        means = value.double().mean(dim=tuple(d for d in range(value.ndim) if d != channel)).float()
        found.append((means.reshape(1, -1) - expected[f"{name}_mean_per_channel"]).abs().max().item())
    return found


@needs_golden
@pytest.mark.parametrize("name", ["resnet_feature", "low_feature", "f_feature", "high_feature", "ref_query_tokens",
                                  "mae_tokens", "high_ref_feature", "planes"])
def test_encoder_features_match_the_official_code(golden, name):
    expected, features, _ = golden
    found = _differences(expected, name, features[name])
    assert found, f"the fixture stores nothing for {name}"
    assert max(found) <= TOLERANCE[name], (name, found)


@needs_golden
@pytest.mark.parametrize("camera", ["front", "side"])
@pytest.mark.parametrize("name", ["image", "image_raw", "image_depth", "feature_image", "sr_block0_x", "sr_block1_x"])
def test_renders_match_the_official_code(golden, name, camera):
    expected, features, _ = golden
    found = _differences(expected, f"{name}_{camera}", features[f"{name}_{camera}"])
    assert found, f"the fixture stores nothing for {name}_{camera}"
    assert max(found) <= TOLERANCE[name], (name, camera, found)


@needs_golden
def test_formula_weights_are_the_fixtures(golden):
    meta = json.loads((GOLDEN / "meta.json").read_text())
    encoder_state, renderer_state = golden[2]
    parameters = {f"encoder.{k}": v for k, v in encoder_state.items()}
    net = ThreeDPE()
    kept = {f"renderer.{name}" for name, _ in net.renderer.named_parameters()}
    parameters.update({f"renderer.{k}": v for k, v in renderer_state.items() if f"renderer.{k}" in kept})
    digest = hashlib.sha256()
    for name in sorted(parameters):
        digest.update(parameters[name].contiguous().numpy().astype("<f4").tobytes())
    assert digest.hexdigest() == meta["weights"]["sha256_of_all_parameters"]


@needs_golden
def test_inputs_rebuilt_from_the_photos_are_the_stored_tensors(golden):
    expected = golden[0]
    photo = np.array(Image.open(SHARED / "data" / "portraits" / "aligned" / "01.jpg").convert("RGB"))
    image = torch.from_numpy(photo).permute(2, 0, 1).float().div(255)[None] * 2 - 1
    assert torch.equal(image, expected["input"])
    ref = np.array(Image.open(SHARED / "data" / "portraits" / "references" / "01.jpg").convert("RGB"))
    rebuilt = reference_tensor(torch.from_numpy(ref).permute(2, 0, 1).float().div(255)[None])
    assert (rebuilt - expected["ref_mae"]).abs().max() <= 1e-6


@needs_golden
def test_legacy_smp_decoder_names_load_to_the_same_network(golden):
    expected, features, (encoder_state, renderer_state) = golden
    legacy = {("decoder.0." + k[len("decoder.aspp."):]) if k.startswith("decoder.aspp.")
              else ("decoder.1." + k[len("decoder.conv."):]) if k.startswith("decoder.conv.") else k: v
              for k, v in encoder_state.items()}
    assert "decoder.0.project.0.weight" in legacy and "decoder.1.weight" in legacy
    net = ThreeDPE.from_state_dicts(legacy, renderer_state)
    assert not net.training and not any(p.requires_grad for p in net.parameters())
    assert torch.equal(net.encoder.decoder.conv.weight, encoder_state["decoder.conv.weight"])


@needs_manifest
def test_parameter_names_and_shapes_are_the_published_checkpoints():
    manifest = json.loads(MANIFEST.read_text())
    net = ThreeDPE()
    for module, key in ((net.encoder, "encoder_state_dict_shapes"), (net.renderer, "renderer_state_dict_shapes")):
        ours = {name: list(value.shape) for name, value in module.state_dict().items()}
        assert ours == manifest[key]
    assert sum(p.numel() for p in net.encoder.parameters()) == manifest["encoder_params"]


def test_missing_and_foreign_keys_are_named():
    net = ThreeDPE()
    encoder_state, renderer_state = net.encoder.state_dict(), net.renderer.state_dict()
    del encoder_state["Final_encoder.block.attn.sr.weight"]
    encoder_state["encoder.fc.weight"] = torch.zeros(1000, 512)
    with pytest.raises(CheckpointError, match=r"1 missing \(Final_encoder\.block\.attn\.sr\.weight\); "
                                              r"1 unexpected \(encoder\.fc\.weight\)"):
        ThreeDPE.from_state_dicts(encoder_state, renderer_state, "my.pt")
    renderer_state["const"] = torch.zeros(1, 1, 256)
    with pytest.raises(CheckpointError, match=r"renderer_state_dict .*const \(1, 1, 256\) \(expected \(1, 1, 512\)\)"):
        ThreeDPE.from_state_dicts(net.encoder.state_dict(), renderer_state, "my.pt")


class _RunsOsSystem:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_checkpoint_that_asks_to_run_code_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "3dpe.pt"
    torch.save({"encoder_state_dict": {}, "renderer_state_dict": {}, "opts": _RunsOsSystem(marker)}, path)
    with pytest.raises(CheckpointError, match=r"refusing to load .*3dpe\.pt: it asks to run posix\.system"):
        ThreeDPE.load(path)
    assert not marker.exists()


def test_truncated_missing_and_foreign_checkpoints_are_reported(tmp_path):
    path = tmp_path / "3dpe.pt"
    torch.save({"encoder_state_dict": {"w": torch.zeros(64)}, "renderer_state_dict": {},
                "opts": {"batch_size": 4}, "step": 10}, path)
    data = read_checkpoint(path)
    assert data["opts"] == {"batch_size": 4}
    with pytest.raises(CheckpointError, match="encoder_state_dict is not 3DPE's: 327 missing"):
        ThreeDPE.load(path)
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(CheckpointError, match=str(path)):
        ThreeDPE.load(path)
    with pytest.raises(CheckpointError, match="file not found"):
        ThreeDPE.load(tmp_path / "absent.pt")
    other = tmp_path / "other.pt"
    torch.save({"state_dict": {}}, other)
    with pytest.raises(CheckpointError, match="is not a 3DPE checkpoint: it needs encoder_state_dict and "
                                              "renderer_state_dict \\(it holds state_dict\\)"):
        ThreeDPE.load(other)
    legacy = tmp_path / "legacy.pt"
    legacy.write_bytes(pickle.dumps({"encoder_state_dict": {}}, protocol=2))
    with pytest.raises(CheckpointError):
        ThreeDPE.load(legacy)


def test_inputs_of_the_wrong_shape_are_refused():
    net = ThreeDPE()
    with pytest.raises(ValueError, match=r"image must be \(B, 3, 512, 512\), got \(1, 3, 256, 256\)"):
        net.encode(torch.zeros(1, 3, 256, 256), torch.zeros(1, 3, 224, 224))
    with pytest.raises(ValueError, match=r"cameras must be \(1, 25\) EG3D labels"):
        net.render(torch.zeros(1, 96, 256, 256), torch.zeros(1, 16))

"""The EG3D generator against the reference outputs of the official code (../shared fixtures),
the official FFHQ layout, and the errors users get for bad checkpoints and inputs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from eg3d_pickles import write_live3d_pth, write_official_pickle
from safetensors.torch import load_file, save_file
from tiny_portrait import frontal_label, tiny_kwargs

from engine.core.errors import CheckpointError
from engine.portrait.checkpoints import GeneratorCheckpoint
from engine.portrait.eg3d import TriPlaneGenerator, build_generator, generator_from_checkpoint, load_generator
from engine.portrait.stylegan import blur, resample_filter, upsample2d
from engine.portrait.superresolution import SUPERRESOLUTION_MODULES

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures"
GOLDEN = FIXTURES / "eg3d-golden-2x"
MANIFEST = FIXTURES / "eg3d_ffhq512-128_manifest.json"
needs_golden = pytest.mark.skipif(not GOLDEN.is_dir(), reason="../shared/fixtures/eg3d-golden-2x is not beside the repo")
needs_manifest = pytest.mark.skipif(not MANIFEST.is_file(), reason="../shared/fixtures manifest is not beside the repo")


@pytest.fixture(scope="module")
def golden():
    meta = json.loads((GOLDEN / "meta.json").read_text())
    return meta, load_file(GOLDEN / "expected.safetensors"), load_generator(GOLDEN / "generator.safetensors")


@needs_golden
def test_mapping_reproduces_the_official_ws(golden):
    meta, expected, generator = golden
    ws = generator.mapping(expected["z"], expected["c_mapping"], truncation_psi=meta["truncation_psi"],
                           truncation_cutoff=meta["truncation_cutoff"])
    assert ws.shape == expected["ws"].shape
    assert (ws - expected["ws"]).abs().max() <= 1e-4


@needs_golden
def test_synthesis_reproduces_the_official_planes_and_images(golden):
    meta, expected, generator = golden
    out = generator.synthesis(expected["ws"], expected["c_render"], noise_mode=meta["noise_mode"],
                              neural_rendering_resolution=meta["neural_rendering_resolution"],
                              deterministic_sampling=True)
    planes = out["planes"]
    assert planes.shape == (1, 96, 256, 256)
    sampled = planes.flatten()[expected["planes_flat_index"].long()]
    assert (sampled - expected["planes_flat_values"]).abs().max() <= 1e-3
    assert (planes.mean(dim=(2, 3)) - expected["planes_mean_per_channel"]).abs().max() <= 1e-3
    for key, tolerance in (("image_raw", 5e-3), ("image_depth", 5e-3), ("image", 1e-2)):
        assert out[key].shape == expected[key].shape, key
        assert (out[key] - expected[key]).abs().max() <= tolerance, key


@needs_golden
@pytest.mark.parametrize("writer, name", [(write_official_pickle, "network-snapshot.pkl"),
                                          (write_live3d_pth, "ffhqrebalanced.pth")], ids=["pkl", "pth"])
def test_the_golden_generator_saved_as_users_have_it_reproduces_the_official_images(golden, tmp_path, writer, name):
    meta, expected, generator = golden
    loaded = load_generator(writer(tmp_path / name, generator, meta["generator_kwargs"]))
    assert loaded.neural_rendering_resolution == meta["neural_rendering_resolution"]
    out = loaded.synthesis(expected["ws"], expected["c_render"], noise_mode=meta["noise_mode"],
                           deterministic_sampling=True)  # at the resolution the file carries
    for key, tolerance in (("image_raw", 5e-3), ("image", 1e-2)):
        assert out[key].shape == expected[key].shape, key
        assert (out[key] - expected[key]).abs().max() <= tolerance, key


@needs_golden
def test_cached_planes_render_the_same_image_and_sampling_is_random_unless_fixed(golden):
    meta, expected, generator = golden
    kwargs = {"noise_mode": "const", "neural_rendering_resolution": 32}
    fixed = generator.synthesis(expected["ws"], expected["c_render"], deterministic_sampling=True, **kwargs)
    cached = generator.synthesis(expected["ws"], expected["c_render"], deterministic_sampling=True,
                                 planes=fixed["planes"], **kwargs)
    assert torch.equal(cached["image"], fixed["image"])
    torch.manual_seed(0)
    random_a = generator.synthesis(expected["ws"], expected["c_render"], planes=fixed["planes"], **kwargs)
    random_b = generator.synthesis(expected["ws"], expected["c_render"], planes=fixed["planes"], **kwargs)
    assert not torch.equal(random_a["image_depth"], random_b["image_depth"])
    # jittered samples estimate the same integral: depth agrees to a fraction of a sample spacing
    spacing = (3.3 - 2.25) / (meta["generator_kwargs"]["rendering_kwargs"]["depth_resolution"] - 1)
    assert (random_a["image_depth"] - fixed["image_depth"]).abs().median() < spacing


@needs_manifest
def test_the_full_ffhq_configuration_has_the_official_names_and_shapes():
    manifest = json.loads(MANIFEST.read_text())
    generator = build_generator(manifest["generator_kwargs"])
    shapes = {name: list(value.shape) for name, value in generator.state_dict().items()}
    assert list(shapes) == list(manifest["state_dict_shapes"])  # same names, same order
    assert shapes == manifest["state_dict_shapes"]
    assert sum(value.numel() for value in generator.state_dict().values()) == manifest["num_params"]


@pytest.mark.parametrize("name", sorted(SUPERRESOLUTION_MODULES))
def test_every_superresolution_module_makes_its_resolution(name):
    spec = SUPERRESOLUTION_MODULES[name]
    generator = build_generator(tiny_kwargs(name, spec.output))
    assert generator.superresolution.block1.resolution == spec.output
    if spec.output <= 256:  # the 512 modules are too slow to run on every test pass; their layout is checked above
        torch.manual_seed(1)
        with torch.no_grad():
            out = generator(torch.randn(1, 16), frontal_label(), neural_rendering_resolution=16)
        assert out["image"].shape == (1, 3, spec.output, spec.output)
        assert out["image_raw"].shape == (1, 3, 16, 16) and out["image_depth"].shape == (1, 1, 16, 16)
        assert torch.isfinite(out["image"]).all()


def test_a_resolution_the_superresolution_module_cannot_make_is_refused():
    with pytest.raises(CheckpointError, match="SuperresolutionHybrid2X produces 128 x 128 images, not 256"):
        build_generator(tiny_kwargs("SuperresolutionHybrid2X", 256))
    with pytest.raises(CheckpointError, match="unknown super-resolution module 'training.superresolution.Magic"):
        build_generator(tiny_kwargs("Magic"))


def test_camera_labels_with_non_finite_values_or_wrong_shape_are_refused():
    generator = build_generator(tiny_kwargs())
    z = torch.randn(2, 16)
    bad = frontal_label(2)
    bad[1, 3] = float("nan")
    with pytest.raises(ValueError, match=r"non-finite values \(NaN or infinity\) in row\(s\) \[1\]"):
        generator.mapping(z, bad)
    with pytest.raises(ValueError, match=r"camera labels must be N x 25 .* got shape \(2, 16\)"):
        generator.mapping(z, bad[:, :16])
    ws = generator.mapping(z, frontal_label(2))
    bad[1, 3] = float("inf")
    with pytest.raises(ValueError, match="non-finite"):
        generator.synthesis(ws, bad)


@pytest.mark.parametrize("superresolution, img_resolution, recorded, expected", [
    ("SuperresolutionHybrid2X", 128, 32, 32), ("SuperresolutionHybrid2X", 128, None, 64),
    ("SuperresolutionHybrid8XDC", 512, None, 128), ("SuperresolutionHybrid8XDC", 512, 64, 64)])
def test_the_neural_rendering_resolution_is_the_checkpoints_else_the_official_default(
        superresolution, img_resolution, recorded, expected):
    kwargs = tiny_kwargs(superresolution, img_resolution)
    checkpoint = GeneratorCheckpoint(kwargs, build_generator(kwargs).state_dict(), recorded)
    assert generator_from_checkpoint(checkpoint, "generator.pth").neural_rendering_resolution == expected


def test_a_state_dict_with_missing_layers_names_them(tmp_path):
    generator = build_generator(tiny_kwargs())
    state = {name: value.contiguous() for name, value in generator.state_dict().items()
             if not name.startswith("decoder.")}
    state["backbone.mapping.fc9.weight"] = torch.zeros(2, 2)
    save_file(state, tmp_path / "generator.safetensors")
    (tmp_path / "meta.json").write_text(json.dumps({"generator_kwargs": tiny_kwargs()}))
    with pytest.raises(CheckpointError) as error:
        load_generator(tmp_path / "generator.safetensors")
    message = str(error.value)
    assert "missing: decoder.net.0.weight, decoder.net.0.bias" in message
    assert "unexpected: backbone.mapping.fc9.weight" in message


def test_weights_round_trip_through_a_converted_folder(tmp_path):
    from engine.portrait.checkpoints import write_converted

    torch.manual_seed(3)
    generator = build_generator(tiny_kwargs())
    path = write_converted(tmp_path / "converted", tiny_kwargs(), generator.state_dict())
    loaded = load_generator(path)
    assert isinstance(loaded, TriPlaneGenerator) and not loaded.training
    z, c = torch.randn(1, 16), frontal_label()
    with torch.no_grad():
        expected = generator.eval()(z, c, noise_mode="const", deterministic_sampling=True,
                                    neural_rendering_resolution=16)
        got = loaded(z, c, noise_mode="const", deterministic_sampling=True, neural_rendering_resolution=16)
    assert torch.equal(got["image"], expected["image"])


def test_upsampling_is_zero_insertion_then_the_low_pass_filter():
    """upsample2d (one transposed convolution) against its definition: a zero after every pixel, then
    the filter with gain 4 over a border of 2 zeros before and 1 after."""
    x = torch.randn(2, 3, 5, 7)
    stuffed = torch.zeros(2, 3, 10, 14)
    stuffed[..., ::2, ::2] = x
    expected = blur(F.pad(stuffed, (2, 1, 2, 1)), resample_filter(), pad=0, gain=4.0)
    assert (upsample2d(x, resample_filter()) - expected).abs().max() <= 1e-6

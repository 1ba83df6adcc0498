"""GRAM's generator against the golden fixture recorded from the official code (../shared/fixtures/gram-golden),
and the official checkpoint formats: a generator.pth state dict with its pickled torch_ema average beside it."""

from __future__ import annotations

import json
import os
import sys
import types
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from engine.core.errors import CheckpointError
from engine.portrait.gram import GramConfig, GramGenerator, level_crossings, load_gram, official_parameter_order

GOLDEN = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "gram-golden"
needs_golden = pytest.mark.skipif(not GOLDEN.is_dir(), reason="../shared/fixtures/gram-golden is not beside the repo")
SMALL = {"generator_kwargs": {"z_dim": 16, "img_size": 8},
         "representation_kwargs": {"hidden_dim": 16, "hidden_dim_sample": 8, "layer_num_sample": 2},
         "renderer_kwargs": {"num_samples": 16, "num_manifolds": 6, "levels_start": 23, "levels_end": 8}}


@needs_golden
def test_the_official_outputs_are_reproduced():
    generator = load_gram(GOLDEN)
    expected = load_file(str(GOLDEN / "expected.safetensors"))
    with torch.no_grad():
        out = generator.render(expected["z"], expected["camera_pos"], img_size=32)
    assert (out["image"] - expected["image"]).abs().max() <= 1e-3
    for key in ("points", "outputs", "z_vals", "weights"):
        assert out[key].shape == expected[key].shape
        assert (out[key] - expected[key]).abs().max() <= 1e-4, key
    assert out["weights"].sum(-2).sub(1).abs().max() < 1e-4  # the background plane takes what light is left


def test_a_point_lies_on_the_first_crossing_of_each_level_linearly_interpolated():
    depths = torch.linspace(0, 1, 6)
    points = torch.stack([torch.zeros(6), torch.zeros(6), depths], -1)[None]  # one ray along z
    scalars = torch.tensor([[30.0, 25.0, 20.0, 22.0, 10.0, 9.99]])  # falls, rises, falls, barely falls
    found, valid = level_crossings(points, scalars, torch.tensor([24.0, 21.0, 15.0, 9.995, 5.0]))
    assert valid[0, :, 0].tolist() == [1, 1, 1, 1, 0]
    assert found[0, 0, 2] == pytest.approx(0.2 + 0.2 * 1 / 5)  # 25 → 20 crosses 24 a fifth of the way
    assert found[0, 1, 2] == pytest.approx(0.2 + 0.2 * 4 / 5)  # 21: the first fall through it, not 22 → 10
    assert found[0, 2, 2] == pytest.approx(0.6 + 0.2 * 7 / 12)  # 22 → 10 crosses 15
    assert found[0, 3, 2] == pytest.approx(1.0)  # 10 → 9.99 changes too little: its far end
    assert found[0, 4, 2] == pytest.approx(1.0)  # never reached: the last sample, invalid


def _official_folder(tmp_path: Path, meta: dict | None = SMALL, ema_scale: float | None = 0.5) -> tuple[Path, dict]:
    """A folder as the official training writes it: generator.pth (a state dict) and ema.pth (a pickled
    torch_ema ExponentialMovingAverage whose shadow list follows the official parameter order)."""
    torch.manual_seed(0)
    cfg = GramConfig.from_meta(meta) if meta else GramConfig()
    state = GramGenerator(cfg).state_dict()
    folder = tmp_path / "official"
    folder.mkdir()
    torch.save(state, folder / "generator.pth")
    if meta:
        (folder / "meta.json").write_text(json.dumps(meta))
    if ema_scale is not None:
        module = types.ModuleType("torch_ema.ema")
        average = type("ExponentialMovingAverage", (), {"__module__": "torch_ema.ema"})
        module.ExponentialMovingAverage = average
        sys.modules.update({"torch_ema": types.ModuleType("torch_ema"), "torch_ema.ema": module})
        try:
            ema = average()
            ema.decay, ema.num_updates, ema.collected_params = 0.999, 10, []
            ema.shadow_params = [state[name] * ema_scale for name in official_parameter_order(cfg)]
            torch.save(ema, folder / "ema.pth")
        finally:
            del sys.modules["torch_ema"], sys.modules["torch_ema.ema"]
    return folder, state


def test_an_official_checkpoint_loads_with_its_moving_average_in_the_official_order(tmp_path):
    folder, state = _official_folder(tmp_path)
    generator = load_gram(folder)
    assert not generator.training
    for name, value in generator.state_dict().items():
        assert torch.equal(value, state[name] * 0.5), name
    names = [name for name, _ in generator.named_parameters()]
    assert names == official_parameter_order(generator.cfg)  # registration order = the official one
    with torch.no_grad():
        out = generator.render(torch.randn(2, 16), torch.tensor([[1.5, 1.4], [1.6, 1.7]]))
    assert out["image"].shape == (2, 3, 8, 8) and out["points"].shape == (2, 8, 8, 6, 3)
    assert out["image"].min() >= -1 and out["image"].max() <= 1


def test_without_its_average_the_raw_weights_load(tmp_path):
    folder, state = _official_folder(tmp_path, ema_scale=None)
    generator = load_gram(folder / "generator.pth")
    assert all(torch.equal(v, state[k]) for k, v in generator.state_dict().items())


def test_without_meta_json_the_sizes_come_from_the_parameters_and_a_wrong_meta_json_is_named(tmp_path):
    folder, state = _official_folder(tmp_path, ema_scale=None)
    (folder / "meta.json").unlink()
    generator = load_gram(folder)  # FFHQ settings, with the widths and depths the parameters show
    assert (generator.cfg.z_dim, generator.cfg.hidden_dim, generator.cfg.hidden_dim_sample,
            generator.cfg.layer_num_sample, generator.cfg.fov) == (16, 16, 8, 2, 12.0)
    wrong = {**SMALL, "representation_kwargs": {**SMALL["representation_kwargs"], "hidden_dim": 32}}
    (folder / "meta.json").write_text(json.dumps(wrong))
    with pytest.raises(CheckpointError, match=r"generator\.pth holds a GRAM generator of another size: "
                                              r"representation\.rf_network\.\S+ is \(16(, \d+)?\), these settings make "
                                              r"it \(32"):
        load_gram(folder)


def test_missing_and_extra_parameters_are_reported(tmp_path):
    folder, state = _official_folder(tmp_path, ema_scale=None)
    state.pop("representation.sample_network.output_layer.bias")
    state["representation.rf_network.extra"] = torch.zeros(1)
    torch.save(state, folder / "generator.pth")
    with pytest.raises(CheckpointError, match=r"1 parameters missing \(representation\.sample_network\.output_layer"
                                              r"\.bias\), 1 unexpected \(representation\.rf_network\.extra\)"):
        load_gram(folder)


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("echo owned",))


def test_an_average_that_asks_to_run_code_is_refused(tmp_path):
    folder, _ = _official_folder(tmp_path, ema_scale=None)
    torch.save({"shadow_params": _RunsCode()}, folder / "ema.pth")
    with pytest.raises(CheckpointError, match=r"ema\.pth.*asks to run (posix|os)\.system"):
        load_gram(folder)


def test_an_unknown_setting_in_meta_json_is_named(tmp_path):
    folder = tmp_path / "g"
    folder.mkdir()
    from safetensors.torch import save_file

    save_file(GramGenerator(GramConfig.from_meta(SMALL)).state_dict(), str(folder / "generator.safetensors"))
    (folder / "meta.json").write_text(json.dumps({**SMALL, "renderer_kwargs": {"num_planes": 3}}))
    with pytest.raises(CheckpointError, match=r"meta\.json: unknown GRAM setting renderer_kwargs\.num_planes"):
        load_gram(folder)

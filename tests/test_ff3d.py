"""FF3D: the I2T network, its pre-training and fine-tuning, the stylised set, applying and mixing styles, the CLI,
on tiny networks and the shipped embedded prior."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from engine.cli import main as cli_main
from engine.core.errors import CheckpointError, UserInputError
from engine.core.jobs import CancelToken, run_job
from engine.portrait.ff3d import (I2T, I2TShape, Modulation, NoI2T, PretrainConfig, PriorHeads, pretrain_i2t_job,
                                  pretrain_losses, prior_fingerprint, prior_heads, prior_latents, read_i2t, save_i2t)
from engine.portrait.ff3d_style import (NEGATIVE_PROMPT, BuildSetConfig, StyleModel, StyleTrainConfig, build_set_job,
                                        density_regularisation, grid_angles, load_style, positive_prompt, read_set,
                                        set_kept, style_losses, train_style_job)
from engine.portrait.prior import load_prior

TINY = I2TShape(image_size=32, plane_size=32, ws_channels=4, trunk=(8,), widths=(8,))


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def prior():
    return load_prior()


@pytest.fixture(scope="module")
def tiny_i2t(tmp_path_factory, prior) -> Path:
    folder = tmp_path_factory.mktemp("i2t")
    torch.manual_seed(0)
    save_i2t(folder, I2T(TINY), {"prior": prior_fingerprint(prior), "styles": ["reconstruction"]})
    return folder


@pytest.fixture(scope="module")
def tiny_set(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("set") / "bronze"
    cfg = BuildSetConfig(style="a bronze statue", out=str(folder), grid="2x2", identities=1)
    run_job(build_set_job(cfg, CancelToken()), lambda e: None)
    return folder


def run(job) -> list:
    events = []
    run_job(job, events.append)
    return events


def test_modulation_normalises_each_pixel_across_channels_then_applies_spatial_gamma_beta():
    torch.manual_seed(1)
    layer = Modulation(3, 2)
    x = torch.randn(1, 3, 4, 4)
    ws = torch.randn(1, 2, 2, 2)
    out = layer(x, ws).detach().numpy()
    gamma_beta = layer.affine(ws)
    gamma_beta = torch.nn.functional.interpolate(gamma_beta, size=(4, 4), mode="bilinear", align_corners=False)
    gamma_beta = gamma_beta.detach().numpy()
    for i in range(4):
        for j in range(4):
            v = x[0, :, i, j].numpy().astype(np.float64)
            normalised = (v - v.mean()) / math.sqrt(v.var() + Modulation.EPS)
            expected = normalised * (1 + gamma_beta[0, :3, i, j]) + gamma_beta[0, 3:, i, j]
            np.testing.assert_allclose(out[0, :, i, j], expected, rtol=1e-5, atol=1e-5)
    assert np.ptp(gamma_beta[0, 0]) > 0  # γ varies over the image


def test_vector_ws_has_no_spatial_dimension_and_modulates_every_pixel_alike():
    network = I2T(dataclasses.replace(TINY, vector_ws=True))
    ws = network.ws(torch.rand(2, 3, 32, 32))
    assert ws.shape == (2, 4, 1, 1)
    layer = Modulation(3, 4)
    x = torch.ones(1, 3, 5, 5) * torch.tensor([1.0, 2.0, 4.0])[:, None, None]
    out = layer(x, ws[:1])
    torch.testing.assert_close(out, out[..., :1, :1].expand_as(out))


def test_i2t_outputs_triplanes_of_its_plane_size_per_style():
    network = I2T(dataclasses.replace(TINY, styles=2, plane_size=64, widths=(8, 8)))
    image = torch.rand(1, 3, 32, 32) * 2 - 1
    assert network(image).shape == (1, 96, 64, 64)
    assert not torch.allclose(network(image, 0), network(image, 1))  # each style its own w_s path
    with pytest.raises(UserInputError, match="2 style"):
        network(image, 2)


def test_no_i2t_ablation_starts_from_the_backbone_planes():
    network = NoI2T(TINY)
    backbone = torch.randn(1, 96, 32, 32)
    torch.testing.assert_close(network(torch.rand(1, 3, 32, 32), backbone), backbone)


def test_density_regularisation_matches_an_analytic_field():
    slope = torch.tensor([3.0, -1.0, 0.5])
    points = torch.rand(1, 200_000, 3, generator=torch.Generator().manual_seed(0)) - 0.5
    got = density_regularisation(lambda p: (p * slope).sum(-1, keepdim=True), points, 0.01,
                                 torch.Generator().manual_seed(1))
    # σ(x) − σ(x + δ) = −slope·δ ~ N(0, 0.01² |slope|²): its mean absolute value is 0.01 |slope| sqrt(2/π)
    expected = 0.01 * float(slope.norm()) * math.sqrt(2 / math.pi)
    assert abs(float(got) - expected) < 0.01 * expected
    assert float(density_regularisation(lambda p: torch.ones_like(p[..., :1]), points, 0.01,
                                        torch.Generator())) == 0.0


def test_pretraining_lowers_its_loss_and_writes_a_loadable_network(tmp_path, prior):
    cfg = PretrainConfig(out=str(tmp_path / "i2t"), steps=80, batch=2, pool_heads=4, refresh_per_step=0, rays=128,
                         shape=dataclasses.asdict(TINY), preview_every=40, lr=0.002)
    batch = PriorHeads(*prior_heads(prior, prior_latents(prior, [0, 1]), TINY.plane_size))
    torch.manual_seed(0)
    before = pretrain_losses(I2T(TINY), prior, batch, cfg, torch.Generator().manual_seed(5))["total"]
    events = run(pretrain_i2t_job(cfg, CancelToken()))
    network, meta = read_i2t(tmp_path / "i2t")
    after = pretrain_losses(network, prior, batch, cfg, torch.Generator().manual_seed(5))["total"]
    assert float(after.detach()) < 0.7 * float(before.detach())
    assert meta["prior"] == prior_fingerprint(prior) and network.shape == TINY
    assert any(type(e).__name__ == "Preview" for e in events)
    recipe = json.loads((tmp_path / "i2t" / "recipe.json").read_text())
    assert recipe["command"].startswith("python main.py portrait train-i2t --out DIR --steps 80")


def test_the_set_holds_the_frontal_view_and_the_grid_with_cameras(tiny_set):
    meta = json.loads((tiny_set / "set.json").read_text())
    assert meta["prompt"] == "turn the head into a bronze statue, realistic, detail, 8k, photorealistic"
    assert meta["negative_prompt"] == NEGATIVE_PROMPT
    angles = [(v["yaw"], v["pitch"]) for v in meta["views"]]
    assert angles == [(0.0, 0.0), (-30.0, -20.0), (30.0, -20.0), (-30.0, 20.0), (30.0, 20.0)]  # embedded: pitch ±20
    assert grid_angles(10, 10, 30.0, 30.0)[0] == (0.0, 0.0) and len(grid_angles(10, 10, 30.0, 30.0)) == 101
    loaded = read_set(tiny_set)
    assert loaded.targets.shape == (5, 3, 128, 128) and loaded.inputs.shape == (1, 3, 128, 128)
    source = np.asarray(Image.open(tiny_set / "sources" / "id00_v001.png"), dtype=np.float32)
    view = np.asarray(Image.open(tiny_set / "views" / "id00_v001.png"), dtype=np.float32)
    assert np.abs(source - view).mean() > 10  # stylised
    # the offline editor's per-view variation: the same style differs between views beyond what the views differ
    first = np.asarray(Image.open(tiny_set / "views" / "id00_v000.png"), dtype=np.float32)
    assert np.abs(first.mean((0, 1)) - view.mean((0, 1))).max() > 0


def test_set_views_can_be_rejected_but_not_all(tiny_set, tmp_path):
    import shutil

    copy = tmp_path / "set"
    shutil.copytree(tiny_set, copy)
    set_kept(copy, {1: False})
    assert len(read_set(copy).targets) == 4
    set_kept(copy, {k: False for k in range(5)})
    with pytest.raises(UserInputError, match="every view of the set was rejected"):
        read_set(copy)
    set_kept(copy, {0: True})
    (copy / "views" / "id00_v000.png").unlink()
    with pytest.raises(UserInputError, match="views/id00_v000.png is missing"):
        read_set(copy)
    meta = json.loads((copy / "set.json").read_text())
    meta["views"][0]["camera"] = [0.0] * 3
    (copy / "set.json").write_text(json.dumps(meta))
    with pytest.raises(UserInputError, match="view 0 has no camera"):
        read_set(copy)
    with pytest.raises(UserInputError, match="no set.json"):
        read_set(tmp_path)


@pytest.mark.parametrize("style, message", [("  ", "the style is empty"), ("Na'vi from Avatar", "bronze statue")])
def test_styles_the_offline_editor_cannot_make_are_refused_listing_its_vocabulary(tmp_path, style, message):
    with pytest.raises(UserInputError, match=message):
        run(build_set_job(BuildSetConfig(style=style, out=str(tmp_path / "s"), grid="2x2", identities=1),
                          CancelToken()))
    assert not (tmp_path / "s" / "set.json").exists()


def test_ip2p_set_reuses_one_fixed_noise_and_ff3ds_prompts_for_every_view(tmp_path, monkeypatch):
    from tiny_ip2p import write_tiny_ip2p

    from engine.editors.ip2p import InstructPix2PixEditor

    calls = []
    original = InstructPix2PixEditor.stylise

    def spy(self, view, prompt, negative, noise, tau=0.9, guidance=None, cancel=None, on_step=None):
        calls.append((prompt, negative, noise.clone(), tau, guidance))
        return original(self, view, prompt, negative, noise, tau, guidance, cancel, on_step)

    monkeypatch.setattr(InstructPix2PixEditor, "stylise", spy)
    model = write_tiny_ip2p(tmp_path / "ip2p")
    run(build_set_job(BuildSetConfig(style="Na'vi from Avatar", out=str(tmp_path / "set"), grid="1x2",
                                     editor="ip2p", model=str(model), device="cpu", identities=1), CancelToken()))
    assert len(calls) == 3
    for prompt, negative, noise, tau, guidance in calls:
        assert prompt == positive_prompt("Na'vi from Avatar") and negative == NEGATIVE_PROMPT and tau == 0.9
        assert (guidance.text, guidance.image, guidance.steps) == (20.0, 1.5, 20)
        torch.testing.assert_close(noise, calls[0][2])
    assert len(read_set(tmp_path / "set").targets) == 3


def test_fine_tuning_lowers_its_loss_and_the_style_applies(tiny_set, tiny_i2t, tmp_path, prior):
    cfg = StyleTrainConfig(set=str(tiny_set), out=str(tmp_path / "style"), i2t=str(tiny_i2t), steps=30, rays=256,
                           density_points=256, preview_every=10, lpips="off")
    data = read_set(tiny_set)
    image = torch.nn.functional.interpolate(data.inputs[:1], size=(32, 32), mode="area") * 2 - 1
    targets = torch.nn.functional.interpolate(data.targets, size=(64, 64), mode="area")

    def loss(network) -> float:
        with torch.no_grad():
            return float(style_losses(prior, network(image, 0), data.cameras, targets, cfg, None,
                                      torch.Generator().manual_seed(2))["total"])

    before = loss(read_i2t(tiny_i2t)[0])
    events = run(train_style_job(cfg, CancelToken()))
    style = load_style(tmp_path / "style")
    assert loss(style.network) < 0.8 * before
    assert style.names == ["a bronze statue"] and style.meta["prior"] == prior_fingerprint(prior)
    assert (tmp_path / "style" / "thumbnail.png").is_file()
    assert sum(type(e).__name__ == "Preview" for e in events) == 3  # the live orbit
    assert any(type(e).__name__ == "JobWarning" for e in events) is False  # lpips off: nothing to warn of


def test_a_cancelled_fine_tuning_resumes(tiny_set, tiny_i2t, tmp_path):
    cancel = CancelToken()
    cfg = StyleTrainConfig(set=str(tiny_set), out=str(tmp_path / "style"), i2t=str(tiny_i2t), steps=6, rays=64,
                           density_points=64, lpips="off")
    for event in train_style_job(cfg, cancel):
        if type(event).__name__ == "Progress" and event.step == 3:
            cancel.cancel()
    assert torch.load(tmp_path / "style" / "training_state.pt", weights_only=False)["step"] == 3
    assert not (tmp_path / "style" / "i2t.safetensors").exists()
    run(train_style_job(cfg, CancelToken()))
    style = load_style(tmp_path / "style")
    assert style.meta["steps"] == 6
    state = torch.load(tmp_path / "style" / "training_state.pt", weights_only=False)
    saved = style.network.state_dict()
    assert all(torch.equal(saved[k], v) for k, v in state["average"].items())  # the moving average is the style
    assert not all(torch.equal(saved[k], v) for k, v in state["network"].items())


def _style(tmp_path: Path, name: str, prior, seed: int, shape: I2TShape = TINY,
           styles: tuple[str, ...] = ("bronze statue",)) -> StyleModel:
    torch.manual_seed(seed)
    network = I2T(dataclasses.replace(shape, styles=len(styles)))
    save_i2t(tmp_path / name, network, {"kind": "ff3d-style", "variant": "i2t", "prior": prior_fingerprint(prior),
                                        "styles": [{"style": s} for s in styles]})
    return load_style(tmp_path / name)


def test_mixing_at_zero_and_one_gives_the_endpoints(tmp_path, prior):
    a, b = _style(tmp_path, "a", prior, 0), _style(tmp_path, "b", prior, 1)
    image = torch.rand(1, 3, 128, 128)
    with torch.no_grad():
        torch.testing.assert_close(a.planes(image, mix=(b, 0, 0.0)), a.planes(image), rtol=0, atol=0)
        torch.testing.assert_close(a.planes(image, mix=(b, 0, 1.0)), b.planes(image), rtol=0, atol=0)
        half = a.planes(image, mix=(b, 0, 0.5))
    assert not torch.allclose(half, a.planes(image)) and not torch.allclose(half, b.planes(image))
    bigger = _style(tmp_path, "c", prior, 2, dataclasses.replace(TINY, ws_channels=8))
    with pytest.raises(UserInputError, match="cannot be mixed"):
        a.planes(image, mix=(bigger, 0, 0.5))


def test_cli_builds_trains_and_applies_a_style(tmp_path, tiny_i2t):
    out = tmp_path / "run"
    assert cli_main(["portrait", "style", "build-set", "--style", "pencil sketch", "--grid", "1x2",
                     "--identities", "2", "--out", str(out / "set")]) == 0
    assert len(read_set(out / "set").inputs) == 2
    assert cli_main(["portrait", "style", "train", "--set", str(out / "set"), "--out", str(out / "style"),
                     "--i2t", str(tiny_i2t), "--steps", "2", "--lpips", "off"]) == 0
    assert cli_main(["portrait", "style", "apply", "--style", str(out / "style"), "--seed", "3", "--views", "2",
                     "--out", str(out / "views"), "--mix", str(out / "style"), "--alpha", "0.5"]) == 0
    written = sorted(p.name for p in (out / "views").glob("*.png"))
    assert written == ["input.png", "styled.png", "view_00_yaw-30.png", "view_01_yaw+30.png"]
    assert Image.open(out / "views" / "styled.png").size == (128, 128)


def test_applying_refuses_a_style_for_another_prior_and_a_bad_head(tmp_path, prior, tiny_i2t, capsys):
    _style(tmp_path, "s", prior, 0)
    meta = json.loads((tmp_path / "s" / "i2t.json").read_text())
    meta["prior"] = "0123456789abcdef"
    (tmp_path / "s" / "i2t.json").write_text(json.dumps(meta))
    assert cli_main(["portrait", "style", "apply", "--style", str(tmp_path / "s"), "--seed", "1",
                     "--out", str(tmp_path / "o")]) != 0
    assert "trained for another prior" in capsys.readouterr().err
    assert cli_main(["portrait", "style", "apply", "--style", str(tmp_path / "s"), "--out", str(tmp_path / "o")]) != 0
    assert "--seed K" in capsys.readouterr().err
    assert cli_main(["portrait", "style", "apply", "--style", str(tiny_i2t), "--seed", "1",
                     "--out", str(tmp_path / "o")]) != 0
    assert "not a learned style" in capsys.readouterr().err


def test_damaged_i2t_files_are_refused_by_name(tmp_path, prior):
    _style(tmp_path, "s", prior, 0)
    meta = json.loads((tmp_path / "s" / "i2t.json").read_text())
    meta["shape"]["ws_channels"] = 5
    (tmp_path / "s" / "i2t.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="do not fit"):
        read_i2t(tmp_path / "s")
    meta["shape"]["widths"] = [4096, 4096, 4096, 4096, 4096, 4096]
    meta["shape"]["plane_size"] = 1024
    (tmp_path / "s" / "i2t.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="larger than"):
        read_i2t(tmp_path / "s")
    with pytest.raises(CheckpointError, match="holds no I2T"):
        read_i2t(tmp_path)


def test_the_bench_reports_every_figure_of_the_contract(tiny_i2t, capsys):
    from engine.portrait.ff3d_bench import bench_styles, print_report

    report = bench_styles(styles=("sepia", "bronze statue"), heads=1, train_minutes=0.01, ablation_styles=1,
                          i2t=str(tiny_i2t), official=False, grid="1x2", identities=1)
    for key in ("seconds_per_style", "fidelity_psnr", "set_psnr", "fidelity_spread_db", "set_spread_db",
                "no_pretrain_psnr", "vector_ws_psnr", "no_i2t_psnr", "mix_to_endpoints_psnr", "endpoints_psnr",
                "mix_contrast_ratio", "mix_contrast_to_higher", "mix_contrast_to_lower", "consensus_psnr",
                "i2t_psnr_vs_prior", "i2t_psnr_vs_truth", "prior_psnr_vs_truth"):
        assert math.isfinite(report[key]), key
    assert report["mix_contrast_to_lower"] >= report["mix_contrast_ratio"] >= report["mix_contrast_to_higher"]
    assert report["prior_psnr_vs_truth"] > 15  # the embedded prior renders the held-out head it is conditioned on
    assert report["ablation_styles"] == ["sepia"] and set(report["per_style"]) == {"sepia", "bronze statue"}
    assert 5 < report["set_psnr"] < 40  # the per-view edits of the prior's renders against the style's truth
    assert report["consensus_psnr"] > report["set_psnr"]  # many edits' median disagrees less than one edit
    print_report(report)
    assert "mixing at 0.5" in capsys.readouterr().out


def test_several_sets_train_one_multi_style_model(tiny_set, tiny_i2t, tmp_path, prior):
    sepia = tmp_path / "sepia"
    run(build_set_job(BuildSetConfig(style="sepia", out=str(sepia), grid="1x1", identities=1), CancelToken()))
    run(train_style_job(StyleTrainConfig(set=f"{tiny_set},{sepia}", out=str(tmp_path / "both"), i2t=str(tiny_i2t),
                                         steps=2, rays=64, density_points=64, lpips="off"), CancelToken()))
    style = load_style(tmp_path / "both")
    assert style.names == ["a bronze statue", "sepia"] and style.network.shape.styles == 2
    image = torch.rand(1, 3, 128, 128)
    with torch.no_grad():
        assert not torch.allclose(style.planes(image, style.style_index("sepia")), style.planes(image))
    with pytest.raises(UserInputError, match="has no style 'gold'"):
        style.style_index("gold")

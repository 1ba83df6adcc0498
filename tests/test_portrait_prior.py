"""The portrait prior: its training job (writes loadable weights, resumes, learns), its benchmark,
and the quality of the shipped prior on held-out heads."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from engine.core.errors import CheckpointError
from engine.core.jobs import Artifact, CancelToken, Metrics
from engine.portrait.eg3d import build_generator
from engine.portrait.heads import PARAM_COUNT
from engine.portrait.prior import (PRIOR_DIR, PriorConfig, ViewBatch, bench_prior, load_prior, random_views,
                                   render_prior, train_prior_job, training_losses)


def tiny_config(out="", **changes) -> PriorConfig:
    """A prior small enough to train for a few seconds in a test (10 steps unless changed), trained into folder
    ``out`` (none for tests that do not train)."""
    settings = dict(out=str(out), steps=10, batch=2, pool_heads=3, refresh_per_step=1, rays_per_view=64, sr_every=2,
                    preview_every=5, checkpoint_every_s=1e9, neural_resolution=16)
    cfg = PriorConfig(**(settings | changes))
    cfg.generator_kwargs["channel_base"] = 256
    cfg.generator_kwargs["channel_max"] = 8
    cfg.generator_kwargs["img_resolution"] = 128
    cfg.generator_kwargs["rendering_kwargs"].update(depth_resolution=4, depth_resolution_importance=4)
    return cfg


def run(cfg: PriorConfig, cancel: CancelToken | None = None) -> list:
    return list(train_prior_job(cfg, cancel or CancelToken()))


def test_training_writes_a_prior_that_loads_and_a_recipe_that_says_how(tmp_path):
    events = run(tiny_config(tmp_path / "prior"))
    kinds = {event.kind for event in events if isinstance(event, Artifact)}
    assert {"checkpoint", "recipe", "weights"} <= kinds
    assert any(isinstance(event, Metrics) and "psnr_train" in event.values for event in events)
    recipe = json.loads((tmp_path / "prior" / "recipe.json").read_text())
    assert recipe["command"] == ("python main.py portrait train-prior --out DIR --steps 10 --batch 2 --pool-heads 3 "
                                 "--refresh-per-step 1 --neural-resolution 16 --rays-per-view 64 --sr-every 2 "
                                 "--checkpoint-every-s 1e+09 --preview-every 5 --seed 0")
    assert recipe["seed"] == 0 and recipe["config"]["out"] == str(tmp_path / "prior")
    assert recipe["steps"] == 10
    prior = load_prior(tmp_path / "prior")
    assert prior.z_dim == PARAM_COUNT and prior.neural_rendering_resolution == 16
    c = torch.from_numpy(random_views(np.random.default_rng(0), 1))
    with torch.no_grad():
        out = render_prior(prior, torch.zeros(1, PARAM_COUNT), c, 16)
    assert out["rgb"].shape == (1, 3, 16, 16) and out["image"].shape == (1, 3, 128, 128)
    assert out["mask"].dtype == torch.bool


def test_a_stopped_run_resumes_where_it_stopped(tmp_path):
    cancel = CancelToken()
    cfg = tiny_config(tmp_path / "prior", steps=100)
    job = train_prior_job(cfg, cancel)
    for event in job:
        if isinstance(event, Metrics):
            cancel.cancel()
    state = torch.load(tmp_path / "prior" / "training_state.pt", weights_only=False)
    assert state["step"] >= 5 and not (tmp_path / "prior" / "generator.safetensors").exists()
    run(tiny_config(tmp_path / "prior", steps=state["step"] + 3))
    recipe = json.loads((tmp_path / "prior" / "recipe.json").read_text())
    assert recipe["steps"] == state["step"] + 3


def test_the_training_loss_falls_on_a_fixed_batch():
    cfg = tiny_config()
    torch.manual_seed(0)
    generator = build_generator(cfg.generator_kwargs).train()
    optimizer = torch.optim.Adam(generator.parameters(), lr=cfg.lr, betas=(0.0, 0.99))
    truth = ViewBatch.render([1, 2], random_views(np.random.default_rng(1), 2), 16, generator.img_resolution)
    rng = torch.Generator().manual_seed(0)
    first = None
    for _ in range(40):
        losses = training_losses(generator, truth, cfg, train_sr=True, generator_rng=rng)
        optimizer.zero_grad()
        losses["total"].backward()
        optimizer.step()
        first = first if first is not None else float(losses["rgb"].detach())
    assert float(losses["rgb"].detach()) < 0.6 * first


def test_bench_reports_quality_and_speed_keys():
    cfg = tiny_config()
    generator = build_generator(cfg.generator_kwargs).eval()
    report = bench_prior(generator, heads=2, views=1, fps_frames=2)
    assert {"psnr", "mask_iou", "depth_error_rel", "fps_cached_64"} <= set(report)
    assert 0 <= report["mask_iou"] <= 1 and report["fps_cached_64"] > 0 and np.isfinite(report["psnr"])


def test_a_folder_without_a_prior_says_how_to_make_one(tmp_path):
    with pytest.raises(CheckpointError, match="holds no trained prior.*portrait train-prior --out"):
        load_prior(tmp_path)


@pytest.mark.skipif(not (PRIOR_DIR / "generator.safetensors").is_file(), reason="no shipped prior in resources/")
def test_the_shipped_prior_is_no_worse_than_when_it_was_shipped():
    """A guard on the shipped weights and the code that renders them (figures when shipped, on these
    4 heads x 2 views: 23.35 dB, IoU 0.952, depth error 0.73%); the issue's targets are measured by
    ``python main.py portrait bench-prior``."""
    report = bench_prior(load_prior(), heads=4, views=2, fps_frames=2)
    assert report["psnr"] >= 22.8
    assert report["mask_iou"] >= 0.93
    assert report["depth_error_rel"] <= 0.01
    assert report["cached_vs_full_psnr_min"] >= 60

"""The nerfacto-faithful model: its sampling pieces and a few real training steps on CPU."""

import json

import torch

from engine.core.jobs import Metrics, run_job
from engine.scene.nerfacto import NerfactoModelConfig, interlevel_loss, sample_pdf
from engine.scene.presets import build_model, model_config
from engine.scene.trainer import TrainConfig, train_job


def test_preset_has_nerfactos_published_defaults():
    cfg = model_config("nerfacto")
    grid = cfg.radiance.grid
    assert (grid.levels, grid.features_per_level, grid.log2_table_size) == (16, 2, 19)
    assert cfg.proposal_samples == (256, 96) and cfg.nerf_samples == 48
    assert cfg.radiance.appearance_dim == 32 and cfg.distortion_weight == 0.002 and cfg.interlevel_weight == 1.0


def test_pdf_sampling_concentrates_where_the_weight_is():
    bins = torch.linspace(0, 1, 11)[None]
    weights = torch.zeros(1, 10)
    weights[0, 6] = 1.0
    edges = sample_pdf(bins, weights, 48, deterministic=True)
    inside = ((edges >= 0.6) & (edges <= 0.7)).float().mean()
    assert inside > 0.9 and torch.all(edges[:, 1:] >= edges[:, :-1])


def test_interlevel_loss_is_zero_when_the_proposal_bounds_the_field():
    edges = torch.linspace(0, 1, 9)[None]
    w = torch.tensor([[0.0, 0.1, 0.5, 0.2, 0.1, 0.0, 0.0, 0.0]])
    assert float(interlevel_loss(edges, w, edges, w)) < 1e-6
    too_small = w * 0.2
    assert float(interlevel_loss(edges, w, edges, too_small)) > 0.1


def test_a_few_training_steps_run_on_cpu_and_lower_the_loss(tiny_demo, tmp_path):
    cfg = NerfactoModelConfig()
    model = build_model(cfg, num_images=4, contracted=True)
    assert sum(p.numel() for p in model.field.grid.parameters()) > 10_000_000  # the full 2^19 tables
    losses = []
    record = lambda e: losses.append(e.values["loss"]) if isinstance(e, Metrics) and "loss" in e.values else None  # noqa: E731
    run_job(train_job(TrainConfig(data=str(tiny_demo), out=str(tmp_path / "p"), steps=8, model="nerfacto",
                                  initial_rays=256, metrics_every=4, save_eval_renders=False)), record)
    assert len(losses) == 2 and losses[1] < losses[0]
    report = json.loads((tmp_path / "p" / "report.json").read_text())
    assert report["model"] == "nerfacto" and report["steps"] == 8 and report["samples_per_ray"] == 48
    assert report["psnr_mean"] > 8

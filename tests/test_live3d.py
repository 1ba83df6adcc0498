"""The embedded image→triplane encoder: its training data, losses, the training job (resume, torchrun with
gloo on two processes) and loading its weights."""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from engine.core.errors import CheckpointError, UserInputError
from engine.core.jobs import Artifact, CancelToken, Metrics
from engine.core.prefetch import Prefetcher, Seeds
from engine.portrait.cameras import camera_labels
from engine.portrait.live3d import (PLANE_SIZE, EmbeddedEncoder, EncoderConfig, HeadSamples, encoder_losses, head_truth,
                                    load_encoder, train_encoder_job)
from engine.portrait.prior import load_prior

ROOT = Path(__file__).resolve().parents[1]
SMALL = {"pool_heads": 2, "batch": 1, "rays_per_view": 64, "preview_every": 1}


@pytest.fixture(scope="module")
def prior():
    return load_prior().requires_grad_(False)


def test_encoder_maps_a_portrait_to_planes_the_prior_renders():
    encoder = EmbeddedEncoder().eval()
    with torch.no_grad():
        planes = encoder(torch.rand(2, 3, 128, 128) * 2 - 1)
    assert planes.shape == (2, 3 * 32, PLANE_SIZE, PLANE_SIZE)
    assert torch.isfinite(planes).all()


def test_head_samples_hold_the_photo_the_priors_planes_and_views(prior):
    samples = HeadSamples.render([3, 7], prior, np.random.default_rng(0), views=3)
    assert samples.photo.shape == (2, 3, 128, 128) and samples.rgb.shape == (2, 3, 3, 64, 64)
    assert samples.depth.shape == samples.mask.shape == (2, 3, 1, 64, 64)
    assert np.allclose(samples.c[:, 0].numpy(), camera_labels(0.0, 0.0))  # view 0: the input (frontal) view
    assert not torch.allclose(samples.c[0, 1], samples.c[0, 2])
    with torch.no_grad():
        full = prior.planes(prior.mapping(samples.z, samples.c[:, 0]), noise_mode="const")
    assert torch.allclose(samples.planes, F.avg_pool2d(full, 2), atol=1e-4)
    # the photo is the input view at 128²: downsampled it is view 0's ground truth
    assert (F.avg_pool2d(samples.photo, 2) - samples.rgb[:, 0]).abs().mean() < 0.02
    other = HeadSamples.render([11], prior, np.random.default_rng(1), views=3)
    samples.put(torch.tensor([1]), other)
    assert torch.equal(samples.take(torch.tensor([1])).photo, other.photo)


def test_a_few_steps_lower_the_losses(prior):
    torch.manual_seed(0)
    encoder = EmbeddedEncoder().train()
    batch = HeadSamples.render([1, 2], prior, np.random.default_rng(0))
    optimizer = torch.optim.Adam(encoder.parameters(), lr=1e-3)
    cfg = EncoderConfig(out="unused", rays_per_view=128)
    totals = []
    for _ in range(6):
        losses = encoder_losses(encoder, prior, batch, cfg, torch.Generator().manual_seed(0))
        optimizer.zero_grad()
        losses["total"].backward()
        optimizer.step()
        totals.append(float(losses["total"].detach()))
    assert totals[-1] < 0.95 * totals[0]
    assert set(losses) == {"rgb", "depth", "planes", "total"}


def _run(cfg: EncoderConfig) -> list:
    return list(train_encoder_job(cfg, CancelToken()))


def test_the_job_writes_weights_and_recipe_and_resumes(tmp_path):
    events = _run(EncoderConfig(out=str(tmp_path), steps=2, **SMALL))
    kinds = {e.kind for e in events if isinstance(e, Artifact)}
    assert kinds == {"checkpoint", "recipe", "weights"}
    assert any(isinstance(e, Metrics) and "psnr_input_view" in e.values for e in events)
    first = load_file(str(tmp_path / "encoder.safetensors"))
    events = _run(EncoderConfig(out=str(tmp_path), steps=3, **SMALL))
    steps = [e.step for e in events if isinstance(e, Metrics)]
    assert steps == [3]  # resumed at step 2: one more step
    recipe = json.loads((tmp_path / "recipe.json").read_text())
    assert recipe["steps"] == 3 and recipe["command"].startswith("python main.py portrait train-encoder")
    encoder = load_encoder(tmp_path)
    assert not encoder.training
    assert any(not torch.equal(first[k], v) for k, v in encoder.state_dict().items())
    # loaded for inference in channels-last layout: the same planes as the weights in the training layout
    plain = EmbeddedEncoder().eval()
    plain.load_state_dict(load_file(str(tmp_path / "encoder.safetensors")))
    photo = torch.rand(1, 3, 128, 128) * 2 - 1
    with torch.no_grad():
        assert torch.allclose(encoder(photo), plain(photo), atol=1e-4)


def test_loading_reports_missing_and_foreign_weights(tmp_path):
    with pytest.raises(CheckpointError, match="holds no trained encoder .*train-encoder --out"):
        load_encoder(tmp_path)
    save_file({"w": torch.zeros(3)}, str(tmp_path / "encoder.safetensors"))
    with pytest.raises(CheckpointError, match="is not an embedded encoder"):
        load_encoder(tmp_path)


def test_training_can_start_from_a_trained_encoder(tmp_path):
    torch.manual_seed(5)
    start = {k: v.contiguous() for k, v in EmbeddedEncoder().state_dict().items()}
    save_file(start, str(tmp_path / "start.safetensors"))
    # a learning rate of zero: the weights written are the ones it started from
    _run(EncoderConfig(out=str(tmp_path / "run"), init=str(tmp_path / "start.safetensors"), steps=1, lr=0.0, **SMALL))
    written = load_file(str(tmp_path / "run" / "encoder.safetensors"))
    assert all(torch.equal(written[k], v) for k, v in start.items())
    command = json.loads((tmp_path / "run" / "recipe.json").read_text())["command"]
    assert command.startswith("python main.py portrait train-encoder --out DIR ") and \
        f"--init {tmp_path / 'start.safetensors'}" in command and "--steps 1 " in command


def test_worker_processes_render_the_heads_the_training_process_would():
    made = Prefetcher(functools.partial(head_truth, views=2, base_seed=0), Seeds(4), workers=1)
    try:
        by_worker = made.take(2)
    finally:
        made.close()
    for seed, sample in zip((4, 5), by_worker):
        inline = head_truth(seed, views=2, base_seed=0)
        assert torch.equal(sample.photo, inline.photo) and torch.equal(sample.c, inline.c)


def test_a_batch_larger_than_the_pool_is_refused(tmp_path):
    with pytest.raises(UserInputError, match="pool of 2"):
        _run(EncoderConfig(out=str(tmp_path), steps=1, **{**SMALL, "batch": 3}))
    assert not tmp_path.joinpath("training_state.pt").exists()


DDP_SCRIPT = textwrap.dedent("""
    import hashlib, os, sys
    import torch
    from engine.core.jobs import CancelToken
    from engine.portrait import live3d

    out, steps = sys.argv[1], int(sys.argv[2])
    os.makedirs(out, exist_ok=True)
    kept = {}
    original = live3d.EmbeddedEncoder.__init__

    def remember(self):
        original(self)
        kept["encoder"] = self

    live3d.EmbeddedEncoder.__init__ = remember
    cfg = live3d.EncoderConfig(out=out, steps=steps, pool_heads=4, batch=1, rays_per_view=64, preview_every=1)
    for _ in live3d.train_encoder_job(cfg, CancelToken()):
        pass
    digest = hashlib.sha256(b"".join(v.numpy().tobytes() for v in kept["encoder"].state_dict().values()))
    with open(os.path.join(out, f"rank{os.environ.get('RANK', '0')}.sha"), "w") as f:
        f.write(digest.hexdigest())
""")


def _succeeds(command: list[str], env: dict) -> None:
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]


def test_two_processes_with_gloo_end_with_identical_weights_and_resume_on_one(tmp_path):
    script = tmp_path / "ddp_run.py"
    script.write_text(DDP_SCRIPT)
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    _succeeds([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script),
               str(out), "2"], env)
    assert (out / "rank0.sha").read_text() == (out / "rank1.sha").read_text()
    state = torch.load(out / "training_state.pt", weights_only=True)
    assert state["step"] == 2 and state["next_seed"] == 2 * (4 + 2)  # both processes drew their own heads
    _succeeds([sys.executable, str(script), str(out), "3"], env)
    assert torch.load(out / "training_state.pt", weights_only=True)["step"] == 3

"""The portrait workspace's engine side on a tiny random generator (tests/tiny_portrait.py): heads
sampled once and re-rendered from cached planes, the three view modes, checkpoint latents drawn
as EG3D's scripts draw them, and the orbit video job."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from PIL import Image
from tiny_portrait import write_tiny_generator

from engine.core.errors import CheckpointError, UserInputError
from engine.core.jobs import Artifact, CancelToken, Progress
from engine.portrait.cameras import camera_label
from engine.portrait.heads import GROUP_LABELS, HeadParams, render_heads
from engine.portrait.workspace import (CHECKPOINT, PRIOR, SEMANTIC_LEGEND, SEMANTIC_PALETTE, TRUNCATION_CUTOFF,
                                       PortraitSession, orbit_video_job, orbit_yaws)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_tiny_generator(tmp_path_factory.mktemp("portrait") / "tiny")


@pytest.fixture(scope="module")
def prior(folder) -> PortraitSession:
    session = PortraitSession.from_prior(folder)
    session.sample(7)
    return session


def test_a_head_is_sampled_once_and_views_of_it_reuse_its_planes(prior):
    head = prior.head
    assert prior.kind == PRIOR and prior.semantic_available and head.params == HeadParams.from_seed(7)
    assert prior.sample(7) is head  # the same head: nothing recomputed
    assert np.array_equal(prior.camera(20, -10), camera_label(20, -10))  # no avg_camera_* recorded: FFHQ's orbit

    neural = prior.generator.neural_rendering_resolution
    raw = prior.frame(0, 0, "rgb", neural)
    assert raw.shape == (neural, neural, 3) and raw.dtype == np.uint8
    assert np.array_equal(prior.frame(0, 0, "rgb", neural), raw)  # deterministic
    assert np.abs(prior.frame(25, 0, "rgb", neural).astype(int) - raw).mean() > 0.5  # the camera moved
    super_resolved = prior.frame(0, 0, "rgb", 128)
    assert super_resolved.shape == (128, 128, 3) and prior.head is head

    other = prior.sample(8)
    assert other is prior.head and not torch.equal(other.planes, head.planes)


def test_depth_and_semantic_views(prior):
    depth = prior.frame(10, 5, "depth", 16)
    semantic = prior.frame(10, 5, "semantic", 16)
    assert depth.shape == semantic.shape == (16, 16, 3) and not np.array_equal(depth, semantic)
    truth = render_heads(prior.head.params, camera_label(10, 5), 16).labels_group[0]
    assert np.array_equal(semantic, SEMANTIC_PALETTE[truth])  # the head's own ground truth at that camera
    assert [name for name, _ in SEMANTIC_LEGEND] == list(GROUP_LABELS) == ["background", "hair", "face", "garment"]
    with pytest.raises(ValueError, match="unknown portrait view mode"):
        prior.frame(0, 0, "normals", 16)


def test_checkpoint_latents_follow_eg3ds_seeds_and_truncation(folder):
    session = PortraitSession.from_checkpoint(folder)
    assert session.kind == CHECKPOINT and not session.semantic_available
    generator = session.generator
    z = torch.from_numpy(np.random.RandomState(3).randn(1, generator.z_dim)).float()
    c = torch.from_numpy(camera_label(0, 0)[None])
    truncated = session.sample(3)
    assert truncated.truncation == 0.7 and truncated.params is None
    with torch.no_grad():
        expected = generator.mapping(z, c, truncation_psi=0.7, truncation_cutoff=TRUNCATION_CUTOFF)
    assert torch.allclose(truncated.ws, expected)
    assert not torch.equal(session.sample(3, truncation=1.0).ws, truncated.ws)
    with pytest.raises(UserInputError, match="SemFaceEdit"):
        session.frame(0, 0, "semantic", 16)
    with pytest.raises(UserInputError, match="seed"):
        session.sample(-1)


def test_sources_that_cannot_be_used_are_explained(folder, tmp_path):
    with pytest.raises(CheckpointError, match="generator.safetensors"):
        PortraitSession.from_prior(tmp_path)  # no prior trained there
    wrong = PortraitSession.from_checkpoint(folder).generator
    wrong.z_dim = 512
    with pytest.raises(CheckpointError, match="head parameters"):
        PortraitSession(wrong, PRIOR, "a 512-latent generator")


def test_orbit_video_frames_come_from_the_head_current_when_the_job_started(prior, tmp_path):
    prior.sample(7)
    expected = [prior.frame(float(yaw), 5.0, "rgb", 16) for yaw in orbit_yaws(4, 20.0)]
    job = orbit_video_job(prior, tmp_path / "frames", 4, 20.0, 16, CancelToken(), pitch=5.0)
    first = next(job)  # the job has taken its head
    prior.sample(9)  # the workspace moves on meanwhile
    events = [first, *job]
    assert [e.step for e in events if isinstance(e, Progress)] == [1, 2, 3, 4]
    assert events[-1] == Artifact(tmp_path / "frames", "frames")
    written = [np.asarray(Image.open(p)) for p in sorted((tmp_path / "frames").glob("*.png"))]
    assert len(written) == 4 and all(np.array_equal(a, b) for a, b in zip(written, expected))
    assert orbit_yaws(4, 20.0) == pytest.approx([0, 20, 0, -20], abs=1e-9)  # a loop through frontal


def test_orbit_video_writes_an_mp4_and_stops_when_cancelled(prior, tmp_path):
    import imageio

    out = tmp_path / "orbit.mp4"
    events = list(orbit_video_job(prior, out, 5, 30.0, 32))
    assert events[-1] == Artifact(out, "video") and len(imageio.mimread(out)) == 5

    cancel = CancelToken()
    job = orbit_video_job(prior, tmp_path / "cancelled.mp4", 50, 30.0, 16, cancel)
    next(job)
    cancel.cancel()
    assert not [e for e in job if isinstance(e, Artifact)] and not (tmp_path / "cancelled.mp4").exists()


@pytest.mark.parametrize("kwargs, message", [({"frames": 0}, "at least one frame"),
                                             ({"yaw_range": float("nan")}, "yaw range")])
def test_orbit_video_inputs_are_checked(prior, tmp_path, kwargs, message):
    with pytest.raises(UserInputError, match=message):
        list(orbit_video_job(prior, tmp_path / "o.mp4", **{"frames": 3, "yaw_range": 10.0, **kwargs}))
    empty = copy.copy(prior)
    empty.head = None
    with pytest.raises(UserInputError, match="sample one first"):
        list(orbit_video_job(empty, tmp_path / "o.mp4"))

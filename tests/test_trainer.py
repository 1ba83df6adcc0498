"""End-to-end training, checkpoint/resume, the CLI contract and rendering."""

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from engine.core.jobs import CancelToken, Progress, run_job
from engine.core.safe_pickle import load_torch
from engine.scene.trainer import TrainConfig, load_trained, train_job

REPO = Path(__file__).resolve().parents[1]


def _train(data, out, steps, cancel_at=None, **kw):
    cancel = CancelToken()
    events = []

    def on_event(ev):
        events.append(ev)
        if cancel_at is not None and isinstance(ev, Progress) and ev.step == cancel_at and ev.total:
            cancel.cancel()

    run_job(train_job(TrainConfig(data=str(data), out=str(out), steps=steps, **kw), cancel), on_event)
    return events


def test_short_training_on_the_demo_scene_beats_a_psnr_floor(trained_tiny, tiny_demo):
    report = json.loads((trained_tiny / "report.json").read_text())
    for key in ("psnr_mean", "ssim_mean", "per_view_psnr", "train_seconds", "steps", "rays_per_second",
                "samples_per_ray", "peak_rss_mb", "model", "data", "machine"):
        assert key in report
    assert report["steps"] == 300 and len(report["per_view_psnr"]) == 3  # 24 frames: 0, 8, 16 held out
    # an image of just the background colour scores about 10.8 dB on these views
    from engine.core.metrics import psnr
    from engine.scene.datasets import load_dataset
    from engine.scene.trainer import border_color

    ds = load_dataset(tiny_demo)
    flat = border_color(ds).expand(48, 48, 3)
    trivial = np.mean([psnr(flat, torch.tensor(ds.images[i]).float() / 255) for i in ds.eval_indices])
    assert report["psnr_mean"] > 16.0 and report["psnr_mean"] > trivial + 5, (report["psnr_mean"], trivial)
    side_by_side = np.asarray(Image.open(next((trained_tiny / "renders" / "eval").glob("*.png"))))
    assert side_by_side.shape == (48, 96, 3)


def test_a_blender_scene_is_learned_in_colour_not_as_a_dark_silhouette(tmp_path):
    """RGBA views on a transparent background: against a fixed white background the field explained the
    object as black fog (its colour output saturated in the first steps): 17 dB, grey renders."""
    from engine.scene.procedural import write_blender_dataset

    data = write_blender_dataset(tmp_path / "blender", n_train=32, n_test=3, image_size=48)
    _train(data, tmp_path / "p", 150, save_eval_renders=False)
    report = json.loads((tmp_path / "p" / "report.json").read_text())
    assert report["psnr_mean"] > 19.5, report["psnr_mean"]  # 17.4 before, 20.9 now
    model, dataset, _, _ = load_trained(tmp_path / "p")
    from engine.scene.render import render_image

    with torch.no_grad():
        rgb = render_image(model, dataset.cameras, int(dataset.eval_indices[0]), torch.ones(3))["rgb"]
    chroma = (rgb.amax(-1) - rgb.amin(-1)).mean()  # the scene's checkers are saturated colours
    expected = np.ptp(dataset.images[dataset.eval_indices[0]] / 255, axis=-1).mean()
    assert chroma > 0.4 * expected, (float(chroma), expected)  # 0 before (grey), 0.6 now


def _params(project: Path) -> dict:
    state = load_torch(next((project / "checkpoints").glob("step_*.pt")))
    return state["model"], state["step"]


def test_a_killed_run_resumes_exactly(tiny_demo, tmp_path):
    kw = dict(save_eval_renders=False, metrics_every=5)
    _train(tiny_demo, tmp_path / "straight", 24, **kw)
    events = _train(tiny_demo, tmp_path / "killed", 24, cancel_at=9, **kw)
    assert not (tmp_path / "killed" / "report.json").exists()
    assert _params(tmp_path / "killed")[1] == 9
    assert any("resume" in getattr(e, "message", "") for e in events)
    events = _train(tiny_demo, tmp_path / "killed", 24, **kw)
    assert any("resuming from step_0000009.pt" in getattr(e, "message", "") for e in events)
    straight, step_a = _params(tmp_path / "straight")
    resumed, step_b = _params(tmp_path / "killed")
    assert step_a == step_b == 24  # the resumed run refreshes the occupancy grid at step 16 as the straight one did
    for name, value in straight.items():
        assert torch.equal(value, resumed[name]), name


def _cli(*args, cwd=REPO):
    return subprocess.run([sys.executable, str(REPO / "main.py"), *args], capture_output=True, text=True, cwd=cwd)


def test_cli_reports_bad_data_in_one_line_and_exits_2(tmp_path):
    bad = tmp_path / "capture"
    bad.mkdir()
    (bad / "transforms.json").write_text("{ not json")
    proc = _cli("train", "--data", str(bad), "--steps", "5", "--out", str(tmp_path / "p"))
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: ") and "transforms.json" in proc.stderr
    assert "Traceback" not in proc.stderr and proc.stderr.count("\n") == 1


def test_cli_refuses_an_out_folder_holding_another_run(tiny_demo, tmp_path):
    _train(tiny_demo, tmp_path / "p", 5, save_eval_renders=False)
    proc = _cli("train", "--data", str(tiny_demo), "--steps", "5", "--downscale", "2", "--out", str(tmp_path / "p"))
    assert proc.returncode == 2 and "another --out" in proc.stderr


def test_cli_trains_writes_the_report_and_renders_an_orbit(tiny_demo, tmp_path):
    report = tmp_path / "r.json"
    proc = _cli("train", "--data", str(tiny_demo), "--steps", "30", "--out", str(tmp_path / "p"), "--report",
                str(report), "--seed", "3")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(report.read_text())["steps"] == 30 and "held-out PSNR" in proc.stdout
    proc = _cli("render", "--project", str(tmp_path / "p"), "--orbit", "4", "--out", str(tmp_path / "frames"))
    assert proc.returncode == 0, proc.stderr
    frames = sorted((tmp_path / "frames").glob("frame_*.png"))
    assert len(frames) == 4 and np.asarray(Image.open(frames[0])).shape == (48, 48, 3)
    proc = _cli("render", "--project", str(tmp_path / "p"), "--orbit", "6", "--out", str(tmp_path / "turn.mp4"))
    assert proc.returncode == 0, proc.stderr
    import imageio.v2 as imageio

    video = imageio.mimread(tmp_path / "turn.mp4")
    assert len(video) == 6 and video[0].shape == (48, 48, 3)


def test_the_kernels_compile_before_the_training_clock_starts_and_the_user_is_told(tiny_demo, tmp_path):
    from engine.scene import native

    if native.load_kernels() is None:
        pytest.skip("no C compiler: the torch path has nothing to compile")
    events = []
    cache = os.environ.get("RETOUCH3D_CACHE")
    os.environ["RETOUCH3D_CACHE"] = str(tmp_path / "cache")  # nothing compiled there yet
    native.load_kernels.cache_clear()
    try:
        assert native.needs_compiling()
        job = train_job(TrainConfig(data=str(tiny_demo), out=str(tmp_path / "p"), steps=1, save_eval_renders=False))
        run_job(job, events.append)
    finally:
        os.environ.pop("RETOUCH3D_CACHE") if cache is None else os.environ.update(RETOUCH3D_CACHE=cache)
        native.load_kernels.cache_clear()
    messages = [e.message for e in events if isinstance(e, Progress)]
    assert messages[0].startswith("compiling the CPU kernels") and messages[1] == "training"
    assert list((tmp_path / "cache" / "native").glob("scene-native-kernels-*.so"))  # compiled then, before the first step


def test_render_without_a_project_is_a_clear_error(tmp_path):
    proc = _cli("render", "--project", str(tmp_path / "nothing"), "--orbit", "3", "--out", str(tmp_path / "x.mp4"))
    assert proc.returncode == 2 and "not a Retouch3D project" in proc.stderr


def test_training_needs_a_budget(tiny_demo, tmp_path):
    from engine.core.errors import UserInputError

    with pytest.raises(UserInputError, match="--steps S or --minutes M"):
        next(train_job(TrainConfig(data=str(tiny_demo), out=str(tmp_path), minutes=None)))


def test_training_streams_previews_as_fresh_uint8_images(tiny_demo, tmp_path):
    from engine.core.jobs import Preview

    events = _train(tiny_demo, tmp_path / "p", 6, preview_every_s=0.0, save_eval_renders=False)
    previews = [e for e in events if isinstance(e, Preview)]
    assert len(previews) >= 5
    first = previews[0]
    assert first.image.dtype == np.uint8 and first.image.shape == (48, 48, 3) and first.image.flags.owndata
    assert set(first.camera) >= {"c2w", "fx", "fy", "cx", "cy", "width", "height"}


class _RunsCommand:
    """Pickles as os.system(command): what a project folder someone sends may hold as its checkpoint."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def _open_with_app(project: Path, _data: Path) -> None:
    from engine.scene.trainer import trained_seconds

    trained_seconds(project)


def _resume_the_prior(project: Path, _data: Path) -> None:
    from engine.portrait.prior import read_training_state

    read_training_state(project / "checkpoints" / "step_0000005.pt")


@pytest.mark.parametrize("opener", [
    lambda project, data: _train(data, project, 9), lambda project, data: load_trained(project),
    _open_with_app, _resume_the_prior,
], ids=["resume", "open", "app", "prior"])
def test_a_checkpoint_that_runs_code_is_refused_and_runs_nothing(tiny_demo, tmp_path, opener):
    from engine.core.errors import CheckpointError
    from engine.core.project import Project

    project, marker = tmp_path / "sent-to-me", tmp_path / "pwned"
    Project(project).update_manifest(kind="scene", train_config=dataclasses.asdict(
        TrainConfig(data=str(tiny_demo), out=str(project), steps=5)))
    checkpoint = project / "checkpoints" / "step_0000005.pt"
    checkpoint.parent.mkdir()
    torch.save({"model": _RunsCommand(f"touch {marker}"), "train_seconds": 1.0, "step": 5}, checkpoint)
    with pytest.raises(CheckpointError) as err:
        opener(project, tiny_demo)
    assert str(err.value).startswith(f"refusing to load {checkpoint}: it asks to run {os.system.__module__}.system")
    assert not marker.exists()

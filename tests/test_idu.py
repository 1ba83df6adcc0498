"""Iterative Dataset Update: edits land in 3D, edits are saved, originals stay, local edits stay local."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.cli import main as cli_main
from engine.editing.base import Guidance
from engine.editing.idu import EditConfig, edit_job, file_digest
from engine.editing.store import EditStore
from engine.errors import CheckpointError, UserInputError
from engine.jobs import CancelToken, JobWarning, Preview, Progress, run_job
from engine.metrics import alexnet_weights_path, load_lpips
from engine.scene.procedural import SPHERE_CENTER, SPHERE_RADIUS


@pytest.fixture()
def project(trained_tiny, tmp_path) -> Path:
    """A copy of the briefly trained tiny field (edits change a project)."""
    dst = tmp_path / "project"
    shutil.copytree(trained_tiny, dst)
    return dst


def _edit(project: Path, cancel_at: int | None = None, **kw) -> list:
    cfg = EditConfig(project=str(project), **({"instruction": "make it a bronze statue", "steps": 120,
                                               "edit_rate": 5, "lpips_backbone": "random"} | kw))
    cancel = CancelToken()
    events = []

    def on_event(ev):
        events.append(ev)
        if cancel_at is not None and isinstance(ev, Progress) and ev.step == cancel_at:
            cancel.cancel()

    run_job(edit_job(cfg, cancel), on_event)
    return events


def _report(project: Path) -> dict:
    return json.loads((project / "edits" / "report.json").read_text())


def test_a_global_edit_moves_the_field_to_the_edited_look_and_keeps_originals(project, tiny_demo):
    originals = sorted(tiny_demo.glob("images/*"))
    digest = file_digest(originals)
    events = _edit(project, steps=300, edit_rate=3, lr_final=1e-2)  # a constant rate: a short run must move far
    report = _report(project)
    for key in ("instruction", "editor", "edit_seconds", "views_edited", "edit_fidelity_psnr", "originals_unchanged"):
        assert key in report
    assert report["originals_unchanged"] and file_digest(originals) == digest
    # 300 steps, one edit every 3 steps: 100 edits, every one of the 21 training views several times
    assert report["views_edited"] == 21 and report["edits_made"] == 100
    # Fidelity: the unedited field against the bronze ground truth is far worse than the edited one.
    from engine.editing.offline import OfflineEditor
    from engine.metrics import psnr
    from engine.scene.datasets import load_dataset

    ds = load_dataset(tiny_demo)
    bronze = OfflineEditor()
    unedited = np.mean([psnr(torch.tensor(ds.images[i]).float() / 255,
                             bronze.edit(*(2 * [torch.tensor(ds.images[i]).float() / 255]), "bronze", 1.0, 0))
                        for i in ds.eval_indices])
    assert report["edit_fidelity_psnr"] > unedited + 4, (report["edit_fidelity_psnr"], unedited)
    # every edit came with a before|after preview of that view; the store holds each version
    previews = [e for e in events if isinstance(e, Preview)]
    assert len(previews) == 100 and previews[0].image.shape == (48, 96, 3)
    store = EditStore(project)
    assert len(store.views()) == 21
    view = previews[-1].camera["view"]
    assert np.array_equal(store.current(view), previews[-1].image[:, 48:])


def test_a_cancelled_edit_resumes_without_losing_edits(project):
    events = _edit(project, cancel_at=32)
    assert any(isinstance(e, JobWarning) and "cancelled" in e.message for e in events)
    store = EditStore(project)
    made = sum(len(store.history(v)) for v in store.views())
    assert made == 7  # edits at steps 0, 5, ..., 30
    events = _edit(project)
    assert any(isinstance(e, JobWarning) and "resuming" in e.message for e in events)
    report = _report(project)
    assert report["steps"] == 120 and report["edits_made"] == 24
    store = EditStore(project)
    assert sum(len(store.history(v)) for v in store.views()) == 24


def test_a_local_edit_changes_the_region_and_nothing_else(project):
    top = tuple(SPHERE_CENTER + [0, 0, SPHERE_RADIUS])  # the sphere's top, in capture coordinates
    _edit(project, point_3d=top, radius=0.6, steps=150, edit_rate=3, lr_local_final=1e-3)  # short run: no decay
    report = _report(project)
    assert report["outside_region_change"] <= 2.0, report
    assert report["inside_region_change"] > 4 * report["outside_region_change"], report
    assert report["edit_fidelity_psnr"] > 16, report
    masks = list((project / "edits" / "session" / "masks").glob("*.png"))
    assert len(masks) == 24


@pytest.mark.parametrize("kw, message", [
    ({"instruction": "   "}, "instruction is empty"),
    ({"instruction": "make it look like a dragon"}, "supports one of: red"),
    ({"point_3d": (0.0, 0.0, 0.3), "radius": 0.0}, "radius must be positive"),
    ({"point_3d": (0.0, 0.0, 0.3)}, "needs --radius"),
    ({"point_3d": (0.0, 0.0, -500.0), "radius": 0.1}, "outside every view"),
    ({"point": "frame_00001:1,1", "radius": 0.2}, "empty space"),
    ({"point": "nope:3,3", "radius": 0.2}, "no view named"),
    ({"point": "frame_00001:3", "radius": 0.2}, "expected VIEW:u,v"),
])
def test_bad_edits_are_clear_errors_that_change_nothing(project, kw, message):
    before = sorted(p.relative_to(project) for p in project.rglob("*"))
    with pytest.raises(UserInputError, match=message):
        _edit(project, **kw)
    assert sorted(p.relative_to(project) for p in project.rglob("*")) == before


def test_editing_an_untrained_project_says_so(tmp_path):
    (tmp_path / "retouch3d.json").write_text(json.dumps({"schema": 1, "train_config": {}}))
    with pytest.raises(UserInputError, match="never trained"):
        _edit(tmp_path)


def test_cli_edit_reports_bad_input_with_exit_2(project, capsys):
    assert cli_main(["edit", "--project", str(project), "--instruction", "  ", "--steps", "5"]) == 2
    assert "instruction is empty" in capsys.readouterr().err


def test_edit_store_keeps_history_and_reverts(tmp_path):
    store = EditStore(tmp_path)
    a = np.full((4, 5, 3), 10, np.uint8)
    b = np.full((4, 5, 3), 200, np.uint8)
    store.add("v1", a, instruction="x")
    store.add("v1", b, instruction="y")
    assert np.array_equal(store.current("v1"), b)
    store.set_current("v1", 0)
    assert np.array_equal(EditStore(tmp_path).current("v1"), a)  # persisted
    store.revert("v1")
    assert store.current("v1") is None and len(store.history("v1")) == 2
    with pytest.raises(UserInputError, match="no version 5"):
        store.set_current("v1", 5)


def test_lpips_is_never_downloaded(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    model, warning = load_lpips("auto")
    assert model is None and str(alexnet_weights_path()) in warning and "L1 loss only" in warning
    with pytest.raises(CheckpointError, match="alexnet-owt-7be5be79.pth"):
        load_lpips("imagenet")
    import torchvision

    weights = tmp_path / "alex.pth"
    alex = torchvision.models.alexnet()
    torch.save(alex.state_dict(), weights)
    model, warning = load_lpips(str(weights))
    assert warning is None and torch.equal(model.net.slice1[0].weight, alex.features[0].weight)
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    assert float(model(x, x)) == pytest.approx(0.0, abs=1e-6) and float(model(x, -x)) > 0
    (tmp_path / "bad.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="bad.pth"):
        load_lpips(str(tmp_path / "bad.pth"))


def test_the_ip2p_editor_drives_the_same_job(project, tmp_path):
    """InstructPix2Pix (a tiny random pipeline loaded the way users load theirs) edits views in IDU."""
    from tiny_ip2p import write_tiny_ip2p

    folder = write_tiny_ip2p(tmp_path / "tiny-ip2p")
    events = _edit(project, editor="ip2p", model=str(folder), instruction="make it look like a dragon",
                   steps=4, edit_rate=2, guidance=Guidance(steps=2))
    report = _report(project)
    assert report["editor"] == "ip2p" and report["edits_made"] == 2 and "edit_fidelity_psnr" not in report
    previews = [e for e in events if isinstance(e, Preview)]
    assert len(previews) == 2 and previews[0].image.shape == (48, 96, 3)
    with pytest.raises(UserInputError, match="needs --model"):
        _edit(project, editor="ip2p", instruction="anything")

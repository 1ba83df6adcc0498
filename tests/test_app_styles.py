"""The Portrait tab's Styles page (pytest-qt under Xvfb) on a fake FF3D engine: the set fills in view by view and
views can be unticked, training shows progress, ETA, the loss and the live orbit, a cancelled training offers to
resume, the library lists learned styles, applying and mixing render, exports write, errors are said in a line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("PySide6")

from app.portrait.styles_panel import StylesPage, slug  # noqa: E402
from engine.core.errors import UserInputError  # noqa: E402
from engine.core.jobs import Artifact, Metrics, Preview, Progress  # noqa: E402

TIMEOUT_MS = 20_000


class FakeEngine:
    """Writes what the real jobs write (set.json, a style's files) and yields their kinds of events, instantly."""

    def __init__(self) -> None:
        self.applied: list = []
        self.trained: list = []
        self.exported: list = []
        self.hold = False

    def build_set(self, cfg, cancel):
        if cfg.style == "Na'vi":
            raise UserInputError("the offline editor knows: bronze statue, pencil sketch, ...")
        out = Path(cfg.out)
        out.mkdir(parents=True)
        views = []
        for k in range(5):
            views.append({"file": f"views/{k}.png", "camera": [0.0] * 25, "identity": 0, "kept": True})
            yield Preview(k, np.full((8, 8, 3), 40 * k, np.uint8), {"view": k, "yaw": 10.0 * k, "pitch": 0.0})
            yield Progress(k + 1, 5, "stylising the views")
        (out / "set.json").write_text(json.dumps({"kind": "ff3d-set", "views": views, "identities": [{}]}))
        yield Artifact(out / "set.json", "set")

    def train(self, cfg, cancel):
        self.trained.append(cfg)
        out = Path(cfg.out)
        out.mkdir(parents=True, exist_ok=True)
        for step in range(1, 6):
            if cancel.cancelled:
                (out / "training_state.pt").write_bytes(b"state")
                return
            yield Metrics(step, {"loss_total": 1.0 / step})
            yield Preview(step, np.full((8, 8, 3), 20 * step, np.uint8), {"layout": "orbit"})
            yield Progress(step, None, "fine-tuning", fraction=step / 5, eta_seconds=60.0 - 10 * step)
            while self.hold and not cancel.cancelled:
                pass
        for name in ("i2t.safetensors", "thumbnail.png"):
            (out / name).write_bytes(b"")
        yield Artifact(out / "i2t.safetensors", "weights")

    def apply(self, request, yaw, cancel):
        self.applied.append((request, yaw))
        yield Preview(0, np.full((8, 8, 3), int(100 * request.alpha), np.uint8), {"layout": "styled"})

    def export(self, request, cancel):
        self.exported.append(request)
        out = Path(request.out)
        yield Artifact(out / "view.png", "view")


@pytest.fixture
def engine():
    return FakeEngine()


@pytest.fixture
def page(qtbot, tmp_path, engine):
    widget = StylesPage(engine, library=tmp_path / "library")
    qtbot.addWidget(widget)
    widget.show()
    yield widget
    engine.hold = False
    widget.stop()


def idle(page, qtbot) -> None:
    qtbot.waitUntil(lambda: not page.busy and page.build_button.isEnabled(), timeout=TIMEOUT_MS)


def test_a_style_is_built_pruned_trained_and_lands_in_the_library(page, qtbot, tmp_path, engine):
    page.style_edit.setText("A Bronze statue")
    page.build_set()
    idle(page, qtbot)
    assert page.views.count() == 5 and page.folder == tmp_path / "library" / "a-bronze-statue"
    assert "untick" in page.status.text()
    page.views.item(2).setCheckState(page.views.item(2).checkState().__class__.Unchecked)
    meta = json.loads((page.folder / "set" / "set.json").read_text())
    assert [v["kept"] for v in meta["views"]] == [True, True, False, True, True]
    page.train()
    idle(page, qtbot)
    assert page.loss_plot.values == [1.0, 0.5, 1 / 3, 0.25, 0.2]
    assert page.progress.value() == 1000 and "fine-tuning" in page.eta_label.text()
    assert page.orbit.image is not None
    assert engine.trained[0].set == str(page.folder / "set") and engine.trained[0].minutes == 3.0
    assert page.library_list.count() == 1 and page.library_list.currentItem().text() == "a-bronze-statue"
    qtbot.waitUntil(lambda: page.result.image is not None, timeout=TIMEOUT_MS)


def test_a_cancelled_training_offers_to_resume(page, qtbot, engine):
    page.style_edit.setText("sepia")
    page.build_set()
    idle(page, qtbot)
    engine.hold = True
    page.train()
    qtbot.waitUntil(lambda: bool(page.loss_plot.values), timeout=TIMEOUT_MS)
    assert page.cancel_button.isEnabled() and not page.train_button.isEnabled()
    page.cancel()
    idle(page, qtbot)
    assert page.train_button.text() == "Resume" and "Resume" in page.status.text()


def test_mixing_and_exporting_use_the_library(page, qtbot, tmp_path, engine):
    for name in ("bronze", "sketch"):
        (tmp_path / "library" / name / "style").mkdir(parents=True)
        (tmp_path / "library" / name / "style" / "i2t.safetensors").write_bytes(b"")
    page.refresh_library()
    assert page.library_list.count() == 2 and page.mix_combo.count() == 3
    page.library_list.setCurrentRow(0)
    page.mix_combo.setCurrentIndex(2)
    page.alpha_slider.setValue(30)
    qtbot.waitUntil(lambda: bool(engine.applied) and engine.applied[-1][0].alpha == 0.3, timeout=TIMEOUT_MS)
    request, yaw = engine.applied[-1]
    assert request.style.endswith("bronze/style") and request.mix.endswith("sketch/style") and yaw == 0.0
    page.yaw_slider.setValue(20)
    qtbot.waitUntil(lambda: engine.applied[-1][1] == 20.0, timeout=TIMEOUT_MS)
    page.export("video", str(tmp_path / "out"))
    idle(page, qtbot)
    assert engine.exported[-1].video and not engine.exported[-1].mesh and engine.exported[-1].size is None
    assert page.status.text() == f"Wrote 1 files to {tmp_path / 'out'}"


def test_problems_are_said_in_one_line(page, qtbot):
    page.build_set()
    assert "Type a style" in page.status.text()
    page.train()
    assert "Build a set first" in page.status.text()
    page.style_edit.setText("Na'vi")
    page.build_set()
    idle(page, qtbot)
    assert "offline editor knows" in page.status.text()
    assert slug("Na'vi from Avatar!") == "na-vi-from-avatar"

"""The Portrait tab's Semantic page (pytest-qt under Xvfb) on a tiny random SemFaceEdit generator: showing a face,
taking a group's look from another face, painting the map and applying it with live frames, cancelling, undo and
redo of edits and strokes, and a bad face folder said in one line."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("PySide6")
import torch  # noqa: E402

from app.portrait.semantic_panel import SemanticPage  # noqa: E402
from engine.portrait.semantic import GROUPS, SemanticConfig, SemanticGenerator  # noqa: E402
from engine.portrait.semantic_edit import SemanticSession  # noqa: E402

TIMEOUT_MS = 20_000
HAIR = GROUPS.index("hair")


def tiny_session() -> SemanticSession:
    torch.manual_seed(0)
    return SemanticSession(SemanticGenerator(SemanticConfig(width=16, geometry_layers=2, appearance_width=8,
                                                            appearance_layers=1, mapping_width=16,
                                                            num_samples=12)).requires_grad_(False))


@pytest.fixture
def page(qtbot):
    widget = SemanticPage(tiny_session, size=16)
    qtbot.addWidget(widget)
    widget.show()
    yield widget
    widget.stop()


def finished(page, qtbot, count: int) -> None:
    qtbot.waitUntil(lambda: page.undo_stack.count() == count and page.running is None, timeout=TIMEOUT_MS)


def test_a_face_is_shown_and_a_groups_look_taken_from_another_face(page, qtbot):
    page.show_face(3)
    finished(page, qtbot, 1)
    assert page.view.image is not None and page.painter.labels.shape == (16, 16)
    page.view.dragged.emit(-10.0, 5.0)  # a drag turns the face
    assert (page.yaw_slider.value(), page.pitch_slider.value()) == (4, 2)
    first = page.styles
    page.take(HAIR, 7)
    finished(page, qtbot, 2)
    taken = page.styles
    assert taken.geometry is first.geometry  # the look only
    assert not torch.equal(taken.appearance[HAIR][0], first.appearance[HAIR][0])
    assert all(taken.appearance[k] is first.appearance[k] for k in range(len(GROUPS)) if k != HAIR)
    page.undo_stack.undo()
    qtbot.waitUntil(lambda: page.styles is first, timeout=TIMEOUT_MS)
    page.undo_stack.redo()
    qtbot.waitUntil(lambda: page.styles is taken, timeout=TIMEOUT_MS)
    qtbot.waitUntil(lambda: page.status.text() == "redone: hair look from 7", timeout=TIMEOUT_MS)


def test_painting_is_applied_with_live_frames_and_strokes_and_edits_share_the_undo_stack(page, qtbot):
    from app.portrait.mask_painter import StrokeCommand

    page.show_face(3)
    finished(page, qtbot, 1)
    before, original = page.styles, page.painter.labels.copy()
    painted = original.copy()
    painted[2:8, 2:8] = HAIR
    page.undo_stack.push(StrokeCommand(page.painter, original, painted, "brush (hair)"))  # as a stroke pushes it
    assert np.array_equal(page.painter.labels, painted)
    frames = []
    page.worker.frame_ready.connect(frames.append)
    page.apply_painting(steps=10)
    finished(page, qtbot, 3)
    assert [f.done for f in frames] == [False, True]  # a live frame at step 5, then the result
    assert not torch.equal(page.styles.geometry[0], before.geometry[0])
    assert page.styles.appearance is before.appearance
    page.undo_stack.undo()  # the painted shape
    qtbot.waitUntil(lambda: page.styles is before, timeout=TIMEOUT_MS)
    page.undo_stack.undo()  # the stroke
    assert np.array_equal(page.painter.labels, original)


def test_cancelling_keeps_what_the_optimisation_reached_and_a_bad_folder_is_one_line(page, qtbot, tmp_path):
    page.show_face(3)
    finished(page, qtbot, 1)
    page.apply_painting(steps=100000)
    qtbot.waitUntil(lambda: "step" in page.status.text(), timeout=TIMEOUT_MS)
    page.cancel()
    finished(page, qtbot, 2)
    assert "cancelled" in page.status.text()
    page.open_face(str(tmp_path))
    qtbot.waitUntil(lambda: "not a face folder" in page.error.text(), timeout=TIMEOUT_MS)
    assert page.undo_stack.count() == 2 and np.isfinite(page.painter.labels).all()


def test_export_writes_views_maps_video_and_mesh_without_an_undo_step(page, qtbot, tmp_path, monkeypatch):
    import app.portrait.semantic_panel as panel
    import engine.portrait.semantic_edit as semantic_edit
    from engine.core.meshes import Mesh

    monkeypatch.setattr(panel, "EXPORT_SIZE", 16)
    tetrahedron = Mesh(np.eye(4, 3), np.array([[0, 1, 2], [0, 1, 3], [0, 2, 3], [1, 2, 3]]), np.zeros((4, 3), np.uint8))
    monkeypatch.setattr(semantic_edit, "semantic_mesh", lambda *_: (tetrahedron, np.array([0, 1, 2, 3], np.uint8)))
    page.show_face(3)
    finished(page, qtbot, 1)
    page.export(str(tmp_path / "out"))
    qtbot.waitUntil(lambda: page.status.text().startswith("Wrote 9 files"), timeout=TIMEOUT_MS)
    names = {p.name for p in (tmp_path / "out").iterdir()}
    assert {"face_yaw+0.png", "face_yaw+0_semantic.png", "face_orbit.mp4", "face_mesh.ply", "face_mesh.glb"} <= names
    qtbot.waitUntil(lambda: page.running is None, timeout=TIMEOUT_MS)
    assert page.undo_stack.count() == 1


def test_a_photo_is_inverted_with_live_frames_and_is_one_undo_step(page, qtbot, tmp_path):
    from PIL import Image

    Image.fromarray(np.full((512, 512, 3), 140, np.uint8)).save(tmp_path / "photo.png")
    labels = np.zeros((512, 512), np.uint8)
    labels[100:400, 150:350] = 1  # CelebAMask-HQ skin: the face
    Image.fromarray(labels).save(tmp_path / "labels.png")
    frames = []
    page.worker.frame_ready.connect(frames.append)
    page.invert_photo(str(tmp_path / "photo.png"), str(tmp_path / "labels.png"), steps=6)
    finished(page, qtbot, 1)
    assert [f.done for f in frames] == [False, True] and page.status.text() == "inverted photo.png"
    page.invert_photo(str(tmp_path / "photo.png"), str(tmp_path / "photo.png"), steps=2)  # a photo, not labels
    qtbot.waitUntil(lambda: "label" in page.error.text(), timeout=TIMEOUT_MS)
    assert page.undo_stack.count() == 1


def test_a_photo_without_a_label_map_is_painted_then_inverted_with_that_map(page, qtbot, tmp_path):
    from PIL import Image

    Image.fromarray(np.full((512, 512, 3), 90, np.uint8)).save(tmp_path / "photo.png")
    page.invert_photo(str(tmp_path / "photo.png"))  # no label map, no face-parsing model: the user paints one
    qtbot.waitUntil(lambda: page.photo_to_invert is not None and page.running is None, timeout=TIMEOUT_MS)
    assert page.apply_button.text() == "Invert with this map" and (page.painter.labels == 0).all()
    assert page.painter.image is not None and page.undo_stack.count() == 0
    painted = page.painter.labels.copy()
    painted[4:12, 5:11] = GROUPS.index("face")
    page.painter.show_labels(painted)
    page.apply_painting(steps=4)
    finished(page, qtbot, 1)
    assert page.status.text() == "inverted photo.png" and page.apply_button.text() == "Apply painting"

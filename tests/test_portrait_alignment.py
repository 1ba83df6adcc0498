"""Portrait input: photos read safely, landmarks from files or the detector, EG3D's in-the-wild crop and the pose
estimate from the same template fit."""

import types
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from engine.cli import main as cli_main
from engine.core.errors import UserInputError
from engine.portrait import alignment
from engine.portrait.alignment import (CENTRE, OUTPUT, RESCALE, TARGET, TEMPLATE, align_face, estimate_pose,
                                       fit_template, locate_landmarks, portrait_input, read_landmarks, read_photo)

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
WILD = SHARED / "data" / "portraits" / "in-the-wild"
needs_shared = pytest.mark.skipif(not WILD.is_dir(), reason="../shared/data/portraits is not beside the repository")


def _rotation(yaw_deg: float, pitch_deg: float) -> np.ndarray:
    """Template → camera rotation of a camera at (yaw, pitch) in engine.portrait.cameras' convention."""
    yaw, pitch = np.radians(yaw_deg), np.radians(pitch_deg)
    about_y = np.array([[np.cos(yaw), 0, -np.sin(yaw)], [0, 1, 0], [np.sin(yaw), 0, np.cos(yaw)]])
    about_x = np.array([[1, 0, 0], [0, np.cos(pitch), -np.sin(pitch)], [0, np.sin(pitch), np.cos(pitch)]])
    return about_x @ about_y


def _landmarks(scale: float, centre: tuple[float, float], height: int, yaw: float = 0.0, pitch: float = 0.0):
    """The template seen by a scaled orthographic camera, in image pixels (y down)."""
    projected = scale * (TEMPLATE @ _rotation(yaw, pitch).T)[:, :2] + np.array(centre)
    projected[:, 1] = height - 1 - projected[:, 1]
    return projected


def test_landmarks_of_the_template_land_where_the_crop_puts_them():
    rng = np.random.default_rng(0)
    height, width = 700, 900
    image = rng.integers(0, 60, (height, width, 3), dtype=np.uint8)
    points = _landmarks(180.0, (430.0, 380.0), height)
    nose = np.round(points[2]).astype(int)
    image[nose[1] - 2:nose[1] + 3, nose[0] - 2:nose[0] + 3] = 255  # a bright dot on the nose tip
    aligned = align_face(image, points)
    canonical = np.stack([CENTRE / 2 + RESCALE * TEMPLATE[:, 0], CENTRE / 2 - RESCALE * TEMPLATE[:, 1]], 1) \
        * OUTPUT / CENTRE
    assert aligned.image.shape == (OUTPUT, OUTPUT, 3) and aligned.scale == pytest.approx(RESCALE / 180.0)
    assert np.abs(aligned.landmarks - canonical).max() < 0.75 * OUTPUT / CENTRE  # whole pixels of the 1024 crop
    row, col = np.unravel_index(np.argmax(aligned.image.sum(axis=2)), aligned.image.shape[:2])
    assert np.hypot(col + 0.5 - aligned.landmarks[2, 0], row + 0.5 - aligned.landmarks[2, 1]) < 2.0
    translation, scale, _ = fit_template(points, height)
    assert scale == pytest.approx(180.0) and np.allclose(translation, (430.0, 380.0))


def test_a_face_near_the_border_is_cropped_with_black_beyond_the_photo():
    image = np.full((400, 300, 3), 200, dtype=np.uint8)
    aligned = align_face(image, _landmarks(60.0, (40.0, 200.0), 400))  # the face at the photo's left edge
    assert (aligned.image[:, :40] == 0).all() and (aligned.image[200:300, 300:400] == 200).all()


@pytest.mark.parametrize("yaw, pitch", [(0, 0), (25, 0), (-30, 10), (10, -15)])
def test_the_pose_estimate_recovers_the_camera_of_template_landmarks(yaw, pitch):
    points = _landmarks(150.0, (250.0, 260.0), 512, yaw, pitch)
    assert estimate_pose(points, 512) == pytest.approx((yaw, pitch), abs=0.5)


@needs_shared
def test_the_crop_of_real_photos_matches_resizing_the_whole_photo():
    """The window is resampled straight from the photo; EG3D resizes the whole photo first: the same pixels."""
    for name in ("000002.jpg", "015316.jpg", "vd026.png"):
        photo = read_photo(WILD / name)
        points = read_landmarks(WILD / "detections" / f"{Path(name).stem}.txt", photo.image.shape[1::-1])
        height, width = photo.image.shape[:2]
        translation, fitted, _ = fit_template(points, height)
        scale = RESCALE / fitted
        w, h = int(width * scale), int(height * scale)
        left = int(w / 2 - TARGET / 2 + (translation[0] - width / 2) * scale)
        up = int(h / 2 - TARGET / 2 + (height / 2 - translation[1]) * scale)
        offset = (TARGET - CENTRE) // 2
        whole = Image.fromarray(photo.image).resize((w, h), Image.Resampling.BICUBIC)
        reference = whole.crop((left + offset, up + offset, left + offset + CENTRE, up + offset + CENTRE))
        reference = np.asarray(reference.resize((OUTPUT, OUTPUT), Image.Resampling.LANCZOS)).astype(int)
        assert np.abs(align_face(photo.image, points).image.astype(int) - reference).mean() < 0.25


@needs_shared
def test_align_command_writes_the_crop_and_its_landmarks(tmp_path, capsys):
    out = tmp_path / "aligned" / "vd026.png"
    assert cli_main(["portrait", "align", "--image", str(WILD / "vd026.png"), "--out", str(out)]) == 0
    crop = np.asarray(Image.open(out))
    points = read_landmarks(out.with_suffix(".txt"), (OUTPUT, OUTPUT))
    assert crop.shape == (OUTPUT, OUTPUT, 3)
    assert 100 < points[1, 0] - points[0, 0] < 160 and abs(points[:2, 1].mean() - 200) < 25  # eyes where EG3D's are
    aligned = SHARED / "data" / "portraits" / "aligned" / "01.jpg"  # an EG3D crop: used as is
    assert cli_main(["portrait", "align", "--image", str(aligned), "--out", str(tmp_path / "01.png")]) == 0
    assert "used as is" in capsys.readouterr().out
    assert np.array_equal(np.asarray(Image.open(tmp_path / "01.png")), read_photo(aligned).image)


def test_bad_photos_and_landmark_files_are_refused_with_one_clear_line(tmp_path, capsys):
    (tmp_path / "notes.jpg").write_text("not an image")
    Image.new("RGB", (40, 80)).save(tmp_path / "tiny.png")
    with pytest.raises(UserInputError, match="notes.jpg: not an image"):
        read_photo(tmp_path / "notes.jpg")
    with pytest.raises(UserInputError, match="40x80 pixels is too small"):
        read_photo(tmp_path / "tiny.png")
    for text, problem in (("1 2\n3 4\n5 6\n7 8\n", "found 4 line"), ("1 2\n3 4\n5 6\n7 8\n9 x\n", "numbers"),
                          ("1 2\n3 4\n5 6\n7 8\n9\n", "not all with two numbers")):
        (tmp_path / "lm.txt").write_text(text)
        with pytest.raises(UserInputError, match=problem):
            read_landmarks(tmp_path / "lm.txt")
    (tmp_path / "lm.txt").write_text("10 10\n50 10\n30 30\n15 50\n45 500\n")
    with pytest.raises(UserInputError, match="right mouth corner outside the 64x64 image"):
        read_landmarks(tmp_path / "lm.txt", (64, 64))
    Image.new("RGB", (64, 64)).save(tmp_path / "face.png")
    out = tmp_path / "out.png"
    assert cli_main(["portrait", "align", "--image", str(tmp_path / "face.png"), "--landmarks",
                     str(tmp_path / "lm.txt"), "--out", str(out)]) == 2
    assert "right mouth corner outside" in capsys.readouterr().err and not out.exists()


@pytest.mark.parametrize("mode, note", [("I;16", "16-bit"), ("CMYK", "CMYK"), ("P", "palette"), ("RGBA", "white"),
                                        ("L", "grayscale")])
def test_unusual_image_modes_are_converted_with_a_note(tmp_path, mode, note):
    ramp = np.tile(np.linspace(0, 255, 96).astype(np.uint8), (80, 1))
    base = Image.fromarray(np.stack([ramp, ramp // 2, 255 - ramp], -1))
    image = {"I;16": Image.fromarray(ramp.astype(np.uint16) * 257), "CMYK": base.convert("CMYK"),
             "P": base.convert("P"), "RGBA": base.convert("RGBA"), "L": base.convert("L")}[mode]
    path = tmp_path / ("photo.jpg" if mode == "CMYK" else "photo.png")
    image.save(path)
    photo = read_photo(path)
    assert photo.image.shape == (80, 96, 3) and photo.image.dtype == np.uint8
    assert len(photo.notes) == 1 and note in photo.notes[0]
    if mode == "I;16":
        assert abs(int(photo.image[0, -1, 0]) - 255) <= 1 and photo.image[0, 0, 0] == 0


def _fake_detector(monkeypatch, faces: list) -> None:
    monkeypatch.setattr(alignment, "_detector", lambda: types.SimpleNamespace(detect=lambda image: faces))


def test_landmarks_come_from_the_file_beside_the_photo_else_the_detector(tmp_path, monkeypatch):
    Image.new("RGB", (300, 300), (90, 90, 90)).save(tmp_path / "me.png")
    photo = read_photo(tmp_path / "me.png")
    _fake_detector(monkeypatch, [])
    with pytest.raises(UserInputError, match=r"me.png: no face found; give its five landmarks .*detections"):
        locate_landmarks(photo)
    big, small = (_landmarks(60.0, (150.0, 150.0), 300), _landmarks(20.0, (60.0, 60.0), 300))
    _fake_detector(monkeypatch, [types.SimpleNamespace(landmarks=big), types.SimpleNamespace(landmarks=small)])
    found = locate_landmarks(photo)
    assert np.array_equal(found.points, big) and "2 faces found; aligned the largest" in found.notes[0]
    (tmp_path / "detections").mkdir()
    (tmp_path / "detections" / "me.txt").write_text("".join(f"{x} {y}\n" for x, y in small))
    assert np.allclose(locate_landmarks(photo).points, small)  # the detections file first
    assert alignment.detections_file(tmp_path / "me.png") == tmp_path / "detections" / "me.txt"
    aligned = portrait_input(tmp_path / "me.png")
    assert aligned.image.shape == (OUTPUT, OUTPUT, 3) and aligned.landmarks is not None


@needs_shared
def test_the_built_in_detector_aligns_a_photo_without_landmarks(tmp_path):
    import shutil

    shutil.copy(WILD / "000031.jpg", tmp_path / "000031.jpg")  # no detections file beside it
    alignment._detector.cache_clear()
    aligned = portrait_input(tmp_path / "000031.jpg")
    given = portrait_input(WILD / "000031.jpg")  # from the shipped detections
    assert aligned.notes == () and np.abs(aligned.landmarks - given.landmarks).max() < 0.1 * OUTPUT / 4

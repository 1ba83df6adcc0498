"""Portrait cameras (EG3D convention) and procedural synthetic heads: geometry, parameters and ground truth."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from engine.portrait import cameras as C
from engine.portrait import heads as H

FRONTAL = np.array([[1, 0, 0, 0], [0, -1, 0, 0], [0, 0, -1, 2.7], [0, 0, 0, 1]], dtype=np.float32)
HEADS = [H.HeadParams.average()] + [H.HeadParams.from_seed(s) for s in range(5)]


@pytest.fixture(scope="module")
def frontal() -> H.HeadRender:
    return H.render_heads(HEADS, C.camera_label(0, 0), 64)


def _pixel_of(point: np.ndarray, label: np.ndarray, resolution: int) -> tuple[float, float]:
    """(row, column) where a world point projects, through the label's K and camera-to-world."""
    c2w, k = C.split_label(label)
    cam = c2w[:3, :3].T @ (point - c2w[:3, 3])
    u, v, w = k @ cam
    return v / w * resolution - 0.5, u / w * resolution - 0.5


def _centroid(labels: np.ndarray, label: int) -> tuple[float, float]:
    rows, cols = np.nonzero(labels == label)
    return rows.mean(), cols.mean()


# ---------------------------------------------------------------------------------------------- cameras

def test_frontal_camera_is_eg3d_frontal_pose():
    c2w, k = C.split_label(C.camera_label(0, 0))
    np.testing.assert_allclose(c2w, FRONTAL, atol=1e-6)
    np.testing.assert_allclose(k, [[4.2647, 0, 0.5], [0, 4.2647, 0.5], [0, 0, 1]], atol=1e-6)
    np.testing.assert_allclose(C.look_at_pose(math.pi / 2, math.pi / 2)[0], FRONTAL, atol=1e-6)


@pytest.mark.parametrize("yaw, pitch", [(0, 0), (30, 0), (-45, 10), (70, -25), (180, 5)])
def test_orbit_cameras_sit_at_radius_and_look_at_the_pivot(yaw, pitch):
    c2w, _ = C.split_label(C.camera_label(yaw, pitch))
    origin, right, down, forward = c2w[:3, 3], c2w[:3, 0], c2w[:3, 1], c2w[:3, 2]
    assert np.linalg.norm(origin) == pytest.approx(2.7, abs=1e-5)
    to_pivot = np.array(C.PIVOT) - origin
    np.testing.assert_allclose(forward, to_pivot / np.linalg.norm(to_pivot), atol=1e-6)
    np.testing.assert_allclose(c2w[:3, :3] @ c2w[:3, :3].T, np.eye(3), atol=1e-6)
    assert np.linalg.det(c2w[:3, :3]) == pytest.approx(1, abs=1e-5)  # right-handed: right x down = forward
    assert right[1] == pytest.approx(0, abs=1e-6) and down[1] < 0  # no roll; image "down" is world -y
    yaw_rad, pitch_rad = math.radians(yaw), math.radians(pitch)
    np.testing.assert_allclose(origin, 2.7 * np.array([math.cos(pitch_rad) * math.sin(yaw_rad), math.sin(pitch_rad),
                                                       math.cos(pitch_rad) * math.cos(yaw_rad)]), atol=1e-5)


def test_yaw_pitch_map_to_eg3d_sampler_angles():
    # LookAtPoseSampler: polar angle arccos(1 - 2 v / pi), so v = pi/2 - 0.3 puts the camera at y = 2.7 * 0.6 / pi
    assert C.look_at_pose(math.pi / 2, math.pi / 2 - 0.3)[0, 1, 3] == pytest.approx(2.7 * 0.6 / math.pi)
    h, v = C.yaw_pitch_to_look_at(25.0, -12.0)
    np.testing.assert_allclose(C.look_at_pose(h, v)[0], C.split_label(C.camera_label(25, -12))[0], atol=1e-6)


def test_frontal_image_is_upright_and_not_mirrored():
    label = C.camera_label(0, 0)
    row_up, col_up = _pixel_of(np.array([0.0, 0.2, 0.0]), label, 64)
    row_right, col_right = _pixel_of(np.array([0.2, 0.0, 0.0]), label, 64)
    assert row_up < 31.5 and col_up == pytest.approx(31.5)  # world +y at the top
    assert col_right > 31.5 and row_right == pytest.approx(31.5)  # world +x on the right


def test_label_round_trip_and_batches():
    labels = C.camera_labels([0, 20, -35], [0, 10, -5])
    assert labels.shape == (3, 25) and labels.dtype == np.float32
    c2w, k = C.split_label(labels)
    assert c2w.shape == (3, 4, 4) and k.shape == (3, 3, 3)
    np.testing.assert_array_equal(np.concatenate([c2w.reshape(3, 16), k.reshape(3, 9)], 1), labels)
    np.testing.assert_array_equal(labels[1], C.camera_label(20, 10))
    assert C.check_labels(labels[0]).shape == (1, 25)


def test_bad_labels_are_refused_with_a_clear_message():
    with pytest.raises(ValueError, match="shape"):
        C.check_labels(np.zeros(24))
    label = C.camera_labels([0, 10], [0, 0])
    label[1, 3] = np.nan
    with pytest.raises(ValueError, match="camera label 1 holds non-finite values"):
        C.split_label(label)
    with pytest.raises(ValueError, match="non-finite"):
        C.rays(np.full(25, np.inf), 4)


def test_rays_through_the_image_centre_point_at_the_pivot():
    labels = C.camera_labels([0, 30, -50], [0, 15, -10])
    origins, directions = C.rays(labels, 5)  # odd size: pixel (2, 2) is the image centre
    assert origins.shape == directions.shape == (3, 25, 3)
    np.testing.assert_allclose(directions.norm(dim=-1).numpy(), 1, atol=1e-6)
    for n, label in enumerate(labels):
        c2w, _ = C.split_label(label)
        to_pivot = np.array(C.PIVOT) - c2w[:3, 3]
        np.testing.assert_allclose(origins[n, 12].numpy(), c2w[:3, 3], atol=1e-6)
        np.testing.assert_allclose(directions[n, 2 * 5 + 2].numpy(), to_pivot / np.linalg.norm(to_pivot), atol=1e-6)


def test_points_on_a_ray_project_back_to_its_pixel():
    resolution = 16
    label = C.camera_label(-25, 12)
    origins, directions = C.rays(label, resolution)
    for row, col, t in ((0, 0, 2.3), (3, 11, 2.7), (15, 7, 3.1), (9, 15, 2.5)):
        ray = row * resolution + col
        point = (origins[0, ray] + t * directions[0, ray]).double().numpy()
        assert _pixel_of(point, label, resolution) == pytest.approx((row, col), abs=1e-3)


# ---------------------------------------------------------------------------------------------- parameters

def test_params_table_matches_the_dataclass():
    assert tuple(f.name for f in dataclasses.fields(H.HeadParams)) == H.PARAM_NAMES
    assert H.PARAM_COUNT == len(H.PARAM_SPECS) == len(set(H.PARAM_NAMES))
    for spec in H.PARAM_SPECS:
        assert spec.std > 0 and spec.low < spec.mean < spec.high and spec.doc


def test_heads_are_deterministic_per_seed_and_differ_across_seeds():
    assert H.HeadParams.from_seed(7) == H.HeadParams.from_seed(7)
    vectors = np.stack([H.HeadParams.from_seed(s).to_vector() for s in range(20)])
    assert len(np.unique(vectors, axis=0)) == 20
    assert (vectors.std(axis=0) > 0).all()  # every parameter varies


def test_vector_and_standardised_round_trips():
    head = H.HeadParams.from_seed(3)
    assert H.HeadParams.from_vector(head.to_vector()) == head
    z = head.standardised()
    np.testing.assert_allclose(z, (head.to_vector() - H.PARAM_MEAN) / H.PARAM_STD)
    restored = H.HeadParams.from_standardised(z)
    np.testing.assert_allclose(restored.to_vector(), head.to_vector(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(H.HeadParams.average().standardised(), 0, atol=1e-12)
    assert H.HeadParams.from_standardised(np.full(H.PARAM_COUNT, 10.0)).to_vector() == pytest.approx(H.PARAM_HIGH)
    with pytest.raises(ValueError, match="36 finite floats"):
        H.HeadParams.from_vector(np.zeros(5))


def test_parameter_draws_follow_the_documented_distributions():
    draws = np.stack([H.HeadParams.from_seed(s).to_vector() for s in range(2000)])
    assert (draws >= H.PARAM_LOW).all() and (draws <= H.PARAM_HIGH).all()
    z = (draws - H.PARAM_MEAN) / H.PARAM_STD
    # standard error of a mean of 2000 standard normals is 0.022: 0.1 is over 4 of them
    assert np.abs(z.mean(axis=0)).max() < 0.1, dict(zip(H.PARAM_NAMES, z.mean(axis=0).round(3)))
    assert np.abs(z.std(axis=0) - 1).max() < 0.07, dict(zip(H.PARAM_NAMES, z.std(axis=0).round(3)))


# ---------------------------------------------------------------------------------------------- renders

def test_render_outputs_have_documented_types(frontal):
    n = len(HEADS)
    assert frontal.rgb.shape == (n, 64, 64, 3) and frontal.rgb.dtype == np.float32
    assert 0 <= frontal.rgb.min() and frontal.rgb.max() <= 1
    assert frontal.depth.shape == (n, 64, 64) and frontal.depth.dtype == np.float32
    assert frontal.mask.dtype == bool and frontal.labels_fine.dtype == frontal.labels_group.dtype == np.uint8
    assert frontal.labels_fine.max() < len(H.FINE_LABELS) and frontal.labels_group.max() < len(H.GROUP_LABELS)


def test_frontal_render_is_framed_like_an_ffhq_crop(frontal):
    for n in range(len(HEADS)):
        labels = frontal.labels_fine[n]
        assert 0.3 < frontal.mask[n].mean() < 0.7
        assert labels[0, 0] == labels[0, -1] == 0  # background in the top corners
        np.testing.assert_array_equal(frontal.mask[n], labels > 0)
        np.testing.assert_allclose(frontal.rgb[n, 0, 0], [getattr(HEADS[n], f"background_{c}")
                                                         for c in ("red", "green", "blue")], atol=1e-6)
        top_row = np.nonzero(frontal.mask[n].any(axis=1))[0].min()
        assert (labels[top_row][labels[top_row] > 0] == 7).all() and top_row < 8  # hair at the top
        assert (labels[-1] == 8).mean() > 0.5  # garment along the bottom
        face_rows = np.nonzero(np.isin(labels, (1, 2, 3, 4)).any(axis=1))[0]
        assert 0.45 < (face_rows.max() - face_rows.min()) / 64 < 0.75  # forehead to chin
        eyes, nose, mouth = (_centroid(labels, k) for k in (3, 2, 4))
        assert eyes[0] < nose[0] < mouth[0] < 50  # eyes above nose above mouth, chin above the neck
        assert abs(eyes[1] - 31.5) < 1 and abs(mouth[1] - 31.5) < 1
        eye_cols = np.nonzero(labels == 3)[1]
        assert (eye_cols < 29).any() and (eye_cols > 34).any()  # two eyes, one each side


def test_group_labels_follow_fine_labels(frontal):
    np.testing.assert_array_equal(frontal.labels_group, H.FINE_TO_GROUP[frontal.labels_fine])
    groups = {fine: H.GROUP_LABELS[H.FINE_TO_GROUP[i]] for i, fine in enumerate(H.FINE_LABELS)}
    assert groups == {"background": "background", "skin": "face", "nose": "face", "eyes": "face", "mouth": "face",
                      "ears": "face", "neck": "face", "hair": "hair", "garment": "garment"}


def test_depth_is_the_ray_distance_to_the_surface(frontal):
    fg = frontal.mask
    assert (frontal.depth[~fg] == C.RAY_END).all()
    assert C.RAY_START < frontal.depth[fg].min() and frontal.depth[fg].max() < C.RAY_END
    assert (2.3 < frontal.depth[:, 32, 32]).all() and (frontal.depth[:, 32, 32] < 2.55).all()  # face centre
    origins, directions = C.rays(C.camera_label(0, 0), 64)
    points = origins[0].numpy() + directions[0].numpy() * frontal.depth[1].reshape(-1, 1)
    points = points[fg[1].reshape(-1)]
    distance, labels = H.signed_distance(points, HEADS[1])
    assert distance.abs().max() < 1e-3  # the surface, found again by the ground-truth distance function
    assert (labels.numpy() == frontal.labels_fine[1][fg[1]]).mean() > 0.99


def test_renders_are_deterministic_and_independent_of_the_batch(frontal):
    again = H.render_heads(HEADS[2], C.camera_label(0, 0), 64)
    np.testing.assert_array_equal(again.labels_fine[0], frontal.labels_fine[2])
    np.testing.assert_allclose(again.rgb[0], frontal.rgb[2], atol=1e-5)
    np.testing.assert_allclose(again.depth[0], frontal.depth[2], atol=1e-5)
    assert not np.array_equal(frontal.rgb[1], frontal.rgb[2])
    with pytest.raises(ValueError, match="as many heads as cameras"):
        H.render_heads(HEADS[:2], C.camera_labels([0, 1, 2], [0, 0, 0]), 8)


def test_yaw_turns_the_face_the_right_way(frontal):
    turned = H.render_heads(HEADS, C.camera_label(30, 0), 64)
    for n in range(len(HEADS)):
        assert (turned.labels_fine[n] != frontal.labels_fine[n]).mean() > 0.05
        # the camera moves toward +x (the subject's left): the nose, in front of the pivot, swings to the image's
        # left and only the subject's left ear, on the image's right, stays in view
        assert _centroid(turned.labels_fine[n], 2)[1] < _centroid(frontal.labels_fine[n], 2)[1] - 2
        ear_cols = np.nonzero(turned.labels_fine[n] == 5)[1]
        assert len(ear_cols) and (ear_cols > 40).all()
    from_above = H.render_heads(HEADS, C.camera_label(0, 25), 64)
    assert (from_above.labels_fine == 7).sum() > (frontal.labels_fine == 7).sum()  # more hair seen from above


@pytest.mark.parametrize("vector", [H.PARAM_LOW, H.PARAM_HIGH, H.HeadParams.from_seed(11).to_vector()])
def test_heads_lie_inside_the_rendering_box(vector):
    axis = np.linspace(-0.6, 0.6, 41)
    grid = np.stack(np.meshgrid(axis, axis, axis, indexing="ij"), -1).reshape(-1, 3)
    distance, _ = H.signed_distance(grid, H.HeadParams.from_vector(vector))
    inside = grid[distance.numpy() < 0]
    assert len(inside) > 0.02 * len(grid)
    assert np.abs(inside).max() <= H.BOX_HALF
    assert 0.2 < inside[:, 1].max() < 0.45  # top of the hair

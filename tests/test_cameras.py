"""Camera conventions and lens distortion: projecting the rays we cast lands on their pixels."""

import numpy as np
import pytest
import torch

from engine.core.cameras import Cameras, distort, generate_rays, image_rays, look_at, orbit_poses, project_points


def _camera(model: str, distortion) -> Cameras:
    c2w = look_at(np.array([0.3, -2.5, 1.0]), np.zeros(3))[None]
    return Cameras(c2w=c2w, fx=np.array([120.0]), fy=np.array([118.0]), cx=np.array([64.3]), cy=np.array([47.9]),
                   width=np.array([128]), height=np.array([96]), model=model, distortion=np.array([distortion]))


CASES = [("PINHOLE", [0, 0, 0, 0]), ("OPENCV", [0.12, -0.05, 0.004, -0.003]),
         ("OPENCV", [-0.3, 0.09, 0.001, 0.002]), ("OPENCV_FISHEYE", [0.05, -0.01, 0.002, -0.0005])]


@pytest.mark.parametrize("model,coeffs", CASES)
def test_rays_project_back_to_their_pixels(model, coeffs):
    cams = _camera(model, coeffs)
    params = cams.torch_params()
    torch.manual_seed(0)
    u = torch.rand(500) * 128
    v = torch.rand(500) * 96
    origins, dirs = generate_rays(params, torch.zeros(500, dtype=torch.long), u, v, model)
    points = origins + dirs * 3.7
    uv = project_points(points, params["c2w"][0], 120.0, 118.0, 64.3, 47.9, model, params["distortion"][0])
    assert torch.allclose(uv[:, 0], u, atol=2e-3) and torch.allclose(uv[:, 1], v, atol=2e-3)


def test_distortion_bends_rays_away_from_the_pinhole_ones():
    pin = image_rays(_camera("PINHOLE", [0, 0, 0, 0]), 0)[1]
    bent = image_rays(_camera("OPENCV", [0.12, -0.05, 0.004, -0.003]), 0)[1]
    corner_angle = torch.rad2deg(torch.acos((pin[0] * bent[0]).sum().clamp(max=1)))
    assert corner_angle > 1.0  # ignoring k1 = 0.12 would misplace corner pixels by over a degree


def test_opencv_distortion_matches_the_opencv_formula():
    xy = torch.tensor([[0.3, -0.2]], dtype=torch.float64)
    k1, k2, p1, p2 = 0.1, -0.02, 0.003, -0.001
    x, y = 0.3, -0.2
    r2 = x * x + y * y
    radial = 1 + k1 * r2 + k2 * r2 * r2
    expected = [x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x), y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y]
    out = distort(xy, torch.tensor([k1, k2, p1, p2], dtype=torch.float64), "OPENCV")
    assert np.allclose(out[0].numpy(), expected)


def test_principal_ray_is_the_optical_axis_looking_down_minus_z():
    cams = _camera("PINHOLE", [0, 0, 0, 0])
    _, d = generate_rays(cams.torch_params(), torch.zeros(1, dtype=torch.long), torch.tensor([64.3]),
                         torch.tensor([47.9]), "PINHOLE")
    axis = -torch.tensor(cams.c2w[0, :3, 2], dtype=torch.float32)
    assert torch.allclose(d[0], axis, atol=1e-6)
    # +y in the image points down: a pixel below the centre gets a ray tilted towards camera -y
    _, below = generate_rays(cams.torch_params(), torch.zeros(1, dtype=torch.long), torch.tensor([64.3]),
                             torch.tensor([90.0]), "PINHOLE")
    up = torch.tensor(cams.c2w[0, :3, 1], dtype=torch.float32)
    assert float((below[0] * up).sum()) < 0


def test_orbit_poses_are_rigid_and_look_at_the_centre():
    poses = orbit_poses(12, 3.0, 25.0, center=np.array([0.1, 0.2, 0.0]))
    for pose in poses:
        rot = pose[:3, :3]
        assert np.allclose(rot.T @ rot, np.eye(3), atol=1e-9) and np.isclose(np.linalg.det(rot), 1)
        to_centre = np.array([0.1, 0.2, 0.0]) - pose[:3, 3]
        assert np.allclose(np.cross(-pose[:3, 2], to_centre), 0, atol=1e-9)
        assert np.isclose(np.linalg.norm(to_centre), 3.0)


def test_scaled_cameras_keep_the_field_of_view():
    cams = _camera("PINHOLE", [0, 0, 0, 0]).scaled(0.5)
    assert cams.width[0] == 64 and cams.height[0] == 48
    assert np.isclose(cams.fx[0], 60.0) and np.isclose(cams.cx[0], 32.15)

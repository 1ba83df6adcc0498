"""The fast paths of the triplane renderer give what the plain formulas give: plane sampling by
weighted gather against grid_sample, softplus against torch's, renders that skip empty and hidden
space against full renders of the shipped prior; and the allocator keeps freed tensors' memory."""

from __future__ import annotations

import resource

import pytest
import torch
import torch.nn.functional as F

from engine.core.metrics import psnr
from engine.portrait import triplane
from engine.portrait.cameras import camera_labels
from engine.portrait.prior import load_prior


def grid_sample_planes(planes: torch.Tensor, points: torch.Tensor, box_warp: float) -> torch.Tensor:
    """The official way: grid_sample each plane at the projected points, then average the three."""
    n, _, height, width = planes.shape
    coords = (2 / box_warp) * points
    projected = torch.einsum("nmi,pij->npmj", coords, torch.linalg.inv(triplane.plane_axes()))[..., :2]
    sampled = F.grid_sample(planes.reshape(n * 3, -1, height, width), projected.reshape(n * 3, 1, -1, 2),
                            mode="bilinear", padding_mode="zeros", align_corners=False)
    return sampled.reshape(n, 3, -1, points.shape[1]).mean(1).transpose(1, 2)


def test_plane_sampling_matches_grid_sample_values_and_gradients():
    torch.manual_seed(0)
    planes = torch.randn(2, 96, 32, 32, requires_grad=True)
    points = (torch.rand(2, 500, 3) * 2 - 1) * 0.7  # some outside the box (zeros there)
    points[0, 0] = torch.tensor([0.5, -0.5, 0.25])  # on the box's faces
    reference = grid_sample_planes(planes, points, 1.0)
    fast = triplane.sample_planes(planes, points, 1.0)
    assert (fast - reference).abs().max() <= 1e-5
    weights = torch.randn_like(reference)
    (expected,) = torch.autograd.grad((reference * weights).sum(), planes)
    (got,) = torch.autograd.grad((fast * weights).sum(), planes)
    assert (got - expected).abs().max() <= 1e-5
    assert (triplane.sample_planes(triplane.texel_major(planes), points, 2.0)
            - grid_sample_planes(planes, points, 2.0)).abs().max() <= 1e-5


def test_plane_sampling_refuses_planes_that_are_not_square():
    with pytest.raises(ValueError, match="triplanes must be square, got 32 x 16"):
        triplane.sample_planes(torch.zeros(1, 96, 32, 16), torch.zeros(1, 4, 3), 1.0)


@pytest.mark.parametrize("path", ["kernel", "torch"])
def test_softplus_matches_torch_in_value_and_gradient(path, monkeypatch):
    if path == "torch":
        monkeypatch.setattr(triplane.KERNELS, "load", lambda: None)
    elif triplane.KERNELS.load() is None:
        pytest.skip("no C compiler for the renderer's kernel")
    torch.manual_seed(0)
    x = torch.cat([torch.linspace(-87, 120, 200001), torch.randn(100000) * 8, torch.zeros(1)]).requires_grad_()
    fast = triplane.softplus(x)
    reference = F.softplus(x.double())
    if path == "kernel":
        assert ((fast - reference).abs() / reference).max() <= 1e-6
    assert (fast - reference).abs().max() <= 2e-6
    (got,) = torch.autograd.grad(fast.sum(), x)
    (expected,) = torch.autograd.grad(F.softplus(x).sum(), x)
    assert (got - expected).abs().max() <= 1e-5
    special = torch.tensor([float("nan"), float("inf"), -float("inf"), -1000.0])
    assert torch.equal(triplane.softplus(special)[:2].isnan(), torch.tensor([True, False]))
    assert triplane.softplus(special)[1] == float("inf") and triplane.softplus(special)[2:].abs().max() < 1e-37
    with torch.no_grad():
        temporary = x.detach()[::2].clone()
        expected_values = triplane.softplus(temporary.clone())
        assert torch.equal(triplane.softplus(temporary, inplace=True), expected_values)
        if path == "kernel":
            assert torch.equal(temporary, expected_values)  # written over, no new tensor
        strided = x.detach()[::3]  # not contiguous: a new tensor, the input untouched
        before = strided.clone()
        assert torch.equal(triplane.softplus(strided, inplace=True), triplane.softplus(before))
        assert torch.equal(strided, before)
        assert torch.equal(triplane.softplus(strided), triplane.softplus(before)) and torch.equal(strided, before)
    assert x.grad is None and triplane.softplus(x, inplace=True).requires_grad  # a gradient wanted: never in place


@pytest.fixture(scope="module")
def prior_head():
    generator = load_prior()
    torch.manual_seed(3)
    with torch.no_grad():
        z = torch.randn(1, generator.z_dim)
        planes = generator.planes(generator.mapping(z, torch.from_numpy(camera_labels([0.0], [0.0]))), "const")
        return generator, planes, generator.occupancy(planes)


@pytest.mark.parametrize("yaw, pitch", [(0.0, 0.0), (30.0, 10.0), (-35.0, -15.0)])
def test_renders_that_skip_empty_and_hidden_space_match_full_renders(prior_head, monkeypatch, yaw, pitch):
    generator, planes, occupancy = prior_head
    decoded = []
    sample_planes = triplane.sample_planes
    monkeypatch.setattr(triplane, "sample_planes",
                        lambda planes, points, box_warp: decoded.append(points.shape[1]) or sample_planes(planes, points, box_warp))
    c = torch.from_numpy(camera_labels([yaw], [pitch]))
    with torch.no_grad():
        full, full_depth = generator.render_features(planes, c, 48, deterministic_sampling=True)
        full_count = sum(decoded)
        decoded.clear()
        fast, fast_depth = generator.render_features(planes, c, 48, deterministic_sampling=True, occupancy=occupancy)
    assert psnr((fast[:, :3] + 1) / 2, (full[:, :3] + 1) / 2) >= 60
    assert ((fast - full)[:, :3] / 2).abs().max() <= 0.01  # colour: under three grey levels anywhere
    assert (fast_depth - full_depth).abs().max() <= 0.05  # a silhouette pixel at most, about 2% of the distance
    assert (fast_depth - full_depth).abs().mean() <= 0.001
    assert sum(decoded) <= 0.8 * full_count


def test_a_colour_only_render_is_the_full_renders_first_three_channels(prior_head):
    generator, planes, occupancy = prior_head
    c = torch.from_numpy(camera_labels([20.0], [5.0]))
    with torch.no_grad():
        for grid in (None, occupancy):
            full, full_depth = generator.render_features(planes, c, 32, deterministic_sampling=True, occupancy=grid)
            rgb, depth = generator.render_features(planes, c, 32, deterministic_sampling=True, occupancy=grid,
                                                   channels=3)
            assert rgb.shape == (1, 3, 32, 32)
            assert torch.allclose(rgb, full[:, :3], atol=1e-5) and torch.allclose(depth, full_depth, atol=1e-5)


def test_importing_the_engine_keeps_freed_tensor_memory_for_reuse():
    # the imports above ran engine/__init__.py, which tunes the allocator
    torch.empty(4 << 20).fill_(1)  # 16 MB, freed at once
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(10):
        torch.empty(4 << 20).fill_(1)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    assert faults < 4096  # handed back to the OS, each would fault its 4096 pages in again


def test_importance_samples_invert_the_cdf_of_the_coarse_weights():
    """Quantiles linspace(0, 1) of a uniform pdf land evenly from the first knot to the last; with all
    the weight in one segment, every inner quantile lands in it."""
    knots = torch.linspace(2.0, 3.0, 11).expand(2, 11)
    weights = torch.stack([torch.ones(10), torch.zeros(10).index_fill(0, torch.tensor([4]), 1.0)])
    depths = triplane.sample_pdf(knots, weights, 5, deterministic=True)
    assert (depths[0] - torch.linspace(2.0, 3.0, 5)).abs().max() <= 1e-5
    assert depths[1, 0] == 2.0 and (depths[1, -1] - 3.0).abs() <= 1e-5
    assert ((depths[1, 1:-1] >= 2.4) & (depths[1, 1:-1] <= 2.5)).all()

"""Occupancy-guided marching: the compiled kernel against the torch reference, and what it skips."""

import pytest
import torch

from engine.scene import native
from engine.scene.sampling import MarchingConfig, OccupancyGrid, box_intersect


def _rays(n=400, seed=0):
    g = torch.Generator().manual_seed(seed)
    o = torch.nn.functional.normalize(torch.randn(n, 3, generator=g), dim=-1) * 3
    d = torch.nn.functional.normalize(-o + 0.4 * torch.randn(n, 3, generator=g), dim=-1)
    return o, d


@pytest.mark.skipif(native.load_kernels() is None, reason="no C compiler for the CPU kernels")
@pytest.mark.parametrize("contracted", [True, False])
def test_native_marching_matches_torch_reference(contracted):
    grid = OccupancyGrid(MarchingConfig(), contracted)
    grid.occupied = (torch.rand(128, 128, 128, generator=torch.Generator().manual_seed(1)) < 0.2).to(torch.uint8)
    o, d = _rays()
    fast = grid.march(o, d)
    if contracted:
        near, far = torch.full((400,), 0.05), torch.full((400,), 1000.0)
    else:
        near, far = box_intersect(o, d)
        near = near.clamp_min(0.05)
    ref = grid._march_torch(o, d, near, far)
    assert len(fast) > 1000 and len(fast) == len(ref)
    assert torch.equal(fast.ray_idx, ref.ray_idx)
    assert torch.allclose(fast.t0, ref.t0) and torch.allclose(fast.t1, ref.t1)


def test_empty_grid_gives_no_samples_and_a_full_one_covers_the_box():
    grid = OccupancyGrid(MarchingConfig(), contracted=False)
    o, d = _rays(50)
    full = grid.march(o, d)
    near, far = box_intersect(o, d)
    covered = torch.zeros(50).index_add_(0, full.ray_idx, full.t1 - full.t0)
    hit = far > near
    assert torch.allclose(covered[hit], (far - near)[hit], atol=1e-4)
    assert torch.all((full.t1[1:] >= full.t0[1:]))
    grid.occupied.zero_()
    assert len(grid.march(o, d)) == 0


def test_samples_only_where_the_grid_is_occupied():
    grid = OccupancyGrid(MarchingConfig(), contracted=False)
    grid.occupied.zero_()
    grid.occupied[48:80, 48:80, 48:80] = 1  # the cube [-0.25, 0.25]^3
    o, d = _rays(200)
    s = grid.march(o, d)
    pts = s.midpoints(o, d)
    assert len(s) > 0 and pts.abs().max() <= 0.25 + 1e-6


def test_occupancy_update_culls_empty_space():
    grid = OccupancyGrid(MarchingConfig(occupancy_resolution=32), contracted=False)
    sphere_density = lambda x: 100.0 * (x.norm(dim=-1) < 0.5)  # noqa: E731
    grid.update(sphere_density, torch.Generator().manual_seed(0))
    frac = grid.occupied_fraction
    assert 0.03 < frac < 0.12  # the sphere fills 6.5 % of the box (cells on its rim may go either way)


@pytest.mark.skipif(native.load_kernels() is None, reason="no C compiler for the CPU kernels")
def test_preview_steps_are_longer_and_match_the_reference():
    grid = OccupancyGrid(MarchingConfig(), contracted=True)
    o, d = _rays()
    fine, coarse = grid.march(o, d), grid.march(o, d, step_scale=2.0)
    assert 0.4 < len(coarse) / len(fine) < 0.6
    ref = grid._march_torch(o, d, torch.full((400,), 0.05), torch.full((400,), 1000.0), 2.0)
    assert len(ref) == len(coarse) and torch.allclose(ref.t1, coarse.t1)

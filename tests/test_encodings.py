"""Hash-grid encoding (compiled kernel against the torch reference), contraction, SH basis."""

import pytest
import torch

from engine.scene import native
from engine.scene.encodings import HashGrid, HashGridConfig, contract, sh_encode

needs_kernels = pytest.mark.skipif(native.load_kernels() is None, reason="no C compiler for the CPU kernels")


@needs_kernels
@pytest.mark.parametrize("log2_table", [12, 17])  # 12: most levels hashed; 17: coarse levels dense
@pytest.mark.parametrize("features", [2, 4])  # 2: the kernels' specialised path; others: the general one
def test_native_hash_grid_matches_torch_reference(log2_table, features):
    torch.manual_seed(0)
    grid = HashGrid(HashGridConfig(levels=8, log2_table_size=log2_table, max_resolution=300, init_scale=1.0,
                                   features_per_level=features))
    points = torch.rand(3000, 3)
    points[:5] = torch.tensor([[0, 0, 0], [1, 1, 1], [1, 0, 0.5], [0.999999, 0.5, 0], [0.5, 0.5, 0.5]])
    fast, ref = grid(points), grid.forward_torch(points)
    assert torch.allclose(fast, ref, atol=1e-5)
    weights = torch.randn_like(ref)
    g_fast = torch.autograd.grad((fast * weights).sum(), grid.table)[0]
    g_ref = torch.autograd.grad((ref * weights).sum(), grid.table)[0]
    assert torch.allclose(g_fast, g_ref, atol=1e-4)


def test_hash_grid_interpolates_linearly_inside_a_cell():
    grid = HashGrid(HashGridConfig(levels=1, base_resolution=4, max_resolution=4, features_per_level=1))
    with torch.no_grad():
        grid.table.copy_(torch.arange(grid.table.shape[0], dtype=torch.float32)[:, None])
    a, b = torch.tensor([[0.1, 0.2, 0.3]]), torch.tensor([[0.2, 0.2, 0.3]])
    mid = grid.forward_torch((a + b) / 2)
    assert torch.allclose(mid, (grid.forward_torch(a) + grid.forward_torch(b)) / 2, atol=1e-5)


def test_contraction_keeps_the_unit_cube_and_folds_the_rest_inside_two():
    inner = torch.rand(100, 3) * 2 - 1
    assert torch.equal(contract(inner), inner)
    far = torch.randn(100, 3) * 1e4
    out = contract(far)
    assert out.abs().amax(-1).le(2).all() and out.abs().amax(-1).gt(1.99).all()
    # continuous at the cube's surface
    edge = torch.tensor([[1.0 + 1e-6, 0.3, -0.2]])
    assert torch.allclose(contract(edge), edge, atol=1e-5)


def test_spherical_harmonics_are_orthonormal_on_the_sphere():
    torch.manual_seed(0)
    d = torch.nn.functional.normalize(torch.randn(400_000, 3, dtype=torch.float64), dim=-1)
    basis = sh_encode(d, 4)
    gram = basis.T @ basis * (4 * torch.pi / d.shape[0])
    assert torch.allclose(gram, torch.eye(16, dtype=torch.float64), atol=0.02)

"""Volume-rendering math against closed-form cases."""

import math

import torch

from engine.scene.compositing import (composite_packed, distortion_loss_dense, distortion_loss_packed, weights_dense,
                                      weights_packed)


def slab(sigma: float, start: float, end: float, n: int = 4000):
    edges = torch.linspace(start, end, n + 1, dtype=torch.float64)
    return torch.full((n,), sigma, dtype=torch.float64), edges


def test_weights_sum_to_opacity_of_a_uniform_slab():
    sigma, edges = slab(2.0, 1.0, 2.5)
    w = weights_dense(sigma, edges[1:] - edges[:-1])
    assert math.isclose(float(w.sum()), 1 - math.exp(-2.0 * 1.5), rel_tol=1e-9)


def test_transmittance_after_each_sample_is_exponential_in_depth():
    sigma, edges = slab(0.7, 0.0, 3.0, n=300)
    w = weights_dense(sigma, edges[1:] - edges[:-1])
    transmittance_after = 1 - torch.cumsum(w, 0)
    expected = torch.exp(-0.7 * edges[1:])
    assert torch.allclose(transmittance_after, expected, atol=1e-12)


def test_expected_depth_of_a_slab_matches_closed_form():
    a, b, s = 2.0, 3.0, 1.5
    sigma, edges = slab(s, a, b, n=20000)
    w = weights_dense(sigma, edges[1:] - edges[:-1])
    mid = 0.5 * (edges[1:] + edges[:-1])
    depth = float((w * mid).sum() / w.sum())
    length = b - a
    expected = a + 1 / s - length * math.exp(-s * length) / (1 - math.exp(-s * length))
    assert abs(depth - expected) < 1e-6


def test_opaque_wall_stops_everything_behind_it():
    sigma = torch.tensor([0.0, 0.0, 1e4, 5.0, 5.0])
    w = weights_dense(sigma, torch.full((5,), 0.1))
    assert torch.allclose(w, torch.tensor([0.0, 0.0, 1.0, 0.0, 0.0]), atol=1e-6)


def test_packed_rendering_equals_dense_per_ray():
    torch.manual_seed(0)
    sigma = torch.rand(3, 7) * 5
    deltas = torch.rand(3, 7) * 0.3
    dense = weights_dense(sigma, deltas)
    ray_idx = torch.arange(3).repeat_interleave(7)
    packed = weights_packed(sigma.reshape(-1), deltas.reshape(-1), ray_idx, 3)
    assert torch.allclose(packed.reshape(3, 7), dense, atol=1e-6)


def test_composite_adds_background_behind_transparent_rays():
    w = torch.tensor([0.25, 0.25, 0.0])
    rgb = torch.tensor([[1.0, 0, 0], [1.0, 0, 0], [0, 0, 1.0]])
    t = torch.tensor([1.0, 3.0, 5.0])
    out = composite_packed(w, rgb, t, torch.tensor([0, 0, 1]), 2, torch.tensor([0.0, 1.0, 0.0]))
    assert torch.allclose(out["rgb"], torch.tensor([[0.5, 0.5, 0.0], [0.0, 1.0, 0.0]]))
    assert torch.allclose(out["accumulation"], torch.tensor([0.5, 0.0]))
    assert math.isclose(float(out["depth"][0]), 2.0)


def test_packed_distortion_loss_equals_the_quadratic_definition():
    torch.manual_seed(1)
    edges = torch.sort(torch.rand(2, 9), dim=-1).values
    w = torch.rand(2, 8) * 0.2
    dense = distortion_loss_dense(w, edges)
    ray_idx = torch.arange(2).repeat_interleave(8)
    packed = distortion_loss_packed(w.reshape(-1), edges[:, :-1].reshape(-1), edges[:, 1:].reshape(-1), ray_idx, 2)
    assert torch.allclose(packed, dense, atol=1e-6)

"""The fast model: rendering in rounds (inference) gives exactly the training-path image."""

import pytest
import torch

from engine.scene.models import FastModel, FastModelConfig


@pytest.mark.parametrize("contracted", [True, False])
def test_rendering_in_rounds_equals_the_training_path(contracted):
    torch.manual_seed(0)
    model = FastModel(FastModelConfig(), num_images=3, contracted=contracted)
    with torch.no_grad():  # a lumpy density so rays stop at different depths
        model.field.grid.table.normal_(0, 1.0)
        model.field.density_mlp[-1].weight[0].normal_(0, 0.5)
        model.field.density_mlp[-1].bias[0] = 1.0
        model.colour_delta.normal_(0, 0.05)
    model.before_step(10_000, torch.Generator().manual_seed(0))  # past warm-up: alpha threshold on
    o = torch.nn.functional.normalize(torch.randn(600, 3), dim=-1) * 2.5
    d = torch.nn.functional.normalize(-o + 0.5 * torch.randn(600, 3), dim=-1)
    for image_idx in (None, torch.randint(0, 3, (600,))):
        with torch.no_grad():
            rounds = model.render_rays(o, d, image_idx, step_scale=1.5)
        train_path = model.render_rays(o, d, image_idx, step_scale=1.5)
        assert 0.05 < float(train_path["accumulation"].detach().mean()) < 0.98
        for key in ("rgb", "accumulation", "depth"):
            assert torch.allclose(rounds[key], train_path[key].detach(), atol=1e-4), key


def _uniform(density: float, contracted: bool = False) -> FastModel:
    """A fast model whose density is ``density`` everywhere (inside its box)."""
    model = FastModel(FastModelConfig(), num_images=1, contracted=contracted)
    with torch.no_grad():
        model.field.density_mlp[-1].weight[0].zero_()
        model.field.density_mlp[-1].bias[0] = 1.0 + torch.log(torch.tensor(density))
    return model


def test_the_median_depth_is_where_a_ray_turns_half_opaque():
    """Through a uniform medium entered at t0 the opacity reaches 1/2 at t0 + ln 2 / density, in front of the
    mean depth; a ray that never turns half opaque has none."""
    model = _uniform(5.0)
    o = torch.tensor([[-3.0, 0.0, 0.0], [-3.0, 0.3, 0.2], [-3.0, 5.0, 0.0]])
    d = torch.tensor([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    with torch.no_grad():
        out = model.render_rays(o, d, None)
    expected = 2.0 + torch.log(torch.tensor(2.0)) / 5  # the box [-1, 1]^3 starts 2 units along the rays
    assert torch.allclose(out["median_depth"][:2], expected.expand(2), atol=1e-4)
    assert (out["depth"][:2] > out["median_depth"][:2] + 0.05).all() and out["median_depth"][2] == torch.inf


def test_an_open_region_is_marched_and_trained_while_empty():
    """Culled empty space never gets samples; held open (a local edit that may add matter), it does, even
    where it is too transparent for the alpha threshold, so a gradient can grow density there."""
    model = _uniform(0.01)
    model.before_step(10_000, torch.Generator().manual_seed(0))  # past warm-up: everything is culled as empty
    o, d = torch.tensor([[-3.0, 0.0, 0.0]]), torch.tensor([[1.0, 0.0, 0.0]])
    assert model.occupancy.occupied_fraction == 0 and model.render_rays(o, d, None)["num_samples"] == 0
    model.open_region((0.2, 0.0, 0.0), 0.25)
    cell = 2 / model.occupancy.cfg.occupancy_resolution
    held = int(model.occupancy.held.sum())
    assert 4 / 3 * torch.pi * (0.25 / cell) ** 3 < held < 4 / 3 * torch.pi * (0.25 / cell + 2) ** 3
    out = model.render_rays(o, d, None)
    assert out["num_samples"] > 15  # the 0.5 through the sphere, in steps of about t / 128 = 0.02
    out["accumulation"].sum().backward()
    assert float(model.field.density_mlp[-1].bias.grad[0]) > 0
    model.before_step(10_016, torch.Generator().manual_seed(0))  # a refresh keeps the region open
    assert int(model.occupancy.occupied.sum()) >= held

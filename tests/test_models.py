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

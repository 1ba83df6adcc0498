"""SemFaceEdit's generator: semantic volume masking follows its formula on hand-built rays, and an appearance swap
changes only the swapped group's pixels (the others bit-identical)."""

from __future__ import annotations

import torch

from engine.portrait.cameras import camera_labels
from engine.portrait.semantic import GROUPS, Latents, SemanticConfig, SemanticGenerator, point_groups

HAIR, FACE, BACKGROUND = GROUPS.index("hair"), GROUPS.index("face"), GROUPS.index("background")


def test_a_point_belongs_to_the_group_the_ray_sees_from_it_on():
    semantic = torch.zeros(1, 4, 4)
    semantic[0, 0, HAIR] = 1.0  # a wisp of hair in front ...
    semantic[0, 1, FACE] = 0.6  # ... of an opaque, mostly face point
    semantic[0, 1, HAIR] = 0.4
    semantic[0, 2, HAIR] = 1.0  # hidden hair behind it
    semantic[0, 3, BACKGROUND] = 1.0
    weights = torch.tensor([0.05, 0.9, 0.04, 0.01])[None, :, None]
    groups = point_groups(semantic, weights)[0].tolist()
    # point 0: hair 0.05 + 0.36 + 0.04 = 0.45 against face 0.54: the face, though the point itself is hair
    assert groups == [FACE, FACE, HAIR, BACKGROUND]
    by_hand = [max(range(4), key=lambda c: sum(float(weights[0, j, 0] * semantic[0, j, c]) for j in range(k, 4)))
               for k in range(4)]
    assert groups == by_hand


def _face(generator: SemanticGenerator, seed: int) -> Latents:
    g = torch.Generator().manual_seed(seed)
    cfg = generator.cfg
    return Latents(torch.randn(1, cfg.geometry_dim, generator=g),
                   [torch.randn(1, dim, generator=g) for dim in cfg.appearance_dims])


def test_an_appearance_swap_changes_only_that_groups_pixels():
    torch.manual_seed(0)
    generator = SemanticGenerator(SemanticConfig(width=32, geometry_layers=3, appearance_width=16,
                                                 appearance_layers=2, mapping_width=32, num_samples=24))
    c = torch.from_numpy(camera_labels([15.0], [5.0])).float()
    face, donor = _face(generator, 1), _face(generator, 2)
    with torch.no_grad():
        before = generator.render(generator.styles(face), c, 32)
        groups = before["rays"]["groups"]
        for group in range(len(GROUPS)):
            swapped = generator.render(generator.styles(face.with_group(group, donor)), c, 32)
            assert torch.equal(swapped["rays"]["groups"], groups)
            assert torch.equal(swapped["semantic"], before["semantic"])
            touched = ((groups == group) & (before["rays"]["weights"][..., 0] > 0)).any(-1).view(32, 32)
            same = (swapped["rgb"] == before["rgb"]).all(1)[0]
            assert same[~touched].all()  # bit-identical wherever the group adds nothing
            if touched.any():
                assert not same[touched].all()


def test_the_commands_train_sample_swap_and_measure_an_embedded_generator(tmp_path, capsys):
    import json

    from engine.cli import main

    out = tmp_path / "generator"
    assert main(["portrait", "semantic", "train", "--out", str(out), "--steps", "2", "--batch", "2", "--views", "1",
                 "--pool-heads", "2", "--rays-per-view", "64"]) == 0
    recipe = json.loads((out / "recipe.json").read_text())
    assert recipe["steps"] == 2 and recipe["command"].startswith("python main.py portrait semantic train")
    assert main(["portrait", "semantic", "sample", "--seed", "3", "--generator", str(out), "--views", "2",
                 "--size", "24", "--out", str(tmp_path / "sample")]) == 0
    assert sorted(p.name for p in (tmp_path / "sample").iterdir()) == [
        "face3_yaw+30.png", "face3_yaw+30_semantic.png", "face3_yaw-30.png", "face3_yaw-30_semantic.png"]
    assert main(["portrait", "semantic", "swap", "--face", "3", "--donor", "4", "--group", "hair", "--views", "1",
                 "--size", "24", "--generator", str(out), "--out", str(tmp_path / "swap")]) == 0
    assert {p.name for p in (tmp_path / "swap").iterdir()} == {"before_yaw+0.png", "before_yaw+0_semantic.png",
                                                               "after_yaw+0.png", "after_yaw+0_semantic.png"}
    assert main(["portrait", "semantic", "swap", "--face", "3", "--donor", "4", "--group", "beard", "--generator",
                 str(out), "--out", str(tmp_path / "bad")]) == 2
    assert "unknown semantic group 'beard': the groups are background, hair, face, garment" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()
    report = tmp_path / "bench.json"
    assert main(["portrait", "semantic", "bench", "--heads", "1", "--generator", str(out), "--report",
                 str(report)]) == 0
    figures = json.loads(report.read_text())
    for key in ("reconstruction_psnr", "reconstruction_miou", "swap_outside_change", "swap_inside_psnr",
                "swap_seconds_64"):
        assert isinstance(figures[key], float)
    assert 0 <= figures["reconstruction_miou"] <= 1

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
            swapped = generator.render(generator.styles(face).with_look(group, generator.styles(donor)), c, 32)
            assert torch.equal(swapped["rays"]["groups"], groups)
            assert torch.equal(swapped["semantic"], before["semantic"])
            touched = ((groups == group) & (before["rays"]["weights"][..., 0] > 0)).any(-1).view(32, 32)
            same = (swapped["rgb"] == before["rgb"]).all(1)[0]
            assert same[~touched].all()  # bit-identical wherever the group adds nothing
            if touched.any():
                assert not same[touched].all()


def test_the_commands_train_sample_swap_and_measure_an_embedded_generator(tmp_path, capsys, monkeypatch):
    import json

    import engine.portrait.semantic_edit as semantic_edit
    from engine.cli import main

    fuse = semantic_edit.semantic_mesh
    monkeypatch.setattr(semantic_edit, "semantic_mesh", lambda generator, styles: fuse(
        _SphereFace(), styles, resolution=24, size=32))  # a 2-step generator has no surface yet

    out = tmp_path / "generator"
    assert main(["portrait", "semantic", "train", "--out", str(out), "--steps", "2", "--batch", "2", "--views", "1",
                 "--pool-heads", "2", "--rays-per-view", "64"]) == 0
    recipe = json.loads((out / "recipe.json").read_text())
    assert recipe["steps"] == 2 and recipe["command"].startswith("python main.py portrait semantic train")
    assert main(["portrait", "semantic", "sample", "--seed", "3", "--generator", str(out), "--views", "2",
                 "--size", "24", "--video", "--orbit-frames", "3", "--mesh", "--out", str(tmp_path / "sample")]) == 0
    assert sorted(p.name for p in (tmp_path / "sample").iterdir()) == [
        "face3_mesh.glb", "face3_mesh.ply", "face3_orbit.mp4", "face3_yaw+30.png", "face3_yaw+30_semantic.png",
        "face3_yaw-30.png", "face3_yaw-30_semantic.png"]
    header = (tmp_path / "sample" / "face3_mesh.ply").read_bytes()[:400]
    assert b"property uchar label" in header  # each vertex's group
    import imageio.v2 as imageio

    video = imageio.mimread(tmp_path / "sample" / "face3_orbit.mp4")
    assert len(video) == 3 and video[0].shape == (24, 48, 3)  # colour beside the semantic map
    assert main(["portrait", "semantic", "swap", "--face", "3", "--donor", "4", "--group", "hair", "--views", "1",
                 "--take", "both", "--steps", "2", "--size", "24", "--generator", str(out), "--out",
                 str(tmp_path / "swap")]) == 0
    assert {p.name for p in (tmp_path / "swap").iterdir()} == {"before_yaw+0.png", "before_yaw+0_semantic.png",
                                                               "after_yaw+0.png", "after_yaw+0_semantic.png"}
    assert main(["portrait", "semantic", "swap", "--face", "3", "--donor", "4", "--group", "beard", "--generator",
                 str(out), "--out", str(tmp_path / "bad")]) == 2
    assert "unknown semantic group 'beard': the groups are background, hair, face, garment" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()
    # paint the sampled face's own map with a hair patch, then invert a photo with its label map
    from PIL import Image

    from engine.portrait.heads import render_heads

    painted = Image.open(tmp_path / "sample" / "face3_yaw-30_semantic.png")
    painted.paste((225, 160, 45), (8, 8, 16, 16))
    painted.save(tmp_path / "painted.png")
    assert main(["portrait", "semantic", "paint", "--seed", "3", "--mask", str(tmp_path / "painted.png"), "--yaw",
                 "-30", "--steps", "2", "--views", "1", "--size", "24", "--generator", str(out), "--out",
                 str(tmp_path / "paint")]) == 0
    assert {"before_yaw+0.png", "after_yaw+0_semantic.png", "face.safetensors", "report.json"} <= {
        p.name for p in (tmp_path / "paint").iterdir()}
    from engine.portrait.cameras import camera_labels
    from engine.portrait.heads import HeadParams

    truth = render_heads(HeadParams.from_seed(5), camera_labels(0.0, 0.0), 64)
    Image.fromarray((truth.rgb[0] * 255).astype("uint8")).resize((512, 512)).save(tmp_path / "photo.png")
    celebamask = {0: 0, 1: 13, 2: 1, 3: 18}  # background, hair, face (skin), garment (cloth)
    ids = [[celebamask[int(v)] for v in row] for row in truth.labels_group[0]]
    Image.fromarray(__import__("numpy").array(ids, "uint8")).resize((512, 512), Image.NEAREST).save(
        tmp_path / "photo_labels.png")
    assert main(["portrait", "semantic", "invert", "--image", str(tmp_path / "photo.png"), "--labels",
                 str(tmp_path / "photo_labels.png"), "--steps", "2", "--views", "1", "--size", "24", "--generator",
                 str(out), "--out", str(tmp_path / "inverted")]) == 0
    inverted = json.loads((tmp_path / "inverted" / "report.json").read_text())
    assert 0 <= inverted["miou"] <= 1 and inverted["psnr_input_view"] > 5 and inverted["pose_yaw_pitch"] == [0, 0]
    assert main(["portrait", "semantic", "swap", "--face", str(tmp_path / "inverted"), "--donor", "4", "--group",
                 "garment", "--views", "1", "--size", "24", "--generator", str(out), "--out",
                 str(tmp_path / "swap2")]) == 0
    assert main(["portrait", "semantic", "paint", "--face", str(tmp_path / "inverted"), "--mask",
                 str(tmp_path / "painted.png"), "--steps", "1", "--views", "1", "--size", "24", "--generator",
                 str(out), "--out", str(tmp_path / "paint2")]) == 0
    report = tmp_path / "bench.json"
    assert main(["portrait", "semantic", "bench", "--heads", "1", "--edit-heads", "0", "--generator", str(out),
                 "--report", str(report)]) == 0
    figures = json.loads(report.read_text())
    for key in ("reconstruction_psnr", "reconstruction_miou", "swap_outside_change", "swap_inside_psnr",
                "swap_seconds_64"):
        assert isinstance(figures[key], float)
    assert 0 <= figures["reconstruction_miou"] <= 1


def _tiny() -> SemanticGenerator:
    torch.manual_seed(0)
    return SemanticGenerator(SemanticConfig(width=32, geometry_layers=3, appearance_width=16, appearance_layers=2,
                                            mapping_width=32, num_samples=24))


def test_painting_lowers_the_mask_loss_and_moves_only_the_geometry():
    from engine.portrait.semantic_edit import PaintSettings, paint_geometry
    from engine.portrait.semantic_training import latents_of

    generator = _tiny().requires_grad_(False)
    styles = generator.styles(latents_of(torch.randn(1, 36)))
    c = torch.from_numpy(camera_labels([0.0], [0.0])).float()
    with torch.no_grad():
        original = generator.render(styles, c, 16)["semantic"].argmax(1)[0]
    painted = original.clone()
    painted[4:12, 4:12] = HAIR  # a patch of hair painted in the middle
    steps = list(paint_geometry(generator, styles, c, painted, PaintSettings(steps=12, size=16, lr=0.05)))
    assert steps[-1][1] < steps[0][1]
    edited = steps[-1][2]
    assert all(torch.equal(a, b) for pair_a, pair_b in zip(edited.appearance, styles.appearance)
               for a, b in zip(pair_a, pair_b))
    assert not torch.equal(edited.geometry[0], styles.geometry[0])


def test_inversion_lowers_its_loss_and_pivotal_tuning_changes_the_weights():
    from engine.portrait.semantic_edit import InvertSettings, invert

    generator = _tiny().requires_grad_(False)
    c = torch.from_numpy(camera_labels([0.0], [0.0])).float()
    image = torch.rand(3, 16, 16)
    labels = torch.randint(0, 4, (16, 16))
    before = {k: v.clone() for k, v in generator.state_dict().items()}
    steps = list(invert(generator, image, labels, c, InvertSettings(steps=10, tune_steps=3, size=16)))
    assert len(steps) == 13 and min(s[1] for s in steps[5:]) < steps[0][1]
    assert any(not torch.equal(before[k], v) for k, v in generator.state_dict().items())
    assert not any(p.requires_grad for p in generator.parameters())


def test_painted_masks_and_label_maps_are_checked(tmp_path):
    import numpy as np
    import pytest
    from PIL import Image

    from engine.core.errors import UserInputError
    from engine.portrait.semantic import GROUP_COLOURS
    from engine.portrait.semantic_edit import read_label_map, read_painted_mask

    Image.fromarray(np.zeros((20, 30), np.uint8)).save(tmp_path / "wide.png")
    with pytest.raises(UserInputError, match=r"wide\.png: the painted mask is 30x20; paint over a square"):
        read_painted_mask(tmp_path / "wide.png", 16)
    Image.fromarray(np.full((8, 8), 7, np.uint8)).save(tmp_path / "seven.png")
    with pytest.raises(UserInputError, match=r"seven\.png: unknown labels \[7\]"):
        read_painted_mask(tmp_path / "seven.png", 16)
    colours = GROUP_COLOURS[np.array([[0, 1], [2, 3]])].repeat(4, 0).repeat(4, 1)
    Image.fromarray(colours).save(tmp_path / "map.png")
    assert read_painted_mask(tmp_path / "map.png", 4).tolist() == [[0, 0, 1, 1]] * 2 + [[2, 2, 3, 3]] * 2
    labels = np.zeros((8, 8), np.uint8)
    labels[:4] = 13  # CelebAMask-HQ hair; BiSeNet's 13 is the lower lip (face)
    Image.fromarray(labels).save(tmp_path / "labels.png")
    assert read_label_map(tmp_path / "labels.png", "celebamask", (8, 8))[0, 0] == HAIR
    assert read_label_map(tmp_path / "labels.png", "bisenet", (8, 8))[0, 0] == FACE
    with pytest.raises(UserInputError, match=r"labels\.png: the label map is 8x8, the photo 16x8"):
        read_label_map(tmp_path / "labels.png", "celebamask", (16, 8))
    from engine.portrait.semantic_edit import label_order_hint

    assert label_order_hint(tmp_path / "labels.png", "celebamask") is None
    assert label_order_hint(tmp_path / "labels.png", "bisenet") == (
        "labels.png has label 13 (hair in the celebamask order) but no 17 (hair in the bisenet order it was read "
        "in): is it a celebamask map? (--label-order celebamask)")
    painted = GROUP_COLOURS[np.array([[0, 1], [2, 3]])].repeat(4, 0).repeat(4, 1)  # painted over the photo
    Image.fromarray(painted).save(tmp_path / "painted.png")
    assert read_label_map(tmp_path / "painted.png", "bisenet", (8, 8))[::4, ::4].tolist() == [[0, 1], [2, 3]]
    Image.fromarray(np.full((8, 8), 19, np.uint8)).save(tmp_path / "many.png")
    with pytest.raises(UserInputError, match=r"many\.png: label 19 is not one of the 19 bisenet labels"):
        read_label_map(tmp_path / "many.png", "bisenet", (8, 8))


def _real_folder(folder, count: int = 3, labels: bool = True):
    """Portraits as a real data folder holds them: photos, dataset.json with their cameras, labels/ (BiSeNet order)."""
    import json

    import numpy as np
    from PIL import Image

    from engine.portrait.heads import HeadParams, render_heads

    folder.mkdir()
    (folder / "labels").mkdir()
    bisenet = np.array([0, 17, 1, 16], np.uint8)  # background, hair, skin, cloth
    c = camera_labels([-10.0, 0.0, 12.0][:count], [0.0, 5.0, -3.0][:count])
    truth = render_heads([HeadParams.from_seed(k) for k in range(count)], c, 32)
    entries = []
    for k in range(count):
        name = f"img{k:08d}.png"
        Image.fromarray((truth.rgb[k] * 255).astype(np.uint8)).save(folder / name)
        if labels:
            Image.fromarray(bisenet[truth.labels_group[k]]).save(folder / "labels" / name)
        entries.append([name, c[k].tolist()])
    (folder / "labels" / "labels.json").write_text(json.dumps({"order": "bisenet"}))
    (folder / "dataset.json").write_text(json.dumps({"labels": entries}))


def test_adversarial_training_on_real_portraits_runs_on_the_cpu_and_refuses_folders_without_labels(tmp_path, capsys):
    import json

    from engine.cli import main

    _real_folder(tmp_path / "data")
    out = tmp_path / "gan"
    assert main(["portrait", "semantic", "train", "--data", str(tmp_path / "data"), "--out", str(out), "--steps", "2",
                 "--resolution", "16", "--batch", "2", "--device", "cpu", "--appearance-stage", "0.5"]) == 0
    recipe = json.loads((out / "recipe.json").read_text())
    assert recipe["steps"] == 2 and recipe["portraits"] == 3 and "--data" in recipe["command"]
    from engine.portrait.semantic_training import load_semantic

    load_semantic(out)  # written as the embedded generator is: every command takes it
    _real_folder(tmp_path / "unlabelled", labels=False)
    assert main(["portrait", "semantic", "train", "--data", str(tmp_path / "unlabelled"), "--out", str(tmp_path / "x"),
                 "--steps", "1"]) == 2
    assert "3 photos have no label map in labels/ (e.g. img00000000.png" in capsys.readouterr().err
    assert main(["portrait", "semantic", "train", "--data", str(tmp_path / "data"), "--out", str(tmp_path / "x"),
                 "--rays-per-view", "10"]) == 2
    assert "--rays-per-view belongs to the synthetic recipe" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


GAN_DDP_SCRIPT = """
import hashlib, os, sys
import torch
from engine.core.jobs import CancelToken, run_job
from engine.portrait import semantic, semantic_gan
data, out, steps = sys.argv[1], sys.argv[2], int(sys.argv[3])
kept = []
original = semantic.SemanticGenerator.__init__
def remember(self, *args, **kwargs):
    original(self, *args, **kwargs)
    kept.append(self)
semantic.SemanticGenerator.__init__ = remember
run_job(semantic_gan.semantic_gan_job(semantic_gan.SemanticGanConfig(
    data=data, out=out, steps=steps, resolution=16, batch=2, device="cpu", checkpoint_every_s=1e9), CancelToken()),
    lambda event: None)
digest = hashlib.sha256(b"".join(v.detach().numpy().tobytes() for v in kept[0].state_dict().values())).hexdigest()
os.makedirs(out, exist_ok=True)
open(os.path.join(out, f"rank{os.environ.get('RANK', '0')}.sha"), "w").write(digest)
"""


def test_adversarial_training_under_torchrun_keeps_both_processes_identical(tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    _real_folder(tmp_path / "data")
    script = tmp_path / "gan_ddp.py"
    script.write_text(GAN_DDP_SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                             str(script), str(tmp_path / "data"), str(tmp_path / "run"), "2"], cwd=root, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "run" / "rank0.sha").read_text() == (tmp_path / "run" / "rank1.sha").read_text()


class _SphereFace:
    """Stands in for a generator: renders a sphere of radius 0.3 at the origin, hair above y = 0.1, face below."""

    cfg = SemanticConfig()

    def render(self, styles, c, size):
        from engine.portrait.cameras import rays

        origins, directions = rays(c.numpy(), size)
        b = (origins * directions).sum(-1)
        disc = b ** 2 - ((origins ** 2).sum(-1) - 0.3 ** 2)
        hit = disc > 0
        t = torch.where(hit, -b - disc.clamp_min(0).sqrt(), torch.full_like(b, 3.2))
        y = (origins + directions * t[..., None])[..., 1]
        groups = torch.where(hit, torch.where(y > 0.1, HAIR, FACE), BACKGROUND)
        semantic = torch.nn.functional.one_hot(groups, 4).float()
        colours = torch.tensor([[0.1, 0.1, 0.1], [0.9, 0.6, 0.1], [0.9, 0.8, 0.7], [0.2, 0.3, 0.8]])[groups]
        image = lambda values: values.transpose(1, 2).unflatten(2, (size, size))  # noqa: E731
        return {"rgb": image(colours), "semantic": image(semantic), "depth": image(t[..., None])}


def test_a_mesh_is_fused_from_depth_maps_with_each_vertexs_group():
    from engine.portrait.semantic import Styles
    from engine.portrait.semantic_edit import semantic_mesh

    styles = Styles((torch.zeros(1, 1, 1), torch.zeros(1, 1, 1)), [(torch.zeros(1, 1, 1), torch.zeros(1, 1, 1))])
    mesh, groups = semantic_mesh(_SphereFace(), styles, resolution=48, size=64)
    radius = torch.from_numpy(mesh.vertices).norm(dim=1)
    front = torch.from_numpy(mesh.vertices[:, 2]) > 0.1  # the part the views see
    assert (radius[front] - 0.3).abs().max() < 0.03
    y = mesh.vertices[front.numpy(), 1]
    seen = groups[front.numpy()]
    assert (seen[y > 0.14] == HAIR).mean() > 0.95 and (seen[y < 0.06] == FACE).mean() > 0.95
    assert len(mesh.faces) > 500 and mesh.colours.shape == (len(mesh.vertices), 3)

"""The embedded 3DPE path: the portrait vocabulary and its teacher, the prompt encoder, the editor, distillation,
adaptation and ``python main.py portrait edit`` end to end, on small networks the tests make themselves."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import imageio.v2 as imageio
import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from engine.core.errors import CheckpointError, UserInputError
from engine.core.jobs import Artifact, CancelToken, Metrics
from engine.core.metrics import psnr
from engine.portrait.adapt import AdaptConfig, adapt_job, adaptable, read_pairs, write_synthetic_pairs
from engine.portrait.cameras import camera_labels
from engine.portrait.distill import (EDITOR_DIR, DistillConfig, EditExample, EmbeddedEditor, distill_job,
                                     distill_losses, load_editor, make_example, teacher_render, with_references,
                                     write_editor)
from engine.portrait.editing import PortraitEditRequest, blend, portrait_edit_job
from engine.portrait.heads import GROUP_LABELS, HeadParams, render_heads
from engine.portrait.live3d import WEIGHTS_FILE, EmbeddedEncoder, input_view, load_encoder, render_planes
from engine.portrait.prior import HELD_OUT_SEED, load_prior
from engine.portrait.prompts import PromptEncoder
from engine.portrait.vocabulary import (EDITS, TEST_PHRASINGS, TRAIN_PHRASINGS, TRAINED_EDITS, PortraitTeacher,
                                        edit_named, parse_prompt, phrasings)

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def prior():
    return load_prior().requires_grad_(False)


@pytest.fixture(scope="module")
def editor_dir(tmp_path_factory) -> Path:
    """An editor folder on a fresh (untrained) encoder, carrying that encoder."""
    folder = tmp_path_factory.mktemp("editor")
    torch.manual_seed(0)
    encoder = EmbeddedEncoder().eval()
    save_file({k: v.contiguous() for k, v in encoder.state_dict().items()}, str(folder / WEIGHTS_FILE))
    list(write_editor(EmbeddedEditor(encoder), folder, {"command": "test"}))
    return folder


def test_every_phrasing_of_every_edit_names_it():
    for edit in EDITS:
        for prompt in phrasings(edit.name, TRAIN_PHRASINGS) + phrasings(edit.name, TEST_PHRASINGS):
            assert parse_prompt(prompt) == edit.name, prompt
    assert set(TRAIN_PHRASINGS).isdisjoint(TEST_PHRASINGS) and len(TRAIN_PHRASINGS) == 8 and len(TEST_PHRASINGS) == 5


def test_prompts_outside_the_vocabulary_are_refused_with_the_vocabulary():
    with pytest.raises(UserInputError, match=r"no word 'purple', 'dragon' .*it knows: blond hair, black hair"):
        parse_prompt("make it a purple dragon")
    with pytest.raises(UserInputError, match=r"names several edits \(red hair, blue shirt\)"):
        parse_prompt("red hair blue shirt")
    with pytest.raises(UserInputError, match="names no edit"):
        parse_prompt("make it please")
    with pytest.raises(UserInputError, match=r"'marble statue' is not learned yet: .*portrait adapt --pairs DIR"):
        PromptEncoder().resolve("make it marble")


def test_an_appearance_edit_changes_only_its_group_in_every_view():
    head = HeadParams.from_seed(5)
    c = np.concatenate([input_view()[None], render_cameras(20.0)])
    plain = render_heads([head] * 2, c, 64)
    edited = render_heads([edit_named("blond hair").edited_head(head)] * 2, c, 64)
    changed = np.abs(edited.rgb - plain.rgb).max(-1) > 1e-6
    hair = torch.from_numpy(plain.labels_group == GROUP_LABELS.index("hair")).float()[:, None]
    near_hair = torch.nn.functional.max_pool2d(hair, 5, 1, 2)[:, 0].numpy() > 0  # the hairline blends into skin
    # the eyebrows (painted on the skin in the hair's colour) are the only other pixels that follow it
    assert changed.sum() > 100 and (changed & ~near_hair).sum() <= 0.1 * changed.sum()


def render_cameras(yaw: float) -> np.ndarray:
    from engine.portrait.cameras import camera_labels

    return camera_labels(yaw, 0.0)


def test_the_teachers_edits_vary_per_call_around_the_exact_edit():
    teacher, exact = PortraitTeacher(), PortraitTeacher(variation=False)
    head = HeadParams.from_seed(2)
    draw = lambda h: teacher_render([h], input_view()[None], 64)[0]  # noqa: E731
    photo = draw(head)
    for name in ("red shirt", "bronze statue"):
        truth = exact.truth(name, head, photo[None], lambda h: draw(h)[None])[0]
        varied = [teacher.edit_view(name, head, photo, draw, seed) for seed in range(6)]
        assert not torch.allclose(varied[0], varied[1])
        assert (varied[0] - truth).abs().mean() > 0.005
        assert (torch.stack(varied).mean(0) - truth).abs().mean() < (varied[0] - truth).abs().mean()
        assert torch.equal(exact.edit_view(name, head, photo, draw, 0), exact.edit_view(name, head, photo, draw, 1))


def test_adding_a_style_keeps_what_was_learned():
    prompts = PromptEncoder()
    before = prompts.text(["red hair"]).detach()
    prompts.add_style("ice sculpture")
    assert prompts.resolve("turn them into ice sculpture") == "ice sculpture"
    assert torch.equal(prompts.text(["red hair"]).detach(), before)
    assert prompts.text(["ice sculpture"]).shape == (1, 2, 128)
    assert prompts.image_tokens(torch.rand(2, 3, 100, 100)).shape == (2, 64, 128)


def test_an_undistilled_editor_reproduces_the_reconstruction(editor_dir):
    editor = load_editor(editor_dir)
    x = teacher_render([HeadParams.from_seed(1)], input_view()[None], 128) * 2 - 1
    with torch.no_grad():
        edited = editor(x, editor.tokens("make it a bronze statue"))
        assert torch.allclose(edited, editor.encoder(x), atol=1e-5)
        assert torch.allclose(blend(edited * 0 + 1, edited, 0.0), edited)


def test_fast_inference_renders_the_shipped_editors_edit_as_float32_does(prior):
    editor = load_editor(EDITOR_DIR)
    x = teacher_render([HeadParams.from_seed(HELD_OUT_SEED)], input_view()[None], 128) * 2 - 1
    tokens = editor.tokens("make it a bronze statue")
    c = torch.from_numpy(camera_labels([0.0, 30.0], [0.0, 0.0]))
    with torch.no_grad():
        exact = render_planes(prior, editor(x, tokens).expand(2, -1, -1, -1), c)["rgb"]
        fast = editor.edit(x, tokens)
        assert fast.dtype == torch.float32
        assert psnr(render_planes(prior, fast.expand(2, -1, -1, -1), c)["rgb"], exact) >= 45
        edited, plain = editor.edit_and_reconstruct(x, tokens)
        assert torch.equal(edited, fast) and torch.equal(plain, editor.reconstruct(x))


def test_distillation_lowers_its_losses_and_trains_only_the_prompt_side(prior):
    torch.manual_seed(0)
    editor = EmbeddedEditor(load_encoder()).train()  # the shipped encoder: an untrained one sees no edit in 3D
    editor.encoder.eval()
    frozen = {k: v.clone() for k, v in editor.encoder.state_dict().items()}
    rng = np.random.default_rng(0)
    batch = [make_example(PortraitTeacher(), seed, rng) for seed in range(1)]
    trainable = editor.distillable()
    names = {n.split(".")[0] for n, p in editor.named_parameters() if p.requires_grad}
    assert names == {"prompts", "Ref_encoder", "Final_encoder"}
    optimizer = torch.optim.Adam(trainable, lr=1e-4)
    cfg = DistillConfig(out="unused")
    totals = []
    for _ in range(3):
        losses = distill_losses(editor, editor, prior, batch, False, cfg, None, np.random.default_rng(1))
        optimizer.zero_grad()
        losses["total"].backward()
        optimizer.step()
        totals.append(float(losses["total"].detach()))
    assert totals[-1] < totals[0]
    assert set(losses) == {"2d", "3d_image", "3d_planes", "3d_depth", "total"}
    assert all(torch.equal(v, frozen[k]) for k, v in editor.encoder.state_dict().items())


def test_the_distillation_job_writes_an_editor_and_resumes(editor_dir, tmp_path):
    cfg = dict(out=str(tmp_path), encoder=str(editor_dir), steps=1, pool=2, batch=1, preview_every=1, lpips="off")
    events = list(distill_job(DistillConfig(**cfg), CancelToken()))
    assert {e.kind for e in events if isinstance(e, Artifact)} == {"checkpoint", "recipe", "weights"}
    events = list(distill_job(DistillConfig(**{**cfg, "steps": 2}), CancelToken()))
    assert [e.step for e in events if isinstance(e, Metrics)] == [2]
    editor = load_editor(tmp_path)  # carries the encoder it was distilled on
    assert editor.prompts.resolve("blond") == "blond hair"


def test_distillation_can_start_from_a_distilled_editor(editor_dir, tmp_path):
    cfg = dict(encoder=str(editor_dir), steps=1, pool=2, batch=1, lpips="off")
    list(distill_job(DistillConfig(out=str(tmp_path / "first"), lr=0.01, **cfg), CancelToken()))
    first = load_file(str(tmp_path / "first" / "editor.safetensors"))
    # from the first editor, at a learning rate of zero: the second is the first
    list(distill_job(DistillConfig(out=str(tmp_path / "second"), init=str(tmp_path / "first"), lr=0.0, **cfg),
                     CancelToken()))
    second = load_file(str(tmp_path / "second" / "editor.safetensors"))
    assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)
    recipe = json.loads((tmp_path / "second" / "recipe.json").read_text())
    assert f"--init {tmp_path / 'first'}" in recipe["command"] and "--lr 0 " in recipe["command"]


def test_adaptation_tunes_only_the_prompt_encoder_and_the_final_norms(editor_dir, tmp_path):
    pairs = write_synthetic_pairs(tmp_path / "pairs", "marble statue", count=2, first_seed=50)
    before = load_editor(editor_dir).state_dict()
    events = list(adapt_job(AdaptConfig(pairs=str(pairs), name="marble statue", editor=str(editor_dir),
                                        out=str(tmp_path / "adapted"), steps=2, batch=1, lpips="off"), CancelToken()))
    assert any(isinstance(e, Artifact) and e.kind == "weights" for e in events)
    adapted = load_editor(tmp_path / "adapted", encoder=editor_dir)
    assert adapted.prompts.resolve("make it marble") == "marble statue"
    after = adapted.state_dict()
    allowed = {name for name, p in _allowed(adapted)}
    for name, value in after.items():
        if name in before and before[name].shape == value.shape and name not in allowed:
            assert torch.equal(value, before[name]), name
    assert any(not torch.equal(after[n], before[n]) for n in allowed if n in before and "norm" in n)
    command = json.loads((tmp_path / "adapted" / "recipe.json").read_text())["command"]
    assert command.startswith("python main.py portrait adapt --out DIR ") and f"--pairs {pairs} " in command and \
        "--name 'marble statue' " in command and f"--editor {editor_dir} " in command


def test_adaptation_keeps_the_weights_that_edit_the_held_out_pairs_best(editor_dir, tmp_path, monkeypatch):
    from engine.portrait import adapt

    pairs = write_synthetic_pairs(tmp_path / "pairs", "marble statue", count=5, first_seed=50)
    trained_on, snapshots, scores = set(), [], iter([20.0, 23.0, 21.0])
    step = adapt.distill_step

    def recording_step(editor, model, prior, examples, *args):
        trained_on.update(id(e.photo) for e in examples)
        return step(editor, model, prior, examples, *args)

    def scripted_psnr(editor, prior, examples):
        if len(examples) == 2:  # the held-out pairs (the other three train): score the weights as they are now
            assert not trained_on & {id(e.photo) for e in examples}
            snapshots.append({n: p.detach().clone() for n, p in _allowed(editor)})
            return next(scores)
        return 0.0

    monkeypatch.setattr(adapt, "distill_step", recording_step)
    monkeypatch.setattr(adapt, "pair_psnr", scripted_psnr)
    cfg = AdaptConfig(pairs=str(pairs), name="marble statue", editor=str(editor_dir), out=str(tmp_path / "adapted"),
                      steps=3, batch=1, lpips="off", validate_every_s=0.0)
    list(adapt_job(cfg, CancelToken()))
    assert len(snapshots) == 3
    adapted = dict(_allowed(load_editor(tmp_path / "adapted", encoder=editor_dir)))
    assert all(torch.equal(adapted[n], snapshots[1][n]) for n in snapshots[1])  # step 2's, scored best
    assert any(not torch.equal(snapshots[1][n], snapshots[2][n]) for n in snapshots[1])
    recipe = json.loads((tmp_path / "adapted" / "recipe.json").read_text())
    assert len(recipe["held_out_pairs"]) == 2 and recipe["chosen_step"] == 2 and recipe["held_out_pair_psnr"] == 23.0


def _allowed(editor: EmbeddedEditor):
    params = {id(p) for p in adaptable(editor)}
    return [(n, p) for n, p in editor.named_parameters() if id(p) in params]


def test_pairs_folders_are_checked(tmp_path):
    with pytest.raises(UserInputError, match="expected input/ and edited/ folders"):
        read_pairs(tmp_path)
    (tmp_path / "input").mkdir()
    (tmp_path / "edited").mkdir()
    Image.new("RGB", (64, 64)).save(tmp_path / "input" / "a.png")
    with pytest.raises(UserInputError, match=r"a\.png: no edited image a\.png or \.jpg"):
        read_pairs(tmp_path)
    Image.new("RGB", (80, 64)).save(tmp_path / "edited" / "a.png")
    with pytest.raises(UserInputError, match="aligned square portraits; this one is 80 x 64"):
        read_pairs(tmp_path)
    Image.new("RGB", (64, 64)).save(tmp_path / "edited" / "a.png")
    with pytest.raises(UserInputError, match="1 pair\\(s\\) found; adaptation needs at least 2"):
        read_pairs(tmp_path)


@pytest.fixture(scope="module")
def aligned_photo(tmp_path_factory) -> Path:
    """A 512² portrait (a synthetic head's frontal view, rendered at 128² and enlarged), used as an aligned crop."""
    path = tmp_path_factory.mktemp("photo") / "head.png"
    rgb = render_heads([HeadParams.from_seed(9)], input_view()[None], 128).rgb[0]
    Image.fromarray((rgb * 255).round().astype(np.uint8)).resize((512, 512), Image.BICUBIC).save(path)
    return path


def test_the_edit_command_writes_every_output(editor_dir, aligned_photo, tmp_path):
    out = tmp_path / "out"
    result = subprocess.run([sys.executable, "main.py", "portrait", "edit", "--image", str(aligned_photo),
                             "--prompt", "give them blond hair", "--editor", str(editor_dir), "--out", str(out),
                             "--views", "2", "--video", "--orbit-frames", "6", "--mesh"], cwd=ROOT,
                            capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    names = sorted(p.name for p in out.iterdir())
    assert names == ["aligned.png", "edited.png", "mesh.glb", "mesh.ply", "orbit.mp4", "view_00_yaw-30.png",
                     "view_01_yaw+30.png"]
    assert Image.open(out / "edited.png").size == (128, 128)
    assert (out / "mesh.ply").read_bytes().startswith(b"ply\nformat binary_little_endian")
    assert len(imageio.mimread(out / "orbit.mp4")) == 6


def test_strength_zero_is_the_plain_reconstruction(editor_dir, aligned_photo, tmp_path):
    images = {}
    for strength, prompt in ((0.0, "bronze statue"), (0.0, "red shirt")):
        out = tmp_path / f"{prompt}"
        request = PortraitEditRequest(image=str(aligned_photo), out=str(out), prompt=prompt, editor=str(editor_dir),
                                      strength=strength, views=0)
        list(portrait_edit_job(request, CancelToken()))
        images[prompt] = np.asarray(Image.open(out / "edited.png"))
    assert np.array_equal(images["bronze statue"], images["red shirt"])


@pytest.mark.parametrize("changes, message", [
    ({"prompt": None}, "give either --prompt TEXT or --reference IMAGE"),
    ({"strength": 1.5}, r"--strength must lie in \[0, 1\] \(got 1.5\)"),
    ({"prompt": "a purple dragon"}, "no word 'purple', 'dragon'"),
    ({"model": "nowhere/3dpe.pt"}, "--model must be 'embedded' or the path of the official 3dpe.pt"),
    ({"orbit_frames": 1}, r"--orbit-frames must be between 2 and 1200 \(got 1\)"),
])
def test_edit_requests_that_cannot_run_are_refused_before_writing(editor_dir, aligned_photo, tmp_path, changes,
                                                                  message):
    request = PortraitEditRequest(**{"image": str(aligned_photo), "out": str(tmp_path / "out"), "prompt": "sepia",
                                     "editor": str(editor_dir), **changes})
    with pytest.raises(UserInputError, match=message):
        list(portrait_edit_job(request, CancelToken()))
    assert not (tmp_path / "out").exists()


def test_trained_edits_leave_the_held_out_style_out():
    assert "marble statue" not in TRAINED_EDITS and len(TRAINED_EDITS) == len(EDITS) - 1
    rng = np.random.default_rng(3)
    example = make_example(PortraitTeacher(), 4, rng)
    assert isinstance(example, EditExample) and example.name in TRAINED_EDITS
    assert example.photo.shape == example.edited.shape == (3, 128, 128)
    twin = make_example(PortraitTeacher(), 5, np.random.default_rng(3))  # the same draws: the same edit
    assert twin.name == example.name
    referenced = with_references([example], [example, twin], rng)[0]
    assert referenced.reference is twin.edited  # another head's edit, not its own


WILD = ROOT.parent / "shared" / "data" / "portraits" / "in-the-wild"
needs_wild = pytest.mark.skipif(not (WILD / "000002.jpg").is_file(),
                                reason=f"the in-the-wild portraits are not at {WILD} (../shared is absent)")


@pytest.fixture(scope="module")
def talking_head(tmp_path_factory) -> Path:
    """A 6-frame video: a blank frame, the portrait moving sideways, a blank frame in the middle."""
    from engine.core.imaging import write_frames

    photo = Image.open(WILD / "000002.jpg").convert("RGB")
    photo = np.asarray(photo.resize((320, round(320 * photo.height / photo.width)), Image.LANCZOS))
    blank = np.full_like(photo, 128)
    frames = [blank] + [np.roll(photo, 6 * k, axis=1) for k in range(3)] + [blank, np.roll(photo, 18, axis=1)]
    return write_frames(frames, tmp_path_factory.mktemp("video") / "talk.mp4", fps=10)


def _video_events(request) -> list:
    from engine.portrait.video_edit import portrait_video_job

    return list(portrait_video_job(request, CancelToken()))


@needs_wild
def test_a_video_is_edited_frame_by_frame_and_resumes(editor_dir, talking_head, tmp_path):
    from engine.core.imaging import read_video
    from engine.core.jobs import JobWarning, Preview
    from engine.portrait.video_edit import PortraitVideoRequest

    out = tmp_path / "video"
    request = PortraitVideoRequest(video=str(talking_head), out=str(out), prompt="blond hair",
                                   editor=str(editor_dir), max_frames=3)
    first = _video_events(request)
    assert [e.step for e in first if isinstance(e, Preview)] == [1, 2]  # frame 0 has no face
    request.max_frames = None
    second = _video_events(request)
    assert [e.step for e in second if isinstance(e, Preview)] == [3, 4, 5]  # the first two are kept
    warnings = " ".join(e.message for e in second if isinstance(e, JobWarning))
    assert "no face in the first 1 frames" in warnings and "no face found in 1 later frames" in warnings
    for name in ("aligned", "input_view", "novel_view"):
        fps, _, frames = read_video(out / f"{name}.mp4")
        frames = list(frames)
        assert fps == 10 and len(frames) == 5 and frames[0].shape == (128, 128, 3)
    # the novel view is another view of the same edit
    for k in (1, 5):
        front, turned = (np.asarray(Image.open(out / "frames" / f"{name}_{k:05d}.png"), float)
                         for name in ("input_view", "novel_view"))
        assert np.abs(front - turned).mean() > 0.5


def test_the_novel_view_sweeps_thirty_degrees_each_way():
    from engine.portrait.video_edit import sweep_yaw

    yaws = [sweep_yaw(k, fps=10, sweep_seconds=4) for k in (0, 10, 20, 30, 40)]
    assert np.allclose(yaws, [0, 30, 0, -30, 0], atol=1e-9)


@needs_wild
def test_a_video_without_faces_or_that_is_no_video_is_refused(editor_dir, talking_head, tmp_path):
    from engine.core.imaging import write_frames
    from engine.portrait.video_edit import PortraitVideoRequest

    blank = write_frames([np.full((96, 96, 3), 100, np.uint8)] * 3, tmp_path / "blank.mp4", fps=5)
    with pytest.raises(UserInputError, match="found no face in any frame"):
        _video_events(PortraitVideoRequest(video=str(blank), out=str(tmp_path / "a"), prompt="blond hair",
                                           editor=str(editor_dir)))
    text = tmp_path / "notes.mp4"
    text.write_text("not a video")
    with pytest.raises(UserInputError, match="notes.mp4: not a readable video"):
        _video_events(PortraitVideoRequest(video=str(text), out=str(tmp_path / "b"), prompt="blond hair",
                                           editor=str(editor_dir)))
    with pytest.raises(UserInputError, match="--smoothing must lie in"):
        _video_events(PortraitVideoRequest(video=str(talking_head), out=str(tmp_path / "c"), prompt="blond hair",
                                           editor=str(editor_dir), smoothing=1.0))
    assert not (tmp_path / "c").exists()


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory) -> Path:
    """A CLIP text model with random weights and a letters-only tokenizer, saved the way transformers saves one."""
    import json
    import string

    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    folder = tmp_path_factory.mktemp("clip")
    letters = list(string.ascii_lowercase) + list("'.,!?-")
    vocab = {t: i for i, t in enumerate(letters + [c + "</w>" for c in letters] + ["<|startoftext|>", "<|endoftext|>"])}
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), unk_token="<|endoftext|>").save_pretrained(
        folder)
    torch.manual_seed(0)
    config = CLIPTextConfig(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                            num_attention_heads=4, max_position_embeddings=32, bos_token_id=vocab["<|startoftext|>"],
                            eos_token_id=vocab["<|endoftext|>"], pad_token_id=vocab["<|endoftext|>"])
    CLIPTextModel(config).save_pretrained(folder)
    return folder


def test_a_clip_text_model_reads_any_wording_and_stays_out_of_the_editor(editor_dir, tiny_clip, tmp_path):
    from safetensors import safe_open

    cfg = DistillConfig(out=str(tmp_path), encoder=str(editor_dir), clip_text=str(tiny_clip), steps=2, pool=2,
                        batch=2, lpips="off")
    events = list(distill_job(cfg, CancelToken()))
    recipe = json.loads(next(e for e in events if isinstance(e, Artifact) and e.kind == "recipe").path.read_text())
    assert f"--clip-text {tiny_clip}" in recipe["command"]  # the recipe names the CLIP model it needs
    with safe_open(str(tmp_path / "editor.safetensors"), "pt") as weights:
        names = set(weights.keys())
    assert "prompts.clip_projection.weight" in names and "prompts.embedding.weight" not in names
    assert not any("text_model" in name for name in names)  # CLIP's own weights stay in its folder
    editor = load_editor(tmp_path)
    assert editor.prompts.clip_folder == str(tiny_clip.resolve())
    with torch.no_grad():
        a, b = editor.tokens("a purple dragon, please"), editor.tokens("give him red hair")
    assert a.shape == (1, 24, 128) and not torch.allclose(a, b)
    clip_weights = load_file(str(tiny_clip / "model.safetensors"))
    live = editor.prompts.clip.model.state_dict()
    assert all(torch.equal(live[name], value) for name, value in clip_weights.items() if name in live)
    with pytest.raises(UserInputError, match="the prompt is empty"):
        editor.tokens("   ")


def test_a_folder_without_a_clip_model_is_refused(editor_dir, tmp_path):
    (tmp_path / "pytorch_model.bin").write_bytes(b"not read")
    with pytest.raises(CheckpointError, match="not a CLIP text model folder"):
        EmbeddedEditor(load_encoder(editor_dir), clip_text=str(tmp_path))


def test_rendering_some_pixels_gives_those_pixels_of_the_whole_view(prior):
    from engine.portrait.cameras import camera_labels
    from engine.portrait.distill import render_views

    planes = torch.randn(2, 96, 32, 32) * 4
    c = torch.from_numpy(camera_labels(np.array([0.0, 20.0]), np.array([0.0, -5.0])))
    pixels = torch.from_numpy(np.stack([np.random.default_rng(k).choice(64 * 64, 50, replace=False) for k in (0, 1)]))
    with torch.no_grad():
        whole, some = render_views(prior, planes, c), render_views(prior, planes, c, pixels)
    for key in ("rgb", "depth"):
        expected = torch.gather(whole[key].flatten(2), 2, pixels[:, None].expand(-1, whole[key].shape[1], -1))
        assert some[key].shape == expected.shape
        assert torch.allclose(some[key], expected, atol=1e-5)

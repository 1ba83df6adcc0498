"""The embedded offline editor: what a user types selects the right edit, edits look like their
names, the noise level and the per-call variation behave like a diffusion editor's."""

from __future__ import annotations

import colorsys
import statistics

import pytest
import torch

from engine.core.errors import UserInputError
from engine.core.metrics import psnr
from engine.editors.base import edit_image
from engine.editors.offline import (CARTOON_LEVELS, PHRASINGS, SUGGESTED_VARIATION, OfflineEditor, apply_edit, resolve,
                                    vocabulary)
from engine.scene.procedural import DemoSceneConfig, demo_cameras, render_ground_truth

ENTRIES = vocabulary()
NAMES = [entry.name for entry in ENTRIES]
DEMO_FIDELITY_BAR_DB = 26.0  # the demo scene's edit-fidelity benchmark


@pytest.fixture(scope="module")
def views() -> list[torch.Tensor]:
    """Three 48-pixel views of the procedural demo scene (what the demo edits)."""
    config = DemoSceneConfig(n_views=3, image_size=48)
    cams = demo_cameras(config)
    return [torch.from_numpy(render_ground_truth(cams.c2w[i], cams.fx[i], cams.fy[i], cams.cx[i], cams.cy[i],
                                                 48, 48)["rgb"]) for i in range(3)]


@pytest.fixture(scope="module")
def noise() -> torch.Tensor:
    """A random 24x32 image (a different picture from the demo views)."""
    return torch.rand(24, 32, 3, generator=torch.Generator().manual_seed(7))


def _hsv(image: torch.Tensor) -> tuple[float, float, float]:
    """Hue (degrees), saturation and value of the image's mean colour."""
    h, s, v = colorsys.rgb_to_hsv(*image.reshape(-1, 3).mean(0).tolist())
    return 360 * h, s, v


def _luma(image: torch.Tensor) -> torch.Tensor:
    return image @ torch.tensor([0.299, 0.587, 0.114])


# --- choosing the edit from what the user types ---

PARAPHRASES = {
    "bronze statue": ["turn him into a bronze statue", "Bronze", "BRONZED"],
    "gold statue": ["make it golden", "a gold statue please"],
    "marble statue": ["carve it in marble", "Marble!"],
    "silver statue": ["make it silvery", "turn it into chrome"],
    "black and white": ["make it black & white", "b&w", "grayscale", "Greyscale photo", "monochrome"],
    "sepia": ["like a vintage photograph", "Sepia tone"],
    "night": ["make it nighttime", "at midnight", "moonlit"],
    "sunset": ["at dusk", "in the golden hour"],
    "winter": ["make it snowy", "Winter", "cover it in snow"],
    "pencil sketch": ["as a pencil sketch", "a sketch", "turn it into a drawing"],
    "cartoon": ["make it look like a comic", "cartoonish", "comic book style"],
    "red": ["make it red", "Reddish", "paint it crimson"],
    "blue": ["make it blue", "bluish"],
    "green": ["turn it green", "greenish"],
    "purple": ["make it violet", "Purple"],
    "orange": ["make it orange"],
    "yellow": ["make it yellow"],
    "pink": ["make it pink", "pinkish"],
}


@pytest.mark.parametrize("entry", ENTRIES, ids=NAMES)
def test_every_entry_resolves_from_its_example_name_and_paraphrases(entry):
    for text in [entry.example, entry.name, entry.name.upper(), f"  Turn it into {entry.name}, please. ",
                 *PARAPHRASES[entry.name]]:
        assert resolve(text) == entry.name, text


def test_vocabulary_is_documented_for_the_gui():
    assert set(PARAPHRASES) == set(NAMES)
    for entry in ENTRIES:
        assert entry.example and entry.description and entry.keywords
    assert [e.name for e in ENTRIES if not e.pointwise] == ["pencil sketch", "cartoon"]


@pytest.mark.parametrize("entry", ENTRIES, ids=NAMES)
def test_every_keyword_resolves_in_every_documented_phrasing(entry):
    for keyword in entry.keywords:
        for phrasing in PHRASINGS:
            text = phrasing.replace("X", keyword)
            assert resolve(text) == entry.name, text
    for noun in entry.nouns:
        assert resolve(f"make it a {entry.keywords[0]} {noun}") == entry.name


@pytest.mark.parametrize("text", ["make it a marble statue", "as if it were night", "at night", "at sunset",
                                  "in the style of a pencil sketch", "make it look like it's night",
                                  "make it look like it\u2019s winter", "an old sepia photo", "made of gold",
                                  "make the whole scene look like a comic", "make everything red, please",
                                  "render it in black&white", "turn the image into a cartoon"])
def test_whole_scene_phrasings_are_understood(text):
    resolve(text)


REFUSED = {
    "remove the red car": ["remove", "car"],
    "give him a red hat": ["give", "hat"],
    "don't make it red": ["don't"],
    "do not make it red": ["do", "not"],
    "golden retriever": ["retriever"],
    "make the car blue": ["car"],
    "paint his shirt green": ["his", "shirt"],
    "give him a red beard": ["give", "beard"],
    "no sepia": ["no"],
    "not red": ["not"],
    "make it red without the background": ["without", "background"],
    "add snow": ["add"],
    "make the sky look like sunset": ["sky"],
    "make it slightly bluer": ["slightly", "bluer"],
    "make it a red statue": ["statue"],  # nouns belong to their entry
    "turn him into a statue": ["statue"],
    "make it 50% red": ["50"],
    "make it look like a Van Gogh painting": ["van", "gogh", "painting"],
    "redo it": ["redo"],
}


@pytest.mark.parametrize("text", REFUSED)
def test_instructions_beyond_the_vocabulary_are_refused_naming_the_words_and_ip2p(text):
    with pytest.raises(UserInputError) as err:
        resolve(text)
    message = str(err.value)
    assert f"beyond its vocabulary: {', '.join(REFUSED[text])})" in message
    assert all(name in message for name in NAMES) and "--editor ip2p" in message
    assert all(phrasing in message for phrasing in PHRASINGS)


def test_an_instruction_naming_no_edit_lists_the_vocabulary():
    with pytest.raises(UserInputError, match="does not understand 'make it look like this'.*one of: red") as err:
        resolve("make it look like this")
    assert "beyond" not in str(err.value)  # every word is grammar: nothing to name
    with pytest.raises(UserInputError, match="bronze statue"):
        OfflineEditor().edit(torch.zeros(4, 4, 3), torch.zeros(4, 4, 3), "give him a hat", 1.0, 0)


@pytest.mark.parametrize("text", ["", "   ", "\n\t"])
def test_empty_instruction_is_the_common_error(text):
    with pytest.raises(UserInputError, match="instruction is empty"):
        resolve(text)


def test_instruction_naming_two_edits_is_refused():
    with pytest.raises(UserInputError, match="gold statue and sunset"):
        resolve("a gold statue at sunset")


# --- the noise level t ---

def test_t0_keeps_the_render_and_t1_is_the_edit_of_the_original(views):
    render, original = views[0], views[1]
    editor = OfflineEditor()
    assert torch.equal(editor.edit(render, original, "make it a bronze statue", 0.0, 3), render)
    edited = editor.edit(render, original, "make it a bronze statue", 1.0, 3)
    assert torch.equal(edited, apply_edit("bronze", original))
    assert psnr(edited, apply_edit("bronze", render)) < 20  # the original is what gets edited
    assert torch.equal(edit_image(editor, original, "bronze"), apply_edit("bronze", original))
    steps = []
    edit_image(editor, original, "bronze", on_step=steps.append)
    assert [(s.step, s.total) for s in steps] == [(1, 1)] and torch.equal(steps[0].preview(), edited)


@pytest.mark.parametrize("instruction", ["bronze", "night", "cartoon"])
def test_larger_t_follows_the_edit_more(views, instruction):
    render, original = views[0], views[2]
    target = apply_edit(instruction, original)
    editor = OfflineEditor()
    dists = [float((editor.edit(render, original, instruction, t, 0) - target).abs().mean())
             for t in torch.linspace(0, 1, 11).tolist()]
    assert all(a > b for a, b in zip(dists, dists[1:])), dists
    assert dists[-1] == 0


# --- per-call variation ---

def test_variation_is_seeded(views):
    editor = OfflineEditor(SUGGESTED_VARIATION)
    a = editor.edit(views[0], views[0], "bronze", 0.7, 11)
    assert torch.equal(a, editor.edit(views[0], views[0], "bronze", 0.7, 11))
    assert not torch.equal(a, editor.edit(views[0], views[0], "bronze", 0.7, 12))


def test_no_variation_ignores_the_seed(views):
    editor = OfflineEditor()
    outs = [editor.edit(views[0], views[1], "purple", 0.6, seed) for seed in (0, 1, 12345)]
    assert all(torch.equal(outs[0], out) for out in outs)


def test_suggested_variation_makes_two_seeds_disagree_far_below_the_fidelity_bar(views):
    """Median over seed pairs ≥ 6 dB under the bar (so at least the 3 dB the consolidation check needs)."""
    editor = OfflineEditor(SUGGESTED_VARIATION)
    gaps = []
    for view in views:
        outs = [editor.edit(view, view, "make it look like a bronze statue", 1.0, seed) for seed in range(8)]
        gaps += [psnr(outs[i], outs[j]) for i in range(8) for j in range(i + 1, 8)]
    assert statistics.median(gaps) <= DEMO_FIDELITY_BAR_DB - 6


def test_variation_averages_out_across_seeds(views):
    """What lets a 3D field consolidate inconsistent single-view edits."""
    editor = OfflineEditor(SUGGESTED_VARIATION)
    mean = torch.stack([editor.edit(views[0], views[0], "bronze", 1.0, seed) for seed in range(64)]).mean(0)
    assert psnr(mean, apply_edit("bronze", views[0])) > 30


def test_variation_outside_its_range_is_refused():
    from engine.editing.idu import EditConfig

    for bad in (-0.1, 1.5):
        with pytest.raises(UserInputError, match="variation") as direct:
            OfflineEditor(bad)
        with pytest.raises(UserInputError) as configured:  # the editor registry's check: the same one
            EditConfig(project="", instruction="make it red", steps=1, variation=bad).validate()
        assert str(configured.value) == str(direct.value)


def test_an_instruction_is_read_once_however_many_views_are_edited(views, monkeypatch):
    import engine.editors.offline as offline

    resolve.cache_clear()
    readings = []
    parse = offline._parse
    monkeypatch.setattr(offline, "_parse", lambda text: readings.append(text) or parse(text))
    editor = OfflineEditor(SUGGESTED_VARIATION)
    for seed, view in enumerate(views * 3):
        editor.edit(view, view, "make it a gold statue", 0.5, seed)
    assert readings == ["make it a gold statue"]
    for _ in range(2):  # errors are not remembered: each says what is wrong
        with pytest.raises(UserInputError, match="beyond its vocabulary: hat"):
            editor.edit(views[0], views[0], "make it a gold hat", 0.5, 0)
    assert readings == ["make it a gold statue"] + ["make it a gold hat"] * 2


# --- what the edits look like ---

def test_black_and_white_is_grey(views):
    out = apply_edit("make it black and white", views[0])
    assert torch.allclose(out[..., 0], out[..., 1]) and torch.allclose(out[..., 1], out[..., 2])


def test_sepia_is_brown(views):
    out = apply_edit("sepia", views[0])
    assert (out[..., 0] >= out[..., 1]).all() and (out[..., 1] >= out[..., 2]).all()
    r, g, b = out.reshape(-1, 3).mean(0).tolist()
    assert r > g > b


def test_bronze_is_brown_not_grey_and_gold_is_brighter_and_yellower(views):
    bronze_hue, bronze_sat, bronze_val = _hsv(apply_edit("bronze statue", views[0]))
    gold_hue, _, gold_val = _hsv(apply_edit("gold statue", views[0]))
    assert 15 <= bronze_hue <= 45 and bronze_sat > 0.3
    assert bronze_hue < gold_hue <= 60 and gold_val > bronze_val


def test_silver_is_neutral_with_more_contrast_and_marble_is_pale(views):
    silver = apply_edit("silver statue", views[0])
    assert float((silver.max(-1).values - silver.min(-1).values).max()) < 0.05
    assert float(_luma(silver).std()) > float(_luma(views[0]).std())
    _, marble_sat, marble_val = _hsv(apply_edit("marble", views[0]))
    assert marble_sat < 0.1 and marble_val > 0.7


def test_night_is_darker_and_winter_brighter_and_bluer(views):
    original = views[0]
    night = apply_edit("make it night", original)
    winter = apply_edit("turn it into winter", original)
    assert float(_luma(night).mean()) < 0.6 * float(_luma(original).mean())
    assert float(_luma(winter).mean()) > float(_luma(original).mean())

    def blueness(image):
        return float((image[..., 2] - image[..., 0]).mean())

    assert blueness(winter) > blueness(original)


def test_sunset_is_warm(views):
    r, g, b = apply_edit("sunset", views[0]).reshape(-1, 3).mean(0).tolist()
    assert r > g > b


@pytest.mark.parametrize("name", ["red", "orange", "yellow", "green", "blue", "purple", "pink"])
def test_tints_take_their_colour_and_keep_brightness(views, name):
    hue_of = {"red": 0, "orange": 30, "yellow": 55, "green": 125, "blue": 225, "purple": 280, "pink": 330}
    out = apply_edit(f"make it {name}", views[0])
    hue, sat, _ = _hsv(out)
    assert min(abs(hue - hue_of[name]), 360 - abs(hue - hue_of[name])) < 25 and sat > 0.2
    assert abs(float(_luma(out).mean() - _luma(views[0]).mean())) < 0.03


def test_sketch_is_grey_strokes_on_paper(views):
    out = apply_edit("pencil sketch", views[0])
    assert float(_luma(out).median()) > 0.6  # mostly paper
    assert float(_luma(out).min()) < 0.4  # with dark strokes
    assert float((out.max(-1).values - out.min(-1).values).max()) < 0.06  # no colour beyond the paper's


def test_cartoon_has_flat_colours_and_ink_lines(views):
    out = apply_edit("cartoon", views[0])
    steps = out * (CARTOON_LEVELS - 1)
    flat = ((steps - steps.round()).abs() < 1e-4).all(-1)
    assert float(flat.float().mean()) > 0.6  # most pixels take one of a few flat colours
    assert float(_luma(out[~flat]).mean()) < float(_luma(out[flat]).mean()) - 0.2  # the rest are dark ink


# --- properties every edit keeps ---

@pytest.mark.parametrize("entry", [e for e in ENTRIES if e.pointwise], ids=lambda e: e.name)
def test_per_pixel_edits_commute_with_shuffling_pixels(noise, entry):
    perm = torch.randperm(noise.shape[0] * noise.shape[1], generator=torch.Generator().manual_seed(0))
    shuffled = noise.reshape(-1, 3)[perm].reshape(noise.shape)
    expected = apply_edit(entry.name, noise).reshape(-1, 3)[perm].reshape(noise.shape)
    assert torch.allclose(apply_edit(entry.name, shuffled), expected, atol=1e-6)


@pytest.mark.parametrize("entry", [e for e in ENTRIES if not e.pointwise], ids=lambda e: e.name)
def test_neighbourhood_edits_are_local(noise, entry):
    changed = noise.clone()
    changed[0, 0] = 1 - changed[0, 0]
    diff = (apply_edit(entry.name, changed) - apply_edit(entry.name, noise)).abs().amax(-1)
    assert float(diff[6:, :].max()) == 0 and float(diff[:, 6:].max()) == 0


@pytest.mark.parametrize("entry", ENTRIES, ids=NAMES)
def test_output_shape_range_and_dtype(noise, entry):
    extremes = noise.double()
    extremes[:4] = 0
    extremes[-4:] = 1
    editor = OfflineEditor(1.0)
    for t in (0.0, 0.5, 1.0):
        out = editor.edit(extremes, extremes.flip(0), entry.example, t, 5)
        assert out.shape == noise.shape and out.dtype == torch.float32
        assert float(out.min()) >= 0 and float(out.max()) <= 1


def test_bad_inputs_name_the_problem(noise):
    with pytest.raises(UserInputError, match="noise level"):
        OfflineEditor().edit(noise, noise, "bronze", 1.5, 0)
    with pytest.raises(UserInputError, match="differ in size"):
        OfflineEditor().edit(noise, noise[:10], "bronze", 0.5, 0)

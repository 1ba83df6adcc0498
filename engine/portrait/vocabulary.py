"""The portrait vocabulary: the edits the embedded 3DPE path learns, each with known 3D ground truth, the
2D teacher that edits one view of a head the way a diffusion editor would (with a seeded per-call
variation, since such edits disagree), and the words a text prompt may use.

Two kinds of edit:
* appearance edits of a synthetic head (hair colour, skin tone, lip colour, garment colour, background):
  the head's parameters change and it is rendered again, so every view of the edit is exact and the
  rest of the head (the other semantic groups) stays as it was;
* global styles from the offline editor (metal statues, pencil sketch, cartoon, photographic looks):
  the ground truth of a view is the style applied to that view.
The teacher's edit of a view jitters the edit: appearance targets by ±APPEARANCE_JITTER (per colour
channel), styles by the offline editor's variation (strength and hue).  ``HELD_OUT_STYLES`` are kept out
of distillation so that adaptation to a new style can be measured on them.

Text prompts are read word by word (``tokens``): each edit's name and synonyms map to that edit's
token; words that only phrase a request (FILLER, the offline editor's and a few more) are dropped;
any other word is an error that lists the vocabulary.  ``TRAIN_PHRASINGS`` (8) are used in training,
``TEST_PHRASINGS`` (5) only to measure how phrasing changes an edit.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import torch

from engine.core.errors import UserInputError
from engine.editors.offline import FILLER as STYLE_FILLER
from engine.editors.offline import OfflineEditor, apply_edit, match_phrases
from engine.portrait.heads import GROUP_LABELS, PARAM_HIGH, PARAM_LOW, PARAM_NAMES, HeadParams

APPEARANCE_JITTER = 0.12
"""largest change a teacher's appearance edit draws for each target value (parameter units, colours 0-1)"""
STYLE_VARIATION = 0.8
"""the offline editor's variation for the teacher's style edits (its SUGGESTED_VARIATION)"""


@dataclass(frozen=True)
class PortraitEdit:
    """One edit of the vocabulary."""

    name: str
    synonyms: tuple[str, ...]
    """other words or phrases a prompt may name it by (whole words, any case)"""
    targets: tuple[tuple[str, float], ...] = ()
    """appearance edits: head parameters and the values they take"""
    style: str | None = None
    """global styles: the offline editor's instruction"""
    group: str | None = None
    """the semantic group an appearance edit changes (GROUP_LABELS); None for a global style"""

    def edited_head(self, head: HeadParams, jitter: np.ndarray | None = None) -> HeadParams:
        """The head with this appearance edit (targets moved by ``jitter``, clipped to the parameters' ranges)."""
        values = head.to_vector()
        for k, (name, value) in enumerate(self.targets):
            column = PARAM_NAMES.index(name)
            shift = 0.0 if jitter is None else float(jitter[k])
            values[column] = np.clip(value + shift, PARAM_LOW[column], PARAM_HIGH[column])
        return HeadParams.from_vector(values)


def _colour(prefix: str, rgb: tuple[float, float, float]) -> tuple[tuple[str, float], ...]:
    return tuple((f"{prefix}_{channel}", value) for channel, value in zip(("red", "green", "blue"), rgb))


EDITS: tuple[PortraitEdit, ...] = (
    PortraitEdit("blond hair", ("blond", "blonde", "fair hair"), (("hair_lightness", 0.95), ("hair_redness", 0.05)),
                 group="hair"),
    PortraitEdit("black hair", ("black haired", "jet black hair", "dark hair"),
                 (("hair_lightness", 0.0), ("hair_redness", 0.0)), group="hair"),
    PortraitEdit("red hair", ("redhead", "ginger", "auburn"), (("hair_lightness", 0.45), ("hair_redness", 0.7)),
                 group="hair"),
    PortraitEdit("pale skin", ("fair skin", "light skin", "pale"), (("skin_tone", 0.95),), group="face"),
    PortraitEdit("dark skin", ("deep skin", "tanned", "tan"), (("skin_tone", 0.12),), group="face"),
    PortraitEdit("red lips", ("red lipstick", "lipstick"), (("lip_redness", 1.0),), group="face"),
    PortraitEdit("red shirt", ("red top", "red garment", "red clothes"), _colour("garment", (0.85, 0.1, 0.1)),
                 group="garment"),
    PortraitEdit("blue shirt", ("blue top", "blue garment", "blue clothes"), _colour("garment", (0.1, 0.2, 0.85)),
                 group="garment"),
    PortraitEdit("white shirt", ("white top", "white garment", "white clothes"),
                 _colour("garment", (0.92, 0.92, 0.92)), group="garment"),
    PortraitEdit("blue background", ("blue backdrop", "sky background"), _colour("background", (0.2, 0.35, 0.8)),
                 group="background"),
    PortraitEdit("green background", ("green backdrop", "green screen"), _colour("background", (0.2, 0.7, 0.3)),
                 group="background"),
    PortraitEdit("bronze statue", ("bronze", "bronzed"), style="bronze statue"),
    PortraitEdit("gold statue", ("gold", "golden", "gilded"), style="gold statue"),
    PortraitEdit("silver statue", ("silver", "chrome"), style="silver statue"),
    PortraitEdit("pencil sketch", ("sketch", "pencil drawing", "drawing"), style="pencil sketch"),
    PortraitEdit("cartoon", ("cartoonish", "comic", "toon", "anime"), style="cartoon"),
    PortraitEdit("black and white", ("b&w", "grayscale", "greyscale", "monochrome"), style="black and white"),
    PortraitEdit("sepia", ("old photo", "vintage"), style="sepia"),
    PortraitEdit("marble statue", ("marble", "marbled", "stone"), style="marble statue"),
)
"""every edit, in the order the GUI lists them"""
HELD_OUT_STYLES = ("marble statue",)
"""styles kept out of distillation: adaptation learns them from example pairs"""
TRAINED_EDITS = tuple(edit.name for edit in EDITS if edit.name not in HELD_OUT_STYLES)

TRAIN_PHRASINGS = ("{}", "make it {}", "give them {}", "turn them into {}", "with {}", "change to {}",
                   "{} please", "make the portrait {}")
TEST_PHRASINGS = ("edit to {}", "now {}", "render as {}", "show this person with {}", "a portrait with {}")
FILLER = STYLE_FILLER | {"give", "them", "person", "portrait", "face", "head", "please", "now", "i", "want",
                         "photo", "statue", "sculpture", "hair", "skin", "shirt", "lips", "background"}
"""words that only phrase a request; dropped (an edit's own words are matched before them)"""
_WORD = re.compile(r"[a-z0-9&']+")


def prompt_words(text: str) -> list[str]:
    return [w.strip("'") for w in _WORD.findall(text.lower()) if w.strip("'")]


def edit_named(name: str) -> PortraitEdit:
    """The edit of that exact name."""
    for edit in EDITS:
        if edit.name == name:
            return edit
    raise UserInputError(f"no portrait edit is named {name!r}; the vocabulary: {', '.join(e.name for e in EDITS)}")


def vocabulary_text(extra: tuple[str, ...] = ()) -> str:
    """The vocabulary as an error message lists it."""
    names = [edit.name for edit in EDITS] + list(extra)
    return ", ".join(names)


def parse_prompt(text: str, extra: dict[str, str] | None = None) -> str:
    """The edit (or adapted style, from ``extra``: phrase → name) a text prompt names.  Longest phrases
    match first; filler words are dropped; any other word, or naming none or several, is a UserInputError
    listing the vocabulary."""
    phrases = {tuple(prompt_words(edit.name)): edit.name for edit in EDITS}
    phrases.update({tuple(prompt_words(s)): edit.name for edit in EDITS for s in edit.synonyms})
    phrases.update({tuple(prompt_words(k)): v for k, v in (extra or {}).items()})
    found, rest = match_phrases(prompt_words(text), phrases)
    unknown = [word for word in rest if word not in FILLER]
    listing = vocabulary_text(tuple(v for v in dict.fromkeys((extra or {}).values()) if v not in phrases.values()))
    if unknown:
        raise UserInputError(f"the portrait vocabulary has no word {', '.join(repr(w) for w in unknown)} (in "
                             f"{text!r}); it knows: {listing} and their synonyms")
    if len(found) != 1:
        what = "names no edit" if not found else f"names several edits ({', '.join(found)})"
        raise UserInputError(f"the prompt {text!r} {what}; give one of: {listing}")
    return found[0]


def phrasings(name: str, templates: tuple[str, ...]) -> list[str]:
    """Prompts naming edit ``name``: each template with the name, then with each synonym in turn."""
    edit = edit_named(name)
    words = (edit.name, *edit.synonyms)
    return [template.format(words[k % len(words)]) for k, template in enumerate(templates)]


class PortraitTeacher:
    """The 2D teacher: edits of a head's views with exact 3D ground truth (``truth``) and the teacher's
    varied 2D edit of one view (``edit_view``)."""

    def __init__(self, variation: bool = True) -> None:
        self.variation = variation
        self._styles = OfflineEditor(STYLE_VARIATION if variation else 0.0)

    def truth(self, name: str, head: HeadParams, views: torch.Tensor, render) -> torch.Tensor:
        """The variation-free edit of views (N, 3, H, W) in [0, 1] of ``head``; ``render(head)`` renders the
        same cameras (appearance edits are rendered again from the edited head)."""
        edit = edit_named(name)
        if edit.style is None:
            return render(edit.edited_head(head))
        return _styled(edit.style, views)

    def edit_view(self, name: str, head: HeadParams, view: torch.Tensor, render, seed: int) -> torch.Tensor:
        """The teacher's 2D edit (3, H, W) of one view of ``head``, varied by ``seed``; ``render(head)`` renders
        that view of a head."""
        edit = edit_named(name)
        if edit.style is None:
            jitter = None
            if self.variation:
                g = np.random.default_rng(seed)
                jitter = g.uniform(-APPEARANCE_JITTER, APPEARANCE_JITTER, len(edit.targets))
            return render(edit.edited_head(head, jitter))
        image = view.permute(1, 2, 0)
        return self._styles.edit(image, image, edit.style, 1.0, seed).permute(2, 0, 1)


def _styled(style: str, views: torch.Tensor) -> torch.Tensor:
    return torch.stack([apply_edit(style, v.permute(1, 2, 0)).permute(2, 0, 1) for v in views])


def group_id(name: str) -> int | None:
    """The semantic group (index into GROUP_LABELS) an edit changes, None for a global style."""
    group = edit_named(name).group
    return None if group is None else GROUP_LABELS.index(group)


__all__ = ["EDITS", "HELD_OUT_STYLES", "PortraitEdit", "PortraitTeacher", "TEST_PHRASINGS", "TRAINED_EDITS",
           "TRAIN_PHRASINGS", "edit_named", "group_id", "parse_prompt", "phrasings", "prompt_words", "vocabulary_text"]

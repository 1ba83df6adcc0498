"""The embedded prompt encoder: text or image prompts → tokens the editing student's prompt branch attends to
(3DPE's MAE ViT at small scale, plus a text path the official checkpoint does not have).

* Text: a prompt is read against the portrait vocabulary (engine.portrait.vocabulary.parse_prompt: synonyms
  and filler words resolved, unknown words an error listing the vocabulary); the words of the edit's
  canonical name ("red hair" → red, hair) get learned embeddings and positions, mixed by a small MLP.
  Edits sharing a word ("red lips", "red shirt") share its embedding.  A style taught by adaptation adds
  its new words.
* Image: a reference (resized to 64²) through four strided convolutions → 8 × 8 tokens.
"""

from __future__ import annotations

import shlex

import torch
import torch.nn.functional as F
from torch import nn

from engine.core.errors import UserInputError
from engine.portrait.vocabulary import TRAINED_EDITS, parse_prompt, prompt_words

PROMPT_DIM = 128
MAX_WORDS = 4
REFERENCE_SIZE = 64


def canonical_words(names: list[str] | tuple[str, ...]) -> list[str]:
    """Every word of the given edit names, in first-seen order."""
    return list(dict.fromkeys(w for name in names for w in prompt_words(name)))


class PromptEncoder(nn.Module):
    """Text prompts (by vocabulary) and reference images → (B, L, PROMPT_DIM) tokens."""

    def __init__(self, styles: tuple[str, ...] = (), dim: int = PROMPT_DIM) -> None:
        """``styles``: names of styles added by adaptation, beyond the vocabulary."""
        super().__init__()
        self.styles = tuple(styles)
        self.words = canonical_words(list(TRAINED_EDITS) + list(styles))
        self.embedding = nn.Embedding(len(self.words), dim)
        self.position = nn.Parameter(torch.zeros(MAX_WORDS, dim))
        self.text_mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))
        self.image = nn.Sequential(nn.Conv2d(3, 32, 4, 2, 1), nn.LeakyReLU(0.2), nn.Conv2d(32, 64, 4, 2, 1),
                                   nn.LeakyReLU(0.2), nn.Conv2d(64, dim, 4, 2, 1), nn.LeakyReLU(0.2),
                                   nn.Conv2d(dim, dim, 3, 1, 1))
        self.image_position = nn.Parameter(torch.zeros((REFERENCE_SIZE // 8) ** 2, dim))
        nn.init.normal_(self.position, std=0.02)
        nn.init.normal_(self.image_position, std=0.02)

    def resolve(self, prompt: str) -> str:
        """The edit or adapted style a text prompt names; a UserInputError listing the vocabulary for unknown
        words, and one saying how to teach it for a known style this encoder has not learned."""
        name = parse_prompt(prompt, {style: style for style in self.styles})
        if name not in TRAINED_EDITS and name not in self.styles:
            raise UserInputError(f"{name!r} is not learned yet: teach it from example pairs with "
                                 f"python main.py portrait adapt --pairs DIR --name {shlex.quote(name)}")
        return name

    def add_style(self, name: str) -> None:
        """Make room for a new style's words (new embeddings start at the mean of the known ones)."""
        if name in self.styles:
            return
        new = [w for w in canonical_words([name]) if w not in self.words]
        if new:
            old = self.embedding.weight.data
            grown = nn.Embedding(len(self.words) + len(new), old.shape[1])
            grown.weight.data[:len(old)] = old
            grown.weight.data[len(old):] = old.mean(0, keepdim=True)
            self.embedding = grown
            self.words += new
        self.styles += (name,)

    def text_tokens(self, names: list[str]) -> torch.Tensor:
        """Tokens of edits given by name (all with the same number of words is not required: shorter ones
        are padded by repeating their last word)."""
        ids = [[self.words.index(w) for w in prompt_words(name)][:MAX_WORDS] for name in names]
        length = max(map(len, ids))
        ids = torch.tensor([row + [row[-1]] * (length - len(row)) for row in ids])
        x = self.embedding(ids) + self.position[:length]
        return x + self.text_mlp(x)

    def image_tokens(self, reference: torch.Tensor) -> torch.Tensor:
        """Tokens of reference images (B, 3, H, W) in [0, 1]."""
        if reference.shape[-1] != REFERENCE_SIZE or reference.shape[-2] != REFERENCE_SIZE:
            reference = F.interpolate(reference, size=(REFERENCE_SIZE,) * 2, mode="bilinear", align_corners=False,
                                      antialias=True)
        return self.image(reference * 2 - 1).flatten(2).transpose(1, 2) + self.image_position

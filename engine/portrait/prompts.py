"""The embedded prompt encoder: text or image prompts → tokens the editing student's prompt branch attends to
(3DPE's MAE ViT at small scale, plus a text path the official checkpoint does not have).

* Text: a prompt is read against the portrait vocabulary (engine.portrait.vocabulary.parse_prompt: synonyms
  and filler words resolved, unknown words an error listing the vocabulary); the words of the edit's
  canonical name ("red hair" → red, hair) get learned embeddings and positions, mixed by a small MLP.
  Edits sharing a word ("red lips", "red shirt") share its embedding.  A style taught by adaptation adds
  its new words.
  Or, given a CLIP text model in a local folder (transformers, safetensors weights; ``ClipText``), any wording:
  the prompt's CLIP hidden states, frozen, through a learned projection and the same MLP.  The editor's folder
  then names that CLIP folder; its weights are never copied into the editor.
* Image: a reference (resized to 64²) through four strided convolutions → 8 × 8 tokens.
"""

from __future__ import annotations

import functools
import shlex
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from engine.core.errors import CheckpointError, UserInputError
from engine.portrait.vocabulary import TRAINED_EDITS, parse_prompt, prompt_words

PROMPT_DIM = 128
MAX_WORDS = 4
REFERENCE_SIZE = 64
CLIP_TOKENS = 24
"""token positions read from a CLIP text model (prompts are padded or cut to this many)"""


def canonical_words(names: list[str] | tuple[str, ...]) -> list[str]:
    """Every word of the given edit names, in first-seen order."""
    return list(dict.fromkeys(w for name in names for w in prompt_words(name)))


class ClipText:
    """A CLIP text model read from a local folder (transformers; safetensors weights only, nothing downloaded),
    frozen: prompts → its last hidden states (B, CLIP_TOKENS, width).  Not a submodule of the editor, so its
    weights never enter the editor's file."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder).resolve()
        if not self.folder.is_dir() or not any(self.folder.glob("*.safetensors")):
            raise CheckpointError(f"{folder}: not a CLIP text model folder (config.json, tokenizer files and "
                                  "safetensors weights, as transformers' save_pretrained writes them)")
        try:
            from transformers import AutoTokenizer, CLIPTextModel
            from transformers.utils import logging

            logging.disable_progress_bar()
            self.tokenizer = AutoTokenizer.from_pretrained(self.folder, local_files_only=True)
            self.model = CLIPTextModel.from_pretrained(self.folder, local_files_only=True, use_safetensors=True)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise CheckpointError(f"{folder}: not a readable CLIP text model ({str(exc).splitlines()[0]})") from None
        self.model.eval().requires_grad_(False)
        self.width = int(self.model.config.hidden_size)

    @torch.no_grad()
    def __call__(self, prompts: list[str]) -> torch.Tensor:
        ids = self.tokenizer(prompts, padding="max_length", max_length=CLIP_TOKENS, truncation=True,
                             return_tensors="pt")
        return self.model(input_ids=ids["input_ids"], attention_mask=ids["attention_mask"]).last_hidden_state


@functools.lru_cache(maxsize=2)
def load_clip_text(folder: str) -> ClipText:
    """The CLIP text model in ``folder``, read once per process."""
    return ClipText(folder)


class PromptEncoder(nn.Module):
    """Text prompts (by vocabulary, or through a local CLIP text model) and reference images → (B, L, PROMPT_DIM)
    tokens."""

    def __init__(self, styles: tuple[str, ...] = (), dim: int = PROMPT_DIM, clip_text: str | None = None) -> None:
        """``styles``: names of styles added by adaptation, beyond the vocabulary; ``clip_text``: a CLIP text model
        folder that reads the prompts instead of the vocabulary."""
        super().__init__()
        self.styles = tuple(styles)
        self.clip = load_clip_text(str(Path(clip_text).resolve())) if clip_text else None
        if self.clip is None:
            self.words = canonical_words(list(TRAINED_EDITS) + list(styles))
            self.embedding = nn.Embedding(len(self.words), dim)
            self.position = nn.Parameter(torch.zeros(MAX_WORDS, dim))
        else:
            self.clip_projection = nn.Linear(self.clip.width, dim)
        self.text_mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))
        self.image = nn.Sequential(nn.Conv2d(3, 32, 4, 2, 1), nn.LeakyReLU(0.2), nn.Conv2d(32, 64, 4, 2, 1),
                                   nn.LeakyReLU(0.2), nn.Conv2d(64, dim, 4, 2, 1), nn.LeakyReLU(0.2),
                                   nn.Conv2d(dim, dim, 3, 1, 1))
        self.image_position = nn.Parameter(torch.zeros((REFERENCE_SIZE // 8) ** 2, dim))
        if self.clip is None:
            nn.init.normal_(self.position, std=0.02)
        nn.init.normal_(self.image_position, std=0.02)

    @property
    def clip_folder(self) -> str | None:
        """The CLIP text model's folder, None on the vocabulary."""
        return None if self.clip is None else str(self.clip.folder)

    def resolve(self, prompt: str) -> str:
        """The edit or adapted style a text prompt names (through CLIP: the prompt itself, any wording); a
        UserInputError listing the vocabulary for unknown words, and one saying how to teach it for a known style
        this encoder has not learned."""
        if self.clip is not None:
            text = " ".join(prompt.split())
            if not text:
                raise UserInputError("the prompt is empty")
            return text
        name = parse_prompt(prompt, {style: style for style in self.styles})
        if name not in TRAINED_EDITS and name not in self.styles:
            raise UserInputError(f"{name!r} is not learned yet: teach it from example pairs with "
                                 f"python main.py portrait adapt --pairs DIR --name {shlex.quote(name)}")
        return name

    def add_style(self, name: str) -> None:
        """Make room for a new style's words (new embeddings start at the mean of the known ones)."""
        if name in self.styles:
            return
        new = [] if self.clip is not None else [w for w in canonical_words([name]) if w not in self.words]
        if new:
            old = self.embedding.weight.data
            grown = nn.Embedding(len(self.words) + len(new), old.shape[1])
            grown.weight.data[:len(old)] = old
            grown.weight.data[len(old):] = old.mean(0, keepdim=True)
            self.embedding = grown
            self.words += new
        self.styles += (name,)

    def text(self, prompts: list[str]) -> torch.Tensor:
        """Tokens of text prompts: each resolved to its edit's name on the vocabulary, read as written by CLIP."""
        if self.clip is not None:
            hidden = self.clip([self.resolve(prompt) for prompt in prompts])  # the CLIP model stays on the CPU
            x = self.clip_projection(hidden.to(self.clip_projection.weight.device))
        else:
            ids = [[self.words.index(w) for w in prompt_words(self.resolve(prompt))][:MAX_WORDS] for prompt in prompts]
            length = max(map(len, ids))  # shorter ones are padded by repeating their last word
            ids = torch.tensor([row + [row[-1]] * (length - len(row)) for row in ids], device=self.position.device)
            x = self.embedding(ids) + self.position[:length]
        return x + self.text_mlp(x)

    def image_tokens(self, reference: torch.Tensor) -> torch.Tensor:
        """Tokens of reference images (B, 3, H, W) in [0, 1]."""
        if reference.shape[-1] != REFERENCE_SIZE or reference.shape[-2] != REFERENCE_SIZE:
            reference = F.interpolate(reference, size=(REFERENCE_SIZE,) * 2, mode="bilinear", align_corners=False,
                                      antialias=True)
        return self.image(reference * 2 - 1).flatten(2).transpose(1, 2) + self.image_position

"""The embedded offline editor: a fixed vocabulary of global edits, no model download.

Each vocabulary entry is an image transform ``E`` of the ORIGINAL capture ((H, W, 3) float in
[0, 1]).  Most are per-pixel colour maps, so two views of the same surface that agree before the
edit also agree after it: that is what makes ``E(original)`` a valid ground truth for scoring a
3D edit (held-out views of the edited field against ``E`` of the held-out originals).  Pencil
sketch and cartoon need neighbourhoods (edges); they use small, fixed kernels.

Instructions follow a small grammar (``resolve``): exactly one entry's name or keyword, and
otherwise only words that ask for a look for the whole scene ("make it look like a bronze statue",
"Bronze", "b&w", "turn him into a snowy winter scene", "as if it were night", "in the style of a
pencil sketch").  Any other word (an object, "remove", "add", "don't", "no") means the instruction
asks for something the vocabulary cannot do, and is a UserInputError listing the vocabulary and
pointing to the InstructPix2Pix editor, rather than a global edit that misreads it.

``OfflineEditor`` follows the diffusion editor's use of the noise level ``t`` (small t keeps the
render, large t follows the edit of the original) and can add a seeded per-call variation so
that single-view edits disagree the way real diffusion edits do.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from engine.core.errors import UserInputError
from engine.core.jobs import CancelToken
from engine.editors.base import EditStep, Guidance, StepCallback, check_edit_inputs, check_instruction

Transform = Callable[[torch.Tensor], torch.Tensor]
Stops = Sequence[tuple[float, tuple[float, float, float]]]
"""a colour ramp: (luminance position in [0, 1], RGB) pairs with increasing positions"""

LUMA_WEIGHTS = (0.299, 0.587, 0.114)
"""Rec. 601 luma: the luminance every edit works from"""

MAX_HUE_ROTATION = math.pi / 6
"""largest hue rotation (radians about the grey axis) a variation of 1 can draw"""
MAX_STRENGTH_JITTER = 1.0
"""largest relative change of the edit's strength a variation of 1 can draw"""
SUGGESTED_VARIATION = 0.8
"""variation at which two seeds' edits of one view disagree far beyond the fidelity bars; see OfflineEditor"""


# --- building blocks (all on (H, W, C) float tensors) ---

def _luma(image: torch.Tensor) -> torch.Tensor:
    """Luminance (H, W, 1)."""
    return image @ image.new_tensor(LUMA_WEIGHTS)[:, None]


def _smoothstep(x: torch.Tensor, lo: float = 0.0, hi: float = 1.0) -> torch.Tensor:
    """0 below ``lo``, 1 above ``hi``, a smooth cubic in between."""
    x = ((x - lo) / (hi - lo)).clamp(0, 1)
    return x * x * (3 - 2 * x)


def _contrast(y: torch.Tensor, amount: float) -> torch.Tensor:
    """An S-curve on values in [0, 1]: 0 leaves them, 1 is a full smoothstep (midtones spread apart)."""
    return torch.lerp(y, _smoothstep(y), amount)


def _ramp(y: torch.Tensor, stops: Stops) -> torch.Tensor:
    """Map luminance (H, W, 1) through a piecewise-linear colour ramp → (H, W, 3)."""
    out = y.new_tensor(stops[0][1]).expand(*y.shape[:-1], 3)
    for (pa, ca), (pb, cb) in zip(stops, stops[1:]):
        step = y.new_tensor(cb) - y.new_tensor(ca)
        out = out + ((y - pa) / (pb - pa)).clamp(0, 1) * step
    return out


def _blur(image: torch.Tensor, sigma: float = 1.0) -> torch.Tensor:
    """Separable Gaussian blur (kernel radius 2·sigma), edges replicated.

    Channels are convolved one at a time: torch's CPU convolution is several times faster on a
    single-image batch than on a batch of three planes.
    """
    radius = max(1, round(2 * sigma))
    x = torch.arange(-radius, radius + 1, dtype=image.dtype)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    k = k / k.sum()
    planes = []
    for c in range(image.shape[-1]):
        plane = F.pad(image[None, None, :, :, c], (radius, radius, radius, radius), mode="replicate")
        plane = F.conv2d(F.conv2d(plane, k.view(1, 1, 1, -1)), k.view(1, 1, -1, 1))
        planes.append(plane[0, 0])
    return torch.stack(planes, -1)


def _gradient_magnitude(y: torch.Tensor) -> torch.Tensor:
    """Sobel gradient magnitude of a (H, W, 1) image, edges replicated."""
    sobel = y.new_tensor([[1.0, 0.0, -1.0], [2.0, 0.0, -2.0], [1.0, 0.0, -1.0]]) / 8
    kernels = torch.stack([sobel, sobel.T])[:, None]
    plane = F.pad(y.permute(2, 0, 1)[None], (1, 1, 1, 1), mode="replicate")
    g = F.conv2d(plane, kernels)[0]
    return torch.sqrt((g**2).sum(0))[..., None]


def _hue_rotation(angle: float) -> torch.Tensor:
    """3x3 matrix rotating RGB about the grey axis by ``angle`` radians (greys stay grey)."""
    a = 1 / math.sqrt(3)  # each component of the unit grey axis
    cross = torch.tensor([[0.0, -a, a], [a, 0.0, -a], [-a, a, 0.0]])  # cross product with the axis
    return math.cos(angle) * torch.eye(3) + math.sin(angle) * cross + (1 - math.cos(angle)) * torch.full((3, 3), a * a)


# --- the edits ---

TINT_KEEP = 0.2
"""fraction of the original colour a tint keeps, so painted detail stays faintly visible"""


def _tint(colour: tuple[float, float, float]) -> Transform:
    """Recolour in ``colour``: luminance mapped black → colour → white, the colour sitting at its own
    luminance so brightness is kept exactly; TINT_KEEP of the original colour stays for detail."""
    position = sum(w * c for w, c in zip(LUMA_WEIGHTS, colour))
    stops = ((0.0, (0.0, 0.0, 0.0)), (position, colour), (1.0, (1.0, 1.0, 1.0)))
    return lambda image: torch.lerp(_ramp(_luma(image), stops), image, TINT_KEEP)


def _material(stops: Stops, contrast: float, gamma: float = 1.0) -> Transform:
    """A metal or stone look: luminance, brightened by ``gamma`` < 1 and given an S-curve, then
    mapped through the material's colour ramp (shadow → body colour → highlight)."""
    return lambda image: _ramp(_contrast(_luma(image).clamp(0, 1) ** gamma, contrast), stops)


MARBLE_STOPS: Stops = ((0.0, (0.50, 0.49, 0.47)), (0.6, (0.85, 0.84, 0.81)), (1.0, (0.98, 0.97, 0.95)))
"""pale, nearly neutral stone: even the shadows stay light"""
MARBLE_VEINS = 7
"""number of grey veins across the luminance range (iso-luminance lines, so they stay per-pixel)"""
MARBLE_VEIN_WIDTH = 0.12
"""vein width as a fraction of the spacing between veins"""
MARBLE_VEIN_DEPTH = 0.22
"""how much a vein darkens the stone at its centre"""


def _marble(image: torch.Tensor) -> torch.Tensor:
    """Pale low-contrast stone with thin grey veins along lines of equal luminance."""
    y = _luma(image).clamp(0, 1)
    stone = _ramp(y, MARBLE_STOPS)
    veins = torch.exp(-((torch.sin(math.pi * MARBLE_VEINS * y) / MARBLE_VEIN_WIDTH) ** 2))
    return stone * (1 - MARBLE_VEIN_DEPTH * veins)


def _black_and_white(image: torch.Tensor) -> torch.Tensor:
    """Luminance in all three channels."""
    return _luma(image).expand(*image.shape[:-1], 3)


SEPIA_STOPS: Stops = ((0.0, (0.10, 0.06, 0.03)), (0.5, (0.62, 0.47, 0.31)), (1.0, (1.0, 0.95, 0.82)))
"""old-photograph browns; R ≥ G ≥ B at every stop, hence everywhere"""


def _sepia(image: torch.Tensor) -> torch.Tensor:
    """Luminance through a brown ramp; blacks fade to dark brown like an old print."""
    return _ramp(_luma(image).clamp(0, 1), SEPIA_STOPS)


NIGHT_DESATURATE = 0.6
"""colour lost at night (rod vision sees little colour)"""
NIGHT_GAMMA = 1.4
"""darkens midtones more than highlights, so lit surfaces still read"""
NIGHT_FILTER = (0.30, 0.40, 0.65)
"""moonlight: a dim blue filter"""


def _night(image: torch.Tensor) -> torch.Tensor:
    """Dark, blue and desaturated."""
    dim = torch.lerp(image, _luma(image).expand_as(image), NIGHT_DESATURATE).clamp(0, 1) ** NIGHT_GAMMA
    return dim * image.new_tensor(NIGHT_FILTER)


SUNSET_FILTER = (1.10, 0.78, 0.55)
"""warm light: more red, much less blue"""
SUNSET_GLOW = (0.30, 0.12, 0.0)
"""orange glow added to the highlights (scaled by luminance squared)"""
SUNSET_CONTRAST = 0.4
"""S-curve amount: low sun deepens shadows"""


def _sunset(image: torch.Tensor) -> torch.Tensor:
    """Warm orange light with glowing highlights and deeper shadows."""
    warm = _contrast(image.clamp(0, 1), SUNSET_CONTRAST) * image.new_tensor(SUNSET_FILTER)
    return warm + _luma(image) ** 2 * image.new_tensor(SUNSET_GLOW)


WINTER_DESATURATE = 0.5
"""colour lost under an overcast winter sky"""
WINTER_FILTER = (0.90, 0.97, 1.08)
"""cold light"""
WINTER_SNOW = (0.93, 0.96, 1.0)
"""the colour of snow"""
WINTER_SNOW_COVER = 0.75
"""how completely snow covers the brightest surfaces"""
WINTER_SNOW_LUMA = (0.25, 0.8)
"""luminance range over which snow cover fades in (bright, lit surfaces catch it)"""
WINTER_HAZE = 0.08
"""pale haze added to every tone"""


def _winter(image: torch.Tensor) -> torch.Tensor:
    """Cold, pale light with bright surfaces turning to snow."""
    y = _luma(image)
    cold = torch.lerp(image, y.expand_as(image), WINTER_DESATURATE) * image.new_tensor(WINTER_FILTER) + WINTER_HAZE
    cover = WINTER_SNOW_COVER * _smoothstep(y, *WINTER_SNOW_LUMA)
    return torch.lerp(cold, image.new_tensor(WINTER_SNOW).expand_as(image), cover)


SKETCH_SIGMA = 1.5
"""pixels: the scale of the pencil strokes"""
SKETCH_DARKNESS = 4.0
"""exponent that turns faint luminance edges into visible strokes"""
SKETCH_EPS = 0.05
"""keeps flat dark areas white paper instead of amplifying their noise"""
SKETCH_SHADING = 0.3
"""how much of the original shading the paper keeps"""
PAPER = (0.98, 0.97, 0.93)
"""off-white drawing paper"""


def _pencil_sketch(image: torch.Tensor) -> torch.Tensor:
    """Grey strokes on paper: a colour dodge of luminance by its blur (dark where luminance dips
    below its surroundings, i.e. along edges), over a little of the original shading."""
    y = _luma(image).clamp(0, 1)
    strokes = ((y + SKETCH_EPS) / (_blur(y, SKETCH_SIGMA) + SKETCH_EPS)).clamp(max=1) ** SKETCH_DARKNESS
    shading = 1 - SKETCH_SHADING * (1 - y)
    return (strokes * shading).expand(*y.shape[:-1], 3) * image.new_tensor(PAPER)


CARTOON_SMOOTHING = 1.0
"""pixels: Gaussian sigma that flattens texture before quantising"""
CARTOON_LEVELS = 5
"""colour levels per channel after smoothing"""
CARTOON_EDGES = (0.04, 0.10)
"""Sobel magnitude range over which an ink line fades in"""
CARTOON_INK = 0.85
"""darkness of the ink lines"""


def _cartoon(image: torch.Tensor) -> torch.Tensor:
    """Flat colours (smoothed, then quantised per channel) with dark ink lines on luminance edges."""
    smooth = _blur(image.clamp(0, 1), CARTOON_SMOOTHING)
    flat = torch.round(smooth * (CARTOON_LEVELS - 1)) / (CARTOON_LEVELS - 1)
    ink = _smoothstep(_gradient_magnitude(_luma(smooth)), *CARTOON_EDGES)
    return flat * (1 - CARTOON_INK * ink)


# --- the vocabulary ---

@dataclass(frozen=True)
class VocabularyEntry:
    """One edit the offline editor knows, as the GUI suggests it."""

    name: str
    example: str
    """an instruction that selects it"""
    description: str
    """what it does, in one line"""
    keywords: tuple[str, ...]
    """words or phrases that select it in an instruction (whole words, any case)"""
    nouns: tuple[str, ...]
    """further words an instruction naming it may use ("statue" for a metal, "photo" for sepia)"""
    pointwise: bool
    """True when each output pixel depends only on that pixel (views of one surface agree after the edit)"""


_COLOURS = {
    "red": ((0.85, 0.12, 0.10), ("red", "reddish", "crimson", "scarlet")),
    "orange": ((0.95, 0.50, 0.10), ("orange", "orangey")),
    "yellow": ((0.95, 0.85, 0.15), ("yellow", "yellowish")),
    "green": ((0.15, 0.70, 0.20), ("green", "greenish")),
    "blue": ((0.12, 0.30, 0.90), ("blue", "bluish", "blueish")),
    "purple": ((0.55, 0.18, 0.75), ("purple", "purplish", "violet")),
    "pink": ((0.98, 0.45, 0.70), ("pink", "pinkish")),
}
"""tint colours: RGB and keywords"""

BRONZE_STOPS: Stops = ((0.0, (0.08, 0.04, 0.02)), (0.35, (0.42, 0.23, 0.09)), (0.70, (0.74, 0.48, 0.22)),
                       (1.0, (1.0, 0.86, 0.60)))
"""dark brown shadows, warm bronze body, pale gold highlights"""
GOLD_STOPS: Stops = ((0.0, (0.22, 0.13, 0.0)), (0.40, (0.74, 0.53, 0.08)), (0.75, (0.96, 0.81, 0.30)),
                     (1.0, (1.0, 0.97, 0.80)))
"""brighter and yellower than bronze"""
SILVER_STOPS: Stops = ((0.0, (0.05, 0.05, 0.06)), (0.5, (0.56, 0.57, 0.59)), (1.0, (0.98, 0.98, 0.99)))
"""neutral, very slightly cool greys"""

_EDITS: dict[str, tuple[VocabularyEntry, Transform]] = {}


def _add(name: str, example: str, description: str, keywords: Sequence[str], transform: Transform,
         nouns: Sequence[str] = (), pointwise: bool = True) -> None:
    """Register one vocabulary entry."""
    _EDITS[name] = (VocabularyEntry(name, example, description, tuple(keywords), tuple(nouns), pointwise), transform)


STATUE = ("statue", "sculpture")
"""nouns of the materials ("a bronze statue")"""
PHOTO = ("photo", "photograph", "film")
"""nouns of the photographic looks ("a black and white photo")"""

for _tint_name, (_tint_rgb, _tint_words) in _COLOURS.items():
    _add(_tint_name, f"make it {_tint_name}", f"recolour everything {_tint_name}, keeping its light and shade",
         _tint_words, _tint(_tint_rgb))
_add("bronze statue", "make it look like a bronze statue", "cast bronze: dark brown shadows, warm highlights",
     ("bronze", "bronzed"), _material(BRONZE_STOPS, contrast=0.5), nouns=(*STATUE, "metal"))
_add("gold statue", "turn it into a gold statue", "polished gold: bright and yellow",
     ("gold", "golden", "gilded"), _material(GOLD_STOPS, contrast=0.4, gamma=0.8), nouns=(*STATUE, "metal", "solid"))
_add("marble statue", "make it a marble statue", "pale white stone with faint grey veins",
     ("marble", "marbled"), _marble, nouns=(*STATUE, "stone"))
_add("silver statue", "make it a silver statue", "polished silver: neutral greys, strong contrast",
     ("silver", "silvery", "chrome"), _material(SILVER_STOPS, contrast=1.0), nouns=(*STATUE, "metal"))
_add("black and white", "make it black and white", "a black-and-white photograph",
     ("black and white", "black & white", "b&w", "b & w", "bw", "grayscale", "greyscale", "gray scale",
      "grey scale", "monochrome", "desaturated", "colorless", "colourless"), _black_and_white, nouns=PHOTO)
_add("sepia", "make it look like an old sepia photo", "an old photograph in browns",
     ("sepia", "old photo", "old photograph", "vintage", "antique"), _sepia, nouns=(*PHOTO, "old", "print"))
_add("night", "make it night", "dark blue moonlight, little colour",
     ("night", "nighttime", "night time", "midnight", "moonlight", "moonlit"), _night, nouns=("time",))
_add("sunset", "make it sunset", "warm orange evening light",
     ("sunset", "sundown", "dusk", "golden hour", "evening"), _sunset, nouns=("time", "light", "lighting"))
_add("winter", "turn it into winter", "cold light, bright surfaces covered in snow",
     ("winter", "wintry", "wintery", "snow", "snowy", "snowing", "frost", "frosty"), _winter,
     nouns=("time", "day", "covered"))
_add("pencil sketch", "make it a pencil sketch", "grey pencil strokes along edges on paper",
     ("pencil", "sketch", "sketched", "drawing"), _pencil_sketch, nouns=("drawn", "art"), pointwise=False)
_add("cartoon", "make it look like a cartoon", "flat colours with dark ink outlines",
     ("cartoon", "cartoonish", "comic", "comic book", "toon", "cel shaded", "cel shading", "anime"), _cartoon,
     nouns=("art",), pointwise=False)


def vocabulary() -> tuple[VocabularyEntry, ...]:
    """Every edit the offline editor supports, in the order the GUI lists them."""
    return tuple(entry for entry, _ in _EDITS.values())


FILLER = frozenset((
    "please", "kindly", "now",  # asking
    "make", "turn", "paint", "colour", "color", "recolour", "recolor", "tint", "change", "convert", "transform",
    "render", "carve", "cast", "cover", "draw", "show", "set", "apply", "edit",  # verbs that apply a look
    "it", "it's", "its", "this", "everything", "him", "her", "them", "scene", "image", "picture", "view", "whole",
    "entire", "all",  # the whole scene
    "a", "an", "the", "to", "into", "in", "as", "like", "look", "looks", "looking", "at", "during", "of", "with",
    "if", "were", "was", "is", "be", "made", "by", "appear", "seem",  # links
    "style", "styled", "effect", "filter", "version", "tone", "toned", "colours", "colors", "coloured", "colored",
    "tinted", "hue", "theme", "mood",  # what a look is called
))
"""words an instruction may use besides one entry's keywords and nouns: they ask for a look for the whole
scene.  Anything else (an object, a negation, "remove", "add", "give") is outside the vocabulary."""
PHRASINGS = ("X", "make it X", "make it look like X", "turn it into X", "as if it were X", "in the style of X")
"""how instructions the offline editor understands read, X being an entry's name or keyword (with its
nouns and FILLER words also "make it a marble statue", "at night", "an old sepia photo")"""
RESOLVED_INSTRUCTIONS = 64
"""instructions whose vocabulary entry ``resolve`` remembers"""
_TOKEN = re.compile(r"[a-z0-9']+|&")


def _tokens(text: str) -> list[str]:
    """Lower-case words; '&' is a word of its own and an apostrophe stays inside its word ("don't")."""
    words = (w.strip("'") for w in _TOKEN.findall(text.lower().replace("\u2019", "'")))
    return [w for w in words if w]


_KEYWORDS = {tuple(_tokens(k)): name for name, (entry, _) in _EDITS.items() for k in entry.keywords}
"""every keyword as its words → the entry it selects"""


def match_phrases(words: list[str], phrases: dict[tuple[str, ...], str]) -> tuple[list[str], list[str]]:
    """What the phrases (word tuples → a name) found in ``words`` name, longest phrase first ("golden hour"
    before "gold"), each name once in order; and the words no phrase covered, in order."""
    longest = max(map(len, phrases))
    names, rest, i = [], [], 0
    while i < len(words):
        n = next((n for n in range(min(longest, len(words) - i), 0, -1) if tuple(words[i:i + n]) in phrases), 0)
        if n:
            names.append(phrases[tuple(words[i:i + n])])
            i += n
        else:
            rest.append(words[i])
            i += 1
    return list(dict.fromkeys(names)), rest


def _parse(text: str) -> tuple[list[str], list[str]]:
    """The entries an instruction names (longest keyword first: "golden hour" is sunset, not gold) and
    its words that are neither their keywords or nouns nor FILLER."""
    names, rest = match_phrases(_tokens(text), _KEYWORDS)
    allowed = FILLER.union(*(_EDITS[name][0].nouns for name in names))
    return names, [w for w in dict.fromkeys(rest) if w not in allowed]


def _unknown_message(instruction: str, unknown: list[str]) -> str:
    """The error text for an instruction outside the vocabulary: what is supported instead."""
    names = ", ".join(entry.name for entry in vocabulary())
    phrasings = ", ".join(f"'{p}'" for p in PHRASINGS[:-1]) + f" or '{PHRASINGS[-1]}'"
    beyond = f" (words beyond its vocabulary: {', '.join(unknown)})" if unknown else ""
    return (f"the offline editor does not understand {instruction!r}{beyond}. It applies one look to the whole "
            f"scene, one of: {names} (or a synonym such as crimson, b&w, snowy), phrased {phrasings} (e.g. "
            "'make it look like a bronze statue', 'at night'). Instructions about objects or parts, or that "
            "remove, add or negate something, need the InstructPix2Pix editor (--editor ip2p).")


@functools.lru_cache(maxsize=RESOLVED_INSTRUCTIONS)
def resolve(instruction: str) -> str:
    """The vocabulary entry an instruction names.

    The instruction must name exactly one entry (by its keywords, whole words, any case) and may
    otherwise hold only that entry's nouns and FILLER words, in any order.  Raises UserInputError
    for an empty instruction, one with any other word or naming no entry (the message lists the
    vocabulary and its PHRASINGS) and one naming several entries (one edit at a time).

    This is the offline editor's one check of an instruction: the editor registry's check (``EditConfig.validate``)
    and every edit (``apply_edit``) call it.  Answers are remembered, so an edit job's thousands of edits of
    one instruction read it once.
    """
    names, unknown = _parse(instruction or "")
    if len(names) == 1 and not unknown:  # naming an entry, it is not empty
        return names[0]
    text = check_instruction(instruction)  # an empty one gets the message every editor gives
    if unknown or not names:
        raise UserInputError(_unknown_message(text, unknown))
    both = " and ".join(sorted(names))
    raise UserInputError(f"the instruction {text!r} names several offline edits ({both}); "
                         "the offline editor applies one at a time")


def apply_edit(instruction: str, image: torch.Tensor) -> torch.Tensor:
    """E(image): the vocabulary edit an instruction names, applied to an (H, W, 3) image in [0, 1].

    This is the perfectly view-consistent edit, the ground truth 3D edits are scored against.
    """
    _, transform = _EDITS[resolve(instruction)]
    return transform(image.float()).clamp(0, 1)


def check_variation(variation: float) -> None:
    """Raise UserInputError unless ``variation`` (see OfflineEditor) lies in [0, 1]: the one check of it, made by
    the editor registry's check (``EditConfig.validate``) and by ``OfflineEditor`` itself."""
    if not 0.0 <= variation <= 1.0:
        raise UserInputError(f"the offline editor's variation must lie in [0, 1], got {variation}")


def edit_weight(t: float) -> float:
    """w(t): how much an edit at noise level t follows E(original) rather than the render.

    A smoothstep 3t² − 2t³: monotone, w(0) = 0, w(1) = 1, and flat at both ends like a diffusion
    editor, which barely changes a lightly noised render and at high noise follows the conditioning.
    """
    return t * t * (3 - 2 * t)


class OfflineEditor:
    """The ImageEditor of the vocabulary edits: out = (1 − w(t))·render + w(t)·E'(original).

    E' is ``apply_edit`` varied per call when ``variation`` > 0: from a torch.Generator seeded by
    ``seed``, the edit's strength is jittered by up to ±variation·MAX_STRENGTH_JITTER (moving along
    the line from the original through E(original)) and its hue rotated about the grey axis by up
    to ±variation·MAX_HUE_ROTATION.  Both draws are zero-mean, so the average of many seeds stays
    close to E(original) and a 3D field fitted to many views can consolidate them.  variation = 0 is
    deterministic and ignores the seed; at t = 1 it returns exactly E(original).

    How strong a variation is needed for edits to disagree: for two edits of one view with
    different seeds, the median PSNR between them (bronze statue, over seed pairs) is, on demo-scene
    views, 27.8 dB at variation 0.3, 23.5 dB at 0.5, 19.6 dB at 0.8 and 17.9 dB at 1.0; on in2n-face
    views (downscale 4) 24.7 dB at 0.5, 20.9 dB at 0.8 and 19.3 dB at 1.0.  SUGGESTED_VARIATION (0.8:
    ±24° hue, ±80 % strength) thus puts them ≥ 6 dB under the demo's 26 dB edit-fidelity bar and
    2 dB under the face's 23 dB one (variation 1.0 for ≥ 3 dB there), so single-view edits alone
    could not pass either, while the mean of 100 seeds still scores 34–36 dB against E(original)
    (what lets a field consolidate them).  Single pairs scatter widely around the median (seeds 1
    and 2 happen to draw alike: 28.7 dB on a face view), so measure disagreement over several pairs.
    At 0.8 the other entries range from 15 dB (night) to 26 dB (pink) on demo views; grey ones vary
    least (silver 27 dB, black and white 29 dB): hue rotation leaves grey unchanged, so only their
    strength varies.
    ``guidance`` is accepted and ignored (the vocabulary edits have fixed strength); the edit is
    instant, so ``cancel`` is never checked and ``on_step`` hears of its one step.
    """

    name = "offline"
    adds_matter = False  # colour maps of what is visible

    def __init__(self, variation: float = 0.0) -> None:
        check_variation(variation)
        self.variation = variation

    def edit(self, render: torch.Tensor, original: torch.Tensor, instruction: str, t: float, seed: int,
             guidance: Guidance | None = None, cancel: CancelToken | None = None,
             on_step: StepCallback | None = None) -> torch.Tensor:
        """The edited view, same shape as ``render``, float32 in [0, 1]."""
        check_edit_inputs(render, original, t)
        original = original.float()
        target = apply_edit(instruction, original)
        if self.variation > 0:
            g = torch.Generator().manual_seed(seed)
            hue, strength = (torch.rand(2, generator=g) * 2 - 1).tolist()
            target = torch.lerp(original, target, 1 + self.variation * MAX_STRENGTH_JITTER * strength)
            target = (target @ _hue_rotation(self.variation * MAX_HUE_ROTATION * hue).T).clamp(0, 1)
        edited = torch.lerp(render.float(), target, edit_weight(t)).clamp(0, 1)
        if on_step is not None:
            on_step(EditStep(1, 1, lambda: edited))
        return edited

"""Editing a portrait photo with 3DPE, on either path, as the CLI (``python main.py portrait edit``) and the
Portrait tab run it: the photo aligned (engine.portrait.alignment), its edited triplanes for a text prompt or a
reference image, blended with the plain reconstruction's by ``strength``, then rendered from the input view
and novel views, as an orbit video and as a mesh.

* ``embedded``: the distilled editor (engine.portrait.distill) on a 128² input, rendered through the prior's
  decoder at 128² (no super-resolution: its styles come from a latent the encoder does not have).
* a ``3dpe.pt`` path: the official network (engine.portrait.threedpe) at 512².  It takes image prompts only;
  a text prompt becomes one the way 3DPE made its references: InstructPix2Pix (the scene editor's loader,
  ``ip2p_model``) edits the input photo with the instruction and that edit is the reference.  Its plain
  reconstruction is the network given the input itself as the reference.
Meshes: marching cubes on the decoder's density over the rendering box, vertex colours from the decoder.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from engine.core.errors import UserInputError
from engine.core.imaging import to_uint8, write_png
from engine.core.jobs import Artifact, CancelToken, JobWarning, Preview, Progress
from engine.core.meshes import Mesh, write_mesh
from engine.portrait.cameras import camera_labels
from engine.portrait.triplane import OSGDecoder, sample_planes, softplus, texel_major

MESH_RESOLUTION = 128
MESH_DENSITY = 5.0
"""the iso-level of the density (softplus(σ − 1)) a mesh's surface follows"""
ORBIT_FRAMES = 48
ORBIT_YAW = 30.0


@dataclass(kw_only=True)
class EditSettings:
    """The edit asked for and the network making it (a photo's edit and a video's share them)."""

    prompt: str | None = None
    """a text prompt ("make her a bronze statue")"""
    reference: str | None = None
    """or a reference image of the edit"""
    model: str = "embedded"
    """"embedded" (offline, CPU) or the path of the official 3dpe.pt"""
    editor: str | None = None
    """the embedded editor's folder (default: yours from adaptation if any, else the shipped one)"""
    strength: float = 1.0
    """0 = the plain reconstruction, 1 = the edit (the triplanes are blended)"""
    ip2p_model: str = "timbrooks/instruct-pix2pix"
    """official path, text prompts: the InstructPix2Pix weights (a local folder, or a hub id already downloaded)"""
    device: str = "auto"
    """official path: "auto" (CUDA when present), "cpu" or "cuda"""

    def validate(self) -> None:
        """Refuse what cannot run, before anything is loaded or written."""
        if (self.prompt is None) == (self.reference is None):
            raise UserInputError("give either --prompt TEXT or --reference IMAGE")
        if not 0.0 <= self.strength <= 1.0:
            raise UserInputError(f"--strength must lie in [0, 1] (got {self.strength})")


@dataclass(kw_only=True)
class PortraitEditRequest(EditSettings):
    """One edit of one photo."""

    image: str
    """the photo (an EG3D-aligned 512² crop is used as is; any other photo is aligned from its landmarks)"""
    out: str
    """folder for the results"""
    landmarks: str | None = None
    """five landmarks of the photo (default: detections/NAME.txt beside it, else the built-in detector)"""
    views: int = 4
    """novel views written, spread over yaw ±30°"""
    video: bool = False
    """also write an orbit video (orbit.mp4)"""
    orbit_frames: int = ORBIT_FRAMES
    """frames of the orbit video (24 a second: the default is a two-second swing)"""
    mesh: bool = False
    """also write the edited head as a mesh (mesh.ply and mesh.glb, vertex colours)"""

    def validate(self) -> None:
        super().validate()
        if not 0 <= self.views <= 64:
            raise UserInputError(f"--views must be between 0 and 64 (got {self.views})")
        if not 2 <= self.orbit_frames <= 1200:
            raise UserInputError(f"--orbit-frames must be between 2 and 1200 (got {self.orbit_frames})")


class EditEngine:
    """What an edit needs of a 3DPE network: planes for a prompt, the reconstruction, renders, the decoder."""

    size: int
    decoder: OSGDecoder
    box_warp: float

    def prompt(self, photo: np.ndarray, request: PortraitEditRequest) -> object:
        """What the network takes as the edit of ``request`` (prompt tokens, a reference image): made once, so a
        video's frames all get the same edit."""
        raise NotImplementedError

    def encode(self, photo: np.ndarray, prompt: object) -> tuple[torch.Tensor, torch.Tensor]:
        """(edited planes, reconstruction planes) of an aligned 512² photo (uint8) under a ``prompt``."""
        raise NotImplementedError

    def planes(self, photo: np.ndarray, request: PortraitEditRequest) -> tuple[torch.Tensor, torch.Tensor]:
        """(edited planes, reconstruction planes) of an aligned 512² photo (uint8) for ``request``'s edit."""
        return self.encode(photo, self.prompt(photo, request))

    def render(self, planes: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """Images (N, 3, size, size) in [0, 1] of planes (1, ...) from cameras c (N, 25)."""
        raise NotImplementedError


def _tensor(image: np.ndarray, size: int) -> torch.Tensor:
    x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float().div(255)[None]
    if x.shape[-1] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return x


class EmbeddedEngine(EditEngine):
    """The distilled embedded editor and the prior's renderer."""

    def __init__(self, editor_dir: str | None = None) -> None:
        from engine.portrait.distill import load_editor
        from engine.portrait.live3d import INPUT_SIZE
        from engine.portrait.prior import load_prior

        self.editor = load_editor(editor_dir)
        self.prior = load_prior()
        self.size, self.decoder = INPUT_SIZE, self.prior.decoder
        self.box_warp = float(self.prior.rendering_kwargs["box_warp"])

    def prompt(self, photo: np.ndarray, request: PortraitEditRequest) -> torch.Tensor:
        with torch.no_grad():
            if request.prompt is not None:
                return self.editor.tokens(prompt=request.prompt)
            return self.editor.tokens(reference=_tensor(_read(request.reference), self.size))

    def encode(self, photo: np.ndarray, prompt: object) -> tuple[torch.Tensor, torch.Tensor]:
        return self.editor.edit_and_reconstruct(_tensor(photo, self.size) * 2 - 1, prompt)

    def render(self, planes: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        from engine.portrait.live3d import render_planes

        with torch.no_grad():
            return render_planes(self.prior, planes.expand(len(c), -1, -1, -1), c, self.size)["rgb"]


class OfficialEngine(EditEngine):
    """The official 3DPE network from a 3dpe.pt file."""

    def __init__(self, path: str, device: str = "auto") -> None:
        from engine.portrait.threedpe import INPUT_RESOLUTION, RENDERING_KWARGS, ThreeDPE

        self.device = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else
                                   ("cpu" if device == "auto" else device))
        self.net = ThreeDPE.load(path).to(self.device)
        self.size, self.decoder = INPUT_RESOLUTION, self.net.renderer.decoder
        self.box_warp = float(RENDERING_KWARGS["box_warp"])
        self.notes: list[str] = []

    def prompt(self, photo: np.ndarray, request: PortraitEditRequest) -> torch.Tensor:
        from engine.portrait.threedpe import reference_tensor

        if request.reference is not None:
            return reference_tensor(_tensor(_read(request.reference), self.size).to(self.device))
        return reference_tensor(self._instructed(_tensor(photo, self.size).to(self.device), request))

    def encode(self, photo: np.ndarray, prompt: object) -> tuple[torch.Tensor, torch.Tensor]:
        from engine.portrait.threedpe import reference_tensor

        x = _tensor(photo, self.size).to(self.device)
        with torch.no_grad():
            return self.net.encode(x * 2 - 1, prompt), self.net.encode(x * 2 - 1, reference_tensor(x))

    def _instructed(self, x: torch.Tensor, request: PortraitEditRequest) -> torch.Tensor:
        """The reference for a text prompt: InstructPix2Pix's edit of the input photo."""
        from engine.editors import editor_entry
        from engine.editors.base import edit_image

        settings = _Ip2pSettings(request.prompt, request.ip2p_model, str(self.device))
        entry = editor_entry("ip2p")
        entry.check(settings)
        self.notes.append("the official 3DPE takes image prompts: InstructPix2Pix edited the photo with the "
                          "prompt and that edit is the reference")
        edited = edit_image(entry.build(settings), x[0].permute(1, 2, 0).cpu(), request.prompt)
        return edited.permute(2, 0, 1)[None].to(self.device)

    def render(self, planes: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        frames = [self.net.render(planes, c[k:k + 1].to(self.device))["image"] for k in range(len(c))]
        return ((torch.cat(frames) + 1) / 2).clamp(0, 1).cpu()


@dataclass
class _Ip2pSettings:
    """What the InstructPix2Pix editor's registry entry reads."""

    instruction: str
    model: str
    device: str
    model_config: str | None = None
    memory: str = "default"
    precision: str = "auto"
    variation: float = 0.0


def _read(path: str) -> np.ndarray:
    from engine.portrait.alignment import read_photo

    return read_photo(path).image


def make_engine(request: PortraitEditRequest) -> EditEngine:
    """The network ``request.model`` names, loaded."""
    if request.model == "embedded":
        return EmbeddedEngine(request.editor)
    if not Path(request.model).is_file():
        raise UserInputError(f"--model must be 'embedded' or the path of the official 3dpe.pt; {request.model} "
                             f"is not a file")
    return OfficialEngine(request.model, request.device)


def blend(edited: torch.Tensor, plain: torch.Tensor, strength: float) -> torch.Tensor:
    """Triplanes ``strength`` of the way from the reconstruction to the edit."""
    return torch.lerp(plain, edited, strength)


def novel_yaws(count: int) -> list[float]:
    """``count`` yaws spread over ±ORBIT_YAW (the input view, 0, not among them when count is even)."""
    if count == 1:
        return [ORBIT_YAW]
    return [float(yaw) for yaw in np.linspace(-ORBIT_YAW, ORBIT_YAW, count)]


class EditSession:
    """One photo being edited, as the Portrait tab holds it: the edited and plain triplanes of the latest prompt,
    re-rendered at any strength and view without editing again."""

    def __init__(self, engine: EditEngine, aligned: np.ndarray) -> None:
        """``aligned``: the 512² aligned photo (uint8, H x W x 3)."""
        self.engine, self.aligned = engine, aligned
        self.edited: torch.Tensor | None = None
        self.plain: torch.Tensor | None = None

    def apply(self, request: PortraitEditRequest) -> None:
        """Edit for ``request``'s prompt or reference (its image and out fields are not used)."""
        if (request.prompt is None) == (request.reference is None):
            raise UserInputError("give a prompt or a reference image")
        if request.prompt is not None and isinstance(self.engine, EmbeddedEngine):
            self.engine.editor.prompts.resolve(request.prompt)
        self.edited, self.plain = self.engine.planes(self.aligned, request)

    def render(self, strength: float = 1.0, yaw: float = 0.0, pitch: float = 0.0) -> np.ndarray:
        """The edit at ``strength`` seen from (yaw, pitch) degrees, uint8 (size x size x 3)."""
        if self.edited is None:
            raise RuntimeError("apply an edit first")
        planes = blend(self.edited, self.plain, strength)
        return to_uint8(self.engine.render(planes, torch.from_numpy(camera_labels(yaw, pitch)))[0].permute(1, 2, 0))


def triplane_mesh(planes: torch.Tensor, decoder: OSGDecoder, box_warp: float,
                  resolution: int = MESH_RESOLUTION, level: float = MESH_DENSITY) -> Mesh:
    """Marching cubes on the decoder's density over the rendering box; vertex colours from the decoder."""
    from skimage.measure import marching_cubes

    half = box_warp / 2
    axis = torch.linspace(-half, half, resolution)
    grid = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), -1).reshape(1, -1, 3)
    planes = texel_major(planes[:1])
    with torch.no_grad():
        density = torch.cat([softplus(decoder(sample_planes(planes, part, box_warp))["sigma"] - 1)
                             for part in grid.split(1 << 16, dim=1)], 1).reshape(resolution, resolution, resolution)
    low, high = float(density.min()), float(density.max())
    if not low < level < high:
        raise UserInputError(f"no surface at density {level:g}: the head's density ranges from {low:.3g} to {high:.3g}")
    spacing = box_warp / (resolution - 1)
    vertices, faces, _, _ = marching_cubes(density.numpy(), level, spacing=(spacing,) * 3)
    vertices = vertices - half
    with torch.no_grad():
        rgb = decoder(sample_planes(planes, torch.from_numpy(vertices).float()[None], box_warp))["rgb"][0, :, :3]
    return Mesh(vertices.astype(np.float64), np.ascontiguousarray(faces[:, ::-1], dtype=np.int64),
                to_uint8(rgb.clamp(0, 1)))


def portrait_edit_job(request: PortraitEditRequest, cancel: CancelToken,
                      engine: EditEngine | None = None) -> Iterator:
    """Edit one photo and write the results into ``request.out``: aligned.png, edited.png (the input view),
    view_*.png, and on request orbit.mp4 and mesh.ply / mesh.glb.  Yields job events."""
    from engine.core.imaging import write_frames
    from engine.portrait.alignment import portrait_input

    request.validate()
    aligned = portrait_input(request.image, request.landmarks)
    for note in aligned.notes:
        yield JobWarning(note)
    yield Progress(0, None, "loading the 3DPE network")
    engine = engine or make_engine(request)
    if request.prompt is not None and isinstance(engine, EmbeddedEngine):
        engine.editor.prompts.resolve(request.prompt)  # a word outside the vocabulary: say so before any work
    out = Path(request.out)
    out.mkdir(parents=True, exist_ok=True)
    yield Artifact(write_png(out / "aligned.png", aligned.image), "aligned input")
    yield Progress(0, None, "editing")
    edited, plain = engine.planes(aligned.image, request)
    planes = blend(edited, plain, request.strength)
    for note in getattr(engine, "notes", []):
        yield JobWarning(note)
    front = engine.render(planes, torch.from_numpy(camera_labels(0.0, 0.0)))[0]
    yield Preview(0, to_uint8(front.permute(1, 2, 0)), {"layout": "edited"})
    yield Artifact(write_png(out / "edited.png", front), "edited image")
    for k, yaw in enumerate(novel_yaws(request.views)):
        if cancel.cancelled:
            return
        view = engine.render(planes, torch.from_numpy(camera_labels(yaw, 0.0)))[0]
        yield Artifact(write_png(out / f"view_{k:02d}_yaw{yaw:+.0f}.png", view), "novel view")
    if request.video and not cancel.cancelled:
        yaws = ORBIT_YAW * np.sin(np.linspace(0, 2 * math.pi, request.orbit_frames, endpoint=False))
        frames = (to_uint8(engine.render(planes, torch.from_numpy(camera_labels(y, 0.0)))[0].permute(1, 2, 0))
                  for y in yaws)
        yield Artifact(write_frames(frames, out / "orbit.mp4", fps=24), "video")
    if request.mesh and not cancel.cancelled:
        mesh = triplane_mesh(planes.cpu(), engine.decoder.cpu(), engine.box_warp)
        for name in ("mesh.ply", "mesh.glb"):
            yield Artifact(write_mesh(mesh, out / name), "mesh")

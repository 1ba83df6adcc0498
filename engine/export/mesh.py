"""Triangle meshes of a trained field: marching cubes on its density inside the scene box.

The density is sampled on a regular grid over [-1, 1]^3 of the normalised world (the object box
of bounded scenes, the uncontracted foreground cube of unbounded ones), masked by the model's
occupancy grid so the mesh holds what renders (floaters the renderer skips are left out), and
its iso-surface is extracted with scikit-image. Each vertex is coloured by the field as seen
looking straight at it (along the inward normal). Vertices are written in the capture frame as
GLB (binary glTF 2.0), PLY or OBJ, chosen by the file suffix; triangles wind counter-clockwise
seen from outside.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from engine.core.config import INTERNAL
from engine.core.errors import UserInputError
from engine.core.imaging import to_uint8
from engine.core.jobs import Artifact, CancelToken, Job, JobWarning, Progress
from engine.core.meshes import MESH_SUFFIXES, Mesh, write_mesh
from engine.export.cameras import to_capture
from engine.scene.datasets import SceneDataset
from engine.scene.encodings import to_unit_cube


@dataclass
class MeshConfig:
    """Grid resolution and iso-level of the extracted surface."""

    resolution: int = 256
    """density samples per side of the scene box (cost grows with its cube)"""
    threshold: float = 5.0
    """density (per normalised scene unit) at the surface. Low on purpose: fields trained briefly on a
    CPU peak at a few tens, and the occupancy mask already removes haze below density 1; raise it
    (20-50) for crisper surfaces of well-trained fields"""
    chunk: int = field(default=1 << 18, metadata=INTERNAL)
    """points per field evaluation"""

    def validate(self) -> None:
        if not 8 <= self.resolution <= 1024:
            raise UserInputError(f"--resolution must be between 8 and 1024 (got {self.resolution})")
        if not self.threshold > 0:
            raise UserInputError(f"--threshold must be a positive density (got {self.threshold})")


def _occupied(model, points: torch.Tensor) -> torch.Tensor:
    """Whether the model's occupancy grid lets rays sample at ``points`` (all True without a grid)."""
    grid = getattr(model, "occupancy", None)
    if grid is None:
        return torch.ones(len(points), dtype=torch.bool)
    r = grid.cfg.occupancy_resolution
    cell = (to_unit_cube(points, grid.contracted) * r).long().clamp(0, r - 1)
    return grid.occupied[cell[:, 0], cell[:, 1], cell[:, 2]].bool()


def _colours(model, vertices: torch.Tensor, normals: torch.Tensor, chunk: int) -> np.ndarray:
    """The field's colour at each vertex seen along its inward normal, uint8 sRGB."""
    parts = []
    for start in range(0, len(vertices), chunk):
        _, geo = model.field.geometry(vertices[start:start + chunk])
        parts.append(model.field.colour(geo, -normals[start:start + chunk], None))
    rgb = torch.cat(parts) if parts else torch.zeros(0, 3)
    return to_uint8(rgb)


def extract_mesh(model, dataset: SceneDataset, cfg: MeshConfig, cancel: CancelToken | None = None):
    """Generator: yields Progress while sampling the density, then returns the ``Mesh``
    (``None`` when cancelled); drive it with ``yield from``."""
    from skimage.measure import marching_cubes

    n = cfg.resolution
    axis = torch.linspace(-1, 1, n)
    density = np.empty((n, n, n), dtype=np.float32)
    rows_per_chunk = max(1, cfg.chunk // (n * n))
    with torch.inference_mode():
        for x0 in range(0, n, rows_per_chunk):
            if cancel is not None and cancel.cancelled:
                return None
            xs = axis[x0:x0 + rows_per_chunk]
            pts = torch.stack(torch.meshgrid(xs, axis, axis, indexing="ij"), -1).reshape(-1, 3)
            sigma = model.field.density(pts) * _occupied(model, pts)
            density[x0:x0 + len(xs)] = sigma.reshape(len(xs), n, n).numpy()
            yield Progress(x0 + len(xs), n, "sampling density")
        low, high = float(density.min()), float(density.max())
        if not low < cfg.threshold < high:
            raise UserInputError(f"no surface at density {cfg.threshold:g}: the field's density in the scene box "
                                 f"ranges from {low:.3g} to {high:.3g}; pass a --threshold inside that range")
        if cancel is not None and cancel.cancelled:
            return None
        spacing = 2 / (n - 1)
        verts, faces, normals, _ = marching_cubes(density, cfg.threshold, spacing=(spacing,) * 3)
        # scikit-image winds triangles clockwise seen from the denser side's outside; glTF and most
        # viewers want counter-clockwise front faces. Its normals point outward (down the density).
        faces = np.ascontiguousarray(faces[:, ::-1], dtype=np.int64)
        verts = torch.from_numpy(verts - 1).float()
        colours = _colours(model, verts, torch.from_numpy(np.ascontiguousarray(normals)).float(), cfg.chunk)
    return Mesh(to_capture(verts.numpy(), dataset), faces, colours)


def mesh_job(model, dataset: SceneDataset, out: str | Path, cfg: MeshConfig | None = None,
             cancel: CancelToken | None = None) -> Job:
    """Job: extract the field's surface and write it to ``out`` (.glb, .ply or .obj)."""
    cfg = cfg or MeshConfig()
    cfg.validate()
    if Path(out).suffix.lower() not in MESH_SUFFIXES:
        raise UserInputError(f"{out}: write meshes as {', '.join(MESH_SUFFIXES)}")
    mesh = yield from extract_mesh(model, dataset, cfg, cancel)
    if mesh is None:
        yield JobWarning("mesh export cancelled; nothing written")
        return
    yield Progress(cfg.resolution, cfg.resolution, f"{len(mesh.vertices)} vertices, {len(mesh.faces)} triangles")
    yield Artifact(write_mesh(mesh, out), "mesh")

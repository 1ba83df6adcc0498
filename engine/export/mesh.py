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

import json
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from engine.core.config import INTERNAL
from engine.core.errors import UserInputError
from engine.core.imaging import to_uint8
from engine.core.jobs import Artifact, CancelToken, Job, JobWarning, Progress
from engine.core.project import atomic_write
from engine.export.cameras import to_capture
from engine.export.pointcloud import write_ply
from engine.scene.datasets import SceneDataset
from engine.scene.encodings import to_unit_cube

MESH_SUFFIXES = (".glb", ".ply", ".obj")


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


@dataclass
class Mesh:
    """Triangles in the capture frame: vertices (V, 3) float64, faces (F, 3) int64 counter-clockwise
    from outside, colours (V, 3) uint8 sRGB."""

    vertices: np.ndarray
    faces: np.ndarray
    colours: np.ndarray


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


def _srgb_to_linear(c: np.ndarray) -> np.ndarray:
    """sRGB values in [0, 1] to linear light (glTF vertex colours are linear)."""
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


def glb_bytes(mesh: Mesh) -> bytes:
    """A binary glTF 2.0 file with one triangle primitive: POSITION (float32), COLOR_0 (float32 linear RGB)
    and UNSIGNED_INT indices, every buffer view 4-byte aligned."""
    positions = mesh.vertices.astype("<f4")
    colours = _srgb_to_linear(mesh.colours.astype(np.float64) / 255).astype("<f4")
    indices = mesh.faces.astype("<u4")
    blobs = [positions.tobytes(), colours.tobytes(), indices.tobytes()]  # each a multiple of 4 bytes long
    offsets = np.cumsum([0] + [len(b) for b in blobs])
    array_buffer, element_array_buffer = 34962, 34963
    float_type, uint_type = 5126, 5125
    gltf = {
        "asset": {"version": "2.0", "generator": "Retouch3D"},
        "scene": 0, "scenes": [{"nodes": [0]}], "nodes": [{"mesh": 0}],
        "meshes": [{"primitives": [{"attributes": {"POSITION": 0, "COLOR_0": 1}, "indices": 2, "mode": 4}]}],
        "buffers": [{"byteLength": int(offsets[-1])}],
        "bufferViews": [{"buffer": 0, "byteOffset": int(offsets[k]), "byteLength": len(blobs[k]), "target": target}
                        for k, target in enumerate((array_buffer, array_buffer, element_array_buffer))],
        "accessors": [
            {"bufferView": 0, "componentType": float_type, "count": len(positions), "type": "VEC3",
             "min": positions.min(0).tolist() if len(positions) else [0, 0, 0],
             "max": positions.max(0).tolist() if len(positions) else [0, 0, 0]},
            {"bufferView": 1, "componentType": float_type, "count": len(colours), "type": "VEC3"},
            {"bufferView": 2, "componentType": uint_type, "count": indices.size, "type": "SCALAR"},
        ],
    }
    json_chunk = json.dumps(gltf, separators=(",", ":")).encode("utf-8")
    json_chunk += b" " * (-len(json_chunk) % 4)  # the JSON chunk is padded with spaces
    bin_chunk = b"".join(blobs)
    bin_chunk += b"\0" * (-len(bin_chunk) % 4)
    total = 12 + 8 + len(json_chunk) + 8 + len(bin_chunk)
    return (struct.pack("<III", 0x46546C67, 2, total)  # magic "glTF", version 2, file length
            + struct.pack("<II", len(json_chunk), 0x4E4F534A) + json_chunk  # chunk type "JSON"
            + struct.pack("<II", len(bin_chunk), 0x004E4942) + bin_chunk)  # chunk type "BIN\0"


def obj_text(mesh: Mesh) -> str:
    """Wavefront OBJ with per-vertex colours ('v x y z r g b', r g b in [0, 1]) and 1-based faces."""
    rgb = mesh.colours / 255
    lines = ["# written by Retouch3D: vertex colours as 'v x y z r g b'"]
    lines += [f"v {x:.6g} {y:.6g} {z:.6g} {r:.4g} {g:.4g} {b:.4g}"
              for (x, y, z), (r, g, b) in zip(mesh.vertices, rgb)]
    lines += [f"f {a} {b} {c}" for a, b, c in mesh.faces + 1]
    return "\n".join(lines) + "\n"


def write_mesh(mesh: Mesh, out: str | Path) -> Path:
    """Atomically write ``mesh`` as GLB, PLY or OBJ according to the suffix of ``out``."""
    out = Path(out)
    suffix = out.suffix.lower()
    if suffix == ".glb":
        data = glb_bytes(mesh)
        return atomic_write(out, lambda tmp: tmp.write_bytes(data))
    if suffix == ".ply":
        return write_ply(out, mesh.vertices, mesh.colours, mesh.faces)
    if suffix == ".obj":
        text = obj_text(mesh)
        return atomic_write(out, lambda tmp: tmp.write_text(text))
    raise UserInputError(f"{out}: write meshes as {', '.join(MESH_SUFFIXES)}")


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

"""Triangle meshes and their files: GLB (binary glTF 2.0), PLY (binary, with vertex colours) and OBJ, chosen by
the file suffix; written atomically.  Used by the scene exports and the portrait editor."""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.core.errors import UserInputError
from engine.core.project import atomic_write

MESH_SUFFIXES = (".glb", ".ply", ".obj")


@dataclass
class Mesh:
    """Triangles in the capture frame: vertices (V, 3) float64, faces (F, 3) int64 counter-clockwise
    from outside, colours (V, 3) uint8 sRGB."""

    vertices: np.ndarray
    faces: np.ndarray
    colours: np.ndarray


def write_ply(path: str | Path, points: np.ndarray, colours: np.ndarray, faces: np.ndarray | None = None,
              labels: dict[str, np.ndarray] | None = None) -> Path:
    """Atomically write a binary little-endian PLY: float x y z, uchar red green blue per vertex (then one uchar
    property per entry of ``labels``, e.g. a semantic class), and triangles (uchar count, int indices) when
    ``faces`` (M, 3) is given."""
    labels = labels or {}
    vertex = np.empty(len(points), dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("red", "u1"), ("green", "u1"),
                                          ("blue", "u1"), *((name, "u1") for name in labels)])
    for k, axis in enumerate("xyz"):
        vertex[axis] = points[:, k]
    for k, channel in enumerate(("red", "green", "blue")):
        vertex[channel] = colours[:, k]
    for name, values in labels.items():
        vertex[name] = values
    header = ["ply", "format binary_little_endian 1.0", "comment written by Retouch3D",
              f"element vertex {len(points)}", "property float x", "property float y", "property float z",
              "property uchar red", "property uchar green", "property uchar blue",
              *(f"property uchar {name}" for name in labels)]
    body = [vertex.tobytes()]
    if faces is not None:
        face = np.empty(len(faces), dtype=[("n", "u1"), ("v", "<i4", (3,))])
        face["n"] = 3
        face["v"] = faces
        header += [f"element face {len(faces)}", "property list uchar int vertex_indices"]
        body.append(face.tobytes())
    data = ("\n".join(header + ["end_header"]) + "\n").encode("ascii") + b"".join(body)
    return atomic_write(Path(path), lambda tmp: tmp.write_bytes(data))


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

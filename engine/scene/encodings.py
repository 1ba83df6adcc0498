"""Input encodings shared by the radiance fields: scene contraction, multi-resolution hash grid,
spherical-harmonics direction encoding."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from engine.scene import native

_PRIMES = (1, 2654435761, 805459861)  # Instant-NGP's spatial hash
_CORNERS = torch.tensor([[c & 1, (c >> 1) & 1, (c >> 2) & 1] for c in range(8)], dtype=torch.long)


def contract(x: torch.Tensor) -> torch.Tensor:
    """mip-NeRF 360 / nerfacto scene contraction with the L-infinity norm: [-1,1]^3 stays, the rest
    of space folds into [-2,2]^3."""
    mag = x.abs().amax(dim=-1, keepdim=True)
    scale = torch.where(mag > 1, (2 - 1 / mag.clamp_min(1)) / mag.clamp_min(1), torch.ones_like(mag))
    return x * scale


def to_unit_cube(x: torch.Tensor, contracted: bool) -> torch.Tensor:
    """World points to [0,1]^3 coordinates of the field's grids (contracted space or the [-1,1] box)."""
    return (contract(x) + 2) / 4 if contracted else (x + 1) / 2


@dataclass
class HashGridConfig:
    """Multi-resolution hash encoding (Instant-NGP; nerfacto's defaults)."""

    levels: int = 16
    """number of resolution levels"""
    features_per_level: int = 2
    """features stored per table entry"""
    log2_table_size: int = 19
    """entries per level: 2**log2_table_size (coarse levels are dense and use fewer)"""
    base_resolution: int = 16
    """grid resolution of the coarsest level"""
    max_resolution: int = 2048
    """grid resolution of the finest level"""
    init_scale: float = 1e-4
    """table values start uniform in +-init_scale"""


class _NativeHashEncode(torch.autograd.Function):
    @staticmethod
    def forward(ctx, points, table, grid, features):  # noqa: D102 - autograd plumbing
        if features is not None:
            out = features
        else:
            lib = native.load_kernels()
            n = points.shape[0]
            out = torch.empty(n, grid.cfg.levels * grid.cfg.features_per_level, dtype=torch.float32)
            lib.hash_encode_forward(native.ptr(points), n, native.ptr(table), grid.cfg.features_per_level,
                                    grid.cfg.levels, native.ptr(grid.offsets), native.ptr(grid.sizes),
                                    native.ptr(grid.scales), native.ptr(out))
        ctx.save_for_backward(points)
        ctx.grid = grid
        ctx.table_shape = table.shape
        return out

    @staticmethod
    def backward(ctx, grad_out):  # noqa: D102
        (points,) = ctx.saved_tensors
        grid = ctx.grid
        lib = native.load_kernels()
        grad_table = torch.empty(ctx.table_shape, dtype=torch.float32)  # the kernel clears it
        lib.hash_encode_backward(native.ptr(points), points.shape[0], native.ptr(grad_out.contiguous()),
                                 grid.cfg.features_per_level, grid.cfg.levels, native.ptr(grid.offsets),
                                 native.ptr(grid.sizes), native.ptr(grid.scales), native.ptr(grad_table))
        return None, grad_table, None, None


class HashGrid(nn.Module):
    """Multi-resolution hash-grid encoding of points in [0,1]^3 → (N, levels * features).

    On CPU with the compiled kernels available it runs the C kernel; elsewhere (CUDA, no
    compiler) the torch implementation, which is the reference both must match.
    """

    def __init__(self, cfg: HashGridConfig = HashGridConfig()) -> None:
        super().__init__()
        self.cfg = cfg
        growth = math.exp((math.log(cfg.max_resolution) - math.log(cfg.base_resolution)) / max(cfg.levels - 1, 1))
        scales, sizes = [], []
        for level in range(cfg.levels):
            scale = float(np.float32(cfg.base_resolution * growth**level - 1))
            side = int(scale) + 2
            sizes.append(min(side**3, 2**cfg.log2_table_size))
            scales.append(scale)
        self.register_buffer("scales", torch.tensor(scales, dtype=torch.float32), persistent=False)
        self.register_buffer("sizes", torch.tensor(sizes, dtype=torch.long), persistent=False)
        self.register_buffer("offsets", torch.tensor([0] + list(np.cumsum(sizes)[:-1]), dtype=torch.long),
                             persistent=False)
        table = (torch.rand(int(sum(sizes)), cfg.features_per_level) * 2 - 1) * cfg.init_scale
        self.table = nn.Parameter(table)
        self.use_native = True

    @property
    def output_dim(self) -> int:
        return self.cfg.levels * self.cfg.features_per_level

    def forward(self, points: torch.Tensor, features: torch.Tensor | None = None) -> torch.Tensor:
        """Features of ``points``; ``features``, when given, is this encoding already computed
        without gradients, which the compiled path reuses (only the backward then runs)."""
        if (self.use_native and points.device.type == "cpu" and points.dtype == torch.float32
                and native.load_kernels() is not None):
            return _NativeHashEncode.apply(points.contiguous(), self.table, self, features)
        return self.forward_torch(points)

    def forward_torch(self, points: torch.Tensor) -> torch.Tensor:
        """Reference implementation in torch (any device, autograd through the table)."""
        corners = _CORNERS.to(points.device)
        idx_all, w_all = [], []
        for level in range(self.cfg.levels):
            scale = self.scales[level]
            size = int(self.sizes[level])
            side = int(scale) + 2
            pos = points * scale
            base = pos.floor()
            frac = pos - base
            ijk = base.long()[:, None, :] + corners[None]  # (N, 8, 3)
            if side**3 <= size:
                lin = (ijk[..., 2] * side + ijk[..., 1]) * side + ijk[..., 0]
            else:
                h = (ijk[..., 0] * _PRIMES[0]) & 0xFFFFFFFF
                h = h ^ ((ijk[..., 1] * _PRIMES[1]) & 0xFFFFFFFF)
                h = h ^ ((ijk[..., 2] * _PRIMES[2]) & 0xFFFFFFFF)
                lin = h % size
            w = torch.where(corners[None].bool(), frac[:, None, :], 1 - frac[:, None, :]).prod(-1)
            idx_all.append(lin + self.offsets[level])
            w_all.append(w)
        idx = torch.stack(idx_all, 1)  # (N, L, 8)
        w = torch.stack(w_all, 1)
        feats = self.table[idx]  # (N, L, 8, F)
        return (feats * w[..., None]).sum(2).reshape(points.shape[0], -1)


def sh_encode(dirs: torch.Tensor, degree: int = 4) -> torch.Tensor:
    """Real spherical-harmonics basis of unit directions, degree 1..4 → degree**2 values."""
    x, y, z = dirs.unbind(-1)
    out = [torch.full_like(x, 0.28209479177387814)]
    if degree > 1:
        out += [-0.48860251190291987 * y, 0.48860251190291987 * z, -0.48860251190291987 * x]
    if degree > 2:
        xx, yy, zz, xy, yz, xz = x * x, y * y, z * z, x * y, y * z, x * z
        out += [1.0925484305920792 * xy, -1.0925484305920792 * yz, 0.94617469575755997 * zz - 0.31539156525251999,
                -1.0925484305920792 * xz, 0.54627421529603959 * (xx - yy)]
    if degree > 3:
        out += [0.59004358992664352 * y * (-3 * xx + yy), 2.8906114426405538 * xy * z,
                0.45704579946446572 * y * (1 - 5 * zz), 0.3731763325901154 * z * (5 * zz - 3),
                0.45704579946446572 * x * (1 - 5 * zz), 1.4453057213202769 * z * (xx - yy),
                0.59004358992664352 * x * (-xx + 3 * yy)]
    return torch.stack(out, -1)

"""Occupancy-guided ray marching (Instant-NGP style empty-space skipping).

Steps grow with distance (dt = clamp(cone * t, min_step, max_step)) so a sample spans about
a pixel's footprint, and in the contracted shell they are at least a fixed length in
contracted units, so far regions cost as many samples per cell as near ones.  Only samples
whose midpoint lies in an occupied cell of a coarse occupancy grid are kept.  The grid covers the contracted
cube [-2,2]^3 for unbounded captures, the box [-1,1]^3 for bounded objects.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from engine.scene import native
from engine.scene.encodings import to_unit_cube


@dataclass
class MarchingConfig:
    """How rays are stepped and how the occupancy grid is kept."""

    near: float = 0.05
    """start of every ray (normalised scene units)"""
    far: float = 1000.0
    """end of every ray for unbounded scenes (bounded scenes stop where the ray leaves the box)"""
    min_step: float = 0.01
    """smallest step along a ray"""
    cone_angle: float = 1 / 128
    """step grows as cone_angle * t (about a pixel footprint); 0 for uniform steps"""
    max_step: float = 1e10
    """largest step along a ray"""
    contracted_step: float = 1 / 128
    """smallest step in contracted units outside the unit cube (unbounded scenes)"""
    max_steps: int = 4096
    """steps a ray may take at most"""
    occupancy_resolution: int = 128
    """cells per side of the occupancy grid"""
    occupancy_decay: float = 0.95
    """a cell's running maximum density decays by this each time it is re-measured"""
    occupied_budget: int = 1 << 17
    """after warm-up, at most this many occupied cells are re-measured per refresh"""
    random_budget: int = 1 << 15
    """after warm-up, this many random cells are re-measured per refresh (to find new matter)"""
    occupancy_threshold: float = 0.01
    """a cell is occupied when its density times min_step (its opacity over a step) exceeds this"""


def box_intersect(origins: torch.Tensor, dirs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Entry and exit distances of rays through the box [-1,1]^3 (exit < entry when missed)."""
    inv = 1 / torch.where(dirs.abs() < 1e-9, torch.full_like(dirs, 1e-9), dirs)
    t_a = (-1 - origins) * inv
    t_b = (1 - origins) * inv
    t_near = torch.minimum(t_a, t_b).amax(-1)
    t_far = torch.maximum(t_a, t_b).amin(-1)
    return t_near, t_far


@dataclass
class Samples:
    """Packed samples grouped by ray, front to back."""

    ray_idx: torch.Tensor  # (S,) long
    t0: torch.Tensor  # (S,)
    t1: torch.Tensor  # (S,)

    def __len__(self) -> int:
        return self.ray_idx.shape[0]

    def select(self, keep: torch.Tensor) -> "Samples":
        """The samples where ``keep`` is true (order preserved)."""
        return Samples(self.ray_idx[keep], self.t0[keep], self.t1[keep])

    def midpoints(self, origins: torch.Tensor, dirs: torch.Tensor) -> torch.Tensor:
        tm = 0.5 * (self.t0 + self.t1)
        return origins[self.ray_idx] + tm[:, None] * dirs[self.ray_idx]


class OccupancyGrid:
    """A coarse grid of 'may contain matter' flags, refreshed from the field's density."""

    def __init__(self, cfg: MarchingConfig, contracted: bool, device: torch.device | str = "cpu") -> None:
        self.cfg = cfg
        self.contracted = contracted
        self.device = torch.device(device)
        r = cfg.occupancy_resolution
        self.density = torch.full((r, r, r), 1e3, device=self.device)  # everything occupied until measured
        self.occupied = torch.ones((r, r, r), dtype=torch.uint8, device=self.device)
        self.step_params = torch.tensor([cfg.min_step, cfg.max_step, cfg.cone_angle, cfg.contracted_step],
                                        dtype=torch.float32)
        self.updates = 0
        self.held: torch.Tensor | None = None
        """cells kept occupied whatever their density (see hold_sphere); not saved: a job's own setting"""

    def state_dict(self) -> dict:
        return {"density": self.density.cpu(), "occupied": self.occupied.cpu(), "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        self.density = state["density"].to(self.device)
        self.occupied = state["occupied"].to(self.device)
        self.updates = int(state["updates"])

    def cell_centres_world(self, cells: torch.Tensor, jitter: torch.Tensor) -> torch.Tensor:
        """World positions of points inside ``cells`` (K, 3) at fractional offsets ``jitter``."""
        r = self.cfg.occupancy_resolution
        u = (cells.float() + jitter) / r
        if not self.contracted:
            return u * 2 - 1
        c = u * 4 - 2  # contracted coordinates; invert the contraction
        mag = c.abs().amax(-1, keepdim=True)
        inv = torch.where(mag > 1, 1 / (2 - mag).clamp_min(1e-6) / mag.clamp_min(1e-6), torch.ones_like(mag))
        return c * inv

    @torch.no_grad()
    def update(self, density_fn: Callable[[torch.Tensor], torch.Tensor], generator: torch.Generator,
               every_cell: bool = True, chunk: int = 1 << 16, absolute: bool = False) -> None:
        """Re-measure cells at a random point each and refresh the flags.

        ``every_cell`` re-measures the whole grid (warm-up); otherwise the occupied cells (at most
        ``occupied_budget`` of them, a random subset) and ``random_budget`` random cells, as
        Instant-NGP does: empty cells get no gradient and rarely fill up, occupied ones must be
        watched so they are culled once they empty.  A measured cell's running maximum decays by
        ``occupancy_decay``.  A cell stays occupied while its density could make a step of
        ``min_step`` at least ``occupancy_threshold`` opaque; during warm-up (``absolute`` False)
        the bar is lowered to the mean density so a young, faint field is not culled wholesale.
        """
        r = self.cfg.occupancy_resolution
        n_cells = r**3
        if every_cell:
            flat = torch.arange(n_cells, device=self.device)
        else:
            occupied = self.occupied.view(-1).nonzero()[:, 0]
            if len(occupied) > self.cfg.occupied_budget:
                pick = torch.randperm(len(occupied), generator=generator)[: self.cfg.occupied_budget]
                occupied = occupied[pick.to(self.device)]
            random = torch.randint(0, n_cells, (self.cfg.random_budget,), generator=generator).to(self.device)
            flat = torch.unique(torch.cat([occupied, random]))  # distinct and sorted: the scatter is deterministic
        cells = torch.stack([flat // (r * r), (flat // r) % r, flat % r], -1)
        jitter = torch.rand(cells.shape, generator=generator).to(self.device)
        pts = self.cell_centres_world(cells, jitter)
        dens = torch.cat([density_fn(pts[i:i + chunk]) for i in range(0, len(pts), chunk)])
        grid = self.density.view(-1)
        if self.updates == 0:
            grid.zero_()
        grid[flat] = torch.maximum(grid[flat] * self.cfg.occupancy_decay, dens.float())
        threshold = self.cfg.occupancy_threshold / self.cfg.min_step
        if not absolute:
            threshold = min(threshold, float(grid.mean()))
        self.occupied = (self.density >= threshold).to(torch.uint8)
        if self.held is not None:
            self.occupied |= self.held
        self.updates += 1

    @torch.no_grad()
    def hold_sphere(self, centre: tuple[float, float, float], radius: float, chunk: int = 1 << 18) -> None:
        """Keep every cell that meets a sphere (world centre, radius) occupied from now on, whatever its
        density: empty cells are never marched, so without this no matter could ever appear there."""
        r = self.cfg.occupancy_resolution
        centre_t = torch.tensor([centre], dtype=torch.float32)
        in_cells = to_unit_cube(centre_t, self.contracted) * r  # the centre in cell units
        held = torch.zeros(r**3, dtype=torch.uint8)
        for start in range(0, r**3, chunk):
            flat = torch.arange(start, min(start + chunk, r**3))
            cells = torch.stack([flat // (r * r), (flat // r) % r, flat % r], -1)
            nearest = self.cell_centres_world(cells, (in_cells - cells).clamp(0, 1))  # each cell's point nearest it
            held[flat] = (torch.linalg.norm(nearest - centre_t, dim=-1) <= radius).to(torch.uint8)
        self.held = held.view(r, r, r).to(self.device)
        self.occupied |= self.held

    def held_at(self, u: torch.Tensor) -> torch.Tensor | None:
        """Whether points given in grid coordinates u (N, 3) in [0, 1] lie in held cells; None when none are."""
        if self.held is None:
            return None
        ijk = (u * self.cfg.occupancy_resolution).long().clamp(0, self.cfg.occupancy_resolution - 1)
        return self.held[ijk[:, 0], ijk[:, 1], ijk[:, 2]].bool()

    @property
    def occupied_fraction(self) -> float:
        return float(self.occupied.float().mean())

    def ray_range(self, origins: torch.Tensor, dirs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Where each ray starts and ends: [near, far] for unbounded scenes, the box for bounded ones."""
        n = origins.shape[0]
        if self.contracted:
            return (torch.full((n,), self.cfg.near, device=origins.device),
                    torch.full((n,), self.cfg.far, device=origins.device))
        near, far = box_intersect(origins, dirs)
        return near.clamp_min(self.cfg.near), far

    def march(self, origins: torch.Tensor, dirs: torch.Tensor, step_scale: float = 1.0,
              near: torch.Tensor | None = None, max_per_ray: int = 0) -> Samples:
        """Samples of the rays that fall in occupied cells.

        ``step_scale`` > 1 takes longer steps (previews); ``near`` overrides where rays start and
        ``max_per_ray`` > 0 stops each ray after that many samples (rendering in rounds).
        """
        start, far = self.ray_range(origins, dirs)
        near = start if near is None else torch.maximum(near, start)
        lib = native.load_kernels() if origins.device.type == "cpu" else None
        if lib is not None:
            return self._march_native(lib, origins.float().contiguous(), dirs.float().contiguous(),
                                      near.float().contiguous(), far.float().contiguous(), step_scale, max_per_ray)
        return self._march_torch(origins, dirs, near, far, step_scale, max_per_ray)

    def _march_native(self, lib, origins, dirs, near, far, step_scale: float = 1.0, max_per_ray: int = 0) -> Samples:
        n = origins.shape[0]
        counts = torch.empty(n, dtype=torch.long)
        step_params = self.step_params * torch.tensor([step_scale, 1.0, step_scale, step_scale])  # kept alive here
        args = (native.ptr(origins), native.ptr(dirs), native.ptr(near), native.ptr(far), n, native.ptr(step_params),
                self.cfg.max_steps, max_per_ray,
                native.ptr(self.occupied), self.cfg.occupancy_resolution, int(self.contracted))
        lib.march_rays(*args, native.ptr(counts), native.ptr(None), native.ptr(None), native.ptr(None),
                       native.ptr(None))
        starts = torch.cumsum(counts, 0) - counts
        total = int(counts.sum())
        ray_idx = torch.empty(total, dtype=torch.long)
        t0 = torch.empty(total, dtype=torch.float32)
        t1 = torch.empty(total, dtype=torch.float32)
        lib.march_rays(*args, native.ptr(counts), native.ptr(starts), native.ptr(ray_idx), native.ptr(t0),
                       native.ptr(t1))
        return Samples(ray_idx, t0, t1)

    def step_size(self, t: torch.Tensor, x: torch.Tensor, step_scale: float = 1.0) -> torch.Tensor:
        """Step length from distance t at point x (the kernels' rule, same float32 operations)."""
        min_step, max_step, cone, contracted_step = (float(v) for v in self.step_params * torch.tensor(
            [step_scale, 1.0, step_scale, step_scale]))
        dt = (cone * t).clamp(min=min_step).clamp(max=max_step)
        if self.contracted:
            m = x.abs().amax(-1)
            dt = torch.where(m > 1, torch.maximum(dt, contracted_step * m * m), dt)
        return dt

    def _march_torch(self, origins, dirs, near, far, step_scale: float = 1.0, max_per_ray: int = 0) -> Samples:
        """Reference marching: all rays step in lockstep, keeping samples in occupied cells."""
        r = self.cfg.occupancy_resolution
        t0 = near.clone()
        alive = t0 < far
        kept = torch.zeros_like(t0, dtype=torch.long)
        rays, starts, ends, order = [], [], [], []
        for k in range(self.cfg.max_steps):
            if not bool(alive.any()):
                break
            t1 = torch.minimum(t0 + self.step_size(t0, origins + t0[:, None] * dirs, step_scale), far)
            tm = 0.5 * (t0 + t1)
            u = to_unit_cube(origins + tm[:, None] * dirs, self.contracted)
            inside = ((u >= 0) & (u < 1)).all(-1)
            ijk = (u * r).long().clamp(0, r - 1)
            keep = alive & inside & self.occupied[ijk[:, 0], ijk[:, 1], ijk[:, 2]].bool()
            kept += keep
            ray = keep.nonzero(as_tuple=True)[0]
            rays.append(ray)
            starts.append(t0[ray])
            ends.append(t1[ray])
            order.append(torch.full_like(ray, k))
            t0 = t1
            alive = alive & (t0 < far)
            if max_per_ray > 0:
                alive = alive & (kept < max_per_ray)
        if not rays:
            empty = torch.empty(0, device=origins.device)
            return Samples(empty.long(), empty, empty)
        ray, step = torch.cat(rays), torch.cat(order)
        perm = torch.argsort(ray * (self.cfg.max_steps + 1) + step)
        return Samples(ray[perm], torch.cat(starts)[perm], torch.cat(ends)[perm])

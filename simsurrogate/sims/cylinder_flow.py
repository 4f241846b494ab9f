"""Incompressible flow past a cylinder in a channel, by finite elements (ground truth for MGN).

2-D incompressible Navier–Stokes with density 1 (SI units: m, s, m/s, pressure in m²/s²)

    ∂t u + (u·∇)u - ν Δu + ∇p = 0,    ∇·u = 0    in [0, L] x [0, H] minus a disk,

with the parabolic inflow u(0, y) = (4 U_m y (H - y) / H², 0), U_m = 1.5 u_mean, no-slip on the
walls y = 0, y = H and on the obstacle, and the do-nothing outflow ν ∂u/∂n - p n = 0 at x = L.
This is the DFG benchmark set-up (Schäfer & Turek 1996; 2D-2 is L = 2.2, H = 0.41, centre
(0.2, 0.2), radius 0.05, ν = 1e-3, u_mean = 1, Re = u_mean D / ν = 100) and, with L = 1.6 and
varied obstacles and speeds, that of MeshGraphNets' CylinderFlow.

Mesh: gmsh, triangles graded from ``h_obstacle`` on the circle to ``h_max`` away from it.
Space: Taylor–Hood P2–P1 (scikit-fem), isoparametric on the obstacle (the mid-edge nodes of its
edges lie on the circle). Time: incremental pressure correction in rotational form (Guermond,
Minev & Shen 2006) with BDF2, viscosity implicit, the skew-symmetric convection term
explicit with the extrapolation u_ext = 2 u^n - u^(n-1). Per step:

1. tentative velocity: (3ũ - 4u^n + u^(n-1)) / (2dt) - ν Δũ = -N(u_ext) - ∇p^n, ũ = g on the
   inflow, walls and obstacle, ν ∂ũ/∂n = 0 at the outflow;
2. increment: -Δφ = -3/(2dt) ∇·ũ, φ = 0 at the outflow and ∂φ/∂n = 0 elsewhere;
   p^(n+1) = p^n + φ - ν ∇·ũ (p = 0 kept at the outflow);
3. u^(n+1) = ũ - (2dt/3) ∇φ (L2 projection onto P2 with the Dirichlet values kept), which is
   eliminated from the recursion (see :class:`CylinderFlowSolver`) and formed only for output.

The outflow thus gets p = 0 and ν ∂ũ/∂n = 0, a stronger condition than do-nothing;
:class:`CoupledCylinderFlowSolver` solves without splitting and with the exact condition, and
on the DFG 2D-2 benchmark the two agree to 2e-4 in the force coefficients (see
``benchmarks/results/dfg_2d2_refinement.md``).

The matrices of steps 1-3 are constant and factorised once (SuperLU); the convection vector is
evaluated element by element from precomputed basis values at the quadrature points, so a step
is a few sparse products and triangular solves. Convection is explicit, so dt must respect a CFL
limit; ``simulate`` picks sub-steps per saved frame from an estimate. Drag and lift are the
reaction of the discrete momentum equation on the obstacle's velocity DOFs (the volume-integral
form of Babuška & Miller, see John 2004), c = 2 F / (u_mean² D).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace

import gmsh
import numpy as np
import scipy.sparse as sp
from scipy.sparse.linalg import SuperLU, splu
from skfem import Basis, BilinearForm, ElementTriP1, ElementTriP2, MeshTri, MeshTri2, asm
from skfem.models.poisson import laplace, mass
from tqdm.auto import tqdm

from simsurrogate.data.node_types import NodeType

#: default mesh sizes (m): about 1,500-2,000 vertices for the 1.6 m x 0.41 m channel (the
#: node count of MeshGraphNets' CylinderFlow), the sizes the shipped dataset was made with
H_MAX = 0.032
H_OBSTACLE = 0.007
#: Courant number u_peak dt / h_min (see ``cfl_substeps``) that ``simulate`` keeps below; the
#: explicit convection went unstable between 0.6 and 0.7 in the DFG geometry
CFL = 0.4
#: peak speed over U_m H / (H - D) assumed by the CFL estimate (flow speeds up past the obstacle)
PEAK_SPEED = 1.2
#: quadrature degree of the assembled forms and of the convection operator
QUAD_ORDER = 5

_GMSH_LOCK = threading.Lock()
# kinds of boundary facets: do-nothing outflow, no-slip or inflow, obstacle (no-slip, curved)
_OUTFLOW_FACET, _HELD_FACET, _OBSTACLE_FACET = 0, 1, 2


@dataclass(frozen=True)
class ChannelGeometry:
    """Channel [0, length] x [0, height] (m) with a circular obstacle; DFG's sizes by default."""

    length: float = 2.2
    height: float = 0.41
    center: tuple[float, float] = (0.2, 0.2)
    radius: float = 0.05

    def __post_init__(self) -> None:
        values = (self.length, self.height, *self.center, self.radius)
        if len(self.center) != 2 or not all(math.isfinite(v) for v in values):
            raise ValueError(f"geometry must be finite with a 2-D centre, got {self}")
        if self.length <= 0 or self.height <= 0:
            raise ValueError(
                f"channel length and height must be positive, got {self.length}, {self.height}"
            )
        if self.radius <= 0:
            raise ValueError(f"obstacle radius must be positive, got {self.radius}")
        (x, y), r = self.center, self.radius
        gaps = {"inflow": x - r, "outflow": self.length - x - r, "bottom wall": y - r}
        gaps["top wall"] = self.height - y - r
        for side, gap in gaps.items():
            if gap <= 0:
                raise ValueError(
                    f"obstacle (centre {self.center}, radius {r}) must lie strictly inside the "
                    f"{self.length} x {self.height} channel; it reaches the {side} "
                    f"(gap {gap:.3g} m)"
                )

    @property
    def diameter(self) -> float:
        """Obstacle diameter D (m), the length of the Reynolds number and force coefficients."""
        return 2.0 * self.radius


def make_mesh(
    geom: ChannelGeometry,
    h_max: float = H_MAX,
    h_obstacle: float = H_OBSTACLE,
    *,
    growth: float = 0.1,
) -> tuple[np.ndarray, np.ndarray]:
    """Triangulate the channel minus the obstacle with gmsh.

    Element size is ``h_obstacle`` (m) on the circle and grows linearly with the distance d
    from it, h_obstacle + growth * d, up to ``h_max``. Returns points (N, 2) float64 and
    triangles (C, 3) int64, counter-clockwise, every node used. Safe to call repeatedly and from
    worker processes; calls from threads of one process are serialised by a lock.
    """
    if not (0 < h_obstacle <= h_max) or not math.isfinite(h_max):
        raise ValueError(f"need 0 < h_obstacle <= h_max, got {h_obstacle}, {h_max}")
    if growth <= 0:
        raise ValueError(f"growth must be positive, got {growth}")
    with _GMSH_LOCK:
        owner = not gmsh.isInitialized()
        if owner:
            gmsh.initialize(interruptible=False)
        try:
            gmsh.option.setNumber("General.Terminal", 0)
            gmsh.model.add("simsurrogate_cylinder")
            try:
                points, triangles = _gmsh_mesh(geom, h_max, h_obstacle, growth)
            finally:
                gmsh.model.remove()
        finally:
            if owner:
                gmsh.finalize()
    return _clean(points, triangles)


def _gmsh_mesh(
    geom: ChannelGeometry, h_max: float, h_obstacle: float, growth: float
) -> tuple[np.ndarray, np.ndarray]:
    """Mesh the current (empty) gmsh model; raw node coordinates and 0-based triangles."""
    occ = gmsh.model.occ
    rect = occ.addRectangle(0.0, 0.0, 0.0, geom.length, geom.height)
    disk = occ.addDisk(*geom.center, 0.0, geom.radius, geom.radius)
    domain, _ = occ.cut([(2, rect)], [(2, disk)])
    occ.synchronize()
    (x, y), r = geom.center, geom.radius
    circle = []
    for _, tag in gmsh.model.getBoundary(domain, oriented=False):
        x0, y0, _, x1, y1, _ = gmsh.model.getBoundingBox(1, tag)
        if x0 > x - 1.01 * r and x1 < x + 1.01 * r and y0 > y - 1.01 * r and y1 < y + 1.01 * r:
            circle.append(tag)
    field = gmsh.model.mesh.field
    dist = field.add("Distance")
    field.setNumbers(dist, "CurvesList", circle)
    field.setNumber(dist, "Sampling", max(100, int(2 * math.pi * r / h_obstacle) * 4))
    size = field.add("MathEval")
    field.setString(size, "F", f"min({h_obstacle!r} + {growth!r} * F{dist}, {h_max!r})")
    field.setAsBackgroundMesh(size)
    for key in ("MeshSizeExtendFromBoundary", "MeshSizeFromPoints", "MeshSizeFromCurvature"):
        gmsh.option.setNumber(f"Mesh.{key}", 0)
    gmsh.option.setNumber("Mesh.Algorithm", 6)  # Frontal-Delaunay
    gmsh.option.setNumber("General.NumThreads", 1)
    gmsh.model.mesh.generate(2)
    tags, coords, _ = gmsh.model.mesh.getNodes()
    _, nodes = gmsh.model.mesh.getElementsByType(2)
    index = np.zeros(int(tags.max()) + 1, dtype=np.int64)
    index[tags.astype(np.int64)] = np.arange(tags.size)
    return coords.reshape(-1, 3)[:, :2].copy(), index[nodes.astype(np.int64)].reshape(-1, 3)


def _clean(points: np.ndarray, triangles: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Drop unused nodes and renumber; orient every triangle counter-clockwise."""
    used = np.unique(triangles)
    renumber = np.full(points.shape[0], -1, dtype=np.int64)
    renumber[used] = np.arange(used.size)
    points, triangles = points[used], renumber[triangles]
    a, b, c = (points[triangles[:, k]] for k in range(3))
    area2 = (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0])
    clockwise = area2 < 0
    triangles[clockwise] = triangles[clockwise][:, [0, 2, 1]]
    return points, triangles


class CylinderFlowSolver:
    """Taylor–Hood P2–P1 pressure-correction solver on a given channel mesh (see module doc).

    ``points`` (N, 2) m and ``triangles`` (C, 3) describe the mesh, e.g. from
    :func:`make_mesh`; boundary nodes on x = 0, x = L, y = 0, y = H are inflow, outflow and
    walls, every other boundary node is on the obstacle and must lie on the circle of ``geom``
    (a mesh without a hole is a plain channel, with zero obstacle force). ``nu`` is the
    kinematic viscosity (m²/s), ``u_mean`` the mean inflow speed (m/s), ``dt`` the time step
    (s); the inflow is ramped up as (1 - cos(π t / ramp_time)) / 2 over the first
    ``ramp_time`` seconds. ``inflow`` instead gives the mean inflow speed as a multiple of
    ``u_mean`` at each time t (s), e.g. ``lambda t: math.sin(math.pi * t / 8)`` for DFG 2D-3;
    the force coefficients stay scaled by ``u_mean``. The flow starts at rest (with the
    inflow profile on the boundary) at ``time`` = 0.

    Internally the end-of-step velocity is eliminated (as in Guermond, Minev & Shen 2006):
    the state is the tentative velocity ũ (also the one convected), the pressure p and the
    increments φ, and step 1 reads (3ũ^(n+1) - 4ũ^n + ũ^(n-1)) / (2dt) - ν Δũ^(n+1) =
    -N(2ũ^n - ũ^(n-1)) - ∇(p^n + 4/3 φ^n - 1/3 φ^(n-1)). The end-of-step velocity
    u = ũ - (2dt/3) ∇φ, whose divergence is small, is formed only when asked for. P2 DOFs
    are stored free ones first, then the Dirichlet ones.
    """

    def __init__(
        self,
        points: np.ndarray,
        triangles: np.ndarray,
        geom: ChannelGeometry,
        *,
        nu: float = 1e-3,
        u_mean: float = 1.0,
        dt: float = 1e-3,
        ramp_time: float = 0.0,
        inflow: Callable[[float], float] | None = None,
    ) -> None:
        points = np.asarray(points, dtype=np.float64)
        triangles = np.asarray(triangles, dtype=np.int64)
        if points.ndim != 2 or points.shape[1] != 2:
            raise ValueError(f"points must be (N, 2), got {points.shape}")
        if triangles.ndim != 2 or triangles.shape[1] != 3:
            raise ValueError(f"triangles must be (C, 3), got {triangles.shape}")
        for name, value in (("nu", nu), ("u_mean", u_mean), ("dt", dt)):
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be positive and finite, got {value}")
        if not (math.isfinite(ramp_time) and ramp_time >= 0):
            raise ValueError(f"ramp_time must be >= 0, got {ramp_time}")
        if inflow is not None and ramp_time > 0:
            raise ValueError("give either ramp_time or an inflow profile, not both")
        self.geom, self.nu, self.u_mean, self.dt, self.ramp_time = geom, nu, u_mean, dt, ramp_time
        self.inflow = inflow
        self.time = 0.0
        self.n_steps = 0
        linear = MeshTri(np.ascontiguousarray(points.T), np.ascontiguousarray(triangles.T))
        facets, kind = self._classify_boundary(linear, points)
        self.mesh = self._curved_mesh(linear, facets[kind == _OBSTACLE_FACET])
        self.vbasis = Basis(self.mesh, ElementTriP2(), intorder=QUAD_ORDER)
        self.pbasis = Basis(self.mesh, ElementTriP1(), intorder=QUAD_ORDER)
        self.n_u, self.n_p = int(self.vbasis.N), int(self.pbasis.N)
        self._number_dofs(facets, kind)
        self._assemble()
        u = np.zeros((self.n_u, 2))
        u[self._n_free :] = self._boundary_values(0.0)
        self._ut = (u, u, u)  # tentative velocity ũ at steps n, n - 1, n - 2
        self._phi = (np.zeros(self.n_p), np.zeros(self.n_p))  # φ at steps n, n - 1
        self.p = np.zeros(self.n_p)
        self._p_star = self.p  # pressure and convection of the last momentum step
        self._conv = np.zeros_like(u)
        self._u_end: tuple[int, np.ndarray] | None = None

    # ----------------------------------------------------------------------------------------
    # set-up

    def _classify_boundary(
        self, mesh: MeshTri, points: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Vertex node types; boundary facets (F,) and their kinds (F,) (_*_FACET codes)."""
        geom = self.geom
        tol = 1e-8 * max(geom.length, geom.height)
        x, y = points.T
        on_in, on_out = np.abs(x) < tol, np.abs(x - geom.length) < tol
        on_wall = (np.abs(y) < tol) | (np.abs(y - geom.height) < tol)
        outside = (x < -tol) | (x > geom.length + tol) | (y < -tol) | (y > geom.height + tol)
        if outside.any() or not on_out.any() or not on_in.any():
            raise ValueError(
                f"mesh does not fill the {geom.length} x {geom.height} channel "
                "(nodes outside it, or no nodes on x = 0 or x = L)"
            )
        facets = mesh.boundary_facets()
        boundary = np.zeros(len(x), dtype=bool)
        boundary[mesh.facets[:, facets].ravel()] = True
        node_type = np.full(len(x), int(NodeType.NORMAL), dtype=np.int64)
        node_type[boundary & ~(on_in | on_out | on_wall)] = int(NodeType.OBSTACLE)
        node_type[on_in] = int(NodeType.INFLOW)
        node_type[on_out] = int(NodeType.OUTFLOW)
        node_type[on_wall] = int(NodeType.WALL_BOUNDARY)
        self._node_type = node_type
        self._p_free = np.flatnonzero(~on_out)  # pressure is 0 on the outflow

        # a boundary facet has the type of its midpoint
        mx, my = mesh.p[:, mesh.facets[:, facets]].mean(axis=1)
        kind = np.full(facets.size, _OBSTACLE_FACET)
        kind[(np.abs(mx) < tol) | (np.abs(my) < tol) | (np.abs(my - geom.height) < tol)] = (
            _HELD_FACET
        )
        kind[np.abs(mx - geom.length) < tol] = _OUTFLOW_FACET
        return facets, kind

    def _curved_mesh(self, linear: MeshTri, obstacle_facets: np.ndarray) -> MeshTri2:
        """Quadratic mesh whose obstacle edges are arcs of the circle (isoparametric P2)."""
        centre, radius = np.array(self.geom.center)[:, None], self.geom.radius
        ends = linear.p[:, np.unique(linear.facets[:, obstacle_facets])] - centre
        off = np.abs(np.linalg.norm(ends, axis=0) - radius)
        if off.size and off.max() > 1e-3 * radius:
            raise ValueError(
                f"obstacle boundary nodes are up to {off.max():.3g} m off the circle "
                f"(centre {self.geom.center}, radius {radius}) of the geometry"
            )
        mesh = MeshTri2.from_mesh(linear)
        mid = mesh.dofs.get_facet_dofs(obstacle_facets).flatten()
        doflocs = mesh.doflocs.copy()
        offset = doflocs[:, mid] - centre
        doflocs[:, mid] = centre + radius * offset / np.linalg.norm(offset, axis=0)
        return replace(mesh, doflocs=doflocs)

    def _number_dofs(self, facets: np.ndarray, kind: np.ndarray) -> None:
        """Free / Dirichlet velocity DOFs (solver order: free first), inflow profile."""
        fixed = self.vbasis.get_dofs(facets=facets[kind != _OUTFLOW_FACET]).all()
        free = np.setdiff1d(np.arange(self.n_u), fixed)
        self._order = np.concatenate([free, fixed])  # solver position -> skfem DOF
        self._position = np.empty_like(self._order)
        self._position[self._order] = np.arange(self.n_u)
        self._n_free = free.size
        obstacle = self.vbasis.get_dofs(facets=facets[kind == _OBSTACLE_FACET]).all()
        self._obstacle = self._position[obstacle]
        x, y = self.vbasis.doflocs[:, fixed]
        h = self.geom.height
        tol = 1e-8 * max(self.geom.length, h)
        # x-velocity on the Dirichlet DOFs per unit u_mean: 4 U_m y (H - y) / H² on the inflow
        self._inflow = np.where(np.abs(x) < tol, 6.0 * y * (h - y) / h**2, 0.0)

    def _assemble(self) -> None:
        """Constant matrices (P2 in solver order), their factors and quadrature operators."""
        vb, pb, dt, nf = self.vbasis, self.pbasis, self.dt, self._n_free
        order, p_free = self._order, self._p_free
        m = asm(mass, vb).tocsr()[order][:, order]
        k = asm(laplace, vb).tocsr()[order][:, order]
        grad = [BilinearForm(lambda u, v, w, i=i: u.grad[i] * v) for i in range(2)]
        g = [asm(form, pb, vb).tocsr()[order] for form in grad]  # (n_u, n_p): ∫ v_i ∂q_j
        d = [asm(form, vb, pb).tocsr()[:, order] for form in grad]  # (n_p, n_u): ∫ q_i ∂v_j
        a = ((1.5 / dt) * m + self.nu * k).tocsr()
        self._k_ff = k[:nf, :nf]
        self._a_lu = _factor(a[:nf, :nf])
        self._a_fb = a[:nf, nf:]
        self._m_f = m[:nf]
        self._m_lu = _factor(m[:nf, :nf])
        self._g_f = sp.vstack([gi[:nf] for gi in g]).tocsr()  # (2 n_free, n_p)
        kp = asm(laplace, pb).tocsr()
        self._kp_lu = _factor(kp[p_free][:, p_free])
        self._d = d
        self._mp_lu = _factor(asm(mass, pb))

        # convection, element by element: reference basis values, ∂ξ and ∂η (6, n_qp) each
        # at the quadrature points, inverse Jacobians of the element maps and the weights
        ref = [ElementTriP2().lbasis(vb.X, i) for i in range(6)]
        value, grad = np.stack([r[0] for r in ref]), np.stack([r[1] for r in ref])
        self._ref_q = (value, np.ascontiguousarray(grad[:, 0]), np.ascontiguousarray(grad[:, 1]))
        inv = vb.mapping.invDF(vb.X)  # (2, 2, C, n_qp): ∂x = inv[0, 0] ∂ξ + inv[1, 0] ∂η
        self._inv = [np.ascontiguousarray(inv[i, j]) for i in range(2) for j in range(2)]
        self._weights = vb.dx  # (C, n_qp)
        cell_dofs = self._position[vb.element_dofs].T  # (C, 6)
        self._cell_dofs = cell_dofs
        n_entries = cell_dofs.size
        self._scatter = sp.csr_matrix(
            (np.ones(n_entries), (cell_dofs.ravel(), np.arange(n_entries))),
            shape=(self.n_u, n_entries),
        )

        # reaction on the obstacle: the momentum residual summed over its velocity DOFs
        psi = np.zeros(self.n_u)
        psi[self._obstacle] = 1.0
        self._psi = psi
        self._m_psi, self._k_psi = m @ psi, k @ psi
        self._d_psi = np.stack([di @ psi for di in d], axis=1)  # (n_p, 2)

    # ----------------------------------------------------------------------------------------
    # time stepping

    def _boundary_values(self, t: float) -> np.ndarray:
        """Velocity (n_fixed, 2) m/s on the Dirichlet DOFs at time t (s)."""
        scale = self.u_mean
        if self.inflow is not None:
            scale *= self.inflow(t)
        elif t < self.ramp_time:
            scale *= 0.5 * (1.0 - math.cos(math.pi * t / self.ramp_time))
        g = np.zeros((self._inflow.size, 2))
        g[:, 0] = scale * self._inflow
        return g

    def _convection(self, u: np.ndarray) -> np.ndarray:
        """Skew-symmetric convection ∫ ((u·∇)u + (∇·u) u / 2)·v, (n_u, 2) for u (n_u, 2)."""
        n_cell, n_qp = self._weights.shape
        local = np.ascontiguousarray(u.T)[:, self._cell_dofs].reshape(2 * n_cell, 6)
        val, d_xi, d_eta = ((local @ op).reshape(2, n_cell, n_qp) for op in self._ref_q)
        i00, i01, i10, i11 = self._inv
        dx = i00 * d_xi + i10 * d_eta  # (component, cell, qp)
        dy = i01 * d_xi + i11 * d_eta
        conv = val[0] * dx + val[1] * dy + (0.5 * (dx[0] + dy[1])) * val
        conv *= self._weights
        tested = (conv.reshape(2 * n_cell, n_qp) @ self._ref_q[0].T).reshape(2, -1)
        out = np.empty((self.n_u, 2))
        out[:, 0] = self._scatter @ tested[0]
        out[:, 1] = self._scatter @ tested[1]
        return out

    def step(self, n: int = 1) -> None:
        """Advance ``n`` steps of size dt; RuntimeError naming the step if u goes non-finite."""
        dt, nf = self.dt, self._n_free
        # blow-up is reported below, so numpy's overflow warnings on the way are muted
        with np.errstate(over="ignore", invalid="ignore"):
            for _ in range(n):
                u0, u1, _ = self._ut
                phi0, phi1 = self._phi
                t_new = self.time + dt
                g = self._boundary_values(t_new)
                conv = self._convection(2.0 * u0 - u1)
                p_star = self.p + (4.0 / 3.0) * phi0 - (1.0 / 3.0) * phi1
                rhs = self._m_f @ ((2.0 / dt) * u0 - (0.5 / dt) * u1)
                rhs -= conv[:nf] + (self._g_f @ p_star).reshape(2, nf).T + self._a_fb @ g
                u_new = np.empty_like(u0)
                u_new[:nf] = self._a_lu.solve(rhs)
                u_new[nf:] = g

                div = self._d[0] @ u_new[:, 0] + self._d[1] @ u_new[:, 1]  # (n_p,): ∫ q ∇·ũ
                phi = np.zeros(self.n_p)
                phi[self._p_free] = self._kp_lu.solve((-1.5 / dt) * div[self._p_free])
                rotational = np.zeros(self.n_p)
                rotational[self._p_free] = self.nu * self._mp_lu.solve(div)[self._p_free]

                self._ut = (u_new, u0, u1)
                self._phi = (phi, phi0)
                self.p = self.p + phi - rotational
                self._p_star, self._conv = p_star, conv
                self.time = t_new
                self.n_steps += 1
                if not (np.isfinite(u_new).all() and np.isfinite(phi).all()):
                    raise RuntimeError(
                        f"solution became non-finite at step {self.n_steps} (t = {t_new:.6g} s, "
                        f"dt = {dt:g} s); reduce dt or refine the mesh"
                    )

    # ----------------------------------------------------------------------------------------
    # outputs

    def _end_of_step_velocity(self) -> np.ndarray:
        """u = ũ - (2dt/3) ∇φ (L2 projection on the free DOFs), (n_u, 2) in solver order."""
        if self._u_end is None or self._u_end[0] != self.n_steps:
            nf = self._n_free
            u = self._ut[0].copy()
            grad_phi = (self._g_f @ self._phi[0]).reshape(2, nf).T
            u[:nf] -= (self.dt / 1.5) * self._m_lu.solve(np.ascontiguousarray(grad_phi))
            self._u_end = (self.n_steps, u)
        return self._u_end[1]

    def vertex_velocity(self) -> np.ndarray:
        """Velocity (N, 2) m/s at the mesh vertices, in the order of the given points."""
        return self._end_of_step_velocity()[self._position[: self.mesh.nvertices]]

    def vertex_pressure(self) -> np.ndarray:
        """Kinematic pressure (N,) m²/s² at the mesh vertices (0 on the outflow boundary)."""
        return self.p.copy()

    def node_type(self) -> np.ndarray:
        """NodeType codes (N,) int64 of the vertices (corners count as wall)."""
        return self._node_type.copy()

    def force_coefficients(self) -> tuple[float, float]:
        """(c_D, c_L) = 2 F / (u_mean² D) of the fluid's force F on the obstacle at ``time``.

        F is minus the residual of the last momentum step summed over the obstacle's velocity
        DOFs, with the pressure term in the form -∫ p ∇·v (so it includes the pressure force).
        """
        u0, u1, u2 = self._ut
        dudt = (1.5 * u0 - 2.0 * u1 + 0.5 * u2) / self.dt
        residual = self._m_psi @ dudt + self._psi @ self._conv + self.nu * (self._k_psi @ u0)
        residual -= self._p_star @ self._d_psi
        scale = 2.0 / (self.u_mean**2 * self.geom.diameter)
        return float(-scale * residual[0]), float(-scale * residual[1])

    def obstacle_pressure(self, angle: float) -> float:
        """Pressure (m²/s²) on the obstacle at ``angle`` (rad from +x), linear between vertices.

        The DFG benchmarks' Δp = p(0.15, 0.2) - p(0.25, 0.2) is
        ``obstacle_pressure(π) - obstacle_pressure(0)``. ValueError without an obstacle.
        """
        on = np.flatnonzero(self._node_type == int(NodeType.OBSTACLE))
        if on.size == 0:
            raise ValueError("the mesh has no obstacle")
        rel = self.mesh.p[:, on].T - np.asarray(self.geom.center)
        theta = np.mod(np.arctan2(rel[:, 1], rel[:, 0]), 2 * math.pi)
        order = np.argsort(theta)
        theta, p = theta[order], self.p[on][order]
        theta = np.concatenate([theta[-1:] - 2 * math.pi, theta, theta[:1] + 2 * math.pi])
        p = np.concatenate([p[-1:], p, p[:1]])
        return float(np.interp(np.mod(angle, 2 * math.pi), theta, p))

    def divergence_norm(self) -> float:
        """||∇·u||_L2 (m/s) of the end-of-step velocity, via the L2 projection of ∇·u onto P1."""
        u = self._end_of_step_velocity()
        div = self._d[0] @ u[:, 0] + self._d[1] @ u[:, 1]
        return float(np.sqrt(div @ self._mp_lu.solve(div)))


class CoupledCylinderFlowSolver(CylinderFlowSolver):
    """The same discretisation without the pressure-correction splitting (a reference check).

    Each step solves velocity and pressure together: (3u^(n+1) - 4u^n + u^(n-1)) / (2dt)
    - ν Δu^(n+1) + ∇p^(n+1) = -N(2u^n - u^(n-1)), ∇·u^(n+1) = 0, with the pressure term in the
    weak form -∫ p ∇·v, so the outflow gets the exact do-nothing condition ν ∂u/∂n - p n = 0
    (the pressure is free there, not held at 0) and u is discretely divergence-free. The
    saddle-point matrix is constant and factorised once, but its LU factors are much larger
    than the split scheme's: a step costs about 7x more. Its use is to show what the splitting
    and the outflow treatment of :class:`CylinderFlowSolver` change (``benchmarks/dfg_2d2.py
    --scheme coupled``). Same arguments; ``vertex_pressure`` is not 0 on the outflow.
    """

    def _assemble(self) -> None:
        """The parent's operators plus the LU factors of the coupled system on the free DOFs."""
        super()._assemble()
        nf = self._n_free
        a = self._m_f[:, :nf] * (1.5 / self.dt) + self.nu * self._k_ff
        d = [di[:, :nf] for di in self._d]
        saddle = sp.bmat([[a, None, -d[0].T], [None, a, -d[1].T], [-d[0], -d[1], None]])
        # symmetric ordering as in _factor, but the zero pressure block needs some pivoting
        self._saddle_lu = splu(
            sp.csc_matrix(saddle),
            permc_spec="MMD_AT_PLUS_A",
            diag_pivot_thresh=0.01,
            options={"SymmetricMode": True},
        )

    def step(self, n: int = 1) -> None:
        """Advance ``n`` steps of size dt; RuntimeError naming the step if u goes non-finite."""
        dt, nf = self.dt, self._n_free
        with np.errstate(over="ignore", invalid="ignore"):
            for _ in range(n):
                u0, u1, _ = self._ut
                t_new = self.time + dt
                g = self._boundary_values(t_new)
                conv = self._convection(2.0 * u0 - u1)
                rhs = self._m_f @ ((2.0 / dt) * u0 - (0.5 / dt) * u1) - conv[:nf] - self._a_fb @ g
                div_b = self._d[0][:, nf:] @ g[:, 0] + self._d[1][:, nf:] @ g[:, 1]
                x = self._saddle_lu.solve(np.concatenate([rhs[:, 0], rhs[:, 1], div_b]))
                u_new = np.empty_like(u0)
                u_new[:nf] = x[: 2 * nf].reshape(2, nf).T
                u_new[nf:] = g
                self.p = x[2 * nf :]
                self._ut = (u_new, u0, u1)
                self._p_star, self._conv = self.p, conv
                self.time = t_new
                self.n_steps += 1
                if not np.isfinite(x).all():
                    raise RuntimeError(
                        f"solution became non-finite at step {self.n_steps} (t = {t_new:.6g} s, "
                        f"dt = {dt:g} s); reduce dt or refine the mesh"
                    )


def _factor(matrix: sp.spmatrix) -> SuperLU:
    """SuperLU factors of a symmetric positive definite matrix (symmetric ordering)."""
    return splu(
        sp.csc_matrix(matrix),
        permc_spec="MMD_AT_PLUS_A",
        diag_pivot_thresh=0.0,
        options={"SymmetricMode": True},
    )


def cfl_substeps(
    points: np.ndarray,
    triangles: np.ndarray,
    geom: ChannelGeometry,
    u_mean: float,
    dt: float,
    cfl: float = CFL,
) -> int:
    """Sub-steps per ``dt`` (s) so that u_peak dt_sub / h_min <= ``cfl``.

    u_peak = PEAK_SPEED * U_m * H / (H - D) estimates the largest speed (m/s), the inflow peak
    U_m = 1.5 u_mean raised by the blockage of the obstacle; h_min is the smallest triangle
    height (m) over 2, the P2 node spacing.
    """
    a, b, c = (points[triangles[:, k]] for k in range(3))
    area2 = np.abs((b - a)[:, 0] * (c - a)[:, 1] - (b - a)[:, 1] * (c - a)[:, 0])
    longest = np.max([np.linalg.norm(e, axis=1) for e in (b - a, c - b, a - c)], axis=0)
    h_min = 0.5 * float(np.min(area2 / longest))
    blockage = geom.height / (geom.height - geom.diameter)
    u_peak = PEAK_SPEED * 1.5 * u_mean * blockage
    return max(1, math.ceil(u_peak * dt / (cfl * h_min) - 1e-9))


def simulate(
    geom: ChannelGeometry,
    *,
    nu: float = 1e-3,
    u_mean: float = 1.0,
    dt: float = 0.01,
    n_frames: int = 600,
    substeps: int | None = None,
    warmup: float = 0.0,
    ramp_time: float = 0.0,
    h_max: float = H_MAX,
    h_obstacle: float = H_OBSTACLE,
    progress: bool = False,
) -> dict[str, np.ndarray]:
    """Mesh, run ``warmup`` seconds unrecorded, then record ``n_frames`` frames ``dt`` apart.

    The inflow is ramped up smoothly over the first ``ramp_time`` seconds (an impulsive start
    at high Reynolds number can break the explicit convection step).

    The solver steps dt / substeps (``substeps`` None: from :func:`cfl_substeps`). Returns
    ``mesh_pos`` (N, 2) float32 m, ``cells`` (C, 3) int64 counter-clockwise, ``node_type``
    (N,) int64, ``time`` (T,) float64 s (T = n_frames, the first at ``warmup``), ``velocity``
    (T, N, 2) float32 m/s and ``pressure`` (T, N, 1) float32 m²/s². ValueError on bad
    geometry or parameters, RuntimeError naming the step if the solution goes non-finite.
    """
    if n_frames < 1:
        raise ValueError(f"n_frames must be at least 1, got {n_frames}")
    if substeps is not None and substeps < 1:
        raise ValueError(f"substeps must be at least 1, got {substeps}")
    if not (math.isfinite(dt) and dt > 0) or not (math.isfinite(warmup) and warmup >= 0):
        raise ValueError(f"need dt > 0 and warmup >= 0, got dt={dt}, warmup={warmup}")
    points, triangles = make_mesh(geom, h_max, h_obstacle)
    if substeps is None:
        substeps = cfl_substeps(points, triangles, geom, u_mean, dt)
    solver = CylinderFlowSolver(
        points, triangles, geom, nu=nu, u_mean=u_mean, dt=dt / substeps, ramp_time=ramp_time
    )
    n = points.shape[0]
    velocity = np.empty((n_frames, n, 2), dtype=np.float32)
    pressure = np.empty((n_frames, n, 1), dtype=np.float32)
    times = np.empty(n_frames)
    warmup_steps = round(warmup / solver.dt)
    bar = tqdm(
        total=warmup_steps + (n_frames - 1) * substeps,
        desc=f"cylinder flow nu={nu:g} u={u_mean:g}",
        unit="step",
        disable=not progress,
        leave=False,
    )
    solver.step(warmup_steps)
    bar.update(warmup_steps)
    for frame in range(n_frames):
        if frame:
            solver.step(substeps)
            bar.update(substeps)
        times[frame] = solver.time
        with np.errstate(over="ignore"):
            velocity[frame] = solver.vertex_velocity()
            pressure[frame, :, 0] = solver.vertex_pressure()
        if not (np.isfinite(velocity[frame]).all() and np.isfinite(pressure[frame]).all()):
            raise RuntimeError(
                f"frame {frame} (solver step {solver.n_steps}, t = {solver.time:.6g} s) "
                "overflows float32: the solution is blowing up; use more substeps"
            )
    bar.close()
    return {
        "mesh_pos": points.astype(np.float32),
        "cells": triangles,
        "node_type": solver.node_type(),
        "time": times,
        "velocity": velocity,
        "pressure": pressure,
    }


def shedding_statistics(
    t: np.ndarray, c_d: np.ndarray, c_l: np.ndarray, diameter: float, u_mean: float
) -> dict:
    """Max c_D, max c_L and Strouhal number St = f D / u_mean of a periodic force record.

    ``t`` (T,) s and the coefficients (T,) sampled over a window of the developed periodic
    state; f comes from the mean spacing of the upward zero crossings of c_L (linearly
    interpolated). Also returns the minima, the period (s), the number of whole cycles and the
    cycle-to-cycle spread of the maxima and of the period, a check that the state is periodic.
    RuntimeError if the window holds fewer than two whole cycles.
    """
    i = np.flatnonzero((c_l[:-1] < 0) & (c_l[1:] >= 0))
    crossings = t[i] - c_l[i] * (t[i + 1] - t[i]) / (c_l[i + 1] - c_l[i])
    if crossings.size < 3:
        raise RuntimeError(f"only {crossings.size} lift zero crossings in the window: no shedding")
    period = float(np.diff(crossings).mean())
    cycles = [(t >= a) & (t < b) for a, b in zip(crossings[:-1], crossings[1:], strict=True)]
    return {
        "cd_max": float(c_d.max()),
        "cl_max": float(c_l.max()),
        "strouhal": diameter / (period * u_mean),
        "cd_min": float(c_d.min()),
        "cl_min": float(c_l.min()),
        "period_s": period,
        "cycles": len(cycles),
        "cycle_spread": {
            "cd_max": float(np.ptp([c_d[m].max() for m in cycles])),
            "cl_max": float(np.ptp([c_l[m].max() for m in cycles])),
            "period_s": float(np.ptp(np.diff(crossings))),
        },
    }

"""The continuous-time (Langevin) model of lines of thought, its simulation and its moments.

Between consecutive layers ``t1 < t2`` the basis is interpolated on the orthogonal group,

    R(t) = U1 expm(a logm(U1^T U2)),    a = (t - t1) / (t2 - t1),

the singular values by a cubic spline of ``ln sigma_i`` over the layer times (natural boundary
conditions), so that ``S'(t) = diag(sigma_i'(t) / sigma_i(t))`` is the spline's derivative. The
stochastic differential equation is

    dx = A(t) x dt + sqrt(alpha * lam * exp(lam * t)) dW,   A(t) = R'(t) R(t)^T + R(t) S'(t) R(t)^T

and its Fokker-Planck equation ``dP/dt = -div(A x P) + (1/2) D(t) lap P`` with
``D(t) = alpha * lam * exp(lam * t)``. A Gaussian ensemble stays Gaussian, with moments

    dm/dt = A m,     dC/dt = A C + C A^T + D(t) I.

**Matrix logarithm: the real Schur route.** ``Q = U1^T U2`` is orthogonal, hence normal, so its
real Schur form ``Q = Z T Z^T`` (``scipy.linalg.schur(output="real")``) is block diagonal:
2x2 rotation blocks of angle ``theta`` in [-pi, pi] and 1x1 blocks ``+1`` or ``-1``. The
logarithm is the block-diagonal skew matrix of the angles; ``expm(a log Q)`` rotates each plane
by ``a * theta`` in closed form. Near-pi rotations are exact (``atan2``), and pairs of ``-1``
eigenvalues are joined into rotations by pi. When the bases are truncated
(``rank < d_model``) ``U1^T U2`` is first replaced by its nearest orthogonal matrix (polar
decomposition), and ``R(t)`` stays in ``span(U1)``. Everything runs in float64.

**Reflected segments.** With ``y = R(t)^T x`` the noise-free drift gives ``dy/dt = S'(t) y``
(``R^T R = I`` makes ``R'^T R + R^T R' = 0``), so it carries ``x(t1)`` to
``R(t2) S(t2) S(t1)^-1 R(t1)^T x(t1)``: the linear extrapolation
``U2 S2 S1^-1 U1^T x(t1)`` when ``R`` runs from ``U1`` to ``U2`` and the bases span the space
(``rank = d_model``; with truncated bases the part of ``x`` outside ``span(U1)`` is carried
unchanged). When ``det Q = -1`` (a reflection the realignment left) no such path exists: a
reflection is not on the path of rotations, and the flow of any linear ODE has a positive
determinant (``det = exp(int tr A dt)``) while the extrapolation map, ``Q`` times positive
gains, has a negative one. The model then splits the segment map into a reflection applied at
a defined time and a rotation:

* ``k`` is the column with the smallest ``Q[k, k]`` (the least aligned matched pair): flipping
  its sign, ``F_k = diag(1, .., -1 at k, .., 1)``, brings ``F_k Q`` closest to the identity
  (``|F_k Q - I|_F^2 = 2 rank - 2 tr(F_k Q)``), and ``det(F_k Q) = +1``;
* at the start of the segment (just after layer ``t1``'s state) the state is reflected across
  the hyperplane orthogonal to ``u_k(t1)``: ``x -> x - 2 <u_k(t1), x> u_k(t1)``;
* inside the segment ``R(t) = U1 F_k expm(a logm(F_k Q))``, which starts at ``U1`` with the sign
  of column ``k`` flipped (the same singular directions, so ``R S' R^T`` is unchanged) and ends
  exactly at ``U2``.

Composed, ``U2 S2 S1^-1 (U1 F_k)^T (I - 2 u_k u_k^T) x = U2 S2 S1^-1 U1^T x``: the noise-free
endpoint is the linear extrapolation on every segment, reflected or not. The noise of the
segment enters after the reflection (an isotropic noise is unchanged by it), and
:meth:`LangevinModel.moments` applies the same reflection to the mean and covariance
(``m -> H m``, ``C -> H C H``, ``H = I - 2 u_k u_k^T``). :attr:`LangevinModel.reflected` lists
the reflected segments and :attr:`LangevinModel.reflected_columns` the column ``k`` of each;
both are stored by :meth:`LangevinModel.save`.

>>> from tl_continuous.lines_of_thought.synthetic import linear_gaussian_ensemble
>>> ens = linear_gaussian_ensemble(n=50, n_layers=4, d_model=5, rank=5, seed=0)
>>> model = LangevinModel.from_tensors(ens.U, ens.S, alpha=0.0, lam=0.0)
>>> x = model.simulate(ens.trajectories[:, 0], start=0, horizon=3, dt=0.01, noise=False)
>>> bool(torch.allclose(x[:, 3], ens.trajectories[:, 3], atol=0.05 * ens.trajectories.std()))
True
"""

from __future__ import annotations

import itertools
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import scipy.linalg
import torch
from jaxtyping import Float
from scipy.interpolate import CubicSpline
from torch import Tensor

from tl_continuous._io import FormatError, load_tensors, reading, save_tensors
from tl_continuous._progress import progress as progress_iter
from tl_continuous.lines_of_thought.dynamics import VarianceLawFit, default_times

__all__ = ["FORMAT", "VERSION", "LangevinModel", "OrthogonalPath", "orthogonal_path"]

FORMAT = "tl_continuous.lines_of_thought.langevin"
VERSION = 1

_F64 = torch.float64


@dataclass
class OrthogonalPath:
    """``expm(a logm(Q))`` for an orthogonal ``Q``, as plane rotations.

    ``Q = Z T Z^T``; column pairs ``(Z[:, 2k], Z[:, 2k + 1])`` turn by ``a * angles[k]``, any last
    odd column is fixed. ``reflected`` says that ``det Q = -1``: one direction (the last column
    of ``Z``) is flipped by ``Q`` but held fixed along the path.

    Attributes:
        Z: orthogonal change of basis ``[r, r]``.
        angles: rotation angle of each column pair, in [-pi, pi], ``[r // 2]``.
        reflected: whether ``det Q = -1``.
    """

    Z: Float[np.ndarray, "r r"]
    angles: Float[np.ndarray, " half"]
    reflected: bool

    def log(self) -> Float[np.ndarray, "r r"]:
        """The real skew-symmetric logarithm (of ``Q``, or of ``Q`` times the reflection)."""
        r = self.Z.shape[0]
        block = np.zeros((r, r))
        for k, th in enumerate(self.angles):
            block[2 * k + 1, 2 * k] = th
            block[2 * k, 2 * k + 1] = -th
        return self.Z @ block @ self.Z.T

    def at(self, a: float) -> Float[np.ndarray, "r r"]:
        """``expm(a log Q)`` (for a reflected ``Q``, the rotation part at every ``a``)."""
        r = self.Z.shape[0]
        block = np.eye(r)
        c, s = np.cos(a * self.angles), np.sin(a * self.angles)
        idx = np.arange(len(self.angles))
        block[2 * idx, 2 * idx] = c
        block[2 * idx + 1, 2 * idx + 1] = c
        block[2 * idx + 1, 2 * idx] = s
        block[2 * idx, 2 * idx + 1] = -s
        return self.Z @ block @ self.Z.T


def _nearest_orthogonal(m: np.ndarray) -> np.ndarray:
    p, _, qt = np.linalg.svd(m)
    return p @ qt


def orthogonal_path(Q: Float[np.ndarray, "r r"], *, atol: float = 1e-6) -> OrthogonalPath:
    """Decompose an orthogonal matrix into plane rotations (real Schur route).

    Args:
        Q: orthogonal matrix (checked to ``atol``; use the polar projection first otherwise).
        atol: tolerance of the orthogonality check.

    Raises:
        ValueError: if ``Q`` is not square and orthogonal.

    >>> import scipy.linalg
    >>> k = np.array([[0.0, -3.0, 0.0], [3.0, 0.0, 0.5], [0.0, -0.5, 0.0]])
    >>> p = orthogonal_path(scipy.linalg.expm(k))
    >>> bool(np.allclose(p.at(1.0), scipy.linalg.expm(k)))
    True
    """
    q = np.asarray(Q, dtype=np.float64)
    if q.ndim != 2 or q.shape[0] != q.shape[1]:
        raise ValueError(f"Q must be a square matrix (got shape {q.shape})")
    r = q.shape[0]
    if not np.allclose(q.T @ q, np.eye(r), atol=atol):
        raise ValueError("Q must be orthogonal (Q^T Q = I)")
    t, z = scipy.linalg.schur(q, output="real")
    planes: list[tuple[np.ndarray, np.ndarray, float]] = []
    fixed: list[np.ndarray] = []
    flipped: list[np.ndarray] = []
    i = 0
    while i < r:
        if i + 1 < r and t[i + 1, i] != 0.0:
            angle = math.atan2((t[i + 1, i] - t[i, i + 1]) / 2, (t[i, i] + t[i + 1, i + 1]) / 2)
            planes.append((z[:, i], z[:, i + 1], angle))
            i += 2
        else:
            (fixed if t[i, i] > 0 else flipped).append(z[:, i])
            i += 1
    # pairs of -1 eigenvalues are rotations by pi; an odd one out is a reflection
    while len(flipped) >= 2:
        planes.append((flipped.pop(), flipped.pop(), math.pi))
    reflected = bool(flipped)
    cols = [c for p in planes for c in p[:2]] + fixed + flipped
    angles = np.zeros(r // 2)
    angles[: len(planes)] = [p[2] for p in planes]
    return OrthogonalPath(Z=np.stack(cols, axis=1), angles=angles, reflected=reflected)


@dataclass
class LangevinModel:
    """The Langevin model of an ensemble: interpolated bases, spline of spectra, noise law.

    Build it with :meth:`from_tensors` (plain tensors), :meth:`from_fit` (noise from a
    :class:`~tl_continuous.lines_of_thought.dynamics.VarianceLawFit`) or :meth:`from_bases`.

    Attributes:
        U: realigned bases ``[layer, d_model, rank]`` (float64).
        S: singular values ``[layer, rank]`` (float64, positive).
        times: time of each layer (default ``1..layer``, the convention of the variance fit).
        alpha: noise prefactor.
        lam: noise rate; the diffusion coefficient is ``alpha * lam * exp(lam * t)``.
        reflected_columns: per segment ``i`` (layer ``i`` to ``i + 1``), the column ``k`` whose
            reflection splits a segment with ``det(U_i^T U_{i+1}) = -1``, or ``-1`` for a
            rotation (computed from ``U``; see the module docstring).
    """

    U: Float[Tensor, "layer d_model rank"]
    S: Float[Tensor, "layer rank"]
    times: Float[Tensor, " layer"]
    alpha: float
    lam: float
    reflected_columns: list[int] = field(init=False)
    paths: list[OrthogonalPath] = field(init=False, repr=False)
    _spline: Any = field(init=False, repr=False)
    _turn_cache: dict[int, Tensor] = field(init=False, repr=False, default_factory=dict)

    def __post_init__(self) -> None:
        self.U = self.U.detach().to(_F64).cpu()
        self.S = self.S.detach().to(_F64).cpu()
        self.times = self.times.detach().to(_F64).cpu()
        n_layers, d, r = self.U.shape
        if n_layers < 2:
            raise ValueError(f"U must hold at least 2 layers (got {n_layers})")
        if self.S.shape != (n_layers, r):
            raise ValueError(f"S must be [layer={n_layers}, rank={r}] (got {tuple(self.S.shape)})")
        if self.times.shape != (n_layers,) or not bool((self.times.diff() > 0).all()):
            raise ValueError(f"times must be increasing with shape ({n_layers},)")
        if self.alpha < 0 or self.alpha * self.lam < 0:
            raise ValueError(
                f"alpha and alpha * lam must be non-negative (got alpha={self.alpha}, "
                f"lam={self.lam}); a shrinking variance law has no diffusion"
            )
        u = self.U.numpy()
        self.paths, self.reflected_columns = [], []
        for i in range(n_layers - 1):
            q = u[i].T @ u[i + 1]
            if r < d or not np.allclose(q.T @ q, np.eye(r), atol=1e-6):
                q = _nearest_orthogonal(q)
            k = -1
            if np.linalg.det(q) < 0:  # split off the reflection of the least aligned column
                k = int(np.argmin(np.diag(q)))
                q = q.copy()
                q[k] *= -1
            self.reflected_columns.append(k)
            self.paths.append(orthogonal_path(q))
        floor = self.S.max(dim=1, keepdim=True).values * 1e-12
        log_s = torch.log(torch.maximum(self.S, floor.clamp_min(1e-300))).numpy()
        self._spline = CubicSpline(self.times.numpy(), log_s, axis=0, bc_type="natural")

    # construction -------------------------------------------------------------------------

    @classmethod
    def from_tensors(
        cls,
        U: Float[Tensor, "layer d_model rank"],
        S: Float[Tensor, "layer rank"],
        *,
        alpha: float,
        lam: float,
        times: Float[Tensor, " layer"] | None = None,
    ) -> LangevinModel:
        """From bases and the two noise parameters."""
        times = default_times(U.shape[0]) if times is None else times
        return cls(U=U, S=S, times=times, alpha=float(alpha), lam=float(lam))

    @classmethod
    def from_fit(
        cls,
        U: Float[Tensor, "layer d_model rank"],
        S: Float[Tensor, "layer rank"],
        fit: VarianceLawFit,
        *,
        times: Float[Tensor, " layer"] | None = None,
    ) -> LangevinModel:
        """From bases and a variance-law fit (the same ``times`` as the fit's statistics)."""
        return cls.from_tensors(U, S, alpha=fit.alpha, lam=fit.lam, times=times)

    @classmethod
    def from_bases(cls, bases: Any, fit: VarianceLawFit, **kwargs: Any) -> LangevinModel:
        """Adapter for a ``TrajectoryBases`` (reads ``bases.U`` and ``bases.S``).

        Raises:
            ValueError: if ``bases`` were not realigned (``bases.realigned`` false): without
                realignment index ``i`` does not follow one direction across layers and the
                interpolation between layers means nothing.
        """
        if not getattr(bases, "realigned", False):
            raise ValueError(
                "bases must be realigned (TrajectoryBases.from_ensemble(..., realign=True)); "
                "got bases with realigned=False"
            )
        return cls.from_fit(bases.U, bases.S, fit, **kwargs)

    # the model's coefficients ----------------------------------------------------------------

    @property
    def n_layers(self) -> int:
        """Number of layers."""
        return int(self.U.shape[0])

    @property
    def reflected(self) -> list[int]:
        """Segments ``i`` (layer ``i`` to ``i + 1``) whose ``det(U_i^T U_{i+1}) = -1``."""
        return [i for i, k in enumerate(self.reflected_columns) if k >= 0]

    def _start_basis(self, i: int) -> Tensor:
        """``R`` at the start of segment ``i``: ``U_i``, column ``k`` negated if reflected."""
        k = self.reflected_columns[i]
        if k < 0:
            return self.U[i]
        b = self.U[i].clone()
        b[:, k] = -b[:, k]
        return b

    def reflection(self, i: int) -> Float[Tensor, "d_model d_model"] | None:
        """``H = I - 2 u_k u_k^T`` applied at the start of a reflected segment ``i``, else None."""
        k = self.reflected_columns[i]
        if k < 0:
            return None
        u = self.U[i][:, k]
        return torch.eye(u.shape[0], dtype=_F64) - 2 * torch.outer(u, u)

    def _segment(self, t: float) -> int:
        times = self.times
        if not float(times[0]) - 1e-9 <= t <= float(times[-1]) + 1e-9:
            raise ValueError(f"t must lie in [{float(times[0])}, {float(times[-1])}] (got {t})")
        i = int(torch.searchsorted(times, torch.tensor(t, dtype=_F64), right=True)) - 1
        return min(max(i, 0), self.n_layers - 2)

    def rotation(self, t: float, segment: int | None = None) -> Float[Tensor, "d_model rank"]:
        """``R(t)``, the interpolated basis (``segment`` pins the segment at its end points).

        ``R`` is ``U_{i+1}`` at the end of segment ``i`` and ``U_i`` at its start, with the sign
        of the reflected column negated on a reflected segment.
        """
        i = self._segment(t) if segment is None else segment
        t1, t2 = float(self.times[i]), float(self.times[i + 1])
        a = (t - t1) / (t2 - t1)
        return self._start_basis(i) @ torch.from_numpy(self.paths[i].at(a))

    def log_growth(self, t: float) -> Float[Tensor, " rank"]:
        """``S'(t)``: ``sigma_i'(t) / sigma_i(t)``, the derivative of the spline of ``ln sigma``."""
        return torch.from_numpy(np.asarray(self._spline(t, 1), dtype=np.float64))

    def diffusion(self, t: float) -> float:
        """Diffusion coefficient ``alpha * lam * exp(lam * t)`` (per coordinate)."""
        return self.alpha * self.lam * math.exp(self.lam * t)

    def drift_matrix(self, t: float, segment: int | None = None) -> Float[Tensor, "d d"]:
        """``A(t) = R'(t) R(t)^T + R(t) S'(t) R(t)^T`` as a ``d_model x d_model`` matrix.

        Inside segment ``i``, ``R'(t) R(t)^T = B_i logm(Q_i) B_i^T / (t_{i+1} - t_i)``, with
        ``B_i = U_i`` and ``Q_i = U_i^T U_{i+1}`` (a reflected segment: ``U_i`` and ``Q_i`` with
        the reflected column's sign flipped). The reflection itself is not in ``A``: it is
        the jump :meth:`reflection` at the segment's start.
        """
        i = self._segment(t) if segment is None else segment
        rot = self.rotation(t, i)
        return self._turning(i) + (rot * self.log_growth(t)) @ rot.T

    def _turning(self, i: int) -> Tensor:
        """``R' R^T`` of segment ``i`` (constant inside it), cached."""
        if i not in self._turn_cache:
            k = torch.from_numpy(self.paths[i].log()) / float(self.times[i + 1] - self.times[i])
            b = self._start_basis(i)
            self._turn_cache[i] = b @ k @ b.T
        return self._turn_cache[i]

    def _grid(self, start: int, horizon: int, dt: float) -> list[tuple[int, np.ndarray]]:
        if not 0 <= start < self.n_layers:
            raise ValueError(f"start must be a layer index in 0..{self.n_layers - 1} (got {start})")
        if horizon < 0 or start + horizon >= self.n_layers:
            raise ValueError(
                f"horizon must be in 0..{self.n_layers - 1 - start} from start={start} "
                f"(got {horizon})"
            )
        if not dt > 0:
            raise ValueError(f"dt must be positive (got {dt})")
        grid = []
        for i in range(start, start + horizon):
            t1, t2 = float(self.times[i]), float(self.times[i + 1])
            steps = max(1, math.ceil((t2 - t1) / dt - 1e-9))
            grid.append((i, np.linspace(t1, t2, steps + 1)))
        return grid

    # simulation and moments ------------------------------------------------------------------

    def simulate(
        self,
        x0: Float[Tensor, "batch d_model"],
        *,
        start: int,
        horizon: int,
        dt: float = 0.1,
        seed: int = 0,
        noise: bool = True,
        progress: bool = False,
    ) -> Float[Tensor, "batch step d_model"]:
        """Euler-Maruyama from layer index ``start`` for ``horizon`` layers.

        Each layer interval is cut into equal steps of at most ``dt``; the drift is evaluated
        at the left end of each step, inside the current segment. A reflected segment starts
        with its reflection (:meth:`reflection`, module docstring).

        Args:
            x0: initial points (any float dtype; integration in float64).
            start: layer index of ``x0``.
            horizon: number of layers to integrate.
            dt: largest step (the paper's code uses 0.1).
            seed: seed of the Wiener increments.
            noise: ``False`` integrates the drift only.
            progress: show a progress bar over layers.

        Returns:
            States at layers ``start, ..., start + horizon``, float64.

        Raises:
            ValueError: for a start, horizon or dt out of range, or a wrong ``x0`` shape.
        """
        d = self.U.shape[1]
        if x0.ndim != 2 or x0.shape[1] != d:
            raise ValueError(f"x0 must be [batch, d_model={d}] (got {tuple(x0.shape)})")
        grid = self._grid(start, horizon, dt)
        gen = torch.Generator().manual_seed(seed)
        x = x0.detach().to(_F64).cpu().clone()
        out = [x.clone()]
        for i, ts in progress_iter(grid, enabled=progress, desc="Euler-Maruyama"):
            h_ref = self.reflection(i)
            if h_ref is not None:
                x = x @ h_ref
            for t, t_next in itertools.pairwise(ts):
                h = float(t_next - t)
                a = self.drift_matrix(float(t), i)
                step = x @ a.T * h
                if noise and self.alpha > 0:
                    dw = torch.randn(x.shape, generator=gen, dtype=_F64)
                    step += math.sqrt(self.diffusion(float(t)) * h) * dw
                x = x + step
            out.append(x.clone())
        return torch.stack(out, dim=1)

    def moments(
        self,
        mean0: Float[Tensor, " d_model"],
        cov0: Float[Tensor, "d_model d_model"],
        *,
        start: int,
        horizon: int,
        dt: float = 0.1,
    ) -> tuple[Float[Tensor, "step d_model"], Float[Tensor, "step d_model d_model"]]:
        """Mean and covariance of a Gaussian ensemble under the Fokker-Planck equation.

        Integrates ``dm/dt = A m`` and ``dC/dt = A C + C A^T + D(t) I`` with classical
        Runge-Kutta (4th order) on the same grid as :meth:`simulate`; a reflected segment
        starts with ``m -> H m``, ``C -> H C H`` (:meth:`reflection`).

        Returns:
            ``(means, covariances)`` at layers ``start, ..., start + horizon``.
        """
        d = self.U.shape[1]
        if mean0.shape != (d,) or cov0.shape != (d, d):
            raise ValueError(f"mean0 must be [{d}] and cov0 [{d}, {d}]")
        grid = self._grid(start, horizon, dt)
        m, c = mean0.detach().to(_F64).cpu(), cov0.detach().to(_F64).cpu()
        eye = torch.eye(d, dtype=_F64)
        means, covs = [m], [c]

        def rhs(t: float, i: int, m: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
            a = self.drift_matrix(t, i)
            ac = a @ c
            return a @ m, ac + ac.T + self.diffusion(t) * eye

        for i, ts in grid:
            h_ref = self.reflection(i)
            if h_ref is not None:
                m, c = h_ref @ m, h_ref @ c @ h_ref
            for t, t_next in itertools.pairwise(ts):
                h = float(t_next - t)
                t0, tm = float(t), float(t) + h / 2
                k1 = rhs(t0, i, m, c)
                k2 = rhs(tm, i, m + h / 2 * k1[0], c + h / 2 * k1[1])
                k3 = rhs(tm, i, m + h / 2 * k2[0], c + h / 2 * k2[1])
                k4 = rhs(float(t_next), i, m + h * k3[0], c + h * k3[1])
                m = m + h / 6 * (k1[0] + 2 * k2[0] + 2 * k3[0] + k4[0])
                c = c + h / 6 * (k1[1] + 2 * k2[1] + 2 * k3[1] + k4[1])
                c = (c + c.T) / 2
            means.append(m)
            covs.append(c)
        return torch.stack(means), torch.stack(covs)

    # persistence -----------------------------------------------------------------------------

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write one safetensors file (``U``, ``S``, ``times``) whose header carries ``alpha``,
        ``lam``, ``reflected`` and ``reflected_columns``; returns the path.

        The file is written to a temporary name and renamed into place.
        """
        tensors = {"U": self.U, "S": self.S, "times": self.times}
        fields = {
            "alpha": self.alpha,
            "lam": self.lam,
            "reflected": self.reflected,
            "reflected_columns": self.reflected_columns,
        }
        return save_tensors(path, FORMAT, VERSION, tensors, fields)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> LangevinModel:
        """Read a model written by :meth:`save`.

        The reflections are recomputed from ``U`` (the file's inputs determine the model); the
        recorded ones, when the header has them, must agree.

        Raises:
            FileNotFoundError: no file at ``path``.
            FormatError: the file is damaged or holds another result type or version, or its
                recorded reflections disagree with the ones its bases give.
        """
        fields, tensors = load_tensors(path, FORMAT, VERSION, "LangevinModel")
        with reading(path, "LangevinModel"):
            model = cls(
                U=tensors["U"],
                S=tensors["S"],
                times=tensors["times"],
                alpha=float(fields["alpha"]),
                lam=float(fields["lam"]),
            )
            # files written before the reflections were recorded lack the field
            stored = [int(k) for k in fields.get("reflected_columns", model.reflected_columns)]
        if stored != model.reflected_columns:
            raise FormatError(
                f"path {path} records reflected columns {stored} but its bases give "
                f"{model.reflected_columns}; expected a consistent LangevinModel file"
            )
        return model

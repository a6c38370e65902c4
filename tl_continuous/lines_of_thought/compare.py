"""How alike are two ensembles of points (e.g. extrapolated or simulated vs true pilots)?

Two readings:

* :func:`classifier_accuracy`: held-out accuracy of an L2-regularised logistic regression
  trained to tell the ensembles apart (k-fold, balanced classes). 0.5 means the classifier
  cannot tell them apart; 1.0 means they are separable.
* :func:`sliced_wasserstein` and :func:`gaussian_wasserstein`: 2-Wasserstein distances,
  optionally inside a few top singular directions ``basis [d_model, k]``.

:class:`EnsembleComparison` bundles them with a noise floor (the same distances between two
random halves of the reference ensemble).

>>> g = torch.Generator().manual_seed(0)
>>> a = torch.randn(400, 3, generator=g, dtype=torch.float64)
>>> b = torch.randn(400, 3, generator=g, dtype=torch.float64) + torch.tensor([3.0, 0, 0])
>>> classifier_accuracy(a, b) > 0.9
True
>>> abs(classifier_accuracy(a, a[torch.randperm(400, generator=g)] * -1) - 0.5) < 0.1
True
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

__all__ = [
    "EnsembleComparison",
    "classifier_accuracy",
    "gaussian_wasserstein",
    "sliced_wasserstein",
]

_F64 = torch.float64


def _project(x: Tensor, basis: Tensor | None) -> Tensor:
    x = x.detach().to(_F64).cpu()
    if basis is None:
        return x
    if basis.ndim != 2 or basis.shape[0] != x.shape[1]:
        raise ValueError(
            f"basis must be [d_model={x.shape[1]}, k] (got shape {tuple(basis.shape)})"
        )
    return x @ basis.detach().to(_F64).cpu()


def _fit_logistic(x: Tensor, y: Tensor, l2: float, max_iter: int) -> tuple[Tensor, Tensor]:
    w = torch.zeros(x.shape[1], dtype=_F64, requires_grad=True)
    b = torch.zeros((), dtype=_F64, requires_grad=True)
    opt = torch.optim.LBFGS(
        [w, b], max_iter=max_iter, line_search_fn="strong_wolfe", tolerance_grad=1e-9
    )

    def closure() -> Tensor:
        opt.zero_grad()
        logits = x @ w + b
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, y)
        loss = loss + l2 * (w * w).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    return w.detach(), b.detach()


def classifier_accuracy(
    a: Float[Tensor, "n_a dim"],
    b: Float[Tensor, "n_b dim"],
    *,
    basis: Float[Tensor, "dim k"] | None = None,
    n_folds: int = 5,
    l2: float = 1e-3,
    max_iter: int = 100,
    seed: int = 0,
) -> float:
    """Held-out accuracy of a logistic regression separating ``a`` from ``b``.

    Both ensembles are subsampled to the smaller size (so chance is 0.5), split into
    ``n_folds`` folds by row index (paired ensembles keep their pairs in the same fold),
    standardised on the training folds, fitted with L-BFGS on the mean log-loss plus
    ``l2 * |w|^2``, and scored on the held-out fold.

    Args:
        a: first ensemble.
        b: second ensemble.
        basis: optional ``[dim, k]`` directions to project on first.
        n_folds: number of folds (>= 2).
        l2: ridge penalty on the standardised weights.
        max_iter: L-BFGS iterations per fold.
        seed: seed of the subsampling and fold assignment.

    Returns:
        The mean held-out accuracy over folds.

    Raises:
        ValueError: for mismatched dimensions or too few points.
    """
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(
            f"a and b must be [n, dim] with the same dim (got {tuple(a.shape)}, {tuple(b.shape)})"
        )
    if n_folds < 2:
        raise ValueError(f"n_folds must be at least 2 (got {n_folds})")
    n = min(a.shape[0], b.shape[0])
    if n < 2 * n_folds:
        raise ValueError(f"each ensemble needs at least {2 * n_folds} points (got {n})")
    gen = torch.Generator().manual_seed(seed)
    xa = _project(a, basis)
    xb = _project(b, basis)
    if a.shape[0] > n:
        xa = xa[torch.randperm(a.shape[0], generator=gen)[:n]]
    if b.shape[0] > n:
        xb = xb[torch.randperm(b.shape[0], generator=gen)[:n]]
    fold = torch.randperm(n, generator=gen) % n_folds
    correct = 0.0
    for k in range(n_folds):
        train, test = fold != k, fold == k
        x_tr = torch.cat([xa[train], xb[train]])
        y_tr = torch.cat([torch.zeros(int(train.sum())), torch.ones(int(train.sum()))]).to(_F64)
        mu, sd = x_tr.mean(0), x_tr.std(0).clamp_min(1e-12)
        w, b0 = _fit_logistic((x_tr - mu) / sd, y_tr, l2, max_iter)
        pa = ((xa[test] - mu) / sd) @ w + b0
        pb = ((xb[test] - mu) / sd) @ w + b0
        correct += float((pa < 0).double().mean() + (pb > 0).double().mean()) / 2
    return correct / n_folds


def _quantiles(x: Tensor, q: Tensor) -> Tensor:
    """Linear-interpolation quantiles of each column of ``x`` at levels ``q`` (sorted once)."""
    xs = x.sort(dim=0).values
    if xs.shape[0] == q.shape[0]:
        return xs
    pos = q * (xs.shape[0] - 1)
    lo = pos.floor().long()
    hi = (lo + 1).clamp_max(xs.shape[0] - 1)
    w = (pos - lo)[:, None]
    return xs[lo] * (1 - w) + xs[hi] * w


def sliced_wasserstein(
    a: Float[Tensor, "n_a dim"],
    b: Float[Tensor, "n_b dim"],
    *,
    basis: Float[Tensor, "dim k"] | None = None,
    n_projections: int = 128,
    seed: int = 0,
) -> float:
    """Sliced 2-Wasserstein distance: root mean over random unit directions of the squared
    1-D 2-Wasserstein distance (quantile functions compared on a common grid).

    >>> x = torch.zeros(10, 2, dtype=torch.float64)
    >>> round(sliced_wasserstein(x, x + torch.tensor([1.0, 0.0])), 3) > 0
    True
    """
    xa, xb = _project(a, basis), _project(b, basis)
    if xa.shape[1] != xb.shape[1]:
        raise ValueError("a and b must have the same dimension")
    gen = torch.Generator().manual_seed(seed)
    dirs = torch.randn(xa.shape[1], n_projections, generator=gen, dtype=_F64)
    dirs = dirs / dirs.norm(dim=0, keepdim=True)
    m = max(xa.shape[0], xb.shape[0])
    q = (torch.arange(m, dtype=_F64) + 0.5) / m
    pa, pb = _quantiles(xa @ dirs, q), _quantiles(xb @ dirs, q)
    return float(((pa - pb) ** 2).mean().sqrt())


def _psd_sqrt(c: Tensor) -> Tensor:
    vals, vecs = torch.linalg.eigh(c)
    return (vecs * vals.clamp_min(0).sqrt()) @ vecs.T


def gaussian_wasserstein(
    a: Float[Tensor, "n_a dim"],
    b: Float[Tensor, "n_b dim"],
    *,
    basis: Float[Tensor, "dim k"] | None = None,
) -> float:
    """2-Wasserstein distance between the Gaussians with the ensembles' means and covariances,
    ``|m_a - m_b|^2 + tr(C_a + C_b - 2 (C_b^1/2 C_a C_b^1/2)^1/2)``, square-rooted.

    >>> x = torch.randn(500, 2, dtype=torch.float64)
    >>> round(gaussian_wasserstein(x, x + 2.0), 6)
    2.828427
    """
    xa, xb = _project(a, basis), _project(b, basis)
    if xa.shape[1] != xb.shape[1]:
        raise ValueError("a and b must have the same dimension")
    ma, mb = xa.mean(0), xb.mean(0)
    ca, cb = torch.cov(xa.T).reshape(xa.shape[1], -1), torch.cov(xb.T).reshape(xb.shape[1], -1)
    rb = _psd_sqrt(cb)
    cross = _psd_sqrt(rb @ ca @ rb)
    w2 = float(((ma - mb) ** 2).sum() + torch.trace(ca + cb - 2 * cross))
    return math.sqrt(max(w2, 0.0))


@dataclass
class EnsembleComparison:
    """A predicted ensemble against the true one.

    Attributes:
        accuracy: held-out classifier accuracy (0.5 = indistinguishable).
        sliced_w2: sliced 2-Wasserstein distance.
        gaussian_w2: Gaussian 2-Wasserstein distance.
        floor_sliced_w2: sliced distance between two random halves of the true ensemble.
        floor_gaussian_w2: Gaussian distance between the same halves.
        scale: root of the total variance of the true ensemble (in the same directions), to
            read the distances against.
        k: number of directions used (``dim`` when no basis was given).
    """

    accuracy: float
    sliced_w2: float
    gaussian_w2: float
    floor_sliced_w2: float
    floor_gaussian_w2: float
    scale: float
    k: int

    @classmethod
    def from_tensors(
        cls,
        predicted: Float[Tensor, "n_p d_model"],
        true: Float[Tensor, "n_t d_model"],
        *,
        basis: Float[Tensor, "d_model k"] | None = None,
        seed: int = 0,
        classifier_basis: bool = False,
    ) -> EnsembleComparison:
        """Compare ``predicted`` with ``true``.

        Args:
            predicted: extrapolated or simulated points.
            true: the true pilots at the same layer.
            basis: directions (e.g. the top singular vectors of the true layer) in which the
                distances are measured.
            seed: seed of the classifier folds and the random directions.
            classifier_basis: also restrict the classifier to ``basis`` (default: the
                classifier sees every dimension).
        """
        gen = torch.Generator().manual_seed(seed)
        perm = torch.randperm(true.shape[0], generator=gen)
        half = true.shape[0] // 2
        t1, t2 = true[perm[:half]], true[perm[half : 2 * half]]
        proj = _project(true, basis)
        return cls(
            accuracy=classifier_accuracy(
                predicted, true, basis=basis if classifier_basis else None, seed=seed
            ),
            sliced_w2=sliced_wasserstein(predicted, true, basis=basis, seed=seed),
            gaussian_w2=gaussian_wasserstein(predicted, true, basis=basis),
            floor_sliced_w2=sliced_wasserstein(t1, t2, basis=basis, seed=seed),
            floor_gaussian_w2=gaussian_wasserstein(t1, t2, basis=basis),
            scale=float(proj.var(0).sum().sqrt()),
            k=int(proj.shape[1]),
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain Python."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EnsembleComparison:
        """Inverse of :meth:`to_dict`."""
        return cls(**data)

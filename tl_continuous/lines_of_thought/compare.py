"""How alike are two ensembles of points (e.g. extrapolated or simulated vs true pilots)?

Two readings:

* :func:`classifier_accuracy`: held-out accuracy of an L2-regularised logistic regression
  trained to tell the ensembles apart (k-fold, balanced classes). 0.5 means the classifier
  cannot tell them apart; 1.0 means they are separable.
* :func:`classifier_test`: the same accuracy next to a permutation null computed with the
  same folds (:class:`ClassifierTest`), for ensembles that are not independent samples
  (held-out accuracy far below 0.5 is then an artefact, not a separation).
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
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from tl_continuous._io import load_json, reading, save_json

__all__ = [
    "FORMAT",
    "VERSION",
    "ClassifierTest",
    "EnsembleComparison",
    "classifier_accuracy",
    "classifier_test",
    "gaussian_wasserstein",
    "sliced_wasserstein",
]

FORMAT = "tl_continuous.lines_of_thought.ensemble_comparison"
VERSION = 1

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


def _prepare(
    a: Tensor, b: Tensor, basis: Tensor | None, n_folds: int, gen: torch.Generator
) -> tuple[Tensor, Tensor, Tensor]:
    """Checked, projected, subsampled ``(xa, xb, fold)`` with ``fold`` per row pair."""
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(
            f"a and b must be [n, dim] with the same dim (got {tuple(a.shape)}, {tuple(b.shape)})"
        )
    if n_folds < 2:
        raise ValueError(f"n_folds must be at least 2 (got {n_folds})")
    n = min(a.shape[0], b.shape[0])
    if n < 2 * n_folds:
        raise ValueError(f"each ensemble needs at least {2 * n_folds} points (got {n})")
    xa = _project(a, basis)
    xb = _project(b, basis)
    if a.shape[0] > n:
        xa = xa[torch.randperm(a.shape[0], generator=gen)[:n]]
    if b.shape[0] > n:
        xb = xb[torch.randperm(b.shape[0], generator=gen)[:n]]
    fold = torch.randperm(n, generator=gen) % n_folds
    return xa, xb, fold


def _cv_accuracy(xa: Tensor, xb: Tensor, fold: Tensor, l2: float, max_iter: int) -> float:
    n_folds = int(fold.max()) + 1
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

    0.5 means "indistinguishable" only for independent samples. If ``b`` was built from
    statistics of the whole of ``a`` (e.g. an extrapolation through bases fitted on the same
    pilots) their full-sample means can agree far more closely than sampling allows; the
    training folds' mean difference is then minus the held-out folds' one, so the classifier
    points the wrong way and the accuracy falls below 0.5 (about ``Phi(-sqrt(dim / (2 n_test)))``
    for exactly matched means). Use :func:`classifier_test` to read it against a permutation
    null with the same folds, and build such predictions from pilots not compared here.

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
    gen = torch.Generator().manual_seed(seed)
    xa, xb, fold = _prepare(a, b, basis, n_folds, gen)
    return _cv_accuracy(xa, xb, fold, l2, max_iter)


@dataclass(frozen=True)
class ClassifierTest:
    """Held-out classifier accuracy against a permutation null (see :func:`classifier_test`).

    Attributes:
        accuracy: the held-out accuracy, identical to :func:`classifier_accuracy`.
        null_accuracy: mean held-out accuracy over the label permutations (about 0.5).
        null_sd: standard deviation of the null accuracies.
        p_value: one-sided permutation p-value of a separation,
            ``(1 + #{null >= accuracy}) / (1 + n_permutations)``.
        p_below: the other tail, ``(1 + #{null <= accuracy}) / (1 + n_permutations)``; small
            means the accuracy is significantly *below* chance: the ensembles are not
            independent samples and ``accuracy`` must not be read as a distance.
        n_permutations: number of permutations.
    """

    accuracy: float
    null_accuracy: float
    null_sd: float
    p_value: float
    p_below: float
    n_permutations: int

    @property
    def excess(self) -> float:
        """``accuracy - null_accuracy`` (0 = no linear signal beyond the null)."""
        return self.accuracy - self.null_accuracy


def classifier_test(
    a: Float[Tensor, "n_a dim"],
    b: Float[Tensor, "n_b dim"],
    *,
    basis: Float[Tensor, "dim k"] | None = None,
    n_folds: int = 5,
    l2: float = 1e-3,
    max_iter: int = 100,
    seed: int = 0,
    n_permutations: int = 19,
) -> ClassifierTest:
    """:func:`classifier_accuracy` with a permutation null computed on the very same folds.

    Each permutation swaps ``a[i]`` and ``b[i]`` for a random half of the row pairs (pairs
    stay in their fold) and re-runs the cross-validation. When the ensembles were built from
    each other (matched full-sample means), the observed accuracy falls below 0.5 while the
    swapped labels break that match, so the null stays at 0.5: such data give a large
    ``p_value`` (no separation) and a small ``p_below`` (do not read the accuracy), whereas a
    real separation gives an accuracy far above the null and ``p_value = 1 / (1 + n)``.

    Args:
        a, b, basis, n_folds, l2, max_iter, seed: as in :func:`classifier_accuracy`.
        n_permutations: number of label permutations (>= 1; the smallest p-value is
            ``1 / (1 + n_permutations)``).

    >>> g = torch.Generator().manual_seed(0)
    >>> x, y = torch.randn(2, 400, 20, generator=g, dtype=torch.float64)
    >>> r = classifier_test(x, y - y.mean(0) + x.mean(0), n_permutations=9)  # matched means
    >>> r.accuracy < 0.45, r.p_value > 0.5, r.p_below  # below chance, not significant
    (True, True, 0.1)
    """
    if n_permutations < 1:
        raise ValueError(f"n_permutations must be at least 1 (got {n_permutations})")
    gen = torch.Generator().manual_seed(seed)
    xa, xb, fold = _prepare(a, b, basis, n_folds, gen)
    accuracy = _cv_accuracy(xa, xb, fold, l2, max_iter)
    perm_gen = torch.Generator().manual_seed(seed + 1)
    null = torch.empty(n_permutations, dtype=_F64)
    for r in range(n_permutations):
        swap = (torch.rand(xa.shape[0], generator=perm_gen) < 0.5)[:, None]
        pa, pb = torch.where(swap, xb, xa), torch.where(swap, xa, xb)
        null[r] = _cv_accuracy(pa, pb, fold, l2, max_iter)
    return ClassifierTest(
        accuracy=accuracy,
        null_accuracy=float(null.mean()),
        null_sd=float(null.std()) if n_permutations > 1 else 0.0,
        p_value=(1 + int((null >= accuracy).sum())) / (1 + n_permutations),
        p_below=(1 + int((null <= accuracy).sum())) / (1 + n_permutations),
        n_permutations=n_permutations,
    )


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
        null_accuracy: mean accuracy under the within-pair label permutations of
            :func:`classifier_test` (``None`` unless ``n_permutations`` was given).
        p_value: permutation p-value of a separation (``None`` likewise).
        p_below: permutation p-value of an accuracy below the null; small means ``accuracy``
            is an artefact of dependent ensembles (``None`` likewise).
    """

    accuracy: float
    sliced_w2: float
    gaussian_w2: float
    floor_sliced_w2: float
    floor_gaussian_w2: float
    scale: float
    k: int
    null_accuracy: float | None = None
    p_value: float | None = None
    p_below: float | None = None

    @classmethod
    def from_tensors(
        cls,
        predicted: Float[Tensor, "n_p d_model"],
        true: Float[Tensor, "n_t d_model"],
        *,
        basis: Float[Tensor, "d_model k"] | None = None,
        seed: int = 0,
        classifier_basis: bool = False,
        n_permutations: int = 0,
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
            n_permutations: if positive, also run :func:`classifier_test` with this many
                permutations (same folds, same accuracy) and fill the null fields.
        """
        gen = torch.Generator().manual_seed(seed)
        perm = torch.randperm(true.shape[0], generator=gen)
        half = true.shape[0] // 2
        t1, t2 = true[perm[:half]], true[perm[half : 2 * half]]
        proj = _project(true, basis)
        clf_basis = basis if classifier_basis else None
        test = (
            classifier_test(
                predicted, true, basis=clf_basis, seed=seed, n_permutations=n_permutations
            )
            if n_permutations > 0
            else None
        )
        return cls(
            accuracy=(
                test.accuracy
                if test is not None
                else classifier_accuracy(predicted, true, basis=clf_basis, seed=seed)
            ),
            sliced_w2=sliced_wasserstein(predicted, true, basis=basis, seed=seed),
            gaussian_w2=gaussian_wasserstein(predicted, true, basis=basis),
            floor_sliced_w2=sliced_wasserstein(t1, t2, basis=basis, seed=seed),
            floor_gaussian_w2=gaussian_wasserstein(t1, t2, basis=basis),
            scale=float(proj.var(0).sum().sqrt()),
            k=int(proj.shape[1]),
            null_accuracy=None if test is None else test.null_accuracy,
            p_value=None if test is None else test.p_value,
            p_below=None if test is None else test.p_below,
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain Python."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EnsembleComparison:
        """Inverse of :meth:`to_dict` (dicts written before the null fields existed load
        with them set to ``None``)."""
        return cls(**data)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write :meth:`to_dict` as tagged JSON, atomically; returns the path."""
        return save_json(path, FORMAT, VERSION, self.to_dict())

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> EnsembleComparison:
        """Read a file written by :meth:`save`.

        Raises:
            FileNotFoundError: no file at ``path``.
            FormatError: the file is damaged or holds another result type or version.
        """
        data = load_json(path, FORMAT, VERSION, "EnsembleComparison")
        with reading(path, "EnsembleComparison"):
            return cls.from_dict(data)

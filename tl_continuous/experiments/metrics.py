"""The paper's metrics, on plain tensors of probabilities along a sweep.

Every function takes a ``grid`` (the swept values: durations c, blend weights lambda, shifts,
scales) in increasing order and readout probabilities sampled on it, so they can be tested on
hand-made distributions and reused by every experiment.

>>> grid = torch.tensor([0.0, 0.5, 1.0])
>>> probs = torch.tensor([[0.9, 0.1], [0.4, 0.6], [0.2, 0.8]])
>>> argmax_transitions(probs, grid)
[(0.5, 0, 1)]
>>> first_argmax(probs, grid)
{0: 0.0, 1: 0.5}
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from jaxtyping import Float
from torch import Tensor

__all__ = [
    "EXCURSION_FLAG",
    "argmax_transitions",
    "blend_distance",
    "excursion",
    "first_argmax",
    "normalised_lipschitz",
    "peak_fraction",
    "peaked_counts",
    "total_variation",
]

EXCURSION_FLAG = 0.05
"""A curve that leaves its endpoint interval by at least this much is flagged."""


def _check_grid(grid: Tensor, n: int) -> None:
    if grid.ndim != 1 or grid.shape[0] != n:
        raise ValueError(f"grid must be 1-D with {n} points (got shape {tuple(grid.shape)})")
    if n > 1 and not bool((grid[1:] > grid[:-1]).all()):
        raise ValueError("grid must be strictly increasing")


def argmax_transitions(
    probs: Float[Tensor, "grid label"], grid: Float[Tensor, " grid"]
) -> list[tuple[float, int, int]]:
    """Where the argmax label changes along the grid.

    Returns:
        ``(grid value of the first point with the new argmax, old label, new label)`` for
        every change, in grid order. Ties go to the lower label index.
    """
    _check_grid(grid, probs.shape[0])
    top = probs.argmax(-1).tolist()
    return [
        (float(grid[i]), int(top[i - 1]), int(top[i]))
        for i in range(1, len(top))
        if top[i] != top[i - 1]
    ]


def first_argmax(
    probs: Float[Tensor, "grid label"], grid: Float[Tensor, " grid"]
) -> dict[int, float]:
    """For each label that is ever the argmax, the first grid value where it is.

    With c growing from small to 1 this is "the c at which each count becomes the argmax".
    """
    _check_grid(grid, probs.shape[0])
    out: dict[int, float] = {}
    for i, label in enumerate(probs.argmax(-1).tolist()):
        out.setdefault(int(label), float(grid[i]))
    return out


def peaked_counts(first: dict[int, float], expected: Sequence[int]) -> list[int]:
    """The expected counts (label indices) that become the argmax somewhere on the grid.

    >>> peaked_counts({1: 0.1, 2: 0.3, 4: 0.9}, [1, 2, 3, 4])
    [1, 2, 4]
    """
    return [k for k in expected if k in first]


def peak_fraction(first: dict[int, float], expected: Sequence[int]) -> float:
    """Fraction of ``expected`` counts that ever become the argmax (the paper's "peak").

    A model whose answer ignores the durations peaks one count at most, so the baseline to
    compare with is ``1 / len(expected)``.

    >>> peak_fraction({1: 0.1, 2: 0.3, 4: 0.9}, [1, 2, 3, 4])
    0.75
    """
    if not expected:
        raise ValueError("expected must name at least one count")
    return len(peaked_counts(first, expected)) / len(expected)


def normalised_lipschitz(
    values: Float[Tensor, "grid ..."], grid: Float[Tensor, " grid"]
) -> Float[Tensor, "..."]:
    """Largest finite-difference slope, with the grid rescaled to [0, 1].

    ``max_i |y[i+1] - y[i]| / (x[i+1] - x[i]) * (x[-1] - x[0])``: a straight line from 0 to 1
    gives 1, a constant 0, a jump of height h between neighbouring points of an evenly spaced
    grid of n points gives ``h * (n - 1)``. Probabilities need no further normalisation.

    >>> grid = torch.linspace(0, 2, 5)
    >>> normalised_lipschitz(grid / 2, grid).item()
    1.0
    """
    _check_grid(grid, values.shape[0])
    if values.shape[0] < 2:
        raise ValueError("values must have at least two grid points")
    v = values.double()
    g = grid.double()
    dx = (g[1:] - g[:-1]).reshape(-1, *([1] * (v.ndim - 1)))
    slopes = (v[1:] - v[:-1]).abs() / dx
    return (slopes.amax(0) * (g[-1] - g[0])).to(values.dtype)


def excursion(values: Float[Tensor, "grid ..."]) -> Float[Tensor, "..."]:
    """How far the curve leaves the interval spanned by its two endpoints (0 if never).

    Flag a curve when this is at least :data:`EXCURSION_FLAG`.

    >>> round(excursion(torch.tensor([0.2, 0.5, 0.1, 0.4])).item(), 6)
    0.1
    """
    if values.shape[0] < 2:
        raise ValueError("values must have at least two grid points")
    lo = torch.minimum(values[0], values[-1])
    hi = torch.maximum(values[0], values[-1])
    above = (values - hi).amax(0)
    below = (lo - values).amax(0)
    return torch.clamp(torch.maximum(above, below), min=0.0)


def total_variation(
    p: Float[Tensor, "*batch vocab"], q: Float[Tensor, "*batch vocab"]
) -> Float[Tensor, "*batch"]:
    """Total-variation distance ``0.5 * sum |p - q|`` (in float64 accumulation).

    >>> total_variation(torch.tensor([1.0, 0.0]), torch.tensor([0.5, 0.5])).item()
    0.5
    """
    return (0.5 * (p.double() - q.double()).abs().sum(-1)).to(p.dtype)


def blend_distance(
    probs: Float[Tensor, "grid vocab"],
    lambdas: Float[Tensor, " grid"],
    start: Float[Tensor, " vocab"],
    end: Float[Tensor, " vocab"],
) -> Float[Tensor, " grid"]:
    """Distance of each blended output from the same blend of the endpoint outputs.

    ``TV(P(lambda), (1 - lambda) P(0) + lambda P(1))``: zero everywhere when the model is
    linear in output space along the path ("linearity in output space").

    >>> start, end = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    >>> lam = torch.tensor([0.0, 0.5, 1.0])
    >>> probs = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]])
    >>> [round(x, 6) for x in blend_distance(probs, lam, start, end).tolist()]
    [0.0, 0.4, 0.0]
    """
    if lambdas.ndim != 1 or lambdas.shape[0] != probs.shape[0]:
        raise ValueError(
            f"lambdas must be 1-D with one value per row of probs ({probs.shape[0]}), "
            f"got shape {tuple(lambdas.shape)}"
        )
    lam = lambdas.double()[:, None]
    target = (1 - lam) * start.double() + lam * end.double()
    return total_variation(probs.double(), target).to(probs.dtype)

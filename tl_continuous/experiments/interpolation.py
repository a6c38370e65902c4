"""Continuity in space: input embeddings blended between two prompts of equal token length.

* :func:`interpolate_prompts`: any two prompts, any readout (default ``Yes``/``No``), with the
  distance of each blended output from the blend of the endpoint outputs.
* :func:`interpolation_dataset`: the bundled yes/no pairs (both / neither / first / second).
* :func:`boolean_interpolation`: ``{a} OP {b}`` with OP blended between two operators, for the
  four input pairs; :func:`boolean_all_pairs` does every pair of AND, OR, NAND, NOR, XOR.
  When two operators tokenise to different lengths (on SmolLM2 `` NAND`` and `` XOR`` are two
  tokens, `` AND`` one) the shorter one is preceded by extra spaces until the lengths agree;
  the exact prompts used are recorded.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any, Literal

import torch
from jaxtyping import Float
from torch import Tensor

from tl_continuous.backends.base import Model
from tl_continuous.experiments.batched import blend_sweep_probs, progress_iter
from tl_continuous.experiments.metrics import blend_distance
from tl_continuous.experiments.prompts import load_dataset
from tl_continuous.experiments.readouts import Readout
from tl_continuous.experiments.results import Sweep, SweepSet

__all__ = [
    "BOOLEAN_OPS",
    "BOOLEAN_TEMPLATE",
    "aligned_operator_prompts",
    "boolean_all_pairs",
    "boolean_interpolation",
    "interpolate_prompts",
    "interpolation_dataset",
    "lambda_grid",
]

BOOLEAN_OPS: dict[str, Any] = {
    "AND": lambda a, b: a & b,
    "OR": lambda a, b: a | b,
    "NAND": lambda a, b: 1 - (a & b),
    "NOR": lambda a, b: 1 - (a | b),
    "XOR": lambda a, b: a ^ b,
}
BOOLEAN_TEMPLATE = "{a} {op} {b} = "


def lambda_grid(steps: int = 100) -> Float[Tensor, " steps"]:
    """``linspace(0, 1, steps)``.

    >>> lambda_grid(3).tolist()
    [0.0, 0.5, 1.0]
    """
    if steps < 2:
        raise ValueError(f"steps must be >= 2 (got {steps})")
    return torch.linspace(0.0, 1.0, steps)


def interpolate_prompts(
    model: Model,
    prompt_a: str,
    prompt_b: str,
    lambdas: Float[Tensor, " grid"] | None = None,
    *,
    readout: Readout | None = None,
    method: Literal["lerp", "slerp"] = "lerp",
    experiment: str = "interpolation",
    expected: int | None = None,
    batch_size: int = 25,
    progress: bool = True,
    meta: dict[str, Any] | None = None,
) -> Sweep:
    """Readout probabilities along ``E(lambda) = (1 - lambda) E_a + lambda E_b``.

    Args:
        model: a model with a tokenizer.
        prompt_a, prompt_b: prompts of the same token length.
        lambdas: blend weights, increasing (default ``linspace(0, 1, 100)``).
        readout: labels to read (default: :meth:`Readout.yes_no`).
        method: ``"lerp"`` or ``"slerp"``.
        experiment, expected, meta: recorded in the result.
        batch_size: rows per forward pass.
        progress: progress bar.

    Returns:
        A :class:`Sweep` whose ``distance`` is the total-variation distance of the full
        next-token distribution at each lambda from the same blend of the distributions at
        lambda = 0 and 1 (computed in the same batched way).
    """
    lambdas = lambda_grid() if lambdas is None else lambdas
    n_a, n_b = len(model.to_str_tokens(prompt_a)), len(model.to_str_tokens(prompt_b))
    if n_a != n_b:
        raise ValueError(
            f"prompt_a and prompt_b must tokenise to the same length (got {n_a} and {n_b})"
        )
    readout = readout or Readout.yes_no(model)
    grid = torch.cat([torch.tensor([0.0, 1.0]), lambdas.detach().float().cpu()])
    probs = blend_sweep_probs(
        model,
        prompt_a,
        prompt_b,
        grid,
        method=method,
        batch_size=batch_size,
        progress=progress,
        desc=experiment,
    )
    ends, probs = probs[:2], probs[2:]
    distance = blend_distance(probs, lambdas.double(), ends[0], ends[1])
    return Sweep(
        experiment=experiment,
        model_name=str(model.cfg.model_name),
        prompt=prompt_a,
        prompt_b=prompt_b,
        knob="lambda",
        grid=lambdas.detach().double().cpu(),
        labels=readout.labels,
        probs={readout.rule: readout(probs).double().cpu()},
        expected=expected,
        distance=distance.double().cpu(),
        meta={"method": method, "readout": readout.describe(), **(meta or {})},
    )


def interpolation_dataset(
    model: Model,
    items: Sequence[dict[str, Any]] | None = None,
    lambdas: Float[Tensor, " grid"] | None = None,
    *,
    limit: int | None = None,
    progress: bool = True,
    **kwargs: Any,
) -> SweepSet:
    """:func:`interpolate_prompts` over yes/no pairs (default: the bundled pairs).

    Pairs whose prompts tokenise to different lengths on this model are skipped and listed
    in ``meta["skipped"]``.
    """
    items = list(load_dataset("interpolation") if items is None else items)[:limit]
    sweeps, skipped = [], []
    readout = kwargs.pop("readout", None) or Readout.yes_no(model)
    for it in progress_iter(items, progress, "interpolation"):
        try:
            sweeps.append(
                interpolate_prompts(
                    model,
                    it["prompt_a"],
                    it["prompt_b"],
                    lambdas,
                    readout=readout,
                    progress=False,
                    meta={k: it[k] for k in ("kind", "answer_a", "answer_b") if k in it},
                    **kwargs,
                )
            )
        except ValueError as err:
            skipped.append({"item": it, "reason": str(err)})
    if not sweeps:
        raise ValueError(f"no pair could be interpolated: {skipped}")
    return SweepSet("interpolation", sweeps, meta={"skipped": skipped})


def aligned_operator_prompts(
    model: Model,
    op_a: str,
    op_b: str,
    a: int,
    b: int,
    template: str = BOOLEAN_TEMPLATE,
    max_pad: int = 3,
) -> tuple[str, str]:
    """The two prompts ``template`` gives for ``op_a`` and ``op_b``, with spaces before the
    operator whose tokens are fewer until both prompts have the same token length.

    Raises:
        ValueError: no padding up to ``max_pad`` spaces equalises the lengths.
    """
    for pad_a, pad_b in itertools.product(range(max_pad + 1), repeat=2):
        pa = template.format(a=a, b=b, op=" " * pad_a + op_a)
        pb = template.format(a=a, b=b, op=" " * pad_b + op_b)
        if len(model.to_str_tokens(pa)) == len(model.to_str_tokens(pb)):
            return pa, pb
    raise ValueError(
        f"operators {op_a!r} and {op_b!r} cannot be aligned to one token length with up to "
        f"{max_pad} extra spaces in template {template!r}"
    )


def boolean_interpolation(
    model: Model,
    op_a: str,
    op_b: str,
    lambdas: Float[Tensor, " grid"] | None = None,
    *,
    template: str = BOOLEAN_TEMPLATE,
    method: Literal["lerp", "slerp"] = "lerp",
    batch_size: int = 25,
    progress: bool = True,
) -> SweepSet:
    """P("0") and P("1") along the blend of operator ``op_a`` into ``op_b``, for the inputs
    (0, 0), (0, 1), (1, 0), (1, 1).

    ``meta`` of each sweep holds the inputs and the truth values of both operators.
    """
    for op in (op_a, op_b):
        if op not in BOOLEAN_OPS:
            raise ValueError(f"operators must be among {sorted(BOOLEAN_OPS)} (got {op!r})")
    readout = Readout.binary(model)
    sweeps = []
    for a, b in progress_iter([(0, 0), (0, 1), (1, 0), (1, 1)], progress, f"{op_a}->{op_b}"):
        pa, pb = aligned_operator_prompts(model, op_a, op_b, a, b, template)
        truth_a, truth_b = BOOLEAN_OPS[op_a](a, b), BOOLEAN_OPS[op_b](a, b)
        sweeps.append(
            interpolate_prompts(
                model,
                pa,
                pb,
                lambdas,
                readout=readout,
                method=method,
                experiment="boolean",
                batch_size=batch_size,
                progress=False,
                meta={
                    "op_a": op_a,
                    "op_b": op_b,
                    "a": a,
                    "b": b,
                    "answer_a": str(truth_a),
                    "answer_b": str(truth_b),
                },
            )
        )
    return SweepSet("boolean", sweeps, meta={"op_a": op_a, "op_b": op_b, "template": template})


def boolean_all_pairs(
    model: Model,
    lambdas: Float[Tensor, " grid"] | None = None,
    *,
    ops: Sequence[str] = tuple(BOOLEAN_OPS),
    progress: bool = True,
    **kwargs: Any,
) -> SweepSet:
    """:func:`boolean_interpolation` for every unordered pair of ``ops`` (10 pairs of the
    five operators, 40 curves)."""
    sweeps: list[Sweep] = []
    for op_a, op_b in progress_iter(list(itertools.combinations(ops, 2)), progress, "boolean"):
        sweeps += boolean_interpolation(model, op_a, op_b, lambdas, progress=False, **kwargs).sweeps
    return SweepSet("boolean", sweeps, meta={"ops": list(ops)})

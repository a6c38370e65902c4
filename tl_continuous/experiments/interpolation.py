"""Continuity in space: input embeddings blended between two prompts of equal token length.

* :func:`interpolate_prompts`: any two prompts, any readout (default ``Yes``/``No``), with the
  distance of each blended output from the blend of the endpoint outputs.
* :func:`interpolation_dataset`: the bundled yes/no pairs (both / neither / first / second).
* :func:`boolean_interpolation`: ``{a} OP {b}`` with OP blended between two operators, for the
  four input pairs; :func:`boolean_all_pairs` does every pair of AND, OR, NAND, NOR, XOR.
  Only token-aligned operators are blended (:func:`operator_alignment`): both prompts have the
  same tokens except at the operator's, which sit at the same positions in equal number. On
  SmolLM2 `` AND``, `` OR``, `` NOR`` are one token and `` NAND`` (`` N`` + ``AND``), `` XOR``
  (`` X`` + ``OR``) two, so AND/OR/NOR blend with each other and NAND with XOR; a pair such as
  AND/NAND is refused (:func:`boolean_interpolation`) or skipped and reported
  (:func:`boolean_all_pairs`). ``align="pad"`` restores the old behaviour (spaces before the
  shorter operator until the lengths agree), which blends unrelated tokens (`` `` with `` N``).
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
    "operator_alignment",
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


def _operator_tokens(
    model: Model, template: str, op: str, a: int, b: int
) -> tuple[list[str], list[str], list[str]]:
    """The tokens of ``template``'s prompt for ``op`` split into (before the operator, the
    operator's own: those overlapping its characters, after it), a leading BOS included in
    the first part; e.g. ``(["0"], [" N", "AND"], [" ", "1", " =", " "])``."""
    prefix = template.split("{op}")[0].format(a=a, b=b)
    prompt = template.format(a=a, b=b, op=op)
    tokens = [str(t) for t in model.to_str_tokens(prompt)]
    text = "".join(tokens)
    if not text.endswith(prompt):
        raise ValueError(f"cannot locate the operator's tokens: {tokens} do not spell {prompt!r}")
    start, end = len(prefix), len(prefix) + len(op)
    parts: tuple[list[str], list[str], list[str]] = ([], [], [])
    pos = len(prompt) - len(text)  # negative over a leading BOS
    for tok in tokens:
        where = 0 if pos + len(tok) <= start else 2 if pos >= end else 1
        parts[where].append(tok)
        pos += len(tok)
    return parts


def operator_alignment(
    model: Model,
    op_a: str,
    op_b: str,
    template: str = BOOLEAN_TEMPLATE,
    inputs: Sequence[tuple[int, int]] = ((0, 0), (0, 1), (1, 0), (1, 1)),
) -> dict[str, Any]:
    """Whether ``op_a`` and ``op_b`` can be blended token by token in ``template``.

    They are *aligned* when, for every input pair, the two prompts tokenise to the same
    tokens outside the operator, and the operator's tokens (those overlapping its
    characters) sit at the same positions and are as many.

    Returns:
        ``{"op_a", "op_b", "aligned", "tokens": {op: [its tokens]}, "reason"}``; ``reason``
        is ``None`` when aligned, else names the operators and their token counts.

    Raises:
        ValueError: ``template`` does not hold ``{op}`` exactly once.
    """
    if template.count("{op}") != 1:
        raise ValueError(f"template must contain '{{op}}' exactly once (got {template!r})")
    tokens: dict[str, list[str]] = {}
    reason = None
    for a, b in inputs:
        parts = {op: _operator_tokens(model, template, op, a, b) for op in (op_a, op_b)}
        for op, (_, mid, _) in parts.items():
            tokens.setdefault(op, mid)
        (pre_a, mid_a, post_a), (pre_b, mid_b, post_b) = parts[op_a], parts[op_b]
        if len(mid_a) != len(mid_b):
            reason = (
                f"operators {op_a!r} ({len(mid_a)} token{'s' * (len(mid_a) != 1)}: "
                f"{list(mid_a)}) and {op_b!r} ({len(mid_b)} token{'s' * (len(mid_b) != 1)}: "
                f"{list(mid_b)}) do not tokenise to aligned tokens in {template!r}"
            )
            break
        if pre_a != pre_b or post_a != post_b:
            reason = (
                f"operators {op_a!r} and {op_b!r} change the tokens around them in {template!r} "
                f"(inputs {a}, {b}): {pre_a}/{post_a} against {pre_b}/{post_b}"
            )
            break
    return {
        "op_a": op_a,
        "op_b": op_b,
        "aligned": reason is None,
        "tokens": tokens,
        "reason": reason,
    }


def boolean_interpolation(
    model: Model,
    op_a: str,
    op_b: str,
    lambdas: Float[Tensor, " grid"] | None = None,
    *,
    template: str = BOOLEAN_TEMPLATE,
    align: Literal["tokens", "pad"] = "tokens",
    method: Literal["lerp", "slerp"] = "lerp",
    batch_size: int = 25,
    progress: bool = True,
) -> SweepSet:
    """P("0") and P("1") along the blend of operator ``op_a`` into ``op_b``, for the inputs
    (0, 0), (0, 1), (1, 0), (1, 1).

    Args:
        align: ``"tokens"`` (default) blends only token-aligned operators
            (:func:`operator_alignment`); ``"pad"`` puts spaces before the operator with fewer
            tokens until the prompts' lengths agree (:func:`aligned_operator_prompts`), which
            blends tokens that do not correspond: its curves measure the padding as much as
            the model.

    ``meta`` of each sweep holds the inputs, the truth values of both operators and ``align``.

    Raises:
        ValueError: an operator outside :data:`BOOLEAN_OPS`; with ``align="tokens"``, two
            operators that are not token-aligned (the message names both and their token
            counts).
    """
    for op in (op_a, op_b):
        if op not in BOOLEAN_OPS:
            raise ValueError(f"operators must be among {sorted(BOOLEAN_OPS)} (got {op!r})")
    if align not in ("tokens", "pad"):
        raise ValueError(f"align must be 'tokens' or 'pad' (got {align!r})")
    alignment = None
    if align == "tokens":
        alignment = operator_alignment(model, op_a, op_b, template)
        if not alignment["aligned"]:
            raise ValueError(
                f"{alignment['reason']}; blending them would mix unrelated tokens (pass "
                "align='pad' to pad the shorter operator with spaces anyway)"
            )
    readout = Readout.binary(model)
    sweeps = []
    for a, b in progress_iter([(0, 0), (0, 1), (1, 0), (1, 1)], progress, f"{op_a}->{op_b}"):
        if align == "pad":
            pa, pb = aligned_operator_prompts(model, op_a, op_b, a, b, template)
        else:
            pa, pb = (template.format(a=a, b=b, op=op) for op in (op_a, op_b))
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
                    "align": align,
                },
            )
        )
    meta: dict[str, Any] = {"op_a": op_a, "op_b": op_b, "template": template, "align": align}
    if alignment is not None:
        meta["tokens"] = alignment["tokens"]
    return SweepSet("boolean", sweeps, meta=meta)


def boolean_all_pairs(
    model: Model,
    lambdas: Float[Tensor, " grid"] | None = None,
    *,
    ops: Sequence[str] = tuple(BOOLEAN_OPS),
    template: str = BOOLEAN_TEMPLATE,
    align: Literal["tokens", "pad"] = "tokens",
    progress: bool = True,
    **kwargs: Any,
) -> SweepSet:
    """:func:`boolean_interpolation` for every unordered pair of ``ops`` that can be blended.

    With ``align="tokens"`` (default) only token-aligned pairs are run (on SmolLM2: AND/OR,
    AND/NOR, OR/NOR, NAND/XOR, 16 curves of the 10 pairs' 40); the others are not blended
    and are listed in ``meta["skipped"]`` with the operators' tokens and the reason.
    ``meta["pairs"]`` lists the pairs run. ``align="pad"`` runs all pairs, padding as
    :func:`aligned_operator_prompts` does.

    Raises:
        ValueError: no pair of ``ops`` is token-aligned (the message lists the reasons).
    """
    sweeps: list[Sweep] = []
    ran: list[list[str]] = []
    skipped: list[dict[str, Any]] = []
    pairs = list(itertools.combinations(ops, 2))
    for op_a, op_b in progress_iter(pairs, progress, "boolean"):
        if align == "tokens":
            alignment = operator_alignment(model, op_a, op_b, template)
            if not alignment["aligned"]:
                skipped.append(alignment)
                continue
        result = boolean_interpolation(
            model, op_a, op_b, lambdas, template=template, align=align, progress=False, **kwargs
        )
        sweeps += result.sweeps
        ran.append([op_a, op_b])
    if not sweeps:
        raise ValueError(
            f"no pair of {list(ops)} is token-aligned in {template!r}: "
            + "; ".join(str(s["reason"]) for s in skipped)
        )
    return SweepSet(
        "boolean",
        sweeps,
        meta={
            "ops": list(ops),
            "template": template,
            "align": align,
            "pairs": ran,
            "skipped": skipped,
        },
    )

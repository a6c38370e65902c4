"""Continuity in space: forward passes on blends of the input embeddings of two prompts.

``E(lambda) = (1 - lambda) E_a + lambda E_b`` (``"lerp"``), or the spherical interpolation
of each position's pair of embedding vectors (``"slerp"``; it falls back to ``lerp`` where
the two vectors are parallel, e.g. where the prompts share a token). The whole sweep of
lambdas is one batched forward; it composes with :func:`~.signal.continuous`.

>>> from tl_continuous.tiny import tiny_model
>>> model = tiny_model("rotary")
>>> a, b = torch.tensor([1, 2, 3]), torch.tensor([1, 7, 3])
>>> logits = blend_embeddings(model, a, b, torch.tensor([0.0, 0.5, 1.0]))
>>> logits.shape
torch.Size([3, 3, 50])
>>> torch.allclose(logits[2], model(b[None])[0], atol=1e-5)
True
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from jaxtyping import Float, Int
from torch import Tensor
from transformer_lens.hook_points import HookPoint

from tl_continuous.backends.base import Model

__all__ = ["blend_embeddings", "blend_vectors"]

BlendMethod = Literal["lerp", "slerp"]


def blend_vectors(
    a: Float[Tensor, "pos d_model"],
    b: Float[Tensor, "pos d_model"],
    lambdas: Float[Tensor, " n_lambda"],
    method: BlendMethod = "lerp",
) -> Float[Tensor, "n_lambda pos d_model"]:
    """Interpolate each row of ``a`` towards the same row of ``b`` (in float64, cast back).

    >>> a, b = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])
    >>> blend_vectors(a, b, torch.tensor([0.5]), "slerp")
    tensor([[[0.7071, 0.7071]]])
    >>> blend_vectors(a, b, torch.tensor([0.5]), "lerp")
    tensor([[[0.5000, 0.5000]]])
    """
    if method not in ("lerp", "slerp"):
        raise ValueError(f"method must be 'lerp' or 'slerp' (got {method!r})")
    x, y = a.to(torch.float64), b.to(torch.float64)
    lam = lambdas.to(device=a.device, dtype=torch.float64)[:, None, None]
    lerp = (1 - lam) * x + lam * y
    if method == "lerp":
        return lerp.to(a.dtype)
    norms = x.norm(dim=-1) * y.norm(dim=-1)
    cos = ((x * y).sum(-1) / norms.clamp_min(1e-300)).clamp(-1.0, 1.0)
    omega = torch.arccos(cos)[None, :, None]  # [1, pos, 1]
    sin = torch.sin(omega)
    parallel = sin.abs() < 1e-6
    safe = torch.where(parallel, torch.ones_like(sin), sin)
    slerp = (torch.sin((1 - lam) * omega) * x + torch.sin(lam * omega) * y) / safe
    return torch.where(parallel, lerp, slerp).to(a.dtype)


def _tokens(model: Model, prompt: str | Tensor, name: str) -> Tensor:
    if isinstance(prompt, str):
        tokens = model.to_tokens(prompt)
    elif isinstance(prompt, Tensor) and not prompt.is_floating_point():
        tokens = prompt if prompt.ndim == 2 else prompt[None]
    else:
        raise TypeError(f"{name} must be a string or an integer token tensor")
    if tokens.ndim != 2 or tokens.shape[0] != 1:
        raise ValueError(f"{name} must be one prompt (got token shape {tuple(tokens.shape)})")
    return tokens


def blend_embeddings(
    model: Model,
    prompt_a: str | Int[Tensor, " pos_a"] | Int[Tensor, "1 pos_a"],
    prompt_b: str | Int[Tensor, " pos_b"] | Int[Tensor, "1 pos_b"],
    lambdas: Float[Tensor, " n_lambda"] | Sequence[float | int],
    method: BlendMethod = "lerp",
) -> Float[Tensor, "n_lambda pos_a d_vocab"]:
    """Logits of the model on blends of two prompts' token embeddings, one batched forward.

    Args:
        model: a ``HookedTransformer`` or ``TransformerBridge`` (positional embeddings are
            added after the blend, as usual; a continuous signal installed on the model
            applies).
        prompt_a, prompt_b: strings (tokenised with the model's defaults) or token ids;
            they must tokenise to the same length.
        lambdas: blend weights; 0 gives ``prompt_a``, 1 gives ``prompt_b``.
        method: ``"lerp"`` or ``"slerp"``.

    Returns:
        ``[n_lambda, pos, d_vocab]`` logits.

    Raises:
        ValueError: the prompts tokenise to different lengths, ``lambdas`` is empty or not
            finite, or ``method`` is unknown.
    """
    if method not in ("lerp", "slerp"):
        raise ValueError(f"method must be 'lerp' or 'slerp' (got {method!r})")
    tokens_a = _tokens(model, prompt_a, "prompt_a")
    tokens_b = _tokens(model, prompt_b, "prompt_b").to(tokens_a.device)
    if tokens_a.shape != tokens_b.shape:
        raise ValueError(
            f"prompt_a and prompt_b must tokenise to the same length "
            f"(got {tokens_a.shape[1]} and {tokens_b.shape[1]} tokens)"
        )
    lam = torch.as_tensor(lambdas, dtype=torch.float64).reshape(-1)
    if lam.numel() == 0:
        raise ValueError("lambdas must not be empty")
    if not bool(torch.isfinite(lam).all()):
        raise ValueError(f"lambdas must be finite (got {lam.tolist()})")

    # embedded before the forward: on a TransformerBridge, embedding inside the hook would
    # fire hook_embed (and this hook) again
    device = next(model.embed.parameters()).device
    with torch.no_grad():
        pair = model.embed(torch.cat([tokens_a, tokens_b]).to(device))

    def replace(embed: Tensor, hook: HookPoint) -> Tensor:
        return blend_vectors(pair[0], pair[1], lam, method).to(embed.device, embed.dtype)

    batch = tokens_a.expand(lam.numel(), -1)
    return model.run_with_hooks(batch, fwd_hooks=[("hook_embed", replace)])

"""How good an SAE is, in the usual numbers: explained variance, L0, dead features, and the
next-token loss with the SAE spliced into the model.

Definitions (``x``: held-out activations, one row per token; ``x_hat = decode(encode(x))``):

* explained variance: ``1 - sum |x - x_hat|^2 / sum |x - mean(x)|^2`` (the mean over the
  held-out rows; SAELens logs the same quantity as ``metrics/explained_variance``);
* L0: the mean number of non-zero features per row;
* dead features: features that are zero on every held-out row (so "dead" is relative to
  how many rows were seen: :attr:`SAEQuality.n_tokens`);
* next-token loss (optional, :func:`spliced_loss`): the mean cross-entropy of the model's
  next-token predictions with the hook's activation replaced by its reconstruction
  (``ce_sae``), left alone (``ce_clean``) and replaced by zeros (``ce_zero``), on every
  position but the first ``skip_first`` (which are neither replaced nor scored); the loss
  recovered is ``(ce_zero - ce_sae) / (ce_zero - ce_clean)``.

>>> q = SAEQuality(explained_variance=0.8, l0=32.0, dead=10, d_sae=2048, n_tokens=1000,
...                mse=1.5, label="trained", hook_name="blocks.15.hook_resid_post")
>>> round(q.dead_fraction, 5), q.loss_recovered is None
(0.00488, True)
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

from tl_continuous._io import load_json, reading, save_json
from tl_continuous.features.sae import sae_hook_name

if TYPE_CHECKING:
    from tl_continuous.backends.base import Model

__all__ = ["FORMAT", "VERSION", "SAEQuality", "reconstruction_stats", "spliced_loss"]

FORMAT = "tl_continuous.features.quality"
VERSION = 1


@torch.no_grad()
def reconstruction_stats(
    sae: Any, x: Float[Tensor, "n_tokens d_in"], *, batch_size: int = 4096
) -> dict[str, Any]:
    """Explained variance, L0, MSE and the per-feature firing counts of ``sae`` on ``x``.

    Returns:
        ``{"explained_variance", "l0", "mse", "fired"}``; ``fired`` is a ``[d_sae]`` tensor
        of how many rows each feature is non-zero on; sums in float64.

    Raises:
        ValueError: ``x`` is not ``[n_tokens, d_in]`` with at least two rows.
    """
    d_in = int(sae.cfg.d_in)
    if x.ndim != 2 or x.shape[1] != d_in or x.shape[0] < 2:
        raise ValueError(f"x must be [n_tokens >= 2, d_in={d_in}] (got {tuple(x.shape)})")
    mean = x.to(torch.float64).mean(dim=0)
    err2 = total2 = active = 0.0
    fired = torch.zeros(int(sae.cfg.d_sae), dtype=torch.long)
    for i in range(0, x.shape[0], batch_size):
        chunk = x[i : i + batch_size].to(sae.device, sae.dtype)
        acts = sae.encode(chunk)
        recon = sae.decode(acts).to("cpu", torch.float64)
        rows = chunk.to("cpu", torch.float64)
        err2 += float(((rows - recon) ** 2).sum())
        total2 += float(((rows - mean) ** 2).sum())
        on = (acts != 0).cpu()
        active += float(on.sum())
        fired += on.sum(dim=0)
    n = int(x.shape[0])
    return {
        "explained_variance": 1.0 - err2 / total2,
        "l0": active / n,
        "mse": err2 / (n * d_in),
        "fired": fired,
    }


@torch.no_grad()
def spliced_loss(
    model: Model,
    sae: Any,
    tokens: Int[Tensor, "batch pos"],
    *,
    skip_first: int = 1,
    batch_size: int = 8,
) -> dict[str, float]:
    """Mean next-token cross-entropy with the SAE's hook left alone, reconstructed, zeroed.

    Args:
        model: the model the SAE reads (``HookedTransformer`` or ``TransformerBridge``).
        sae: the SAE; its hook is ``sae.cfg.metadata.hook_name``.
        tokens: ``[batch, pos]`` held-out token ids.
        skip_first: leading positions neither replaced nor scored (the attention sink).
        batch_size: sequences per forward pass.

    Returns:
        ``{"ce_clean", "ce_sae", "ce_zero"}`` in nats per predicted token.

    Raises:
        ValueError: ``skip_first`` leaves fewer than two positions.
    """
    hook = sae_hook_name(sae)
    if not 0 <= skip_first <= tokens.shape[1] - 2:
        raise ValueError(
            f"skip_first must leave at least two positions of {tokens.shape[1]} (got {skip_first})"
        )

    def replace(mode: str) -> Any:
        def fn(act: Tensor, hook: Any) -> Tensor:
            out = act.clone()
            tail = act[:, skip_first:]
            if mode == "sae":
                flat = tail.reshape(-1, tail.shape[-1]).to(sae.device, sae.dtype)
                new = sae.decode(sae.encode(flat)).reshape(tail.shape)
            else:
                new = torch.zeros_like(tail)
            out[:, skip_first:] = new.to(act.device, act.dtype)
            return out

        return fn

    totals = {"clean": 0.0, "sae": 0.0, "zero": 0.0}
    count = 0
    device = model.cfg.device
    for i in range(0, tokens.shape[0], batch_size):
        toks = tokens[i : i + batch_size].to(device)
        target = toks[:, skip_first + 1 :]
        for mode in totals:
            hooks = [] if mode == "clean" else [(hook, replace(mode))]
            with torch.inference_mode(), model.hooks(fwd_hooks=hooks):
                logits = model(toks)
            logp = logits[:, skip_first:-1].to(torch.float64).log_softmax(-1)
            totals[mode] -= float(logp.gather(-1, target[..., None]).sum())
        count += int(target.numel())
    return {f"ce_{mode}": value / count for mode, value in totals.items()}


@dataclass
class SAEQuality:
    """An SAE's quality on held-out activations.

    Attributes:
        explained_variance: ``1 - SSE / SST`` over the held-out rows.
        l0: mean number of active features per row.
        dead: features never active on the held-out rows.
        d_sae: the dictionary size.
        n_tokens: held-out rows the numbers come from.
        mse: mean squared error per coordinate.
        label: which SAE (``"trained"``, ``"random init (seed 0)"``).
        hook_name: where it reads the model.
        ce_clean, ce_sae, ce_zero: next-token loss (nats) with the hook left alone,
            reconstructed by the SAE, zeroed (:func:`spliced_loss`); ``None`` if not measured.
        metadata: JSON-safe facts (corpus, split, skipped positions).
    """

    explained_variance: float
    l0: float
    dead: int
    d_sae: int
    n_tokens: int
    mse: float
    label: str
    hook_name: str
    ce_clean: float | None = None
    ce_sae: float | None = None
    ce_zero: float | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.d_sae < 1 or self.n_tokens < 1:
            raise ValueError(
                f"d_sae and n_tokens must be positive (got {self.d_sae}, {self.n_tokens})"
            )
        if not 0 <= self.dead <= self.d_sae:
            raise ValueError(f"dead must be in [0, d_sae={self.d_sae}] (got {self.dead})")
        if not 0 <= self.l0 <= self.d_sae:
            raise ValueError(f"l0 must be in [0, d_sae={self.d_sae}] (got {self.l0})")
        for name in ("explained_variance", "mse"):
            if not math.isfinite(getattr(self, name)):
                raise ValueError(f"{name} must be finite (got {getattr(self, name)})")

    @property
    def dead_fraction(self) -> float:
        """Dead features as a fraction of ``d_sae``."""
        return self.dead / self.d_sae

    @property
    def loss_recovered(self) -> float | None:
        """``(ce_zero - ce_sae) / (ce_zero - ce_clean)``; ``None`` if not measured."""
        if self.ce_clean is None or self.ce_sae is None or self.ce_zero is None:
            return None
        return (self.ce_zero - self.ce_sae) / (self.ce_zero - self.ce_clean)

    @classmethod
    def measure(
        cls,
        sae: Any,
        acts: Float[Tensor, "n_tokens d_in"],
        *,
        label: str,
        model: Model | None = None,
        tokens: Int[Tensor, "batch pos"] | None = None,
        skip_first: int = 1,
        metadata: dict[str, Any] | None = None,
    ) -> SAEQuality:
        """The numbers of ``sae`` on held-out ``acts``; with ``model`` and ``tokens``, the
        spliced next-token loss too (:func:`spliced_loss`)."""
        stats = reconstruction_stats(sae, acts)
        loss: dict[str, float] = {}
        if (model is None) != (tokens is None):
            raise ValueError("give both model and tokens (for the spliced loss) or neither")
        if model is not None and tokens is not None:
            loss = spliced_loss(model, sae, tokens, skip_first=skip_first)
        return cls(
            explained_variance=float(stats["explained_variance"]),
            l0=float(stats["l0"]),
            dead=int((stats["fired"] == 0).sum()),
            d_sae=int(sae.cfg.d_sae),
            n_tokens=int(acts.shape[0]),
            mse=float(stats["mse"]),
            label=label,
            hook_name=sae_hook_name(sae),
            metadata=dict(metadata or {}),
            **loss,
        )

    def summary(self) -> dict[str, Any]:
        """The numbers, JSON-safe, with the dead fraction and the loss recovered."""
        return self.to_dict() | {
            "dead_fraction": self.dead_fraction,
            "loss_recovered": self.loss_recovered,
        }

    def to_dict(self) -> dict[str, Any]:
        """Plain dict; inverse of :meth:`from_dict`."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SAEQuality:
        return cls(**data)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """One JSON file with the format tag."""
        return save_json(path, FORMAT, VERSION, self.to_dict())

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> SAEQuality:
        """Read a file written by :meth:`save`."""
        data = load_json(path, FORMAT, VERSION, "SAEQuality")
        with reading(path, "SAEQuality"):
            return cls.from_dict(data)

"""The SAE: a SAELens ``SAE`` object, the bundled checkpoint, the random control, encoding.

The SAE is a `SAELens <https://github.com/decoderesearch/SAELens>`_ 6 object (``sae_lens.SAE``;
the bundled one is a ``TopKSAE``), read from a folder in SAELens' own format
(``cfg.json`` + ``sae_weights.safetensors``, what ``SAE.save_model`` writes and
``SAE.load_from_disk`` reads). Where it reads the model is recorded in its config:
``sae.cfg.metadata.hook_name`` (a TransformerLens hook name, the same on a
``HookedTransformer`` and a ``TransformerBridge``) and ``sae.cfg.metadata.model_name``.

The control is the same architecture with SAELens' own random initialisation, seeded
(:func:`random_sae_like`): every analysis of this package runs on both, so that a reader can
tell what the trained features show from what any dictionary of that shape would show.

``sae_lens`` is an optional dependency (``pip install -e '.[sae]'``); this module imports it
only when a function needs it.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

__all__ = [
    "CHECKPOINT_DIR",
    "decoder_directions",
    "encode",
    "load_sae",
    "random_sae_like",
    "require_sae_lens",
    "sae_hook_name",
]

CHECKPOINT_DIR = Path(__file__).parent / "checkpoint"
"""The bundled SAE (``tl-continuous train-sae`` writes it): SmolLM2-135M's residual stream
after block 15 (``blocks.15.hook_resid_post``), trained on the default corpus."""


def require_sae_lens() -> Any:
    """The ``sae_lens`` module.

    Raises:
        ModuleNotFoundError: SAELens is not installed; the message says what to install.
    """
    try:
        import sae_lens
    except ModuleNotFoundError as err:
        raise ModuleNotFoundError(
            "the SAE features need SAELens 6 (sae-lens, which supports TransformerLens 3.x): "
            "pip install -c constraints.txt -e '.[sae]'"
        ) from err
    return sae_lens


def load_sae(path: str | os.PathLike[str] | None = None, *, device: str = "cpu") -> Any:
    """A SAELens SAE from a folder in SAELens' format (default: the bundled checkpoint).

    Args:
        path: a folder holding ``cfg.json`` and ``sae_weights.safetensors``.
        device: where to put the SAE.

    Returns:
        The ``sae_lens.SAE`` (for the bundled checkpoint a ``TopKSAE``), in eval mode.

    Raises:
        FileNotFoundError: ``path`` holds no SAE (for the bundled one: run
            ``tl-continuous train-sae``).
        ModuleNotFoundError: SAELens is not installed.
    """
    folder = CHECKPOINT_DIR if path is None else Path(path)
    if not (folder / "cfg.json").is_file() or not (folder / "sae_weights.safetensors").is_file():
        raise FileNotFoundError(
            f"path {folder} holds no SAE (cfg.json and sae_weights.safetensors); "
            "`tl-continuous train-sae` writes the bundled one"
        )
    sae_lens = require_sae_lens()
    sae = sae_lens.SAE.load_from_disk(str(folder), device=device)
    sae.eval()
    return sae


def sae_hook_name(sae: Any) -> str:
    """The hook point the SAE reads (``sae.cfg.metadata.hook_name``).

    Raises:
        ValueError: the SAE's config does not name one.
    """
    name = getattr(getattr(sae.cfg, "metadata", None), "hook_name", None)
    if not isinstance(name, str) or not name:
        raise ValueError(
            "sae.cfg.metadata.hook_name must name the hook the SAE reads (got "
            f"{name!r}); set it, e.g. 'blocks.15.hook_resid_post'"
        )
    return name


def random_sae_like(sae: Any, seed: int = 0) -> Any:
    """The control: an SAE of ``sae``'s class and config, with SAELens' random initialisation.

    The weights come from the class's own ``initialize_weights`` under ``torch.manual_seed
    (seed)`` (the global generator is restored afterwards), so the control is reproducible.
    The config (architecture, ``d_sae``, ``k``, hook name) is copied, with
    ``metadata.control`` recording the seed; no activation normalisation is applied.

    Args:
        sae: the trained SAE.
        seed: the initialisation seed.
    """
    cfg = copy.deepcopy(sae.cfg)
    cfg.normalize_activations = "none"
    cfg.device = "cpu"
    cfg.metadata.control = f"random initialisation, seed {int(seed)}"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        control = type(sae)(cfg)
    control.eval()
    return control.to(sae.device)


@torch.no_grad()
def encode(
    sae: Any, x: Float[Tensor, "*batch d_in"], *, batch_size: int = 8192
) -> Float[Tensor, "*batch d_sae"]:
    """``sae.encode(x)``, without gradients, in chunks of ``batch_size`` rows, on the CPU.

    The SAE runs in its own dtype and device; the result is float32 on the CPU.

    Raises:
        ValueError: ``x``'s last dimension is not the SAE's ``d_in``.
    """
    d_in = int(sae.cfg.d_in)
    if x.ndim < 1 or x.shape[-1] != d_in:
        raise ValueError(f"x must be [..., d_in={d_in}] (got shape {tuple(x.shape)})")
    flat = x.reshape(-1, d_in)
    parts = [
        sae.encode(flat[i : i + batch_size].to(sae.device, sae.dtype)).to("cpu", torch.float32)
        for i in range(0, flat.shape[0], batch_size)
    ]
    out = torch.cat(parts) if parts else flat.new_zeros(0, int(sae.cfg.d_sae))
    return out.reshape(*x.shape[:-1], int(sae.cfg.d_sae))


@torch.no_grad()
def decoder_directions(sae: Any) -> Float[Tensor, "d_sae d_in"]:
    """The decoder's rows as unit vectors (float64, CPU): feature ``f``'s direction."""
    w = sae.W_dec.detach().to("cpu", torch.float64)
    return w / w.norm(dim=-1, keepdim=True).clamp(min=1e-12)

"""The testbed transformer: its config, the shipped checkpoint and how to load it.

The checkpoint lives in ``tl_continuous/testbed/checkpoint/``:

* ``model.safetensors``: the ``HookedTransformer`` state dict (fp32, under 1 MB);
* ``config.json``: the ``HookedTransformerConfig`` fields and the vocabulary's words;
* ``training.json``: the training record (seed, steps, time, held-out accuracy, sha256).

``tl-continuous train-testbed`` regenerates all three.

>>> model = load_testbed()
>>> model.cfg.model_name, model.cfg.d_vocab == len(VOCAB)
('counting-testbed', True)
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch

from tl_continuous.backends.base import Model
from tl_continuous.testbed.task import VOCAB

__all__ = [
    "CHECKPOINT_DIR",
    "MODEL_NAME",
    "build_model",
    "load_testbed",
    "state_dict_sha256",
    "testbed_config",
    "training_record",
]

MODEL_NAME = "counting-testbed"
CHECKPOINT_DIR = Path(__file__).parent / "checkpoint"


def testbed_config(**overrides: Any) -> dict[str, Any]:
    """``HookedTransformerConfig`` fields of the testbed model (2 layers, d_model 96, RoPE).

    >>> testbed_config()["positional_embedding_type"]
    'rotary'
    """
    fields: dict[str, Any] = {
        "model_name": MODEL_NAME,
        "n_layers": 2,
        "d_model": 96,
        "n_heads": 4,
        "d_head": 24,
        "d_mlp": 384,
        "d_vocab": len(VOCAB),
        "n_ctx": 64,
        "act_fn": "gelu",
        "normalization_type": "LN",
        "positional_embedding_type": "rotary",
        "rotary_dim": 24,
        "rotary_base": 10000,
        "rotary_adjacent_pairs": False,
        "default_prepend_bos": False,
        "device": "cpu",
    }
    return fields | overrides


def build_model(fields: dict[str, Any] | None = None, *, seed: int | None = None) -> Model:
    """A freshly initialised testbed ``HookedTransformer`` (random weights from ``seed``)."""
    from tl_continuous.backends import require_hooked

    require_hooked("the counting testbed is a HookedTransformer")
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    cfg = HookedTransformerConfig(**(fields or testbed_config()), seed=seed)
    return HookedTransformer(cfg)


def state_dict_sha256(model: torch.nn.Module) -> str:
    """A digest of every parameter and buffer: names, dtypes, shapes and bytes, in name order.

    >>> state_dict_sha256(load_testbed()) == training_record()["sha256"]
    True
    """
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().to("cpu").contiguous().reshape(-1)
        digest.update(f"{name}|{t.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


def training_record(folder: str | Path | None = None) -> dict[str, Any]:
    """The shipped (or a given folder's) training record: settings, timing, accuracy."""
    path = Path(folder or CHECKPOINT_DIR) / "training.json"
    return json.loads(path.read_text())


def _read_checkpoint(
    folder: str | Path | None = None,
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """The ``HookedTransformerConfig`` fields and the fp32 state dict of a testbed checkpoint.

    What :func:`load_testbed` and :func:`~.hf.load_testbed_hf` build their models from.

    Args:
        folder: a checkpoint folder (default: the one shipped in the package).

    Raises:
        FileNotFoundError: the folder lacks ``config.json`` or ``model.safetensors``.
        ValueError: the checkpoint was trained on another vocabulary.
    """
    from safetensors.torch import load_file

    folder = Path(folder or CHECKPOINT_DIR)
    config_path, weights_path = folder / "config.json", folder / "model.safetensors"
    for path in (config_path, weights_path):
        if not path.is_file():
            raise FileNotFoundError(
                f"folder must hold a testbed checkpoint; {path} is missing "
                "(regenerate with: tl-continuous train-testbed)"
            )
    saved = json.loads(config_path.read_text())
    if tuple(saved["vocabulary"]) != VOCAB.words:
        raise ValueError(f"the checkpoint in {folder} was trained on a different vocabulary")
    return testbed_config(**saved["hooked_transformer_config"]), load_file(weights_path)


def load_testbed(
    folder: str | Path | None = None,
    *,
    device: str | torch.device | None = None,
    dtype: torch.dtype = torch.float32,
) -> Model:
    """Load the trained counting model (no tokenizer: use :data:`~.task.VOCAB`), in eval mode.

    Args:
        folder: a checkpoint folder (default: the one shipped in the package).
        device: where to put the model (default: CPU).
        dtype: parameter dtype.

    Raises:
        FileNotFoundError: the folder lacks ``config.json`` or ``model.safetensors``.
        ImportError: TransformerLens 4 is installed (the checkpoint is a ``HookedTransformer``).
    """
    from tl_continuous.backends import require_hooked

    require_hooked("the counting testbed is a HookedTransformer checkpoint")
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    fields, state = _read_checkpoint(folder)
    fields |= {"dtype": dtype, "device": str(device) if device is not None else "cpu"}
    model = HookedTransformer(HookedTransformerConfig(**fields, init_weights=False))
    model.load_state_dict(state, strict=True)  # casts to dtype
    return model.eval()

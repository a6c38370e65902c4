"""Helpers of the SAE-feature tests: a tiny SAELens SAE on the tiny model's last block, and
the marker of tests that need SAELens (skipped without it, failed under CI=true)."""

from __future__ import annotations

import importlib.util
from typing import Any

import torch
from ci_requirements import requires

SAE_LENS = importlib.util.find_spec("sae_lens") is not None
needs_sae_lens = requires(SAE_LENS, "sae-lens (pip install -c constraints.txt -e '.[sae]')")
TINY_HOOK = "blocks.1.hook_resid_post"


def tiny_sae(d_in: int = 64, d_sae: int = 128, k: int = 8, seed: int = 1) -> Any:
    """A TopK SAE of SAELens on the tiny model's last block, with a non-zero encoder bias and
    decoder bias (so that encoding is not a plain projection)."""
    import sae_lens
    from sae_lens.saes.sae import SAEMetadata

    cfg = sae_lens.TopKSAEConfig(
        d_in=d_in,
        d_sae=d_sae,
        k=k,
        metadata=SAEMetadata(hook_name=TINY_HOOK, model_name="tiny"),
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        sae = sae_lens.TopKSAE(cfg)
        with torch.no_grad():
            sae.b_enc.normal_(0.0, 0.1)
            sae.b_dec.normal_(0.0, 0.1)
    return sae.eval()

"""The bridge path on whichever TransformerLens is installed (3.9 or 4.x).

``make test`` runs this file, with the other backend-agnostic tests, a second time in a
TransformerLens 4.3 environment (``make pytest-tl4``). TransformerLens 4 removed
``HookedTransformer``: everything here builds tiny random ``TransformerBridge`` models
(:func:`~tl_continuous.tiny.tiny_bridge`) and checks the bridge against the Hugging Face
route or against itself; nothing needs the bundled weights.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any

import pytest
import torch

import tl_continuous
from tl_continuous import Durations, LinesOfThought, continuous
from tl_continuous.backends import backend_name, transformer_lens_major
from tl_continuous.continuous.reference_hf import hf_continuous_logits
from tl_continuous.lines_of_thought.bases import TrajectoryBases
from tl_continuous.lines_of_thought.truncation import (
    truncation_kl_every_layer,
    truncation_kl_last_layer,
)
from tl_continuous.models import default_backend
from tl_continuous.tiny import tiny_bridge

TL4 = transformer_lens_major() >= 4
# modules that are HookedTransformer internals: they import TransformerLens 3 names
HOOKED_ONLY = {"tl_continuous.backends.hooked"}


@pytest.fixture(autouse=True)
def _one_thread() -> Any:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_default_backend_follows_the_installed_major() -> None:
    assert default_backend() == ("bridge" if TL4 else "hooked")


def test_every_module_imports() -> None:
    failed = {}
    for info in pkgutil.walk_packages(tl_continuous.__path__, "tl_continuous."):
        if info.name.endswith("__main__") or (TL4 and info.name in HOOKED_ONLY):
            continue
        try:
            importlib.import_module(info.name)
        except Exception as err:  # report every module that fails
            failed[info.name] = f"{type(err).__name__}: {err}"
    assert not failed, failed


@pytest.mark.skipif(not TL4, reason="TransformerLens 3 has HookedTransformer")
def test_hooked_only_functions_name_the_bridge_alternative(tmp_path: Any) -> None:
    from tl_continuous.models import load_hf_folder, load_model
    from tl_continuous.tiny import tiny_model

    with pytest.raises(ImportError, match=r"transformer-lens<4.*tiny_bridge\('learned'\)"):
        tiny_model("learned")
    with pytest.raises(ImportError, match=r"transformer-lens<4.*load_bridge_folder"):
        load_hf_folder(tmp_path)
    with pytest.raises(ImportError, match=r"transformer-lens<4.*testbed"):
        load_model("counting-testbed", backend="hooked")


def _durations(n: int) -> list[Durations]:
    gen = torch.Generator().manual_seed(1)
    return [
        Durations(0.1 + 0.8 * torch.rand(n, generator=gen)),  # fractional
        Durations(1.0 + 2.0 * torch.rand(n, generator=gen), start=3.5),  # above 1
        Durations.from_spans(n, [(1, n // 2)], value=0.25),
    ]


@torch.no_grad()
@pytest.mark.parametrize("kind", ["rotary", "rotary-partial"])  # the route is rotary-only
def test_continuous_forward_equals_the_hugging_face_route(kind: str) -> None:
    bridge = tiny_bridge(kind)
    assert backend_name(bridge) == "bridge"
    tokens = torch.tensor([[3, 7, 7, 7, 9, 11, 2, 5]])
    plain = bridge(tokens)
    for durations in _durations(tokens.shape[1]):
        with continuous(bridge, durations):
            ours = bridge(tokens)
        ref = hf_continuous_logits(bridge.original_model, tokens, durations)
        assert (ours - ref).abs().max() < 1e-4
        assert (ours - plain).abs().max() > 1e-3  # the durations do something
    assert torch.allclose(bridge(tokens), plain)  # and are gone afterwards


@torch.no_grad()
def test_learned_positions_unit_durations_are_the_plain_forward() -> None:
    bridge = tiny_bridge("learned")
    tokens = torch.tensor([[3, 7, 7, 7, 9, 11, 2, 5]])
    plain = bridge(tokens)
    with continuous(bridge, Durations(torch.ones(8))):
        assert torch.allclose(bridge(tokens), plain, atol=1e-5)
    with continuous(bridge, _durations(8)[0]):
        assert (bridge(tokens) - plain).abs().max() > 1e-3


@torch.no_grad()
def test_collection_reads_the_residual_stream() -> None:
    bridge = tiny_bridge("rotary")
    tokens = torch.randint(0, 50, (6, 5), generator=torch.Generator().manual_seed(0))
    lot = LinesOfThought.collect(bridge, tokens, batch_size=4, progress=False)
    n_layers = bridge.cfg.n_layers
    assert lot.trajectories.shape == (6, n_layers, bridge.cfg.d_model)
    _, cache = bridge.run_with_cache(tokens)
    for layer in range(n_layers):
        want = cache[f"blocks.{layer}.hook_resid_post"][:, -1]
        assert torch.allclose(lot.trajectories[:, layer].to(want.dtype), want, atol=1e-5)


@torch.no_grad()
def test_truncation_fast_path_equals_naive_recompute() -> None:
    bridge = tiny_bridge("rotary")
    tokens = torch.randint(0, 50, (70, 6), generator=torch.Generator().manual_seed(0))
    lot = LinesOfThought.collect(bridge, tokens, progress=False)
    bases = TrajectoryBases.from_ensemble(lot)
    fast = truncation_kl_every_layer(bridge, lot, bases, ks=[4, 16], progress=False)
    slow = truncation_kl_every_layer(bridge, lot, bases, ks=[4, 16], method="naive", progress=False)
    assert torch.allclose(fast.kl_mean, slow.kl_mean, atol=1e-5)
    last = truncation_kl_last_layer(bridge, lot, bases, ks=[4, 64], progress=False)
    assert bool(torch.isfinite(last.kl_mean).all())
    assert float(last.kl_mean[-1].max()) < 1e-6  # all 64 directions: nothing truncated


@torch.no_grad()
def test_batched_duration_sweep_equals_single_forwards() -> None:
    from tl_continuous.experiments.batched import duration_sweep_probs

    bridge = tiny_bridge("rotary")
    tokens = torch.tensor([[3, 7, 7, 7, 9, 11, 2]])
    cs = torch.linspace(0.1, 1.0, 5)
    rows = []
    for c in cs.tolist():
        with continuous(bridge, Durations.from_spans(7, [(1, 3)], value=c)):
            rows.append(bridge(tokens)[0, -1].softmax(-1))
    durations = Durations.from_spans(7, [(1, 3)], value=cs).values
    got = duration_sweep_probs(bridge, tokens, durations, batch_size=2, progress=False)
    assert torch.allclose(got, torch.stack(rows), atol=1e-5)


def test_patching_across_durations_restores_clean_after_the_last_attention() -> None:
    # TransformerLens 4.3's patching refuses a model with a submodule in training mode (the
    # continuous signal is one while installed)
    from tl_continuous.patching import patch_across_durations

    bridge = tiny_bridge("rotary")
    tokens = torch.tensor([[5, 9, 9, 9, 3, 7]])
    shrunk = Durations(torch.tensor([1.0, 0.3, 0.3, 0.3, 1.0, 1.0]))

    def metric(logits: torch.Tensor) -> torch.Tensor:
        return logits[0, -1, 11] - logits[0, -1, 2]

    with torch.no_grad():
        clean = float(metric(bridge(tokens)))
        with continuous(bridge, shrunk):
            corrupt = float(metric(bridge(tokens)))
    assert abs(clean - corrupt) > 1e-3
    mid = patch_across_durations(
        bridge, tokens, None, shrunk, metric, kind="resid_mid", progress=False
    )
    assert mid[-1, -1].item() == pytest.approx(clean, abs=1e-4)  # only the MLP follows

"""Shared fixtures.

Mechanics are tested on tiny random models (milliseconds, no files); behaviour on the
bundled SmolLM2-135M, loaded once per session.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any

import pytest
import torch

from tl_continuous.backends import BACKEND_NAMES
from tl_continuous.tiny import tiny_bridge, tiny_model

if TYPE_CHECKING:  # TransformerLens 4 has no HookedTransformer (make pytest-tl4)
    from transformer_lens import HookedTransformer


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist (``make pytest`` runs ``-n 2``) the cores are shared out among the
    workers: each worker's PyTorch, and each process a test starts, gets ``cpu_count //
    workers`` threads, not all of them (a demo subprocess beside a busy core: 16.7 s with two
    threads, 11.5 s with one)."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        threads = max(1, (os.cpu_count() or 1) // workers)
        torch.set_num_threads(threads)
        os.environ["OMP_NUM_THREADS"] = str(threads)  # for the processes a test starts


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under pytest-xdist, files with a slow test are handed out first: ``--dist loadfile``
    gives whole files in collection order, and a long file given out last (the report's, 80 s)
    left the other worker idle for most of a minute and a half."""
    if int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) <= 1:
        return
    slow_files = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow_files)  # stable: order kept within


def build_tiny(backend: str, kind: str = "rotary", **kw: Any) -> Any:
    """A tiny model of the kind on the backend: ``tiny_model`` (``"hooked"``) or
    ``tiny_bridge`` (``"bridge"``); same keywords (``n_layers``, ``dtype``, ``seed``)."""
    if backend == "hooked":
        return tiny_model(kind, **kw)  # type: ignore[arg-type]
    if backend == "bridge":
        return tiny_bridge(kind, **kw)  # type: ignore[arg-type]
    raise ValueError(f"unknown backend {backend!r}")


@pytest.fixture
def tiny_rotary() -> HookedTransformer:
    """Llama-like: RMS norm, gated MLP, rotary, grouped-query attention (4 q / 2 kv heads)."""
    return tiny_model("rotary")


@pytest.fixture
def tiny_rotary_partial() -> HookedTransformer:
    """NeoX-like: rotary on half of each head, adjacent-pair layout, LayerNorm."""
    return tiny_model("rotary-partial")


@pytest.fixture
def tiny_learned() -> HookedTransformer:
    """GPT-2-like: learned absolute position table."""
    return tiny_model("learned")


@pytest.fixture
def tiny_nopos() -> HookedTransformer:
    """One layer, no positional information (all-zero position table)."""
    return tiny_model("nopos", n_layers=1)


# --- the same tiny models on both backends (HookedTransformer and TransformerBridge) ----------
# The fixtures above stay HookedTransformer-only (tests of other modules use them); these run a
# test once per backend.


@pytest.fixture(params=BACKEND_NAMES)
def backend(request: pytest.FixtureRequest) -> str:
    """``"hooked"`` or ``"bridge"``: the test runs once per backend."""
    return str(request.param)


@pytest.fixture
def make_tiny(backend: str) -> Callable[..., Any]:
    """A builder with ``tiny_model``'s signature for the test's backend."""
    return partial(build_tiny, backend)


@pytest.fixture
def any_rotary(make_tiny: Callable[..., Any]) -> Any:
    """``tiny_rotary`` on each backend (the bridge wraps a Hugging Face Llama)."""
    return make_tiny("rotary")


@pytest.fixture
def any_learned(make_tiny: Callable[..., Any]) -> Any:
    """``tiny_learned`` on each backend (the bridge wraps a Hugging Face GPT-2)."""
    return make_tiny("learned")


@pytest.fixture
def any_nopos(make_tiny: Callable[..., Any]) -> Any:
    """``tiny_nopos`` (one layer, no positions) on each backend."""
    return make_tiny("nopos", n_layers=1)


@pytest.fixture(scope="session")
def smollm2() -> HookedTransformer:
    """The bundled SmolLM2-135M-Instruct, fp32, on the CPU (converted once, then cached)."""
    from tl_continuous.models import load_model

    torch.set_grad_enabled(True)
    return load_model("smollm2-135m", device="cpu")

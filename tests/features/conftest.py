"""Fixtures of the SAE-feature tests (helpers: ``sae_testing``)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import torch

from features.sae_testing import tiny_sae


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Small tensors: one thread avoids oversubscription on a shared machine (a 64 x 64 matmul
    took 20 ms with two threads under load). Opt in with ``pytest.mark.usefixtures``."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def sae() -> Any:
    """A tiny TopK SAE (SAELens) reading ``blocks.1.hook_resid_post`` of the tiny models."""
    return tiny_sae()

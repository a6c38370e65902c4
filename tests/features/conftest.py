"""Fixtures of the SAE-feature tests (helpers: ``sae_testing``)."""

from __future__ import annotations

from typing import Any

import pytest

from features.sae_testing import tiny_sae


@pytest.fixture
def sae() -> Any:
    """A tiny TopK SAE (SAELens) reading ``blocks.1.hook_resid_post`` of the tiny models."""
    return tiny_sae()

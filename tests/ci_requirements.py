"""No silent skips in CI: a test that needs a tool skips on a developer's machine without it,
but fails under ``CI=true``, where ``make test`` must have installed everything.

>>> import os
>>> requires(True, "chromium")(len) is len
True
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Any

import pytest

__all__ = ["in_ci", "requires"]


def in_ci() -> bool:
    """Whether this run is CI's (``CI=true`` in the environment)."""
    return os.environ.get("CI", "").lower() == "true"


def requires(available: bool, what: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorate a test that needs ``what``: run it when ``available``; otherwise skip it, or,
    under ``CI=true``, fail it with a message naming what is missing."""

    def decorate(test: Callable[..., Any]) -> Callable[..., Any]:
        if available:
            return test
        if not in_ci():
            return pytest.mark.skip(reason=f"{what} is not installed (make test installs it)")(test)

        @functools.wraps(test)
        def missing(*args: Any, **kwargs: Any) -> None:
            pytest.fail(f"{what} is missing under CI=true; make test must install it")

        return missing

    return decorate

"""The one progress-bar helper: tqdm, imported only when a bar is shown.

>>> list(progress(range(3), enabled=False))
[0, 1, 2]
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, TypeVar

__all__ = ["progress", "progress_bar"]

T = TypeVar("T")


def progress(
    iterable: Iterable[T], *, enabled: bool = True, total: int | None = None, desc: str = ""
) -> Iterable[T]:
    """``iterable`` wrapped in a tqdm bar when ``enabled``, else ``iterable`` itself."""
    if not enabled:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc)


def progress_bar(
    iterable: Iterable[Any] | None = None,
    *,
    total: int | None = None,
    desc: str = "",
    enabled: bool = True,
) -> Any:
    """A tqdm bar object (``update()``, ``set_postfix()``, ``close()``), silent when not
    ``enabled``; over ``iterable`` if one is given."""
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, disable=not enabled)

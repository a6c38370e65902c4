"""Several circuitsvis views on one page with circuitsvis' bundled script inlined once.

Each circuitsvis view's ``local_src`` inlines the whole bundle (~1.3 MB) in a module script
that also draws the view, so a page of ``n`` views would carry ``n`` copies. The bundle is an
IIFE that assigns ``var CircuitsVis``: inlined once as a classic script it defines a global, and
each view then needs only its own root ``<div>`` and its ``CircuitsVis.render(...)`` call. The
page still renders offline: nothing is loaded from elsewhere.

>>> src = ('<div id="circuits-vis-1"/>\\n<script crossorigin type="module">\\n'
...        'var CircuitsVis=(()=>{})();\\nCircuitsVis.render("circuits-vis-1", X, {})\\n</script>')
>>> bundle, call = split_view(src)
>>> bundle
'<script>\\nvar CircuitsVis=(()=>{})();\\n</script>'
>>> call.startswith('<div id="circuits-vis-1"/>') and call.endswith('X, {})\\n</script>')
True
>>> "var CircuitsVis" in call
False
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["inline_views", "split_view"]

_OPEN = '<script crossorigin type="module">'
_RENDER = "CircuitsVis.render("


def split_view(local_src: str) -> tuple[str, str]:
    """Split a view's ``local_src`` into the bundle and the view's own markup.

    Args:
        local_src: ``RenderedHTML.local_src`` of a circuitsvis view.

    Returns:
        ``(bundle, view)``: the bundle as a classic ``<script>`` (it defines the global
        ``CircuitsVis``), and the view's root ``<div>`` with a script that only renders it.

    Raises:
        ValueError: ``local_src`` does not have the layout of circuitsvis' inlined views.
    """
    head, opened, rest = local_src.partition(_OPEN)
    bundle, rendered, call = rest.rpartition(_RENDER)
    if not opened or not rendered or "var CircuitsVis" not in bundle:
        raise ValueError(
            "local_src must be a circuitsvis view with its bundled script inlined "
            "(a module script defining CircuitsVis, then CircuitsVis.render(...))"
        )
    return f"<script>{bundle}</script>", f'{head}<script type="module">{_RENDER}{call}'


def inline_views(views: Sequence[Any]) -> list[str]:
    """HTML for each of ``views``, the bundled script inlined only in the first.

    Args:
        views: circuitsvis ``RenderedHTML`` objects (anything with a ``local_src`` string).

    Returns:
        One ``<div>`` per view, in order; placed on one page in that order, every view
        renders offline.

    Raises:
        TypeError: a view has no ``local_src``.
    """
    out: list[str] = []
    for i, view in enumerate(views):
        src = getattr(view, "local_src", None)
        if not isinstance(src, str):
            raise TypeError(
                f"views[{i}] must be a circuitsvis RenderedHTML with local_src "
                f"(got {type(view).__name__})"
            )
        bundle, own = split_view(src)
        # circuitsvis writes its root as "<div .../>", which HTML does not close: the wrapper
        # closes it, so views placed side by side do not nest
        out.append(f"<div>{bundle if i == 0 else ''}{own}</div>")
    return out

"""circuitsvis views under durations, on tiny models.

The views of a model run on both backends (``any_rotary`` / ``any_learned`` of
``conftest.py``): ``HookedTransformer`` and ``TransformerBridge``.
"""

from __future__ import annotations

import json
import re

import pytest
import torch

from tl_continuous.continuous.durations import Durations
from tl_continuous.continuous.signal import continuous
from tl_continuous.views.attention import (
    duration_attention_view,
    duration_labels,
    durations_view,
    save_html,
)

TOKENS = ["The", "apple", "apple", "is", "red"]


def _props(src: str) -> dict:
    """The JSON props passed to CircuitsVis.render in a view's source."""
    match = re.search(r"CircuitsVis\.\w+,\s*(\{.*\})\s*\)\s*</script>", src, re.S)
    assert match is not None
    return json.loads(match.group(1))


def test_labels_carry_durations() -> None:
    d = Durations(torch.tensor([1.0, 0.5, 0.5, 1.0, 2.0]))
    assert duration_labels(TOKENS, d) == [
        "The·1.00",
        "apple·0.50",
        "apple·0.50",
        "is·1.00",
        "red·2.00",
    ]
    with pytest.raises(ValueError, match="str_tokens"):
        duration_labels(TOKENS[:3], d)
    with pytest.raises(ValueError, match="row"):
        duration_labels(TOKENS, d, row=1)


def test_attention_view_is_the_continuous_pattern(any_rotary, tmp_path) -> None:
    model = any_rotary
    d = Durations(torch.tensor([1.0, 0.5, 0.5, 1.0, 1.0]))
    ids = torch.tensor([[3, 7, 7, 9, 11]])
    view = duration_attention_view(model, ids, d, layer=1, heads=[0, 2], str_tokens=TOKENS)
    props = _props(view.local_src)
    assert props["tokens"] == duration_labels(TOKENS, d)
    with continuous(model, d):
        _, cache = model.run_with_cache(ids)
    expected = cache["blocks.1.attn.hook_pattern"][0, [0, 2]]
    torch.testing.assert_close(torch.tensor(props["attention"]), expected, atol=1e-6, rtol=0)
    _, plain = model.run_with_cache(ids)
    assert not torch.allclose(expected, plain["blocks.1.attn.hook_pattern"][0, [0, 2]])
    assert not hasattr(model, "continuous")  # the signal was removed

    path = save_html(view, tmp_path / "a" / "attn.html")
    html = path.read_text(encoding="utf-8")
    assert json.dumps("apple·0.50") in html  # labels travel as JSON strings
    assert "var CircuitsVis=" in html  # the bundled script is inlined
    assert "unpkg.com" not in html and "cdn" not in html.lower().split("<script")[0]


def test_attention_view_rejects_bad_input(any_learned) -> None:
    model = any_learned
    d = Durations(torch.ones(3))
    ids = torch.tensor([[1, 2, 3]])
    with pytest.raises(ValueError, match="layer"):
        duration_attention_view(model, ids, d, layer=5, str_tokens=["a", "b", "c"])
    with pytest.raises(ValueError, match="heads"):
        duration_attention_view(model, ids, d, layer=0, heads=[99], str_tokens=["a", "b", "c"])
    with pytest.raises(ValueError, match="str_tokens"):
        duration_attention_view(model, ids, d, layer=0)
    with pytest.raises(ValueError, match="positions"):
        duration_attention_view(model, torch.tensor([[1, 2]]), d, layer=0, str_tokens=list("abc"))
    assert not hasattr(model, "continuous")


def test_durations_view_and_save(tmp_path) -> None:
    d = Durations(torch.tensor([1.0, 0.5, 0.25, 1.0, 1.0]))
    view = durations_view(TOKENS, d)
    props = _props(view.local_src)
    assert props["tokens"] == TOKENS
    assert props["values"] == [1.0, 0.5, 0.25, 1.0, 1.0]
    assert props["maxValue"] == 1.0 and props["minValue"] == 0.0
    html = save_html(view, tmp_path / "d.html").read_text(encoding="utf-8")
    assert "var CircuitsVis=" in html
    with pytest.raises(TypeError, match="local_src"):
        save_html("<div/>", tmp_path / "x.html")


def test_inline_views_carries_the_bundle_once(tiny_rotary) -> None:
    from tl_continuous.views.html import inline_views, split_view

    d = Durations(torch.tensor([1.0, 0.5, 0.5, 1.0, 2.0]))
    views = [
        duration_attention_view(
            tiny_rotary, torch.tensor([[1, 2, 3, 4, 5]]), d, layer=0, str_tokens=TOKENS
        ),
        durations_view(TOKENS, d),
    ]
    parts = inline_views(views)
    page = "\n".join(parts)
    assert page.count("var CircuitsVis=") == 1 and "var CircuitsVis=" in parts[0]
    for view, part in zip(views, parts, strict=True):
        assert _props(part) == _props(view.local_src)  # each view keeps its own render call
        assert split_view(view.local_src)[1] in part
    assert len(page) < len(views[0].local_src) + len(views[1].local_src) - 1_000_000
    with pytest.raises(TypeError, match=r"views\[1\]"):
        inline_views([views[0], "<div/>"])
    with pytest.raises(ValueError, match="local_src"):
        split_view("<div>not a circuitsvis view</div>")

"""The nnsight backend: ``continuous()`` and ``LinesOfThought.collect`` on nnsight models.

On tiny random models (``NNsight`` around :func:`~tl_continuous.tiny.tiny_hf`, the Hugging Face
model that :func:`~tl_continuous.tiny.tiny_bridge` wraps, same weights) and on the bundled
SmolLM2-135M (``load_model(backend="nnsight")``, a ``LanguageModel``): continuous logits and
ensembles equal the ``TransformerBridge``'s, the signal's HookPoints are read and edited
inside a trace, and nothing is left behind, after success or an exception.

nnsight is an optional extra: without it these tests skip on a developer's machine and fail
under ``CI=true`` (``make test`` installs it).
"""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path
from typing import Any

import pytest
import torch
from ci_requirements import in_ci, requires

from tl_continuous import Durations, LinesOfThought, continuous, install_continuous
from tl_continuous.backends import backend_for, backend_name, hf_attention
from tl_continuous.continuous.signal import remove_continuous
from tl_continuous.tiny import tiny_bridge, tiny_hf

HAVE_NNSIGHT = importlib.util.find_spec("nnsight") is not None
NEEDS_NNSIGHT = "nnsight (pip install -c constraints.txt -e '.[nnsight]')"
if not HAVE_NNSIGHT and not in_ci():
    pytest.skip(f"{NEEDS_NNSIGHT} is not installed", allow_module_level=True)

KINDS = ["rotary", "rotary-partial", "learned"]


@requires(HAVE_NNSIGHT, NEEDS_NNSIGHT)
def test_nnsight_is_installed() -> None:
    import nnsight

    assert nnsight.__version__


def _nnsight(hf: Any) -> Any:
    import nnsight

    return nnsight.NNsight(hf)


def _padded(n: int = 3, pos: int = 7, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids of a tiny model with left padding in the first row."""
    gen = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, 50, (n, pos), generator=gen)
    mask = torch.ones_like(tokens)
    mask[0, :2] = 0
    return tokens, mask


def _hook_state(hf: Any) -> dict[str, tuple[Any, ...]]:
    """Every module's hooks, submodule names and forward slot (what an install may touch)."""
    return {
        name: (
            tuple(m._forward_hooks),
            tuple(m._forward_pre_hooks),
            tuple(m._modules),
            m.__dict__.get("forward"),
        )
        for name, m in hf.named_modules()
    }


# ------------------------------------------------------------------------- tiny models
def test_the_backend_is_chosen_from_the_class_and_nnsight_is_imported_only_where_used() -> None:
    assert backend_name(_nnsight(tiny_hf())) == "nnsight"
    import tl_continuous

    at_import = []  # module-level imports of nnsight (it patches every object on import)
    for path in Path(tl_continuous.__file__).parent.rglob("*.py"):
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            if any(name.split(".")[0] == "nnsight" for name in names):
                at_import.append(f"{path.name}:{node.lineno}")
    assert at_import == []


@torch.no_grad()
@pytest.mark.parametrize("route", ["eager", "sdpa"])
@pytest.mark.parametrize("kind", KINDS)
def test_continuous_forward_equals_the_bridge(kind: str, route: str) -> None:
    bridge, lm = tiny_bridge(kind), _nnsight(tiny_hf(kind))
    backend_for(lm).set_attention_route(lm, route)
    tokens, mask = _padded()
    real = mask.bool()
    durations = Durations(0.2 + 1.5 * torch.rand(3, 7, generator=torch.Generator().manual_seed(1)))
    with continuous(bridge, durations):
        ref = bridge(tokens, attention_mask=mask)
    with continuous(lm, durations):
        called = lm(tokens, attention_mask=mask).logits
        with lm.trace(tokens, attention_mask=mask):
            traced = lm.output.logits.save()
    assert float((called - ref)[real].abs().max()) < 1e-5
    assert float((traced - ref)[real].abs().max()) < 1e-5
    plain = bridge(tokens, attention_mask=mask)
    assert float((plain - ref)[real].abs().max()) > 1e-3  # the durations do something


@torch.no_grad()
def test_durations_and_positions_are_read_and_edited_inside_a_trace() -> None:
    lm = _nnsight(tiny_hf("rotary"))
    tokens = torch.tensor([[1, 2, 3, 4, 5]])
    given = Durations(torch.tensor([1.0, 0.5, 2.0, 1.0, 0.25]))
    other = torch.tensor([[0.3, 1.7, 0.9, 1.1, 2.0]])
    with continuous(lm, given):
        with lm.trace(tokens):
            seen = lm.continuous.hook_durations.output.save()
            lm.continuous.hook_durations.output = other.clone()
            positions = lm.continuous.hook_positions.output.save()
            edited = lm.output.logits.save()
        with lm.trace(tokens):
            lm.continuous.hook_positions.output = 2 * lm.continuous.hook_positions.output
            doubled = lm.output.logits.save()
    assert torch.equal(seen, given.values)
    assert torch.allclose(positions, other.cumsum(-1))
    with continuous(lm, Durations(other)):
        assert torch.allclose(edited, lm(tokens).logits, atol=1e-6)
    with continuous(lm, Durations(2 * given.values)):  # rotary: shift-invariant
        assert torch.allclose(doubled, lm(tokens).logits, atol=1e-5)


@torch.no_grad()
def test_nothing_is_left_behind_after_success_or_an_exception() -> None:
    lm = _nnsight(tiny_hf("rotary"))
    hf = lm._module
    before, children = _hook_state(hf), dict(lm._child_map)
    tokens = torch.tensor([[1, 2, 3, 4]])

    def unchanged() -> bool:
        return (
            _hook_state(hf) == before
            and dict(lm._child_map) == children
            and not hasattr(lm, "continuous")
            and hf.config._attn_implementation == "eager"
            and not any(m in hf_attention._SOURCES for m in hf.modules())
        )

    with continuous(lm, torch.ones(4)):
        lm(tokens)
        assert not unchanged()
    assert unchanged()
    with pytest.raises(RuntimeError, match="in the block"), continuous(lm, torch.ones(4)):
        raise RuntimeError("in the block")
    assert unchanged()
    with (
        pytest.raises(Exception, match="durations cover 3 tokens"),
        continuous(lm, torch.ones(3)),
        lm.trace(tokens),
    ):
        lm.output.save()
    assert unchanged()
    hf.config._attn_implementation = "flash_attention_2"  # cannot carry the bias
    with pytest.raises(ValueError, match="'flash_attention_2'"):
        install_continuous(lm, torch.ones(4))  # fails after the signal was attached
    hf.config._attn_implementation = "eager"
    assert unchanged()
    assert (lm(tokens).logits - tiny_hf("rotary")(tokens).logits).abs().max() < 1e-6


def test_install_and_remove_like_the_other_backends() -> None:
    lm = _nnsight(tiny_hf("rotary"))
    handle = install_continuous(lm, torch.ones(3))
    assert backend_for(lm).attached_signal(lm) is handle.signal
    with pytest.raises(ValueError, match="already has a continuous signal"):
        install_continuous(lm, torch.ones(3))
    assert remove_continuous(lm) and not remove_continuous(lm)
    with pytest.raises(ValueError, match="layers must be in"):
        install_continuous(lm, torch.ones(3), layers=[2])
    with pytest.raises(ValueError, match="not the Envoy of a submodule"):
        install_continuous(lm.model, torch.ones(3))
    with pytest.raises(NotImplementedError, match="backend='bridge'"):
        backend_for(lm).kv_prefix(lm, torch.tensor([[1, 2]]))
    restore = backend_for(lm).set_attention_route(lm, "sdpa")
    assert backend_for(lm).attention_route(lm) == "sdpa"
    restore()
    assert backend_for(lm).attention_route(lm) == "eager"


@torch.no_grad()
@pytest.mark.parametrize("kind", ["rotary", "learned"])
@pytest.mark.parametrize("hook", ["resid_pre", "resid_mid", "resid_post"])
def test_ensemble_equals_the_bridge(kind: str, hook: Any) -> None:
    bridge, lm = tiny_bridge(kind), _nnsight(tiny_hf(kind))
    tokens, mask = _padded(n=5)
    kw: dict[str, Any] = {"attention_mask": mask, "batch_size": 3, "progress": False}
    kw |= {"hook": hook, "include_final_norm": True}
    ref = LinesOfThought.collect(bridge, tokens, **kw)
    ours = LinesOfThought.collect(lm, tokens, **kw)
    assert ours.layer_names == ref.layer_names
    assert torch.equal(ours.pilot_positions, ref.pilot_positions)
    err = (ours.trajectories - ref.trajectories).norm(dim=-1) / ref.trajectories.norm(dim=-1)
    assert float(err.max()) < 1e-6


@torch.no_grad()
def test_collection_under_durations_and_into_shards(tmp_path: Any) -> None:
    bridge, lm = tiny_bridge("rotary"), _nnsight(tiny_hf("rotary"))
    tokens, mask = _padded(n=5)
    durations = Durations(0.3 + torch.rand(2, 7, generator=torch.Generator().manual_seed(2)))
    kw: dict[str, Any] = {"batch_size": 2, "progress": False}
    with continuous(bridge, durations):
        ref = LinesOfThought.collect(bridge, tokens[:2], attention_mask=mask[:2], **kw)
    with continuous(lm, durations):
        ours = LinesOfThought.collect(lm, tokens[:2], attention_mask=mask[:2], **kw)
    assert torch.allclose(ours.trajectories, ref.trajectories, rtol=1e-6, atol=1e-6)
    kw["attention_mask"] = mask
    sharded = LinesOfThought.collect(lm, tokens, shard_dir=tmp_path / "shards", **kw)
    assert torch.equal(sharded.trajectories, LinesOfThought.collect(lm, tokens, **kw).trajectories)
    assert sharded.metadata["model_config"]["model_type"] == "llama"


def test_unreadable_hooks_and_models_are_named() -> None:
    lm = _nnsight(tiny_hf("rotary-partial"))  # GPT-NeoX: parallel attention and MLP
    with pytest.raises(ValueError, match="hook_resid_mid"):
        LinesOfThought.collect(lm, torch.tensor([[1, 2, 3]]), hook="resid_mid", progress=False)
    with pytest.raises(ValueError, match="d_vocab=50"):
        LinesOfThought.collect(lm, torch.tensor([[1, 2, 99]]), progress=False)
    with pytest.raises(ValueError, match="Hugging Face causal LM"):
        install_continuous(_nnsight(torch.nn.Linear(2, 2)), torch.ones(3))


def test_load_model_refuses_what_nnsight_cannot_load() -> None:
    from tl_continuous.models import load_model

    with pytest.raises(ValueError, match="backend='nnsight'"):
        load_model("counting-testbed", backend="nnsight")


# --------------------------------------------------------------------------- SmolLM2
PROMPTS = [
    "The capital of France is",
    'Question: In the sentence "apple apple apple apple", how many times is apple mentioned?',
]


@pytest.fixture(scope="module")
def smollm2_nnsight() -> Any:
    from tl_continuous.models import load_model

    return load_model("smollm2-135m", backend="nnsight")


@pytest.fixture(scope="module")
def smollm2_bridge() -> Any:
    from tl_continuous.models import load_model

    return load_model("smollm2-135m", backend="bridge", device="cpu")


def _padded_prompts(lm: Any) -> tuple[torch.Tensor, torch.Tensor]:
    rows = [torch.tensor(lm.tokenizer(p)["input_ids"]) for p in PROMPTS]
    n = max(len(r) for r in rows)
    tokens = torch.full((len(rows), n), int(lm.tokenizer.pad_token_id))
    mask = torch.zeros(len(rows), n, dtype=torch.long)
    for i, row in enumerate(rows):
        tokens[i, n - len(row) :], mask[i, n - len(row) :] = row, 1
    return tokens, mask


@pytest.mark.model
@torch.no_grad()
def test_smollm2_continuous_forward_equals_the_bridge(
    smollm2_nnsight: Any, smollm2_bridge: Any
) -> None:
    import nnsight

    lm, bridge = smollm2_nnsight, smollm2_bridge
    assert isinstance(lm, nnsight.LanguageModel) and backend_name(lm) == "nnsight"
    tokens, mask = _padded_prompts(lm)
    real = mask.bool()
    gen = torch.Generator().manual_seed(1)
    n = tokens.shape[1]
    for durations in (  # row 1 is the longer prompt: unpadded
        Durations(0.1 + 0.8 * torch.rand(2, n, generator=gen)),
        Durations(1.0 + 2.0 * torch.rand(2, n, generator=gen), start=3.5),
    ):
        with continuous(bridge, durations):
            ref = bridge(tokens, attention_mask=mask)
        with continuous(lm, durations), lm.trace(tokens, attention_mask=mask):
            ours = lm.output.logits.save()
        assert float((ours - ref)[real].abs().max()) < 1e-5


@pytest.mark.model
@torch.no_grad()
def test_smollm2_ensemble_equals_the_bridge(smollm2_nnsight: Any, smollm2_bridge: Any) -> None:
    tokens = torch.randint(100, 4000, (6, 10), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(tokens)
    mask[:2, :3] = 0
    kw: dict[str, Any] = {"attention_mask": mask, "batch_size": 6, "progress": False}
    kw["include_final_norm"] = True
    ref = LinesOfThought.collect(smollm2_bridge, tokens, **kw)
    ours = LinesOfThought.collect(smollm2_nnsight, tokens, **kw)
    assert ours.layer_names == ref.layer_names and ours.n_layers == 31
    err = (ours.trajectories - ref.trajectories).norm(dim=-1) / ref.trajectories.norm(dim=-1)
    assert float(err.max()) < 1e-6

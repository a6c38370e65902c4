"""use_linear_layout: the per-forward weight copies become no-ops, outputs unchanged."""

from __future__ import annotations

import pytest
import torch
from transformer_lens.components import GatedMLP

from tl_continuous.tiny import tiny_model
from tl_continuous.weight_layout import use_linear_layout


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_outputs_are_bit_for_bit_the_same(dtype) -> None:
    model = tiny_model("rotary").to(dtype)
    tokens = torch.tensor([[3, 1, 4, 1, 5], [9, 2, 6, 5, 3]])
    before = model(tokens)
    params = {k: v.detach().clone() for k, v in model.state_dict().items()}
    n = use_linear_layout(model)
    assert n == 4 * model.cfg.n_layers + 1
    assert torch.equal(model(tokens), before)
    for k, v in model.state_dict().items():  # same names, shapes, values, dtypes
        assert torch.equal(v, params[k]) and v.dtype == params[k].dtype
    assert use_linear_layout(model) == 0  # idempotent


def test_the_copied_weights_are_now_views_of_themselves() -> None:
    model = tiny_model("rotary")
    use_linear_layout(model)
    mlp = model.blocks[0].mlp
    assert isinstance(mlp, GatedMLP)
    for w in (mlp.W_gate, mlp.W_in, mlp.W_out, model.unembed.W_U):
        assert w.T.contiguous().data_ptr() == w.data_ptr()  # .contiguous() copies nothing
    W_O = model.blocks[0].attn.W_O
    assert W_O.permute(2, 0, 1).is_contiguous()


def test_plain_mlp_and_learned_positions_are_left_alone_where_not_copied() -> None:
    model = tiny_model("learned")  # GPT-2-like: plain MLP (addmm), not re-laid
    tokens = torch.tensor([[1, 2, 3]])
    before = model(tokens)
    assert use_linear_layout(model) == model.cfg.n_layers + 1  # W_O per layer, W_U
    assert model.blocks[0].mlp.W_in.is_contiguous()
    assert torch.equal(model(tokens), before)


def test_training_still_works_after_relayout() -> None:
    model = tiny_model("rotary")
    use_linear_layout(model)
    loss = model(torch.tensor([[1, 2, 3, 4]]), return_type="loss")
    loss.backward()
    assert model.unembed.W_U.grad is not None
    assert model.unembed.W_U.grad.shape == model.unembed.W_U.shape


def test_rejects_what_is_not_a_hooked_transformer() -> None:
    # under the suite's jaxtyping+beartype checking the annotation catches it first
    with pytest.raises(TypeError, match=r"model must be a HookedTransformer|parameter 'model'"):
        use_linear_layout(torch.nn.Linear(2, 2))  # type: ignore[arg-type]


@pytest.mark.model
def test_smollm2_is_loaded_with_the_linear_layout(smollm2) -> None:
    assert smollm2.unembed.W_U.T.is_contiguous()
    assert all(block.mlp.W_gate.T.is_contiguous() for block in smollm2.blocks)

"""The counting testbed as a Hugging Face GPT-NeoX model, and as a ``TransformerBridge``.

The shipped checkpoint is a ``HookedTransformer`` state dict. Its architecture is a sequential
(not parallel) GPT-NeoX: LayerNorm with bias, exact-gelu MLP with biases, attention with
biases, rotary on the whole head in GPT-NeoX's rotate-half layout, untied unembedding. The
one thing GPT-NeoX lacks is the unembedding bias ``b_U``, which the testbed trained to
non-zero values: :func:`load_testbed_hf` swaps ``lm_head`` for a biased ``nn.Linear``.

Weight layout (TransformerLens -> Hugging Face):

* ``W_Q``, ``W_K``, ``W_V`` ``[head, d_model, d_head]`` -> the fused
  ``query_key_value.weight`` ``[head * 3 * d_head, d_model]``, interleaved per head
  (``Q_h, K_h, V_h`` for each head ``h``); the biases likewise;
* ``W_O`` ``[head, d_head, d_model]`` -> ``dense.weight`` ``[d_model, head * d_head]``;
* ``W_in``, ``W_out``, ``W_U`` are transposed into ``nn.Linear`` weights.

Rotary angles: Hugging Face computes ``position * inv_freq``, TransformerLens
``position / freq`` (both in float32; the checkpoint stores TransformerLens' float32
``cos``/``sin`` tables, which a float64 ``HookedTransformer`` loads as they are). The two
differ in the last bits of the angles (~1e-6 in ``cos``/``sin``), enough to move logits by a
few 1e-5; :class:`TestbedRotaryEmbedding` computes them the TransformerLens way, bit for bit
the shipped tables at integer positions.

>>> from tl_continuous.testbed.task import VOCAB
>>> bridge = load_testbed_bridge()
>>> logits = bridge(VOCAB.encode("<bos> pear apple . apple how-many apple")[None])
>>> VOCAB.decode([int(logits[0, -1].argmax())])
'2'
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import torch
from torch import Tensor, nn
from transformers.models.gpt_neox.modeling_gpt_neox import GPTNeoXRotaryEmbedding

from tl_continuous.testbed.task import VOCAB

if TYPE_CHECKING:
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

__all__ = [
    "ARCHITECTURE",
    "TestbedRotaryEmbedding",
    "hf_config_of",
    "load_testbed_bridge",
    "load_testbed_hf",
]

ARCHITECTURE = "GPTNeoXForCausalLM"


class TestbedRotaryEmbedding(GPTNeoXRotaryEmbedding):
    """GPT-NeoX's rotary module with TransformerLens' angle arithmetic.

    ``angle = position / base ** (k / (rotary_dim / 2))`` in float32 whatever the dtype, as
    ``AbstractAttention.calculate_sin_cos_rotary`` built the shipped float32 tables. Same call
    and outputs as :class:`GPTNeoXRotaryEmbedding`, so real-valued ``position_ids``
    (continuous positions) work as before.
    """

    __test__ = False  # not a pytest class

    def __init__(self, config: GPTNeoXConfig, rotary_dim: int, base: float) -> None:
        super().__init__(config)
        self.rotary_dim = rotary_dim
        self.base = base

    @torch.no_grad()
    def forward(self, x: Tensor, position_ids: Tensor) -> tuple[Tensor, Tensor]:
        k = torch.arange(self.rotary_dim // 2, dtype=torch.float32, device=x.device)
        freq = self.base ** (k / (self.rotary_dim / 2))
        freq = torch.cat((freq, freq))  # GPT-NeoX's rotate-half layout
        angles = position_ids[..., None].to(torch.float32) / freq
        return angles.cos().to(x.dtype), angles.sin().to(x.dtype)


def _check_convertible(fields: dict[str, Any]) -> None:
    """Refuse a checkpoint whose config GPT-NeoX cannot express exactly."""
    expected = {
        "normalization_type": "LN",
        "positional_embedding_type": "rotary",
        "act_fn": "gelu",
        "rotary_adjacent_pairs": False,
    }
    for key, value in expected.items():
        if fields.get(key) != value:
            raise ValueError(
                f"the testbed config has {key}={fields.get(key)!r}; the GPT-NeoX conversion "
                f"needs {value!r}"
            )
    if fields["d_model"] != fields["n_heads"] * fields["d_head"]:
        raise ValueError("GPT-NeoX needs d_model == n_heads * d_head")
    for key in ("gated_mlp", "parallel_attn_mlp", "attn_only", "final_rms"):
        if fields.get(key):
            raise ValueError(f"the GPT-NeoX conversion does not support {key}=True")
    if fields.get("use_attn_scale", True) is False or "attn_scale" in fields:
        raise ValueError("the GPT-NeoX conversion needs the default attention scale sqrt(d_head)")


def _rotary(fields: dict[str, Any]) -> tuple[int, float]:
    """``(rotary_dim, base)`` of the testbed config (TransformerLens' defaults if unset)."""
    rotary_dim = int(fields.get("rotary_dim") or fields["d_head"])
    return rotary_dim, float(fields.get("rotary_base", 10000))


_EAGER: dict[str, Any] = {"attn_implementation": "eager"}


def hf_config_of(fields: dict[str, Any]) -> GPTNeoXConfig:
    """The ``GPTNeoXConfig`` equivalent to the testbed's ``HookedTransformerConfig`` fields.

    >>> from tl_continuous.testbed.model import testbed_config
    >>> config = hf_config_of(testbed_config())
    >>> config.use_parallel_residual, config.rope_parameters["partial_rotary_factor"]
    (False, 1.0)
    """
    from transformers import GPTNeoXConfig

    _check_convertible(fields)
    config = GPTNeoXConfig(
        vocab_size=fields["d_vocab"],
        hidden_size=fields["d_model"],
        num_hidden_layers=fields["n_layers"],
        num_attention_heads=fields["n_heads"],
        intermediate_size=fields["d_mlp"],
        hidden_act="gelu",  # exact erf gelu, as TransformerLens' "gelu"
        max_position_embeddings=fields["n_ctx"],
        rope_parameters={
            "rope_type": "default",
            "rope_theta": float(_rotary(fields)[1]),
            "partial_rotary_factor": _rotary(fields)[0] / fields["d_head"],
        },
        layer_norm_eps=fields.get("eps", 1e-5),
        use_parallel_residual=False,
        attention_bias=True,
        tie_word_embeddings=False,
        attention_dropout=0.0,
        hidden_dropout=0.0,
        bos_token_id=VOCAB.id("<bos>"),
        eos_token_id=None,
        pad_token_id=VOCAB.id("<pad>"),
        # eager attention: the Hugging Face reference route adds a float 4-D mask
        **_EAGER,
    )
    return config


def _hf_state_dict(
    tl: dict[str, torch.Tensor], n_layers: int, unembed_key: str
) -> dict[str, torch.Tensor]:
    """Map a testbed ``HookedTransformer`` state dict onto ``GPTNeoXForCausalLM`` names."""
    out: dict[str, torch.Tensor] = {
        "gpt_neox.embed_in.weight": tl["embed.W_E"],
        "gpt_neox.final_layer_norm.weight": tl["ln_final.w"],
        "gpt_neox.final_layer_norm.bias": tl["ln_final.b"],
        f"{unembed_key}.weight": tl["unembed.W_U"].T,
        f"{unembed_key}.bias": tl["unembed.b_U"],
    }
    for i in range(n_layers):
        tl_pre, hf_pre = f"blocks.{i}.", f"gpt_neox.layers.{i}."
        n_heads, d_model, d_head = tl[tl_pre + "attn.W_Q"].shape
        # [head, d_model, d_head] x3 -> [head, 3, d_head, d_model] -> [head*3*d_head, d_model]
        qkv_w = torch.stack(
            [tl[tl_pre + f"attn.W_{x}"].transpose(1, 2) for x in "QKV"], dim=1
        ).reshape(n_heads * 3 * d_head, d_model)
        qkv_b = torch.stack([tl[tl_pre + f"attn.b_{x}"] for x in "QKV"], dim=1).reshape(-1)
        out |= {
            hf_pre + "input_layernorm.weight": tl[tl_pre + "ln1.w"],
            hf_pre + "input_layernorm.bias": tl[tl_pre + "ln1.b"],
            hf_pre + "post_attention_layernorm.weight": tl[tl_pre + "ln2.w"],
            hf_pre + "post_attention_layernorm.bias": tl[tl_pre + "ln2.b"],
            hf_pre + "attention.query_key_value.weight": qkv_w,
            hf_pre + "attention.query_key_value.bias": qkv_b,
            hf_pre + "attention.dense.weight": tl[tl_pre + "attn.W_O"]
            .reshape(n_heads * d_head, d_model)
            .T,
            hf_pre + "attention.dense.bias": tl[tl_pre + "attn.b_O"],
            hf_pre + "mlp.dense_h_to_4h.weight": tl[tl_pre + "mlp.W_in"].T,
            hf_pre + "mlp.dense_h_to_4h.bias": tl[tl_pre + "mlp.b_in"],
            hf_pre + "mlp.dense_4h_to_h.weight": tl[tl_pre + "mlp.W_out"].T,
            hf_pre + "mlp.dense_4h_to_h.bias": tl[tl_pre + "mlp.b_out"],
        }
    return {k: v.contiguous() for k, v in out.items()}


def load_testbed_hf(
    folder: str | Path | None = None,
    *,
    device: str | torch.device | None = None,
    dtype: torch.dtype = torch.float32,
) -> GPTNeoXForCausalLM:
    """The testbed checkpoint as a Hugging Face ``GPTNeoXForCausalLM`` (eager attention), in
    eval mode, with a biased ``lm_head`` holding ``W_U^T`` and ``b_U`` and
    :class:`TestbedRotaryEmbedding` as its rotary module.

    Args:
        folder: a testbed checkpoint folder (default: the shipped one).
        device: where to put the model (default: CPU).
        dtype: parameter dtype (the conversion itself is exact, in fp32).

    Raises:
        FileNotFoundError: the folder lacks ``config.json`` or ``model.safetensors``.
        ValueError: the checkpoint's vocabulary or architecture does not fit.
    """
    from transformers import GPTNeoXForCausalLM

    from tl_continuous.testbed.model import _read_checkpoint

    fields, tl = _read_checkpoint(folder)
    config = hf_config_of(fields)
    model_cls: Any = GPTNeoXForCausalLM  # transformers' decorators confuse mypy
    model = model_cls(config)
    # GPT-NeoX's unembedding has no bias (``lm_head``; ``embed_out`` before transformers 5.14).
    unembed_key = "lm_head" if hasattr(model, "lm_head") else "embed_out"
    setattr(model, unembed_key, nn.Linear(config.hidden_size, config.vocab_size, bias=True))
    model.gpt_neox.rotary_emb = TestbedRotaryEmbedding(config, *_rotary(fields))
    model.load_state_dict(_hf_state_dict(tl, config.num_hidden_layers, unembed_key), strict=True)
    model.to(device=device or "cpu", dtype=dtype)
    return cast("GPTNeoXForCausalLM", model.eval())


def load_testbed_bridge(
    folder: str | Path | None = None,
    *,
    device: str | torch.device | None = None,
    dtype: torch.dtype = torch.float32,
) -> nn.Module:
    """The testbed as a ``TransformerBridge`` around :func:`load_testbed_hf`, in eval mode.

    No weight processing: the bridge computes in Hugging Face numerics, which match the
    shipped ``HookedTransformer`` within float rounding. No tokenizer: feed token ids
    (:data:`~tl_continuous.testbed.task.VOCAB`).
    """
    from tl_continuous.backends.bridge import wrap_hf_model
    from tl_continuous.testbed.model import MODEL_NAME

    hf_model = load_testbed_hf(folder, device=device, dtype=dtype)
    hf_model.config.architectures = [ARCHITECTURE]
    bridge = wrap_hf_model(hf_model, dtype=dtype)
    bridge.cfg.default_prepend_bos = False  # prompts carry their own <bos>
    bridge.cfg.model_name = MODEL_NAME
    return bridge.eval()

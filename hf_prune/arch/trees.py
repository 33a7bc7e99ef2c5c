"""Per-family defaults of the pruning-trees configuration protocol (:class:`hf_prune.PruningTreeConfig`).

The pruning-trees seed configured each model with five lists; here they are fields of the config whose
``None`` default is filled from this table:

- ``transform_types``: class names of the roots of *transform trees* (a layer replaced by identity);
- ``operation_types``: class names of activations / norms that can belong to a tree's operation subtree
  (dropped when they only serve the removed root);
- ``attention_types``: class names of whole attention modules (roots of *attention trees*);
- ``mha_projection_names``: dotted-name suffixes of the attention projections, which are never transform
  roots (an attention projection is removed through its head or attention tree, not alone);
- ``exclude_keywords``: substrings of module names that no tree may touch (embeddings, heads).

``attention_noop`` says what a removed attention module returns. ``"zeros"`` where the residual add is
outside the module (Llama, OPT, GPT-2, ViT: the sub-block then adds nothing to the residual stream);
``"identity"`` where the residual add and its norm sit inside the module (BERT's ``BertAttention``
returns ``LayerNorm(dense(context) + input)``: the no-op is its input).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DEFAULT_OPERATION_TYPES", "DEFAULT_TRANSFORM_TYPES", "TreeDefaults", "tree_defaults"]

DEFAULT_TRANSFORM_TYPES: tuple[str, ...] = ("Linear", "Conv1D", "Conv1d", "Conv2d", "Conv3d")
DEFAULT_OPERATION_TYPES: tuple[str, ...] = (
    # activations
    "ReLU",
    "ReLU6",
    "SiLU",
    "GELU",
    "Tanh",
    "Sigmoid",
    "Hardswish",
    "SiLUActivation",
    "GELUActivation",
    "NewGELUActivation",
    "GELUTanh",
    "FastGELUActivation",
    "QuickGELUActivation",
    "PytorchGELUTanh",
    # norms
    "BatchNorm1d",
    "BatchNorm2d",
    "BatchNorm3d",
    "LayerNorm",
    "GroupNorm",
    "RMSNorm",
    "LlamaRMSNorm",
    "MistralRMSNorm",
    "Qwen2RMSNorm",
    "GemmaRMSNorm",
)


@dataclass(frozen=True)
class TreeDefaults:
    """The pruning-trees protocol of one model family.

    Args:
        transform_types: Class names of transform-tree roots.
        operation_types: Class names of activations / norms an operation subtree may hold.
        attention_types: Class names of attention modules (attention-tree roots).
        mha_projection_names: Dotted-name suffixes of attention projections (never transform roots).
        exclude_keywords: Module-name substrings no tree may touch.
        attention_noop: ``"zeros"`` or ``"identity"`` (see the module docstring).
    """

    transform_types: tuple[str, ...] = DEFAULT_TRANSFORM_TYPES
    operation_types: tuple[str, ...] = DEFAULT_OPERATION_TYPES
    attention_types: tuple[str, ...] = ()
    mha_projection_names: tuple[str, ...] = ()
    exclude_keywords: tuple[str, ...] = ()
    attention_noop: str = "zeros"


_LLAMA = TreeDefaults(
    attention_types=("LlamaAttention", "MistralAttention", "Qwen2Attention", "GemmaAttention"),
    mha_projection_names=("q_proj", "k_proj", "v_proj", "o_proj"),
    exclude_keywords=("embed_tokens", "lm_head"),
)

_FAMILIES: dict[str, TreeDefaults] = {
    "llama": _LLAMA,
    "mistral": _LLAMA,
    "qwen2": _LLAMA,
    "gemma": _LLAMA,
    "opt": TreeDefaults(
        attention_types=("OPTAttention",),
        mha_projection_names=("q_proj", "k_proj", "v_proj", "out_proj"),
        exclude_keywords=("embed_tokens", "embed_positions", "lm_head"),
    ),
    "gpt2": TreeDefaults(
        attention_types=("GPT2Attention",),
        mha_projection_names=("attn.c_attn", "attn.c_proj"),
        exclude_keywords=("wte", "wpe", "lm_head"),
    ),
    "bert": TreeDefaults(
        attention_types=("BertAttention",),
        mha_projection_names=("query", "key", "value", "attention.output.dense"),
        exclude_keywords=("embeddings", "pooler", "classifier"),
        attention_noop="identity",
    ),
    "roberta": TreeDefaults(
        attention_types=("RobertaAttention",),
        mha_projection_names=("query", "key", "value", "attention.output.dense"),
        exclude_keywords=("embeddings", "classifier"),
        attention_noop="identity",
    ),
    "vit": TreeDefaults(
        attention_types=("ViTAttention",),
        mha_projection_names=("q_proj", "k_proj", "v_proj", "o_proj"),
        exclude_keywords=("embeddings", "classifier"),
    ),
}


def tree_defaults(family: str | None) -> TreeDefaults:
    """Return the pruning-trees defaults of a family (``None``: a plain ``nn.Module``).

    A plain module gets the generic transform / operation types, no attention types and no exclusions:
    name its attention classes and its stem / head modules in the config.

    Args:
        family: An ``ArchSpec.family`` name, or ``None``.

    Raises:
        ValueError: For a ``transformers`` family without pruning-trees defaults (names the fields to set).
    """
    if family is None:
        return TreeDefaults()
    if family not in _FAMILIES:
        raise ValueError(
            f"Pruning trees have no defaults for the {family!r} family (known: {sorted(_FAMILIES)}). Set "
            "attention_types, mha_projection_names and exclude_keywords in PruningTreeConfig."
        )
    return _FAMILIES[family]

"""Sub-block surgery: remove a decoder block's whole attention module or whole MLP, keeping the block.

A pre-norm decoder block computes ``h = h + attn(norm1(h))`` and then ``h = h + mlp(norm2(h))``. Removing
a sub-block replaces the module with a stand-in whose output is zeros of the right shape, so the
residual stream passes through unchanged, and replaces the norm in front of it with ``nn.Identity``
(its output would only feed the removed module). Neither stand-in holds parameters, so the removed
weights are gone from the model, its parameter count and its ``state_dict``. This is the
``no_op`` sub-block of the Nemotron-NAS / DeciLM layout (Bercovich et al., "Puzzle: Distillation-Based
NAS for Inference-Optimized LLMs", 2024), which that export writes for these blocks.

The structure record (:mod:`hf_prune.surgery.structure`) describes a removed attention as
``num_heads = num_kv_heads = 0`` and a removed MLP as ``intermediate_size = 0``; reloading rebuilds the
stand-ins from those zeros. Only pre-norm families whose decoder layer calls
``hidden_states, _ = self.self_attn(...)`` are supported (Llama, Mistral, Qwen2, Gemma and the LLaVA
language model); others are refused with an error.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers import PreTrainedModel

from hf_prune.arch import StackSpec, get_arch, get_layers, get_submodule, head_geometry

__all__ = [
    "RemovedAttention",
    "RemovedMLP",
    "attention_removed",
    "check_subblock_support",
    "mlp_removed",
    "remove_attention",
    "remove_mlp",
]

#: Families whose decoder layer is ``h + self_attn(input_layernorm(h))[0]`` then
#: ``h + mlp(post_attention_layernorm(h))`` in transformers 5.x, with these module names.
_PRE_NORM_FAMILIES = ("llama", "mistral", "qwen2", "gemma", "llava")
_ATTN = "self_attn"
_MLP = "mlp"
_ATTN_NORM = "input_layernorm"
_MLP_NORM = "post_attention_layernorm"


class RemovedAttention(nn.Module):
    """Stand-in for a removed attention module: returns zeros, so the block's residual passes through.

    It returns ``(zeros, None)`` as the Llama-family decoder layer unpacks ``(attn_output,
    attn_weights)``. With a KV cache it appends zero-head keys / values, so the cache's sequence length
    (read from any layer, layer 0 by default) stays right during ``generate``.

    Args:
        layer_idx: The block's index (renumbered by depth surgery like every ``layer_idx``).
        head_dim: Head size of the zero-head cache entries.
    """

    def __init__(self, layer_idx: int | None, head_dim: int) -> None:
        super().__init__()
        self.layer_idx = layer_idx
        self.head_dim = int(head_dim)
        # Geometry attributes other code reads off attention modules.
        self.num_heads = 0
        self.num_key_value_heads = 0

    def forward(self, hidden_states: torch.Tensor, *args: Any, **kwargs: Any) -> tuple[torch.Tensor, None]:
        """Return zeros shaped like ``hidden_states`` (and no attention weights).

        Args:
            hidden_states: ``[batch, seq, hidden]`` input.
            *args: Ignored positional arguments of the attention call.
            **kwargs: Keyword arguments; ``cache`` / ``past_key_values`` is updated with zero heads.
        """
        cache = kwargs.get("cache", kwargs.get("past_key_values"))
        if cache is not None and self.layer_idx is not None and hasattr(cache, "update"):
            batch, seq = hidden_states.shape[:2]
            empty = hidden_states.new_zeros(batch, 0, seq, self.head_dim)
            cache.update(empty, empty, self.layer_idx)
        return torch.zeros_like(hidden_states), None

    def extra_repr(self) -> str:
        """Say what this module is in ``print(model)``."""
        return "removed (output = 0)"


class RemovedMLP(nn.Module):
    """Stand-in for a removed MLP: returns zeros shaped like its input."""

    def forward(self, hidden_states: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        """Return zeros shaped like ``hidden_states``.

        Args:
            hidden_states: ``[batch, seq, hidden]`` input.
            *args: Ignored.
            **kwargs: Ignored.
        """
        return torch.zeros_like(hidden_states)

    def extra_repr(self) -> str:
        """Say what this module is in ``print(model)``."""
        return "removed (output = 0)"


def check_subblock_support(model: PreTrainedModel, stack: StackSpec) -> None:
    """Refuse families / stacks whose blocks cannot have a sub-block removed by a zero stand-in.

    Args:
        model: The model.
        stack: The stack whose blocks would change.

    Raises:
        ValueError: For an unsupported family or a stack that is not a pre-norm Llama-style decoder.
    """
    family = get_arch(model).family
    block = stack.block
    ok = (
        family in _PRE_NORM_FAMILIES
        and stack.causal
        and block.attn == _ATTN
        and block.norms == (_ATTN_NORM, _MLP_NORM)
        and all(p.startswith(f"{_MLP}.") for p in (*block.mlp_in, block.mlp_out))
    )
    if not ok:
        raise ValueError(
            f"Removing a whole attention or MLP sub-block is supported for the pre-norm decoder stacks of "
            f"{', '.join(_PRE_NORM_FAMILIES)}; got family {family!r}, stack {stack.name!r}. Its decoder "
            "layer does not pass the residual through a zero output unchanged (post-norm or fused blocks). "
            "Remove the whole block with remove_layers, or prune heads / neurons instead."
        )


def _set_child(block: nn.Module, path: str, module: nn.Module) -> None:
    parent_path, _, name = path.rpartition(".")
    setattr(get_submodule(block, parent_path), name, module)


def attention_removed(model: PreTrainedModel, stack: StackSpec, layer_idx: int) -> bool:
    """Whether block ``layer_idx`` of ``stack`` has its attention removed.

    Args:
        model: The model.
        stack: The stack spec.
        layer_idx: Block index.
    """
    block = get_layers(model, stack)[layer_idx]
    return isinstance(getattr(block, _ATTN, None), RemovedAttention)


def mlp_removed(model: PreTrainedModel, stack: StackSpec, layer_idx: int) -> bool:
    """Whether block ``layer_idx`` of ``stack`` has its MLP removed.

    Args:
        model: The model.
        stack: The stack spec.
        layer_idx: Block index.
    """
    block = get_layers(model, stack)[layer_idx]
    return isinstance(getattr(block, _MLP, None), RemovedMLP)


def remove_attention(model: PreTrainedModel, stack: StackSpec, layer_idx: int) -> None:
    """Replace block ``layer_idx``'s attention by :class:`RemovedAttention` and its input norm by Identity.

    Args:
        model: The model.
        stack: The stack spec.
        layer_idx: Block index.

    Raises:
        ValueError: For an unsupported family, an out-of-range index, or an attention already removed.
    """
    check_subblock_support(model, stack)
    layers = get_layers(model, stack)
    if not 0 <= int(layer_idx) < len(layers):
        raise ValueError(f"layer={layer_idx} is out of range: stack {stack.name!r} has {len(layers)} blocks.")
    if attention_removed(model, stack, layer_idx):
        raise ValueError(f"{stack.name} layer {layer_idx}: the attention is already removed.")
    block = layers[layer_idx]
    attn = get_submodule(block, _ATTN)
    head_dim = head_geometry(model, stack, layer_idx).head_dim
    _set_child(block, _ATTN, RemovedAttention(getattr(attn, "layer_idx", layer_idx), head_dim))
    _set_child(block, _ATTN_NORM, nn.Identity())


def remove_mlp(model: PreTrainedModel, stack: StackSpec, layer_idx: int) -> None:
    """Replace block ``layer_idx``'s MLP by :class:`RemovedMLP` and its input norm by Identity.

    Args:
        model: The model.
        stack: The stack spec.
        layer_idx: Block index.

    Raises:
        ValueError: For an unsupported family, an out-of-range index, or an MLP already removed.
    """
    check_subblock_support(model, stack)
    layers = get_layers(model, stack)
    if not 0 <= int(layer_idx) < len(layers):
        raise ValueError(f"layer={layer_idx} is out of range: stack {stack.name!r} has {len(layers)} blocks.")
    if mlp_removed(model, stack, layer_idx):
        raise ValueError(f"{stack.name} layer {layer_idx}: the MLP is already removed.")
    block = layers[layer_idx]
    _set_child(block, _MLP, RemovedMLP())
    _set_child(block, _MLP_NORM, nn.Identity())

"""Depth surgery: remove whole blocks, re-index ``layer_idx`` and keep the config consistent."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

from torch import nn
from transformers import PreTrainedModel

from hf_prune.arch import StackSpec, get_layers, get_stack_config, get_submodule


def _set_layers(model: PreTrainedModel, stack: StackSpec, layers: nn.ModuleList) -> nn.ModuleList:
    """Put ``layers`` where ``stack``'s block list lives; return the list that was there."""
    parent_path, _, attr = stack.layers_path.rpartition(".")
    parent = get_submodule(getattr(model, "base_model", model), parent_path)
    original = getattr(parent, attr)
    setattr(parent, attr, layers)
    return original


@contextlib.contextmanager
def only_layers(model: PreTrainedModel, stack: StackSpec, positions: Sequence[int]) -> Iterator[None]:
    """Temporarily run ``stack`` with only the blocks at ``positions`` (for scoring removals).

    Nothing else changes: ``layer_idx`` and the config keep their values, so run the model without a
    KV cache inside. The original block list is restored on exit, also after an error.

    Args:
        model: The model.
        stack: The stack spec.
        positions: Block positions to keep, in order.
    """
    layers = get_layers(model, stack)
    original = _set_layers(model, stack, nn.ModuleList([layers[i] for i in positions]))
    try:
        yield
    finally:
        _set_layers(model, stack, original)


def remove_layers(model: PreTrainedModel, stack: StackSpec, indices: Sequence[int]) -> list[int]:
    """Delete blocks ``indices`` (current positions) from ``stack``.

    Re-numbers every ``layer_idx`` attribute inside the kept blocks (KV-cache slots are indexed by
    it), updates the layer count and any per-layer list such as ``layer_types`` in the config, so
    ``generate()`` with a cache keeps working.

    Args:
        model: The model.
        stack: The stack spec.
        indices: Block positions to remove (unique, in range; at least one block must remain).

    Returns:
        The removed positions, sorted.

    Raises:
        ValueError: For out-of-range or duplicate indices, or removing every block.
    """
    layers = get_layers(model, stack)
    n = len(layers)
    drop = sorted({int(i) for i in indices})
    if len(drop) != len(list(indices)):
        raise ValueError(f"layer indices to remove must be unique, got {list(indices)}.")
    if drop and (drop[0] < 0 or drop[-1] >= n):
        raise ValueError(
            f"layer indices to remove must lie in [0, {n}) for stack {stack.name!r}, got {drop}."
        )
    if len(drop) >= n:
        raise ValueError(f"Cannot remove all {n} blocks of stack {stack.name!r}; keep at least one.")
    if not drop:
        return []
    kept = [blk for i, blk in enumerate(layers) if i not in set(drop)]
    _set_layers(model, stack, nn.ModuleList(kept))
    for new_idx, blk in enumerate(kept):
        for module in blk.modules():
            if hasattr(module, "layer_idx"):
                module.layer_idx = new_idx
    config = get_stack_config(model, stack)
    keep_set = [i for i in range(n) if i not in set(drop)]
    layer_types = getattr(config, "layer_types", None)
    # Per-layer lists are validated against the layer count: rewrite them together with it.
    if isinstance(layer_types, list) and len(layer_types) == n:
        new_types = [layer_types[i] for i in keep_set]
        config.layer_types = None
        setattr(config, stack.num_layers_key, len(kept))
        config.layer_types = new_types
    else:
        setattr(config, stack.num_layers_key, len(kept))
    return drop

"""Width surgery: remove MLP neurons and attention heads (GQA-aware) by slicing projections in place.

The module objects are kept (only their parameters are replaced), so hooks and references held by
other code stay valid; the attention module's geometry attributes are updated to the new head count.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from transformers import PreTrainedModel
from transformers.pytorch_utils import Conv1D

from hf_prune.arch import StackSpec, get_layers, get_submodule, head_geometry, is_linear
from hf_prune.surgery.masks import has_mask, remove_mask


def _index(keep: Sequence[int], size: int, what: str) -> torch.Tensor:
    idx = sorted({int(i) for i in keep})
    if len(idx) != len(list(keep)):
        raise ValueError(f"{what}: indices to keep must be unique, got {list(keep)}.")
    if idx and (idx[0] < 0 or idx[-1] >= size):
        raise ValueError(f"{what}: indices to keep must lie in [0, {size}), got {idx}.")
    return torch.tensor(idx, dtype=torch.long)


def slice_linear(module: nn.Module, index: torch.Tensor, side: str) -> None:
    """Keep only ``index`` of a Linear/Conv1D's output (``side="out"``) or input (``side="in"``) features.

    Args:
        module: ``nn.Linear`` or ``Conv1D``; a mask on it is made physical first.
        index: Long tensor of feature indices to keep.
        side: ``"out"`` or ``"in"``.
    """
    if not is_linear(module):
        raise TypeError(f"Can only slice nn.Linear or Conv1D, got {type(module).__name__}.")
    if side not in ("out", "in"):
        raise ValueError(f"side must be 'out' or 'in', got {side!r}.")
    if has_mask(module):
        remove_mask(module, make_physical=True)
    conv = isinstance(module, Conv1D)
    # Linear stores [out, in]; Conv1D stores [in, out].
    dim = (1 if side == "out" else 0) if conv else (0 if side == "out" else 1)
    w = module.weight
    idx = index.to(w.device)
    module.weight = nn.Parameter(w.data.index_select(dim, idx).clone(), requires_grad=w.requires_grad)
    if side == "out" and getattr(module, "bias", None) is not None:
        b = module.bias
        module.bias = nn.Parameter(b.data.index_select(0, idx).clone(), requires_grad=b.requires_grad)
    n = int(index.numel())
    if conv:
        if side == "out":
            module.nf = n
    elif side == "out":
        module.out_features = n
    else:
        module.in_features = n


def shrink_mlp(model: PreTrainedModel, stack: StackSpec, layer_idx: int, keep: Sequence[int]) -> None:
    """Keep only the MLP neurons ``keep`` of block ``layer_idx``.

    Args:
        model: The model.
        stack: The stack spec.
        layer_idx: Block index in the stack.
        keep: Neuron indices to keep (any order; stored sorted).
    """
    block = get_layers(model, stack)[layer_idx]
    first = get_submodule(block, stack.block.mlp_in[0])
    size = first.weight.shape[1] if isinstance(first, Conv1D) else first.weight.shape[0]
    idx = _index(keep, int(size), f"{stack.name} layer {layer_idx} MLP neurons")
    for path in stack.block.mlp_in:
        slice_linear(get_submodule(block, path), idx, "out")
    slice_linear(get_submodule(block, stack.block.mlp_out), idx, "in")


def _head_rows(heads: Sequence[int], head_dim: int, offset: int = 0) -> torch.Tensor:
    rows = [offset + h * head_dim + d for h in heads for d in range(head_dim)]
    return torch.tensor(rows, dtype=torch.long)


def shrink_heads(model: PreTrainedModel, stack: StackSpec, layer_idx: int, keep_heads: Sequence[int]) -> None:
    """Keep only the query heads ``keep_heads`` of block ``layer_idx`` (GQA-aware).

    With grouped-query attention a key/value head serves a group of query heads. A KV head is kept
    exactly when at least one of its query heads is kept, and every kept group must keep the same
    number of query heads (``repeat_kv`` needs a uniform group size). Removing all heads of a group
    therefore removes that KV head with them.

    Args:
        model: The model.
        stack: The stack spec.
        layer_idx: Block index.
        keep_heads: Query-head indices to keep (at least one).

    Raises:
        ValueError: For out-of-range or empty heads, or unequal group sizes under GQA.
    """
    geo = head_geometry(model, stack, layer_idx)
    where = f"{stack.name} layer {layer_idx} heads"
    heads = _index(keep_heads, geo.num_heads, where).tolist()
    if not heads:
        raise ValueError(
            f"{where}: keep at least one head; to drop a whole attention module use depth pruning."
        )
    g = geo.group_size
    groups: dict[int, list[int]] = {}
    for h in heads:
        groups.setdefault(h // g, []).append(h)
    sizes = {len(v) for v in groups.values()}
    if len(sizes) != 1:
        raise ValueError(
            f"{where}: with grouped-query attention ({geo.num_heads} query heads over {geo.num_kv_heads} "
            f"KV heads) every kept KV group must keep the same number of query heads; got "
            f"{ {k: len(v) for k, v in groups.items()} }. Prune whole groups or the same count per group."
        )
    kv_heads = sorted(groups)
    new_group = sizes.pop()
    block = get_layers(model, stack)[layer_idx]
    spec = stack.block
    hd = geo.head_dim
    q_rows = _head_rows(heads, hd)
    if spec.qkv:
        e = geo.num_heads * hd
        rows = torch.cat([q_rows, q_rows + e, q_rows + 2 * e])
        slice_linear(get_submodule(block, spec.qkv), rows, "out")
    else:
        kv_rows = _head_rows(kv_heads, hd)
        slice_linear(get_submodule(block, spec.q or ""), q_rows, "out")
        slice_linear(get_submodule(block, spec.k or ""), kv_rows, "out")
        slice_linear(get_submodule(block, spec.v or ""), kv_rows, "out")
    slice_linear(get_submodule(block, spec.o), q_rows, "in")
    set_attention_geometry(get_submodule(block, spec.attn), len(heads), len(kv_heads), new_group, hd)


def set_attention_geometry(
    attn: nn.Module, num_heads: int, num_kv_heads: int, group: int, head_dim: int
) -> None:
    """Update the head-count attributes that attention forwards read, for every family we support.

    Args:
        attn: The attention module.
        num_heads: New query-head count.
        num_kv_heads: New key/value-head count.
        group: New query heads per KV head.
        head_dim: Head size (unchanged by head pruning).
    """
    updates = {
        "num_heads": num_heads,  # OPT, GPT-2, CLIP
        "num_attention_heads": num_heads,  # BERT / RoBERTa
        "all_head_size": num_heads * head_dim,  # BERT / RoBERTa
        "split_size": num_heads * head_dim,  # GPT-2 splits the fused c_attn output by this
        "num_key_value_heads": num_kv_heads,
        "num_key_value_groups": group,  # Llama family: repeat_kv factor
    }
    for attr, value in updates.items():
        if hasattr(attn, attr):
            setattr(attn, attr, value)

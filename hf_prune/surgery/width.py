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
        keep_heads: Query-head indices to keep. None at all removes the attention sub-block
            (:func:`hf_prune.surgery.subblock.remove_attention`, Llama-style families only).

    Raises:
        ValueError: For out-of-range heads, unequal group sizes under GQA, or no heads on a family
            whose attention cannot be removed.
    """
    geo = head_geometry(model, stack, layer_idx)
    where = f"{stack.name} layer {layer_idx} heads"
    heads = _index(keep_heads, geo.num_heads, where).tolist()
    if not heads:
        # Keeping no head is removing the attention sub-block (a zero stand-in; refused clearly for
        # families whose blocks cannot pass the residual through it).
        from hf_prune.surgery.subblock import remove_attention

        remove_attention(model, stack, layer_idx)
        return
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


def _kv_paths(stack: StackSpec) -> tuple[str, str]:
    spec = stack.block
    if spec.qkv or not (spec.k and spec.v):
        raise ValueError(
            f"Stack {stack.name!r} fuses q/k/v into one projection ({spec.qkv!r}); changing only the "
            "key/value heads needs separate k and v projections (Llama-style families)."
        )
    return spec.k, spec.v


def shrink_kv_heads(
    model: PreTrainedModel, stack: StackSpec, layer_idx: int, keep_kv_heads: Sequence[int]
) -> None:
    """Keep only key/value heads ``keep_kv_heads`` of block ``layer_idx``; every query head stays.

    Query head ``h`` then reads KV head ``h // (num_heads // len(keep_kv_heads))`` (transformers'
    ``repeat_kv``), so this is a shape change for rebuilding a saved structure; to reduce KV heads of a
    trained model use :func:`merge_kv_heads`, which sets the kept heads' weights.

    Args:
        model: The model.
        stack: The stack spec.
        layer_idx: Block index.
        keep_kv_heads: KV-head indices to keep (their count must divide the query-head count).

    Raises:
        ValueError: For out-of-range / duplicate indices or a count that does not divide the query heads.
    """
    geo = head_geometry(model, stack, layer_idx)
    where = f"{stack.name} layer {layer_idx} KV heads"
    kv = _index(keep_kv_heads, geo.num_kv_heads, where).tolist()
    if not kv or geo.num_heads % len(kv):
        raise ValueError(
            f"{where}: the number of KV heads kept ({len(kv)}) must be >= 1 and divide the "
            f"{geo.num_heads} query heads."
        )
    k_path, v_path = _kv_paths(stack)
    block = get_layers(model, stack)[layer_idx]
    rows = _head_rows(kv, geo.head_dim)
    slice_linear(get_submodule(block, k_path), rows, "out")
    slice_linear(get_submodule(block, v_path), rows, "out")
    set_attention_geometry(
        get_submodule(block, stack.block.attn), geo.num_heads, len(kv), geo.num_heads // len(kv), geo.head_dim
    )


def merge_kv_heads(model: PreTrainedModel, stack: StackSpec, layer_idx: int, num_kv_heads: int) -> None:
    """Reduce block ``layer_idx`` to ``num_kv_heads`` key/value heads by mean-pooling adjacent groups.

    Follows the checkpoint conversion of Ainslie et al., "GQA: Training Generalized Multi-Query
    Transformer Models from Multi-Head Checkpoints" (EMNLP 2023): new KV head ``j`` is the mean of the
    ``r = num_kv_heads_now / num_kv_heads`` consecutive old heads ``j*r .. j*r + r - 1`` (weights and
    biases of ``k`` and ``v``). Query heads are untouched, and query head ``h`` keeps reading the merged
    head that contains its old one, so only the grouping changes. The query-head count stays fixed,
    which is what layouts with a global query-head count (Nemotron-NAS ``n_heads_in_group``) express.
    The function of the block changes (KV heads are shared more widely); heal afterwards as with any
    pruning.

    Args:
        model: The model.
        stack: The stack spec.
        layer_idx: Block index.
        num_kv_heads: KV heads to keep; must divide the current KV-head count.

    Raises:
        ValueError: For a count that is not a positive divisor of the current KV heads, or fused q/k/v.
    """
    geo = head_geometry(model, stack, layer_idx)
    if isinstance(num_kv_heads, bool) or not isinstance(num_kv_heads, int):
        raise TypeError(f"num_kv_heads must be an int, got {num_kv_heads!r}.")
    if num_kv_heads < 1 or geo.num_kv_heads % num_kv_heads:
        divisors = [d for d in range(1, geo.num_kv_heads + 1) if geo.num_kv_heads % d == 0]
        raise ValueError(
            f"num_kv_heads={num_kv_heads} for {stack.name} layer {layer_idx}: adjacent KV heads are "
            f"merged in equal groups, so it must divide the current {geo.num_kv_heads} KV heads; "
            f"allowed: {divisors}."
        )
    if num_kv_heads == geo.num_kv_heads:
        return
    k_path, v_path = _kv_paths(stack)
    block = get_layers(model, stack)[layer_idx]
    ratio = geo.num_kv_heads // num_kv_heads
    hd = geo.head_dim
    for path in (k_path, v_path):
        module = get_submodule(block, path)
        if has_mask(module):
            remove_mask(module, make_physical=True)
        with torch.no_grad():
            w = module.weight.data
            merged = w.reshape(num_kv_heads, ratio, hd, -1).float().mean(dim=1).to(w.dtype)
            w[: num_kv_heads * hd] = merged.reshape(num_kv_heads * hd, -1)
            bias = getattr(module, "bias", None)
            if bias is not None:
                b = bias.data
                pooled = b.reshape(num_kv_heads, ratio, hd).float().mean(dim=1)
                b[: num_kv_heads * hd] = pooled.to(b.dtype).reshape(-1)
    shrink_kv_heads(model, stack, layer_idx, list(range(num_kv_heads)))

"""The structure record: per-layer widths read off the model, and how it is written into configs.

The record is derived from the modules' actual shapes (never tracked incrementally), so it cannot drift
from the weights. It is what ``pruning_config.json`` stores under ``"structure"`` and what loading uses
to reshape a homogeneous skeleton before the weights are loaded.
"""

from __future__ import annotations

import copy
from typing import Any

from transformers import PretrainedConfig, PreTrainedModel
from transformers.pytorch_utils import Conv1D

from hf_prune.arch import (
    StackSpec,
    get_arch,
    get_layers,
    get_stack_config,
    get_submodule,
    head_geometry,
    original_head_dim,
)
from hf_prune.surgery.subblock import attention_removed, mlp_removed, remove_attention, remove_mlp
from hf_prune.surgery.width import shrink_heads, shrink_kv_heads, shrink_mlp

# Attribute names in the structure record (family-independent); the config keys come from the spec.
_WIDTH = "intermediate_size"
_HEADS = "num_heads"
_KV = "num_kv_heads"
_ATTN_REMOVED = "attention_removed"
_MLP_REMOVED = "mlp_removed"


def _mlp_width(block: Any, stack: StackSpec) -> int:
    first = get_submodule(block, stack.block.mlp_in[0])
    return int(first.weight.shape[1] if isinstance(first, Conv1D) else first.weight.shape[0])


def read_structure(model: PreTrainedModel) -> dict[str, Any]:
    """Return each stack's per-layer widths read off the modules.

    The record is ``{stack: {"num_layers", "head_dim", "layers": [{intermediate_size, num_heads,
    num_kv_heads}, ...]}}``. A removed attention sub-block (:mod:`hf_prune.surgery.subblock`) reads as
    ``num_heads = num_kv_heads = 0`` plus ``"attention_removed": true``, a removed MLP as
    ``intermediate_size = 0`` plus ``"mlp_removed": true`` (an MLP shrunk to zero width has no flag).

    Args:
        model: A supported model (pruned or not).
    """
    from hf_prune.surgery.pruning_trees import TREES_KEY, read_tree_record

    trees = read_tree_record(model)
    if trees is not None:  # identity-replaced modules have no widths to read: the plans are the record
        return {TREES_KEY: trees}
    arch = get_arch(model)
    out: dict[str, Any] = {}
    for stack in arch.stacks:
        layers = get_layers(model, stack)
        rows = []
        head_dim = None
        for i, block in enumerate(layers):
            if attention_removed(model, stack, i):
                heads, kv = 0, 0
            else:
                geo = head_geometry(model, stack, i)
                head_dim = geo.head_dim
                heads, kv = geo.num_heads, geo.num_kv_heads
            gone = mlp_removed(model, stack, i)
            row = {_WIDTH: 0 if gone else _mlp_width(block, stack), _HEADS: heads, _KV: kv}
            # Flags tell a removed sub-block (a stand-in module, no weights) from a projection shrunk to
            # zero width (Fisher's emptied BERT MLP keeps its Linear modules and output bias).
            if heads == 0:
                row[_ATTN_REMOVED] = True
            if gone:
                row[_MLP_REMOVED] = True
            rows.append(row)
        if head_dim is None:  # every attention removed: the config still defines the head size
            head_dim = original_head_dim(get_stack_config(model, stack), stack)
        out[stack.name] = {"num_layers": len(layers), "head_dim": head_dim, "layers": rows}
    return out


def _default_width(config: PretrainedConfig, stack: StackSpec) -> int:
    value = config._getattr_without_heterogeneous_validation(stack.intermediate_key, None)
    if value is None:  # GPT-2's n_inner=None means 4 * hidden
        value = 4 * int(config.hidden_size)
    return int(value)


def config_updates(model: PreTrainedModel, structure: dict[str, Any] | None = None) -> dict[str, Any]:
    """Work out how the structure is written into the (sub-)configs.

    Uniform changes become global config values: ``intermediate_size`` always; head counts only when
    the family pins ``head_dim`` in its config (Llama family), since elsewhere ``head_dim`` is derived
    from the head count. Everything else becomes transformers' ``per_layer_config`` overrides, which
    plain transformers refuses to build with a clear ``AmbiguousGlobalPerLayerAttributeError`` rather
    than loading wrong shapes.

    Args:
        model: The pruned model.
        structure: Its structure record (read from the model when ``None``).

    Returns:
        ``{config_path: {"global": {key: value}, "per_layer": {layer: {key: value}}}}``.
    """
    structure = structure or read_structure(model)
    from hf_prune.surgery.pruning_trees import TREES_KEY, tree_config_updates

    if TREES_KEY in structure:
        return tree_config_updates(model)
    arch = get_arch(model)
    result: dict[str, Any] = {}
    for stack in arch.stacks:
        config = get_stack_config(model, stack)
        rec = structure[stack.name]
        rows = rec["layers"]
        glob: dict[str, Any] = {}
        per: dict[int, dict[str, Any]] = {}
        widths = [r[_WIDTH] for r in rows]
        # A removed sub-block (width / heads 0) is never written as a global value: a config saying
        # "0 heads" would build zero-size projections in plain transformers; per_layer_config makes it
        # refuse instead.
        if len(set(widths)) == 1 and widths[0] != 0:
            if widths[0] != _default_width(config, stack):
                glob[stack.intermediate_key] = widths[0]
        else:
            base = _default_width(config, stack)
            for i, w in enumerate(widths):
                if w != base:
                    per.setdefault(i, {})[stack.intermediate_key] = w
        heads = [r[_HEADS] for r in rows]
        kvs = [r[_KV] for r in rows]
        base_heads = int(config._getattr_without_heterogeneous_validation(stack.heads_key))
        base_kv = (
            int(config._getattr_without_heterogeneous_validation(stack.kv_heads_key) or base_heads)
            if stack.kv_heads_key
            else base_heads
        )
        uniform_heads = len(set(heads)) == 1 and len(set(kvs)) == 1 and heads[0] != 0
        if uniform_heads and (heads[0], kvs[0]) == (base_heads, base_kv):
            pass
        elif uniform_heads and stack.head_dim_key:
            glob[stack.head_dim_key] = rec["head_dim"]
            glob[stack.heads_key] = heads[0]
            if stack.kv_heads_key:
                glob[stack.kv_heads_key] = kvs[0]
        else:
            for i, (h, kv) in enumerate(zip(heads, kvs, strict=True)):
                if h != base_heads:
                    per.setdefault(i, {})[stack.heads_key] = h
                if stack.kv_heads_key and kv != base_kv:
                    per.setdefault(i, {})[stack.kv_heads_key] = kv
        result[stack.config_path] = {"global": glob, "per_layer": per}
    return result


def sync_config(model: PreTrainedModel) -> dict[str, Any]:
    """Write uniform structural changes into ``model.config`` in place; return the full update plan.

    Per-layer overrides are *not* put on the in-memory config (transformers would then refuse to read
    the global attribute anywhere); they are added to ``config.json`` at save time.

    Args:
        model: The pruned model.
    """
    plan = config_updates(model)
    for path, upd in plan.items():
        config = getattr(model.config, path) if path else model.config
        for key, value in upd["global"].items():
            setattr(config, key, value)
    return plan


def config_dict_for_save(model: PreTrainedModel) -> dict[str, Any]:
    """Return ``config.json``'s content: the synced config plus ``per_layer_config`` where needed.

    Args:
        model: The pruned model.
    """
    plan = sync_config(model)
    data = model.config.to_dict()
    for path, upd in plan.items():
        target = data[path] if path else data
        if upd["per_layer"]:
            target["per_layer_config"] = {str(k): v for k, v in sorted(upd["per_layer"].items())}
    return data


def homogeneous_config_dict(data: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split a saved config dict into a buildable homogeneous dict and the per-layer overrides.

    Args:
        data: ``config.json`` content.

    Returns:
        ``(homogeneous_dict, {config_path: per_layer_config})``.
    """
    data = copy.deepcopy(data)
    overrides: dict[str, Any] = {}
    if "per_layer_config" in data:
        overrides[""] = data.pop("per_layer_config")
    for key, value in list(data.items()):
        if isinstance(value, dict) and "per_layer_config" in value:
            overrides[key] = value.pop("per_layer_config")
    return data, overrides


def apply_structure(model: PreTrainedModel, structure: dict[str, Any]) -> None:
    """Reshape a freshly built (possibly meta-device) skeleton to a saved structure record.

    Widths are set by keeping the first ``n`` neurons / heads: only shapes matter here, the weights
    are loaded right after.

    Args:
        model: A homogeneous skeleton whose layer counts already match the record.
        structure: The ``"structure"`` record from ``pruning_config.json``.

    Raises:
        ValueError: If the record does not fit the skeleton (wrong stack names or layer counts).
    """
    from hf_prune.surgery.pruning_trees import TREES_KEY, apply_tree_record

    if TREES_KEY in structure:  # pruning trees: replay the recorded plans (hf_prune.surgery.pruning_trees)
        apply_tree_record(model, structure[TREES_KEY])
        return
    arch = get_arch(model)
    names = {s.name for s in arch.stacks}
    if set(structure) != names:
        raise ValueError(
            f"pruning_config.json structure lists stacks {sorted(structure)}, but a {arch.family} model has "
            f"{sorted(names)}."
        )
    for stack in arch.stacks:
        rec = structure[stack.name]
        layers = get_layers(model, stack)
        if len(layers) != rec["num_layers"] or len(rec["layers"]) != rec["num_layers"]:
            raise ValueError(
                f"pruning_config.json says stack {stack.name!r} has {rec['num_layers']} layers "
                f"({len(rec['layers'])} described); config.json built {len(layers)}."
            )
        config = get_stack_config(model, stack)
        if rec.get("head_dim") not in (None, original_head_dim(config, stack)):
            raise ValueError(
                f"pruning_config.json head_dim {rec['head_dim']} of stack {stack.name!r} does not match the "
                f"config's {original_head_dim(config, stack)}."
            )
        for i, row in enumerate(rec["layers"]):
            if row[_HEADS] == 0 or row[_KV] == 0:
                if (row[_HEADS], row[_KV]) != (0, 0):
                    raise ValueError(f"Invalid head counts {row} for {stack.name} layer {i}.")
                remove_attention(model, stack, i)
            if row.get(_MLP_REMOVED):
                remove_mlp(model, stack, i)
            if row[_HEADS] == 0 and row.get(_MLP_REMOVED):
                continue
            geo = None if row[_HEADS] == 0 else head_geometry(model, stack, i)
            if geo is not None and row[_HEADS] == geo.num_heads and row[_KV] < geo.num_kv_heads:
                # Query heads kept, KV heads merged (merge_kv_heads): only k / v shrink.
                if row[_HEADS] % row[_KV] != 0:
                    raise ValueError(f"Invalid head counts {row} for {stack.name} layer {i}.")
                shrink_kv_heads(model, stack, i, list(range(row[_KV])))
            elif geo is not None and (row[_HEADS], row[_KV]) != (geo.num_heads, geo.num_kv_heads):
                if row[_HEADS] % max(row[_KV], 1) != 0 or row[_KV] > geo.num_kv_heads:
                    raise ValueError(f"Invalid head counts {row} for {stack.name} layer {i}.")
                per_group = row[_HEADS] // row[_KV]
                keep = [grp * geo.group_size + j for grp in range(row[_KV]) for j in range(per_group)]
                shrink_heads(model, stack, i, keep)
            if row.get(_MLP_REMOVED):
                continue
            width = _mlp_width(layers[i], stack)
            if row[_WIDTH] != width:
                if row[_WIDTH] > width:
                    raise ValueError(
                        f"{stack.name} layer {i}: saved MLP width {row[_WIDTH]} exceeds the config's {width}."
                    )
                shrink_mlp(model, stack, i, list(range(row[_WIDTH])))

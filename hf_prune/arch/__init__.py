"""Model-walking code: find blocks, projections and head geometry of any supported family.

Only this package (and ``calibration/``) reaches into ``model.model.layers`` and friends; every other
stage receives module references from here.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel
from transformers.pytorch_utils import Conv1D

from hf_prune.arch.spec import ARCHITECTURES, ArchSpec, BlockSpec, StackSpec

__all__ = [
    "ARCHITECTURES",
    "ArchSpec",
    "BlockSpec",
    "HeadGeometry",
    "LinearRef",
    "StackSpec",
    "base_model_prefix",
    "get_arch",
    "get_layers",
    "get_stack_config",
    "get_submodule",
    "head_geometry",
    "is_linear",
    "iter_block_linears",
    "linear_in_out",
    "supported_families",
]

_HOW_TO_ADD = (
    "To add one, write an ArchSpec (module paths of the blocks, attention and MLP) in "
    "hf_prune/arch/spec.py and register it with ARCHITECTURES.register(...)."
)


def supported_families() -> list[str]:
    """Return the names of the supported model families."""
    return ARCHITECTURES.names()


def _model_type(obj: PreTrainedModel | PretrainedConfig) -> str:
    config = obj if isinstance(obj, PretrainedConfig) else getattr(obj, "config", None)
    if config is None:
        raise TypeError(
            f"model must be a transformers PreTrainedModel (or its config), got {type(obj).__name__}."
        )
    return str(getattr(config, "model_type", ""))


def get_arch(model: PreTrainedModel | PretrainedConfig) -> ArchSpec:
    """Return the :class:`ArchSpec` of a model or config.

    Args:
        model: A ``PreTrainedModel`` (any head) or its config.

    Returns:
        The family's spec.

    Raises:
        ValueError: For an unsupported architecture; the message lists the supported ones and how to
            add a new one.
    """
    model_type = _model_type(model)
    for _, spec in ARCHITECTURES.items():
        if model_type in spec.model_types:
            return spec
    raise ValueError(
        f"Unsupported architecture model_type={model_type!r}. Supported: "
        f"{', '.join(supported_families())}. {_HOW_TO_ADD}"
    )


def get_submodule(root: nn.Module, path: str) -> nn.Module:
    """Return ``root``'s submodule at dotted ``path`` (``""`` is ``root`` itself).

    Args:
        root: Module to start from.
        path: Dotted path such as ``"self_attn.q_proj"``.

    Raises:
        ValueError: If the path does not exist (names the missing part).
    """
    if not path:
        return root
    try:
        return root.get_submodule(path)
    except AttributeError as err:
        raise ValueError(
            f"Module path {path!r} not found in {type(root).__name__}: {err}. The architecture spec "
            "does not match this model; check transformers' version."
        ) from None


def _base(model: nn.Module) -> nn.Module:
    return getattr(model, "base_model", model)


def base_model_prefix(model: nn.Module) -> str:
    """Return the dotted name of ``model.base_model`` inside ``model`` (``""`` if it is the model).

    Args:
        model: A ``PreTrainedModel``.
    """
    base = _base(model)
    if base is model:
        return ""
    for name, module in model.named_modules():
        if module is base:
            return name
    return ""


def get_stack_config(model: PreTrainedModel | PretrainedConfig, stack: StackSpec) -> PretrainedConfig:
    """Return the (sub-)config that describes ``stack``.

    Args:
        model: The model or its top-level config.
        stack: The stack spec.
    """
    config = model if isinstance(model, PretrainedConfig) else model.config
    return getattr(config, stack.config_path) if stack.config_path else config


def get_layers(model: nn.Module, stack: StackSpec) -> nn.ModuleList:
    """Return the ``nn.ModuleList`` of blocks of ``stack``.

    Args:
        model: The model (any head).
        stack: The stack spec.
    """
    layers = get_submodule(_base(model), stack.layers_path)
    if not isinstance(layers, nn.ModuleList):
        raise TypeError(f"Expected an nn.ModuleList at {stack.layers_path!r}, found {type(layers).__name__}.")
    return layers


def is_linear(module: nn.Module) -> bool:
    """Whether ``module`` is a prunable projection (``nn.Linear`` or transformers' ``Conv1D``).

    Args:
        module: Any module.
    """
    return isinstance(module, (nn.Linear, Conv1D))


def linear_in_out(module: nn.Module) -> tuple[int, int]:
    """Return ``(in_features, out_features)`` of a Linear or Conv1D (whose weight is stored ``[in, out]``).

    Args:
        module: An ``nn.Linear`` or ``Conv1D``.
    """
    if not isinstance(module, (nn.Linear, Conv1D)):
        raise TypeError(f"Expected nn.Linear or Conv1D, got {type(module).__name__}.")
    # The stored tensor's shape: reading ``module.weight`` of a masked module would compute the
    # masked weight just to learn its shape.
    params = getattr(module, "parametrizations", None)
    stored = params["weight"].original if params is not None and "weight" in params else module.weight
    if isinstance(module, Conv1D):
        return int(stored.shape[0]), int(stored.shape[1])
    return int(stored.shape[1]), int(stored.shape[0])


@dataclass(frozen=True)
class LinearRef:
    """A prunable projection inside a block.

    Args:
        name: Full dotted name in ``model.named_modules()``.
        module: The module.
        stack: Stack name.
        block_idx: Index of the block in its stack.
        path: Path relative to the block (``"mlp.down_proj"``).
    """

    name: str
    module: nn.Module
    stack: str
    block_idx: int
    path: str


def iter_block_linears(model: PreTrainedModel, stacks: list[str] | None = None) -> Iterator[LinearRef]:
    """Yield every prunable projection inside the model's blocks, in module order.

    Embeddings, the LM head, classifier heads and projectors lie outside the blocks and are not
    yielded.

    Args:
        model: A supported ``PreTrainedModel``.
        stacks: Restrict to these stack names (default: all stacks).
    """
    arch = get_arch(model)
    prefix = base_model_prefix(model)
    by_id = {id(m): n for n, m in model.named_modules()}
    for stack in arch.stacks:
        if stacks is not None and stack.name not in stacks:
            continue
        layers = get_layers(model, stack)
        paths = set(stack.block.linear_paths())
        for idx, block in enumerate(layers):
            # named_modules order is the module-registration order, which is the order the published
            # per-layer tables (AlphaPruning) use; keep it rather than the spec's order.
            for rel, module in block.named_modules():
                if rel in paths and is_linear(module):
                    name = by_id.get(id(module))
                    if name is None:  # pragma: no cover - modules always belong to the model
                        name = f"{prefix}.{stack.layers_path}.{idx}.{rel}".lstrip(".")
                    yield LinearRef(name=name, module=module, stack=stack.name, block_idx=idx, path=rel)


@dataclass(frozen=True)
class HeadGeometry:
    """Attention head layout of one block.

    Args:
        num_heads: Query heads.
        num_kv_heads: Key/value heads (equal to ``num_heads`` without GQA).
        head_dim: Size of one head.
    """

    num_heads: int
    num_kv_heads: int
    head_dim: int

    @property
    def group_size(self) -> int:
        """Query heads per key/value head."""
        return self.num_heads // self.num_kv_heads


def _config_head_dim(config: PretrainedConfig, stack: StackSpec) -> int:
    if stack.head_dim_key:
        hd = getattr(config, stack.head_dim_key, None)
        if hd:
            return int(hd)
    return int(config.hidden_size) // int(getattr(config, stack.heads_key))


def head_geometry(model: PreTrainedModel, stack: StackSpec, layer_idx: int) -> HeadGeometry:
    """Read the head layout of block ``layer_idx`` from its weights (so pruned blocks are reported truly).

    Args:
        model: The model.
        stack: The stack spec.
        layer_idx: Block index.
    """
    block = get_layers(model, stack)[layer_idx]
    attn = get_submodule(block, stack.block.attn)
    if type(attn).__name__ == "RemovedAttention":  # surgery.subblock's stand-in (no import: layering)
        raise ValueError(
            f"Block {layer_idx} of stack {stack.name!r} has no attention heads: its attention was removed "
            "(PrunedModel.remove_attention). Head-level operations (head pruning, KV merging, latency "
            "tables) do not apply to it; run them before removing the sub-block or on other blocks."
        )
    head_dim = getattr(attn, "head_dim", None) or getattr(attn, "attention_head_size", None)
    if head_dim is None:
        head_dim = _config_head_dim(get_stack_config(model, stack), stack)
    head_dim = int(head_dim)
    spec = stack.block
    if spec.qkv:
        _, out = linear_in_out(get_submodule(block, spec.qkv))
        nh = out // 3 // head_dim
        return HeadGeometry(nh, nh, head_dim)
    _, q_out = linear_in_out(get_submodule(block, spec.q or ""))
    _, k_out = linear_in_out(get_submodule(block, spec.k or ""))
    return HeadGeometry(q_out // head_dim, k_out // head_dim, head_dim)


def original_head_dim(config: PretrainedConfig, stack: StackSpec) -> int:
    """Return ``head_dim`` as the unpruned config defines it.

    Args:
        config: The stack's config.
        stack: The stack spec.
    """
    return _config_head_dim(config, stack)


def param_count(module: nn.Module) -> int:
    """Count parameters of ``module`` (shared tensors once).

    Args:
        module: Any module.
    """
    seen: set[int] = set()
    total = 0
    for p in module.parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        total += p.numel()
    return total


def to_plain(obj: Any) -> Any:
    """Convert tensors / tuples in ``obj`` to JSON-friendly Python values.

    Args:
        obj: Nested structure of dicts, lists, tuples, tensors and scalars.
    """
    if isinstance(obj, torch.Tensor):
        return obj.tolist()
    if isinstance(obj, dict):
        return {str(k): to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_plain(v) for v in obj]
    return obj

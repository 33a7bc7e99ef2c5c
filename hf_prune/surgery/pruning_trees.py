"""Pruning trees: fine-grained depth pruning by identity replacement with dependency-aware width fixes.

A *tree* is one unit of fine-grained depth pruning (the pruning-trees thesis):

- a **transform tree**: the root is a ``Linear`` / ``Conv`` layer that is replaced by the identity. For the
  shapes to fit, ``d_in`` must equal ``d_out``: the larger side is width-pruned down to the smaller one,
  and every parameter coupled to those channels (found with torch-pruning's DepGraph) loses the same
  channels, the least important ones by the group's L2 norm (the *parameter subtree*). Activations and
  norms that only process the root's output are dropped with it (the *operation subtree*). A
  ``2048 -> 4096`` linear becomes identity by removing 2048 of its outputs, hence 2048 input columns of
  the layer that reads them.
- an **attention tree**: a whole attention module becomes a no-op (``"zeros"`` when the residual add is
  outside the module, so the sub-block adds nothing; ``"identity"`` when the residual and its norm are
  inside, as in BERT), together with the norm that only feeds it (Llama's ``input_layernorm``).
- a **head tree**: one attention head's q/k/v rows and o columns; under grouped-query attention one key /
  value head with all the query heads that share it (a group moves as a whole). This is width pruning,
  offered so the importance ranking can trade a few heads against whole modules.

Trees are *plans*: plain JSON-able dicts listing the modules replaced and the ``(module path, side,
removed indices)`` slices, applied in order by :func:`apply_plan`. The applied plans are the structure
record of a pruned model: :func:`apply_tree_record` replays them on a freshly built skeleton (meta device
included) before the weights are loaded, so checkpoints reload exactly without pickling.

After every plan an *identity-patching* pass (:func:`patch_identities`) rewrites element-wise operations
made redundant: a gated MLP whose gate and up branches are both identity would compute
``down(x * x)``; the tree semantics fold the product (``x * 1``) and the module becomes ``down(x)`` (or the
identity when ``down`` is gone too), so the exported model does no redundant work.

torch-pruning is an optional dependency (``pip install hf_prune[trees]``), imported lazily; only
enumerating trees needs it, replaying a record does not.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

__all__ = [
    "TREES_KEY",
    "NoOpAttention",
    "PatchedGatedMLP",
    "Tree",
    "TreeIdentity",
    "TreeOptions",
    "apply_plan",
    "apply_tree_record",
    "enumerate_trees",
    "patch_identities",
    "read_tree_record",
    "set_submodule",
    "slice_module",
    "tree_config_updates",
]

#: Key of the tree record inside the ``"structure"`` of ``pruning_config.json``.
TREES_KEY = "pruning_trees"
#: Attribute of the pruned model that holds the applied plans (the structure record).
_RECORD_ATTR = "hf_prune_tree_plans"
#: ``(gate, up, down)`` child names of gated MLPs whose product is folded by identity patching.
GATED_PATTERNS: tuple[tuple[str, str, str], ...] = (("gate_proj", "up_proj", "down_proj"),)


def _tp() -> Any:
    try:
        import torch_pruning
    except ImportError:  # pragma: no cover - exercised only without the extra
        raise ImportError(
            "Pruning trees need torch-pruning's DepGraph: install the 'trees' extra with "
            "pip install 'hf_prune[trees]' (or pip install 'torch-pruning>=1.5')."
        ) from None
    return torch_pruning


# ----------------------------------------------------------------------------------------- modules
class TreeIdentity(nn.Module):
    """A removed transform or operation: returns its (first) input unchanged.

    Args:
        root: What it replaces (kept for ``print(model)``).
    """

    def __init__(self, root: str = "") -> None:
        super().__init__()
        self.root = root

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        """Return ``x``.

        Args:
            x: The input.
            *args: Ignored extra inputs.
            **kwargs: Ignored extra inputs.
        """
        return x

    def extra_repr(self) -> str:
        """Show the replaced module."""
        return f"replaces={self.root!r}"


class NoOpAttention(nn.Module):
    """A removed attention module.

    Args:
        mode: ``"zeros"`` (the sub-block adds nothing to a residual outside the module) or
            ``"identity"`` (the module held its own residual: return the input hidden states).
        outputs: ``0`` when the original returned a tensor, else the length of the tuple it returned
            (the hidden states first, ``None`` for the rest, e.g. attention weights).
    """

    def __init__(self, mode: str = "zeros", outputs: int = 0) -> None:
        super().__init__()
        if mode not in ("zeros", "identity"):
            raise ValueError(f"NoOpAttention mode must be 'zeros' or 'identity', got {mode!r}.")
        self.mode = mode
        self.outputs = int(outputs)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """Return zeros shaped like the hidden states (or the hidden states), in the original's format.

        Args:
            *args: The attention module's positional inputs (hidden states first).
            **kwargs: Its keyword inputs (``hidden_states`` when not positional).
        """
        x = args[0] if args else kwargs["hidden_states"]
        out = torch.zeros_like(x) if self.mode == "zeros" else x
        if self.outputs:
            return (out, *([None] * (self.outputs - 1)))
        return out

    def extra_repr(self) -> str:
        """Show the mode."""
        return f"mode={self.mode!r}, outputs={self.outputs}"


class PatchedGatedMLP(nn.Module):
    """A gated MLP whose gate and up branches are both identity: ``down(x * x)`` folded to ``down(x)``.

    Args:
        down: The MLP's down projection (a ``TreeIdentity`` when it was removed too).
    """

    def __init__(self, down: nn.Module) -> None:
        super().__init__()
        self.down_proj = down

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        """Apply the down projection to the input.

        Args:
            x: The MLP input.
            *args: Ignored.
            **kwargs: Ignored.
        """
        return self.down_proj(x)


def set_submodule(root: nn.Module, path: str, module: nn.Module) -> None:
    """Replace ``root``'s submodule at dotted ``path`` by ``module``.

    Args:
        root: The model.
        path: Dotted path (non-empty).
        module: The replacement.

    Raises:
        ValueError: If ``path`` is empty or does not exist.
    """
    if not path:
        raise ValueError("Cannot replace the root module itself; give a submodule path.")
    parent_path, _, name = path.rpartition(".")
    try:
        parent = root.get_submodule(parent_path) if parent_path else root
        getattr(parent, name)
    except AttributeError:
        raise ValueError(f"Module path {path!r} not found in {type(root).__name__}.") from None
    setattr(parent, name, module)


# ----------------------------------------------------------------------------------------- slicing
def _keep(size: int, removed: Sequence[int], where: str) -> torch.Tensor:
    drop = set(int(i) for i in removed)
    if any(i < 0 or i >= size for i in drop):
        raise ValueError(f"{where}: removed indices {sorted(drop)} out of range [0, {size}).")
    return torch.tensor([i for i in range(size) if i not in drop], dtype=torch.long)


def _sel(t: torch.Tensor, dim: int, keep: torch.Tensor) -> torch.Tensor:
    return t.index_select(dim, keep.to(t.device)).contiguous()


def _set_param(module: nn.Module, name: str, value: torch.Tensor) -> None:
    old = getattr(module, name)
    if isinstance(old, nn.Parameter):
        setattr(module, name, nn.Parameter(value, requires_grad=old.requires_grad))
    else:
        setattr(module, name, value)


def slice_module(module: nn.Module, side: str, removed: Sequence[int], where: str = "") -> None:
    """Remove channels ``removed`` of ``module`` on ``side`` (``"in"`` or ``"out"``), in place.

    Supports ``nn.Linear``, transformers' ``Conv1D`` (weight stored ``[in, out]``), ``nn.ConvNd`` with
    ``groups=1``, batch norms and per-channel norms (``LayerNorm``, RMS norms: their ``weight`` / ``bias``).
    Works on meta tensors (only shapes change there).

    Args:
        module: The module.
        side: ``"out"`` (output channels) or ``"in"`` (input channels).
        removed: Channel indices to remove.
        where: Module name for error messages.

    Raises:
        ValueError: For an unknown side, bad indices or a module type that cannot be sliced.
    """
    if side not in ("in", "out"):
        raise ValueError(f"side must be 'in' or 'out', got {side!r}.")
    where = where or type(module).__name__
    if isinstance(module, nn.Linear):
        n = module.out_features if side == "out" else module.in_features
        keep = _keep(n, removed, where)
        dim = 0 if side == "out" else 1
        _set_param(module, "weight", _sel(module.weight.data, dim, keep))
        if side == "out":
            if module.bias is not None:
                _set_param(module, "bias", _sel(module.bias.data, 0, keep))
            module.out_features = len(keep)
        else:
            module.in_features = len(keep)
        return
    if isinstance(module, Conv1D):
        dim = 1 if side == "out" else 0
        keep = _keep(module.weight.shape[dim], removed, where)
        _set_param(module, "weight", _sel(module.weight.data, dim, keep))
        if side == "out":
            _set_param(module, "bias", _sel(module.bias.data, 0, keep))
            module.nf = len(keep)
        return
    if isinstance(module, nn.modules.conv._ConvNd):
        if module.groups != 1:
            raise ValueError(f"{where}: grouped convolutions (groups={module.groups}) are not sliced.")
        dim = 0 if side == "out" else 1
        keep = _keep(module.weight.shape[dim], removed, where)
        _set_param(module, "weight", _sel(module.weight.data, dim, keep))
        if side == "out":
            if module.bias is not None:
                _set_param(module, "bias", _sel(module.bias.data, 0, keep))
            module.out_channels = len(keep)
        else:
            module.in_channels = len(keep)
        return
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        keep = _keep(module.num_features, removed, where)
        for name in ("weight", "bias", "running_mean", "running_var"):
            t = getattr(module, name, None)
            if t is not None:
                _set_param(module, name, _sel(t.data, 0, keep))
        module.num_features = len(keep)
        return
    weight = getattr(module, "weight", None)
    if isinstance(weight, torch.Tensor) and weight.dim() == 1:  # LayerNorm, RMS norms, GroupNorm affine
        keep = _keep(weight.shape[0], removed, where)
        _set_param(module, "weight", _sel(weight.data, 0, keep))
        bias = getattr(module, "bias", None)
        if isinstance(bias, torch.Tensor):
            _set_param(module, "bias", _sel(bias.data, 0, keep))
        if isinstance(module, nn.LayerNorm):
            module.normalized_shape = (len(keep),)
        if isinstance(module, nn.GroupNorm):
            module.num_channels = len(keep)
        return
    raise ValueError(
        f"{where}: cannot width-prune a {type(module).__name__} (supported: Linear, Conv1D, Conv with "
        "groups=1, batch / layer / RMS norms)."
    )


def _in_out(module: nn.Module) -> tuple[int, int]:
    if isinstance(module, nn.Linear):
        return module.in_features, module.out_features
    if isinstance(module, Conv1D):
        return int(module.weight.shape[0]), int(module.weight.shape[1])
    if isinstance(module, nn.modules.conv._ConvNd):
        return module.in_channels, module.out_channels
    raise TypeError(f"Expected a Linear, Conv1D or Conv module, got {type(module).__name__}.")


def _channel_norms(module: nn.Module, side: str) -> torch.Tensor:
    """Squared L2 norm of each channel's weights on ``side`` (biases of output channels included)."""
    w = module.weight.detach().float()
    if isinstance(module, Conv1D):
        w = w.t()
    if isinstance(module, (nn.Linear, Conv1D, nn.modules.conv._ConvNd)):
        dim = 0 if side == "out" else 1
        other = [d for d in range(w.dim()) if d != dim]
        sq = w.pow(2).sum(dim=other)
        bias = getattr(module, "bias", None)
        if side == "out" and isinstance(bias, torch.Tensor):
            sq = sq + bias.detach().float().pow(2)
        return sq
    sq = w.pow(2)
    bias = getattr(module, "bias", None)
    if isinstance(bias, torch.Tensor):
        sq = sq + bias.detach().float().pow(2)
    return sq


# ------------------------------------------------------------------------------------------ plans
def _record(model: nn.Module) -> list[dict[str, Any]]:
    rec = model.__dict__.get(_RECORD_ATTR)
    if rec is None:
        rec = []
        model.__dict__[_RECORD_ATTR] = rec
    return rec


def read_tree_record(model: nn.Module) -> dict[str, Any] | None:
    """Return the model's tree record (``{"version", "plans"}``), or ``None`` if no tree was applied.

    Args:
        model: Any module.
    """
    plans = model.__dict__.get(_RECORD_ATTR)
    if not plans:
        return None
    return {"version": 1, "plans": copy.deepcopy(plans)}


def _apply_heads(model: nn.Module, heads: dict[str, Any]) -> None:
    from hf_prune.arch import get_arch
    from hf_prune.surgery.width import shrink_heads

    stack = get_arch(model).stack(heads["stack"])
    shrink_heads(model, stack, int(heads["layer"]), [int(h) for h in heads["keep"]])


def apply_plan(model: nn.Module, plan: dict[str, Any], *, record: bool = True) -> list[str]:
    """Apply one tree plan to ``model`` in place, then run identity patching.

    Args:
        model: The model (a fresh skeleton when replaying a record).
        plan: A plan from :func:`enumerate_trees` (``Tree.plan``) or from a saved record.
        record: Append the plan to the model's tree record (what ``read_tree_record`` returns).

    Returns:
        The module paths rewritten by identity patching.

    Raises:
        ValueError: If a path in the plan does not exist or a slice does not fit.
    """
    for path, side, removed in plan.get("slices", []):
        try:
            module = model.get_submodule(path)
        except AttributeError:
            raise ValueError(f"Tree {plan.get('root')!r}: module {path!r} not found.") from None
        slice_module(module, side, removed, where=path)
    if plan.get("heads"):
        _apply_heads(model, plan["heads"])
    for path in plan.get("identity", []):
        set_submodule(model, path, TreeIdentity(path))
    for item in plan.get("noop", []):
        set_submodule(model, item["path"], NoOpAttention(item["mode"], item["outputs"]))
    patched = patch_identities(model)
    if record:
        _record(model).append(copy.deepcopy(plan))
    return patched


def apply_tree_record(model: nn.Module, record: dict[str, Any]) -> None:
    """Replay a saved tree record on a freshly built module (before its weights are loaded).

    Args:
        model: A skeleton built from the unpruned config / constructor (meta device is fine).
        record: The ``"pruning_trees"`` record (``{"version": 1, "plans": [...]}``).

    Raises:
        ValueError: For an unknown record version or a plan that does not fit the module.
    """
    if (
        not isinstance(record, dict)
        or record.get("version") != 1
        or not isinstance(record.get("plans"), list)
    ):
        raise ValueError(
            f"Unsupported pruning-trees record (expected {{'version': 1, 'plans': [...]}}), got "
            f"{str(record)[:120]!r}."
        )
    for plan in record["plans"]:
        apply_plan(model, plan)


def patch_identities(model: nn.Module) -> list[str]:
    """Fold element-wise products whose operands became the same tensor (gated MLPs, ``x * x -> x``).

    Args:
        model: The model, changed in place.

    Returns:
        The paths of the modules rewritten.
    """
    patched = []
    for name, module in list(model.named_modules()):
        if isinstance(module, PatchedGatedMLP) and isinstance(module.down_proj, TreeIdentity):
            set_submodule(model, name, TreeIdentity(name))  # down(x) with down gone: the whole MLP is x
            patched.append(name)
            continue
        for gate, up, down in GATED_PATTERNS:
            g, u, d = (getattr(module, n, None) for n in (gate, up, down))
            if isinstance(g, TreeIdentity) and isinstance(u, TreeIdentity) and d is not None:
                replacement: nn.Module = d if isinstance(d, TreeIdentity) else PatchedGatedMLP(d)
                set_submodule(model, name, replacement)
                patched.append(name)
    return patched


def tree_config_updates(model: nn.Module) -> dict[str, Any]:
    """The config plan of a tree-pruned ``transformers`` model: a ``per_layer_config`` marker only.

    The global config stays the unpruned one (the loader builds that skeleton and replays the record).
    The marker ``{"hf_prune_trees": n_plans}`` on layer 0 makes plain ``transformers`` refuse the folder
    (it is not a per-layer attribute it knows) instead of loading random weights for removed modules.

    Args:
        model: A ``transformers`` model with a tree record.
    """
    from hf_prune.arch import get_arch

    plans = model.__dict__.get(_RECORD_ATTR) or []
    stack = get_arch(model).stacks[-1]
    return {stack.config_path: {"global": {}, "per_layer": {0: {"hf_prune_trees": len(plans)}}}}


# ------------------------------------------------------------------------------------- enumeration
@dataclass
class TreeOptions:
    """What trees exist in a model (resolved from ``PruningTreeConfig`` and the family defaults).

    Args:
        transform_types: Class names of transform roots.
        operation_types: Class names of operation-subtree members.
        attention_types: Class names of attention modules.
        mha_projection_names: Dotted-name suffixes of attention projections.
        exclude_keywords: Name substrings no tree may touch.
        attention_noop: ``"zeros"`` or ``"identity"``.
        transform: Enumerate transform trees.
        attention: Enumerate whole-attention trees.
        heads: Enumerate head trees (``transformers`` models only).
        within: Module paths every change of a tree must lie in (``transformers``: the blocks); empty:
            anywhere.
    """

    transform_types: tuple[str, ...]
    operation_types: tuple[str, ...]
    attention_types: tuple[str, ...] = ()
    mha_projection_names: tuple[str, ...] = ()
    exclude_keywords: tuple[str, ...] = ()
    attention_noop: str = "zeros"
    transform: bool = True
    attention: bool = True
    heads: bool = True
    within: tuple[str, ...] = ()


@dataclass
class Tree:
    """One removable tree.

    Args:
        key: Stable identifier (``"transform:model.layers.0.mlp.gate_proj"``).
        kind: ``"transform"``, ``"attention"`` or ``"head"``.
        root: The root module path (for a head tree: the attention module).
        plan: The JSON-able plan :func:`apply_plan` applies.
        params: Parameters removed (filled by :func:`measure_tree`).
        scope: Path of the smallest module holding every change (``""``: the whole model).
        extra: Details (the KV group of a head tree).
    """

    key: str
    kind: str
    root: str
    plan: dict[str, Any]
    params: int = 0
    scope: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def _class_names(module: nn.Module) -> set[str]:
    return {c.__name__ for c in type(module).__mro__}


def _matches(module: nn.Module, names: Sequence[str]) -> bool:
    return bool(_class_names(module) & set(names))


@dataclass
class _Call:
    name: str
    inputs: list[int]
    outputs: list[int]
    in_shape: tuple[int, ...] | None
    out_shape: tuple[int, ...] | None
    returns: int


def _tensors(obj: Any) -> list[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, (list, tuple)):
        return [t for o in obj for t in _tensors(o)]
    if isinstance(obj, dict):
        return [t for o in obj.values() for t in _tensors(o)]
    return []


def _trace_calls(model: nn.Module, run: Callable[[], Any]) -> tuple[list[_Call], dict[str, int]]:
    """Record every module call: which tensors it read and wrote (ids kept alive during the trace)."""
    calls: list[_Call] = []
    counts: dict[str, int] = {}
    keep_alive: list[torch.Tensor] = []
    no_grad: list[str] = []
    names = {id(m): n for n, m in model.named_modules()}
    handles = []

    def hook(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], out: Any) -> None:
        name = names.get(id(module))
        if name is None:
            return
        counts[name] = counts.get(name, 0) + 1
        ins = _tensors(args) + _tensors(kwargs)
        outs = _tensors(out)
        keep_alive.extend(ins + outs)
        returns = len(out) if isinstance(out, tuple) else 0
        own = [p for p in module.parameters(recurse=False) if p.requires_grad]
        if own and outs and not any(t.requires_grad for t in outs):
            no_grad.append(name)
        calls.append(
            _Call(
                name,
                [id(t) for t in ins],
                [id(t) for t in outs],
                tuple(ins[0].shape) if ins else None,
                tuple(outs[0].shape) if outs else None,
                returns,
            )
        )

    for m in model.modules():
        handles.append(m.register_forward_hook(hook, with_kwargs=True))
    try:
        with torch.enable_grad():  # autograd must reach every module for DepGraph: checked below
            run()
    finally:
        for h in handles:
            h.remove()
    if no_grad:
        bad = model.get_submodule(no_grad[0])
        raise ValueError(
            f"torch-pruning's DepGraph could not trace {type(model).__name__}: module {no_grad[0]!r} "
            f"({type(bad).__name__}) ran without autograd (no_grad, detach or inference mode around it), so "
            "its width dependencies cannot be traced. Exclude it with exclude_keywords or make its forward "
            "differentiable."
        )
    return calls, counts


def _inside(name: str, scopes: Sequence[str]) -> bool:
    return any(name == s or name.startswith(s + ".") for s in scopes)


def _excluded(name: str, keywords: Sequence[str]) -> bool:
    return any(k in name for k in keywords)


def _common_scope(paths: Sequence[str]) -> str:
    parts = [p.split(".") for p in paths if p]
    if not parts:
        return ""
    common: list[str] = []
    for level in zip(*parts, strict=False):
        if all(x == level[0] for x in level):
            common.append(level[0])
        else:
            break
    # A scope must be a module that holds the changes, not a changed module itself (it gets replaced).
    scope = ".".join(common)
    if scope in paths:
        scope = scope.rpartition(".")[0]
    return scope


class _TraceStub(nn.Module):
    """Stands in for an attention module while DepGraph traces: output = input (element-wise).

    Attention is one opaque unit for the trees: DepGraph must not couple q/k/v/o through reshapes,
    rotary embeddings and SDPA (it cannot size those concatenations); its heads and the whole module are
    trees of their own. Input and output share the residual channels, which the element-wise product
    below tells DepGraph.
    """

    def __init__(self, outputs: int) -> None:
        super().__init__()
        self.outputs = outputs

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        x = args[0] if args else kwargs["hidden_states"]
        out = x * 1.0
        return (out, *([None] * (self.outputs - 1))) if self.outputs else out


class _Conv1DPrunerBase:
    """DepGraph pruner of transformers' ``Conv1D`` (a linear layer with its weight stored ``[in, out]``)."""

    def prune_out_channels(self, layer: nn.Module, idxs: Sequence[int]) -> nn.Module:
        slice_module(layer, "out", idxs)
        return layer

    def prune_in_channels(self, layer: nn.Module, idxs: Sequence[int]) -> nn.Module:
        slice_module(layer, "in", idxs)
        return layer

    def get_out_channels(self, layer: nn.Module) -> int:
        return int(layer.weight.shape[1])

    def get_in_channels(self, layer: nn.Module) -> int:
        return int(layer.weight.shape[0])


def _conv1d_pruner(tp: Any) -> Any:
    cls = type("Conv1DPruner", (_Conv1DPrunerBase, tp.pruner.BasePruningFunc), {"TARGET_MODULES": Conv1D})
    return cls()


_SLICEABLE = (nn.Linear, Conv1D, nn.modules.conv._ConvNd, nn.modules.batchnorm._BatchNorm, nn.LayerNorm)


def _post_ops(
    root: str, calls: list[_Call], counts: dict[str, int], model: nn.Module, opts: TreeOptions
) -> list[str]:
    """Operation subtree: the chain of activations / norms whose only input is the root's output."""
    by_name = {c.name: c for c in calls}
    consumers: dict[int, list[str]] = {}
    for c in calls:
        for t in c.inputs:
            consumers.setdefault(t, []).append(c.name)
    ops: list[str] = []
    current = by_name[root]
    while current.outputs:
        users = [u for u in consumers.get(current.outputs[0], []) if u != current.name]
        users = [u for u in users if not _inside(u, [current.name])]
        if len(users) != 1:
            break
        user = users[0]
        mod = model.get_submodule(user)
        call = by_name[user]
        if (
            counts.get(user) != 1
            or not _matches(mod, opts.operation_types)
            or len(set(call.inputs)) != 1
            or _excluded(user, opts.exclude_keywords)
        ):
            break
        ops.append(user)
        current = call
    return ops


def _pre_norms(
    root: str, calls: list[_Call], counts: dict[str, int], model: nn.Module, opts: TreeOptions
) -> list[str]:
    """Norms whose output feeds only ``root`` (a pre-norm attention's ``input_layernorm``)."""
    consumers: dict[int, set[str]] = {}
    for c in calls:
        for t in c.inputs:
            consumers.setdefault(t, set()).add(c.name)
    root_call = next(c for c in calls if c.name == root)
    out: list[str] = []
    for c in calls:
        if c.name == root or _inside(c.name, [root]) or counts.get(c.name) != 1 or not c.outputs:
            continue
        mod = model.get_submodule(c.name)
        if not _matches(mod, opts.operation_types) or isinstance(mod, nn.modules.activation.ReLU):
            continue
        users = {u for u in consumers.get(c.outputs[0], set()) if not _inside(u, [c.name])}
        top = {u for u in users if not _inside(u, [root]) or u == root}
        if (
            top == {root}
            and c.outputs[0] in root_call.inputs
            and not _excluded(c.name, opts.exclude_keywords)
        ):
            out.append(c.name)
    return out


def _transform_tree(
    dg: Any,
    model: nn.Module,
    name: str,
    module: nn.Module,
    calls: list[_Call],
    counts: dict[str, int],
    opts: TreeOptions,
) -> Tree | None:
    d_in, d_out = _in_out(module)
    call = next(c for c in calls if c.name == name)
    if isinstance(module, nn.modules.conv._ConvNd):
        if module.groups != 1 or call.in_shape is None or call.out_shape is None:
            return None
        if tuple(call.in_shape[2:]) != tuple(call.out_shape[2:]):
            return None  # strided / unpadded convolutions change the spatial shape: no identity exists
    slices: list[list[Any]] = []
    if d_in != d_out:
        if module not in dg.module2node:
            return None
        pruner = dg.get_pruner_of_module(module)
        side = "out" if d_out > d_in else "in"
        fn = pruner.prune_out_channels if side == "out" else pruner.prune_in_channels
        n, k = max(d_in, d_out), abs(d_out - d_in)
        try:
            full = dg.get_pruning_group(module, fn, list(range(n)))
        except Exception:
            return None
        names = {id(m): nm for nm, m in model.named_modules()}
        score = torch.zeros(n)
        for item in full:
            dep, idxs = item.dep, item.idxs
            target = dep.target.module
            if isinstance(target, nn.Parameter):
                return None  # coupled to an unwrapped parameter (a ViT class token ...): not a local tree
            if not isinstance(target, nn.Module) or id(target) not in names:
                continue  # an operation node (element-wise, reshape): nothing to slice
            tname = names[id(target)]
            weight = getattr(target, "weight", None)
            if not isinstance(target, _SLICEABLE) and not (
                isinstance(weight, torch.Tensor) and weight.dim() == 1
            ):
                return None  # e.g. an embedding: slice_module cannot narrow it
            if _excluded(tname, opts.exclude_keywords):
                return None
            mside = "out" if dg.is_out_channel_pruning_fn(dep.handler) else "in"
            norms = _channel_norms(target, mside)
            root_idx = torch.tensor(item.root_idxs, dtype=torch.long)
            idx = torch.tensor(idxs, dtype=torch.long)
            if idx.numel() and int(idx.max()) < norms.numel() and int(root_idx.max()) < n:
                score.index_add_(0, root_idx, norms[idx])
        removed = torch.argsort(score, stable=True)[:k].sort().values.tolist()
        group = dg.get_pruning_group(module, fn, removed)
        for item in group:
            target = item.dep.target.module
            if not isinstance(target, nn.Module) or id(target) not in names:
                continue
            mside = "out" if dg.is_out_channel_pruning_fn(item.dep.handler) else "in"
            slices.append([names[id(target)], mside, sorted(int(i) for i in item.idxs)])
        # The removed channels must end in another layer: otherwise they reach the model's output (or
        # come from its input) and identity would change the model's output shape.
        if not any(path != name and mside != side for path, mside, _ in slices):
            return None
    ops = _post_ops(name, calls, counts, model, opts)
    identity = [name, *ops]
    plan = {"kind": "transform", "root": name, "identity": identity, "slices": slices, "noop": []}
    paths = identity + [s[0] for s in slices]
    return Tree(f"transform:{name}", "transform", name, plan, scope=_common_scope(paths))


def enumerate_trees(
    model: nn.Module,
    opts: TreeOptions,
    example_inputs: Any,
    *,
    output_transform: Callable[[Any], Any] | None = None,
    arch_model: Any = None,
) -> list[Tree]:
    """List every valid tree of ``model`` (module order; transform, then attention, then head trees).

    Args:
        model: The model (unchanged).
        opts: Which trees exist.
        example_inputs: A dummy input: a tensor, a tuple of positional inputs or a dict of keyword
            inputs.
        output_transform: Maps the model output to tensors for DepGraph (``transformers``: the logits).
        arch_model: The ``transformers`` model when head trees are wanted (``None``: none).

    Raises:
        ValueError: If DepGraph cannot trace the model (names the model class and the failure).
    """
    tp = _tp()

    def run() -> Any:
        if isinstance(example_inputs, dict):
            return model(**example_inputs)
        if isinstance(example_inputs, (tuple, list)):
            return model(*example_inputs)
        return model(example_inputs)

    was_training = model.training
    model.eval()
    # DepGraph follows autograd: a frozen model would leave no graph, so every parameter requires grad
    # while tracing (restored after).
    frozen = [p for p in model.parameters() if not p.requires_grad]
    for p in frozen:
        p.requires_grad_(True)
    try:
        try:
            calls, counts = _trace_calls(model, run)
        except ValueError:
            raise
        except Exception as err:
            raise ValueError(
                f"Pruning trees could not run {type(model).__name__} on the example inputs: "
                f"{type(err).__name__}: {err}. Pass example_inputs the model accepts."
            ) from err
        attention = [
            n
            for n, m in model.named_modules()
            if n and opts.attention_types and _matches(m, opts.attention_types)
        ]
        returns = {c.name: c.returns for c in calls}
        originals = {n: model.get_submodule(n) for n in attention}
        try:
            for n in attention:
                set_submodule(model, n, _TraceStub(returns.get(n, 0)))
            with torch.enable_grad():
                dg = tp.DependencyGraph().build_dependency(
                    model,
                    example_inputs=example_inputs,
                    output_transform=output_transform,
                    customized_pruners={Conv1D: _conv1d_pruner(tp)},
                    verbose=False,
                )
        except Exception as err:
            raise ValueError(
                f"torch-pruning's DepGraph could not trace {type(model).__name__}: {type(err).__name__}: "
                f"{err}. Exclude the module that fails with exclude_keywords, name it in attention_types "
                "(traced as one opaque node), or use tree_kinds=('attention',)."
            ) from err
        finally:
            for n, m in originals.items():
                set_submodule(model, n, m)
    finally:
        model.train(was_training)
        for p in frozen:
            p.requires_grad_(False)
    attention_scopes = attention
    if opts.transform:
        untraced = [
            n
            for n, m in model.named_modules()
            if n
            and counts.get(n)
            and isinstance(m, (nn.Linear, Conv1D, nn.modules.conv._ConvNd))
            and _matches(m, opts.transform_types)
            and not _inside(n, attention_scopes)
            and not _excluded(n, opts.exclude_keywords)
            and m not in dg.module2node
        ]
        if untraced:
            bad = model.get_submodule(untraced[0])
            raise ValueError(
                f"torch-pruning's DepGraph could not trace {type(model).__name__}: module {untraced[0]!r} "
                f"({type(bad).__name__}) ran but left no autograd graph (no_grad, detach or a non-tensor "
                "path around it), so its width dependencies are unknown. Exclude it with exclude_keywords "
                "or make its forward differentiable."
            )
    trees: list[Tree] = []
    if opts.transform:
        for name, module in model.named_modules():
            if not name or not _matches(module, opts.transform_types) or isinstance(module, TreeIdentity):
                continue
            if not isinstance(module, (nn.Linear, Conv1D, nn.modules.conv._ConvNd)):
                continue
            if counts.get(name) != 1 or _excluded(name, opts.exclude_keywords):
                continue
            if _inside(name, attention_scopes) or any(
                name == p or name.endswith("." + p) for p in opts.mha_projection_names
            ):
                continue
            tree = _transform_tree(dg, model, name, module, calls, counts, opts)
            if tree is not None:
                trees.append(tree)
    if opts.attention:
        for name in attention_scopes:
            if counts.get(name) != 1 or _excluded(name, opts.exclude_keywords):
                continue
            if isinstance(model.get_submodule(name), NoOpAttention):
                continue
            call = next(c for c in calls if c.name == name)
            norms = _pre_norms(name, calls, counts, model, opts) if opts.attention_noop == "zeros" else []
            plan = {
                "kind": "attention",
                "root": name,
                "identity": norms,
                "slices": [],
                "noop": [{"path": name, "mode": opts.attention_noop, "outputs": call.returns}],
            }
            trees.append(
                Tree(f"attention:{name}", "attention", name, plan, scope=_common_scope([name, *norms]))
            )
    if opts.heads and arch_model is not None:
        trees.extend(_head_trees(arch_model, opts))
    if opts.within:
        trees = [t for t in trees if all(_inside(p, opts.within) for p in _tree_paths(t))]
    return trees


def _tree_paths(tree: Tree) -> list[str]:
    plan = tree.plan
    return [
        tree.root,
        *plan.get("identity", []),
        *(n["path"] for n in plan.get("noop", [])),
        *(s[0] for s in plan.get("slices", [])),
    ]


def _head_trees(model: Any, opts: TreeOptions) -> list[Tree]:
    from hf_prune.arch import get_arch, get_layers, get_submodule, head_geometry

    trees: list[Tree] = []
    names = {id(m): n for n, m in model.named_modules()}
    for stack in get_arch(model).stacks:
        for i, block in enumerate(get_layers(model, stack)):
            try:
                attn = get_submodule(block, stack.block.attn)
            except ValueError:
                continue
            if isinstance(attn, NoOpAttention) or any(isinstance(m, NoOpAttention) for m in block.modules()):
                continue
            try:
                geo = head_geometry(model, stack, i)
            except (ValueError, AttributeError):
                continue
            if geo.num_kv_heads <= 1 and geo.num_heads <= 1:
                continue
            attn_name = names[id(attn)]
            if _excluded(attn_name, opts.exclude_keywords):
                continue
            groups = geo.num_kv_heads
            size = geo.group_size
            for g in range(groups):
                if groups == 1:
                    break  # one KV group: only the whole-attention tree removes it
                drop = set(range(g * size, (g + 1) * size))
                keep = [h for h in range(geo.num_heads) if h not in drop]
                plan = {
                    "kind": "head",
                    "root": attn_name,
                    "identity": [],
                    "slices": [],
                    "noop": [],
                    "heads": {"stack": stack.name, "layer": i, "keep": keep, "removed": sorted(drop)},
                }
                key = f"head:{attn_name}:{g}" if size == 1 else f"head:{attn_name}:group{g}"
                trees.append(
                    Tree(key, "head", attn_name, plan, scope=attn_name.rpartition(".")[0], extra={"group": g})
                )
    return trees


def _param_total(module: nn.Module) -> int:
    from hf_prune.arch import param_count

    return param_count(module)


def measure_tree(model: nn.Module, tree: Tree) -> int:
    """Count the parameters ``tree`` removes by applying it to a copy of its scope.

    Args:
        model: The model (left unchanged).
        tree: The tree; ``tree.params`` is set.

    Returns:
        Parameters removed.
    """
    with applied(model, tree):
        after = _param_total(model.get_submodule(tree.scope) if tree.scope else model)
    before = _param_total(model.get_submodule(tree.scope) if tree.scope else model)
    tree.params = int(before - after)
    return tree.params


class applied:
    """Context manager: ``tree`` applied to a copy of its scope, the original put back on exit.

    The model must not be the scope (``scope == ""``) for this to be cheap; then the whole model is
    copied and restored parameter by parameter.

    Args:
        model: The model.
        tree: The tree to apply temporarily.
    """

    def __init__(self, model: nn.Module, tree: Tree) -> None:
        self.model = model
        self.tree = tree
        self._saved: Any = None

    def __enter__(self) -> nn.Module:
        scope = self.tree.scope
        if scope:
            original = self.model.get_submodule(scope)
            self._saved = original
            set_submodule(self.model, scope, copy.deepcopy(original))
        else:
            self._saved = {n: m for n, m in self.model.named_children()}
            for n, m in self._saved.items():
                setattr(self.model, n, copy.deepcopy(m))
        apply_plan(self.model, self.tree.plan, record=False)
        return self.model

    def __exit__(self, *exc: Any) -> None:
        if self.tree.scope:
            set_submodule(self.model, self.tree.scope, self._saved)
        else:
            for n, m in self._saved.items():
                setattr(self.model, n, m)

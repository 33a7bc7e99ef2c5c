"""Fine-grained depth pruning with pruning trees (``PruningTreeConfig``), for ``transformers`` and any module.

Stages (DESIGN §3): *enumerate* the trees (:mod:`hf_prune.surgery.pruning_trees`: transform trees found
with torch-pruning's DepGraph, attention and head trees), *score* each by the loss increase on the
calibration data when it alone is removed (the thesis' criterion; the tree is applied to a copy of the
block that holds it and the block is put back), *select* greedily from the least important until the
parameter or measured-latency target is met (the remaining trees are re-enumerated after each removal,
since widths change; ``rerank=True`` also re-scores them), and *apply* (identity replacement, width fixes,
identity patching). The ranking is exported as CSV and kept in ``report.extra["pruning_trees"]``; the
latency before / after is measured on the current device and recorded in ``report.speed`` (model card).

``transformers`` models go through :func:`hf_prune.prune` and save in the checkpoint format (the applied
plans are the structure record). A plain ``nn.Module`` goes through :func:`prune_module_trees` and
:func:`save_pruned_module` / :func:`load_pruned_module` (safetensors + the structure JSON, no pickle).
"""

from __future__ import annotations

import csv
import json
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn
from transformers import PreTrainedModel

from hf_prune.arch import get_arch, get_layers, param_count
from hf_prune.arch.trees import tree_defaults
from hf_prune.config import PruningConfig, check_range
from hf_prune.methods.base import PruneContext
from hf_prune.report import LayerReport
from hf_prune.surgery.pruning_trees import (
    Tree,
    TreeOptions,
    applied,
    apply_plan,
    apply_tree_record,
    enumerate_trees,
    measure_tree,
    read_tree_record,
)

__all__ = [
    "PruningTreeConfig",
    "TreeResult",
    "load_pruned_module",
    "prune_module_trees",
    "run_pruning_trees",
    "save_pruned_module",
    "write_ranking_csv",
]

TARGET_KINDS = ("params", "latency")
IMPORTANCES = ("loss", "magnitude")
TREE_KINDS = ("transform", "attention", "head")
STRUCTURE_FILE = "pruning_trees.json"
WEIGHTS_FILE = "model.safetensors"


def _str_list(name: str, value: Any) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, str) or not isinstance(value, (list, tuple)):
        raise TypeError(f"{name} must be a list of strings, got {value!r}. Example: {name}=['Linear'].")
    if any(not isinstance(v, str) or not v for v in value):
        raise ValueError(f"{name} must hold non-empty strings, got {value!r}.")
    return list(value)


@dataclass
class PruningTreeConfig(PruningConfig):
    """Fine-grained depth pruning with pruning trees (identity-replaced transforms and attention).

    Follows the pruning-trees thesis: each tree (a linear / convolution layer replaced by identity with the
    width fixes its neighbours need, or a whole attention module made a no-op, or one attention head /
    GQA group) is ranked by the loss increase on calibration data when it alone is removed; trees are
    removed from the least important until ``target`` is met.

    The five ``*_types`` / ``*_names`` / ``exclude_keywords`` fields are the seed's configuration
    protocol; ``None`` takes the family default from :mod:`hf_prune.arch.trees`.

    Args:
        target: Fraction to remove, in ``(0, 1)``: of the blocks' parameters (``target_kind="params"``;
            plain modules: of the parameters outside ``exclude_keywords`` modules) or of the measured
            forward latency (``"latency"``).
        target_kind: ``"params"`` or ``"latency"``.
        importance: ``"loss"`` (loss increase on the calibration data, the thesis' criterion) or
            ``"magnitude"`` (mean squared weight of what a tree removes: no data, a weak proxy).
        tree_kinds: Which trees exist: ``"transform"``, ``"attention"`` (whole modules), ``"head"``.
        rerank: Re-score the remaining trees after every removal (slower; scores then see earlier removals).
        budget: ``"at_least"`` (default: remove trees until the target is reached, the last one may pass
            it) or ``"at_most"`` (only trees that still fit under the parameter target; stops below it
            when none fits). Trees are coarse (a transform tree takes most of an MLP), so the two bracket
            the target.
        transform_types: Class names of transform roots.
        operation_types: Class names of activations / norms dropped with the root they only serve.
        attention_types: Class names of attention modules.
        mha_projection_names: Name suffixes of attention projections (never transform roots).
        exclude_keywords: Module-name substrings no tree may touch (embeddings, heads). Each given
            keyword must match a module.
        attention_noop: ``"zeros"`` or ``"identity"`` (what a removed attention returns; family default).
        ranking_csv: Write the ranking here (one row per tree).
        latency_seqlen: Tokens per sequence of the latency measurement (text models).
        latency_repeats: Timed forward passes (median) per latency measurement.
    """

    method: ClassVar[str] = "pruning_trees"
    paper: ClassVar[str] = (
        "Pruning trees: fine-grained depth pruning by identity replacement with DepGraph width fixes "
        "(thesis seed); DepGraph: Fang et al., 2023, DepGraph: Towards Any Structural Pruning"
    )

    target: float = field(default=0.1, metadata={"help": "Fraction of params / latency to remove, (0, 1)."})
    target_kind: str = field(default="params", metadata={"help": "'params' or 'latency'."})
    importance: str = field(default="loss", metadata={"help": "'loss' (calibration loss) or 'magnitude'."})
    tree_kinds: list[str] = field(
        default_factory=lambda: ["transform", "attention", "head"],
        metadata={"help": "Tree kinds: transform, attention, head."},
    )
    rerank: bool = field(default=False, metadata={"help": "Re-score remaining trees after each removal."})
    budget: str = field(default="at_least", metadata={"help": "'at_least' or 'at_most' the params target."})
    transform_types: list[str] | None = field(default=None, metadata={"help": "Transform root classes."})
    operation_types: list[str] | None = field(default=None, metadata={"help": "Activation / norm classes."})
    attention_types: list[str] | None = field(default=None, metadata={"help": "Attention module classes."})
    mha_projection_names: list[str] | None = field(
        default=None, metadata={"help": "Attention projection name suffixes."}
    )
    exclude_keywords: list[str] | None = field(default=None, metadata={"help": "Names no tree may touch."})
    attention_noop: str | None = field(default=None, metadata={"help": "'zeros' or 'identity'."})
    ranking_csv: str | None = field(default=None, metadata={"help": "Write the tree ranking CSV here."})
    latency_seqlen: int = field(default=128, metadata={"help": "Tokens per latency measurement."})
    latency_repeats: int = field(default=5, metadata={"help": "Timed passes per latency measurement."})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.target_modules is not None or self.exclude_modules is not None:
            raise ValueError(
                "PruningTreeConfig selects trees itself: target_modules / exclude_modules do not apply (got "
                f"{self.target_modules!r} / {self.exclude_modules!r}). Use exclude_keywords=[...] instead."
            )
        check_range("target", self.target, 0.0, 1.0, low_inclusive=False, high_inclusive=False)
        if self.target_kind not in TARGET_KINDS:
            raise ValueError(f"target_kind must be one of {TARGET_KINDS}, got {self.target_kind!r}.")
        if self.importance not in IMPORTANCES:
            raise ValueError(f"importance must be one of {IMPORTANCES}, got {self.importance!r}.")
        kinds = _str_list("tree_kinds", self.tree_kinds)
        if not kinds or any(k not in TREE_KINDS for k in kinds):
            raise ValueError(
                f"tree_kinds must be a non-empty subset of {TREE_KINDS}, got {self.tree_kinds!r}."
            )
        self.tree_kinds = kinds
        for name in (
            "transform_types",
            "operation_types",
            "attention_types",
            "mha_projection_names",
            "exclude_keywords",
        ):
            setattr(self, name, _str_list(name, getattr(self, name)))
        if self.attention_noop not in (None, "zeros", "identity"):
            raise ValueError(f"attention_noop must be 'zeros' or 'identity', got {self.attention_noop!r}.")
        if self.budget not in ("at_least", "at_most"):
            raise ValueError(f"budget must be 'at_least' or 'at_most', got {self.budget!r}.")
        if self.budget == "at_most" and self.target_kind != "params":
            raise ValueError(
                "budget='at_most' needs target_kind='params' (a latency is only known after measuring it)."
            )
        check_range("latency_seqlen", self.latency_seqlen, 1, integer=True)
        check_range("latency_repeats", self.latency_repeats, 1, integer=True)

    def options(self, family: str | None, model: nn.Module) -> TreeOptions:
        """Resolve the tree options for a model (family defaults for unset fields).

        Args:
            family: The ``transformers`` family, or ``None`` for a plain module.
            model: The model (to check that every given exclude keyword matches a module).

        Raises:
            ValueError: If a given exclude keyword matches no module name.
        """
        d = tree_defaults(family)
        if self.exclude_keywords is not None:
            names = [n for n, _ in model.named_modules() if n]
            missing = [k for k in self.exclude_keywords if not any(k in n for n in names)]
            if missing:
                raise ValueError(
                    f"exclude_keywords {missing} match no module of {type(model).__name__} (a keyword is a "
                    f"substring of a module name, e.g. {names[:3]}). Fix or drop them."
                )
        return TreeOptions(
            transform_types=tuple(self.transform_types or d.transform_types),
            operation_types=tuple(self.operation_types or d.operation_types),
            attention_types=tuple(
                self.attention_types if self.attention_types is not None else d.attention_types
            ),
            mha_projection_names=tuple(
                self.mha_projection_names if self.mha_projection_names is not None else d.mha_projection_names
            ),
            exclude_keywords=tuple(
                self.exclude_keywords if self.exclude_keywords is not None else d.exclude_keywords
            ),
            attention_noop=self.attention_noop or d.attention_noop,
            transform="transform" in self.tree_kinds,
            attention="attention" in self.tree_kinds,
            heads="head" in self.tree_kinds,
        )


# -------------------------------------------------------------------------------------- selection
@dataclass
class TreeResult:
    """What :func:`prune_module_trees` / the transformers runner did.

    Args:
        ranking: One row per tree of the first ranking (``root, kind, params, importance, removed``).
        removed: Keys of the removed trees, in removal order.
        params_before: Counted parameters (blocks / non-excluded modules) before.
        params_removed: Parameters removed.
        latency: ``{"baseline_ms", "pruned_ms", "speedup", ...}`` measured on this device.
        base_loss: Calibration loss before pruning (``importance="loss"``).
    """

    ranking: list[dict[str, Any]]
    removed: list[str]
    params_before: int
    params_removed: int
    latency: dict[str, Any] = field(default_factory=dict)
    base_loss: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-able summary."""
        return {
            "ranking": self.ranking,
            "removed": self.removed,
            "params_before": self.params_before,
            "params_removed": self.params_removed,
            "removed_fraction": self.params_removed / max(self.params_before, 1),
            "latency": self.latency,
            "base_loss": self.base_loss,
        }


def _magnitude(model: nn.Module, tree: Tree) -> float:
    """Mean squared weight of what the tree removes (the parameters of its scope that disappear)."""
    scope = model.get_submodule(tree.scope) if tree.scope else model
    before = {id(p): p for p in scope.parameters()}
    total_before = sum(float(p.detach().float().pow(2).sum()) for p in before.values())
    with applied(model, tree):
        scope_after = model.get_submodule(tree.scope) if tree.scope else model
        total_after = sum(float(p.detach().float().pow(2).sum()) for p in scope_after.parameters())
    return (total_before - total_after) / max(tree.params, 1)


#: ``losses(trees) -> {key: loss with that tree alone removed}``: a faster exact way to score many trees.
TreeLosses = Callable[[Sequence[Tree]], dict[str, float]]


def _score(
    model: nn.Module,
    trees: Sequence[Tree],
    importance: str,
    loss_fn: Callable[[], float] | None,
    base: float | None,
    tree_losses: TreeLosses | None = None,
) -> dict[str, float]:
    if importance == "loss" and tree_losses is not None:
        return {k: float(v) - float(base) for k, v in tree_losses(trees).items()}  # type: ignore[arg-type]
    scores: dict[str, float] = {}
    for tree in trees:
        if importance == "loss":
            with applied(model, tree):
                scores[tree.key] = float(loss_fn()) - float(base)  # type: ignore[misc,arg-type]
        else:
            scores[tree.key] = _magnitude(model, tree)
    return scores


def _fmt(x: float) -> str:
    return f"{x:.8g}"


def write_ranking_csv(ranking: Sequence[dict[str, Any]], path: str | os.PathLike[str]) -> Path:
    """Write the tree ranking: one row per tree (``rank, root, kind, params, importance, removed, key``).

    Args:
        ranking: ``TreeResult.ranking``.
        path: Destination file (parent folders are created).

    Returns:
        The path written.
    """
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["rank", "root", "kind", "params", "importance", "removed", "key"])
        for row in ranking:
            w.writerow(
                [
                    row["rank"],
                    row["root"],
                    row["kind"],
                    row["params"],
                    _fmt(row["importance"]),
                    int(row["removed"]),
                    row["key"],
                ]
            )
    return out


def _select(
    model: nn.Module,
    config: PruningTreeConfig,
    enumerate_fn: Callable[[], list[Tree]],
    loss_fn: Callable[[], float] | None,
    latency_fn: Callable[[], float],
    counted_params: Callable[[], int],
    tree_losses: TreeLosses | None = None,
) -> TreeResult:
    """Score the trees, then remove them from the least important until the target is met."""
    trees = enumerate_fn()
    if not trees:
        raise ValueError(
            f"{type(model).__name__} has no removable tree for tree_kinds={config.tree_kinds} (check "
            "transform_types / attention_types / exclude_keywords)."
        )
    for t in trees:
        measure_tree(model, t)
    base_loss = float(loss_fn()) if config.importance == "loss" and loss_fn is not None else None
    scores = _score(model, trees, config.importance, loss_fn, base_loss, tree_losses)
    order = sorted(trees, key=lambda t: (scores[t.key], t.key))
    ranking = [
        {
            "rank": i + 1,
            "key": t.key,
            "root": t.root,
            "kind": t.kind,
            "params": t.params,
            "importance": scores[t.key],
            "removed": False,
        }
        for i, t in enumerate(order)
    ]
    params_before = counted_params()
    base_ms = latency_fn()
    if config.target_kind == "params":
        goal = config.target * params_before
        upper = sum(t.params for t in trees)
        if upper < goal:
            raise ValueError(
                f"target={config.target} asks to remove {int(goal):,} of {params_before:,} parameters, but "
                f"all {len(trees)} trees together remove at most {upper:,} ({upper / params_before:.1%}). "
                "Lower the target or allow more tree_kinds."
            )
    removed: list[str] = []
    current = trees

    def met() -> bool:
        if config.target_kind == "params":
            return params_before - counted_params() >= config.target * params_before
        return latency_fn() <= (1.0 - config.target) * base_ms

    while not met():
        candidates = [t for t in current if t.key not in removed]
        if not candidates:
            raise ValueError(
                f"All trees were removed and the {config.target_kind} target {config.target} is still not "
                f"met (removed {params_before - counted_params():,} of {params_before:,} parameters). The "
                "model is left pruned as far as the trees allow; lower the target."
            )
        if config.rerank:
            for t in candidates:
                measure_tree(model, t)
            cur_base = float(loss_fn()) if config.importance == "loss" and loss_fn is not None else None
            scores.update(_score(model, candidates, config.importance, loss_fn, cur_base, tree_losses))
        unknown = [t for t in candidates if t.key not in scores]
        if unknown:
            for t in unknown:
                measure_tree(model, t)
            cur_base = float(loss_fn()) if config.importance == "loss" and loss_fn is not None else None
            scores.update(_score(model, unknown, config.importance, loss_fn, cur_base, tree_losses))
        if config.budget == "at_most":
            # Never pass the target: only trees that fit what is left of it; stop when none does.
            left = config.target * params_before - (params_before - counted_params())
            for t in candidates:
                measure_tree(model, t)
            candidates = [t for t in candidates if 0 < t.params <= left]
            if not candidates:
                break
        best = min(candidates, key=lambda t: (scores[t.key], t.key))
        apply_plan(model, best.plan)
        removed.append(best.key)
        current = enumerate_fn()
    for row in ranking:
        row["removed"] = row["key"] in removed
    pruned_ms = latency_fn()
    return TreeResult(
        ranking=ranking,
        removed=removed,
        params_before=params_before,
        params_removed=params_before - counted_params(),
        latency={"baseline_ms": base_ms, "pruned_ms": pruned_ms, "speedup": base_ms / pruned_ms},
        base_loss=base_loss,
    )


def _median_ms(model: nn.Module, run: Callable[[], Any], repeats: int, warmup: int = 1) -> float:
    was = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for _ in range(warmup):
                run()
            times = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                run()
                times.append((time.perf_counter() - t0) * 1000.0)
    finally:
        model.train(was)
    return statistics.median(times)


def _environment(repeats: int) -> dict[str, Any]:
    return {
        "device": "cpu" if not torch.cuda.is_available() else torch.cuda.get_device_name(),
        "cpu": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "repeats": repeats,
        "protocol": "median of full forward passes before and after pruning, same inputs",
    }


def _call(model: nn.Module, inputs: Any) -> Any:
    if isinstance(inputs, dict):
        return model(**inputs)
    if isinstance(inputs, (tuple, list)):
        return model(*inputs)
    return model(inputs)


# ------------------------------------------------------------------------------- plain nn.Module
def prune_module_trees(
    model: nn.Module,
    config: PruningTreeConfig,
    example_inputs: Any,
    *,
    calibration: Sequence[Any] | None = None,
    loss_fn: Callable[[nn.Module], float] | None = None,
) -> TreeResult:
    """Prune a plain ``nn.Module`` (a CNN, any non-``transformers`` model) with pruning trees, in place.

    Args:
        model: The module.
        config: The config (set ``attention_types`` / ``exclude_keywords`` for your model: a plain
            module has no family defaults).
        example_inputs: A dummy input for tracing (tensor, tuple of positional inputs or dict).
        calibration: Inputs (same form) the loss is measured on (default: ``[example_inputs]``).
        loss_fn: ``loss_fn(model) -> float`` on your data; default: mean squared distance of the model's
            outputs on ``calibration`` from the dense model's.

    Returns:
        The result (ranking, removed trees, parameters, latency before / after).

    Raises:
        TypeError: If ``model`` is not an ``nn.Module`` or ``config`` not a ``PruningTreeConfig``.
        ValueError: For an untraceable model, unmatched exclude keywords or an unreachable target.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}.")
    if not isinstance(config, PruningTreeConfig):
        raise TypeError(f"config must be a PruningTreeConfig, got {type(config).__name__}.")
    opts = config.options(None, model)
    data = list(calibration) if calibration is not None else [example_inputs]
    if loss_fn is None:
        with torch.no_grad():
            refs = [_first_tensor(_call(model.eval(), x)).detach().clone() for x in data]

        def default_loss(m: nn.Module) -> float:
            with torch.no_grad():
                outs = [_first_tensor(_call(m, x)) for x in data]
            return float(
                sum((o.float() - r.float()).pow(2).mean() for o, r in zip(outs, refs, strict=True))
                / len(refs)
            )

        loss_fn = default_loss
    model.eval()
    excluded = [m for n, m in model.named_modules() if n and any(k in n for k in opts.exclude_keywords)]
    excluded_params = sum(
        param_count(m) for m in excluded if not any(m is not o and _is_child(m, o) for o in excluded)
    )
    result = _select(
        model,
        config,
        lambda: enumerate_trees(model, opts, example_inputs),
        (lambda: loss_fn(model)) if config.importance == "loss" else None,  # type: ignore[misc]
        lambda: _median_ms(model, lambda: _call(model, example_inputs), config.latency_repeats),
        lambda: param_count(model) - excluded_params,
    )
    result.latency.update(_environment(config.latency_repeats))
    if config.ranking_csv:
        write_ranking_csv(result.ranking, config.ranking_csv)
    return result


def _is_child(child: nn.Module, parent: nn.Module) -> bool:
    return any(child is m for m in parent.modules())


def _first_tensor(out: Any) -> torch.Tensor:
    if isinstance(out, torch.Tensor):
        return out
    for attr in ("logits", "last_hidden_state"):
        if hasattr(out, attr):
            return getattr(out, attr)
    if isinstance(out, (tuple, list)) and out:
        return _first_tensor(out[0])
    raise TypeError(f"Cannot find a tensor in the model output of type {type(out).__name__}.")


def save_pruned_module(
    model: nn.Module, folder: str | os.PathLike[str], *, result: TreeResult | None = None
) -> Path:
    """Save a tree-pruned plain module: ``model.safetensors`` + ``pruning_trees.json`` (never pickle).

    Args:
        model: The pruned module.
        folder: Destination folder.
        result: The pruning result to keep beside the structure (ranking, latency).

    Returns:
        The folder.

    Raises:
        ValueError: If no tree was applied to ``model``.
    """
    from safetensors.torch import save_model

    record = read_tree_record(model)
    if record is None:
        raise ValueError(
            f"{type(model).__name__} carries no pruning-trees record: prune it with prune_module_trees."
        )
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    save_model(model, str(out / WEIGHTS_FILE))
    data = {"format": "hf_prune.pruning_trees", "class": type(model).__name__, "structure": record}
    if result is not None:
        data["result"] = result.to_dict()
    (out / STRUCTURE_FILE).write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    return out


def load_pruned_module(model: nn.Module, folder: str | os.PathLike[str]) -> nn.Module:
    """Rebuild a saved tree-pruned module: replay the structure on ``model`` and load the weights.

    Args:
        model: A freshly built module of the same class and constructor arguments as the one pruned.
        folder: A folder written by :func:`save_pruned_module`.

    Returns:
        ``model``, pruned and loaded (in eval mode).

    Raises:
        FileNotFoundError: If the files are missing.
        ValueError: If the structure does not fit ``model`` or the weights do not match it.
    """
    from safetensors.torch import load_model

    src = Path(folder)
    for name in (STRUCTURE_FILE, WEIGHTS_FILE):
        if not (src / name).is_file():
            raise FileNotFoundError(f"No {name} in {str(src)!r}: not a folder written by save_pruned_module.")
    data = json.loads((src / STRUCTURE_FILE).read_text())
    if data.get("format") != "hf_prune.pruning_trees":
        raise ValueError(f"{str(src / STRUCTURE_FILE)!r} is not a pruning-trees structure file.")
    if data.get("class") != type(model).__name__:
        raise ValueError(
            f"{str(src)!r} holds a pruned {data.get('class')}, but model is a {type(model).__name__}: build "
            "the same class with the same arguments."
        )
    apply_tree_record(model, data["structure"])
    try:
        load_model(model, str(src / WEIGHTS_FILE), strict=True)
    except RuntimeError as err:
        raise ValueError(f"The weights in {str(src)!r} do not fit the rebuilt structure: {err}") from None
    return model.eval()


# ---------------------------------------------------------------------------- transformers runner
def _example_inputs(model: PreTrainedModel, batches: list[dict[str, torch.Tensor]] | None) -> dict[str, Any]:
    if batches:
        first = batches[0]
        return {k: v[:1] for k, v in first.items() if isinstance(v, torch.Tensor)}
    if getattr(model, "main_input_name", "") == "pixel_values":
        cfg = model.config
        g = torch.Generator().manual_seed(0)
        size = cfg.image_size if isinstance(cfg.image_size, int) else cfg.image_size[0]
        return {"pixel_values": torch.randn(1, int(cfg.num_channels), size, size, generator=g)}
    dummy = dict(model.dummy_inputs)
    return {k: v[:1] for k, v in dummy.items() if isinstance(v, torch.Tensor)}


def _logits(out: Any) -> Any:
    return out.logits if hasattr(out, "logits") else out.last_hidden_state


def _latency_inputs(model: PreTrainedModel, example: dict[str, Any], seqlen: int) -> dict[str, Any]:
    if "input_ids" in example and getattr(model.config, "vocab_size", None):
        g = torch.Generator().manual_seed(0)
        vocab = int(model.get_input_embeddings().num_embeddings)
        limit = getattr(model.config, "max_position_embeddings", None) or getattr(
            model.config, "n_positions", None
        )
        ids = torch.randint(0, vocab, (1, min(seqlen, int(limit or seqlen))), generator=g)
        out: dict[str, Any] = {"input_ids": ids}
        if "attention_mask" in example:
            out["attention_mask"] = torch.ones_like(ids)
        if get_arch(model).stacks[-1].causal:
            out["use_cache"] = False
        return out
    return example


def _block_tree_losses(
    model: PreTrainedModel, batches: list[dict[str, torch.Tensor]], stack: Any, judge: Any
) -> TreeLosses:
    """Score trees that live inside one block from that block's captured inputs (exact, less work).

    A tree inside block ``l`` leaves blocks ``0..l-1`` untouched, so the hidden states entering block
    ``l`` are the dense model's: they are computed once, block by block (the sequential runner's captured
    inputs, as the ablation depth scorer does), and each tree only runs blocks ``l..L-1``. Trees outside
    the blocks are scored with a full forward pass.
    """
    from hf_prune.calibration.depth import _inject_hidden, model_loss
    from hf_prune.calibration.runner import _hidden, _with_hidden, capture_block_inputs
    from hf_prune.surgery.depth import only_layers

    def losses(trees: Sequence[Tree]) -> dict[str, float]:
        layers = get_layers(model, stack)
        n = len(layers)
        names = {id(m): nm for nm, m in model.named_modules()}
        block_names = [names[id(b)] for b in layers]
        by_block: dict[int, list[Tree]] = {i: [] for i in range(n)}
        out: dict[str, float] = {}
        for t in trees:
            idx = next(
                (i for i, b in enumerate(block_names) if t.scope == b or t.scope.startswith(b + ".")), None
            )
            if idx is None:
                with applied(model, t):
                    out[t.key] = model_loss(model, batches, stack, judge)[0]
            else:
                by_block[idx].append(t)
        if not any(by_block.values()):
            return out
        with torch.no_grad():
            inputs = capture_block_inputs(model, stack, batches)
            for idx in range(n):
                if by_block[idx]:
                    hidden = [a[0] if a else k["hidden_states"] for a, k in inputs]
                    for t in by_block[idx]:
                        with applied(model, t):
                            block = get_layers(model, stack)[idx]  # the tree's copy when it is the scope
                            with only_layers(model, stack, range(idx, n)), _inject_hidden(block, hidden):
                                out[t.key] = model_loss(model, batches, stack, judge)[0]
                if idx < n - 1 and any(by_block[j] for j in range(idx + 1, n)):
                    for j, (a, k) in enumerate(inputs):
                        inputs[j] = _with_hidden(a, k, _hidden(layers[idx](*a, **k)))
        return out

    return losses


def run_pruning_trees(
    model: PreTrainedModel, config: PruningTreeConfig, ctx: PruneContext
) -> list[LayerReport]:
    """Prune a ``transformers`` model with pruning trees (see the module docstring).

    Args:
        model: The model (``ctx.pruned.base_model``).
        config: The config.
        ctx: Calibration data (needed for ``importance="loss"``); ``ctx.pruned`` gets the report.

    Returns:
        One report row per removed tree.
    """
    from hf_prune.calibration.depth import model_loss
    from hf_prune.surgery.structure import config_updates

    arch = get_arch(model)
    if read_tree_record(model) is None and any(u["per_layer"] for u in config_updates(model).values()):
        # The tree record replays on the skeleton config.json builds; per-layer widths from an earlier
        # width pruning would not be rebuilt first, so the checkpoint could not be reloaded.
        raise ValueError(
            "PruningTreeConfig must come before per-layer width pruning: this model already has layers of "
            "different widths. Prune with trees first (or use uniform widths), then width-prune."
        )
    opts = config.options(arch.family, model)
    # Trees live in the blocks: embeddings, projectors, poolers and heads are never touched.
    names = {id(m): n for n, m in model.named_modules()}
    opts.within = tuple(names[id(b)] for s in arch.stacks for b in get_layers(model, s))
    batches = ctx.get_batches(config.method) if config.importance == "loss" else None
    if batches is None and ctx.calibration is not None:
        batches = ctx.get_batches(config.method)
    example = _example_inputs(model, batches)
    stack = arch.stacks[-1]
    judge: Any = None
    loss_fn = None
    if config.importance == "loss":
        _, judge = model_loss(model, batches, stack)  # type: ignore[arg-type]

        def loss_fn() -> float:
            return model_loss(model, batches, stack, judge)[0]  # type: ignore[arg-type]

    lat_in = _latency_inputs(model, example, config.latency_seqlen)
    blocks = [layer for s in arch.stacks for layer in get_layers(model, s)]

    def counted() -> int:
        return sum(param_count(b) for b in blocks)

    start = time.perf_counter()
    result = _select(
        model,
        config,
        lambda: enumerate_trees(model, opts, example, output_transform=_logits, arch_model=model),
        loss_fn,
        lambda: _median_ms(model, lambda: model(**lat_in), config.latency_repeats),
        counted,
        _block_tree_losses(model, batches, stack, judge) if config.importance == "loss" else None,  # type: ignore[arg-type]
    )
    env = _environment(config.latency_repeats)
    ids = lat_in.get("input_ids")
    if isinstance(ids, torch.Tensor):
        env.update({"batch_size": int(ids.shape[0]), "seqlen": int(ids.shape[1])})
    result.latency.update(env)
    if config.ranking_csv:
        write_ranking_csv(result.ranking, config.ranking_csv)
    rows = []
    by_key = {r["key"]: r for r in result.ranking}
    for key in result.removed:
        r = by_key.get(
            key, {"root": key.split(":", 1)[1], "kind": key.split(":", 1)[0], "params": 0, "importance": 0.0}
        )
        rows.append(
            LayerReport(
                name=r["root"],
                kind=f"tree:{r['kind']}",
                params_before=int(r["params"]),
                params_after=0,
                score={"importance": float(r["importance"])},
            )
        )
    if ctx.pruned is not None:
        ctx.pruned.report.speed = dict(result.latency)
        ctx.pruned.report.extra["pruning_trees"] = {
            **result.to_dict(),
            "tree_kinds": config.tree_kinds,
            "importance": config.importance,
            "target": config.target,
            "target_kind": config.target_kind,
            "seconds": round(time.perf_counter() - start, 3),
        }
    return rows

"""Width (structured) pruning: remove whole MLP neurons and attention heads, physically.

The stages (DESIGN §3) are composed here: *calibrate* (nothing, the sequential runner's input norms,
or the first-order gradients), *score* (per-weight scores of the method aggregated per unit by the pure
functions of :mod:`hf_prune.scoring.structured`), *select* (:mod:`hf_prune.selection.structured`:
uniform or one global threshold on per-layer standardized scores, with ``round_to``, ``min_keep`` and
equal query heads per KV group) and *apply* (``PrunedModel.prune_neurons`` / ``prune_heads``, which
slice the projections and keep the config in sync).

A unit's score aggregates every weight coupled to it, as LLM-Pruner does for its dependency groups
(Ma et al., "LLM-Pruner: On the Structural Pruning of Large Language Models", NeurIPS 2023): a neuron's
input-projection rows (gate and up, ``fc1``, ``c_fc``, BERT's ``intermediate``) and output-projection
column (down, ``fc2``, ``c_proj``, BERT's ``output``); a head's ``q``/``k``/``v`` rows and ``o``
columns (``head_dim`` of each).

Uniform results keep every layer the same width, so ``config.json`` holds the new global sizes (plain
``transformers`` loads them where the README's table says so); global results differ per layer and go
to ``per_layer_config``, loaded by ``AutoPrunedModel*``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn
from transformers import PreTrainedModel
from transformers.pytorch_utils import Conv1D

from hf_prune.arch import (
    HeadGeometry,
    StackSpec,
    get_arch,
    get_layers,
    get_submodule,
    head_geometry,
    linear_in_out,
)
from hf_prune.arch.targets import matches, resolve_targets
from hf_prune.calibration.stats import InputSqNorm, StatCollector
from hf_prune.config import PruningConfig, check_range
from hf_prune.methods.base import PruneContext
from hf_prune.report import LayerReport, score_summary
from hf_prune.scoring.structured import (
    head_terms,
    kv_group_terms,
    neuron_terms,
    reduce_terms,
    split_fused_qkv,
)
from hf_prune.scoring.wanda import wanda_scores
from hf_prune.selection.structured import (
    UnitLayer,
    global_keep_counts,
    keep_choices,
    select_query_heads,
    select_top,
    select_units,
    uniform_keep,
)
from hf_prune.surgery.offload import is_offloaded, read_weight_out_in
from hf_prune.surgery.subblock import attention_removed, mlp_removed

SCOPES = ("mlp", "attention", "both")
ALLOCATIONS = ("uniform", "global")
HEAD_GRANULARITIES = ("query", "kv_group")


def _check_choice(name: str, value: Any, allowed: tuple[str, ...], fix: str) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {allowed}, got {value!r}. {fix}")


@dataclass
class StructuredConfig(PruningConfig):
    """Base of the width-pruning methods: remove a fraction of MLP neurons and/or attention heads.

    Args:
        sparsity: Fraction of the targeted units removed, in ``[0, 1)``: of every layer's units
            (``"uniform"``), or of all targeted layers' units together (``"global"``). With
            ``scope="both"`` it applies to neurons and to heads separately.
        scope: ``"mlp"`` (neurons), ``"attention"`` (heads) or ``"both"``.
        allocation: ``"uniform"`` (the same fraction in every layer) or ``"global"`` (one threshold over
            all layers on scores standardized per layer, as the AFR paper ranks neurons across layers).
        round_to: Kept MLP width of every layer is a multiple of this (8, 64, 256 for fast kernels), or
            the layer is left whole. Heads are always removed whole. ``round_to=256`` lands exactly on
            the widths the Nemotron-NAS layout can express (``save_pretrained(path,
            format="nemotron-nas")``), provided the unpruned width is a multiple of 256 too.
        min_keep: Fewest units kept in a layer: MLP neurons (rounded up to ``round_to``) and query heads
            (rounded up to one head per KV group, or to whole groups). ``0`` lets an MLP be emptied
            where the projection type allows it (``nn.Linear``; GPT-2's ``Conv1D`` keeps ``round_to``);
            attention always keeps at least one head per KV group (drop attention with depth pruning).
        head_granularity: Under grouped-query attention, ``"query"`` removes query heads inside their KV
            group with every group keeping the same count (KV heads stay), ``"kv_group"`` removes whole
            KV groups with their query heads (the KV cache shrinks too). Without GQA both remove single
            heads.
        target_modules: Patterns of projections; a block's MLP (attention) is pruned when a pattern
            selects any of its projections. ``None``: every block of the model's main stack (LLaVA: the
            language model; name the vision tower's projections to prune it).
        exclude_modules: Patterns; a block's MLP (attention) is left whole when one of its projections
            matches. A pattern that matches no module is an error.
    """

    sparsity: float = field(default=0.2, metadata={"help": "Fraction of targeted units removed, in [0, 1)."})
    scope: str = field(default="mlp", metadata={"help": "'mlp' (neurons), 'attention' (heads) or 'both'."})
    allocation: str = field(
        default="uniform",
        metadata={
            "help": "'uniform' (same fraction per layer) or 'global' (one threshold, z-scored per layer)."
        },
    )
    round_to: int = field(
        default=1,
        metadata={
            "help": "Kept MLP width per layer is a multiple of this (e.g. 8, 64; 256 for the "
            "Nemotron-NAS export, whose layout rounds every width up to a multiple of 256)."
        },
    )
    min_keep: int = field(
        default=1,
        metadata={
            "help": "Fewest neurons / heads kept per layer (rounded up to the granularity); "
            "0 allows an empty MLP."
        },
    )
    head_granularity: str = field(
        default="query",
        metadata={"help": "GQA: 'query' (equal query heads per KV group) or 'kv_group' (whole KV groups)."},
    )

    #: Statistics the scorer needs: "" (weights only), "sq_norm" (input norms) or "grad".
    needs: ClassVar[str] = ""
    #: Losses whose gradients are needed (``needs == "grad"``): "ce" and/or "rep".
    objectives: ClassVar[tuple[str, ...]] = ()
    #: How per-weight terms become a unit score: "sum" (non-negative scores) or "taylor" (signed W·g).
    reduce: ClassVar[str] = "sum"
    #: Trimmed fraction at each end of the hidden dimension for "taylor" (the reference code's 2 %).
    trim: ClassVar[float] = 0.02

    def __post_init__(self) -> None:
        super().__post_init__()
        check_range("sparsity", self.sparsity, 0.0, 1.0, high_inclusive=False)
        _check_choice(
            "scope",
            self.scope,
            SCOPES,
            "Use 'mlp' to remove MLP neurons, 'attention' to remove heads, 'both' for both.",
        )
        if not isinstance(self.allocation, str):
            raise TypeError(
                f"allocation must be 'uniform' or 'global' for structured methods, got {self.allocation!r}; "
                "AlphaAllocation / OWLAllocation apply to unstructured methods only."
            )
        _check_choice(
            "allocation",
            self.allocation,
            ALLOCATIONS,
            "Use 'uniform' for the same fraction per layer or 'global' for one threshold over all layers.",
        )
        check_range("round_to", self.round_to, 1, integer=True)
        check_range("min_keep", self.min_keep, 0, integer=True)
        _check_choice(
            "head_granularity",
            self.head_granularity,
            HEAD_GRANULARITIES,
            "Use 'query' to keep every KV head and an equal number of query heads per group, or "
            "'kv_group' to remove whole KV groups.",
        )

    # ---------------------------------------------------------------------------- method hooks
    def weight_terms(self, weight: torch.Tensor, stats: dict[str, Any]) -> dict[str, torch.Tensor]:
        """Per-weight score matrices of one projection, keyed by term name.

        Args:
            weight: ``[out, in]`` weight.
            stats: What the method collected for this projection (``"sq_norm"``, ``"grad_ce"`` ...).

        Returns:
            ``{name: [out, in] tensor}``; most methods return one term, ``"score"``.
        """
        raise NotImplementedError

    def combine(self, parts: list[dict[str, torch.Tensor]]) -> list[torch.Tensor]:
        """Final unit scores of several layers compared together, from their reduced terms.

        Args:
            parts: Per layer, ``{term name: [units] reduced score}``.

        Returns:
            One ``[units]`` score tensor per layer; higher keeps.
        """
        return [p["score"] for p in parts]


# ------------------------------------------------------------------------------------------- runner
@dataclass
class _Site:
    """One prunable structure: the MLP or the attention of one block."""

    stack: StackSpec
    layer: int
    kind: str  # "mlp" | "attention"
    roles: dict[str, nn.Module]  # mlp: "in0".., "out"; attention: "q", "k", "v" (or "qkv"), "o"
    name: str
    geo: HeadGeometry | None = None

    @property
    def group(self) -> int:
        """Query heads per KV head (1 for MLPs and multi-head attention)."""
        return self.geo.group_size if self.geo else 1


def _roles(block: nn.Module, stack: StackSpec, kind: str) -> dict[str, nn.Module]:
    spec = stack.block
    if kind == "mlp":
        roles = {f"in{i}": get_submodule(block, p) for i, p in enumerate(spec.mlp_in)}
        roles["out"] = get_submodule(block, spec.mlp_out)
        return roles
    if spec.qkv:
        return {"qkv": get_submodule(block, spec.qkv), "o": get_submodule(block, spec.o)}
    return {
        r: get_submodule(block, p or "")
        for r, p in (("q", spec.q), ("k", spec.k), ("v", spec.v), ("o", spec.o))
    }


def _sites(model: PreTrainedModel, config: StructuredConfig) -> list[_Site]:
    """The structures to prune, in (stack, layer, attention-before-MLP) order."""
    arch = get_arch(model)
    refs = resolve_targets(model, config.target_modules, config.exclude_modules)  # validates patterns
    outside = [r.name for r in refs if r.block_idx < 0]
    if outside:
        raise ValueError(
            f"target_modules selects {outside[:5]} outside the transformer blocks; structured methods remove "
            "MLP neurons and attention heads inside blocks. Target block projections (e.g. 'mlp.down_proj')."
        )
    stacks = {r.stack for r in refs} if config.target_modules is not None else {arch.stacks[-1].name}
    targeted = {id(r.module) for r in refs}
    names = {id(m): n for n, m in model.named_modules()}
    kinds = ("attention", "mlp") if config.scope == "both" else (config.scope,)
    sites: list[_Site] = []
    for stack in arch.stacks:
        if stack.name not in stacks:
            continue
        for idx, block in enumerate(get_layers(model, stack)):
            for kind in kinds:
                if (attention_removed if kind == "attention" else mlp_removed)(model, stack, idx):
                    continue  # a removed sub-block (remove_attention / remove_mlp) has nothing left to prune
                roles = _roles(block, stack, kind)
                mods = list(roles.values())
                excluded = any(matches(names[id(m)], p) for m in mods for p in (config.exclude_modules or []))
                if excluded or not any(id(m) in targeted for m in mods):
                    continue
                geo = head_geometry(model, stack, idx) if kind == "attention" else None
                sites.append(_Site(stack, idx, kind, roles, f"{stack.name}.{idx}.{kind}", geo))
    if not sites:
        raise ValueError(
            f"No {config.scope} structure is targeted (scope={config.scope!r}, target_modules="
            f"{config.target_modules}, exclude_modules={config.exclude_modules}). A block's MLP / attention "
            "is pruned when target_modules selects one of its projections and exclude_modules none."
        )
    offloaded = [names[id(m)] for s in sites for m in s.roles.values() if is_offloaded(m)]
    if offloaded:
        raise ValueError(
            f"Structured pruning reshapes weights in memory; {offloaded[:3]} are offloaded by accelerate. "
            "Load the model without offloading (device_map on GPUs / CPU only)."
        )
    return sites


def _mlp_width(site: _Site) -> int:
    first = site.roles["in0"]
    return int(first.weight.shape[1] if isinstance(first, Conv1D) else first.weight.shape[0])


def _site_parts(
    config: StructuredConfig, site: _Site, stats: dict[str, dict[str, Any]]
) -> dict[str, torch.Tensor]:
    """Reduced unit scores per term name: ``[neurons]`` / ``[query heads]`` / ``[KV groups]``."""
    with torch.no_grad():
        terms = {
            role: config.weight_terms(read_weight_out_in(m).detach(), stats.get(role, {}))
            for role, m in site.roles.items()
        }
    out: dict[str, torch.Tensor] = {}
    for name in terms[next(iter(terms))]:
        if site.kind == "mlp":
            ins = [terms[r][name] for r in site.roles if r.startswith("in")]
            unit_terms = neuron_terms(ins, terms["out"][name])
        else:
            assert site.geo is not None  # attention sites always carry their geometry
            if "qkv" in terms:
                q, k, v = split_fused_qkv(terms["qkv"][name])
            else:
                q, k, v = terms["q"][name], terms["k"][name], terms["v"][name]
            geo = site.geo
            by_group = config.head_granularity == "kv_group" and geo.group_size > 1
            gather = kv_group_terms if by_group else head_terms
            unit_terms = gather(q, k, v, terms["o"][name], geo.num_heads, geo.num_kv_heads, geo.head_dim)
        out[name] = reduce_terms(unit_terms, config.reduce, trim=config.trim)
    return out


def _unit_layer(config: StructuredConfig, site: _Site, scores: torch.Tensor) -> UnitLayer:
    if site.kind == "mlp":
        conv = isinstance(site.roles["in0"], Conv1D)
        # GPT-2's Conv1D cannot run with zero output features, so its MLP is never emptied.
        floor = max(config.min_keep, 1) if conv else config.min_keep
        return UnitLayer(scores, round_to=config.round_to, min_keep=floor)
    assert site.geo is not None
    geo = site.geo
    if geo.group_size > 1 and config.head_granularity == "query":
        return UnitLayer(scores, min_keep=max(config.min_keep, 1), groups=geo.num_kv_heads)
    if geo.group_size > 1:  # whole KV groups: min_keep heads -> whole groups, at least one
        return UnitLayer(scores, min_keep=max(1, math.ceil(config.min_keep / geo.group_size)))
    return UnitLayer(scores, min_keep=max(config.min_keep, 1))


def _granularity(config: StructuredConfig, site: _Site) -> tuple[str, str]:
    """``(unit name, how units are removed)`` of a structure, for messages."""
    if site.kind == "mlp":
        return "MLP neurons", f"neurons so that the kept width is a multiple of round_to={config.round_to}"
    if site.group > 1 and config.head_granularity == "kv_group":
        return "KV groups", f"whole KV groups of {site.group} query heads (head_granularity='kv_group')"
    if site.group > 1:
        return "query heads", "one query head from every KV group at a time (head_granularity='query')"
    return "heads", "single heads"


def _uniform_count(config: StructuredConfig, site: _Site, layer: UnitLayer) -> int:
    """Kept units of one layer under uniform allocation, with errors that say what to change."""
    unit, how = _granularity(config, site)
    if site.kind == "mlp":
        where = f"{site.name} ({unit})"
        if layer.min_keep > config.min_keep:
            where = f"{site.name} (MLP neurons; a Conv1D MLP cannot be emptied, so min_keep counts as 1)"
        keep = uniform_keep(
            layer.width, config.sparsity, round_to=layer.round_to, min_keep=layer.min_keep, where=where
        )
        step = layer.width - keep_choices(layer.width, layer.round_to)[1] if layer.width > 0 else 0
    else:
        # Attention: the nearest valid count first, then the floor (at least one head per KV group,
        # and min_keep), so the message can say which constraint the request breaks.
        step = layer.groups  # query heads removed per step under "query" GQA, else one unit
        keep = step * uniform_keep(layer.width // step, config.sparsity, min_keep=0)
        floor = layer.choices()[-1]
        if keep < floor and (keep == 0 or keep < step):
            raise ValueError(
                f"sparsity={config.sparsity} would remove every head of {site.name} ({layer.width} {unit}, "
                f"removing {how}); attention keeps at least one head (one per KV group under GQA). Lower "
                "sparsity, or remove whole blocks with depth pruning."
            )
        if keep < floor:
            raise ValueError(
                f"sparsity={config.sparsity} would keep {keep} of {layer.width} {unit} in {site.name}, below "
                f"min_keep={config.min_keep} (rounded up to the granularity: {floor}). Lower sparsity or "
                "min_keep."
            )
    if keep == layer.width and config.sparsity > 0:
        fixes = {"MLP neurons": "a smaller round_to", "KV groups": "head_granularity='query'"}
        fix = f"use {fixes[unit]} or allocation='global'" if unit in fixes else "use allocation='global'"
        raise ValueError(
            f"sparsity={config.sparsity} removes nothing from {site.name} ({layer.width} {unit}): removing "
            f"{how}, the smallest step is {step} of {layer.width} ({step / layer.width:.1%}) and "
            f"{config.sparsity:.1%} rounds to none. Raise sparsity above {step / layer.width / 2:.3g}, "
            f"or {fix}."
        )
    return keep


def _kept_indices(config: StructuredConfig, site: _Site, layer: UnitLayer, n_keep: int) -> list[int]:
    """Kept neuron indices (MLP) or kept query-head indices (attention)."""
    if site.kind == "attention" and site.group > 1 and config.head_granularity == "kv_group":
        assert site.geo is not None
        groups = select_top(layer.scores, n_keep)
        return [grp * site.group + j for grp in groups for j in range(site.group)]
    if layer.groups > 1:
        return select_query_heads(layer.scores, layer.groups, n_keep // layer.groups)
    return select_units(layer, n_keep)


def _apply(
    pm: Any, config: StructuredConfig, site: _Site, layer: UnitLayer, n_keep: int, ratio: float
) -> LayerReport:
    """Shrink one structure through the ``PrunedModel`` surgery and return its enriched report row."""
    keep = _kept_indices(config, site, layer, n_keep)
    before = len(pm.report.layers)
    if site.kind == "mlp":
        width = _mlp_width(site)
        pm.prune_neurons(site.layer, keep, stack=site.stack.name)
    else:
        assert site.geo is not None
        width = site.geo.num_heads
        pm.prune_heads(site.layer, keep, stack=site.stack.name)
    # The surgery recorded a row (original block numbering); take it back to enrich and return it.
    row: LayerReport = pm.report.layers.pop()
    if len(pm.report.layers) != before:  # pragma: no cover - internal invariant of the recorder
        raise RuntimeError("PrunedModel's width recorder added an unexpected number of rows.")
    row.ratio_requested = float(ratio)
    row.score = score_summary(layer.scores)
    row.kept_units = {
        **(row.kept_units or {}),
        f"{'neurons' if site.kind == 'mlp' else 'heads'}_before": width,
    }
    return row


def _gradients(
    model: PreTrainedModel, config: StructuredConfig, sites: list[_Site], ctx: PruneContext
) -> dict[tuple[int, str], dict[str, Any]]:
    """Accumulated gradients of every objective, per (site index, role)."""
    from hf_prune.calibration.gradients import accumulate_gradients
    from hf_prune.scoring.refer_svd import representation_svd_loss

    batches = ctx.get_batches(config.method)
    keys = [(i, role) for i, s in enumerate(sites) for role in s.roles]
    modules = [sites[i].roles[role] for i, role in keys]
    stats: dict[tuple[int, str], dict[str, Any]] = {k: {} for k in keys}
    for objective in config.objectives:
        grads = accumulate_gradients(
            model, batches, modules, objective, rep_loss=representation_svd_loss, progress=ctx.progress
        )
        for key, g in zip(keys, grads, strict=True):
            stats[key][f"grad_{objective}"] = g
    return stats


def _sq_norm_pass(
    model: PreTrainedModel,
    sites: list[_Site],
    ctx: PruneContext,
    method: str,
    on_site: Callable[[int, dict[str, dict[str, Any]]], None],
    recompute: bool,
) -> None:
    """Run the sequential runner, calling ``on_site(site index, {role: {"sq_norm": ...}})`` per site."""
    from hf_prune.calibration.runner import run_sequential

    batches = ctx.get_batches(method)
    by_block: dict[tuple[str, int], list[int]] = {}
    for i, s in enumerate(sites):
        by_block.setdefault((s.stack.name, s.layer), []).append(i)

    for stack in sorted({s.stack.name for s in sites}):

        def collectors(
            idx: int, block: nn.Module, stack: str = stack
        ) -> dict[str, tuple[nn.Module, StatCollector]]:
            out: dict[str, tuple[nn.Module, StatCollector]] = {}
            for i in by_block.get((stack, idx), []):
                for role, m in sites[i].roles.items():
                    n_in = linear_in_out(m)[0]  # shape only: never read an offloaded weight
                    out[f"{i}|{role}"] = (m, InputSqNorm(n_in))
            return out

        def on_block(idx: int, block: nn.Module, stats: dict[str, StatCollector]) -> None:
            per: dict[int, dict[str, dict[str, Any]]] = {}
            for key, col in stats.items():
                i, role = key.split("|")
                per.setdefault(int(i), {})[role] = {"sq_norm": col}
            for i in sorted(per):
                on_site(i, per[i])

        run_sequential(
            model,
            batches,
            stack=stack,
            collectors=collectors,
            on_block=on_block,
            recompute=recompute,
            progress=ctx.progress,
        )


def run_structured(model: PreTrainedModel, config: StructuredConfig, ctx: PruneContext) -> list[LayerReport]:
    """Score, select and physically remove the targeted MLP neurons and/or attention heads.

    Args:
        model: The model (shrunk in place).
        config: A :class:`StructuredConfig` subclass.
        ctx: Calibration data and options; ``ctx.pruned`` is the ``PrunedModel`` whose surgery records
            the changes (a temporary one is made when absent).

    Returns:
        One report row per pruned structure (kind ``"mlp"`` or ``"attention"``): parameters before and
        after, kept units, the removal ratio asked for that layer and a summary of its unit scores.

    Raises:
        ValueError: For a ``round_to`` larger than a targeted MLP, a sparsity that would go below
            ``min_keep`` (or empty an attention), a request too small for the granularity under
            ``"uniform"``, or patterns that match nothing.
    """
    from hf_prune.integration.pruned_model import PrunedModel

    pm = ctx.pruned if ctx.pruned is not None else PrunedModel(model, config)
    sites = _sites(model, config)
    for s in sites:
        if s.kind == "mlp" and config.round_to > _mlp_width(s):
            raise ValueError(
                f"round_to={config.round_to} is larger than the MLP width {_mlp_width(s)} of {s.name}: no "
                f"kept width can be a multiple of it. Use a round_to that fits every targeted layer (<= "
                f"{min(_mlp_width(t) for t in sites if t.kind == 'mlp')}), or exclude that layer."
            )
    rows: list[LayerReport | None] = [None] * len(sites)
    scores: list[torch.Tensor | None] = [None] * len(sites)

    def apply_uniform(i: int, unit_scores: torch.Tensor) -> None:
        layer = _unit_layer(config, sites[i], unit_scores)
        rows[i] = _apply(
            pm, config, sites[i], layer, _uniform_count(config, sites[i], layer), config.sparsity
        )

    uniform = config.allocation == "uniform"
    if config.needs == "sq_norm":

        def on_site(i: int, st: dict[str, dict[str, Any]]) -> None:
            unit_scores = config.combine([_site_parts(config, sites[i], st)])[0]
            if uniform:  # prune inside the pass: later blocks calibrate on this block's pruned output
                apply_uniform(i, unit_scores)
            else:
                scores[i] = unit_scores

        _sq_norm_pass(model, sites, ctx, config.method, on_site, recompute=uniform)
    else:
        stats = _gradients(model, config, sites, ctx) if config.needs == "grad" else {}
        parts = [
            _site_parts(config, s, {role: stats.get((i, role), {}) for role in s.roles})
            for i, s in enumerate(sites)
        ]
        if uniform:
            for i in range(len(sites)):
                apply_uniform(i, config.combine([parts[i]])[0])
        else:
            for kind in ("attention", "mlp"):
                idx = [i for i, s in enumerate(sites) if s.kind == kind]
                if idx:  # scores standardized over the compared group (AFR) see all its layers
                    for i, sc in zip(idx, config.combine([parts[i] for i in idx]), strict=True):
                        scores[i] = sc
    if not uniform:
        for kind in ("attention", "mlp"):
            idx = [i for i, s in enumerate(sites) if s.kind == kind]
            if not idx:
                continue
            layers = [_unit_layer(config, sites[i], scores[i]) for i in idx]  # type: ignore[arg-type]
            try:
                counts = global_keep_counts(layers, config.sparsity)
            except ValueError as err:  # say which pool of units the request does not fit
                raise ValueError(f"{_granularity(config, sites[idx[0]])[0]}: {err}") from None
            for i, layer, n_keep in zip(idx, layers, counts, strict=True):
                rows[i] = _apply(pm, config, sites[i], layer, n_keep, 1.0 - n_keep / layer.width)
    return [r for r in rows if r is not None]


# ------------------------------------------------------------------------------------------ methods
@dataclass
class StructuredMagnitudeConfig(StructuredConfig):
    """Structured magnitude: a unit's importance is the norm of all its weights (data-free baseline).

    Follows the filter-norm criterion of Li et al., "Pruning Filters for Efficient ConvNets" (ICLR 2017),
    applied to the coupled weights of each neuron / head (LLM-Pruner's groups, Ma et al. 2023).

    Args:
        sparsity: Fraction of targeted units removed, in ``[0, 1)``.
        scope: ``"mlp"``, ``"attention"`` or ``"both"``.
        allocation: ``"uniform"`` or ``"global"``.
        round_to: Kept MLP width per layer is a multiple of this.
        min_keep: Fewest units kept per layer.
        head_granularity: ``"query"`` or ``"kv_group"`` under GQA.
        norm: ``1`` (L1, as Li et al.) or ``2`` (L2) norm of the unit's weights.
        target_modules: Patterns of projections whose structures are pruned.
        exclude_modules: Patterns whose structures are left whole.
    """

    method: ClassVar[str] = "structured_magnitude"
    paper: ClassVar[str] = "Li et al., Pruning Filters for Efficient ConvNets (ICLR 2017)"

    norm: int = field(
        default=2, metadata={"help": "1 (L1, Li et al. 2017) or 2 (L2) norm of a unit's weights."}
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.norm, bool) or self.norm not in (1, 2):
            raise ValueError(f"norm must be 1 or 2, got {self.norm!r}. Use 1 for L1 (Li et al.) or 2 for L2.")

    def weight_terms(self, weight: torch.Tensor, stats: dict[str, Any]) -> dict[str, torch.Tensor]:
        """``|W|^p`` (summed per unit, then the p-th root gives the unit's norm).

        Args:
            weight: ``[out, in]`` weight.
            stats: Unused.
        """
        return {"score": weight.float().abs() ** self.norm}

    def combine(self, parts: list[dict[str, torch.Tensor]]) -> list[torch.Tensor]:
        """The p-th root of the summed ``|W|^p``: the L1 / L2 norm of each unit's weights.

        Args:
            parts: Per layer, ``{"score": [units] sum of |W|^p}``.
        """
        return [p["score"] ** (1.0 / self.norm) for p in parts]


@dataclass
class StructuredWandaConfig(StructuredConfig):
    """Structured Wanda: a unit's importance is the sum of ``|W_ij| · ‖X_j‖₂`` over its weights.

    Wanda's weight-times-input-norm score (Sun et al., "A Simple and Effective Pruning Approach for Large
    Language Models", arXiv 2023 / ICLR 2024) aggregated over each unit's coupled weights, the
    structured variant "Wanda-sp" of An et al. ("Fluctuation-based Adaptive Structured Pruning for Large
    Language Models", AAAI 2024). ``‖X_j‖`` is the input norm of each projection's feature ``j`` over the
    calibration tokens, from the sequential runner; under ``"uniform"`` each block is pruned before the
    next one is calibrated, as Wanda does.

    Args:
        sparsity: Fraction of targeted units removed, in ``[0, 1)``.
        scope: ``"mlp"``, ``"attention"`` or ``"both"``.
        allocation: ``"uniform"`` or ``"global"``.
        round_to: Kept MLP width per layer is a multiple of this.
        min_keep: Fewest units kept per layer.
        head_granularity: ``"query"`` or ``"kv_group"`` under GQA.
        target_modules: Patterns of projections whose structures are pruned.
        exclude_modules: Patterns whose structures are left whole.
    """

    method: ClassVar[str] = "structured_wanda"
    paper: ClassVar[str] = (
        "Sun et al., A Simple and Effective Pruning Approach for Large Language Models (2023); structured "
        "variant Wanda-sp as in An et al., Fluctuation-based Adaptive Structured Pruning (AAAI 2024)"
    )
    needs: ClassVar[str] = "sq_norm"

    def weight_terms(self, weight: torch.Tensor, stats: dict[str, Any]) -> dict[str, torch.Tensor]:
        """``|W_ij| · ‖X_j‖₂`` from the accumulated squared input norms.

        Args:
            weight: ``[out, in]`` weight.
            stats: Holds ``"sq_norm"`` (an ``InputSqNorm``).
        """
        return {"score": wanda_scores(weight, stats["sq_norm"].sum_sq.to(weight.device))}

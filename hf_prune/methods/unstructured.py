"""Unstructured and N:M pruning: any scorer x any per-layer allocator, calibrated layer by layer.

The stages are composed here (DESIGN §3): *calibrate* (sequential runner collecting what the scorer
needs), *score* (pure functions in ``hf_prune.scoring``), *allocate* (pure functions in
``hf_prune.allocation``), *select* (``hf_prune.selection``) and *apply* (reversible masks, or
SparseGPT's reconstructed weights).

Allocators that need every layer's scores before pruning (``"global"``, OWL) get a pre-pass over the
dense model; AlphaPruning needs only the weights (ESD), so it costs no calibration.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm
from transformers import PreTrainedModel

from hf_prune.arch import LinearRef, linear_in_out
from hf_prune.arch.targets import resolve_targets
from hf_prune.calibration.runner import run_sequential
from hf_prune.calibration.stats import InputHessian, InputSqNorm, StatCollector
from hf_prune.config import check_range
from hf_prune.methods.base import PruneContext, SparsityConfig
from hf_prune.report import LayerReport, score_summary
from hf_prune.scoring.select import fast_unstructured_mask
from hf_prune.selection.nm import nm_mask, nm_sparsity, parse_pattern
from hf_prune.surgery.masks import apply_mask, count_nonzero_weight
from hf_prune.surgery.offload import is_offloaded, read_weight_out_in, write_weight_out_in
from hf_prune.utils import release_freed_memory, show_progress

ALLOCATION_NAMES = ("uniform", "global")


@dataclass
class AlphaAllocation:
    """AlphaPruning per-layer sparsity (Lu et al., NeurIPS 2024).

    Layers whose weight spectra are more heavy-tailed (smaller power-law ``alpha``, better trained) are
    pruned less: the metric is mapped linearly into ``[1 - epsilon, 1 + epsilon]`` and rescaled so the
    parameter-weighted mean equals the target sparsity.

    Args:
        metric: ESD metric (``"alpha_peak"``, ``"alpha_mid"`` or a weightwatcher metric).
        epsilon: Half-width of the ratio band, in ``(0, 1)``.
        mapping: ``"block_wise"`` (one value per block, the metric averaged over its layers) or
            ``"layer_wise"``.
        metric_file: Precomputed metric values (``.npy`` in module order, or ``.json``) instead of
            computing them.
        max_ratio: Largest per-layer sparsity; excess is redistributed so the target still holds.
    """

    metric: str = "alpha_peak"
    epsilon: float = 0.3
    mapping: str = "block_wise"
    metric_file: str | None = None
    max_ratio: float = 0.99

    def __post_init__(self) -> None:
        check_range("epsilon", self.epsilon, 0.0, 1.0, low_inclusive=False, high_inclusive=False)
        if self.mapping not in ("block_wise", "layer_wise"):
            raise ValueError(f"mapping must be 'block_wise' or 'layer_wise', got {self.mapping!r}.")
        check_range("max_ratio", self.max_ratio, 0.0, 1.0, low_inclusive=False, high_inclusive=False)
        from hf_prune.esd import KNOWN_METRICS

        if self.metric not in KNOWN_METRICS:
            raise ValueError(f"Unknown ESD metric {self.metric!r}; known: {', '.join(KNOWN_METRICS)}.")


@dataclass
class OWLAllocation:
    """OWL: Outlier-Weighed Layerwise sparsity (Yin et al., ICML 2024).

    Blocks with more outliers (Wanda scores above ``M`` times their mean) are pruned less, within
    ``[sparsity - lamda, sparsity + lamda]``, rescaled to the exact target.

    Args:
        M: Outlier threshold multiplier.
        lamda: Half-width of the ratio band.
        max_ratio: Largest per-block sparsity.
    """

    M: float = 5.0
    lamda: float = 0.08
    max_ratio: float = 0.99

    def __post_init__(self) -> None:
        check_range("M", self.M, 0.0, low_inclusive=False)
        check_range("lamda", self.lamda, 0.0, 1.0, high_inclusive=False)
        check_range("max_ratio", self.max_ratio, 0.0, 1.0, low_inclusive=False, high_inclusive=False)


_ALLOCATION_CLASSES = {"AlphaAllocation": AlphaAllocation, "OWLAllocation": OWLAllocation}


@dataclass
class UnstructuredConfig(SparsityConfig):
    """Base of the unstructured / N:M methods.

    Args:
        sparsity: Target fraction of weights removed over the targeted projections, in ``[0, 1)``
            (ignored for N:M patterns, whose sparsity is ``1 - N/M``).
        pattern: ``"unstructured"`` or ``"N:M"`` (keep N of every M consecutive input weights, e.g.
            ``"2:4"``).
        allocation: ``"uniform"``, ``"global"`` (one score threshold across layers),
            :class:`AlphaAllocation` or :class:`OWLAllocation`.
    """

    pattern: str = field(default="unstructured", metadata={"help": "'unstructured' or 'N:M' (e.g. '2:4')."})
    allocation: Any = field(
        default="uniform", metadata={"help": "'uniform', 'global', AlphaAllocation, OWLAllocation."}
    )

    #: Statistics the scorer needs: "" (none), "sq_norm" (Wanda), "hessian" (SparseGPT) or "grad"
    #: (first-order methods; their ``objectives`` say which losses).
    needs: ClassVar[str] = ""
    #: Comparison group of the scores: "layer" or "row" (Wanda).
    compare: ClassVar[str] = "layer"

    def __post_init__(self) -> None:
        super().__post_init__()
        self.nm = parse_pattern(self.pattern)
        if isinstance(self.allocation, dict):
            self.allocation = self._decode_field("allocation", self.allocation)
        if isinstance(self.allocation, str):
            if self.allocation not in ALLOCATION_NAMES:
                raise ValueError(
                    f"allocation must be one of {ALLOCATION_NAMES} or an AlphaAllocation / OWLAllocation, "
                    f"got {self.allocation!r}."
                )
        elif not isinstance(self.allocation, (AlphaAllocation, OWLAllocation)):
            raise TypeError(
                f"allocation must be a str, AlphaAllocation or OWLAllocation, got {self.allocation!r}."
            )
        if self.nm is not None and self.allocation != "uniform":
            raise ValueError(
                f"pattern={self.pattern!r} fixes every layer's sparsity at 1 - N/M; allocation must be "
                f"'uniform', got {self.allocation!r}."
            )

    @property
    def target_sparsity(self) -> float:
        """The sparsity actually asked for (``1 - N/M`` for N:M patterns)."""
        return nm_sparsity(*self.nm) if self.nm else float(self.sparsity)

    @classmethod
    def _decode_field(cls, name: str, value: Any) -> Any:
        if name == "allocation" and isinstance(value, dict):
            kind = value.get("type")
            if kind not in _ALLOCATION_CLASSES:
                raise ValueError(f"Unknown allocation type {kind!r}; known: {sorted(_ALLOCATION_CLASSES)}.")
            fields = {f.name for f in dataclasses.fields(_ALLOCATION_CLASSES[kind])}
            return _ALLOCATION_CLASSES[kind](**{k: v for k, v in value.items() if k in fields})
        return value

    # ---------------------------------------------------------------------------- method hooks
    def score(self, weight: torch.Tensor, stats: dict[str, StatCollector]) -> torch.Tensor:
        """Importance of each weight (``[out, in]``); higher is kept.

        Args:
            weight: The weight in ``[out, in]`` orientation.
            stats: Collected statistics keyed by kind (``"sq_norm"``, ``"hessian"``).
        """
        raise NotImplementedError

    def score_group(self, weights: list[torch.Tensor], stats: list[dict[str, Any]]) -> list[torch.Tensor]:
        """Scores of several layers compared together (``"global"`` allocation).

        Methods whose scores are standardized over the compared group (AFR) override this.

        Args:
            weights: ``[out, in]`` weights.
            stats: Their statistics.
        """
        return [self.score(w, s) for w, s in zip(weights, stats, strict=True)]

    def prune_layer(self, module: nn.Module, ratio: float, stats: dict[str, StatCollector]) -> torch.Tensor:
        """Prune one projection to ``ratio`` and return the scores used (for the report).

        The default selects by :meth:`score` and attaches a mask; SparseGPT overrides it to also
        update the remaining weights.

        Args:
            module: The projection.
            ratio: Its sparsity.
            stats: Its statistics.
        """
        w = read_weight_out_in(module)
        scores = self.score(w, stats)
        # Same selection as selection.topk.unstructured_mask (ties by position), by a k-th value
        # threshold instead of a full sort.
        keep = (
            nm_mask(scores, *self.nm)
            if self.nm
            else fast_unstructured_mask(scores, ratio, compare=self.compare)
        )
        if is_offloaded(module):
            # accelerate owns an offloaded weight: write the pruned values back instead of a mask.
            # ``w`` is this call's private copy (read from the weights map), so zero it in place.
            write_weight_out_in(module, w.masked_fill_(~keep, 0))
        else:
            apply_mask(module, keep)
        return scores


PROPAGATIONS = ("pruned", "dense")


def propagation_field() -> Any:
    """The ``propagation`` dataclass field shared by the calibrated methods (Wanda, SparseGPT).

    Returns:
        A ``dataclasses.field`` defaulting to ``"pruned"``; validate it with :func:`check_propagation`.
    """
    return field(
        default="pruned",
        metadata={
            "help": "'pruned' (the paper: each block calibrated on the pruned previous blocks' outputs, "
            "two passes per block, the first stopping after the last pruned projection) or 'dense' (dense "
            "outputs, one pass per block)."
        },
    )


def check_propagation(value: str) -> None:
    """Validate a calibrated method's ``propagation`` field.

    Args:
        value: ``"pruned"`` or ``"dense"``.

    Raises:
        ValueError: For any other value.
    """
    if value not in PROPAGATIONS:
        raise ValueError(
            f"propagation must be one of {PROPAGATIONS} ('pruned': the next block is calibrated on the "
            f"pruned block's outputs, as in the papers; 'dense': on the dense outputs, one pass per block), "
            f"got {value!r}."
        )


def _new_stats(kind: str, module: nn.Module) -> dict[str, StatCollector]:
    n_in = linear_in_out(module)[0]
    if kind == "sq_norm":
        return {"sq_norm": InputSqNorm(n_in)}
    if kind == "hessian":
        return {"hessian": InputHessian(n_in)}
    return {}


def _block_groups(refs: list[LinearRef]) -> list[list[int]]:
    groups: dict[tuple[str, int], list[int]] = {}
    for i, r in enumerate(refs):
        groups.setdefault((r.stack, r.block_idx), []).append(i)
    return list(groups.values())


def _calibrated_pass(
    model: PreTrainedModel,
    refs: list[LinearRef],
    kind: str,
    ctx: PruneContext,
    method: str,
    on_layer: Callable[[int, dict[str, StatCollector]], None],
    recompute: bool,
) -> None:
    """Run the sequential runner, calling ``on_layer(target index, stats)`` once per block target."""
    batches = ctx.get_batches(method)
    index = {id(r.module): i for i, r in enumerate(refs)}
    outside = [r.name for r in refs if r.block_idx < 0]
    if outside:
        raise ValueError(
            f"Method {method!r} calibrates block by block and cannot prune {outside} outside the blocks; "
            "use magnitude for those or drop them from target_modules."
        )

    def collectors(idx: int, block: nn.Module) -> dict[str, tuple[nn.Module, StatCollector]]:
        out: dict[str, tuple[nn.Module, StatCollector]] = {}
        for m in block.modules():
            if id(m) in index:
                for key, col in _new_stats(kind, m).items():
                    out[f"{index[id(m)]}|{key}"] = (m, col)
        return out

    def on_block(idx: int, block: nn.Module, stats: dict[str, StatCollector]) -> None:
        per: dict[int, dict[str, StatCollector]] = {}
        for key, col in stats.items():
            i, kind_ = key.split("|")
            per.setdefault(int(i), {})[kind_] = col
        for i in sorted(per):
            on_layer(i, per[i])

    stacks = sorted({r.stack for r in refs})
    for stack in stacks:
        run_sequential(
            model,
            batches,
            stack=stack,
            collectors=collectors,
            on_block=on_block,
            recompute=recompute,
            progress=ctx.progress,
        )


def _gradient_stats(
    model: PreTrainedModel, config: UnstructuredConfig, refs: list[LinearRef], ctx: PruneContext
) -> list[dict[str, Any]]:
    """Accumulated gradients of every objective the method needs, per target."""
    from hf_prune.calibration.gradients import accumulate_gradients
    from hf_prune.scoring.refer_svd import representation_svd_loss

    batches = ctx.get_batches(config.method)
    if any(is_offloaded(r.module) for r in refs):
        raise ValueError(
            f"Method {config.method!r} needs a full backward pass, which accelerate-offloaded modules do not "
            "support; load the model without offloading or use a calibration method (wanda, sparsegpt)."
        )
    stats: list[dict[str, Any]] = [{} for _ in refs]
    for objective in getattr(config, "objectives", ("ce",)):
        grads = accumulate_gradients(
            model,
            batches,
            [r.module for r in refs],
            objective,
            rep_loss=representation_svd_loss,
            progress=ctx.progress,
        )
        for st, g in zip(stats, grads, strict=True):
            st[f"grad_{objective}"] = g
    return stats


def _allocate(
    model: PreTrainedModel,
    config: UnstructuredConfig,
    refs: list[LinearRef],
    ctx: PruneContext,
    grad_stats: list[dict[str, Any]] | None = None,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Per-target sparsity ratios and per-layer allocation metrics (for the report)."""
    from hf_prune.allocation import alpha_pruning_ratios, global_threshold_ratios, owl_ratios
    from hf_prune.allocation.owl import layer_outlier_ratio

    sparsity = config.target_sparsity
    # Shapes only: reading offloaded weights from disk just to count them would be wasted I/O.
    counts = np.array([int(np.prod(linear_in_out(r.module))) for r in refs], dtype=np.int64)
    alloc = config.allocation
    if alloc == "uniform":
        return np.full(len(refs), sparsity), {}
    if isinstance(alloc, AlphaAllocation):
        metrics = _alpha_metrics(model, alloc, refs)
        if alloc.mapping == "block_wise":
            for group in _block_groups(refs):
                metrics[group] = float(np.mean(metrics[group]))
        ratios = alpha_pruning_ratios(
            metrics, counts, sparsity, alloc.epsilon, mapping="layer_wise", max_ratio=alloc.max_ratio
        )
        return ratios, {"metric": alloc.metric, "values": metrics.tolist()}
    # "global" and OWL need every layer's scores of the dense model: one calibration pre-pass.
    scores: list[torch.Tensor | None] = [None] * len(refs)
    if isinstance(alloc, OWLAllocation):
        # OWL defines outliers on Wanda scores whatever the pruning metric (Yin et al., §3).
        from hf_prune.scoring.wanda import wanda_scores

        def keep_wanda(i: int, stats: dict[str, StatCollector]) -> None:
            sq = stats["sq_norm"]
            assert isinstance(sq, InputSqNorm)  # internal: the pass collects what it is asked for
            scores[i] = wanda_scores(read_weight_out_in(refs[i].module).detach(), sq.sum_sq)

        _calibrated_pass(model, refs, "sq_norm", ctx, config.method, keep_wanda, recompute=False)
    elif grad_stats is not None:
        scores = list(config.score_group([read_weight_out_in(r.module).detach() for r in refs], grad_stats))
    elif config.needs:

        def keep_scores(i: int, stats: dict[str, StatCollector]) -> None:
            # SparseGPT's score() is its |W|·sqrt(diag H) proxy: the exact saliency needs an inverse Hessian.
            scores[i] = config.score(read_weight_out_in(refs[i].module).detach(), stats)

        _calibrated_pass(model, refs, config.needs, ctx, config.method, keep_scores, recompute=False)
    else:
        scores = [config.score(read_weight_out_in(r.module).detach(), {}) for r in refs]
    full = [s if s is not None else torch.zeros(0) for s in scores]
    if alloc == "global":
        return global_threshold_ratios(full, sparsity), {}
    assert isinstance(alloc, OWLAllocation)  # narrowed above; internal invariant
    groups = _block_groups(refs)
    outliers = np.array([layer_outlier_ratio([full[i] for i in g], M=alloc.M) for g in groups])
    block_counts = np.array([counts[g].sum() for g in groups])
    block_ratios = owl_ratios(outliers, block_counts, sparsity, lamda=alloc.lamda, max_ratio=alloc.max_ratio)
    ratios = np.empty(len(refs))
    per_layer_outlier = np.empty(len(refs))
    for g, r, o in zip(groups, block_ratios, outliers, strict=True):
        ratios[g] = r
        per_layer_outlier[g] = o
    return ratios, {"metric": f"outlier_ratio(M={alloc.M})", "values": per_layer_outlier.tolist()}


def _alpha_metrics(model: PreTrainedModel, alloc: AlphaAllocation, refs: list[LinearRef]) -> np.ndarray:
    from hf_prune.esd import compute_esd_metrics, load_metric_file

    names = [r.name for r in refs]
    if not alloc.metric_file and any(is_offloaded(r.module) for r in refs):
        raise ValueError(
            "AlphaAllocation on an accelerate-offloaded model needs precomputed metrics: compute them once "
            "(hf_prune.esd.compute_esd_metrics on a loaded copy, or published values) and pass metric_file=."
        )
    if alloc.metric_file:
        return np.asarray(load_metric_file(alloc.metric_file, names), dtype=np.float64)
    name_or_path = str(getattr(model.config, "_name_or_path", "") or "")
    # The cache is keyed by model id *and* a fingerprint of the weights: a model fine-tuned or pruned
    # in memory under the same name must not be served stale metrics.
    fingerprint = hashlib.sha1(
        np.array([float(read_weight_out_in(r.module).detach().float().sum()) for r in refs]).tobytes()
    ).hexdigest()[:16]
    values = compute_esd_metrics(model, alloc.metric, model_id=name_or_path or None, revision=fingerprint)
    missing = [n for n in names if n not in values]
    if missing:
        raise ValueError(f"No ESD metric for targeted layers {missing[:5]} (targets outside the blocks?).")
    metrics = np.array([values[n] for n in names], dtype=np.float64)
    if np.isnan(metrics).any():
        bad = [n for n, v in zip(names, metrics, strict=True) if np.isnan(v)]
        raise ValueError(f"ESD metric {alloc.metric!r} could not be fitted for {bad[:5]}; exclude them.")
    return metrics


def run_unstructured(
    model: PreTrainedModel, config: UnstructuredConfig, ctx: PruneContext
) -> list[LayerReport]:
    """Prune every targeted projection to its allocated sparsity with the method's scorer.

    Args:
        model: The model (pruned in place; masks stay reversible until ``finalize``).
        config: An :class:`UnstructuredConfig` subclass.
        ctx: Calibration data and options.

    Returns:
        One report row per projection (metric, ratio asked, measured sparsity, score summary).
    """
    refs = resolve_targets(model, config.target_modules, config.exclude_modules)
    grad_stats = _gradient_stats(model, config, refs, ctx) if config.needs == "grad" else None
    ratios, alloc_info = _allocate(model, config, refs, ctx, grad_stats)
    rows: list[LayerReport | None] = [None] * len(refs)
    metric_values = alloc_info.get("values")

    def prune_one(i: int, stats: dict[str, StatCollector]) -> None:
        ref = refs[i]
        scores = config.prune_layer(ref.module, float(ratios[i]), stats)
        numel = int(np.prod(linear_in_out(ref.module)))
        nz = (
            int(torch.count_nonzero(read_weight_out_in(ref.module)))
            if is_offloaded(ref.module)
            else count_nonzero_weight(ref.module)
        )
        summary = score_summary(scores)
        if metric_values is not None:
            summary[alloc_info["metric"]] = float(metric_values[i])
        rows[i] = LayerReport(
            name=ref.name,
            kind="linear",
            params_before=numel,
            params_after=numel,
            nonzero_after=nz,
            ratio_requested=float(ratios[i]),
            sparsity_measured=1.0 - nz / numel,
            score=summary,
            stack=ref.stack or None,
            block=ref.block_idx if ref.block_idx >= 0 else None,
        )
        # The layer's scores, selection and (SparseGPT) solve temporaries are dead now, and so are its
        # statistics; without this the heap keeps them and RSS creeps up layer after layer (see
        # release_freed_memory).
        del scores
        if grad_stats is None:
            for col in stats.values():
                if isinstance(col, StatCollector):
                    col.release()
        release_freed_memory()

    if grad_stats is not None:
        with torch.no_grad():
            for i in range(len(refs)):
                prune_one(i, grad_stats[i])
    elif config.needs:
        # "pruned" propagation (the papers' setting) runs each block twice: once for its statistics
        # (stopping after the last pruned projection), once more after pruning so the next block sees
        # the pruned outputs; "dense" runs it once.
        recompute = getattr(config, "propagation", "pruned") == "pruned"
        _calibrated_pass(model, refs, config.needs, ctx, config.method, prune_one, recompute=recompute)
    else:
        with torch.no_grad():
            for i in tqdm(range(len(refs)), desc=config.method, disable=not show_progress(ctx.progress)):
                prune_one(i, {})
    return [r for r in rows if r is not None]

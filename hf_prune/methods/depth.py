"""Depth pruning: score whole blocks, choose the least important, remove them physically.

The stages (DESIGN §3): *calibrate* (the block-by-block runner streams each block's input and output,
:mod:`hf_prune.calibration.depth`), *score* (pure functions of :mod:`hf_prune.scoring.depth`), *select*
(:mod:`hf_prune.selection.depth`: a count, a ratio or a threshold; protected first/last blocks; one
contiguous run on request) and *apply* (``PrunedModel.remove_layers``, which re-indexes ``layer_idx``
and rewrites the layer count, so the result loads with plain ``transformers`` and ``generate()`` with a
KV cache stays correct).

Every block's score (original numbering), the selection and, for the iterative pruner, each round's
scores are kept in ``report.extra["depth"]`` and shown in the model card.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar

from transformers import PreTrainedModel

from hf_prune.arch import StackSpec, get_layers, param_count
from hf_prune.calibration.depth import (
    ablation_losses,
    collect_angular_distances,
    collect_block_influence,
    collect_variance_sparsity,
    model_loss,
)
from hf_prune.config import PruningConfig, check_range
from hf_prune.methods.base import PruneContext
from hf_prune.report import LayerReport
from hf_prune.scoring.depth import ablation_scores, avss_scores
from hf_prune.selection.depth import RunCost, candidate_blocks, resolve_count, select_blocks

__all__ = [
    "AblationDepthConfig",
    "ActivationVarianceConfig",
    "AngularDepthConfig",
    "BlockInfluenceConfig",
    "BlockScores",
    "DepthConfig",
    "IterativeDepthConfig",
    "run_depth",
]

#: Strategy names of the CLI and of ``IterativeDepthConfig.criterion``, mapped to config classes below.
STRATEGIES = ("angular", "influence", "ablation", "variance", "iterative")


@dataclass
class BlockScores:
    """Scores of the current blocks of one stack.

    Args:
        scores: Importance per current block position (low: removable).
        run_cost: Cost of removing a contiguous run, ``f(start, n)``, when it is not the sum of scores.
        extra: Strategy details kept in the report (base loss, pairwise distances ...).
    """

    scores: list[float]
    run_cost: RunCost | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class DepthConfig(PruningConfig):
    """Base of the depth methods: remove whole blocks of one stack.

    Give exactly one of ``num_layers``, ``ratio``, ``threshold`` or ``layers``.

    Args:
        num_layers: Remove this many blocks.
        ratio: Remove this fraction of the stack's blocks (rounded, at least one), in ``(0, 1)``.
        threshold: Remove every removable block whose score is at most this (contiguous: the longest
            run whose cost is at most this); may remove none.
        layers: Remove exactly these block positions (scores are still computed and recorded).
        protect_first: Never remove the first this many blocks (the seed's default: 2).
        protect_last: Never remove the last this many blocks (default 2).
        protect: Further block positions never removed.
        contiguous: Remove one contiguous run of blocks.
        stack: Stack to prune (default: the main stack; LLaVA: the language model).
    """

    num_layers: int | None = field(default=None, metadata={"help": "Number of blocks to remove."})
    ratio: float | None = field(default=None, metadata={"help": "Fraction of blocks to remove, in (0, 1)."})
    threshold: float | None = field(default=None, metadata={"help": "Remove blocks scoring at most this."})
    layers: list[int] | None = field(default=None, metadata={"help": "Explicit block positions to remove."})
    protect_first: int = field(default=2, metadata={"help": "Leading blocks never removed."})
    protect_last: int = field(default=2, metadata={"help": "Trailing blocks never removed."})
    protect: list[int] | None = field(default=None, metadata={"help": "Further blocks never removed."})
    contiguous: bool = field(default=False, metadata={"help": "Remove one contiguous run."})
    stack: str | None = field(default=None, metadata={"help": "Stack to prune (default: the main one)."})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.target_modules is not None or self.exclude_modules is not None:
            raise ValueError(
                f"{type(self).__name__} removes whole blocks: target_modules / exclude_modules do not apply "
                f"(got {self.target_modules!r} / {self.exclude_modules!r}). Use protect=[...] to keep blocks."
            )
        given = {
            k: getattr(self, k)
            for k in ("num_layers", "ratio", "threshold", "layers")
            if getattr(self, k) is not None
        }
        if len(given) != 1:
            raise ValueError(
                f"Give exactly one of num_layers, ratio, threshold or layers to {type(self).__name__}, got "
                f"{given or 'none'}. Example: {type(self).__name__}(num_layers=2)."
            )
        if self.num_layers is not None:
            check_range("num_layers", self.num_layers, 1, integer=True)
        if self.ratio is not None:
            check_range("ratio", self.ratio, 0.0, 1.0, low_inclusive=False, high_inclusive=False)
        if self.layers is not None:
            if not isinstance(self.layers, (list, tuple)) or not self.layers:
                raise ValueError(f"layers must be a non-empty list of block positions, got {self.layers!r}.")
            if any(isinstance(i, bool) or not isinstance(i, int) or i < 0 for i in self.layers):
                raise ValueError(f"layers must hold non-negative integers, got {self.layers!r}.")
            if len(set(self.layers)) != len(self.layers):
                raise ValueError(f"layers must not repeat a block, got {self.layers!r}.")
            self.layers = sorted(int(i) for i in self.layers)
        check_range("protect_first", self.protect_first, 0, integer=True)
        check_range("protect_last", self.protect_last, 0, integer=True)
        if self.protect is not None:
            if not isinstance(self.protect, (list, tuple)) or any(
                isinstance(i, bool) or not isinstance(i, int) for i in self.protect
            ):
                raise ValueError(f"protect must be a list of block positions, got {self.protect!r}.")
            self.protect = sorted({int(i) for i in self.protect})

    def score(self, model: PreTrainedModel, stack: StackSpec, ctx: PruneContext) -> BlockScores:
        """Score every current block of ``stack`` (subclasses implement their strategy).

        Args:
            model: The model.
            stack: The stack.
            ctx: Calibration data and progress settings.
        """
        raise NotImplementedError


@dataclass
class AngularDepthConfig(DepthConfig):
    """PruneMe's angular distance (Gromov et al., 2024, "The Unreasonable Ineffectiveness of ...").

    For every start ``l`` the distance ``arccos(cos(h_l, h_{l+n})) / pi`` between the last-token hidden
    state entering block ``l`` and the one leaving block ``l+n-1`` is averaged over the calibration
    samples; the run of ``n`` blocks with the smallest distance is removed (``contiguous=True``, the
    paper's rule). With ``contiguous=False`` every block is scored alone (``n = 1``) and the lowest are
    removed.

    Args:
        contiguous: Remove one contiguous run (default ``True``).
    """

    method: ClassVar[str] = "angular_depth"
    paper: ClassVar[str] = "Gromov et al., 2024, The Unreasonable Ineffectiveness of the Deeper Layers"

    contiguous: bool = field(default=True, metadata={"help": "Remove one contiguous run (PruneMe)."})

    def score(self, model: PreTrainedModel, stack: StackSpec, ctx: PruneContext) -> BlockScores:  # noqa: D102
        dist = collect_angular_distances(model, ctx.get_batches(self.method), stack, progress=ctx.progress)
        n = dist.shape[0] - 1
        return BlockScores(
            scores=[float(dist[i, i + 1]) for i in range(n)],
            run_cost=lambda start, k: float(dist[start, start + k]),
            extra={"pairwise_distance": [[round(float(v), 6) for v in row] for row in dist]},
        )


@dataclass
class BlockInfluenceConfig(DepthConfig):
    """ShortGPT's block influence (Men et al., 2024): ``1 - cos(input, output)`` over all tokens.

    Blocks that barely turn the residual stream are removed first.
    """

    method: ClassVar[str] = "block_influence"
    paper: ClassVar[str] = "Men et al., 2024, ShortGPT: Layers in Large Language Models are More Redundant"

    def score(self, model: PreTrainedModel, stack: StackSpec, ctx: PruneContext) -> BlockScores:  # noqa: D102
        bi = collect_block_influence(model, ctx.get_batches(self.method), stack, progress=ctx.progress)
        return BlockScores(scores=bi)


@dataclass
class AblationDepthConfig(DepthConfig):
    """Ablation (the seed's ``AblationPruner``): the loss increase when each block is removed alone.

    Causal LMs are judged by their language-modeling loss on the calibration text; encoders and
    classifiers by the KL divergence of their outputs from the dense model's (bare encoders: the mean
    squared distance of the last hidden state). The seed's threshold mode is ``threshold=-0.01``:
    remove only blocks whose removal lowers the loss by at least 0.01.
    """

    method: ClassVar[str] = "ablation_depth"
    paper: ClassVar[str] = "Block ablation (loss change per removed block), as in the llm_pruner depth seed"

    def score(self, model: PreTrainedModel, stack: StackSpec, ctx: PruneContext) -> BlockScores:  # noqa: D102
        batches = ctx.get_batches(self.method)
        base, judge = model_loss(model, batches, stack)
        losses = ablation_losses(model, batches, stack, judge, progress=ctx.progress)
        return BlockScores(
            scores=ablation_scores(base, losses),
            extra={"base_loss": base, "loss": judge.kind, "ablated_loss": losses},
        )


ACTIVATIONS = ("update", "output")


@dataclass
class ActivationVarianceConfig(DepthConfig):
    """AVSS (Song et al., 2024): activation variance over sparsity, normalized over blocks.

    Args:
        activations: ``"update"`` (what the block adds to the residual stream, default: the residual
            stream itself grows with depth, which would rank every shallow block least important) or
            ``"output"`` (the block's output hidden state, as the paper's per-layer activations).
        sparsity_threshold: An activation counts as sparse when ``|a| <= sparsity_threshold * rms``.
    """

    method: ClassVar[str] = "activation_variance"
    paper: ClassVar[str] = (
        "Song et al., 2024, AVSS: Layer Importance Evaluation via Activation Variance-Sparsity"
    )

    activations: str = field(default="update", metadata={"help": "'update' (output - input) or 'output'."})
    sparsity_threshold: float = field(default=0.1, metadata={"help": "Relative near-zero cut-off, > 0."})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.activations not in ACTIVATIONS:
            raise ValueError(f"activations must be one of {ACTIVATIONS}, got {self.activations!r}.")
        check_range("sparsity_threshold", self.sparsity_threshold, 0.0, 10.0, low_inclusive=False)

    def score(self, model: PreTrainedModel, stack: StackSpec, ctx: PruneContext) -> BlockScores:  # noqa: D102
        var, spars = collect_variance_sparsity(
            model,
            ctx.get_batches(self.method),
            stack,
            activations=self.activations,
            threshold=self.sparsity_threshold,
            progress=ctx.progress,
        )
        return BlockScores(scores=avss_scores(var, spars), extra={"variance": var, "sparsity": spars})


CRITERIA: dict[str, type[DepthConfig]] = {
    "ablation": AblationDepthConfig,
    "angular": AngularDepthConfig,
    "influence": BlockInfluenceConfig,
    "variance": ActivationVarianceConfig,
}


@dataclass
class IterativeDepthConfig(DepthConfig):
    """Iterative greedy depth pruning with optional healing (the seed's ``SmartPruner``).

    Each round scores the remaining blocks with ``criterion``, removes the least important removable one,
    optionally heals the model briefly (LoRA through PEFT, :func:`hf_prune.heal`, on the calibration
    text) and re-scores, until the target is met. Every round's scores are kept in the report.

    Args:
        criterion: How a round scores blocks: ``"ablation"`` (default: the least harmful block),
            ``"angular"``, ``"influence"`` or ``"variance"``.
        heal_steps: LoRA steps after each removal (0: no healing).
        heal_lr: Healing learning rate.
        heal_lora_r: LoRA rank for healing.
    """

    method: ClassVar[str] = "iterative_depth"
    paper: ClassVar[str] = (
        "Iterative greedy block removal with healing, as the llm_pruner depth seed's SmartPruner"
    )

    criterion: str = field(
        default="ablation", metadata={"help": "ablation | angular | influence | variance."}
    )
    heal_steps: int = field(default=0, metadata={"help": "LoRA healing steps after each removal."})
    heal_lr: float = field(default=2e-4, metadata={"help": "Healing learning rate (LoRA)."})
    heal_lora_r: int = field(default=8, metadata={"help": "Healing LoRA rank."})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.criterion not in CRITERIA:
            raise ValueError(f"criterion must be one of {sorted(CRITERIA)}, got {self.criterion!r}.")
        if self.contiguous:
            raise ValueError(
                "IterativeDepthConfig removes one block per round and cannot force one contiguous run; use "
                "AngularDepthConfig(contiguous=True) for that."
            )
        if self.layers is not None:
            raise ValueError(
                "IterativeDepthConfig chooses blocks itself; use CustomConfig to remove given layers."
            )
        check_range("heal_steps", self.heal_steps, 0, integer=True)
        check_range("heal_lr", self.heal_lr, 0.0, 1.0, low_inclusive=False)
        check_range("heal_lora_r", self.heal_lora_r, 1, integer=True)

    def scorer(self) -> DepthConfig:
        """The one-shot config that scores each round (one block at a time)."""
        cls = CRITERIA[self.criterion]
        kwargs: dict[str, Any] = {"num_layers": 1}
        if cls is AngularDepthConfig:
            kwargs["contiguous"] = False
        return cls(**kwargs)


# ----------------------------------------------------------------------------------------------- runner
def _block_rows(
    model: PreTrainedModel, stack: StackSpec, positions: list[int], origin: list[int], scores: list[float]
) -> list[LayerReport]:
    layers = get_layers(model, stack)
    rows = []
    for pos in positions:
        params = param_count(layers[pos])
        rows.append(
            LayerReport(
                name=f"{stack.layers_path}.{origin[pos]}",
                kind="block",
                params_before=params,
                params_after=0,
                nonzero_after=0,
                ratio_requested=1.0,
                score={"score": float(scores[pos])},
                stack=stack.name,
                block=origin[pos],
            )
        )
    return rows


def _select(config: DepthConfig, scored: BlockScores, n_blocks: int) -> list[int]:
    cands = candidate_blocks(n_blocks, config.protect_first, config.protect_last, config.protect or ())
    if config.layers is not None:
        out_of_range = [i for i in config.layers if i >= n_blocks]
        if out_of_range:
            raise ValueError(
                f"layers {out_of_range} lie outside the stack's {n_blocks} blocks [0, {n_blocks})."
            )
        if len(config.layers) >= n_blocks:
            raise ValueError(f"layers={config.layers} would remove all {n_blocks} blocks; keep at least one.")
        protected = [i for i in config.layers if i not in cands]
        if protected:
            raise ValueError(
                f"layers {protected} are protected (protect_first={config.protect_first}, protect_last="
                f"{config.protect_last}, protect={config.protect}). Lower the protection to remove them."
            )
        return list(config.layers)
    count = resolve_count(n_blocks, config.num_layers, config.ratio)
    return select_blocks(
        scored.scores,
        candidates=cands,
        count=count,
        threshold=None if count is not None else config.threshold,
        contiguous=config.contiguous,
        run_cost=scored.run_cost,
    )


def _pruned(ctx: PruneContext) -> Any:
    if ctx.pruned is None:  # pragma: no cover - prune() always passes it
        raise ValueError("Depth methods run through hf_prune.prune(), which provides the PrunedModel.")
    return ctx.pruned


def run_depth(model: PreTrainedModel, config: DepthConfig, ctx: PruneContext) -> list[LayerReport]:
    """Score, select and remove blocks (see the module docstring).

    Args:
        model: The model (``ctx.pruned.base_model``).
        config: A depth config.
        ctx: Calibration data; ``ctx.pruned`` applies the removal.

    Returns:
        One report row per removed block.
    """
    pruned = _pruned(ctx)
    stack = pruned._stack(config.stack)
    if isinstance(config, IterativeDepthConfig):
        return _run_iterative(config, ctx, stack)
    n_blocks = len(get_layers(model, stack))
    origin = list(pruned._origins(stack))
    start = time.perf_counter()
    scored = config.score(model, stack, ctx)
    selected = _select(config, scored, n_blocks)
    rows = _block_rows(model, stack, selected, origin, scored.scores)
    pruned.remove_layers(selected, stack=stack.name)
    pruned.report.extra["depth"] = {
        "strategy": config.method,
        "stack": stack.name,
        "num_blocks_before": n_blocks,
        "scores": {str(origin[i]): float(s) for i, s in enumerate(scored.scores)},
        "removed": [origin[i] for i in selected],
        "selection": _selection_record(config),
        "seconds": round(time.perf_counter() - start, 3),
        **scored.extra,
    }
    return rows


def _selection_record(config: DepthConfig) -> dict[str, Any]:
    keys = (
        "num_layers",
        "ratio",
        "threshold",
        "layers",
        "protect_first",
        "protect_last",
        "protect",
        "contiguous",
    )
    return {k: getattr(config, k) for k in keys if getattr(config, k) is not None}


def _run_iterative(config: IterativeDepthConfig, ctx: PruneContext, stack: StackSpec) -> list[LayerReport]:
    pruned = _pruned(ctx)
    scorer = config.scorer()
    n_start = len(get_layers(pruned.base_model, stack))
    target = resolve_count(n_start, config.num_layers, config.ratio)
    # Protection is on the blocks' original numbering: it must not drift as blocks disappear.
    start_origin = list(pruned._origins(stack))
    protected = {start_origin[i] for i in range(n_start)} - {
        start_origin[i]
        for i in candidate_blocks(n_start, config.protect_first, config.protect_last, config.protect or ())
    }
    if target is not None and target > n_start - len(protected):
        raise ValueError(
            f"Cannot remove {target} blocks: only {n_start - len(protected)} of {n_start} are removable "
            "after protect_first / protect_last / protect."
        )
    rounds: list[dict[str, Any]] = []
    rows: list[LayerReport] = []
    t0 = time.perf_counter()
    while target is None or len(rounds) < target:
        model = pruned.base_model
        origin = list(pruned._origins(stack))
        scored = scorer.score(model, stack, ctx)
        cands = [i for i, o in enumerate(origin) if o not in protected]
        if not cands:
            break
        pos = min(cands, key=lambda i: (scored.scores[i], i))
        if target is None and scored.scores[pos] > config.threshold:  # type: ignore[operator]
            break
        record: dict[str, Any] = {
            "round": len(rounds) + 1,
            "scores": {str(o): float(s) for o, s in zip(origin, scored.scores, strict=True)},
            "removed": origin[pos],
        }
        if "base_loss" in scored.extra:
            record["loss_before"] = scored.extra["base_loss"]
        rows.extend(_block_rows(model, stack, [pos], origin, scored.scores))
        pruned.remove_layers([pos], stack=stack.name)
        if config.heal_steps:
            record["healing"] = _heal_round(config, ctx)
        rounds.append(record)
        if len(get_layers(pruned.base_model, stack)) <= 1:
            break
    pruned.report.extra["depth"] = {
        "strategy": config.method,
        "criterion": config.criterion,
        "stack": stack.name,
        "num_blocks_before": n_start,
        "scores": rounds[0]["scores"] if rounds else {},
        "removed": [r["removed"] for r in rounds],
        "rounds": rounds,
        "selection": _selection_record(config),
        "heal_steps": config.heal_steps,
        "seconds": round(time.perf_counter() - t0, 3),
    }
    return rows


def _heal_round(config: IterativeDepthConfig, ctx: PruneContext) -> dict[str, Any]:
    from hf_prune.postprocess.healing import heal

    if ctx.calibration is None:
        raise ValueError(
            "IterativeDepthConfig(heal_steps>0) heals on the calibration text: pass calibration=."
        )
    pruned = _pruned(ctx)
    before = dict(pruned.report.extra.get("healing", {}))
    # Heal on fresh windows of the calibration text (same dataset, columns and seed), enough for every
    # step: cycling the few scoring windows for hundreds of steps overfits them and hurts held-out text.
    batch = 4
    data = dataclasses.replace(
        ctx.calibration, nsamples=max(ctx.calibration.nsamples, config.heal_steps * batch)
    )
    heal(
        pruned,
        data,
        tokenizer=ctx.tokenizer,
        steps=config.heal_steps,
        lr=config.heal_lr,
        lora_r=config.heal_lora_r,
        batch_size=batch,
        progress=ctx.progress,
    )
    info = pruned.report.extra.pop("healing", {})
    if before:
        pruned.report.extra["healing"] = before
    return {k: info[k] for k in ("steps", "loss_start", "loss_end") if k in info}

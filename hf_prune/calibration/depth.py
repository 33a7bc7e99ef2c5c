"""Model-walking half of depth scoring: stream block inputs/outputs and evaluate block removals.

The scores themselves are pure functions in :mod:`hf_prune.scoring.depth`; this module feeds them with
the residual stream on both sides of each block (through :func:`hf_prune.calibration.runner.run_block_io`,
one block in memory at a time) and, for ablation, with the loss of the model with one block removed.
Statistics are sums, all-reduced over processes under ``accelerate launch``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm
from transformers import PreTrainedModel

from hf_prune.arch import StackSpec, get_layers
from hf_prune.calibration.distributed import all_reduce_sum_
from hf_prune.calibration.runner import (
    _hidden,
    _model_device,
    _with_hidden,
    capture_block_inputs,
    run_block_io,
)
from hf_prune.scoring.depth import (
    BlockInfluenceAccumulator,
    VarianceSparsityAccumulator,
    angular_distance_matrix,
    last_token_states,
)
from hf_prune.surgery.depth import only_layers
from hf_prune.utils import show_progress

__all__ = [
    "ModelLoss",
    "ablation_losses",
    "collect_angular_distances",
    "collect_block_influence",
    "collect_variance_sparsity",
    "model_loss",
]


def collect_angular_distances(
    model: PreTrainedModel, batches: list[dict[str, torch.Tensor]], stack: StackSpec, *, progress: bool = True
) -> torch.Tensor:
    """Mean angular distance between the last-token states at every pair of depths.

    Args:
        model: The model.
        batches: Calibration inputs.
        stack: The stack to score.
        progress: Show a progress bar.

    Returns:
        ``[L + 1, L + 1]`` matrix (see :func:`hf_prune.scoring.depth.angular_distance_matrix`), averaged
        over every sample of every process.
    """
    per_batch: list[list[torch.Tensor]] = [[] for _ in batches]

    def on_io(idx: int, j: int, h_in: torch.Tensor, h_out: torch.Tensor, mask: torch.Tensor | None) -> None:
        if idx == 0:
            per_batch[j].append(last_token_states(h_in, mask).float().cpu())
        per_batch[j].append(last_token_states(h_out, mask).float().cpu())

    run_block_io(model, batches, on_io, stack=stack.name, progress=progress)
    states = torch.cat([torch.stack(depths, dim=1) for depths in per_batch], dim=0)
    samples = torch.tensor([float(states.shape[0])], dtype=torch.float64)
    total = angular_distance_matrix(states) * states.shape[0]
    all_reduce_sum_([total, samples])
    return total / samples


def collect_block_influence(
    model: PreTrainedModel, batches: list[dict[str, torch.Tensor]], stack: StackSpec, *, progress: bool = True
) -> list[float]:
    """ShortGPT block influence of every block of ``stack``.

    Args:
        model: The model.
        batches: Calibration inputs.
        stack: The stack to score.
        progress: Show a progress bar.

    Returns:
        One value per block.
    """
    accs = [BlockInfluenceAccumulator() for _ in get_layers(model, stack)]

    def on_io(idx: int, j: int, h_in: torch.Tensor, h_out: torch.Tensor, mask: torch.Tensor | None) -> None:
        accs[idx].update(h_in, h_out, mask)

    run_block_io(model, batches, on_io, stack=stack.name, progress=progress)
    sums = torch.tensor([[a.total, float(a.tokens)] for a in accs], dtype=torch.float64)
    all_reduce_sum_([sums])
    return [float(t / n) if n else 0.0 for t, n in sums.tolist()]


def collect_variance_sparsity(
    model: PreTrainedModel,
    batches: list[dict[str, torch.Tensor]],
    stack: StackSpec,
    *,
    activations: str = "update",
    threshold: float = 0.1,
    progress: bool = True,
) -> tuple[list[float], list[float]]:
    """Activation variance and sparsity of every block (AVSS statistics).

    Args:
        model: The model.
        batches: Calibration inputs.
        stack: The stack to score.
        activations: ``"output"`` (the block's output hidden state) or ``"update"`` (what the block adds
            to the residual stream, ``output - input``).
        threshold: Relative near-zero cut-off (see :class:`VarianceSparsityAccumulator`).
        progress: Show a progress bar.

    Returns:
        ``(variances, sparsities)``, one value each per block.
    """
    accs = [VarianceSparsityAccumulator(threshold) for _ in get_layers(model, stack)]

    def on_io(idx: int, j: int, h_in: torch.Tensor, h_out: torch.Tensor, mask: torch.Tensor | None) -> None:
        accs[idx].update(h_out - h_in if activations == "update" else h_out, mask)

    run_block_io(model, batches, on_io, stack=stack.name, progress=progress)
    sums = torch.tensor(
        [[a.sum, a.sum_sq, float(a.count), float(a.sparse)] for a in accs], dtype=torch.float64
    )
    all_reduce_sum_([sums])
    for acc, (s, sq, c, sp) in zip(accs, sums.tolist(), strict=True):
        acc.sum, acc.sum_sq, acc.count, acc.sparse = s, sq, int(c), int(sp)
    return [a.variance for a in accs], [a.sparsity for a in accs]


@dataclass
class ModelLoss:
    """How a removal is judged: the language-modeling loss, or the distance to the dense outputs.

    Args:
        kind: ``"lm"`` (causal LM cross-entropy on the batch's own tokens) or ``"kl"`` (KL divergence of
            the model's output distribution from the dense model's, for encoders and classifiers) or
            ``"mse"`` (mean squared distance of the last hidden state, for bare encoders).
        reference: Dense outputs per batch for ``"kl"`` / ``"mse"``.
    """

    kind: str
    reference: list[torch.Tensor] | None = None


def _lm_labels(batch: dict[str, torch.Tensor]) -> torch.Tensor:
    labels = batch["input_ids"].clone()
    mask = batch.get("attention_mask")
    if mask is not None and mask.dim() == 2:
        labels[mask == 0] = -100
    return labels


def _is_lm(model: PreTrainedModel, stack: StackSpec) -> bool:
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    return bool(stack.causal and head is not None)


def _batch_on(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def _forward_output(model: PreTrainedModel, batch: dict[str, Any], kind: str) -> Any:
    inputs = _batch_on(batch, _model_device(model))
    if kind == "lm":
        inputs["use_cache"] = False
        inputs["labels"] = _lm_labels(inputs)
    return model(**inputs)


def _batch_loss(
    model: PreTrainedModel, batch: dict[str, Any], judge: ModelLoss, j: int
) -> tuple[float, float]:
    """Return ``(loss_sum, weight)`` of one batch (losses combine as weighted means)."""
    out = _forward_output(model, batch, judge.kind)
    if judge.kind == "lm":
        labels = _lm_labels(batch)
        n = float((labels[:, 1:] != -100).sum())
        return float(out.loss) * n, n
    if judge.kind == "kl":
        ref = judge.reference[j].to(out.logits.device)  # type: ignore[index]
        logp = torch.log_softmax(out.logits.float(), dim=-1)
        logq = torch.log_softmax(ref.float(), dim=-1)
        kl = (logq.exp() * (logq - logp)).sum(-1)
        return float(kl.sum()), float(kl.numel())
    ref = judge.reference[j].to(out.last_hidden_state.device)  # type: ignore[index]
    diff = (out.last_hidden_state.float() - ref.float()).pow(2).mean(-1)
    return float(diff.sum()), float(diff.numel())


def model_loss(
    model: PreTrainedModel,
    batches: list[dict[str, torch.Tensor]],
    stack: StackSpec,
    judge: ModelLoss | None = None,
) -> tuple[float, ModelLoss]:
    """Loss of the model on ``batches`` (weighted over tokens and processes) and the judge used.

    Args:
        model: The model.
        batches: Evaluation inputs.
        stack: The stack whose blocks are judged (decides LM loss vs distance to the dense outputs).
        judge: Reuse this judge (and its dense reference outputs); ``None`` builds one from this model,
            whose loss then is 0 for the distance judges.

    Returns:
        ``(loss, judge)``.
    """
    if judge is None:
        if _is_lm(model, stack):
            judge = ModelLoss("lm")
        else:
            refs: list[torch.Tensor] = []
            with torch.no_grad():
                for batch in batches:
                    out = _forward_output(model, batch, "kl")
                    refs.append((out.logits if hasattr(out, "logits") else out.last_hidden_state).cpu())
            has_logits = hasattr(out, "logits")
            judge = ModelLoss("kl" if has_logits else "mse", refs)
    total = torch.zeros(2, dtype=torch.float64)
    with torch.no_grad():
        for j, batch in enumerate(batches):
            s, n = _batch_loss(model, batch, judge, j)
            total += torch.tensor([s, n], dtype=torch.float64)
    all_reduce_sum_([total])
    return float(total[0] / total[1]), judge


@contextlib.contextmanager
def _inject_hidden(block: nn.Module, hidden: list[torch.Tensor]) -> Iterator[list[int]]:
    """Replace the hidden state entering ``block`` by ``hidden[call]`` on successive calls."""
    calls = [0]

    def hook(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, Any]:
        h = hidden[calls[0]]
        calls[0] += 1
        return _with_hidden(args, kwargs, h)

    handle = block.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        yield calls
    finally:
        handle.remove()


def ablation_losses(
    model: PreTrainedModel,
    batches: list[dict[str, torch.Tensor]],
    stack: StackSpec,
    judge: ModelLoss,
    *,
    progress: bool = True,
) -> list[float]:
    """Loss of the model with each block removed in turn, reusing the captured block inputs.

    Removing block ``l`` leaves blocks ``0..l-1`` untouched, so the hidden state entering block ``l``
    of the full model is exactly what enters block ``l+1`` of the ablated one: it is computed once,
    block by block, and each candidate only runs the blocks after it (about half the work of
    re-running the whole model per candidate, with identical results). Removing the last block runs
    the model without it.

    Args:
        model: The model (left unchanged).
        batches: Evaluation inputs.
        stack: The stack whose blocks are ablated.
        judge: The loss (see :func:`model_loss`).
        progress: Show a progress bar.

    Returns:
        One loss per block.
    """
    layers = get_layers(model, stack)
    n = len(layers)
    losses: list[float] = []
    with torch.no_grad():
        inputs = capture_block_inputs(model, stack, batches)
        bar = tqdm(range(n), desc=f"ablate {stack.name} blocks", disable=not show_progress(progress))
        for idx in bar:
            if idx < n - 1:
                hidden = [a[0] if a else k["hidden_states"] for a, k in inputs]
                with only_layers(model, stack, range(idx + 1, n)), _inject_hidden(layers[idx + 1], hidden):
                    loss, _ = model_loss(model, batches, stack, judge)
            else:
                with only_layers(model, stack, range(n - 1)):
                    loss, _ = model_loss(model, batches, stack, judge)
            losses.append(loss)
            for j, (a, k) in enumerate(inputs):
                inputs[j] = _with_hidden(a, k, _hidden(layers[idx](*a, **k)))
    return losses

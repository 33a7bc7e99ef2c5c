"""Measured inference latency: one model, or a baseline and a pruned model compared fairly.

Protocol (used by the demo, the benchmarks and ``PrunedModel.measure_speed``): a fixed batch of
``batch_size x seqlen`` token ids (seeded, inside the vocabulary) goes through a full forward pass
(``use_cache=False``, no gradients, eval mode) ``warmup`` times untimed, then ``repeats`` times timed
with ``time.perf_counter`` (CUDA synchronised before and after on GPU). The reported figure is the
median. When two models are compared their runs are *interleaved* (A, B, A, B, ...), so drift in the
machine's load or clock affects both alike. The thread count is recorded: CPU latency depends on it.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from hf_prune.evaluation.perplexity import _check_int, _eval_mode, _infer_device, _model_config


def _vocab_size(model: nn.Module) -> int:
    config = _model_config(model)
    if config is None:
        raise TypeError(f"model of type {type(model).__name__} has no `config`; pass input_ids explicitly")
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    return int(text.vocab_size)


def _timer(model: nn.Module, inputs: torch.Tensor) -> Callable[[], float]:
    device = inputs.device

    def run() -> float:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        model(input_ids=inputs, use_cache=False)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return (time.perf_counter() - start) * 1000.0

    return run


def _inputs(
    model: nn.Module, input_ids: torch.Tensor | None, batch_size: int, seqlen: int, seed: int
) -> torch.Tensor:
    if input_ids is not None:
        if not isinstance(input_ids, torch.Tensor) or input_ids.ndim != 2:
            raise TypeError("input_ids must be a 2-D LongTensor [batch, seqlen]")
        return input_ids
    _check_int("batch_size", batch_size, 1)
    _check_int("seqlen", seqlen, 1)
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, _vocab_size(model), (batch_size, seqlen), generator=generator)


def count_flops(model: nn.Module, input_ids: torch.Tensor) -> int:
    """Count the floating-point operations of one forward pass with ``torch``'s ``FlopCounterMode``.

    The count is what the pass really executes (matrix products and attention, by their shapes), so
    after structured pruning the ratio dense / pruned is the ideal, FLOP-proportional speedup.

    Args:
        model: A model taking ``input_ids``.
        input_ids: The inputs of the pass (moved to the model's device).

    Returns:
        Total FLOPs (a multiply-add counts as 2).
    """
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    # no_grad, not inference_mode: under FlopCounterMode the latter breaks parametrized (masked) weights.
    with _eval_mode(model), torch.no_grad(), counter:
        model(input_ids=input_ids.to(_infer_device(model)), use_cache=False)
    return int(counter.get_total_flops())


def _environment(inputs: torch.Tensor, repeats: int, warmup: int) -> dict[str, Any]:
    return {
        "batch_size": int(inputs.shape[0]),
        "seqlen": int(inputs.shape[1]),
        "repeats": repeats,
        "warmup": warmup,
        "device": str(inputs.device),
        "threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "protocol": "median of full forward passes (use_cache=False), interleaved when compared",
    }


def time_runs(run: Callable[[], float], *, repeats: int, warmup: int, numel: int) -> dict[str, float]:
    """Time one model with the protocol above: ``warmup`` untimed calls, then the median of ``repeats``.

    Shared by the PyTorch and the ONNX Runtime measurements, so both report the same way.

    Args:
        run: One forward pass; returns its wall time in milliseconds.
        repeats: Timed calls.
        warmup: Untimed calls first.
        numel: Tokens per call (for ``tokens_per_s``).

    Returns:
        ``{"median_ms", "min_ms", "max_ms", "tokens_per_s"}``.
    """
    for _ in range(warmup):
        run()
    times = [run() for _ in range(repeats)]
    median = statistics.median(times)
    return {
        "median_ms": median,
        "min_ms": min(times),
        "max_ms": max(times),
        "tokens_per_s": numel / (median / 1000.0),
    }


def time_interleaved(
    run_a: Callable[[], float],
    run_b: Callable[[], float],
    *,
    repeats: int,
    warmup: int,
    numel_a: int,
    numel_b: int,
) -> dict[str, float]:
    """Time a baseline and a candidate with interleaved calls (A, B, A, B, ...) and report the speedup.

    Args:
        run_a: One forward pass of the baseline; returns milliseconds.
        run_b: One forward pass of the candidate; returns milliseconds.
        repeats: Timed calls per model.
        warmup: Untimed calls per model first.
        numel_a: Tokens per baseline call.
        numel_b: Tokens per candidate call.

    Returns:
        ``{"baseline_ms", "pruned_ms", "speedup", "baseline_tokens_per_s", "pruned_tokens_per_s"}``.
    """
    for _ in range(warmup):
        run_a()
        run_b()
    times_a, times_b = [], []
    for _ in range(repeats):
        times_a.append(run_a())
        times_b.append(run_b())
    base, cand = statistics.median(times_a), statistics.median(times_b)
    return {
        "baseline_ms": base,
        "pruned_ms": cand,
        "speedup": base / cand,
        "baseline_tokens_per_s": numel_a / (base / 1000.0),
        "pruned_tokens_per_s": numel_b / (cand / 1000.0),
    }


def measure_latency(
    model: nn.Module,
    *,
    batch_size: int = 1,
    seqlen: int = 128,
    repeats: int = 10,
    warmup: int = 2,
    input_ids: torch.Tensor | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Measure a model's forward latency (see the module docstring for the protocol).

    Args:
        model: A ``transformers`` model (or ``PrunedModel``) taking ``input_ids``.
        batch_size: Sequences per forward pass (ignored when ``input_ids`` is given).
        seqlen: Tokens per sequence (ignored when ``input_ids`` is given).
        repeats: Timed passes; the median is reported.
        warmup: Untimed passes first (allocator and kernel warm-up).
        input_ids: Use these ids instead of seeded random ones (moved to the model's device).
        seed: Seed of the random ids.

    Returns:
        ``{"median_ms", "min_ms", "max_ms", "tokens_per_s", ...environment}``.

    Raises:
        TypeError: If a count is not an int.
        ValueError: If a count is below 1 (``warmup``: below 0).
    """
    _check_int("repeats", repeats, 1)
    _check_int("warmup", warmup, 0)
    inputs = _inputs(model, input_ids, batch_size, seqlen, seed).to(_infer_device(model))
    with _eval_mode(model), torch.inference_mode():
        stats = time_runs(_timer(model, inputs), repeats=repeats, warmup=warmup, numel=inputs.numel())
    return {**stats, **_environment(inputs, repeats, warmup)}


def compare_latency(
    baseline: nn.Module,
    candidate: nn.Module,
    *,
    batch_size: int = 1,
    seqlen: int = 128,
    repeats: int = 10,
    warmup: int = 2,
    input_ids: torch.Tensor | None = None,
    seed: int = 0,
    flops: bool = True,
) -> dict[str, Any]:
    """Measure two models on the same inputs with interleaved runs and report the speedup.

    Args:
        baseline: The reference (usually the dense model).
        candidate: The model to compare (usually the pruned one).
        batch_size: Sequences per forward pass (ignored when ``input_ids`` is given).
        seqlen: Tokens per sequence (ignored when ``input_ids`` is given).
        repeats: Timed passes per model; medians are compared.
        warmup: Untimed passes per model first.
        input_ids: Use these ids instead of seeded random ones.
        seed: Seed of the random ids.
        flops: Also count both models' forward FLOPs (:func:`count_flops`) and report
            ``ideal_speedup``, the FLOP-proportional speedup the measured one can be held against.

    Returns:
        ``{"baseline_ms", "pruned_ms", "speedup" (baseline / pruned), "baseline_tokens_per_s",
        "pruned_tokens_per_s", "baseline_flops", "pruned_flops", "ideal_speedup", ...environment}``.

    Raises:
        TypeError: If a count is not an int.
        ValueError: If a count is below 1 (``warmup``: below 0).
    """
    _check_int("repeats", repeats, 1)
    _check_int("warmup", warmup, 0)
    inputs = _inputs(baseline, input_ids, batch_size, seqlen, seed)
    a_in, b_in = inputs.to(_infer_device(baseline)), inputs.to(_infer_device(candidate))
    with _eval_mode(baseline), _eval_mode(candidate), torch.inference_mode():
        result: dict[str, Any] = time_interleaved(
            _timer(baseline, a_in), _timer(candidate, b_in), repeats=repeats, warmup=warmup,
            numel_a=a_in.numel(), numel_b=b_in.numel(),
        )  # fmt: skip
    if flops:
        result["baseline_flops"] = count_flops(baseline, a_in)
        result["pruned_flops"] = count_flops(candidate, b_in)
        result["ideal_speedup"] = result["baseline_flops"] / max(1, result["pruned_flops"])
    return {**result, **_environment(a_in, repeats, warmup)}

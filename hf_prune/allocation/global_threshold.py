"""Global-threshold allocation: one score threshold over all layers, exact global pruned count.

Used by global magnitude pruning (e.g. Frankle & Carbin, "The Lottery Ticket Hypothesis", ICLR 2019)
and global SNIP (Lee et al., ICLR 2019): the ``round(sparsity * N)`` lowest scores of the whole model
are pruned, wherever they are, which gives each layer its own ratio.

Memory: concatenating every score of a 7B model would need ~28 GB in fp32. Instead the k-th smallest
score is found exactly by bisection over the order-preserving integer image of the float values: each
step counts ``scores <= t`` one layer at a time (at most 32 passes for fp32/fp16/bf16 scores, 64 for
fp64), so peak extra memory is one layer's comparison mask. Ties at the threshold are taken in layer
order, then position order, which is exactly what
``unstructured_mask(scores_i, ratio_i, compare="layer")`` then selects in each layer (stable sort), so
the global count is exact.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from hf_prune.allocation.uniform import check_sparsity
from hf_prune.selection.topk import num_to_prune

__all__ = ["global_threshold_counts", "global_threshold_ratios"]


def _key(value: float, dtype: torch.dtype) -> int:
    """Order-preserving integer of a float (IEEE bit pattern, negatives mirrored)."""
    if dtype == torch.float64:
        bits = int(np.array(value, dtype=np.float64).view(np.int64))
        return bits if bits >= 0 else bits ^ 0x7FFFFFFFFFFFFFFF
    bits = int(np.array(value, dtype=np.float32).view(np.int32))
    return bits if bits >= 0 else bits ^ 0x7FFFFFFF


def _unkey(key: int, dtype: torch.dtype) -> float:
    if dtype == torch.float64:
        bits = key if key >= 0 else key ^ 0x7FFFFFFFFFFFFFFF
        return float(np.array(bits, dtype=np.int64).view(np.float64))
    bits = key if key >= 0 else key ^ 0x7FFFFFFF
    return float(np.array(bits, dtype=np.int32).view(np.float32))


def global_threshold_counts(scores: Sequence[torch.Tensor], sparsity: float) -> np.ndarray:
    """Per-layer pruned counts of one global threshold that prunes exactly ``round(sparsity * N)`` weights.

    Args:
        scores: One score tensor per prunable layer (any shapes, floating point); higher means keep.
        sparsity: Target fraction of all weights to prune, in ``[0, 1]``.

    Returns:
        ``int64`` array of pruned counts per layer; they sum to ``round(sparsity * total)``.

    Raises:
        ValueError: If ``scores`` is empty or holds NaN.
        TypeError: If an entry is not a floating-point tensor.
    """
    s = check_sparsity(sparsity)
    if isinstance(scores, torch.Tensor) or len(scores) == 0:
        raise ValueError("scores must be a non-empty sequence with one score tensor per layer.")
    layers = list(scores)
    for i, t in enumerate(layers):
        if not isinstance(t, torch.Tensor) or not t.is_floating_point():
            raise TypeError(f"scores[{i}] must be a floating-point torch.Tensor, got {type(t).__name__}.")
        if torch.isnan(t).any():
            raise ValueError(f"scores[{i}] contains NaN; scores must be comparable numbers.")
    # fp16 / bf16 / fp32 values are all exact in fp32; only fp64 scores need fp64 comparisons. Layers
    # are converted one at a time inside each pass (a no-op view for fp32), never all at once.
    dtype = torch.float64 if any(t.dtype == torch.float64 for t in layers) else torch.float32
    layers = [t.detach().reshape(-1) for t in layers]
    numels = np.array([t.numel() for t in layers], dtype=np.int64)
    k = num_to_prune(int(numels.sum()), s)
    if k == 0:
        return np.zeros_like(numels)
    if k == int(numels.sum()):
        return numels.copy()

    def count_le(threshold: float) -> int:
        return sum(
            int((t.to(dtype) <= torch.tensor(threshold, dtype=dtype, device=t.device)).sum()) for t in layers
        )

    # Bisection over keys is valid because key -> value is monotone (-0.0 and +0.0 compare equal).
    lo = _key(min(float(t.min()) for t in layers if t.numel()), dtype)
    hi = _key(max(float(t.max()) for t in layers if t.numel()), dtype)
    # Smallest key whose value has at least k scores <= it: that value is the k-th smallest score.
    while lo < hi:
        mid = (lo + hi) // 2
        if count_le(_unkey(mid, dtype)) >= k:
            hi = mid
        else:
            lo = mid + 1
    threshold = _unkey(lo, dtype)
    counts = np.zeros_like(numels)
    remaining = k
    for i, t in enumerate(layers):
        thr = torch.tensor(threshold, dtype=dtype, device=t.device)
        counts[i] = int((t.to(dtype) < thr).sum())
        remaining -= int(counts[i])
    for i, t in enumerate(layers):
        if remaining == 0:
            break
        ties = int((t.to(dtype) == torch.tensor(threshold, dtype=dtype, device=t.device)).sum())
        take = min(ties, remaining)
        counts[i] += take
        remaining -= take
    return counts


def global_threshold_ratios(scores: Sequence[torch.Tensor], sparsity: float) -> np.ndarray:
    """Per-layer sparsity ratios induced by one global score threshold (exact global count).

    Feeding ``ratios[i]`` to ``unstructured_mask(scores[i], ratios[i], compare="layer")`` reproduces the
    global selection exactly (``round(ratio * numel)`` recovers each layer's count).

    Args:
        scores: One score tensor per prunable layer, in module order; higher means keep.
        sparsity: Target fraction of all weights, in ``[0, 1]``.

    Returns:
        ``float64`` array: pruned count / numel for each layer. Note a global threshold may prune a
        whole layer (ratio 1.0) when its scores are uniformly small.
    """
    counts = global_threshold_counts(scores, sparsity)
    numels = np.array([t.numel() for t in scores], dtype=np.float64)
    return counts.astype(np.float64) / np.maximum(numels, 1.0)

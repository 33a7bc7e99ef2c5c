"""Uniform allocation: every prunable layer gets the target sparsity (the default of Wanda and SparseGPT)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = ["check_param_counts", "check_sparsity", "uniform_ratios", "weighted_sparsity"]


def check_param_counts(param_counts: Sequence[int] | np.ndarray) -> np.ndarray:
    """Validate per-layer parameter counts and return them as a float64 array.

    Args:
        param_counts: One positive count per prunable layer, in module order.

    Returns:
        The counts as ``float64`` (exact for any realistic layer size).

    Raises:
        ValueError: If empty, not 1-D, or any count is not a positive finite number.
    """
    counts = np.asarray(param_counts, dtype=np.float64)
    if counts.ndim != 1 or counts.size == 0:
        raise ValueError(
            "param_counts must be a non-empty 1-D sequence (one count per prunable layer), got shape "
            f"{counts.shape}."
        )
    if not np.all(np.isfinite(counts)) or np.any(counts <= 0):
        bad = int(np.argmax(~np.isfinite(counts) | (counts <= 0)))
        raise ValueError(f"param_counts must all be positive, got {counts[bad]!r} at layer {bad}.")
    return counts


def check_sparsity(sparsity: float, *, upper: float = 1.0, name: str = "sparsity") -> float:
    """Validate a target sparsity in ``[0, upper]``.

    Args:
        sparsity: Target fraction of weights removed.
        upper: Largest allowed value (e.g. an allocator's ``max_ratio``).
        name: Argument name for the error message.

    Returns:
        ``sparsity`` as ``float``.

    Raises:
        ValueError: If not a finite number in ``[0, upper]``.
    """
    try:
        value = float(sparsity)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number in [0, {upper}], got {sparsity!r}.") from None
    if not math.isfinite(value) or not 0.0 <= value <= upper:
        raise ValueError(f"{name} must be in [0, {upper}], got {sparsity!r}.")
    return value


def weighted_sparsity(
    ratios: Sequence[float] | np.ndarray, param_counts: Sequence[int] | np.ndarray
) -> float:
    """Return the parameter-weighted mean of per-layer ratios: the model-level sparsity they produce.

    Args:
        ratios: Per-layer sparsity ratios.
        param_counts: Per-layer parameter counts (same length).

    Returns:
        ``sum(p_i * r_i) / sum(p_i)``.
    """
    counts = check_param_counts(param_counts)
    r = np.asarray(ratios, dtype=np.float64)
    if r.shape != counts.shape:
        raise ValueError(f"ratios has {r.size} entries but param_counts has {counts.size}.")
    return float(np.dot(counts, r) / counts.sum())


def uniform_ratios(param_counts: Sequence[int] | np.ndarray, sparsity: float) -> np.ndarray:
    """One ratio per layer, all equal to ``sparsity``.

    Args:
        param_counts: One positive parameter count per prunable layer, in module order.
        sparsity: Target sparsity in ``[0, 1]``.

    Returns:
        ``float64`` array of ``len(param_counts)`` copies of ``sparsity``.
    """
    counts = check_param_counts(param_counts)
    return np.full(counts.shape, check_sparsity(sparsity), dtype=np.float64)

"""AlphaPruning: layer-wise sparsity from the heavy-tail exponent of each layer's eigenspectrum.

Lu, Zhou, Liu, Wang, Yang & Mahoney, "AlphaPruning: Using Heavy-Tailed Self Regularization Theory for
Improved Layer-wise Pruning of Large Language Models", NeurIPS 2024 (arXiv:2410.10912).

HT-SR theory: a layer whose empirical spectral density (ESD of ``W^T W``) has a *heavier* tail (smaller
power-law exponent ``alpha``) is better trained and carries more learned structure, so it should be
pruned *less*; a layer with a *larger* ``alpha`` is less well trained and gets a *higher* sparsity.

The published rule (``ww_sparsity`` in the authors' ``lib/prune.py``), reproduced exactly:

1. ``block_wise`` mapping: replace each layer's metric by the mean over its block (``layers_per_block``
   consecutive prunable layers, e.g. 7 for LLaMA: q, k, v, o, gate, up, down). ``layer_wise`` keeps the
   per-layer values.
2. Linear map to factors ``f_i = (1 - eps) + 2 * eps * (a_i - min a) / (max a - min a)`` in
   ``[1 - eps, 1 + eps]`` (the paper's ``s1 = 1 - eps``, ``s2 = 1 + eps``).
3. Scale: ``r_i = c * f_i`` with ``c = S * sum(p) / sum(p * f)`` so the parameter-weighted mean sparsity
   equals the target ``S``.

Addition (the published code does not do this): with a large ``eps`` and a high target, ``c * f_i`` can
reach or exceed 1 (a layer pruned entirely, or a negative keep count). Here ratios are capped at
``max_ratio`` and ``c`` is re-solved so the capped layers' excess is redistributed over the others in
proportion to their factors, keeping the weighted target exact:
``sum_i p_i * min(c * f_i, max_ratio) = S * sum_i p_i`` (a monotone piecewise-linear equation in ``c``,
solved exactly at its breakpoints). When nothing is capped the result equals the published rule.
If all metrics are equal the published formula divides by zero; here every factor is 1 (uniform).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from hf_prune.allocation.uniform import check_param_counts, check_sparsity

__all__ = ["MAPPINGS", "alpha_factors", "alpha_pruning_ratios", "scale_to_target"]

MAPPINGS = ("block_wise", "layer_wise")


def _check_metrics(metrics: Sequence[float] | np.ndarray, n_layers: int) -> np.ndarray:
    values = np.asarray(metrics, dtype=np.float64)
    if values.ndim != 1:
        raise ValueError(f"metrics must be 1-D (one value per prunable layer), got shape {values.shape}.")
    if values.size != n_layers:
        raise ValueError(
            f"metrics has {values.size} values but param_counts has {n_layers} layers; they must describe "
            "the same prunable layers in the same (module) order."
        )
    if not np.all(np.isfinite(values)):
        bad = np.flatnonzero(~np.isfinite(values))
        raise ValueError(
            f"metrics must be finite; got {values[bad[0]]!r} at layer {int(bad[0])} ({bad.size} non-finite "
            "in all). Recompute the ESD metric (a failed power-law fit) or fix the metric file."
        )
    return values


def alpha_factors(
    metrics: Sequence[float] | np.ndarray,
    epsilon: float,
    mapping: str = "block_wise",
    layers_per_block: int | None = None,
) -> np.ndarray:
    """Map per-layer metrics linearly to factors in ``[1 - epsilon, 1 + epsilon]`` (Lu et al., 2024).

    Args:
        metrics: One ESD metric per prunable layer (``alpha_peak`` in the paper), module order.
        epsilon: Half-width of the factor range, in ``(0, 1)``.
        mapping: ``"block_wise"`` (average each block first, the paper's default) or ``"layer_wise"``.
        layers_per_block: Prunable layers per block; required for ``block_wise``.

    Returns:
        ``float64`` factors, larger for larger metric values.

    Raises:
        ValueError: For ``epsilon`` outside ``(0, 1)``, an unknown ``mapping``, a missing or
            non-dividing ``layers_per_block``, or non-finite metrics.
    """
    values = np.asarray(metrics, dtype=np.float64)
    values = _check_metrics(values, values.size)
    try:
        eps = float(epsilon)
    except (TypeError, ValueError):
        raise ValueError(f"epsilon must be a number in (0, 1), got {epsilon!r}.") from None
    if not 0.0 < eps < 1.0:
        raise ValueError(
            f"epsilon must be in (0, 1) (ratios span [1 - eps, 1 + eps] times the target), got {epsilon!r}. "
            "The paper uses 0.1-0.3."
        )
    if mapping not in MAPPINGS:
        raise ValueError(f"mapping must be one of {MAPPINGS}, got {mapping!r}.")
    if mapping == "block_wise":
        if layers_per_block is None or isinstance(layers_per_block, bool) or int(layers_per_block) < 1:
            raise ValueError(
                f"layers_per_block must be a positive integer for mapping='block_wise', got "
                f"{layers_per_block!r} (e.g. 7 for LLaMA: q, k, v, o, gate, up, down)."
            )
        lpb = int(layers_per_block)
        if values.size % lpb != 0:
            raise ValueError(
                f"{values.size} layers cannot be split into blocks of layers_per_block={lpb}; every block "
                "must have the same number of prunable layers (or use mapping='layer_wise')."
            )
        values = np.repeat(values.reshape(-1, lpb).mean(axis=1), lpb)
    lo, hi = float(values.min()), float(values.max())
    if hi == lo:
        return np.ones_like(values)
    return (values - lo) / (hi - lo) * (2.0 * eps) + (1.0 - eps)


def scale_to_target(
    factors: Sequence[float] | np.ndarray,
    param_counts: Sequence[int] | np.ndarray,
    sparsity: float,
    max_ratio: float = 0.99,
) -> np.ndarray:
    """Return ``min(c * f_i, max_ratio)`` with ``c`` chosen so the weighted mean equals ``sparsity`` exactly.

    Args:
        factors: Positive per-layer factors.
        param_counts: Per-layer parameter counts.
        sparsity: Target parameter-weighted sparsity, in ``[0, max_ratio]``.
        max_ratio: Cap on any single layer's ratio, in ``(0, 1]``.

    Returns:
        ``float64`` ratios with ``sum(p * r) / sum(p) == sparsity`` (to rounding) and ``r <= max_ratio``.

    Raises:
        ValueError: If factors are not positive, lengths differ, or ``sparsity > max_ratio``.
    """
    counts = check_param_counts(param_counts)
    f = np.asarray(factors, dtype=np.float64)
    if f.shape != counts.shape:
        raise ValueError(f"factors has {f.size} entries but param_counts has {counts.size}.")
    if not np.all(np.isfinite(f)) or np.any(f <= 0):
        raise ValueError("factors must be positive and finite.")
    cap = float(max_ratio)
    if not 0.0 < cap <= 1.0:
        raise ValueError(f"max_ratio must be in (0, 1], got {max_ratio!r}.")
    s = check_sparsity(sparsity, upper=cap, name="sparsity (at most max_ratio)")
    total = s * counts.sum()
    # Layers hit the cap in increasing order of cap / f_i; walk the breakpoints until c fits its segment.
    order = np.argsort(cap / f, kind="stable")
    breaks = cap / f[order]
    pf = (counts * f)[order]
    free_pf = pf.sum()
    capped_params = 0.0
    c = breaks[-1]
    for j in range(order.size):
        c = (total - cap * capped_params) / free_pf
        if c <= breaks[j]:
            break
        capped_params += counts[order[j]]
        free_pf -= pf[j]
        c = breaks[j]  # every layer capped: only reachable when sparsity == max_ratio
    return np.minimum(c * f, cap)


def alpha_pruning_ratios(
    metrics: Sequence[float] | np.ndarray,
    param_counts: Sequence[int] | np.ndarray,
    sparsity: float,
    epsilon: float,
    mapping: str = "block_wise",
    layers_per_block: int | None = None,
    *,
    max_ratio: float = 0.99,
) -> np.ndarray:
    """AlphaPruning per-layer sparsity ratios (Lu et al., NeurIPS 2024).

    Larger metric (``alpha``: less well-trained layer) means higher sparsity. See the module docstring
    for the exact rule and the capping addition.

    Args:
        metrics: One ESD metric per prunable layer in module order (e.g. the published
            ``alpha_peak.npy`` values, or :func:`hf_prune.esd.compute_esd_metrics`).
        param_counts: Parameter count of each of those layers.
        sparsity: Target parameter-weighted sparsity, in ``[0, max_ratio]``.
        epsilon: Half-width of the factor range ``[1 - epsilon, 1 + epsilon]``, in ``(0, 1)``.
        mapping: ``"block_wise"`` (paper default) or ``"layer_wise"``.
        layers_per_block: Prunable layers per block, required for ``block_wise``.
        max_ratio: Largest ratio any layer may receive, in ``(0, 1]``.

    Returns:
        ``float64`` array of one ratio per layer whose parameter-weighted mean is ``sparsity``.

    Raises:
        ValueError: On mismatched lengths, NaN/inf metrics, ``epsilon`` outside ``(0, 1)``, a bad
            ``mapping``/``layers_per_block``, or a target above ``max_ratio``.
    """
    counts = check_param_counts(param_counts)
    values = _check_metrics(metrics, counts.size)
    factors = alpha_factors(values, epsilon, mapping, layers_per_block)
    return scale_to_target(factors, counts, sparsity, max_ratio)

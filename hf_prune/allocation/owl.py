"""OWL: Outlier Weighed Layerwise sparsity.

Yin, Wu, Zhang, Hsieh, Wang, Jaiswal, Chen, Pechenizkiy, Mocanu, Wang & Liu, "Outlier Weighed
Layerwise Sparsity (OWL): A Missing Secret Sauce for Pruning LLMs to High Sparsity", ICML 2024
(arXiv:2310.05175).

A layer's *outlier ratio* is the share of its Wanda scores ``|W| * ||X||`` above ``M`` times their mean
(:func:`layer_outlier_ratio`; the paper uses ``M`` in 3-10, 5 by default, and pools all linears of a
decoder block). Layers with more outliers matter more and get *lower* sparsity. The published code maps
the ratios linearly onto a band of width ``2 * lamda`` and shifts the band so the plain mean equals the
target: ``s_i = S - (d_i - mean(d))`` with ``d_i = 2 * lamda * (o_i - min o) / (max o - min o)``.

Here: ``s_i = S + lamda - d_i + t`` clipped to ``[S - lamda, S + lamda]`` (and to ``[0, max_ratio]``),
with the shift ``t`` solved exactly so the **parameter-weighted** mean equals ``S`` (layers of unequal
size, e.g. attention vs MLP). With equal layer sizes and no clipping this is identical to the published
rule; the clip keeps the paper's stated bound ``|s_i - S| <= lamda`` that the published shift can break
when the outlier ratios are skewed.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from hf_prune.allocation.uniform import check_param_counts, check_sparsity

__all__ = ["layer_outlier_ratio", "owl_ratios"]


def layer_outlier_ratio(scores: torch.Tensor | Sequence[torch.Tensor], M: float = 5.0) -> float:
    """Fraction of scores larger than ``M`` times their mean (OWL's layer-wise outlier distribution).

    Args:
        scores: Wanda scores of one layer, or a sequence of tensors pooled as one group (OWL pools all
            linears of a decoder block).
        M: Outlier threshold as a multiple of the mean score, ``> 0``.

    Returns:
        The outlier fraction in ``[0, 1]`` (the paper reports it in percent; the mapping is
        scale-free).

    Raises:
        ValueError: If ``M <= 0`` or the scores are empty or non-finite.
    """
    if not float(M) > 0:
        raise ValueError(
            f"M must be > 0 (outlier threshold = M * mean score; the paper uses 3-10), got {M!r}."
        )
    group = [scores] if isinstance(scores, torch.Tensor) else list(scores)
    n = sum(t.numel() for t in group)
    if n == 0:
        raise ValueError("scores must not be empty.")
    total = 0.0
    for t in group:
        if not torch.isfinite(t).all():
            raise ValueError("scores contain NaN or inf; check the calibration statistics.")
        total += float(t.detach().double().sum())
    threshold = float(M) * total / n
    above = sum(int((t.detach().double() > threshold).sum()) for t in group)
    return above / n


def _solve_shift(base: np.ndarray, counts: np.ndarray, target: float, lo: float, hi: float) -> np.ndarray:
    """Return ``clip(base + t, lo, hi)`` with ``t`` such that its ``counts``-weighted sum is ``target``."""
    # F(t) = sum p * clip(base + t, lo, hi) is non-decreasing and linear between the breakpoints.
    breaks = np.unique(np.concatenate([lo - base, hi - base]))

    def total(t: float) -> float:
        return float(np.dot(counts, np.clip(base + t, lo, hi)))

    values = np.array([total(b) for b in breaks])
    j = int(np.searchsorted(values, target, side="left"))
    if j == 0:
        t = float(breaks[0])
    elif j >= breaks.size:
        t = float(breaks[-1])
    else:
        t0, t1, f0, f1 = breaks[j - 1], breaks[j], values[j - 1], values[j]
        t = float(t0 + (target - f0) * (t1 - t0) / (f1 - f0))
        # Polish on the active set so the weighted sum is exact to rounding.
        r = base + t
        free = (r > lo) & (r < hi)
        if free.any():
            fixed = float(np.dot(counts[~free], np.clip(r[~free], lo, hi)))
            t = (target - fixed - float(np.dot(counts[free], base[free]))) / float(counts[free].sum())
    return np.clip(base + t, lo, hi)


def owl_ratios(
    outlier_ratios: Sequence[float] | np.ndarray,
    param_counts: Sequence[int] | np.ndarray,
    sparsity: float,
    lamda: float = 0.08,
    *,
    max_ratio: float = 0.99,
) -> np.ndarray:
    """OWL per-layer sparsity ratios (Yin et al., 2024).

    Args:
        outlier_ratios: Outlier ratio of each layer (or block, repeated per layer), module order.
        param_counts: Parameter count of each layer.
        sparsity: Target parameter-weighted sparsity, in ``[0, max_ratio]``.
        lamda: Half-width of the sparsity band around the target, in ``[0, 0.5]`` (the paper uses
            0.02-0.2; 0.08 for LLaMA at 70 %).
        max_ratio: Largest ratio any layer may receive, in ``(0, 1]``.

    Returns:
        ``float64`` ratios in ``[S - lamda, S + lamda]`` (intersected with ``[0, max_ratio]``), lower for
        layers with more outliers, whose parameter-weighted mean is ``sparsity``.

    Raises:
        ValueError: On mismatched lengths, non-finite or negative outlier ratios, or out-of-range
            ``sparsity``/``lamda``/``max_ratio``.
    """
    counts = check_param_counts(param_counts)
    o = np.asarray(outlier_ratios, dtype=np.float64)
    if o.shape != counts.shape:
        raise ValueError(
            f"outlier_ratios has {o.size} values but param_counts has {counts.size} layers; give one value "
            "per prunable layer (repeat a block's ratio for each of its layers)."
        )
    if not np.all(np.isfinite(o)) or np.any(o < 0):
        raise ValueError("outlier_ratios must be finite and >= 0 (fractions of scores above M * mean).")
    cap = float(max_ratio)
    if not 0.0 < cap <= 1.0:
        raise ValueError(f"max_ratio must be in (0, 1], got {max_ratio!r}.")
    s = check_sparsity(sparsity, upper=cap, name="sparsity (at most max_ratio)")
    lam = check_sparsity(lamda, upper=0.5, name="lamda")
    span = float(o.max() - o.min())
    if span == 0.0 or lam == 0.0:
        return np.full(counts.shape, s)
    d = 2.0 * lam * (o - o.min()) / span
    lo, hi = max(s - lam, 0.0), min(s + lam, cap)
    return _solve_shift(s + lam - d, counts, s * float(counts.sum()), lo, hi)

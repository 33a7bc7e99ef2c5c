"""Mask rearrangement with the block-diagonal Fisher (Kwon et al., NeurIPS 2022).

Kwon, Kim, Mahoney, Hassoun, Keutzer and Gholami, "A Fast Post-Training Pruning Framework for
Transformers".

Pure tensor math, no model. The mask search picks *how many* heads or neurons each layer keeps from the
diagonal Fisher information; rearrangement then picks *which* ones, using the block-diagonal Fisher that
also accounts for interactions between the units of one layer.

With ``g_b`` the gradient of batch ``b``'s loss with respect to a layer's mask and the empirical Fisher
``F = sum_b g_b g_b^T``, the second-order estimate of the loss increase of a mask ``m`` is
``1/2 (1 - m)^T F (1 - m) = 1/2 sum_b (g_b . (1 - m))^2``. For a 0/1 mask with pruned set ``P`` this is
``1/2 || sum_{i in P} G_i ||^2`` where ``G_i`` is unit ``i``'s vector of per-batch gradients. The
objective reported here (:func:`mask_objective`) drops the constant 1/2; lower is better.

The published greedy (``prune/rearrange.py``) walks the units in increasing diagonal Fisher
``||G_i||^2``: it starts from a pruned set of the right size, and for each remaining unit it tentatively
adds the unit to the pruned set and then drops from the set the one unit whose removal leaves the
smallest objective. Dropping the unit just added restores the previous set, so the objective never
increases: the result is never worse than the starting set. The published code starts from the
``|P|`` units of smallest diagonal Fisher (``start="diagonal"``, reproduced exactly). The default here,
``start="mask"``, starts from the given mask's own pruned set and walks its kept units in the same
order; it is identical to the published code whenever the given mask is the diagonal-Fisher one (the
mask search's output), and otherwise guarantees that the result is never worse than the given mask.

The greedy is a single pass of swaps, not an exact solver. It is exact when a layer prunes one unit or
keeps one unit (every same-count mask is then among its candidates), hence for layers of up to three
units; for larger layers it can miss the optimum (the tests compare it with brute force).
"""

from __future__ import annotations

import torch

__all__ = ["START_MODES", "mask_objective", "rearrange_layer", "rearrange_mask"]

#: Where the greedy starts: the given mask's pruned set, or (as published) the lowest diagonal Fisher.
START_MODES = ("mask", "diagonal")


def _check(mask: torch.Tensor, grads: torch.Tensor) -> None:
    if mask.dim() != 2:
        raise ValueError(f"mask must be [layers, units], got shape {tuple(mask.shape)}.")
    if grads.dim() != 3 or tuple(grads.shape[1:]) != tuple(mask.shape):
        raise ValueError(
            f"grads must be [samples, layers, units] = [*, {mask.shape[0]}, {mask.shape[1]}] to match the "
            f"mask, got shape {tuple(grads.shape)}."
        )
    if grads.shape[0] == 0:
        raise ValueError("grads has no samples (batches).")
    if not torch.isfinite(grads).all():
        raise ValueError("grads contains NaN or inf.")


def mask_objective(mask: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    """Per-layer block-diagonal Fisher estimate of the loss increase of a mask (Kwon et al., NeurIPS 2022).

    Args:
        mask: ``[layers, units]`` mask (1 = kept, 0 = pruned; other values allowed).
        grads: ``[samples, layers, units]`` per-batch mask gradients
            (:func:`hf_prune.calibration.fisher.collect_mask_gradients`).

    Returns:
        ``[layers]`` float64 values ``(1 - m_l)^T F_l (1 - m_l)`` with ``F_l = sum_b g_bl g_bl^T``
        (twice the second-order loss estimate); lower is better.
    """
    _check(mask, grads)
    removed = 1.0 - mask.double().cpu()
    # (1 - m)^T F (1 - m) = sum_b (g_b . (1 - m))^2: no [units, units] matrix is formed.
    per_sample = torch.einsum("bli,li->bl", grads.double().cpu(), removed)
    return per_sample.pow(2).sum(dim=0)


def rearrange_layer(keep: torch.Tensor, grads: torch.Tensor, *, start: str = "mask") -> torch.Tensor:
    """Greedy rearrangement of one layer's mask (Kwon et al., NeurIPS 2022), keeping its count.

    Args:
        keep: ``[units]`` boolean, True for kept units.
        grads: ``[samples, units]`` per-batch mask gradients of the layer.
        start: ``"mask"`` (start from ``keep``'s pruned set; never worse than ``keep``) or
            ``"diagonal"`` (the published start: the lowest diagonal Fisher units).

    Returns:
        ``[units]`` boolean keep mask with the same number of kept units.
    """
    if start not in START_MODES:
        raise ValueError(f"start must be one of {START_MODES}, got {start!r}.")
    n = keep.numel()
    n_pruned = n - int(keep.sum())
    if n_pruned in (0, n):
        return keep.clone()  # nothing to choose
    g = grads.t().double()  # [units, samples]: one gradient vector per unit
    diag = g.pow(2).sum(dim=1)
    # Stable sort: equal diagonal values keep their index order, so results are deterministic.
    order = torch.sort(diag, stable=True).indices.tolist()
    keep_list = keep.tolist()
    if start == "diagonal":
        pruned, candidates = order[:n_pruned], order[n_pruned:]
    else:
        pruned = [i for i in order if not keep_list[i]]
        candidates = [i for i in order if keep_list[i]]
    total = g[pruned].sum(dim=0)
    for c in candidates:
        pool = [*pruned, c]
        total_with = total + g[c]
        # Objective after dropping each member of the pool; dropping c itself restores the previous set,
        # so the chosen value is never above the current objective.
        left = (total_with.unsqueeze(0) - g[pool]).pow(2).sum(dim=1)
        drop = int(torch.argmin(left))  # first minimum on ties, as the published code
        total = total_with - g[pool[drop]]
        del pool[drop]
        pruned = pool
    out = torch.ones(n, dtype=torch.bool)
    out[pruned] = False
    return out.to(keep.device)


def rearrange_mask(mask: torch.Tensor, grads: torch.Tensor, *, start: str = "mask") -> torch.Tensor:
    """Rearrange a head or neuron mask layer by layer with the block-diagonal Fisher (Kwon et al., 2022).

    Each layer keeps its number of kept units; only which units are kept changes, to lower
    :func:`mask_objective`. Runs on CPU (the published code does too: the arithmetic intensity is low).

    Args:
        mask: ``[layers, units]`` 0/1 mask (any non-zero entry counts as kept).
        grads: ``[samples, layers, units]`` per-batch gradients with respect to the mask, as returned by
            :func:`hf_prune.calibration.fisher.collect_mask_gradients` (same ``head_unit``).
        start: ``"mask"`` (default; result never worse than ``mask``) or ``"diagonal"`` (the published
            start; identical when ``mask`` is the diagonal-Fisher mask). See the module docstring.

    Returns:
        A new 0/1 mask with ``mask``'s shape, dtype and device.

    Raises:
        ValueError: Shapes that do not match, non-finite gradients, or an unknown ``start``.
    """
    _check(mask, grads)
    keep = mask.detach().cpu() != 0
    g = grads.detach().cpu()
    rows = [rearrange_layer(keep[i], g[:, i, :], start=start) for i in range(mask.shape[0])]
    return torch.stack(rows).to(dtype=mask.dtype, device=mask.device)

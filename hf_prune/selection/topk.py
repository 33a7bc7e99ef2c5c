"""Exact-count unstructured selection: keep the highest scores, prune the rest.

Pure tensor math (no model access), so it can be checked against brute force.
"""

from __future__ import annotations

import torch


def num_to_prune(numel: int, sparsity: float) -> int:
    """Return how many of ``numel`` weights to zero for ``sparsity`` (rounded to the nearest weight).

    Args:
        numel: Number of weights in the group.
        sparsity: Fraction to remove, in ``[0, 1]``.
    """
    return round(float(sparsity) * numel)


def prune_groups(scores: torch.Tensor, sparsity: float, compare: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate the arguments and return the comparison groups and how many to prune in each.

    Args:
        scores: Importance scores shaped like the weight ``[out, in]``.
        sparsity: Fraction of weights to remove, in ``[0, 1]``.
        compare: ``"layer"`` (one group) or ``"row"`` (one group per output row).

    Returns:
        ``(flat, counts)``: the scores as ``[groups, group_size]`` and a ``long`` tensor of counts to prune
        per group, summing to exactly ``round(sparsity * numel)``.

    Raises:
        ValueError: For a sparsity outside ``[0, 1]`` or an unknown ``compare`` mode.
    """
    if not 0.0 <= float(sparsity) <= 1.0:
        raise ValueError(f"sparsity must be in [0, 1], got {sparsity!r}.")
    if compare not in ("layer", "row"):
        raise ValueError(f"compare must be 'layer' or 'row', got {compare!r}.")
    flat = scores.reshape(1, -1) if compare == "layer" else scores.reshape(scores.shape[0], -1)
    rows, cols = flat.shape
    total = num_to_prune(rows * cols, sparsity)
    # The layer's count is exact; with row-wise comparison it is spread over the rows as evenly as
    # possible (the first `total % rows` rows prune one more), instead of rounding every row, which
    # would miss the layer's target by up to rows/2 weights.
    counts = torch.full((rows,), total // max(rows, 1), dtype=torch.long)
    counts[: total % max(rows, 1)] += 1
    return flat, counts


def unstructured_mask(scores: torch.Tensor, sparsity: float, compare: str = "layer") -> torch.Tensor:
    """Keep-mask that zeros exactly ``round(sparsity * n)`` lowest-scored weights per comparison group.

    Ties are broken by position (a stable sort), so the result is deterministic and the pruned count is
    exact; a ``scores <= threshold`` rule would prune every tied weight and miss the target.

    Args:
        scores: Importance scores shaped like the weight ``[out, in]``; higher means keep.
        sparsity: Fraction of weights to remove in each group, in ``[0, 1]``.
        compare: ``"layer"`` compares all weights of the layer (magnitude); ``"row"`` compares within
            each output row, as Wanda does.

    Returns:
        A boolean tensor shaped like ``scores``; ``True`` marks weights that are kept. Exactly
        ``round(sparsity * numel)`` weights are pruned in total.

    Raises:
        ValueError: For a sparsity outside ``[0, 1]`` or an unknown ``compare`` mode.
    """
    flat, per_row = prune_groups(scores, sparsity, compare)
    rows, cols = flat.shape
    mask = torch.ones_like(flat, dtype=torch.bool)
    if int(per_row.sum()) > 0:
        order = torch.argsort(flat.float(), dim=1, stable=True)
        ranks = torch.empty_like(order)
        ranks.scatter_(1, order, torch.arange(cols, device=order.device).expand(rows, cols))
        mask = ranks >= per_row.to(ranks.device).unsqueeze(1)
    return mask.reshape(scores.shape)

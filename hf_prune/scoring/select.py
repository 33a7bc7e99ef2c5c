"""Exact lowest-k selection by a k-th value threshold instead of a full sort.

:func:`hf_prune.selection.topk.unstructured_mask` ranks every weight with a stable ``argsort``; the
scorers only need *which* weights are the ``k`` lowest of each group, with ties broken by position. A
``kthvalue`` threshold plus a cumulative count of the tied entries gives exactly the same set at a
fraction of the cost (a selection is O(n), a sort O(n log n) with a large constant on CPU), which
matters when every projection of a 7B model is scored.
"""

from __future__ import annotations

import torch

from hf_prune.selection.topk import prune_groups

__all__ = ["fast_unstructured_mask", "lowest_k_mask"]


def lowest_k_mask(scores: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """Mark the ``counts[r]`` lowest entries of each row ``r``; ties go to the lower column index.

    The result equals ranking each row with a stable ascending ``argsort`` and marking the first
    ``counts[r]`` positions.

    Args:
        scores: ``[rows, cols]`` scores (any real dtype; compared in fp32).
        counts: ``[rows]`` integer counts in ``[0, cols]``.

    Returns:
        Boolean ``[rows, cols]`` mask, ``True`` on the selected (lowest) entries.

    Raises:
        ValueError: If the shapes disagree or a count is out of range.
    """
    if scores.dim() != 2:
        raise ValueError(f"scores must be 2-D [rows, cols], got shape {tuple(scores.shape)}.")
    rows, cols = scores.shape
    counts = counts.to(device=scores.device, dtype=torch.long).reshape(-1)
    if counts.numel() != rows:
        raise ValueError(f"counts must hold one count per row ({rows}), got {counts.numel()}.")
    if rows == 0 or cols == 0:
        return torch.zeros(rows, cols, dtype=torch.bool, device=scores.device)
    if int(counts.min()) < 0 or int(counts.max()) > cols:
        raise ValueError(
            f"counts must be in [0, {cols}], got range [{int(counts.min())}, {int(counts.max())}]."
        )
    k_max = int(counts.max())
    if k_max == 0:
        return torch.zeros(rows, cols, dtype=torch.bool, device=scores.device)
    s = scores.float()
    # The k_max-th smallest value t of a row bounds every row's cut: for a row that needs c <= k_max,
    # fewer than c entries are < t only if some entries equal to t must be taken as well; taking the
    # first (c - #(< t)) of the entries equal to t reproduces the stable sort's order exactly.
    if k_max == cols:
        thresh = s.max(dim=1, keepdim=True).values
    else:
        thresh = torch.kthvalue(s, k_max, dim=1, keepdim=True).values
    below = s < thresh
    n_below = below.sum(dim=1, keepdim=True)
    # For rows that need fewer than k_max entries, t may be larger than their own cut: re-threshold
    # those rows with their own k-th value (at most one or two distinct counts occur in practice).
    need = counts.unsqueeze(1)
    short = (n_below > need).squeeze(1)
    if bool(short.any()):
        for c in torch.unique(counts[short]).tolist():
            rows_c = short & (counts == c)
            if c == 0:
                below[rows_c] = False
                n_below[rows_c] = 0
                thresh[rows_c] = float("-inf")
                continue
            t_c = torch.kthvalue(s[rows_c], c, dim=1, keepdim=True).values
            thresh[rows_c] = t_c
            b_c = s[rows_c] < t_c
            below[rows_c] = b_c
            n_below[rows_c] = b_c.sum(dim=1, keepdim=True)
    equal = s == thresh
    missing = need - n_below
    # Continuous scores rarely tie: when every row takes all of its entries equal to the threshold,
    # skip the cumulative count (an int64 tensor as large as eight copies of a bool mask).
    if torch.equal(equal.sum(dim=1, keepdim=True), missing):
        return below | equal
    take_equal = equal & (torch.cumsum(equal, dim=1) <= missing)
    return below | take_equal


def fast_unstructured_mask(scores: torch.Tensor, sparsity: float, compare: str = "layer") -> torch.Tensor:
    """Keep-mask identical to :func:`hf_prune.selection.topk.unstructured_mask`, without sorting.

    Args:
        scores: Importance scores ``[out, in]``; higher means keep.
        sparsity: Fraction of weights to remove in each group, in ``[0, 1]``.
        compare: ``"layer"`` (whole layer) or ``"row"`` (each output row, as Wanda does).

    Returns:
        Boolean keep-mask shaped like ``scores``; exactly ``round(sparsity * numel)`` entries are
        ``False`` (spread over rows as evenly as possible for ``"row"``, the first rows taking one more).

    Raises:
        ValueError: For a sparsity outside ``[0, 1]`` or an unknown ``compare`` mode.
    """
    flat, counts = prune_groups(scores, sparsity, compare)
    return (~lowest_k_mask(flat, counts)).reshape(scores.shape)

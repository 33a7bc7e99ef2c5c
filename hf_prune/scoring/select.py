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

__all__ = ["fast_unstructured_mask", "kth_smallest", "lowest_k_mask"]

#: Below this many entries torch's ``kthvalue`` is as fast as the sampled bracketing below.
_SAMPLE_MIN_NUMEL = 1 << 16
#: Entries sampled to bracket the k-th value.
_SAMPLE_SIZE = 1 << 14
#: Half-width of the bracket in quantile units: ~10 standard errors of a 16K-sample quantile, so
#: the bracket misses (and the exact fallback runs) essentially never.
_BRACKET = 0.04


def kth_smallest(values: torch.Tensor, k: int) -> torch.Tensor:
    """The exact ``k``-th smallest entry (1-based) of a 1-D tensor, faster than ``torch.kthvalue``.

    On CPU ``torch.kthvalue`` of one long row is a single-threaded quickselect (40 ms for the 2.9M
    entries of a 1024 x 2816 projection); magnitude pruning compares whole layers, so that one call
    was most of its time. Here a fixed-seed random sample brackets the k-th value between two sample
    quantiles; two vectorized comparison passes count what lies below the bracket and gather what lies
    inside it (a few percent of the entries), and ``kthvalue`` runs on that small set. The answer is
    exact: if the bracket does not contain the k-th value (verified by the counts) the full
    ``kthvalue`` runs instead.

    Args:
        values: 1-D real tensor.
        k: Rank in ``[1, values.numel()]``.

    Returns:
        A 0-d tensor equal to ``torch.kthvalue(values, k).values``.

    Raises:
        ValueError: If ``values`` is not 1-D or ``k`` is out of range.
    """
    if values.dim() != 1:
        raise ValueError(f"values must be 1-D, got shape {tuple(values.shape)}.")
    n = values.numel()
    if not 1 <= k <= n:
        raise ValueError(f"k must be in [1, {n}], got {k}.")
    if n < _SAMPLE_MIN_NUMEL:
        return torch.kthvalue(values, k).values
    gen = torch.Generator(device="cpu").manual_seed(0)
    idx = torch.randint(0, n, (_SAMPLE_SIZE,), generator=gen).to(values.device)
    sample = values[idx].sort().values
    q = k / n
    lo_i = int((q - _BRACKET) * _SAMPLE_SIZE)
    hi_i = int((q + _BRACKET) * _SAMPLE_SIZE)
    lo = sample[lo_i] if lo_i >= 0 else None
    hi = sample[hi_i] if hi_i < _SAMPLE_SIZE else None
    n_below = int(torch.count_nonzero(values < lo)) if lo is not None else 0
    if n_below < k:
        if lo is None and hi is None:
            band = None
        elif lo is None:
            band = values <= hi
        elif hi is None:
            band = values >= lo
        else:
            band = (values >= lo).logical_and_(values <= hi)
        if band is None:
            return torch.kthvalue(values, k).values
        inside = values[band]
        if n_below + inside.numel() >= k:
            return torch.kthvalue(inside, k - n_below).values
    return torch.kthvalue(values, k).values


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
    elif rows == 1:
        thresh = kth_smallest(s[0], k_max).reshape(1, 1)
    else:
        thresh = torch.kthvalue(s, k_max, dim=1, keepdim=True).values
    need = counts.unsqueeze(1)
    # Common case first (continuous scores, one count per row): the entries <= t are exactly the
    # ones wanted. count_nonzero, not sum: summing a bool tensor converts it to int64 first (10x slower).
    at_most = s <= thresh
    if torch.equal(torch.count_nonzero(at_most, dim=1), counts):
        return at_most
    del at_most
    below = s < thresh
    n_below = torch.count_nonzero(below, dim=1).unsqueeze(1)
    # For rows that need fewer than k_max entries, t may be larger than their own cut: re-threshold
    # those rows with their own k-th value (at most one or two distinct counts occur in practice).
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
            n_below[rows_c] = torch.count_nonzero(b_c, dim=1).unsqueeze(1)
    equal = s == thresh
    missing = need - n_below
    # Continuous scores rarely tie: when every row takes all of its entries equal to the threshold,
    # skip the cumulative count (an int64 tensor as large as eight copies of a bool mask).
    if torch.equal(torch.count_nonzero(equal, dim=1).unsqueeze(1), missing):
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

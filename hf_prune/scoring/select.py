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


#: Rows per chunk are chosen so a chunk holds about this many entries: ``kthvalue`` along rows makes
#: an fp32 copy *and* an int64 index tensor of its whole input, and a row count of a bool tensor
#: converts it to int64; chunking bounds those temporaries (12 bytes per entry) to ~12 MB.
_CHUNK_NUMEL = 1 << 20


def _row_chunks(rows: int, cols: int) -> list[slice]:
    step = max(1, _CHUNK_NUMEL // max(cols, 1))
    return [slice(i, min(i + step, rows)) for i in range(0, rows, step)]


def _row_kth(s: torch.Tensor, k: int) -> torch.Tensor:
    """``torch.kthvalue(s, k, dim=1, keepdim=True).values`` with bounded temporaries."""
    rows, cols = s.shape
    if rows == 1:
        return kth_smallest(s[0], k).reshape(1, 1)
    return torch.cat([torch.kthvalue(s[c], k, dim=1, keepdim=True).values for c in _row_chunks(rows, cols)])


def _row_counts(mask: torch.Tensor) -> torch.Tensor:
    """``[rows, 1]`` count of ``True`` per row, with bounded temporaries."""
    rows, cols = mask.shape
    return torch.cat([torch.count_nonzero(mask[c], dim=1) for c in _row_chunks(rows, cols)]).unsqueeze(1)


def _select_lowest(scores: torch.Tensor, counts: torch.Tensor, *, keep: bool) -> torch.Tensor:
    """The ``counts[r]`` lowest entries of each row (``keep=False``) or their complement (``keep=True``)."""
    if scores.dim() != 2:
        raise ValueError(f"scores must be 2-D [rows, cols], got shape {tuple(scores.shape)}.")
    rows, cols = scores.shape
    counts = counts.to(device=scores.device, dtype=torch.long).reshape(-1)
    if counts.numel() != rows:
        raise ValueError(f"counts must hold one count per row ({rows}), got {counts.numel()}.")
    if rows == 0 or cols == 0:
        return torch.full((rows, cols), keep, dtype=torch.bool, device=scores.device)
    if int(counts.min()) < 0 or int(counts.max()) > cols:
        raise ValueError(
            f"counts must be in [0, {cols}], got range [{int(counts.min())}, {int(counts.max())}]."
        )
    k_max = int(counts.max())
    if k_max == 0:
        return torch.full((rows, cols), keep, dtype=torch.bool, device=scores.device)
    s = scores.float()
    # The k_max-th smallest value t of a row bounds every row's cut: for a row that needs c <= k_max,
    # fewer than c entries are < t only if some entries equal to t must be taken as well; taking the
    # first (c - #(< t)) of the entries equal to t reproduces the stable sort's order exactly.
    thresh = s.max(dim=1, keepdim=True).values if k_max == cols else _row_kth(s, k_max)
    total = int(counts.sum())
    if not bool(torch.isnan(thresh).any()):
        # Common case first (continuous scores, one count per row): the entries <= t are exactly the
        # ones wanted. Every row has at least counts[r] entries <= its t, so the totals agreeing
        # proves every row agrees: one whole-tensor count_nonzero instead of per-row int64 sums.
        if keep:
            above = s > thresh
            if int(torch.count_nonzero(above)) == rows * cols - total:
                return above
            del above
        else:
            at_most = s <= thresh
            if int(torch.count_nonzero(at_most)) == total:
                return at_most
            del at_most
    if bool(torch.isnan(s).any()):
        # Only here: a NaN never prevents the fast path above from being exact (NaN ranks last,
        # as in a sort), but the tie-breaking below compares against the threshold.
        raise ValueError(
            "scores contain NaN where the selection needs exact tie-breaking; check the weights and "
            "calibration statistics for NaN (e.g. an fp16 overflow) before pruning."
        )
    need = counts.unsqueeze(1)
    below = s < thresh
    n_below = _row_counts(below)
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
            t_c = _row_kth(s[rows_c], c)
            thresh[rows_c] = t_c
            b_c = s[rows_c] < t_c
            below[rows_c] = b_c
            n_below[rows_c] = _row_counts(b_c)
    equal = s == thresh
    missing = need - n_below
    # Continuous scores rarely tie: when every row takes all of its entries equal to the threshold,
    # skip the cumulative count (an int64 tensor as large as eight copies of a bool mask).
    if not torch.equal(_row_counts(equal), missing):
        equal &= torch.cumsum(equal, dim=1) <= missing
    lowest = below.logical_or_(equal)
    return lowest.logical_not_() if keep else lowest


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
    return _select_lowest(scores, counts, keep=False)


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
    return _select_lowest(flat, counts, keep=True).reshape(scores.shape)

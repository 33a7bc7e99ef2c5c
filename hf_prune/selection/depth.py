"""Which blocks to remove, given per-block importance scores: pure functions, no model.

Selection modes (exactly one): a number of blocks, a ratio of the stack, or a score threshold. Blocks
may be protected (the first and last two by default, as the depth-pruning seed never removes them),
and the removed blocks may be forced into one contiguous run, as PruneMe does.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

__all__ = ["candidate_blocks", "resolve_count", "select_blocks"]

RunCost = Callable[[int, int], float]


def candidate_blocks(
    num_blocks: int, protect_first: int, protect_last: int, protect: Sequence[int] = ()
) -> list[int]:
    """Return the removable block indices.

    Args:
        num_blocks: Blocks in the stack.
        protect_first: The first this many blocks are never removed.
        protect_last: The last this many blocks are never removed.
        protect: Further block indices that are never removed.

    Raises:
        ValueError: If an index in ``protect`` is out of range.
    """
    bad = [p for p in protect if not 0 <= int(p) < num_blocks]
    if bad:
        raise ValueError(f"protect holds block indices {bad} outside [0, {num_blocks}) of this stack.")
    fixed = set(range(min(protect_first, num_blocks)))
    fixed |= set(range(max(num_blocks - protect_last, 0), num_blocks))
    fixed |= {int(p) for p in protect}
    return [i for i in range(num_blocks) if i not in fixed]


def resolve_count(num_blocks: int, num_layers: int | None, ratio: float | None) -> int | None:
    """Turn ``num_layers`` / ``ratio`` into a block count (``None`` in threshold mode).

    Args:
        num_blocks: Blocks in the stack.
        num_layers: Blocks to remove, or ``None``.
        ratio: Fraction of the stack to remove (rounded to the nearest count, at least one), or ``None``.

    Raises:
        ValueError: If the count would remove every block.
    """
    if num_layers is not None:
        count = int(num_layers)
        if count >= num_blocks:
            raise ValueError(
                f"num_layers={count} must be smaller than the stack's {num_blocks} blocks: at least one "
                f"block has to stay. Use num_layers <= {num_blocks - 1}."
            )
        return count
    if ratio is not None:
        count = max(1, round(ratio * num_blocks))
        if count >= num_blocks:
            raise ValueError(
                f"ratio={ratio} of {num_blocks} blocks removes {count}, i.e. every block; use a ratio below "
                f"{(num_blocks - 0.5) / num_blocks:.3f}."
            )
        return count
    return None


def _windows(candidates: Sequence[int], n: int) -> list[int]:
    allowed = set(candidates)
    return [s for s in candidates if all(s + k in allowed for k in range(n))]


def select_blocks(
    scores: Sequence[float],
    *,
    candidates: Sequence[int],
    count: int | None = None,
    threshold: float | None = None,
    contiguous: bool = False,
    run_cost: RunCost | None = None,
) -> list[int]:
    """Choose the blocks to remove.

    Args:
        scores: Importance per block (low: removable).
        candidates: Removable block indices (see :func:`candidate_blocks`).
        count: Remove exactly this many blocks.
        threshold: Remove every candidate whose score is at most this (contiguous: the longest run whose
            cost is at most this).
        contiguous: Remove one contiguous run of candidates.
        run_cost: ``f(start, n)`` cost of removing ``n`` blocks from ``start`` (default: the sum of
            their scores); angular distance passes its pairwise distance here.

    Returns:
        The selected block indices, sorted (may be empty in threshold mode).

    Raises:
        ValueError: If both or neither of ``count`` / ``threshold`` are given, or the protected blocks
            leave too few candidates.
    """
    if (count is None) == (threshold is None):
        raise ValueError("Give exactly one of count= or threshold= to select_blocks.")
    if count is not None and count < 1:
        raise ValueError(f"count must be >= 1, got {count}.")
    cands = sorted(int(c) for c in candidates)

    def cost(start: int, n: int) -> float:
        return run_cost(start, n) if run_cost is not None else float(sum(scores[start : start + n]))

    if not contiguous:
        if count is not None:
            if count > len(cands):
                raise ValueError(
                    f"Cannot remove {count} blocks: only {len(cands)} are removable ({cands}) after "
                    "protect_first / protect_last / protect. Lower the count or protect fewer blocks."
                )
            # Stable on ties: the lower index goes first, so results are reproducible.
            return sorted(sorted(cands, key=lambda i: (scores[i], i))[:count])
        return [i for i in cands if scores[i] <= threshold]

    if count is not None:
        starts = _windows(cands, count)
        if not starts:
            raise ValueError(
                f"No contiguous run of {count} removable blocks exists among {cands} (protected blocks split "
                "the stack). Lower the count, protect fewer blocks or set contiguous=False."
            )
        best = min(starts, key=lambda s: (cost(s, count), s))
        return list(range(best, best + count))
    for n in range(len(cands), 0, -1):
        fits = [s for s in _windows(cands, n) if cost(s, n) <= threshold]
        if fits:
            best = min(fits, key=lambda s: (cost(s, n), s))
            return list(range(best, best + n))
    return []

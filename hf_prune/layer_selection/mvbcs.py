"""Exact Multi-Verifier Budgeted Contiguous Selection (MV-BCS).

Problem: ``L`` layers carry a benefit ``values[l] >= 0`` and a cost ``costs[l] > 0``; ``M`` verifiers carry
a budget ``budgets[i] >= 0``. Give every verifier one contiguous run of layers (possibly empty) so that
the runs are pairwise disjoint and each run's cost fits its verifier's budget, maximizing the total
benefit of the layers covered.

Two variants:

* ``order="fixed"`` -- the runs appear along the layer axis in verifier order (verifier ``i``'s run
  lies entirely before verifier ``i + 1``'s). Exact dynamic programme in ``O(M * L)`` window steps.
* ``order="any"`` -- the verifiers may appear in any order. Exact dynamic programme over subsets of
  verifiers in ``O(2^M * M * L)``; practical for ``M <= MAX_ANY_ORDER_VERIFIERS``.

The recurrence (fixed order). With prefix sums ``P`` of the values and ``C`` of the costs, let ``F[i][j]``
be the best benefit that verifiers ``0..i-1`` achieve within layers ``[0, j)``. Then::

    F[i+1][j] = max(F[i+1][j-1],                                     # layer j-1 unused
                    max_{s in [lo_i(j), j]} F[i][s] - P[s] + P[j])   # verifier i takes [s, j)

where ``lo_i(j)`` is the first ``s`` with ``C[j] - C[s] <= budgets[i]`` (``s = j`` is the empty run). The
first term only re-applies a running maximum, so a row is ``F[i+1] = cummax(W_i + P)`` with ``W_i[j]`` the
maximum of ``H = F[i] - P`` over the window ``[lo_i(j), j]``. Both window ends move monotonically right
(costs are positive), which is what a monotone deque exploits one step at a time. Here the same
sliding-window maximum is computed with whole-array numpy passes (van Herk / Gil-Werman blocks
generalized to variable windows): checkpoints are placed so that every window holds exactly one, and the
window maximum is ``max(suffix-max up to the checkpoint, prefix-max from it)``, both of which are
*segmented* running maxima. A segmented running maximum is a single ``numpy.maximum.accumulate`` over
complex numbers ``segment + 1j * value``, because numpy orders complex numbers lexicographically. The DP
passes are linear in ``L``; the window starts ``lo_i`` come from one vectorized binary search
(``numpy.searchsorted``) per verifier, and the only Python-level loop walks the checkpoints, which
depend on the costs and budgets alone. L = 100,000 and M = 16 take about 0.1-0.2 s on one CPU core
(``benchmarks/mvbcs_scale.py``).

Cost arithmetic is exact when every cost is an integer (parameter counts): prefix sums are then int64
and a budget ``b`` is equivalent to ``floor(b)``. Otherwise costs are summed in float64 and a run is
feasible when ``C[j] - C[s] <= budget + 8 * eps * C[L]``: the slack (about 2e-15 of the total cost)
absorbs the rounding of prefix sums, so a budget written as exactly some run's cost admits that run.

Tie-breaking (deterministic; the same input always gives the same assignment): the assignment is
reconstructed from the last verifier (in layer order for ``"fixed"``) to the first. Each step picks,
among the choices that keep the optimum, the run that *ends earliest*, then the one that *starts
latest* (the shortest run; an empty run, reported as ``None``, whenever the verifier adds nothing), and
for ``order="any"`` the lowest verifier index. Consequently a verifier that can add no benefit gets
``None`` and zero-benefit layers are not attached to either end of a run.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "MAX_ANY_ORDER_CELLS",
    "MAX_ANY_ORDER_VERIFIERS",
    "LayerSelectionOptimizer",
    "SelectionResult",
    "solve_mvbcs",
]

#: Largest number of verifiers accepted with ``order="any"``. The subset DP does ``M * 2^(M-1)`` window
#: passes of length ``L``: at ``M = 12`` that is 24,576 passes (about 0.1 s for 200 layers and 3 s for
#: 3,000 on one CPU core), and every extra verifier more than doubles it.
MAX_ANY_ORDER_VERIFIERS = 12

#: Largest ``2^M * (L + 1)`` DP table kept for ``order="any"``: 2^26 float64 cells = 512 MiB.
MAX_ANY_ORDER_CELLS = 2**26

_ORDERS = ("fixed", "any")

# Exact int64 prefix sums of integer costs need the total to stay below float64's integer range, so that
# converting the inputs (which arrive as floats) is lossless.
_EXACT_INT_LIMIT = 2**53

#: Relative slack (times the total cost) granted to float budgets; see :func:`solve_mvbcs`.
_FLOAT_SLACK = 8 * float(np.finfo(np.float64).eps)

Assignment = tuple[int, int] | None


# --------------------------------------------------------------------------------------------- validation
def _as_vector(name: str, data: Any) -> np.ndarray:
    try:
        arr = np.asarray(data, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must be a 1-D sequence of numbers: {err}") from None
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got an array of shape {arr.shape}.")
    return arr


def _first_bad(mask: np.ndarray) -> int:
    return int(np.flatnonzero(mask)[0])


def _validate(values: Any, costs: Any, budgets: Any, order: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Convert and check the inputs; every problem is a ValueError naming the argument and the value."""
    if order not in _ORDERS:
        raise ValueError(f"order must be one of {_ORDERS}, got {order!r}.")
    v = _as_vector("values", values)
    c = _as_vector("costs", costs)
    b = _as_vector("budgets", budgets)
    if v.shape[0] != c.shape[0]:
        raise ValueError(
            f"values and costs must have the same length (one entry per layer), got {v.shape[0]} values "
            f"and {c.shape[0]} costs."
        )
    if b.shape[0] == 0:
        raise ValueError("budgets must contain at least one verifier budget, got an empty sequence.")
    bad = ~np.isfinite(v) | (v < 0)
    if bad.any():
        k = _first_bad(bad)
        raise ValueError(f"values must be finite and >= 0, but values[{k}] = {float(v[k])!r}.")
    bad = ~np.isfinite(c) | (c <= 0)
    if bad.any():
        k = _first_bad(bad)
        raise ValueError(f"costs must be finite and > 0, but costs[{k}] = {float(c[k])!r}.")
    # +inf is a legitimate "unlimited" budget; NaN and negatives are not.
    bad = np.isnan(b) | (b < 0)
    if bad.any():
        k = _first_bad(bad)
        raise ValueError(f"budgets must be >= 0 (inf allowed), but budgets[{k}] = {float(b[k])!r}.")
    return v, c, b


# ------------------------------------------------------------------------------------ window machinery
@dataclass(frozen=True)
class _Window:
    """Precomputed sliding-window structure of one budget (depends on costs and budget only).

    ``lo[j]`` is the first feasible start for a run ending before boundary ``j``; ``pre_key`` / ``suf_key``
    are the segment labels of the prefix-max and (reversed) suffix-max passes. ``trivial`` marks a budget
    below every cost, where the only window is ``[j, j]``.
    """

    lo: np.ndarray
    pre_key: np.ndarray
    suf_key_rev: np.ndarray
    trivial: bool


def _prefix_costs(costs: np.ndarray) -> tuple[np.ndarray, bool]:
    integral = bool(np.all(costs == np.floor(costs))) and float(costs.sum()) < _EXACT_INT_LIMIT
    if integral:
        return np.concatenate(([0], np.cumsum(costs.astype(np.int64)))), True
    return np.concatenate(([0.0], np.cumsum(costs))), False


def _effective_budget(budget: float, total: float, integral: bool) -> float | int:
    # Any budget at or above the total cost is equivalent to the total; clipping keeps inf out of the
    # arithmetic, and integer costs make floor(budget) exactly equivalent to budget.
    b = min(budget, total)
    if integral:
        return math.floor(b)
    # Prefix-sum differences carry rounding error of a few ulps of the total; without slack a budget set
    # to exactly a run's cost (a common way to write budgets) could reject that very run.
    return b + _FLOAT_SLACK * total


def _window(prefix: np.ndarray, budget: float | int) -> _Window:
    n = prefix.shape[0]  # L + 1 boundaries
    lo = np.searchsorted(prefix, prefix - budget, side="left")
    idx = np.arange(n)
    widths = idx - lo
    if not widths.any():
        return _Window(lo, np.empty(0), np.empty(0), trivial=True)
    # Greedy checkpoints: every window [lo[j], j] must contain exactly one checkpoint. Start at 0; the
    # next checkpoint is the first j whose window no longer reaches back to the current one. Their number
    # is about L / (mean window width), so wide windows take a few scalar searches and narrow ones one
    # vectorized search over all positions.
    checkpoints = []
    c = 0
    if widths.mean() >= 32:
        while c < n:
            checkpoints.append(c)
            c = int(np.searchsorted(lo, c, side="right"))
    else:
        nxt = np.searchsorted(lo, idx, side="right").tolist()
        while c < n:
            checkpoints.append(c)
            c = nxt[c]
    is_cp = np.zeros(n, dtype=np.int64)
    is_cp[checkpoints] = 1
    # Prefix segment k = [cps[k], cps[k+1]) (label: checkpoints <= j, minus one); suffix segment
    # k = (cps[k-1], cps[k]] (label: checkpoints < j); positions after the last checkpoint form one more
    # suffix segment that is never queried.
    seen = np.cumsum(is_cp)
    pre_seg = seen - 1
    suf_seg = seen - is_cp
    # Reversed, the suffix labels must be non-decreasing, hence the negation.
    return _Window(lo, pre_seg.astype(np.float64), (-suf_seg[::-1]).astype(np.float64), trivial=False)


def _windows(prefix: np.ndarray, budgets: list[float | int]) -> list[_Window]:
    # Verifiers with equal budgets share one (read-only) window structure.
    cache: dict[float | int, _Window] = {}
    for b in budgets:
        if b not in cache:
            cache[b] = _window(prefix, b)
    return [cache[b] for b in budgets]


def _window_max(h: np.ndarray, win: _Window) -> np.ndarray:
    """``out[..., j] = max(h[..., lo[j] : j + 1])`` along the last axis, in O(size) numpy work."""
    if win.trivial:
        return h
    # numpy compares complex numbers lexicographically, so accumulating (segment, value) pairs restarts
    # the running maximum at every segment boundary: a segmented cummax in one C loop, exact in value.
    pre = np.maximum.accumulate(win.pre_key + 1j * h, axis=-1).imag
    suf = np.maximum.accumulate(win.suf_key_rev + 1j * h[..., ::-1], axis=-1)[..., ::-1].imag
    return np.maximum(suf[..., win.lo], pre)


# ---------------------------------------------------------------------------------------- the solvers
def _reconstruct_run(
    f_prev: np.ndarray, p: np.ndarray, lo: np.ndarray, j_end: int, target: float
) -> int | None:
    """Latest start ``s`` in ``[lo[j_end], j_end]`` whose candidate equals ``target`` (None if none)."""
    s0 = int(lo[j_end])
    cand = (f_prev[s0 : j_end + 1] - p[s0 : j_end + 1]) + p[j_end]
    hits = np.flatnonzero(cand == target)
    return None if hits.size == 0 else s0 + int(hits[-1])


def _solve_fixed(v: np.ndarray, prefix: np.ndarray, budgets: list[float | int]) -> list[Assignment]:
    n_layers = v.shape[0]
    p = np.concatenate(([0.0], np.cumsum(v)))
    windows = _windows(prefix, budgets)
    m = len(budgets)
    f = np.zeros((m + 1, n_layers + 1))
    g = np.zeros((m, n_layers + 1))
    for i, win in enumerate(windows):
        g[i] = _window_max(f[i] - p, win) + p
        f[i + 1] = np.maximum.accumulate(g[i])

    assignments: list[Assignment] = [None] * m
    j = n_layers
    for i in range(m - 1, -1, -1):
        target = f[i + 1, j]
        # Earliest end that attains the optimum (it exists: f[i+1, j] is the running max of g[i, :j+1]).
        j_end = int(np.argmax(g[i, : j + 1] == target))
        s = _reconstruct_run(f[i], p, windows[i].lo, j_end, target)
        if s is None:  # pragma: no cover - unreachable: g[i, j_end] is built from exactly these candidates
            raise RuntimeError("MV-BCS reconstruction failed; please report this input.")
        assignments[i] = None if s == j_end else (s, j_end - 1)
        j = s
    return assignments


def _solve_any(v: np.ndarray, prefix: np.ndarray, budgets: list[float | int]) -> list[Assignment]:
    n_layers = v.shape[0]
    m = len(budgets)
    p = np.concatenate(([0.0], np.cumsum(v)))
    windows = _windows(prefix, budgets)
    n_sets = 1 << m
    popcount = np.array([bin(s).count("1") for s in range(n_sets)])
    f = np.zeros((n_sets, n_layers + 1))
    for k in range(1, m + 1):
        level = np.flatnonzero(popcount == k)
        g = np.full((level.shape[0], n_layers + 1), -np.inf)
        pos = {int(s): r for r, s in enumerate(level)}
        for vi in range(m):
            bit = 1 << vi
            sets = level[(level & bit) != 0]
            rows = np.array([pos[int(s)] for s in sets])
            # One batched window pass for every subset of this size that contains verifier vi.
            cand = _window_max(f[sets ^ bit] - p, windows[vi]) + p
            g[rows] = np.maximum(g[rows], cand)
        f[level] = np.maximum.accumulate(g, axis=1)

    assignments: list[Assignment] = [None] * m
    s_set, j = n_sets - 1, n_layers
    while s_set:
        target = f[s_set, j]
        best: tuple[int, int, int] | None = None  # (end, -start, verifier): smallest wins
        for vi in range(m):
            bit = 1 << vi
            if not s_set & bit:
                continue
            g_v = _window_max(f[s_set ^ bit] - p, windows[vi])[: j + 1] + p[: j + 1]
            hits = np.flatnonzero(g_v == target)
            if hits.size == 0:
                continue
            j_end = int(hits[0])
            s = _reconstruct_run(f[s_set ^ bit], p, windows[vi].lo, j_end, target)
            if s is not None and (best is None or (j_end, -s, vi) < best):
                best = (j_end, -s, vi)
        if best is None:  # pragma: no cover - unreachable: target is attained by some verifier
            raise RuntimeError("MV-BCS reconstruction failed; please report this input.")
        j_end, neg_s, vi = best
        s = -neg_s
        assignments[vi] = None if s == j_end else (s, j_end - 1)
        s_set ^= 1 << vi
        j = s
    return assignments


def solve_mvbcs(
    values: Sequence[float] | np.ndarray,
    costs: Sequence[float] | np.ndarray,
    budgets: Sequence[float] | np.ndarray,
    order: str = "fixed",
) -> tuple[float, list[tuple[int, int] | None]]:
    """Solve MV-BCS exactly.

    Args:
        values: Benefit of each layer (``>= 0``, finite), length ``L``.
        costs: Cost of each layer (``> 0``, finite; usually a parameter count), length ``L``.
        budgets: One budget per verifier (``>= 0``; ``inf`` means unlimited), length ``M >= 1``.
        order: ``"fixed"`` (runs appear in verifier order along the layers, ``O(M * L)``) or ``"any"``
            (any order, subset DP, ``M <= MAX_ANY_ORDER_VERIFIERS``).

    Returns:
        ``(benefit, assignments)``: the optimal total benefit (summed over the chosen layers) and, per
        verifier, the inclusive ``(start, end)`` layer indices of its run or ``None`` for an empty run.
        Ties are broken as described in the module docstring.

    Raises:
        ValueError: For invalid inputs (naming the argument and the offending entry), or for
            ``order="any"`` with too many verifiers or too large a table.
    """
    v, c, b = _validate(values, costs, budgets, order)
    m, n_layers = b.shape[0], v.shape[0]
    if order == "any":
        if m > MAX_ANY_ORDER_VERIFIERS:
            raise ValueError(
                f"order='any' supports at most {MAX_ANY_ORDER_VERIFIERS} verifiers (its DP is exponential "
                f"in M), got {m} budgets; use order='fixed' or fewer verifiers."
            )
        if (1 << m) * (n_layers + 1) > MAX_ANY_ORDER_CELLS:
            raise ValueError(
                f"order='any' with {m} verifiers and {n_layers} layers needs a table of "
                f"{(1 << m) * (n_layers + 1):,} cells (limit {MAX_ANY_ORDER_CELLS:,}); use order='fixed', "
                "fewer verifiers or fewer layers."
            )
    if n_layers == 0:
        return 0.0, [None] * m
    prefix, integral = _prefix_costs(c)
    total = prefix[-1]
    eff = [_effective_budget(float(x), float(total), integral) for x in b]
    assignments = _solve_fixed(v, prefix, eff) if order == "fixed" else _solve_any(v, prefix, eff)
    benefit = math.fsum(x for a in assignments if a is not None for x in v[a[0] : a[1] + 1].tolist())
    return benefit, assignments


# -------------------------------------------------------------------------------------- object API
@dataclass
class SelectionResult:
    """Outcome of an MV-BCS solve.

    Args:
        benefit: Total benefit of the selected layers.
        assignments: Per verifier, inclusive ``(start, end)`` layer indices or ``None``.
        total_cost: Per verifier, the summed cost of its run (0 for an empty run).
        budgets: The verifiers' budgets as given.
        verifier_benefits: Per verifier, the summed benefit of its run.
        order: ``"fixed"`` or ``"any"``.
        num_layers: Number of layers ``L``.
        layer_names: Optional layer names, used by :meth:`to_dict` to name each run's layers.
    """

    benefit: float
    assignments: list[tuple[int, int] | None]
    total_cost: list[float]
    budgets: list[float]
    verifier_benefits: list[float]
    order: str
    num_layers: int
    layer_names: list[str] | None = field(default=None, repr=False)

    @property
    def selected_layers(self) -> list[int]:
        """Sorted indices of every layer assigned to some verifier."""
        out: list[int] = []
        for a in self.assignments:
            if a is not None:
                out.extend(range(a[0], a[1] + 1))
        return sorted(out)

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serializable description (one entry per verifier plus totals).

        Returns:
            A dict with ``benefit``, ``order``, ``num_layers``, ``num_selected_layers`` and ``verifiers``
            (each with ``index``, ``budget``, ``assignment``, ``start``, ``end``, ``num_layers``,
            ``total_cost``, ``benefit`` and, when names are known, ``layer_names``).
        """
        verifiers = []
        for i, a in enumerate(self.assignments):
            entry: dict[str, Any] = {
                "index": i,
                # JSON has no infinity; an unlimited budget is written as null.
                "budget": None if math.isinf(self.budgets[i]) else self.budgets[i],
                "assignment": None if a is None else [a[0], a[1]],
                "start": None if a is None else a[0],
                "end": None if a is None else a[1],
                "num_layers": 0 if a is None else a[1] - a[0] + 1,
                "total_cost": self.total_cost[i],
                "benefit": self.verifier_benefits[i],
            }
            if self.layer_names is not None:
                entry["layer_names"] = [] if a is None else self.layer_names[a[0] : a[1] + 1]
            verifiers.append(entry)
        return {
            "benefit": self.benefit,
            "order": self.order,
            "num_layers": self.num_layers,
            "num_verifiers": len(self.assignments),
            "num_selected_layers": len(self.selected_layers),
            "verifiers": verifiers,
        }


class LayerSelectionOptimizer:
    """Object wrapper around :func:`solve_mvbcs` that also reports costs and per-verifier benefits.

    Args:
        values: Per-layer benefit (e.g. ``LayerScores.significance``), ``>= 0``.
        costs: Per-layer cost (e.g. parameter counts), ``> 0``.
        budgets: One budget per verifier, ``>= 0``.
        order: ``"fixed"`` or ``"any"`` (see :func:`solve_mvbcs`).
        layer_names: Optional names of the layers, carried into the result.

    Raises:
        ValueError: If the inputs are invalid (checked at construction).
    """

    def __init__(
        self,
        values: Sequence[float] | np.ndarray,
        costs: Sequence[float] | np.ndarray,
        budgets: Sequence[float] | np.ndarray,
        order: str = "fixed",
        layer_names: Sequence[str] | None = None,
    ) -> None:
        self.values, self.costs, self.budgets = _validate(values, costs, budgets, order)
        self.order = order
        if layer_names is not None and len(layer_names) != self.values.shape[0]:
            raise ValueError(
                f"layer_names has {len(layer_names)} entries but there are {self.values.shape[0]} layers."
            )
        self.layer_names = None if layer_names is None else [str(n) for n in layer_names]

    @classmethod
    def from_layer_scores(
        cls, scores: Any, budgets: Sequence[float] | np.ndarray, order: str = "fixed"
    ) -> LayerSelectionOptimizer:
        """Build an optimizer from a :class:`~hf_prune.layer_selection.scores.LayerScores`.

        Args:
            scores: The layer scores (significance is the benefit, parameter count the cost).
            budgets: One budget (in parameters) per verifier.
            order: ``"fixed"`` or ``"any"``.

        Returns:
            The optimizer.
        """
        return cls(
            [layer.significance_score for layer in scores.layers],
            [layer.num_parameters for layer in scores.layers],
            budgets,
            order=order,
            layer_names=[layer.name for layer in scores.layers],
        )

    def solve(self) -> SelectionResult:
        """Solve the instance exactly.

        Returns:
            The :class:`SelectionResult`.
        """
        benefit, assignments = solve_mvbcs(self.values, self.costs, self.budgets, order=self.order)
        costs, benefits = [], []
        for a in assignments:
            if a is None:
                costs.append(0.0)
                benefits.append(0.0)
            else:
                costs.append(math.fsum(self.costs[a[0] : a[1] + 1].tolist()))
                benefits.append(math.fsum(self.values[a[0] : a[1] + 1].tolist()))
        return SelectionResult(
            benefit=benefit,
            assignments=assignments,
            total_cost=costs,
            budgets=[float(b) for b in self.budgets],
            verifier_benefits=benefits,
            order=self.order,
            num_layers=int(self.values.shape[0]),
            layer_names=self.layer_names,
        )

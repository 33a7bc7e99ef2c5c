"""MV-BCS optimizer: exactness against exhaustive search and an integer programme, validation, ties."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from hf_prune.layer_selection.mvbcs import (
    MAX_ANY_ORDER_VERIFIERS,
    LayerSelectionOptimizer,
    SelectionResult,
    solve_mvbcs,
)


# ------------------------------------------------------------------------------------------ references
def brute_force(values, costs, budgets, order):
    """Enumerate every assignment (each exactly once) and return the best benefit.

    Walks the layers left to right: a layer is either skipped or starts a run [pos, e] given to a verifier
    not used yet (for the fixed order: a verifier after every verifier used so far).
    """
    n, m = len(values), len(budgets)
    slack = 8 * np.finfo(float).eps * sum(costs)  # the solver's documented float slack
    best = 0.0

    def rec(pos, used, last, acc):
        nonlocal best
        best = max(best, acc)
        if pos >= n:
            return
        rec(pos + 1, used, last, acc)
        for v in range(m):
            if used >> v & 1 or (order == "fixed" and v <= last):
                continue
            cost = 0.0
            gain = 0.0
            for e in range(pos, n):
                cost += costs[e]
                gain += values[e]
                if cost > budgets[v] + slack:
                    break
                rec(e + 1, used | (1 << v), v, acc + gain)

    rec(0, 0, -1, 0.0)
    return best


def check_feasible(values, costs, budgets, order, benefit, assignments):
    assert len(assignments) == len(budgets)
    taken = []
    for v, a in enumerate(assignments):
        if a is None:
            continue
        s, e = a
        assert 0 <= s <= e < len(values), a
        assert sum(costs[s : e + 1]) <= budgets[v] + 8 * np.finfo(float).eps * sum(costs), (v, a)
        taken.append((s, e, v))
    spans = sorted(taken)
    for (_, e1, _), (s2, _, _) in itertools.pairwise(spans):
        assert e1 < s2, f"runs overlap: {spans}"
    if order == "fixed":
        # sorted by position, the verifier indices must increase
        assert [v for _, _, v in spans] == sorted(v for _, _, v in spans)
    achieved = sum(sum(values[s : e + 1]) for s, e, _ in spans)
    assert math.isclose(achieved, benefit, rel_tol=1e-9, abs_tol=1e-9)


def random_instance(rng, max_layers=12, max_verifiers=4):
    """A random instance plus the set of edge cases it contains."""
    n = int(rng.integers(0, max_layers + 1))
    m = int(rng.integers(1, max_verifiers + 1))
    tags = set()
    kind = rng.integers(0, 4)
    if kind == 0:
        values = rng.integers(0, 6, n).astype(float)  # many exact ties and zeros
    elif kind == 1:
        values = np.full(n, float(rng.integers(0, 3)))  # all equal (maybe all zero)
        tags.add("all_equal")
    else:
        values = rng.random(n) * 10
    costs = rng.integers(1, 10, n).astype(float) if rng.random() < 0.7 else rng.random(n) * 9 + 0.1
    total = float(costs.sum())
    budgets = []
    for _ in range(m):
        r = rng.random()
        if r < 0.15:
            budgets.append(0.0)
            tags.add("zero_budget")
        elif r < 0.4 and n:
            s = int(rng.integers(0, n))
            e = int(rng.integers(s, n))
            budgets.append(sum(costs[s : e + 1].tolist()))  # exactly a run's cost: boundary case
            tags.add("exact_budget")
        else:
            budgets.append(float(rng.random() * total * 0.6))
    if n and rng.random() < 0.2:
        costs[int(rng.integers(0, n))] = max(budgets) + 1.0  # a layer no verifier can take
        tags.add("too_costly")
    return values.tolist(), costs.tolist(), budgets, tags


@pytest.mark.parametrize("order", ["fixed", "any"])
def test_matches_exhaustive_search_on_random_instances(order):
    rng = np.random.default_rng(1234 if order == "fixed" else 4321)
    n_instances = 1100  # per order: 2,200 in total
    seen = dict.fromkeys(("all_equal", "zero_budget", "exact_budget", "too_costly"), 0)
    for _ in range(n_instances):
        values, costs, budgets, tags = random_instance(rng)
        for tag in tags:
            seen[tag] += 1
        benefit, assignments = solve_mvbcs(values, costs, budgets, order=order)
        expected = brute_force(values, costs, budgets, order)
        assert math.isclose(benefit, expected, rel_tol=1e-9, abs_tol=1e-9), (values, costs, budgets)
        check_feasible(values, costs, budgets, order, benefit, assignments)
    # every edge case was exercised many times
    assert min(seen.values()) >= 100, seen


def test_any_order_never_worse_than_fixed_and_sometimes_better():
    rng = np.random.default_rng(7)
    strictly_better = 0
    for _ in range(300):
        values, costs, budgets, _ = random_instance(rng, max_layers=10, max_verifiers=3)
        fixed, _ = solve_mvbcs(values, costs, budgets, order="fixed")
        anyo, _ = solve_mvbcs(values, costs, budgets, order="any")
        assert anyo >= fixed - 1e-9
        strictly_better += anyo > fixed + 1e-9
    assert strictly_better > 0


def test_known_instance_where_order_matters():
    # The small verifier is listed first, the large one second, but the best pair of layers comes first:
    # only order="any" may give it to the large verifier.
    values = [10, 10, 0, 5]
    costs = [1, 1, 1, 1]
    budgets = [1, 2]
    assert solve_mvbcs(values, costs, budgets, order="fixed") == (20.0, [(0, 0), (1, 1)])
    assert solve_mvbcs(values, costs, budgets, order="any") == (25.0, [(3, 3), (0, 1)])


# --------------------------------------------------------------------------------------- integer programme
def milp_optimum(values, costs, budgets):
    """Fixed-order MV-BCS as a MILP solved by HiGHS (``scipy.optimize.milp``).

    Binary x[r] selects run r = (verifier v, first layer s, last layer e) among the runs within v's budget;
    binary zone variables a[v, t] = "layer t lies in the zone of a verifier <= v" impose the order: zones
    are prefixes (a non-increasing in t), nested in v, and a run of v must lie in zone v.
    """
    from scipy.optimize import Bounds, LinearConstraint, milp
    from scipy.sparse import coo_matrix

    n, m = len(values), len(budgets)
    pc = np.concatenate(([0], np.cumsum(costs)))
    pv = np.concatenate(([0.0], np.cumsum(values)))
    runs = [
        (v, s, e) for v in range(m) for s in range(n) for e in range(s, n) if pc[e + 1] - pc[s] <= budgets[v]
    ]
    k = len(runs)
    if k == 0:
        return 0.0
    n_var = k + m * n  # runs, then zone variables a[v, t] at k + v * n + t

    def a(v, t):
        return k + v * n + t

    rows, cols, vals, ub = [], [], [], []

    def add(entries, bound):
        r = len(ub)
        for c, val in entries:
            rows.append(r)
            cols.append(c)
            vals.append(val)
        ub.append(bound)

    for v in range(m):  # one run per verifier
        add([(i, 1.0) for i, run in enumerate(runs) if run[0] == v], 1)
    for t in range(n):  # each layer covered at most once
        add([(i, 1.0) for i, (_, s, e) in enumerate(runs) if s <= t <= e], 1)
    for i, (v, s, e) in enumerate(runs):  # the run lies in zone v: a[v, e] = 1 and a[v - 1, s] = 0
        add([(i, 1.0), (a(v, e), -1.0)], 0)
        if v > 0:
            add([(i, 1.0), (a(v - 1, s), 1.0)], 1)
    for v in range(m):
        for t in range(n - 1):  # zones are prefixes
            add([(a(v, t + 1), 1.0), (a(v, t), -1.0)], 0)
        if v + 1 < m:
            for t in range(n):  # and nested
                add([(a(v, t), 1.0), (a(v + 1, t), -1.0)], 0)
    matrix = coo_matrix((vals, (rows, cols)), shape=(len(ub), n_var)).tocsr()
    obj = np.zeros(n_var)
    obj[:k] = [-(pv[e + 1] - pv[s]) for _, s, e in runs]
    res = milp(
        obj,
        constraints=LinearConstraint(matrix, -np.inf, np.array(ub, dtype=float)),
        integrality=np.ones(n_var),
        bounds=Bounds(0, 1),
    )
    assert res.success, res.message
    return -res.fun


def test_matches_milp_on_larger_instances():
    rng = np.random.default_rng(99)
    # Budgets stay small so that HiGHS proves optimality in about a second per instance.
    for n, m, lo, hi in [(40, 3, 0.03, 0.12), (120, 3, 0.02, 0.06), (200, 2, 0.01, 0.04)]:
        values = rng.random(n)
        costs = rng.integers(1, 20, n)
        budgets = (rng.uniform(lo, hi, m) * costs.sum()).round()
        benefit, assignments = solve_mvbcs(values, costs, budgets)
        expected = milp_optimum(values.tolist(), costs.tolist(), budgets.tolist())
        assert math.isclose(benefit, expected, rel_tol=1e-7), (n, m)
        check_feasible(values.tolist(), costs.tolist(), budgets.tolist(), "fixed", benefit, assignments)


def test_matches_plain_deque_dp_on_long_instances():
    """The vectorized solver agrees with a textbook monotone-deque DP on long random instances."""
    from collections import deque

    def deque_dp(values, costs, budgets):
        n = len(values)
        p = np.concatenate(([0.0], np.cumsum(values))).tolist()
        c = np.concatenate(([0], np.cumsum(costs))).tolist()
        f = [0.0] * (n + 1)
        for b in budgets:
            g = [0.0] * (n + 1)
            dq, lo = deque(), 0
            for j in range(n + 1):
                while dq and f[dq[-1]] - p[dq[-1]] <= f[j] - p[j]:
                    dq.pop()
                dq.append(j)
                while c[j] - c[lo] > b:
                    lo += 1
                while dq[0] < lo:
                    dq.popleft()
                best = f[dq[0]] - p[dq[0]] + p[j]
                g[j] = max(best, g[j - 1]) if j else best
            f = g
        return f[n]

    rng = np.random.default_rng(5)
    # wide windows (hundreds of layers) and narrow ones (a few layers) take different checkpoint paths
    for n, m, hi in [(3000, 5, 0.1), (1000, 16, 0.1), (2000, 1, 0.1), (2000, 6, 0.004)]:
        values = rng.random(n)
        costs = rng.integers(1, 1000, n)
        budgets = rng.uniform(0.0, hi, m) * costs.sum()
        benefit, assignments = solve_mvbcs(values, costs, budgets)
        assert math.isclose(benefit, deque_dp(values, costs, budgets), rel_tol=1e-9)
        check_feasible(values.tolist(), costs.tolist(), budgets.tolist(), "fixed", benefit, assignments)


# ------------------------------------------------------------------------------------------ behaviour
def test_ties_are_deterministic_and_prefer_short_early_runs():
    values = [0, 1, 1, 0, 1, 1, 0]
    costs = [1] * 7
    budgets = [3, 3]
    first = solve_mvbcs(values, costs, budgets)
    for _ in range(3):
        assert solve_mvbcs(values, costs, budgets) == first
    # Zero-valued layers are never attached to the ends of a run.
    assert first == (4.0, [(1, 2), (4, 5)])
    # All-zero benefit: nobody is assigned anything.
    assert solve_mvbcs([0, 0, 0], [1, 1, 1], [5, 5]) == (0.0, [None, None])


def test_zero_and_unlimited_budgets_and_empty_model():
    assert solve_mvbcs([1, 2, 3], [1, 1, 1], [0]) == (0.0, [None])
    assert solve_mvbcs([1, 2, 3], [1, 1, 1], [math.inf]) == (6.0, [(0, 2)])
    assert solve_mvbcs([], [], [3, 4]) == (0.0, [None, None])
    # A budget below one layer's cost: that layer is never chosen.
    benefit, assignments = solve_mvbcs([5, 1], [10, 1], [9])
    assert benefit == 1.0 and assignments == [(1, 1)]


def test_float_costs_and_budgets_are_supported():
    benefit, assignments = solve_mvbcs([1.0, 2.0, 3.0], [0.5, 0.25, 0.3], [0.55])
    assert benefit == 5.0 and assignments == [(1, 2)]


def test_optimizer_result_and_to_dict():
    opt = LayerSelectionOptimizer([1, 5, 5, 1], [10, 20, 20, 10], [40, 10], layer_names=["a", "b", "c", "d"])
    res = opt.solve()
    assert isinstance(res, SelectionResult)
    assert res.benefit == 11.0
    assert res.assignments == [(1, 2), (3, 3)]
    assert res.total_cost == [40.0, 10.0]
    assert res.verifier_benefits == [10.0, 1.0]
    d = res.to_dict()
    assert d["benefit"] == 11.0 and d["num_selected_layers"] == 3
    assert d["verifiers"][0]["layer_names"] == ["b", "c"]
    assert d["verifiers"][1]["assignment"] == [3, 3]


# ------------------------------------------------------------------------------------------ validation
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"values": [1, -0.5, 2]}, r"values\[1\] = -0.5"),
        ({"values": [1, float("nan"), 2]}, r"values\[1\] = nan"),
        ({"values": [1, float("inf"), 2]}, r"values must be finite"),
        ({"costs": [1, 0, 1]}, r"costs\[1\] = 0.0"),
        ({"costs": [1, 1, -3]}, r"costs\[2\] = -3.0"),
        ({"costs": [1, 1]}, r"3 values and 2 costs"),
        ({"budgets": []}, r"budgets must contain at least one"),
        ({"budgets": [5, -1]}, r"budgets\[1\] = -1.0"),
        ({"budgets": [float("nan")]}, r"budgets\[0\] = nan"),
        ({"order": "random"}, r"order must be one of .*'random'"),
        ({"values": [[1, 2, 3]]}, r"values must be 1-D"),
        ({"values": ["a", "b", "c"]}, r"values must be a 1-D sequence of numbers"),
    ],
)
def test_bad_input_raises_clear_errors(kwargs, message):
    args = {"values": [1, 2, 3], "costs": [1, 1, 1], "budgets": [2], "order": "fixed"} | kwargs
    with pytest.raises(ValueError, match=message):
        solve_mvbcs(**args)
    with pytest.raises(ValueError, match=message):
        LayerSelectionOptimizer(**args)


def test_any_order_limits_are_enforced():
    with pytest.raises(ValueError, match=f"at most {MAX_ANY_ORDER_VERIFIERS} verifiers"):
        solve_mvbcs([1.0] * 5, [1.0] * 5, [1.0] * (MAX_ANY_ORDER_VERIFIERS + 1), order="any")
    with pytest.raises(ValueError, match="cells"):
        solve_mvbcs(np.ones(20_000), np.ones(20_000), [1.0] * 12, order="any")

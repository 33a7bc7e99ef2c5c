"""Scale benchmark of the exact MV-BCS optimizer.

Measures, on this machine:

* the headline solve time for L = 100,000 layers and M = 16 verifiers (order="fixed");
* time vs L (M = 16) and vs M (L = 100,000) with log-log slopes (1.0 = linear);
* a plain-Python monotone-deque DP (also O(M*L)) at the headline size, for reference;
* a straightforward O(M*L^2) DP on smaller L, in the same run, with the fast solver's time at the same
  sizes and the extrapolated O(M*L^2) time at the headline size;
* order="any" (subset DP) time vs M, to show where it stops being practical.

Every solver is checked against the fast one on the instances it runs. Prints tables and writes JSON
(with the environment) to benchmarks/results/mvbcs_scale.json.

Run:  OMP_NUM_THREADS=1 python benchmarks/mvbcs_scale.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections import deque
from pathlib import Path

import numpy as np

from hf_prune.layer_selection.benchmark import environment_info
from hf_prune.layer_selection.mvbcs import solve_mvbcs

RESULTS = Path(__file__).resolve().parent / "results" / "mvbcs_scale.json"


def make_instance(n_layers, n_verifiers, seed=0):
    """Parameter-count costs, [0, 1] significance, budgets that together cover about half the model."""
    rng = np.random.default_rng(seed)
    values = rng.random(n_layers)
    costs = rng.integers(100_000, 10_000_000, n_layers)
    budgets = np.floor(rng.uniform(0.5, 1.5, n_verifiers) * costs.sum() / (2 * n_verifiers))
    return values, costs, budgets


def best_time(fn, repeats):
    times = []
    out = None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), float(np.median(times)), out


def slope(xs, ys):
    return float(np.polyfit(np.log(xs), np.log(ys), 1)[0])


def deque_dp(values, costs, budgets):
    """Textbook O(M*L) DP with a monotone deque, in plain Python (benefit only)."""
    n = len(values)
    p = np.concatenate(([0.0], np.cumsum(values))).tolist()
    c = np.concatenate(([0], np.cumsum(costs))).tolist()
    f = [0.0] * (n + 1)
    for b in budgets:
        h = [f[s] - p[s] for s in range(n + 1)]
        g = [0.0] * (n + 1)
        dq = deque()
        lo = 0
        run = -math.inf
        for j in range(n + 1):
            hj = h[j]
            while dq and h[dq[-1]] <= hj:
                dq.pop()
            dq.append(j)
            cj = c[j] - b
            while c[lo] < cj:
                lo += 1
            while dq[0] < lo:
                dq.popleft()
            cand = h[dq[0]] + p[j]
            run = cand if cand > run else run
            g[j] = run
        f = g
    return f[n]


def naive_dp(values, costs, budgets):
    """Straightforward O(M*L^2) DP: every (verifier, end, start) triple, plain Python (benefit only)."""
    n = len(values)
    p = np.concatenate(([0.0], np.cumsum(values))).tolist()
    c = np.concatenate(([0], np.cumsum(costs))).tolist()
    f = [0.0] * (n + 1)
    for b in budgets:
        g = [0.0] * (n + 1)
        for j in range(n + 1):
            best = g[j - 1] if j else 0.0
            for s in range(j + 1):
                if c[j] - c[s] <= b:
                    cand = f[s] + p[j] - p[s]
                    if cand > best:
                        best = cand
            g[j] = best
        f = g
    return f[n]


def table(title, header, rows):
    print(f"\n{title}")
    print("  ".join(f"{h:>14}" for h in header))
    for r in rows:
        print("  ".join(f"{x:>14.4g}" if isinstance(x, float) else f"{x!s:>14}" for x in r))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer sizes and repeats (smoke run)")
    ap.add_argument("--output", default=str(RESULTS))
    args = ap.parse_args()
    reps = 2 if args.quick else 5
    result = {"environment": environment_info()}

    # ---------------------------------------------------------------- headline
    v, c, b = make_instance(100_000, 16)
    solve_mvbcs(v, c, b)  # warm-up (imports, allocator)
    t_min, t_med, (benefit, _) = best_time(lambda: solve_mvbcs(v, c, b), reps)
    t_dq, _, dq_benefit = best_time(lambda: deque_dp(v, c, b), 1)
    if not math.isclose(benefit, dq_benefit, rel_tol=1e-9):
        raise SystemExit(f"deque DP disagrees: {benefit} vs {dq_benefit}")
    result["headline"] = {
        "num_layers": 100_000,
        "num_verifiers": 16,
        "order": "fixed",
        "best_s": t_min,
        "median_s": t_med,
        "repeats": reps,
        "benefit": benefit,
        "python_deque_s": t_dq,
    }
    table(
        "MV-BCS order=fixed, L=100,000, M=16",
        ["solver", "best s", "median s"],
        [["numpy (ours)", t_min, t_med], ["python deque", t_dq, t_dq]],
    )

    # ---------------------------------------------------------------- time vs L
    sizes = (
        [6_250, 25_000, 100_000, 400_000]
        if args.quick
        else [3_125, 6_250, 12_500, 25_000, 50_000, 100_000, 200_000, 400_000]
    )
    rows = []
    for n in sizes:
        v, c, b = make_instance(n, 16, seed=1)
        rows.append([n, best_time(lambda v=v, c=c, b=b: solve_mvbcs(v, c, b), reps)[0]])
    xs, ys = [r[0] for r in rows], [r[1] for r in rows]
    big = [i for i, x in enumerate(xs) if x >= 25_000]
    result["vs_L"] = {
        "num_verifiers": 16,
        "points": [{"num_layers": x, "best_s": y} for x, y in rows],
        "slope": slope(xs, ys),
        "slope_L_ge_25000": slope([xs[i] for i in big], [ys[i] for i in big]),
    }
    table("time vs L (M=16)", ["L", "best s"], rows)
    print(
        f"log-log slope vs L: {result['vs_L']['slope']:.3f} "
        f"(L >= 25k: {result['vs_L']['slope_L_ge_25000']:.3f})"
    )

    # ---------------------------------------------------------------- time vs M
    ms = [1, 4, 16, 64] if args.quick else [1, 2, 4, 8, 16, 32, 64]
    rows = []
    for m in ms:
        v, c, b = make_instance(100_000, m, seed=2)
        rows.append([m, best_time(lambda v=v, c=c, b=b: solve_mvbcs(v, c, b), reps)[0]])
    xs, ys = [r[0] for r in rows], [r[1] for r in rows]
    result["vs_M"] = {
        "num_layers": 100_000,
        "points": [{"num_verifiers": x, "best_s": y} for x, y in rows],
        "slope": slope(xs, ys),
    }
    table("time vs M (L=100,000)", ["M", "best s"], rows)
    print(f"log-log slope vs M: {result['vs_M']['slope']:.3f}")

    # ---------------------------------------------------------------- naive O(M L^2)
    naive_sizes = [125, 250, 500] if args.quick else [125, 250, 500, 1_000]
    rows = []
    for n in naive_sizes:
        v, c, b = make_instance(n, 16, seed=3)
        t_naive, _, naive_benefit = best_time(lambda v=v, c=c, b=b: naive_dp(v, c, b), 1)
        t_fast, _, (fast_benefit, _) = best_time(lambda v=v, c=c, b=b: solve_mvbcs(v, c, b), reps)
        if not math.isclose(naive_benefit, fast_benefit, rel_tol=1e-9):
            raise SystemExit(f"naive DP disagrees at L={n}: {naive_benefit} vs {fast_benefit}")
        rows.append([n, t_naive, t_fast, t_naive / t_fast])
    xs = [r[0] for r in rows]
    naive_slope = slope(xs, [r[1] for r in rows])
    # Extrapolate with the quadratic model anchored at the largest measured size.
    extrapolated = rows[-1][1] * (100_000 / rows[-1][0]) ** 2
    result["naive"] = {
        "num_verifiers": 16,
        "points": [{"num_layers": r[0], "naive_s": r[1], "fast_s": r[2], "speedup": r[3]} for r in rows],
        "slope": naive_slope,
        "extrapolated_naive_s_at_L_100000": extrapolated,
    }
    table("straightforward O(M*L^2) DP vs ours (M=16)", ["L", "naive s", "ours s", "speedup"], rows)
    print(
        f"log-log slope of the naive DP vs L: {naive_slope:.3f}; "
        f"extrapolated to L=100,000: {extrapolated:,.0f} s"
    )

    # ---------------------------------------------------------------- order="any"
    any_ms = [2, 4, 6, 8] if args.quick else [2, 4, 6, 8, 10, 11, 12]
    rows = []
    for m in any_ms:
        v, c, b = make_instance(200, m, seed=4)
        t_any, _, (b_any, _) = best_time(lambda v=v, c=c, b=b: solve_mvbcs(v, c, b, order="any"), 1)
        b_fixed, _ = solve_mvbcs(v, c, b)
        rows.append([m, t_any, b_any / b_fixed])
    result["any_order"] = {
        "num_layers": 200,
        "points": [{"num_verifiers": r[0], "best_s": r[1], "benefit_vs_fixed": r[2]} for r in rows],
    }
    table('order="any" (subset DP), L=200', ["M", "s", "benefit/fixed"], rows)

    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()

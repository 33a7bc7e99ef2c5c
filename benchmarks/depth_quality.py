"""Depth part of the ``quality`` benchmark: every depth strategy against random removal and the optimum.

For each zoo model and each number of removed blocks ``n`` (1 and 2 by default), in one run:

* **exhaustive**: the held-out perplexity of *every* choice of ``n`` blocks (``C(L, n)`` models), which
  gives the best contiguous run, the best choice overall, and the exact median of random removal (the
  median over all choices; a handful of seeded draws is reported too);
* **strategies**: angular distance (PruneMe, contiguous), block influence (ShortGPT), ablation, AVSS
  (activation variance / sparsity, on the block update and on its output), and the iterative pruner
  (ablation criterion) without and with LoRA healing between removals;
* for each strategy: its perplexity, how far it lands from the exhaustive optimum (ratio and rank among
  all choices), and the measured forward-latency speedup of the removal against the dense model.

No block is protected here (``protect_first = protect_last = 0``) so every strategy and the exhaustive
search choose from the same candidates.
"""

from __future__ import annotations

import argparse
import copy
import functools
import itertools
import random
import statistics
import time
from pathlib import Path
from typing import Any

from hf_prune import (
    AblationDepthConfig,
    ActivationVarianceConfig,
    AngularDepthConfig,
    BlockInfluenceConfig,
    CalibrationConfig,
    CustomConfig,
    IterativeDepthConfig,
    prune,
    zoo,
)
from hf_prune.evaluation import perplexity

OPEN = {"protect_first": 0, "protect_last": 0}


def strategies(n: int, heal_steps: int, heal_lr: float) -> list[tuple[str, Any]]:
    return [
        ("angular (contiguous)", AngularDepthConfig(num_layers=n, **OPEN)),
        ("block influence", BlockInfluenceConfig(num_layers=n, **OPEN)),
        ("ablation", AblationDepthConfig(num_layers=n, **OPEN)),
        ("AVSS (update)", ActivationVarianceConfig(num_layers=n, **OPEN)),
        ("AVSS (output)", ActivationVarianceConfig(num_layers=n, activations="output", **OPEN)),
        ("iterative", IterativeDepthConfig(num_layers=n, **OPEN)),
        (
            f"iterative + heal {heal_steps}",
            IterativeDepthConfig(num_layers=n, heal_steps=heal_steps, heal_lr=heal_lr, **OPEN),
        ),
    ]


def run_depth(name: str, args: argparse.Namespace, calib_file: Path) -> list[dict[str, Any]]:
    dense, tok = zoo.load_zoo_model(name)
    heldout = zoo.get_eval_texts("heldout")
    n_blocks = dense.config.num_hidden_layers

    def ppl(model: Any) -> float:
        return perplexity(
            model, tok, heldout, seqlen=args.seqlen, max_windows=args.eval_windows, progress=False
        )

    dense_ppl = ppl(dense)
    calib = CalibrationConfig(dataset=str(calib_file), nsamples=args.nsamples, seqlen=args.seqlen, seed=0)
    rows: list[dict[str, Any]] = []
    for n in args.depth_counts:
        table: dict[tuple[int, ...], float] = {}
        for combo in itertools.combinations(range(n_blocks), n):
            pm = prune(copy.deepcopy(dense), CustomConfig(description="exhaustive"), progress=False)
            pm.remove_layers(list(combo))
            table[combo] = ppl(pm)
        ranked = sorted(table.values())
        contiguous = {c: v for c, v in table.items() if c[-1] - c[0] == n - 1}
        best_any = min(table, key=table.get)
        best_run = min(contiguous, key=contiguous.get)
        rng = random.Random(0)
        draws = [table[tuple(sorted(rng.sample(range(n_blocks), n)))] for _ in range(args.random_draws)]
        speed_pm = prune(copy.deepcopy(dense), CustomConfig(description="speed"), progress=False)
        speed_pm.remove_layers(list(best_any))
        speed = speed_pm.measure_speed(dense, seqlen=args.seqlen, repeats=args.repeats)

        ctx = {"model": name, "n": n, "table": table, "best": best_any, "dense": dense_ppl, "speed": speed}
        row = functools.partial(_row, ctx)

        rows.append(row("exhaustive best (any)", list(best_any), table[best_any], 0.0))
        rows.append(row("exhaustive best contiguous", list(best_run), table[best_run], 0.0))
        rows.append(row("random (median of all choices)", [], statistics.median(ranked), 0.0))
        rows.append(
            row(
                f"random (median of {args.random_draws} draws)",
                [],
                statistics.median(draws),
                0.0,
                draws=draws,
            )
        )
        for label, cfg in strategies(n, args.heal_steps, args.heal_lr):
            t0 = time.perf_counter()
            pm = prune(copy.deepcopy(dense), cfg, calibration=calib, tokenizer=tok, progress=False)
            seconds = time.perf_counter() - t0
            removed = sorted(pm.report.removed_layers["decoder"])
            value = ppl(pm)
            extra: dict[str, Any] = {"selection_ppl": table[tuple(removed)]}
            rows.append(row(label, removed, value, seconds, **extra))
            print(f"{name} n={n} {label:<28} removed {removed} ppl {value:.3f}", flush=True)
        print(
            f"{name} n={n}: dense {dense_ppl:.3f}, optimum {table[best_any]:.3f} {list(best_any)}, "
            f"speedup {speed['speedup']:.2f}x (ideal {speed.get('ideal_speedup', 0):.2f}x)",
            flush=True,
        )
    for r in rows:
        r["dense_ppl"] = dense_ppl
    return rows


def _row(
    ctx: dict[str, Any], strategy: str, removed: list[int], value: float, seconds: float, **extra: Any
) -> dict[str, Any]:
    ranked = sorted(ctx["table"].values())
    return {
        "model": ctx["model"],
        "removed_n": ctx["n"],
        "strategy": strategy,
        "removed": removed,
        "ppl": value,
        "vs_dense": value / ctx["dense"] - 1,
        "vs_optimum": value / ctx["table"][ctx["best"]] - 1,
        "rank": 1 + sum(v < value - 1e-9 for v in ranked),
        "of": len(ranked),
        "seconds": seconds,
        "speedup": ctx["speed"]["speedup"],
        **extra,
    }


def closest(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per model and block count: which strategy's *selection* lands closest to the exhaustive optimum."""
    out = []
    for key in dict.fromkeys((r["model"], r["removed_n"]) for r in rows):
        same = [r for r in rows if (r["model"], r["removed_n"]) == key]
        cands = [r for r in same if "selection_ppl" in r and "heal" not in r["strategy"]]
        best = min(r["selection_ppl"] for r in cands)
        winners = sorted({r["strategy"] for r in cands if r["selection_ppl"] <= best + 1e-9})
        opt = next(r for r in same if r["strategy"] == "exhaustive best (any)")
        out.append(
            {
                "model": key[0],
                "removed_n": key[1],
                "closest": ", ".join(winners),
                "ppl": best,
                "optimum": opt["ppl"],
                "gap": best / opt["ppl"] - 1,
            }
        )
    return out

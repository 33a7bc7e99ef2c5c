"""Quality benchmark: held-out perplexity of pruned zoo models, every method against the same baseline.

For each zoo model (trained locally, see ``hf_prune.zoo``) the dense perplexity, magnitude, Wanda and
SparseGPT at 50/60/70% unstructured sparsity, and at 70% the uniform vs AlphaPruning vs OWL allocation
for magnitude and Wanda. Calibrated methods run over several calibration seeds (same held-out windows
for every row), so the noise band is visible. Prints a Markdown table and writes JSON.

The depth part (:mod:`benchmarks.depth_quality`) removes 1 and 2 blocks with every depth strategy and
compares each against random removal and the exhaustive optimum in the same run.

Run: ``python -m benchmarks.quality [--models llama-gqa-small opt-small] [--seeds 5]
[--parts unstructured depth]``
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks.common import print_table, write_results
from benchmarks.depth_quality import closest, run_depth
from hf_prune import (
    AlphaAllocation,
    CalibrationConfig,
    OWLAllocation,
    PruningConfig,
    prune,
    zoo,
)
from hf_prune.evaluation import perplexity


def _configs(sparsities: list[float], high: float) -> list[tuple[str, str, float, PruningConfig]]:
    rows = []
    for s in sparsities:
        for method in ("magnitude", "wanda", "sparsegpt"):
            rows.append((method, "uniform", s, PruningConfig.from_dict({"method": method, "sparsity": s})))
    for method in ("magnitude", "wanda"):
        for name, alloc in (
            ("alpha", AlphaAllocation(epsilon=0.3)),
            ("alpha-eps0.1", AlphaAllocation(epsilon=0.1)),
            ("owl", OWLAllocation()),
        ):
            cfg = PruningConfig.from_dict({"method": method, "sparsity": high})
            cfg.allocation = alloc
            rows.append((method, name, high, cfg))
    return rows


def run_model(name: str, args: argparse.Namespace, calib_file: Path) -> list[dict[str, Any]]:
    dense, tok = zoo.load_zoo_model(name)
    heldout = zoo.get_eval_texts("heldout")

    def ppl(model: Any) -> float:
        return perplexity(
            model, tok, heldout, seqlen=args.seqlen, max_windows=args.eval_windows, progress=False
        )

    rows = [
        {
            "model": name,
            "method": "dense",
            "allocation": "-",
            "sparsity": 0.0,
            "seeds": 1,
            "ppl_mean": ppl(dense),
            "ppl_std": 0.0,
            "seconds": 0.0,
        }
    ]
    for method, alloc, sparsity, cfg in _configs(args.sparsities, args.high):
        data_free = method == "magnitude" and alloc != "owl"
        seeds = [0] if data_free else list(range(args.seeds))
        values, t0 = [], time.perf_counter()
        for seed in seeds:
            model = copy.deepcopy(dense)
            calib = CalibrationConfig(
                dataset=str(calib_file), nsamples=args.nsamples, seqlen=args.seqlen, seed=seed
            )
            pm = prune(model, cfg, calibration=None if data_free else calib, tokenizer=tok, progress=False)
            values.append(ppl(pm))
        rows.append(
            {
                "model": name,
                "method": method,
                "allocation": alloc,
                "sparsity": sparsity,
                "seeds": len(seeds),
                "ppl_mean": statistics.mean(values),
                "ppl_std": statistics.pstdev(values) if len(values) > 1 else 0.0,
                "seconds": (time.perf_counter() - t0) / len(seeds),
                "ppl_values": values,
            }
        )
        print(
            f"{name} {method:<9} {alloc:<7} {sparsity:.2f}: "
            f"ppl {rows[-1]['ppl_mean']:.3f} ± {rows[-1]['ppl_std']:.3f}",
            flush=True,
        )
    return rows


def targets(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The reference-model targets (issue 10), checked on this run's uniform rows.

    A trained reference model must show pruning damage: magnitude at 50% costs >= 4% perplexity and
    at 70% >= 30%, and Wanda and SparseGPT beat magnitude at every sparsity measured.
    """
    checks = []
    for name in dict.fromkeys(r["model"] for r in rows):
        table = {
            (r["method"], r["sparsity"]): r["ppl_mean"]
            for r in rows
            if r["model"] == name and r["allocation"] in ("uniform", "-")
        }
        dense = table[("dense", 0.0)]
        for sparsity, floor in ((0.5, 0.04), (0.7, 0.30)):
            if ("magnitude", sparsity) in table:
                cost = table[("magnitude", sparsity)] / dense - 1
                checks.append(
                    {
                        "model": name,
                        "check": f"magnitude {sparsity:.0%} costs >= {floor:.0%}",
                        "value": f"{cost:+.1%}",
                        "met": cost >= floor,
                    }
                )
        for (method, sparsity), value in sorted(table.items()):
            if method in ("wanda", "sparsegpt"):
                mag = table[("magnitude", sparsity)]
                checks.append(
                    {
                        "model": name,
                        "check": f"{method} beats magnitude at {sparsity:.0%}",
                        "value": f"{value:.2f} vs {mag:.2f}",
                        "met": value < mag,
                    }
                )
    return checks


DEPTH_COLUMNS = ["model", "removed_n", "strategy", "removed", "ppl", "vs_dense", "vs_optimum", "rank", "of"]
DEPTH_COLUMNS += ["speedup"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models", nargs="+", default=["llama-gqa-small", "opt-small"])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--sparsities", type=float, nargs="+", default=[0.5, 0.6, 0.7])
    parser.add_argument("--high", type=float, default=0.7, help="sparsity of the allocation comparison")
    parser.add_argument("--nsamples", type=int, default=32)
    parser.add_argument("--seqlen", type=int, default=256)
    parser.add_argument("--eval-windows", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parts = ["unstructured", "depth"]
    parser.add_argument("--parts", nargs="+", choices=parts, default=parts)
    parser.add_argument("--depth-counts", type=int, nargs="+", default=[1, 2], help="blocks removed")
    parser.add_argument("--random-draws", type=int, default=7)
    parser.add_argument("--heal-steps", type=int, default=100, help="LoRA steps per iterative round")
    parser.add_argument("--heal-lr", type=float, default=3e-4, help="LoRA learning rate when healing")
    parser.add_argument("--repeats", type=int, default=10, help="timed passes per model (speedup)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    out = Path("benchmarks/results")
    out.mkdir(parents=True, exist_ok=True)
    calib_file = zoo.write_split_text("calibration", out / "zoo_calibration.txt")
    payload: dict[str, Any] = {"args": vars(args)}
    if "unstructured" in args.parts:
        rows: list[dict[str, Any]] = []
        for name in args.models:
            rows.extend(run_model(name, args, calib_file))
        print_table(
            rows, ["model", "method", "allocation", "sparsity", "seeds", "ppl_mean", "ppl_std", "seconds"]
        )
        checks = targets(rows)
        print_table(checks, ["model", "check", "value", "met"])
        payload.update(rows=rows, targets=checks)
    if "depth" in args.parts:
        depth_rows: list[dict[str, Any]] = []
        for name in args.models:
            depth_rows.extend(run_depth(name, args, calib_file))
        print_table(
            depth_rows,
            DEPTH_COLUMNS,
        )
        summary = closest(depth_rows)
        print_table(summary, ["model", "removed_n", "closest", "ppl", "optimum", "gap"])
        payload.update(depth_rows=depth_rows, depth_closest=summary)
    name = "quality" if set(args.parts) == {"unstructured", "depth"} else "quality_" + "_".join(args.parts)
    write_results(name, payload)


if __name__ == "__main__":
    main()

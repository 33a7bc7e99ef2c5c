"""Fine-grained pruning trees vs coarse block removal at equal removed parameters (zoo ``llama-gqa-small``).

For each budget (1 and 2 of the 6 blocks by default) the block methods (angular distance, contiguous, as
PruneMe; ablation, the loss increase per block) remove whole blocks; pruning trees
(``PruningTreeConfig``, loss importance on the same calibration windows) then remove at most the same
fraction of the blocks' parameters (one-shot ranking and re-ranked after each removal), and at least it
(re-ranked). Every result's held-out perplexity and measured CPU forward latency
(interleaved with the dense model, same inputs) are reported side by side, plus whether fine-grained wins.

Run: ``python -m benchmarks.run trees_quality`` (a few minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path
from typing import Any

from benchmarks.common import print_table, write_results
from hf_prune import AblationDepthConfig, AngularDepthConfig, CalibrationConfig, PruningTreeConfig, prune, zoo
from hf_prune.arch import get_arch, get_layers, param_count
from hf_prune.evaluation import perplexity
from hf_prune.evaluation.speed import compare_latency

OPEN = {"protect_first": 0, "protect_last": 0}
COLUMNS = ["budget", "method", "removed_frac", "ppl", "latency_ms", "dense_ms", "speedup", "seconds"]


def _block_params(model: Any) -> int:
    stack = get_arch(model).stacks[-1]
    return sum(param_count(b) for b in get_layers(model, stack))


def run(args: argparse.Namespace, calib_file: Path, out: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """Prune the zoo model with block removal and with trees at each budget; return rows and verdicts.

    Args:
        args: The parsed command line.
        calib_file: The zoo's calibration split as a text file.
        out: Folder for the tree ranking CSVs.
    """
    dense, tok = zoo.load_zoo_model(args.model)
    dense.eval()
    heldout = zoo.get_eval_texts("heldout")
    total = _block_params(dense)
    n_blocks = dense.config.num_hidden_layers
    calib = CalibrationConfig(dataset=str(calib_file), nsamples=args.nsamples, seqlen=args.seqlen, seed=0)

    def ppl(model: Any) -> float:
        return perplexity(
            model, tok, heldout, seqlen=args.seqlen, max_windows=args.eval_windows, progress=False
        )

    def latency(model: Any) -> dict[str, Any]:
        return compare_latency(dense, model, seqlen=args.latency_seqlen, repeats=args.repeats, flops=False)

    rows: list[dict[str, Any]] = [
        {
            "budget": "-",
            "method": "dense",
            "removed_frac": 0.0,
            "ppl": ppl(dense),
            "latency_ms": None,
            "dense_ms": None,
            "speedup": 1.0,
            "seconds": 0.0,
        }
    ]
    verdicts: list[str] = []
    for n in args.blocks:
        budget = f"{n}/{n_blocks} blocks"
        block_ppl: dict[str, float] = {}
        frac = None
        for label, cfg in (
            ("angular (blocks)", AngularDepthConfig(num_layers=n, **OPEN)),
            ("ablation (blocks)", AblationDepthConfig(num_layers=n, **OPEN)),
        ):
            t0 = time.perf_counter()
            pm = prune(copy.deepcopy(dense), cfg, calibration=calib, tokenizer=tok, progress=False)
            secs = time.perf_counter() - t0
            removed = 1.0 - _block_params(pm.base_model) / total
            frac = removed
            lat = latency(pm)
            block_ppl[label] = ppl(pm)
            rows.append(
                {
                    "budget": budget,
                    "method": label,
                    "removed_frac": removed,
                    "ppl": block_ppl[label],
                    "latency_ms": lat["pruned_ms"],
                    "dense_ms": lat["baseline_ms"],
                    "speedup": lat["speedup"],
                    "seconds": secs,
                }
            )
        tree_ppl: dict[str, float] = {}
        for rerank, budget_mode in ((False, "at_most"), (True, "at_most"), (True, "at_least")):
            label = f"{'rerank' if rerank else 'one-shot'}, {budget_mode}"
            t0 = time.perf_counter()
            cfg = PruningTreeConfig(
                target=float(frac),  # type: ignore[arg-type]
                budget=budget_mode,
                rerank=rerank,
                ranking_csv=str(out / f"trees_ranking_{n}_{label.replace(', ', '_')}.csv"),
                latency_seqlen=args.latency_seqlen,
            )
            pm = prune(copy.deepcopy(dense), cfg, calibration=calib, tokenizer=tok, progress=False)
            secs = time.perf_counter() - t0
            info = pm.report.extra["pruning_trees"]
            lat = latency(pm)
            tree_ppl[label] = ppl(pm)
            kinds: dict[str, int] = {}
            for key in info["removed"]:
                kinds[key.split(":")[0]] = kinds.get(key.split(":")[0], 0) + 1
            counts = ", ".join(f"{v} {k}" for k, v in sorted(kinds.items()))
            rows.append(
                {
                    "budget": budget,
                    "method": f"pruning trees, {label} ({counts})",
                    "removed_frac": info["removed_fraction"],
                    "ppl": tree_ppl[label],
                    "latency_ms": lat["pruned_ms"],
                    "dense_ms": lat["baseline_ms"],
                    "speedup": lat["speedup"],
                    "seconds": secs,
                }
            )
        best_label = min(block_ppl, key=block_ppl.__getitem__)
        # at_most removes no more parameters than the blocks did: the fair side of the comparison.
        for label in ("one-shot, at_most", "rerank, at_most"):
            wins = tree_ppl[label] < block_ppl[best_label]
            verdicts.append(
                f"{budget}: trees ({label}) ppl {tree_ppl[label]:.2f} vs best block method ({best_label}) "
                f"{block_ppl[best_label]:.2f} -> fine-grained {'wins' if wins else 'does NOT win'}"
            )
    return rows, verdicts


def main() -> None:
    """Parse the command line, run the comparison, print the table and write the JSON results."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="llama-gqa-small")
    parser.add_argument("--blocks", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--nsamples", type=int, default=8)
    parser.add_argument("--seqlen", type=int, default=128)
    parser.add_argument("--eval-windows", type=int, default=24)
    parser.add_argument("--latency-seqlen", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    calib_file = zoo.write_split_text("calibration", out / "zoo_calibration.txt")
    rows, verdicts = run(args, calib_file, out)
    print_table(rows, COLUMNS)
    for v in verdicts:
        print(v)
    write_results("trees_quality", {"args": vars(args), "rows": rows, "verdicts": verdicts})


if __name__ == "__main__":
    main()

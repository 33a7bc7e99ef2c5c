"""Quality of structured (width) pruning on the trained zoo models, every score against the same baselines.

For each zoo model and MLP-neuron sparsity (20%, 40% by default): held-out perplexity after removing
that fraction of MLP neurons with structured magnitude, random removal (median of 3 seeded draws),
Wanda-structured, SNIP, ReFer-SVD and AFR, each with ``uniform`` and ``global`` allocation; calibrated
scores over several calibration seeds (mean ± std). Dense perplexity and the measured speedup of the
uniform result are reported beside them. Prints a Markdown table and writes JSON.

Run: ``python -m benchmarks.run structured_quality [--models llama-gqa-small opt-small] [--seeds 3]``
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
from hf_prune import CalibrationConfig, CustomConfig, PruningConfig, prune, zoo
from hf_prune.arch import get_arch, get_layers
from hf_prune.evaluation import perplexity

METHODS = (
    "structured_magnitude",
    "structured_wanda",
    "structured_snip",
    "structured_refer_svd",
    "structured_afr",
)


def random_neurons(model: Any, sparsity: float, seed: int) -> Any:
    """Remove the same fraction of MLP neurons in every block, chosen uniformly at random."""
    generator = torch.Generator().manual_seed(seed)
    pm = prune(model, CustomConfig(description=f"random {sparsity:.0%} of MLP neurons, seed {seed}"))
    spec = get_arch(pm.base_model).stacks[0]
    config = pm.base_model.config
    width = int(getattr(config, "intermediate_size", None) or config.ffn_dim)
    keep = width - round(width * sparsity)
    for layer in range(len(get_layers(pm.base_model, spec))):
        chosen = torch.randperm(width, generator=generator)[:keep].sort().values.tolist()
        pm.prune_neurons(layer, keep=chosen)
    return pm


def run_model(name: str, args: argparse.Namespace, calib_file: Path) -> list[dict[str, Any]]:
    dense, tok = zoo.load_zoo_model(name)
    heldout = zoo.get_eval_texts("heldout")

    def ppl(model: Any) -> float:
        return perplexity(
            model, tok, heldout, seqlen=args.seqlen, max_windows=args.eval_windows, progress=False
        )

    dense_ppl = ppl(dense)
    rows: list[dict[str, Any]] = [
        {"model": name, "method": "dense", "allocation": "-", "sparsity": 0.0, "ppl_mean": dense_ppl}
    ]
    for sparsity in args.sparsities:
        t0 = time.perf_counter()
        values = [ppl(random_neurons(copy.deepcopy(dense), sparsity, seed)) for seed in range(3)]
        rows.append(
            {
                "model": name,
                "method": "random",
                "allocation": "uniform",
                "sparsity": sparsity,
                "runs": 3,
                "ppl_mean": statistics.median(values),
                "ppl_std": statistics.pstdev(values),
                "seconds": (time.perf_counter() - t0) / 3,
                "ppl_values": values,
            }
        )
        print(f"{name} random {sparsity:.2f}: median {rows[-1]['ppl_mean']:.3f}", flush=True)
        for method in METHODS:
            for allocation in ("uniform", "global"):
                cfg = PruningConfig.from_dict(
                    {"method": method, "sparsity": sparsity, "scope": "mlp", "allocation": allocation}
                )
                seeds = list(range(args.seeds)) if getattr(cfg, "needs", "") else [0]
                values, t0, speedup = [], time.perf_counter(), None
                for seed in seeds:
                    calib = CalibrationConfig(
                        dataset=str(calib_file), nsamples=args.nsamples, seqlen=args.seqlen, seed=seed
                    )
                    pm = prune(
                        copy.deepcopy(dense),
                        cfg,
                        calibration=calib if getattr(cfg, "needs", "") else None,
                        tokenizer=tok,
                        progress=False,
                    )
                    values.append(ppl(pm))
                    if speedup is None:
                        speedup = pm.measure_speed(dense, seqlen=args.seqlen, repeats=5)["speedup"]
                rows.append(
                    {
                        "model": name,
                        "method": method,
                        "allocation": allocation,
                        "sparsity": sparsity,
                        "runs": len(seeds),
                        "ppl_mean": statistics.mean(values),
                        "ppl_std": statistics.pstdev(values) if len(values) > 1 else 0.0,
                        "seconds": (time.perf_counter() - t0) / len(seeds),
                        "speedup": speedup,
                        "ppl_values": values,
                    }
                )
                print(
                    f"{name} {method:<22} {allocation:<7} {sparsity:.2f}: "
                    f"ppl {rows[-1]['ppl_mean']:.3f} ± {rows[-1]['ppl_std']:.3f}",
                    flush=True,
                )
    return rows


def checks(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Issue 11's claims on this run: structured AFR beats structured magnitude and random removal."""
    out = []
    for name in dict.fromkeys(r["model"] for r in rows):
        for sparsity in sorted({r["sparsity"] for r in rows if r["sparsity"] > 0}):
            table = {
                (r["method"], r["allocation"]): r["ppl_mean"]
                for r in rows
                if r["model"] == name and r["sparsity"] == sparsity
            }
            afr = min(table[("structured_afr", "uniform")], table[("structured_afr", "global")])
            for rival in (("structured_magnitude", "uniform"), ("random", "uniform")):
                out.append(
                    {
                        "model": name,
                        "sparsity": sparsity,
                        "check": f"AFR (best allocation) beats {rival[0]}",
                        "value": f"{afr:.2f} vs {table[rival]:.2f}",
                        "met": afr < table[rival],
                    }
                )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models", nargs="+", default=["llama-gqa-small", "opt-small"])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--sparsities", type=float, nargs="+", default=[0.2, 0.4])
    parser.add_argument("--nsamples", type=int, default=32)
    parser.add_argument("--seqlen", type=int, default=256)
    parser.add_argument("--eval-windows", type=int, default=48)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    out = Path("benchmarks/results")
    out.mkdir(parents=True, exist_ok=True)
    calib_file = zoo.write_split_text("calibration", out / "zoo_calibration.txt")
    rows: list[dict[str, Any]] = []
    for name in args.models:
        rows.extend(run_model(name, args, calib_file))
    print_table(
        rows,
        ["model", "method", "allocation", "sparsity", "runs", "ppl_mean", "ppl_std", "speedup", "seconds"],
    )
    results = checks(rows)
    print_table(results, ["model", "sparsity", "check", "value", "met"])
    write_results("structured_quality", {"args": vars(args), "rows": rows, "checks": results})


if __name__ == "__main__":
    main()

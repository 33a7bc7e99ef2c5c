"""Run a benchmark by name: ``python -m benchmarks.run NAME [ARGS...]`` (``--list`` to list them).

Every benchmark compares against a baseline measured in the same run, prints a Markdown table and
writes ``benchmarks/results/<name>.json`` with the environment (versions, CPU, threads).
"""

from __future__ import annotations

import importlib
import sys

#: name -> (module, what it compares)
BENCHMARKS = {
    "quality": (
        "benchmarks.quality",
        "held-out perplexity of every method/allocation vs dense and magnitude",
    ),
    "method_speed": ("benchmarks.method_speed", "time and peak memory per method, sequential vs whole-model"),
    "runner_memory": (
        "benchmarks.runner_memory",
        "peak memory of Hessian collection, sequential vs whole-model",
    ),
    "offload_memory": (
        "benchmarks.offload_memory",
        "pruning under a memory cap via disk offload vs in memory",
    ),
    "mvbcs_scale": ("benchmarks.mvbcs_scale", "MV-BCS solver time vs L and M, against an O(M*L^2) DP"),
    "esd_speed": ("benchmarks.esd_speed", "built-in alpha estimator vs weightwatcher / float64 NumPy"),
    "structured_quality": (
        "benchmarks.structured_quality",
        "held-out perplexity after MLP-neuron pruning: AFR/SNIP/ReFer-SVD/Wanda vs magnitude and random",
    ),
    "llava_quality": (
        "benchmarks.llava_quality",
        "llava-tiny caption ranking after 30% MLP pruning: image-text vs text-only calibration vs magnitude",
    ),
    "fisher_quality": (
        "benchmarks.fisher_quality",
        "Fisher mask search on bert-small-cls (accuracy at 60/50/40% MAC, ablation, latency LUT) and Llama",
    ),
    "training": (
        "benchmarks.training",
        "healing after Wanda 70% / SparseGPT 2:4 (lost perplexity recovered) and gradual vs one-shot pruning",
    ),
    "structured_speed": (
        "benchmarks.structured_speed",
        "forward latency of width-pruned Llama (125M) vs dense and vs the FLOP-proportional ideal",
    ),
    "trees_quality": (
        "benchmarks.trees_quality",
        "pruning trees vs angular / ablation block removal (llama-gqa-small): ppl + CPU latency",
    ),
    "serving_formats": (
        "benchmarks.serving_formats",
        "pruned Llama (124M) latency: PyTorch vs ONNX Runtime vs ideal",
    ),
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "--list"):
        print(__doc__)
        for name, (_, what) in BENCHMARKS.items():
            print(f"  {name:<14} {what}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in BENCHMARKS:
        print(f"unknown benchmark {name!r}; known: {', '.join(BENCHMARKS)}", file=sys.stderr)
        return 2
    module = importlib.import_module(BENCHMARKS[name][0])
    sys.argv = [f"benchmarks.{name}", *rest]
    module.main()
    return 0


if __name__ == "__main__":
    sys.exit(main())

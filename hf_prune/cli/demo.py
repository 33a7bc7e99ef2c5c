"""``hf-prune demo``: the README's first command, end to end on the shipped trained model.

Loads the zoo's trained ``llama-gqa-small`` (shipped with hf_prune: nothing is trained or downloaded),
prunes it with magnitude, Wanda and SparseGPT at 50% and 70% and with a structured method (25% of MLP
neurons removed), measures held-out perplexity, parameters, non-zeros, forward latency against the
dense model (interleaved runs) and the time each prune took, prints one table, saves the best
unstructured model at the highest sparsity and the structured one (weights, tokenizer, model card with
the measured speed), checks that both reload to identical logits, and plots perplexity against sparsity.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from pathlib import Path
from typing import Any

import torch

DEFAULT_METHODS = ("magnitude", "wanda", "sparsegpt")
DEFAULT_SPARSITIES = (0.5, 0.7)
#: The structured method the demo adds; the best one in benchmarks/structured_quality on the zoo models.
DEFAULT_STRUCTURED = "structured_wanda"


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``demo``.

    Args:
        subparsers: The ``hf-prune`` sub-parsers.
    """
    p = subparsers.add_parser("demo", help="prune the bundled trained model end to end", description=__doc__)
    p.add_argument("--model", default="llama-gqa-small", help="zoo model name (a causal LM)")
    p.add_argument(
        "--methods", nargs="+", default=list(DEFAULT_METHODS), help="registered pruning methods to compare"
    )
    p.add_argument(
        "--sparsities", nargs="+", type=float, default=list(DEFAULT_SPARSITIES), help="target sparsities"
    )
    p.add_argument(
        "--structured",
        default=DEFAULT_STRUCTURED,
        help="structured method also run (MLP neurons removed, plain-transformers checkpoint); '' to skip",
    )
    p.add_argument(
        "--structured-sparsity",
        type=float,
        default=0.25,
        help="fraction of MLP neurons the structured run removes",
    )
    p.add_argument("--output", default="demo_out", help="folder for the checkpoint, plot and results")
    p.add_argument("--nsamples", type=int, default=32, help="calibration windows")
    p.add_argument("--seqlen", type=int, default=256, help="calibration / evaluation window length")
    p.add_argument("--eval-windows", type=int, default=40, help="held-out windows for perplexity")
    p.add_argument("--latency-repeats", type=int, default=10, help="timed forward passes per model")
    p.add_argument(
        "--train-steps",
        type=int,
        default=None,
        help="build a shortened zoo model in OUTPUT/base with this many steps (quick checks)",
    )
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)


def _error(message: str) -> int:
    import sys

    print(f"hf-prune demo: error: {message}", file=sys.stderr)
    return 2


def _load(args: argparse.Namespace) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from hf_prune import zoo

    if args.train_steps is None:
        return zoo.load_zoo_model(args.model)
    folder = Path(args.output) / "base"
    zoo.build_zoo_model(args.model, folder, max_steps=args.train_steps, progress=not args.no_progress)
    return AutoModelForCausalLM.from_pretrained(folder).eval(), AutoTokenizer.from_pretrained(folder)


def _removed_fraction(report: Any) -> float:
    """Fraction removed: zeros of the pruned projections, or removed units (neurons, heads) of the layers."""
    if any(r.kind == "linear" for r in report.layers):
        return float(report.sparsity)
    before = after = 0
    for row in report.layers:
        for unit, kept in (row.kept_units or {}).items():
            total = (row.kept_units or {}).get(f"{unit}_before")
            if isinstance(total, int) and isinstance(kept, int):
                before, after = before + total, after + kept
    return 0.0 if before == 0 else 1.0 - after / before


def _save_and_check(pruned: Any, folder: Path, tokenizer: Any, probe: torch.Tensor) -> tuple[Path, bool]:
    """Save with tokenizer and card, reload, and compare logits on ``probe``."""
    from hf_prune import AutoPrunedModelForCausalLM

    saved = pruned.save_pretrained(folder, tokenizer=tokenizer)
    reloaded = AutoPrunedModelForCausalLM.from_pretrained(saved)
    with torch.no_grad():
        same = torch.allclose(pruned(input_ids=probe).logits, reloaded(input_ids=probe).logits, atol=1e-5)
    return saved, bool(same)


def _validate(args: argparse.Namespace) -> str | None:
    from hf_prune.methods import METHODS
    from hf_prune.zoo import ZOO_MODELS

    if args.model not in ZOO_MODELS or ZOO_MODELS[args.model].kind != "causal_lm":
        causal = [name for name, recipe in ZOO_MODELS.items() if recipe.kind == "causal_lm"]
        return f"--model {args.model!r} is not a zoo causal LM; allowed: {', '.join(sorted(causal))}"
    for method in args.methods:
        if method not in METHODS:
            return f"--methods: unknown method {method!r}; registered: {', '.join(sorted(METHODS))}"
    for sparsity in args.sparsities:
        if not 0.0 < sparsity < 1.0:
            return f"--sparsities: {sparsity} is out of range; each must be in (0, 1), e.g. 0.5"
    if args.structured and not args.structured.startswith("structured_"):
        return f"--structured {args.structured!r} is not a structured method; e.g. structured_wanda, or ''"
    if args.structured and args.structured not in METHODS:
        return f"--structured: unknown method {args.structured!r}; registered: {', '.join(sorted(METHODS))}"
    if not 0.0 < args.structured_sparsity < 1.0:
        return f"--structured-sparsity {args.structured_sparsity} is out of range; it must be in (0, 1)"
    for name in ("nsamples", "seqlen", "eval_windows", "latency_repeats"):
        if getattr(args, name) < 1:
            return f"--{name.replace('_', '-')}={getattr(args, name)} must be >= 1"
    return None


def run(args: argparse.Namespace) -> int:
    """Execute the demo.

    Args:
        args: Parsed arguments.

    Returns:
        Exit code: 0 on success, 2 on bad input, 1 if the reloaded checkpoint does not reproduce the
        pruned model's logits.
    """
    problem = _validate(args)
    if problem is not None:
        return _error(problem)
    from hf_prune import CalibrationConfig, PruningConfig, prune, zoo
    from hf_prune.evaluation import perplexity
    from hf_prune.plots.report import plot_quality_vs_sparsity

    progress = not args.no_progress
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    dense, tokenizer = _load(args)
    heldout = zoo.get_eval_texts("heldout")
    calib_file = zoo.write_split_text("calibration", out / "calibration.txt")
    calibration = CalibrationConfig(dataset=str(calib_file), nsamples=args.nsamples, seqlen=args.seqlen)

    def ppl(m: Any) -> float:
        return perplexity(
            m, tokenizer, heldout, seqlen=args.seqlen, max_windows=args.eval_windows, progress=False
        )

    dense_ppl = ppl(dense)
    dense_params = sum(p.numel() for p in dense.parameters())
    dense_nonzero = sum(int(p.count_nonzero()) for p in dense.parameters())
    jobs = [
        (method, "unstructured", {"method": method, "sparsity": sparsity})
        for sparsity in sorted(args.sparsities)
        for method in args.methods
    ]
    if args.structured:
        structured = {"method": args.structured, "sparsity": args.structured_sparsity, "scope": "mlp"}
        jobs.append((args.structured, "structured", {**structured, "round_to": 8}))
    rows: list[dict[str, Any]] = []
    models: dict[tuple[str, float], Any] = {}
    for method, kind, fields in jobs:
        config = PruningConfig.from_dict(fields)
        needs_data = bool(getattr(config, "needs", ""))  # the config says whether it calibrates
        start = time.perf_counter()
        pruned = prune(
            copy.deepcopy(dense),
            config,
            calibration=calibration if needs_data else None,
            tokenizer=tokenizer,
            progress=progress,
        )
        seconds = time.perf_counter() - start
        value = ppl(pruned)
        # Time the model as it is deployed: masks baked into the weights, not the reversible
        # parametrization (which multiplies every mask on every forward pass).
        pruned.finalize()
        speed = pruned.measure_speed(dense, seqlen=args.seqlen, repeats=args.latency_repeats)
        pruned.report.evaluation["perplexity"] = {"before": round(dense_ppl, 3), "after": round(value, 3)}
        rep = pruned.report
        rows.append(
            {
                "method": method,
                "kind": kind,
                "sparsity": fields["sparsity"],
                "value": value,
                "measured_sparsity": _removed_fraction(rep),
                "params": rep.params_after,
                "nonzero": rep.nonzero_after,
                "latency_ms": speed["pruned_ms"],
                "dense_latency_ms": speed["baseline_ms"],
                "speedup": speed["speedup"],
                "ideal_speedup": speed.get("ideal_speedup"),
                "prune_s": seconds,
            }
        )
        models[(method, fields["sparsity"])] = pruned

    top = max(args.sparsities)
    best = min(
        (r for r in rows if r["sparsity"] == top and r["kind"] == "unstructured"), key=lambda r: r["value"]
    )
    chosen = models[(best["method"], top)]
    probe = tokenizer(heldout[0][:4000], return_tensors="pt")["input_ids"][:, : args.seqlen]
    folder, same = _save_and_check(chosen, out / "pruned", tokenizer, probe)
    structured_folder = None
    if args.structured:
        smodel = models[(args.structured, args.structured_sparsity)]
        structured_folder, same_structured = _save_and_check(smodel, out / "structured", tokenizer, probe)
        same = same and same_structured
    plot = out / "perplexity_vs_sparsity.png"
    plot_rows = [
        {**r, "method": r["method"] + (" (whole MLP neurons)" if r["kind"] == "structured" else "")}
        for r in rows
    ]
    plot_quality_vs_sparsity(
        plot_rows, dense=dense_ppl, save_path=plot, title=f"{args.model}: held-out perplexity after pruning"
    )
    latency = statistics.median(r["dense_latency_ms"] for r in rows)
    (out / "results.json").write_text(
        json.dumps(
            {"model": args.model, "dense": {"perplexity": dense_ppl, "latency_ms": latency}, "rows": rows},
            indent=2,
        )
        + "\n",
        encoding="utf-8",
    )

    print()
    print(
        f"{args.model}: held-out perplexity over {args.eval_windows} windows of {args.seqlen} tokens; "
        f"latency = median forward of 1 x {args.seqlen} tokens (torch threads: {torch.get_num_threads()})"
    )
    print()
    print(
        "| method | sparsity | perplexity | vs dense | params | non-zero | latency ms | speedup | prune s |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    print(
        f"| dense | 0% | {dense_ppl:.2f} | — | {dense_params:,} | {dense_nonzero:,} "
        f"| {latency:.1f} | 1.00x | — |"
    )
    for r in rows:
        label = f"{r['sparsity']:.0%}" + (" MLP neurons" if r["kind"] == "structured" else "")
        print(
            f"| {r['method']} | {label} | {r['value']:.2f} | {r['value'] / dense_ppl - 1:+.1%} "
            f"| {r['params']:,} | {r['nonzero']:,} | {r['latency_ms']:.1f} | {r['speedup']:.2f}x "
            f"| {r['prune_s']:.1f} |"
        )
    print()
    print(
        "Unstructured sparsity keeps every matrix's shape: the zeros cost as much as the weights they "
        "replaced, so latency does not improve. Structured pruning removes whole neurons: the matrices "
        "shrink and the model runs faster under plain transformers."
    )
    print(f"best at {top:.0%}: {best['method']} -> checkpoint {folder} (reload reproduces logits: {same})")
    if structured_folder is not None:
        print(
            f"structured: {args.structured} -> checkpoint {structured_folder} (loads with plain transformers)"
        )
    print(f"model card: {folder / 'README.md'}")
    print(f"plot:       {plot}")
    print(f"results:    {out / 'results.json'}")
    print(f"took {time.perf_counter() - t0:.0f}s")
    return 0 if same else 1

"""``hf-prune demo``: the README's first command, end to end on the embedded default.

Builds (or reuses) the zoo's trained ``llama-gqa-small``, measures held-out perplexity, prunes it with
the best registered method, measures again, saves the checkpoint with its card, checks that it
reloads to identical logits, prints a table and writes a plot. Nothing is downloaded.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import torch

#: Preference order for the demo's method: the best one registered in this install wins.
PREFERRED_METHODS = ("sparsegpt", "wanda", "magnitude")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``demo``.

    Args:
        subparsers: The ``hf-prune`` sub-parsers.
    """
    p = subparsers.add_parser("demo", help="prune the bundled trained model end to end", description=__doc__)
    p.add_argument("--model", default="llama-gqa-small", help="zoo model name")
    p.add_argument("--method", default=None, help="pruning method (default: best available)")
    p.add_argument("--sparsity", type=float, default=0.5)
    p.add_argument("--output", default="demo_out", help="folder for the pruned checkpoint and plot")
    p.add_argument("--nsamples", type=int, default=32, help="calibration windows")
    p.add_argument("--seqlen", type=int, default=256, help="calibration / evaluation window length")
    p.add_argument("--eval-windows", type=int, default=40, help="held-out windows for perplexity")
    p.add_argument(
        "--train-steps",
        type=int,
        default=None,
        help="build a shortened zoo model in OUTPUT/base with this many steps (quick checks)",
    )
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)


def pick_method(requested: str | None) -> str:
    """Return ``requested`` or the best registered method.

    Args:
        requested: A method name or ``None``.
    """
    from hf_prune.methods import METHODS

    if requested:
        METHODS.get(requested)
        return requested
    return next(m for m in PREFERRED_METHODS if m in METHODS)


def _load(args: argparse.Namespace) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from hf_prune import zoo

    if args.train_steps is None:
        return zoo.load_zoo_model(args.model)
    folder = Path(args.output) / "base"
    zoo.build_zoo_model(args.model, folder, max_steps=args.train_steps)
    return AutoModelForCausalLM.from_pretrained(folder).eval(), AutoTokenizer.from_pretrained(folder)


def run(args: argparse.Namespace) -> int:
    """Execute the demo.

    Args:
        args: Parsed arguments.

    Returns:
        Exit code (non-zero if the reloaded checkpoint does not reproduce the pruned logits).
    """
    from hf_prune import AutoPrunedModelForCausalLM, CalibrationConfig, PruningConfig, prune, zoo
    from hf_prune.evaluation import perplexity
    from hf_prune.plots.report import plot_layer_sparsity

    progress = not args.no_progress
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    model, tokenizer = _load(args)
    heldout = zoo.get_eval_texts("heldout")
    calib_file = zoo.write_split_text("calibration", out / "calibration.txt")

    def ppl(m: Any) -> float:
        return perplexity(
            m, tokenizer, heldout, seqlen=args.seqlen, max_windows=args.eval_windows, progress=progress
        )

    before = ppl(model)
    method = pick_method(args.method)
    config = PruningConfig.from_dict({"method": method, "sparsity": args.sparsity})
    calibration = CalibrationConfig(dataset=str(calib_file), nsamples=args.nsamples, seqlen=args.seqlen)
    needs_data = bool(getattr(config, "needs", ""))  # the config says whether it calibrates
    pruned = prune(
        model, config, calibration=calibration if needs_data else None, tokenizer=tokenizer, progress=progress
    )
    after = ppl(pruned)
    pruned.report.evaluation["perplexity"] = {"before": round(before, 3), "after": round(after, 3)}
    folder = pruned.save_pretrained(out / "pruned", tokenizer=tokenizer)
    reloaded = AutoPrunedModelForCausalLM.from_pretrained(folder)
    probe = tokenizer(heldout[0][:2000], return_tensors="pt")["input_ids"][:, : args.seqlen]
    with torch.no_grad():
        same = torch.allclose(pruned(input_ids=probe).logits, reloaded(input_ids=probe).logits, atol=1e-5)
    plot = out / "layer_sparsity.png"
    plot_layer_sparsity(pruned.report, save_path=plot)
    rep = pruned.report
    print()
    print("| model | method | sparsity | held-out ppl | params | non-zero |")
    print("|---|---|---:|---:|---:|---:|")
    print(
        f"| {args.model} dense | - | 0.00 | {before:.2f} | {rep.params_before:,} | {rep.nonzero_before:,} |"
    )
    print(
        f"| {args.model} pruned | {method} | {rep.sparsity:.2f} | {after:.2f} | {rep.params_after:,} | "
        f"{rep.nonzero_after:,} |"
    )
    print()
    print(f"checkpoint: {folder} (reload reproduces logits: {same})")
    print(f"model card: {folder / 'README.md'}")
    print(f"plot:       {plot}")
    print(f"took {time.perf_counter() - t0:.0f}s")
    return 0 if same else 1

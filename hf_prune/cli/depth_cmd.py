"""``hf-prune depth``: remove whole blocks with one depth strategy, save, measure, export and plot."""

from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path
from typing import Any

STRATEGY_METHODS = {
    "angular": "angular_depth",
    "influence": "block_influence",
    "ablation": "ablation_depth",
    "variance": "activation_variance",
    "iterative": "iterative_depth",
}
#: Plain transformers auto class per ``--task`` (the dense baseline is loaded with it).
_HF_AUTO = {
    "causal-lm": "AutoModelForCausalLM",
    "sequence-classification": "AutoModelForSequenceClassification",
    "image-text-to-text": "AutoModelForImageTextToText",
    "base": "AutoModel",
}


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``depth``.

    Args:
        subparsers: The ``hf-prune`` sub-parsers.
    """
    p = subparsers.add_parser(
        "depth",
        help="remove whole blocks (angular, influence, ablation, variance, iterative)",
        description=(
            "Score every block of the model's main stack, remove the least important ones, save the "
            "checkpoint (loads with plain transformers) with its card, and measure the speedup."
        ),
    )
    p.add_argument("model", help="local folder or Hub id of the model")
    p.add_argument("--strategy", required=True, choices=sorted(STRATEGY_METHODS))
    how = p.add_mutually_exclusive_group(required=True)
    how.add_argument("--num-layers", type=int, help="number of blocks to remove")
    how.add_argument("--ratio", type=float, help="fraction of blocks to remove, in (0, 1)")
    how.add_argument("--threshold", type=float, help="remove blocks scoring at most this")
    how.add_argument("--layers", type=int, nargs="+", help="remove exactly these blocks (scores recorded)")
    p.add_argument("--output", "-o", required=True, help="folder for the pruned checkpoint")
    p.add_argument("--calibration", required=True, help="calibration text: a registered name or local file")
    p.add_argument("--nsamples", type=int, default=32)
    p.add_argument("--seqlen", type=int, default=512)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--protect-first", type=int, default=2, help="leading blocks never removed (default 2)")
    p.add_argument("--protect-last", type=int, default=2, help="trailing blocks never removed (default 2)")
    p.add_argument("--protect", type=int, nargs="+", default=None, help="further blocks never removed")
    p.add_argument(
        "--contiguous",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="remove one contiguous run (default: on for angular, off otherwise)",
    )
    p.add_argument("--criterion", default="ablation", help="iterative: ablation|angular|influence|variance")
    p.add_argument("--heal-steps", type=int, default=0, help="iterative: LoRA healing steps per removal")
    p.add_argument("--task", choices=sorted(_HF_AUTO), default="causal-lm", help="model head to load")
    p.add_argument(
        "--dtype",
        choices=["float32", "bfloat16", "float16", "auto"],
        default="float32",
        help="dtype to score and save in (default float32: half-precision matmuls are slow on CPUs)",
    )
    p.add_argument("--mergekit-yaml", default=None, help="also write a mergekit passthrough config here")
    p.add_argument("--plots", default=None, help="write score / activation / trajectory figures here")
    p.add_argument("--no-speed", action="store_true", help="skip the latency measurement (no dense copy)")
    p.add_argument("--speed-seqlen", type=int, default=128, help="tokens per sequence when timing")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.set_defaults(func=run)


def config_from_args(args: argparse.Namespace) -> Any:
    """Build the depth config from the arguments.

    Args:
        args: Parsed arguments.
    """
    from hf_prune.config import PruningConfig

    data: dict[str, Any] = {
        "method": STRATEGY_METHODS[args.strategy],
        "protect_first": args.protect_first,
        "protect_last": args.protect_last,
    }
    for key in ("num_layers", "ratio", "threshold", "layers", "protect", "contiguous"):
        value = getattr(args, key)
        if value is not None:
            data[key] = value
    if args.strategy == "iterative":
        data.update(criterion=args.criterion, heal_steps=args.heal_steps)
    elif args.heal_steps:
        raise ValueError("--heal-steps applies to --strategy iterative only.")
    return PruningConfig.from_dict(data)


def _load(args: argparse.Namespace) -> tuple[Any, Any]:
    import transformers

    model = getattr(transformers, _HF_AUTO[args.task]).from_pretrained(args.model, dtype=args.dtype).eval()
    loader = transformers.AutoProcessor if args.task == "image-text-to-text" else transformers.AutoTokenizer
    return model, loader.from_pretrained(args.model)


def run(args: argparse.Namespace) -> int:
    """Execute ``hf-prune depth``.

    Args:
        args: Parsed arguments.

    Returns:
        Exit code.
    """
    from hf_prune import CalibrationConfig, prune

    progress = not args.no_progress
    if not progress:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    config = config_from_args(args)
    calibration = CalibrationConfig(
        dataset=args.calibration, nsamples=args.nsamples, seqlen=args.seqlen, seed=args.seed
    )
    model, tokenizer = _load(args)
    dense = None if args.no_speed and not args.plots else copy.deepcopy(model)
    pruned = prune(model, config, calibration=calibration, tokenizer=tokenizer, progress=progress)
    depth = pruned.report.extra["depth"]
    print(f"scores ({args.strategy}, lower = less important):")
    for block, score in sorted(depth["scores"].items(), key=lambda kv: int(kv[0])):
        mark = "  removed" if int(block) in depth["removed"] else ""
        print(f"  block {int(block):>3}: {score:.6g}{mark}")
    if not args.no_speed and dense is not None:
        speed = pruned.measure_speed(dense, seqlen=args.speed_seqlen)
        print(
            f"latency {speed['baseline_ms']:.1f} ms -> {speed['pruned_ms']:.1f} ms "
            f"(speedup {speed['speedup']:.2f}x, FLOP-proportional ideal {speed.get('ideal_speedup', 0):.2f}x)"
        )
    out = pruned.save_pretrained(Path(args.output))
    if args.mergekit_yaml:
        path = pruned.export_mergekit_yaml(args.mergekit_yaml, base_model=args.model)
        print(f"mergekit config written to {path}")
    if args.plots:
        _plots(Path(args.plots), dense, pruned, calibration, tokenizer, progress)
    print(pruned.report.summary())
    print(f"saved to {out}")
    return 0


def _plots(folder: Path, dense: Any, pruned: Any, calibration: Any, tokenizer: Any, progress: bool) -> None:
    """Score heatmap of every one-shot strategy, activations before/after, and the iterative trajectory."""
    from hf_prune.calibration.data import build_calibration_batches
    from hf_prune.methods import METHODS, PruneContext
    from hf_prune.plots import (
        depth_scores,
        plot_activation_comparison,
        plot_layer_importance,
        plot_score_trajectory,
    )

    folder.mkdir(parents=True, exist_ok=True)
    batches = build_calibration_batches(calibration, tokenizer)
    ctx = PruneContext(calibration=calibration, tokenizer=tokenizer, progress=progress, batches=batches)
    columns: dict[str, dict[int, float]] = {}
    stack = pruned._stack(pruned.pruning_config.stack)
    for name, method in STRATEGY_METHODS.items():
        if method == pruned.report.method:
            columns[name] = depth_scores(pruned.report)  # already computed on the dense model
        elif name != "iterative":
            cls = METHODS.get(method).config_class
            scored = cls(num_layers=1).score(dense, stack, ctx)  # type: ignore[call-arg,attr-defined]
            columns[name] = dict(enumerate(scored.scores))
    plot_layer_importance(columns, save_path=folder / "layer_importance.png", title="Block importance")
    inputs = {k: v[:4] for k, v in batches[0].items()}
    plot_activation_comparison(dense, pruned, inputs, save_path=folder / "activation_comparison.png")
    written = ["layer_importance.png", "activation_comparison.png"]
    if pruned.report.extra["depth"].get("rounds"):
        plot_score_trajectory(pruned.report, save_path=folder / "score_trajectory.png")
        written.append("score_trajectory.png")
    (folder / "depth_scores.json").write_text(json.dumps(columns, indent=2))
    print(f"plots written to {folder}: {', '.join(written)}")

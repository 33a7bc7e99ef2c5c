"""``hf-prune prune``: prune a local folder or Hub model and save the checkpoint."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from hf_prune.config import CONFIGS, CalibrationConfig, PruningConfig

AUTO_CHOICES = {
    "causal-lm": "AutoPrunedModelForCausalLM",
    "sequence-classification": "AutoPrunedModelForSequenceClassification",
    "image-text-to-text": "AutoPrunedModelForImageTextToText",
    "image-classification": "AutoPrunedModelForImageClassification",
    "base": "AutoPrunedModel",
}


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``prune``.

    Args:
        subparsers: The ``hf-prune`` sub-parsers.
    """
    import hf_prune.methods  # noqa: F401 - fills the method registry for --method choices

    p = subparsers.add_parser(
        "prune", help="prune a model and save it", description="Prune a model and save it."
    )
    p.add_argument("model", help="local folder or Hub id of the model to prune")
    p.add_argument("--output", "-o", required=True, help="folder to write the pruned checkpoint to")
    p.add_argument("--method", default=None, help=f"one of: {', '.join(CONFIGS.names())}")
    p.add_argument("--config", default=None, help="pruning_config.json (or folder) to take the method from")
    p.add_argument("--sparsity", type=float, default=None, help="target sparsity in [0, 1)")
    p.add_argument("--target-modules", nargs="+", default=None, help="module-name patterns to prune")
    p.add_argument("--exclude-modules", nargs="+", default=None, help="module-name patterns to keep")
    p.add_argument(
        "--set",
        dest="options",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="other config fields (values parsed as JSON when possible)",
    )
    p.add_argument("--task", choices=sorted(AUTO_CHOICES), default="causal-lm", help="model head to load")
    p.add_argument("--calibration", default=None, help="calibration data: registered name or local file")
    p.add_argument("--nsamples", type=int, default=128)
    p.add_argument("--seqlen", type=int, default=2048)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.set_defaults(func=run)


def _parse_value(raw: str) -> Any:
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw


def config_from_args(args: argparse.Namespace) -> PruningConfig:
    """Build the pruning config from ``--config`` / ``--method`` and field overrides.

    Args:
        args: Parsed arguments.

    Raises:
        ValueError: If neither ``--method`` nor ``--config`` is given, or a ``--set`` item is malformed.
    """
    if args.config:
        data = PruningConfig.from_pretrained(args.config).to_dict()
    elif args.method:
        CONFIGS.get(args.method)  # clear error listing the known methods
        data = {"method": args.method}
    else:
        raise ValueError(f"give --method (one of: {', '.join(CONFIGS.names())}) or --config FILE.")
    for key, value in (
        ("sparsity", args.sparsity),
        ("target_modules", args.target_modules),
        ("exclude_modules", args.exclude_modules),
    ):
        if value is not None:
            data[key] = value
    for item in args.options:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--set expects KEY=VALUE, got {item!r}.")
        data[key.replace("-", "_")] = _parse_value(raw)
    return PruningConfig.from_dict(data)


def run(args: argparse.Namespace) -> int:
    """Execute ``hf-prune prune``.

    Args:
        args: Parsed arguments.

    Returns:
        Exit code.
    """
    import hf_prune

    if args.no_progress:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    config = config_from_args(args)
    calibration = None
    if args.calibration:
        calibration = CalibrationConfig(
            dataset=args.calibration, nsamples=args.nsamples, seqlen=args.seqlen, seed=args.seed
        )
    auto = getattr(hf_prune, AUTO_CHOICES[args.task])
    pruned = auto.from_pretrained(
        args.model, pruning_config=config, calibration=calibration, progress=not args.no_progress
    )
    if pruned.tokenizer is None:  # none was loaded for calibration: ship the model's own, if any
        try:
            from transformers import AutoTokenizer

            pruned.tokenizer = AutoTokenizer.from_pretrained(args.model)
        except (OSError, ValueError):
            pass  # models without a tokenizer (vision) are saved without one
    out = pruned.save_pretrained(Path(args.output))
    print(pruned.report.summary())
    print(f"saved to {out}")
    return 0

"""``hf-prune layers``: layer significance extraction, plots, MV-BCS optimization and its benchmark.

Actions::

    hf-prune layers extract MODEL [--metric alpha_peak] [--sparsity 0.7] [--epsilon 0.3]
                                  [--mapping block_wise] [--output scores.json] [--pretty]
    hf-prune layers visualize SCORES [--assignments assignments.json] [--output-dir DIR]
    hf-prune layers optimize SCORES --budgets 10000000 20M 1.5e7 [--order fixed|any] [--output F] [--pretty]
    hf-prune layers benchmark [--scores SCORES] [--model MODEL] --num-cases 20 --num-verifiers 4 --output DIR

Every action returns an exit code; bad input gives a non-zero code and a one-line reason on stderr.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["add_parser", "parse_budget"]

_SUFFIXES = {"k": 1e3, "m": 1e6, "b": 1e9, "g": 1e9, "t": 1e12}


class _UserError(Exception):
    """Bad input detected by the CLI itself."""


def parse_budget(text: str) -> float:
    """Parse one verifier budget: a number of parameters, optionally with a K/M/B suffix, or ``inf``.

    Args:
        text: ``"10000000"``, ``"1e7"``, ``"10M"``, ``"1.5B"``, ``"inf"``, ...

    Returns:
        The budget as a float.

    Raises:
        ValueError: If ``text`` is not a number.
    """
    raw = text.strip()
    scale = 1.0
    if raw and raw[-1].lower() in _SUFFIXES:
        scale = _SUFFIXES[raw[-1].lower()]
        raw = raw[:-1]
    try:
        value = float(raw) * scale
    except ValueError:
        raise ValueError(
            f"--budgets: {text!r} is not a number (examples: 10000000, 1e7, 10M, 1.5B, inf)."
        ) from None
    if math.isnan(value):
        raise ValueError(f"--budgets: {text!r} is not a number.")
    return value


def _dump(data: Any, output: str | None, pretty: bool) -> None:
    text = json.dumps(data, indent=2 if pretty else None)
    if output:
        path = Path(output)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n", encoding="utf-8")
    else:
        sys.stdout.write(text + "\n")


def _guarded(action: str, fn: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Turn expected failures into a one-line message on stderr and exit code 1 (no traceback)."""

    def run(args: argparse.Namespace) -> int:
        try:
            return fn(args)
        except (_UserError, ValueError, FileNotFoundError, OSError, ImportError, KeyError, TypeError) as err:
            reason = " ".join(str(err).split()) or type(err).__name__
            print(f"hf-prune layers {action}: error: {reason}", file=sys.stderr)
            return 1

    return run


def _load_model(name_or_path: str) -> Any:
    """Load a model with the class its config names (so module names match what hf_prune prunes)."""
    import transformers

    config = transformers.AutoConfig.from_pretrained(name_or_path)
    for arch in getattr(config, "architectures", None) or []:
        cls = getattr(transformers, arch, None)
        if isinstance(cls, type) and issubclass(cls, transformers.PreTrainedModel):
            return cls.from_pretrained(name_or_path)
    return transformers.AutoModel.from_pretrained(name_or_path)


# ------------------------------------------------------------------------------------------- actions
def _extract(args: argparse.Namespace) -> int:
    from hf_prune.layer_selection.scores import extract_layer_scores

    model = _load_model(args.model)
    scores = extract_layer_scores(
        model,
        metric=args.metric,
        sparsity=args.sparsity,
        epsilon=args.epsilon,
        mapping=args.mapping,
        model_name=args.model_name or args.model,
    )
    _dump(scores.to_dict(), args.output, args.pretty)
    if args.output:
        print(
            f"wrote {args.output}: {scores.num_prunable_layers} layers in {scores.num_blocks} blocks "
            f"({args.metric})",
            file=sys.stderr,
        )
    return 0


def _visualize(args: argparse.Namespace) -> int:
    from hf_prune.layer_selection.scores import LayerScores
    from hf_prune.plots.layer_selection import (
        plot_assignments,
        plot_layer_significance,
        plot_pruning_ratios,
    )

    scores = LayerScores.load(args.scores)
    out = Path(args.output_dir or Path(args.scores).with_suffix("").as_posix() + "_plots")
    ext = args.format
    written = [out / f"significance.{ext}", out / f"pruning_ratios.{ext}"]
    plot_layer_significance(scores, save_path=written[0])
    plot_pruning_ratios(scores, save_path=written[1])
    if args.assignments:
        path = Path(args.assignments)
        if not path.is_file():
            raise FileNotFoundError(f"assignments file not found: {path}")
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("num_layers") != scores.num_prunable_layers:
            raise _UserError(
                f"{path} describes {data.get('num_layers')} layers but {args.scores} has "
                f"{scores.num_prunable_layers}."
            )
        written.append(out / f"assignments.{ext}")
        plot_assignments(data, values=scores.significance, save_path=written[-1], title=scores.model_name)
    for p in written:
        print(p)
    return 0


def _optimize(args: argparse.Namespace) -> int:
    from hf_prune.layer_selection.mvbcs import LayerSelectionOptimizer
    from hf_prune.layer_selection.scores import LayerScores

    budgets = [parse_budget(b) for b in args.budgets]
    scores = LayerScores.load(args.scores)
    result = LayerSelectionOptimizer.from_layer_scores(scores, budgets, order=args.order).solve()
    data = {
        "model_name": scores.model_name,
        "scores_file": str(args.scores),
        "metric": scores.metadata.get("metric"),
        **result.to_dict(),
    }
    _dump(data, args.output, args.pretty)
    if args.output:
        print(
            f"wrote {args.output}: benefit {result.benefit:.6g}, {len(result.selected_layers)} of "
            f"{scores.num_prunable_layers} layers assigned to {len(budgets)} verifiers",
            file=sys.stderr,
        )
    return 0


def _benchmark(args: argparse.Namespace) -> int:
    from hf_prune.layer_selection.benchmark import run_benchmark, synthetic_layer_table
    from hf_prune.layer_selection.scores import LayerScores, extract_layer_scores

    model = _load_model(args.model) if args.model else None
    if args.scores:
        scores = LayerScores.load(args.scores)
        source = f"scores file {args.scores} (metric {scores.metadata.get('metric')})"
    elif model is not None:
        scores = extract_layer_scores(model, metric="alpha_peak", model_name=args.model)
        source = f"model {args.model} (alpha_peak)"
    else:
        scores = None
    weight_norm = None
    if model is not None:
        wn = extract_layer_scores(model, metric="weight_norm")
        if scores is not None and wn.layer_names != scores.layer_names:
            raise _UserError(
                f"the layers of --model {args.model} do not match those of --scores {args.scores}."
            )
        weight_norm = wn.significance
    if scores is None:
        table = synthetic_layer_table(seed=args.seed)
        reference, costs, weight_norm = table["reference"], table["costs"], table["weight_norm"]
        source = "synthetic LLaMA-7B-shaped table (pass --scores / --model for real data)"
        print(f"hf-prune layers benchmark: using a {source}", file=sys.stderr)
    else:
        reference, costs = scores.significance, scores.num_parameters
    report = run_benchmark(
        reference,
        costs,
        weight_norm=weight_norm,
        num_cases=args.num_cases,
        num_verifiers=args.num_verifiers,
        seed=args.seed,
        order=args.order,
        fraction_range=(args.min_fraction, args.max_fraction),
        source=source,
    )
    written = report.save(args.output, plot=not args.no_plot)
    print(f"{'strategy':<16}{'mean':>10}{'median':>10}{'min':>10}{'optimal':>10}")
    for name, row in report.summary.items():
        print(
            f"{name:<16}{row['mean_relative_benefit']:>10.4f}{row['median_relative_benefit']:>10.4f}"
            f"{row['min_relative_benefit']:>10.4f}{row['optimal_cases']:>7d}/{args.num_cases}"
        )
    print(f"wrote {written['summary']}", file=sys.stderr)
    return 0


# -------------------------------------------------------------------------------------------- parser
def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``layers`` and its actions (``extract``, ``visualize``, ``optimize``, ``benchmark``).

    Each action parser sets ``func``: a callable taking the parsed namespace and returning an exit code.

    Args:
        subparsers: The ``hf-prune`` sub-command table (from ``ArgumentParser.add_subparsers``).
    """
    parser = subparsers.add_parser(
        "layers",
        help="layer significance, MV-BCS layer selection across verifiers, plots and benchmark",
        description="Layer significance extraction and exact multi-verifier budgeted contiguous "
        "selection (MV-BCS).",
    )

    def no_action(args: argparse.Namespace) -> int:
        parser.print_help(sys.stderr)
        return 2

    parser.set_defaults(func=no_action)
    actions = parser.add_subparsers(dest="layers_action", metavar="ACTION")

    p = actions.add_parser("extract", help="compute per-layer significance of a model -> scores JSON")
    p.add_argument("model", help="model folder or Hub id (loaded with its config's architecture class)")
    p.add_argument("--metric", default="alpha_peak", help="alpha_peak (ESD), weight_norm or uniform")
    p.add_argument("--sparsity", type=float, default=0.7, help="target global sparsity in [0, 1)")
    p.add_argument("--epsilon", type=float, default=0.3, help="AlphaPruning ratio spread (>= 0)")
    p.add_argument("--mapping", default="block_wise", help="AlphaPruning mapping: block_wise or layer_wise")
    p.add_argument("--model-name", default=None, help="name stored in the file (default: MODEL)")
    p.add_argument("--output", "-o", default=None, help="output JSON (default: stdout)")
    p.add_argument("--pretty", action="store_true", help="indent the JSON")
    p.set_defaults(func=_guarded("extract", _extract))

    p = actions.add_parser("visualize", help="plot significance / ratios (and an assignment) from JSON")
    p.add_argument("scores", help="scores JSON written by 'layers extract'")
    p.add_argument("--assignments", default=None, help="assignments JSON written by 'layers optimize'")
    p.add_argument("--output-dir", default=None, help="folder for the figures (default: SCORES_plots/)")
    p.add_argument("--format", default="png", choices=["png", "pdf", "svg"], help="figure format")
    p.set_defaults(func=_guarded("visualize", _visualize))

    p = actions.add_parser("optimize", help="assign contiguous layer runs to verifiers (exact MV-BCS)")
    p.add_argument("scores", help="scores JSON written by 'layers extract'")
    p.add_argument(
        "--budgets",
        nargs="+",
        required=True,
        metavar="B",
        help="one parameter budget per verifier, e.g. 10000000 20M 1.5e7 (inf = unlimited)",
    )
    p.add_argument(
        "--order",
        default="fixed",
        choices=["fixed", "any"],
        help="fixed: runs in verifier order along the layers (O(M*L)); any: any order (M <= 12)",
    )
    p.add_argument("--output", "-o", default=None, help="output JSON (default: stdout)")
    p.add_argument("--pretty", action="store_true", help="indent the JSON")
    p.set_defaults(func=_guarded("optimize", _optimize))

    p = actions.add_parser("benchmark", help="compare selection objectives on seeded budget cases")
    p.add_argument("--scores", default=None, help="reference (AlphaPruning) scores JSON")
    p.add_argument("--model", default=None, help="model for the weight-norm objective")
    p.add_argument("--num-cases", type=_positive_int, default=20, help="number of budget cases")
    p.add_argument("--num-verifiers", type=_positive_int, default=4, help="verifiers per case")
    p.add_argument("--seed", type=int, default=0, help="base seed")
    p.add_argument("--order", default="fixed", choices=["fixed", "any"], help="MV-BCS order")
    p.add_argument("--min-fraction", type=float, default=0.02, help="smallest budget / total cost")
    p.add_argument("--max-fraction", type=float, default=0.15, help="largest budget / total cost")
    p.add_argument("--output", "-o", default="layer_selection_benchmark", help="output folder")
    p.add_argument("--no-plot", action="store_true", help="skip the comparison plot")
    p.set_defaults(func=_guarded("benchmark", _benchmark))

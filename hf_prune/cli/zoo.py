"""``hf-prune zoo``: list, build and export the data of the trained reference models."""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

from hf_prune.zoo.build import (
    METRICS_NAME,
    build_zoo_model,
    cache_root,
    shipped_model_dir,
    shipped_recipe_matches,
    verify_model_dir,
)
from hf_prune.zoo.corpus import SPLITS, write_split_text
from hf_prune.zoo.recipes import ZOO_MODELS, list_models


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register the ``zoo`` sub-command.

    Args:
        subparsers: The ``hf-prune`` parser's sub-parsers.
    """
    parser = subparsers.add_parser(
        "zoo",
        help="list / build the small trained reference models",
        description=(
            "Small trained reference models built reproducibly on CPU from the Python standard library's "
            "sources. The language models ship with hf_prune (package data, sha256-checked at load); "
            "`build` re-creates any model from its recipe into $HF_PRUNE_CACHE/zoo/<name> "
            "(default ~/.cache/hf_prune) or --output."
        ),
    )
    actions = parser.add_subparsers(dest="zoo_action", metavar="ACTION")
    actions.add_parser("list", help="list the zoo models and whether they are shipped or built")
    build = actions.add_parser("build", help="build a zoo model into the cache (no-op if already valid)")
    build.add_argument("name", help=f"one of: {', '.join(list_models())}")
    build.add_argument("--rebuild", action="store_true", help="rebuild even if a valid cached copy exists")
    build.add_argument("--cache-dir", default=None, help="cache root instead of $HF_PRUNE_CACHE")
    build.add_argument(
        "--output", default=None, help="write the model to this folder instead of the cache (replaced)"
    )
    split = actions.add_parser("split", help="write a corpus split to a text file (e.g. calibration data)")
    split.add_argument("split", help=f"one of: {', '.join(SPLITS)}")
    split.add_argument("output", help="destination .txt file")
    parser.set_defaults(func=run_zoo, zoo_parser=parser)


def _error(message: str, code: int = 2) -> int:
    print(f"hf-prune zoo: error: {message}", file=sys.stderr)
    return code


def _list(args: argparse.Namespace) -> int:
    root = cache_root(getattr(args, "cache_dir", None))
    for name in list_models():
        recipe = ZOO_MODELS[name]
        shipped, model_dir = shipped_model_dir(name), root / name
        if shipped is not None and shipped_recipe_matches(shipped, recipe):
            state = "shipped" if verify_model_dir(shipped, recipe) is None else "shipped, CORRUPTED"
        elif not model_dir.exists():
            state = "not built"
        else:
            state = "built" if verify_model_dir(model_dir, recipe) is None else "stale or corrupted"
        print(f"{name:<18} {state:<18} {recipe.description}")
    return 0


def _build(args: argparse.Namespace) -> int:
    if args.name not in ZOO_MODELS:
        return _error(f"unknown zoo model {args.name!r}; known models: {', '.join(list_models())}")
    recipe = ZOO_MODELS[args.name]
    output = getattr(args, "output", None)
    model_dir = Path(output) if output else cache_root(args.cache_dir) / args.name
    if model_dir.exists() and not args.rebuild:
        problem = verify_model_dir(model_dir, recipe)
        if problem is None:
            print(f"{args.name} is already built at {model_dir}")
            return 0
        warnings.warn(
            f"cached {args.name} is not usable ({problem}); rebuilding it", RuntimeWarning, stacklevel=1
        )
    try:
        path = build_zoo_model(args.name, model_dir)
    except ImportError as exc:
        return _error(str(exc).splitlines()[0], code=1)
    metrics = json.loads((path / METRICS_NAME).read_text(encoding="utf-8"))
    for entry in metrics["evaluation"]:
        print(
            f"{args.name}: {entry['split']} {entry['metric']} {entry['value']:.4g} "
            f"(baseline {entry['baseline']:.4g}: {entry['baseline_name']})"
        )
    print(f"built {args.name} at {path} in {metrics['training']['wall_time_s']:.0f} s")
    return 0


def _split(args: argparse.Namespace) -> int:
    if args.split not in SPLITS:
        return _error(f"unknown split {args.split!r}; allowed: {', '.join(SPLITS)}")
    try:
        path = write_split_text(args.split, args.output)
    except OSError as exc:
        return _error(f"cannot write {args.output!r}: {exc.strerror or exc}")
    print(f"wrote the {args.split} split to {path}")
    return 0


def run_zoo(args: argparse.Namespace) -> int:
    """Run ``hf-prune zoo ACTION``.

    Args:
        args: Parsed arguments (``zoo_action`` and the action's options).

    Returns:
        The exit code: 0 on success, 2 on bad input, 1 when a dependency is missing.
    """
    action = getattr(args, "zoo_action", None)
    if action == "list":
        return _list(args)
    if action == "build":
        return _build(args)
    if action == "split":
        return _split(args)
    return _error("missing ACTION; use one of: list, build, split (see `hf-prune zoo --help`)")

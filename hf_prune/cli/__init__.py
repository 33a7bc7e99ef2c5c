"""The ``hf-prune`` command line. Sub-commands are registered explicitly in :data:`COMMANDS`."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from hf_prune.cli import card, demo, depth_cmd, layers, lm_eval_cmd, lut_cmd, prune_cmd, zoo
from hf_prune.cli import eval as eval_cmd
from hf_prune.version import __version__

#: Each entry adds one sub-command to the parser (``add_parser(subparsers)``).
COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [
    prune_cmd.add_parser,
    depth_cmd.add_parser,
    lut_cmd.add_parser,
    demo.add_parser,
    zoo.add_parser,
    layers.add_parser,
    eval_cmd.add_parser,
    card.add_parser,
    lm_eval_cmd.add_parser,
]


def build_parser() -> argparse.ArgumentParser:
    """Return the ``hf-prune`` argument parser with every registered sub-command."""
    parser = argparse.ArgumentParser(
        prog="hf-prune",
        description="Post-training pruning for Hugging Face transformers models.",
    )
    parser.add_argument("--version", action="version", version=f"hf_prune {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in COMMANDS:
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``hf-prune``; bad input exits non-zero with a one-line reason, never a traceback.

    Args:
        argv: Arguments (default: ``sys.argv[1:]``).

    Returns:
        The exit code.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    try:
        return int(func(args) or 0)
    except (ValueError, TypeError, FileNotFoundError) as err:
        print(f"hf-prune {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # pragma: no cover - interactive only
        print("hf-prune: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

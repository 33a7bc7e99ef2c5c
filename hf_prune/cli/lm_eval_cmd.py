r"""``hf-prune lm-eval ARGS...``: lm-eval's own command line, with the ``hf-pruned`` model type registered.

lm-eval 0.4.13 reads no plugin entry points, so ``lm_eval --model hf-pruned`` cannot find hf_prune's
model class. This command registers it and then hands ``ARGS`` unchanged to lm-eval's CLI entry
(``lm_eval.__main__.cli_evaluate``), so every lm-eval option works as documented there::

    hf-prune lm-eval --model hf-pruned --model_args pretrained=out/llama-wanda-50 \
        --tasks hellaswag arc_easy --batch_size 8 --output_path results/

    TASKS=$(python -c 'from hf_prune.evaluation import local_task_dir; print(local_task_dir())')
    hf-prune lm-eval --model hf-pruned --model_args pretrained=out/ckpt --tasks hf_prune_local \
        --include_path "$TASKS"

``python -m hf_prune.cli.lm_eval_cmd ARGS...`` does the same without the ``hf-prune`` entry point.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``lm-eval``.

    Args:
        subparsers: The ``hf-prune`` sub-parsers.
    """
    p = subparsers.add_parser(
        "lm-eval",
        help="run lm-evaluation-harness with the hf-pruned model type registered",
        description=(
            "Pass-through to lm-eval's CLI with the 'hf-pruned' model type registered. Every argument "
            "is handed to lm-eval unchanged; see 'hf-prune lm-eval --help' for lm-eval's options."
        ),
        # No option is ours: '-h' and every '--flag' must reach lm-eval untouched.
        add_help=False,
        prefix_chars="\x00",
    )
    p.add_argument("lm_eval_args", nargs=argparse.REMAINDER, help="arguments for lm-eval")
    p.set_defaults(func=run)


def run_lm_eval_cli(argv: Sequence[str]) -> int:
    """Register ``hf-pruned`` and run lm-eval's CLI on ``argv``.

    Args:
        argv: lm-eval arguments (without the program name).

    Returns:
        lm-eval's exit status (0 on success).
    """
    from hf_prune.evaluation.lm_eval import register_hf_pruned

    try:
        register_hf_pruned()
    except ImportError as err:
        print(f"hf-prune lm-eval: error: {err}", file=sys.stderr)
        return 2
    from lm_eval.__main__ import cli_evaluate

    saved = sys.argv
    # lm-eval's HarnessCLI reads sys.argv itself (and inserts 'run' for the legacy spelling).
    sys.argv = ["lm-eval", *argv]
    try:
        cli_evaluate()
    except SystemExit as done:  # argparse --help / errors inside lm-eval
        code = done.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    finally:
        sys.argv = saved
    return 0


def run(args: argparse.Namespace) -> int:
    """Run ``hf-prune lm-eval``.

    Args:
        args: Parsed arguments (``lm_eval_args``).

    Returns:
        The exit code.
    """
    return run_lm_eval_cli(list(args.lm_eval_args))


def main(argv: Sequence[str] | None = None) -> int:
    """Entry for ``python -m hf_prune.cli.lm_eval_cmd ARGS...``.

    Args:
        argv: lm-eval arguments (default: ``sys.argv[1:]``).

    Returns:
        The exit code.
    """
    return run_lm_eval_cli(list(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":  # pragma: no cover - exercised through a subprocess in the tests
    sys.exit(main())

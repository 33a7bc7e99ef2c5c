"""``hf-prune card FOLDER``: re-render a saved checkpoint's model card (``README.md``)."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``card``.

    Args:
        subparsers: The ``hf-prune`` sub-parsers.
    """
    p = subparsers.add_parser(
        "card",
        help="re-render the model card of a saved checkpoint",
        description=(
            "Re-render README.md of an hf_prune checkpoint folder from its pruning_config.json "
            "(report, evaluation results) and embed the PNG plots found in the folder."
        ),
    )
    p.add_argument("folder", help="hf_prune checkpoint folder")
    p.add_argument("--repo-id", default=None, help="Hub repo id to write in the loading snippet")
    p.add_argument(
        "--plots",
        action="store_true",
        help="first draw the report's plots into the folder (per-block pruning, sparsity, benchmarks)",
    )
    p.add_argument("--print", dest="show", action="store_true", help="print the card after writing it")
    p.set_defaults(func=run)


def draw_report_plots(folder: Path, pruned: object) -> list[Path]:
    """Draw the plots a report supports into ``folder``; return the files written.

    Args:
        folder: Checkpoint folder.
        pruned: The loaded ``PrunedModel``.

    Returns:
        Paths of the PNG files written.
    """
    import matplotlib.pyplot as plt

    from hf_prune.plots.eval import plot_benchmark_comparison, plot_layer_ratios
    from hf_prune.plots.report import plot_layer_sparsity

    report = pruned.report  # type: ignore[attr-defined]
    written = []
    jobs = [
        ("per_block_pruning.png", plot_layer_ratios),
        ("layer_sparsity.png", plot_layer_sparsity),
        ("benchmarks.png", plot_benchmark_comparison),
    ]
    for name, fn in jobs:
        try:
            fig = fn(report, save_path=folder / name)
        except ValueError:
            continue  # the report has nothing this plot shows (e.g. no unstructured rows)
        plt.close(fig)
        written.append(folder / name)
    return written


def run(args: argparse.Namespace) -> int:
    """Execute ``hf-prune card``.

    Args:
        args: Parsed arguments.

    Returns:
        Exit code.
    """
    from hf_prune.config import CONFIG_NAME
    from hf_prune.integration.auto import load_checkpoint_any
    from hf_prune.integration.card import write_card

    folder = Path(args.folder).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(f"{str(folder)!r} is not a folder")
    if not (folder / CONFIG_NAME).is_file():
        raise FileNotFoundError(f"{str(folder)!r} is not an hf_prune checkpoint (no {CONFIG_NAME})")
    pruned = load_checkpoint_any(folder)
    if args.plots:
        for path in draw_report_plots(folder, pruned):
            print(f"wrote {path}")
    out = write_card(folder, repo_id=args.repo_id, pruned=pruned)
    print(f"wrote {out}")
    if args.show:
        print(out.read_text(encoding="utf-8"))
    return 0

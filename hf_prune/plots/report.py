"""Figures drawn from a ``PruningReport``."""

from __future__ import annotations

import os
from typing import Any

from hf_prune.report import PruningReport


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=False)  # headless by default; respects an interactive backend if set
    import matplotlib.pyplot as plt

    return plt


def plot_layer_sparsity(
    report: PruningReport, save_path: str | os.PathLike[str] | None = None, title: str | None = None
) -> Any:
    """Bar chart of requested vs measured sparsity per pruned projection.

    Args:
        report: A pruning report with ``linear`` rows.
        save_path: Write the figure here (PNG/SVG by extension) when given.
        title: Figure title.

    Returns:
        The ``matplotlib.figure.Figure``.

    Raises:
        ValueError: If the report has no per-projection rows.
    """
    import seaborn as sns

    rows = [r for r in report.layers if r.kind == "linear" and r.sparsity_measured is not None]
    if not rows:
        raise ValueError("plot_layer_sparsity needs a report with per-projection (unstructured) rows.")
    plt = _pyplot()
    sns.set_theme(style="whitegrid")
    fig, ax = plt.subplots(figsize=(max(6.0, 0.18 * len(rows)), 3.6))
    xs = list(range(len(rows)))
    ax.bar(xs, [r.sparsity_measured for r in rows], color=sns.color_palette()[0], label="measured")
    ax.plot(
        xs,
        [r.ratio_requested for r in rows],
        color=sns.color_palette()[3],
        marker=".",
        lw=1,
        label="requested",
    )
    ax.set_xticks(xs)
    ax.set_xticklabels([r.name.split("layers.")[-1] for r in rows], rotation=90, fontsize=6)
    ax.set_ylabel("sparsity")
    ax.set_ylim(0, 1)
    ax.set_title(title or f"{report.method}: per-layer sparsity")
    ax.legend(loc="upper right")
    fig.tight_layout()
    if save_path is not None:
        fig.savefig(save_path, dpi=120)
    return fig

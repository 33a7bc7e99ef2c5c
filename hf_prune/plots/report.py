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


def plot_quality_vs_sparsity(
    results: list[dict[str, Any]],
    dense: float | None = None,
    metric: str = "perplexity",
    save_path: str | os.PathLike[str] | None = None,
    title: str | None = None,
) -> Any:
    """Line plot of a quality metric against sparsity, one line per method.

    Args:
        results: Rows ``{"method": str, "sparsity": float, "value": float}`` (several per method).
        dense: The dense model's value, drawn as a dashed reference line and the 0-sparsity point.
        metric: Name of the metric (axis label; a log axis is used for ``"perplexity"``).
        save_path: Write the figure here (PNG/SVG by extension) when given.
        title: Figure title.

    Returns:
        The ``matplotlib.figure.Figure``.

    Raises:
        ValueError: If ``results`` is empty or a row lacks ``method``, ``sparsity`` or ``value``.
    """
    import seaborn as sns

    if not results:
        raise ValueError("results is empty; pass rows {'method', 'sparsity', 'value'}")
    for row in results:
        if not {"method", "sparsity", "value"} <= set(row):
            raise ValueError(f"result row {row!r} lacks one of 'method', 'sparsity', 'value'")
    plt = _pyplot()
    sns.set_theme(style="whitegrid")
    fig, ax = plt.subplots(figsize=(6.0, 4.0))
    methods = list(dict.fromkeys(str(r["method"]) for r in results))
    palette = sns.color_palette(n_colors=max(3, len(methods)))
    for colour, method in zip(palette, methods, strict=False):
        rows = sorted((r for r in results if r["method"] == method), key=lambda r: r["sparsity"])
        xs = [float(r["sparsity"]) for r in rows]
        ys = [float(r["value"]) for r in rows]
        if dense is not None:
            xs, ys = [0.0, *xs], [float(dense), *ys]
        ax.plot(xs, ys, marker="o", color=colour, label=method)
        ax.annotate(f"{ys[-1]:.1f}", (xs[-1], ys[-1]), textcoords="offset points", xytext=(4, 0), fontsize=8)
    if dense is not None:
        ax.axhline(float(dense), color="grey", ls="--", lw=1, label=f"dense ({float(dense):.2f})")
    if metric == "perplexity":
        from matplotlib.ticker import FuncFormatter

        ax.set_yscale("log")
        plain = FuncFormatter(lambda v, _: f"{v:g}")
        ax.yaxis.set_major_formatter(plain)
        ax.yaxis.set_minor_formatter(plain)
    ax.set_xlabel("sparsity of the pruned layers")
    ax.set_ylabel(f"{metric} (lower is better)" if metric == "perplexity" else metric)
    ax.xaxis.set_major_formatter(plt.FuncFormatter(lambda v, _: f"{v:.0%}"))
    ax.set_title(title or f"{metric} vs sparsity")
    ax.legend()
    fig.tight_layout()
    if save_path is not None:
        fig.savefig(save_path, dpi=120)
    return fig

"""Figures for depth pruning: block scores of every strategy, before/after activations, the iterative run.

Every function returns the ``Figure`` and writes it to ``save_path`` when one is given.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from hf_prune.plots.eval import _finish, _pyplot, _sns, activation_norms, plot_activation_norms
from hf_prune.report import PruningReport

__all__ = ["depth_scores", "plot_activation_comparison", "plot_score_trajectory"]


def _depth_record(source: PruningReport | Mapping[str, Any]) -> Mapping[str, Any]:
    if isinstance(source, PruningReport):
        record = (source.extra or {}).get("depth")
        if not record:
            raise ValueError(
                f"The report of method {source.method!r} has no depth record (report.extra['depth']); "
                "run a depth method (AngularDepthConfig, IterativeDepthConfig, ...) first."
            )
        return record
    if isinstance(source, Mapping):
        return source
    raise TypeError(f"Expected a PruningReport or its extra['depth'] dict, got {type(source).__name__}.")


def depth_scores(source: PruningReport | Mapping[str, Any]) -> dict[int, float]:
    """Return ``{original block: score}`` recorded by a depth method (round 1 for the iterative one).

    Feed several of them to :func:`hf_prune.plots.plot_layer_importance` to compare strategies.

    Args:
        source: A :class:`PruningReport` or its ``extra["depth"]`` dict.
    """
    return {int(k): float(v) for k, v in _depth_record(source)["scores"].items()}


def plot_activation_comparison(
    dense: Any,
    pruned: Any,
    inputs: Mapping[str, Any],
    *,
    stack: str | None = None,
    save_path: str | os.PathLike[str] | None = None,
    title: str | None = None,
) -> Any:
    """Block output norms of the dense and the pruned model on the same inputs (removed blocks greyed).

    Args:
        dense: The model before pruning.
        pruned: The :class:`~hf_prune.PrunedModel` (blocks keep their original numbers).
        inputs: Model inputs (``input_ids`` ...).
        stack: Stack name (default: the main stack).
        save_path: Write the figure here when given.
        title: Figure title.

    Returns:
        The figure.
    """
    before = activation_norms(dense, inputs, stack=stack)
    after = activation_norms(pruned, inputs, stack=stack)
    return plot_activation_norms(
        before, after, save_path=save_path, title=title or "Block output norms before / after depth pruning"
    )


def plot_score_trajectory(
    source: PruningReport | Mapping[str, Any] | Sequence[Mapping[str, Any]],
    *,
    save_path: str | os.PathLike[str] | None = None,
    title: str | None = None,
) -> Any:
    """Each block's score over the rounds of the iterative pruner; a cross marks the round it was removed.

    Args:
        source: A report of :class:`~hf_prune.IterativeDepthConfig`, its ``extra["depth"]`` dict, or the
            list of rounds (``{"round", "scores": {block: score}, "removed"}``).
        save_path: Write the figure here when given.
        title: Figure title.

    Returns:
        The figure.

    Raises:
        ValueError: If there are no rounds.
    """
    if isinstance(source, Sequence) and not isinstance(source, (str, bytes)):
        rounds = list(source)
    else:
        rounds = list(_depth_record(source).get("rounds") or [])  # type: ignore[arg-type]
    if not rounds:
        raise ValueError("No iterative rounds to plot: pass the report of an IterativeDepthConfig run.")
    blocks = sorted({int(k) for r in rounds for k in r["scores"]})
    x = [int(r.get("round", i + 1)) for i, r in enumerate(rounds)]
    sns = _sns()
    plt = _pyplot()
    palette = sns.color_palette("husl", len(blocks))
    fig, ax = plt.subplots(figsize=(max(5.0, 0.8 * len(x) + 3), 4.2))
    for color, b in zip(palette, blocks, strict=True):
        ys = [r["scores"].get(str(b), np.nan) for r in rounds]
        ax.plot(x, ys, marker="o", ms=3, color=color, label=f"block {b}")
        for xi, r in zip(x, rounds, strict=True):
            if int(r["removed"]) == b:
                ax.scatter([xi], [r["scores"][str(b)]], marker="x", s=80, color=color, zorder=5)
    ax.set_xlabel("round")
    ax.set_ylabel("score (lower = removed first)")
    ax.set_xticks(x)
    ax.set_title(title or "Iterative depth pruning: block scores per round (x: removed)")
    if len(blocks) <= 24:
        ax.legend(frameon=False, fontsize=7, ncol=2, bbox_to_anchor=(1.01, 1), loc="upper left")
    return _finish(fig, save_path)

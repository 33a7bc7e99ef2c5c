"""Seaborn / matplotlib figures. Every function returns the ``Figure`` and optionally saves it.

A thin re-export file: each topic lives in its own module (``layer_selection``, ...) and adds its public
functions here.
"""

from hf_prune.plots.layer_selection import (
    plot_assignments,
    plot_layer_significance,
    plot_pruning_ratios,
    plot_strategy_comparison,
)
from hf_prune.plots.report import plot_layer_sparsity

__all__ = [
    "plot_assignments",
    "plot_layer_significance",
    "plot_layer_sparsity",
    "plot_pruning_ratios",
    "plot_strategy_comparison",
]

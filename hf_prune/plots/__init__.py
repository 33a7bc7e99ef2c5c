"""Seaborn / matplotlib figures. Every function returns the ``Figure`` and optionally saves it.

A thin re-export file: each topic lives in its own module (``layer_selection``, ...) and adds its public
functions here.
"""

from hf_prune.plots.depth import depth_scores, plot_activation_comparison, plot_score_trajectory
from hf_prune.plots.eval import (
    activation_norms,
    plot_activation_norms,
    plot_benchmark_comparison,
    plot_layer_importance,
    plot_layer_ratios,
    plot_semantic_drift,
    report_layer_scores,
)
from hf_prune.plots.layer_selection import (
    plot_assignments,
    plot_layer_significance,
    plot_pruning_ratios,
    plot_strategy_comparison,
)
from hf_prune.plots.report import plot_layer_sparsity, plot_quality_vs_sparsity

__all__ = [
    "activation_norms",
    "depth_scores",
    "plot_activation_comparison",
    "plot_activation_norms",
    "plot_assignments",
    "plot_benchmark_comparison",
    "plot_layer_importance",
    "plot_layer_ratios",
    "plot_layer_significance",
    "plot_layer_sparsity",
    "plot_pruning_ratios",
    "plot_quality_vs_sparsity",
    "plot_score_trajectory",
    "plot_semantic_drift",
    "plot_strategy_comparison",
    "report_layer_scores",
]

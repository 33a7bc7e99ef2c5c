"""Allocation: one sparsity ratio per prunable layer, in module order (pure functions over arrays)."""

from __future__ import annotations

from hf_prune.allocation.alpha_pruning import alpha_factors, alpha_pruning_ratios, scale_to_target
from hf_prune.allocation.global_threshold import global_threshold_counts, global_threshold_ratios
from hf_prune.allocation.owl import layer_outlier_ratio, owl_ratios
from hf_prune.allocation.uniform import uniform_ratios, weighted_sparsity

__all__ = [
    "alpha_factors",
    "alpha_pruning_ratios",
    "global_threshold_counts",
    "global_threshold_ratios",
    "layer_outlier_ratio",
    "owl_ratios",
    "scale_to_target",
    "uniform_ratios",
    "weighted_sparsity",
]

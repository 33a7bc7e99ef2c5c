"""Scoring: importance of each weight (or neuron) as pure tensor functions, one module per method."""

from __future__ import annotations

from hf_prune.scoring.afr import afr_neuron_scores, afr_scores, standardize_group
from hf_prune.scoring.magnitude import magnitude_scores
from hf_prune.scoring.refer_svd import refer_svd_neuron_scores, refer_svd_scores, representation_svd_loss
from hf_prune.scoring.snip import neuron_taylor_scores, snip_scores
from hf_prune.scoring.sparsegpt import sparsegpt_prune
from hf_prune.scoring.wanda import wanda_mask, wanda_scores

__all__ = [
    "afr_neuron_scores",
    "afr_scores",
    "magnitude_scores",
    "neuron_taylor_scores",
    "refer_svd_neuron_scores",
    "refer_svd_scores",
    "representation_svd_loss",
    "snip_scores",
    "sparsegpt_prune",
    "standardize_group",
    "wanda_mask",
    "wanda_scores",
]

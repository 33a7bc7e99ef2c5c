"""Magnitude pruning: remove the smallest-|W| weights of each targeted projection.

Follows Han et al., "Learning both Weights and Connections for Efficient Neural Networks" (NeurIPS
2015), the standard data-free baseline of the Wanda / SparseGPT papers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from hf_prune.calibration.stats import StatCollector
from hf_prune.methods.unstructured import UnstructuredConfig
from hf_prune.scoring.magnitude import magnitude_scores


@dataclass
class MagnitudeConfig(UnstructuredConfig):
    """Unstructured or N:M magnitude pruning.

    Args:
        sparsity: Target fraction of weights removed, in ``[0, 1)``.
        pattern: ``"unstructured"`` or ``"N:M"``.
        allocation: ``"uniform"`` (the paper's setting), ``"global"``, ``AlphaAllocation`` or
            ``OWLAllocation`` (OWL computes its outlier ratios from calibration data).
        target_modules: Patterns of projections to prune (default: all projections in the blocks;
            embeddings and ``lm_head`` are never targeted unless named explicitly).
        exclude_modules: Patterns never pruned.
    """

    method: ClassVar[str] = "magnitude"
    paper: ClassVar[str] = (
        "Han et al., Learning both Weights and Connections for Efficient Neural Networks (NeurIPS 2015)"
    )

    def score(self, weight: torch.Tensor, stats: dict[str, StatCollector]) -> torch.Tensor:
        """|W|.

        Args:
            weight: ``[out, in]`` weight.
            stats: Unused.
        """
        return magnitude_scores(weight)

"""Wanda: pruning by weights and activations (Sun et al., ICLR 2024)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from hf_prune.calibration.stats import StatCollector
from hf_prune.methods.unstructured import UnstructuredConfig, check_propagation, propagation_field
from hf_prune.scoring.wanda import wanda_scores


@dataclass
class WandaConfig(UnstructuredConfig):
    """Wanda: score ``|W_ij| · ‖X_j‖₂``, compared within each output row.

    Args:
        sparsity: Target fraction of weights removed, in ``[0, 1)``.
        pattern: ``"unstructured"`` or ``"N:M"``.
        allocation: ``"uniform"``, ``"global"``, ``AlphaAllocation`` or ``OWLAllocation``.
        propagation: ``"pruned"`` (default, as the paper) or ``"dense"`` (one forward per block; the
            next block's statistics come from the dense outputs).
        target_modules: Patterns of projections to prune.
        exclude_modules: Patterns never pruned.
    """

    method: ClassVar[str] = "wanda"
    paper: ClassVar[str] = (
        "Sun et al., A Simple and Effective Pruning Approach for Large Language Models (ICLR 2024)"
    )
    needs: ClassVar[str] = "sq_norm"
    compare: ClassVar[str] = "row"

    propagation: str = propagation_field()

    def __post_init__(self) -> None:
        super().__post_init__()
        check_propagation(self.propagation)

    def score(self, weight: torch.Tensor, stats: dict[str, StatCollector]) -> torch.Tensor:
        """Wanda scores from the accumulated squared input norms.

        Args:
            weight: ``[out, in]`` weight.
            stats: Must hold ``"sq_norm"``.
        """
        return wanda_scores(weight, stats["sq_norm"].sum_sq.to(weight.device))  # type: ignore[attr-defined]

"""First-order (gradient) unstructured methods: SNIP, ReFer-SVD and AFR."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from hf_prune.methods.unstructured import UnstructuredConfig
from hf_prune.scoring.afr import afr_scores
from hf_prune.scoring.refer_svd import refer_svd_scores
from hf_prune.scoring.snip import snip_scores


@dataclass
class SNIPConfig(UnstructuredConfig):
    """SNIP: keep the weights with the largest ``|W · ∂L/∂W|`` for the calibration LM loss.

    Args:
        sparsity: Target fraction of weights removed, in ``[0, 1)``.
        pattern: ``"unstructured"`` or ``"N:M"``.
        allocation: ``"uniform"``, ``"global"``, ``AlphaAllocation`` or ``OWLAllocation``.
        target_modules: Patterns of projections to prune.
        exclude_modules: Patterns never pruned.
    """

    method: ClassVar[str] = "snip"
    paper: ClassVar[str] = (
        "Lee et al., SNIP: Single-shot Network Pruning based on Connection Sensitivity (ICLR 2019)"
    )
    needs: ClassVar[str] = "grad"
    objectives: ClassVar[tuple[str, ...]] = ("ce",)

    def score(self, weight: torch.Tensor, stats: dict[str, Any]) -> torch.Tensor:
        """|W · g| with the accumulated LM-loss gradient.

        Args:
            weight: ``[out, in]`` weight.
            stats: Holds ``"grad_ce"``.
        """
        return snip_scores(weight, stats["grad_ce"].to(weight.device))


@dataclass
class ReferSVDConfig(UnstructuredConfig):
    """ReFer-SVD: first-order importance for the representation loss (mean singular value of outputs).

    Args:
        sparsity: Target fraction of weights removed, in ``[0, 1)``.
        pattern: ``"unstructured"`` or ``"N:M"``.
        allocation: ``"uniform"``, ``"global"``, ``AlphaAllocation`` or ``OWLAllocation``.
        target_modules: Patterns of projections to prune.
        exclude_modules: Patterns never pruned.
    """

    method: ClassVar[str] = "refer_svd"
    paper: ClassVar[str] = (
        "ReFer-SVD representation-feature importance "
        "(AFR/ReFer research code; see hf_prune.scoring.refer_svd)"
    )
    needs: ClassVar[str] = "grad"
    objectives: ClassVar[tuple[str, ...]] = ("rep",)

    def score(self, weight: torch.Tensor, stats: dict[str, Any]) -> torch.Tensor:
        """|W · ∂L_rep/∂W|.

        Args:
            weight: ``[out, in]`` weight.
            stats: Holds ``"grad_rep"``.
        """
        return refer_svd_scores(weight, stats["grad_rep"].to(weight.device))


@dataclass
class AFRConfig(UnstructuredConfig):
    """AFR: z-scored first-order representation score plus z-scored SNIP score.

    Each term is standardized over the group compared together (one layer for ``"uniform"``, all
    layers for ``"global"``), then summed.

    Args:
        sparsity: Target fraction of weights removed, in ``[0, 1)``.
        pattern: ``"unstructured"`` or ``"N:M"``.
        allocation: ``"uniform"``, ``"global"``, ``AlphaAllocation`` or ``OWLAllocation``.
        target_modules: Patterns of projections to prune.
        exclude_modules: Patterns never pruned.
    """

    method: ClassVar[str] = "afr"
    paper: ClassVar[str] = (
        "AFR: first-order representation + SNIP scores, standardized and summed (see hf_prune.scoring.afr)"
    )
    needs: ClassVar[str] = "grad"
    objectives: ClassVar[tuple[str, ...]] = ("rep", "ce")

    def score(self, weight: torch.Tensor, stats: dict[str, Any]) -> torch.Tensor:
        """AFR score of one layer standardized on its own.

        Args:
            weight: ``[out, in]`` weight.
            stats: Holds ``"grad_rep"`` and ``"grad_ce"``.
        """
        return self.score_group([weight], [stats])[0]

    def score_group(self, weights: list[torch.Tensor], stats: list[dict[str, Any]]) -> list[torch.Tensor]:
        """AFR scores standardized over ``weights`` together.

        Args:
            weights: ``[out, in]`` weights compared together.
            stats: Their gradients.
        """
        return afr_scores(
            weights,
            [s["grad_rep"].to(w.device) for w, s in zip(weights, stats, strict=True)],
            [s["grad_ce"].to(w.device) for w, s in zip(weights, stats, strict=True)],
        )

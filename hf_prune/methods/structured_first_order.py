"""First-order (gradient) width pruning: structured SNIP, ReFer-SVD and AFR over neurons and heads.

The gradients come from :func:`hf_prune.calibration.gradients.accumulate_gradients` (the same
calibration as the unstructured methods); each unit's score aggregates the signed first-order terms
``W · ∂L/∂W`` of all its coupled weights with the group Taylor reduction of
:mod:`hf_prune.scoring.structured` (equal to :func:`hf_prune.scoring.snip.neuron_taylor_scores` for
MLP neurons, the AFR / structured-SNIP reference code's ``calculate_neuron_score``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from hf_prune.methods.structured import StructuredConfig
from hf_prune.scoring.afr import afr_neuron_scores


def _taylor(weight: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    return weight.float() * grad.float().to(weight.device)


@dataclass
class StructuredSNIPConfig(StructuredConfig):
    """Structured SNIP: keep the units whose removal changes the calibration LM loss most (first order).

    SNIP's connection sensitivity ``W · ∂L/∂W`` (Lee et al., ICLR 2019) summed over each unit's coupled
    weights per hidden feature, trimmed-mean, absolute value: the group Taylor score (Molchanov et al.,
    CVPR 2019) of LLM-Pruner's coupled structures (Ma et al., NeurIPS 2023).

    Args:
        sparsity: Fraction of targeted units removed, in ``[0, 1)``.
        scope: ``"mlp"``, ``"attention"`` or ``"both"``.
        allocation: ``"uniform"`` or ``"global"``.
        round_to: Kept MLP width per layer is a multiple of this.
        min_keep: Fewest units kept per layer.
        head_granularity: ``"query"`` or ``"kv_group"`` under GQA.
        target_modules: Patterns of projections whose structures are pruned.
        exclude_modules: Patterns whose structures are left whole.
    """

    method: ClassVar[str] = "structured_snip"
    paper: ClassVar[str] = (
        "Lee et al., SNIP: Single-shot Network Pruning based on Connection Sensitivity (ICLR 2019)"
    )
    needs: ClassVar[str] = "grad"
    objectives: ClassVar[tuple[str, ...]] = ("ce",)
    reduce: ClassVar[str] = "taylor"

    def weight_terms(self, weight: torch.Tensor, stats: dict[str, Any]) -> dict[str, torch.Tensor]:
        """Signed ``W · ∂L_CE/∂W``.

        Args:
            weight: ``[out, in]`` weight.
            stats: Holds ``"grad_ce"``.
        """
        return {"score": _taylor(weight, stats["grad_ce"])}


@dataclass
class StructuredReferSVDConfig(StructuredConfig):
    """Structured ReFer-SVD: first-order importance of units for the representation loss.

    The representation loss is the mean singular value of module outputs (see
    :mod:`hf_prune.scoring.refer_svd`); units are scored like structured SNIP on its gradients
    (``Structured_ReFer_SVD`` of the AFR/ReFer research code). Needs no LM head, so it also runs on
    encoders.

    Args:
        sparsity: Fraction of targeted units removed, in ``[0, 1)``.
        scope: ``"mlp"``, ``"attention"`` or ``"both"``.
        allocation: ``"uniform"`` or ``"global"``.
        round_to: Kept MLP width per layer is a multiple of this.
        min_keep: Fewest units kept per layer.
        head_granularity: ``"query"`` or ``"kv_group"`` under GQA.
        target_modules: Patterns of projections whose structures are pruned.
        exclude_modules: Patterns whose structures are left whole.
    """

    method: ClassVar[str] = "structured_refer_svd"
    paper: ClassVar[str] = (
        "ReFer-SVD representation-feature importance "
        "(AFR/ReFer research code; see hf_prune.scoring.refer_svd)"
    )
    needs: ClassVar[str] = "grad"
    objectives: ClassVar[tuple[str, ...]] = ("rep",)
    reduce: ClassVar[str] = "taylor"

    def weight_terms(self, weight: torch.Tensor, stats: dict[str, Any]) -> dict[str, torch.Tensor]:
        """Signed ``W · ∂L_rep/∂W``.

        Args:
            weight: ``[out, in]`` weight.
            stats: Holds ``"grad_rep"``.
        """
        return {"score": _taylor(weight, stats["grad_rep"])}


@dataclass
class StructuredAFRConfig(StructuredConfig):
    """Structured AFR: z-scored ReFer-SVD unit score plus z-scored (squared) SNIP unit score.

    As ``Structured_AFR`` of the AFR research code (:func:`hf_prune.scoring.afr.afr_neuron_scores`):
    both first-order unit scores are standardized over the layers compared together (one layer for
    ``"uniform"``, all targeted layers of the same kind for ``"global"``) and summed; ``"global"`` then
    ranks them across layers after standardizing each layer, as the AFR paper does.

    Args:
        sparsity: Fraction of targeted units removed, in ``[0, 1)``.
        scope: ``"mlp"``, ``"attention"`` or ``"both"``.
        allocation: ``"uniform"`` or ``"global"``.
        round_to: Kept MLP width per layer is a multiple of this.
        min_keep: Fewest units kept per layer.
        head_granularity: ``"query"`` or ``"kv_group"`` under GQA.
        target_modules: Patterns of projections whose structures are pruned.
        exclude_modules: Patterns whose structures are left whole.
    """

    method: ClassVar[str] = "structured_afr"
    paper: ClassVar[str] = (
        "AFR: first-order representation + SNIP scores, standardized and summed (see hf_prune.scoring.afr)"
    )
    needs: ClassVar[str] = "grad"
    objectives: ClassVar[tuple[str, ...]] = ("rep", "ce")
    reduce: ClassVar[str] = "taylor"

    def weight_terms(self, weight: torch.Tensor, stats: dict[str, Any]) -> dict[str, torch.Tensor]:
        """Signed first-order terms of both losses.

        Args:
            weight: ``[out, in]`` weight.
            stats: Holds ``"grad_rep"`` and ``"grad_ce"``.
        """
        return {"fo": _taylor(weight, stats["grad_rep"]), "snip": _taylor(weight, stats["grad_ce"])}

    def combine(self, parts: list[dict[str, torch.Tensor]]) -> list[torch.Tensor]:
        """``z(FO) + z(SNIP²)`` over the layers compared together.

        Args:
            parts: Per layer, ``{"fo": [units], "snip": [units]}`` reduced scores.
        """
        return afr_neuron_scores([p["fo"] for p in parts], [p["snip"] for p in parts])

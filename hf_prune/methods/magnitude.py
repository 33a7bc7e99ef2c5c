"""Magnitude pruning: remove the smallest-|W| weights of each targeted projection.

Follows Han et al., "Learning both Weights and Connections for Efficient Neural Networks" (NeurIPS
2015), the standard data-free baseline of the Wanda / SparseGPT papers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from tqdm.auto import tqdm
from transformers import PreTrainedModel

from hf_prune.arch.targets import resolve_targets
from hf_prune.methods.base import PruneContext, SparsityConfig
from hf_prune.report import LayerReport, score_summary
from hf_prune.selection.topk import unstructured_mask
from hf_prune.surgery.masks import apply_mask, weight_out_in


@dataclass
class MagnitudeConfig(SparsityConfig):
    """Unstructured magnitude pruning, uniform per layer.

    Args:
        sparsity: Fraction of weights removed from every targeted projection, in ``[0, 1)``.
        target_modules: Patterns of projections to prune (default: all projections in the blocks;
            embeddings and ``lm_head`` are never targeted unless named explicitly).
        exclude_modules: Patterns never pruned.
    """

    method: ClassVar[str] = "magnitude"
    paper: ClassVar[str] = (
        "Han et al., Learning both Weights and Connections for Efficient Neural Networks (NeurIPS 2015)"
    )


def magnitude_scores(weight: torch.Tensor) -> torch.Tensor:
    """Return |W| as the importance of each weight.

    Args:
        weight: A weight matrix (any orientation).
    """
    return weight.detach().abs()


@torch.no_grad()
def run_magnitude(model: PreTrainedModel, config: MagnitudeConfig, ctx: PruneContext) -> list[LayerReport]:
    """Mask the lowest-magnitude ``sparsity`` fraction of each targeted projection (exact count).

    Args:
        model: The model (masks are attached in place, reversibly).
        config: The config.
        ctx: The context (no calibration needed).

    Returns:
        One report row per pruned projection.
    """
    rows = []
    refs = resolve_targets(model, config.target_modules, config.exclude_modules)
    for ref in tqdm(refs, desc="magnitude", disable=not ctx.progress):
        w = weight_out_in(ref.module)
        scores = magnitude_scores(w)
        keep = unstructured_mask(scores, config.sparsity, compare="layer")
        apply_mask(ref.module, keep)
        numel = w.numel()
        nz = int(torch.count_nonzero(weight_out_in(ref.module)))
        rows.append(
            LayerReport(
                name=ref.name,
                kind="linear",
                params_before=numel,
                params_after=numel,
                nonzero_after=nz,
                ratio_requested=config.sparsity,
                sparsity_measured=1.0 - nz / numel,
                score=score_summary(scores),
                stack=ref.stack or None,
                block=ref.block_idx if ref.block_idx >= 0 else None,
            )
        )
    return rows

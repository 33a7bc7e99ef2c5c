"""Wanda: pruning by weights and activations.

Sun, Liu, Bair & Kolter, "A Simple and Effective Pruning Approach for Large Language Models", ICLR 2024
(arXiv:2306.11695). The score of weight ``W[i, j]`` is ``|W[i, j]| * ||X_j||_2``, where ``X_j`` is the
j-th input feature over all calibration tokens, and weights are compared *within each output row*
(``unstructured_mask(scores, sparsity, compare="row")``), or within N:M groups of a row.
"""

from __future__ import annotations

import torch

from hf_prune.selection.nm import nm_mask
from hf_prune.selection.topk import unstructured_mask

__all__ = ["wanda_mask", "wanda_scores"]


def wanda_scores(weight: torch.Tensor, input_sq_norm_sum: torch.Tensor) -> torch.Tensor:
    """Return Wanda scores ``|W| * sqrt(sum_t x_tj^2)`` (Sun et al., 2024).

    ``input_sq_norm_sum[j]`` is the sum over calibration tokens of the squared j-th input feature
    (the reference implementation keeps a running mean instead; a positive constant factor changes no
    ranking within a row, so either works).

    Args:
        weight: Weight ``[out_features, in_features]``.
        input_sq_norm_sum: Non-negative ``[in_features]`` sum of squared input activations per feature.

    Returns:
        fp32 scores shaped like ``weight``; higher means keep.

    Raises:
        ValueError: If shapes disagree or ``input_sq_norm_sum`` has negative or non-finite entries.
    """
    if weight.dim() != 2:
        raise ValueError(f"weight must be 2-D [out_features, in_features], got shape {tuple(weight.shape)}.")
    norms = input_sq_norm_sum.detach().reshape(-1).float().to(weight.device)
    if norms.numel() != weight.shape[1]:
        raise ValueError(
            f"input_sq_norm_sum has {norms.numel()} entries but weight has in_features={weight.shape[1]}; "
            "pass one sum of squared activations per input feature (Conv1D weights must be transposed to "
            "[out, in] first)."
        )
    if not torch.isfinite(norms).all() or (norms < 0).any():
        raise ValueError(
            "input_sq_norm_sum must be finite and >= 0 (a sum of squares); got min="
            f"{norms.min().item()!r}. Check the calibration statistics for overflow (accumulate in fp32)."
        )
    # abs() (or the fp32 cast) makes a fresh tensor: scale it in place instead of allocating another.
    scores = weight.detach().abs().float()
    return scores.mul_(norms.sqrt().unsqueeze(0))


def wanda_mask(
    weight: torch.Tensor,
    input_sq_norm_sum: torch.Tensor,
    sparsity: float,
    *,
    nm: tuple[int, int] | None = None,
) -> torch.Tensor:
    """Keep-mask of Wanda: row-wise comparison (``unstructured_mask(..., compare="row")``) or N:M groups.

    Args:
        weight: Weight ``[out_features, in_features]``.
        input_sq_norm_sum: ``[in_features]`` sum of squared input activations per feature.
        sparsity: Fraction of each row to remove, in ``[0, 1]`` (ignored when ``nm`` is given).
        nm: ``(n_keep, m)`` from :func:`hf_prune.selection.parse_pattern`, or ``None`` for unstructured.

    Returns:
        Boolean keep-mask shaped like ``weight``.
    """
    scores = wanda_scores(weight, input_sq_norm_sum)
    if nm is not None:
        return nm_mask(scores, nm[0], nm[1])
    return unstructured_mask(scores, sparsity, compare="row")

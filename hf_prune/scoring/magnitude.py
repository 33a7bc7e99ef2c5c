"""Magnitude scores: the baseline every pruning paper compares against.

Han et al., "Learning both Weights and Connections for Efficient Neural Networks", NeurIPS 2015: the
importance of a weight is its absolute value. Comparison is over the whole layer
(``unstructured_mask(..., compare="layer")``).
"""

from __future__ import annotations

import torch

__all__ = ["magnitude_scores"]


def magnitude_scores(weight: torch.Tensor) -> torch.Tensor:
    """Return ``|W|`` as fp32 scores (Han et al., 2015).

    Args:
        weight: A weight tensor of any shape (``[out_features, in_features]`` for a linear layer).

    Returns:
        Non-negative fp32 scores shaped like ``weight``; higher means keep.

    Raises:
        TypeError: If ``weight`` is not a floating-point tensor.
    """
    if not isinstance(weight, torch.Tensor) or not weight.is_floating_point():
        raise TypeError(f"weight must be a floating-point torch.Tensor, got {type(weight).__name__}.")
    return weight.detach().abs().float()

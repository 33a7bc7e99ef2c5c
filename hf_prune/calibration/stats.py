"""Per-projection input statistics gathered by forward hooks during calibration.

Collectors accumulate in float32 with explicit token counts, so statistics from several batches (or
several processes, summed) combine exactly.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle


class StatCollector:
    """Base class: receives each call's input activations flattened to ``[tokens, in_features]``."""

    def __init__(self) -> None:
        self.tokens = 0

    def update(self, x: torch.Tensor) -> None:
        """Accumulate one batch of activations.

        Args:
            x: ``[tokens, in_features]`` inputs of the projection.
        """
        raise NotImplementedError

    def merge(self, other: StatCollector) -> None:
        """Add another collector's accumulators (e.g. from another process).

        Args:
            other: A collector of the same type and shape.
        """
        raise NotImplementedError


class InputSqNorm(StatCollector):
    """Sum over tokens of each input feature's square (Wanda's ``‖X_j‖₂²``).

    Args:
        in_features: Input width.
    """

    def __init__(self, in_features: int) -> None:
        super().__init__()
        self.sum_sq = torch.zeros(in_features, dtype=torch.float32)

    def update(self, x: torch.Tensor) -> None:  # noqa: D102 - documented on the base class
        x = x.float()
        self.sum_sq = self.sum_sq.to(x.device) + (x * x).sum(dim=0)
        self.tokens += x.shape[0]

    def merge(self, other: StatCollector) -> None:  # noqa: D102
        if not isinstance(other, InputSqNorm) or other.sum_sq.shape != self.sum_sq.shape:
            raise TypeError(f"Can only merge an InputSqNorm of the same width, got {type(other).__name__}.")
        self.sum_sq = self.sum_sq + other.sum_sq.to(self.sum_sq.device)
        self.tokens += other.tokens

    @property
    def norm(self) -> torch.Tensor:
        """Per-feature L2 norm over all calibration tokens."""
        return self.sum_sq.sqrt()


class InputHessian(StatCollector):
    """Sum over tokens of ``x xᵀ`` (SparseGPT's layer Hessian up to a constant factor).

    Args:
        in_features: Input width.
    """

    def __init__(self, in_features: int) -> None:
        super().__init__()
        self.sum_xxt = torch.zeros(in_features, in_features, dtype=torch.float32)

    def update(self, x: torch.Tensor) -> None:  # noqa: D102
        x = x.float()
        self.sum_xxt = self.sum_xxt.to(x.device) + x.t() @ x
        self.tokens += x.shape[0]

    def merge(self, other: StatCollector) -> None:  # noqa: D102
        if not isinstance(other, InputHessian) or other.sum_xxt.shape != self.sum_xxt.shape:
            raise TypeError(f"Can only merge an InputHessian of the same width, got {type(other).__name__}.")
        self.sum_xxt = self.sum_xxt + other.sum_xxt.to(self.sum_xxt.device)
        self.tokens += other.tokens

    def hessian(self) -> torch.Tensor:
        """Return ``2/tokens · Σ x xᵀ`` (the reference implementation's scaling)."""
        return self.sum_xxt * (2.0 / max(self.tokens, 1))


def attach(module: nn.Module, collector: StatCollector) -> RemovableHandle:
    """Feed ``module``'s inputs to ``collector`` on every forward.

    Args:
        module: A projection (its first positional input is the activation).
        collector: The collector.

    Returns:
        The hook handle (call ``.remove()``).
    """

    def hook(mod: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        x = inputs[0].detach()
        collector.update(x.reshape(-1, x.shape[-1]))

    return module.register_forward_pre_hook(hook)

"""Block-importance scores for depth pruning: pure tensor math, no model walking.

Every score here is an *importance*: the lower a block's (or run's) score, the more removable it is.

* Angular distance (Gromov et al., "The Unreasonable Ineffectiveness of the Deeper Layers", 2024;
  the PruneMe scripts): ``arccos(cos(h_l, h_{l+n})) / pi`` between the hidden state entering block
  ``l`` and the one leaving block ``l+n-1``, taken on each sample's last non-padded token and averaged
  over samples.
* Block influence (Men et al., "ShortGPT: Layers in Large Language Models are More Redundant Than You
  Expect", 2024): ``1 - cos(input, output)`` of a block, averaged over every non-padded token.
* Activation variance-sparsity (Song et al., "AVSS: Layer Importance Evaluation in Large Language
  Models via Activation Variance-Sparsity Analysis", 2024): the variance of a block's activations
  divided by their sparsity (the fraction of near-zero entries), normalized to sum to one over blocks.
* Ablation: the loss increase when the block is removed (the loss values come from the model; this
  module only turns them into scores).

The accumulators (:class:`BlockInfluenceAccumulator`, :class:`VarianceSparsityAccumulator`) keep sums
and counts in float64, so statistics from several batches or processes combine exactly.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

__all__ = [
    "BlockInfluenceAccumulator",
    "VarianceSparsityAccumulator",
    "ablation_scores",
    "angular_distance",
    "angular_distance_matrix",
    "avss_scores",
    "last_token_states",
    "valid_token_mask",
]


def angular_distance(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Return ``arccos(cos(a, b)) / pi`` row by row, in ``[0, 1]``.

    Args:
        a: ``[..., hidden]`` vectors.
        b: Vectors of the same shape.
        eps: Guards the norms of all-zero vectors.

    Returns:
        ``[...]`` distances (0: same direction, 1: opposite).
    """
    a64, b64 = a.double(), b.double()
    cos = (a64 * b64).sum(-1) / (a64.norm(dim=-1) * b64.norm(dim=-1)).clamp_min(eps)
    # Rounding can push |cos| a hair above 1, where arccos is NaN.
    return torch.arccos(cos.clamp(-1.0, 1.0)) / math.pi


def valid_token_mask(hidden: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
    """Return a boolean ``[batch, seq]`` mask of the non-padded tokens.

    Args:
        hidden: ``[batch, seq, hidden]`` states (only the shape is used).
        attention_mask: ``[batch, seq]`` 1/0 mask, or ``None`` (every token is real).
    """
    if attention_mask is None:
        return torch.ones(hidden.shape[:2], dtype=torch.bool, device=hidden.device)
    return attention_mask.to(hidden.device).bool()


def last_token_states(hidden: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
    """Return each sample's state at its last non-padded position (right or left padding).

    Args:
        hidden: ``[batch, seq, hidden]`` states.
        attention_mask: ``[batch, seq]`` 1/0 mask, or ``None``.

    Returns:
        ``[batch, hidden]``.
    """
    valid = valid_token_mask(hidden, attention_mask)
    positions = torch.arange(hidden.shape[1], device=hidden.device).expand_as(valid)
    # The largest position that holds a real token; works for left and right padding alike.
    last = torch.where(valid, positions, torch.full_like(positions, -1)).max(dim=1).values.clamp_min(0)
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]


def angular_distance_matrix(states: torch.Tensor) -> torch.Tensor:
    """Average angular distance between every pair of depths.

    Args:
        states: ``[samples, L + 1, hidden]``: for each sample the last-token hidden state entering
            block 0, ..., block ``L-1`` and leaving block ``L-1`` (position ``l`` is the input of block
            ``l``).

    Returns:
        ``[L + 1, L + 1]`` matrix ``D`` with ``D[l, l + n]`` the mean distance between the state entering
        block ``l`` and the one leaving block ``l + n - 1``: the cost of removing the run of ``n``
        blocks starting at ``l``.
    """
    if states.dim() != 3:
        raise ValueError(f"states must be [samples, depth, hidden], got shape {tuple(states.shape)}.")
    depth = states.shape[1]
    out = torch.zeros(depth, depth, dtype=torch.float64)
    for i in range(depth):
        out[i] = angular_distance(states[:, i : i + 1, :], states).mean(dim=0).cpu()
    return out


class BlockInfluenceAccumulator:
    """Running mean of ShortGPT's ``1 - cos(input, output)`` over non-padded tokens of one block."""

    def __init__(self) -> None:
        self.total = 0.0
        self.tokens = 0

    def update(
        self, hidden_in: torch.Tensor, hidden_out: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> None:
        """Add one batch.

        Args:
            hidden_in: ``[batch, seq, hidden]`` block input.
            hidden_out: The block output, same shape.
            attention_mask: ``[batch, seq]`` 1/0 mask, or ``None``.
        """
        valid = valid_token_mask(hidden_in, attention_mask)
        a, b = hidden_in[valid].double(), hidden_out[valid].double()
        cos = (a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1)).clamp_min(1e-8)
        self.total += float((1.0 - cos).sum())
        self.tokens += int(valid.sum())

    def merge(self, other: BlockInfluenceAccumulator) -> None:
        """Add another accumulator's sums (another process or shard).

        Args:
            other: The accumulator to add.
        """
        self.total += other.total
        self.tokens += other.tokens

    @property
    def value(self) -> float:
        """The block influence (0 when nothing was seen)."""
        return self.total / self.tokens if self.tokens else 0.0


class VarianceSparsityAccumulator:
    """AVSS statistics of one block's activations over non-padded tokens.

    The variance is that of every activation entry (pooled over tokens and features), computed from
    float64 sums so batches combine exactly. An entry counts as sparse when
    ``|a| <= threshold * rms``, the RMS taken over that batch's entries: hidden-state scales differ by
    orders of magnitude between depths, so an absolute cut-off would call whole shallow blocks sparse.

    Args:
        threshold: Relative cut-off for a near-zero activation.
    """

    def __init__(self, threshold: float = 0.1) -> None:
        self.threshold = threshold
        self.sum = 0.0
        self.sum_sq = 0.0
        self.count = 0
        self.sparse = 0

    def update(self, activations: torch.Tensor, attention_mask: torch.Tensor | None = None) -> None:
        """Add one batch.

        Args:
            activations: ``[batch, seq, hidden]`` activations of the block.
            attention_mask: ``[batch, seq]`` 1/0 mask, or ``None``.
        """
        valid = valid_token_mask(activations, attention_mask)
        x = activations[valid].double()
        if x.numel() == 0:
            return
        rms = x.pow(2).mean().sqrt()
        self.sum += float(x.sum())
        self.sum_sq += float(x.pow(2).sum())
        self.count += x.numel()
        self.sparse += int((x.abs() <= self.threshold * rms).sum())

    def merge(self, other: VarianceSparsityAccumulator) -> None:
        """Add another accumulator's sums.

        Args:
            other: The accumulator to add.
        """
        self.sum += other.sum
        self.sum_sq += other.sum_sq
        self.count += other.count
        self.sparse += other.sparse

    @property
    def variance(self) -> float:
        """Population variance of the activations."""
        if not self.count:
            return 0.0
        mean = self.sum / self.count
        return max(self.sum_sq / self.count - mean * mean, 0.0)

    @property
    def sparsity(self) -> float:
        """Fraction of near-zero activations."""
        return self.sparse / self.count if self.count else 0.0


def avss_scores(variances: Sequence[float], sparsities: Sequence[float], eps: float = 1e-6) -> list[float]:
    """AVSS per block: ``variance / sparsity``, normalized to sum to one.

    Both quantities are first divided by their mean over blocks (the AVSS paper normalizes each before
    combining them; a mean keeps the ratio finite, where min-max scaling would divide by zero for the
    least sparse block), then the ratio is normalized to sum to one.

    Args:
        variances: Activation variance per block.
        sparsities: Activation sparsity per block.
        eps: Floor of the normalized sparsity.

    Returns:
        One score per block (low: less important).
    """
    if len(variances) != len(sparsities) or not variances:
        raise ValueError(
            f"variances and sparsities must be non-empty and of equal length, got {len(variances)} and "
            f"{len(sparsities)}."
        )
    v = torch.tensor(list(variances), dtype=torch.float64)
    s = torch.tensor(list(sparsities), dtype=torch.float64)
    v = v / v.mean() if v.mean() > 0 else torch.ones_like(v)
    s = s / s.mean() if s.mean() > 0 else torch.ones_like(s)
    raw = v / s.clamp_min(eps)
    return (raw / raw.sum()).tolist()


def ablation_scores(base_loss: float, ablated_losses: Sequence[float]) -> list[float]:
    """Loss increase caused by removing each block: ``loss_without_block - loss_dense``.

    Args:
        base_loss: Loss of the model with every block.
        ablated_losses: Loss with block ``l`` removed, per block.

    Returns:
        One score per block (negative: removing the block helped).
    """
    return [float(x) - float(base_loss) for x in ablated_losses]

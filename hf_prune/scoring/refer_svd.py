"""ReFer-SVD: representation-feature importance from the singular values of layer outputs.

Definition (as in the AFR / ReFer research code this project continues, ``ReFer_SVD`` and
``Structured_ReFer_SVD`` in its ``lib/prune.py``): instead of the language-modelling loss, the
importance of a weight is measured against a *representation* objective, the spectral mass of the
features every module produces on calibration data,

    ``L_rep = sum_modules sum_samples mean(svdvals(F))``,

where ``F`` is one sample's ``[tokens, features]`` output matrix of a module (its nuclear norm divided
by its rank). A weight whose removal would shrink the singular values of the representations (collapse
feature diversity) is important. The score is the first-order (Taylor / SNIP-style, Lee et al. 2019)
estimate of the change of ``L_rep`` when the weight is removed: ``|W * dL_rep/dW|``.

The pipeline computes ``L_rep`` with :func:`representation_svd_loss` in forward hooks and
back-propagates it; the functions here are the pure math.
"""

from __future__ import annotations

import torch

from hf_prune.scoring.snip import _check_pair, neuron_taylor_scores

__all__ = ["refer_svd_neuron_scores", "refer_svd_scores", "representation_svd_loss"]


def representation_svd_loss(features: torch.Tensor) -> torch.Tensor:
    """Differentiable ReFer representation loss of one module output: mean singular value per sample.

    The research code's first version flattened ``[batch, tokens, hidden]`` to ``[batch, tokens*hidden]``,
    which for batch 1 reduces to the Frobenius norm; this follows its corrected version and decomposes
    each sample's ``[tokens, hidden]`` matrix.

    Args:
        features: Module output ``[tokens, hidden]`` or ``[batch, tokens, hidden]`` (any leading dims
            are treated as samples).

    Returns:
        A 0-d fp32 tensor: the sum over samples of the mean singular value of each sample's matrix.

    Raises:
        ValueError: If ``features`` has fewer than 2 dimensions.
    """
    if features.dim() < 2:
        raise ValueError(
            f"features must be [tokens, hidden] or [..., tokens, hidden], got {tuple(features.shape)}."
        )
    mats = features.float().reshape(-1, features.shape[-2], features.shape[-1])
    return torch.linalg.svdvals(mats).mean(dim=-1).sum()


def refer_svd_scores(weight: torch.Tensor, rep_grad: torch.Tensor) -> torch.Tensor:
    """Unstructured ReFer-SVD score ``|W * dL_rep/dW|``.

    Args:
        weight: Weight tensor (``[out_features, in_features]``).
        rep_grad: Gradient of :func:`representation_svd_loss` (summed over hooked modules and
            calibration samples) w.r.t. ``weight``.

    Returns:
        Non-negative fp32 scores shaped like ``weight``.
    """
    _check_pair(weight, rep_grad, "rep_grad")
    return (weight.detach().float() * rep_grad.detach().float().to(weight.device)).abs()


def refer_svd_neuron_scores(
    in_weights: list[torch.Tensor],
    in_grads: list[torch.Tensor],
    out_weight: torch.Tensor,
    out_grad: torch.Tensor,
    *,
    trim: float = 0.02,
) -> torch.Tensor:
    """Structured ReFer-SVD score of each MLP neuron (gradients of ``L_rep``).

    Same aggregation as :func:`hf_prune.scoring.snip.neuron_taylor_scores` (signed products of every
    weight attached to the neuron, trimmed mean over the hidden dimension, absolute value), applied to
    the gradients of the representation loss.

    Args:
        in_weights: ``gate_proj``/``up_proj`` (or ``fc1``) weights, each ``[intermediate, hidden]``.
        in_grads: Their ``dL_rep/dW``.
        out_weight: ``down_proj`` / ``fc2`` weight ``[hidden, intermediate]``.
        out_grad: Its ``dL_rep/dW``.
        trim: Fraction dropped at each end of the hidden dimension before averaging.

    Returns:
        Non-negative fp32 ``[intermediate]`` scores.
    """
    return neuron_taylor_scores(in_weights, in_grads, out_weight, out_grad, trim=trim)

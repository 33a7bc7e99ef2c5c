"""SNIP and first-order (Taylor) connection sensitivity.

Lee, Ajanthan & Torr, "SNIP: Single-shot Network Pruning based on Connection Sensitivity", ICLR 2019
(arXiv:1810.02340): the saliency of weight ``w`` is ``|w * dL/dw|``, the first-order estimate of the
loss change when ``w`` is removed. The structured (per MLP neuron) aggregation follows Molchanov et al.,
"Importance Estimation for Neural Network Pruning", CVPR 2019: sum the signed first-order terms of every
weight attached to the neuron.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["neuron_taylor_scores", "snip_scores"]


def _check_pair(weight: torch.Tensor, grad: torch.Tensor, grad_name: str = "grad") -> None:
    if not isinstance(weight, torch.Tensor) or not isinstance(grad, torch.Tensor):
        raise TypeError(
            f"weight and {grad_name} must be torch.Tensor, got {type(weight).__name__} and "
            f"{type(grad).__name__}."
        )
    if weight.shape != grad.shape:
        raise ValueError(
            f"{grad_name} shape {tuple(grad.shape)} does not match weight shape {tuple(weight.shape)}; pass "
            "the gradient of this very weight (same orientation: transpose Conv1D to [out, in] for both)."
        )


def snip_scores(weight: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """Return SNIP saliency ``|W * dL/dW|`` (Lee et al., 2019).

    Args:
        weight: Weight tensor (``[out_features, in_features]`` for a linear layer).
        grad: Gradient of the calibration loss w.r.t. ``weight``; may be a sum over calibration batches
            (a positive scale changes no ranking).

    Returns:
        Non-negative fp32 scores shaped like ``weight``.

    Raises:
        ValueError: If the shapes differ.
    """
    _check_pair(weight, grad)
    return (weight.detach().float() * grad.detach().float().to(weight.device)).abs()


def neuron_taylor_scores(
    in_weights: Sequence[torch.Tensor],
    in_grads: Sequence[torch.Tensor],
    out_weight: torch.Tensor,
    out_grad: torch.Tensor,
    *,
    trim: float = 0.02,
) -> torch.Tensor:
    """Per-MLP-neuron first-order score from every weight attached to the neuron.

    For intermediate neuron ``k`` and hidden feature ``h`` the signed first-order terms
    ``T[h, k] = down[h, k]*g_down[h, k] + sum_in (in[k, h]*g_in[k, h])`` are collected (``in`` runs over
    gate and up, or fc1), then averaged over ``h`` after dropping the ``trim`` fraction of the smallest
    and the largest values of each column (a trimmed mean that resists a few outlier hidden features),
    and the absolute value is taken. This is the neuron aggregation of the AFR / structured-SNIP
    reference code (``calculate_neuron_score``: trim 2 %, mean, abs) and Molchanov et al. (2019)'s
    group Taylor score.

    Args:
        in_weights: Weights whose *output* features are the neurons, each ``[intermediate, hidden]``
            (``gate_proj``, ``up_proj``; or ``fc1``).
        in_grads: Their gradients, same shapes.
        out_weight: Weight whose *input* features are the neurons, ``[hidden, intermediate]``
            (``down_proj`` / ``fc2``).
        out_grad: Its gradient.
        trim: Fraction of the hidden dimension dropped at *each* end before averaging, in ``[0, 0.5)``.

    Returns:
        Non-negative fp32 ``[intermediate]`` scores.

    Raises:
        ValueError: On mismatched shapes or a bad ``trim``.
    """
    if not 0.0 <= float(trim) < 0.5:
        raise ValueError(f"trim must be in [0, 0.5), got {trim!r}.")
    if len(in_weights) != len(in_grads):
        raise ValueError(f"in_weights ({len(in_weights)}) and in_grads ({len(in_grads)}) differ in length.")
    _check_pair(out_weight, out_grad, "out_grad")
    if out_weight.dim() != 2:
        raise ValueError(f"out_weight must be 2-D [hidden, intermediate], got {tuple(out_weight.shape)}.")
    total = out_weight.detach().float() * out_grad.detach().float().to(out_weight.device)
    for i, (w, g) in enumerate(zip(in_weights, in_grads, strict=True)):
        _check_pair(w, g, f"in_grads[{i}]")
        if w.shape != out_weight.shape[::-1]:
            raise ValueError(
                f"in_weights[{i}] has shape {tuple(w.shape)}; expected [intermediate, hidden] = "
                f"{tuple(out_weight.shape[::-1])} to match out_weight {tuple(out_weight.shape)}."
            )
        total = total + (w.detach().float() * g.detach().float().to(w.device)).t()
    hidden = total.shape[0]
    cut = int(hidden * float(trim))
    if cut > 0:
        total = torch.sort(total, dim=0).values[cut : hidden - cut]
    return total.mean(dim=0).abs()

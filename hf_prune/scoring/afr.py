"""AFR: first-order representation score + SNIP score, each standardized over the compared group, summed.

Definition (as in the AFR-St research code this project continues, ``AFR`` / ``Structured_AFR`` /
``Structured_AFR_LLaVA`` in its ``lib/prune.py``, used to prune LLaMA and LLaVA MLPs):

* **FO term** (first-order, activation/representation based): ``|W * dL_rep/dW|`` where ``L_rep`` is
  the ReFer representation loss (:func:`hf_prune.scoring.refer_svd.representation_svd_loss`, the mean
  singular value of module outputs on calibration data). It measures how much a weight shapes the
  *activations*, independent of the labels.
* **SNIP term**: ``|W * dL_CE/dW|`` (Lee et al., "SNIP", ICLR 2019), the first-order change of the
  calibration language-modelling loss.
* Both terms live on different scales, so each is standardized to a z-score (mean 0, unbiased std 1)
  over **the whole group that is compared together** (all layers for a global ranking, one layer for a
  per-layer ranking), then ``score = z(FO) + z(SNIP)``; higher means keep.

Structured (per MLP neuron) variant: each term is first reduced per neuron with
:func:`hf_prune.scoring.snip.neuron_taylor_scores` (signed first-order products of the gate/up/down
weights of the neuron, 2 %-trimmed mean over the hidden dimension, absolute value); the SNIP neuron term
is squared (as in ``Structured_AFR``), then both are standardized over the group and summed.

Standardization streams over the tensors (float64 sums), so a global group never has to be
concatenated in memory. A constant term (std 0) carries no ranking information and contributes 0.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from hf_prune.scoring.snip import _check_pair

__all__ = ["afr_neuron_scores", "afr_scores", "standardize_group"]


def _as_list(name: str, tensors: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    if isinstance(tensors, torch.Tensor):
        raise TypeError(
            f"{name} must be a sequence of tensors (the comparison group); wrap a single layer as "
            f"[{name[:-1] if name.endswith('s') else name}]."
        )
    out = list(tensors)
    if not out:
        raise ValueError(f"{name} must contain at least one tensor.")
    for i, t in enumerate(out):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name}[{i}] must be a torch.Tensor, got {type(t).__name__}.")
    return out


def standardize_group(tensors: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Z-score every tensor with the mean and unbiased std of *all* their elements together.

    Args:
        tensors: The comparison group (any shapes).

    Returns:
        fp32 tensors shaped like the inputs, ``(t - mean) / std``; all zeros if the group is constant.

    Raises:
        ValueError: If the group is empty, has fewer than 2 elements in all, or contains NaN/inf.
    """
    group = _as_list("tensors", tensors)
    n = 0
    total = 0.0
    for i, t in enumerate(group):
        if not torch.isfinite(t).all():
            raise ValueError(
                f"tensors[{i}] contains NaN or inf; check the gradients (use fp32 accumulation)."
            )
        n += t.numel()
        total += float(t.detach().double().sum())
    if n < 2:
        raise ValueError(f"standardizing needs at least 2 elements in the group, got {n}.")
    mean = total / n
    # Second pass around the mean: numerically stable, still one tensor at a time.
    sq = sum(float(((t.detach().double() - mean) ** 2).sum()) for t in group)
    std = (sq / (n - 1)) ** 0.5
    if std == 0.0:
        return [torch.zeros_like(t, dtype=torch.float32) for t in group]
    return [((t.detach().double() - mean) / std).float() for t in group]


def afr_scores(
    weights: Sequence[torch.Tensor],
    fo_grads: Sequence[torch.Tensor],
    snip_grads: Sequence[torch.Tensor],
) -> list[torch.Tensor]:
    """Unstructured AFR scores ``z(|W * dL_rep/dW|) + z(|W * dL_CE/dW|)`` over one comparison group.

    Args:
        weights: The weights compared together (one entry per layer; ``[out, in]`` each).
        fo_grads: Gradients of the representation loss ``L_rep`` w.r.t. each weight.
        snip_grads: Gradients of the calibration cross-entropy loss w.r.t. each weight.

    Returns:
        One fp32 score tensor per weight (higher means keep). Compare them with one threshold
        (global) or per layer, matching how the group was formed.

    Raises:
        ValueError: If the three sequences differ in length or a gradient's shape differs from its weight.
    """
    ws = _as_list("weights", weights)
    fo = _as_list("fo_grads", fo_grads)
    sn = _as_list("snip_grads", snip_grads)
    if not len(ws) == len(fo) == len(sn):
        raise ValueError(
            f"weights ({len(ws)}), fo_grads ({len(fo)}) and snip_grads ({len(sn)}) must have one entry "
            "per layer."
        )
    for i, (w, g1, g2) in enumerate(zip(ws, fo, sn, strict=True)):
        _check_pair(w, g1, f"fo_grads[{i}]")
        _check_pair(w, g2, f"snip_grads[{i}]")
    fo_terms = standardize_group(
        [(w.detach().float() * g.detach().float()).abs() for w, g in zip(ws, fo, strict=True)]
    )
    sn_terms = standardize_group(
        [(w.detach().float() * g.detach().float()).abs() for w, g in zip(ws, sn, strict=True)]
    )
    return [a + b for a, b in zip(fo_terms, sn_terms, strict=True)]


def afr_neuron_scores(
    fo_neuron_scores: Sequence[torch.Tensor],
    snip_neuron_scores: Sequence[torch.Tensor],
    *,
    square_snip: bool = True,
) -> list[torch.Tensor]:
    """Structured AFR: standardize per-neuron FO and SNIP scores over the group and sum them.

    Args:
        fo_neuron_scores: Per layer, ``[intermediate]`` neuron scores from the representation-loss
            gradients (:func:`hf_prune.scoring.snip.neuron_taylor_scores`), summed over calibration
            samples.
        snip_neuron_scores: Per layer, the same from the cross-entropy gradients.
        square_snip: Square the SNIP neuron term before standardizing, as ``Structured_AFR`` does (it
            spreads the heavy upper tail that marks the important neurons).

    Returns:
        One fp32 ``[intermediate]`` score tensor per layer; higher means keep.

    Raises:
        ValueError: If the sequences differ in length or a pair differs in shape.
    """
    fo = _as_list("fo_neuron_scores", fo_neuron_scores)
    sn = _as_list("snip_neuron_scores", snip_neuron_scores)
    if len(fo) != len(sn):
        raise ValueError(f"fo_neuron_scores ({len(fo)}) and snip_neuron_scores ({len(sn)}) differ in length.")
    for i, (a, b) in enumerate(zip(fo, sn, strict=True)):
        if a.shape != b.shape:
            raise ValueError(
                f"Layer {i}: fo_neuron_scores shape {tuple(a.shape)} != snip_neuron_scores shape "
                f"{tuple(b.shape)}."
            )
    sn_terms = [b.float() ** 2 for b in sn] if square_snip else [b.float() for b in sn]
    return [a + b for a, b in zip(standardize_group(fo), standardize_group(sn_terms), strict=True)]

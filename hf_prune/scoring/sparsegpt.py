"""SparseGPT: one-shot pruning with Optimal-Brain-Surgeon weight reconstruction.

Frantar & Alistarh, "SparseGPT: Massive Language Models Can Be Accurately Pruned in One-Shot",
ICML 2023 (arXiv:2301.00774), Algorithm 1, following the reference implementation
(IST-DASLab/sparsegpt, ``SparseGPT.fasterprune``):

* the layer-wise objective is ``||W X - W_hat X||^2`` with Hessian ``H = X X^T`` (up to a positive
  factor), dampened by ``percdamp * mean(diag(H))`` on the diagonal;
* columns are processed left to right; the inverse-Hessian information of the not-yet-processed columns
  is the upper Cholesky factor ``U`` of ``H^-1`` (row ``i`` of ``U`` equals
  ``H_F^-1[i, i:] / sqrt(H_F^-1[i, i])`` for the remaining set ``F``), so one factorization serves all
  the sequential OBS steps;
* the mask is chosen adaptively per block of ``blocksize`` columns from the OBS saliency
  ``w^2 / U[i, i]^2`` of the *already updated* weights, or per group of ``m`` columns for N:M;
* each pruned weight's error ``(w - q) / U[i, i]`` is propagated to the remaining columns of the row.

Differences from the reference, on purpose: the pruned count is exact (``round(sparsity * numel)``
over the whole layer, split over blocks by cumulative rounding) instead of ``<= threshold``, which
prunes every tied weight; N:M groups must not straddle a block (``blocksize % m == 0``), which the
reference assumes silently.
"""

from __future__ import annotations

import torch

from hf_prune.scoring.select import lowest_k_mask
from hf_prune.selection.nm import check_nm_shape
from hf_prune.selection.topk import num_to_prune

__all__ = ["sparsegpt_prune"]


def _validate(
    weight: torch.Tensor,
    hessian: torch.Tensor,
    sparsity: float,
    prune_n: int,
    prune_m: int,
    blocksize: int,
    percdamp: float,
) -> None:
    if not isinstance(weight, torch.Tensor) or weight.dim() != 2:
        raise ValueError(
            "weight must be a 2-D tensor [out_features, in_features], got "
            f"{tuple(weight.shape) if isinstance(weight, torch.Tensor) else type(weight).__name__}."
        )
    cols = weight.shape[1]
    if not isinstance(hessian, torch.Tensor) or tuple(hessian.shape) != (cols, cols):
        got = tuple(hessian.shape) if isinstance(hessian, torch.Tensor) else type(hessian).__name__
        raise ValueError(
            f"hessian must be [in_features, in_features] = ({cols}, {cols}) for weight "
            f"{tuple(weight.shape)}, "
            f"got {got}. Accumulate H = 2/n * sum_t x_t x_t^T over the layer's inputs."
        )
    if not 0.0 <= float(sparsity) <= 1.0:
        raise ValueError(f"sparsity must be in [0, 1], got {sparsity!r}.")
    if blocksize < 1:
        raise ValueError(f"blocksize must be a positive integer, got {blocksize!r}.")
    if percdamp < 0:
        raise ValueError(f"percdamp must be >= 0 (fraction of mean(diag(H)) added), got {percdamp!r}.")
    if prune_n or prune_m:
        if not 0 < prune_n < prune_m:
            raise ValueError(
                f"N:M needs 0 < prune_n < prune_m (prune_n weights kept per group of prune_m), got "
                f"prune_n={prune_n}, prune_m={prune_m}; use prune_n=prune_m=0 for unstructured."
            )
        check_nm_shape(cols, prune_m)
        if blocksize % prune_m != 0:
            raise ValueError(
                f"blocksize={blocksize} must be a multiple of prune_m={prune_m} so that no N:M group "
                "straddles two blocks."
            )


@torch.no_grad()
def sparsegpt_prune(
    weight: torch.Tensor,
    hessian: torch.Tensor,
    sparsity: float,
    *,
    prune_n: int = 0,
    prune_m: int = 0,
    blocksize: int = 128,
    percdamp: float = 0.01,
    hessian_scale: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Prune one linear layer with SparseGPT and reconstruct the remaining weights (Frantar & Alistarh, 2023).

    Hessian convention: ``hessian`` is ``[in_features, in_features]`` and proportional to ``X X^T``,
    where the columns of ``X`` are the layer's calibration inputs (``in_features`` each). The reference
    accumulates ``H = 2/n * sum_t x_t x_t^T`` over ``n`` samples; any positive factor gives the same
    result because the damping is relative (``percdamp * mean(diag(H))``) and OBS uses only ratios of
    ``H^-1``. Inputs that never fire (``H[j, j] == 0``) are "dead": as in the reference, their diagonal
    is set to 1 and their weights are zeroed (they contributed nothing on the calibration data).

    All math runs in fp32 on ``weight``'s device; the returned weight has ``weight``'s dtype.

    Args:
        weight: ``[out_features, in_features]`` weight (transpose Conv1D first).
        hessian: ``[in_features, in_features]`` symmetric positive semi-definite ``X X^T``-style matrix.
        sparsity: Fraction of the layer's weights to prune, in ``[0, 1]``; ignored for N:M.
        prune_n: For N:M, the number of weights **kept** in each group of ``prune_m`` consecutive input
            columns (the ``n`` of :func:`hf_prune.selection.parse_pattern`). Note: the reference code's
            ``prune_n`` counts the *zeroed* weights; the two agree for 2:4 and 4:8. ``0`` = unstructured.
        prune_m: N:M group size, or ``0`` for unstructured.
        blocksize: Columns per lazy-update block (the mask is chosen per block); a multiple of
            ``prune_m`` for N:M.
        percdamp: Dampening as a fraction of ``mean(diag(H))``.
        hessian_scale: Factor applied to this function's own copy of ``hessian`` (pass an unscaled
            ``Σ x xᵀ`` with ``2 / tokens`` here instead of scaling a second copy first).

    Returns:
        ``(new_weight, keep_mask)``: the pruned and OBS-updated weight (exact zeros where pruned) and the
        boolean keep-mask. For unstructured pruning exactly ``round(sparsity * numel)`` entries of the
        mask are ``False``; for N:M exactly ``prune_n`` of every group are ``True``. Weights of dead
        inputs are zero even where the mask keeps them.

    Raises:
        ValueError: On inconsistent shapes, an out-of-range argument, non-finite inputs, or a Hessian
            that is not positive definite after damping (raise ``percdamp``).
    """
    _validate(weight, hessian, sparsity, prune_n, prune_m, blocksize, percdamp)
    device = weight.device
    # Contiguous fp32 copies: a transposed Conv1D view must not leak its strides into the flat indexing below.
    W = weight.detach().to(torch.float32, copy=True).contiguous()
    H = hessian.detach().to(device=device, dtype=torch.float32, copy=True).contiguous()
    if hessian_scale != 1.0:
        H.mul_(hessian_scale)
    if not torch.isfinite(W).all() or not torch.isfinite(H).all():
        raise ValueError("weight and hessian must be finite (no NaN/inf); check the calibration statistics.")
    rows, cols = W.shape

    dead = torch.diag(H) == 0
    H[dead, dead] = 1.0
    W[:, dead] = 0.0

    damp = float(percdamp) * torch.mean(torch.diag(H))
    idx = torch.arange(cols, device=device)
    H[idx, idx] += damp
    try:
        # Factored in place: LAPACK works on column-major storage, and H's transposed view is exactly
        # that, so ``out=`` that view runs without a copy (``out=H`` itself would factor a temporary and
        # copy it back). One [cols, cols] matrix is alive instead of two at every step (32 MB less for a
        # 2816-wide down_proj). H is symmetric, so its transposed view is the same matrix.
        Ht = H.mT
        torch.linalg.cholesky(Ht, out=Ht)  # Ht = L, H = L Lᵀ
        torch.cholesky_inverse(Ht, out=Ht)  # Ht = H⁻¹
        torch.linalg.cholesky(Ht, out=Ht)  # Ht = L₂ with H⁻¹ = L₂ L₂ᵀ, so row-major H holds L₂ᵀ = U
        U = H
        del Ht, H
    except RuntimeError as err:  # torch raises LinAlgError (a RuntimeError) for non-PD input
        raise ValueError(
            f"hessian is not positive definite after damping with percdamp={percdamp} ({err}). Use more "
            "calibration samples or a larger percdamp (e.g. 0.1)."
        ) from None

    keep = torch.ones(rows, cols, dtype=torch.bool, device=device)
    nm = prune_m > 0
    s = float(sparsity)
    # The block is processed transposed ([columns, rows]): column i of the weight is then one contiguous
    # row, and each OBS step is two fused kernels (one multiply into the error buffer, one rank-1
    # ``addr_`` update of the block's remaining columns) instead of ~10 small ops with a boolean
    # gather; with ~10^5 columns per model, Python-level op count dominates otherwise.
    for i1 in range(0, cols, blocksize):
        i2 = min(i1 + blocksize, cols)
        count = i2 - i1
        W1t = W[:, i1:i2].t().contiguous()  # [count, rows]
        Err1t = torch.empty_like(W1t)
        U1 = U[i1:i2, i1:i2]
        d = torch.diag(U1)
        pruned_t = torch.zeros(count, rows, dtype=torch.bool, device=device)
        if not nm:
            # Cumulative rounding: the per-block counts add up to round(sparsity * numel) exactly.
            k = num_to_prune(rows * i2, s) - num_to_prune(rows * i1, s)
            if k > 0:
                # Row-major [rows, count] order, so ties fall as in a stable sort of the untransposed block.
                saliency = (W1t**2 / d.unsqueeze(1) ** 2).t().reshape(1, -1)
                low = lowest_k_mask(saliency, torch.tensor([k]))
                pruned_t = low.view(rows, count).t().contiguous()
        # err_i = (w_i - q_i) / d_i = w_i * pruned_i / d_i: one multiply by this precomputed factor.
        factor = pruned_t.to(torch.float32) / d.unsqueeze(1)
        for i in range(count):
            if nm and i % prune_m == 0:
                # Chosen here, not per block: the columns of this group have just received the error
                # of every column to their left, as in the reference.
                sal = W1t[i : i + prune_m] ** 2 / d[i : i + prune_m].unsqueeze(1) ** 2
                order = torch.argsort(sal, dim=0, stable=True)
                pruned_t[i : i + prune_m].scatter_(0, order[: prune_m - prune_n], True)
                factor[i : i + prune_m] = pruned_t[i : i + prune_m].to(torch.float32) / d[
                    i : i + prune_m
                ].unsqueeze(1)
            err = torch.mul(W1t[i], factor[i], out=Err1t[i])
            # Column i itself receives err * d_i = its pruned part: it becomes q_i (up to rounding; the
            # mask below makes the zeros exact).
            W1t[i:].addr_(U1[i, i:], err, alpha=-1.0)
        W1t.masked_fill_(pruned_t, 0.0)
        W[:, i1:i2] = W1t.t()
        W[:, i2:].addmm_(Err1t.t(), U[i1:i2, i2:], alpha=-1.0)
        keep[:, i1:i2] = ~pruned_t.t()
    W[~keep] = 0.0
    return W.to(weight.dtype), keep

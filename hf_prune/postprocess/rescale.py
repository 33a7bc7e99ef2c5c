"""Least-squares mask rescaling of Kwon et al. (NeurIPS 2022, "Mask Tuning").

Kwon, Kim, Mahoney, Hassoun, Keutzer and Gholami, "A Fast Post-Training Pruning Framework for
Transformers".

After pruning, the kept heads and neurons of each layer are multiplied by scales chosen so that the
pruned layer reproduces the dense layer's output on calibration data. The systems are built by
:func:`hf_prune.calibration.fisher.collect_rescale_systems` (model walking); this module holds the pure
parts: the LSMR solver with its GPU (cupy) and CPU (scipy, else torch) back ends, the published damped
solve (:func:`solve_scales`), and the folding of scales into output-projection weights
(:func:`fold_scales`). :func:`rescale_masks` and :func:`fold_masks` compose them with the model walker.
"""

from __future__ import annotations

import importlib
import warnings
from types import ModuleType
from typing import Any

import torch
from transformers import PreTrainedModel
from transformers.pytorch_utils import Conv1D

from hf_prune.calibration.fisher import MaskTarget, RescaleSystem, collect_rescale_systems, mask_targets

__all__ = [
    "LSMR_BACKENDS",
    "fold_masks",
    "fold_scales",
    "lsmr_solve",
    "rescale_masks",
    "solve_scales",
]

#: ``lsmr_solve`` back ends; ``"auto"`` picks cupy for CUDA inputs, scipy on CPU, torch as fallback.
LSMR_BACKENDS = ("auto", "cupy", "scipy", "torch")
#: LSMR ``istop`` codes that mean "no solution": conditioning limit (3, 6) or iteration limit (7).
_LSMR_FAILED = (3, 6, 7)
_CUPY_WARNED = False


def _load_cupy() -> ModuleType | None:
    """Import cupy's LSMR lazily (the optional ``gpu`` extra); warn once when it is missing."""
    global _CUPY_WARNED
    try:
        return importlib.import_module("cupyx.scipy.sparse.linalg")
    except ImportError:
        if not _CUPY_WARNED:
            _CUPY_WARNED = True
            warnings.warn(
                "cupy is not installed, so least-squares rescaling of CUDA tensors falls back to "
                "torch.linalg.lstsq; `pip install hf_prune[gpu]` for the GPU LSMR solver.",
                RuntimeWarning,
                stacklevel=3,
            )
        return None


def _load_scipy() -> ModuleType | None:
    try:
        return importlib.import_module("scipy.sparse.linalg")
    except ImportError:
        return None


def _torch_lstsq(a: torch.Tensor, b: torch.Tensor, damp: float) -> torch.Tensor:
    """Damped least squares ``min ||A x - b||^2 + damp^2 ||x||^2`` via an augmented dense solve."""
    a64, b64 = a.detach().double().cpu(), b.detach().double().cpu()
    if damp:
        n = a64.shape[1]
        a64 = torch.cat([a64, damp * torch.eye(n, dtype=torch.float64)])
        b64 = torch.cat([b64, torch.zeros(n, dtype=torch.float64)])
    # gelsd (SVD) returns the minimum-norm solution for rank-deficient A, which is also where LSMR
    # started from zero converges; the systems are small ([units, units]), so the CPU is fine.
    return torch.linalg.lstsq(a64, b64.unsqueeze(1), driver="gelsd").solution.squeeze(1)


def lsmr_solve(
    A: torch.Tensor,
    b: torch.Tensor,
    *,
    device: torch.device | str | None = None,
    damp: float = 0.0,
    atol: float = 1e-6,
    btol: float = 1e-6,
    maxiter: int | None = None,
    backend: str = "auto",
    return_istop: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, int]:
    """Solve ``min ||A x - b||^2 + damp^2 ||x||^2`` with LSMR (the solver Kwon et al., 2022, use).

    On CUDA tensors with cupy installed (``pip install hf_prune[gpu]``) this is
    ``cupyx.scipy.sparse.linalg.lsmr``, as in the published ``utils/linalg.py``; on CPU
    ``scipy.sparse.linalg.lsmr``; without the library, ``torch.linalg.lstsq`` on the damped augmented
    system (a one-time warning names the missing extra on CUDA). All agree to the solver tolerance.

    Args:
        A: ``[m, n]`` matrix.
        b: ``[m]`` right-hand side.
        device: Device to solve on (default: ``A``'s); the result is returned on ``A``'s device.
        damp: Tikhonov damping (LSMR's ``damp``).
        atol: LSMR stopping tolerance on ``A^T r`` (relative).
        btol: LSMR stopping tolerance on ``r`` (relative).
        maxiter: LSMR iteration limit (default ``min(m, n)``).
        backend: ``"auto"``, or force ``"cupy"``, ``"scipy"`` or ``"torch"``.
        return_istop: Also return LSMR's stop reason (``torch`` back end: 2 = least-squares solution).

    Returns:
        ``x`` (``[n]``, ``A``'s dtype), or ``(x, istop)`` with ``return_istop``.

    Raises:
        ValueError: Shapes that do not match, non-finite inputs, or an unknown backend.
        ImportError: ``backend="cupy"``/``"scipy"`` without that library.
    """
    if backend not in LSMR_BACKENDS:
        raise ValueError(f"backend must be one of {LSMR_BACKENDS}, got {backend!r}.")
    if A.dim() != 2 or b.dim() != 1 or b.shape[0] != A.shape[0]:
        raise ValueError(f"A must be [m, n] and b [m]; got A {tuple(A.shape)} and b {tuple(b.shape)}.")
    if not (torch.isfinite(A).all() and torch.isfinite(b).all()):
        raise ValueError("A and b must be finite.")
    if damp < 0:
        raise ValueError(f"damp must be >= 0, got {damp}.")
    out_device, out_dtype = A.device, A.dtype if A.dtype.is_floating_point else torch.float64
    where = torch.device(device) if device is not None else A.device
    kwargs: dict[str, Any] = {"damp": damp, "atol": atol, "btol": btol, "maxiter": maxiter}
    lib = None
    if backend == "torch":
        name = "torch"
    elif where.type == "cuda" and backend in ("auto", "cupy"):
        lib = _load_cupy()
        name = "cupy" if lib is not None else "torch"
    elif backend == "cupy":
        raise ValueError(f"backend='cupy' solves on a CUDA device, got device {where}.")
    else:
        lib = _load_scipy()
        name = "scipy" if lib is not None else "torch"
    if backend != "auto" and name != backend:
        raise ImportError(f"backend={backend!r} needs {backend}, which is not installed.")
    if name == "cupy":
        assert lib is not None
        cupy = importlib.import_module("cupy")
        a_cu = cupy.from_dlpack(A.detach().to(where, torch.float64).contiguous())
        b_cu = cupy.from_dlpack(b.detach().to(where, torch.float64).contiguous())
        sol = lib.lsmr(a_cu, b_cu, **kwargs)
        x, istop = torch.from_dlpack(sol[0]), int(sol[1])
    elif name == "scipy":
        assert lib is not None
        sol = lib.lsmr(A.detach().double().cpu().numpy(), b.detach().double().cpu().numpy(), **kwargs)
        x, istop = torch.from_numpy(sol[0]), int(sol[1])
    else:
        x, istop = _torch_lstsq(A, b, damp), 2
    x = x.to(device=out_device, dtype=out_dtype)
    return (x, istop) if return_istop else x


def solve_scales(
    ata: torch.Tensor,
    atb: torch.Tensor,
    *,
    damp: float = 1.0,
    intercept: bool = False,
    max_abs: float = 10.0,
    **lsmr_kwargs: Any,
) -> torch.Tensor | None:
    """Scales of the kept units from the normal equations, as published (Kwon et al., 2022).

    The published ``lsmr_cupy_solver`` writes the scales as ``s = 1 + delta`` and runs LSMR with
    ``damp=1`` on the *normal equations* ``(A^T A) delta = A^T B - (A^T A) 1``: the damping term
    ``damp^2 ||delta||^2`` pulls the scales towards 1 (no rescaling) when the system is ill-conditioned.
    A solve that does not converge (LSMR stop code 3, 6 or 7; its iteration cap is ``10 k`` here, not the
    published default ``k``), or any ``|s| > max_abs`` (published: 10), counts as a failure. Since
    the damped solution can only lower ``||B - A s||^2`` compared with ``s = 1`` (it shrinks the
    normal-equation step along every eigenvector of ``A^T A``), rescaling never increases a layer's
    reconstruction error, up to the solver tolerance. That holds for systems without intercept; with
    the published head intercept (whose coefficient starts at 1 and is dropped) it need not.

    Args:
        ata: ``A^T A`` (``[k, k]``, or ``[k + 1, k + 1]`` with ``intercept``).
        atb: ``A^T B``.
        damp: LSMR damping (published: 1.0, in the units of ``A^T A``).
        intercept: The last column is the intercept; its coefficient is solved for and dropped.
        max_abs: Largest accepted ``|scale|``.
        **lsmr_kwargs: Passed to :func:`lsmr_solve` (``backend``, ``atol``, ``btol``, ``maxiter``...).

    Returns:
        ``[k]`` scales (float64), or ``None`` on failure.

    Raises:
        ValueError: Shapes that do not match.
    """
    if ata.dim() != 2 or ata.shape[0] != ata.shape[1] or atb.shape != (ata.shape[0],):
        raise ValueError(f"ata must be [n, n] and atb [n]; got {tuple(ata.shape)} and {tuple(atb.shape)}.")
    ata, atb = ata.double(), atb.double()
    rhs = atb - ata.sum(dim=1)  # residual of the normal equations at s = 1
    # LSMR reaches the solution in n steps only in exact arithmetic; the published default cap of n
    # iterations makes well-posed but ill-conditioned systems "fail", so allow ten times more.
    lsmr_kwargs.setdefault("maxiter", 10 * ata.shape[0])
    delta, istop = lsmr_solve(ata, rhs, damp=damp, return_istop=True, **lsmr_kwargs)
    if istop in _LSMR_FAILED:
        return None
    scales = 1.0 + delta
    if intercept:
        scales = scales[:-1]
    if not torch.isfinite(scales).all() or (scales.numel() and float(scales.abs().max()) > max_abs):
        return None
    return scales


def fold_scales(
    weight: torch.Tensor, scales: torch.Tensor, *, unit_size: int = 1, in_dim: int = 1
) -> torch.Tensor:
    """Multiply per-unit scales into the input columns of an output projection (Kwon et al., 2022).

    Scaling a unit's slice of a projection's *input* is the same as scaling the matching weight
    columns, so a model whose head/neuron masks hold the tuned scales equals the plain model with these
    weights (a scale of 0 zeroes the columns, i.e. prunes the unit). The bias is not touched: the
    masks act before it.

    Args:
        weight: Output-projection weight, ``[out, in]`` (``nn.Linear``, ``in_dim=1``) or ``[in, out]``
            (transformers ``Conv1D``, ``in_dim=0``).
        scales: ``[in // unit_size]`` per-unit factors (heads: per query head with
            ``unit_size=head_dim``, or per KV group with ``unit_size=group_size * head_dim``; neurons:
            ``unit_size=1``).
        unit_size: Input features per unit.
        in_dim: Dimension of ``weight`` that holds the input features.

    Returns:
        A new weight tensor (same dtype and device).

    Raises:
        ValueError: Sizes that do not match.
    """
    if weight.dim() != 2 or in_dim not in (0, 1):
        raise ValueError(f"weight must be 2-D and in_dim 0 or 1; got shape {tuple(weight.shape)}, {in_dim}.")
    factor = scales.reshape(-1).repeat_interleave(unit_size)
    if factor.numel() != weight.shape[in_dim]:
        raise ValueError(
            f"{scales.numel()} scales x unit_size {unit_size} != {weight.shape[in_dim]} input features."
        )
    shape = (1, -1) if in_dim == 1 else (-1, 1)
    return weight * factor.to(device=weight.device, dtype=weight.dtype).reshape(shape)


def fold_masks(
    model: PreTrainedModel,
    head_mask: torch.Tensor | None = None,
    neuron_mask: torch.Tensor | None = None,
    *,
    stack: str | None = None,
    head_unit: str = "query",
) -> None:
    """Make (rescaled) masks physical: multiply them into the output projections' weight columns.

    After this, the plain model computes what the model with
    :func:`hf_prune.calibration.fisher.mask_hooks` and the same masks computed (Kwon et al., 2022).

    Args:
        model: The model, changed in place.
        head_mask: ``[layers, units]`` (units per ``head_unit``) or ``None``.
        neuron_mask: ``[layers, intermediate]`` or ``None``.
        stack: Stack name (default: the main stack).
        head_unit: ``"query"`` or ``"kv_group"``.
    """
    targets = mask_targets(model, stack)
    for mask, name in ((head_mask, "head_mask"), (neuron_mask, "neuron_mask")):
        if mask is not None and (mask.dim() != 2 or mask.shape[0] != len(targets)):
            raise ValueError(f"{name} must be [layers={len(targets)}, units], got {tuple(mask.shape)}.")
    with torch.no_grad():
        for t in targets:
            for module, row, size in (
                (t.o, None if head_mask is None else head_mask[t.layer], _unit(t, head_unit)),
                (t.mlp_out, None if neuron_mask is None else neuron_mask[t.layer], 1),
            ):
                if row is None:
                    continue
                # With parametrizations (hf_prune's reversible masks) scale the stored weight: a column
                # scaling commutes with an elementwise mask.
                plist = getattr(module, "parametrizations", None)
                param = plist["weight"].original if plist is not None and "weight" in plist else module.weight
                param.copy_(
                    fold_scales(param, row, unit_size=size, in_dim=0 if isinstance(module, Conv1D) else 1)
                )


def _unit(target: MaskTarget, head_unit: str) -> int:
    g = target.geometry
    if head_unit not in ("query", "kv_group"):
        raise ValueError(f"head_unit must be 'query' or 'kv_group', got {head_unit!r}.")
    return g.head_dim if head_unit == "query" else g.head_dim * g.group_size


def rescale_masks(
    model: PreTrainedModel,
    batches: list[dict[str, torch.Tensor]],
    head_mask: torch.Tensor,
    neuron_mask: torch.Tensor,
    *,
    stack: str | None = None,
    damp: float = 1.0,
    max_abs: float = 10.0,
    skip_first_attention: bool = True,
    cls_only_last: bool | None = None,
    head_intercept: bool = True,
    progress: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Least-squares mask tuning of Kwon et al. (NeurIPS 2022): rescale the kept heads and neurons.

    Layer by layer (heads, then neurons), :func:`hf_prune.calibration.fisher.collect_rescale_systems`
    builds the system "pruned sub-layer output = dense sub-layer output" (residual-added, before
    LayerNorm) and :func:`solve_scales` solves it; the scales multiply the masks before the next
    sub-layer is built. Apply the result with :func:`fold_masks`.

    Args:
        model: A supported model (unchanged).
        batches: Calibration inputs.
        head_mask: ``[layers, num_heads]`` 0/1 (or already scaled) query-head mask; a
            ``[layers, num_kv_heads]`` KV-group mask is expanded to its query heads.
        neuron_mask: ``[layers, intermediate]``.
        stack: Stack name (default: the main stack).
        damp: LSMR damping towards scale 1 (published: 1.0).
        max_abs: Largest accepted scale magnitude (published: 10); beyond it rescaling stops.
        skip_first_attention: Leave block 0's heads unscaled (published).
        cls_only_last: Reconstruct only the first token after the last MLP (``None``: for encoder
            classifiers, as published for GLUE).
        head_intercept: Solve the head systems with the published intercept column (then dropped).
        progress: Show a progress bar (only on a terminal).

    Returns:
        ``(head_mask [layers, num_heads], neuron_mask [layers, intermediate])`` with the scales applied.
    """

    def solve(system: RescaleSystem) -> torch.Tensor | None:
        return solve_scales(system.ata, system.atb, damp=damp, intercept=system.intercept, max_abs=max_abs)

    result = collect_rescale_systems(
        model,
        batches,
        head_mask,
        neuron_mask,
        stack=stack,
        solve=solve,
        skip_first_attention=skip_first_attention,
        cls_only_last=cls_only_last,
        head_intercept=head_intercept,
        progress=progress,
    )
    assert result.head_mask is not None and result.neuron_mask is not None
    return result.head_mask, result.neuron_mask

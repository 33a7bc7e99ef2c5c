"""Run 2:4-pruned weights on NVIDIA's sparse tensor cores (``torch.sparse`` semi-structured tensors).

N:M pruning with ``pattern="2:4"`` (``WandaConfig``, ``MagnitudeConfig``, ``SparseGPTConfig``) keeps 2 of
every 4 consecutive input weights of each output row. Ampere and newer GPUs (compute capability >= 8.0)
multiply such a matrix at up to twice the dense rate when it is stored compressed: values plus 2-bit
indices (Mishra et al., 2021, *Accelerating Sparse Deep Neural Networks*). :func:`to_semi_structured`
swaps each qualifying ``nn.Linear`` weight for ``torch.sparse.to_sparse_semi_structured``'s tensor
subclass, whose ``linear`` dispatches to cuSPARSELt (or CUTLASS); the module and its ``forward`` stay
as they are.

Constraints (read from ``torch/sparse/semi_structured.py`` of torch 2.13; :func:`semi_structured_constraints`
returns them): CUDA tensors only; 2-D and contiguous; dtypes and the multiples both weight dimensions
must be, per backend -- cuSPARSELt: float16 / bfloat16 16 x 16, int8 / float8_e4m3fn 32 x 32; CUTLASS:
float16 / bfloat16 32 x 64, float32 32 x 32, int8 16 x 128. Float32 models must be cast
(``model.half()`` / ``model.to(torch.bfloat16)``) for cuSPARSELt. The dense operand (activations) is
padded by torch as needed. Layers whose weight shape fails the multiples (often ``lm_head`` with an odd
vocabulary) are skipped and listed, not converted.

On CPU (or a GPU older than sm80) there are no semi-structured kernels: the function verifies the 2:4
pattern, leaves every weight dense, and warns (``RuntimeWarning``) that the zeros are still multiplied by
dense kernels, so a 2:4 model runs no faster there; ``strict=True`` raises instead.

Converted weights are for inference: they cannot be saved with ``save_pretrained`` (convert after
saving, or reload and convert again) and are not trained.
"""

from __future__ import annotations

import fnmatch
import warnings
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedModel

#: Backends of ``torch.sparse`` semi-structured tensors.
BACKENDS = ("auto", "cusparselt", "cutlass")

# (rows, cols) multiples of the sparse weight, per backend and dtype (torch 2.13's _DTYPE_SHAPE_CONSTRAINTS).
_CONSTRAINTS: dict[str, dict[torch.dtype, tuple[int, int]]] = {
    "cusparselt": {
        torch.float16: (16, 16),
        torch.bfloat16: (16, 16),
        torch.int8: (32, 32),
        torch.float8_e4m3fn: (32, 32),
    },
    "cutlass": {
        torch.float16: (32, 64),
        torch.bfloat16: (32, 64),
        torch.float32: (32, 32),
        torch.int8: (16, 128),
    },
}


def pattern_violations(weight: torch.Tensor, n: int = 2, m: int = 4) -> int:
    """Count the groups of ``m`` consecutive input weights that keep more than ``n`` non-zeros.

    Groups run along the last (input) dimension of an ``[out, in]`` weight, the layout both hf_prune's
    N:M masks and the semi-structured kernels use.

    Args:
        weight: A 2-D weight ``[out, in]``.
        n: Non-zeros allowed per group.
        m: Group size; ``in`` must be a multiple of it.

    Returns:
        The number of offending groups (0 means the weight has the N:M pattern).

    Raises:
        ValueError: If ``weight`` is not 2-D, ``n``/``m`` are invalid, or ``in`` is not a multiple of ``m``.
    """
    if weight.ndim != 2:
        raise ValueError(f"weight must be 2-D [out, in], got shape {tuple(weight.shape)}.")
    if not (isinstance(n, int) and isinstance(m, int) and 0 < n < m):
        raise ValueError(f"n={n!r}, m={m!r} must be ints with 0 < n < m (e.g. n=2, m=4).")
    if weight.shape[1] % m:
        raise ValueError(
            f"the input dimension {weight.shape[1]} is not a multiple of m={m}, so it has no {n}:{m} pattern."
        )
    groups = (weight.detach() != 0).reshape(weight.shape[0], -1, m)
    return int((groups.sum(dim=-1) > n).sum())


def is_semi_structured(weight: torch.Tensor) -> bool:
    """Whether ``weight`` ([out, in]) keeps at most 2 of every 4 consecutive input weights.

    Args:
        weight: A 2-D weight.

    Returns:
        ``True`` when it has the 2:4 pattern (``in`` a multiple of 4 and no group over 2 non-zeros).
    """
    return weight.ndim == 2 and weight.shape[1] % 4 == 0 and pattern_violations(weight) == 0


def semi_structured_constraints(dtype: torch.dtype, backend: str = "cusparselt") -> tuple[int, int]:
    """The multiples both dimensions of a sparse weight must be for ``backend`` and ``dtype``.

    Args:
        dtype: The weight's dtype.
        backend: ``"cusparselt"`` or ``"cutlass"``.

    Returns:
        ``(rows, cols)``: ``out`` must be a multiple of ``rows`` and ``in`` of ``cols``.

    Raises:
        ValueError: If the backend is unknown or does not support ``dtype``.
    """
    if backend not in _CONSTRAINTS:
        raise ValueError(f"backend={backend!r} is not one of {sorted(_CONSTRAINTS)}.")
    table = _CONSTRAINTS[backend]
    if dtype not in table:
        raise ValueError(
            f"dtype {dtype} has no semi-structured kernels in the {backend} backend (supported: "
            f"{', '.join(str(d) for d in table)}); cast the model first, e.g. model.to(torch.float16)."
        )
    return table[dtype]


def semi_structured_available(device: torch.device | str | None = None) -> tuple[bool, str]:
    """Whether ``device`` has semi-structured sparse kernels, and why not when it has none.

    Args:
        device: The device the model runs on (default: the current CUDA device, if any).

    Returns:
        ``(available, reason)``; ``reason`` is empty when available.
    """
    device = torch.device(device) if device is not None else None
    if device is not None and device.type != "cuda":
        return (
            False,
            f"the model is on {device.type.upper()}, and 2:4 semi-structured kernels exist only on CUDA",
        )
    if not torch.cuda.is_available():
        return False, "no CUDA device is available, and 2:4 semi-structured kernels exist only on CUDA"
    major, minor = torch.cuda.get_device_capability(device)
    if major < 8:
        return False, (
            f"the GPU has compute capability {major}.{minor}; sparse tensor cores need 8.0 or newer (Ampere+)"
        )
    return True, ""


def _resolve_backend(backend: str) -> str:
    if backend not in BACKENDS:
        raise ValueError(
            f"backend={backend!r} is not one of {BACKENDS}; 'auto' picks cuSPARSELt when present."
        )
    if backend != "auto":
        return backend
    cusparselt = getattr(torch.backends, "cusparselt", None)
    return "cusparselt" if cusparselt is not None and cusparselt.is_available() else "cutlass"


def _unwrap(model: Any) -> nn.Module:
    if isinstance(model, PreTrainedModel):  # its `base_model` is the backbone, not a wrapped model
        return model
    base = getattr(model, "base_model", None)
    # An hf_prune PrunedModel (duck-typed: this module does not import integration/).
    if isinstance(base, nn.Module) and hasattr(model, "report"):
        return base
    if isinstance(model, nn.Module):
        return model
    raise TypeError(
        f"model must be a torch nn.Module (or an hf_prune PrunedModel), got {type(model).__name__}."
    )


def _candidates(model: nn.Module, modules: list[str] | None) -> list[tuple[str, nn.Linear]]:
    linears = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    if modules is None:
        return [(name, m) for name, m in linears if is_semi_structured(m.weight)]
    if isinstance(modules, str) or not all(isinstance(p, str) for p in modules):
        raise TypeError(
            f"modules must be a list of name patterns (fnmatch, e.g. ['*.mlp.*']), got {modules!r}."
        )
    chosen: dict[str, nn.Linear] = {}
    for pattern in modules:
        hits = [(name, m) for name, m in linears if fnmatch.fnmatchcase(name, pattern)]
        if not hits:
            raise ValueError(
                f"module pattern {pattern!r} matches no nn.Linear of the model; fix the pattern (fnmatch "
                f"syntax, e.g. 'model.layers.*.mlp.*'). Some Linear names: {[n for n, _ in linears[:4]]}."
            )
        for name, m in hits:
            bad = pattern_violations(m.weight) if m.weight.shape[1] % 4 == 0 else -1
            if bad:
                raise ValueError(
                    f"{name}'s weight does not have the 2:4 pattern ({bad if bad > 0 else 'all'} groups of 4 "
                    "keep more than 2 non-zeros); prune it with pattern='2:4' or leave it out of modules."
                )
            chosen[name] = m
    return list(chosen.items())


def to_semi_structured(
    model: Any, *, modules: list[str] | None = None, backend: str = "auto", strict: bool = False
) -> dict[str, Any]:
    """Convert a 2:4-pruned model's Linear weights to ``torch.sparse`` semi-structured tensors, in place.

    The 2:4 pattern is verified first on every device. On a GPU with sparse tensor cores each
    qualifying weight is compressed (see the module docstring for dtype/shape constraints); elsewhere
    nothing changes and a ``RuntimeWarning`` says that dense kernels are used and why.

    Args:
        model: A finalized 2:4-pruned model (``PrunedModel.finalize()``'s result, or a ``PrunedModel``
            without live masks), on the device it will run on.
        modules: fnmatch patterns of the Linear modules to convert (each must match one, and each match
            must have the 2:4 pattern). Default: every Linear whose weight has the 2:4 pattern.
        backend: ``"auto"`` (cuSPARSELt when torch has it, else CUTLASS), ``"cusparselt"`` or ``"cutlass"``.
        strict: Raise instead of warning when the device has no semi-structured kernels.

    Returns:
        ``{"converted": [names], "skipped": {name: reason}, "candidates": [names with the 2:4 pattern],
        "backend": str | None, "dense_kernels": bool, "reason": str}``.

    Raises:
        TypeError: If ``model`` is not a module or ``modules`` not a list of strings.
        ValueError: If the model still carries masks, no Linear has the 2:4 pattern, a pattern matches
            nothing or a non-2:4 weight, or the dtype has no kernels in the chosen backend.
        RuntimeError: If ``strict`` and the device has no semi-structured kernels.
    """
    net = _unwrap(model)
    if any(getattr(m, "parametrizations", None) for m in net.modules()):
        raise ValueError(
            "the model still carries reversible pruning masks; call PrunedModel.finalize() first and convert "
            "the plain model it returns (a masked weight is recomputed on every call and cannot be "
            "compressed)."
        )
    found = _candidates(net, modules)
    if not found:
        raise ValueError(
            "no nn.Linear weight of the model has the 2:4 pattern; prune with pattern='2:4' (e.g. "
            "WandaConfig(pattern='2:4')) and finalize() before converting."
        )
    names = [name for name, _ in found]
    device = found[0][1].weight.device
    available, reason = semi_structured_available(device)
    if not available:
        message = (
            f"2:4 semi-structured kernels are not used: {reason}. The {len(found)} 2:4 weights stay dense "
            "and run on dense kernels, so the zeros are still multiplied and the model is no faster than "
            "dense "
            "(move it to an sm80+ GPU in float16/bfloat16 to use sparse tensor cores)."
        )
        if strict:
            raise RuntimeError(message)
        warnings.warn(message, RuntimeWarning, stacklevel=2)
        return {
            "converted": [],
            "skipped": {},
            "candidates": names,
            "backend": None,
            "dense_kernels": True,
            "reason": reason,
        }
    chosen = _resolve_backend(backend)
    cls = (
        torch.sparse.SparseSemiStructuredTensorCUSPARSELT
        if chosen == "cusparselt"
        else torch.sparse.SparseSemiStructuredTensorCUTLASS
    )
    converted: list[str] = []
    skipped: dict[str, str] = {}
    for name, module in found:
        weight = module.weight.detach()
        rows, cols = semi_structured_constraints(weight.dtype, chosen)
        out_f, in_f = weight.shape
        if out_f % rows or in_f % cols:
            skipped[name] = f"shape {tuple(weight.shape)} is not a multiple of ({rows}, {cols}) for {chosen}"
            continue
        if weight.device.type != "cuda":
            skipped[name] = f"on {weight.device}, not CUDA"
            continue
        module.weight = nn.Parameter(cls.from_dense(weight.contiguous()), requires_grad=False)
        converted.append(name)
    return {
        "converted": converted,
        "skipped": skipped,
        "candidates": names,
        "backend": chosen,
        "dense_kernels": not converted,
        "reason": "" if converted else "no candidate weight met the backend's shape constraints",
    }

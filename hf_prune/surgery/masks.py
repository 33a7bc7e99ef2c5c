"""Reversible unstructured masks on ``nn.Linear`` / ``Conv1D`` weights, and making them physical.

Masks are ``torch.nn.utils.parametrize`` parametrizations: the forward pass sees ``weight * mask``,
gradients flow to the kept weights only (so healing keeps the sparsity), and removing the
parametrization either restores the dense weight (undo) or bakes the zeros in (finalize).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import parametrize
from transformers.pytorch_utils import Conv1D

from hf_prune.arch import is_linear

_BIT_SHIFTS = torch.arange(8, dtype=torch.uint8)


def pack_mask(mask: torch.Tensor) -> torch.Tensor:
    """Pack a boolean tensor into bits (8 entries per byte, row-major order).

    Args:
        mask: Boolean tensor of any shape.

    Returns:
        A 1-D ``uint8`` tensor of ``ceil(numel / 8)`` bytes on ``mask``'s device.
    """
    flat = mask.reshape(-1).to(torch.uint8)
    pad = (-flat.numel()) % 8
    if pad:
        flat = torch.cat([flat, flat.new_zeros(pad)])
    shifts = _BIT_SHIFTS.to(flat.device)
    return (flat.view(-1, 8) << shifts).sum(dim=1, dtype=torch.uint8)


def unpack_mask(packed: torch.Tensor, shape: torch.Size | tuple[int, ...]) -> torch.Tensor:
    """Inverse of :func:`pack_mask`.

    Args:
        packed: The bytes from :func:`pack_mask`.
        shape: The original shape.

    Returns:
        The boolean tensor.
    """
    numel = 1
    for d in shape:
        numel *= int(d)
    shifts = _BIT_SHIFTS.to(packed.device)
    bits = (packed.unsqueeze(1) >> shifts) & 1
    return bits.view(-1)[:numel].to(torch.bool).view(tuple(shape))


class WeightMask(nn.Module):
    """Parametrization ``weight -> where(mask, weight, 0)`` with a keep-mask stored as packed bits.

    The mask is kept at one bit per weight (a ``bool`` tensor costs a byte: a quarter of the fp32
    weights it masks, which issue 16 measured as most of hf_prune's extra memory over a pruner that
    overwrites weights in place). ``mask`` reads and writes it as a ``bool`` tensor.

    Args:
        mask: Keep-mask shaped like the stored weight (``True`` = kept).
    """

    def __init__(self, mask: torch.Tensor) -> None:
        super().__init__()
        self.shape = tuple(mask.shape)
        # Not persistent: checkpoints store the masked weight itself, never the mask buffer.
        self.register_buffer("packed", pack_mask(mask.to(torch.bool)), persistent=False)

    @property
    def mask(self) -> torch.Tensor:
        """The keep-mask as a ``bool`` tensor shaped like the stored weight (a fresh tensor)."""
        return unpack_mask(self.packed, self.shape)

    @mask.setter
    def mask(self, value: torch.Tensor) -> None:
        if tuple(value.shape) != self.shape:
            raise ValueError(f"Mask shape {tuple(value.shape)} does not match {self.shape}.")
        self.packed = pack_mask(value.to(device=self.packed.device, dtype=torch.bool))

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        """Return the masked weight.

        Args:
            weight: The dense stored weight.
        """
        # where() instead of weight * mask.to(dtype): no weight-sized float copy of the mask.
        return torch.where(self.mask, weight, weight.new_zeros(()))


def to_storage_orientation(module: nn.Module, mask_out_in: torch.Tensor) -> torch.Tensor:
    """Turn an ``[out, in]`` mask into the orientation the module stores (Conv1D stores ``[in, out]``).

    Args:
        module: The Linear or Conv1D.
        mask_out_in: Mask in ``[out, in]`` orientation.
    """
    return mask_out_in.t() if isinstance(module, Conv1D) else mask_out_in


def weight_out_in(module: nn.Module) -> torch.Tensor:
    """Return the module's (possibly masked) weight as ``[out, in]`` (a view, not a copy).

    Args:
        module: The Linear or Conv1D.
    """
    w = module.weight
    return w.t() if isinstance(module, Conv1D) else w


def has_mask(module: nn.Module) -> bool:
    """Whether ``module`` carries an hf_prune weight mask.

    Args:
        module: Any module.
    """
    return parametrize.is_parametrized(module, "weight") and any(
        isinstance(p, WeightMask) for p in module.parametrizations["weight"]
    )


def get_mask(module: nn.Module) -> torch.Tensor | None:
    """Return the module's keep-mask in ``[out, in]`` orientation, or ``None``.

    Args:
        module: Any module.
    """
    if not has_mask(module):
        return None
    mask = next(p for p in module.parametrizations["weight"] if isinstance(p, WeightMask)).mask
    return mask.t() if isinstance(module, Conv1D) else mask


def apply_mask(module: nn.Module, keep_out_in: torch.Tensor) -> None:
    """Attach (or tighten) a keep-mask on a Linear/Conv1D weight.

    Applying a second mask intersects it with the first, so gradual pruning only ever removes weights.

    Args:
        module: An ``nn.Linear`` or ``Conv1D``.
        keep_out_in: Boolean mask in ``[out, in]`` orientation.

    Raises:
        TypeError: If the module is not a prunable projection.
        ValueError: If the mask shape does not match the weight.
    """
    if not is_linear(module):
        raise TypeError(f"Masks apply to nn.Linear or Conv1D modules, got {type(module).__name__}.")
    mask = to_storage_orientation(module, keep_out_in.to(torch.bool))
    stored = module.parametrizations["weight"].original if has_mask(module) else module.weight
    if tuple(mask.shape) != tuple(stored.shape):
        raise ValueError(f"Mask shape {tuple(mask.shape)} does not match weight shape {tuple(stored.shape)}.")
    mask = mask.to(stored.device)
    if has_mask(module):
        holder = next(p for p in module.parametrizations["weight"] if isinstance(p, WeightMask))
        holder.mask = holder.mask & mask
        return
    parametrize.register_parametrization(module, "weight", WeightMask(mask), unsafe=True)


def remove_mask(module: nn.Module, *, make_physical: bool = True) -> None:
    """Remove the mask; bake the zeros into the weight (``make_physical``) or restore the dense weight.

    Args:
        module: A masked module (no-op otherwise).
        make_physical: ``True`` keeps the masked values, ``False`` undoes the pruning.
    """
    if not has_mask(module):
        return
    # torch gives each parametrized module a generated class, but copy.deepcopy shares it between the
    # original and the copy, and removing a parametrization deletes the property from that class: the
    # other module would lose its ``weight``. A private copy of the class keeps the removal local.
    cls = type(module)
    module.__class__ = type(cls.__name__, cls.__bases__, dict(cls.__dict__))
    if make_physical and len(module.parametrizations["weight"]) == 1:
        # Zero the pruned entries of the stored tensor in place, then drop the parametrization and keep
        # that tensor: no second copy of the weight is made. (leave_parametrized=True would allocate
        # the masked weight anew; for weights memory-mapped from a checkpoint, that doubles them in
        # RSS, while an in-place write only turns the touched pages private.)
        holder = module.parametrizations["weight"][0]
        original = module.parametrizations["weight"].original
        if isinstance(holder, WeightMask):
            with torch.no_grad():
                original.masked_fill_(~holder.mask.to(original.device), 0)
            parametrize.remove_parametrizations(module, "weight", leave_parametrized=False)
            return
    parametrize.remove_parametrizations(module, "weight", leave_parametrized=make_physical)


def count_nonzero_weight(module: nn.Module) -> int:
    """Non-zero entries of the weight the forward pass sees (masked or not), without building it.

    Reading ``module.weight`` of a masked module computes ``where(mask, weight, 0)``: a weight-sized
    copy per call. Here a dense stored weight (the common case) costs one count over it and one over
    the mask; only a stored weight that already holds zeros pays for the exact intersection.

    Args:
        module: A Linear or Conv1D, masked or not (not offloaded: use ``read_param`` for those).
    """
    if not has_mask(module) or len(module.parametrizations["weight"]) != 1:
        return int(torch.count_nonzero(module.weight.detach()))
    original = module.parametrizations["weight"].original.detach()
    keep = module.parametrizations["weight"][0].mask.to(original.device)
    if int(torch.count_nonzero(original)) == original.numel():
        return int(torch.count_nonzero(keep))
    return int(torch.count_nonzero(keep.logical_and_(original != 0)))


def masked_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Return ``(name, module)`` for every masked module of ``model``.

    Args:
        model: Any model.
    """
    return [(n, m) for n, m in model.named_modules() if has_mask(m)]


def make_masks_physical(model: nn.Module) -> int:
    """Bake every mask of ``model`` into its weights; return how many modules were masked.

    Args:
        model: Any model.
    """
    mods = masked_modules(model)
    for _, m in mods:
        remove_mask(m, make_physical=True)
    return len(mods)


def clean_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Return ``model``'s state dict with masks applied and parametrization keys renamed back.

    ``parametrize`` stores ``x.parametrizations.weight.original``; checkpoints must hold plain
    ``x.weight`` (masked) so that any loader, hf_prune's or transformers', reads them.

    Args:
        model: A model that may carry masks.
    """
    state = model.state_dict()
    for name, module in masked_modules(model):
        prefix = f"{name}." if name else ""
        state.pop(f"{prefix}parametrizations.weight.original", None)
        state[f"{prefix}weight"] = module.weight.detach()
    from hf_prune.surgery.offload import materialize_state_dict

    return materialize_state_dict(model, state)

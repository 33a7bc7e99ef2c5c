"""Reading and writing weights of modules offloaded by accelerate (``device_map="auto"`` + offload).

An offloaded module keeps its parameters on the ``meta`` device; accelerate's ``AlignDevicesHook``
loads them from a weights map (RAM dict or disk files) for each forward and drops them afterwards.
Pruning such a module therefore cannot attach a mask parametrization (the hook owns ``weight``):
the pruned weight is written back into the weights map instead, to a memory-mapped file on disk when
the original lived on disk, so the model never has to fit in memory at once.
"""

from __future__ import annotations

import tempfile
from typing import Any

import torch
from torch import nn
from transformers.pytorch_utils import Conv1D


def _hook(module: nn.Module) -> Any:
    hook = getattr(module, "_hf_hook", None)
    return hook if hook is not None and getattr(hook, "offload", False) else None


def is_offloaded(module: nn.Module) -> bool:
    """Whether ``module``'s own weight is offloaded by an accelerate hook.

    Args:
        module: Any module.
    """
    weight = getattr(module, "weight", None)
    return _hook(module) is not None and isinstance(weight, torch.Tensor) and weight.is_meta


def read_param(module: nn.Module, name: str = "weight") -> torch.Tensor:
    """Return a real (CPU) copy of an offloaded module's parameter.

    Args:
        module: An offloaded module.
        name: Parameter name.
    """
    hook = _hook(module)
    if hook is None:
        return getattr(module, name).detach()
    return hook.weights_map[name].detach().clone()


def read_weight_out_in(module: nn.Module) -> torch.Tensor:
    """The module's weight as ``[out, in]``, offloaded or not (offloaded: a copy).

    Args:
        module: A Linear or Conv1D.
    """
    w = read_param(module) if is_offloaded(module) else module.weight.detach()
    return w.t() if isinstance(module, Conv1D) else w


def write_param(module: nn.Module, value: torch.Tensor, name: str = "weight") -> None:
    """Replace an offloaded module's parameter in its weights map.

    Weights that accelerate keeps in RAM are replaced in RAM; weights read from disk are written to a
    new memory-mapped file (in the loader's offload folder, or a private temporary one), so they stay
    out of memory.

    Args:
        module: An offloaded module.
        value: The new value, in the stored orientation and shape.
        name: Parameter name.

    Raises:
        ValueError: If the module is not offloaded.
    """
    from accelerate.utils import offload_weight

    hook = _hook(module)
    if hook is None:
        raise ValueError(
            "write_param is for accelerate-offloaded modules; set the parameter directly instead."
        )
    wmap = hook.weights_map
    loader = getattr(wmap, "dataset", wmap)
    key = f"{getattr(wmap, 'prefix', '')}{name}"
    value = value.detach().to("cpu").contiguous()
    state = getattr(loader, "state_dict", None)
    if isinstance(state, dict) and key in state:
        state[key] = value
        return
    if getattr(loader, "save_folder", None) is None:
        # Keep the folder alive as long as the loader: it holds the only copy of the pruned weights.
        loader._hf_prune_tmp = tempfile.TemporaryDirectory(prefix="hf_prune_offload_")
        loader.save_folder = loader._hf_prune_tmp.name
    offload_weight(value, key, loader.save_folder, index=loader.index)


def write_weight_out_in(module: nn.Module, weight_out_in: torch.Tensor) -> None:
    """Write an ``[out, in]`` weight back, offloaded or not.

    Args:
        module: A Linear or Conv1D.
        weight_out_in: The new weight in ``[out, in]`` orientation.
    """
    stored = weight_out_in.t() if isinstance(module, Conv1D) else weight_out_in
    if is_offloaded(module):
        write_param(module, stored.to(read_param(module).dtype))
    else:
        module.weight.data.copy_(stored.to(module.weight.dtype))


def materialize_state_dict(model: nn.Module, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Replace meta tensors of offloaded modules in ``state`` by their values from the weights maps.

    Args:
        model: The model ``state`` came from.
        state: A state dict (modified in place and returned).
    """
    for key, value in list(state.items()):
        if isinstance(value, torch.Tensor) and value.is_meta:
            module_name, _, pname = key.rpartition(".")
            module = model.get_submodule(module_name) if module_name else model
            if _hook(module) is not None:
                state[key] = read_param(module, pname)
    return state

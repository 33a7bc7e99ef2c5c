"""Reading and writing weights of modules offloaded by accelerate (``device_map="auto"`` + offload).

An offloaded module keeps its parameters on the ``meta`` device; accelerate's ``AlignDevicesHook``
loads them from a weights map (RAM dict or disk files) for each forward and drops them afterwards.
Pruning such a module therefore cannot attach a mask parametrization (the hook owns ``weight``):
the pruned weight is written back into the weights map instead, to a memory-mapped file on disk when
the original lived on disk, so the model never has to fit in memory at once.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
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
    # The hook first: reading ``module.weight`` of a masked module computes the masked weight.
    if _hook(module) is None:
        return False
    weight = getattr(module, "weight", None)
    return isinstance(weight, torch.Tensor) and weight.is_meta


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


def save_weights_streaming(
    model: nn.Module, folder: str | os.PathLike[str], max_shard_size: int | str = "500MB"
) -> list[Path]:
    """Write ``model``'s weights as safetensors shards, one shard in memory at a time.

    ``transformers``' ``save_pretrained(state_dict=...)`` needs every tensor of the state dict up
    front: for a masked model that means a masked copy of every pruned weight at once (as large as the
    targeted weights), and for an accelerate-offloaded model every offloaded weight read back into
    RAM. Here the shard plan is made from the stored tensors (no copies; offloaded ones are meta
    placeholders), then each shard's tensors are produced (masked weights as ``weight * mask``,
    offloaded weights read from their weights map), written, and dropped before the next shard, so the
    extra memory is one shard (plus its serialization buffer) whatever the model's size.

    Tied weights are removed as ``transformers`` does (the key it expects on reload is kept), keys are
    the in-memory names (what ``save_pretrained(..., save_original_format=False)`` writes), and a
    sharded save writes ``model.safetensors.index.json``. Only the weights are written: save the
    config (and anything else) separately.

    Args:
        model: The model (may carry hf_prune masks and accelerate offload hooks).
        folder: Destination folder (created if missing).
        max_shard_size: Largest shard, in bytes or as ``"500MB"``; bounds the extra peak memory.

    Returns:
        The shard files written.
    """
    import json

    from huggingface_hub import split_torch_state_dict_into_shards
    from safetensors.torch import save_file
    from transformers.modeling_utils import remove_tied_weights_from_state_dict

    from hf_prune.surgery.masks import masked_modules

    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    state = model.state_dict(keep_vars=False)
    masked: dict[str, nn.Module] = {}
    for name, module in masked_modules(model):
        prefix = f"{name}." if name else ""
        original = state.pop(f"{prefix}parametrizations.weight.original")
        # The dense stored tensor stands in for the masked one while planning (same size, own storage).
        state[f"{prefix}weight"] = original
        masked[f"{prefix}weight"] = module
    state = remove_tied_weights_from_state_dict(state, model)
    split = split_torch_state_dict_into_shards(
        state, filename_pattern="model{suffix}.safetensors", max_shard_size=max_shard_size
    )
    written = []
    for shard_file, names in split.filename_to_tensors.items():
        shard: dict[str, torch.Tensor] = {}
        for key in names:
            tensor = state.pop(key)
            if key in masked:
                tensor = masked[key].weight.detach()
            elif tensor.is_meta:
                module_name, _, pname = key.rpartition(".")
                tensor = read_param(model.get_submodule(module_name) if module_name else model, pname)
            shard[key] = tensor.contiguous()
        save_file(shard, str(out / shard_file), metadata={"format": "pt"})
        written.append(out / shard_file)
        del shard
    if split.is_sharded:
        index = {"metadata": split.metadata, "weight_map": split.tensor_to_filename}
        (out / "model.safetensors.index.json").write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
    return written

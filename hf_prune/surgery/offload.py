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
    wmap = hook.weights_map
    value = wmap[name].detach()
    # Weights read from disk come back as a fresh tensor already; only a weight accelerate holds in
    # RAM is the stored tensor itself and must be copied (a second copy of every offloaded weight
    # read was most of an offloaded layer's peak memory).
    loader = getattr(wmap, "dataset", wmap)
    state = getattr(loader, "state_dict", loader if isinstance(loader, dict) else None)
    key = f"{getattr(wmap, 'prefix', '')}{name}"
    if not isinstance(state, dict) or key in state:
        return value.clone()
    return value


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
        # The meta placeholder carries the stored dtype: no need to read the weight back for it.
        write_param(module, stored.to(module.weight.dtype))
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
    """Write ``model``'s weights as safetensors shards, one tensor in memory at a time.

    ``transformers``' ``save_pretrained(state_dict=...)`` needs every tensor of the state dict up
    front: for a masked model that means a masked copy of every pruned weight at once (as large as the
    targeted weights), and for an accelerate-offloaded model every offloaded weight read back into
    RAM. Here the shard plan is made from the stored tensors (no copies; offloaded ones are meta
    placeholders), then each shard's tensors are produced (masked weights as ``weight * mask``,
    offloaded weights read from their weights map) one tensor at a time: each is written to the shard
    file and dropped before the next is produced (:func:`write_safetensors_streaming`), so the extra
    memory is one tensor, whatever the shard or model size.

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
    from hf_prune.utils import bound_heap_for_offload, release_freed_memory

    if any(t.is_meta for t in state.values()):
        bound_heap_for_offload()  # offloaded weights are read one by one: keep each off the heap

    def produce(key: str, stored: torch.Tensor) -> torch.Tensor:
        if key in masked:
            return masked[key].weight.detach()
        if stored.is_meta:
            module_name, _, pname = key.rpartition(".")
            return read_param(model.get_submodule(module_name) if module_name else model, pname)
        return stored.detach()

    # Whatever the caller's last forward pass freed (offloaded weights loaded and dropped) goes back
    # to the system before the save adds its own tensor.
    release_freed_memory()
    written = []
    for shard_file, names in split.filename_to_tensors.items():
        entries = [(key, state.pop(key)) for key in names]
        write_safetensors_streaming(
            out / shard_file,
            [(key, t.shape, t.dtype, lambda k=key, t=t: produce(k, t)) for key, t in entries],
            metadata={"format": "pt"},
        )
        del entries
        written.append(out / shard_file)
    if split.is_sharded:
        index = {"metadata": split.metadata, "weight_map": split.tensor_to_filename}
        (out / "model.safetensors.index.json").write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
    return written


#: safetensors dtype names (https://github.com/huggingface/safetensors, "Format").
_SAFETENSORS_DTYPES = {
    torch.float64: "F64",
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.int16: "I16",
    torch.int8: "I8",
    torch.uint8: "U8",
    torch.bool: "BOOL",
    torch.float8_e4m3fn: "F8_E4M3",
    torch.float8_e5m2: "F8_E5M2",
}


def write_safetensors_streaming(
    path: str | os.PathLike[str],
    entries: list[tuple[str, torch.Size, torch.dtype, Any]],
    metadata: dict[str, str] | None = None,
) -> None:
    """Write one safetensors file tensor by tensor: only one tensor is ever produced at a time.

    ``safetensors.torch.save_file`` takes every tensor of the file at once and serializes them into
    one bytes buffer: a shard costs twice its size in memory. The safetensors layout is an 8-byte
    little-endian header length, a JSON header of names, dtypes, shapes and byte offsets, then the
    raw little-endian bytes; the header needs only shapes and dtypes, so each tensor can be produced
    (read from an offload file, masked, ...) right before its bytes are written and dropped after.
    The result is byte-for-byte what ``save_file`` writes for the same tensors and metadata
    (``tests/test_method_speed_paths.py`` checks that).

    Args:
        path: File to write.
        entries: ``(name, shape, dtype, produce)`` in file order; ``produce()`` returns the CPU tensor.
        metadata: String metadata of the header (``{"format": "pt"}`` for transformers).

    Raises:
        ValueError: For a dtype safetensors cannot store, or a produced tensor that does not match
            its declared shape and dtype.
    """
    import json
    import struct
    import sys

    if sys.byteorder != "little":  # pragma: no cover - every platform torch ships for is little-endian
        raise ValueError("write_safetensors_streaming writes raw bytes and needs a little-endian machine.")
    header: dict[str, Any] = {}
    if metadata:
        header["__metadata__"] = dict(metadata)
    # safetensors sorts tensors by (alignment, name) within the data area; any order is valid on read,
    # but the same order as save_file gives the same bytes.
    ordered = sorted(entries, key=lambda e: (-_itemsize(e[2]), e[0]))
    offset = 0
    for name, shape, dtype, _ in ordered:
        if dtype not in _SAFETENSORS_DTYPES:
            raise ValueError(
                f"Tensor {name!r} has dtype {dtype}, which safetensors cannot store; supported: "
                f"{', '.join(str(d) for d in _SAFETENSORS_DTYPES)}."
            )
        nbytes = _itemsize(dtype) * int(torch.Size(shape).numel())
        header[name] = {
            "dtype": _SAFETENSORS_DTYPES[dtype],
            "shape": [int(d) for d in shape],
            "data_offsets": [offset, offset + nbytes],
        }
        offset += nbytes
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * ((-len(raw)) % 8)  # the data area starts 8-byte aligned, as save_file pads it
    with open(path, "wb") as fh:
        fh.write(struct.pack("<Q", len(raw)))
        fh.write(raw)
        for name, shape, dtype, produce in ordered:
            tensor = produce()
            if tuple(tensor.shape) != tuple(shape) or tensor.dtype != dtype:
                raise ValueError(
                    f"Tensor {name!r} was declared {tuple(shape)} {dtype} but produced "
                    f"{tuple(tensor.shape)} {tensor.dtype}."
                )
            data = tensor.detach().to("cpu").contiguous()
            if data.numel():
                # A byte view of the tensor's own storage: written without a serialization copy.
                fh.write(memoryview(data.reshape(-1).view(torch.uint8).numpy()))
            del tensor, data


def _itemsize(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()

"""Latency look-up tables: attention latency per kept head count, MLP latency per kept neuron count.

The latency-constrained Fisher mask search (Kwon et al., "A Fast Post-Training Pruning Framework for
Transformers", NeurIPS 2022) needs, for one block of the model on the target device, the time of the
attention sub-block keeping ``k`` heads and of the MLP keeping ``n`` neurons. They are measured here on
a one-block copy of the model built from its config (random weights: latency does not depend on the
values), shrunk with hf_prune's own surgery, at a given ``batch_size x seq_len``. A sub-block's time is
taken inside a real block forward with hooks (from entering the attention module to leaving its output
projection; from entering the first MLP input projection to leaving the MLP output projection), the
median of ``repeats`` runs after ``warmup``. Keeping zero units costs zero by definition (the
sub-block is skipped).

Tables are plain JSON (never pickle) and record the model shape they belong to, so a table measured
for another model is refused (:func:`check_lut`).
"""

from __future__ import annotations

import copy
import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm
from transformers import PreTrainedModel

from hf_prune.arch import get_arch, get_layers, get_stack_config, get_submodule, head_geometry, linear_in_out
from hf_prune.calibration.runner import capture_block_inputs
from hf_prune.surgery.width import shrink_heads, shrink_mlp
from hf_prune.utils import atomic_write_text, show_progress

__all__ = ["LUT_FILE", "check_lut", "load_lut", "lut_shape", "measure_latency_lut", "save_lut"]

#: File name written by :func:`save_lut` into a folder.
LUT_FILE = "latency_lut.json"


def lut_shape(model: PreTrainedModel, stack: str | None = None) -> dict[str, Any]:
    """The block shape a latency table belongs to.

    Args:
        model: The model.
        stack: Stack name (default: the main stack).
    """
    arch = get_arch(model)
    spec = arch.stack(stack) if stack else arch.stacks[-1]
    geo = head_geometry(model, spec, 0)
    block = get_layers(model, spec)[0]
    _, inter = linear_in_out(get_submodule(block, spec.block.mlp_in[0]))
    cfg = get_stack_config(model, spec)
    return {
        "model_type": getattr(cfg, "model_type", ""),
        "stack": spec.name,
        "hidden_size": int(getattr(cfg, "hidden_size", 0) or getattr(cfg, "n_embd", 0)),
        "num_heads": geo.num_heads,
        "num_kv_heads": geo.num_kv_heads,
        "head_dim": geo.head_dim,
        "intermediate_size": int(inter),
    }


def _one_block_model(model: PreTrainedModel, spec: Any) -> PreTrainedModel:
    config = copy.deepcopy(model.config)
    sub = getattr(config, spec.config_path) if spec.config_path else config
    setattr(sub, spec.num_layers_key, 1)
    if isinstance(getattr(sub, "layer_types", None), list):
        sub.layer_types = sub.layer_types[:1]
    torch.manual_seed(0)
    return type(model)(config).eval()


def _time_span(
    block: nn.Module, start: nn.Module, end: nn.Module, call: Any, repeats: int, warmup: int
) -> float:
    stamps: dict[str, float] = {}

    def enter(*_: Any) -> None:
        stamps["start"] = time.perf_counter()

    def leave(*_: Any) -> None:
        stamps["end"] = time.perf_counter()

    handles = [start.register_forward_pre_hook(enter), end.register_forward_hook(leave)]
    times = []
    try:
        with torch.no_grad():
            for i in range(warmup + repeats):
                call()
                if i >= warmup:
                    times.append((stamps["end"] - stamps["start"]) * 1000.0)
    finally:
        for h in handles:
            h.remove()
    return statistics.median(times)


def measure_latency_lut(
    model: PreTrainedModel,
    *,
    batch_size: int = 1,
    seq_len: int = 128,
    head_counts: list[int] | None = None,
    neuron_counts: list[int] | None = None,
    repeats: int = 10,
    warmup: int = 3,
    stack: str | None = None,
    device: str | torch.device | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Measure the attention and MLP latency of one block per kept head / neuron count.

    Args:
        model: The (dense) model whose block shape is measured; it is not changed.
        batch_size: Sequences per forward.
        seq_len: Tokens per sequence.
        head_counts: Kept attention units to measure (query heads; KV groups for GQA models). Default:
            every count from 1 to all.
        neuron_counts: Kept MLP neurons to measure. Default: 16 evenly spaced counts up to all.
        repeats: Timed runs per count (the median is kept).
        warmup: Untimed runs per count first.
        stack: Stack name (default: the main stack).
        device: Where to measure (default: the model's device).
        progress: Show a progress bar.

    Returns:
        ``{"mha": {count: ms}, "ffn": {count: ms}, "head_unit", "shape", "device", ...}``; the count 0
        maps to 0 ms.
    """
    for name, value, low in (("batch_size", batch_size, 1), ("seq_len", seq_len, 1), ("repeats", repeats, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}.")
    arch = get_arch(model)
    spec = arch.stack(stack) if stack else arch.stacks[-1]
    shape = lut_shape(model, spec.name)
    group = shape["num_heads"] // max(shape["num_kv_heads"], 1)
    gqa = shape["num_kv_heads"] < shape["num_heads"]
    units = shape["num_kv_heads"] if gqa else shape["num_heads"]
    inter = shape["intermediate_size"]
    heads = sorted(set(head_counts)) if head_counts else list(range(1, units + 1))
    if neuron_counts:
        neurons = sorted(set(neuron_counts))
    else:
        neurons = sorted({max(1, round(inter * i / 16)) for i in range(1, 17)})
    bad = [h for h in heads if not 0 <= h <= units] + [n for n in neurons if not 0 <= n <= inter]
    if bad:
        raise ValueError(
            f"counts {bad} are outside the block's {units} attention units / {inter} MLP neurons."
        )
    dev = torch.device(device) if device is not None else next(model.parameters()).device
    base = _one_block_model(model, spec).to(dev)
    vocab = base.config.get_text_config().vocab_size
    ids = torch.randint(0, vocab, (batch_size, seq_len), generator=torch.Generator().manual_seed(0)).to(dev)
    ((args, kwargs),) = capture_block_inputs(base, spec, [{"input_ids": ids}])
    bar = tqdm(total=len(heads) + len(neurons), desc="latency LUT", disable=not show_progress(progress))

    def measure(kind: str, count: int) -> float:
        one = copy.deepcopy(base)
        if kind == "mha":
            keep = list(range(count * group)) if gqa else list(range(count))
            if count < units:
                shrink_heads(one, spec, 0, keep)
        elif count < inter:
            shrink_mlp(one, spec, 0, list(range(count)))
        block = get_layers(one, spec)[0]
        if kind == "mha":
            start, end = get_submodule(block, spec.block.attn), get_submodule(block, spec.block.o)
        else:
            start = get_submodule(block, spec.block.mlp_in[0])
            end = get_submodule(block, spec.block.mlp_out)
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

        def call() -> None:
            block(*args, **kwargs)
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)

        ms = _time_span(block, start, end, call, repeats, warmup)
        bar.update(1)
        return ms

    mha = {0: 0.0, **{h: measure("mha", h) for h in heads if h}}
    ffn = {0: 0.0, **{n: measure("ffn", n) for n in neurons if n}}
    bar.close()
    return {
        "mha": mha,
        "ffn": ffn,
        "head_unit": "kv_group" if gqa else "head",
        "shape": shape,
        "batch_size": batch_size,
        "seq_len": seq_len,
        "repeats": repeats,
        "device": str(dev),
        "machine": platform.machine(),
        "threads": torch.get_num_threads(),
    }


def save_lut(lut: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write a table as JSON (atomically). A folder gets :data:`LUT_FILE` inside it.

    Args:
        lut: A table from :func:`measure_latency_lut`.
        path: A ``.json`` file or a folder.

    Returns:
        The written file.
    """
    target = Path(path)
    if target.suffix != ".json":
        target.mkdir(parents=True, exist_ok=True)
        target = target / LUT_FILE
    target.parent.mkdir(parents=True, exist_ok=True)
    data = {
        **lut,
        "mha": {str(k): v for k, v in lut["mha"].items()},
        "ffn": {str(k): v for k, v in lut["ffn"].items()},
    }
    return atomic_write_text(target, json.dumps(data, indent=2, sort_keys=True))


def load_lut(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a table written by :func:`save_lut` (a file, or a folder holding :data:`LUT_FILE`).

    Args:
        path: The file or folder.

    Raises:
        FileNotFoundError: If there is no table there.
        ValueError: If the file is not a latency table.
    """
    target = Path(path)
    if target.is_dir():
        target = target / LUT_FILE
    if not target.is_file():
        raise FileNotFoundError(
            f"No latency table at {str(target)!r}; write one with `hf-prune lut MODEL -o DIR`."
        )
    data = json.loads(target.read_text())
    if not isinstance(data, dict) or not {"mha", "ffn", "shape"} <= set(data):
        raise ValueError(f"{str(target)!r} is not a latency table (needs 'mha', 'ffn' and 'shape').")
    data["mha"] = {int(k): float(v) for k, v in data["mha"].items()}
    data["ffn"] = {int(k): float(v) for k, v in data["ffn"].items()}
    return data


def check_lut(lut: dict[str, Any], model: PreTrainedModel, stack: str | None = None) -> None:
    """Refuse a table measured for another block shape.

    Args:
        lut: The table.
        model: The model about to be pruned with it.
        stack: Stack name (default: the main stack).

    Raises:
        ValueError: Naming every field that differs.
    """
    want = lut_shape(model, stack)
    got = lut.get("shape", {})
    diff = {k: (got.get(k), v) for k, v in want.items() if k != "stack" and got.get(k) != v}
    if diff:
        detail = ", ".join(f"{k}: table {a!r} vs model {b!r}" for k, (a, b) in sorted(diff.items()))
        raise ValueError(
            f"The latency table was measured for another model shape ({detail}); measure one for this model "
            "with `hf-prune lut MODEL -o DIR` or hf_prune.evaluation.lut.measure_latency_lut(model)."
        )

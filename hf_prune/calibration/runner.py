"""The sequential (layer-by-layer) calibration runner.

It captures every positional and keyword input of block 0 (transformers 5.x passes
``position_embeddings`` and more, not only ``attention_mask``), then runs one block at a time over
all calibration batches: statistics are gathered with hooks, the caller may prune the block, and the
block's (optionally recomputed) outputs become the next block's inputs. Only one block's activations
and statistics are alive at a time.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.nn.utils import parametrize
from tqdm.auto import tqdm
from transformers import PreTrainedModel

from hf_prune.arch import StackSpec, get_arch, get_layers
from hf_prune.calibration.distributed import all_reduce_collectors
from hf_prune.calibration.stats import StatCollector, attach
from hf_prune.utils import bound_heap_for_offload, release_freed_memory, show_progress

BlockInputs = list[tuple[tuple[Any, ...], dict[str, Any]]]
CollectorFactory = Callable[[int, nn.Module], dict[str, tuple[nn.Module, StatCollector]]]
BlockCallback = Callable[[int, nn.Module, dict[str, StatCollector]], None]


class _StopForward(Exception):
    """Raised by the block-0 catcher to stop the forward once its inputs are captured."""


class _BlockDone(Exception):
    """Raised in a statistics pass once every hooked projection of the block has seen the batch."""


class _EarlyExit:
    """Stop a statistics-only pass of a block as soon as its last hooked projection has its input.

    When the block is run again for its pruned outputs, the first pass is needed only for the inputs of
    the hooked projections; the work after the last of them (in a Llama block the whole ``down_proj``
    matmul, ~25% of the block's FLOPs) is thrown away. The exit is armed only after a full first batch
    showed every hooked module called exactly once, so a module called twice (shared weights) or not at
    all (an MoE expert no token was routed to) keeps the full forward, and stops only ever happen after
    the statistics hooks (registered earlier on the same modules) have run.

    Args:
        modules: The hooked modules of the block.
    """

    def __init__(self, modules: list[nn.Module]) -> None:
        unique = {id(m): m for m in modules}
        self.targets = set(unique)
        self.calls: dict[int, int] = {}
        self.armed = False
        self.handles = [m.register_forward_pre_hook(self._hook) for m in unique.values()]

    def _hook(self, module: nn.Module, inputs: tuple[Any, ...]) -> None:
        key = id(module)
        self.calls[key] = self.calls.get(key, 0) + 1
        if self.armed and len(self.calls) == len(self.targets):
            raise _BlockDone

    def end_batch(self) -> None:
        """Arm the exit after a first full batch in which every module ran exactly once; reset counts."""
        if not self.armed:
            self.armed = set(self.calls) == self.targets and all(c == 1 for c in self.calls.values())
        self.calls = {}

    def remove(self) -> None:
        """Remove the hooks."""
        for h in self.handles:
            h.remove()


def _model_device(model: nn.Module) -> torch.device:
    try:
        return next(p.device for p in model.parameters() if not p.is_meta)
    except StopIteration:  # pragma: no cover - models always have parameters
        return torch.device("cpu")


def capture_block_inputs(
    model: PreTrainedModel, stack: StackSpec, batches: list[dict[str, torch.Tensor]]
) -> BlockInputs:
    """Run the model up to block 0 of ``stack`` for each batch and return that block's call arguments.

    Args:
        model: The model.
        stack: The stack whose first block's inputs are captured.
        batches: Model inputs (``input_ids`` ...).

    Returns:
        One ``(args, kwargs)`` per batch.
    """
    first = get_layers(model, stack)[0]
    captured: BlockInputs = []

    def catcher(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        captured.append((args, dict(kwargs)))
        raise _StopForward

    device = _model_device(model)
    handle = first.register_forward_pre_hook(catcher, with_kwargs=True)
    try:
        for batch in batches:
            inputs = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
            if stack.causal:
                inputs.setdefault("use_cache", False)
            with contextlib.suppress(_StopForward):
                model(**inputs)
    finally:
        handle.remove()
    if len(captured) != len(batches):
        raise RuntimeError(
            f"Captured {len(captured)} inputs of {stack.name} block 0 for {len(batches)} batches; "
            "the forward "
            "did not reach the block."
        )
    return captured


def _has_offloaded(block: nn.Module) -> bool:
    return any(getattr(getattr(m, "_hf_hook", None), "offload", False) for m in block.modules())


def _no_op() -> None:
    return None


def _hidden(out: Any) -> torch.Tensor:
    return out[0] if isinstance(out, (tuple, list)) else out


def _with_hidden(
    args: tuple[Any, ...], kwargs: dict[str, Any], hidden: torch.Tensor
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    if args:
        return (hidden, *args[1:]), kwargs
    kwargs = dict(kwargs)
    kwargs["hidden_states"] = hidden
    return args, kwargs


def run_sequential(
    model: PreTrainedModel,
    batches: list[dict[str, torch.Tensor]],
    *,
    stack: str | None = None,
    collectors: CollectorFactory | None = None,
    on_block: BlockCallback | None = None,
    recompute: bool = True,
    progress: bool = True,
) -> None:
    """Run calibration one block at a time.

    Args:
        model: The model.
        batches: Calibration inputs.
        stack: Stack to run (default: every stack of the family, in order).
        collectors: ``f(block_idx, block) -> {name: (module, collector)}``: what to record in a block.
        on_block: ``f(block_idx, block, {name: collector})`` called after the statistics of a block are
            complete (prune it here).
        recompute: Recompute the block's outputs after ``on_block`` so the next block sees the pruned
            block's outputs (as SparseGPT and Wanda do).
        progress: Show a progress bar (only on a terminal; see :func:`hf_prune.utils.show_progress`).
    """
    arch = get_arch(model)
    specs = [arch.stack(stack)] if stack else list(arch.stacks)
    for spec in specs:
        with torch.no_grad():
            inputs = capture_block_inputs(model, spec, batches)
        layers = get_layers(model, spec)
        if any(_has_offloaded(layer) for layer in layers):
            bound_heap_for_offload()
        bar = tqdm(range(len(layers)), desc=f"calibrate {spec.name}", disable=not show_progress(progress))
        for idx in bar:
            block = layers[idx]
            named = collectors(idx, block) if collectors else {}
            # Projections reading the same tensor (q/k/v, gate/up) share each batch's statistics update.
            shared: dict[type, Any] = {}
            handles = [attach(mod, col, shared) for mod, col in named.values()]
            # Only one copy of the activations is ever alive: when the block is recomputed after
            # pruning, the first pass runs for its hooks only; otherwise its outputs replace the
            # inputs batch by batch (they are not needed again).
            second_pass = on_block is not None and recompute
            offloaded = _has_offloaded(block)
            # accelerate loads an offloaded block's weights for every batch and drops them after it:
            # freeing those copies batch by batch keeps RSS at one block's weights (see
            # release_freed_memory); in-memory blocks allocate nothing that size per batch.
            trim = release_freed_memory if offloaded else _no_op
            # A statistics-only pass stops after the last hooked projection (see _EarlyExit); never for
            # offloaded blocks, whose accelerate hooks drop the weights only when a forward completes.
            early = (
                _EarlyExit([mod for mod, _ in named.values()])
                if second_pass and named and not offloaded
                else None
            )
            try:
                with torch.no_grad():
                    if not second_pass:
                        for j, (a, k) in enumerate(inputs):
                            inputs[j] = _with_hidden(a, k, _hidden(block(*a, **k)))
                            trim()
                    elif named:  # a block with nothing to record needs no statistics pass
                        for a, k in inputs:
                            with contextlib.suppress(_BlockDone):
                                block(*a, **k)
                            if early is not None:
                                early.end_batch()
                            trim()
            finally:
                if early is not None:
                    early.remove()
                for h in handles:
                    h.remove()
                shared.clear()
            if on_block is not None:
                stats = {name: col for name, (_, col) in named.items()}
                # Data-parallel calibration: every process sees the whole set's statistics.
                all_reduce_collectors(stats)
                release_freed_memory()
                on_block(idx, block, stats)
                del stats
            named = {}
            release_freed_memory()
            if second_pass:
                # Masks are parametrizations (weight * mask): cache the masked weights for the whole
                # pass instead of recomputing them (and a float copy of each mask) for every batch.
                with torch.no_grad(), parametrize.cached():
                    for j, (a, k) in enumerate(inputs):
                        inputs[j] = _with_hidden(a, k, _hidden(block(*a, **k)))
                        trim()
                release_freed_memory()


BlockIOCallback = Callable[[int, int, torch.Tensor, torch.Tensor, "torch.Tensor | None"], None]


def run_block_io(
    model: PreTrainedModel,
    batches: list[dict[str, torch.Tensor]],
    on_io: BlockIOCallback,
    *,
    stack: str | None = None,
    progress: bool = True,
) -> None:
    """Run one stack block by block and hand every block's input and output hidden states to ``on_io``.

    Depth scorers (angular distance, block influence, activation variance) need the residual stream on
    both sides of each block; like :func:`run_sequential`, only one block's activations are alive at a
    time, and the model is not changed.

    Args:
        model: The model.
        batches: Calibration inputs.
        on_io: ``f(block_idx, batch_idx, hidden_in, hidden_out, attention_mask)``; the attention mask is
            the batch's 2-D padding mask (``None`` when the batch has none).
        stack: Stack name (default: the family's main stack, the last one).
        progress: Show a progress bar (only on a terminal).
    """
    arch = get_arch(model)
    spec = arch.stack(stack) if stack else arch.stacks[-1]
    with torch.no_grad():
        inputs = capture_block_inputs(model, spec, batches)
        layers = get_layers(model, spec)
        masks = [b.get("attention_mask") for b in batches]
        bar = tqdm(range(len(layers)), desc=f"score {spec.name} blocks", disable=not show_progress(progress))
        for idx in bar:
            block = layers[idx]
            for j, (a, k) in enumerate(inputs):
                hidden_in = a[0] if a else k["hidden_states"]
                out = _hidden(block(*a, **k))
                mask = masks[j]
                on_io(idx, j, hidden_in, out, None if mask is None or mask.dim() != 2 else mask)
                inputs[j] = _with_hidden(a, k, out)

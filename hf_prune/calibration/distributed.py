"""Data-parallel calibration: shard the samples across processes, sum the statistics.

Under ``accelerate launch`` (or any initialized ``torch.distributed`` process group) every process
calibrates on its own share of the batches (``batches[rank::world]``); the statistics are sums over
tokens (input norms, Hessians, gradients), so an all-reduce SUM before each pruning decision gives
every process the statistics of the whole calibration set and all of them prune identically — the
result equals the single-process one up to float summation order. With one process nothing changes.
"""

from __future__ import annotations

from typing import Any, TypeVar

import torch

T = TypeVar("T")


def world() -> tuple[int, int]:
    """Return ``(rank, world_size)`` of the default process group, ``(0, 1)`` when there is none.

    Returns:
        The rank and the number of processes.
    """
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def shard_batches(batches: list[T]) -> list[T]:
    """Keep this process's share of the calibration batches (round robin).

    Args:
        batches: All calibration batches (the same list on every process).

    Returns:
        ``batches[rank::world]``; the whole list with one process.

    Raises:
        ValueError: If there are fewer batches than processes (a process would calibrate on nothing).
    """
    rank, size = world()
    if size == 1:
        return batches
    if len(batches) < size:
        raise ValueError(
            f"{len(batches)} calibration batches cannot be shared by {size} processes; raise "
            f"CalibrationConfig.nsamples to at least {size} (or lower batch_size)"
        )
    return batches[rank::size]


def all_reduce_sum_(tensors: list[torch.Tensor]) -> None:
    """Sum tensors over all processes, in place (no-op with one process).

    Args:
        tensors: The same list of tensors (same shapes) on every process.
    """
    if world()[1] == 1:
        return
    for tensor in tensors:
        torch.distributed.all_reduce(tensor, op=torch.distributed.ReduceOp.SUM)


def all_reduce_collectors(collectors: dict[str, Any]) -> None:
    """Sum every collector's accumulators and token counts over all processes (no-op with one).

    Args:
        collectors: ``{name: StatCollector}``, the same names in the same order on every process.
    """
    if world()[1] == 1:
        return
    for name in sorted(collectors):
        col = collectors[name]
        sums = [v for v in vars(col).values() if isinstance(v, torch.Tensor)]
        all_reduce_sum_(sums)
        tokens = torch.tensor([float(col.tokens)], dtype=torch.float64)
        all_reduce_sum_([tokens])
        col.tokens = int(tokens.item())

"""Selection of whole units (MLP neurons, attention heads, KV groups) from per-unit scores.

Pure tensor math (no model access), checked against brute force in the tests.

* **Uniform**: every layer removes the same fraction; the kept count is the valid count nearest to
  ``width * (1 - sparsity)`` (:func:`uniform_keep`), and the highest-scored units are kept
  (:func:`select_top`, :func:`select_query_heads`).
* **Global**: one threshold over all layers on scores standardized per layer (z-scores, as the AFR
  paper ranks neurons across layers), so a layer whose units stand out less from its own mean loses
  more of them (:func:`global_keep_counts`).

Constraints every selection honours:

* ``round_to``: a layer's kept count is a multiple of ``round_to`` (or the layer is left whole).
* ``min_keep``: a layer keeps at least ``min_keep`` units, rounded up to the granularity.
* GQA (``groups > 1``, units are query heads in ``groups`` equal contiguous KV groups): every group
  keeps the same number of query heads (transformers' ``repeat_kv`` needs a uniform group size), and
  at least one.

Global selection with these constraints works on *removal steps*: a layer's units are sorted by
standardized score and can only be removed as a prefix whose end is a valid count; each step between
two consecutive valid counts has the mean z-score of the units it removes (for GQA query heads, a step
removes the lowest remaining head of every group at once). All steps of all layers are ranked by that
score (lowest first), and the prefix of that ranking whose unit count is closest to
``round(sparsity * total)`` is removed. With ``round_to=1`` and no GQA every step is one unit, and
this is exactly the constrained optimum: the ``k`` lowest z-scores subject to each layer's ``min_keep``.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from hf_prune.selection.topk import num_to_prune

__all__ = [
    "UnitLayer",
    "floor_units",
    "global_keep_counts",
    "keep_choices",
    "select_query_heads",
    "select_top",
    "select_units",
    "standardize",
    "uniform_keep",
]


def standardize(scores: torch.Tensor) -> torch.Tensor:
    """Z-score one layer's unit scores (mean 0, unbiased std 1); all zeros when constant or single.

    Args:
        scores: ``[units]`` scores.

    Returns:
        fp64 ``[units]`` standardized scores (fp64 so ties between layers are not invented by rounding).
    """
    s = scores.detach().double().reshape(-1)
    if not torch.isfinite(s).all():
        raise ValueError("scores contain NaN or inf; check the calibration statistics / gradients.")
    if s.numel() < 2:
        return torch.zeros_like(s)
    std = float(s.std())
    if std == 0.0:
        return torch.zeros_like(s)
    return (s - s.mean()) / std


def floor_units(width: int, min_keep: int, round_to: int = 1) -> int:
    """Return the fewest units a layer may keep: ``min_keep`` rounded up to ``round_to``, at most ``width``.

    Args:
        width: Units in the layer now.
        min_keep: Requested minimum (``0`` allows emptying the layer).
        round_to: Kept counts are multiples of this.
    """
    return min(width, math.ceil(min_keep / round_to) * round_to)


def keep_choices(width: int, round_to: int = 1, floor: int = 0) -> list[int]:
    """Valid kept counts of a layer, descending: ``width`` itself and the multiples of ``round_to`` below it.

    Args:
        width: Units in the layer now.
        round_to: Kept counts are multiples of this (leaving the layer whole is always valid).
        floor: Smallest count allowed.

    Returns:
        Descending list starting with ``width``.
    """
    if round_to < 1:
        raise ValueError(f"round_to must be >= 1, got {round_to}.")
    top = (width // round_to) * round_to
    out = [width] + [c for c in range(top, -1, -round_to) if c != width]
    return [c for c in out if c >= floor] or [width]


def uniform_keep(
    width: int, sparsity: float, *, round_to: int = 1, min_keep: int = 1, where: str = "layer"
) -> int:
    """Kept count of one layer under uniform allocation.

    The count is the multiple of ``round_to`` (or ``width`` itself) nearest to
    ``width * (1 - sparsity)``; ties keep more.

    Args:
        width: Units in the layer now.
        sparsity: Fraction of units to remove, in ``[0, 1)``.
        round_to: Kept counts are multiples of this.
        min_keep: Fewest units kept (rounded up to ``round_to``); ``0`` allows emptying the layer.
        where: Name of the layer, for error messages.

    Raises:
        ValueError: If the nearest valid count is below ``min_keep`` (the sparsity would empty the
            layer or leave fewer units than asked for).
    """
    target = width * (1.0 - float(sparsity))
    choices = keep_choices(width, round_to, 0)
    # Nearest to the target; on a tie the larger count (remove less than asked rather than more).
    keep = min(choices, key=lambda c: (abs(c - target), -c))
    floor = floor_units(width, min_keep, round_to)
    if keep < floor:
        rounded = f" (rounded up to round_to={round_to}: {floor})" if floor != min_keep else ""
        raise ValueError(
            f"sparsity={sparsity} would keep {keep} of {width} units in {where}, below min_keep={min_keep}"
            f"{rounded}. Lower sparsity, lower min_keep (0 allows emptying a layer where the architecture "
            "supports it), or use allocation='global'."
        )
    return keep


def select_top(scores: torch.Tensor, n_keep: int) -> list[int]:
    """Indices of the ``n_keep`` highest scores, sorted; ties drop the lower index first.

    Args:
        scores: ``[units]`` scores.
        n_keep: How many to keep, in ``[0, units]``.
    """
    s = scores.detach().reshape(-1)
    n = s.numel()
    if not 0 <= n_keep <= n:
        raise ValueError(f"n_keep must be in [0, {n}], got {n_keep}.")
    order = torch.argsort(s.double(), stable=True)  # ascending: the first n - n_keep are removed
    return sorted(int(i) for i in order[n - n_keep :])


def select_query_heads(scores: torch.Tensor, num_kv_heads: int, keep_per_group: int) -> list[int]:
    """Keep the ``keep_per_group`` best query heads of every KV group (equal counts, as GQA needs).

    Args:
        scores: ``[num_heads]`` query-head scores; heads of group ``g`` are ``g*G .. (g+1)*G - 1``.
        num_kv_heads: KV groups.
        keep_per_group: Query heads kept in each group, in ``[1, G]``.

    Returns:
        Sorted kept query-head indices.
    """
    s = scores.detach().reshape(-1)
    if num_kv_heads < 1 or s.numel() % num_kv_heads:
        raise ValueError(f"{s.numel()} query heads cannot form {num_kv_heads} equal KV groups.")
    g = s.numel() // num_kv_heads
    if not 1 <= keep_per_group <= g:
        raise ValueError(f"keep_per_group must be in [1, {g}], got {keep_per_group}.")
    kept: list[int] = []
    for grp in range(num_kv_heads):
        kept += [grp * g + i for i in select_top(s[grp * g : (grp + 1) * g], keep_per_group)]
    return kept


@dataclass
class UnitLayer:
    """One layer's units as the selection sees them.

    Args:
        scores: ``[units]`` scores (higher keeps).
        round_to: Kept count is a multiple of this (ignored when ``groups > 1``).
        min_keep: Fewest units kept, rounded up to the granularity.
        groups: ``> 1`` when the units are query heads in that many equal KV groups that must keep
            equal counts (each group keeps at least one).
    """

    scores: torch.Tensor
    round_to: int = 1
    min_keep: int = 1
    groups: int = 1

    @property
    def width(self) -> int:
        """Units in the layer."""
        return int(self.scores.numel())

    def check(self) -> None:
        """Validate the layer's constraints."""
        if self.groups < 1 or self.width % self.groups:
            raise ValueError(f"{self.width} units cannot form {self.groups} equal KV groups.")
        if self.round_to < 1:
            raise ValueError(f"round_to must be >= 1, got {self.round_to}.")
        if self.min_keep < 0:
            raise ValueError(f"min_keep must be >= 0, got {self.min_keep}.")

    def choices(self) -> list[int]:
        """Valid kept counts, descending, floor included."""
        if self.groups > 1:
            g = self.width // self.groups
            per_floor = max(1, math.ceil(self.min_keep / self.groups))
            return [k * self.groups for k in range(g, min(per_floor, g) - 1, -1)]
        return keep_choices(self.width, self.round_to, floor_units(self.width, self.min_keep, self.round_to))

    def steps(self) -> list[tuple[int, float]]:
        """Removal steps in order: ``(units removed, mean z-score of those units)``."""
        z = standardize(self.scores)
        choices = self.choices()
        out: list[tuple[int, float]] = []
        if self.groups > 1:
            g = self.width // self.groups
            # Column t of `ranked` holds the t-th lowest head of every group.
            ranked = torch.stack(
                [
                    z[i * g : (i + 1) * g][torch.argsort(z[i * g : (i + 1) * g], stable=True)]
                    for i in range(self.groups)
                ]
            )
            for t in range(len(choices) - 1):
                out.append((self.groups, float(ranked[:, t].mean())))
            return out
        order = z[torch.argsort(z, stable=True)]
        for hi, lo in itertools.pairwise(choices):
            out.append((hi - lo, float(order[self.width - hi : self.width - lo].mean())))
        return out


def select_units(layer: UnitLayer, n_keep: int) -> list[int]:
    """Kept unit indices of ``layer`` for a kept count ``n_keep`` (equal per group when ``groups > 1``).

    Args:
        layer: The layer.
        n_keep: A count from ``layer.choices()``.
    """
    if layer.groups > 1:
        if n_keep % layer.groups:
            raise ValueError(f"n_keep={n_keep} is not a multiple of the {layer.groups} KV groups.")
        return select_query_heads(layer.scores, layer.groups, n_keep // layer.groups)
    return select_top(layer.scores, n_keep)


def global_keep_counts(layers: Sequence[UnitLayer], sparsity: float) -> list[int]:
    """Per-layer kept counts of one global threshold on per-layer standardized scores.

    Args:
        layers: The layers compared together.
        sparsity: Fraction of all their units to remove, in ``[0, 1)``.

    Returns:
        Kept count per layer; each is valid for its layer (a value of ``layer.choices()``), and the
        removed total is the achievable one closest to ``round(sparsity * total units)``.

    Raises:
        ValueError: If the constraints (``min_keep``, one head per KV group) leave fewer removable
            units than the sparsity asks for.
    """
    if isinstance(layers, UnitLayer) or len(layers) == 0:
        raise ValueError("layers must be a non-empty sequence of UnitLayer.")
    if not 0.0 <= float(sparsity) < 1.0:
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity!r}.")
    total = sum(layer.width for layer in layers)
    target = num_to_prune(total, sparsity)
    ranked: list[tuple[float, int, int, int]] = []  # (score, layer, step, size)
    for i, layer in enumerate(layers):
        layer.check()
        running = -math.inf
        for t, (size, score) in enumerate(layer.steps()):
            # Steps of a layer are removed in order; their means are non-decreasing by construction, and
            # the running maximum guards that order against float rounding in the means.
            running = max(running, score)
            ranked.append((running, i, t, size))
    capacity = sum(r[3] for r in ranked)
    if target > capacity:
        raise ValueError(
            f"sparsity={sparsity} asks to remove {target} of {total} units, but min_keep (and one query head "
            f"per KV group) leave only {capacity} removable. Lower sparsity or min_keep."
        )
    ranked.sort()
    best_p, best_gap, done = 0, target, 0
    for p, (_, _, _, size) in enumerate(ranked, start=1):
        done += size
        gap = abs(done - target)
        if gap < best_gap:  # strict: on a tie remove less
            best_p, best_gap = p, gap
        if done >= target:
            break
    removed = [0] * len(layers)
    for _, i, _, size in ranked[:best_p]:
        removed[i] += size
    return [layer.width - r for layer, r in zip(layers, removed, strict=True)]

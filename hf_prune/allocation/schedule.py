"""Sparsity schedules over training steps for gradual pruning (pure arithmetic, no model).

The cubic schedule is Zhu & Gupta, "To prune, or not to prune" (2017):
``s_t = s_f + (s_i - s_f) * (1 - (t - t_0) / (t_end - t_0)) ** 3`` — it prunes fast while the network
has many redundant weights and slowly near the target, when each removal hurts more. Pruning happens at
``start_step``, every ``frequency`` steps after it, and at ``end_step``, where the target is reached
exactly; between two pruning steps the sparsity of the last one stays in force.
"""

from __future__ import annotations

import math

#: Supported schedule names.
SCHEDULES = ("cubic", "linear", "constant")


def check_schedule(
    schedule: str, start_step: int, end_step: int, frequency: int, initial_sparsity: float, target: float
) -> None:
    """Validate a schedule's arguments, raising errors that name the argument and the fix.

    Args:
        schedule: One of :data:`SCHEDULES`.
        start_step: First optimizer step at which the schedule prunes (>= 0).
        end_step: Step at which the target is reached (>= ``start_step``; > it unless ``"constant"``).
        frequency: Prune every this many optimizer steps between the two (>= 1).
        initial_sparsity: Sparsity at ``start_step``, in ``[0, target]``.
        target: Final sparsity, in ``[0, 1)``.

    Raises:
        TypeError: For non-integer steps.
        ValueError: For an unknown schedule or an inconsistent step range.
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {', '.join(map(repr, SCHEDULES))}, got {schedule!r}.")
    for name, value, low in (
        ("start_step", start_step, 0),
        ("end_step", end_step, 0),
        ("frequency", frequency, 1),
    ):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name} must be an int >= {low}, got {value!r} ({type(value).__name__}).")
        if value < low:
            raise ValueError(f"{name} must be an int >= {low}, got {value!r}.")
    if end_step < start_step:
        raise ValueError(
            f"end_step ({end_step}) is before start_step ({start_step}): the schedule ramps the sparsity "
            f"from start_step up to end_step; pass end_step >= start_step."
        )
    if end_step == start_step and schedule != "constant":
        raise ValueError(
            f"end_step equals start_step ({start_step}) for a {schedule!r} schedule, which needs steps to "
            f"ramp over; pass a later end_step or schedule='constant' (prune once at start_step)."
        )
    if not (0.0 <= float(target) < 1.0):
        raise ValueError(f"the target sparsity must be in [0, 1), got {target!r}.")
    if not (0.0 <= float(initial_sparsity) <= float(target)):
        raise ValueError(
            f"initial_sparsity must be in [0, target={target}], got {initial_sparsity!r}: the schedule only "
            f"ever removes weights."
        )


def scheduled_sparsity(
    step: int,
    *,
    target: float,
    start_step: int,
    end_step: int,
    schedule: str = "cubic",
    initial_sparsity: float = 0.0,
) -> float:
    """Return the schedule's sparsity at ``step`` (continuous in the step; 0 before ``start_step``).

    Args:
        step: Optimizer step (``TrainerState.global_step``).
        target: Final sparsity ``s_f``.
        start_step: ``t_0``.
        end_step: Step at which ``target`` is reached; it holds from there on.
        schedule: ``"cubic"`` (Zhu & Gupta), ``"linear"`` or ``"constant"`` (``target`` from
            ``start_step`` on).
        initial_sparsity: ``s_i``, the sparsity at ``start_step``.
    """
    if step < start_step:
        return 0.0
    if schedule == "constant" or step >= end_step:
        return float(target)
    progress = (step - start_step) / (end_step - start_step)
    remaining = (1.0 - progress) ** 3 if schedule == "cubic" else 1.0 - progress
    return float(target) + (float(initial_sparsity) - float(target)) * remaining


def pruning_steps(start_step: int, end_step: int, frequency: int) -> list[int]:
    """Return the steps at which the schedule prunes: ``start_step``, every ``frequency`` after, ``end_step``.

    Args:
        start_step: First pruning step.
        end_step: Last pruning step (always included, even off the ``frequency`` grid).
        frequency: Spacing of the pruning steps.
    """
    steps = list(range(start_step, end_step + 1, frequency))
    if steps[-1] != end_step:
        steps.append(end_step)
    return steps


def sparsity_in_force(
    step: int,
    *,
    target: float,
    start_step: int,
    end_step: int,
    frequency: int,
    schedule: str = "cubic",
    initial_sparsity: float = 0.0,
) -> float:
    """Return the sparsity the model holds after ``step``: the schedule's value at the last pruning step.

    Args:
        step: Optimizer step.
        target: Final sparsity.
        start_step: First pruning step.
        end_step: Last pruning step.
        frequency: Spacing of the pruning steps.
        schedule: Schedule name.
        initial_sparsity: Sparsity at ``start_step``.
    """
    if step < start_step:
        return 0.0
    last = min(end_step, start_step + math.floor((step - start_step) / frequency) * frequency)
    if step >= end_step:
        last = end_step
    return scheduled_sparsity(
        last,
        target=target,
        start_step=start_step,
        end_step=end_step,
        schedule=schedule,
        initial_sparsity=initial_sparsity,
    )

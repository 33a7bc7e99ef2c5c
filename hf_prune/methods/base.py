"""What a method registers: its config class and the function that applies it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import PreTrainedModel

from hf_prune.config import CalibrationConfig, PruningConfig, check_range
from hf_prune.report import LayerReport


@dataclass
class PruneContext:
    """Inputs a method may need besides the model and its config.

    Args:
        calibration: The calibration config, if any.
        tokenizer: Tokenizer for text calibration data, or the processor for image-text data.
        progress: Show progress bars.
        batches: Calibration batches, built lazily by :meth:`get_batches`.
        pruned: The ``PrunedModel`` being built, so structural methods apply their surgery through it
            (``prune_neurons`` / ``prune_heads`` keep the report's original block numbering).
    """

    calibration: CalibrationConfig | None = None
    tokenizer: Any = None
    progress: bool = True
    batches: list[dict[str, torch.Tensor]] | None = field(default=None, repr=False)
    pruned: Any = field(default=None, repr=False)

    def get_batches(self, method: str) -> list[dict[str, torch.Tensor]]:
        """Return the calibration batches, building them on first use.

        Args:
            method: The method name (for the error message).

        Raises:
            ValueError: If no calibration config or tokenizer (processor for image-text data) was given.
        """
        if self.batches is None:
            if self.calibration is None:
                raise ValueError(
                    f"Method {method!r} needs calibration data: pass calibration=CalibrationConfig(...)."
                )
            from hf_prune.calibration.data import build_calibration_batches, is_image_text

            # Image-text data needs a processor, not any tokenizer: build_calibration_batches says so.
            if self.tokenizer is None and not is_image_text(self.calibration):
                raise ValueError(
                    f"Method {method!r} needs a tokenizer to prepare calibration text: pass tokenizer=."
                )
            from hf_prune.calibration.distributed import shard_batches

            # Under accelerate launch each process calibrates on its share (statistics are summed).
            self.batches = shard_batches(build_calibration_batches(self.calibration, self.tokenizer))
        return self.batches


Runner = Callable[[PreTrainedModel, PruningConfig, PruneContext], list[LayerReport]]


@dataclass(frozen=True)
class MethodEntry:
    """A registered method.

    Args:
        config_class: Its ``PruningConfig`` subclass.
        run: Applies the method to a model and returns per-layer report rows.
    """

    config_class: type[PruningConfig]
    run: Runner


@dataclass
class SparsityConfig(PruningConfig):
    """Base of unstructured methods: a target ``sparsity`` over the targeted projections.

    Args:
        sparsity: Fraction of weights to remove from each targeted projection, in ``[0, 1)``.
    """

    sparsity: float = field(default=0.5, metadata={"help": "Fraction of weights removed, in [0, 1)."})

    def __post_init__(self) -> None:
        super().__post_init__()
        check_range("sparsity", self.sparsity, 0.0, 1.0, high_inclusive=False)

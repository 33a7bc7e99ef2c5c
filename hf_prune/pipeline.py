"""``prune()``: the functional entry point that runs a method on a model already in memory."""

from __future__ import annotations

from typing import Any

from transformers import PreTrainedModel

from hf_prune.arch import get_arch
from hf_prune.config import CalibrationConfig, PruningConfig
from hf_prune.integration.pruned_model import PrunedModel
from hf_prune.methods import METHODS, PruneContext


def prune(
    model: PreTrainedModel | PrunedModel,
    config: PruningConfig,
    calibration: CalibrationConfig | None = None,
    tokenizer: Any = None,
    *,
    progress: bool = True,
) -> PrunedModel:
    """Prune ``model`` in place with ``config`` and return it wrapped as a :class:`PrunedModel`.

    Args:
        model: A supported ``PreTrainedModel`` (or a ``PrunedModel``, to prune further).
        config: A registered method's config (``MagnitudeConfig(sparsity=0.5)``).
        calibration: Calibration data for methods that need it.
        tokenizer: Tokenizer (or processor) for text calibration data. It is remembered as
            ``PrunedModel.tokenizer`` and saved with the model by ``save_pretrained`` / ``push_to_hub``.
        progress: Show progress bars (only on a terminal; see :func:`hf_prune.utils.show_progress`).

    Returns:
        The pruned model, with ``report`` filled in.

    Raises:
        TypeError: If ``config`` is not a ``PruningConfig`` or ``model`` not a ``PreTrainedModel``.
        ValueError: For an unsupported architecture, unknown method or unmatched module patterns.
    """
    if not isinstance(config, PruningConfig):
        raise TypeError(
            f"config must be a PruningConfig subclass instance (e.g. MagnitudeConfig(sparsity=0.5)), got "
            f"{type(config).__name__}."
        )
    if calibration is not None and not isinstance(calibration, CalibrationConfig):
        raise TypeError(f"calibration must be a CalibrationConfig, got {type(calibration).__name__}.")
    entry = METHODS.get(config.method)
    if isinstance(model, PrunedModel):
        wrapped = model
        wrapped.pruning_config = config
        wrapped.report.method = config.method
    else:
        if not isinstance(model, PreTrainedModel):
            raise TypeError(f"model must be a transformers PreTrainedModel, got {type(model).__name__}.")
        get_arch(model)
        wrapped = PrunedModel(model, config)
    ctx = PruneContext(calibration=calibration, tokenizer=tokenizer, progress=progress, pruned=wrapped)
    rows = entry.run(wrapped.base_model, config, ctx)
    wrapped.report.layers.extend(rows)
    if calibration is not None:
        wrapped.calibration = calibration.describe()
    if tokenizer is not None:
        wrapped.tokenizer = tokenizer
    wrapped.refresh()
    return wrapped

"""``AutoPrunedModel*``: load-then-prune, or the exact reload of a checkpoint hf_prune saved."""

from __future__ import annotations

import os
from typing import Any, ClassVar

import transformers

from hf_prune.config import CalibrationConfig, PruningConfig
from hf_prune.integration.checkpoint import load_checkpoint, load_checkpoint_auto
from hf_prune.integration.pruned_model import PrunedModel
from hf_prune.utils import transformers_progress


class AutoPrunedModel:
    """Load a model and prune it, or reload a pruned checkpoint exactly.

    Mirrors ``transformers.AutoModel``; subclasses mirror the task-specific auto classes.
    """

    _hf_auto_class: ClassVar[Any] = transformers.AutoModel
    #: What ``from_pretrained`` loads for calibration text when no ``tokenizer`` is given: the first
    #: of these that loads from the model's path.
    _preprocessor_classes: ClassVar[tuple[Any, ...]] = (transformers.AutoTokenizer,)

    def __init__(self) -> None:
        raise OSError(f"{type(self).__name__} is designed to be instantiated with from_pretrained().")

    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: str | os.PathLike[str],
        *model_args: Any,
        pruning_config: PruningConfig | None = None,
        calibration: CalibrationConfig | None = None,
        tokenizer: Any = None,
        progress: bool = True,
        **kwargs: Any,
    ) -> PrunedModel:
        """Load and prune, or reload.

        Args:
            pretrained_model_name_or_path: Hub id or local folder.
            *model_args: Passed to the transformers auto class.
            pruning_config: The method to apply. ``None`` reloads an hf_prune checkpoint exactly
                (structure, report and config from its ``pruning_config.json``).
            calibration: Calibration data for methods that need it.
            tokenizer: Tokenizer (or processor) for calibration text. When ``None`` and ``calibration``
                is given, it is loaded from the same path (``AutoTokenizer``; for
                ``AutoPrunedModelForImageTextToText`` the ``AutoProcessor``, whose tokenizer then
                encodes the text, or the ``AutoTokenizer`` when the folder has no processor).
                Either way it is remembered as ``PrunedModel.tokenizer`` and written beside the weights
                by ``save_pretrained`` / ``push_to_hub``. Without ``calibration`` nothing is loaded;
                on a reload a given ``tokenizer`` is remembered the same way.
            progress: Show progress bars (only on a terminal; see :func:`hf_prune.utils.show_progress`).
            **kwargs: Passed to the transformers auto class (``dtype``, ``revision``, ``token`` ...).

        Returns:
            A :class:`PrunedModel`.
        """
        if pruning_config is None:
            loaded = PrunedModel.from_checkpoint(
                load_checkpoint(
                    pretrained_model_name_or_path,
                    cls._hf_auto_class,
                    dtype=kwargs.get("dtype"),
                    revision=kwargs.get("revision"),
                    token=kwargs.get("token"),
                    cache_dir=kwargs.get("cache_dir"),
                )
            )
            if tokenizer is not None:
                loaded.tokenizer = tokenizer
            return loaded
        from hf_prune.integration.checkpoint import is_pruned_checkpoint
        from hf_prune.pipeline import prune

        if is_pruned_checkpoint(pretrained_model_name_or_path):
            # Pruning an hf_prune checkpoint again: rebuild its structure first, then prune further.
            base = PrunedModel.from_checkpoint(
                load_checkpoint(pretrained_model_name_or_path, cls._hf_auto_class, dtype=kwargs.get("dtype"))
            )
        else:
            with transformers_progress(progress):
                base = cls._hf_auto_class.from_pretrained(
                    pretrained_model_name_or_path, *model_args, **kwargs
                )
        if tokenizer is None and calibration is not None:
            tokenizer = cls._load_preprocessor(pretrained_model_name_or_path, **kwargs)
        return prune(base, pruning_config, calibration=calibration, tokenizer=tokenizer, progress=progress)

    @classmethod
    def _load_preprocessor(cls, pretrained: str | os.PathLike[str], **kwargs: Any) -> Any:
        """Load the tokenizer (or processor) stored with the model, for calibration text."""
        hub = {k: kwargs[k] for k in ("revision", "token", "cache_dir") if kwargs.get(k) is not None}
        *first, last = cls._preprocessor_classes
        for auto in first:
            try:
                return auto.from_pretrained(pretrained, **hub)
            except (OSError, ValueError):
                continue  # e.g. a LLaVA folder with a tokenizer but no image processor
        return last.from_pretrained(pretrained, **hub)


class AutoPrunedModelForCausalLM(AutoPrunedModel):
    """``AutoPrunedModel`` over ``transformers.AutoModelForCausalLM``."""

    _hf_auto_class = transformers.AutoModelForCausalLM


class AutoPrunedModelForSequenceClassification(AutoPrunedModel):
    """``AutoPrunedModel`` over ``transformers.AutoModelForSequenceClassification``."""

    _hf_auto_class = transformers.AutoModelForSequenceClassification


class AutoPrunedModelForImageTextToText(AutoPrunedModel):
    """``AutoPrunedModel`` over ``transformers.AutoModelForImageTextToText`` (LLaVA)."""

    _hf_auto_class = transformers.AutoModelForImageTextToText
    _preprocessor_classes = (transformers.AutoProcessor, transformers.AutoTokenizer)


class AutoPrunedModelForImageClassification(AutoPrunedModel):
    """``AutoPrunedModel`` over ``transformers.AutoModelForImageClassification`` (ViT)."""

    _hf_auto_class = transformers.AutoModelForImageClassification


def load_checkpoint_any(folder: str | os.PathLike[str]) -> PrunedModel:
    """Load a local hf_prune checkpoint with the auto class matching its ``config.json``.

    ``architectures`` names the head when present; otherwise each task head is tried and the strict
    shape / key check of the loader rejects the wrong ones (see
    :func:`hf_prune.integration.checkpoint.load_checkpoint_auto`).

    Args:
        folder: The checkpoint folder.

    Returns:
        The :class:`PrunedModel`.

    Raises:
        ValueError: If no auto class fits the weights.
    """
    return PrunedModel.from_checkpoint(load_checkpoint_auto(folder))

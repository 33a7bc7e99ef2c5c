"""``CustomConfig``: a record for structure edited by hand through ``PrunedModel``'s surgery methods."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from transformers import PreTrainedModel

from hf_prune.config import PruningConfig
from hf_prune.methods.base import PruneContext
from hf_prune.report import LayerReport


@dataclass
class CustomConfig(PruningConfig):
    """No automatic pruning: hand-made surgery recorded, saved and reloaded like any method's.

    Use ``PrunedModel.remove_layers``, ``prune_heads`` and ``prune_neurons`` on the result.

    Args:
        description: Free text shown in the model card.
    """

    method: ClassVar[str] = "custom"
    paper: ClassVar[str] = ""
    description: str = field(default="", metadata={"help": "What was done, for the model card."})


def run_custom(model: PreTrainedModel, config: CustomConfig, ctx: PruneContext) -> list[LayerReport]:
    """Do nothing; the user edits the returned ``PrunedModel``.

    Args:
        model: The model.
        config: The config.
        ctx: The context (unused).
    """
    return []

"""Post-processing after pruning: healing (LoRA through PEFT, or of the blocks) and 2:4 sparse kernels."""

from hf_prune.postprocess.healing import HEAL_METHODS, heal, merge_adapters
from hf_prune.postprocess.semi_structured import is_semi_structured, to_semi_structured

__all__ = ["HEAL_METHODS", "heal", "is_semi_structured", "merge_adapters", "to_semi_structured"]

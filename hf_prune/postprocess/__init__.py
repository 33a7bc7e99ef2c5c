"""Post-processing after pruning: healing (a short fine-tune with LoRA through PEFT, or of the blocks)."""

from hf_prune.postprocess.healing import HEAL_METHODS, heal, merge_adapters

__all__ = ["HEAL_METHODS", "heal", "merge_adapters"]

"""Selection: turn scores (and a per-layer budget) into keep-masks."""

from __future__ import annotations

from hf_prune.selection.nm import check_nm_shape, nm_mask, nm_sparsity, parse_pattern
from hf_prune.selection.topk import num_to_prune, unstructured_mask

__all__ = [
    "check_nm_shape",
    "nm_mask",
    "nm_sparsity",
    "num_to_prune",
    "parse_pattern",
    "unstructured_mask",
]

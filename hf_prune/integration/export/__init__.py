"""Exports of pruned models to other tools' formats (mergekit passthrough configs)."""

from hf_prune.integration.export.mergekit import (
    check_architecture,
    export_mergekit_yaml,
    export_pruned_yaml,
    kept_blocks,
    layer_ranges,
    mergekit_config,
    supported_architectures,
)

__all__ = [
    "check_architecture",
    "export_mergekit_yaml",
    "export_pruned_yaml",
    "kept_blocks",
    "layer_ranges",
    "mergekit_config",
    "supported_architectures",
]

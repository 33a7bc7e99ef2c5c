"""Exports of pruned models to other tools' formats.

* :mod:`~hf_prune.integration.export.mergekit` — mergekit ``passthrough`` configs for depth results;
* :mod:`~hf_prune.integration.export.nemotron_nas` — NVIDIA's DeciLM / Nemotron-NAS ``block_configs``
  layout (non-uniform widths, removed sub-blocks; served natively by vLLM / TensorRT-LLM / SGLang);
* :mod:`~hf_prune.integration.export.onnx` — ONNX through transformers' native exporter, and ONNX
  Runtime latency helpers.

Exporters read plain data (the model, its report and structure) and never import
:mod:`hf_prune.integration.pruned_model` (see ``tests/test_import_direction.py``).
"""

from hf_prune.integration.export.mergekit import (
    check_architecture,
    export_mergekit_yaml,
    export_pruned_yaml,
    kept_blocks,
    layer_ranges,
    mergekit_config,
    supported_architectures,
)
from hf_prune.integration.export.nemotron_nas import (
    block_configs,
    export_nemotron_nas,
    ffn_mult_for_width,
    ffn_mult_to_intermediate_size,
    nemotron_nas_config,
)
from hf_prune.integration.export.onnx import (
    compare_onnx_latency,
    export_onnx,
    measure_onnx_latency,
    onnx_logits,
    onnx_session,
)

__all__ = [
    "block_configs",
    "check_architecture",
    "compare_onnx_latency",
    "export_mergekit_yaml",
    "export_nemotron_nas",
    "export_onnx",
    "export_pruned_yaml",
    "ffn_mult_for_width",
    "ffn_mult_to_intermediate_size",
    "kept_blocks",
    "layer_ranges",
    "measure_onnx_latency",
    "mergekit_config",
    "nemotron_nas_config",
    "onnx_logits",
    "onnx_session",
    "supported_architectures",
]

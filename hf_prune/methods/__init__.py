"""The method table. Adding a method = one module + one ``register_method`` line here."""

from __future__ import annotations

from hf_prune.config import PruningConfig, register_config
from hf_prune.methods.base import MethodEntry, PruneContext, Runner, SparsityConfig
from hf_prune.methods.custom import CustomConfig, run_custom
from hf_prune.methods.depth import (
    AblationDepthConfig,
    ActivationVarianceConfig,
    AngularDepthConfig,
    BlockInfluenceConfig,
    DepthConfig,
    IterativeDepthConfig,
    run_depth,
)
from hf_prune.methods.first_order import AFRConfig, ReferSVDConfig, SNIPConfig
from hf_prune.methods.fisher import FisherMaskConfig, run_fisher
from hf_prune.methods.magnitude import MagnitudeConfig
from hf_prune.methods.pruning_trees import PruningTreeConfig, run_pruning_trees
from hf_prune.methods.sparsegpt import SparseGPTConfig
from hf_prune.methods.structured import (
    StructuredConfig,
    StructuredMagnitudeConfig,
    StructuredWandaConfig,
    run_structured,
)
from hf_prune.methods.structured_first_order import (
    StructuredAFRConfig,
    StructuredReferSVDConfig,
    StructuredSNIPConfig,
)
from hf_prune.methods.unstructured import AlphaAllocation, OWLAllocation, UnstructuredConfig, run_unstructured
from hf_prune.methods.wanda import WandaConfig
from hf_prune.registry import Registry

METHODS: Registry[MethodEntry] = Registry("pruning method")


def register_method(config_class: type[PruningConfig], run: Runner) -> None:
    """Register a method: its config (for ``pruning_config.json``) and its runner.

    Args:
        config_class: The ``PruningConfig`` subclass; its ``method`` is the key.
        run: ``run(model, config, ctx) -> list[LayerReport]``.
    """
    register_config(config_class)
    METHODS.register(config_class.method, MethodEntry(config_class, run))


register_method(CustomConfig, run_custom)
register_method(MagnitudeConfig, run_unstructured)
register_method(WandaConfig, run_unstructured)
register_method(SparseGPTConfig, run_unstructured)
register_method(SNIPConfig, run_unstructured)
register_method(AFRConfig, run_unstructured)
register_method(ReferSVDConfig, run_unstructured)
register_method(StructuredMagnitudeConfig, run_structured)
register_method(StructuredWandaConfig, run_structured)
register_method(StructuredSNIPConfig, run_structured)
register_method(StructuredReferSVDConfig, run_structured)
register_method(StructuredAFRConfig, run_structured)
register_method(AngularDepthConfig, run_depth)
register_method(BlockInfluenceConfig, run_depth)
register_method(AblationDepthConfig, run_depth)
register_method(ActivationVarianceConfig, run_depth)
register_method(IterativeDepthConfig, run_depth)
register_method(FisherMaskConfig, run_fisher)
register_method(PruningTreeConfig, run_pruning_trees)

__all__ = [
    "METHODS",
    "AFRConfig",
    "AblationDepthConfig",
    "ActivationVarianceConfig",
    "AlphaAllocation",
    "AngularDepthConfig",
    "BlockInfluenceConfig",
    "CustomConfig",
    "DepthConfig",
    "FisherMaskConfig",
    "IterativeDepthConfig",
    "MagnitudeConfig",
    "MethodEntry",
    "OWLAllocation",
    "PruneContext",
    "PruningTreeConfig",
    "ReferSVDConfig",
    "SNIPConfig",
    "SparseGPTConfig",
    "SparsityConfig",
    "StructuredAFRConfig",
    "StructuredConfig",
    "StructuredMagnitudeConfig",
    "StructuredReferSVDConfig",
    "StructuredSNIPConfig",
    "StructuredWandaConfig",
    "UnstructuredConfig",
    "WandaConfig",
    "register_method",
]

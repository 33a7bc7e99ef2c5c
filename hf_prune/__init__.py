"""hf_prune: post-training pruning as a first-class part of the Hugging Face ecosystem.

Quick use::

    from hf_prune import AutoPrunedModelForCausalLM, MagnitudeConfig

    config = MagnitudeConfig(sparsity=0.5)
    model = AutoPrunedModelForCausalLM.from_pretrained("path/or/id", pruning_config=config)
    model.save_pretrained("out/")
"""

from hf_prune.config import CalibrationConfig, PruningConfig
from hf_prune.integration.auto import (
    AutoPrunedModel,
    AutoPrunedModelForCausalLM,
    AutoPrunedModelForImageClassification,
    AutoPrunedModelForImageTextToText,
    AutoPrunedModelForSequenceClassification,
)
from hf_prune.integration.callback import PruningCallback
from hf_prune.integration.pruned_model import PrunedModel
from hf_prune.methods import (
    AblationDepthConfig,
    ActivationVarianceConfig,
    AFRConfig,
    AlphaAllocation,
    AngularDepthConfig,
    BlockInfluenceConfig,
    CustomConfig,
    FisherMaskConfig,
    IterativeDepthConfig,
    MagnitudeConfig,
    OWLAllocation,
    PruningTreeConfig,
    ReferSVDConfig,
    SNIPConfig,
    SparseGPTConfig,
    StructuredAFRConfig,
    StructuredMagnitudeConfig,
    StructuredReferSVDConfig,
    StructuredSNIPConfig,
    StructuredWandaConfig,
    WandaConfig,
)
from hf_prune.pipeline import prune
from hf_prune.postprocess import heal
from hf_prune.report import LayerReport, PruningReport
from hf_prune.version import __version__

__all__ = [
    "AFRConfig",
    "AblationDepthConfig",
    "ActivationVarianceConfig",
    "AlphaAllocation",
    "AngularDepthConfig",
    "AutoPrunedModel",
    "AutoPrunedModelForCausalLM",
    "AutoPrunedModelForImageClassification",
    "AutoPrunedModelForImageTextToText",
    "AutoPrunedModelForSequenceClassification",
    "BlockInfluenceConfig",
    "CalibrationConfig",
    "CustomConfig",
    "FisherMaskConfig",
    "IterativeDepthConfig",
    "LayerReport",
    "MagnitudeConfig",
    "OWLAllocation",
    "PrunedModel",
    "PruningCallback",
    "PruningConfig",
    "PruningReport",
    "PruningTreeConfig",
    "ReferSVDConfig",
    "SNIPConfig",
    "SparseGPTConfig",
    "StructuredAFRConfig",
    "StructuredMagnitudeConfig",
    "StructuredReferSVDConfig",
    "StructuredSNIPConfig",
    "StructuredWandaConfig",
    "WandaConfig",
    "__version__",
    "heal",
    "prune",
]

"""Evaluation: perplexity with a documented protocol, the lm-evaluation-harness bridge, and evaluators.

The lm-eval bridge and the evaluators import their optional dependencies (``lm_eval``,
``sentence_transformers``, ``evaluate``: ``pip install 'hf_prune[eval]'``) only when called.
"""

from hf_prune.evaluation.evaluators import (
    HolisticEvaluator,
    HolisticResult,
    ModelEvaluator,
    SemanticSimilarityResult,
    standard_metric,
)
from hf_prune.evaluation.lm_eval import (
    LOCAL_TASKS,
    local_task_dir,
    record_lm_eval,
    register_hf_pruned,
    run_lm_eval,
    summarize_results,
)
from hf_prune.evaluation.perplexity import perplexity

__all__ = [
    "LOCAL_TASKS",
    "HolisticEvaluator",
    "HolisticResult",
    "ModelEvaluator",
    "SemanticSimilarityResult",
    "local_task_dir",
    "perplexity",
    "record_lm_eval",
    "register_hf_pruned",
    "run_lm_eval",
    "standard_metric",
    "summarize_results",
]

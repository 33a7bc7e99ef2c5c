"""Evaluation: perplexity and latency with documented protocols, the lm-eval bridge, and evaluators.

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
from hf_prune.evaluation.speed import compare_latency, measure_latency

__all__ = [
    "LOCAL_TASKS",
    "HolisticEvaluator",
    "HolisticResult",
    "ModelEvaluator",
    "SemanticSimilarityResult",
    "compare_latency",
    "local_task_dir",
    "measure_latency",
    "perplexity",
    "record_lm_eval",
    "register_hf_pruned",
    "run_lm_eval",
    "standard_metric",
    "summarize_results",
]

"""Evaluation data: registered benchmark sets, local files and Hub repos, all in one row schema.

>>> from hf_prune.data import load_eval_dataset
>>> ds = load_eval_dataset(["arc_easy", "sciq"], n=100)  # doctest: +SKIP
>>> ds.column_names  # doctest: +SKIP
['prompt', 'answer', 'choices', 'label', 'source', 'id']
"""

from hf_prune.data.eval_sets import (
    EVAL_DATASETS,
    GSM8K_LITE_SEED,
    GSM8K_LITE_SIZE,
    EvalDataset,
    load_eval_dataset,
)
from hf_prune.data.hub import load_dataset_from_hub, upload_dataset_to_hub
from hf_prune.data.lm import causal_lm_dataset
from hf_prune.data.schema import EVAL_FEATURES, EVAL_SCHEMA, describe_schema, validate_eval_schema

__all__ = [
    "EVAL_DATASETS",
    "EVAL_FEATURES",
    "EVAL_SCHEMA",
    "GSM8K_LITE_SEED",
    "GSM8K_LITE_SIZE",
    "EvalDataset",
    "causal_lm_dataset",
    "describe_schema",
    "load_dataset_from_hub",
    "load_eval_dataset",
    "upload_dataset_to_hub",
    "validate_eval_schema",
]

"""Layer selection: layer significance extraction and the exact MV-BCS optimizer.

* :func:`extract_layer_scores` -> :class:`LayerScores` (the ``*_scores.json`` format, with a packaged
  JSON Schema, :func:`load_schema`).
* :func:`solve_mvbcs` / :class:`LayerSelectionOptimizer` -> :class:`SelectionResult`: assign each verifier
  one contiguous, budget-feasible run of layers, maximizing total significance.
* :func:`run_benchmark`: compare selection objectives on seeded budget cases.
"""

from hf_prune.layer_selection.benchmark import (
    BenchmarkReport,
    BudgetCase,
    generate_budget_cases,
    run_benchmark,
    synthetic_layer_table,
)
from hf_prune.layer_selection.mvbcs import (
    MAX_ANY_ORDER_VERIFIERS,
    LayerSelectionOptimizer,
    SelectionResult,
    solve_mvbcs,
)
from hf_prune.layer_selection.scores import (
    BlockScore,
    LayerScore,
    LayerScores,
    extract_layer_scores,
    load_schema,
)

__all__ = [
    "MAX_ANY_ORDER_VERIFIERS",
    "BenchmarkReport",
    "BlockScore",
    "BudgetCase",
    "LayerScore",
    "LayerScores",
    "LayerSelectionOptimizer",
    "SelectionResult",
    "extract_layer_scores",
    "generate_budget_cases",
    "load_schema",
    "run_benchmark",
    "solve_mvbcs",
    "synthetic_layer_table",
]

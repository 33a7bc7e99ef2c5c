"""Benchmark of layer-selection objectives under seeded multi-verifier budgets.

Each *case* draws ``M`` verifier budgets as fractions of the model's total prunable cost. Every strategy
(an objective: AlphaPruning significance, weight norm, uniform, random) is solved *optimally for its own
objective* with the exact MV-BCS optimizer, and the layers it selects are then scored with the
*reference* benefit (the AlphaPruning significance). The reference strategy therefore reaches the
optimum by construction (a built-in sanity check); the others show how much reference benefit is lost
by optimizing a proxy.

Outputs (:meth:`BenchmarkReport.save`): one JSON per case, an aggregated ``summary.json`` and a
strategy-comparison plot.
"""

from __future__ import annotations

import json
import math
import os
import platform
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from hf_prune.layer_selection.mvbcs import solve_mvbcs

__all__ = [
    "BenchmarkReport",
    "BudgetCase",
    "environment_info",
    "generate_budget_cases",
    "run_benchmark",
    "synthetic_layer_table",
]

#: Strategy names, in plotting order.
STRATEGIES = ("alpha_pruning", "weight_norm", "uniform", "random")


@dataclass
class BudgetCase:
    """One seeded budget scenario.

    Args:
        case_id: Index of the case.
        seed: Seed the case was drawn with (also seeds its random strategy).
        budget_fractions: Budget of each verifier as a fraction of the total cost.
        budgets: The budgets in cost units.
    """

    case_id: int
    seed: int
    budget_fractions: list[float]
    budgets: list[float]

    @property
    def num_verifiers(self) -> int:
        """Number of verifiers ``M``."""
        return len(self.budgets)


def generate_budget_cases(
    total_cost: float,
    num_cases: int,
    num_verifiers: int,
    seed: int = 0,
    fraction_range: tuple[float, float] = (0.02, 0.15),
) -> list[BudgetCase]:
    """Draw reproducible budget cases.

    Args:
        total_cost: Sum of all layer costs.
        num_cases: Number of cases (``>= 1``).
        num_verifiers: Verifiers per case (``>= 1``).
        seed: Base seed; case ``k`` uses ``seed + k``.
        fraction_range: Each budget is ``U(lo, hi) * total_cost``, with ``0 <= lo <= hi``.

    Returns:
        The cases.

    Raises:
        ValueError: For a non-positive count or an invalid fraction range.
    """
    if not isinstance(num_cases, int) or num_cases < 1:
        raise ValueError(f"num_cases must be an integer >= 1, got {num_cases!r}.")
    if not isinstance(num_verifiers, int) or num_verifiers < 1:
        raise ValueError(f"num_verifiers must be an integer >= 1, got {num_verifiers!r}.")
    lo, hi = (float(x) for x in fraction_range)
    if not (0.0 <= lo <= hi) or not math.isfinite(hi):
        raise ValueError(f"fraction_range must satisfy 0 <= lo <= hi, got {fraction_range!r}.")
    cases = []
    for k in range(num_cases):
        rng = np.random.default_rng(seed + k)
        fractions = rng.uniform(lo, hi, num_verifiers)
        cases.append(
            BudgetCase(
                case_id=k,
                seed=seed + k,
                budget_fractions=[float(f) for f in fractions],
                # Whole cost units: parameter counts are integers, and rounding keeps budgets readable.
                budgets=[float(math.floor(f * total_cost)) for f in fractions],
            )
        )
    return cases


def synthetic_layer_table(num_blocks: int = 32, seed: int = 0) -> dict[str, Any]:
    """A seeded, LLaMA-7B-shaped layer table for demos and smoke tests (not real model data).

    Seven projections per block with LLaMA-7B sizes (hidden 4096, MLP 11008). The reference
    significance follows the depth trend AlphaPruning reports (early blocks more significant) with
    per-layer noise; the weight-norm objective is a noisy correlate of it.

    Args:
        num_blocks: Number of blocks.
        seed: Seed of the noise.

    Returns:
        A dict with ``names``, ``costs`` (int64), ``reference`` and ``weight_norm`` (float64, in
        ``[0, 1]``) arrays, and ``source`` (``"synthetic"``).
    """
    rng = np.random.default_rng(seed)
    hidden, mlp = 4096, 11008
    kinds = [
        ("self_attn.q_proj", hidden * hidden),
        ("self_attn.k_proj", hidden * hidden),
        ("self_attn.v_proj", hidden * hidden),
        ("self_attn.o_proj", hidden * hidden),
        ("mlp.gate_proj", hidden * mlp),
        ("mlp.up_proj", hidden * mlp),
        ("mlp.down_proj", hidden * mlp),
    ]
    names, costs, depth = [], [], []
    for b in range(num_blocks):
        for path, n in kinds:
            names.append(f"model.layers.{b}.{path}")
            costs.append(n)
            depth.append(b / max(num_blocks - 1, 1))
    d = np.asarray(depth)
    reference = np.clip(0.55 - 0.25 * d + rng.normal(0.0, 0.08, d.shape), 0.0, 1.0)
    weight_norm = np.clip(reference + rng.normal(0.0, 0.15, d.shape), 0.0, None)
    weight_norm = (weight_norm - weight_norm.min()) / max(float(np.ptp(weight_norm)), 1e-12)
    return {
        "names": names,
        "costs": np.asarray(costs, dtype=np.int64),
        "reference": reference,
        "weight_norm": weight_norm,
        "source": "synthetic",
    }


def environment_info() -> dict[str, Any]:
    """Describe the machine and library versions (recorded with every benchmark result).

    Returns:
        Python / numpy / scipy / torch versions, platform, CPU model, CPU count and thread settings.
    """
    info: dict[str, Any] = {
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
    }
    try:  # the CPU model is only cheaply available on Linux
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        info["cpu"] = platform.processor() or None
    for dist in ("scipy", "torch", "transformers"):
        try:  # package metadata gives the version without importing the package
            info[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            info[dist] = None
    torch = sys.modules.get("torch")
    info["torch_threads"] = torch.get_num_threads() if torch is not None else None
    from hf_prune.version import __version__

    info["hf_prune"] = __version__
    return info


@dataclass
class BenchmarkReport:
    """Result of :func:`run_benchmark`.

    Args:
        settings: Parameters of the run (cases, verifiers, seed, order, fraction range, data source).
        cases: One record per case: budgets and, per strategy, the selection and its benefits.
        summary: Per strategy: mean / median / min / max relative reference benefit, optimum hits,
            mean selected parameters.
        environment: :func:`environment_info` at run time.
    """

    settings: dict[str, Any]
    cases: list[dict[str, Any]]
    summary: dict[str, dict[str, float]]
    environment: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Return the aggregated JSON content (settings, summary, environment, cases).

        Returns:
            A JSON-serializable dict.
        """
        return {
            "settings": self.settings,
            "summary": self.summary,
            "environment": self.environment,
            "cases": self.cases,
        }

    def save(self, output_dir: str | Path, plot: bool = True) -> dict[str, Path]:
        """Write ``cases/case_XXXX.json``, ``summary.json`` and ``strategy_comparison.png``.

        Args:
            output_dir: Folder to write into (created if needed).
            plot: Also render the comparison plot (needs matplotlib and seaborn).

        Returns:
            Paths of what was written, keyed ``"summary"``, ``"cases"`` (the folder) and ``"plot"``.
        """
        out = Path(output_dir)
        (out / "cases").mkdir(parents=True, exist_ok=True)
        for case in self.cases:
            path = out / "cases" / f"case_{case['case_id']:04d}.json"
            path.write_text(json.dumps(case, indent=2) + "\n", encoding="utf-8")
        written = {"cases": out / "cases", "summary": out / "summary.json"}
        written["summary"].write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")
        if plot:
            from hf_prune.plots.layer_selection import plot_strategy_comparison

            written["plot"] = out / "strategy_comparison.png"
            plot_strategy_comparison(self, save_path=written["plot"])
        return written


def _selected_mask(assignments: Sequence[tuple[int, int] | None], n: int) -> np.ndarray:
    mask = np.zeros(n, dtype=bool)
    for a in assignments:
        if a is not None:
            mask[a[0] : a[1] + 1] = True
    return mask


def run_benchmark(
    reference: Sequence[float] | np.ndarray,
    costs: Sequence[float] | np.ndarray,
    *,
    weight_norm: Sequence[float] | np.ndarray | None = None,
    num_cases: int = 20,
    num_verifiers: int = 4,
    seed: int = 0,
    order: str = "fixed",
    fraction_range: tuple[float, float] = (0.02, 0.15),
    extra_strategies: Mapping[str, Sequence[float] | np.ndarray] | None = None,
    source: str = "",
) -> BenchmarkReport:
    """Compare objectives on seeded budget cases, all evaluated on the reference benefit.

    Args:
        reference: Per-layer reference benefit (AlphaPruning significance), ``>= 0``.
        costs: Per-layer cost (parameter counts), ``> 0``.
        weight_norm: Per-layer weight-norm significance; the strategy is skipped when ``None``.
        num_cases: Number of budget cases.
        num_verifiers: Verifiers per case.
        seed: Base seed (cases and the random strategy).
        order: MV-BCS order, ``"fixed"`` or ``"any"``.
        fraction_range: Range of each budget as a fraction of the total cost.
        extra_strategies: Further named objectives to compare.
        source: Free text describing where the data came from (recorded in the settings).

    Returns:
        The :class:`BenchmarkReport` (not yet written; call :meth:`BenchmarkReport.save`).

    Raises:
        ValueError: For invalid inputs (lengths, signs, counts, order).
    """
    ref = np.asarray(reference, dtype=np.float64)
    cost = np.asarray(costs, dtype=np.float64)
    n = ref.shape[0]
    objectives: dict[str, np.ndarray | None] = {"alpha_pruning": ref}
    if weight_norm is not None:
        objectives["weight_norm"] = np.asarray(weight_norm, dtype=np.float64)
    objectives["uniform"] = np.ones(n)
    objectives["random"] = None  # drawn per case
    for name, values in (extra_strategies or {}).items():
        if name in objectives:
            raise ValueError(f"extra strategy name {name!r} clashes with a built-in strategy.")
        objectives[name] = np.asarray(values, dtype=np.float64)
    for name, values in objectives.items():
        if values is not None and values.shape != ref.shape:
            raise ValueError(f"strategy {name!r} has {values.shape[0]} values for {n} layers.")

    cases = generate_budget_cases(float(cost.sum()), num_cases, num_verifiers, seed, fraction_range)
    records: list[dict[str, Any]] = []
    rel: dict[str, list[float]] = {name: [] for name in objectives}
    hits: dict[str, int] = dict.fromkeys(objectives, 0)
    params: dict[str, list[float]] = {name: [] for name in objectives}
    for case in cases:
        rng = np.random.default_rng(case.seed + 1_000_003)  # separate stream from the budgets
        results: dict[str, Any] = {}
        for name, values in objectives.items():
            obj = rng.random(n) if values is None else values
            objective, assignments = solve_mvbcs(obj, cost, case.budgets, order=order)
            mask = _selected_mask(assignments, n)
            ref_benefit = math.fsum(ref[mask].tolist())
            results[name] = {
                "objective_value": objective,
                "reference_benefit": ref_benefit,
                "assignments": [None if a is None else [a[0], a[1]] for a in assignments],
                "num_selected_layers": int(mask.sum()),
                "selected_parameters": float(cost[mask].sum()),
            }
        optimum = results["alpha_pruning"]["reference_benefit"]
        for name, res in results.items():
            # An empty optimum (every budget below every layer) makes all strategies equally optimal.
            res["relative_benefit"] = res["reference_benefit"] / optimum if optimum > 0 else 1.0
            rel[name].append(res["relative_benefit"])
            hits[name] += int(res["reference_benefit"] >= optimum - 1e-9 * max(1.0, optimum))
            params[name].append(res["selected_parameters"])
        records.append(
            {
                "case_id": case.case_id,
                "seed": case.seed,
                "num_verifiers": case.num_verifiers,
                "budget_fractions": case.budget_fractions,
                "budgets": case.budgets,
                "order": order,
                "optimal_reference_benefit": optimum,
                "strategies": results,
            }
        )
    summary = {}
    for name in objectives:
        r = np.asarray(rel[name])
        summary[name] = {
            "mean_relative_benefit": float(r.mean()),
            "median_relative_benefit": float(np.median(r)),
            "min_relative_benefit": float(r.min()),
            "max_relative_benefit": float(r.max()),
            "optimal_cases": hits[name],
            "mean_selected_parameters": float(np.mean(params[name])),
        }
    settings = {
        "num_cases": num_cases,
        "num_verifiers": num_verifiers,
        "seed": seed,
        "order": order,
        "fraction_range": [float(fraction_range[0]), float(fraction_range[1])],
        "num_layers": n,
        "total_cost": float(cost.sum()),
        "reference": "alpha_pruning",
        "strategies": list(objectives),
        "source": source,
    }
    return BenchmarkReport(settings=settings, cases=records, summary=summary, environment=environment_info())

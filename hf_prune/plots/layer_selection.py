"""Figures for layer significance, pruning ratios, MV-BCS assignments and the objective benchmark.

Every function builds a :class:`matplotlib.figure.Figure` directly (no ``pyplot`` state, so nothing
needs a display and no global backend is switched; rendering uses Agg), returns it, and writes it to
``save_path`` when one is given.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib import MatplotlibDeprecationWarning
from matplotlib.figure import Figure
from matplotlib.patches import Patch

__all__ = [
    "plot_assignments",
    "plot_layer_significance",
    "plot_pruning_ratios",
    "plot_strategy_comparison",
]

# Above this many layers, bars become unreadable and slow; draw lines instead.
_MAX_BARS = 400


def _sns() -> Any:
    # seaborn is imported lazily so that importing hf_prune.plots stays cheap.
    import seaborn as sns

    sns.set_theme(style="whitegrid", context="notebook")
    return sns


def _save(fig: Figure, save_path: str | Path | None) -> Figure:
    if save_path is not None:
        path = Path(save_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=150, bbox_inches="tight")
    return fig


def _layer_kind(name: str) -> str:
    # The path inside the block ("mlp.down_proj", "attention.output.dense") follows the first numeric
    # component (the block index) of the module name; it is what distinguishes layer types.
    parts = name.split(".")
    for i, part in enumerate(parts):
        if part.isdigit() and i + 1 < len(parts):
            return ".".join(parts[i + 1 :])
    return parts[-1]


def _block_edges(scores: Any) -> list[float]:
    return [b.layer_indices[0] - 0.5 for b in scores.blocks[1:]]


def _per_layer(ax: Any, x: np.ndarray, y: np.ndarray, kinds: list[str], sns: Any) -> None:
    if len(x) <= _MAX_BARS:
        palette = dict(zip(sorted(set(kinds)), sns.color_palette("tab10", len(set(kinds))), strict=True))
        ax.bar(x, y, width=0.85, color=[palette[k] for k in kinds], linewidth=0)
        handles = [Patch(color=palette[k], label=k) for k in sorted(palette, key=kinds.index)]
        ax.legend(handles=handles, fontsize="x-small", loc="upper left", bbox_to_anchor=(1.0, 1.0))
    else:
        ax.plot(x, y, linewidth=0.8)


def plot_layer_significance(scores: Any, save_path: str | Path | None = None) -> Figure:
    """Per-layer significance: the raw metric (top) and the normalized significance score (bottom).

    Args:
        scores: A :class:`~hf_prune.layer_selection.scores.LayerScores`. The raw panel shows
            ``metadata["metric_values"]`` when present, otherwise the significance itself.
        save_path: Where to write the figure (any matplotlib format), or ``None``.

    Returns:
        The figure.
    """
    sns = _sns()
    sig = scores.significance
    x = np.arange(sig.shape[0])
    kinds = [_layer_kind(n) for n in scores.layer_names]
    metric = scores.metadata.get("metric", "metric")
    raw = np.asarray(scores.metadata.get("metric_values") or sig, dtype=np.float64)
    span = float(np.ptp(sig)) if sig.size else 0.0
    normalized = (sig - sig.min()) / span if span > 0 else np.ones_like(sig)

    fig = Figure(figsize=(max(8.0, min(0.06 * len(x), 24.0)), 6.5), layout="constrained")
    ax_raw, ax_norm = fig.subplots(2, 1, sharex=True)
    _per_layer(ax_raw, x, raw, kinds, sns)
    ax_raw.set_ylabel(f"raw {metric}")
    ax_raw.set_title(f"{scores.model_name}: per-layer significance ({metric})")
    _per_layer(ax_norm, x, normalized, kinds, sns)
    ax_norm.plot(x, sig, color="black", linewidth=0.8, label="significance (1 - ratio)")
    ax_norm.set_ylabel("significance\n(bars: min-max normalized,\nline: 1 - pruning ratio)")
    ax_norm.set_xlabel("layer index (module order)")
    for ax in (ax_raw, ax_norm):
        for edge in _block_edges(scores):
            ax.axvline(edge, color="grey", linewidth=0.4, alpha=0.6)
    return _save(fig, save_path)


def plot_pruning_ratios(scores: Any, save_path: str | Path | None = None) -> Figure:
    """Per-layer pruning ratios with the per-block mean and the target sparsity.

    Args:
        scores: A :class:`~hf_prune.layer_selection.scores.LayerScores`.
        save_path: Where to write the figure, or ``None``.

    Returns:
        The figure.
    """
    sns = _sns()
    ratios = scores.pruning_ratios
    x = np.arange(ratios.shape[0])
    kinds = [_layer_kind(n) for n in scores.layer_names]
    fig = Figure(figsize=(max(8.0, min(0.06 * len(x), 24.0)), 4.0), layout="constrained")
    ax = fig.subplots()
    _per_layer(ax, x, ratios, kinds, sns)
    for b in scores.blocks:
        idx = b.layer_indices
        ax.hlines(b.mean_pruning_ratio, idx[0] - 0.5, idx[-1] + 0.5, color="black", linewidth=1.2)
    sparsity = scores.metadata.get("sparsity")
    if sparsity is not None:
        ax.axhline(float(sparsity), color="tab:red", linestyle="--", linewidth=1, label="target sparsity")
    ax.set_ylim(0.0, 1.0)
    ax.set_xlabel("layer index (module order)")
    ax.set_ylabel("pruning ratio")
    ax.set_title(
        f"{scores.model_name}: pruning ratios ({scores.metadata.get('metric', '?')}; black = block mean)"
    )
    return _save(fig, save_path)


def plot_assignments(
    result: Any,
    values: Sequence[float] | np.ndarray | None = None,
    save_path: str | Path | None = None,
    title: str | None = None,
) -> Figure:
    """Which layers each verifier received, over the layer axis.

    Top: the per-layer benefit coloured by the verifier that covers the layer (grey: unassigned).
    Bottom: one lane per verifier with its run, annotated with cost / budget.

    Args:
        result: A :class:`~hf_prune.layer_selection.mvbcs.SelectionResult` or its ``to_dict()``.
        values: Per-layer benefit for the top panel (default: a flat line of ones).
        save_path: Where to write the figure, or ``None``.
        title: Figure title.

    Returns:
        The figure.
    """
    sns = _sns()
    data = result.to_dict() if hasattr(result, "to_dict") else dict(result)
    n = int(data["num_layers"])
    verifiers = data["verifiers"]
    vals = np.ones(n) if values is None else np.asarray(values, dtype=np.float64)
    palette = sns.color_palette("husl", max(len(verifiers), 1))
    owner = np.full(n, -1)
    for v in verifiers:
        if v["assignment"] is not None:
            owner[v["assignment"][0] : v["assignment"][1] + 1] = v["index"]

    fig = Figure(figsize=(max(8.0, min(0.06 * n, 24.0)), 2.5 + 0.35 * len(verifiers)), layout="constrained")
    ax_val, ax_lane = fig.subplots(2, 1, sharex=True, height_ratios=[2, max(1, len(verifiers) * 0.35)])
    colors = [(0.8, 0.8, 0.8) if o < 0 else palette[o] for o in owner]
    if n <= _MAX_BARS:
        ax_val.bar(np.arange(n), vals, width=0.9, color=colors, linewidth=0)
    else:
        ax_val.plot(np.arange(n), vals, color="grey", linewidth=0.6)
        for v in verifiers:
            if v["assignment"] is not None:
                s, e = v["assignment"]
                ax_val.fill_between(np.arange(s, e + 1), vals[s : e + 1], color=palette[v["index"]])
    ax_val.set_ylabel("benefit")
    ax_val.set_title(title or f"MV-BCS assignment (order={data.get('order')}, benefit={data['benefit']:.4g})")
    for v in verifiers:
        lane = v["index"]
        if v["assignment"] is not None:
            s, e = v["assignment"]
            ax_lane.broken_barh([(s - 0.5, e - s + 1)], (lane - 0.4, 0.8), color=palette[lane])
        budget = v.get("budget")
        label = f"{v['total_cost']:.3g} / {'inf' if budget is None else f'{budget:.3g}'}"
        ax_lane.text(n - 0.5, lane, "  " + label, va="center", fontsize="x-small")
    ax_lane.set_yticks(range(len(verifiers)), [f"verifier {v['index']}" for v in verifiers])
    ax_lane.set_ylim(len(verifiers) - 0.5, -0.5)
    ax_lane.set_xlim(-0.5, n - 0.5)
    ax_lane.set_xlabel("layer index (module order); right: cost / budget")
    return _save(fig, save_path)


def plot_strategy_comparison(report: Any, save_path: str | Path | None = None) -> Figure:
    """Reference (AlphaPruning) benefit reached by each objective, relative to the optimum, per case.

    Args:
        report: A :class:`~hf_prune.layer_selection.benchmark.BenchmarkReport` or its ``to_dict()``.
        save_path: Where to write the figure, or ``None``.

    Returns:
        The figure.
    """
    sns = _sns()
    data: Mapping[str, Any] = report.to_dict() if hasattr(report, "to_dict") else report
    names = list(data["settings"]["strategies"])
    xs, ys = [], []
    for case in data["cases"]:
        for name in names:
            xs.append(name)
            ys.append(case["strategies"][name]["relative_benefit"])
    fig = Figure(figsize=(1.6 * len(names) + 3.0, 4.5), layout="constrained")
    ax = fig.subplots()
    with warnings.catch_warnings():
        # seaborn 0.13 still passes matplotlib's deprecated ``vert=`` to ``bxp``; nothing to fix on our side.
        warnings.simplefilter("ignore", MatplotlibDeprecationWarning)
        sns.boxplot(x=xs, y=ys, order=names, ax=ax, color="white", showfliers=False, width=0.55)
    sns.stripplot(
        x=xs, y=ys, order=names, ax=ax, hue=xs, hue_order=names, palette="deep", size=4, legend=False
    )
    ax.axhline(1.0, color="black", linestyle="--", linewidth=0.8)
    s = data["settings"]
    ax.set_ylabel("reference benefit / optimum")
    ax.set_xlabel("objective optimized")
    ax.set_title(f"{s['num_cases']} cases, {s['num_verifiers']} verifiers, order={s['order']}")
    return _save(fig, save_path)

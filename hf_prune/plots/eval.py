"""Evaluation figures: layer importance, per-layer pruning, activation norms, drift, benchmarks.

Every function returns the ``matplotlib.figure.Figure`` and writes it when ``save_path`` is given
(format from the extension). Figures are drawn headless (Agg) unless an interactive backend is set.
"""

from __future__ import annotations

import math
import os
import re
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from hf_prune.report import PruningReport

__all__ = [
    "activation_norms",
    "plot_activation_norms",
    "plot_benchmark_comparison",
    "plot_layer_importance",
    "plot_layer_ratios",
    "plot_semantic_drift",
    "report_layer_scores",
]

_BLOCK_RE = re.compile(r"(?:^|\.)(?:layers|layer|h|blocks|block)\.(\d+)(?:\.|$)")


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=False)  # headless by default; respects an interactive backend if set
    import matplotlib.pyplot as plt

    return plt


def _sns() -> Any:
    import seaborn as sns

    sns.set_theme(style="whitegrid", context="notebook")
    return sns


def _finish(fig: Any, save_path: str | os.PathLike[str] | None) -> Any:
    fig.tight_layout()
    if save_path is not None:
        fig.savefig(save_path, dpi=120, bbox_inches="tight")
    return fig


def _block_of(row: Any) -> int | None:
    if getattr(row, "block", None) is not None:
        return int(row.block)
    hit = _BLOCK_RE.search(str(row.name))
    if hit:
        return int(hit.group(1))
    parts = str(row.name).split(".")  # structural rows are named "<stack>.<block>.<unit>"
    return int(parts[1]) if len(parts) > 2 and parts[1].isdigit() else None


# ----------------------------------------------------------------------- layer importance heatmap
def report_layer_scores(report: PruningReport, stat: str = "mean") -> dict[int, float]:
    """Average one score statistic of a report's rows per block.

    Args:
        report: A report whose rows carry ``score`` dicts (e.g. Wanda / magnitude per projection).
        stat: Key of the score dict (``"mean"``, or an allocation metric such as ``"alpha_peak"``).

    Returns:
        ``{block: value}`` sorted by block.

    Raises:
        ValueError: If no row has that statistic.
    """
    acc: dict[int, list[float]] = defaultdict(list)
    for row in report.layers:
        value = (row.score or {}).get(stat)
        block = _block_of(row)
        if isinstance(value, (int, float)) and block is not None and math.isfinite(value):
            acc[block].append(float(value))
    if not acc:
        raise ValueError(f"no row of the {report.method!r} report has a per-block score {stat!r}")
    return {b: float(np.mean(v)) for b, v in sorted(acc.items())}


def plot_layer_importance(
    scores: Mapping[str, PruningReport | Sequence[float] | Mapping[int, float]],
    *,
    stat: str = "mean",
    normalize: bool = True,
    save_path: str | os.PathLike[str] | None = None,
    title: str | None = None,
) -> Any:
    """Heatmap of per-layer importance (layers x methods).

    Args:
        scores: ``{method: scores}`` where scores are a per-layer sequence, ``{layer: value}``, or a
            :class:`PruningReport` (reduced with :func:`report_layer_scores`).
        stat: Score statistic read from reports.
        normalize: Min-max normalize each method's column so methods on different scales compare;
            the raw values are printed in the cells.
        save_path: Write the figure here when given.
        title: Figure title.

    Returns:
        The figure.

    Raises:
        ValueError: If ``scores`` is empty or a method has no values.
    """
    if not scores:
        raise ValueError("scores is empty: pass {method: per-layer scores}")
    columns: dict[str, dict[int, float]] = {}
    for method, value in scores.items():
        if isinstance(value, PruningReport):
            col = report_layer_scores(value, stat)
        elif isinstance(value, Mapping):
            col = {int(k): float(v) for k, v in value.items()}
        else:
            col = {i: float(v) for i, v in enumerate(value)}
        if not col:
            raise ValueError(f"method {method!r} has no scores")
        columns[str(method)] = col
    layers = sorted({k for col in columns.values() for k in col})
    raw = np.full((len(layers), len(columns)), np.nan)
    for j, col in enumerate(columns.values()):
        for i, layer in enumerate(layers):
            raw[i, j] = col.get(layer, np.nan)
    shown = raw.copy()
    if normalize:
        for j in range(shown.shape[1]):
            c = shown[:, j]
            lo, hi = np.nanmin(c), np.nanmax(c)
            shown[:, j] = 0.5 if hi == lo else (c - lo) / (hi - lo)
    sns = _sns()
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(1.6 + 1.5 * len(columns), 1.2 + 0.36 * len(layers)))
    annot = np.vectorize(lambda v: "" if np.isnan(v) else f"{v:.3g}")(raw)
    sns.heatmap(
        shown,
        ax=ax,
        cmap="viridis",
        annot=annot if len(layers) <= 48 else False,
        fmt="",
        annot_kws={"fontsize": 8},
        xticklabels=list(columns),
        yticklabels=[str(layer) for layer in layers],
        cbar_kws={"label": "importance (normalized per method)" if normalize else "importance"},
        mask=np.isnan(shown),
    )
    ax.set_xlabel("method")
    ax.set_ylabel("layer")
    ax.set_title(title or "Layer importance")
    return _finish(fig, save_path)


# --------------------------------------------------------------------------- per-layer bar chart
def plot_layer_ratios(
    report: PruningReport,
    *,
    save_path: str | os.PathLike[str] | None = None,
    title: str | None = None,
) -> Any:
    """Per-block pruning from a report: requested ratio vs measured sparsity, removed fraction, blocks.

    Unstructured rows are averaged per block (parameter-weighted); structural rows (MLP neurons,
    heads) show the fraction of the block's parameters they removed; removed blocks are full bars.

    Args:
        report: The pruning report.
        save_path: Write the figure here when given.
        title: Figure title.

    Returns:
        The figure.

    Raises:
        ValueError: If the report records no per-layer change.
    """
    blocks: dict[int, dict[str, float]] = defaultdict(dict)
    weights: dict[int, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for row in report.layers:
        b = _block_of(row)
        if b is None:
            continue
        if row.kind == "linear":
            w = float(max(row.params_before, 1))
            if row.sparsity_measured is not None:
                weights[b]["measured"] += w
                blocks[b]["measured sparsity"] = (
                    blocks[b].get("measured sparsity", 0.0) + w * row.sparsity_measured
                )
            if row.ratio_requested is not None:
                weights[b]["requested"] += w
                blocks[b]["requested ratio"] = blocks[b].get("requested ratio", 0.0) + w * row.ratio_requested
        elif row.params_before:
            removed = 1.0 - row.params_after / row.params_before
            key = f"{row.kind} params removed"
            blocks[b][key] = blocks[b].get(key, 0.0) + removed
    for b, vals in blocks.items():
        if "measured sparsity" in vals:
            vals["measured sparsity"] /= weights[b]["measured"]
        if "requested ratio" in vals:
            vals["requested ratio"] /= weights[b]["requested"]
    for idx in (report.removed_layers or {}).values():
        for b in idx:
            blocks[int(b)]["block removed"] = 1.0
    if not blocks:
        raise ValueError("the report records no per-layer change to plot")
    series = sorted({k for v in blocks.values() for k in v}, key=lambda k: (k == "block removed", k))
    xs = sorted(blocks)
    sns = _sns()
    plt = _pyplot()
    palette = dict(zip(series, sns.color_palette("deep", len(series)), strict=True))
    if "block removed" in palette:
        palette["block removed"] = (0.55, 0.55, 0.55)
    fig, ax = plt.subplots(figsize=(max(5.5, 0.5 * len(xs) * max(1, len(series)) * 0.6 + 2), 3.6))
    width = 0.8 / len(series)
    for k, name in enumerate(series):
        ys = [blocks[b].get(name, np.nan) for b in xs]
        pos = [i - 0.4 + width * (k + 0.5) for i in range(len(xs))]
        ax.bar(pos, ys, width=width, label=name, color=palette[name])
    ax.set_xticks(range(len(xs)))
    ax.set_xticklabels([str(b) for b in xs])
    ax.set_xlabel("block (original numbering)")
    ax.set_ylabel("fraction")
    ax.set_ylim(0, 1.05)
    ax.set_title(title or f"{report.method}: per-block pruning")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    return _finish(fig, save_path)


# ----------------------------------------------------------------------------- activation norms
def activation_norms(model: Any, inputs: Mapping[str, Any], stack: str | None = None) -> dict[int, float]:
    """Mean L2 norm of each block's output (forward hooks on the blocks of one stack).

    Hooks read the blocks' own outputs, so the last value is not affected by the model's final norm
    (which transformers applies to the last entry of ``hidden_states``). For a
    :class:`~hf_prune.PrunedModel` with removed blocks, keys are the *original* block indices, so
    dense and depth-pruned models line up in :func:`plot_activation_norms`.

    Args:
        model: A transformers model or ``PrunedModel``.
        inputs: Model inputs (``input_ids``, ``attention_mask``, ``pixel_values`` ...).
        stack: Stack name (default: the main stack, e.g. the decoder / language model).

    Returns:
        ``{block: mean token norm}``.

    Raises:
        ValueError: If the stack has no blocks.
    """
    import torch

    from hf_prune.arch import get_arch, get_layers

    base = getattr(model, "base_model", model)
    if not hasattr(base, "config"):  # pragma: no cover - defensive
        base = model
    arch = get_arch(base)
    spec = arch.stack(stack) if stack is not None else arch.stacks[-1]
    layers = list(get_layers(base, spec))
    if not layers:
        raise ValueError(f"stack {spec.name!r} has no blocks")
    norms: dict[int, float] = {}

    def hook(i: int) -> Any:
        def fn(_module: Any, _args: Any, output: Any) -> None:
            h = output[0] if isinstance(output, (tuple, list)) else output
            norms[i] = float(h.float().norm(dim=-1).mean())

        return fn

    handles = [layer.register_forward_hook(hook(i)) for i, layer in enumerate(layers)]
    try:
        with torch.inference_mode():
            model(**inputs)
    finally:
        for handle in handles:
            handle.remove()
    report = getattr(model, "report", None)
    removed = set((getattr(report, "removed_layers", None) or {}).get(spec.name, []))
    keys = [i for i in range(len(layers) + len(removed)) if i not in removed][: len(layers)]
    return {keys[i]: norms[i] for i in sorted(norms)}


def plot_activation_norms(
    before: Mapping[int, float] | Sequence[float],
    after: Mapping[int, float] | Sequence[float],
    *,
    labels: tuple[str, str] = ("dense", "pruned"),
    save_path: str | os.PathLike[str] | None = None,
    title: str | None = None,
) -> Any:
    """Per-block activation norms before vs after pruning (removed blocks show as gaps).

    Args:
        before: ``{block: norm}`` or a sequence (dense model, e.g. from :func:`activation_norms`).
        after: The same for the pruned model.
        labels: Legend labels.
        save_path: Write the figure here when given.
        title: Figure title.

    Returns:
        The figure.

    Raises:
        ValueError: If either side is empty.
    """
    b = dict(before) if isinstance(before, Mapping) else dict(enumerate(before))
    a = dict(after) if isinstance(after, Mapping) else dict(enumerate(after))
    if not b or not a:
        raise ValueError("before and after must both hold per-layer norms")
    layers = sorted(set(b) | set(a))
    sns = _sns()
    plt = _pyplot()
    colors = sns.color_palette("deep", 4)
    fig, (ax, ax2) = plt.subplots(
        2, 1, figsize=(max(5.5, 0.35 * len(layers) + 2), 4.8), sharex=True, height_ratios=[2.2, 1]
    )
    ax.plot(layers, [b.get(i, np.nan) for i in layers], marker="o", color=colors[0], label=labels[0])
    ax.plot(layers, [a.get(i, np.nan) for i in layers], marker="s", color=colors[3], label=labels[1])
    missing = [i for i in layers if i not in a]
    for i in missing:
        ax.axvspan(i - 0.4, i + 0.4, color="0.85", zorder=0)
    ax.set_ylabel("mean ‖h‖₂")
    ax.legend(frameon=False, fontsize=8)
    ax.set_title(title or "Block output norms")
    ratio = [a[i] / b[i] if i in a and i in b and b[i] else np.nan for i in layers]
    ax2.bar(layers, ratio, color=colors[2])
    ax2.axhline(1.0, color="0.3", lw=0.8, ls="--")
    ax2.set_ylabel(f"{labels[1]} / {labels[0]}")
    ax2.set_xlabel("block" + (" (grey: removed)" if missing else ""))
    ax2.set_xticks(layers)
    return _finish(fig, save_path)


# ----------------------------------------------------------------------------- semantic drift
def plot_semantic_drift(
    result: Any,
    *,
    prompts: Sequence[str] | None = None,
    save_path: str | os.PathLike[str] | None = None,
    title: str | None = None,
    max_label: int = 40,
) -> Any:
    """Per-prompt cosine similarity between dense and pruned generations, lowest first.

    Args:
        result: A :class:`~hf_prune.evaluation.evaluators.SemanticSimilarityResult` or a list of scores.
        prompts: Labels when ``result`` is a plain list.
        save_path: Write the figure here when given.
        title: Figure title.
        max_label: Truncate prompt labels to this many characters.

    Returns:
        The figure.

    Raises:
        ValueError: If there are no scores.
    """
    scores = list(getattr(result, "scores", result))
    names = list(getattr(result, "prompts", None) or prompts or [f"prompt {i}" for i in range(len(scores))])
    if not scores or len(names) != len(scores):
        raise ValueError("need one score per prompt")
    order = np.argsort(scores)
    labels = [names[i].replace("\n", " ⏎ ") for i in order]
    labels = [s if len(s) <= max_label else s[: max_label - 1] + "…" for s in labels]
    vals = [scores[i] for i in order]
    sns = _sns()
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.0, 1.0 + 0.3 * len(vals)))
    cmap = sns.color_palette("RdYlGn", as_cmap=True)
    ax.barh(range(len(vals)), vals, color=[cmap(max(0.0, min(1.0, v))) for v in vals])
    mean = float(np.mean(scores))
    ax.axvline(mean, color="0.2", ls="--", lw=1)
    ax.text(mean, len(vals) - 0.4, f" mean {mean:.3f}", va="bottom", fontsize=8)
    ax.set_yticks(range(len(vals)))
    ax.set_yticklabels(labels, fontsize=8)
    ax.set_xlim(min(0.0, min(vals) - 0.05), 1.0)
    ax.set_xlabel("cosine similarity of generations (dense vs pruned)")
    ax.set_title(title or "Semantic drift per prompt")
    return _finish(fig, save_path)


# ----------------------------------------------------------------------- benchmark comparison
def _benchmark_rows(data: Any) -> list[dict[str, Any]]:
    if hasattr(data, "rows"):
        data = data.rows
    if isinstance(data, PruningReport):
        data = data.evaluation
    if isinstance(data, Mapping):  # report.evaluation
        rows = []
        for key, v in data.items():
            if isinstance(v, Mapping):
                task, _, metric = str(key).rpartition("/")
                rows.append(
                    {
                        "task": v.get("task") or task or str(key),
                        "metric": v.get("metric") or metric or str(key),
                        "before": v.get("before"),
                        "after": v.get("after"),
                        "higher_is_better": v.get("higher_is_better"),
                    }
                )
        return rows
    return [dict(r) for r in data]


def plot_benchmark_comparison(
    data: Any,
    *,
    labels: tuple[str, str] = ("dense", "pruned"),
    save_path: str | os.PathLike[str] | None = None,
    title: str | None = None,
) -> Any:
    """Before/after bars per benchmark metric, one small panel each (metrics have different scales).

    Args:
        data: A :class:`~hf_prune.evaluation.evaluators.HolisticResult`, its ``rows``, a
            :class:`PruningReport` or its ``evaluation`` dict.
        labels: Names of the two models.
        save_path: Write the figure here when given.
        title: Figure title.

    Returns:
        The figure.

    Raises:
        ValueError: If no metric has a before or after value.
    """
    rows = [
        r
        for r in _benchmark_rows(data)
        if isinstance(r.get("before"), (int, float)) or isinstance(r.get("after"), (int, float))
    ]
    if not rows:
        raise ValueError("no benchmark results with before/after values to plot")
    sns = _sns()
    plt = _pyplot()
    n = len(rows)
    cols = min(n, 4)
    nrows = math.ceil(n / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(2.6 * cols + 0.4, 2.7 * nrows), squeeze=False)
    colors = sns.color_palette("deep", 4)
    for k, r in enumerate(rows):
        ax = axes[k // cols][k % cols]
        vals = [r.get("before"), r.get("after")]
        ys = [float(v) if isinstance(v, (int, float)) else np.nan for v in vals]
        ax.bar([0, 1], ys, color=[colors[0], colors[3]], width=0.6)
        for x, y in zip([0, 1], ys, strict=True):
            if not np.isnan(y):
                ax.text(x, y, f"{y:.3g}", ha="center", va="bottom", fontsize=8)
        ax.set_xticks([0, 1])
        ax.set_xticklabels(list(labels), fontsize=8)
        sub = r["metric"]
        if not np.isnan(ys[0]) and not np.isnan(ys[1]) and ys[0]:
            change = 100 * (ys[1] - ys[0]) / abs(ys[0])
            hib = r.get("higher_is_better")
            arrow = "" if hib is None else (" ↑ better" if hib else " ↓ better")
            sub += f" ({change:+.1f}%){arrow}"
        ax.set_title(f"{r['task']}\n{sub}", fontsize=9)
        finite = [y for y in ys if not np.isnan(y)]
        ax.set_ylim(0, max(finite) * 1.18 if finite and max(finite) > 0 else 1)
        ax.tick_params(axis="y", labelsize=7)
    for k in range(n, nrows * cols):
        axes[k // cols][k % cols].axis("off")
    fig.suptitle(title or "Benchmarks before / after pruning", fontsize=11)
    return _finish(fig, save_path)

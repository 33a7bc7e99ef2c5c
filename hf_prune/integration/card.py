"""Model cards: rendered from ``hub_cards/`` templates with ``huggingface_hub.ModelCard``.

The card has two audiences. The YAML header is for the Hub: ``library_name: hf_prune``, ``tags``
(method, model family, kind of pruning), ``pipeline_tag``, ``base_model`` (only a Hub repo id: a
local path would fail the Hub's validation), ``datasets`` (the calibration set, only when it is a
Hub dataset) and ``model-index`` (``report.evaluation``'s results of the pruned model).

``base_model_relation`` is deliberately left out. The Hub accepts only ``adapter``, ``merge``,
``quantized`` and ``finetune``; none describes pruning, and writing ``finetune`` would state
something false in machine-readable metadata. Without it the Hub infers the relation from the files
(a single ``base_model`` and full weights), which is the closest it can represent.

The body is for people: the method and its paper, the exact ``pruning_config.json``, the
calibration data, evaluation before/after, the structure, per-layer tables, layer-selection
assignments, the plots found in the folder, and a loading snippet that is correct for this
checkpoint (plain transformers unless ``config.json`` needs ``per_layer_config``).
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Iterable, Mapping
from importlib import resources
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData
from transformers import PreTrainedModel

from hf_prune.arch import get_arch
from hf_prune.config import PruningConfig
from hf_prune.report import LayerReport, PruningReport
from hf_prune.version import __version__

TEMPLATE = "model_card.md"

#: ``base_model_relation`` values the Hub accepts (its model-card spec); see the module docstring.
HUB_BASE_MODEL_RELATIONS: frozenset[str] = frozenset({"adapter", "merge", "quantized", "finetune"})

#: Score-summary keys shown as one "score mean" column; other keys (``alpha_peak`` ...) get a column each.
_SUMMARY_KEYS = ("min", "max", "mean", "std")
_MISSING = "—"
_MAX_LAYER_ROWS = 300

_PIPELINE_TAGS = {
    "AutoPrunedModelForCausalLM": "text-generation",
    "AutoPrunedModelForSequenceClassification": "text-classification",
    "AutoPrunedModelForImageClassification": "image-classification",
    "AutoPrunedModelForImageTextToText": "image-text-to-text",
}
_HF_AUTO = {
    "AutoPrunedModelForCausalLM": "AutoModelForCausalLM",
    "AutoPrunedModelForSequenceClassification": "AutoModelForSequenceClassification",
    "AutoPrunedModelForImageClassification": "AutoModelForImageClassification",
    "AutoPrunedModelForImageTextToText": "AutoModelForImageTextToText",
    "AutoPrunedModel": "AutoModel",
}
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.txt")
_PROCESSOR_FILES = ("preprocessor_config.json", "processor_config.json")


def _template_text(name: str = TEMPLATE) -> str:
    return resources.files("hf_prune.hub_cards").joinpath(name).read_text()


# ------------------------------------------------------------------------------------ formatting
def fmt_number(value: Any) -> str:
    """Format a number for a card table; a missing value is an em dash, never ``None``.

    Args:
        value: An int, float, string or ``None``.

    Returns:
        Integers with thousands separators, floats with 4 significant digits (6 for values near 1 that
        differ only in later digits would be lost anyway), anything else as ``str``.
    """
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return _MISSING
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if math.isinf(value):
            return "∞" if value > 0 else "-∞"
        if value != 0 and (abs(value) >= 1e6 or abs(value) < 1e-3):
            return f"{value:.4g}"
        return f"{value:.4f}" if abs(value) < 10 else f"{value:,.2f}"
    text = str(value)
    return text if text else _MISSING


def _cell(value: Any) -> str:
    # A pipe would end the cell; "<list of 8 texts>" would be read as an HTML tag and vanish.
    text = fmt_number(value).replace("|", "\\|").replace("\n", " ")
    return text.replace("<", "&lt;").replace(">", "&gt;")


def markdown_table(headers: list[str], rows: Iterable[Iterable[Any]], align: list[str] | None = None) -> str:
    """Render a Markdown table; returns ``""`` when there are no rows (callers then skip the section).

    Args:
        headers: Column titles.
        rows: Cell values (formatted with :func:`fmt_number`).
        align: Per column ``"l"`` or ``"r"`` (default: left).

    Returns:
        The table, or ``""``.
    """
    body = [[_cell(v) for v in row] for row in rows]
    if not body:
        return ""
    align = align or ["l"] * len(headers)
    sep = ["---:" if a == "r" else "---" for a in align]
    lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join(sep) + " |"]
    lines += ["| " + " | ".join(r) + " |" for r in body]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------- helpers
def _looks_like_repo_id(name: str) -> bool:
    if not name or os.path.exists(name) or name.startswith((".", "/", "~")) or "\\" in name:
        return False
    return re.fullmatch(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?", name) is not None and ".." not in name


def _plain_model(model: Any) -> PreTrainedModel:
    """The ``PreTrainedModel`` itself, or the one a wrapper holds as ``base_model`` (a ``PrunedModel``).

    The card reads plain data; it accepts the wrapper by what it holds, without importing it.
    """
    if isinstance(model, PreTrainedModel):
        return model
    inner = getattr(model, "base_model", None)
    if isinstance(inner, PreTrainedModel):
        return inner
    raise TypeError(
        f"model must be a transformers PreTrainedModel or a PrunedModel, got {type(model).__name__}."
    )


def auto_class_name(model: Any) -> str:
    """Return the ``AutoPrunedModel*`` class matching the model's head.

    Args:
        model: The pruned ``PreTrainedModel`` (or a ``PrunedModel``).

    Returns:
        The class name.
    """
    name = type(_plain_model(model)).__name__
    if name.endswith("ForCausalLM") or name.endswith("LMHeadModel"):
        return "AutoPrunedModelForCausalLM"
    if name.endswith("ForSequenceClassification"):
        return "AutoPrunedModelForSequenceClassification"
    if name.endswith("ForConditionalGeneration") and "Llava" in name:
        return "AutoPrunedModelForImageTextToText"
    if name.endswith("ForImageClassification"):
        return "AutoPrunedModelForImageClassification"
    return "AutoPrunedModel"


def needs_hf_prune_to_load(model: Any) -> bool:
    """Whether the saved ``config.json`` carries ``per_layer_config`` (plain transformers refuses it).

    Args:
        model: The pruned ``PreTrainedModel`` (or a ``PrunedModel``).

    Returns:
        ``True`` when only hf_prune can rebuild the structure.
    """
    from hf_prune.surgery.structure import config_updates

    # The same plan that writes config.json: per-layer overrides are exactly what becomes per_layer_config.
    return any(update["per_layer"] for update in config_updates(_plain_model(model)).values())


def load_snippet(
    pruned: Any,
    needs_hf_prune: bool,
    auto_class: str,
    repo: str = "REPO_OR_PATH",
    preprocessor: str | None = None,
) -> str:
    """Return Markdown that loads this checkpoint correctly.

    Args:
        pruned: The pruned model (unused; kept for callers that pass it).
        needs_hf_prune: Whether plain transformers cannot build the structure (``per_layer_config``).
        auto_class: Name of the matching ``AutoPrunedModel*`` class.
        repo: Repo id or path written in the snippet.
        preprocessor: ``"AutoTokenizer"`` / ``"AutoProcessor"`` when the folder ships one.

    Returns:
        Markdown with one or two code blocks.
    """
    hf_cls = _HF_AUTO.get(auto_class, "AutoModel")
    pre = ""
    pre_import = ""
    if preprocessor:
        pre_import = preprocessor
        pre = (
            f'\nprocessor = {preprocessor}.from_pretrained("{repo}")'
            if preprocessor == "AutoProcessor"
            else (f'\ntokenizer = {preprocessor}.from_pretrained("{repo}")')
        )
    if needs_hf_prune:
        if preprocessor:
            # AutoTokenizer would re-read config.json, which plain transformers cannot parse here.
            name = "processor" if preprocessor == "AutoProcessor" else "tokenizer"
            pre = f'\n{name} = {preprocessor}.from_pretrained("{repo}", config=model.config)'
        imports = f"from hf_prune import {auto_class}"
        if pre_import:
            imports += f"\nfrom transformers import {pre_import}"
        return (
            "Layers differ in width, which `config.json` records in transformers' `per_layer_config` "
            "schema; transformers cannot build such a model yet (it refuses with "
            "`AmbiguousGlobalPerLayerAttributeError`), so load it with hf_prune (`pip install hf_prune`):\n\n"
            f'```python\n{imports}\n\nmodel = {auto_class}.from_pretrained("{repo}"){pre}\n'
            "print(model.report.summary())\n```"
        )
    imports = f"from transformers import {hf_cls}" + (f", {pre_import}" if pre_import else "")
    return (
        "Plain transformers loads it; no hf_prune needed:\n\n"
        f'```python\n{imports}\n\nmodel = {hf_cls}.from_pretrained("{repo}"){pre}\n```\n\n'
        "With the pruning report attached (`pip install hf_prune`):\n\n"
        f'```python\nfrom hf_prune import {auto_class}\n\nmodel = {auto_class}.from_pretrained("{repo}")\n'
        "print(model.report.summary())\n```"
    )


def calibration_hub_dataset(calibration: Mapping[str, Any] | None) -> str | None:
    """Return the Hub dataset id behind a calibration description, if it is one.

    Args:
        calibration: ``PrunedModel.calibration`` (``CalibrationConfig.describe()``).

    Returns:
        The dataset id for the card's ``datasets`` metadata, or ``None`` (local file, in-memory texts).
    """
    if not calibration or not isinstance(calibration.get("dataset"), str):
        return None
    name = calibration["dataset"]
    if name.startswith("<"):  # "<list of 8 texts>"
        return None
    try:
        from hf_prune.calibration.data import HUB_DATASETS

        if name in HUB_DATASETS:
            return HUB_DATASETS.get(name).path
    except ImportError:  # pragma: no cover - calibration is part of the package
        pass
    return name if "/" in name and _looks_like_repo_id(name) else None


# -------------------------------------------------------------------------------- evaluation rows
def evaluation_entries(report: PruningReport) -> list[dict[str, Any]]:
    """Normalize ``report.evaluation`` into rows ``{name, task, metric, dataset, before, after, source}``.

    Accepted shapes per key: ``{"before": x, "after": y, ...}`` (optional ``task``, ``metric``,
    ``dataset``, ``source``, ``higher_is_better``) or a bare number (the pruned model's value).
    Keys ``"task/metric"`` (as :func:`hf_prune.evaluation.lm_eval.record_lm_eval` writes) are split.

    Args:
        report: The pruning report.

    Returns:
        One dict per metric that has at least one value.
    """
    rows = []
    for key, value in (report.evaluation or {}).items():
        entry = dict(value) if isinstance(value, Mapping) else {"after": value}
        before, after = entry.get("before"), entry.get("after")
        if not isinstance(before, (int, float)) or isinstance(before, bool):
            before = None
        if not isinstance(after, (int, float)) or isinstance(after, bool):
            after = None
        if before is None and after is None:
            continue
        task, _, metric = str(key).rpartition("/")
        rows.append(
            {
                "name": str(key),
                "task": entry.get("task") or task or None,
                "metric": entry.get("metric") or metric or str(key),
                "dataset": entry.get("dataset") or entry.get("task") or task or None,
                "before": before,
                "after": after,
                "source": entry.get("source"),
            }
        )
    return rows


def _change(before: float | None, after: float | None) -> str:
    if before is None or after is None:
        return _MISSING
    if before == 0:
        return f"{after - before:+.4g}"
    return f"{100.0 * (after - before) / abs(before):+.1f}%"


def eval_results(report: PruningReport, task_type: str) -> list[EvalResult]:
    """Turn the pruned model's results in ``report.evaluation`` into ``EvalResult`` for ``model-index``.

    Args:
        report: The pruning report.
        task_type: The Hub task id (``"text-generation"`` ...).

    Returns:
        One ``EvalResult`` per metric with an ``after`` value.
    """
    out = []
    for row in evaluation_entries(report):
        if row["after"] is None:
            continue
        dataset = str(row["dataset"] or "evaluation-text")
        out.append(
            EvalResult(
                task_type=task_type,
                dataset_type=dataset,
                dataset_name=dataset,
                metric_type=str(row["metric"]),
                metric_name=row["name"],
                metric_value=float(row["after"]),
            )
        )
    return out


# ------------------------------------------------------------------------------ per-layer tables
def _score_columns(rows: list[LayerReport]) -> tuple[bool, list[str]]:
    has_mean = any(r.score and "mean" in r.score for r in rows)
    extra: list[str] = []
    for r in rows:
        for k, v in (r.score or {}).items():
            if k not in _SUMMARY_KEYS and k not in extra and isinstance(v, (int, float)):
                extra.append(k)
    return has_mean, extra


def linear_layer_table(report: PruningReport, max_rows: int = _MAX_LAYER_ROWS) -> str:
    """Per-projection table (unstructured / N:M rows): requested ratio, measured sparsity, scores.

    Args:
        report: The pruning report.
        max_rows: Rows shown (the rest is counted in a last line).

    Returns:
        A Markdown table, or ``""`` without such rows.
    """
    rows = [r for r in report.layers if r.kind == "linear"]
    if not rows:
        return ""
    has_mean, extra = _score_columns(rows)
    headers = ["layer", "params", "ratio requested", "sparsity measured"]
    headers += ["score mean"] if has_mean else []
    headers += extra
    body = []
    for r in rows[:max_rows]:
        cells: list[Any] = [f"`{r.name}`", r.params_before, r.ratio_requested, r.sparsity_measured]
        if has_mean:
            cells.append((r.score or {}).get("mean"))
        cells += [(r.score or {}).get(k) for k in extra]
        body.append(cells)
    table = markdown_table(headers, body, ["l"] + ["r"] * (len(headers) - 1))
    if len(rows) > max_rows:
        table += f"\n\n{len(rows) - max_rows} more rows are in `pruning_config.json`."
    return table


def _kept(r: LayerReport) -> str:
    kept = r.kept_units or {}
    parts = []
    if "neurons" in kept:
        parts.append(f"{kept['neurons']} neurons")
    if "heads" in kept:
        heads = kept["heads"]
        text = f"heads {heads}" if isinstance(heads, list) else f"{heads} heads"
        if "kv_heads" in kept:
            text += f" ({kept['kv_heads']} KV)"
        parts.append(text)
    parts += [f"{k}: {v}" for k, v in kept.items() if k not in ("neurons", "heads", "kv_heads")]
    return "; ".join(parts) or _MISSING


def structural_layer_table(report: PruningReport, max_rows: int = _MAX_LAYER_ROWS) -> str:
    """Per-unit table of structural rows (MLP neurons, attention heads, blocks, modules).

    Args:
        report: The pruning report.
        max_rows: Rows shown.

    Returns:
        A Markdown table, or ``""`` without such rows.
    """
    rows = [r for r in report.layers if r.kind != "linear"]
    if not rows:
        return ""
    has_mean, extra = _score_columns(rows)
    has_ratio = any(r.ratio_requested is not None for r in rows)
    headers = ["unit", "kind", "params before", "params after", "kept"]
    headers += ["ratio requested"] if has_ratio else []
    headers += ["score mean"] if has_mean else []
    headers += extra
    body = []
    for r in rows[:max_rows]:
        cells: list[Any] = [f"`{r.name}`", r.kind, r.params_before, r.params_after, _kept(r)]
        if has_ratio:
            cells.append(r.ratio_requested)
        if has_mean:
            cells.append((r.score or {}).get("mean"))
        cells += [(r.score or {}).get(k) for k in extra]
        body.append(cells)
    align = ["l", "l", "r", "r", "l"] + ["r"] * (len(headers) - 5)
    table = markdown_table(headers, body, align)
    if len(rows) > max_rows:
        table += f"\n\n{len(rows) - max_rows} more rows are in `pruning_config.json`."
    return table


def assignments_table(assignments: list[Any] | None) -> str:
    """Table of layer-selection assignments (one row per verifier).

    Accepts MV-BCS ``SelectionResult.to_dict()["verifiers"]`` entries, ``[start, end]`` pairs or
    ``None`` (an empty run), as stored in ``report.assignments``.

    Args:
        assignments: ``report.assignments``.

    Returns:
        A Markdown table, or ``""``.
    """
    if not assignments:
        return ""
    rows = []
    for i, a in enumerate(assignments):
        if isinstance(a, Mapping):
            run = a.get("assignment")
            layers = "none" if not run else f"{run[0]} to {run[1]}"
            rows.append(
                [
                    a.get("index", i),
                    layers,
                    a.get("num_layers"),
                    a.get("budget", "unlimited"),
                    a.get("total_cost"),
                    a.get("benefit"),
                ]
            )
        elif isinstance(a, (list, tuple)) and len(a) == 2:
            rows.append([i, f"{a[0]} to {a[1]}", int(a[1]) - int(a[0]) + 1, None, None, None])
        elif a is None:
            rows.append([i, "none", 0, None, None, None])
        else:
            rows.append([i, str(a), None, None, None, None])
    # Budget None in MV-BCS JSON means unlimited.
    rows = [
        [*r[:3], "unlimited" if r[3] is None and isinstance(assignments[0], Mapping) else r[3], *r[4:]]
        for r in rows
    ]
    cols = [0, 1, 2] + [j for j in (3, 4, 5) if any(r[j] not in (None, _MISSING) for r in rows)]
    headers = ["verifier", "layers (inclusive)", "num layers", "budget", "cost", "benefit"]
    return markdown_table(
        [headers[j] for j in cols],
        [[r[j] for j in cols] for r in rows],
        ["r", "l", "r", "r", "r", "r"][: len(cols)],
    )


def structure_table(structure: Mapping[str, Any], removed: Mapping[str, list[int]]) -> str:
    """Table of the stacks after pruning: blocks, MLP widths, head counts.

    Args:
        structure: ``record["structure"]``.
        removed: ``report.removed_layers``.

    Returns:
        A Markdown table, or ``""``.
    """

    def uniform(values: list[Any]) -> str:
        if not values:
            return _MISSING
        return str(values[0]) if len(set(values)) == 1 else ", ".join(str(v) for v in values)

    rows = []
    for stack, rec in structure.items():
        layers = rec.get("layers") or []
        n = rec.get("num_layers", len(layers))
        n_removed = len(removed.get(stack, []))
        blocks = f"{n + n_removed} → {n}" if n_removed else str(n)
        rows.append(
            [
                stack,
                blocks,
                uniform([r.get("intermediate_size") for r in layers]),
                uniform([r.get("num_heads") for r in layers]),
                uniform([r.get("num_kv_heads") for r in layers]),
            ]
        )
    return markdown_table(
        ["stack", "blocks", "MLP width", "query heads", "KV heads"], rows, ["l", "r", "l", "l", "l"]
    )


def depth_scores_table(report: PruningReport) -> str:
    """Table of every block's depth-pruning score (original numbering) and which blocks were removed.

    The iterative pruner gets one score column per round.

    Args:
        report: The pruning report (``report.extra["depth"]`` written by the depth methods).

    Returns:
        A Markdown table, or ``""`` when no depth method ran.
    """
    depth = (report.extra or {}).get("depth")
    if not isinstance(depth, Mapping) or not depth.get("scores"):
        return ""
    rounds = depth.get("rounds") or []
    blocks = sorted({int(k) for r in rounds for k in r.get("scores", {})} | {int(k) for k in depth["scores"]})
    removed = set(depth.get("removed") or [])
    headers = ["block", "removed"]
    if rounds:
        headers += [f"round {r.get('round', i + 1)} score" for i, r in enumerate(rounds)]
    else:
        headers += ["score"]
    body = []
    for b in blocks:
        cells: list[Any] = [b, "yes" if b in removed else ""]
        if rounds:
            cells += [r.get("scores", {}).get(str(b)) for r in rounds]
        else:
            cells.append(depth["scores"].get(str(b)))
        body.append(cells)
    table = markdown_table(headers, body, ["r", "l"] + ["r"] * (len(headers) - 2))
    strategy = depth.get("criterion") or depth.get("strategy")
    note = f"Scores: `{strategy}` (lower = less important)"
    selection = depth.get("selection") or {}
    if selection:
        note += "; selection: " + ", ".join(f"{k}={v}" for k, v in selection.items())
    if depth.get("heal_steps"):
        note += f"; healed {depth['heal_steps']} LoRA steps after each removal"
    return table + "\n\n" + note + "."


def pruning_trees_table(report: PruningReport) -> str:
    """The removed pruning trees (root, kind, parameters, importance) in removal order, with the totals.

    Args:
        report: The pruning report (``report.extra["pruning_trees"]`` written by ``PruningTreeConfig``).

    Returns:
        Markdown (a table and a note), or ``""`` when no pruning trees were removed.
    """
    trees = (report.extra or {}).get("pruning_trees")
    if not isinstance(trees, Mapping) or not trees.get("removed"):
        return ""
    # "removed" lists tree keys in removal order; the ranking rows carry their details.
    rows = {r.get("key"): r for r in trees.get("ranking") or [] if isinstance(r, Mapping)}
    removed = [rows.get(k, {"root": k}) if isinstance(k, str) else k for k in trees["removed"]]
    body = [[i + 1, f"`{t.get('root')}`", t.get("kind"), t.get("params"), t.get("importance")]
            for i, t in enumerate(removed)]  # fmt: skip
    table = markdown_table(["order", "root", "kind", "params", "importance"], body, ["r", "l", "l", "r", "r"])
    note = (
        f"{len(trees['removed'])} trees removed ({_cell(trees.get('removed_fraction'))} of the blocks' "
        f"parameters; target {trees.get('target')} of {trees.get('target_kind')}), ranked by "
        f"`{trees.get('importance')}` importance out of {len(trees.get('ranking') or [])} candidate "
        f"trees; the full ranking is in `pruning_config.json`."
    )
    return table + "\n\n" + note


def training_section(report: PruningReport) -> str:
    """Training-time pruning (``PruningCallback``) and healing (``hf_prune.heal``) as card Markdown.

    Args:
        report: The pruning report (``report.extra["training"]`` / ``report.extra["healing"]``).

    Returns:
        Markdown (tables and notes), or ``""`` when the model was neither trained nor healed.
    """
    extra = report.extra or {}
    parts: list[str] = []
    training = extra.get("training")
    if isinstance(training, Mapping):
        t = training
        span = f"steps {t.get('start_step')} to {t.get('end_step')}, every {t.get('frequency')}"
        schedule = f"{t.get('schedule')} ({span})"
        rows = [
            ["method", f"`{t.get('method')}`"],
            ["schedule", schedule],
            ["target / final sparsity", f"{t.get('target_sparsity')} / {t.get('final_sparsity')}"],
            ["optimizer steps", t.get("optimizer_steps")],
            ["calibration", t.get("calibration")],
        ]
        parts.append("Pruned while training with `hf_prune.PruningCallback` (`transformers.Trainer`).")
        parts.append(markdown_table(["field", "value"], rows, ["l", "l"]))
        history = t.get("history") or []
        if history:
            body = [[h.get("step"), h.get("scheduled"), h.get("measured")] for h in history]
            heads = ["step", "scheduled sparsity", "measured sparsity"]
            parts.append(markdown_table(heads, body, ["r", "r", "r"]))
    healing = extra.get("healing")
    if isinstance(healing, Mapping):
        h = healing
        lora = h.get("lora") or {}
        how = f"LoRA r={lora.get('r')}" if h.get("method") == "lora" else "full fine-tune"
        masked = " (adapters merged through the pruning masks)" if lora.get("masked_delta") else ""
        loss = f"{_cell(h.get('loss_start'))} -> {_cell(h.get('loss_end'))}"
        parts.append(
            f"Healed with `hf_prune.heal`: {how}, {h.get('steps')} steps, lr {h.get('lr')}, loss {loss}; "
            f"merged: {h.get('merged')}{masked}."
        )
    return "\n\n".join(parts)


def fisher_mask_table(report: PruningReport) -> str:
    """Per-layer kept heads and neurons of the Fisher mask search, with its budget line.

    Args:
        report: The pruning report (``report.extra["fisher"]`` written by ``FisherMaskConfig``).

    Returns:
        Markdown (a table and a paragraph), or ``""`` when the Fisher mask search did not run.
    """
    fisher = (report.extra or {}).get("fisher")
    if not isinstance(fisher, Mapping) or not isinstance(fisher.get("kept_heads"), Mapping):
        return ""
    kept_h, kept_n = fisher["kept_heads"], fisher.get("kept_neurons") or {}
    n_h, n_n = fisher.get("head_units_per_layer"), fisher.get("neurons_per_layer")
    unit = "KV groups" if fisher.get("head_unit") == "kv_group" else "heads"
    emptied: dict[str, list[str]] = {}
    for e in fisher.get("emptied") or []:
        if isinstance(e, Mapping):
            emptied.setdefault(str(e.get("layer")), []).append(f"{e.get('kind')}: {e.get('how')}")
    layers = sorted({*kept_h, *kept_n}, key=lambda k: (0, int(k)) if str(k).isdigit() else (1, str(k)))
    body = [
        [
            layer,
            _of(kept_h.get(layer), n_h),
            _of(kept_n.get(layer), n_n),
            "; ".join(emptied.get(str(layer), [])),
        ]
        for layer in layers
    ]
    show_note = any(row[3] for row in body)
    headers = ["block", f"{unit} kept", "neurons kept"] + (["emptied"] if show_note else [])
    table = markdown_table(
        headers, [row if show_note else row[:3] for row in body], ["r", "r", "r", "l"][: len(headers)]
    )
    metric = fisher.get("metric", "mac")
    what = (
        "MACs of all heads and neurons" if metric == "mac" else "latency of all attention and MLP sub-blocks"
    )
    line = f"Budget: {what} ≤ {fmt_number(fisher.get('constraint'))} x dense"
    if metric == "mac":
        line += (
            f" ({fmt_number(fisher.get('dense_mac'))} MACs per sequence of {fisher.get('seq_len')} tokens)"
        )
    else:
        line += f" ({fmt_number(fisher.get('dense'))} ms from the latency LUT)"
    line += f"; achieved {fmt_number(fisher.get('achieved_fraction'))} of dense"
    if fisher.get("as_built_fraction") not in (None, fisher.get("achieved_fraction")):
        line += f" ({fmt_number(fisher.get('as_built_fraction'))} as built, counting kept placeholder units)"
    if metric != "mac" and fisher.get("mac_fraction") is not None:
        line += f", MACs {fmt_number(fisher.get('mac_fraction'))} of dense"
    line += "."
    parts = [line]
    kept = fisher.get("importance_kept_fraction")
    if isinstance(kept, (int, float)) and not isinstance(kept, bool):
        parts.append(f"Fisher information kept: {100 * kept:.1f}% of the dense total.")
    post = [f"rearrangement {'on' if fisher.get('rearrange') else 'off'}"]
    if fisher.get("rescale"):
        stop = fisher.get("rescale_stopped_at")
        post.append(
            "least-squares rescaling on" + (f" (stopped at block {stop})" if stop is not None else "")
        )
    else:
        post.append("rescaling off")
    parts.append(", ".join(post).capitalize() + ".")
    samples = fisher.get("samples")
    if samples is not None:
        text = f"Mask gradients from {samples} calibration samples ({fisher.get('task')} loss"
        text += f"; count from {fisher['samples_from']})" if fisher.get("samples_from") else ")"
        if fisher.get("seconds") is not None:
            text += f"; {fmt_number(float(fisher['seconds']))} s in total"
        parts.append(text + ".")
    if emptied:
        parts.append(
            "Emptied sub-blocks contribute only their output bias; those with a kept placeholder unit are "
            "computed, not skipped."
        )
    return table + "\n\n" + " ".join(parts)


def _of(value: Any, total: Any) -> str:
    if value is None:
        return _MISSING
    return f"{value} / {total}" if isinstance(total, int) else str(value)


def _kinds(report: PruningReport) -> list[str]:
    kinds = []
    if any(r.kind == "linear" for r in report.layers):
        kinds.append("unstructured")
    if any(r.kind in ("mlp", "attention") for r in report.layers):
        kinds.append("structured")
    if report.removed_layers and any(report.removed_layers.values()):
        kinds.append("depth")
    if any(r.kind.startswith("tree:") for r in report.layers):
        kinds.append("fine-grained depth (pruning trees)")
    return kinds


def _png_files(folder: Path | None) -> list[str]:
    if folder is None or not Path(folder).is_dir():
        return []
    return sorted(p.name for p in Path(folder).glob("*.png") if p.is_file() and p.stat().st_size > 0)


def _preprocessor(folder: Path | None, auto_class: str) -> str | None:
    if folder is None:
        return None
    if auto_class == "AutoPrunedModelForImageTextToText" and any(
        (Path(folder) / f).is_file() for f in _PROCESSOR_FILES
    ):
        return "AutoProcessor"
    if any((Path(folder) / f).is_file() for f in _TOKENIZER_FILES):
        return "AutoTokenizer"
    if any((Path(folder) / f).is_file() for f in _PROCESSOR_FILES):
        return "AutoImageProcessor" if "Image" in auto_class else "AutoProcessor"
    return None


# ----------------------------------------------------------------------------------- the card
def render_card(
    model: Any,
    record: dict[str, Any],
    *,
    folder: str | os.PathLike[str] | None = None,
    repo_id: str | None = None,
    report: PruningReport | None = None,
    pruning_config: PruningConfig | None = None,
) -> ModelCard:
    """Render the model card of a pruned model from plain data.

    Args:
        model: The pruned ``PreTrainedModel``, or a ``PrunedModel`` (then its ``report``,
            ``pruning_config``, ``calibration`` and ``base_model_name`` are used where the record lacks
            them).
        record: The ``pruning_config.json`` content (config, structure, report, calibration).
        folder: The checkpoint folder, when known: its PNG plots are embedded and the loading
            snippet includes the tokenizer / processor it ships.
        repo_id: Hub repo id written in the loading snippet (default ``REPO_OR_PATH``).
        report: The report (default: the wrapper's, else the record's ``"report"``).
        pruning_config: The method's config, for the paper it follows (default: the wrapper's, else
            read from the record).

    Returns:
        A ``huggingface_hub.ModelCard`` (call ``.save(path)``).
    """
    plain = _plain_model(model)
    wrapper = None if model is plain else model
    if report is None:
        report = getattr(wrapper, "report", None)
    if report is None:
        report = PruningReport.from_dict(record.get("report") or {"method": record.get("method", "custom")})
    if pruning_config is None:
        pruning_config = getattr(wrapper, "pruning_config", None)
        if pruning_config is None and record.get("method") not in (None, "custom"):
            try:
                pruning_config = PruningConfig.from_dict(record)
            except (ValueError, TypeError, KeyError):
                pruning_config = None  # a foreign / older record: the card omits the paper
    method = str(record.get("method") or report.method or "custom")
    family = get_arch(plain).family
    base = str(getattr(wrapper, "base_model_name", "") or "") or str(record.get("base_model") or "") or None
    hub_base = base if base and _looks_like_repo_id(base) else None
    calib = record.get("calibration") or getattr(wrapper, "calibration", None) or None
    hub_dataset = calibration_hub_dataset(calib)
    auto = auto_class_name(plain)
    pipeline_tag = _PIPELINE_TAGS.get(auto)
    folder_path = Path(folder) if folder is not None else None
    kinds = _kinds(report)

    if repo_id:
        model_name = repo_id.split("/")[-1]
    else:
        stem = Path(base).name if base else family
        model_name = f"{stem}-{method}-pruned"
    results = eval_results(report, pipeline_tag or "other")
    # "pruning:<method>" rather than a bare "magnitude" / "custom", which would be ambiguous on the Hub.
    tags = ["hf_prune", "pruned", f"pruning:{method}", family, *[f"{k}-pruning" for k in kinds]]
    card_data = ModelCardData(
        base_model=hub_base,
        library_name="hf_prune",
        tags=list(dict.fromkeys(tags)),
        datasets=[hub_dataset] if hub_dataset else None,
        pipeline_tag=pipeline_tag,
        model_name=model_name if results else None,
        eval_results=results or None,
    )

    # Summary rows.
    summary_rows: list[list[Any]] = [
        [
            "parameters",
            report.params_before,
            report.params_after,
            _change(report.params_before, report.params_after),
        ],
        [
            "non-zero parameters",
            report.nonzero_before,
            report.nonzero_after,
            _change(report.nonzero_before, report.nonzero_after),
        ],
    ]
    if "unstructured" in kinds:
        summary_rows.append(["sparsity of pruned projections", 0.0, report.sparsity, _MISSING])
    raw_structure = record.get("structure") or {}
    # pruning_config.json is written with sorted keys; show stacks in the model's own order.
    order = [spec.name for spec in get_arch(plain).stacks]
    structure = {k: raw_structure[k] for k in [*order, *sorted(raw_structure)] if k in raw_structure}
    for stack, idx in sorted((report.removed_layers or {}).items()):
        if idx and stack in structure:
            n = structure[stack].get("num_layers")
            if isinstance(n, int):
                summary_rows.append([f"blocks in `{stack}`", n + len(idx), n, f"-{len(idx)}"])
    summary = markdown_table(["", "before", "after", "change"], summary_rows, ["l", "r", "r", "r"])

    eval_rows = evaluation_entries(report)
    evaluation = markdown_table(
        ["metric", "task / data", "before (dense)", "after (pruned)", "change"],
        [
            [r["metric"], r["dataset"] or _MISSING, r["before"], r["after"], _change(r["before"], r["after"])]
            for r in eval_rows
        ],
        ["l", "l", "r", "r", "r"],
    )
    sources = sorted({str(r["source"]) for r in eval_rows if r["source"]})
    has_ppl = any(str(r["metric"]) == "perplexity" for r in eval_rows)
    from hf_prune.evaluation.perplexity import PROTOCOL_SUMMARY

    config_json = json.dumps(
        {k: v for k, v in record.items() if k not in ("structure", "report", "calibration", "base_model")},
        indent=2,
        sort_keys=True,
    )
    # A fixed order: pruning_config.json stores the keys sorted, the in-memory dict does not.
    calib_keys = (
        "dataset",
        "nsamples",
        "seqlen",
        "seed",
        "split",
        "batch_size",
        "text_column",
        "image_column",
        "text_pair_column",
        "label_column",
    )
    calibration_rows = [[k, (calib or {})[k]] for k in calib_keys if (calib or {}).get(k) is not None]
    cfg = pruning_config
    paper = str(getattr(cfg, "paper", "") or "") if cfg is not None else ""
    allocation = record.get("allocation")
    allocation_text = ""
    if isinstance(allocation, Mapping) and allocation:
        allocation_text = ", ".join(f"{k}={v}" for k, v in allocation.items() if v is not None)
    elif isinstance(allocation, str) and allocation:
        allocation_text = allocation

    base_display = (
        f"[{hub_base}](https://huggingface.co/{hub_base})"
        if hub_base
        else (f"`{Path(base).name}` (a local model)" if base else f"a {family} model")
    )
    needs = needs_hf_prune_to_load(plain)
    snippet = load_snippet(
        plain, needs, auto, repo=repo_id or "REPO_OR_PATH", preprocessor=_preprocessor(folder_path, auto)
    )
    pct_removed = 100.0 * (1 - report.params_after / report.params_before) if report.params_before else 0.0
    effects = []
    if report.params_after != report.params_before:
        effects.append(f"{pct_removed:.1f}% of its parameters were removed")
    if "unstructured" in kinds:
        n_lin = sum(1 for r in report.layers if r.kind == "linear")
        effects.append(
            f"its {n_lin} pruned projections are {100 * report.sparsity:.1f}% zeros (stored densely)"
        )
    headline = " and ".join(effects) or "no parameters were removed yet"
    method_text = f"**{method}**" + (f", following {paper}" if paper else "")
    if method == "custom":
        description = record.get("description")
        method_text = (
            "**custom**: structural changes applied directly with `PrunedModel.prune_neurons`, "
            "`prune_heads` and `remove_layers`" + (f" ({description})" if description else "")
        )
    speed_rows, speed_note = speed_section(report)
    card = ModelCard.from_template(
        card_data,
        template_str=_template_text(),
        model_name=model_name,
        base_model_display=base_display,
        family=family,
        method=method,
        method_text=method_text,
        allocation=allocation_text,
        kinds=", ".join(kinds) or "no change yet",
        headline=headline,
        data_free=method != "custom",
        summary_table=summary,
        config_json=config_json,
        calibration_table=markdown_table(["field", "value"], calibration_rows),
        evaluation_table=evaluation,
        evaluation_sources=", ".join(sources),
        perplexity_protocol=PROTOCOL_SUMMARY if has_ppl else "",
        speed_table=speed_rows,
        speed_note=speed_note,
        removed_layers=[(s, i) for s, i in sorted((report.removed_layers or {}).items()) if i],
        structure_table=structure_table(structure, report.removed_layers or {}),
        depth_table=depth_scores_table(report),
        fisher_table=fisher_mask_table(report),
        training_section=training_section(report),
        trees_table=pruning_trees_table(report),
        linear_table=linear_layer_table(report),
        structural_table=structural_layer_table(report),
        assignments_table=assignments_table(report.assignments),
        plots=_png_files(folder_path),
        load_snippet=snippet,
        needs_hf_prune=needs,
        version=__version__,
    )
    # Collapse the blank lines left by skipped template sections.
    card.text = re.sub(r"\n{3,}", "\n\n", card.text).rstrip() + "\n"
    return card


def speed_section(report: PruningReport) -> tuple[str, str]:
    """Render ``report.speed`` (from :func:`hf_prune.evaluation.compare_latency`) for the card.

    Args:
        report: The pruning report.

    Returns:
        The Markdown table and a sentence on how it was measured; both empty when nothing was measured.
    """
    speed = report.speed or {}
    if "pruned_ms" not in speed:
        return "", ""
    compared = "baseline_ms" in speed and "speedup" in speed
    shape = f"{speed.get('batch_size', '?')} x {speed.get('seqlen', '?')} tokens"
    rows = [
        [
            f"forward latency, {shape}",
            f"{speed['baseline_ms']:.2f} ms" if compared else _MISSING,
            f"{speed['pruned_ms']:.2f} ms",
            f"{speed['speedup']:.2f}x" if compared else _MISSING,
        ]
    ]
    if "baseline_tokens_per_s" in speed:
        rows.append(
            [
                "tokens / s",
                f"{speed['baseline_tokens_per_s']:,.0f}",
                f"{speed['pruned_tokens_per_s']:,.0f}",
                f"{speed['pruned_tokens_per_s'] / speed['baseline_tokens_per_s']:.2f}x",
            ]
        )
    if "ideal_speedup" in speed:
        rows.append(
            [
                "forward FLOPs (ideal speedup)",
                f"{speed['baseline_flops']:,}",
                f"{speed['pruned_flops']:,}",
                f"{speed['ideal_speedup']:.2f}x",
            ]
        )
    onnx = (report.extra or {}).get("onnx_speed")
    if isinstance(onnx, Mapping) and {"baseline_ms", "pruned_ms", "speedup"} <= set(onnx):
        # Written by the serving_formats benchmark (hf_prune.integration.export.onnx.compare_onnx_latency).
        rows.append(
            [
                f"forward latency, ONNX Runtime {onnx.get('onnxruntime', '')}".rstrip(),
                f"{onnx['baseline_ms']:.2f} ms",
                f"{onnx['pruned_ms']:.2f} ms",
                f"{onnx['speedup']:.2f}x",
            ]
        )
    table = markdown_table(["", "dense", "pruned", "speedup"], rows, ["l", "r", "r", "r"])
    runs = "per model, dense and pruned interleaved" if compared else "(no dense baseline measured)"
    note = (
        f"Measured on {speed.get('device', '?')} ({speed.get('cpu') or 'unknown CPU'}, "
        f"threads: {speed.get('threads', '?')}, torch {speed.get('torch', '?')}): median of "
        f"{speed.get('repeats', '?')} full forward passes {runs}."
    )
    return table, note


def validate_card_metadata(card: ModelCard | str | os.PathLike[str]) -> dict[str, Any]:
    """Check a card's YAML header locally, as far as the Hub's rules are known offline.

    Parses the header with ``huggingface_hub`` (``model-index`` must parse into ``EvalResult``), and
    checks ``library_name``, that ``base_model`` entries are Hub repo ids, that
    ``base_model_relation`` (if any) is a value the Hub accepts, and that no value is empty.

    Args:
        card: A ``ModelCard``, its text, or the path of a ``README.md``.

    Returns:
        The metadata as a dict.

    Raises:
        ValueError: On any violation (the message names the field).
    """
    if isinstance(card, ModelCard):
        text = str(card)
    elif isinstance(card, os.PathLike) or (
        isinstance(card, str) and "\n" not in card and Path(card).is_file()
    ):
        text = Path(card).read_text(encoding="utf-8")
    else:
        text = str(card)
    try:
        parsed = ModelCard(text, ignore_metadata_errors=False)
    except Exception as err:  # huggingface_hub raises ValueError / yaml errors
        raise ValueError(f"model card metadata does not parse: {err}") from err
    data = parsed.data.to_dict()
    if not data:
        raise ValueError("model card has no YAML metadata header")
    if data.get("library_name") != "hf_prune":
        raise ValueError(f"library_name must be 'hf_prune', got {data.get('library_name')!r}")
    bases = data.get("base_model")
    for b in [bases] if isinstance(bases, str) else (bases or []):
        if not isinstance(b, str) or not _looks_like_repo_id(b):
            raise ValueError(f"base_model must be a Hub repo id, got {b!r}")
    relation = data.get("base_model_relation")
    if relation is not None and relation not in HUB_BASE_MODEL_RELATIONS:
        raise ValueError(
            f"base_model_relation={relation!r} is not accepted by the Hub; use one of "
            f"{sorted(HUB_BASE_MODEL_RELATIONS)} or leave it out"
        )
    if relation is not None and not bases:
        raise ValueError("base_model_relation needs base_model")
    for key, value in data.items():
        if value is None or value == [] or value == "":
            raise ValueError(f"metadata field {key!r} is empty")
    if "model-index" in data and not parsed.data.eval_results:
        raise ValueError("model-index is present but holds no results")
    return data


def write_card(
    folder: str | os.PathLike[str],
    *,
    repo_id: str | None = None,
    pruned: Any = None,
) -> Path:
    """Re-render ``README.md`` of a saved checkpoint folder (plots in the folder are embedded).

    Args:
        folder: An hf_prune checkpoint folder.
        repo_id: Hub repo id for the loading snippet.
        pruned: The loaded model (a ``PrunedModel`` or ``PreTrainedModel``), if already in memory;
            otherwise it is loaded from ``folder``.

    Returns:
        The path of the written ``README.md``.

    Raises:
        FileNotFoundError: If the folder is not an hf_prune checkpoint.
    """
    from hf_prune.config import CONFIG_NAME, read_json

    path = Path(folder).expanduser()
    if not (path / CONFIG_NAME).is_file():
        raise FileNotFoundError(f"{str(path)!r} is not an hf_prune checkpoint folder (no {CONFIG_NAME}).")
    record = read_json(path / CONFIG_NAME, what="pruning config")
    if pruned is None:
        from hf_prune.integration.checkpoint import load_checkpoint_auto

        loaded = load_checkpoint_auto(path)
        card = render_card(
            loaded.model, record, folder=path, repo_id=repo_id, pruning_config=loaded.pruning_config
        )
    else:
        card = render_card(pruned, record, folder=path, repo_id=repo_id)
    validate_card_metadata(card)
    out = path / "README.md"
    card.save(out)
    return out

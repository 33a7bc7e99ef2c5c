"""Model cards: rendered from ``hub_cards/`` templates with ``huggingface_hub.ModelCard``."""

from __future__ import annotations

import json
import re
from importlib import resources
from typing import Any

from huggingface_hub import ModelCard, ModelCardData

from hf_prune.arch import get_arch
from hf_prune.integration.pruned_model import PrunedModel
from hf_prune.version import __version__

TEMPLATE = "model_card.md"


def _template_text(name: str = TEMPLATE) -> str:
    return resources.files("hf_prune.hub_cards").joinpath(name).read_text()


def _uniform(values: list[int]) -> str:
    return str(values[0]) if len(set(values)) == 1 else ", ".join(str(v) for v in values)


def load_snippet(pruned: PrunedModel, needs_hf_prune: bool, auto_class: str) -> str:
    """Return a Markdown code block that loads this checkpoint correctly.

    Args:
        pruned: The pruned model.
        needs_hf_prune: Whether plain transformers cannot build the structure (``per_layer_config``).
        auto_class: Name of the matching transformers auto class.
    """
    hf_cls = auto_class.replace("AutoPrunedModel", "AutoModel")
    if needs_hf_prune:
        return (
            "Layers differ in width, which transformers records in `per_layer_config` but cannot build, "
            "so load it with hf_prune:\n\n```python\n"
            f'from hf_prune import {auto_class}\n\nmodel = {auto_class}.from_pretrained("REPO_OR_PATH")\n```'
        )
    return (
        "Plain transformers loads it (no hf_prune needed):\n\n```python\n"
        f'from transformers import {hf_cls}\n\nmodel = {hf_cls}.from_pretrained("REPO_OR_PATH")\n```\n\n'
        f"or, with the pruning report attached:\n\n```python\nfrom hf_prune import {auto_class}\n\n"
        f'model = {auto_class}.from_pretrained("REPO_OR_PATH")\nprint(model.report)\n```'
    )


def auto_class_name(pruned: PrunedModel) -> str:
    """Return the ``AutoPrunedModel*`` class matching the wrapped model's head.

    Args:
        pruned: The pruned model.
    """
    name = type(pruned.base_model).__name__
    if name.endswith("ForCausalLM") or name.endswith("LMHeadModel"):
        return "AutoPrunedModelForCausalLM"
    if name.endswith("ForSequenceClassification"):
        return "AutoPrunedModelForSequenceClassification"
    if name.endswith("ForConditionalGeneration") and "Llava" in name:
        return "AutoPrunedModelForImageTextToText"
    if name.endswith("ForImageClassification"):
        return "AutoPrunedModelForImageClassification"
    return "AutoPrunedModel"


def render_card(pruned: PrunedModel, record: dict[str, Any]) -> ModelCard:
    """Render the model card of a pruned model.

    Args:
        pruned: The pruned model.
        record: The ``pruning_config.json`` content (config, structure, report).

    Returns:
        A ``huggingface_hub.ModelCard`` (call ``.save(path)``).
    """
    report = pruned.report
    method = record.get("method", "custom")
    family = get_arch(pruned.base_model).family
    base = pruned.base_model_name or None
    # Only a Hub repo id belongs in `base_model` metadata; a local path would fail the Hub's validation.
    hub_base = base if base and _looks_like_repo_id(base) else None
    calib = record.get("calibration") or None
    datasets = (
        [calib["dataset"]]
        if calib and isinstance(calib.get("dataset"), str) and "<" not in calib["dataset"]
        else None
    )
    card_data = ModelCardData(
        base_model=hub_base,
        library_name="hf_prune",
        tags=["hf_prune", "pruned", f"pruning:{method}", family],
        datasets=datasets,
        pipeline_tag=None,
    )
    structure = record.get("structure", {})
    structure_rows = []
    needs_hf_prune = False
    for stack, rec in structure.items():
        rows = rec["layers"]
        widths = [r["intermediate_size"] for r in rows]
        heads = [r["num_heads"] for r in rows]
        kvs = [r["num_kv_heads"] for r in rows]
        structure_rows.append((stack, rec["num_layers"], _uniform(widths), _uniform(heads), _uniform(kvs)))
    needs_hf_prune = '"per_layer_config"' in json.dumps(pruned.base_model.config.to_dict()) or _has_overrides(
        pruned
    )
    summary_rows = []
    if any(r.kind == "linear" for r in report.layers):
        summary_rows.append(("sparsity of pruned layers", "0.0000", f"{report.sparsity:.4f}"))
    for metric, values in (report.evaluation or {}).items():
        if isinstance(values, dict):
            summary_rows.append(
                (metric, values.get("before", "not measured"), values.get("after", "not measured"))
            )
    config_json = json.dumps(
        {k: v for k, v in record.items() if k not in ("structure", "report", "calibration", "base_model")},
        indent=2,
        sort_keys=True,
    )
    auto = auto_class_name(pruned)
    cfg = pruned.pruning_config
    card = ModelCard.from_template(
        card_data,
        template_str=_template_text(),
        model_name=f"{base.split('/')[-1] if base else family}-{method}-pruned",
        base_model_display=base or f"a {family} model",
        method=method,
        paper=getattr(cfg, "paper", "") if cfg else "",
        params_before=f"{report.params_before:,}",
        params_after=f"{report.params_after:,}",
        nonzero_before=f"{report.nonzero_before:,}",
        nonzero_after=f"{report.nonzero_after:,}",
        summary_rows=summary_rows,
        config_json=config_json,
        calibration_rows=[(k, v) for k, v in (calib or {}).items() if v is not None],
        removed_layers=sorted((report.removed_layers or {}).items()),
        structure_rows=structure_rows,
        layer_table=report.to_markdown(max_rows=200) if report.layers else "",
        load_snippet=load_snippet(pruned, needs_hf_prune, auto),
        version=__version__,
    )
    # Collapse the blank lines left by skipped template sections.
    card.text = re.sub(r"\n{3,}", "\n\n", card.text)
    return card


def _looks_like_repo_id(name: str) -> bool:
    import os
    import re

    if os.path.exists(name) or name.startswith((".", "/", "~")):
        return False
    return re.fullmatch(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?", name) is not None


def _has_overrides(pruned: PrunedModel) -> bool:
    from hf_prune.surgery.structure import config_updates

    return any(upd["per_layer"] for upd in config_updates(pruned.base_model).values())

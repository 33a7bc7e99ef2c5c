"""Model cards of the zoo's models, rendered with ``huggingface_hub.ModelCard``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from hf_prune.zoo.recipes import ZooRecipe

_TEMPLATE = """---
{{ card_data }}
---

# {{ name }} (hf_prune reference zoo)

{{ description }}.

This model is built by a reproducible recipe in `hf_prune.zoo` so that pruning methods can be compared
on trained weights without downloading anything. Rebuild or load it with:

```python
from hf_prune.zoo import load_zoo_model
model, tokenizer = load_zoo_model("{{ name }}")
```

## Held-out quality

| split | metric | model | baseline |
|---|---|---|---|
{% for row in rows -%}
| {{ row.split }} | {{ row.metric }} | {{ row.value }} | {{ row.baseline }} ({{ row.baseline_name }}) |
{% endfor %}
{{ protocol }}

## Data

Corpus: the `.py` sources of the Python {{ corpus.python_version }} standard library (corpus version
{{ corpus.corpus_version }}, sha256 `{{ corpus.corpus_sha256 }}`), split by a hash of each file's
relative path: {{ split_counts }}. The held-out and calibration files are never trained on. The text
depends on the exact Python version, so a rebuild on another Python version sees a different corpus.

## Training

Seed {{ recipe.seed }}, {{ steps }} steps of {{ recipe.batch_size }} x {{ recipe.seqlen }} tokens,
AdamW (peak lr {{ recipe.learning_rate }}, weight decay {{ recipe.weight_decay }}), {{ recipe.warmup_steps }}
warm-up steps then cosine decay, gradient clipping {{ recipe.grad_clip }}, {{ recipe.num_threads }} CPU
thread(s), deterministic algorithms; {{ wall_time }} s wall time on the build machine. Parameters:
{{ num_parameters }}.

{% if curve %}
Learning curve ({{ curve_protocol }}):

| step | train loss | held-out perplexity |
|---:|---:|---:|
{% for point in curve -%}
| {{ point.step }} | {{ "%.3f"|format(point.train_loss) }} | {{ "%.2f"|format(point.heldout) }} |
{% endfor %}
{% endif %}
{% if storage and storage.dtype != "float32" %}
Weights are stored in {{ storage.dtype }} and load as float32; every metric above was measured on the
stored (rounded) weights{% if storage.curve_windows_perplexity_float32 %} (perplexity on the
learning-curve windows: {{ "%.3f"|format(storage.curve_windows_perplexity_float32) }} in float32 before
rounding, {{ "%.3f"|format(storage.curve_windows_perplexity_stored) }} stored){% endif %}.
{% endif %}

Built with torch {{ versions.torch }}, transformers {{ versions.transformers }},
tokenizers {{ versions.tokenizers }}. Weights are bit-identical across rebuilds with the same recipe,
seed, thread count and library versions on the same machine; other CPUs may differ in the last bits.
"""


def write_model_card(
    output_dir: Path,
    recipe: ZooRecipe,
    metrics: dict[str, Any],
    pipeline_tag: str,
    base_model: str | None = None,
) -> Path:
    """Render and save ``README.md`` for a zoo model.

    Args:
        output_dir: The model folder.
        recipe: The model's recipe.
        metrics: The ``zoo_metrics.json`` content (must hold ``evaluation``, ``corpus``, ``training``).
        pipeline_tag: Hub pipeline tag (``"text-generation"``, ``"text-classification"``, ...).
        base_model: Hub id of the model it was fine-tuned from, if any.

    Returns:
        The path of the written card.
    """
    evaluation = metrics["evaluation"]
    rows = []
    eval_results = []
    for entry in evaluation:
        rows.append(
            {
                "split": entry["split"],
                "metric": entry["metric"],
                "value": f"{entry['value']:.4g}",
                "baseline": f"{entry['baseline']:.4g}",
                "baseline_name": entry["baseline_name"],
            }
        )
        eval_results.append(
            EvalResult(
                task_type=pipeline_tag,
                dataset_type="python-stdlib",
                dataset_name=f"Python {metrics['corpus']['python_version']} standard library sources",
                dataset_split=entry["split"],
                metric_type=entry["metric"],
                metric_value=round(float(entry["value"]), 6),
            )
        )
    corpus = metrics["corpus"]
    split_counts = ", ".join(
        f"{split} {info['files']} files / {info['chars']} characters"
        for split, info in corpus["splits"].items()
    )
    card_data = ModelCardData(
        model_name=recipe.name,
        library_name="transformers",
        pipeline_tag=pipeline_tag,
        base_model=base_model,
        license="apache-2.0",
        tags=["hf_prune", "hf_prune-zoo", recipe.model_type],
        eval_results=eval_results,
        hf_prune_zoo={
            "recipe_fingerprint": recipe.fingerprint(),
            "python_version": corpus["python_version"],
            "corpus_sha256": corpus["corpus_sha256"],
        },
    )
    card = ModelCard.from_template(
        card_data,
        template_str=_TEMPLATE,
        name=recipe.name,
        description=recipe.description,
        rows=rows,
        protocol=metrics.get("protocol", ""),
        corpus=corpus,
        split_counts=split_counts,
        recipe=recipe.to_dict(),
        steps=metrics["training"]["steps"],
        wall_time=f"{metrics['training']['wall_time_s']:.0f}",
        num_parameters=f"{metrics['num_parameters']:,}",
        versions=metrics["versions"],
        curve=metrics["training"].get("learning_curve") or [],
        curve_protocol=metrics["training"].get("learning_curve_protocol", ""),
        storage=metrics.get("storage"),
    )
    path = output_dir / "README.md"
    card.save(path)
    return path

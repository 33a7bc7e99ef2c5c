"""Training data for causal-LM fine-tuning with ``Trainer``: fixed-length token windows of local text."""

from __future__ import annotations

from typing import Any

import datasets


def causal_lm_dataset(
    dataset: Any, tokenizer: Any, *, seqlen: int = 128, max_windows: int | None = None
) -> datasets.Dataset:
    """Tokenize text once and cut it into consecutive ``seqlen``-token windows (the last partial one dropped).

    The result has one ``input_ids`` column; hand it to ``Trainer`` with
    ``DataCollatorForLanguageModeling(tokenizer, mlm=False)``, which adds the labels.

    Args:
        dataset: Text in any form the perplexity protocol reads: a local text / JSON / JSONL / parquet
            path, a ``datasets.Dataset`` with a ``text`` column, or a list of strings.
        tokenizer: The model's tokenizer.
        seqlen: Tokens per window (>= 2).
        max_windows: Keep at most this many windows (from the start); ``None`` keeps all.

    Returns:
        A ``datasets.Dataset`` with an ``input_ids`` column of ``seqlen``-long lists.

    Raises:
        ValueError: For a bad ``seqlen`` / ``max_windows`` or text shorter than one window.
    """
    from hf_prune.evaluation.perplexity import encode_dataset

    if isinstance(seqlen, bool) or not isinstance(seqlen, int) or seqlen < 2:
        raise ValueError(f"seqlen must be an int >= 2, got {seqlen!r}.")
    if max_windows is not None and (
        isinstance(max_windows, bool) or not isinstance(max_windows, int) or max_windows < 1
    ):
        raise ValueError(f"max_windows must be None or an int >= 1, got {max_windows!r}.")
    ids = encode_dataset(tokenizer, dataset)
    count = ids.numel() // seqlen
    if count == 0:
        raise ValueError(
            f"the text has {ids.numel()} tokens, fewer than one window of seqlen={seqlen}; give more text or "
            f"a smaller seqlen."
        )
    if max_windows is not None:
        count = min(count, max_windows)
    windows = ids[: count * seqlen].view(count, seqlen)
    return datasets.Dataset.from_dict({"input_ids": windows.tolist()})

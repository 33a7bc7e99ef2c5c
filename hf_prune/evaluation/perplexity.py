r"""Perplexity of a causal language model with the protocol of the Wanda / SparseGPT papers.

Protocol (``stride=None``, the papers' setting):

1. The texts are joined with ``"\n\n"`` into one string (a single string or a ``.txt`` file is used
   as is) and tokenized **once** with the tokenizer's default special tokens (so a tokenizer that
   prepends BOS puts exactly one BOS at the very start).
2. The token stream is cut into consecutive, non-overlapping windows of ``seqlen`` tokens; the
   trailing partial window is dropped.
3. In each window every token but the first is scored: its negative log-likelihood given the window's
   preceding tokens, computed in float32.
4. Perplexity is ``exp`` of the mean NLL over all scored tokens, i.e. ``nwindows * (seqlen - 1)``
   tokens. (Wanda's reference code multiplies each window's mean loss by ``seqlen`` instead of
   ``seqlen - 1``; both give the same mean, so the numbers agree.)

Sliding-window variant (``stride < seqlen``, as in the ``transformers`` perplexity guide): windows of
``seqlen`` tokens start every ``stride`` tokens (only full windows). The first window scores all its
tokens after the first; each later window scores only its last ``stride`` tokens, the ones no earlier
window scored, so every scored token sees at least ``seqlen - stride`` tokens of context and no token
is scored twice. ``stride == seqlen`` is exactly the non-overlapping protocol.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from hf_prune.utils import quiet_tokenize, show_progress

__all__ = ["PROTOCOL_SUMMARY", "encode_dataset", "load_texts", "perplexity", "scored_targets", "window_plan"]

_SEPARATOR = "\n\n"

#: One-sentence statement of the protocol, quoted in model cards.
PROTOCOL_SUMMARY = (
    "Texts joined with two newlines and tokenized once; non-overlapping windows of seqlen tokens "
    "(trailing partial window dropped); every token but a window's first scored; exp of the mean NLL "
    "(Wanda / SparseGPT protocol)."
)


def load_texts(dataset: Any) -> str:
    r"""Turn any accepted ``dataset`` value into the single string that is tokenized.

    Args:
        dataset: A list/tuple of strings (joined with ``"\n\n"``), a single string, a path to a local
            UTF-8 text file (any ``os.PathLike``, or a one-line ``str`` that names an existing file or
            ends in ``.txt``), or a ``datasets.Dataset`` with a ``text`` column (rows joined with
            ``"\n\n"``).

    Returns:
        The text to tokenize.

    Raises:
        ValueError: If a path does not exist, a dataset has no ``text`` column, or the text is empty.
        TypeError: If ``dataset`` is of an unsupported type.
    """
    if isinstance(dataset, os.PathLike) or (isinstance(dataset, str) and _looks_like_path(dataset)):
        path = Path(dataset)
        if not path.is_file():
            raise ValueError(f"dataset={str(dataset)!r} looks like a text-file path but no such file exists")
        text = path.read_text(encoding="utf-8")
    elif isinstance(dataset, str):
        text = dataset
    elif isinstance(dataset, (list, tuple)):
        bad = next((item for item in dataset if not isinstance(item, str)), None)
        if bad is not None:
            raise TypeError(f"dataset must contain only strings; found an item of type {type(bad).__name__}")
        text = _SEPARATOR.join(dataset)
    elif hasattr(dataset, "column_names"):
        columns = dataset.column_names
        if columns is not None and "text" not in columns:
            raise ValueError(f"dataset has columns {columns}; a `text` column is required for perplexity")
        if columns is not None and hasattr(dataset, "__len__"):
            text = _SEPARATOR.join(dataset["text"])
        else:
            # Streaming (iterable) datasets may not know their columns and cannot be indexed.
            text = _SEPARATOR.join(row["text"] for row in dataset)
    else:
        raise TypeError(
            "dataset must be a list of strings, a string, a path to a .txt file or a datasets.Dataset "
            f"with a `text` column; got {type(dataset).__name__}"
        )
    if not text:
        raise ValueError("dataset is empty: there is no text to score")
    return text


def _looks_like_path(value: str) -> bool:
    # A one-line string naming an existing file is a path; so is anything ending in ".txt" (so a
    # mistyped file name fails loudly instead of being scored as a 12-character text).
    if "\n" in value or len(value) > 4096:
        return False
    return value.endswith(".txt") or os.path.isfile(value)


def encode_dataset(tokenizer: Callable[..., Any], dataset: Any) -> torch.Tensor:
    """Tokenize a dataset once, as the protocol prescribes.

    The joined text is usually longer than the tokenizer's ``model_max_length``; that is intended (the
    protocol cuts windows itself), so transformers' "Token indices sequence length is longer than the
    specified maximum sequence length" warning is suppressed for this call only.

    Args:
        tokenizer: A ``transformers`` tokenizer (any callable returning ``{"input_ids": [...]}``).
        dataset: See :func:`load_texts`.

    Returns:
        A 1-D ``torch.long`` tensor of token ids.
    """
    text = load_texts(dataset)
    # The stream is longer than model_max_length on purpose (windows cut it later): no length warning.
    encoded = quiet_tokenize(tokenizer, text)
    ids = encoded["input_ids"]
    if isinstance(ids, torch.Tensor):
        return ids.reshape(-1).to(torch.long)
    if ids and isinstance(ids[0], (list, tuple)):
        ids = ids[0]
    return torch.tensor(ids, dtype=torch.long)


def window_plan(
    num_tokens: int, seqlen: int, stride: int | None = None, max_windows: int | None = None
) -> list[tuple[int, int]]:
    """Return the windows the protocol evaluates.

    Args:
        num_tokens: Length of the token stream.
        seqlen: Window length in tokens.
        stride: Distance between window starts; ``None`` means ``seqlen`` (non-overlapping).
        max_windows: Keep only the first this-many windows; ``None`` keeps all.

    Returns:
        ``(begin, first_scored)`` per window: the window is ``ids[begin:begin + seqlen]`` and positions
        ``first_scored .. seqlen - 1`` inside it are scored.

    Raises:
        ValueError: If an argument is out of range or the stream is shorter than one window.
    """
    _check_int("seqlen", seqlen, minimum=2)
    stride = seqlen if stride is None else stride
    _check_int("stride", stride, minimum=1)
    if stride > seqlen:
        raise ValueError(f"stride={stride} must be at most seqlen={seqlen} (or None for seqlen)")
    if max_windows is not None:
        _check_int("max_windows", max_windows, minimum=1)
    if num_tokens < seqlen:
        raise ValueError(
            f"the dataset has {num_tokens} tokens, fewer than seqlen={seqlen}; pass a smaller seqlen "
            "or more text"
        )
    plan = []
    for begin in range(0, num_tokens - seqlen + 1, stride):
        # Later windows score only the tokens no earlier window scored; a window's first token has
        # no in-window context, so it is never scored (this makes stride == seqlen the paper protocol).
        first = 1 if begin == 0 else seqlen - min(stride, seqlen - 1)
        plan.append((begin, first))
        if max_windows is not None and len(plan) >= max_windows:
            break
    return plan


def scored_targets(
    ids: torch.Tensor, seqlen: int, stride: int | None = None, max_windows: int | None = None
) -> torch.Tensor:
    """Return the token ids the protocol scores, in order (e.g. to compute a unigram baseline).

    Args:
        ids: The 1-D token stream from :func:`encode_dataset`.
        seqlen: Window length.
        stride: See :func:`window_plan`.
        max_windows: See :func:`window_plan`.

    Returns:
        A 1-D tensor with one entry per scored token.
    """
    plan = window_plan(int(ids.numel()), seqlen, stride, max_windows)
    return torch.cat([ids[begin + first : begin + seqlen] for begin, first in plan])


def _check_int(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int; got {value!r} of type {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name}={value} is out of range; it must be >= {minimum}")


def _model_config(model: Any) -> Any:
    config = getattr(model, "config", None)
    if config is None:
        # A wrapper (e.g. hf_prune's PrunedModel) may keep the real model as `base_model`.
        config = getattr(getattr(model, "base_model", None), "config", None)
    return config


def _infer_device(model: Any) -> torch.device:
    params = getattr(model, "parameters", None)
    if callable(params):
        for param in params():
            return param.device
    return torch.device("cpu")


@contextmanager
def _eval_mode(model: Any) -> Iterator[None]:
    # Dropout must be off while scoring; the caller's train/eval state is restored afterwards.
    was_training = getattr(model, "training", False)
    if was_training and hasattr(model, "eval"):
        model.eval()
    try:
        yield
    finally:
        if was_training and hasattr(model, "train"):
            model.train(True)


def perplexity(
    model: nn.Module | Callable[..., Any],
    tokenizer: Callable[..., Any],
    dataset: str | os.PathLike[str] | Sequence[str] | Any,
    seqlen: int = 2048,
    stride: int | None = None,
    batch_size: int = 1,
    max_windows: int | None = None,
    device: str | torch.device | None = None,
    progress: bool = True,
) -> float:
    r"""Compute perplexity with the Wanda / SparseGPT protocol (see the module docstring).

    Texts are joined with ``"\n\n"`` and tokenized once; non-overlapping ``seqlen``-token windows
    (or, with ``stride < seqlen``, sliding windows whose new tokens only are scored) are run through
    the model in batches under ``torch.inference_mode``; the result is ``exp`` of the mean token NLL
    over all scored tokens.

    Args:
        model: A causal LM: any ``nn.Module`` (or object forwarding calls to one) whose call with
            ``input_ids`` returns an object with ``.logits`` of shape ``[batch, seqlen, vocab]``.
        tokenizer: The model's tokenizer (called once on the whole text).
        dataset: A list of strings, a single string, a path to a local ``.txt`` file, or a
            ``datasets.Dataset`` with a ``text`` column.
        seqlen: Window length in tokens (2048 in the papers). Must not exceed the model's
            ``max_position_embeddings`` when its config has one.
        stride: Distance between window starts; ``None`` means ``seqlen`` (non-overlapping windows).
        batch_size: Windows per forward pass.
        max_windows: Evaluate only the first this-many windows; ``None`` evaluates all.
        device: Where to run; ``None`` means the device of the model's first parameter (CPU if none).
        progress: Show a tqdm progress bar (only on a terminal; see :func:`hf_prune.utils.show_progress`).

    Returns:
        The perplexity, a float >= 1.

    Raises:
        ValueError: If an argument is out of range, the text is shorter than one window, or ``seqlen``
            exceeds the model's maximum context.
        TypeError: If ``dataset`` or an integer argument has the wrong type, or the model's output has
            no ``logits``.
    """
    _check_int("seqlen", seqlen, minimum=2)
    _check_int("batch_size", batch_size, minimum=1)
    config = _model_config(model)
    max_positions = getattr(config, "max_position_embeddings", None)
    if isinstance(max_positions, int) and seqlen > max_positions:
        raise ValueError(
            f"seqlen={seqlen} exceeds the model's max_position_embeddings={max_positions}; "
            f"pass seqlen <= {max_positions}"
        )
    ids = encode_dataset(tokenizer, dataset)
    plan = window_plan(int(ids.numel()), seqlen, stride, max_windows)
    run_device = torch.device(device) if device is not None else _infer_device(model)

    total_nll = 0.0
    total_tokens = 0
    with _eval_mode(model), torch.inference_mode():
        bar = tqdm(total=len(plan), desc="perplexity", unit="window", disable=not show_progress(progress))
        for start in range(0, len(plan), batch_size):
            chunk = plan[start : start + batch_size]
            batch = torch.stack([ids[begin : begin + seqlen] for begin, _ in chunk]).to(run_device)
            output = model(input_ids=batch)
            logits = getattr(output, "logits", None)
            if logits is None:
                raise TypeError(f"the model's output ({type(output).__name__}) has no `logits` attribute")
            # Position t predicts token t + 1; float32 so half-precision models sum NLL accurately.
            log_probs = torch.log_softmax(logits[:, :-1].float(), dim=-1)
            nll = -log_probs.gather(-1, batch[:, 1:].unsqueeze(-1)).squeeze(-1)
            for row, (_, first) in enumerate(chunk):
                # Target index t - 1 in `nll` scores the token at window position t.
                total_nll += float(nll[row, first - 1 :].double().sum())
                total_tokens += seqlen - first
            bar.update(len(chunk))
        bar.close()
    return math.exp(total_nll / total_tokens)

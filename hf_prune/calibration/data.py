"""Calibration data: registered Hub sets, local files, ``datasets.Dataset`` or strings -> token windows.

Windows follow the Wanda / SparseGPT loaders: the texts are joined, tokenized once, and ``nsamples``
windows of ``seqlen`` tokens start at seeded random positions.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from hf_prune.config import CalibrationConfig
from hf_prune.registry import Registry
from hf_prune.utils import quiet_tokenize


@dataclass(frozen=True)
class HubDataset:
    """How to read a registered calibration set from the Hub.

    Args:
        path: ``datasets.load_dataset`` path.
        name: Its config name.
        split: Split to use when the user keeps the default ``"train"``.
        format: Turns one row into calibration text.
        data_files: ``data_files`` argument (C4 reads one shard, as the Wanda loader does).
    """

    path: str
    name: str | None
    split: str
    format: Callable[[dict[str, Any]], str]
    data_files: dict[str, str] | None = None


def _choices(row: dict[str, Any]) -> str:
    choices = row.get("choices")
    if isinstance(choices, dict):  # ARC: {"text": [...], "label": [...]}
        choices = choices.get("text", [])
    return " ".join(str(c) for c in choices or [])


HUB_DATASETS: Registry[HubDataset] = Registry("calibration dataset")
for _key, _ds in (
    ("wikitext2", HubDataset("wikitext", "wikitext-2-raw-v1", "train", lambda r: r["text"])),
    (
        "c4",
        HubDataset(
            "allenai/c4",
            None,
            "train",
            lambda r: r["text"],
            data_files={"train": "en/c4-train.00000-of-01024.json.gz"},
        ),
    ),
    ("mmlu", HubDataset("cais/mmlu", "all", "auxiliary_train", lambda r: f"{r['question']} {_choices(r)}")),
    (
        "hellaswag",
        HubDataset("Rowan/hellaswag", None, "train", lambda r: f"{r['ctx']} {' '.join(r['endings'])}"),
    ),
    ("winogrande", HubDataset("allenai/winogrande", "winogrande_xl", "train", lambda r: r["sentence"])),
    (
        "arc_easy",
        HubDataset("allenai/ai2_arc", "ARC-Easy", "train", lambda r: f"{r['question']} {_choices(r)}"),
    ),
    (
        "arc_challenge",
        HubDataset("allenai/ai2_arc", "ARC-Challenge", "train", lambda r: f"{r['question']} {_choices(r)}"),
    ),
    ("gsm8k", HubDataset("openai/gsm8k", "main", "train", lambda r: f"{r['question']} {r['answer']}")),
):
    HUB_DATASETS.register(_key, _ds)

_LOCAL_BUILDERS = {".json": "json", ".jsonl": "json", ".parquet": "parquet", ".csv": "csv"}


def _texts_from_table(ds: Any, column: str | None, fmt: Callable[[dict[str, Any]], str] | None) -> list[str]:
    if fmt is not None and column is None:
        return [t for t in (fmt(row) for row in ds) if t and t.strip()]
    col = column or "text"
    if col not in ds.column_names:
        raise ValueError(
            f"Calibration data has no column {col!r}; columns are {ds.column_names}. Set "
            "CalibrationConfig(text_column=...)."
        )
    return [t for t in ds[col] if isinstance(t, str) and t.strip()]


def load_calibration_texts(config: CalibrationConfig) -> list[str]:
    """Return the raw calibration texts described by ``config``.

    Args:
        config: The calibration config.

    Raises:
        ValueError: For an unknown name that is not an existing path, or an empty dataset.
    """
    data = config.dataset
    if isinstance(data, (list, tuple)):
        texts = list(data)
    elif isinstance(data, str):
        path = Path(data).expanduser()
        if path.exists():
            texts = _local_texts(path, config)
        elif data in HUB_DATASETS:
            import datasets

            spec = HUB_DATASETS.get(data)
            split = spec.split if config.split == "train" else config.split
            ds = datasets.load_dataset(spec.path, spec.name, split=split, data_files=spec.data_files)
            texts = _texts_from_table(ds, config.text_column, spec.format)
        else:
            raise ValueError(
                f"CalibrationConfig.dataset={data!r} is neither an existing path nor a registered name "
                f"({', '.join(HUB_DATASETS.names())}). Pass a local text/JSON/JSONL/parquet file, a "
                "datasets.Dataset or a list of strings."
            )
    else:  # datasets.Dataset (checked in CalibrationConfig)
        texts = _texts_from_table(data, config.text_column, None)
    texts = [t for t in texts if t and t.strip()]
    if not texts:
        raise ValueError(f"Calibration dataset {config.describe()['dataset']!r} holds no text.")
    return texts


def _local_texts(path: Path, config: CalibrationConfig) -> list[str]:
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in (".txt", *_LOCAL_BUILDERS))
        if not files:
            raise ValueError(
                f"Calibration folder {str(path)!r} holds no .txt/.json/.jsonl/.parquet/.csv files."
            )
        return [t for f in files for t in _local_texts(f, config)]
    suffix = path.suffix.lower()
    if suffix in ("", ".txt", ".md"):
        # One document per blank-line-separated paragraph, as the wikitext loaders see it.
        return [p for p in path.read_text(encoding="utf-8", errors="replace").split("\n\n") if p.strip()]
    if suffix in _LOCAL_BUILDERS:
        import datasets

        ds = datasets.load_dataset(_LOCAL_BUILDERS[suffix], data_files=str(path), split="train")
        return _texts_from_table(ds, config.text_column, None)
    raise ValueError(
        f"Unsupported calibration file type {suffix!r} ({str(path)!r}); "
        "use .txt, .json, .jsonl, .csv or .parquet."
    )


def text_tokenizer(tokenizer: Any) -> Any:
    """Return what encodes plain text: a processor's ``tokenizer``, else ``tokenizer`` itself.

    A multimodal processor (``LlavaProcessor``) takes ``images`` as its first argument, so calibration
    text goes to its tokenizer.

    Args:
        tokenizer: A tokenizer, a processor, or any callable tokenizer.
    """
    from transformers import ProcessorMixin

    if isinstance(tokenizer, ProcessorMixin) and getattr(tokenizer, "tokenizer", None) is not None:
        return tokenizer.tokenizer
    return tokenizer


def build_calibration_batches(config: CalibrationConfig, tokenizer: Any) -> list[dict[str, torch.Tensor]]:
    """Tokenize the calibration texts and cut seeded random windows.

    The picked texts are joined and tokenized once, without transformers' "sequence length is longer
    than the specified maximum" warning (the length is intended).

    Args:
        config: The calibration config.
        tokenizer: A transformers tokenizer, or a processor (its ``tokenizer`` encodes the text).

    Returns:
        Batches of ``{"input_ids", "attention_mask"}``, each ``[batch_size, seqlen]`` (the last may be
        smaller).

    Raises:
        ValueError: If the data holds fewer than ``seqlen + 1`` tokens.
    """
    texts = load_calibration_texts(config)
    rng = random.Random(config.seed)
    # Shuffle documents with the seed and stop once there is plenty of text: tokenizing a whole C4
    # shard to draw 128 windows would dominate the run.
    order = list(range(len(texts)))
    rng.shuffle(order)
    budget_chars = config.nsamples * config.seqlen * 12
    picked, size = [], 0
    for i in order:
        picked.append(texts[i])
        size += len(texts[i])
        if size >= budget_chars:
            break
    # The joined text is far longer than model_max_length on purpose: windows are cut below.
    encoded = quiet_tokenize(
        text_tokenizer(tokenizer), "\n\n".join(picked), return_tensors="pt", add_special_tokens=False
    )
    ids = encoded["input_ids"][0]
    n = int(ids.numel())
    if n <= config.seqlen:
        raise ValueError(
            f"Calibration data has only {n} tokens, fewer than seqlen+1={config.seqlen + 1}; lower seqlen or "
            "give more text."
        )
    windows = []
    for _ in range(config.nsamples):
        start = rng.randint(0, n - config.seqlen - 1)
        windows.append(ids[start : start + config.seqlen])
    stacked = torch.stack(windows)
    return [
        {"input_ids": chunk, "attention_mask": torch.ones_like(chunk)}
        for chunk in stacked.split(config.batch_size)
    ]


def write_texts(texts: list[str], path: str | os.PathLike[str]) -> Path:
    """Write texts to a local calibration file (paragraphs separated by blank lines).

    Args:
        texts: The texts.
        path: Destination ``.txt`` file.
    """
    out = Path(path)
    out.write_text("\n\n".join(t.strip() for t in texts) + "\n", encoding="utf-8")
    return out

"""Evaluation sets by registered name, local file or in-memory ``Dataset``, in one schema.

Each registered name points at its Hub repo (the same :class:`~hf_prune.calibration.data.HubDataset`
record the calibration loader uses; ARC and GSM8K reuse its entries) and at a normalizer that turns one
raw row into the schema of :mod:`hf_prune.data.schema`. Prompts share one template, a line
``Question: <question>`` followed by a line ``Answer:`` (SciQ puts its support paragraph first), the
lm-evaluation-harness layout, so an answer or an option is scored as the continuation of the prompt.

SciQ and TruthfulQA (``mc1_targets``) store the gold option at a fixed position (SciQ's
``correct_answer`` column, TruthfulQA's first target). Their options are shuffled with a seed derived
from the question text, so the gold label is not constant (a prompt that lists lettered options would
otherwise reward always answering the same letter) while every load gives the same order.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets

from hf_prune.calibration.data import _LOCAL_BUILDERS, HUB_DATASETS, HubDataset
from hf_prune.data.schema import (
    EVAL_FEATURES,
    EVAL_SCHEMA,
    _feature_kind,
    describe_schema,
    validate_eval_schema,
)
from hf_prune.registry import Registry

__all__ = ["EVAL_DATASETS", "GSM8K_LITE_SEED", "GSM8K_LITE_SIZE", "EvalDataset", "load_eval_dataset"]

#: Rows in ``gsm8k-lite``: a fixed seeded subset of the GSM8K test split (1319 problems), small enough
#: to generate answers for on a CPU while keeping the accuracy's standard error near 3 points.
GSM8K_LITE_SIZE = 250
#: Seed of the ``gsm8k-lite`` subset. Fixed, so ``gsm8k-lite`` names the same problems everywhere; the
#: ``seed`` argument of :func:`load_eval_dataset` only draws ``n`` rows from within it.
GSM8K_LITE_SEED = 1234

Normalizer = Callable[[Mapping[str, Any], str], dict[str, Any]]


@dataclass(frozen=True)
class EvalDataset:
    """A registered evaluation set.

    Args:
        hub: Where the raw set lives (``split`` is the split evaluated by default).
        normalize: Turns one raw row and its fallback id into ``prompt``, ``answer``, ``choices``,
            ``label`` and ``id`` (``source`` is added by the loader).
        raw_columns: Columns of the raw layout that ``normalize`` reads.
        subset_size: Keep only this many rows of the raw split (drawn with ``subset_seed``); ``None``
            keeps all.
        subset_seed: Seed of that fixed subset.
        local_names: Other file/folder names (besides the registered name) under which a local copy is
            looked for in ``data_dir``.
    """

    hub: HubDataset
    normalize: Normalizer
    raw_columns: tuple[str, ...]
    subset_size: int | None = None
    subset_seed: int = 0
    local_names: tuple[str, ...] = ()


# ------------------------------------------------------------------ row normalizers
def _prompt(question: str, context: str | None = None) -> str:
    head = f"{context.strip()}\n" if context and context.strip() else ""
    return f"{head}Question: {question.strip()}\nAnswer:"


def _stable_shuffle(options: list[str], gold: int, key: str) -> tuple[list[str], int]:
    """Shuffle ``options`` with a seed taken from ``key``; return them and the gold option's new index."""
    # sha256, not hash(): str hashes change with PYTHONHASHSEED, and the order must be the same everywhere.
    seed = int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "big")
    order = list(range(len(options)))
    random.Random(seed).shuffle(order)
    return [options[i] for i in order], order.index(gold)


def _free_form(prompt: str, answer: str, row_id: str) -> dict[str, Any]:
    return {"prompt": prompt, "answer": answer, "choices": [], "label": -1, "id": row_id}


def _gsm8k(row: Mapping[str, Any], fallback_id: str) -> dict[str, Any]:
    solution = str(row["answer"])
    if "####" not in solution:
        raise ValueError(f"GSM8K row {fallback_id}: answer has no '#### <final answer>' line: {solution!r}.")
    # The worked solution precedes "####"; the gold answer is the final value after it.
    return _free_form(_prompt(row["question"]), solution.rsplit("####", 1)[1].strip(), fallback_id)


def _lettered(question_column: str) -> Normalizer:
    """Normalizer for ARC / OpenBookQA rows: ``choices={"text", "label"}`` and an ``answerKey``."""

    def normalize(row: Mapping[str, Any], fallback_id: str) -> dict[str, Any]:
        choices = [str(t).strip() for t in row["choices"]["text"]]
        keys = [str(k).strip() for k in row["choices"]["label"]]
        # ARC mixes letter keys ("A".."E") and digit keys ("1".."4"); both index the same label list.
        key = str(row["answerKey"]).strip()
        row_id = str(row["id"]) if row.get("id") not in (None, "") else fallback_id
        if key not in keys:
            raise ValueError(f"Row {row_id}: answerKey={key!r} is not one of the choice labels {keys}.")
        label = keys.index(key)
        return {
            "prompt": _prompt(row[question_column]),
            "answer": choices[label],
            "choices": choices,
            "label": label,
            "id": row_id,
        }

    return normalize


def _sciq(row: Mapping[str, Any], fallback_id: str) -> dict[str, Any]:
    options = [str(row[c]).strip() for c in ("correct_answer", "distractor1", "distractor2", "distractor3")]
    choices, label = _stable_shuffle(options, 0, f"sciq:{row['question']}")
    return {
        "prompt": _prompt(row["question"], row.get("support")),
        "answer": choices[label],
        "choices": choices,
        "label": label,
        "id": fallback_id,
    }


def _truthful_qa(row: Mapping[str, Any], fallback_id: str) -> dict[str, Any]:
    targets = row["mc1_targets"]
    options = [str(c).strip() for c in targets["choices"]]
    golds = [i for i, flag in enumerate(targets["labels"]) if flag == 1]
    if len(golds) != 1:
        raise ValueError(
            f"TruthfulQA row {fallback_id}: mc1_targets must mark exactly one choice with 1, "
            f"got labels {list(targets['labels'])}."
        )
    choices, label = _stable_shuffle(options, golds[0], f"truthful_qa:{row['question']}")
    return {
        "prompt": _prompt(row["question"]),
        "answer": choices[label],
        "choices": choices,
        "label": label,
        "id": fallback_id,
    }


def _trivia_qa(row: Mapping[str, Any], fallback_id: str) -> dict[str, Any]:
    row_id = str(row["question_id"]) if row.get("question_id") else fallback_id
    return _free_form(_prompt(row["question"]), str(row["answer"]["value"]).strip(), row_id)


def _question_text(column: str) -> Callable[[dict[str, Any]], str]:
    # HubDataset.format: the registered eval sets can also serve as calibration text.
    return lambda row: str(row[column])


EVAL_DATASETS: Registry[EvalDataset] = Registry("evaluation dataset")
_GSM8K_TEST = dataclasses.replace(HUB_DATASETS.get("gsm8k"), split="test")
for _key, _spec in (
    (
        "gsm8k-lite",
        EvalDataset(
            _GSM8K_TEST,
            _gsm8k,
            ("question", "answer"),
            subset_size=GSM8K_LITE_SIZE,
            subset_seed=GSM8K_LITE_SEED,
            local_names=("gsm8k",),
        ),
    ),
    ("gsm8k", EvalDataset(_GSM8K_TEST, _gsm8k, ("question", "answer"))),
    (
        "arc_easy",
        EvalDataset(
            dataclasses.replace(HUB_DATASETS.get("arc_easy"), split="test"),
            _lettered("question"),
            ("id", "question", "choices", "answerKey"),
        ),
    ),
    (
        "arc_challenge",
        EvalDataset(
            dataclasses.replace(HUB_DATASETS.get("arc_challenge"), split="test"),
            _lettered("question"),
            ("id", "question", "choices", "answerKey"),
        ),
    ),
    (
        "sciq",
        EvalDataset(
            HubDataset("allenai/sciq", None, "test", _question_text("question")),
            _sciq,
            ("question", "correct_answer", "distractor1", "distractor2", "distractor3", "support"),
        ),
    ),
    (
        "truthful_qa",
        EvalDataset(
            # The multiple_choice config has one split, validation (817 questions).
            HubDataset("truthfulqa/truthful_qa", "multiple_choice", "validation", _question_text("question")),
            _truthful_qa,
            ("question", "mc1_targets"),
        ),
    ),
    (
        "openbookqa",
        EvalDataset(
            HubDataset("allenai/openbookqa", "main", "test", _question_text("question_stem")),
            _lettered("question_stem"),
            ("id", "question_stem", "choices", "answerKey"),
        ),
    ),
    (
        "trivia_qa",
        EvalDataset(
            # rc.nocontext's test split ships without answers, so validation is the evaluated split.
            HubDataset("mandarjoshi/trivia_qa", "rc.nocontext", "validation", _question_text("question")),
            _trivia_qa,
            ("question", "question_id", "answer"),
        ),
    ),
):
    EVAL_DATASETS.register(_key, _spec)


# ------------------------------------------------------------------ local data
def _read_file(path: Path) -> datasets.Dataset:
    suffix = path.suffix.lower()
    if suffix not in _LOCAL_BUILDERS:
        raise ValueError(
            f"Unsupported evaluation data file type {suffix!r} ({str(path)!r}); "
            f"use {', '.join(sorted(_LOCAL_BUILDERS))} or a folder saved by Dataset.save_to_disk."
        )
    return _read_files([path])


def _read_files(files: list[Path]) -> datasets.Dataset:
    builder = _LOCAL_BUILDERS[files[0].suffix.lower()]
    names = [str(f) for f in files]
    if builder == "json":
        return datasets.Dataset.from_json(names)
    if builder == "parquet":
        return datasets.Dataset.from_parquet(names)
    return _from_csv(datasets.Dataset.from_csv(names))


def _from_csv(table: datasets.Dataset) -> datasets.Dataset:
    """Undo what CSV cannot store: ``choices`` as a JSON list in a cell, numeric ids read as ints."""
    columns = table.to_dict()
    if "choices" in columns and _feature_kind(table.features["choices"]) == "str":
        parsed = []
        for i, cell in enumerate(columns["choices"]):
            try:
                value = json.loads(cell) if cell else []
            except json.JSONDecodeError:
                value = None
            if not isinstance(value, list):
                raise ValueError(f"CSV row {i}: choices must be a JSON list of strings, got {cell!r}.")
            parsed.append([str(v) for v in value])
        columns["choices"] = parsed
    if "id" in columns:
        columns["id"] = [None if v is None else str(v) for v in columns["id"]]
    return datasets.Dataset.from_dict(columns)


def _pick_split(
    table: datasets.Dataset | datasets.DatasetDict, split: str | None, where: str
) -> datasets.Dataset:
    if isinstance(table, datasets.Dataset):
        return table
    if split is not None and split in table:
        return table[split]
    if split is None and len(table) == 1:
        return next(iter(table.values()))
    wanted = f"has no split {split!r}" if split is not None else "holds several splits"
    raise ValueError(f"{where} {wanted}; its splits are {list(table)}. Pass split= one of them.")


def _read_local(path: Path, split: str | None) -> datasets.Dataset:
    where = f"Evaluation data {str(path)!r}"
    if path.is_file():
        return _read_file(path)
    if (path / "dataset_dict.json").is_file() or (path / "state.json").is_file():
        return _pick_split(datasets.load_from_disk(str(path)), split, where)
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in _LOCAL_BUILDERS)
    if not files:
        raise ValueError(
            f"{where} is a folder that holds neither a Dataset.save_to_disk copy nor "
            f"{'/'.join(sorted(_LOCAL_BUILDERS))} files."
        )
    builders = {_LOCAL_BUILDERS[f.suffix.lower()] for f in files}
    if len(builders) > 1:
        raise ValueError(f"{where} mixes file formats ({sorted(builders)}); keep one format per folder.")
    return _read_files(files)


def _find_local_copy(data_dir: Path, name: str, spec: EvalDataset) -> Path:
    tried = []
    for stem in (name, *spec.local_names):
        for candidate in (data_dir / stem, *(data_dir / f"{stem}{ext}" for ext in sorted(_LOCAL_BUILDERS))):
            if candidate.exists():
                return candidate
            tried.append(candidate.name)
    raise ValueError(
        f"data_dir={str(data_dir)!r} holds no copy of {name!r}: looked for {tried}. Save the raw Hub split "
        "there (Dataset.save_to_disk or a data file), or drop data_dir to load it from the Hub."
    )


# ------------------------------------------------------------------ normalization and sampling
def _is_normalized(table: datasets.Dataset) -> bool:
    return all(col in table.column_names for col in EVAL_SCHEMA)


def _seeded_subset(positions: Sequence[int], n: int | None, seed: int) -> list[int]:
    """Draw ``n`` of ``positions`` with ``seed``, in their original order (all when ``n`` is None or larger).

    The draw is a prefix of one seeded permutation, so a smaller ``n`` picks a subset of a larger one.
    """
    positions = list(positions)
    if n is None or n >= len(positions):
        return positions
    order = list(range(len(positions)))
    random.Random(seed).shuffle(order)
    return [positions[i] for i in sorted(order[:n])]


def _raw_layout_hint(columns: Sequence[str]) -> str:
    matches = [name for name, spec in EVAL_DATASETS.items() if set(spec.raw_columns) <= set(columns)]
    if not matches:
        return ""
    options = " or ".join(f"schema={name!r}" for name in matches)
    return f" Its columns match the raw layout of {matches}: pass {options} to normalize it."


def _normalize(
    table: datasets.Dataset,
    spec: EvalDataset,
    source: str,
    *,
    n: int | None,
    seed: int,
    id_prefix: str,
    where: str,
    fixed_subset: bool,
) -> datasets.Dataset:
    missing = [col for col in spec.raw_columns if col not in table.column_names]
    if missing:
        raise ValueError(
            f"{where} has neither the evaluation schema ({describe_schema()}) nor the raw layout of "
            f"{source!r}: missing raw column(s) {missing} (raw layout: {list(spec.raw_columns)}; "
            f"columns found: {table.column_names})."
        )
    positions: Sequence[int] = range(len(table))
    if fixed_subset and spec.subset_size is not None:
        positions = _seeded_subset(positions, spec.subset_size, spec.subset_seed)
    positions = _seeded_subset(positions, n, seed)
    # Select before normalizing: only the kept rows are read (trivia_qa's validation split has 18k).
    rows = table.select(positions).select_columns(list(spec.raw_columns))
    columns: dict[str, list[Any]] = {col: [] for col in EVAL_SCHEMA}
    for index, row in zip(positions, rows, strict=True):
        normalized = spec.normalize(row, f"{id_prefix}-{index}")
        normalized["source"] = source
        for col in EVAL_SCHEMA:
            columns[col].append(normalized[col])
    return datasets.Dataset.from_dict(columns, features=EVAL_FEATURES)


def _from_table(
    table: datasets.Dataset, schema: str | None, where: str, *, n: int | None, seed: int
) -> datasets.Dataset:
    """Normalize user data: taken as is when it has the schema, else through ``schema``'s normalizer."""
    if _is_normalized(table):
        data = validate_eval_schema(table, where=where)
        return data.select(_seeded_subset(range(len(data)), n, seed))
    if schema is None:
        missing = [col for col in EVAL_SCHEMA if col not in table.column_names]
        raise ValueError(
            f"{where} does not have the evaluation schema: missing column(s) {missing} (columns found: "
            f"{table.column_names}). Required schema: {describe_schema()}."
            f"{_raw_layout_hint(table.column_names)}"
        )
    return _normalize(
        table,
        EVAL_DATASETS.get(schema),
        schema,
        n=n,
        seed=seed,
        id_prefix="row",
        where=where,
        fixed_subset=False,
    )


def _load_registered(
    name: str,
    *,
    n: int | None,
    split: str | None,
    seed: int,
    data_dir: Path | None,
    cache_dir: str | None,
    token: str | bool | None,
) -> datasets.Dataset:
    spec = EVAL_DATASETS.get(name)
    split = split or spec.hub.split
    if data_dir is not None:
        path = _find_local_copy(data_dir, name, spec)
        where = f"Local copy {str(path)!r} of {name!r}"
        table = _read_local(path, split)
        if _is_normalized(table):  # an already normalized copy is the set itself: no fixed subset again
            data = validate_eval_schema(table, where=where)
            return data.select(_seeded_subset(range(len(data)), n, seed))
    else:
        hub = spec.hub
        where = f"Hub dataset {hub.path!r} (config {hub.name!r}, split {split!r})"
        table = datasets.load_dataset(
            hub.path, hub.name, split=split, data_files=hub.data_files, cache_dir=cache_dir, token=token
        )
    return _normalize(table, spec, name, n=n, seed=seed, id_prefix=split, where=where, fixed_subset=True)


def _check_type(value: Any, types: type | tuple[type, ...], argument: str, expected: str) -> None:
    # bool is an int subclass; n=True is a mistake, not "1 row".
    if isinstance(value, bool) and bool not in (types if isinstance(types, tuple) else (types,)):
        raise TypeError(f"{argument} must be {expected}, got bool.")
    if not isinstance(value, types):
        raise TypeError(f"{argument} must be {expected}, got {type(value).__name__}.")


_Item = str | os.PathLike | datasets.Dataset


def load_eval_dataset(
    name_or_names: _Item | Sequence[_Item],
    n: int | None = None,
    *,
    split: str | None = None,
    seed: int = 0,
    data_dir: str | os.PathLike[str] | None = None,
    schema: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    token: str | bool | None = None,
) -> datasets.Dataset:
    """Load one or several evaluation sets, normalized to :data:`~hf_prune.data.EVAL_SCHEMA`.

    Registered names (see :data:`EVAL_DATASETS`): ``gsm8k-lite`` (a fixed seeded subset of
    :data:`GSM8K_LITE_SIZE` GSM8K test problems), ``gsm8k``, ``arc_easy``, ``arc_challenge``, ``sciq``,
    ``truthful_qa`` (``mc1_targets``), ``openbookqa``, ``trivia_qa`` (``rc.nocontext``). A string is
    looked up as a registered name first, so a folder that happens to be called ``sciq`` never replaces
    the benchmark; pass a ``pathlib.Path`` for such a folder.

    Args:
        name_or_names: A registered name, a local path (``.json`` / ``.jsonl`` / ``.parquet`` / ``.csv``
            file, a folder of such files, or a folder written by ``Dataset.save_to_disk``), an in-memory
            ``datasets.Dataset``, or a list of these (the results are concatenated; ``source`` tells
            the rows apart). Local and in-memory data must have the normalized schema, or the raw
            layout of the registered set named by ``schema``.
        n: At most this many rows per data set, drawn with ``seed`` and kept in their original order
            (a smaller ``n`` draws a subset of a larger one). ``None`` keeps every row.
        split: Split to read for registered names (default: each set's evaluation split, ``test`` or
            ``validation``) and for ``save_to_disk`` folders that hold several splits.
        seed: Seed of the ``n``-row draw.
        data_dir: Read registered names from this folder instead of the Hub: ``<data_dir>/<name>`` as a
            ``save_to_disk`` folder or a folder of data files, or ``<data_dir>/<name>.jsonl`` (``.json``,
            ``.parquet``, ``.csv``), in the raw Hub layout or already normalized. ``gsm8k-lite`` also
            looks for ``gsm8k``.
        schema: Registered name whose raw layout local / in-memory data has (``schema="arc_easy"``
            normalizes rows of ``allenai/ai2_arc``); ignored for data that already has the schema.
        cache_dir: ``cache_dir`` of ``datasets.load_dataset`` for Hub loads.
        token: Hub token for Hub loads.

    Returns:
        A ``datasets.Dataset`` with columns ``prompt``, ``answer``, ``choices``, ``label``, ``source``,
        ``id``.

    Raises:
        TypeError: If an argument has the wrong type (the message names the argument).
        ValueError: For an unknown name (the message lists the registered names), ``n <= 0``, an
            empty or repeated list entry, or data without the schema (the message names the missing
            columns and the required schema).
    """
    items = list(name_or_names) if isinstance(name_or_names, (list, tuple)) else [name_or_names]
    is_list = isinstance(name_or_names, (list, tuple))
    for i, item in enumerate(items):
        argument = f"name_or_names[{i}]" if is_list else "name_or_names"
        _check_type(
            item, (str, os.PathLike, datasets.Dataset), argument, "a name, a path or a datasets.Dataset"
        )
    if n is not None:
        _check_type(n, int, "n", "an int or None")
        if n <= 0:
            raise ValueError(f"n must be a positive number of rows per data set, got {n}.")
    _check_type(seed, int, "seed", "an int")
    if split is not None:
        _check_type(split, str, "split", "a str or None")
    if schema is not None:
        _check_type(schema, str, "schema", "a registered name (str) or None")
        EVAL_DATASETS.get(schema)  # raises ValueError listing the registered names
    if data_dir is not None:
        _check_type(data_dir, (str, os.PathLike), "data_dir", "a path or None")
    if cache_dir is not None:
        _check_type(cache_dir, (str, os.PathLike), "cache_dir", "a path or None")
    if token is not None:
        _check_type(token, (str, bool), "token", "a str, a bool or None")
    if not items:
        raise ValueError("name_or_names is an empty list; give at least one evaluation set.")
    names = [item for item in items if isinstance(item, str)]
    repeated = sorted({item for item in names if names.count(item) > 1})
    if repeated:
        raise ValueError(f"name_or_names lists {repeated} more than once; each set is loaded once.")

    local_dir = Path(data_dir).expanduser() if data_dir is not None else None
    if local_dir is not None and not local_dir.is_dir():
        raise ValueError(f"data_dir={str(data_dir)!r} is not a folder.")
    parts = []
    for item in items:
        if isinstance(item, datasets.Dataset):
            parts.append(_from_table(item, schema, "In-memory evaluation Dataset", n=n, seed=seed))
        elif isinstance(item, str) and item in EVAL_DATASETS:
            parts.append(
                _load_registered(
                    item,
                    n=n,
                    split=split,
                    seed=seed,
                    data_dir=local_dir,
                    cache_dir=None if cache_dir is None else str(cache_dir),
                    token=token,
                )
            )
        else:
            path = Path(item).expanduser()
            if not path.exists():
                raise ValueError(
                    f"Unknown evaluation dataset {str(item)!r}: not a registered name "
                    f"({', '.join(EVAL_DATASETS.names())}) and no such file or folder."
                )
            where = f"Evaluation data {str(path)!r}"
            parts.append(_from_table(_read_local(path, split), schema, where, n=n, seed=seed))
    return parts[0] if len(parts) == 1 else datasets.concatenate_datasets(parts)

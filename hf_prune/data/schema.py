"""The one row schema every evaluation set is normalized to, and its validator.

Multiple-choice and free-form sets share one layout so an evaluator (and a concatenation of several
sets) needs no per-set code:

========== ============ ==========================================================================
column     type         meaning
========== ============ ==========================================================================
prompt     str          the text shown to the model, ending where the answer starts
answer     str          the gold answer text (``choices[label]`` for multiple choice)
choices    list[str]    the options of a multiple-choice item; empty for free-form sets
label      int          index of the gold option in ``choices``; ``-1`` when ``choices`` is empty
source     str          the registered name of the set the row comes from
id         str          the row's id (the set's own id, else ``"<split>-<row index>"``)
========== ============ ==========================================================================
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import datasets

__all__ = ["EVAL_FEATURES", "EVAL_SCHEMA", "describe_schema", "validate_eval_schema"]

#: Column -> type of the normalized evaluation schema (the order is the column order of every result).
EVAL_SCHEMA: Mapping[str, str] = {
    "prompt": "str",
    "answer": "str",
    "choices": "list[str]",
    "label": "int",
    "source": "str",
    "id": "str",
}

#: The same schema as ``datasets`` features: every normalized dataset is cast to exactly these.
EVAL_FEATURES = datasets.Features(
    {
        "prompt": datasets.Value("string"),
        "answer": datasets.Value("string"),
        "choices": datasets.List(datasets.Value("string")),
        "label": datasets.Value("int64"),
        "source": datasets.Value("string"),
        "id": datasets.Value("string"),
    }
)

_STRING_DTYPES = frozenset({"string", "large_string"})
_INT_DTYPES = frozenset({"int8", "int16", "int32", "int64", "uint8", "uint16", "uint32"})
# An error lists this many bad rows; a whole broken column would otherwise make a huge message.
_MAX_REPORTED = 5


def describe_schema() -> str:
    """Return the required schema as one line, for error messages.

    Returns:
        ``"prompt (str), answer (str), choices (list[str]), label (int), source (str), id (str)"``.
    """
    return ", ".join(f"{col} ({kind})" for col, kind in EVAL_SCHEMA.items())


def _feature_kind(feature: Any) -> str:
    """Name a ``datasets`` feature in the vocabulary of :data:`EVAL_SCHEMA` (for messages)."""
    if isinstance(feature, datasets.Value):
        if feature.dtype in _STRING_DTYPES:
            return "str"
        if feature.dtype in _INT_DTYPES:
            return "int"
        return feature.dtype
    if isinstance(feature, (datasets.List, datasets.LargeList)):
        inner = feature.feature
        # JSON readers type an all-empty list column as list[null]; it casts cleanly to list[str].
        if isinstance(inner, datasets.Value) and inner.dtype == "null":
            return "list[str]"
        return f"list[{_feature_kind(inner)}]"
    if isinstance(feature, dict):
        return "dict"
    return type(feature).__name__


def _python_kind(value: Any) -> str:
    """Name a Python value in the vocabulary of :data:`EVAL_SCHEMA` (for messages)."""
    if isinstance(value, str):
        return "str"
    if isinstance(value, bool):  # bool is an int subclass, but True is no label
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, (list, tuple)):
        return "list[str]" if all(isinstance(v, str) for v in value) else "list"
    return type(value).__name__


def _schema_error(where: str, missing: Sequence[str], wrong: Sequence[str]) -> ValueError:
    parts = []
    if missing:
        parts.append(f"missing column(s) {list(missing)}")
    parts.extend(wrong)
    return ValueError(
        f"{where} does not have the evaluation schema: {'; '.join(parts)}. "
        f"Required schema: {describe_schema()}."
    )


def _check_rows(rows: Sequence[Mapping[str, Any]], start: int, problems: list[str]) -> None:
    """Check the values of rows whose types are already right; append problems (row index first)."""
    for offset, row in enumerate(rows):
        if len(problems) > _MAX_REPORTED:
            return
        i = start + offset
        nulls = [col for col in EVAL_SCHEMA if row[col] is None]
        if nulls:
            problems.append(f"row {i}: {nulls} is null")
            continue
        choices, label = list(row["choices"]), row["label"]
        if any(c is None for c in choices):
            problems.append(f"row {i}: choices holds a null")
        elif not row["prompt"].strip():
            problems.append(f"row {i}: prompt is empty")
        elif not choices and label != -1:
            problems.append(f"row {i}: label={label} but choices is empty (free-form rows need label=-1)")
        elif choices and not 0 <= label < len(choices):
            problems.append(
                f"row {i}: label={label} is outside 0..{len(choices) - 1} for {len(choices)} choices"
            )
        elif choices and row["answer"] != choices[label]:
            # An answer that disagrees with its label makes the row's gold ambiguous.
            problems.append(
                f"row {i}: answer={row['answer']!r} differs from choices[{label}]={choices[label]!r}"
            )


def _raise_problems(where: str, problems: list[str]) -> None:
    if problems:
        shown = problems[:_MAX_REPORTED]
        more = " (and more)" if len(problems) > _MAX_REPORTED else ""
        raise ValueError(
            f"{where} has the evaluation columns but invalid values: {'; '.join(shown)}{more}. "
            f"Required schema: {describe_schema()}; label indexes choices, or is -1 for free-form rows."
        )


def _validate_table(data: datasets.Dataset, where: str) -> datasets.Dataset:
    features = data.features
    missing = [col for col in EVAL_SCHEMA if col not in features]
    wrong = [
        f"column {col!r} is {_feature_kind(features[col])}, expected {kind}"
        for col, kind in EVAL_SCHEMA.items()
        if col in features and _feature_kind(features[col]) != kind
    ]
    if missing or wrong:
        raise _schema_error(where, missing, wrong)
    table = data.select_columns(list(EVAL_SCHEMA))
    problems: list[str] = []
    batch_size = 1000
    for start in range(0, len(table), batch_size):
        batch = table[start : start + batch_size]
        rows = [dict(zip(batch, values, strict=True)) for values in zip(*batch.values(), strict=True)]
        _check_rows(rows, start, problems)
    _raise_problems(where, problems)
    # Casting rewrites every row; skip it when the types already match (the usual case).
    return table if table.features == EVAL_FEATURES else table.cast(EVAL_FEATURES)


def _validate_rows(data: Sequence[Any], where: str) -> datasets.Dataset:
    for i, row in enumerate(data):
        if not isinstance(row, Mapping):
            raise TypeError(f"{where}: row {i} is a {type(row).__name__}, expected a dict.")
        missing = [col for col in EVAL_SCHEMA if col not in row]
        wrong = [
            f"column {col!r} is {_python_kind(row[col])}, expected {kind}"
            for col, kind in EVAL_SCHEMA.items()
            if col in row and row[col] is not None and _python_kind(row[col]) != kind
        ]
        if missing or wrong:
            raise _schema_error(f"{where} (row {i})", missing, wrong)
    problems: list[str] = []
    _check_rows(data, 0, problems)
    _raise_problems(where, problems)
    columns = {col: [row[col] for row in data] for col in EVAL_SCHEMA}
    columns["choices"] = [list(c) for c in columns["choices"]]
    return datasets.Dataset.from_dict(columns, features=EVAL_FEATURES)


def validate_eval_schema(
    data: datasets.Dataset | Sequence[Mapping[str, Any]], *, where: str = "Evaluation data"
) -> datasets.Dataset:
    """Check that ``data`` follows :data:`EVAL_SCHEMA` and return it as a normalized ``Dataset``.

    Extra columns are allowed and dropped from the result, so normalized sets from different places
    concatenate. Beyond the column types, every row is checked: no nulls, a non-blank prompt, ``label``
    indexes ``choices`` and ``answer == choices[label]`` for multiple choice, ``label == -1`` when
    ``choices`` is empty.

    Args:
        data: A ``datasets.Dataset`` or a list of row dicts.
        where: How error messages name ``data`` (a file path, a Hub repo).

    Returns:
        A ``datasets.Dataset`` with exactly the schema's columns, in schema order, typed as
        :data:`EVAL_FEATURES`.

    Raises:
        TypeError: If ``data`` is neither a ``Dataset`` nor a list of dicts.
        ValueError: If a column is missing or has the wrong type (the message names the columns and the
            required schema), or a row's values are inconsistent (the message names the rows).
    """
    if not isinstance(where, str):
        raise TypeError(f"where must be a str, got {type(where).__name__}.")
    if isinstance(data, datasets.Dataset):
        return _validate_table(data, where)
    if isinstance(data, datasets.DatasetDict):
        raise TypeError(
            f"data must be one split, got a DatasetDict with splits {list(data)}; pass e.g. data['train']."
        )
    if isinstance(data, (list, tuple)):
        return _validate_rows(data, where)
    raise TypeError(f"data must be a datasets.Dataset or a list of dicts, got {type(data).__name__}.")

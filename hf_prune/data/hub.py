"""Share normalized evaluation sets through Hub dataset repos.

A repo written by :func:`upload_dataset_to_hub` holds exactly the columns of
:data:`~hf_prune.data.EVAL_SCHEMA`, so :func:`load_dataset_from_hub` (or
``load_eval_dataset(load_dataset_from_hub(repo))``) reads it back with no normalizer.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import datasets
from huggingface_hub import constants
from huggingface_hub.utils import HFValidationError, validate_repo_id

from hf_prune.data.schema import validate_eval_schema

__all__ = ["DEFAULT_COMMIT_MESSAGE", "load_dataset_from_hub", "upload_dataset_to_hub"]

#: Commit message of :func:`upload_dataset_to_hub` when none is given.
DEFAULT_COMMIT_MESSAGE = "Upload evaluation data with hf_prune"


def _check_repo_id(repo_id: Any) -> None:
    if not isinstance(repo_id, str):
        raise TypeError(f"repo_id must be a str like 'user/name', got {type(repo_id).__name__}.")
    try:
        validate_repo_id(repo_id)
    except HFValidationError as exc:
        raise ValueError(f"repo_id={repo_id!r} is not a valid Hub repo id: {exc}") from None


def _check_optional_str(value: Any, argument: str) -> None:
    if value is not None and not isinstance(value, str):
        raise TypeError(f"{argument} must be a str or None, got {type(value).__name__}.")


def load_dataset_from_hub(
    repo_id: str, *, split: str = "train", revision: str | None = None, token: str | bool | None = None
) -> datasets.Dataset:
    """Load a Hub dataset repo that holds evaluation data in the normalized schema.

    Args:
        repo_id: The dataset repo, ``"user/name"``.
        split: Split to load.
        revision: Branch, tag or commit (``None``: the default branch).
        token: Hub token (``None``: the logged-in user's, if any).

    Returns:
        The split as a ``datasets.Dataset`` with exactly the schema's columns (extra columns dropped).

    Raises:
        TypeError: If an argument has the wrong type.
        ValueError: If ``repo_id`` is malformed, or the data lacks the schema; the message names the repo,
            the missing or wrongly typed columns and the required schema.
    """
    _check_repo_id(repo_id)
    if not isinstance(split, str):
        raise TypeError(f"split must be a str, got {type(split).__name__}.")
    _check_optional_str(revision, "revision")
    if token is not None and not isinstance(token, (str, bool)):
        raise TypeError(f"token must be a str, a bool or None, got {type(token).__name__}.")
    data = datasets.load_dataset(repo_id, split=split, revision=revision, token=token)
    at = f"@{revision}" if revision else ""
    return validate_eval_schema(data, where=f"Hub dataset {repo_id}{at} (split {split!r})")


def upload_dataset_to_hub(
    data: datasets.Dataset | Sequence[Mapping[str, Any]],
    repo_id: str,
    *,
    private: bool = True,
    token: str | None = None,
    split: str = "train",
    commit_message: str = DEFAULT_COMMIT_MESSAGE,
) -> str:
    """Validate evaluation data against the schema, then push it to a Hub dataset repo.

    Nothing is sent when validation fails. Only the schema's columns are pushed (extra columns are
    dropped), typed as :data:`~hf_prune.data.EVAL_FEATURES`, so :func:`load_dataset_from_hub` reads
    the repo back unchanged.

    Args:
        data: A ``datasets.Dataset`` or a list of row dicts in the normalized schema (for example the
            result of :func:`~hf_prune.data.load_eval_dataset`).
        repo_id: The dataset repo, ``"user/name"`` (created if missing).
        private: Create the repo as private (an existing repo keeps its visibility).
        token: Hub token (``None``: the logged-in user's).
        split: Split name the rows are stored under.
        commit_message: Message of the upload commit.

    Returns:
        The dataset repo's URL (``https://huggingface.co/datasets/user/name``).

    Raises:
        TypeError: If an argument has the wrong type.
        ValueError: If ``repo_id`` is malformed, ``data`` is empty, or ``data`` lacks the schema (the
            message names the columns and the required schema).
    """
    _check_repo_id(repo_id)
    if not isinstance(private, bool):
        raise TypeError(f"private must be a bool, got {type(private).__name__}.")
    _check_optional_str(token, "token")
    for argument, value in (("split", split), ("commit_message", commit_message)):
        if not isinstance(value, str) or not value:
            raise TypeError(f"{argument} must be a non-empty str, got {value!r}.")
    table = validate_eval_schema(data, where="upload_dataset_to_hub data")
    if len(table) == 0:
        raise ValueError(f"upload_dataset_to_hub data has no rows; nothing to push to {repo_id!r}.")
    info = table.push_to_hub(
        repo_id, split=split, private=private, token=token, commit_message=commit_message
    )
    # CommitInfo.repo_url carries the namespace the Hub resolved (repo_id may omit the user).
    repo_url = getattr(info, "repo_url", None)
    return str(repo_url) if repo_url else f"{constants.ENDPOINT}/datasets/{repo_id}"

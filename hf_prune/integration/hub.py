"""Publishing to the Hugging Face Hub with hf_prune's own model card.

transformers' ``push_to_hub`` overwrites ``README.md`` with a default card, so hf_prune uploads
through ``huggingface_hub.HfApi`` itself: ``create_repo`` (``exist_ok``), ``create_branch`` when a
``revision`` other than ``main`` is asked for, then ``upload_folder`` (one commit; huggingface_hub
decides per file between a regular git blob and LFS / Xet storage, and retries transient HTTP
errors of its pre-upload and LFS calls with exponential backoff). The card's metadata is validated
locally before anything is sent.

This module uploads a saved folder; it does not import :class:`~hf_prune.PrunedModel`
(``PrunedModel.push_to_hub`` saves to a temporary folder, re-renders the card for the repo and calls
:func:`push_checkpoint`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

DEFAULT_COMMIT_MESSAGE = "Upload pruned model (hf_prune)"


def check_repo_id(repo_id: Any) -> str:
    """Return ``repo_id`` if it is a valid Hub model repo id.

    Args:
        repo_id: The id to check (``"user/model"``).

    Raises:
        TypeError: If it is not a non-empty string.
        ValueError: If the Hub would reject it.
    """
    if not isinstance(repo_id, str) or not repo_id.strip():
        raise TypeError(f"repo_id must be a non-empty string like 'user/model', got {repo_id!r}")
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError as err:
        raise ValueError(f"repo_id={repo_id!r} is not a valid Hub repo id: {err}") from None
    return repo_id


def push_checkpoint(
    folder: str | os.PathLike[str],
    repo_id: str,
    *,
    private: bool | None = None,
    token: str | bool | None = None,
    revision: str | None = None,
    commit_message: str = DEFAULT_COMMIT_MESSAGE,
    commit_description: str | None = None,
    create_pr: bool = False,
    endpoint: str | None = None,
) -> Any:
    """Upload a saved hf_prune checkpoint folder as it is (the folder is only read).

    Args:
        folder: The checkpoint folder (``pruning_config.json``, ``config.json``, weights, ``README.md``).
        repo_id: Target model repo (created if missing).
        private: Create the repo private (ignored when it exists).
        token: Hub token (default: the locally saved one).
        revision: Branch to commit to (created from ``main`` if missing).
        commit_message: Commit message.
        commit_description: Commit description.
        create_pr: Open a pull request instead of committing to the branch.
        endpoint: Hub endpoint (default: ``HF_ENDPOINT`` / huggingface.co).

    Returns:
        The ``huggingface_hub.CommitInfo``.

    Raises:
        FileNotFoundError: If the folder is not an hf_prune checkpoint or has no ``README.md``.
        ValueError: If the repo id or the card's metadata is invalid.
    """
    from huggingface_hub import HfApi

    from hf_prune.config import CONFIG_NAME
    from hf_prune.integration.card import validate_card_metadata

    repo_id = check_repo_id(repo_id)
    path = Path(folder).expanduser()
    if not (path / CONFIG_NAME).is_file():
        raise FileNotFoundError(f"{str(path)!r} is not an hf_prune checkpoint folder (no {CONFIG_NAME}).")
    if not (path / "README.md").is_file():
        raise FileNotFoundError(
            f"{str(path)!r} has no README.md; re-render it with `hf-prune card {path}` before pushing."
        )
    if not commit_message:
        raise ValueError("commit_message must not be empty")
    # Fail before any network call: the Hub rejects a commit whose README.md metadata is invalid.
    validate_card_metadata(path / "README.md")

    api = HfApi(token=token, endpoint=endpoint, library_name="hf_prune")
    api.create_repo(repo_id, private=private, exist_ok=True)
    if revision is not None and revision != "main" and not create_pr:
        api.create_branch(repo_id, branch=revision, exist_ok=True)
    return api.upload_folder(
        repo_id=repo_id,
        folder_path=path,
        revision=revision,
        commit_message=commit_message,
        commit_description=commit_description,
        create_pr=create_pr,
        # Stray editor / OS files never belong in a model repo.
        ignore_patterns=[".*", "*/.*", "__pycache__/*"],
    )

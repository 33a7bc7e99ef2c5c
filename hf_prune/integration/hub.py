"""Publishing to the Hugging Face Hub with hf_prune's own model card."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hf_prune.integration.pruned_model import PrunedModel


def push_pruned(
    pruned: PrunedModel,
    repo_id: str,
    *,
    tokenizer: Any = None,
    private: bool | None = None,
    token: str | bool | None = None,
    revision: str | None = None,
    commit_message: str = "Upload pruned model (hf_prune)",
) -> Any:
    """Save ``pruned`` to a temporary folder (with our card) and upload it with ``HfApi.upload_folder``.

    Args:
        pruned: The model.
        repo_id: Target repo (created if missing).
        tokenizer: Uploaded alongside when given.
        private: Create the repo private.
        token: Hub token.
        revision: Branch to commit to.
        commit_message: Commit message.

    Returns:
        The ``huggingface_hub`` commit info.
    """
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    with tempfile.TemporaryDirectory() as tmp:
        folder = pruned.save_pretrained(Path(tmp) / "model", tokenizer=tokenizer)
        api.create_repo(repo_id, private=private, exist_ok=True)
        return api.upload_folder(
            repo_id=repo_id, folder_path=folder, revision=revision, commit_message=commit_message
        )

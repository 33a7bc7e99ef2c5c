"""Pruning and calibration configs: dataclasses that validate themselves and round-trip through JSON.

``PruningConfig`` mirrors PEFT's ``PeftConfig``: every method is a ``@dataclass`` subclass with a
``method`` name, registered explicitly in :mod:`hf_prune.methods`, saved as ``pruning_config.json`` and
stamped with the hf_prune version that wrote it.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from hf_prune.registry import Registry
from hf_prune.utils import atomic_write_text
from hf_prune.version import __version__

CONFIG_NAME = "pruning_config.json"

#: Keys that a checkpoint's ``pruning_config.json`` carries besides the config fields.
CHECKPOINT_KEYS = ("structure", "report", "calibration", "base_model")

C = TypeVar("C", bound="PruningConfig")

CONFIGS: Registry[type[PruningConfig]] = Registry("pruning method")


def register_config(cls: type[C]) -> type[C]:
    """Register a ``PruningConfig`` subclass under its ``method`` name.

    Args:
        cls: The config class; its ``method`` class attribute is the key.

    Returns:
        ``cls`` unchanged.
    """
    CONFIGS.register(cls.method, cls)
    return cls


def check_range(
    name: str,
    value: Any,
    low: float | None = None,
    high: float | None = None,
    *,
    low_inclusive: bool = True,
    high_inclusive: bool = True,
    integer: bool = False,
) -> None:
    """Raise a ``ValueError``/``TypeError`` naming ``name`` unless ``value`` lies in the given range.

    Args:
        name: Field name shown in the message.
        value: The value to check.
        low: Lower bound, or ``None``.
        high: Upper bound, or ``None``.
        low_inclusive: Whether ``low`` itself is allowed.
        high_inclusive: Whether ``high`` itself is allowed.
        integer: Require an ``int`` (``bool`` is refused).
    """
    if integer:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name} must be an int, got {value!r} ({type(value).__name__}).")
    elif isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {value!r} ({type(value).__name__}).")
    if isinstance(value, float) and math.isnan(value):
        raise ValueError(f"{name} must not be NaN.")
    lo_ok = low is None or (value >= low if low_inclusive else value > low)
    hi_ok = high is None or (value <= high if high_inclusive else value < high)
    if not (lo_ok and hi_ok):
        lb = "[" if low_inclusive else "("
        hb = "]" if high_inclusive else ")"
        rng = f"{lb}{'-inf' if low is None else low}, {'inf' if high is None else high}{hb}"
        raise ValueError(f"{name} must be in {rng}, got {value!r}.")


def _check_patterns(name: str, value: Any) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return [value]
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) and v for v in value):
        return list(value)
    raise TypeError(
        f"{name} must be a module-name pattern or a list of them (e.g. ['q_proj', 'mlp.down_proj']), "
        f"got {value!r}."
    )


@dataclass
class PruningConfig:
    """Base class of every method's config.

    Subclasses are dataclasses that set the class attribute ``method`` and validate their fields in
    ``__post_init__`` (calling ``super().__post_init__()``).

    Args:
        target_modules: Module-name patterns to prune. A pattern matches a module whose full name equals
            it, ends with ``"." + pattern``, or fully matches it as a regular expression. ``None`` means
            every projection inside the transformer blocks (embeddings and ``lm_head`` excluded).
        exclude_modules: Patterns (same syntax) removed from the targets. A pattern that matches no
            module of the model is an error, never a silent no-op.
    """

    method: ClassVar[str] = "base"
    #: The paper the method follows (shown in the model card).
    paper: ClassVar[str] = ""

    target_modules: list[str] | str | None = field(
        default=None, metadata={"help": "Module-name patterns to prune (default: all block projections)."}
    )
    exclude_modules: list[str] | str | None = field(
        default=None, metadata={"help": "Module-name patterns never pruned."}
    )

    def __post_init__(self) -> None:
        self.target_modules = _check_patterns("target_modules", self.target_modules)
        self.exclude_modules = _check_patterns("exclude_modules", self.exclude_modules)

    # ----------------------------------------------------------------------------------- serialization
    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serializable dict with ``method`` and ``hf_prune_version`` stamped in."""
        out: dict[str, Any] = {"method": self.method, "hf_prune_version": __version__}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if dataclasses.is_dataclass(value) and not isinstance(value, type):
                value = {"type": type(value).__name__, **dataclasses.asdict(value)}
            out[f.name] = value
        return out

    def to_json_string(self) -> str:
        """Return the config as pretty JSON."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def _decode_field(cls, name: str, value: Any) -> Any:
        """Turn a JSON value back into the field's Python value (subclasses decode nested configs)."""
        return value

    @classmethod
    def from_dict(cls: type[C], data: dict[str, Any]) -> C:
        """Build the right subclass from a dict written by :meth:`to_dict`.

        Unknown keys (written by a newer hf_prune) produce a warning and are ignored, so old installs
        can still read new checkpoints.

        Args:
            data: The dict; its ``method`` selects the subclass.

        Raises:
            ValueError: If ``method`` is missing or unknown, or does not match ``cls``.
        """
        if not isinstance(data, dict):
            raise TypeError(f"A pruning config must be a JSON object, got {type(data).__name__}.")
        method = data.get("method")
        if method is None:
            raise ValueError(f"The pruning config has no 'method' key; keys found: {sorted(data)}.")
        target = CONFIGS.get(method)
        if cls is not PruningConfig and not issubclass(target, cls):
            raise ValueError(f"The file holds a {method!r} config, which is not a {cls.__name__}.")
        names = {f.name for f in dataclasses.fields(target)}
        ignored = {"method", "hf_prune_version", *CHECKPOINT_KEYS}
        unknown = sorted(k for k in data if k not in names and k not in ignored)
        if unknown:
            warnings.warn(
                f"Ignoring unknown {method!r} config keys {unknown} (written by hf_prune "
                f"{data.get('hf_prune_version', '?')}; this is {__version__}).",
                stacklevel=2,
            )
        kwargs = {k: target._decode_field(k, v) for k, v in data.items() if k in names}
        return target(**kwargs)  # type: ignore[return-value]

    def save_pretrained(self, save_directory: str | os.PathLike[str]) -> Path:
        """Write ``pruning_config.json`` into ``save_directory``.

        Args:
            save_directory: Folder (created if missing).

        Returns:
            The written file's path.
        """
        folder = Path(save_directory)
        if folder.exists() and not folder.is_dir():
            raise ValueError(f"save_directory {str(folder)!r} exists and is not a folder.")
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / CONFIG_NAME
        return atomic_write_text(path, self.to_json_string())  # never a half-written config

    @classmethod
    def from_pretrained(
        cls: type[C],
        pretrained: str | os.PathLike[str],
        *,
        revision: str | None = None,
        token: str | bool | None = None,
        cache_dir: str | None = None,
    ) -> C:
        """Load a config from a folder, a ``pruning_config.json`` file or a Hub repo id.

        Args:
            pretrained: Local folder / file path, or a Hub repo id (``"me/llama-wanda-50"``).
            revision: Hub revision.
            token: Hub token.
            cache_dir: Hub cache folder.

        Raises:
            FileNotFoundError: If no ``pruning_config.json`` exists there.
            ValueError: If the file is not valid JSON or not a known config.
        """
        path = resolve_file(pretrained, CONFIG_NAME, revision=revision, token=token, cache_dir=cache_dir)
        return cls.from_dict(read_json(path, what="pruning config"))

    def push_to_hub(
        self,
        repo_id: str,
        *,
        private: bool | None = None,
        token: str | bool | None = None,
        revision: str | None = None,
        commit_message: str = "Upload pruning_config.json",
    ) -> Any:
        """Upload ``pruning_config.json`` to a Hub repo (created if missing).

        Args:
            repo_id: Target repo.
            private: Create the repo private.
            token: Hub token.
            revision: Branch to commit to.
            commit_message: Commit message.

        Returns:
            The ``huggingface_hub`` commit info.
        """
        from huggingface_hub import HfApi

        api = HfApi(token=token)
        api.create_repo(repo_id, private=private, exist_ok=True)
        return api.upload_file(
            path_or_fileobj=self.to_json_string().encode(),
            path_in_repo=CONFIG_NAME,
            repo_id=repo_id,
            revision=revision,
            commit_message=commit_message,
        )

    def describe(self) -> dict[str, Any]:
        """Return the non-default fields, for compact display in reports and cards."""
        return {k: v for k, v in self.to_dict().items() if k != "hf_prune_version"}


def read_json(path: str | os.PathLike[str], *, what: str) -> dict[str, Any]:
    """Read a JSON object with a clear error on corruption.

    Args:
        path: The file.
        what: What the file is, for the message (``"pruning config"``).

    Raises:
        ValueError: If the file is not valid JSON or not an object.
    """
    try:
        data = json.loads(Path(path).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"The {what} file {str(path)!r} is corrupted (not valid JSON: {err}).") from None
    if not isinstance(data, dict):
        raise ValueError(f"The {what} file {str(path)!r} must hold a JSON object, got {type(data).__name__}.")
    return data


def resolve_file(
    pretrained: str | os.PathLike[str],
    filename: str,
    *,
    revision: str | None = None,
    token: str | bool | None = None,
    cache_dir: str | None = None,
) -> Path:
    """Find ``filename`` in a local folder, or download it from a Hub repo.

    Args:
        pretrained: A folder, the file itself, or a Hub repo id.
        filename: File to find in the folder / repo.
        revision: Hub revision.
        token: Hub token.
        cache_dir: Hub cache folder.

    Raises:
        FileNotFoundError: If the file is missing locally or on the Hub.
    """
    local = Path(pretrained)
    if local.is_file():
        return local
    if local.is_dir():
        candidate = local / filename
        if not candidate.is_file():
            raise FileNotFoundError(f"No {filename} in {str(local)!r}: not an hf_prune checkpoint.")
        return candidate
    if os.path.isabs(str(pretrained)) or str(pretrained).startswith((".", "~")):
        raise FileNotFoundError(f"Path {str(pretrained)!r} does not exist.")
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, RepositoryNotFoundError

    try:
        return Path(
            hf_hub_download(str(pretrained), filename, revision=revision, token=token, cache_dir=cache_dir)
        )
    except (EntryNotFoundError, RepositoryNotFoundError) as err:
        raise FileNotFoundError(f"No {filename} in Hub repo {str(pretrained)!r}: {err}") from None


@dataclass
class CalibrationConfig:
    """Which data to calibrate on, and how much of it.

    Args:
        dataset: A registered name (``"wikitext2"``, ``"c4"``, ``"mmlu"``, ``"hellaswag"``,
            ``"winogrande"``, ``"arc_easy"``, ``"arc_challenge"``, ``"gsm8k"``), a local path (text,
            JSON, JSONL or parquet), a ``datasets.Dataset``, or a list of strings.
        nsamples: Number of calibration windows.
        seqlen: Tokens per window.
        seed: Seed of the random window positions.
        batch_size: Windows per forward pass.
        split: Dataset split to read (Hub and ``datasets`` inputs).
        text_column: Column with the text (default: ``"text"``, or the registered set's own formatting;
            for image-text data ``"text"``, else ``"caption"``).
        image_column: Column with the image of image-text data (LLaVA calibration): in a JSONL file (or a
            folder of them, e.g. ``captions.jsonl`` beside its images) a path relative to that file,
            in a ``datasets.Dataset`` a PIL image. Default ``None``: ``"image"`` is used when the data
            has that column (or the folder holds a ``captions.jsonl``); setting it forces image-text
            mode and a missing column is an error.
        text_pair_column: Column with the second text of sentence-pair classification data (MRPC,
            QNLI ...), encoded as ``(text, text_pair)``; needs ``label_column``.
        label_column: Column with integer class labels (float values for regression). Setting it
            makes :func:`hf_prune.calibration.data.build_calibration_batches` return classification
            batches: the first ``nsamples`` rows of the seeded shuffle of a ``datasets.Dataset`` or a
            local CSV / JSON / JSONL / parquet file, padded / truncated to ``seqlen`` tokens, with
            ``labels``. Task-loss methods (``FisherMaskConfig`` on a classifier) need it.
    """

    dataset: Any = field(default="wikitext2", metadata={"help": "Name, local path, Dataset or list of str."})
    nsamples: int = field(default=128, metadata={"help": "Number of calibration windows."})
    seqlen: int = field(default=2048, metadata={"help": "Tokens per window."})
    seed: int = field(default=0, metadata={"help": "Seed of window sampling."})
    batch_size: int = field(default=1, metadata={"help": "Windows per forward pass."})
    split: str = field(default="train", metadata={"help": "Dataset split."})
    text_column: str | None = field(default=None, metadata={"help": "Text column of a table dataset."})
    image_column: str | None = field(
        default=None, metadata={"help": "Image column of image-text data (default: 'image' when present)."}
    )
    text_pair_column: str | None = field(
        default=None, metadata={"help": "Second-text column of sentence-pair classification data."}
    )
    label_column: str | None = field(
        default=None, metadata={"help": "Label column: makes labelled classification batches."}
    )

    def __post_init__(self) -> None:
        check_range("nsamples", self.nsamples, 1, integer=True)
        check_range("seqlen", self.seqlen, 2, integer=True)
        check_range("seed", self.seed, 0, integer=True)
        check_range("batch_size", self.batch_size, 1, integer=True)
        if isinstance(self.dataset, os.PathLike):
            self.dataset = os.fspath(self.dataset)
        for name in ("text_column", "image_column", "text_pair_column", "label_column"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value):
                raise ValueError(f"{name} must be a non-empty column name or None, got {value!r}.")
        if self.image_column is not None and isinstance(self.dataset, (list, tuple)):
            raise ValueError(
                f"image_column={self.image_column!r} needs image-text data (a JSONL file or folder of "
                "image paths + captions, or a datasets.Dataset with an image column), not a list of strings."
            )
        if self.text_pair_column is not None and self.label_column is None:
            raise ValueError(
                f"text_pair_column={self.text_pair_column!r} needs label_column: sentence pairs are encoded "
                "only for labelled classification batches. Set CalibrationConfig(label_column=...)."
            )
        if self.label_column is not None:
            if self.image_column is not None:
                raise ValueError(
                    f"label_column={self.label_column!r} builds text classification batches and cannot be "
                    f"combined with image_column={self.image_column!r}."
                )
            if isinstance(self.dataset, (list, tuple)):
                raise ValueError(
                    f"label_column={self.label_column!r} needs a table (a datasets.Dataset or a local CSV / "
                    "JSON / JSONL / parquet file), not a list of strings."
                )
        if isinstance(self.dataset, (list, tuple)):
            if not self.dataset or not all(isinstance(t, str) for t in self.dataset):
                raise TypeError("dataset given as a list must be a non-empty list of strings.")
        elif not isinstance(self.dataset, str):
            try:
                import datasets
            except ImportError:  # pragma: no cover - datasets is a core dependency
                datasets = None
            if datasets is None or not isinstance(self.dataset, datasets.Dataset):
                raise TypeError(
                    "dataset must be a registered name, a local path, a datasets.Dataset or a list of "
                    f"strings, got {type(self.dataset).__name__}."
                )

    def describe(self) -> dict[str, Any]:
        """Return a JSON-friendly description (in-memory data is summarized, not stored)."""
        if isinstance(self.dataset, str):
            ds: Any = self.dataset
        elif isinstance(self.dataset, (list, tuple)):
            ds = f"<list of {len(self.dataset)} texts>"
        else:
            ds = f"<datasets.Dataset with {len(self.dataset)} rows>"
        return {
            "dataset": ds,
            "nsamples": self.nsamples,
            "seqlen": self.seqlen,
            "seed": self.seed,
            "batch_size": self.batch_size,
            "split": self.split,
            "text_column": self.text_column,
            "image_column": self.image_column,
            "text_pair_column": self.text_pair_column,
            "label_column": self.label_column,
        }

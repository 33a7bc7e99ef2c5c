"""The checkpoint format (DESIGN §4): atomic save and exact, pickle-free reload of pruned structure.

This module is the bottom of ``hf_prune.integration``: it reads and writes plain data (the model, the
pruning config, the report, the structure record, the calibration description) and imports nothing
above it: not :class:`~hf_prune.PrunedModel`, not the model card, the Hub code or the exporters. The
wrapper on top gathers its data and calls :func:`save_checkpoint`; loading returns a
:class:`LoadedCheckpoint` that the wrapper (``AutoPrunedModel*``) wraps. Exporters to other formats
(:mod:`hf_prune.integration.export`) may use :func:`atomic_folder` and :data:`SAFE_WEIGHTS_NAME` from here.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from transformers import PreTrainedModel
from transformers.models.auto.configuration_auto import CONFIG_MAPPING

from hf_prune.config import CONFIG_NAME, PruningConfig, read_json
from hf_prune.report import PruningReport
from hf_prune.surgery.offload import save_weights_streaming
from hf_prune.surgery.structure import (
    apply_structure,
    config_dict_for_save,
    homogeneous_config_dict,
    read_structure,
)

logger = logging.getLogger(__name__)

SAFE_WEIGHTS_NAME = "model.safetensors"
SAFE_WEIGHTS_INDEX_NAME = "model.safetensors.index.json"


def _swap_into_place(tmp: Path, target: Path) -> None:
    """Move the finished ``tmp`` folder to ``target``, replacing an old folder without a gap in validity."""
    if target.exists():
        if not target.is_dir():
            raise ValueError(f"save_directory {str(target)!r} exists and is not a folder.")
        backup = target.with_name(f".{target.name}.old-{uuid.uuid4().hex[:8]}")
        os.replace(target, backup)
        try:
            os.replace(tmp, target)
        except BaseException:
            os.replace(backup, target)  # put the old checkpoint back
            raise
        shutil.rmtree(backup, ignore_errors=True)
    else:
        os.replace(tmp, target)


@contextmanager
def atomic_folder(save_directory: str | os.PathLike[str]) -> Iterator[Path]:
    """Write a folder atomically: yield a temporary folder beside the target, swap it in on success.

    On an error inside the ``with`` block the temporary folder is deleted and an existing target is
    left untouched, so readers never see a half-written folder.

    Args:
        save_directory: The destination folder (its parent is created).

    Yields:
        The temporary folder to write into.
    """
    target = Path(save_directory).expanduser().resolve()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        yield tmp
        _swap_into_place(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def checkpoint_record(
    model: PreTrainedModel,
    *,
    pruning_config: PruningConfig | None,
    report: PruningReport,
    calibration: dict[str, Any] | None,
    base_model: str | None,
) -> dict[str, Any]:
    """Return ``pruning_config.json``'s content: the method's config, the structure, the report.

    Args:
        model: The pruned model (the structure is read off its modules).
        pruning_config: The method's config, or ``None`` for direct (custom) surgery.
        report: The pruning report.
        calibration: Description of the calibration data, for the card.
        base_model: Name or path of the unpruned model.
    """
    record = pruning_config.to_dict() if pruning_config else {"method": "custom"}
    record.update(
        {
            "structure": read_structure(model),
            "report": report.to_dict(),
            "calibration": calibration,
            "base_model": base_model or None,
        }
    )
    return record


def save_checkpoint(
    model: PreTrainedModel,
    save_directory: str | os.PathLike[str],
    *,
    pruning_config: PruningConfig | None = None,
    report: PruningReport,
    calibration: dict[str, Any] | None = None,
    base_model: str | None = None,
    tokenizer: Any = None,
    max_shard_size: str | int = "5GB",
    card: Callable[[Path, dict[str, Any]], None] | None = None,
) -> Path:
    """Write a checkpoint folder atomically from plain data.

    Args:
        model: The pruned ``PreTrainedModel`` (masks are baked into the saved weights).
        save_directory: Destination folder.
        pruning_config: The method's config (``None``: ``{"method": "custom"}``).
        report: The pruning report (its totals should be current).
        calibration: Calibration description.
        base_model: Name or path of the unpruned model.
        tokenizer: Tokenizer / processor saved alongside, if given. A plain callable without
            ``save_pretrained`` (a test stand-in) is skipped.
        max_shard_size: Largest weight shard (bytes or ``"5GB"``); the save holds one tensor in memory
            at a time whatever the shard size.
        card: Called as ``card(folder, record)`` with the temporary folder and the
            ``pruning_config.json`` content, after everything else is written (the model card
            renderer; ``None`` writes no card).

    Returns:
        The destination folder.
    """
    with atomic_folder(save_directory) as tmp:
        if not getattr(model.config, "architectures", None):
            # transformers fills this in during save_pretrained, after we have built config.json.
            model.config.architectures = [type(model).__name__]
        config_data = config_dict_for_save(model)
        # One tensor in memory at a time: no masked copy of every weight, offloaded weights streamed
        # from disk. Keys are the in-memory names (what save_pretrained(save_original_format=False)
        # writes), which both our loader and transformers' read.
        save_weights_streaming(model, tmp, max_shard_size)
        generation = getattr(model, "generation_config", None)
        if generation is not None and model.can_generate():
            generation.save_pretrained(tmp)
        (tmp / "config.json").write_text(json.dumps(config_data, indent=2, sort_keys=True) + "\n")
        record = checkpoint_record(
            model,
            pruning_config=pruning_config,
            report=report,
            calibration=calibration,
            base_model=base_model,
        )
        (tmp / CONFIG_NAME).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
        save_preprocessor(tokenizer, tmp)
        if card is not None:
            card(tmp, record)
    return Path(save_directory).expanduser().resolve()


def save_preprocessor(tokenizer: Any, folder: Path) -> None:
    """Save a tokenizer / processor into ``folder`` when it has ``save_pretrained`` (else log and skip).

    Args:
        tokenizer: The tokenizer / processor, or ``None``.
        folder: Destination folder.
    """
    if tokenizer is None:
        return
    if callable(getattr(tokenizer, "save_pretrained", None)):
        tokenizer.save_pretrained(folder)
    else:
        logger.info("Not saving tokenizer of type %s: it has no save_pretrained.", type(tokenizer).__name__)


def _load_state(folder: Path) -> dict[str, torch.Tensor]:
    """Read the (possibly sharded) safetensors weights; never unpickles anything."""
    index = folder / SAFE_WEIGHTS_INDEX_NAME
    files: list[Path]
    if index.is_file():
        weight_map = read_json(index, what="safetensors index").get("weight_map", {})
        files = [folder / f for f in sorted(set(weight_map.values()))]
    elif (folder / SAFE_WEIGHTS_NAME).is_file():
        files = [folder / SAFE_WEIGHTS_NAME]
    else:
        raise FileNotFoundError(
            f"No {SAFE_WEIGHTS_NAME} (or sharded index) in {str(folder)!r}; hf_prune only reads safetensors."
        )
    state: dict[str, torch.Tensor] = {}
    for f in files:
        try:
            state.update(load_file(str(f)))
        except (SafetensorError, OSError) as err:
            raise ValueError(f"Weights file {str(f)!r} is corrupted or unreadable: {err}") from None
    return state


def _resolve_folder(pretrained: str | os.PathLike[str], **hub: Any) -> Path:
    local = Path(pretrained).expanduser()
    if local.is_dir():
        return local
    if str(pretrained).startswith((".", "/", "~")):
        raise FileNotFoundError(f"Checkpoint folder {str(pretrained)!r} does not exist.")
    from huggingface_hub import snapshot_download

    return Path(
        snapshot_download(
            str(pretrained),
            allow_patterns=["*.json", "*.safetensors", "*.md", "*.txt", "*.model", "*.jinja"],
            **{k: v for k, v in hub.items() if v is not None},
        )
    )


def is_pruned_checkpoint(pretrained: str | os.PathLike[str]) -> bool:
    """Whether a local folder holds an hf_prune checkpoint (has ``pruning_config.json``).

    Args:
        pretrained: A path (Hub ids return ``False``; they are resolved at load time).
    """
    return (Path(pretrained).expanduser() / CONFIG_NAME).is_file()


@dataclass
class LoadedCheckpoint:
    """What :func:`load_checkpoint` read: the rebuilt model and the plain data saved beside it.

    Args:
        model: The rebuilt ``PreTrainedModel`` (eval mode).
        pruning_config: The method's config, or ``None`` for a custom (direct surgery) checkpoint.
        report: The pruning report.
        calibration: The calibration description.
        base_model: Name or path of the unpruned model (``""`` when unknown).
        record: The full ``pruning_config.json`` content.
    """

    model: PreTrainedModel
    pruning_config: PruningConfig | None
    report: PruningReport
    calibration: dict[str, Any] | None = None
    base_model: str = ""
    record: dict[str, Any] = field(default_factory=dict)


def load_checkpoint(
    pretrained: str | os.PathLike[str],
    model_class: Any,
    *,
    dtype: torch.dtype | None = None,
    revision: str | None = None,
    token: str | bool | None = None,
    cache_dir: str | None = None,
) -> LoadedCheckpoint:
    """Rebuild a pruned checkpoint exactly: homogeneous skeleton, reshape per layer, load weights.

    Args:
        pretrained: Local folder or Hub repo id of an hf_prune checkpoint.
        model_class: A transformers auto class (``AutoModelForCausalLM``) or model class with
            ``from_config``.
        dtype: Cast the loaded weights to this dtype.
        revision: Hub revision.
        token: Hub token.
        cache_dir: Hub cache folder.

    Raises:
        FileNotFoundError: If the folder or its files are missing.
        ValueError: If ``pruning_config.json`` / ``config.json`` are corrupted, or the weights do not
            match the declared structure (the message lists the mismatching tensors).
    """
    from accelerate import init_empty_weights

    folder = _resolve_folder(pretrained, revision=revision, token=token, cache_dir=cache_dir)
    pc_path = folder / CONFIG_NAME
    if not pc_path.is_file():
        raise FileNotFoundError(
            f"No {CONFIG_NAME} in {str(folder)!r}: not an hf_prune checkpoint. To prune a plain model pass "
            "pruning_config=...; to load it unpruned use transformers directly."
        )
    record = read_json(pc_path, what="pruning config")
    structure = record.get("structure")
    if not isinstance(structure, dict) or not structure:
        raise ValueError(
            f"{str(pc_path)!r} has no valid 'structure' record; the file is corrupted or foreign."
        )
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"No config.json in {str(folder)!r}.")
    config_data = read_json(folder / "config.json", what="model config")
    homogeneous, overrides = homogeneous_config_dict(config_data)
    model_type = homogeneous.get("model_type")
    if model_type not in CONFIG_MAPPING:
        raise ValueError(f"config.json has unknown model_type {model_type!r}.")
    config = CONFIG_MAPPING[model_type].from_dict(homogeneous)
    with init_empty_weights():
        model: PreTrainedModel = model_class.from_config(config)
    try:
        apply_structure(model, structure)
    except (ValueError, KeyError, TypeError) as err:
        raise ValueError(f"{str(pc_path)!r}: structure does not fit config.json: {err}") from None
    _check_overrides(model, overrides)
    state = _load_state(folder)
    expected = model.state_dict()
    mismatched = [
        f"{k}: file {tuple(v.shape)} vs structure {tuple(expected[k].shape)}"
        for k, v in state.items()
        if k in expected and tuple(v.shape) != tuple(expected[k].shape)
    ]
    unexpected = sorted(set(state) - set(expected))
    if mismatched or unexpected:
        detail = "; ".join(mismatched[:10] + [f"unexpected {k}" for k in unexpected[:10]])
        raise ValueError(
            f"The weights in {str(folder)!r} do not match the structure declared in {CONFIG_NAME} / "
            f"config.json ({len(mismatched)} shape mismatches, {len(unexpected)} unexpected tensors): "
            f"{detail}"
        )
    model.load_state_dict(state, strict=False, assign=True)
    model.tie_weights()
    missing = [n for n, p in [*model.named_parameters(), *model.named_buffers()] if p.is_meta]
    if missing:
        raise ValueError(f"The weights in {str(folder)!r} lack {len(missing)} tensors, e.g. {missing[:5]}.")
    if dtype is not None:
        model = model.to(dtype)
    model.eval()
    pruning_config = PruningConfig.from_dict(record) if record.get("method") != "custom" else None
    report = PruningReport.from_dict(record.get("report") or {"method": record.get("method", "custom")})
    return LoadedCheckpoint(
        model=model,
        pruning_config=pruning_config,
        report=report,
        calibration=record.get("calibration"),
        base_model=record.get("base_model") or "",
        record=record,
    )


def load_checkpoint_auto(folder: str | os.PathLike[str]) -> LoadedCheckpoint:
    """Load a local checkpoint with the transformers auto class matching its ``config.json``.

    ``architectures`` names the head when present; otherwise (a first save of a model built with
    ``from_config`` records ``null``) each task head is tried, and the strict shape / key check of
    the loader rejects the wrong ones.

    Args:
        folder: The checkpoint folder.

    Returns:
        The :class:`LoadedCheckpoint`.

    Raises:
        ValueError: If no auto class fits the weights.
    """
    import transformers

    cfg = read_json(Path(folder) / "config.json", what="model config")
    archs = cfg.get("architectures") or []
    name = archs[0] if archs else ""
    heads = [
        (("ForCausalLM", "LMHeadModel"), transformers.AutoModelForCausalLM),
        (("ForSequenceClassification",), transformers.AutoModelForSequenceClassification),
        (("ForImageClassification",), transformers.AutoModelForImageClassification),
        (("ForConditionalGeneration",), transformers.AutoModelForImageTextToText),
    ]
    matching = [cls for suffixes, cls in heads if name.endswith(suffixes)]
    candidates: list[Any] = matching or [cls for _, cls in heads] + [transformers.AutoModel]
    errors = []
    for cls in candidates:
        try:
            return load_checkpoint(folder, cls)
        except ValueError as err:
            if len(candidates) == 1:
                raise
            errors.append(f"{cls.__name__}: {str(err)[:200]}")
    raise ValueError(
        f"no transformers auto class fits the checkpoint in {str(folder)!r}: " + " | ".join(errors)
    )


def _check_overrides(model: PreTrainedModel, overrides: dict[str, Any]) -> None:
    """Cross-check ``per_layer_config`` in config.json against the structure record just applied."""
    if not overrides:
        return
    from hf_prune.arch import get_arch
    from hf_prune.surgery.structure import config_updates

    plan = config_updates(model)
    arch = get_arch(model)
    for path, per_layer in overrides.items():
        want = {int(k): v for k, v in per_layer.items()}
        have = plan.get(path, {}).get("per_layer", {})
        if want != have:
            names = [s.name for s in arch.stacks if s.config_path == path]
            raise ValueError(
                f"config.json per_layer_config for {names or path!r} disagrees with the structure in "
                f"{CONFIG_NAME}: config.json says {want}, structure implies {have}."
            )

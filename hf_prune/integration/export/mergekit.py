"""Export a depth-pruned model as a mergekit ``passthrough`` configuration.

A model pruned only in depth (whole blocks removed) is the base model with some blocks left out, so
`mergekit <https://github.com/arcee-ai/mergekit>`_ can rebuild it from the *base* checkpoint alone: one
``passthrough`` slice per run of consecutive kept blocks. The YAML written here is that recipe::

    merge_method: passthrough
    dtype: bfloat16
    slices:
    - sources:
      - model: meta-llama/Llama-3.2-1B
        layer_range: [0, 5]      # original blocks 0..4
    - sources:
      - model: meta-llama/Llama-3.2-1B
        layer_range: [7, 16]     # original blocks 7..15

Run it with ``mergekit-yaml pruned.yaml out/``. Block numbers are the base model's own (original)
indices; ``layer_range`` is half-open, as mergekit defines it.

What can be exported:

* Causal decoder language models whose architecture mergekit defines as one layer stack
  (:func:`supported_architectures`: Llama, Mistral, Qwen2, Gemma, GPT-2, ... as known to the installed
  mergekit; without mergekit installed, the list known to mergekit 0.1.5). Encoders (BERT) and
  vision-language models (LLaVA: mergekit has no definition; its automatic inference would cut the
  vision tower and the language model with the same slices and leave ``text_config.num_hidden_layers``
  unchanged) are refused.
* Depth pruning only. Width pruning (heads / neurons removed), unstructured or N:M sparsity, healing
  (fine-tuning after pruning) and any other per-layer change are not in the base checkpoint, so a
  passthrough of it cannot reproduce them; such models are refused (save them with
  ``PrunedModel.save_pretrained`` instead). This is read from the pruning report: every row must be
  of kind ``"block"``, no sparsity mask may be attached and ``report.extra`` must record no healing.

Known limitation of mergekit 0.1.5 with transformers 5.x: for configs that carry a per-layer
``layer_types`` list (Qwen2, Qwen3, Gemma 2/3, ...) mergekit updates ``num_hidden_layers`` but not
``layer_types``, and transformers' config validation then refuses to write the output ``config.json``
(``num_hidden_layers (N) must be equal to the number of layer_types (M)``). The YAML is still correct;
the failure is inside mergekit.

This module reads plain data only (block indices, counts, names); it does not import
:class:`hf_prune.PrunedModel`, whose ``export_mergekit_yaml`` method gathers that data and calls
:func:`export_pruned_yaml`.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import operator
import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from hf_prune.version import __version__

logger = logging.getLogger(__name__)

#: dtypes mergekit understands for ``dtype`` (``mergekit.common.dtype_from_name``).
MERGEKIT_DTYPES: tuple[str, ...] = ("float32", "float16", "bfloat16", "float64")

#: Report-row kinds that a passthrough of the base model reproduces (a removed block).
DEPTH_KINDS: frozenset[str] = frozenset({"block"})

# Causal decoder LMs with a single layer stack in mergekit 0.1.5's architecture registry. Used only when
# mergekit is not installed (writing YAML does not need it); otherwise the installed registry decides.
_MERGEKIT_0_1_5_DECODERS: tuple[str, ...] = (
    "ApertusForCausalLM",
    "ArceeForCausalLM",
    "BaichuanForCausalLM",
    "Cohere2ForCausalLM",
    "CohereForCausalLM",
    "ExaoneForCausalLM",
    "FalconForCausalLM",
    "GPT2LMHeadModel",
    "GPTBigCodeForCausalLM",
    "GPTNeoXForCausalLM",
    "Gemma2ForCausalLM",
    "Gemma3ForCausalLM",
    "GemmaForCausalLM",
    "Glm4ForCausalLM",
    "Glm4MoeForCausalLM",
    "GraniteForCausalLM",
    "GraniteMoeHybridForCausalLM",
    "InternLM2ForCausalLM",
    "JAISLMHeadModel",
    "LLaMaForCausalLM",
    "Lfm2ForCausalLM",
    "LlamaForCausalLM",
    "MambaForCausalLM",
    "MistralForCausalLM",
    "MixFormerSequentialForCausalLM",
    "MixtralForCausalLM",
    "Olmo2ForCausalLM",
    "Phi3ForCausalLM",
    "Phi3SmallForCausalLM",
    "PhiForCausalLM",
    "QWenLMHeadModel",
    "Qwen2ForCausalLM",
    "Qwen3ForCausalLM",
    "Qwen3MoeForCausalLM",
    "SolarForCausalLM",
    "StableLMEpochForCausalLM",
    "StableLmForCausalLM",
    "Starcoder2ForCausalLM",
)

# Config keys that hold a decoder's block count, for cross-checking a local base folder.
_NUM_LAYERS_KEYS: tuple[str, ...] = ("num_hidden_layers", "n_layer", "num_layers")


# ------------------------------------------------------------------------------------ architectures
def _is_decoder_lm(name: str) -> bool:
    return not name.startswith("_") and name.endswith(("ForCausalLM", "LMHeadModel"))


def _mergekit_registry() -> dict[str, list[Any]] | None:
    """Return mergekit's architecture-name registry, or ``None`` when mergekit cannot be imported."""
    try:
        from mergekit.architecture.json_definitions import NAME_TO_ARCH
    except ImportError:
        return None
    except Exception as err:  # installed but broken against this environment
        logger.warning("mergekit is installed but could not be imported (%s); using a built-in list.", err)
        return None
    return {name: list(archs) for name, archs in NAME_TO_ARCH.items()}


def _single_stack(arch: Any) -> bool:
    return list(getattr(arch, "modules", {}) or {}) == ["default"]


def supported_architectures() -> tuple[str, ...]:
    """Architecture class names that can be exported (causal decoder LMs mergekit defines).

    Taken from the installed mergekit's architecture registry (single-stack causal LMs); without
    mergekit installed, the list known to mergekit 0.1.5.

    Returns:
        Sorted ``config.architectures`` names, e.g. ``("GPT2LMHeadModel", ..., "LlamaForCausalLM", ...)``.
    """
    registry = _mergekit_registry()
    if registry is None:
        return _MERGEKIT_0_1_5_DECODERS
    return tuple(
        sorted(
            name
            for name, archs in registry.items()
            if _is_decoder_lm(name) and any(_single_stack(a) for a in archs)
        )
    )


def check_architecture(architecture: str, model_type: str | None = None) -> None:
    """Raise unless mergekit can rebuild a depth-pruned ``architecture`` with a passthrough.

    Args:
        architecture: The model class name as in ``config.architectures`` (``"LlamaForCausalLM"``).
        model_type: ``config.model_type``; used, as mergekit does, to pick between several definitions
            registered under one class name.

    Raises:
        ValueError: If the architecture is not a causal decoder LM that mergekit defines as one layer
            stack; the message lists the supported ones.
    """
    supported = supported_architectures()
    registry = _mergekit_registry()
    reason = ""
    if architecture in supported:
        if registry is None or architecture not in registry:
            return
        candidates = [a for a in registry[architecture] if _single_stack(a)]
        types = {getattr(a, "expected_model_type", None) for a in candidates}
        if len(registry[architecture]) == 1 or model_type is None or model_type in types:
            return
        reason = (
            f"mergekit registers {architecture!r} for model types {sorted(t for t in types if t)}, "
            f"not {model_type!r}"
        )
    elif registry is not None and architecture in registry:
        reason = (
            f"mergekit knows {architecture!r}, but hf_prune exports only causal decoder language models "
            "(one stack of decoder blocks)"
        )
    elif "ConditionalGeneration" in architecture or "ImageTextToText" in architecture:
        reason = (
            f"mergekit has no definition for {architecture!r}; its automatic inference would cut every "
            "layer stack (vision tower and language model) with the same slices and leave the text "
            "config's num_hidden_layers unchanged"
        )
    else:
        reason = f"mergekit has no causal-LM definition for {architecture!r}"
    mt = f" (model_type {model_type!r})" if model_type else ""
    raise ValueError(
        f"Cannot export {architecture}{mt} as a mergekit passthrough config: {reason}. Supported "
        f"architectures: {', '.join(supported)}."
    )


# ------------------------------------------------------------------------------------ configuration
def _check_kept(kept: Sequence[int], num_layers: int) -> list[int]:
    if isinstance(num_layers, bool) or not isinstance(num_layers, int) or num_layers < 1:
        raise ValueError(f"num_layers must be a positive int (blocks in the base model), got {num_layers!r}.")
    out: list[int] = []
    for i in kept:
        try:
            if isinstance(i, bool):
                raise TypeError
            out.append(operator.index(i))
        except TypeError:
            raise ValueError(f"kept must hold int block indices, got {i!r} ({type(i).__name__}).") from None
    if not out:
        raise ValueError("kept is empty: a passthrough config needs at least one kept block.")
    bad = [i for i in out if not 0 <= i < num_layers]
    if bad:
        raise ValueError(f"kept has indices outside [0, {num_layers}): {bad}.")
    if any(b <= a for a, b in itertools.pairwise(out)):
        raise ValueError(
            f"kept must be strictly increasing original block indices (no repeats, no reordering), got {out}."
        )
    return out


def layer_ranges(kept: Sequence[int], num_layers: int) -> list[tuple[int, int]]:
    """Group kept block indices into mergekit ``layer_range`` runs (half-open, in order).

    Args:
        kept: Kept original block indices, strictly increasing.
        num_layers: Number of blocks of the base model.

    Returns:
        ``[(start, end_exclusive), ...]``; e.g. ``kept=[0, 3, 4, 5]`` gives ``[(0, 1), (3, 6)]``.

    Raises:
        ValueError: If ``kept`` is empty, unsorted, repeats an index or leaves ``[0, num_layers)``.
    """
    idx = _check_kept(kept, num_layers)
    runs: list[tuple[int, int]] = []
    start = prev = idx[0]
    for i in idx[1:]:
        if i != prev + 1:
            runs.append((start, prev + 1))
            start = i
        prev = i
    runs.append((start, prev + 1))
    return runs


def _dtype_name(dtype: Any) -> str:
    name = str(dtype)
    name = name.removeprefix("torch.")
    if name not in MERGEKIT_DTYPES:
        raise ValueError(
            f"dtype {dtype!r} is not one mergekit writes; use one of {', '.join(MERGEKIT_DTYPES)}."
        )
    return name


def _base_name(base_model: str | os.PathLike[str] | None) -> str:
    name = "" if base_model is None else os.fspath(base_model).strip()
    if not name:
        raise ValueError(
            "base_model is unknown: pass base_model= (the Hub id or local folder of the UNPRUNED model the "
            "blocks were removed from)."
        )
    return os.path.expanduser(name) if name.startswith("~") else name


def _model_ref(base: str) -> str | dict[str, Any]:
    # mergekit parses "path+lora" and "path@revision" from strings; a local folder whose name holds
    # such a character is written in the explicit form so it is not misread.
    if ("+" in base or "@" in base) and os.path.isdir(base):
        return {"model": {"path": base}}
    if "+" in base:
        raise ValueError(
            f"base_model {base!r} contains '+', which mergekit reads as 'model+lora'; give the base "
            "model without a LoRA."
        )
    return base


def _check_local_base(base: str, num_layers: int, architecture: str | None) -> None:
    """Cross-check a local base folder: a plain (unpruned) checkpoint with ``num_layers`` blocks."""
    folder = Path(base)
    if not folder.is_dir():
        return  # a Hub id (or a folder on the machine that will run mergekit): nothing to check here
    if (folder / "pruning_config.json").is_file():
        raise ValueError(
            f"base_model {base!r} is an hf_prune checkpoint (it has pruning_config.json). The slices refer "
            "to the blocks of the original, unpruned model: pass that model's id or folder."
        )
    cfg_file = folder / "config.json"
    if not cfg_file.is_file():
        raise ValueError(f"base_model folder {base!r} has no config.json; mergekit cannot read it.")
    try:
        cfg = json.loads(cfg_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ValueError(f"base_model folder {base!r}: unreadable config.json ({err}).") from None
    archs = cfg.get("architectures") or []
    if architecture and archs and archs[0] != architecture:
        raise ValueError(
            f"base_model folder {base!r} holds a {archs[0]}, but the pruned model is a {architecture}."
        )
    have = next((cfg[k] for k in _NUM_LAYERS_KEYS if isinstance(cfg.get(k), int)), None)
    if have is not None and have != num_layers:
        raise ValueError(
            f"base_model folder {base!r} has {have} blocks, but the pruned model was cut from a model with "
            f"{num_layers}: it is not the base model (or it was itself pruned)."
        )


def mergekit_config(
    kept: Sequence[int],
    num_layers: int,
    base_model: str | os.PathLike[str],
    *,
    dtype: Any = "float32",
    architecture: str | None = None,
    model_type: str | None = None,
) -> dict[str, Any]:
    """Build the mergekit ``passthrough`` configuration that keeps exactly the blocks ``kept``.

    The result validates with ``mergekit.config.MergeConfiguration.model_validate``.

    Args:
        kept: Kept original block indices of the base model, strictly increasing.
        num_layers: Number of blocks of the base model.
        base_model: Hub id or local folder of the unpruned base model (a local folder is cross-checked:
            not an hf_prune checkpoint, same architecture, ``num_layers`` blocks).
        dtype: mergekit ``dtype`` (``"float32"``, ``"bfloat16"``, ``"float16"``, ``"float64"`` or the
            matching ``torch.dtype``).
        architecture: The model class name (``"LlamaForCausalLM"``); when given, it must be one of
            :func:`supported_architectures`.
        model_type: ``config.model_type``, to disambiguate ``architecture`` as mergekit does.

    Returns:
        ``{"merge_method": "passthrough", "dtype": ..., "slices": [{"sources": [{"model": ...,
        "layer_range": [start, end]}]}, ...]}``.

    Raises:
        ValueError: For an unsupported architecture, bad indices, an unknown dtype, a missing base
            model, or a local base folder that does not match.
    """
    if architecture is not None:
        check_architecture(architecture, model_type)
    runs = layer_ranges(kept, num_layers)
    name = _dtype_name(dtype)
    base = _base_name(base_model)
    _check_local_base(base, num_layers, architecture)
    return {
        "merge_method": "passthrough",
        "dtype": name,
        "slices": [{"sources": [{"model": _model_ref(base), "layer_range": [a, b]}]} for a, b in runs],
    }


# -------------------------------------------------------------------------------------------- YAML
class _FlowList(list):
    """A list written inline (``[0, 4]``)."""


class _Dumper(yaml.SafeDumper):
    def ignore_aliases(self, data: Any) -> bool:
        return True


_Dumper.add_representer(
    _FlowList, lambda d, data: d.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=True)
)


def _to_yaml(config: Mapping[str, Any], header: Iterable[str]) -> str:
    data = dict(config)
    data["slices"] = [
        {
            **s,
            "sources": [
                {**src, "layer_range": _FlowList(src["layer_range"])} if "layer_range" in src else src
                for src in s["sources"]
            ],
        }
        for s in config["slices"]
    ]
    body = yaml.dump(data, Dumper=_Dumper, sort_keys=False, default_flow_style=False)
    return "".join(f"# {line}\n" for line in header) + body


def _atomic_write(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _target(path: str | os.PathLike[str]) -> Path:
    target = Path(path).expanduser()
    if target.is_dir():
        raise ValueError(f"path {str(target)!r} is a folder; give a file name such as 'pruned.yaml'.")
    target.parent.mkdir(parents=True, exist_ok=True)
    return target


def export_mergekit_yaml(
    kept: Sequence[int],
    num_layers: int,
    base_model: str | os.PathLike[str],
    path: str | os.PathLike[str],
    *,
    dtype: Any = "float32",
    architecture: str | None = None,
    model_type: str | None = None,
) -> Path:
    """Write the mergekit ``passthrough`` YAML that keeps exactly the blocks ``kept`` of ``base_model``.

    The file is written next to its destination and renamed into place (atomic). Run it with
    ``mergekit-yaml <path> <output folder>``.

    Args:
        kept: Kept original block indices of the base model, strictly increasing.
        num_layers: Number of blocks of the base model.
        base_model: Hub id or local folder of the unpruned base model.
        path: Destination file (parent folders are created).
        dtype: mergekit ``dtype`` (see :func:`mergekit_config`).
        architecture: The model class name, checked against :func:`supported_architectures` when given.
        model_type: ``config.model_type``, to disambiguate ``architecture``.

    Returns:
        The path written.

    Raises:
        ValueError: As :func:`mergekit_config`, or if ``path`` is a folder.
    """
    config = mergekit_config(
        kept, num_layers, base_model, dtype=dtype, architecture=architecture, model_type=model_type
    )
    kept_list = _check_kept(kept, num_layers)
    removed = sorted(set(range(num_layers)) - set(kept_list))
    header = [
        f"mergekit passthrough config written by hf_prune {__version__}.",
        f"Keeps original blocks {kept_list} of {num_layers} (removed: {removed}).",
        "Run: mergekit-yaml <this file> <output folder>",
    ]
    target = _target(path)
    _atomic_write(target, _to_yaml(config, header))
    return target


# ------------------------------------------------------------------- from a PrunedModel's record
def kept_blocks(num_current: int, removed: Sequence[int], origin: Sequence[int] | None = None) -> list[int]:
    """Work out the kept original block indices from a pruning record, checking it is consistent.

    Args:
        num_current: Blocks the pruned model has now.
        removed: Original indices of the removed blocks (``report.removed_layers[stack]``).
        origin: Original index of each current block, in order, when known (a reloaded checkpoint
            does not carry it; it is then derived from ``removed``).

    Returns:
        The kept original indices, strictly increasing; the base model had
        ``num_current + len(removed)`` blocks.

    Raises:
        ValueError: If the record contradicts itself (repeated removals, overlaps, gaps, reordering).
    """
    rem = [int(i) for i in removed]
    total = num_current + len(rem)
    kept = sorted(set(range(total)) - set(rem)) if origin is None else [int(i) for i in origin]
    consistent = (
        len(kept) == num_current
        and len(set(rem)) == len(rem)
        and not set(kept) & set(rem)
        and set(kept) | set(rem) == set(range(total))
        and all(b > a for a, b in itertools.pairwise(kept))
    )
    if not consistent:
        raise ValueError(
            f"The pruning record is inconsistent: {num_current} blocks now, removed original blocks {rem}, "
            f"current blocks numbered {list(origin) if origin is not None else kept}. The original numbering "
            "cannot be recovered, so no passthrough config can be written (use mergekit_config with the "
            "kept indices you know)."
        )
    return kept


def _healing(extra: Mapping[str, Any]) -> str:
    """Describe fine-tuning recorded in ``report.extra`` (healing changes the kept blocks' weights)."""
    heal = extra.get("healing")
    if heal:
        method = heal.get("method", "?") if isinstance(heal, Mapping) else "?"
        steps = heal.get("steps", "?") if isinstance(heal, Mapping) else "?"
        return f"healing ({method}, {steps} steps) changed the weights"
    depth = extra.get("depth")
    if isinstance(depth, Mapping) and depth.get("heal_steps"):
        return f"healing between depth rounds ({depth['heal_steps']} steps each) changed the weights"
    return ""


def _refuse_non_depth(
    layer_rows: Iterable[tuple[str, str]], masked: int, extra: Mapping[str, Any] | None = None
) -> None:
    width: list[str] = []
    sparse: list[str] = []
    other: list[str] = []
    for name, kind in layer_rows:
        if kind in DEPTH_KINDS:
            continue
        (width if kind in ("mlp", "attention") else sparse if kind == "linear" else other).append(
            f"{name} ({kind})"
        )
    parts = []
    for label, rows in (("width pruning", width), ("unstructured / N:M sparsity", sparse), ("other", other)):
        if rows:
            shown = ", ".join(rows[:5]) + (f", ... {len(rows) - 5} more" if len(rows) > 5 else "")
            parts.append(f"{label} on {len(rows)} layer(s): {shown}")
    if masked:
        parts.append(f"sparsity masks on {masked} module(s)")
    healed = _healing(extra or {})
    if healed:
        parts.append(healed)
    if parts:
        raise ValueError(
            "Cannot export as a mergekit passthrough config: the model has changes that a passthrough of "
            "the base model's blocks cannot reproduce (" + "; ".join(parts) + "). Only depth pruning (whole "
            "blocks removed, the kept blocks' weights untouched) can be exported; save the model with "
            "save_pretrained instead."
        )


def export_pruned_yaml(
    path: str | os.PathLike[str],
    *,
    base_model: str | os.PathLike[str] | None,
    architecture: str,
    model_type: str | None,
    num_current: int,
    removed: Sequence[int],
    origin: Sequence[int] | None = None,
    layer_rows: Iterable[tuple[str, str]] = (),
    masked: int = 0,
    extra: Mapping[str, Any] | None = None,
    dtype: Any = "float32",
) -> Path:
    """Write the passthrough YAML for a pruned model described by plain data (``PrunedModel`` uses this).

    Checks, in order: the architecture is supported; the model was pruned in depth only (every report
    row is a removed block, no masks are attached, no healing is recorded); the record yields
    consistent original block indices; a base model is known.

    Args:
        path: Destination file.
        base_model: Hub id or local folder of the unpruned base model, or ``None`` / ``""`` if unknown.
        architecture: Model class name (``"LlamaForCausalLM"``).
        model_type: ``config.model_type``.
        num_current: Blocks the pruned model has now (in the exported stack).
        removed: Original indices of the removed blocks of that stack.
        origin: Original index of each current block, when known.
        layer_rows: ``(name, kind)`` of every report row (``kind`` ``"block"`` is depth; ``"mlp"`` /
            ``"attention"`` width; ``"linear"`` unstructured sparsity).
        masked: Number of modules that still carry a sparsity mask.
        extra: ``report.extra``; a ``"healing"`` record (or depth rounds with ``heal_steps``) means the
            kept blocks were fine-tuned, which a passthrough of the base cannot reproduce.
        dtype: mergekit ``dtype``.

    Returns:
        The path written.

    Raises:
        ValueError: For an unsupported architecture, width / unstructured pruning, healing, an
            inconsistent record, or an unknown base model.
    """
    check_architecture(architecture, model_type)
    _refuse_non_depth(layer_rows, masked, extra)
    kept = kept_blocks(num_current, removed, origin)
    return export_mergekit_yaml(
        kept,
        num_current + len(removed),
        _base_name(base_model),
        path,
        dtype=dtype,
        architecture=architecture,
        model_type=model_type,
    )

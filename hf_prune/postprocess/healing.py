"""Healing: a short causal-LM fine-tune of a pruned model, with LoRA through PEFT or of the blocks' weights.

``heal(pruned, dataset)`` cuts seeded token windows from ``dataset`` with the calibration helpers, trains
for ``steps`` optimizer steps on the model's own LM loss (``labels=input_ids``) and records what it
did in ``pruned.report.extra["healing"]`` (saved in ``pruning_config.json``).

Sparsity is kept exactly:

* **Live masks** (unstructured / N:M pruning before ``finalize()``): the forward pass sees
  ``W * mask`` (``hf_prune.surgery.masks``). With LoRA, a masked projection's adapter delta is masked
  too, during training (``(B @ A) * scaling * mask``, so what is trained is what is merged) and at the
  merge (``W + delta * mask``): the zeros, and therefore every N:M group, are the same after merging
  as before. ``method="full"`` trains the stored weight behind the mask, whose masked entries get no
  gradient.
* **Finalized masks** (zeros baked in, e.g. a checkpoint reloaded from disk): the zeros of a weight
  are taken as its mask *only* when the report has a ``"linear"`` row for that module with a measured
  sparsity above zero **and** the weight still has exactly the row's ``nonzero_after`` non-zeros. Any
  other zero is an ordinary value and may move (a dense layer is healed densely). The check on the
  count guards against a row whose module name no longer points at the same weight (blocks removed
  after the unstructured pruning renumber the names).
* Physically shrunk (width) or depth-pruned models carry no masks: LoRA simply adapts the smaller
  projections.
"""

from __future__ import annotations

import dataclasses
import math
import time
import types
import warnings
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm
from transformers import PreTrainedModel

from hf_prune.arch import get_arch, get_layers, is_linear, iter_block_linears
from hf_prune.arch.targets import matches
from hf_prune.calibration.data import build_calibration_batches, is_image_text
from hf_prune.config import CalibrationConfig
from hf_prune.integration.pruned_model import PrunedModel
from hf_prune.surgery import masks as mask_ops
from hf_prune.utils import show_progress

__all__ = ["DEFAULT_LR", "HEAL_METHODS", "heal", "merge_adapters"]

#: Supported ``method`` values.
HEAL_METHODS = ("lora", "full")

#: Learning rate used when ``lr=None``: the common LoRA default, and a conservative full fine-tune one.
DEFAULT_LR = {"lora": 2e-4, "full": 2e-5}

# Token windows kept in memory at most; more steps cycle over them (windows start at random positions,
# so a few thousand already cover a healing corpus well).
_MAX_WINDOWS = 4096
# Points of the recorded loss curve when ``log_every`` is not given.
_CURVE_POINTS = 20
# Gradient-norm clip: a pruned model's first steps can have large gradients.
_MAX_GRAD_NORM = 1.0
# Attribute of a LoRA layer holding the [out, in] keep-mask of its base projection (masked LoRA).
_MASK_ATTR = "hf_prune_mask"


# ----------------------------------------------------------------------------------- argument checks
def _check_int(name: str, value: Any, minimum: int, fix: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int >= {minimum}, got {value!r} ({type(value).__name__}). {fix}")
    if value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}. {fix}")


def _check_number(name: str, value: Any, low: float, high: float | None, *, low_open: bool, fix: str) -> None:
    allowed = f"{'(' if low_open else '['}{low}, {'inf)' if high is None else f'{high})'}"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(
            f"{name} must be a number in {allowed}, got {value!r} ({type(value).__name__}). {fix}"
        )
    ok = (value > low if low_open else value >= low) and (high is None or value < high)
    if math.isnan(value) or not ok:
        raise ValueError(f"{name} must be in {allowed}, got {value!r}. {fix}")


def _check_args(
    method: Any,
    steps: Any,
    lr: Any,
    batch_size: Any,
    seqlen: Any,
    lora_r: Any,
    lora_alpha: Any,
    lora_dropout: Any,
    log_every: Any,
) -> None:
    if method not in HEAL_METHODS:
        raise ValueError(
            f"method must be one of {HEAL_METHODS}, got {method!r}. Use 'lora' (adapters through PEFT, "
            "merged by default) or 'full' (train every weight of the blocks)."
        )
    _check_int("steps", steps, 1, "Pass the number of optimizer steps, e.g. steps=200.")
    if lr is not None:
        _check_number("lr", lr, 0.0, None, low_open=True, fix=f"Or pass lr=None for {DEFAULT_LR}.")
    _check_int("batch_size", batch_size, 1, "Windows per step, e.g. batch_size=4.")
    _check_int("seqlen", seqlen, 2, "Tokens per window, e.g. seqlen=256.")
    _check_int("lora_r", lora_r, 1, "The LoRA rank, e.g. lora_r=8.")
    _check_number("lora_alpha", lora_alpha, 0.0, None, low_open=True, fix="E.g. lora_alpha=2 * lora_r.")
    _check_number("lora_dropout", lora_dropout, 0.0, 1.0, low_open=False, fix="E.g. lora_dropout=0.05.")
    if log_every is not None:
        _check_int("log_every", log_every, 1, "Or pass log_every=None for about 20 curve points.")


def _as_pruned(pruned: Any, tokenizer: Any) -> PrunedModel:
    if isinstance(pruned, PrunedModel):
        return pruned
    if isinstance(pruned, PreTrainedModel):
        return PrunedModel(pruned, tokenizer=tokenizer)
    raise TypeError(
        f"pruned must be a hf_prune PrunedModel or a transformers PreTrainedModel, got "
        f"{type(pruned).__name__}. Pass the result of hf_prune.prune(...) or the model itself."
    )


def _check_model(model: PreTrainedModel) -> None:
    from peft.tuners.tuners_utils import BaseTunerLayer

    if any(isinstance(m, BaseTunerLayer) for m in model.modules()):
        raise ValueError(
            "pruned already has PEFT adapters attached (heal(..., merge=False) or get_peft_model). Merge "
            "them first with hf_prune.postprocess.merge_adapters(pruned), then heal again."
        )
    if not model.can_generate():
        raise TypeError(
            f"pruned must be a causal language model (…ForCausalLM, …ForConditionalGeneration), got "
            f"{type(model).__name__}: healing trains on the model's LM loss with labels=input_ids. Fine-tune "
            "other heads with a transformers Trainer on their own task."
        )
    if any(p.is_meta for p in model.parameters()):
        raise ValueError(
            "pruned has offloaded (meta) parameters (device_map with CPU/disk offload); healing needs every "
            "weight in memory. Load the model without offloading, or on a device where it fits."
        )


# ----------------------------------------------------------------------------------------- data
def _calibration(dataset: Any, steps: int, batch_size: int, seqlen: int, seed: int) -> CalibrationConfig:
    if isinstance(dataset, CalibrationConfig):
        # A ready config defines the windows (dataset, nsamples, seqlen, seed); heal batches them.
        return dataclasses.replace(dataset, batch_size=batch_size)
    try:
        return CalibrationConfig(
            dataset=dataset,
            nsamples=min(steps * batch_size, _MAX_WINDOWS),
            seqlen=seqlen,
            seed=seed,
            batch_size=batch_size,
        )
    except (TypeError, ValueError) as err:
        raise type(err)(
            f"dataset={_short(dataset)} is not usable healing data: {err} Pass a list of strings, a local "
            "text/JSON/JSONL/parquet file or folder, a datasets.Dataset or a CalibrationConfig."
        ) from None


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _windows(config: CalibrationConfig, tokenizer: Any, model: PreTrainedModel) -> list[dict[str, Any]]:
    if is_image_text(config):
        raise ValueError(
            f"dataset={config.describe()['dataset']!r} is image-text data; heal trains on text windows "
            "only. Pass text (a list of strings, a text file, a Dataset with a 'text' column)."
        )
    text_config = model.config.get_text_config()
    max_pos = getattr(text_config, "max_position_embeddings", None)
    if isinstance(max_pos, int) and config.seqlen > max_pos:
        raise ValueError(
            f"seqlen={config.seqlen} exceeds the model's max_position_embeddings={max_pos}; pass "
            f"seqlen <= {max_pos}."
        )
    return build_calibration_batches(config, tokenizer)


# ---------------------------------------------------------------------------------------- masks
def _find_masks(pruned: PrunedModel) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Return ``{module name: [out, in] keep-mask}`` and ``{module name: "live" | "report"}``."""
    model = pruned.base_model
    out: dict[str, torch.Tensor] = {}
    source: dict[str, str] = {}
    for name, module in mask_ops.masked_modules(model):
        mask = mask_ops.get_mask(module)
        if mask is not None:
            out[name], source[name] = mask.clone(), "live"
    modules = dict(model.named_modules())
    for row in pruned.report.layers:
        module = modules.get(row.name)
        if (
            row.kind != "linear"
            or not row.sparsity_measured
            or row.nonzero_after is None
            or row.name in out
            or module is None
            or not is_linear(module)
        ):
            continue
        weight = mask_ops.weight_out_in(module).detach()
        if int(torch.count_nonzero(weight)) == int(row.nonzero_after):
            out[row.name], source[row.name] = weight != 0, "report"
    return out, source


# -------------------------------------------------------------------------------- target modules
def _main_stack(model: PreTrainedModel) -> str:
    # The last stack is the text / main one (LLaVA: the language model after the vision tower).
    return get_arch(model).stacks[-1].name


def _resolve(model: PreTrainedModel, target_modules: Any, *, linear_only: bool) -> list[str] | None:
    """Full module names matched by ``target_modules`` (``None`` when not given)."""
    if target_modules is None:
        return None
    patterns = [target_modules] if isinstance(target_modules, str) else target_modules
    if not isinstance(patterns, (list, tuple)) or not all(isinstance(p, str) and p for p in patterns):
        raise TypeError(
            f"target_modules must be None, a module name or a list of non-empty module names, got "
            f"{_short(target_modules)}. E.g. target_modules=['q_proj', 'v_proj']."
        )
    if not patterns:
        raise ValueError(
            "target_modules=[] selects nothing to train. Pass module names such as ['q_proj', 'v_proj'], "
            "or None for every linear projection inside the decoder blocks."
        )
    candidates = [n for n, m in model.named_modules() if n and (is_linear(m) if linear_only else True)]
    chosen: list[str] = []
    for pattern in patterns:
        hit = [n for n in candidates if matches(n, pattern)]
        if not hit:
            kind = "Linear/Conv1D module" if linear_only else "module"
            leaves = sorted({n.rpartition(".")[2] for n in candidates if not n.isdigit()})
            raise ValueError(
                f"target_modules entry {pattern!r} matches no {kind} of this {type(model).__name__}. "
                f"Available names: {', '.join(leaves)}. Use one of them, a dotted suffix such as "
                "'self_attn.q_proj', a full module name or a regular expression; or leave "
                "target_modules=None for every linear projection inside the decoder blocks."
            )
        chosen.extend(n for n in hit if n not in chosen)
    return chosen


# ------------------------------------------------------------------------------------ masked LoRA
def _masked_lora_forward(self: nn.Module, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
    """``peft.tuners.lora.Linear.forward`` with the adapter delta masked like the base weight.

    PEFT adds ``B(A(x))``, which is dense: the effective weight would regain every pruned entry and
    merging would destroy the sparsity. Forming ``(B @ A) * scaling * mask`` costs one weight-sized
    tensor per masked projection, and makes the trained function exactly the one that is merged.
    """
    result = self.base_layer(x, *args, **kwargs)
    if self.disable_adapters:
        return result
    mask = getattr(self, _MASK_ATTR)
    for name in self.active_adapters:
        if name not in self.lora_A:
            continue
        weight_a = self.lora_A[name].weight
        delta = (self.lora_B[name].weight @ weight_a) * self.scaling[name]
        delta = delta * mask.to(delta.dtype)
        inputs = self.lora_dropout[name](x).to(weight_a.dtype)
        result = result + F.linear(inputs, delta).to(result.dtype)
    return result


def _lora_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    from peft.tuners.lora import LoraLayer

    return [(n, m) for n, m in model.named_modules() if isinstance(m, LoraLayer)]


def merge_adapters(pruned: PrunedModel) -> PrunedModel:
    """Merge the LoRA adapters attached by ``heal(..., merge=False)`` and remove PEFT completely.

    A projection with a mask gets ``W + delta * mask``: its zeros (and N:M groups) stay exactly as they
    were; a live mask stays live (the delta goes into the stored weight behind it). Every other
    projection gets PEFT's dense ``W + delta``. Afterwards ``pruned.base_model`` is the original
    transformers class again, with no ``lora_`` module or parameter left, and the parameters'
    ``requires_grad`` flags are back to what they were before healing.

    Args:
        pruned: A ``PrunedModel`` returned by ``heal(..., merge=False)``.

    Returns:
        ``pruned``, merged in place.

    Raises:
        ValueError: If ``pruned`` has no adapters attached by :func:`heal`.
    """
    peft_model = pruned.__dict__.get("peft_model")
    if peft_model is None:
        raise ValueError(
            "pruned has no adapters from heal(..., merge=False) to merge (no pruned.peft_model); "
            "nothing to do."
        )
    with torch.no_grad():
        for _, layer in _lora_layers(pruned.base_model):
            base = layer.get_base_layer()
            mask = getattr(layer, _MASK_ATTR, None)
            live = mask_ops.has_mask(base)
            target = base.parametrizations["weight"].original if live else base.weight
            for name in layer.active_adapters:
                if name not in layer.lora_A:
                    continue
                delta = layer.get_delta_weight(name)  # stored orientation (Conv1D: [in, out])
                if mask is not None:
                    delta = delta * mask_ops.to_storage_orientation(base, mask).to(delta.dtype)
                target.add_(delta.to(target.dtype))
    peft_model.unload()
    flags = getattr(peft_model, "_hf_prune_requires_grad", {})
    for p in pruned.base_model.parameters():
        p.requires_grad_(flags.get(id(p), True))
    del pruned.__dict__["peft_model"]
    pruned.refresh()
    healing = pruned.report.extra.get("healing")
    if isinstance(healing, dict):
        healing["merged"] = True
    return pruned


def _attach_lora(
    model: PreTrainedModel,
    names: list[str],
    masks: dict[str, torch.Tensor],
    *,
    r: int,
    alpha: float,
    dropout: float,
) -> nn.Module:
    from peft import LoraConfig, get_peft_model

    modules = dict(model.named_modules())
    conv1d = [not isinstance(modules[n], nn.Linear) for n in names]
    config = LoraConfig(
        r=r,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=names,
        bias="none",
        # GPT-2-style Conv1D stores [in, out]; PEFT needs to know (it would warn and flip it per layer).
        fan_in_fan_out=all(conv1d),
    )
    flags = {id(p): p.requires_grad for p in model.parameters()}
    with warnings.catch_warnings():
        # PEFT 0.21 calls a transformers method that transformers 5 deprecates; nothing to act on.
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        peft_model = get_peft_model(model, config)
    peft_model._hf_prune_requires_grad = flags
    for name, layer in _lora_layers(model):
        mask = masks.get(name)
        if mask is not None:
            layer.register_buffer(_MASK_ATTR, mask.to(layer.get_base_layer().weight.device), persistent=False)
            layer.forward = types.MethodType(_masked_lora_forward, layer)
    return peft_model


# --------------------------------------------------------------------------------------- heal
def heal(
    pruned: PrunedModel | PreTrainedModel,
    dataset: Any,
    *,
    tokenizer: Any = None,
    method: str = "lora",
    steps: int = 200,
    lr: float | None = None,
    batch_size: int = 4,
    seqlen: int = 256,
    lora_r: int = 8,
    lora_alpha: float = 16,
    lora_dropout: float = 0.0,
    target_modules: str | list[str] | None = None,
    merge: bool = True,
    seed: int = 0,
    progress: bool = True,
    log_every: int | None = None,
) -> PrunedModel:
    """Heal a pruned causal LM with a short fine-tune on its own LM loss, keeping its sparsity exactly.

    ``method="lora"`` wraps the model with ``peft.get_peft_model(LoraConfig(...))``; ``method="full"``
    trains the blocks' own weights. Either way it is a plain AdamW loop (seeded, no weight decay,
    gradients clipped to norm 1, constant ``lr``) over seeded token windows of ``dataset`` with
    ``labels=input_ids``. Masked (unstructured / N:M) projections stay masked: see the module docstring
    for live masks, baked-in masks and what counts as a mask.

    With ``merge=False`` the adapters stay attached: ``pruned.peft_model`` is the ``PeftModel`` (its
    modules live inside ``pruned.base_model``, so ``pruned(...)`` and ``generate`` use them). Save the
    adapter alone with ``pruned.peft_model.save_pretrained("adapter/")`` and load it back with
    ``peft.PeftModel.from_pretrained(model, "adapter/")``; note that plain PEFT applies the delta
    densely, so for a sparse model call :func:`merge_adapters` (masked merge) before
    ``pruned.save_pretrained``, which expects a model without adapters.

    What was done is recorded in ``pruned.report.extra["healing"]``: method, steps, lr, the LoRA
    config, the data, the loss at the first and last step, a loss curve (mean loss of every
    ``log_every`` steps), the number of masked projections kept sparse and the wall time.

    Args:
        pruned: A :class:`PrunedModel`, or a plain ``PreTrainedModel`` (wrapped in a new one).
        dataset: Healing text: anything ``CalibrationConfig(dataset=...)`` accepts (a list of strings, a
            local text / JSON / JSONL / parquet file or folder, a ``datasets.Dataset``, a registered
            name), or a ready :class:`~hf_prune.CalibrationConfig`, whose ``nsamples``, ``seqlen`` and
            ``seed`` then define the windows (``seqlen`` and ``seed`` below are not used for them).
            Otherwise ``min(steps * batch_size, 4096)`` windows of ``seqlen`` tokens are drawn with
            ``seed``; fewer windows than steps need are cycled.
        tokenizer: Tokenizer for ``dataset``; default ``pruned.tokenizer`` (set to this one when it was
            ``None`` and this is a transformers tokenizer, so ``save_pretrained`` writes it).
        method: ``"lora"`` or ``"full"``.
        steps: Optimizer steps (>= 1).
        lr: Learning rate; ``None`` uses :data:`DEFAULT_LR` (2e-4 for LoRA, 2e-5 for full).
        batch_size: Windows per step.
        seqlen: Tokens per window (at most the model's ``max_position_embeddings``).
        lora_r: LoRA rank.
        lora_alpha: LoRA alpha (the delta is scaled by ``lora_alpha / lora_r``).
        lora_dropout: Dropout on the adapters' input, in ``[0, 1)``.
        target_modules: Modules to adapt (LoRA: Linear/Conv1D projections) or to train (``"full"``: any
            module's parameters), as exact names, dotted suffixes (``"self_attn.q_proj"``), leaf names
            (``"q_proj"``) or regular expressions. Default: every linear projection inside the main
            stack's blocks for LoRA (Llama: q/k/v/o/gate/up/down), every parameter of those blocks for
            ``"full"``.
        merge: LoRA only: merge the adapters (masked where the weight is masked) and remove PEFT, so
            ``pruned.base_model`` is the original class again; ``False`` keeps them attached.
        seed: Seed of the windows, the adapter initialization and dropout (the global RNG state is
            left as it was).
        progress: Show a progress bar (only on a terminal; see :func:`hf_prune.utils.show_progress`).
        log_every: Steps per point of the recorded loss curve; ``None`` gives about 20 points.

    Returns:
        ``pruned`` (or the new ``PrunedModel`` around a plain model), healed in place.

    Raises:
        ValueError: For an unknown ``method``, ``steps <= 0`` or another out-of-range number, a
            ``target_modules`` entry that matches no module (the message lists the available names),
            nothing trainable, too short data, ``seqlen`` above the model's context, or adapters already
            attached.
        TypeError: For a model that is not a causal LM, a wrongly typed argument, or no tokenizer.
        RuntimeError: If the loss becomes NaN or infinite (lower ``lr``). LoRA adapters are then
            removed unmerged, leaving the model as it was; ``method="full"`` leaves the weights as
            trained up to that step.
    """
    _check_args(method, steps, lr, batch_size, seqlen, lora_r, lora_alpha, lora_dropout, log_every)
    pruned = _as_pruned(pruned, tokenizer)
    model = pruned.base_model
    _check_model(model)
    if pruned.tokenizer is None and callable(getattr(tokenizer, "save_pretrained", None)):
        pruned.tokenizer = tokenizer  # remembered like prune(tokenizer=...), so save_pretrained writes it
    tokenizer = tokenizer if tokenizer is not None else pruned.tokenizer
    if tokenizer is None or not callable(tokenizer):
        raise TypeError(
            f"heal needs a tokenizer to cut windows from dataset, got {type(tokenizer).__name__}. Pass "
            "tokenizer=AutoTokenizer.from_pretrained(...) or set pruned.tokenizer."
        )
    calib = _calibration(dataset, steps, batch_size, seqlen, seed)
    batches = _windows(calib, tokenizer, model)
    lr = float(DEFAULT_LR[method] if lr is None else lr)
    log_every = log_every or max(1, math.ceil(steps / _CURVE_POINTS))

    masks, mask_source = _find_masks(pruned)
    targets = _resolve(model, target_modules, linear_only=method == "lora")
    if method == "lora" and targets is None:
        targets = [ref.name for ref in iter_block_linears(model, stacks=[_main_stack(model)])]
    device = next(model.parameters()).device
    was_training = model.training
    start = time.perf_counter()
    # Fork the RNG so healing is reproducible from ``seed`` without moving the caller's random state.
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        temporary: list[nn.Module] = []
        if method == "lora":
            peft_model = _attach_lora(
                model, targets or [], masks, r=lora_r, alpha=lora_alpha, dropout=lora_dropout
            )
            params = [p for p in peft_model.parameters() if p.requires_grad]
            flags: dict[int, bool] = {}
        else:
            peft_model = None
            params, flags, temporary = _prepare_full(model, targets, masks, mask_source)
        n_trainable = sum(p.numel() for p in params)
        if n_trainable == 0:
            _undo_setup(model, peft_model, flags, temporary)
            raise ValueError(
                f"method={method!r} with target_modules={_short(target_modules)} leaves no trainable "
                "parameters (the matched modules hold no floating-point weights). Pick modules with "
                "weights, e.g. target_modules=['mlp'] or None."
            )
        try:
            losses = _train(
                model, batches, params, lr=lr, steps=steps, progress=progress, log_every=log_every
            )
        except BaseException:
            _undo_setup(model, peft_model, flags, temporary)
            model.train(was_training)
            raise
    model.train(was_training)

    record: dict[str, Any] = {
        "method": method,
        "steps": steps,
        "lr": lr,
        "optimizer": {"name": "AdamW", "weight_decay": 0.0, "max_grad_norm": _MAX_GRAD_NORM},
        "batch_size": batch_size,
        "seqlen": calib.seqlen,
        "seed": seed,
        "dataset": calib.describe(),
        "windows": sum(int(b["input_ids"].shape[0]) for b in batches),
        "trainable_params": n_trainable,
        "target_modules": _summarize_targets(targets),
        "masked_modules": len(masks),
        "mask_source": sorted(set(mask_source.values())),
        "loss_start": losses[0],
        "loss_end": losses[-1],
        "loss_curve": _curve(losses, log_every),
        "log_every": log_every,
        "merged": False,
    }
    if method == "lora":
        record["lora"] = {
            "r": lora_r,
            "lora_alpha": lora_alpha,
            "lora_dropout": lora_dropout,
            "bias": "none",
            "masked_delta": any(n in masks for n in targets or []),
        }
    previous = pruned.report.extra.get("healing")
    if isinstance(previous, dict):
        record["previous"] = [*previous.pop("previous", []), previous]
    pruned.report.extra["healing"] = record

    if peft_model is not None:
        # Keep the PeftModel out of the module tree (a plain attribute, not a submodule): its modules
        # already live inside base_model, and registering it would list every weight twice.
        pruned.__dict__["peft_model"] = peft_model
        if merge:
            merge_adapters(pruned)
    else:
        _undo_setup(model, None, flags, temporary)
        pruned.refresh()
    record["wall_time_s"] = round(time.perf_counter() - start, 3)
    return pruned


def _summarize_targets(names: list[str] | None) -> list[str]:
    if names is None:
        return ["<all parameters of the blocks>"]
    # Block projections repeat per layer: record their relative paths once ("self_attn.q_proj").
    short = []
    for name in names:
        parts = name.split(".")
        digits = [i for i, p in enumerate(parts) if p.isdigit()]
        rel = ".".join(parts[digits[-1] + 1 :]) if digits else name
        if rel not in short:
            short.append(rel)
    return short


def _curve(losses: list[float], every: int) -> list[dict[str, float]]:
    points = []
    for end in range(every, len(losses) + every, every):
        chunk = losses[end - every : min(end, len(losses))]
        points.append({"step": min(end, len(losses)), "loss": round(sum(chunk) / len(chunk), 5)})
    return points


def _prepare_full(
    model: PreTrainedModel,
    targets: list[str] | None,
    masks: dict[str, torch.Tensor],
    mask_source: dict[str, str],
) -> tuple[list[torch.Tensor], dict[int, bool], list[nn.Module]]:
    """Freeze all but the trained parameters; re-attach masks that were baked in (removed after)."""
    flags = {id(p): p.requires_grad for p in model.parameters()}
    modules = dict(model.named_modules())
    temporary = []
    for name, source in mask_source.items():
        if source == "report":
            # A parametrization keeps the zeros exact during training (no gradient reaches them).
            mask_ops.apply_mask(modules[name], masks[name])
            temporary.append(modules[name])
    if targets is None:
        owners: list[nn.Module] = [get_layers(model, get_arch(model).stack(_main_stack(model)))]
    else:
        owners = [modules[n] for n in targets]
    for p in model.parameters():
        p.requires_grad_(False)
    params: list[torch.Tensor] = []
    seen: set[int] = set()
    for owner in owners:
        for p in owner.parameters():
            if id(p) not in seen and p.is_floating_point():
                seen.add(id(p))
                p.requires_grad_(True)
                params.append(p)
    return params, flags, temporary


def _undo_setup(
    model: PreTrainedModel, peft_model: nn.Module | None, flags: dict[int, bool], temporary: list[nn.Module]
) -> None:
    """Remove what healing attached (adapters without merging, temporary masks) and restore flags."""
    if peft_model is not None:
        flags = getattr(peft_model, "_hf_prune_requires_grad", flags)
        peft_model.unload()
    for module in temporary:
        mask_ops.remove_mask(module, make_physical=True)
    for p in model.parameters():
        p.requires_grad_(flags.get(id(p), True))


def _train(
    model: PreTrainedModel,
    batches: list[dict[str, Any]],
    params: list[torch.Tensor],
    *,
    lr: float,
    steps: int,
    progress: bool,
    log_every: int,
) -> list[float]:
    """Run ``steps`` AdamW steps on the LM loss and return the loss of every step.

    A plain loop rather than ``transformers.Trainer``: the windows are ready tensors, there is nothing
    to shard or accumulate, and Trainer would bring an output directory, its own seeding, scheduler,
    logging integrations and accelerate state, none of which helps a few hundred CPU-sized steps and
    all of which make the result harder to reproduce exactly.
    """
    device = next(model.parameters()).device
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    model.train()
    losses: list[float] = []
    bar = tqdm(total=steps, desc="healing", unit="step", disable=not show_progress(progress))
    try:
        for step in range(steps):
            batch = batches[step % len(batches)]
            input_ids = batch["input_ids"].to(device)
            out = model(
                input_ids=input_ids,
                attention_mask=batch["attention_mask"].to(device),
                labels=input_ids,
                use_cache=False,
            )
            loss = out.loss
            if loss is None or not torch.isfinite(loss):
                raise RuntimeError(
                    f"healing loss is {None if loss is None else float(loss)} at step {step + 1} with "
                    f"lr={lr}; lower lr (or check the data)."
                )
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, _MAX_GRAD_NORM)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(float(loss.detach()))
            bar.update(1)
            if (step + 1) % log_every == 0:
                bar.set_postfix(loss=f"{sum(losses[-log_every:]) / log_every:.4f}")
    finally:
        bar.close()
    return losses

"""``PruningCallback``: gradual pruning inside ``transformers.Trainer``, with masks kept exact while training.

Unstructured / N:M methods (Zhu & Gupta 2017 gradual magnitude pruning, generalized to any registered
scorer: Wanda, SparseGPT, SNIP, ...) prune on a schedule. Between pruning steps the masks are kept
**exactly**: masked gradients are zeroed before the optimizer step (``on_pre_optimizer_step``, so Adam's
moments stay clean), masked weights are zeroed again after it (``on_optimizer_step``, which also covers
weight decay, gradient clipping and skipped fp16 steps), and the optimizer moments of newly pruned weights
are cleared when they are pruned.

Why plain zeros plus a boolean mask held by the callback, not parametrizations: ``Trainer`` checkpoints
``model.state_dict()`` and reloads it into a freshly built model on ``resume_from_checkpoint``; a
parametrized weight would be stored as ``...parametrizations.weight.original`` and not load back. Here
the model's state dict stays plain (the zeros are in the weights) and the masks (1 byte per weight, no
dense copy of any weight) are saved beside Trainer's files as ``hf_prune_pruning.safetensors``, together
with the schedule state and the calibration batches, so a resumed run ends with the same masks as an
uninterrupted one.

Structured (width) methods shrink the model physically at each pruning step; the callback then swaps the
new, smaller parameters into the optimizer (their moments restart). That path is single-process and
cannot resume from a mid-run checkpoint (``Trainer`` would load shrunk weights into a dense model).

Under data parallelism (``accelerate launch`` / DDP) every process prunes collectively (calibration
statistics are all-reduced by the runner) and the masks are then broadcast from rank 0, so all ranks
hold identical masks.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import math
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import PreTrainedModel, TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from hf_prune.allocation.schedule import check_schedule, pruning_steps, scheduled_sparsity
from hf_prune.calibration.distributed import world
from hf_prune.config import CalibrationConfig, PruningConfig
from hf_prune.integration.pruned_model import PrunedModel
from hf_prune.surgery import masks as mask_ops

__all__ = ["STATE_FILE", "PruningCallback"]

#: File written into every ``Trainer`` checkpoint folder (masks, schedule state, calibration batches).
STATE_FILE = "hf_prune_pruning.safetensors"


def _mode(config: PruningConfig | None) -> str:
    """Return ``"keep"`` (no config), ``"mask"`` (unstructured / N:M) or ``"shrink"`` (width)."""
    from hf_prune.methods.base import SparsityConfig
    from hf_prune.methods.structured import StructuredConfig

    if config is None:
        return "keep"
    if isinstance(config, SparsityConfig):
        return "mask"
    if isinstance(config, StructuredConfig):
        return "shrink"
    raise TypeError(
        f"PruningCallback schedules unstructured / N:M configs (MagnitudeConfig, WandaConfig, "
        f"SparseGPTConfig, SNIPConfig, ...) and width configs (StructuredMagnitudeConfig, ...); got "
        f"{type(config).__name__} (method {getattr(config, 'method', '?')!r}). Depth and Fisher-mask "
        f"pruning are one-shot: prune with hf_prune.prune() first, then train the pruned model (pass "
        f"config=None to keep its masks while training)."
    )


def _needs_data(config: PruningConfig) -> bool:
    """Whether the method needs calibration batches (magnitude needs none unless OWL allocates)."""
    from hf_prune.methods.magnitude import MagnitudeConfig
    from hf_prune.methods.structured import StructuredConfig
    from hf_prune.methods.unstructured import OWLAllocation

    if isinstance(config, StructuredConfig):
        return bool(config.needs)
    if isinstance(config, MagnitudeConfig):
        return isinstance(config.allocation, OWLAllocation)
    return True


def _unwrap(model: nn.Module) -> tuple[PreTrainedModel, PrunedModel | None]:
    """Return the transformers model under a Trainer's model (PrunedModel / PEFT wrappers)."""
    if isinstance(model, PrunedModel):
        return model.base_model, model
    if hasattr(model, "get_base_model") and not isinstance(model, PreTrainedModel):
        model = model.get_base_model()  # a PeftModel: masks live on the base weights
    if not isinstance(model, PreTrainedModel):
        raise TypeError(
            f"PruningCallback needs the Trainer's model to be a transformers PreTrainedModel (or a PEFT / "
            f"hf_prune wrapper of one), got {type(model).__name__}."
        )
    return model, None


class PruningCallback(TrainerCallback):
    """Prune gradually while ``Trainer`` trains, and keep the masks exact through every optimizer step.

    Follows Zhu & Gupta, "To prune, or not to prune: exploring the efficacy of pruning for model
    compression" (2017) for the cubic schedule; any registered unstructured / N:M scorer (magnitude,
    Wanda, SparseGPT, first-order) or width method decides *which* weights go at each pruning step.

    Example::

        callback = PruningCallback(WandaConfig(sparsity=0.5), schedule="cubic", start_step=0,
                                   end_step=200, frequency=20)
        Trainer(model=model, args=args, train_dataset=ds, callbacks=[callback]).train()
        callback.pruned.save_pretrained("out")   # our format; the run is recorded in the report and card

    Args:
        config: The method and its **final** target (``sparsity``). ``None`` keeps the masks the model
            already carries (from :func:`hf_prune.prune`, before ``finalize``) exact while training.
        schedule: ``"cubic"`` (Zhu & Gupta), ``"linear"`` or ``"constant"`` (the whole target at
            ``start_step``). N:M patterns are all-or-nothing per group: they need ``"constant"``.
        start_step: Optimizer step of the first pruning (``0``: before the first step when the method
            needs no data or ``calibration`` is given, else after the first step).
        end_step: Step at which the target is reached exactly; ``None`` = the run's ``max_steps``.
        frequency: Prune every this many optimizer steps between ``start_step`` and ``end_step``.
        initial_sparsity: Sparsity of the first pruning step (``s_i`` of the cubic schedule).
        calibration: Calibration data for calibrated methods; ``None`` draws them from the last
            ``calibration_batches`` training batches (captured by a forward pre-hook).
        tokenizer: Tokenizer for ``calibration`` text (default: the Trainer's ``processing_class``).
        calibration_batches: Training batches kept for calibration when ``calibration`` is ``None``.
        pruned: A :class:`PrunedModel` whose ``base_model`` is the Trainer's model, to continue its
            report (default: a new one is made at the start of training).
        resume_dir: Checkpoint folder to restore masks from when resuming (default:
            ``output_dir/checkpoint-<global_step>``, where ``Trainer`` writes them).
    """

    def __init__(
        self,
        config: PruningConfig | None,
        *,
        schedule: str = "cubic",
        start_step: int = 0,
        end_step: int | None = None,
        frequency: int = 10,
        initial_sparsity: float = 0.0,
        calibration: CalibrationConfig | None = None,
        tokenizer: Any = None,
        calibration_batches: int = 4,
        pruned: PrunedModel | None = None,
        resume_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        if config is not None and not isinstance(config, PruningConfig):
            raise TypeError(
                f"config must be a PruningConfig (e.g. WandaConfig(sparsity=0.5)) or None to keep existing "
                f"masks, got {type(config).__name__}."
            )
        self.mode = _mode(config)
        self.config = config
        target = float(getattr(config, "sparsity", 0.0)) if config is not None else 0.0
        nm = self.mode == "mask" and getattr(config, "pattern", "unstructured") != "unstructured"
        if nm and schedule != "constant":
            raise ValueError(
                f"schedule={schedule!r} cannot ramp an N:M pattern ({config.pattern}): every group keeps "
                f"exactly N weights, there is no partial N:M sparsity. Use schedule='constant' (prune "
                f"at start_step, keep the pattern while training) or an unstructured config."
            )
        if isinstance(calibration_batches, bool) or not isinstance(calibration_batches, int):
            raise TypeError(f"calibration_batches must be an int >= 1, got {calibration_batches!r}.")
        if calibration_batches < 1:
            raise ValueError(f"calibration_batches must be an int >= 1, got {calibration_batches!r}.")
        if calibration is not None and not isinstance(calibration, CalibrationConfig):
            raise TypeError(
                f"calibration must be a CalibrationConfig or None, got {type(calibration).__name__}."
            )
        if pruned is not None and not isinstance(pruned, PrunedModel):
            raise TypeError(f"pruned must be a PrunedModel or None, got {type(pruned).__name__}.")
        # end_step None is resolved from the run's max_steps; validate the rest now with a stand-in.
        check_schedule(
            schedule,
            start_step,
            start_step + 1 if end_step is None and schedule != "constant" else (end_step or start_step),
            frequency,
            initial_sparsity,
            target,
        )
        self.schedule = schedule
        self.start_step = start_step
        self.end_step = end_step
        self.frequency = frequency
        self.initial_sparsity = float(initial_sparsity)
        self.target = target
        self.calibration = calibration
        self.tokenizer = tokenizer
        self.calibration_batches = calibration_batches
        self.resume_dir = resume_dir
        self.pruned: PrunedModel | None = pruned
        #: One record per pruning step: step, scheduled sparsity, measured sparsity.
        self.history: list[dict[str, Any]] = []
        self._masks: dict[str, torch.Tensor] = {}  # storage orientation, bool
        self._modules: dict[str, nn.Module] = {}
        self._steps: set[int] = set()
        self._applied = 0.0  # scheduled sparsity last applied
        self._pending: float | None = None  # a step-0 pruning deferred until training batches exist
        self._buffer: collections.deque[dict[str, torch.Tensor]] = collections.deque(
            maxlen=calibration_batches
        )
        self._calib: list[dict[str, torch.Tensor]] | None = None
        self._hook: Any = None
        self._busy = False

    # ------------------------------------------------------------------------------------ properties
    @property
    def sparsity(self) -> float:
        """Fraction of masked weights over the masked projections (``0.0`` before the first pruning)."""
        total = sum(m.numel() for m in self._masks.values())
        return 0.0 if total == 0 else 1.0 - sum(int(m.sum()) for m in self._masks.values()) / total

    def masks(self) -> dict[str, torch.Tensor]:
        """Return the keep-masks by module name, in ``[out, in]`` orientation (copies)."""
        out = {}
        for name, mask in self._masks.items():
            module = self._modules[name]
            out[name] = mask_ops.to_storage_orientation(module, mask).clone()
        return out

    # ------------------------------------------------------------------------------------ events
    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        """Wrap the model, resolve the schedule, restore a resumed run's masks, prune at step 0 if due.

        Args:
            args: Trainer arguments.
            state: Trainer state.
            control: Trainer control.
            **kwargs: ``model``, ``optimizer``, ``processing_class`` (from Trainer).
        """
        model, wrapper = _unwrap(kwargs["model"])
        if self.pruned is None:
            self.pruned = wrapper or PrunedModel(model, self.config)
        elif self.pruned.base_model is not model:
            raise ValueError(
                "pruned.base_model is not the model the Trainer trains; pass the PrunedModel whose "
                "base_model you gave to Trainer (Trainer(model=pruned.base_model)), or leave pruned=None."
            )
        if self.config is not None:
            self.pruned.pruning_config = self.config
            self.pruned.report.method = self.config.method
        if self.tokenizer is None:
            self.tokenizer = kwargs.get("processing_class")
        if self.end_step is None:
            self.end_step = self.start_step if self.schedule == "constant" else int(state.max_steps)
        check_schedule(
            self.schedule, self.start_step, self.end_step, self.frequency, self.initial_sparsity, self.target
        )
        if self.mode == "shrink" and world()[1] > 1:
            raise ValueError(
                "Width (structured) pruning during training changes parameter shapes, which DDP cannot "
                "follow; run it in one process, or prune with hf_prune.prune() before training and keep "
                "the smaller model."
            )
        self._steps = set(pruning_steps(self.start_step, self.end_step, self.frequency))
        if self.mode != "keep" and _needs_data(self.config) and self.calibration is None:
            self._hook = model.register_forward_pre_hook(self._capture, with_kwargs=True)
        # Masks present now (a model pruned by hf_prune.prune before training) are kept from here on.
        self._adopt_live_masks(model)
        if self.mode == "keep" and not self._masks:
            raise ValueError(
                "PruningCallback(config=None) keeps existing masks, but the model carries none; prune it "
                "first (pruned = hf_prune.prune(model, WandaConfig(...)); Trainer(model=pruned.base_model, "
                "...)) or pass a config to prune during training."
            )
        if state.global_step > 0:
            self._restore(args, state, model)
        elif self.mode != "keep" and 0 in self._steps:
            s0 = self._target_at(0)
            if s0 > 0:
                if _needs_data(self.config) and self.calibration is None:
                    self._pending = s0  # no training batch seen yet: prune after the first step
                else:
                    self._prune(s0, 0, model, kwargs.get("optimizer"))

    def on_pre_optimizer_step(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        """Zero the gradients of masked weights, so the optimizer's moments never see them.

        Args:
            args: Trainer arguments.
            state: Trainer state.
            control: Trainer control.
            **kwargs: Unused.
        """
        with torch.no_grad():
            for name, mask in self._masks.items():
                grad = self._modules[name].weight.grad
                if grad is not None:
                    grad.mul_(mask.to(grad.device))

    def on_optimizer_step(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        """Zero the masked weights again (weight decay and stale moments would move them otherwise).

        Args:
            args: Trainer arguments.
            state: Trainer state.
            control: Trainer control.
            **kwargs: Unused.
        """
        self._enforce()

    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        """Prune when the schedule says so (at this ``global_step``).

        Args:
            args: Trainer arguments.
            state: Trainer state.
            control: Trainer control.
            **kwargs: ``model``, ``optimizer``.
        """
        if self.mode == "keep":
            return
        step = int(state.global_step)
        due = self._target_at(step) if step in self._steps else None
        if self._pending is not None:
            due = max(self._pending, due or 0.0)
            self._pending = None
        if due is not None and due > self._applied:
            model, _ = _unwrap(kwargs["model"])
            self._prune(due, step, model, kwargs.get("optimizer"))

    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: dict[str, float] | None = None,
        **kwargs: Any,
    ) -> None:
        """Add the current sparsity to Trainer's logs.

        Args:
            args: Trainer arguments.
            state: Trainer state.
            control: Trainer control.
            logs: The log record being written.
            **kwargs: Unused.
        """
        if logs is not None and self.mode != "shrink":
            logs["sparsity"] = round(self.sparsity, 6)

    def on_save(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        """Write masks, schedule state and calibration batches into the checkpoint Trainer just saved.

        Args:
            args: Trainer arguments.
            state: Trainer state.
            control: Trainer control.
            **kwargs: Unused.
        """
        if not state.is_world_process_zero:
            return
        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if not folder.is_dir():
            return
        tensors: dict[str, torch.Tensor] = {}
        for name, mask in self._masks.items():
            tensors[f"mask::{name}"] = mask.to(torch.uint8).cpu().contiguous()
        for i, batch in enumerate(self._buffer):
            for key, value in batch.items():
                tensors[f"calib::{i}::{key}"] = value.contiguous()
        meta = {
            "applied": self._applied,
            "pending": self._pending,
            "history": self.history,
            "end_step": self.end_step,
            "mode": self.mode,
        }
        tmp = folder / f".{STATE_FILE}.tmp"
        save_file(tensors, str(tmp), metadata={"hf_prune_state": json.dumps(meta)})
        os.replace(tmp, folder / STATE_FILE)

    def on_train_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        """Remove the capture hook and record the run in the report (saved in the checkpoint and card).

        Args:
            args: Trainer arguments.
            state: Trainer state.
            control: Trainer control.
            **kwargs: Unused.
        """
        if self._hook is not None:
            self._hook.remove()
            self._hook = None
        if self.pruned is None:
            return
        self._enforce()
        for row in self.pruned.report.layers:
            mask = self._masks.get(row.name)
            if row.kind == "linear" and mask is not None:
                row.nonzero_after = int(mask.sum())
                row.sparsity_measured = 1.0 - int(mask.sum()) / mask.numel()
        self.pruned.report.extra["training"] = {
            "callback": "PruningCallback",
            "method": self.config.method if self.config is not None else "keep masks",
            "schedule": self.schedule,
            "start_step": self.start_step,
            "end_step": self.end_step,
            "frequency": self.frequency,
            "initial_sparsity": self.initial_sparsity,
            "target_sparsity": self.target,
            "final_sparsity": round(self.sparsity, 6) if self.mode != "shrink" else None,
            "calibration": (
                self.calibration.describe()
                if self.calibration is not None
                else f"last {self.calibration_batches} training batches"
            ),
            "optimizer_steps": int(state.global_step),
            "history": self.history,
        }
        self.pruned.refresh()

    # ------------------------------------------------------------------------------------ internals
    def _target_at(self, step: int) -> float:
        assert self.end_step is not None  # resolved in on_train_begin; internal invariant
        return scheduled_sparsity(
            step,
            target=self.target,
            start_step=self.start_step,
            end_step=self.end_step,
            schedule=self.schedule,
            initial_sparsity=self.initial_sparsity,
        )

    def _capture(self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        # Only training forwards are calibration data: not evaluation, not our own pruning passes.
        if not module.training or self._busy:
            return
        ids = kwargs.get("input_ids", args[0] if args else None)
        if not isinstance(ids, torch.Tensor):
            return
        batch = {"input_ids": ids.detach().cpu().clone()}
        mask = kwargs.get("attention_mask")
        if isinstance(mask, torch.Tensor):
            batch["attention_mask"] = mask.detach().cpu().clone()
        self._buffer.append(batch)

    def _batches(self) -> list[dict[str, torch.Tensor]] | None:
        if self.calibration is None:
            return list(self._buffer) or None
        if self._calib is None:
            from hf_prune.methods.base import PruneContext

            ctx = PruneContext(calibration=self.calibration, tokenizer=self.tokenizer, progress=False)
            self._calib = ctx.get_batches(self.config.method if self.config else "keep")
        return self._calib

    def _adopt_live_masks(self, model: nn.Module) -> None:
        """Turn hf_prune parametrized masks into plain zeros + a mask held here (same Parameter objects)."""
        for name, module in mask_ops.masked_modules(model):
            mask = mask_ops.to_storage_orientation(module, mask_ops.get_mask(module)).clone()
            mask_ops.remove_mask(module, make_physical=True)
            previous = self._masks.get(name)
            self._masks[name] = mask if previous is None else (mask & previous.to(mask.device))
            self._modules[name] = module
        self._enforce()

    def _enforce(self) -> None:
        # In-place multiply by the bool mask: no float copy of the mask on every optimizer step.
        with torch.no_grad():
            for name, mask in self._masks.items():
                weight = self._modules[name].weight
                weight.mul_(mask.to(weight.device))

    def _prune(self, sparsity: float, step: int, model: PreTrainedModel, optimizer: Any) -> None:
        """Run the method at ``sparsity`` and take over its masks (or swap shrunk parameters in)."""
        from hf_prune.methods import METHODS
        from hf_prune.methods.base import PruneContext

        assert self.config is not None and self.pruned is not None  # guarded by callers
        if self.mode == "shrink":
            # The runner removes a fraction of the *current* units: ask for what is left to remove.
            fraction = 1.0 - (1.0 - sparsity) / (1.0 - self._applied)
            config = dataclasses.replace(self.config, sparsity=min(max(fraction, 0.0), 0.999999))
        else:
            config = dataclasses.replace(self.config, sparsity=sparsity)
        batches = self._batches()
        if batches is None and _needs_data(self.config):
            raise ValueError(
                f"{self.config.method} needs calibration batches at step {step}, but no training batch has "
                f"been seen; pass calibration=CalibrationConfig(...) or start_step >= 1."
            )
        ctx = PruneContext(
            calibration=self.calibration, tokenizer=self.tokenizer, progress=False, batches=batches,
            pruned=self.pruned,
        )  # fmt: skip
        # Width surgery replaces parameters: remember where each lived, to swap the new ones in.
        before = (
            {id(p): (m, n, p) for m in model.modules() for n, p in m.named_parameters(recurse=False)}
            if self.mode == "shrink"
            else {}
        )
        was_training = model.training
        model.eval()
        self._busy = True
        try:
            rows = METHODS.get(config.method).run(model, config, ctx)
        finally:
            self._busy = False
            model.train(was_training)
        model.zero_grad(set_to_none=True)  # scorers that backpropagate leave gradients behind
        if self.mode == "shrink":
            self._swap_optimizer_params(optimizer, before)
        else:
            self._adopt_live_masks(model)
            self._broadcast()
            self._clear_moments(optimizer)
        self._applied = sparsity
        self._record_rows(rows)
        measured = self.sparsity if self.mode == "mask" else None
        self.history.append(
            {
                "step": step,
                "scheduled": round(sparsity, 6),
                "measured": None if measured is None else round(measured, 6),
            }
        )

    def _record_rows(self, rows: list[Any]) -> None:
        """Keep one report row per unit: the latest pruning step's, with the dense ``params_before``."""
        assert self.pruned is not None  # set in on_train_begin; internal invariant
        old = {(r.name, r.kind): r for r in self.pruned.report.layers}
        for row in rows:
            first = old.get((row.name, row.kind))
            if first is not None:
                row.params_before = first.params_before
            old[(row.name, row.kind)] = row
        self.pruned.report.layers = list(old.values())

    def _broadcast(self) -> None:
        if world()[1] == 1:
            return
        # The runner all-reduces its statistics, so ranks agree up to float summation order; broadcasting
        # rank 0's masks makes them identical bit for bit.
        with torch.no_grad():
            for name in sorted(self._masks):
                buf = self._masks[name].to(torch.uint8)
                torch.distributed.broadcast(buf, src=0)
                self._masks[name] = buf.to(torch.bool)
        self._enforce()

    def _clear_moments(self, optimizer: Any) -> None:
        opt = getattr(optimizer, "optimizer", optimizer)  # accelerate wraps the torch optimizer
        state = getattr(opt, "state", None)
        if not state:
            return
        with torch.no_grad():
            for name, mask in self._masks.items():
                entry = state.get(self._modules[name].weight)
                for value in (entry or {}).values():
                    if isinstance(value, torch.Tensor) and value.shape == mask.shape:
                        value.mul_(mask.to(value.device))

    def _swap_optimizer_params(self, optimizer: Any, before: dict[int, tuple[nn.Module, str, Any]]) -> None:
        opt = getattr(optimizer, "optimizer", optimizer)
        if opt is None:
            return
        live = {id(p) for p in self.pruned.base_model.parameters()} if self.pruned else set()
        for group in opt.param_groups:
            params = []
            for p in group["params"]:
                module, attr, old = before.get(id(p), (None, None, p))
                if id(p) in live:
                    params.append(p)
                    continue
                opt.state.pop(old, None)  # the shape changed: its moments no longer apply
                new = module._parameters.get(attr) if module is not None else None
                if new is not None and id(new) in live:
                    params.append(new)
            group["params"] = params

    def _restore(self, args: TrainingArguments, state: TrainerState, model: nn.Module) -> None:
        folder = (
            Path(self.resume_dir)
            if self.resume_dir
            else Path(args.output_dir) / f"checkpoint-{state.global_step}"
        )
        path = folder / STATE_FILE
        if self.mode == "shrink":
            raise ValueError(
                "Width pruning during training cannot resume from a mid-run checkpoint (the checkpoint holds "
                "shrunk weights); restart the run, or prune before training."
            )
        if not path.is_file():
            raise ValueError(
                f"Resuming at step {state.global_step} but {path} does not exist, so the pruning masks "
                f"cannot be restored; pass resume_dir= the checkpoint folder you resume from."
            )
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as handle:
            meta = json.loads((handle.metadata() or {}).get("hf_prune_state", "{}"))
        tensors = load_file(str(path))  # safetensors: no unpickling
        modules = dict(model.named_modules())
        for key, value in tensors.items():
            if key.startswith("mask::"):
                name = key[len("mask::") :]
                if name not in modules:
                    raise ValueError(f"{path} holds a mask for {name!r}, which this model does not have.")
                self._modules[name] = modules[name]
                self._masks[name] = value.to(torch.bool).to(modules[name].weight.device)
        calib: dict[int, dict[str, torch.Tensor]] = collections.defaultdict(dict)
        for key, value in tensors.items():
            if key.startswith("calib::"):
                _, idx, field = key.split("::")
                calib[int(idx)][field] = value
        self._buffer.clear()
        for idx in sorted(calib):
            self._buffer.append(calib[idx])
        self._applied = float(meta.get("applied", 0.0))
        self._pending = meta.get("pending")
        self.history = list(meta.get("history", []))
        self._enforce()
        if not math.isclose(self._applied, 0.0) and not self._masks and self.mode == "mask":
            raise ValueError(f"{path} records sparsity {self._applied} but holds no masks; it is damaged.")

"""``PrunedModel``: a ``PreTrainedModel`` plus what was done to it, saveable as a normal checkpoint.

This wrapper is the top of ``hf_prune.integration``'s import graph: it may import the checkpoint
format, the model card, the Hub code and the exporters (lazily), and none of those imports it back; it
hands them plain data (the model, its config, report, structure, calibration, base-model name).
"""

from __future__ import annotations

import operator
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedModel

from hf_prune.arch import StackSpec, get_arch, get_layers, head_geometry, param_count
from hf_prune.config import PruningConfig
from hf_prune.report import LayerReport, PruningReport
from hf_prune.surgery import masks as mask_ops
from hf_prune.surgery.depth import remove_layers as _remove_layers
from hf_prune.surgery.offload import read_param
from hf_prune.surgery.structure import sync_config
from hf_prune.surgery.subblock import attention_removed, mlp_removed
from hf_prune.surgery.subblock import remove_attention as _remove_attention
from hf_prune.surgery.subblock import remove_mlp as _remove_mlp
from hf_prune.surgery.width import merge_kv_heads as _merge_kv_heads
from hf_prune.surgery.width import shrink_heads, shrink_mlp

#: ``save_pretrained`` formats: hf_prune's own checkpoint, and the Nemotron-NAS (DeciLM) layout.
SAVE_FORMATS = ("hf_prune", "nemotron-nas")


def count_nonzero(model: nn.Module) -> int:
    """Count non-zero parameter entries; a masked weight is counted as the mask leaves it.

    Args:
        model: Any module.
    """
    total = 0
    suffix = ".parametrizations.weight.original"
    for name, p in model.named_parameters():  # shared (tied) tensors are listed once
        if name.endswith(suffix):
            owner = model.get_submodule(name[: -len(suffix)])
            total += mask_ops.count_nonzero_weight(owner)
        elif p.is_meta:  # offloaded by accelerate: count the values in its weights map
            module_name, _, pname = name.rpartition(".")
            total += int(torch.count_nonzero(read_param(model.get_submodule(module_name), pname)))
        else:
            total += int(torch.count_nonzero(p.detach()))
    return total


class PrunedModel(nn.Module):
    """A pruned ``PreTrainedModel`` (``base_model``) with its config, report and reversible masks.

    Calls, ``generate`` and unknown attributes are forwarded to ``base_model``, so a ``PrunedModel`` can
    be used wherever the model was. ``save_pretrained`` writes a normal, smaller checkpoint plus
    ``pruning_config.json`` and a model card; ``finalize()`` returns the plain model.

    Attributes:
        tokenizer: The tokenizer or processor that belongs with the model, or ``None``. It is set
            when hf_prune is given or loads one: the ``tokenizer=`` of :func:`hf_prune.prune`, the one
            ``AutoPrunedModel*.from_pretrained`` loads for calibration (the processor for
            ``AutoPrunedModelForImageTextToText``), or the last ``tokenizer=`` passed to
            ``save_pretrained`` / ``push_to_hub``. Those two write it beside the weights, so a saved
            checkpoint is complete. Assign it yourself to change what is saved; reloading a checkpoint
            does not load it (use ``AutoTokenizer.from_pretrained(folder)``).

    Args:
        base_model: The model being pruned.
        pruning_config: The method's config.
        report: The report (a fresh one is made when ``None``).
        calibration: Description of the calibration data used, for the card.
        tokenizer: The tokenizer / processor to remember (see ``tokenizer`` above).
    """

    def __init__(
        self,
        base_model: PreTrainedModel,
        pruning_config: PruningConfig | None = None,
        report: PruningReport | None = None,
        calibration: dict[str, Any] | None = None,
        tokenizer: Any = None,
    ) -> None:
        super().__init__()
        if not isinstance(base_model, PreTrainedModel):
            raise TypeError(
                f"base_model must be a transformers PreTrainedModel, got {type(base_model).__name__}."
            )
        get_arch(base_model)  # fail early for unsupported architectures
        self.base_model = base_model
        self.pruning_config = pruning_config
        self.calibration = calibration
        self.tokenizer = tokenizer
        self.base_model_name = str(getattr(base_model.config, "_name_or_path", "") or "")
        self.report = report or PruningReport(
            method=pruning_config.method if pruning_config else "custom",
            params_before=param_count(base_model),
            nonzero_before=count_nonzero(base_model),
        )
        # Original block numbering per stack, so reports name removed blocks as the base model did.
        self._origin: dict[str, list[int]] = {}

    # ------------------------------------------------------------------------------------ forwarding
    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """Run the wrapped model.

        Args:
            *args: Positional arguments of the wrapped model.
            **kwargs: Keyword arguments of the wrapped model.
        """
        return self.base_model(*args, **kwargs)

    def generate(self, *args: Any, **kwargs: Any) -> Any:
        """Call ``base_model.generate``.

        Args:
            *args: Positional arguments of ``generate``.
            **kwargs: Keyword arguments of ``generate``.
        """
        return self.base_model.generate(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name == "base_model":
                raise
            return getattr(self.base_model, name)

    @property
    def config(self) -> Any:
        """The wrapped model's config (kept in sync with uniform structural changes)."""
        return self.base_model.config

    # -------------------------------------------------------------------------------------- surgery
    def _stack(self, stack: str | None) -> StackSpec:
        arch = get_arch(self.base_model)
        if stack is None:
            # The last stack is the text / main one (LLaVA: language_model after the vision tower).
            return arch.stacks[-1]
        return arch.stack(stack)

    def _origins(self, spec: StackSpec) -> list[int]:
        if spec.name not in self._origin:
            # A reloaded checkpoint knows its removed blocks only from the report: the kept blocks are
            # the original positions that were not removed.
            n = len(get_layers(self.base_model, spec))
            removed = set(self.report.removed_layers.get(spec.name, []))
            self._origin[spec.name] = [i for i in range(n + len(removed)) if i not in removed]
        return self._origin[spec.name]

    def remove_layers(self, indices: Sequence[int], stack: str | None = None) -> list[int]:
        """Remove blocks at current positions ``indices`` and record their original numbers.

        Args:
            indices: Block positions to remove.
            stack: Stack name (default: the main decoder/encoder stack).

        Returns:
            The removed blocks' original indices.
        """
        spec = self._stack(stack)
        origin = self._origins(spec)
        removed = _remove_layers(self.base_model, spec, indices)
        orig = [origin[i] for i in removed]
        self._origin[spec.name] = [o for i, o in enumerate(origin) if i not in set(removed)]
        self.report.removed_layers.setdefault(spec.name, [])
        self.report.removed_layers[spec.name] = sorted(self.report.removed_layers[spec.name] + orig)
        self.refresh()
        return orig

    def prune_neurons(self, layer: int, keep: Sequence[int], stack: str | None = None) -> None:
        """Keep only MLP neurons ``keep`` of block ``layer``.

        Args:
            layer: Current block position.
            keep: Neuron indices to keep.
            stack: Stack name (default: the main stack).
        """

        def apply(spec: StackSpec) -> dict[str, Any]:
            self._check_present(spec, layer, "mlp")
            shrink_mlp(self.base_model, spec, layer, keep)
            return {"neurons": len(keep)}

        self._record_width_change(stack, layer, "mlp", apply)

    def prune_heads(self, layer: int, keep_heads: Sequence[int], stack: str | None = None) -> None:
        """Keep only query heads ``keep_heads`` of block ``layer`` (GQA-aware, see ``shrink_heads``).

        Args:
            layer: Current block position.
            keep_heads: Query-head indices to keep.
            stack: Stack name (default: the main stack).
        """

        def apply(spec: StackSpec) -> dict[str, Any]:
            self._check_present(spec, layer, "attention")
            shrink_heads(self.base_model, spec, layer, keep_heads)
            if attention_removed(self.base_model, spec, layer):  # no heads kept: sub-block removed
                return {"heads": [], "kv_heads": 0, "removed": True}
            kv = head_geometry(self.base_model, spec, layer).num_kv_heads
            return {"heads": sorted(int(h) for h in keep_heads), "kv_heads": kv}

        self._record_width_change(stack, layer, "attention", apply)

    def remove_attention(self, layer: int, stack: str | None = None) -> None:
        """Remove block ``layer``'s whole attention sub-block (and its input norm); the MLP stays.

        The block's residual passes through the removed part unchanged (a zero-output stand-in, see
        :mod:`hf_prune.surgery.subblock`). Saved checkpoints record it as zero heads and reload
        exactly; the Nemotron-NAS export writes it as ``attention: {no_op: true}``. Llama-style
        pre-norm decoders only (Llama, Mistral, Qwen2, Gemma, the LLaVA language model).

        Args:
            layer: Current block position.
            stack: Stack name (default: the main stack).
        """

        def apply(spec: StackSpec) -> dict[str, Any]:
            _remove_attention(self.base_model, spec, layer)
            return {"heads": [], "kv_heads": 0, "removed": True}

        self._record_width_change(stack, layer, "attention", apply)

    def remove_mlp(self, layer: int, stack: str | None = None) -> None:
        """Remove block ``layer``'s whole MLP sub-block (and the norm in front of it); attention stays.

        Recorded as MLP width 0; the Nemotron-NAS export writes ``ffn: {no_op: true}``. Same families
        as :meth:`remove_attention`.

        Args:
            layer: Current block position.
            stack: Stack name (default: the main stack).
        """

        def apply(spec: StackSpec) -> dict[str, Any]:
            _remove_mlp(self.base_model, spec, layer)
            return {"neurons": 0, "removed": True}

        self._record_width_change(stack, layer, "mlp", apply)

    def merge_kv_heads(self, layer: int, num_kv_heads: int, stack: str | None = None) -> None:
        """Reduce block ``layer`` to ``num_kv_heads`` KV heads by mean-pooling adjacent KV groups.

        Every query head stays (see :func:`hf_prune.surgery.width.merge_kv_heads`, following Ainslie et
        al., "GQA", EMNLP 2023); the KV cache of the block shrinks. This is the KV-group reduction that
        the Nemotron-NAS layout expresses as ``n_heads_in_group``.

        Args:
            layer: Current block position.
            num_kv_heads: KV heads to keep (a divisor of the current count).
            stack: Stack name (default: the main stack).
        """

        def apply(spec: StackSpec) -> dict[str, Any]:
            self._check_present(spec, layer, "attention")
            _merge_kv_heads(self.base_model, spec, layer, num_kv_heads)
            geo = head_geometry(self.base_model, spec, layer)
            return {"heads": geo.num_heads, "kv_heads": geo.num_kv_heads}

        self._record_width_change(stack, layer, "attention", apply)

    def _check_present(self, spec: StackSpec, layer: int, kind: str) -> None:
        """Refuse width surgery on a sub-block that was removed (its projections no longer exist)."""
        gone = attention_removed if kind == "attention" else mlp_removed
        if gone(self.base_model, spec, layer):
            raise ValueError(
                f"{spec.name} layer {layer}: the {kind} sub-block was removed (remove_{kind}); there are no "
                f"{'heads' if kind == 'attention' else 'neurons'} left to prune."
            )

    def _record_width_change(
        self, stack: str | None, layer: int, kind: str, apply: Callable[[StackSpec], dict[str, Any]]
    ) -> None:
        """Run a width surgery on block ``layer`` and add its report row (original block numbering)."""
        spec = self._stack(stack)
        origin = self._origins(spec)
        layers = get_layers(self.base_model, spec)
        try:
            position = operator.index(layer)  # ints, numpy / torch integer scalars
        except TypeError:
            position = -1
        if isinstance(layer, bool) or not 0 <= position < len(layers):
            raise ValueError(
                f"layer={layer!r} is not a block position of stack {spec.name!r}; use an int in "
                f"[0, {len(layers)}) (current positions, after any removed blocks)."
            )
        block = layers[position]
        before = param_count(block)
        kept = apply(spec)
        self.report.layers.append(
            LayerReport(
                name=f"{spec.name}.{origin[layer]}.{kind}",
                kind=kind,
                params_before=before,
                params_after=param_count(block),
                kept_units=kept,
                stack=spec.name,
                block=origin[layer],
            )
        )
        self.refresh()

    def record_layer_selection(self, result: Any, scores: Any = None) -> None:
        """Attach a layer-selection outcome (MV-BCS assignments, significance scores) to the report.

        It is saved in ``pruning_config.json`` and shown in the model card.

        Args:
            result: A ``hf_prune.layer_selection.SelectionResult`` (or its ``to_dict()``).
            scores: Optional ``LayerScores`` (or its ``to_dict()``) the optimizer used.
        """
        data = result.to_dict() if hasattr(result, "to_dict") else dict(result)
        self.report.assignments = [v.get("assignment") for v in data.get("verifiers", [])]
        self.report.extra["layer_selection"] = data
        if scores is not None:
            data_scores = scores.to_dict() if hasattr(scores, "to_dict") else dict(scores)
            self.report.extra["layer_scores"] = data_scores

    def refresh(self) -> None:
        """Re-sync the config with the modules and recompute the report's totals."""
        sync_config(self.base_model)
        self.report.params_after = param_count(self.base_model)
        self.report.nonzero_after = count_nonzero(self.base_model)

    def measure_speed(
        self,
        baseline: nn.Module | None = None,
        *,
        batch_size: int = 1,
        seqlen: int = 128,
        repeats: int = 10,
        warmup: int = 2,
        input_ids: torch.Tensor | None = None,
    ) -> dict[str, Any]:
        """Measure forward latency on this machine and record it in ``report.speed`` (and the card).

        With a ``baseline`` (normally the dense model, kept by the caller: pruning works in place, so
        pass a copy taken before pruning) both run on the same inputs, interleaved, and the speedup is
        recorded; without one only this model's latency is. The protocol is
        :mod:`hf_prune.evaluation.speed`'s.

        Args:
            baseline: The model to compare against, or ``None``.
            batch_size: Sequences per forward pass.
            seqlen: Tokens per sequence.
            repeats: Timed passes per model (medians are reported).
            warmup: Untimed passes per model first.
            input_ids: Explicit inputs instead of seeded random ids.

        Returns:
            The recorded measurement (``pruned_ms``, and ``baseline_ms`` / ``speedup`` with a baseline).
        """
        from hf_prune.evaluation.speed import compare_latency, measure_latency

        kwargs = {
            "batch_size": batch_size,
            "seqlen": seqlen,
            "repeats": repeats,
            "warmup": warmup,
            "input_ids": input_ids,
        }
        if baseline is None:
            result = measure_latency(self, **kwargs)
            result["pruned_ms"] = result.pop("median_ms")
        else:
            result = compare_latency(baseline, self, **kwargs)
        self.report.speed = result
        return result

    # --------------------------------------------------------------------------------- life cycle
    def undo_masks(self) -> int:
        """Remove every unstructured mask and restore the dense weights; return how many were removed."""
        mods = mask_ops.masked_modules(self.base_model)
        for _, m in mods:
            mask_ops.remove_mask(m, make_physical=False)
        self.refresh()
        return len(mods)

    def finalize(self) -> PreTrainedModel:
        """Make every change physical (bake masks into the weights) and return the plain model."""
        mask_ops.make_masks_physical(self.base_model)
        sync_config(self.base_model)
        return self.base_model

    def save_pretrained(
        self,
        save_directory: str | os.PathLike[str],
        *,
        tokenizer: Any = None,
        max_shard_size: str | int = "5GB",
        card: bool = True,
        format: str = "hf_prune",
    ) -> Path:
        """Write the checkpoint atomically (DESIGN §4), or export it in another serving format.

        ``format="hf_prune"`` (default): ``config.json`` (uniform changes applied, ``per_layer_config``
        for the rest), ``model.safetensors`` (sharded when large), ``pruning_config.json`` (config +
        structure + report), ``README.md`` and the tokenizer / processor files.

        ``format="nemotron-nas"``: the Nemotron-NAS / DeciLM layout served natively by vLLM,
        TensorRT-LLM, SGLang and MLX (``block_configs`` per block; see
        :mod:`hf_prune.integration.export.nemotron_nas` for what it can express and what is refused).

        Either way the folder is first written next to its destination and renamed into place, so a
        failure leaves the old folder (or nothing), never a half checkpoint.

        Args:
            save_directory: Destination folder.
            tokenizer: Tokenizer / processor to save alongside. Default: :attr:`tokenizer`, the one
                hf_prune already knows (given to ``prune``, loaded for calibration, or passed to an
                earlier save). A tokenizer given here wins and is remembered for later saves.
            max_shard_size: Shard size passed to transformers.
            card: Write the model card (hf_prune format).
            format: ``"hf_prune"`` or ``"nemotron-nas"``.

        Returns:
            The folder path.
        """
        if format not in SAVE_FORMATS:
            raise ValueError(
                f"format={format!r} is not a known save format; use one of {list(SAVE_FORMATS)} "
                "('hf_prune' is hf_prune's own checkpoint, reloadable with AutoPrunedModel*)."
            )
        adapters = [n for n, m in self.base_model.named_modules() if type(m).__module__.startswith("peft.")]
        if adapters:
            # The checkpoint format holds plain transformers weights: LoRA layers would be saved as extra
            # keys that no loader expects, and merging densely would refill pruned zeros.
            raise ValueError(
                f"The model still has {len(adapters)} PEFT adapter module(s) (e.g. {adapters[0]!r}) attached "
                "from heal(..., merge=False). Merge them first with "
                "hf_prune.postprocess.merge_adapters(pruned) (masked, keeps the sparsity), or save the "
                "adapters alone with pruned.peft_model.save_pretrained(dir)."
            )
        if tokenizer is not None:
            if not callable(getattr(tokenizer, "save_pretrained", None)):
                raise TypeError(
                    f"tokenizer must be a transformers tokenizer or processor (with save_pretrained), got "
                    f"{type(tokenizer).__name__}."
                )
            self.tokenizer = tokenizer
        self.refresh()
        if format == "nemotron-nas":
            from hf_prune.integration.export.nemotron_nas import export_nemotron_nas

            spec = self._stack(None)
            return export_nemotron_nas(
                self.base_model,
                save_directory,
                tokenizer=self.tokenizer,
                # Whole removed blocks become both-no_op entries, so block numbers match the base model.
                removed_blocks=self.report.removed_layers.get(spec.name, []),
            )

        from hf_prune.integration.checkpoint import save_checkpoint

        def write_card(folder: Path, record: dict[str, Any]) -> None:
            # Looked up at call time so the renderer can be replaced (tests simulate a failing card).
            from hf_prune.integration import card as card_module

            # folder=tmp: the loading snippet names the tokenizer / processor saved beside it.
            card_module.render_card(self, record, folder=folder).save(folder / "README.md")

        return save_checkpoint(
            self.base_model,
            save_directory,
            pruning_config=self.pruning_config,
            report=self.report,
            calibration=self.calibration,
            base_model=self.base_model_name,
            tokenizer=self.tokenizer,
            max_shard_size=max_shard_size,
            card=write_card if card else None,
        )

    @classmethod
    def from_checkpoint(cls, loaded: Any) -> PrunedModel:
        """Wrap what :func:`hf_prune.integration.checkpoint.load_checkpoint` read.

        Args:
            loaded: A :class:`hf_prune.integration.checkpoint.LoadedCheckpoint`.

        Returns:
            The :class:`PrunedModel`, with the saved report, config, calibration and base-model name.
        """
        out = cls(loaded.model, loaded.pruning_config, report=loaded.report, calibration=loaded.calibration)
        out.base_model_name = loaded.base_model or ""
        return out

    def push_to_hub(
        self,
        repo_id: str,
        *,
        tokenizer: Any = None,
        private: bool | None = None,
        token: str | bool | None = None,
        revision: str | None = None,
        commit_message: str = "Upload pruned model (hf_prune)",
        commit_description: str | None = None,
        create_pr: bool = False,
    ) -> Any:
        """Save to a temporary folder with hf_prune's card and upload it with ``HfApi.upload_folder``.

        transformers' own ``push_to_hub`` would overwrite ``README.md`` with a default card, so hf_prune
        owns this path.

        Args:
            repo_id: Target repo (created if missing).
            tokenizer: Tokenizer / processor to upload alongside; default :attr:`tokenizer` (see
                :meth:`save_pretrained`).
            private: Create the repo private.
            token: Hub token.
            revision: Branch to commit to.
            commit_message: Commit message.
            commit_description: Longer commit description.
            create_pr: Open a pull request instead of committing to the branch.

        Returns:
            The ``huggingface_hub`` commit info.
        """
        import tempfile

        from hf_prune.integration import hub
        from hf_prune.integration.card import write_card

        repo_id = hub.check_repo_id(repo_id)
        with tempfile.TemporaryDirectory(prefix="hf_prune-push-") as tmp:
            folder = self.save_pretrained(Path(tmp) / "model", tokenizer=tokenizer)
            # Re-render so the card's loading snippet names the repo instead of a placeholder.
            write_card(folder, repo_id=repo_id, pruned=self)
            return hub.push_checkpoint(
                folder,
                repo_id,
                private=private,
                token=token,
                revision=revision,
                commit_message=commit_message,
                commit_description=commit_description,
                create_pr=create_pr,
            )

    def export_onnx(
        self,
        output_dir: str | os.PathLike[str],
        *,
        opset: int | None = None,
        sample_inputs: dict[str, torch.Tensor] | None = None,
        optimize: bool = True,
        tokenizer: Any = None,
        overwrite: bool = False,
        check: bool = True,
        atol: float = 1e-4,
        rtol: float = 1e-3,
    ) -> Path:
        """Export this model, as it is in memory, to an ONNX folder that ONNX Runtime runs.

        Every kind of result exports (unstructured / N:M from a private copy with the masks baked in, so
        these masks stay live; uniform and non-uniform width; depth); see
        :func:`hf_prune.integration.export.onnx.export_onnx`. Needs the ``onnx`` extra.

        Args:
            output_dir: Folder to write.
            opset: ONNX opset, or ``None`` for the newest the installed onnxscript supports.
            sample_inputs: Forward inputs to trace with (default: seeded ids of shape ``[2, 8]``).
            optimize: Run onnxscript's graph optimiser on the export.
            tokenizer: Tokenizer saved beside the graph (default: :attr:`tokenizer`).
            overwrite: Replace a non-empty ``output_dir``.
            check: Compare ONNX Runtime logits with PyTorch's once after exporting.
            atol: Absolute tolerance of that check.
            rtol: Relative tolerance of that check (times the largest logit).

        Returns:
            The folder written.
        """
        from hf_prune.integration.export.onnx import export_onnx

        return export_onnx(
            self, output_dir, opset=opset, sample_inputs=sample_inputs, optimize=optimize,
            tokenizer=tokenizer, overwrite=overwrite, check=check, atol=atol, rtol=rtol,
        )  # fmt: skip

    def export_mergekit_yaml(
        self,
        path: str | os.PathLike[str],
        base_model: str | os.PathLike[str] | None = None,
        *,
        dtype: str | torch.dtype | None = None,
        stack: str | None = None,
    ) -> Path:
        """Write a mergekit ``passthrough`` YAML that rebuilds this depth-pruned model from its base.

        One slice per run of consecutive kept blocks, numbered as in the base model; run it with
        ``mergekit-yaml <path> <out>``. Only depth pruning of a causal decoder LM that mergekit defines
        can be exported (see :mod:`hf_prune.integration.export.mergekit`).

        Args:
            path: Destination YAML file (written atomically).
            base_model: Hub id or local folder of the unpruned base model. Default: the model this one
                was pruned from (``config._name_or_path`` when it was wrapped, or the ``base_model``
                recorded in a reloaded checkpoint's ``pruning_config.json``).
            dtype: mergekit ``dtype``; default: the model's dtype (``float32``, ``bfloat16``, ...).
            stack: Stack name (default: the main decoder stack).

        Returns:
            The path written.

        Raises:
            ValueError: For an unsupported architecture, width or unstructured pruning, healing, or an
                unknown base model.
        """
        from hf_prune.integration.export.mergekit import export_pruned_yaml

        spec = self._stack(stack)
        return export_pruned_yaml(
            path,
            base_model=base_model or self.base_model_name or getattr(self.config, "_name_or_path", ""),
            architecture=type(self.base_model).__name__,
            model_type=getattr(self.config, "model_type", None),
            num_current=len(get_layers(self.base_model, spec)),
            removed=self.report.removed_layers.get(spec.name, []),
            origin=self._origin.get(spec.name),
            layer_rows=[(r.name, r.kind) for r in self.report.layers],
            masked=len(mask_ops.masked_modules(self.base_model)),
            extra=self.report.extra,
            dtype=dtype if dtype is not None else self.base_model.dtype,
        )

    def extra_repr(self) -> str:
        """Show the method in ``print(model)``."""
        return f"method={self.report.method!r}"

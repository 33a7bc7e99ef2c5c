"""Retraining-free Fisher mask search: prune heads and neurons under a MAC or latency budget.

Kwon, Kim, Mahoney, Hassoun, Keutzer and Gholami, "A Fast Post-Training Pruning Framework for
Transformers" (NeurIPS 2022). The stages (DESIGN §3), each a building block of its own module:

1. *calibrate*: gradients of the task loss with respect to all-ones head and neuron masks, per batch
   (:func:`hf_prune.calibration.fisher.collect_mask_gradients`). A classifier uses its cross-entropy on
   labelled batches (``CalibrationConfig(label_column=...)``), a causal LM its next-token loss on text.
2. *select*: the diagonal-Fisher mask search under the budget
   (:func:`hf_prune.selection.fisher_mask_search.search_mac` / ``search_latency``); layers may end up
   with no head or no neuron.
3. *post-process*: mask rearrangement with the block-diagonal Fisher, heads and neurons separately
   (:func:`hf_prune.postprocess.rearrange.rearrange_mask`; the count per layer is kept, so the cost is
   too), then least-squares mask rescaling layer by layer
   (:func:`hf_prune.calibration.fisher.collect_rescale_systems` with
   :func:`hf_prune.postprocess.rescale.solve_scales`).
4. *apply*: the (scaled) masks are folded into the output projections of the *full* model
   (:func:`hf_prune.postprocess.rescale.fold_masks`), then every block is shrunk to its kept heads and
   neurons through ``PrunedModel.prune_heads`` / ``prune_neurons``. The result computes exactly what the
   masked model computes and saves as a normal checkpoint (``per_layer_config`` when widths differ).

**Emptied sub-blocks.** The search may keep zero heads (or zero neurons) in a layer. An MLP built from
``nn.Linear`` is shrunk to zero width: it then only adds its output bias, which is what the zero mask
computes. Attention cannot be shrunk to zero heads (``shrink_heads`` refuses, and the attention module
needs a head to run), nor can a ``Conv1D`` MLP (GPT-2): there the zero mask is folded into the output
projection and the layer's best unit (highest Fisher information) is kept physically with zeroed
output columns, so the sub-block still *runs* but contributes only its output bias. Such layers are
recorded in ``report.extra["fisher"]["emptied"]`` as "computed, not skipped"; their placeholder unit is
counted in the "as built" MAC / latency. Replacing them with a physical no-op sub-block is future work.

Multi-process runs (``accelerate launch``) are not sharded: every process computes the same masks on
all calibration batches.
"""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, ClassVar

import torch
from torch import nn
from transformers import PreTrainedModel

from hf_prune.arch import StackSpec, get_arch, get_layers, get_stack_config, get_submodule, linear_in_out
from hf_prune.calibration.fisher import (
    collect_mask_gradients,
    collect_rescale_systems,
    mask_targets,
)
from hf_prune.config import PruningConfig, check_range, read_json
from hf_prune.methods.base import PruneContext
from hf_prune.postprocess.rearrange import mask_objective as block_fisher_objective
from hf_prune.postprocess.rearrange import rearrange_mask
from hf_prune.postprocess.rescale import fold_masks, solve_scales
from hf_prune.report import LayerReport
from hf_prune.selection.fisher_mask_search import (
    compute_mask_mac,
    dense_mac,
    estimate_latency,
    fisher_importance,
    fit_piecewise_linear,
    search_latency,
    search_mac,
)
from hf_prune.selection.fisher_mask_search import mask_objective as kept_fisher

__all__ = ["FisherMaskConfig", "FisherMasks", "apply_fisher_masks", "compute_fisher_masks", "run_fisher"]

METRICS = ("mac", "latency")
HEAD_UNITS = ("auto", "query", "kv_group")
_CLASSIFICATION_SUFFIXES = ("ForSequenceClassification", "ForImageClassification", "ForTokenClassification")
#: Keys of a LUT's ``"shape"`` record that are compared with the model (others are informational).
_LUT_SHAPE_KEYS = (
    "hidden_size",
    "num_attention_heads",
    "num_key_value_heads",
    "head_dim",
    "intermediate_size",
    "head_unit",
)


@dataclass
class FisherMaskConfig(PruningConfig):
    """Fisher mask search of Kwon et al. (NeurIPS 2022): heads and neurons under a MAC or latency budget.

    No retraining: mask gradients on calibration data, a search under the budget, mask rearrangement and
    least-squares rescaling, then physical removal (see :mod:`hf_prune.methods.fisher`). The whole main
    stack is searched at once (``target_modules`` / ``exclude_modules`` do not apply).

    Args:
        constraint: Fraction of the dense model's cost that the kept heads and neurons may use, in
            ``(0, 1)``: of the MACs of all heads and neurons at ``seq_len`` tokens (``metric="mac"``), or
            of the measured latency of all attention and MLP sub-blocks (``metric="latency"``).
            Embeddings and the task head are not part of either.
        metric: ``"mac"`` or ``"latency"`` (needs ``lut``).
        num_samples: Calibration samples used for the gradients and the rescaling: it replaces
            ``CalibrationConfig.nsamples`` (rows of labelled data, windows of text; a labelled table with
            fewer rows gives all of them). ``None`` keeps ``CalibrationConfig.nsamples``. The paper uses
            2048.
        seq_len: Sequence length of the MAC model (the paper: 128, GLUE's padded length).
        rearrange: Rearrange each layer's kept heads / neurons with the block-diagonal Fisher.
        rescale: Least-squares rescaling of the kept heads and neurons ("mask tuning").
        lut: Latency look-up table for ``metric="latency"``: the path of a JSON file written by
            ``hf_prune.evaluation.lut.save_lut`` (``hf-prune lut``), or its dict
            ``{"mha": {count: ms}, "ffn": {count: ms}, "shape": {...}}``. Attention counts are KV groups
            under ``head_unit="kv_group"``, heads otherwise; the largest counts must be this model's.
        head_unit: Attention unit: ``"query"`` (single heads), ``"kv_group"`` (a key/value head with all
            its query heads, which shrinks the KV cache) or ``"auto"`` (``"kv_group"`` for
            grouped-query attention, ``"query"`` otherwise). Under GQA only ``"kv_group"`` is possible.
        rescale_damp: LSMR damping of the rescaling (pulls scales towards 1; the paper: 1.0).
        stack: Stack to prune (default: the main stack; LLaVA: the language model).
    """

    method: ClassVar[str] = "fisher_mask"
    paper: ClassVar[str] = (
        "Kwon et al., A Fast Post-Training Pruning Framework for Transformers (NeurIPS 2022)"
    )

    constraint: float = field(
        default=0.6, metadata={"help": "Fraction of the dense MACs (or latency) kept, in (0, 1)."}
    )
    metric: str = field(default="mac", metadata={"help": "'mac' or 'latency' (needs lut)."})
    num_samples: int | None = field(
        default=2048,
        metadata={"help": "Calibration samples (replaces CalibrationConfig.nsamples; None keeps it)."},
    )
    seq_len: int = field(default=128, metadata={"help": "Sequence length of the MAC model."})
    rearrange: bool = field(default=True, metadata={"help": "Rearrange masks with the block Fisher."})
    rescale: bool = field(default=True, metadata={"help": "Least-squares rescaling of kept units."})
    lut: Any = field(
        default=None, metadata={"help": "Latency LUT: JSON path (hf-prune lut) or its dict; for 'latency'."}
    )
    head_unit: str = field(default="auto", metadata={"help": "'auto', 'query' or 'kv_group'."})
    rescale_damp: float = field(default=1.0, metadata={"help": "LSMR damping of the rescaling, >= 0."})
    stack: str | None = field(default=None, metadata={"help": "Stack to prune (default: the main one)."})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.target_modules is not None or self.exclude_modules is not None:
            raise ValueError(
                "FisherMaskConfig searches every head and neuron of the stack under one budget: "
                f"target_modules / exclude_modules do not apply (got {self.target_modules!r} / "
                f"{self.exclude_modules!r}). Use stack= to choose the stack."
            )
        check_range("constraint", self.constraint, 0.0, 1.0, low_inclusive=False, high_inclusive=False)
        if self.metric not in METRICS:
            raise ValueError(
                f"metric must be one of {METRICS}, got {self.metric!r}. 'mac' budgets multiply-accumulates, "
                "'latency' budgets measured latency (needs lut=)."
            )
        if self.num_samples is not None:
            check_range("num_samples", self.num_samples, 1, integer=True)
        check_range("seq_len", self.seq_len, 1, integer=True)
        for name in ("rearrange", "rescale"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name} must be True or False, got {getattr(self, name)!r}.")
        if self.head_unit not in HEAD_UNITS:
            raise ValueError(
                f"head_unit must be one of {HEAD_UNITS}, got {self.head_unit!r}. 'kv_group' removes a KV "
                "head with its query heads, 'query' single heads (multi-head attention only)."
            )
        check_range("rescale_damp", self.rescale_damp, 0.0)
        if self.stack is not None and (not isinstance(self.stack, str) or not self.stack):
            raise ValueError(f"stack must be a stack name or None, got {self.stack!r}.")
        if isinstance(self.lut, os.PathLike):
            self.lut = os.fspath(self.lut)
        if self.lut is not None:
            if isinstance(self.lut, str):
                if not self.lut:
                    raise ValueError("lut must be the path of a latency LUT JSON file, got ''.")
            elif isinstance(self.lut, dict):
                _check_lut_dict(self.lut, "lut")
                # JSON object keys are strings: store counts as strings so the config round-trips exactly.
                self.lut = {
                    k: _string_counts(v, f"lut[{k!r}]") if k in ("mha", "ffn") else v
                    for k, v in self.lut.items()
                }
            else:
                raise TypeError(
                    f"lut must be the path of a latency LUT JSON file (hf_prune.evaluation.lut.save_lut) or "
                    f"its dict {{'mha': ..., 'ffn': ..., 'shape': ...}}, got {type(self.lut).__name__}."
                )
            if self.metric != "latency":
                raise ValueError(
                    f"lut is used only with metric='latency' (got metric={self.metric!r}); drop lut= or set "
                    "metric='latency'."
                )
        elif self.metric == "latency":
            raise ValueError(
                "metric='latency' needs a latency look-up table measured for this model: lut='lut.json' "
                "(written by `hf-prune lut` / hf_prune.evaluation.lut.save_lut) or its dict."
            )


def _string_counts(table: Any, where: str) -> Any:
    if not isinstance(table, dict):
        return list(table)
    try:
        return {str(int(k)): float(v) for k, v in table.items()}
    except (TypeError, ValueError):
        raise ValueError(
            f"The latency LUT {where} must map integer unit counts to ms, got {table!r}."
        ) from None


def _check_lut_dict(lut: Any, where: str) -> None:
    if not isinstance(lut, dict):
        raise ValueError(f"The latency LUT {where} must hold a JSON object, got {type(lut).__name__}.")
    missing = [k for k in ("mha", "ffn") if k not in lut]
    if missing:
        raise ValueError(
            f"The latency LUT {where} has no {missing} table(s); it must look like {{'mha': {{count: ms}}, "
            f"'ffn': {{count: ms}}, 'shape': {{...}}}} (hf_prune.evaluation.lut.save_lut). Keys found: "
            f"{sorted(lut)}."
        )
    for key in ("mha", "ffn"):
        if not isinstance(lut[key], (dict, list, tuple)) or not lut[key]:
            raise ValueError(
                f"The latency LUT {where}[{key!r}] must be a non-empty {{count: ms}} dict (or a list indexed "
                f"by count), got {lut[key]!r}."
            )
    if "shape" in lut and not isinstance(lut["shape"], dict):
        raise ValueError(f"The latency LUT {where}['shape'] must be an object, got {lut['shape']!r}.")


# ------------------------------------------------------------------------------------------ helpers
@dataclass(frozen=True)
class _Geo:
    """Head / MLP layout of the searched stack (every block the same)."""

    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    hidden: int
    intermediate: int
    gated: bool
    linear_mlp: bool  # every MLP projection is nn.Linear (an MLP can be shrunk to zero width)

    @property
    def group(self) -> int:
        return self.heads // self.kv_heads


def _geometry(model: PreTrainedModel, spec: StackSpec) -> _Geo:
    targets = mask_targets(model, spec.name)
    if not targets:
        raise ValueError(f"Stack {spec.name!r} has no blocks to prune.")
    geos = {
        (t.geometry.num_heads, t.geometry.num_kv_heads, t.geometry.head_dim, t.intermediate) for t in targets
    }
    if len(geos) != 1:
        raise ValueError(
            f"FisherMaskConfig needs every block of {spec.name!r} to have the same heads and MLP width (the "
            f"search uses dense [layers, units] masks); found {sorted(geos)}. Run it on the unpruned model."
        )
    heads, kv, hd, inter = geos.pop()
    _, hidden = linear_in_out(targets[0].o)
    block = get_layers(model, spec)[0]
    mlp = [get_submodule(block, p) for p in (*spec.block.mlp_in, spec.block.mlp_out)]
    return _Geo(
        layers=len(targets),
        heads=heads,
        kv_heads=kv,
        head_dim=hd,
        hidden=hidden,
        intermediate=inter,
        gated=len(spec.block.mlp_in) > 1,
        linear_mlp=all(isinstance(m, nn.Linear) for m in mlp),
    )


def _search_config(model: PreTrainedModel, spec: StackSpec, geo: _Geo) -> Any:
    """A config-like object with the keys the search reads, taken from the modules (any family)."""
    cfg = get_stack_config(model, spec)
    return SimpleNamespace(
        model_type=str(getattr(cfg, "model_type", "")),
        hidden_act=str(getattr(cfg, "hidden_act", "")),
        num_hidden_layers=geo.layers,
        num_attention_heads=geo.heads,
        num_key_value_heads=geo.kv_heads,
        head_dim=geo.head_dim,
        hidden_size=geo.hidden,
        intermediate_size=geo.intermediate,
    )


def _resolve_head_unit(config: FisherMaskConfig, geo: _Geo) -> str:
    if config.head_unit == "auto":
        return "kv_group" if geo.group > 1 else "query"
    if config.head_unit == "query" and geo.group > 1:
        raise ValueError(
            f"head_unit='query' is not possible under grouped-query attention ({geo.heads} query heads share "
            f"{geo.kv_heads} KV heads): the search removes whole KV groups there, since transformers' "
            "repeat_kv needs the same number of query heads per group. Use head_unit='kv_group' or 'auto'."
        )
    return config.head_unit


def _model_task(model: PreTrainedModel) -> str | None:
    if type(model).__name__.endswith(_CLASSIFICATION_SUFFIXES):
        return "classification"
    return "lm" if model.can_generate() else None


def _check_task(model: PreTrainedModel, batches: list[dict[str, torch.Tensor]]) -> str:
    """Say clearly when the data cannot give the model's task loss (before any gradient is computed)."""
    name = type(model).__name__
    task = _model_task(model)
    class_labels = [
        i
        for i, b in enumerate(batches)
        if isinstance(b.get("labels"), torch.Tensor) and b["labels"].dim() == 1
    ]
    if task is None:
        raise ValueError(
            f"{name} has neither a classification head nor an LM head, so it has no task loss for the Fisher "
            "mask gradients; load it with AutoModelForSequenceClassification or AutoModelForCausalLM "
            "(AutoPrunedModelForSequenceClassification / ...ForCausalLM)."
        )
    if task == "classification":
        missing = [i for i, b in enumerate(batches) if b.get("labels") is None]
        if missing:
            raise ValueError(
                f"{name} is a classifier: the Fisher mask gradients use its loss on labelled data, but "
                f"calibration batches {missing[:5]} have no 'labels'. Calibrate on a labelled table: "
                "CalibrationConfig(dataset=<datasets.Dataset or .csv/.jsonl/.parquet>, label_column='label', "
                "text_column=..., text_pair_column=...)."
            )
        n_labels = int(getattr(model.config, "num_labels", 0) or 0)
        seen = [b["labels"] for b in batches if b["labels"].dtype in (torch.int32, torch.int64)]
        top = max((int(t.max()) for t in seen if t.numel()), default=-1)
        low = min((int(t.min()) for t in seen if t.numel()), default=0)
        if n_labels > 1 and (top >= n_labels or low < -100 or -100 < low < 0):
            raise ValueError(
                f"{name} has num_labels={n_labels}, but the calibration labels range over [{low}, {top}]: "
                "labels must be class ids 0..num_labels-1 (-100 is ignored). Check label_column, or load the "
                "model with the task's num_labels."
            )
    elif class_labels:
        raise ValueError(
            f"The calibration batches carry classification labels (one per row), but {name} has an LM head, "
            "not a classification head. Use text calibration data (no label_column) for a language model, or "
            "load the model with its classification head (AutoPrunedModelForSequenceClassification)."
        )
    return task


def _batches(config: FisherMaskConfig, ctx: PruneContext) -> list[dict[str, torch.Tensor]]:
    if ctx.batches is not None:
        return ctx.batches
    if ctx.calibration is None:
        raise ValueError(
            "FisherMaskConfig needs calibration data for its mask gradients: pass calibration="
            "CalibrationConfig(...) (labelled rows via label_column= for a classifier, text for an LM)."
        )
    from hf_prune.calibration.data import build_calibration_batches, is_image_text

    calib = ctx.calibration
    if config.num_samples is not None and config.num_samples != calib.nsamples:
        calib = dataclasses.replace(calib, nsamples=config.num_samples)
    if ctx.tokenizer is None and not is_image_text(calib):
        raise ValueError(
            "FisherMaskConfig needs a tokenizer to prepare the calibration data: pass tokenizer=."
        )
    # Not sharded across processes: the search needs every sample's gradient, so each process computes the
    # same masks from all batches.
    return build_calibration_batches(calib, ctx.tokenizer)


def _lut_source(lut: Any) -> tuple[dict[str, Any], str]:
    """The LUT dict and where it came from (a path or "inline")."""
    if isinstance(lut, dict):
        return lut, "inline"
    path = os.path.expanduser(str(lut))
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"lut={lut!r}: no such file. Measure one for this model with `hf-prune lut` "
            "(hf_prune.evaluation.lut.measure_latency_lut + save_lut)."
        )
    try:
        from hf_prune.evaluation.lut import load_lut
    except ImportError:  # the LUT module is optional here: the file is plain JSON
        data = read_json(path, what="latency LUT")
    else:
        data = load_lut(path)
    return dict(data), path


def _check_lut_shape(lut: dict[str, Any], geo: _Geo, head_unit: str, where: str) -> None:
    """Refuse a LUT measured on another model shape, with a message that names the mismatch."""
    _check_lut_dict(lut, where)
    mine: dict[str, Any] = {
        "hidden_size": geo.hidden,
        "num_attention_heads": geo.heads,
        "num_key_value_heads": geo.kv_heads,
        "head_dim": geo.head_dim,
        "intermediate_size": geo.intermediate,
        "head_unit": head_unit,
    }
    shape = lut.get("shape") or {}
    wrong = {k: (shape[k], mine[k]) for k in _LUT_SHAPE_KEYS if k in shape and shape[k] != mine[k]}
    units = geo.kv_heads if head_unit == "kv_group" else geo.heads
    for key, want in (("mha", units), ("ffn", geo.intermediate)):
        table = lut[key]
        try:
            top = max(int(k) for k in table) if isinstance(table, dict) else len(table) - 1
        except (TypeError, ValueError):
            raise ValueError(
                f"The latency LUT {where}[{key!r}] must map integer unit counts to ms."
            ) from None
        if top != want:
            wrong[f"largest {key} count"] = (top, want)
    if wrong:
        detail = ", ".join(f"{k}: LUT {a!r} vs model {b!r}" for k, (a, b) in wrong.items())
        raise ValueError(
            f"The latency LUT {where} does not match this model's shape ({detail}); attention counts are "
            f"{'KV groups' if head_unit == 'kv_group' else 'heads'} (head_unit={head_unit!r}). Measure a LUT "
            "for this model with `hf-prune lut`."
        )


# ------------------------------------------------------------------------------------------- masks
@dataclass
class FisherMasks:
    """Outcome of the search and post-processing, before anything is applied to the model.

    Args:
        stack: Stack name.
        head_unit: ``"query"`` or ``"kv_group"`` (the unit of ``head_mask`` and ``head_grads``).
        group_size: Query heads per KV head.
        head_mask: ``[layers, units]`` 0/1 kept heads (or KV groups) after rearrangement.
        neuron_mask: ``[layers, intermediate]`` 0/1 kept neurons after rearrangement.
        head_scale: ``[layers, num_heads]`` per-query-head values folded into the attention output
            projection (the 0/1 mask, times the rescaling scales when ``rescale``).
        neuron_scale: ``[layers, intermediate]`` values folded into the MLP output projection.
        head_grads: ``[batches, layers, units]`` mask gradients.
        neuron_grads: ``[batches, layers, intermediate]`` mask gradients.
        search_config: The config-like object the search read (layers, heads, widths).
        gated: Whether the MLP is gated (3 projections per neuron in the MAC model).
        linear_mlp: Whether an MLP can be shrunk to zero width (every projection ``nn.Linear``).
        record: The report entries computed so far (budget, timings, rearrangement, rescaling).
        luts: ``(mha, ffn)`` latency tables (``metric="latency"``), else ``None``.
    """

    stack: str
    head_unit: str
    group_size: int
    head_mask: torch.Tensor
    neuron_mask: torch.Tensor
    head_scale: torch.Tensor
    neuron_scale: torch.Tensor
    head_grads: torch.Tensor
    neuron_grads: torch.Tensor
    search_config: Any
    gated: bool
    linear_mlp: bool
    record: dict[str, Any] = field(default_factory=dict)
    luts: tuple[Any, Any] | None = None

    def query_heads(self, layer: int, unit_mask: torch.Tensor | None = None) -> list[int]:
        """Query-head indices of the kept units of ``layer``.

        Args:
            layer: Block index.
            unit_mask: A ``[units]`` mask to read instead of ``head_mask[layer]``.
        """
        row = self.head_mask[layer] if unit_mask is None else unit_mask
        units = (row.detach().cpu() != 0).nonzero().flatten().tolist()
        g = self.group_size if self.head_unit == "kv_group" else 1
        return [u * g + j for u in units for j in range(g)]


def _rescale(
    model: PreTrainedModel,
    batches: list[dict[str, torch.Tensor]],
    head_mask: torch.Tensor,
    neuron_mask: torch.Tensor,
    spec: StackSpec,
    damp: float,
    progress: bool,
) -> tuple[torch.Tensor, torch.Tensor, int | None, list[dict[str, Any]]]:
    """Sequential least-squares rescaling (``rescale_masks``), also returning the stop layer and errors."""
    solved: list[tuple[Any, torch.Tensor]] = []

    def solve(system: Any) -> torch.Tensor | None:
        scales = solve_scales(system.ata, system.atb, damp=damp, intercept=system.intercept)
        if scales is not None:
            solved.append((system, scales))
        return scales

    result = collect_rescale_systems(
        model, batches, head_mask, neuron_mask, stack=spec.name, solve=solve, progress=progress
    )
    assert result.head_mask is not None and result.neuron_mask is not None
    errors = [
        {
            "layer": int(system.layer),
            "kind": "attention" if system.kind == "head" else "mlp",
            "error_before": system.error(torch.ones(system.units.numel(), dtype=torch.float64)),
            "error_after": system.error(scales),
        }
        for system, scales in solved
    ]
    return result.head_mask, result.neuron_mask, result.stopped_at, errors


def compute_fisher_masks(
    model: PreTrainedModel,
    config: FisherMaskConfig,
    batches: list[dict[str, torch.Tensor]],
    *,
    progress: bool = True,
) -> FisherMasks:
    """Gradients, search, rearrangement and rescaling of Kwon et al. (NeurIPS 2022); the model is unchanged.

    Args:
        model: An unpruned model of a supported family with a classification or LM head.
        config: The method config.
        batches: Calibration batches (labelled for a classifier).
        progress: Show progress bars.

    Returns:
        The masks and everything the report needs (:class:`FisherMasks`).

    Raises:
        ValueError: A classifier without labels, labels for a model without a classification head, a
            model without a task head, ``head_unit="query"`` under GQA, blocks of different widths, or a
            latency LUT of another model shape.
        FileNotFoundError: A ``lut`` path that does not exist.
    """
    if not batches:
        raise ValueError("FisherMaskConfig needs at least one calibration batch.")
    spec = _stack_spec(model, config.stack)
    geo = _geometry(model, spec)
    unit = _resolve_head_unit(config, geo)
    search_cfg = _search_config(model, spec, geo)
    luts = None
    lut_record: dict[str, Any] = {}
    if config.metric == "latency":
        lut, source = _lut_source(config.lut)
        _check_lut_shape(lut, geo, unit, "lut" if source == "inline" else repr(source))
        luts = (lut["mha"], lut["ffn"])
        lut_record = {
            "source": source,
            "shape": lut.get("shape"),
            "mha_fit": dict(
                zip(("threshold", "slope", "intercept"), fit_piecewise_linear(luts[0]), strict=True)
            ),
            "ffn_fit": dict(
                zip(("threshold", "slope", "intercept"), fit_piecewise_linear(luts[1]), strict=True)
            ),
        }
    task = _check_task(model, batches)
    times: dict[str, float] = {}

    t0 = time.perf_counter()
    head_grads, neuron_grads = collect_mask_gradients(
        model, batches, stack=spec.name, loss="auto", head_unit=unit, progress=progress
    )
    times["gradients"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    if config.metric == "mac":
        head_mask, neuron_mask = search_mac(
            search_cfg, head_grads, neuron_grads, config.seq_len, config.constraint, gated_mlp=geo.gated
        )
    else:
        assert luts is not None
        head_mask, neuron_mask = search_latency(
            search_cfg, head_grads, neuron_grads, config.constraint, luts[0], luts[1]
        )
    times["search"] = time.perf_counter() - t0

    rearrange_record: dict[str, Any] | None = None
    if config.rearrange:
        t0 = time.perf_counter()
        before_h = float(block_fisher_objective(head_mask, head_grads).sum())
        before_n = float(block_fisher_objective(neuron_mask, neuron_grads).sum())
        head_mask = rearrange_mask(head_mask, head_grads)
        neuron_mask = rearrange_mask(neuron_mask, neuron_grads)
        rearrange_record = {
            "objective": "sum over layers of (1 - m)^T F (1 - m), block-diagonal Fisher (lower is better)",
            "heads_before": before_h,
            "heads_after": float(block_fisher_objective(head_mask, head_grads).sum()),
            "neurons_before": before_n,
            "neurons_after": float(block_fisher_objective(neuron_mask, neuron_grads).sum()),
        }
        times["rearrange"] = time.perf_counter() - t0

    g = geo.group if unit == "kv_group" else 1
    head_scale = head_mask.detach().float().repeat_interleave(g, dim=1)
    neuron_scale = neuron_mask.detach().float().clone()
    stopped_at = None
    errors: list[dict[str, Any]] = []
    if config.rescale:
        t0 = time.perf_counter()
        head_scale, neuron_scale, stopped_at, errors = _rescale(
            model, batches, head_mask, neuron_mask, spec, config.rescale_damp, progress
        )
        times["rescale"] = time.perf_counter() - t0

    record: dict[str, Any] = {
        "metric": config.metric,
        "constraint": config.constraint,
        "task": task,
        "head_unit": unit,
        "stack": spec.name,
        "samples": int(sum(_rows(b) for b in batches)),
        "batches": len(batches),
        "seq_len": config.seq_len,
        "rearrange": config.rearrange,
        "rescale": config.rescale,
        "rearrangement": rearrange_record,
        "rescale_stopped_at": stopped_at,
        "rescale_errors": errors,
        "importance_total": kept_fisher(
            head_grads, neuron_grads, torch.ones_like(head_mask), torch.ones_like(neuron_mask)
        ),
        "importance_kept": kept_fisher(head_grads, neuron_grads, head_mask, neuron_mask),
        "lut": lut_record or None,
        "stage_seconds": {k: round(v, 3) for k, v in times.items()},
    }
    return FisherMasks(
        stack=spec.name,
        head_unit=unit,
        group_size=geo.group,
        head_mask=head_mask,
        neuron_mask=neuron_mask,
        head_scale=head_scale,
        neuron_scale=neuron_scale,
        head_grads=head_grads,
        neuron_grads=neuron_grads,
        search_config=search_cfg,
        gated=geo.gated,
        linear_mlp=geo.linear_mlp,
        record=record,
        luts=luts,
    )


def _rows(batch: dict[str, Any]) -> int:
    ids = batch.get("input_ids")
    if isinstance(ids, torch.Tensor):
        return int(ids.shape[0]) if ids.dim() > 1 else 1
    first = next((v for v in batch.values() if isinstance(v, torch.Tensor)), None)
    return int(first.shape[0]) if first is not None and first.dim() > 0 else 1


def _stack_spec(model: PreTrainedModel, stack: str | None) -> StackSpec:
    arch = get_arch(model)
    return arch.stack(stack) if stack else arch.stacks[-1]


# ------------------------------------------------------------------------------------------- apply
def apply_fisher_masks(pruned: Any, masks: FisherMasks) -> list[LayerReport]:
    """Fold the (scaled) masks into the weights and shrink every block to its kept heads and neurons.

    Emptied sub-blocks are handled as the module docstring says (zero-width ``nn.Linear`` MLP; otherwise
    one zeroed unit kept and recorded as "computed, not skipped").

    Args:
        pruned: The ``PrunedModel`` whose surgery records the changes.
        masks: The result of :func:`compute_fisher_masks` on ``pruned.base_model`` (unchanged since).

    Returns:
        One ``"attention"`` and one ``"mlp"`` report row per block, with kept units, the removal ratio and
        the share of the layer's Fisher information kept (``score["fisher_kept"]``).
    """
    model = pruned.base_model
    spec = pruned._stack(masks.stack)
    origin = list(pruned._origins(spec))
    n_layers, n_units = masks.head_mask.shape
    inter = masks.neuron_mask.shape[1]
    fold_masks(model, masks.head_scale, masks.neuron_scale, stack=spec.name, head_unit="query")
    imp_h = fisher_importance(masks.head_grads)
    imp_n = fisher_importance(masks.neuron_grads)
    keep_h = masks.head_mask.detach().cpu() != 0
    keep_n = masks.neuron_mask.detach().cpu() != 0
    built_h, built_n = keep_h.clone(), keep_n.clone()
    emptied: list[dict[str, Any]] = []
    rows: list[LayerReport] = []
    heads_total = n_units * (masks.group_size if masks.head_unit == "kv_group" else 1)
    unit_name = "KV group" if masks.head_unit == "kv_group" else "head"

    def take_row(ratio: float, score: float | None, extra: dict[str, Any]) -> LayerReport:
        row: LayerReport = pruned.report.layers.pop()
        row.ratio_requested = ratio
        # No score where the loss does not depend on the layer at all (its Fisher information is 0).
        row.score = {"fisher_kept": score} if score is not None else None
        row.kept_units = {**(row.kept_units or {}), **extra}
        return row

    for layer in range(n_layers):
        # Attention.
        n_keep = int(keep_h[layer].sum())
        extra: dict[str, Any] = {"heads_before": heads_total}
        if n_keep == 0:
            best = int(torch.argmax(imp_h[layer]))
            built_h[layer, best] = True
            keep = masks.query_heads(layer, built_h[layer])
            extra["emptied"] = "computed, not skipped"
            emptied.append(
                {
                    "layer": origin[layer],
                    "kind": "attention",
                    "how": f"{unit_name} {best} kept with zeroed output (computed, not skipped)",
                }
            )
        else:
            keep = masks.query_heads(layer)
        pruned.prune_heads(layer, keep, stack=spec.name)
        rows.append(take_row(1.0 - n_keep / n_units, _share(imp_h[layer], keep_h[layer]), extra))

        # MLP.
        idx = keep_n[layer].nonzero().flatten().tolist()
        extra = {"neurons_before": inter}
        if not idx:
            if masks.linear_mlp:
                extra["emptied"] = "removed (zero width)"
                emptied.append(
                    {"layer": origin[layer], "kind": "mlp", "how": "zero width (only its bias remains)"}
                )
            else:
                best = int(torch.argmax(imp_n[layer]))
                built_n[layer, best] = True
                idx = [best]
                extra["emptied"] = "computed, not skipped"
                emptied.append(
                    {
                        "layer": origin[layer],
                        "kind": "mlp",
                        "how": f"neuron {best} kept with zeroed output (computed, not skipped)",
                    }
                )
        pruned.prune_neurons(layer, idx, stack=spec.name)
        rows.append(
            take_row(1.0 - int(keep_n[layer].sum()) / inter, _share(imp_n[layer], keep_n[layer]), extra)
        )

    rec = masks.record
    metric = rec["metric"]

    def macs(head: torch.Tensor, neuron: torch.Tensor) -> int:
        return int(
            compute_mask_mac(
                head.float(), neuron.float(), rec["seq_len"], masks.search_config, gated_mlp=masks.gated
            )
        )

    dense_macs = int(dense_mac(masks.search_config, rec["seq_len"], gated_mlp=masks.gated))
    mac, mac_built = macs(keep_h, keep_n), macs(built_h, built_n)
    dense: float
    if metric == "mac":
        dense, achieved, built = dense_macs, mac, mac_built
    else:
        assert masks.luts is not None
        mha, ffn = masks.luts
        # The budget's reference is the *measured* dense latency; candidates are costed with the fit.
        dense = estimate_latency(torch.ones(keep_h.shape), torch.ones(keep_n.shape), mha, ffn, fitted=False)
        achieved = estimate_latency(keep_h.float(), keep_n.float(), mha, ffn, fitted=True)
        built = estimate_latency(built_h.float(), built_n.float(), mha, ffn, fitted=True)
    record = {
        **rec,
        "budget": rec["constraint"] * dense,
        "dense": dense,
        "achieved": achieved,
        "achieved_fraction": achieved / dense if dense else None,
        "as_built": built,
        "as_built_fraction": built / dense if dense else None,
        "dense_mac": dense_macs,
        "mac": mac,
        "mac_fraction": mac / dense_macs,
        "mac_as_built": mac_built,
        "unit": "MACs per sequence" if metric == "mac" else "ms (LUT)",
        "importance_kept_fraction": (
            rec["importance_kept"] / rec["importance_total"] if rec["importance_total"] else None
        ),
        "head_units_per_layer": n_units,
        "query_heads_per_layer": heads_total,
        "neurons_per_layer": inter,
        "kept_heads": {str(origin[i]): int(keep_h[i].sum()) for i in range(n_layers)},
        "kept_neurons": {str(origin[i]): int(keep_n[i].sum()) for i in range(n_layers)},
        "emptied": emptied,
    }
    # The search numbers blocks by current position; the report uses the original numbering.
    record["rescale_errors"] = [{**e, "layer": origin[e["layer"]]} for e in rec["rescale_errors"]]
    if rec["rescale_stopped_at"] is not None:
        record["rescale_stopped_at"] = origin[rec["rescale_stopped_at"]]
    pruned.report.extra["fisher"] = record
    return rows


def _share(importance: torch.Tensor, keep: torch.Tensor) -> float | None:
    total = float(importance.sum())
    return float(importance[keep].sum()) / total if total > 0 else None


# ------------------------------------------------------------------------------------------ runner
def run_fisher(model: PreTrainedModel, config: FisherMaskConfig, ctx: PruneContext) -> list[LayerReport]:
    """Search, post-process and apply the Fisher masks (see the module docstring).

    Args:
        model: The model (shrunk in place).
        config: The :class:`FisherMaskConfig`.
        ctx: Calibration data (``config.num_samples`` samples are drawn from it); ``ctx.pruned`` applies
            the surgery (a temporary ``PrunedModel`` is made when absent).

    Returns:
        One attention and one MLP report row per block; ``report.extra["fisher"]`` holds the budget, the
        achieved cost, kept heads / neurons per layer, the Fisher information kept, emptied layers, the
        rearrangement and rescaling outcomes and the timings.

    Raises:
        ValueError: See :func:`compute_fisher_masks`; also without calibration data or tokenizer.
    """
    from hf_prune.integration.pruned_model import PrunedModel

    pm = ctx.pruned if ctx.pruned is not None else PrunedModel(model, config)
    start = time.perf_counter()
    batches = _batches(config, ctx)
    masks = compute_fisher_masks(model, config, batches, progress=ctx.progress)
    t0 = time.perf_counter()
    rows = apply_fisher_masks(pm, masks)
    extra = pm.report.extra["fisher"]
    if ctx.batches is not None:
        extra["samples_from"] = "the given calibration batches"
    elif config.num_samples is not None:
        extra["samples_from"] = "FisherMaskConfig.num_samples, which replaces CalibrationConfig.nsamples"
    else:
        extra["samples_from"] = "CalibrationConfig.nsamples"
    extra["stage_seconds"]["apply"] = round(time.perf_counter() - t0, 3)
    extra["seconds"] = round(time.perf_counter() - start, 3)
    return rows

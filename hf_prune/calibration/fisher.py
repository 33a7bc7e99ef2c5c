"""Model walking for the retraining-free pruning framework of Kwon et al. (NeurIPS 2022).

Kwon, Kim, Mahoney, Hassoun, Keutzer and Gholami, "A Fast Post-Training Pruning Framework for
Transformers" (NeurIPS 2022) prunes attention heads and MLP neurons with three steps that all need
calibration data flowing through the model:

* **Fisher mask search** needs the gradient of the task loss with respect to an all-ones mask on every
  head and neuron (:func:`collect_mask_gradients`); the empirical Fisher information is the sum over
  batches of the squared (or outer-product) batch gradients.
* **Mask rearrangement** reuses those per-batch gradients (pure math in
  :mod:`hf_prune.postprocess.rearrange`).
* **Mask tuning** ("rescaling") solves, layer by layer, a linear least-squares problem for the values
  of the kept mask entries so the pruned layer reconstructs the dense layer's output
  (:func:`collect_rescale_systems` builds the normal equations; the pure solver and the folding of the
  scales into the weights are in :mod:`hf_prune.postprocess.rescale`).

transformers 5.x has no ``head_mask`` argument, so masks are applied the way the published code applies
its neuron mask: a forward pre-hook multiplies the *input* of the output projection. A head's slice of
the attention output projection's input is that head's context vector, so scaling it is the same as
scaling the head (the published head mask multiplies the attention probabilities, which is linear in the
context vector too). Only this module (with :mod:`hf_prune.arch`) knows where those projections are.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle
from tqdm.auto import tqdm
from transformers import PreTrainedModel
from transformers.pytorch_utils import Conv1D
from transformers.utils import ModelOutput

from hf_prune.arch import (
    HeadGeometry,
    StackSpec,
    get_arch,
    get_layers,
    get_submodule,
    head_geometry,
    linear_in_out,
)
from hf_prune.calibration.gradients import _labels
from hf_prune.calibration.runner import (
    BlockInputs,
    _hidden,
    _model_device,
    _with_hidden,
    capture_block_inputs,
)
from hf_prune.utils import show_progress

__all__ = [
    "HEAD_UNITS",
    "LOSSES",
    "MaskTarget",
    "RescaleResult",
    "RescaleSystem",
    "collect_mask_gradients",
    "collect_rescale_systems",
    "mask_hooks",
    "mask_targets",
]

#: Granularity of the head mask: one entry per query head, or one per key/value group (GQA), which
#: multiplies every query head of the group (removing a KV group is what shrinks a GQA model's KV cache).
HEAD_UNITS = ("query", "kv_group")
#: ``collect_mask_gradients`` losses.
LOSSES = ("auto", "classification", "lm")

_CLASSIFICATION_SUFFIXES = (
    "ForSequenceClassification",
    "ForImageClassification",
    "ForTokenClassification",
)


@dataclass(frozen=True)
class MaskTarget:
    """Where the masks of one block act.

    Args:
        layer: Block index in its stack.
        o: Attention output projection; the head mask scales slices of its input.
        mlp_out: MLP output projection; the neuron mask scales its input features.
        geometry: Head layout of the block.
        intermediate: Number of MLP neurons (input features of ``mlp_out``).
    """

    layer: int
    o: nn.Module
    mlp_out: nn.Module
    geometry: HeadGeometry
    intermediate: int


def _stack(model: PreTrainedModel, stack: str | None) -> StackSpec:
    arch = get_arch(model)
    # The last stack is the model's main one (the language model of LLaVA), as in run_block_io.
    return arch.stack(stack) if stack else arch.stacks[-1]


def mask_targets(model: PreTrainedModel, stack: str | None = None) -> list[MaskTarget]:
    """Return, per block, the output projections that the head and neuron masks of Kwon et al. act on.

    Args:
        model: A supported model.
        stack: Stack name (default: the family's main stack, the last one).

    Returns:
        One :class:`MaskTarget` per block.
    """
    spec = _stack(model, stack)
    targets = []
    for idx, block in enumerate(get_layers(model, spec)):
        o = get_submodule(block, spec.block.o)
        mlp_out = get_submodule(block, spec.block.mlp_out)
        inter, _ = linear_in_out(mlp_out)
        targets.append(MaskTarget(idx, o, mlp_out, head_geometry(model, spec, idx), inter))
    return targets


def _uniform_shape(targets: list[MaskTarget], head_unit: str) -> tuple[int, int]:
    units = {t.geometry.num_heads if head_unit == "query" else t.geometry.num_kv_heads for t in targets}
    inter = {t.intermediate for t in targets}
    if len(units) != 1 or len(inter) != 1:
        # The published masks are dense [layers, units] tensors; ragged layers (an already pruned model)
        # would need per-layer masks.
        raise ValueError(
            f"Mask tensors need every block to have the same head and neuron counts; found heads "
            f"{sorted(units)} and neurons {sorted(inter)}. Collect masks before pruning the model."
        )
    return units.pop(), inter.pop()


def _check_head_unit(head_unit: str) -> None:
    if head_unit not in HEAD_UNITS:
        raise ValueError(f"head_unit must be one of {HEAD_UNITS}, got {head_unit!r}.")


def _head_width(geometry: HeadGeometry, head_unit: str) -> int:
    """Input features of the output projection that one head-mask entry covers."""
    return geometry.head_dim if head_unit == "query" else geometry.head_dim * geometry.group_size


def _scale_first_input(module: nn.Module, factor: Callable[[], torch.Tensor]) -> RemovableHandle:
    """Multiply ``module``'s first tensor input by ``factor()`` (broadcast over its last dimension)."""

    def hook(mod: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, Any]:
        if args:
            x = args[0]
            return (x * factor().to(x.dtype), *args[1:]), kwargs
        key = next(k for k, v in kwargs.items() if isinstance(v, torch.Tensor))
        kwargs = dict(kwargs)
        kwargs[key] = kwargs[key] * factor().to(kwargs[key].dtype)
        return args, kwargs

    return module.register_forward_pre_hook(hook, with_kwargs=True)


def _check_mask(mask: torch.Tensor, shape: tuple[int, int], name: str) -> None:
    if not isinstance(mask, torch.Tensor) or tuple(mask.shape) != shape:
        got = tuple(mask.shape) if isinstance(mask, torch.Tensor) else type(mask).__name__
        raise ValueError(f"{name} must have shape [layers, units] = {list(shape)}, got {got}.")


@contextlib.contextmanager
def mask_hooks(
    model: PreTrainedModel,
    head_mask: torch.Tensor | None = None,
    neuron_mask: torch.Tensor | None = None,
    *,
    stack: str | None = None,
    head_unit: str = "query",
) -> Iterator[list[MaskTarget]]:
    """Apply head and neuron masks (any real values, differentiable) while the context is open.

    As in Kwon et al. (NeurIPS 2022), a head mask entry multiplies that head's output and a neuron mask
    entry multiplies that neuron's activation; here both are forward pre-hooks on the input of the
    output projections (transformers 5.x has no ``head_mask``). Hooks are removed on exit, also on error.

    Args:
        model: A supported model.
        head_mask: ``[layers, units]``, units = query heads (``head_unit="query"``) or KV groups
            (``"kv_group"``, one value for all query heads of a group), or ``None``.
        neuron_mask: ``[layers, intermediate]`` or ``None``.
        stack: Stack name (default: the main stack).
        head_unit: ``"query"`` or ``"kv_group"``.

    Yields:
        The blocks' :class:`MaskTarget` list.
    """
    _check_head_unit(head_unit)
    targets = mask_targets(model, stack)
    n_units, n_inter = _uniform_shape(targets, head_unit)
    if head_mask is not None:
        _check_mask(head_mask, (len(targets), n_units), "head_mask")
    if neuron_mask is not None:
        _check_mask(neuron_mask, (len(targets), n_inter), "neuron_mask")
    handles: list[RemovableHandle] = []
    try:
        for t in targets:
            if head_mask is not None:
                width = _head_width(t.geometry, head_unit)
                # Evaluated at call time so the hook follows in-place edits of the mask and autograd
                # sees the mask itself, not a stale copy.
                handles.append(
                    _scale_first_input(t.o, lambda i=t.layer, w=width: head_mask[i].repeat_interleave(w))
                )
            if neuron_mask is not None:
                handles.append(_scale_first_input(t.mlp_out, lambda i=t.layer: neuron_mask[i]))
        yield targets
    finally:
        for h in handles:
            h.remove()


def _task_head(model: PreTrainedModel) -> str | None:
    name = type(model).__name__
    if name.endswith(_CLASSIFICATION_SUFFIXES):
        return "classification"
    if model.can_generate():
        return "lm"
    return None


def _resolve_loss(model: PreTrainedModel, loss: str, batches: list[dict[str, torch.Tensor]]) -> str:
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}.")
    head = _task_head(model)
    task = head if loss == "auto" else loss
    if task is None:
        raise ValueError(
            f"{type(model).__name__} has neither a classification head nor an LM head, so it has no task "
            "loss; load it with AutoModelForSequenceClassification or AutoModelForCausalLM."
        )
    if task != head:
        what = (
            "a classification head (...ForSequenceClassification)"
            if task == "classification"
            else "an LM head"
        )
        raise ValueError(f"loss={loss!r} needs {what}, but the model is {type(model).__name__}.")
    if task == "classification":
        missing = [i for i, b in enumerate(batches) if b.get("labels") is None]
        if missing:
            raise ValueError(
                f"{type(model).__name__} is a classifier: the Fisher mask gradients use its cross-entropy "
                f"with the batch's 'labels', but batches {missing[:5]} have no 'labels'."
            )
    return task


def collect_mask_gradients(
    model: PreTrainedModel,
    batches: list[dict[str, torch.Tensor]],
    *,
    stack: str | None = None,
    loss: str = "auto",
    head_unit: str = "query",
    progress: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-batch gradients of the task loss with respect to all-ones head and neuron masks.

    This is the input of the Fisher-based mask search and mask rearrangement of Kwon et al. (NeurIPS
    2022): like the published ``collect_mask_grads``, the gradient of each batch's mean loss is kept per
    batch; the diagonal Fisher information is ``grads.pow(2).sum(0)`` and the block-diagonal one (within
    a layer) is ``einsum("bli,blj->lij", grads, grads)``.

    Model weights get no gradients (``requires_grad`` is switched off and restored afterwards), the
    model runs in eval mode (no dropout), and every hook is removed afterwards, also on error.

    Args:
        model: A supported model with a classification head or an LM head.
        batches: Model inputs. Classification batches must carry ``labels``; LM batches use their
            ``labels`` if present, else ``input_ids`` with padding (and LLaVA image tokens) set to -100.
        stack: Stack name (default: the main stack).
        loss: ``"auto"`` (the model's head decides), ``"classification"`` (the head's loss on the
            batch ``labels``: cross-entropy for single-label classification) or ``"lm"``.
        head_unit: ``"query"`` (one mask entry per query head) or ``"kv_group"`` (one per KV group; for
            GQA it multiplies all query heads of the group).
        progress: Show a progress bar (only on a terminal; see :func:`hf_prune.utils.show_progress`).

    Returns:
        ``(head_grads [batches, layers, units], neuron_grads [batches, layers, intermediate])``, fp32 on
        the model's device.

    Raises:
        ValueError: Unknown ``loss``/``head_unit``, no batches, a classifier without ``labels``, a loss
            that the model's head cannot compute, or blocks of different sizes.
    """
    _check_head_unit(head_unit)
    if not batches:
        raise ValueError("collect_mask_gradients needs at least one batch.")
    task = _resolve_loss(model, loss, batches)
    spec = _stack(model, stack)
    targets = mask_targets(model, spec.name)
    n_units, n_inter = _uniform_shape(targets, head_unit)
    device = _model_device(model)
    head_mask = torch.ones(len(targets), n_units, device=device, requires_grad=True)
    neuron_mask = torch.ones(len(targets), n_inter, device=device, requires_grad=True)
    flags = {id(p): p.requires_grad for p in model.parameters()}
    was_training = model.training
    head_grads: list[torch.Tensor] = []
    neuron_grads: list[torch.Tensor] = []
    try:
        # Only the masks are leaves that need gradients: no weight gradient is ever allocated.
        for p in model.parameters():
            p.requires_grad_(False)
        model.eval()
        with mask_hooks(model, head_mask, neuron_mask, stack=spec.name, head_unit=head_unit):
            for batch in tqdm(batches, desc="mask gradients", disable=not show_progress(progress)):
                inputs = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
                if task == "lm":
                    if inputs.get("labels") is None:
                        inputs["labels"] = _labels(model, inputs["input_ids"], inputs.get("attention_mask"))
                    inputs.setdefault("use_cache", False)
                out = model(**inputs)
                value = out.loss if isinstance(out, ModelOutput) else None
                if value is None:
                    raise ValueError(f"{type(model).__name__} returned no loss for this batch.")
                gh, gn = torch.autograd.grad(value, (head_mask, neuron_mask), allow_unused=True)
                # A unit the loss does not depend on (e.g. a block after the pooled token) gets 0.
                head_grads.append(torch.zeros_like(head_mask) if gh is None else gh.detach().float())
                neuron_grads.append(torch.zeros_like(neuron_mask) if gn is None else gn.detach().float())
    finally:
        for p in model.parameters():
            p.requires_grad_(flags.get(id(p), True))
        model.train(was_training)
    return torch.stack(head_grads), torch.stack(neuron_grads)


# ----------------------------------------------------------------------------------------------------
# Least-squares rescaling ("mask tuning")
# ----------------------------------------------------------------------------------------------------


@dataclass
class RescaleSystem:
    """Normal equations of one layer's mask-tuning least-squares problem (Kwon et al., NeurIPS 2022).

    The problem is ``min_s || B - A s ||^2`` where column ``i`` of ``A`` is the (flattened, padding
    removed) contribution of kept unit ``i`` to the output projection's output in the pruned ("student")
    model, and ``B`` is the dense ("teacher") layer's residual-added output minus the projection bias and
    the student's residual. Only ``A^T A``, ``A^T B`` and ``B^T B`` are stored.

    Args:
        kind: ``"head"`` (attention sub-layer) or ``"neuron"`` (MLP sub-layer).
        layer: Block index.
        units: Indices of the kept units (query heads or neurons), the columns of ``A``.
        ata: ``A^T A``, ``[k, k]`` (``[k + 1, k + 1]`` with ``intercept``), float64.
        atb: ``A^T B``.
        btb: ``B^T B``.
        intercept: Whether ``A`` has a last all-ones column (the published head problem has one; its
            coefficient is solved for and then discarded).
    """

    kind: str
    layer: int
    units: torch.Tensor
    ata: torch.Tensor
    atb: torch.Tensor
    btb: float
    intercept: bool = False

    def error(self, scales: torch.Tensor) -> float:
        """Squared reconstruction error ``||B - A s||^2`` for unit scales ``s`` (intercept coefficient 0).

        Args:
            scales: ``[k]`` multipliers of the kept units' current mask values (ones = no rescaling).
        """
        k = self.units.numel()
        ata = self.ata[:k, :k].double().cpu()
        atb = self.atb[:k].double().cpu()
        s = scales.double().cpu().reshape(-1)
        if s.numel() != k:
            raise ValueError(f"scales has {s.numel()} entries, the system has {k} units.")
        return float(self.btb - 2 * (s @ atb) + s @ ata @ s)


@dataclass
class RescaleResult:
    """Output of :func:`collect_rescale_systems`.

    Args:
        systems: Every system built, in order (a layer's head system before its neuron system).
        head_mask: ``[layers, num_heads]`` query-head mask after the solved scales were applied.
        neuron_mask: ``[layers, intermediate]`` neuron mask after the solved scales were applied.
        stopped_at: Layer at which ``solve`` returned ``None`` (rescaling stopped there), else ``None``.
    """

    systems: list[RescaleSystem] = field(default_factory=list)
    head_mask: torch.Tensor | None = None
    neuron_mask: torch.Tensor | None = None
    stopped_at: int | None = None


def _flat(t: torch.Tensor) -> torch.Tensor:
    # OPT flattens tokens to [batch * seq, hidden] around its MLP; everything is compared token-wise.
    return t.reshape(-1, t.shape[-1])


def _weight_out_in(module: nn.Module) -> torch.Tensor:
    """The (effective) weight in ``[out, in]`` orientation; Conv1D stores ``[in, out]``."""
    w = module.weight
    return w.t() if isinstance(module, Conv1D) else w


class _Normal:
    """Accumulates ``A^T A``, ``A^T B``, ``B^T B`` without materialising ``A``.

    With ``X`` the kept input features of the projection (``[N, k * u]``, ``u`` features per unit) and
    ``W`` its weight restricted to them (``[out, k * u]``), unit ``i``'s column of ``A`` is
    ``vec(X_i W_i^T)``, so ``(A^T A)_ij = sum((X_i^T X_j) * (W_i^T W_j))`` and
    ``(A^T B)_i = sum(X_i * (B W_i))``: only ``(k u)^2`` Gram matrices are formed, never ``N * out * k``.
    """

    def __init__(self, weight: torch.Tensor, unit_size: int, intercept: bool, dtype: torch.dtype) -> None:
        self.w = weight.to(dtype)
        self.u = unit_size
        self.k = weight.shape[1] // unit_size
        self.intercept = intercept
        self.dtype = dtype
        self.gw = self.w.t() @ self.w
        n = self.k + int(intercept)
        self.ata = torch.zeros(n, n, dtype=torch.float64, device=weight.device)
        self.atb = torch.zeros(n, dtype=torch.float64, device=weight.device)
        self.btb = 0.0

    def _blocksum(self, m: torch.Tensor) -> torch.Tensor:
        k, u = self.k, self.u
        return m.reshape(k, u, k, u).sum(dim=(1, 3)) if m.dim() == 2 else m.reshape(k, u).sum(dim=1)

    def add(self, x: torch.Tensor, b: torch.Tensor) -> None:
        x, b = x.to(self.dtype), b.to(self.dtype)
        k = self.k
        self.ata[:k, :k] += self._blocksum((x.t() @ x) * self.gw).double()
        self.atb[:k] += self._blocksum((x * (b @ self.w)).sum(dim=0)).double()
        self.btb += float((b * b).sum())
        if self.intercept:
            # Column of ones over every (token, output) entry: <1, A_i> = sum_j (sum_t x_tj)(sum_o W_oj).
            ones_a = self._blocksum(x.sum(dim=0) * self.w.sum(dim=0)).double()
            self.ata[k, :k] += ones_a
            self.ata[:k, k] += ones_a
            self.ata[k, k] += float(b.numel())
            self.atb[k] += float(b.sum())

    def system(self, kind: str, layer: int, units: torch.Tensor) -> RescaleSystem:
        return RescaleSystem(kind, layer, units.cpu(), self.ata, self.atb, self.btb, self.intercept)


@dataclass
class _Capture:
    """What one block forward exposes: the sub-layers' projection inputs/outputs and residuals."""

    h_in: torch.Tensor | None = None
    o_x: torch.Tensor | None = None
    o_out: torch.Tensor | None = None
    mlp_x: torch.Tensor | None = None
    mlp_out: torch.Tensor | None = None
    norm0_in: torch.Tensor | None = None
    norm0_out: torch.Tensor | None = None
    norm1_in: torch.Tensor | None = None
    out: torch.Tensor | None = None
    order: list[str] = field(default_factory=list)

    @property
    def post_ln(self) -> bool:
        """Post-LayerNorm block (BERT, OPT-350m): the first norm runs after the attention output."""
        if "norm0" not in self.order or "o" not in self.order:
            raise RuntimeError("The block's forward did not call its first norm or attention output.")
        return self.order.index("norm0") > self.order.index("o")

    def residuals(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(r_attn, T_attn, r_mlp, T_mlp)``: residual and residual-added output of both sub-layers.

        The residual-added output is the sub-layer output *before* any LayerNorm (the quantity the
        published code reconstructs: ``dense(hidden) + input_tensor``). The attention residual is the
        block input in every supported family; the MLP residual is the attention's residual-added output
        (pre-LN) or its LayerNorm (post-LN).
        """
        assert self.h_in is not None and self.o_out is not None and self.mlp_out is not None
        r_attn = _flat(self.h_in)
        t_attn = r_attn + _flat(self.o_out)
        if self.post_ln:
            assert self.norm0_out is not None
            r_mlp = _flat(self.norm0_out)
        else:
            r_mlp = t_attn
        return r_attn, t_attn, r_mlp, r_mlp + _flat(self.mlp_out)

    def verify(self, layer: int) -> None:
        """Check the residual wiring assumed by :meth:`residuals` against the block's real tensors."""
        _, t_attn, _, t_mlp = self.residuals()
        if self.post_ln:
            pairs = [("attention", self.norm0_in, t_attn), ("MLP", self.norm1_in, t_mlp)]
        else:
            pairs = [("attention", self.norm1_in, t_attn), ("MLP", self.out, t_mlp)]
        for name, real, ours in pairs:
            if real is None:
                continue
            real = _flat(real).to(ours.dtype)
            tol = 1e-3 * (1.0 + float(real.abs().max()))
            if real.shape != ours.shape or float((real - ours).abs().max()) > tol:
                raise RuntimeError(
                    f"Block {layer}: the {name} sub-layer is not 'residual + output projection' as the "
                    "rescale assumes (norms in unexpected places?); this family is not supported by "
                    "mask rescaling."
                )


def _first_tensor(args: tuple[Any, ...], kwargs: dict[str, Any]) -> torch.Tensor:
    if args and isinstance(args[0], torch.Tensor):
        return args[0]
    return next(v for v in kwargs.values() if isinstance(v, torch.Tensor))


def _run_block(block: nn.Module, spec: StackSpec, call: tuple[tuple[Any, ...], dict[str, Any]]) -> _Capture:
    """Run ``block`` on one batch's arguments with hooks that capture the sub-layers' tensors."""
    cap = _Capture()
    args, kwargs = call
    cap.h_in = args[0] if args else kwargs["hidden_states"]  # the runner's convention (_with_hidden)
    mods = {
        "o": get_submodule(block, spec.block.o),
        "mlp": get_submodule(block, spec.block.mlp_out),
        "norm0": get_submodule(block, spec.block.norms[0]) if spec.block.norms else None,
        "norm1": get_submodule(block, spec.block.norms[1]) if len(spec.block.norms) > 1 else None,
    }

    def make(name: str) -> Callable[..., None]:
        def hook(mod: nn.Module, a: tuple[Any, ...], kw: dict[str, Any], output: Any) -> None:
            cap.order.append(name)
            x = _first_tensor(a, kw)  # the input *after* mask pre-hooks (registered earlier)
            y = _hidden(output)
            if name == "o":
                cap.o_x, cap.o_out = x, y
            elif name == "mlp":
                cap.mlp_x, cap.mlp_out = x, y
            elif name == "norm0":
                cap.norm0_in, cap.norm0_out = x, y
            else:
                cap.norm1_in = x

        return hook

    handles = [m.register_forward_hook(make(n), with_kwargs=True) for n, m in mods.items() if m is not None]
    try:
        out = _hidden(block(*args, **kwargs))
    finally:
        for h in handles:
            h.remove()
    cap.out = out
    return cap


def _token_rows(batch: dict[str, torch.Tensor], h_in: torch.Tensor, cls_only: bool) -> torch.Tensor:
    """Row indices (into ``[batch * seq, hidden]``) of the tokens the least squares uses."""
    bsz, seq = (h_in.shape[0], h_in.shape[1]) if h_in.dim() == 3 else (1, h_in.shape[0])
    device = h_in.device
    if cls_only:
        # Only the first token feeds a BERT/RoBERTa classifier after the last block (published cls_only).
        return torch.arange(bsz, device=device) * seq
    mask = batch.get("attention_mask")
    # The published code drops padding tokens; a mask of another length (the text mask while walking
    # LLaVA's vision tower) does not describe these tokens, so all of them are used.
    if isinstance(mask, torch.Tensor) and mask.dim() == 2 and mask.numel() == bsz * seq:
        return mask.reshape(-1).to(device).nonzero().flatten()
    return torch.arange(bsz * seq, device=device)


def _query_head_mask(head_mask: torch.Tensor, geometry: HeadGeometry, n_layers: int) -> torch.Tensor:
    if head_mask.dim() == 2 and head_mask.shape == (n_layers, geometry.num_heads):
        return head_mask.detach().clone().float()
    if head_mask.dim() == 2 and head_mask.shape == (n_layers, geometry.num_kv_heads):
        # A KV-group mask gives each of its query heads the group's value; scales are then per query head.
        return head_mask.detach().float().repeat_interleave(geometry.group_size, dim=1)
    raise ValueError(
        f"head_mask must have shape [layers, heads] = [{n_layers}, {geometry.num_heads}] (or "
        f"[{n_layers}, {geometry.num_kv_heads}] KV groups), got {tuple(head_mask.shape)}."
    )


def collect_rescale_systems(
    model: PreTrainedModel,
    batches: list[dict[str, torch.Tensor]],
    head_mask: torch.Tensor,
    neuron_mask: torch.Tensor,
    *,
    stack: str | None = None,
    solve: Callable[[RescaleSystem], torch.Tensor | None] | None = None,
    skip_first_attention: bool = True,
    cls_only_last: bool | None = None,
    head_intercept: bool = True,
    compute_dtype: torch.dtype = torch.float32,
    progress: bool = True,
) -> RescaleResult:
    """Build, layer by layer, the mask-tuning least-squares systems of Kwon et al. (NeurIPS 2022).

    The dense model is the teacher, the masked model the student; both run block by block from the same
    block-0 inputs (teacher inputs through dense blocks, student inputs through masked, already rescaled
    blocks). For each block's attention and then its MLP, the target is the *teacher's* residual-added
    sub-layer output before any LayerNorm (``o_proj(x) + residual``), and the student approximates it by
    ``sum_i s_i * contribution_i + bias + student residual``, where ``contribution_i`` is kept unit
    ``i``'s part of the output projection (its input slice, already multiplied by its current mask value,
    times its weight columns). So ``B = T_teacher - bias - r_student`` and ``A``'s columns are the
    contributions, over the non-padding tokens (only the first token for the last MLP of a
    classifier). As published, the head system has an extra all-ones column (an intercept, i.e. one
    constant added to every output entry) whose coefficient is solved for and then dropped.

    With ``solve``, each system is solved as soon as it is built and its scales multiply the student's
    mask before the next sub-layer runs (the published sequential procedure); when ``solve`` returns
    ``None`` (solver failure, out-of-range scales) rescaling stops there, as published.

    Args:
        model: A supported model (eval mode is used; it is restored afterwards).
        batches: Calibration inputs (``attention_mask`` marks the padding that is left out).
        head_mask: ``[layers, num_heads]`` (or ``[layers, num_kv_heads]``, expanded to its query heads);
            zeros remove heads, non-zeros are kept heads' current values.
        neuron_mask: ``[layers, intermediate]``.
        stack: Stack name (default: the main stack).
        solve: ``f(system) -> scales [k] | None``; see :func:`hf_prune.postprocess.rescale.solve_scales`.
            Without it the systems are built for the given masks unchanged.
        skip_first_attention: Do not rescale block 0's heads (the published code skips them).
        cls_only_last: Use only the first token for the last block's MLP; ``None`` (default) does so
            for an encoder with a classification head, as the published code does for GLUE.
        head_intercept: Add the published intercept column to the head systems. Because its
            coefficient is dropped, the head scales are then not the exact minimiser of the error
            without intercept (``False`` makes them so).
        compute_dtype: Dtype of the per-batch products (accumulation is always float64).
        progress: Show a progress bar (only on a terminal).

    Returns:
        A :class:`RescaleResult` (the masks in query-head units with the scales applied).

    Raises:
        ValueError: Masks of the wrong shape or with non-finite values, or no batches.
        RuntimeError: A block whose sub-layers are not ``residual + output projection``.
    """
    if not batches:
        raise ValueError("collect_rescale_systems needs at least one batch.")
    spec = _stack(model, stack)
    targets = mask_targets(model, spec.name)
    n_layers = len(targets)
    _, n_inter = _uniform_shape(targets, "query")
    geometry = targets[0].geometry
    device = _model_device(model)
    heads = _query_head_mask(head_mask, geometry, n_layers).to(device)
    _check_mask(neuron_mask, (n_layers, n_inter), "neuron_mask")
    neurons = neuron_mask.detach().clone().float().to(device)
    if not (torch.isfinite(heads).all() and torch.isfinite(neurons).all()):
        raise ValueError("head_mask and neuron_mask must be finite.")
    if cls_only_last is None:
        cls_only_last = not spec.causal and _task_head(model) == "classification"
    result = RescaleResult()
    was_training = model.training
    model.eval()
    layers = get_layers(model, spec)
    try:
        with torch.no_grad():
            teacher: BlockInputs = capture_block_inputs(model, spec, batches)
            student: BlockInputs = list(teacher)
            for idx in tqdm(range(n_layers), desc="rescale", disable=not show_progress(progress)):
                stop = _rescale_layer(
                    layers[idx],
                    spec,
                    targets[idx],
                    batches,
                    teacher,
                    student,
                    heads,
                    neurons,
                    result,
                    solve=solve,
                    do_heads=not (skip_first_attention and idx == 0),
                    cls_only=cls_only_last and idx == n_layers - 1,
                    intercept=head_intercept,
                    dtype=compute_dtype,
                )
                if stop:
                    result.stopped_at = idx
                    warnings.warn(
                        f"Mask rescaling stopped at block {idx}: the least-squares solve failed or gave "
                        "scales out of range; later blocks keep their masks (as in Kwon et al.).",
                        RuntimeWarning,
                        stacklevel=2,
                    )
                    break
    finally:
        model.train(was_training)
    result.head_mask, result.neuron_mask = heads, neurons
    return result


def _rescale_layer(
    block: nn.Module,
    spec: StackSpec,
    target: MaskTarget,
    batches: list[dict[str, torch.Tensor]],
    teacher: BlockInputs,
    student: BlockInputs,
    heads: torch.Tensor,
    neurons: torch.Tensor,
    result: RescaleResult,
    *,
    solve: Callable[[RescaleSystem], torch.Tensor | None] | None,
    do_heads: bool,
    cls_only: bool,
    intercept: bool,
    dtype: torch.dtype,
) -> bool:
    """Build (and solve) block ``target.layer``'s systems; advance both input lists. True = stop."""
    idx = target.layer
    hd = target.geometry.head_dim
    # Teacher: dense block. Its residual-added outputs are the targets; its outputs feed its next block.
    t_attn: list[torch.Tensor] = []
    t_mlp: list[torch.Tensor] = []
    for j, call in enumerate(teacher):
        cap = _run_block(block, spec, call)
        if j == 0:
            cap.verify(idx)
        assert cap.h_in is not None and cap.out is not None
        _, ta, _, tm = cap.residuals()
        t_attn.append(ta[_token_rows(batches[j], cap.h_in, False)])
        t_mlp.append(tm[_token_rows(batches[j], cap.h_in, cls_only)])
        teacher[j] = _with_hidden(*call, cap.out)
        del cap

    kept_heads = heads[idx].nonzero().flatten()
    kept_neurons = neurons[idx].nonzero().flatten()
    want_heads = do_heads and kept_heads.numel() > 0
    want_neurons = kept_neurons.numel() > 0

    def student_pass(head_eq: _Normal | None, neuron_eq: _Normal | None, advance: bool) -> None:
        with _block_mask_hooks(target, heads[idx], neurons[idx]):
            for j, call in enumerate(student):
                cap = _run_block(block, spec, call)
                assert cap.h_in is not None and cap.out is not None
                r_attn, _, r_mlp, _ = cap.residuals()
                if head_eq is not None:
                    assert cap.o_x is not None
                    rows = _token_rows(batches[j], cap.h_in, False)
                    b = t_attn[j] - r_attn[rows] - _bias(target.o, r_attn)
                    cols = _cols(kept_heads, hd)
                    head_eq.add(_flat(cap.o_x)[rows][:, cols], b)
                if neuron_eq is not None:
                    assert cap.mlp_x is not None
                    rows = _token_rows(batches[j], cap.h_in, cls_only)
                    b = t_mlp[j] - r_mlp[rows] - _bias(target.mlp_out, r_mlp)
                    neuron_eq.add(_flat(cap.mlp_x)[rows][:, kept_neurons], b)
                if advance:
                    student[j] = _with_hidden(*call, cap.out)
                del cap

    head_eq = (
        _Normal(_weight_out_in(target.o)[:, _cols(kept_heads, hd)], hd, intercept, dtype)
        if want_heads
        else None
    )
    neuron_eq = (
        _Normal(_weight_out_in(target.mlp_out)[:, kept_neurons], 1, False, dtype) if want_neurons else None
    )
    if solve is None:
        # Masks do not change: one student pass builds both systems and advances the inputs.
        student_pass(head_eq, neuron_eq, advance=True)
        for eq, kind, units in ((head_eq, "head", kept_heads), (neuron_eq, "neuron", kept_neurons)):
            if eq is not None:
                result.systems.append(eq.system(kind, idx, units))
        return False
    # Sequential, as published: the MLP system sees the block's rescaled heads.
    if head_eq is not None:
        student_pass(head_eq, None, advance=False)
        system = head_eq.system("head", idx, kept_heads)
        result.systems.append(system)
        scales = solve(system)
        if scales is None:
            return True
        heads[idx, kept_heads] *= scales.to(heads)
    if neuron_eq is not None:
        student_pass(None, neuron_eq, advance=False)
        system = neuron_eq.system("neuron", idx, kept_neurons)
        result.systems.append(system)
        scales = solve(system)
        if scales is None:
            return True
        neurons[idx, kept_neurons] *= scales.to(neurons)
    student_pass(None, None, advance=True)
    return False


def _cols(kept_heads: torch.Tensor, head_dim: int) -> torch.Tensor:
    """Input features of the output projection that belong to ``kept_heads`` (head-major layout)."""
    offsets = torch.arange(head_dim, device=kept_heads.device)
    return (kept_heads[:, None] * head_dim + offsets).reshape(-1)


def _bias(module: nn.Module, like: torch.Tensor) -> torch.Tensor | float:
    bias = getattr(module, "bias", None)
    return 0.0 if bias is None else bias.to(like.dtype)


@contextlib.contextmanager
def _block_mask_hooks(target: MaskTarget, head_row: torch.Tensor, neuron_row: torch.Tensor) -> Iterator[None]:
    """Apply one block's query-head and neuron mask rows (used while walking block by block)."""
    hd = target.geometry.head_dim
    handles = [
        _scale_first_input(target.o, lambda: head_row.repeat_interleave(hd)),
        _scale_first_input(target.mlp_out, lambda: neuron_row),
    ]
    try:
        yield
    finally:
        for h in handles:
            h.remove()

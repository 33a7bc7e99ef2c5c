"""Gradient statistics for first-order methods (SNIP, AFR, ReFer-SVD).

Gradients need a full backward pass, so unlike the sequential runner this keeps one batch's
activations of the whole model alive; only the targeted weights require grad, so no other parameter
gradient is ever allocated.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from tqdm.auto import tqdm
from transformers import PreTrainedModel
from transformers.pytorch_utils import Conv1D
from transformers.utils import ModelOutput

from hf_prune.calibration.distributed import all_reduce_sum_
from hf_prune.utils import show_progress

OBJECTIVES = ("ce", "rep")


def _stored_param(module: nn.Module) -> nn.Parameter:
    plist = getattr(module, "parametrizations", None)
    if plist is not None and "weight" in plist:
        return plist["weight"].original
    return module.weight


def _labels(
    model: PreTrainedModel, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
) -> torch.Tensor:
    labels = input_ids.clone()
    image_token = getattr(model.config, "image_token_id", None)
    if image_token is not None:
        labels[labels == image_token] = -100  # LLaVA: no loss on image placeholders
    if attention_mask is not None:
        labels[attention_mask == 0] = -100  # nor on padding
    return labels


def accumulate_gradients(
    model: PreTrainedModel,
    batches: list[dict[str, torch.Tensor]],
    modules: list[nn.Module],
    objective: str = "ce",
    *,
    rep_loss: Callable[[torch.Tensor], torch.Tensor] | None = None,
    progress: bool = True,
) -> list[torch.Tensor]:
    """Sum over calibration batches of ``dL/dW`` for each module's weight, in ``[out, in]`` orientation.

    Args:
        model: The model (its ``requires_grad`` flags are restored afterwards).
        batches: Calibration inputs.
        modules: Projections whose weight gradients are wanted.
        objective: ``"ce"`` (the language-modelling loss, labels = inputs; SNIP) or ``"rep"`` (the
            representation loss ``rep_loss`` summed over the modules' outputs; ReFer-SVD).
        rep_loss: Loss of one module output, required for ``"rep"``.
        progress: Show a progress bar (only on a terminal; see :func:`hf_prune.utils.show_progress`).

    Returns:
        One fp32 gradient per module.

    Raises:
        ValueError: For an unknown objective, or a model whose forward gives no loss for ``"ce"``.
    """
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}.")
    if objective == "rep" and rep_loss is None:
        raise ValueError("objective='rep' needs rep_loss=...")
    if objective == "ce" and not model.can_generate():
        raise ValueError(
            f"{type(model).__name__} returned no loss for labels=input_ids: the 'ce' objective needs a "
            "causal or image-text-to-text LM head (load the model with AutoModelForCausalLM)."
        )
    params = [_stored_param(m) for m in modules]
    flags = {id(p): p.requires_grad for p in model.parameters()}
    grads = [torch.zeros(p.shape, dtype=torch.float32, device=p.device) for p in params]
    rep_terms: list[torch.Tensor] = []
    handles = []
    if objective == "rep":
        assert rep_loss is not None  # narrowed above

        def hook(mod: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
            rep_terms.append(rep_loss(output))

        handles = [m.register_forward_hook(hook) for m in modules]
    was_training = model.training
    model.eval()  # no dropout: scores must be deterministic
    try:
        for p in model.parameters():
            p.requires_grad_(False)
        for p in params:
            p.requires_grad_(True)
        device = params[0].device
        for batch in tqdm(batches, desc=f"gradients ({objective})", disable=not show_progress(progress)):
            inputs = {k: v.to(device) for k, v in batch.items()}
            rep_terms.clear()
            if objective == "ce":
                out = model(
                    **inputs, labels=_labels(model, inputs["input_ids"], inputs.get("attention_mask"))
                )
                loss = out.loss if isinstance(out, ModelOutput) else None
                if loss is None:
                    raise ValueError(
                        f"{type(model).__name__} returned no loss for labels=input_ids; the 'ce' objective "
                        "needs a causal or image-text-to-text LM head."
                    )
            else:
                model(**inputs)
                loss = torch.stack(rep_terms).sum()
            loss.backward()
            for g, p in zip(grads, params, strict=True):
                if p.grad is not None:
                    g += p.grad.float()
                    p.grad = None
    finally:
        for h in handles:
            h.remove()
        for p in model.parameters():
            p.requires_grad_(flags.get(id(p), True))
            p.grad = None
        model.train(was_training)
    all_reduce_sum_(grads)  # data-parallel calibration: sums over every process's batches
    return [g.t() if isinstance(m, Conv1D) else g for g, m in zip(grads, modules, strict=True)]

"""Fisher-information mask search under a MAC or a latency budget.

The search step of Kwon et al., "A Fast Post-Training Pruning Framework for Transformers" (NeurIPS 2022,
reference code ``github.com/WoosukKwon/retraining-free-pruning``): given per-sample gradients of the
loss with respect to a 0/1 mask on every attention head and every MLP neuron, keep the set of heads and
neurons with the largest diagonal Fisher information (``sum over samples of grad**2``) whose cost fits a
budget. Only the behaviour of the published search is reproduced here (re-derived and re-written); the
functions are pure tensor math on CPU float64, with no model access (DESIGN.md §3), so they can be
checked against brute force.

Cost models
-----------
MAC model (multiply-accumulates of the *prunable* parts of every block, as in the paper's §3 and the
published ``efficiency/mac.py``; embeddings, LayerNorms, biases, softmax and the task head are not
counted), with ``s`` = ``seq_len``, ``d`` = ``hidden_size``, ``h`` = ``head_dim``, ``g`` = query heads per
KV head:

* one attention head: ``4*s*d*h`` (q, k, v and o projections) ``+ 2*s*s*h`` (scores and weighted sum);
* one KV group (GQA): ``g*(2*s*d*h + 2*s*s*h)`` (its query heads' q/o projections, scores and weighted
  sum) ``+ 2*s*d*h`` (its k and v projections); equal to one head when ``g == 1``;
* one MLP neuron: ``2*s*d`` (one input and one output projection), or ``3*s*d`` for gated MLPs
  (gate, up and down projections, as in Llama);
* the dense model: ``num_hidden_layers * (num_key_value_heads * per_group + intermediate_size *
  per_neuron)``. ``mac_constraint`` is a fraction of this number.

Latency model (published ``efficiency/latency.py``): each attention sub-block and each MLP sub-block
has a measured look-up table ``lut[k]`` = latency when ``k`` units are kept. It is summarised by a
piecewise-linear fit: flat at ``intercept`` for ``1 <= k <= threshold``, ``intercept + slope*(k -
threshold)`` above, and ``lut[0]`` (the sub-block removed) for ``k == 0``. The search budget is
``latency_constraint`` times the *measured* dense latency ``num_hidden_layers*(mha_lut[H] + ffn_lut[I])``
and candidates are costed with the *fitted* model, both as published.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from hf_prune.arch.spec import ARCHITECTURES

if TYPE_CHECKING:
    from transformers import PretrainedConfig

__all__ = [
    "PiecewiseLinearLatency",
    "compute_mask_mac",
    "dense_mac",
    "estimate_latency",
    "expand_kv_group_mask",
    "fisher_importance",
    "fit_piecewise_linear",
    "kv_group_grads",
    "mac_per_head",
    "mac_per_kv_group",
    "mac_per_neuron",
    "mask_objective",
    "published_greedy_latency",
    "published_greedy_mac",
    "search_latency",
    "search_mac",
]

_PAPER = 'Kwon et al., "A Fast Post-Training Pruning Framework for Transformers", NeurIPS 2022'


# --------------------------------------------------------------------------------------------------
# Geometry and validation
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Geometry:
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    hidden: int
    intermediate: int
    gated: bool

    @property
    def group(self) -> int:
        return self.heads // self.kv_heads


def _config_int(config: Any, key: str) -> int:
    value = getattr(config, key, None)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(
            f"config ({type(config).__name__}) has {key}={value!r}; the Fisher mask search needs a "
            "transformers config with positive integers hidden_size, num_attention_heads, "
            "intermediate_size and num_hidden_layers (for a composite config such as LLaVA pass the "
            "stack's own config, e.g. config.text_config)."
        )
    return value


def _infer_gated(config: Any) -> bool:
    # The architecture registry knows which families have a gate/up pair (two MLP input projections);
    # for a family it does not know, every SiLU-activated MLP we are aware of is gated (Llama, Qwen,
    # Phi-3, OLMo), while GELU MLPs (BERT, GPT-2, OPT, Falcon) are not.
    model_type = str(getattr(config, "model_type", ""))
    for _, spec in ARCHITECTURES.items():
        if model_type in spec.model_types:
            for stack in spec.stacks:
                if stack.config_path == "":
                    return len(stack.block.mlp_in) > 1
    return str(getattr(config, "hidden_act", "")).lower() in {"silu", "swish"}


def _geometry(config: Any, gated_mlp: bool | None = None) -> _Geometry:
    layers = _config_int(config, "num_hidden_layers")
    heads = _config_int(config, "num_attention_heads")
    hidden = _config_int(config, "hidden_size")
    intermediate = _config_int(config, "intermediate_size")
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    if heads % kv_heads != 0:
        raise ValueError(
            f"config has num_attention_heads={heads} and num_key_value_heads={kv_heads}; the number of "
            "query heads must be a multiple of the number of KV heads (grouped-query attention)."
        )
    head_dim = getattr(config, "head_dim", None) or hidden // heads
    gated = _infer_gated(config) if gated_mlp is None else bool(gated_mlp)
    return _Geometry(layers, heads, int(kv_heads), int(head_dim), hidden, intermediate, gated)


def _check_seq_len(seq_len: Any) -> int:
    if isinstance(seq_len, bool) or not isinstance(seq_len, int | np.integer) or seq_len < 1:
        raise ValueError(
            f"seq_len must be a positive integer (tokens per sequence the MACs are counted for), got "
            f"{seq_len!r}; pass e.g. seq_len=128."
        )
    return int(seq_len)


def _check_fraction(name: str, value: Any, what: str) -> float:
    ok = isinstance(value, int | float | np.floating) and not isinstance(value, bool)
    if not ok or not math.isfinite(float(value)) or not 0.0 < float(value) < 1.0:
        raise ValueError(
            f"{name} must be a fraction in (0, 1) of the dense model's {what}, got {value!r}; pass e.g. "
            f"{name}=0.5 to keep half of it (1.0 would mean no pruning, so it is not a search)."
        )
    return float(value)


def _as_grads(name: str, grads: Any) -> torch.Tensor:
    if isinstance(grads, np.ndarray):
        grads = torch.from_numpy(grads)
    if not isinstance(grads, torch.Tensor):
        raise ValueError(
            f"{name} must be a torch.Tensor of shape [samples, layers, units], got {type(grads)}."
        )
    return grads


def _head_shape_hint(geo: _Geometry) -> str:
    if geo.kv_heads == geo.heads:
        return f"[samples, {geo.layers}, {geo.heads}] (num_hidden_layers, num_attention_heads)"
    return (
        f"[samples, {geo.layers}, {geo.kv_heads}] (num_hidden_layers, num_key_value_heads: one unit per KV "
        "group)"
    )


def _check_head_grads(geo: _Geometry, grads: Any, name: str = "head_grads") -> torch.Tensor:
    """Validate head gradients; returns them. Units are heads (MHA) or KV groups (GQA)."""
    grads = _as_grads(name, grads)
    hint = _head_shape_hint(geo)
    if grads.dim() != 3 or grads.shape[0] < 1 or grads.shape[1] != geo.layers:
        raise ValueError(f"{name} has shape {list(grads.shape)}; expected {hint} for this config.")
    units = grads.shape[2]
    if units == geo.kv_heads:
        return grads
    if units == geo.heads:
        # GQA with one unit per *query* head: HF's repeat_kv needs the same number of query heads per
        # KV head, so the removable unit is a whole group, and its cost is not additive per query head.
        raise ValueError(
            f"{name} has {units} units per layer (one per query head) but the config uses grouped-query "
            f"attention ({geo.heads} query heads share {geo.kv_heads} KV heads), whose removable unit is a "
            f"KV group; expected {hint}. Fix: pass kv_group_grads({name}, config), which sums each "
            "sample's query-head mask gradients per group (the exact gradient of a shared group mask)."
        )
    raise ValueError(f"{name} has shape {list(grads.shape)}; expected {hint} for this config.")


def _check_neuron_grads(geo: _Geometry, grads: Any, name: str = "neuron_grads") -> torch.Tensor:
    grads = _as_grads(name, grads)
    if grads.dim() != 3 or grads.shape[0] < 1 or tuple(grads.shape[1:]) != (geo.layers, geo.intermediate):
        raise ValueError(
            f"{name} has shape {list(grads.shape)}; expected [samples, {geo.layers}, {geo.intermediate}] "
            "(num_hidden_layers, intermediate_size) for this config."
        )
    return grads


def fisher_importance(grads: torch.Tensor) -> torch.Tensor:
    """Diagonal empirical Fisher information of mask variables (Kwon et al., NeurIPS 2022, Eq. 5).

    Args:
        grads: Per-sample mask gradients ``[samples, layers, units]``.

    Returns:
        ``[layers, units]`` float64 CPU tensor, ``sum over samples of grad**2`` (float64 so that the
        prefix sums the search compares are not at the mercy of float32 rounding).
    """
    return grads.detach().to("cpu", torch.float64).pow(2).sum(dim=0)


def kv_group_grads(head_grads: torch.Tensor, config: PretrainedConfig) -> torch.Tensor:
    """Turn per-query-head mask gradients into per-KV-group gradients for a GQA model.

    A single mask ``m`` shared by the ``g`` query heads of a group has, by the chain rule,
    ``dL/dm = sum_j dL/dm_j`` for every sample; its Fisher information is the square of that sum (not the
    sum of squares), so the grouping must happen before squaring.

    Args:
        head_grads: ``[samples, num_hidden_layers, num_attention_heads]`` gradients; query head ``j``
            belongs to KV group ``j // g`` (the layout of transformers' ``repeat_kv``).
        config: The model's transformers config (``num_key_value_heads`` sets ``g``).

    Returns:
        ``[samples, num_hidden_layers, num_key_value_heads]`` gradients.
    """
    geo = _geometry(config)
    grads = _as_grads("head_grads", head_grads)
    if grads.dim() != 3 or tuple(grads.shape[1:]) != (geo.layers, geo.heads):
        raise ValueError(
            f"head_grads has shape {list(grads.shape)}; expected [samples, {geo.layers}, {geo.heads}] "
            "(one gradient per query head) to group."
        )
    return grads.reshape(grads.shape[0], geo.layers, geo.kv_heads, geo.group).sum(dim=-1)


def expand_kv_group_mask(mask: torch.Tensor, config: PretrainedConfig) -> torch.Tensor:
    """Expand a ``[layers, num_key_value_heads]`` group mask to ``[layers, num_attention_heads]``.

    Args:
        mask: Group mask returned by :func:`search_mac` / :func:`search_latency` for a GQA config.
        config: The model's transformers config.

    Returns:
        Query-head mask where every head of a group has the group's value.
    """
    geo = _geometry(config)
    if mask.dim() != 2 or tuple(mask.shape) != (geo.layers, geo.kv_heads):
        raise ValueError(
            f"mask has shape {list(mask.shape)}; expected [{geo.layers}, {geo.kv_heads}] "
            "(num_hidden_layers, num_key_value_heads)."
        )
    return mask.repeat_interleave(geo.group, dim=1)


def mask_objective(
    head_grads: torch.Tensor, neuron_grads: torch.Tensor, head_mask: torch.Tensor, neuron_mask: torch.Tensor
) -> float:
    """Total Fisher information kept by a mask pair: the objective the search maximises.

    Args:
        head_grads: ``[samples, layers, head_units]`` mask gradients.
        neuron_grads: ``[samples, layers, intermediate_size]`` mask gradients.
        head_mask: ``[layers, head_units]``; non-zero entries are kept.
        neuron_mask: ``[layers, intermediate_size]``; non-zero entries are kept.

    Returns:
        ``sum(F_head * keep_head) + sum(F_neuron * keep_neuron)`` in float64 (Kwon et al., NeurIPS 2022,
        Eq. 6, under the diagonal Fisher approximation).
    """
    total = 0.0
    for name, grads, mask in (("head", head_grads, head_mask), ("neuron", neuron_grads, neuron_mask)):
        grads = _as_grads(f"{name}_grads", grads)
        if grads.dim() != 3 or tuple(mask.shape) != tuple(grads.shape[1:]):
            raise ValueError(
                f"{name}_mask has shape {list(mask.shape)} but {name}_grads has shape {list(grads.shape)}; "
                f"the mask must be [layers, units] = {list(grads.shape[1:])}."
            )
        total += float((fisher_importance(grads) * (mask.detach().cpu() != 0)).sum())
    return total


# --------------------------------------------------------------------------------------------------
# MAC model
# --------------------------------------------------------------------------------------------------


def mac_per_head(config: PretrainedConfig, seq_len: int) -> int:
    """MACs of one attention head (Kwon et al., NeurIPS 2022, §3 / published ``efficiency/mac.py``).

    ``4*s*d*h`` for its q, k, v, o projections plus ``2*s*s*h`` for the attention scores and the weighted
    sum of values. This assumes the head owns its k/v projections (multi-head attention); for a GQA
    config use :func:`mac_per_kv_group`, which is the search's unit there.

    Args:
        config: transformers config (``hidden_size``, ``num_attention_heads``, optional ``head_dim``).
        seq_len: Tokens per sequence.

    Returns:
        MACs per head per sequence.
    """
    geo, s = _geometry(config), _check_seq_len(seq_len)
    return 4 * s * geo.hidden * geo.head_dim + 2 * s * s * geo.head_dim


def mac_per_kv_group(config: PretrainedConfig, seq_len: int) -> int:
    """MACs of one KV group: ``g`` query heads sharing one key/value head.

    ``g*(2*s*d*h + 2*s*s*h)`` for the query heads' q and o projections, scores and weighted sums, plus
    ``2*s*d*h`` for the shared k and v projections. Equals :func:`mac_per_head` when ``g == 1`` (MHA),
    so it is the unit cost the search uses for every attention layout.

    Args:
        config: transformers config (``num_key_value_heads`` defaults to ``num_attention_heads``).
        seq_len: Tokens per sequence.

    Returns:
        MACs per KV group per sequence.
    """
    geo, s = _geometry(config), _check_seq_len(seq_len)
    return (
        geo.group * (2 * s * geo.hidden * geo.head_dim + 2 * s * s * geo.head_dim)
        + 2 * s * geo.hidden * geo.head_dim
    )


def mac_per_neuron(config: PretrainedConfig, seq_len: int, *, gated_mlp: bool | None = None) -> int:
    """MACs of one MLP neuron: ``2*s*d`` (in and out projections), ``3*s*d`` if the MLP is gated.

    Args:
        config: transformers config (``hidden_size``).
        seq_len: Tokens per sequence.
        gated_mlp: Whether the MLP has gate, up and down projections (Llama-style). ``None`` infers it
            from ``config.model_type`` via hf_prune's architecture registry, falling back to
            ``hidden_act in {"silu", "swish"}`` for unregistered families.

    Returns:
        MACs per neuron per sequence (Kwon et al., NeurIPS 2022 count ``2*s*d`` for BERT).
    """
    geo, s = _geometry(config, gated_mlp), _check_seq_len(seq_len)
    return (3 if geo.gated else 2) * s * geo.hidden


def dense_mac(config: PretrainedConfig, seq_len: int, *, gated_mlp: bool | None = None) -> int:
    """MACs of the prunable parts of the unpruned model, the reference of ``mac_constraint``.

    Args:
        config: transformers config.
        seq_len: Tokens per sequence.
        gated_mlp: See :func:`mac_per_neuron`.

    Returns:
        ``num_hidden_layers * (num_key_value_heads * mac_per_kv_group + intermediate_size *
        mac_per_neuron)``.
    """
    geo = _geometry(config, gated_mlp)
    per_layer = geo.kv_heads * mac_per_kv_group(config, seq_len) + geo.intermediate * mac_per_neuron(
        config, seq_len, gated_mlp=geo.gated
    )
    return geo.layers * per_layer


def compute_mask_mac(
    head_mask: torch.Tensor,
    neuron_mask: torch.Tensor,
    seq_len: int,
    config: PretrainedConfig,
    *,
    gated_mlp: bool | None = None,
) -> float:
    """MACs of the prunable parts of a model pruned by a mask pair (Kwon et al., NeurIPS 2022, §3).

    Args:
        head_mask: ``[layers, num_attention_heads]`` (per head; for GQA the k/v projections of a group
            are counted while any of its query heads is kept) or ``[layers, num_key_value_heads]``
            (per KV group). Non-zero entries are kept.
        neuron_mask: ``[layers, intermediate_size]``; non-zero entries are kept.
        seq_len: Tokens per sequence.
        config: transformers config of the model.
        gated_mlp: See :func:`mac_per_neuron`.

    Returns:
        MACs per sequence (divide by :func:`dense_mac` for the kept fraction).
    """
    geo, s = _geometry(config, gated_mlp), _check_seq_len(seq_len)
    if (
        head_mask.dim() != 2
        or head_mask.shape[0] != geo.layers
        or head_mask.shape[1] not in (geo.heads, geo.kv_heads)
    ):
        raise ValueError(
            f"head_mask has shape {list(head_mask.shape)}; expected [{geo.layers}, {geo.heads}] "
            f"(per head) or [{geo.layers}, {geo.kv_heads}] (per KV group)."
        )
    if tuple(neuron_mask.shape) != (geo.layers, geo.intermediate):
        raise ValueError(
            f"neuron_mask has shape {list(neuron_mask.shape)}; expected [{geo.layers}, {geo.intermediate}]."
        )
    keep = head_mask.detach().cpu() != 0
    if keep.shape[1] == geo.kv_heads:
        attention = int(keep.sum()) * mac_per_kv_group(config, s)
    else:
        # Per query head: q/o + scores for every kept head, k/v for every group with a kept head.
        query = 2 * s * geo.hidden * geo.head_dim + 2 * s * s * geo.head_dim
        groups = keep.reshape(geo.layers, geo.kv_heads, geo.group).any(dim=-1)
        attention = int(keep.sum()) * query + int(groups.sum()) * 2 * s * geo.hidden * geo.head_dim
    neurons = int((neuron_mask.detach().cpu() != 0).sum()) * mac_per_neuron(config, s, gated_mlp=geo.gated)
    return float(attention + neurons)


# --------------------------------------------------------------------------------------------------
# MAC-constrained search
# --------------------------------------------------------------------------------------------------


def _sorted_prefix(importance: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Global descending order (stable, so ties keep position) and prefix sums with a leading 0."""
    flat = importance.reshape(-1)
    order = torch.argsort(flat, descending=True, stable=True)
    prefix = torch.cat([flat.new_zeros(1), torch.cumsum(flat[order], dim=0)])
    return order, prefix


def _flat_mask(order: torch.Tensor, count: int, shape: tuple[int, int], device: torch.device) -> torch.Tensor:
    mask = torch.zeros(shape[0] * shape[1], dtype=torch.float32)
    mask[order[:count]] = 1.0
    return mask.reshape(shape).to(device)


def _mac_inputs(
    config: PretrainedConfig,
    head_grads: torch.Tensor,
    neuron_grads: torch.Tensor,
    seq_len: int,
    mac_constraint: float,
    gated_mlp: bool | None,
) -> tuple[_Geometry, torch.Tensor, torch.Tensor, int, int, float]:
    geo = _geometry(config, gated_mlp)
    s = _check_seq_len(seq_len)
    constraint = _check_fraction("mac_constraint", mac_constraint, "MACs (prunable parts: heads and neurons)")
    head_grads = _check_head_grads(geo, head_grads)
    neuron_grads = _check_neuron_grads(geo, neuron_grads)
    unit_cost = mac_per_kv_group(config, s)
    neuron_cost = mac_per_neuron(config, s, gated_mlp=geo.gated)
    budget = constraint * dense_mac(config, s, gated_mlp=geo.gated)
    return geo, fisher_importance(head_grads), fisher_importance(neuron_grads), unit_cost, neuron_cost, budget


def search_mac(
    config: PretrainedConfig,
    head_grads: torch.Tensor,
    neuron_grads: torch.Tensor,
    seq_len: int,
    mac_constraint: float,
    *,
    gated_mlp: bool | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact Fisher mask search under a MAC budget (Kwon et al., NeurIPS 2022, Algorithm 1 / §4.1).

    Every head (KV group) costs the same and every neuron costs the same, so for a fixed number ``h`` of
    kept heads the best choice is the ``h`` globally most important heads plus as many of the most
    important neurons as the remaining budget pays for (importances are non-negative, so more neurons
    never hurt). Enumerating ``h = 0 .. layers*heads`` therefore visits an optimal solution; prefix sums
    make the whole enumeration one vectorized pass. This is the published loop with its two quirks
    removed: it never tried ``h = 0``, and it kept head-only candidates whose heads alone exceed the
    budget (see :func:`published_greedy_mac`). Layers may end up with zero heads or neurons.

    Args:
        config: transformers config (BERT-style or Llama-style; GQA configs search KV groups).
        head_grads: ``[samples, num_hidden_layers, units]`` mask gradients, ``units`` =
            ``num_attention_heads`` for MHA or ``num_key_value_heads`` for GQA (see :func:`kv_group_grads`).
        neuron_grads: ``[samples, num_hidden_layers, intermediate_size]`` mask gradients.
        seq_len: Tokens per sequence for the MAC model.
        mac_constraint: Fraction in (0, 1) of :func:`dense_mac` (the MACs of all heads and neurons; the
            embeddings and task head are not part of it) that the kept units may use.
        gated_mlp: See :func:`mac_per_neuron`.

    Returns:
        ``(head_mask [layers, units], neuron_mask [layers, intermediate_size])``, float 0/1 tensors on the
        device of ``head_grads``; ``compute_mask_mac`` of the result is at most the budget.

    Raises:
        ValueError: For a constraint outside (0, 1), a non-positive ``seq_len``, or gradients whose
            shape does not match the config (the message names the expected shape).
    """
    _, imp_h, imp_n, unit_cost, neuron_cost, budget = _mac_inputs(
        config, head_grads, neuron_grads, seq_len, mac_constraint, gated_mlp
    )
    order_h, prefix_h = _sorted_prefix(imp_h)
    order_n, prefix_n = _sorted_prefix(imp_n)
    num_h, num_n = imp_h.numel(), imp_n.numel()

    heads = torch.arange(num_h + 1, dtype=torch.int64)
    head_cost = heads * unit_cost
    neurons = torch.floor((budget - head_cost.double()) / neuron_cost).clamp(-1, num_n).to(torch.int64)
    # The float quotient can land one off the true floor; settle it with exact integer costs compared to
    # the (float) budget, so the result never exceeds the budget and never leaves a payable neuron out.
    neurons = torch.where((head_cost + neurons * neuron_cost).double() > budget, neurons - 1, neurons)
    grow = ((head_cost + (neurons + 1) * neuron_cost).double() <= budget) & (neurons < num_n)
    neurons = torch.where(grow, neurons + 1, neurons)
    feasible = neurons >= 0
    objective = prefix_h[heads] + prefix_n[neurons.clamp(min=0)]
    objective = torch.where(feasible, objective, torch.full_like(objective, -math.inf))
    best = int(torch.argmax(objective))  # first maximum: the fewest heads among ties
    device = head_grads.device
    return (
        _flat_mask(order_h, best, tuple(imp_h.shape), device),
        _flat_mask(order_n, int(neurons[best]), tuple(imp_n.shape), device),
    )


def published_greedy_mac(
    config: PretrainedConfig,
    head_grads: torch.Tensor,
    neuron_grads: torch.Tensor,
    seq_len: int,
    mac_constraint: float,
    *,
    gated_mlp: bool | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Re-implementation of the published MAC search's behaviour, kept as a baseline.

    Reproduces ``search_mac`` of Kwon et al.'s reference code (NeurIPS 2022; re-written, not copied):
    heads and neurons are ranked globally by Fisher information; for ``h = 1 .. layers*heads`` kept heads
    the neuron count is ``int((budget - h*head_mac) / neuron_mac)`` clamped at 0, and the candidate with
    the strictly largest importance wins. Its quirks are kept on purpose: ``h = 0`` is never tried, and
    when the heads alone exceed the budget the head-only candidate is still scored, so the returned mask
    can exceed the budget. If no candidate has positive importance (all-zero gradients) the published
    code fails; this version returns all-zero masks. Sums use float64 prefix sums instead of float32.

    Args:
        config: transformers config.
        head_grads: ``[samples, layers, units]`` (units as in :func:`search_mac`).
        neuron_grads: ``[samples, layers, intermediate_size]``.
        seq_len: Tokens per sequence.
        mac_constraint: Fraction in (0, 1) of :func:`dense_mac`.
        gated_mlp: See :func:`mac_per_neuron`.

    Returns:
        ``(head_mask, neuron_mask)`` as float 0/1 tensors.
    """
    _, imp_h, imp_n, unit_cost, neuron_cost, budget = _mac_inputs(
        config, head_grads, neuron_grads, seq_len, mac_constraint, gated_mlp
    )
    order_h, prefix_h = _sorted_prefix(imp_h)
    order_n, prefix_n = _sorted_prefix(imp_n)
    heads = torch.arange(1, imp_h.numel() + 1, dtype=torch.int64)
    # Python's int() truncates toward zero, then the published code clamps at 0.
    neurons = torch.trunc((budget - (heads * unit_cost).double()) / neuron_cost).clamp(0, imp_n.numel())
    neurons = neurons.to(torch.int64)
    objective = prefix_h[heads] + prefix_n[neurons]
    best = int(torch.argmax(objective))
    device = head_grads.device
    if not float(objective[best]) > 0.0:
        return (
            torch.zeros(tuple(imp_h.shape), device=device),
            torch.zeros(tuple(imp_n.shape), device=device),
        )
    return (
        _flat_mask(order_h, int(heads[best]), tuple(imp_h.shape), device),
        _flat_mask(order_n, int(neurons[best]), tuple(imp_n.shape), device),
    )


# --------------------------------------------------------------------------------------------------
# Latency model
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PiecewiseLinearLatency:
    """Fitted latency of one sub-block as a function of the number of kept units.

    Args:
        threshold: Largest unit count of the flat part (``1 <= threshold <= units``).
        slope: Added latency per unit above ``threshold`` (never negative).
        intercept: Latency of ``1 .. threshold`` units.
        zero: Latency with no unit kept (the sub-block removed), ``lut[0]``.
    """

    threshold: int
    slope: float
    intercept: float
    zero: float = 0.0

    def __call__(self, count: int) -> float:
        """Return the modelled latency for ``count`` kept units.

        Args:
            count: Number of units kept in the sub-block (0 = removed).
        """
        if count <= 0:
            return self.zero
        return self.intercept + self.slope * max(0, count - self.threshold)


def _lut_error(name: str, got: str, units: int, unit_name: str) -> ValueError:
    return ValueError(
        f"{name} {got}, but this config/gradient shape has {units} {unit_name} per layer, so a table "
        f"needs {units + 1} entries (k = 0..{units} kept units, index 0 = sub-block removed) or a "
        f"dict {{count: latency}} whose largest count is {units}. This looks like a LUT from another model "
        f"shape: measure it for this model (hf-prune lut). A published-format table (index i = i+1 units) "
        f"needs its 0-unit latency prepended."
    )


def _latency_table(lut: Any, units: int | None, name: str, unit_name: str = "units") -> torch.Tensor:
    """Dense float64 table ``t[k]`` for ``k = 0..units`` from a sequence or a sparse ``{count: ms}`` dict.

    A dict is interpolated linearly between given counts; counts below the smallest given positive count
    take its value (the flat region the published fit assumes), and a missing 0 means latency 0.
    """
    if isinstance(lut, Mapping):
        try:
            points = {int(k): float(v) for k, v in lut.items()}
        except (TypeError, ValueError):
            raise ValueError(f"{name} must map integer unit counts to latencies, got {lut!r}.") from None
        positive = sorted(k for k in points if k > 0)
        if not positive or min(points) < 0:
            raise ValueError(
                f"{name} must have at least one positive unit count and no negative counts, got keys "
                f"{sorted(points)}."
            )
        top = positive[-1]
        if units is not None and top != units:
            raise _lut_error(name, f"has largest count {top}", units, unit_name)
        counts = np.arange(1, top + 1)
        body = np.interp(counts, positive, [points[k] for k in positive])
        table = np.concatenate([[points.get(0, 0.0)], body])
    else:
        if isinstance(lut, torch.Tensor):
            lut = lut.detach().cpu().numpy()
        if isinstance(lut, str) or not isinstance(lut, Sequence | np.ndarray):
            raise ValueError(
                f"{name} must be a sequence of latencies or a dict {{count: latency}}, got {type(lut)}."
            )
        table = np.asarray(lut, dtype=np.float64)
        if table.ndim != 1 or table.shape[0] < 2:
            raise ValueError(
                f"{name} must be one-dimensional with at least 2 entries, got shape {table.shape}."
            )
        if units is not None and table.shape[0] != units + 1:
            raise _lut_error(name, f"has {table.shape[0]} entries", units, unit_name)
    if not np.all(np.isfinite(table)) or np.any(table < 0):
        raise ValueError(f"{name} must hold finite, non-negative latencies, got {table.tolist()}.")
    return torch.from_numpy(np.ascontiguousarray(table))


def _fit_table(table: torch.Tensor) -> PiecewiseLinearLatency:
    """Least-squares fit of the published piecewise-linear model over counts ``1..N``.

    For each candidate threshold ``t`` the flat level is the mean of ``lut[1..t]`` and the slope is the
    least-squares slope through that level for ``lut[t+1..N]`` (clamped at 0); the ``t`` with the smallest
    squared error wins (the first one on ties), as published. All ``N`` thresholds are scored at once
    from prefix sums (O(N) instead of the published O(N**2) loop, which matters for 3072+ neurons).
    """
    mean = float(table[1:].mean())
    y = table[1:] - mean  # the model is shift-equivariant; centring keeps the prefix sums well conditioned
    n = y.shape[0]
    i = torch.arange(n, dtype=torch.float64)
    zero = y.new_zeros(1)
    p1, p2, pi = (torch.cat([zero, torch.cumsum(v, 0)]) for v in (y, y * y, i * y))
    t = torch.arange(1, n + 1, dtype=torch.float64)
    ti = t.long()
    level = p1[ti] / t
    flat_err = p2[ti] - p1[ti] ** 2 / t
    m = n - t  # points above the threshold, at distances x = 1..m
    tail_sum, tail_sq = p1[-1] - p1[ti], p2[-1] - p2[ti]
    sxy = (pi[-1] - pi[ti]) - (t - 1) * tail_sum - level * m * (m + 1) / 2
    sxx = m * (m + 1) * (2 * m + 1) / 6
    slope = torch.where(sxx > 0, sxy / sxx.clamp(min=1), torch.zeros_like(sxx)).clamp(min=0)
    tail_err = tail_sq - 2 * level * tail_sum + m * level**2 - 2 * slope * sxy + slope**2 * sxx
    best = int(torch.argmin(flat_err + tail_err))
    return PiecewiseLinearLatency(
        int(t[best]), float(slope[best]), float(level[best]) + mean, float(table[0])
    )


def fit_piecewise_linear(
    lut: Sequence[float] | Mapping[int, float] | torch.Tensor,
) -> tuple[int, float, float]:
    """Fit the published piecewise-linear latency model to a look-up table (Kwon et al., NeurIPS 2022, §4.1).

    Latency is flat at ``intercept`` for ``1 <= k <= threshold`` kept units and grows by ``slope`` per
    unit above; ``k = 0`` (``lut[0]``) is the removed sub-block and is not part of the fit.

    Args:
        lut: ``lut[k]`` = latency keeping ``k`` units, ``k = 0..N``; or a sparse dict ``{count: latency}``
            (largest count = ``N``) interpolated linearly.

    Returns:
        ``(threshold, slope, intercept)``; the model is ``intercept + slope * max(0, k - threshold)``.
    """
    fit = _fit_table(_latency_table(lut, None, "lut"))
    return fit.threshold, fit.slope, fit.intercept


def estimate_latency(
    head_mask: torch.Tensor,
    neuron_mask: torch.Tensor,
    mha_lut: Sequence[float] | Mapping[int, float] | torch.Tensor,
    ffn_lut: Sequence[float] | Mapping[int, float] | torch.Tensor,
    *,
    fitted: bool = True,
) -> float:
    """Latency of the attention and MLP sub-blocks of a model pruned by a mask pair.

    Args:
        head_mask: ``[layers, units]``; the count of non-zero entries per layer indexes ``mha_lut``.
        neuron_mask: ``[layers, intermediate_size]``.
        mha_lut: Attention table with ``units + 1`` entries (or a sparse dict), as in :func:`search_latency`.
        ffn_lut: MLP table with ``intermediate_size + 1`` entries (or a sparse dict).
        fitted: ``True`` costs each layer with the piecewise-linear fit (the model the search uses);
            ``False`` reads the (interpolated) table itself.

    Returns:
        Sum over layers of both sub-blocks' latencies.
    """
    total = 0.0
    for name, mask, lut in (("mha_lut", head_mask, mha_lut), ("ffn_lut", neuron_mask, ffn_lut)):
        table = _latency_table(lut, mask.shape[1], name)
        model = _fit_table(table) if fitted else None
        for count in (mask.detach().cpu() != 0).sum(dim=1).tolist():
            total += model(count) if model is not None else float(table[count])
    return total


# --------------------------------------------------------------------------------------------------
# Latency-constrained search
# --------------------------------------------------------------------------------------------------


@dataclass
class _Side:
    """One kind of sub-block (attention or MLP) of every layer, ready for the search."""

    order: torch.Tensor  # [L, U] per-layer unit indices by descending importance
    values: torch.Tensor  # [L, U] importances in that order
    fit: PiecewiseLinearLatency

    @property
    def threshold(self) -> int:
        return self.fit.threshold

    @property
    def base(self) -> torch.Tensor:
        # The `threshold` best units of a layer come with its flat latency, so a kept layer keeps them.
        return self.values[:, : self.threshold].sum(dim=1)

    @property
    def extras(self) -> torch.Tensor:
        return self.values[:, self.threshold :]

    @property
    def on_cost(self) -> float:
        # Cost of turning a layer on beyond the removed-sub-block latency already paid for every layer.
        return self.fit.intercept - self.fit.zero

    def mask(self, base_on: torch.Tensor, extra: torch.Tensor, device: torch.device) -> torch.Tensor:
        """Mask keeping the base units of layers in ``base_on`` and the first ``extra[l]`` extras."""
        rank = torch.arange(self.order.shape[1]).unsqueeze(0)
        t = self.threshold
        keep = (base_on.unsqueeze(1) & (rank < t)) | ((rank >= t) & (rank < t + extra.unsqueeze(1)))
        out = torch.zeros(self.order.shape, dtype=torch.float32)
        out.scatter_(1, self.order, keep.float())
        return out.to(device)


@dataclass
class _LatencyProblem:
    layers: int
    heads: _Side
    neurons: _Side
    budget: float  # constraint * measured dense latency
    room: float  # budget minus the removed-sub-block latency of every layer
    device: torch.device


def _latency_problem(
    config: PretrainedConfig,
    head_grads: torch.Tensor,
    neuron_grads: torch.Tensor,
    latency_constraint: float,
    mha_lut: Any,
    ffn_lut: Any,
) -> _LatencyProblem:
    geo = _geometry(config)
    constraint = _check_fraction(
        "latency_constraint", latency_constraint, "latency (attention + MLP sub-blocks of every layer)"
    )
    head_grads = _check_head_grads(geo, head_grads)
    neuron_grads = _check_neuron_grads(geo, neuron_grads)
    units = head_grads.shape[2]
    unit_name = "heads" if units == geo.heads else "KV groups (num_key_value_heads)"
    table_h = _latency_table(mha_lut, units, "mha_lut", unit_name)
    table_n = _latency_table(ffn_lut, geo.intermediate, "ffn_lut", "neurons (intermediate_size)")
    sides = []
    for grads, table in ((head_grads, table_h), (neuron_grads, table_n)):
        importance = fisher_importance(grads)
        values, order = torch.sort(importance, dim=1, descending=True, stable=True)
        sides.append(_Side(order, values, _fit_table(table)))
    # As published: the budget is a fraction of the *measured* dense latency, candidates are costed
    # with the fitted model.
    budget = constraint * geo.layers * float(table_h[-1] + table_n[-1])
    room = budget - geo.layers * (sides[0].fit.zero + sides[1].fit.zero)
    if room < 0:
        raise ValueError(
            f"latency_constraint={latency_constraint!r} gives a budget of {budget:.6g}, below the "
            f"{budget - room:.6g} that the luts' 0-unit entries (mha_lut[0], ffn_lut[0]) charge even with "
            "every head and neuron removed; raise the constraint or check those entries."
        )
    return _LatencyProblem(geo.layers, sides[0], sides[1], budget, room, head_grads.device)


def _units_for(room: torch.Tensor, slope: float, available: int) -> torch.Tensor:
    """Largest count of slope-cost units that ``room`` pays for (all of them when they are free)."""
    if slope <= 0:
        return torch.full(room.shape, available, dtype=torch.int64)
    return torch.floor(room / slope).clamp(0, available).to(torch.int64)


def _published_core(p: _LatencyProblem, faithful: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """The published latency search over nested layer sets (see :func:`published_greedy_latency`)."""
    L, hs, ns = p.layers, p.heads, p.neurons
    drop_order_h = torch.argsort(hs.base, stable=True)  # least important base first
    drop_order_n = torch.argsort(ns.base, stable=True)
    drops = range(L) if faithful else range(L + 1)

    def candidates(side: _Side, drop_order: torch.Tensor, dropped: int) -> tuple:
        on = torch.ones(L, dtype=torch.bool)
        on[drop_order[:dropped]] = False
        extras = side.extras
        layer_ids = torch.arange(L).unsqueeze(1).expand_as(extras)
        if faithful:
            # Published: dropped layers' units stay in the global ranking with importance zeroed.
            vals, ids = (extras * on.unsqueeze(1)).reshape(-1), layer_ids.reshape(-1)
        else:
            vals, ids = extras[on].reshape(-1), layer_ids[on].reshape(-1)
        order = torch.argsort(vals, descending=True, stable=True)
        return on, torch.cat([vals.new_zeros(1), torch.cumsum(vals[order], 0)]), ids[order]

    cand_h = [candidates(hs, drop_order_h, d) for d in drops]
    cand_n = [candidates(ns, drop_order_n, d) for d in drops]
    best_value = 0.0 if faithful else -math.inf
    best = None
    remaining = p.room
    for dh in drops:
        on_h, prefix_h, _ = cand_h[dh]
        for dn in drops:
            on_n, prefix_n, _ = cand_n[dn]
            fixed = int(on_h.sum()) * hs.on_cost + int(on_n.sum()) * ns.on_cost
            if faithful:
                remaining -= fixed  # published bug: the fixed cost is subtracted cumulatively
                avail = remaining
            else:
                avail = p.room - fixed
            if avail < 0:
                continue
            max_heads = int(on_h.sum()) * hs.extras.shape[1]
            heads = torch.arange(0 if not faithful else 1, max_heads + 1)
            if heads.numel() == 0:
                continue
            rest = avail - hs.fit.slope * heads.double()
            if ns.fit.slope > 0:
                quotient = rest / ns.fit.slope
                # Published: int() truncates, and the loop breaks at the first negative count, so a
                # quotient in (-1, 0) still gives a 0-neuron candidate that overspends slightly.
                keep = quotient > -1 if faithful else rest >= 0
                count = (torch.trunc(quotient) if faithful else torch.floor(quotient)).clamp(min=0)
            else:
                # Free extras (flat fit): the published code divides by zero here; take them all.
                keep = rest >= 0
                count = torch.full_like(rest, prefix_n.numel() - 1)
            if faithful:
                stop = torch.nonzero(~keep)
                keep = torch.arange(heads.numel()) < (int(stop[0]) if stop.numel() else heads.numel())
            count = count.clamp(max=prefix_n.numel() - 1).to(torch.int64)
            value = prefix_h[heads] + prefix_n[count]
            if not faithful:
                # Published scores leave out the kept layers' base units, which biases the comparison of
                # layer sets towards dropping layers; the fixed variant counts them.
                value = value + float(hs.base[on_h].sum() + ns.base[on_n].sum())
            value = torch.where(keep, value, torch.full_like(value, -math.inf))
            i = int(torch.argmax(value))
            if float(value[i]) > best_value:
                best_value, best = float(value[i]), (dh, dn, int(heads[i]), int(count[i]))
    if best is None:
        return (
            torch.zeros(hs.order.shape, device=p.device),
            torch.zeros(ns.order.shape, device=p.device),
        )
    dh, dn, num_heads, num_neurons = best
    on_h, _, ids_h = cand_h[dh]
    on_n, _, ids_n = cand_n[dn]
    extra_h = torch.bincount(ids_h[:num_heads], minlength=L)
    extra_n = torch.bincount(ids_n[:num_neurons], minlength=L)
    return hs.mask(on_h, extra_h, p.device), ns.mask(on_n, extra_n, p.device)


def published_greedy_latency(
    config: PretrainedConfig,
    head_grads: torch.Tensor,
    neuron_grads: torch.Tensor,
    latency_constraint: float,
    mha_lut: Sequence[float] | Mapping[int, float] | torch.Tensor,
    ffn_lut: Sequence[float] | Mapping[int, float] | torch.Tensor,
    *,
    faithful: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Re-implementation of the published latency search's behaviour, kept as a baseline.

    Reproduces ``search_latency`` of Kwon et al.'s reference code (NeurIPS 2022; re-written, not copied).
    Per layer the ``threshold`` most important units ("base", paid by the flat latency) are kept with the
    layer; layers are ordered by base importance and the search drops the ``0 .. L-1`` least important
    attention layers and, independently, MLP layers. For every pair of nested layer sets the remaining
    (above-threshold) units of the kept layers are ranked globally and split between heads and neurons
    like the MAC search, each costing its fitted slope.

    With ``faithful=True`` the published quirks are kept: the fixed latency of the kept layers is
    subtracted from the budget *cumulatively* over the loop (so later layer sets see a shrinking budget),
    at least one above-threshold head is required, never every layer is dropped, dropped
    layers' units stay in the ranking with zeroed importance, and ``int()`` truncation admits a
    0-neuron candidate that overspends by less than one neuron's slope, and a candidate's score leaves
    out the importance of the kept layers' base units (so layer sets are compared on their extras only).
    ``faithful=False`` fixes those: each layer-set pair gets the true remaining budget, counts start at
    zero, all-dropped is allowed, only kept layers' units are ranked, and scores include the base units.
    Where the published code crashes (no candidate, zero MLP slope) this version returns all-zero masks
    or takes every free unit.

    Args:
        config: transformers config.
        head_grads: ``[samples, layers, units]`` (units as in :func:`search_mac`).
        neuron_grads: ``[samples, layers, intermediate_size]``.
        latency_constraint: Fraction in (0, 1) of the measured dense latency.
        mha_lut: Attention latency table (see :func:`search_latency`).
        ffn_lut: MLP latency table (see :func:`search_latency`).
        faithful: Keep the published quirks (default) or fix them.

    Returns:
        ``(head_mask, neuron_mask)`` as float 0/1 tensors.
    """
    p = _latency_problem(config, head_grads, neuron_grads, latency_constraint, mha_lut, ffn_lut)
    return _published_core(p, faithful)


def _head_frontier(hs: _Side, layers: int) -> tuple[torch.Tensor, ...]:
    """Exact attention side: best importance for every (kept layers, above-threshold heads) pair.

    A knapsack DP over layers: ``V[a, x]`` is the largest importance of ``a`` kept attention layers
    with ``x`` above-threshold heads in total, each layer choosing off or on with ``e`` extras. Head
    counts are small (``units <= a few dozen``), so the table is tiny. The states are then reduced to the
    Pareto frontier of (latency, importance).
    """
    extras = hs.extras
    per_layer = extras.shape[1]
    width = layers * per_layer + 1
    prefix = torch.cat([extras.new_zeros(layers, 1), torch.cumsum(extras, dim=1)], dim=1)
    value = torch.full((layers + 1, width), -math.inf, dtype=torch.float64)
    value[0, 0] = 0.0
    choices = []
    for layer in range(layers):
        options = torch.full((per_layer + 2, layers + 1, width), -math.inf, dtype=torch.float64)
        options[0] = value  # layer off
        for e in range(per_layer + 1):  # layer on with e extras
            options[e + 1, 1:, e:] = value[:-1, : width - e] + hs.base[layer] + prefix[layer, e]
        value, choice = options.max(dim=0)  # first maximum: off wins ties
        choices.append(choice)
    a = torch.arange(layers + 1, dtype=torch.float64).unsqueeze(1)
    x = torch.arange(width, dtype=torch.float64).unsqueeze(0)
    cost = (a * hs.on_cost + x * hs.fit.slope).reshape(-1)
    flat = value.reshape(-1)
    finite = torch.nonzero(torch.isfinite(flat)).squeeze(1)
    order = finite[torch.argsort(cost[finite], stable=True)]
    # Keep a state only if it beats every cheaper one: the others can never win, since more MLP budget
    # never lowers the MLP importance.
    running = torch.cummax(flat[order], dim=0).values
    better = torch.ones_like(running, dtype=torch.bool)
    better[1:] = flat[order][1:] > running[:-1]
    idx = order[better]
    return cost[idx], flat[idx], idx // width, idx % width, torch.stack(choices)


def search_latency(
    config: PretrainedConfig,
    head_grads: torch.Tensor,
    neuron_grads: torch.Tensor,
    latency_constraint: float,
    mha_lut: Sequence[float] | Mapping[int, float] | torch.Tensor,
    ffn_lut: Sequence[float] | Mapping[int, float] | torch.Tensor,
    *,
    exact_max_layers: int = 10,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fisher mask search under a latency budget (Kwon et al., NeurIPS 2022, §4.1, latency variant).

    Latency per sub-block follows the published piecewise-linear fit of the LUTs, so a kept layer keeps
    its ``threshold`` best units for free and every further unit costs the slope. The search is:

    1. **Attention, exact:** a knapsack DP over layers gives, for every number of kept attention layers
       and of above-threshold heads, the best head importance; only its Pareto frontier is kept.
    2. **MLP for a fixed set of kept MLP layers, exact:** the above-threshold neurons of those layers cost
       the same, so for each frontier point the best neurons are a prefix of their global ranking (prefix
       sums, vectorized over the frontier).
    3. **Set of kept MLP layers:** all ``2**layers`` sets when ``layers <= exact_max_layers`` (then the
       result is optimal under the fitted model); otherwise a local search (add, drop or swap one layer,
       best improvement, until none helps) started from the best of: every nested set the published
       search tries, nested sets by total layer importance, and the MLP layers kept by the published
       search's own result.

    Why never worse than the published search (whenever its mask fits the budget): for every MLP layer
    set it considers, steps 1-2 are the exact optimum over *all* attention choices under the true
    remaining budget, whereas the published search evaluates a subset of those choices (nested attention
    sets, at least one extra head) under a budget its cumulative subtraction only shrinks; all of its
    sets (and the MLP layers its result keeps) are evaluated here and the local search only improves.

    Args:
        config: transformers config (MHA or GQA; for GQA the units are KV groups).
        head_grads: ``[samples, num_hidden_layers, units]``, ``units`` = ``num_attention_heads`` (MHA) or
            ``num_key_value_heads`` (GQA, see :func:`kv_group_grads`).
        neuron_grads: ``[samples, num_hidden_layers, intermediate_size]``.
        latency_constraint: Fraction in (0, 1) of the measured dense latency of these sub-blocks,
            ``num_hidden_layers * (mha_lut[units] + ffn_lut[intermediate_size])``.
        mha_lut: ``mha_lut[k]`` = latency of one attention sub-block keeping ``k`` units, ``k = 0..units``
            (index 0 = attention removed); or a sparse dict ``{count: latency}`` interpolated linearly.
        ffn_lut: ``ffn_lut[k]`` = latency of one MLP keeping ``k`` neurons, ``k = 0..intermediate_size``;
            or a sparse dict.
        exact_max_layers: Enumerate every MLP layer set up to this many layers (``2**layers`` exact
            evaluations, each a sort of the kept layers' extras).

    Returns:
        ``(head_mask [layers, units], neuron_mask [layers, intermediate_size])`` float 0/1 tensors whose
        latency under the fitted model (:func:`estimate_latency`) is at most the budget.

    Raises:
        ValueError: For a constraint outside (0, 1), gradients whose shape does not match the config, a
            LUT whose length does not match the units (a LUT from another model shape), or a budget below
            the luts' 0-unit latencies.
    """
    if isinstance(exact_max_layers, bool) or not isinstance(exact_max_layers, int) or exact_max_layers < 0:
        raise ValueError(f"exact_max_layers must be a non-negative integer, got {exact_max_layers!r}.")
    p = _latency_problem(config, head_grads, neuron_grads, latency_constraint, mha_lut, ffn_lut)
    L, hs, ns = p.layers, p.heads, p.neurons
    f_cost, f_value, f_layers, f_extras, choices = _head_frontier(hs, L)
    extras_n = ns.extras
    layer_ids = torch.arange(L).unsqueeze(1).expand_as(extras_n)
    cache: dict[int, tuple[float, int, int]] = {}

    def evaluate(bits: int) -> float:
        if bits not in cache:
            on = torch.tensor([(bits >> layer) & 1 for layer in range(L)], dtype=torch.bool)
            vals = torch.sort(extras_n[on].reshape(-1), descending=True).values
            prefix = torch.cat([vals.new_zeros(1), torch.cumsum(vals, 0)])
            room = p.room - int(on.sum()) * ns.on_cost - f_cost
            count = _units_for(room, ns.fit.slope, vals.numel())
            total = f_value + float(ns.base[on].sum()) + prefix[count]
            total = torch.where(room >= 0, total, torch.full_like(total, -math.inf))
            i = int(torch.argmax(total))
            cache[bits] = (float(total[i]), i, int(count[i]))
        return cache[bits][0]

    def nested(order: list[int]) -> list[int]:
        sets, bits = [], (1 << L) - 1
        sets.append(bits)
        for layer in order:
            bits &= ~(1 << layer)
            sets.append(bits)
        return sets

    if exact_max_layers >= L:
        best = max(range(1 << L), key=lambda b: (evaluate(b), -b))
    else:
        seeds = nested(torch.argsort(ns.base, stable=True).tolist())
        seeds += nested(torch.argsort(ns.values.sum(dim=1), stable=True).tolist())
        _, published_n = _published_core(p, faithful=True)
        seeds.append(sum(1 << layer for layer in range(L) if bool(published_n[layer].any())))
        best = max(seeds, key=evaluate)
        improved = True
        while improved:
            improved = False
            neighbours = [best ^ (1 << i) for i in range(L)]
            on_layers = [i for i in range(L) if (best >> i) & 1]
            off_layers = [i for i in range(L) if not (best >> i) & 1]
            neighbours += [best ^ (1 << i) ^ (1 << j) for i in on_layers for j in off_layers]
            candidate = max(neighbours, key=evaluate)
            if evaluate(candidate) > evaluate(best) + 1e-12 * abs(evaluate(best)):
                best, improved = candidate, True

    value, point, num_neurons = cache[best]
    if not math.isfinite(value):  # unreachable: room >= 0 makes "everything removed" feasible
        raise RuntimeError("latency search found no feasible mask")
    # Attention: walk the DP choices back from the chosen frontier point.
    a, x = int(f_layers[point]), int(f_extras[point])
    on_h = torch.zeros(L, dtype=torch.bool)
    extra_h = torch.zeros(L, dtype=torch.int64)
    for layer in reversed(range(L)):
        c = int(choices[layer, a, x])
        if c > 0:
            on_h[layer], extra_h[layer] = True, c - 1
            a, x = a - 1, x - (c - 1)
    # MLP: the chosen prefix of the kept layers' merged ranking (stable sort keeps per-layer prefixes).
    on_n = torch.tensor([(best >> layer) & 1 for layer in range(L)], dtype=torch.bool)
    vals, ids = extras_n[on_n].reshape(-1), layer_ids[on_n].reshape(-1)
    order = torch.argsort(vals, descending=True, stable=True)
    extra_n = torch.bincount(ids[order[:num_neurons]], minlength=L)
    return hs.mask(on_h, extra_h, p.device), ns.mask(on_n, extra_n, p.device)

"""Unit scores for width pruning: aggregate per-weight scores over MLP neurons and attention heads.

Pure tensor functions (no model access). Every weight attached to a unit counts, as in LLM-Pruner's
coupled structures (Ma et al., "LLM-Pruner: On the Structural Pruning of Large Language Models",
NeurIPS 2023): removing MLP neuron ``k`` removes row ``k`` of every input projection (gate and up,
``fc1``, ``c_fc``, BERT's ``intermediate``) and column ``k`` of the output projection (down, ``fc2``,
``c_proj``, BERT's ``output``); removing query head ``h`` removes ``head_dim`` rows of ``q`` and the
same columns of ``o``, and removing a key/value head removes ``head_dim`` rows of ``k`` and ``v``.

All per-weight score matrices are in ``[out, in]`` orientation (transpose Conv1D weights first) and
are first gathered into a *terms* matrix ``[units, hidden]``: entry ``[u, j]`` sums the scores of
unit ``u``'s weights that touch hidden feature ``j`` (its input column in ``q/k/v/gate/up``, its output
row in ``o/down``). A terms matrix is then reduced to one score per unit:

* ``"sum"``: sum over the hidden features, for non-negative per-weight scores (``|W|^p`` for
  magnitude, ``|W|·‖X‖`` for Wanda); the unit's score is the total score of its weights.
* ``"taylor"``: trimmed mean over the hidden features, then the absolute value, for *signed*
  first-order terms ``W·∂L/∂W``. This is the group Taylor score of Molchanov et al. ("Importance
  Estimation for Neural Network Pruning", CVPR 2019) as the AFR / structured-SNIP reference code
  computes it per neuron (:func:`hf_prune.scoring.snip.neuron_taylor_scores`: 2 % trimmed at each end),
  applied unchanged to heads.

Grouped-query attention: query head ``h`` belongs to KV group ``h // (num_heads // num_kv_heads)``
(transformers' ``repeat_kv`` layout). A query head's score carries an equal share of its KV head's
``k``/``v`` terms (``1 / group_size`` each), so the scores of a group's query heads add up to the
group's score, and a KV group's score is the sum over its query heads plus the whole KV head.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = [
    "REDUCTIONS",
    "group_size",
    "head_scores",
    "head_terms",
    "kv_group_of",
    "kv_group_terms",
    "kv_groups",
    "neuron_scores",
    "neuron_terms",
    "reduce_terms",
    "split_fused_qkv",
]

#: How a ``[units, hidden]`` terms matrix becomes one score per unit.
REDUCTIONS = ("sum", "taylor")


def _as_2d(name: str, t: torch.Tensor) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}.")
    if t.dim() != 2:
        raise ValueError(f"{name} must be a 2-D [out, in] score matrix, got shape {tuple(t.shape)}.")
    return t.detach().float()


def group_size(num_heads: int, num_kv_heads: int) -> int:
    """Return the query heads per KV head.

    Args:
        num_heads: Query heads.
        num_kv_heads: Key/value heads.

    Raises:
        ValueError: If the counts are not positive or ``num_kv_heads`` does not divide ``num_heads``.
    """
    if num_heads < 1 or num_kv_heads < 1 or num_heads % num_kv_heads:
        raise ValueError(
            f"num_kv_heads={num_kv_heads} must be >= 1 and divide num_heads={num_heads} (grouped-query "
            "attention shares one key/value head among an equal number of query heads)."
        )
    return num_heads // num_kv_heads


def kv_group_of(head: int, num_heads: int, num_kv_heads: int) -> int:
    """Return the KV group (key/value head index) that query head ``head`` reads.

    Args:
        head: Query head index.
        num_heads: Query heads.
        num_kv_heads: Key/value heads.
    """
    if not 0 <= head < num_heads:
        raise ValueError(f"head must be in [0, {num_heads}), got {head}.")
    return head // group_size(num_heads, num_kv_heads)


def kv_groups(num_heads: int, num_kv_heads: int) -> list[list[int]]:
    """Return the query heads of every KV group, in order (``[[0, 1], [2, 3]]`` for 4 over 2).

    Args:
        num_heads: Query heads.
        num_kv_heads: Key/value heads.
    """
    g = group_size(num_heads, num_kv_heads)
    return [list(range(kv * g, (kv + 1) * g)) for kv in range(num_kv_heads)]


def split_fused_qkv(qkv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Split a fused ``[3 * E, hidden]`` q/k/v score matrix (GPT-2's ``c_attn``, laid out ``[q | k | v]``).

    Args:
        qkv: Scores of the fused projection in ``[out, in]`` orientation.

    Returns:
        ``(q, k, v)``, each ``[E, hidden]``.
    """
    t = _as_2d("qkv", qkv)
    if t.shape[0] % 3:
        raise ValueError(f"A fused q/k/v matrix has 3 * E output rows; got {t.shape[0]}.")
    q, k, v = t.chunk(3, dim=0)
    return q, k, v


def neuron_terms(in_scores: Sequence[torch.Tensor], out_score: torch.Tensor) -> torch.Tensor:
    """Gather MLP neuron terms: rows of the input projections plus columns of the output projection.

    Args:
        in_scores: Per-weight scores of the projections whose *outputs* are the neurons, each
            ``[intermediate, hidden]`` (gate and up; or ``fc1``).
        out_score: Per-weight scores of the projection whose *inputs* are the neurons,
            ``[hidden, intermediate]`` (down; or ``fc2``).

    Returns:
        ``[intermediate, hidden]`` fp32 terms: ``sum_in in[k, j] + out[j, k]``.

    Raises:
        ValueError: If ``in_scores`` is empty or the shapes do not fit together.
    """
    out = _as_2d("out_score", out_score)
    if isinstance(in_scores, torch.Tensor) or len(in_scores) == 0:
        raise ValueError("in_scores must be a non-empty sequence of [intermediate, hidden] matrices.")
    total = out.t().clone()
    for i, s in enumerate(in_scores):
        t = _as_2d(f"in_scores[{i}]", s)
        if t.shape != total.shape:
            raise ValueError(
                f"in_scores[{i}] has shape {tuple(t.shape)}; expected [intermediate, hidden] = "
                f"{tuple(total.shape)} to match out_score {tuple(out.shape)}."
            )
        total += t.to(total.device)
    return total


def _per_head_rows(t: torch.Tensor, heads: int, head_dim: int, name: str) -> torch.Tensor:
    """Sum ``[heads * head_dim, hidden]`` rows per head -> ``[heads, hidden]``."""
    if t.shape[0] != heads * head_dim:
        raise ValueError(
            f"{name} has {t.shape[0]} output rows; expected heads * head_dim = {heads} * {head_dim}."
        )
    return t.reshape(heads, head_dim, t.shape[1]).sum(dim=1)


def _check_heads(num_heads: int, num_kv_heads: int, head_dim: int) -> int:
    if head_dim < 1:
        raise ValueError(f"head_dim must be >= 1, got {head_dim}.")
    return group_size(num_heads, num_kv_heads)


def _qkvo_terms(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    o: torch.Tensor,
    num_heads: int,
    num_kv_heads: int,
    hd: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``(query-head terms from q and o, KV-head terms from k and v)``, each ``[*, hidden]``."""
    qt = _per_head_rows(_as_2d("q", q), num_heads, hd, "q")
    ot = _per_head_rows(_as_2d("o", o).t(), num_heads, hd, "o (transposed)")
    kt = _per_head_rows(_as_2d("k", k), num_kv_heads, hd, "k")
    vt = _per_head_rows(_as_2d("v", v), num_kv_heads, hd, "v")
    if not qt.shape[1] == ot.shape[1] == kt.shape[1] == vt.shape[1]:
        raise ValueError(
            "q/k/v inputs and o outputs must all be the hidden size; got "
            f"{qt.shape[1]}, {kt.shape[1]}, {vt.shape[1]} and {ot.shape[1]}."
        )
    return qt + ot.to(qt.device), kt + vt.to(kt.device)


def head_terms(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    o: torch.Tensor,
    num_heads: int,
    num_kv_heads: int,
    head_dim: int,
) -> torch.Tensor:
    """Gather query-head terms: the head's ``q`` rows and ``o`` columns plus its share of ``k``/``v``.

    Args:
        q: ``[num_heads * head_dim, hidden]`` per-weight scores of the query projection.
        k: ``[num_kv_heads * head_dim, hidden]`` scores of the key projection.
        v: ``[num_kv_heads * head_dim, hidden]`` scores of the value projection.
        o: ``[hidden, num_heads * head_dim]`` scores of the output projection.
        num_heads: Query heads.
        num_kv_heads: Key/value heads (``num_heads`` without GQA).
        head_dim: Size of one head.

    Returns:
        ``[num_heads, hidden]`` fp32 terms.
    """
    g = _check_heads(num_heads, num_kv_heads, head_dim)
    query, kv = _qkvo_terms(q, k, v, o, num_heads, num_kv_heads, head_dim)
    # An equal share of the shared KV head per query head: the group's heads then sum to its score.
    return query + kv.repeat_interleave(g, dim=0).to(query.device) / g


def kv_group_terms(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    o: torch.Tensor,
    num_heads: int,
    num_kv_heads: int,
    head_dim: int,
) -> torch.Tensor:
    """Gather KV-group terms: every query head of the group (``q`` rows, ``o`` columns) plus its ``k``/``v``.

    Args:
        q: ``[num_heads * head_dim, hidden]`` per-weight scores of the query projection.
        k: ``[num_kv_heads * head_dim, hidden]`` scores of the key projection.
        v: ``[num_kv_heads * head_dim, hidden]`` scores of the value projection.
        o: ``[hidden, num_heads * head_dim]`` scores of the output projection.
        num_heads: Query heads.
        num_kv_heads: Key/value heads.
        head_dim: Size of one head.

    Returns:
        ``[num_kv_heads, hidden]`` fp32 terms.
    """
    g = _check_heads(num_heads, num_kv_heads, head_dim)
    query, kv = _qkvo_terms(q, k, v, o, num_heads, num_kv_heads, head_dim)
    return query.reshape(num_kv_heads, g, -1).sum(dim=1) + kv.to(query.device)


def reduce_terms(terms: torch.Tensor, reduce: str = "sum", *, trim: float = 0.02) -> torch.Tensor:
    """Reduce a ``[units, hidden]`` terms matrix to one score per unit.

    Args:
        terms: Output of :func:`neuron_terms`, :func:`head_terms` or :func:`kv_group_terms`.
        reduce: ``"sum"`` (total over the hidden features) or ``"taylor"`` (trimmed mean over the
            hidden features, then absolute value; for signed first-order terms).
        trim: For ``"taylor"``: fraction of the hidden features dropped at *each* end, in ``[0, 0.5)``.

    Returns:
        fp32 ``[units]`` scores; higher means keep.
    """
    if reduce not in REDUCTIONS:
        raise ValueError(f"reduce must be one of {REDUCTIONS}, got {reduce!r}.")
    t = _as_2d("terms", terms)
    if reduce == "sum":
        return t.sum(dim=1)
    if not 0.0 <= float(trim) < 0.5:
        raise ValueError(f"trim must be in [0, 0.5), got {trim!r}.")
    hidden = t.shape[1]
    cut = int(hidden * float(trim))
    if cut > 0:
        t = torch.sort(t, dim=1).values[:, cut : hidden - cut]
    return t.mean(dim=1).abs()


def neuron_scores(
    in_scores: Sequence[torch.Tensor], out_score: torch.Tensor, reduce: str = "sum", *, trim: float = 0.02
) -> torch.Tensor:
    """Score every MLP neuron from the per-weight scores of its input rows and output column.

    With ``reduce="taylor"`` and signed ``W·∂L/∂W`` matrices this equals
    :func:`hf_prune.scoring.snip.neuron_taylor_scores`.

    Args:
        in_scores: ``[intermediate, hidden]`` scores of gate and up (or ``fc1``).
        out_score: ``[hidden, intermediate]`` scores of down (or ``fc2``).
        reduce: ``"sum"`` or ``"taylor"`` (see :func:`reduce_terms`).
        trim: Trim fraction for ``"taylor"``.

    Returns:
        fp32 ``[intermediate]`` scores.
    """
    return reduce_terms(neuron_terms(in_scores, out_score), reduce, trim=trim)


def head_scores(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    o: torch.Tensor,
    num_heads: int,
    num_kv_heads: int,
    head_dim: int,
    *,
    granularity: str = "query",
    reduce: str = "sum",
    trim: float = 0.02,
) -> torch.Tensor:
    """Score every query head (``granularity="query"``) or every KV group (``"kv_group"``).

    Args:
        q: ``[num_heads * head_dim, hidden]`` per-weight scores of the query projection.
        k: ``[num_kv_heads * head_dim, hidden]`` scores of the key projection.
        v: ``[num_kv_heads * head_dim, hidden]`` scores of the value projection.
        o: ``[hidden, num_heads * head_dim]`` scores of the output projection.
        num_heads: Query heads.
        num_kv_heads: Key/value heads.
        head_dim: Size of one head.
        granularity: ``"query"`` -> ``[num_heads]`` scores; ``"kv_group"`` -> ``[num_kv_heads]``.
        reduce: ``"sum"`` or ``"taylor"`` (see :func:`reduce_terms`).
        trim: Trim fraction for ``"taylor"``.

    Returns:
        fp32 scores; higher means keep.
    """
    if granularity == "query":
        terms = head_terms(q, k, v, o, num_heads, num_kv_heads, head_dim)
    elif granularity == "kv_group":
        terms = kv_group_terms(q, k, v, o, num_heads, num_kv_heads, head_dim)
    else:
        raise ValueError(f"granularity must be 'query' or 'kv_group', got {granularity!r}.")
    return reduce_terms(terms, reduce, trim=trim)

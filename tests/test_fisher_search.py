"""Fisher mask search (Kwon et al., NeurIPS 2022): exactness, published-baseline dominance, cost models."""

import itertools
import math

import pytest
import torch
from transformers import BertConfig, LlamaConfig

from hf_prune.selection.fisher_mask_search import (
    compute_mask_mac,
    dense_mac,
    estimate_latency,
    expand_kv_group_mask,
    fit_piecewise_linear,
    kv_group_grads,
    mac_per_head,
    mac_per_kv_group,
    mac_per_neuron,
    mask_objective,
    published_greedy_latency,
    published_greedy_mac,
    search_latency,
    search_mac,
)

SEQ = 128
REL = 1e-9  # float64 sums of the same terms in a different order


def bert(layers, heads, intermediate, hidden):
    return BertConfig(
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=intermediate,
        hidden_size=hidden,
    )


MINILM = bert(6, 12, 1536, 384)
BERT_BASE = bert(12, 12, 3072, 768)


def fisher_grads(config, seed, samples=4, units=None):
    """Seeded gradients with per-layer and per-unit scale differences, like real mask gradients."""
    g = torch.Generator().manual_seed(seed)
    layers, inter = config.num_hidden_layers, config.intermediate_size
    units = units or config.num_attention_heads
    head_scale = torch.rand(layers, 1, generator=g) * torch.rand(layers, units, generator=g) * 4
    neuron_scale = torch.rand(layers, 1, generator=g) * torch.rand(layers, inter, generator=g) * 0.2
    head = torch.randn(samples, layers, units, generator=g) * head_scale
    neuron = torch.randn(samples, layers, inter, generator=g) * neuron_scale
    return head, neuron


def luts(units, intermediate, seed, head_flat=4, neuron_flat=None):
    """Measured-looking LUTs: flat up to a threshold, then linear, with seeded noise; index 0 = removed."""
    g = torch.Generator().manual_seed(seed)
    neuron_flat = neuron_flat or max(1, intermediate // 8)
    k = torch.arange(units + 1, dtype=torch.float64)
    mha = (
        1.0
        + 0.15 * (k - head_flat).clamp(min=0)
        + 0.01 * torch.rand(units + 1, generator=g, dtype=torch.float64)
    )
    k = torch.arange(intermediate + 1, dtype=torch.float64)
    ffn = 1.5 + (1.5 / intermediate) * (k - neuron_flat).clamp(min=0)
    ffn = ffn + 0.01 * torch.rand(intermediate + 1, generator=g, dtype=torch.float64)
    mha[0] = ffn[0] = 0.0
    return mha.tolist(), ffn.tolist()


def assert_binary(mask, shape):
    assert tuple(mask.shape) == shape and mask.dtype == torch.float32
    assert bool(((mask == 0) | (mask == 1)).all())


def dense_latency(config, mha, ffn, units=None):
    units = units or config.num_attention_heads
    ones_h = torch.ones(config.num_hidden_layers, units)
    ones_n = torch.ones(config.num_hidden_layers, config.intermediate_size)
    return estimate_latency(ones_h, ones_n, mha, ffn, fitted=False)


# ---------------------------------------------------------------------------------------------- 1. MAC


@pytest.mark.parametrize("config", [MINILM, BERT_BASE], ids=["minilm", "bert-base"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_mac_search_never_below_published_and_within_budget(config, seed):
    head, neuron = fisher_grads(config, seed)
    dense = dense_mac(config, SEQ)
    for constraint in (0.4, 0.5, 0.6):
        hm, nm = search_mac(config, head, neuron, SEQ, constraint)
        ph, pn = published_greedy_mac(config, head, neuron, SEQ, constraint)
        assert_binary(hm, (config.num_hidden_layers, config.num_attention_heads))
        assert_binary(nm, (config.num_hidden_layers, config.intermediate_size))
        budget = constraint * dense
        assert compute_mask_mac(hm, nm, SEQ, config) <= budget
        # At these constraints all heads fit, so the published search stays within budget too and the
        # comparison is under the same budget.
        assert compute_mask_mac(ph, pn, SEQ, config) <= budget
        ours, published = mask_objective(head, neuron, hm, nm), mask_objective(head, neuron, ph, pn)
        assert ours >= published * (1 - REL), (constraint, ours, published)
        # Not a trivial answer: the budget is nearly used up (less than one neuron left over).
        assert budget - compute_mask_mac(hm, nm, SEQ, config) < mac_per_neuron(config, SEQ)


def test_mac_search_may_keep_zero_heads_where_published_cannot():
    config = MINILM
    head, neuron = fisher_grads(config, 3)
    head = head * 1e-6  # heads worth almost nothing: the optimum spends the whole budget on neurons
    hm, nm = search_mac(config, head, neuron, SEQ, 0.3)
    ph, pn = published_greedy_mac(config, head, neuron, SEQ, 0.3)
    assert hm.sum() == 0 and ph.sum() >= 1
    assert mask_objective(head, neuron, hm, nm) > mask_objective(head, neuron, ph, pn)


def test_published_mac_can_exceed_budget_ours_cannot():
    config = MINILM
    head, neuron = fisher_grads(config, 4)
    head = head * 1e3  # heads dominate; at 20% the heads alone (37% of MACs) do not fit
    budget = 0.2 * dense_mac(config, SEQ)
    ph, pn = published_greedy_mac(config, head, neuron, SEQ, 0.2)
    hm, nm = search_mac(config, head, neuron, SEQ, 0.2)
    assert compute_mask_mac(ph, pn, SEQ, config) > budget  # the published quirk, reproduced
    assert compute_mask_mac(hm, nm, SEQ, config) <= budget


# ------------------------------------------------------------------------------------ 2. brute force

TINY = bert(2, 2, 3, 8)


def all_masks(layers, heads, neurons):
    bits = torch.tensor(list(itertools.product([0.0, 1.0], repeat=layers * (heads + neurons))))
    return bits[:, : layers * heads].reshape(-1, layers, heads), bits[:, layers * heads :].reshape(
        -1, layers, neurons
    )


def fitted_cost(lut, counts):
    threshold, slope, intercept = fit_piecewise_linear(lut)
    model = intercept + slope * (counts - threshold).clamp(min=0)
    return torch.where(counts == 0, torch.full_like(model, lut[0]), model).sum(dim=1)


@pytest.mark.parametrize("seed", range(4))
def test_mac_search_equals_exhaustive_tiny(seed):
    head, neuron = fisher_grads(TINY, seed, samples=3)
    heads, neurons = all_masks(2, 2, 3)
    fh, fn = head.double().pow(2).sum(0), neuron.double().pow(2).sum(0)
    value = (heads * fh).sum((1, 2)) + (neurons * fn).sum((1, 2))
    # MAC by hand from the paper's formulas (BERT: head_dim = 8 / 2 = 4, non-gated MLP).
    s, d, hd = SEQ, 8, 4
    cost = heads.sum((1, 2)) * (4 * s * d * hd + 2 * s * s * hd) + neurons.sum((1, 2)) * 2 * s * d
    dense = 2 * (2 * (4 * s * d * hd + 2 * s * s * hd) + 3 * 2 * s * d)
    assert dense_mac(TINY, SEQ) == dense
    for constraint in (0.1, 0.25, 0.4, 0.5, 0.6, 0.8, 0.95):
        best = float(value[cost <= constraint * dense].max())
        hm, nm = search_mac(TINY, head, neuron, SEQ, constraint)
        assert compute_mask_mac(hm, nm, SEQ, TINY) <= constraint * dense
        assert mask_objective(head, neuron, hm, nm) == pytest.approx(best, rel=REL, abs=1e-12)


TINY_LUTS = [
    ([0.0, 1.0, 1.6], [0.0, 0.8, 0.8, 1.3]),
    ([0.0, 1.0, 1.0], [0.0, 0.5, 0.9, 1.4]),
    ([0.1, 0.7, 1.5], [0.05, 1.0, 1.1, 1.2]),  # non-zero "removed" latencies are charged too
]


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("lut_index", range(len(TINY_LUTS)))
def test_latency_search_equals_exhaustive_tiny(seed, lut_index):
    mha, ffn = TINY_LUTS[lut_index]
    head, neuron = fisher_grads(TINY, seed, samples=3)
    heads, neurons = all_masks(2, 2, 3)
    fh, fn = head.double().pow(2).sum(0), neuron.double().pow(2).sum(0)
    value = (heads * fh).sum((1, 2)) + (neurons * fn).sum((1, 2))
    latency = fitted_cost(mha, heads.sum(2)) + fitted_cost(ffn, neurons.sum(2))
    dense = 2 * (mha[-1] + ffn[-1])
    for constraint in (0.2, 0.35, 0.5, 0.65, 0.8, 0.95):
        budget = constraint * dense
        feasible = latency <= budget * (1 + 1e-12)
        if not bool(feasible.any()):
            continue
        best = float(value[feasible].max())
        hm, nm = search_latency(TINY, head, neuron, constraint, mha, ffn)
        assert estimate_latency(hm, nm, mha, ffn) <= budget * (1 + REL)
        assert mask_objective(head, neuron, hm, nm) == pytest.approx(best, rel=REL, abs=1e-12)
        ph, pn = published_greedy_latency(TINY, head, neuron, constraint, mha, ffn)
        if estimate_latency(ph, pn, mha, ffn) <= budget * (1 + REL):
            assert mask_objective(head, neuron, ph, pn) <= best * (1 + REL)


# ------------------------------------------------------------------------------------------ latency


@pytest.mark.parametrize(
    ("config", "seeds"), [(MINILM, (0, 1)), (BERT_BASE, (0,))], ids=["minilm-exact", "bert-base-local"]
)
def test_latency_search_never_below_published(config, seeds):
    for seed in seeds:
        head, neuron = fisher_grads(config, seed)
        mha, ffn = luts(config.num_attention_heads, config.intermediate_size, seed)
        dense = dense_latency(config, mha, ffn)
        for constraint in (0.4, 0.5, 0.6):
            budget = constraint * dense
            hm, nm = search_latency(config, head, neuron, constraint, mha, ffn)
            assert_binary(hm, (config.num_hidden_layers, config.num_attention_heads))
            assert estimate_latency(hm, nm, mha, ffn) <= budget * (1 + REL)
            ours = mask_objective(head, neuron, hm, nm)
            # The fixed variant costs (layers+1)**2 layer-set pairs; once per case on the big shape.
            for faithful in (True, False) if config is MINILM or constraint == 0.5 else (True,):
                ph, pn = published_greedy_latency(
                    config, head, neuron, constraint, mha, ffn, faithful=faithful
                )
                assert estimate_latency(ph, pn, mha, ffn) <= budget * (1 + REL)
                assert ours >= mask_objective(head, neuron, ph, pn) * (1 - REL), (seed, constraint, faithful)


def test_latency_search_beats_published_when_base_order_misleads():
    # Layers 0-1: many equally useful neurons; layers 2-3: a slightly better flat part (base), useless rest.
    # The published search drops MLP layers in order of base importance (0 and 1 first), but with room
    # for two MLP layers plus extras the best pair is {0, 1}, which is not one of its nested sets.
    config = bert(4, 2, 32, 8)
    importance = torch.ones(4, 32)
    importance[2:, :8], importance[2:, 8:] = 1.2, 0.01
    neuron, head = importance.sqrt().unsqueeze(0), torch.ones(1, 4, 2)
    mha, ffn = [0.0, 0.1, 0.1], [0.0] + [1.0] * 8 + [1.0 + 0.05 * j for j in range(1, 25)]
    assert fit_piecewise_linear(ffn) == (8, pytest.approx(0.05), pytest.approx(1.0))
    for exact_max_layers in (10, 0):  # enumeration and the local search both find it
        hm, nm = search_latency(config, head, neuron, 0.5, mha, ffn, exact_max_layers=exact_max_layers)
        assert (nm != 0).sum(1).tolist() == [32, 32, 0, 0]
        assert mask_objective(head, neuron, hm, nm) == pytest.approx(64 + 4)  # 64 neurons, 2 attention layers
    fixed = mask_objective(
        head, neuron, *published_greedy_latency(config, head, neuron, 0.5, mha, ffn, faithful=False)
    )
    faithful = mask_objective(head, neuron, *published_greedy_latency(config, head, neuron, 0.5, mha, ffn))
    assert fixed == pytest.approx(59.2, rel=1e-6) and faithful == pytest.approx(47.2, rel=1e-6)


def test_latency_local_search_matches_enumeration_when_forced():
    # 8 layers: the default enumerates all 256 MLP layer sets; exact_max_layers=0 forces the local search.
    config = bert(8, 4, 64, 32)
    for seed in range(3):
        head, neuron = fisher_grads(config, seed)
        mha, ffn = luts(4, 64, seed, head_flat=1, neuron_flat=16)
        for constraint in (0.3, 0.5):
            exact = mask_objective(head, neuron, *search_latency(config, head, neuron, constraint, mha, ffn))
            local = search_latency(config, head, neuron, constraint, mha, ffn, exact_max_layers=0)
            published = mask_objective(
                head, neuron, *published_greedy_latency(config, head, neuron, constraint, mha, ffn)
            )
            assert published * (1 - REL) <= mask_objective(head, neuron, *local) <= exact * (1 + REL)


# ---------------------------------------------------------------------------------------------- 3. GQA

GQA = LlamaConfig(
    hidden_size=64,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=16,
    intermediate_size=96,
    num_hidden_layers=2,
)


def test_gqa_mac_accounting_by_hand():
    s = 8
    # q/o of one query head: 2*s*d*hd = 2*8*64*16; its scores + weighted sum: 2*s*s*hd = 2*8*8*16.
    query, attn, kv = 16384, 2048, 16384
    assert mac_per_kv_group(GQA, s) == 2 * (query + attn) + kv == 53248
    assert mac_per_neuron(GQA, s) == 3 * s * 64 == 1536  # Llama's MLP is gated: gate, up and down
    assert mac_per_neuron(GQA, s, gated_mlp=False) == 1024
    assert mac_per_head(GQA, s) == 4 * 8 * 64 * 16 + 2 * 8 * 8 * 16  # the paper's MHA-equivalent head
    assert dense_mac(GQA, s) == 2 * (2 * 53248 + 96 * 1536) == 507904
    # Per query head: layer 0 keeps one head of group 0 -> its q/o + scores and group 0's k/v.
    heads = torch.tensor([[1.0, 0, 0, 0], [0, 0, 0, 0]])
    neurons = torch.zeros(2, 96)
    neurons[1, :10] = 1
    assert compute_mask_mac(heads, neurons, s, GQA) == 16384 + 2048 + 16384 + 10 * 1536 == 50176
    groups = torch.tensor([[1.0, 0], [0, 1]])
    assert compute_mask_mac(groups, neurons, s, GQA) == 2 * 53248 + 10 * 1536
    assert compute_mask_mac(expand_kv_group_mask(groups, GQA), neurons, s, GQA) == 2 * 53248 + 10 * 1536
    # MHA Llama: a KV group is one head and both helpers agree.
    mha = LlamaConfig(
        hidden_size=64,
        num_attention_heads=4,
        num_key_value_heads=4,
        intermediate_size=96,
        num_hidden_layers=2,
    )
    assert mac_per_kv_group(mha, s) == mac_per_head(mha, s)
    assert mac_per_neuron(BERT_BASE, s) == 2 * s * 768


def test_gqa_search_uses_kv_group_units_exactly():
    g = torch.Generator().manual_seed(0)
    per_head = torch.randn(5, 2, 4, generator=g)
    grouped = kv_group_grads(per_head, GQA)
    assert torch.allclose(grouped, per_head[..., 0::2] + per_head[..., 1::2])
    neuron = torch.randn(5, 2, 96, generator=g) * 0.3
    s = 8
    dense = dense_mac(GQA, s)
    for constraint in (0.2, 0.45, 0.7):
        hm, nm = search_mac(GQA, grouped, neuron, s, constraint)
        assert_binary(hm, (2, 2))
        assert compute_mask_mac(hm, nm, s, GQA) <= constraint * dense
        # Exact: enumerate every group mask (16) and fill with the best neurons the budget pays for.
        fn = torch.sort(neuron.double().pow(2).sum(0).flatten(), descending=True).values
        fh = grouped.double().pow(2).sum(0).flatten()
        best = 0.0
        for bits in itertools.product([0, 1], repeat=4):
            kept = torch.tensor(bits, dtype=torch.float64)
            room = constraint * dense - int(kept.sum()) * 53248
            if room >= 0:
                best = max(best, float((kept * fh).sum() + fn[: int(room // 1536)].sum()))
        assert mask_objective(grouped, neuron, hm, nm) == pytest.approx(best, rel=REL)
        ph, pn = published_greedy_mac(GQA, grouped, neuron, s, constraint)
        if compute_mask_mac(ph, pn, s, GQA) <= constraint * dense:
            assert mask_objective(grouped, neuron, hm, nm) >= mask_objective(grouped, neuron, ph, pn) * (
                1 - REL
            )
    # Latency over KV groups: a 3-entry LUT (0, 1 or 2 groups kept).
    hm, nm = search_latency(GQA, grouped, neuron, 0.5, [0.0, 1.0, 1.5], {0: 0.0, 1: 1.0, 24: 1.0, 96: 2.0})
    assert_binary(hm, (2, 2))
    assert estimate_latency(hm, nm, [0.0, 1.0, 1.5], {0: 0.0, 1: 1.0, 24: 1.0, 96: 2.0}) <= 0.5 * 2 * (
        1.5 + 2.0
    ) * (1 + REL)


def test_gqa_per_query_head_grads_are_refused_with_the_fix():
    with pytest.raises(ValueError, match=r"kv_group_grads.*") as info:
        search_mac(GQA, torch.randn(3, 2, 4), torch.randn(3, 2, 96), 8, 0.5)
    assert "[samples, 2, 2]" in str(info.value)


# ------------------------------------------------------------------------------ 4. piecewise-linear fit


def synthetic_lut(n, threshold, slope, intercept, noise=0.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    k = torch.arange(n + 1, dtype=torch.float64)
    lut = intercept + slope * (k - threshold).clamp(min=0)
    lut = lut + noise * torch.randn(n + 1, generator=g, dtype=torch.float64)
    lut[0] = 0.0
    return lut.tolist()


def test_fit_recovers_threshold_and_slope():
    t, slope, c = fit_piecewise_linear(synthetic_lut(3072, 700, 0.002, 1.8))
    assert (t, slope, c) == (700, pytest.approx(0.002, rel=1e-9), pytest.approx(1.8, rel=1e-9))
    t, slope, c = fit_piecewise_linear(synthetic_lut(3072, 700, 0.002, 1.8, noise=0.005, seed=1))
    assert (
        abs(t - 700) <= 30 and slope == pytest.approx(0.002, rel=0.05) and c == pytest.approx(1.8, abs=0.01)
    )
    # All flat: every threshold fits exactly; the first one wins (as published) and the model is flat.
    assert fit_piecewise_linear(synthetic_lut(12, 12, 0.0, 0.9)) == (1, 0.0, pytest.approx(0.9))
    # A sparse dict is interpolated (flat below the smallest given count) before fitting.
    sparse = {0: 0.0, 64: 1.8, 700: 1.8, 3072: 1.8 + 0.002 * 2372}
    assert fit_piecewise_linear(sparse) == (700, pytest.approx(0.002, rel=1e-9), pytest.approx(1.8))


def test_latency_result_within_budget_under_fitted_model_with_sparse_luts():
    config = MINILM
    head, neuron = fisher_grads(config, 5)
    mha = synthetic_lut(12, 3, 0.12, 0.9, noise=0.003, seed=2)
    ffn = {0: 0.0, 1: 1.2, 200: 1.2, 400: 1.2, 800: 1.45, 1536: 1.9}
    dense = 6 * (mha[-1] + 1.9)
    for constraint in (0.3, 0.5, 0.7):
        hm, nm = search_latency(config, head, neuron, constraint, mha, ffn)
        fitted = estimate_latency(hm, nm, mha, ffn)
        assert fitted <= constraint * dense * (1 + REL)
        # The fitted cost is what the search spends: nothing worth a unit is left on the table.
        assert constraint * dense - fitted < 1.0


# ------------------------------------------------------------------------------------------- 5. errors


@pytest.mark.parametrize("bad", [0, 0.0, 1, 1.0, 1.5, -0.1, math.nan, True, "0.5"])
def test_constraint_outside_open_unit_interval(bad):
    head, neuron = fisher_grads(TINY, 0)
    with pytest.raises(ValueError, match=r"mac_constraint.*\(0, 1\)"):
        search_mac(TINY, head, neuron, SEQ, bad)
    with pytest.raises(ValueError, match=r"latency_constraint.*\(0, 1\)"):
        search_latency(TINY, head, neuron, bad, *TINY_LUTS[0])


def test_wrong_grad_shapes_name_the_expected_shape():
    head, neuron = fisher_grads(TINY, 0)
    with pytest.raises(ValueError, match=r"head_grads has shape \[4, 2, 3\].*\[samples, 2, 2\]"):
        search_mac(TINY, torch.randn(4, 2, 3), neuron, SEQ, 0.5)
    with pytest.raises(ValueError, match=r"head_grads.*\[samples, 2, 2\]"):
        search_mac(TINY, head[0], neuron, SEQ, 0.5)  # forgot the samples dimension
    with pytest.raises(ValueError, match=r"neuron_grads has shape \[4, 2, 5\].*\[samples, 2, 3\]"):
        search_latency(TINY, head, torch.randn(4, 2, 5), 0.5, *TINY_LUTS[0])
    with pytest.raises(ValueError, match="seq_len"):
        search_mac(TINY, head, neuron, 0, 0.5)


def test_lut_from_another_model_shape():
    head, neuron = fisher_grads(TINY, 0)
    mha, ffn = TINY_LUTS[0]
    with pytest.raises(ValueError, match=r"mha_lut has 13 entries.*2 heads.*3 entries.*another model shape"):
        search_latency(TINY, head, neuron, 0.5, [0.0] + [1.0] * 12, ffn)
    with pytest.raises(ValueError, match=r"ffn_lut has 3 entries.*another model shape.*prepended"):
        search_latency(TINY, head, neuron, 0.5, mha, ffn[1:])  # published format: no 0-unit entry
    with pytest.raises(ValueError, match=r"ffn_lut has largest count 3072.*another model shape"):
        search_latency(TINY, head, neuron, 0.5, mha, {0: 0.0, 1: 1.0, 3072: 2.0})
    with pytest.raises(ValueError, match="non-negative"):
        search_latency(TINY, head, neuron, 0.5, mha, [0.0, 1.0, math.inf, 1.0])
    with pytest.raises(ValueError, match=r"latency_constraint.*0-unit"):
        search_latency(TINY, head, neuron, 0.05, [0.9, 1.0, 1.1], ffn)

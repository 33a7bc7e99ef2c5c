"""Width pruning: unit scores, selection, and every structured method x scope x allocation x family."""

from __future__ import annotations

import itertools
import json
import math

import pytest
import torch
from families import CharTokenizer, logits, make_model

import hf_prune
from hf_prune import (
    CalibrationConfig,
    CustomConfig,
    PruningConfig,
    StructuredAFRConfig,
    StructuredMagnitudeConfig,
    StructuredReferSVDConfig,
    StructuredSNIPConfig,
    StructuredWandaConfig,
    prune,
)
from hf_prune.arch import get_arch, get_layers, get_submodule, head_geometry, linear_in_out, param_count
from hf_prune.scoring.snip import neuron_taylor_scores
from hf_prune.scoring.structured import (
    head_scores,
    kv_group_of,
    kv_groups,
    neuron_scores,
    split_fused_qkv,
)
from hf_prune.selection.structured import (
    UnitLayer,
    global_keep_counts,
    keep_choices,
    select_query_heads,
    select_top,
    standardize,
    uniform_keep,
)

CALIB = CalibrationConfig(
    dataset=[f"calibration text number {i} with some words" * 5 for i in range(20)],
    nsamples=4,
    seqlen=16,
    batch_size=2,
)
CONFIGS = {
    "magnitude": StructuredMagnitudeConfig,
    "wanda": StructuredWandaConfig,
    "snip": StructuredSNIPConfig,
    "refer_svd": StructuredReferSVDConfig,
    "afr": StructuredAFRConfig,
}
MATRIX_FAMILIES = ["llama", "qwen2", "opt", "gpt2", "bert", "llava"]
# Families whose config pins head_dim, so a uniform head count is a plain config.json value.
HEAD_DIM_PINNED = {"llama", "qwen2", "llava"}


def _prune(model, cfg):
    return prune(model, cfg, calibration=CALIB, tokenizer=CharTokenizer(), progress=False)


# ------------------------------------------------------------------------------------ unit scores
def test_neuron_scores_hand_computed():
    in0 = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])  # [intermediate=3, hidden=2]
    in1 = torch.ones(3, 2)
    out = torch.tensor([[1.0, 0.0, 2.0], [0.0, 1.0, 0.0]])  # [hidden=2, intermediate=3]
    # sum: a neuron's two input rows plus its output column.
    assert neuron_scores([in0, in1], out).tolist() == [6.0, 10.0, 15.0]
    # taylor: per hidden feature terms [[3, 3], [4, 6], [8, 7]] -> mean -> abs.
    assert neuron_scores([in0, in1], out, "taylor", trim=0.0).tolist() == [3.0, 5.0, 7.5]
    assert neuron_scores([-in0, -in1], -out, "taylor", trim=0.0).tolist() == [3.0, 5.0, 7.5]
    # With signed W*g terms the taylor reduction is the reference neuron score, trimming included.
    g = torch.Generator().manual_seed(0)
    ws = [torch.randn(6, 50, generator=g) for _ in range(3)]
    gs = [torch.randn(6, 50, generator=g) for _ in range(2)] + [torch.randn(50, 6, generator=g)]
    down = torch.randn(50, 6, generator=g)
    ours = neuron_scores([ws[0] * gs[0], ws[1] * gs[1]], down * gs[2], "taylor")
    ref = neuron_taylor_scores(ws[:2], gs[:2], down, gs[2])
    torch.testing.assert_close(ours, ref)
    with pytest.raises(ValueError, match="intermediate, hidden"):
        neuron_scores([torch.ones(3, 4)], torch.ones(2, 3))


def test_head_scores_hand_computed_gqa():
    # 4 query heads over 2 KV heads, head_dim 1, hidden 2.
    q = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 0.0], [0.0, 4.0]])
    k = torch.tensor([[2.0, 0.0], [0.0, 4.0]])
    v = torch.tensor([[0.0, 2.0], [0.0, 0.0]])
    o = torch.tensor([[1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 10.0]])
    # query head h: q row + o column + (k + v of its KV head) / group size 2.
    assert head_scores(q, k, v, o, 4, 2, 1).tolist() == [4.0, 5.0, 6.0, 17.0]
    # KV group: its query heads' q rows and o columns plus the whole k and v rows = sum of its heads.
    assert head_scores(q, k, v, o, 4, 2, 1, granularity="kv_group").tolist() == [9.0, 23.0]
    # head_dim slicing: two rows per head are summed.
    q2 = torch.arange(8.0).reshape(4, 2)  # 2 heads x head_dim 2, hidden 2
    o2 = torch.zeros(2, 4)
    z = torch.zeros(4, 2)
    assert head_scores(q2, z, z, o2, 2, 2, 2).tolist() == [0 + 1 + 2 + 3, 4 + 5 + 6 + 7]
    with pytest.raises(ValueError, match="divide"):
        head_scores(q, k, v, o, 4, 3, 1)
    with pytest.raises(ValueError, match="granularity"):
        head_scores(q, k, v, o, 4, 2, 1, granularity="heads")


def test_gqa_helpers_and_fused_qkv():
    assert kv_groups(8, 2) == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert [kv_group_of(h, 8, 2) for h in range(8)] == [0, 0, 0, 0, 1, 1, 1, 1]
    assert kv_groups(4, 4) == [[0], [1], [2], [3]]
    fused = torch.arange(18.0).reshape(6, 3)
    q, k, v = split_fused_qkv(fused)
    assert q.tolist() == fused[:2].tolist() and v.tolist() == fused[4:].tolist()
    with pytest.raises(ValueError, match="3 \\* E"):
        split_fused_qkv(torch.ones(4, 2))


# -------------------------------------------------------------------------------------- selection
def test_uniform_keep_rounding_and_floors():
    assert uniform_keep(48, 0.5) == 24
    assert uniform_keep(48, 0.5, round_to=8) == 24
    assert uniform_keep(48, 0.3, round_to=8) == 32  # 33.6 -> nearest multiple of 8
    assert uniform_keep(48, 0.25, round_to=32) == 32  # 36 is nearer 32 than the whole 48
    assert uniform_keep(48, 0.05, round_to=32) == 48  # the layer left whole is a valid width
    assert uniform_keep(10, 0.25) == 8  # 7.5: a tie keeps more
    assert keep_choices(48, 32) == [48, 32, 0]
    assert keep_choices(48, 8, floor=16) == [48, 40, 32, 24, 16]
    assert uniform_keep(48, 0.99, min_keep=0) == 0
    with pytest.raises(ValueError, match="min_keep=1"):
        uniform_keep(48, 0.99)
    with pytest.raises(ValueError, match="min_keep=20"):
        uniform_keep(48, 0.7, min_keep=20, round_to=8)  # keeps 16 < 24 (20 rounded up to 8)


def test_select_top_and_query_heads():
    s = torch.tensor([0.5, 3.0, 1.0, 2.0, 2.0, 0.1])
    assert select_top(s, 3) == [1, 3, 4]
    assert select_top(s, 0) == [] and select_top(s, 6) == list(range(6))
    # Ties drop the lower index first.
    assert select_top(torch.zeros(4), 2) == [2, 3]
    heads = torch.tensor([0.3, 0.1, 0.9, 0.2, 0.5, 0.8, 0.4, 0.6])  # 2 groups of 4
    assert select_query_heads(heads, 2, 2) == [0, 2, 5, 7]
    assert select_query_heads(heads, 4, 1) == [0, 2, 5, 7]
    with pytest.raises(ValueError, match="keep_per_group"):
        select_query_heads(heads, 2, 0)


def _brute_force_counts(layers, k, step):
    """Kept counts minimizing the removed z-score sum with exactly k removed (lowest units per layer)."""
    best, best_cost = None, math.inf
    options = [layer.choices() for layer in layers]
    for counts in itertools.product(*options):
        if sum(layer.width - c for layer, c in zip(layers, counts, strict=True)) != k:
            continue
        cost = 0.0
        for layer, c in zip(layers, counts, strict=True):
            z = standardize(layer.scores)
            if layer.groups > 1:
                g = layer.width // layer.groups
                per = z.reshape(layer.groups, g).sort(dim=1).values
                cost += float(per[:, : g - c // layer.groups].sum())
            else:
                cost += float(z.sort().values[: layer.width - c].sum())
        if cost < best_cost:
            best, best_cost = list(counts), cost
    return best


@pytest.mark.parametrize("seed", range(4))
def test_global_selection_equals_brute_force(seed):
    g = torch.Generator().manual_seed(seed)
    # One unit per step: exactly the k lowest z-scores subject to min_keep, checked over all subsets.
    layers = [UnitLayer(torch.randn(n, generator=g) * (i + 1), min_keep=1) for i, n in enumerate((3, 4, 5))]
    zs = [standardize(layer.scores) for layer in layers]
    flat = [(float(z[j]), i) for i, z in enumerate(zs) for j in range(len(z))]
    for sparsity in (0.2, 0.4, 0.6):
        k = round(sparsity * 12)
        counts = global_keep_counts(layers, sparsity)
        best_cost, best = math.inf, None
        for subset in itertools.combinations(range(12), k):
            removed = [0, 0, 0]
            for u in subset:
                removed[flat[u][1]] += 1
            if any(layers[i].width - removed[i] < 1 for i in range(3)):
                continue
            cost = sum(flat[u][0] for u in subset)
            if cost < best_cost:
                best_cost, best = cost, [layers[i].width - removed[i] for i in range(3)]
        assert counts == best
    # round_to and GQA groups: equal-size steps, checked over all valid per-layer counts.
    rounded = [UnitLayer(torch.randn(12, generator=g) * (i + 1), round_to=4, min_keep=4) for i in range(4)]
    counts = global_keep_counts(rounded, 0.5)
    assert counts == _brute_force_counts(rounded, 24, 4) and all(c % 4 == 0 for c in counts)
    gqa = [UnitLayer(torch.randn(8, generator=g), groups=2) for _ in range(3)]  # 2 groups of 4 heads
    counts = global_keep_counts(gqa, 0.5)
    assert counts == _brute_force_counts(gqa, 12, 2) and all(c % 2 == 0 and c >= 2 for c in counts)


def test_global_selection_standardizes_per_layer_and_checks_capacity():
    # Raw scores of layer b are all far larger, but each layer is standardized on its own: a's one clear
    # loser goes first, then b's spread-out units (a's remaining three sit above a's mean).
    a = UnitLayer(torch.tensor([0.0, 10.0, 10.1, 10.2]))
    b = UnitLayer(torch.tensor([100.0, 101.0, 102.0, 103.0]))
    za, zb = standardize(a.scores), standardize(b.scores)
    assert float(za[0]) < float(zb[0]) < float(zb[1]) < float(zb[2]) < float(za[1])
    assert global_keep_counts([a, b], 0.125) == [3, 4]
    assert global_keep_counts([a, b], 0.25) == [3, 3]
    assert global_keep_counts([a, b], 0.5) == [3, 1]
    # min_keep caps what a layer gives up; the rest comes from the other layer.
    capped = UnitLayer(torch.tensor([0.0, 10.0, 10.1, 10.2]), min_keep=4)
    assert global_keep_counts([capped, b], 0.25) == [4, 2]
    with pytest.raises(ValueError, match=r"sparsity=0\.9.*min_keep"):
        global_keep_counts([a, b], 0.9)


# ----------------------------------------------------------------------------------------- configs
@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"scope": "heads"}, ValueError, r"scope must be one of \('mlp', 'attention', 'both'\), got 'heads'"),
        ({"allocation": "alpha"}, ValueError, r"allocation must be one of \('uniform', 'global'\)"),
        ({"allocation": {"type": "AlphaAllocation"}}, TypeError, "unstructured methods only"),
        (
            {"head_granularity": "group"},
            ValueError,
            r"head_granularity must be one of \('query', 'kv_group'\)",
        ),
        ({"round_to": 0}, ValueError, r"round_to must be in \[1, inf\], got 0"),
        ({"round_to": 8.0}, TypeError, "round_to must be an int"),
        ({"min_keep": -1}, ValueError, "min_keep must be in"),
        ({"sparsity": 1.0}, ValueError, r"sparsity must be in \[0.0, 1.0\)"),
        ({"target_modules": 3}, TypeError, "target_modules"),
    ],
)
def test_bad_config_values(kwargs, error, message):
    with pytest.raises(error, match=message):
        StructuredAFRConfig(**kwargs)


def test_config_json_round_trip_and_registry():
    for cls in CONFIGS.values():
        cfg = cls(sparsity=0.3, scope="both", allocation="global", round_to=8, min_keep=16)
        again = PruningConfig.from_dict(json.loads(cfg.to_json_string()))
        assert again == cfg and type(again) is cls
        assert cls.method.startswith("structured_") and cls.paper
    assert StructuredMagnitudeConfig(norm=1).norm == 1
    with pytest.raises(ValueError, match="norm must be 1 or 2"):
        StructuredMagnitudeConfig(norm=3)


# --------------------------------------------------------------------------------- the model matrix
def _unit_params(model):
    """Per block: parameters per MLP neuron, per query head (q rows + o columns), per KV head (k, v)."""
    out = {}
    for spec in get_arch(model).stacks:
        for idx, block in enumerate(get_layers(model, spec)):
            b = spec.block
            geo = head_geometry(model, spec, idx)

            def rows(path, n, block=block):  # parameters in n output rows (weight + bias) of one projection
                m = get_submodule(block, path)
                return n * (linear_in_out(m)[0] + (1 if getattr(m, "bias", None) is not None else 0))

            neuron = sum(rows(p, 1) for p in b.mlp_in) + linear_in_out(get_submodule(block, b.mlp_out))[1]
            o_cols = geo.head_dim * linear_in_out(get_submodule(block, b.o))[1]
            if b.qkv:  # fused, MHA: a head owns its q, k and v rows
                q_head, kv_head = rows(b.qkv, geo.head_dim) + o_cols, 2 * rows(b.qkv, geo.head_dim)
            else:
                q_head, kv_head = rows(b.q, geo.head_dim) + o_cols, rows(b.k, geo.head_dim) * 2
            out[(spec.name, idx)] = (neuron, q_head, kv_head, geo)
    return out


def _check_rows(rows, unit_params, dense_params, cfg):
    """Expected params from the kept widths; kept fractions; equal heads per KV group."""
    expected = dense_params
    removed = {"mlp": [0, 0], "attention": [0, 0]}
    for row in rows:
        neuron, q_head, kv_head, geo = unit_params[(row.stack, row.block)]
        kept = row.kept_units
        assert row.score is not None and {"min", "max", "mean", "std"} <= set(row.score)
        if row.kind == "mlp":
            gone = kept["neurons_before"] - kept["neurons"]
            expected -= gone * neuron
            removed["mlp"][0] += gone
            removed["mlp"][1] += kept["neurons_before"]
            if cfg.allocation == "uniform":
                assert kept["neurons"] == 24 and row.ratio_requested == cfg.sparsity
            assert kept["neurons"] % cfg.round_to == 0
        else:
            heads = kept["heads"]
            expected -= (geo.num_heads - len(heads)) * q_head + (
                geo.num_kv_heads - kept["kv_heads"]
            ) * kv_head
            per_group = {}
            for h in heads:
                per_group[h // geo.group_size] = per_group.get(h // geo.group_size, 0) + 1
            assert len(set(per_group.values())) == 1, per_group  # every kept KV group: same count
            assert kept["kv_heads"] == len(per_group)
            if geo.group_size > 1 and cfg.head_granularity == "query":
                assert kept["kv_heads"] == geo.num_kv_heads  # KV heads stay, query heads shrink
            removed["attention"][0] += geo.num_heads - len(heads)
            removed["attention"][1] += geo.num_heads
            if cfg.allocation == "uniform":
                assert len(heads) == geo.num_heads // 2
    for kind, (gone, total) in removed.items():
        if total:  # global: the closest achievable total; one step is at most 4 units here
            assert abs(gone - cfg.sparsity * total) <= 2, (kind, gone, total)
    return expected


@pytest.mark.parametrize("family", MATRIX_FAMILIES)
@pytest.mark.parametrize("method", sorted(CONFIGS))
@pytest.mark.parametrize("scope", ["mlp", "attention", "both"])
@pytest.mark.parametrize("allocation", ["uniform", "global"])
def test_matrix_structured(family, method, scope, allocation, tmp_path):
    model, fam = make_model(family)
    cfg = CONFIGS[method](sparsity=0.5, scope=scope, allocation=allocation, round_to=4)
    if family == "bert" and method in ("snip", "afr"):
        # SNIP needs the language-modelling loss, which an encoder classifier does not have.
        with pytest.raises(ValueError, match="returned no loss"):
            _prune(model, cfg)
        return
    unit_params = _unit_params(model)
    dense_params = param_count(model)
    flags = [p.requires_grad for p in model.parameters()]
    pm = _prune(model, cfg)
    assert [p.requires_grad for p in model.parameters()] == flags
    rows = pm.report.layers
    kinds = {"mlp": {"mlp"}, "attention": {"attention"}, "both": {"mlp", "attention"}}[scope]
    assert {r.kind for r in rows} == kinds and len(rows) == 4 * len(kinds)
    main = get_arch(model).stacks[-1].name  # LLaVA: only the language model by default
    assert {r.stack for r in rows} == {main}
    expected_params = _check_rows(rows, unit_params, dense_params, cfg)
    expected = logits(pm, fam.inputs)
    assert torch.isfinite(expected).all()

    out = pm.save_pretrained(tmp_path / "ckpt", card=False)
    plain_model = pm.finalize()
    assert param_count(plain_model) == pm.report.params_after == expected_params
    again = getattr(hf_prune, fam.pruned_auto).from_pretrained(out)
    assert again.pruning_config == cfg
    assert param_count(again.base_model) == pm.report.params_after
    torch.testing.assert_close(logits(again, fam.inputs), expected, atol=1e-5, rtol=1e-5)

    config = json.loads((out / "config.json").read_text())
    heterogeneous = any(
        "per_layer_config" in s for s in [config, *[v for v in config.values() if isinstance(v, dict)]]
    )
    kept = {
        (r.kind, r.kept_units["neurons"] if r.kind == "mlp" else len(r.kept_units["heads"])) for r in rows
    }
    uniform_widths = len(kept) == len(kinds)  # one kept count per kind: every layer the same width
    if allocation == "uniform":
        assert uniform_widths
        # README table: uniform MLP widths always, uniform head counts where the config pins head_dim.
        assert heterogeneous == (scope != "mlp" and family not in HEAD_DIM_PINNED)
    if heterogeneous:
        with pytest.raises(Exception, match="per-layer attribute"):
            fam.auto.from_pretrained(out)
    else:
        assert uniform_widths
        plain = fam.auto.from_pretrained(out).eval()
        torch.testing.assert_close(logits(plain, fam.inputs), expected, atol=1e-5, rtol=1e-5)


# ----------------------------------------------------------------------- scores on the real model
def _block_weights(model, layer):
    mlp = model.model.layers[layer].mlp
    return (
        mlp.gate_proj.weight.detach().clone(),
        mlp.up_proj.weight.detach().clone(),
        mlp.down_proj.weight.detach().clone(),
    )


def test_structured_magnitude_keeps_largest_norm_neurons_and_heads():
    model, _ = make_model("llama")
    dense = [_block_weights(model, i) for i in range(4)]
    attn = model.model.layers[2].self_attn
    q, k, v, o = (m.weight.detach().clone() for m in (attn.q_proj, attn.k_proj, attn.v_proj, attn.o_proj))
    _prune(model, StructuredMagnitudeConfig(sparsity=0.25))
    for i, (gate, up, down) in enumerate(dense):
        norms = (gate.pow(2).sum(1) + up.pow(2).sum(1) + down.pow(2).sum(0)).sqrt()
        keep = sorted(norms.argsort(descending=True)[:36].tolist())
        torch.testing.assert_close(model.model.layers[i].mlp.gate_proj.weight, gate[keep])
        torch.testing.assert_close(model.model.layers[i].mlp.down_proj.weight, down[:, keep])
    # Heads (head_dim 8, KV groups {0, 1} and {2, 3}): the best-norm query head of every group stays.
    model, _ = make_model("llama")
    _prune(model, StructuredMagnitudeConfig(sparsity=0.5, scope="attention"))
    hd = 8
    per_head = torch.stack(
        [
            q[h * hd : (h + 1) * hd].pow(2).sum()
            + o[:, h * hd : (h + 1) * hd].pow(2).sum()
            + (
                k[(h // 2) * hd : (h // 2 + 1) * hd].pow(2).sum()
                + v[(h // 2) * hd : (h // 2 + 1) * hd].pow(2).sum()
            )
            / 2
            for h in range(4)
        ]
    ).sqrt()
    keep = [int(per_head[:2].argmax()), 2 + int(per_head[2:].argmax())]
    rows = torch.cat([q[h * hd : (h + 1) * hd] for h in keep])
    torch.testing.assert_close(model.model.layers[2].self_attn.q_proj.weight, rows)
    torch.testing.assert_close(model.model.layers[2].self_attn.k_proj.weight, k)  # KV heads stay


def test_structured_wanda_uses_input_norms():
    from hf_prune.calibration.data import build_calibration_batches

    model, _ = make_model("llama")
    gate, up, down = _block_weights(model, 0)
    mlp = model.model.layers[0].mlp
    sq = {"x": torch.zeros(gate.shape[1]), "a": torch.zeros(down.shape[1])}
    hooks = [
        mlp.gate_proj.register_forward_pre_hook(
            lambda m, a: sq.__setitem__("x", sq["x"] + a[0].reshape(-1, a[0].shape[-1]).pow(2).sum(0))
        ),
        mlp.down_proj.register_forward_pre_hook(
            lambda m, a: sq.__setitem__("a", sq["a"] + a[0].reshape(-1, a[0].shape[-1]).pow(2).sum(0))
        ),
    ]
    with torch.no_grad():
        for b in build_calibration_batches(CALIB, CharTokenizer()):
            model(**b)
    for h in hooks:
        h.remove()
    xn, an = sq["x"].sqrt(), sq["a"].sqrt()
    score = (gate.abs() * xn).sum(1) + (up.abs() * xn).sum(1) + (down.abs() * an[None, :]).sum(0)
    keep = sorted(score.argsort(descending=True)[:24].tolist())
    pm = _prune(model, StructuredWandaConfig(sparsity=0.5))
    torch.testing.assert_close(model.model.layers[0].mlp.up_proj.weight, up[keep])
    assert pm.report.layers[0].score["max"] == pytest.approx(float(score.max()), rel=1e-4)


def test_structured_snip_uses_gradients():
    from hf_prune.calibration.data import build_calibration_batches

    model, _ = make_model("llama")
    for b in build_calibration_batches(CALIB, CharTokenizer()):
        model(**b, labels=b["input_ids"]).loss.backward()
    mlp = model.model.layers[1].mlp
    score = neuron_taylor_scores(
        [mlp.gate_proj.weight, mlp.up_proj.weight],
        [mlp.gate_proj.weight.grad, mlp.up_proj.weight.grad],
        mlp.down_proj.weight,
        mlp.down_proj.weight.grad,
    )
    gate = mlp.gate_proj.weight.detach().clone()
    model.zero_grad(set_to_none=True)
    keep = sorted(score.argsort(descending=True)[:24].tolist())
    _prune(model, StructuredSNIPConfig(sparsity=0.5))
    torch.testing.assert_close(mlp.gate_proj.weight, gate[keep])


def test_kv_group_granularity_removes_whole_groups_and_loads_plain(tmp_path):
    model, fam = make_model("qwen2")
    pm = _prune(model, StructuredAFRConfig(sparsity=0.5, scope="attention", head_granularity="kv_group"))
    for row in pm.report.layers:
        assert row.kept_units["kv_heads"] == 1 and row.kept_units["heads"] in ([0, 1], [2, 3])
    assert model.config.num_key_value_heads == 1 and model.config.num_attention_heads == 2
    expected = logits(pm, fam.inputs)
    out = pm.save_pretrained(tmp_path / "ckpt", card=False)
    plain = fam.auto.from_pretrained(out).eval()
    torch.testing.assert_close(logits(plain, fam.inputs), expected, atol=1e-5, rtol=1e-5)


def test_target_and_exclude_select_structures():
    model, _ = make_model("llama")
    cfg = StructuredMagnitudeConfig(
        sparsity=0.5,
        scope="both",
        target_modules=[r".*layers\.[01]\..*"],
        exclude_modules=["layers.0.mlp.down_proj"],
    )
    pm = _prune(model, cfg)
    assert [r.name for r in pm.report.layers] == [
        "decoder.0.attention",
        "decoder.1.attention",
        "decoder.1.mlp",
    ]
    assert model.model.layers[0].mlp.gate_proj.out_features == 48  # excluded: left whole
    assert model.model.layers[2].mlp.gate_proj.out_features == 48  # not targeted
    # A pattern that matches nothing is an error, not a silent no-op.
    with pytest.raises(ValueError, match="exclude_modules pattern"):
        _prune(make_model("llama")[0], StructuredMagnitudeConfig(exclude_modules=["mlp.nonexistent"]))
    with pytest.raises(ValueError, match="No attention structure is targeted"):
        _prune(
            make_model("llama")[0],
            StructuredMagnitudeConfig(scope="attention", target_modules=["mlp.down_proj"]),
        )
    with pytest.raises(ValueError, match="outside the transformer blocks"):
        _prune(make_model("llama")[0], StructuredMagnitudeConfig(target_modules=["lm_head"]))


def test_vision_tower_only_when_named():
    model, fam = make_model("llava")
    cfg = StructuredWandaConfig(sparsity=0.5, target_modules=[r".*language_model.*"])
    pm = _prune(model, cfg)
    assert {r.stack for r in pm.report.layers} == {"language_model"}
    model, _ = make_model("llava")
    pm = _prune(model, StructuredMagnitudeConfig(sparsity=0.5, target_modules=[r".*vision_tower.*"]))
    assert {r.stack for r in pm.report.layers} == {"vision_tower"}
    assert torch.isfinite(logits(pm, fam.inputs)).all()


def test_rows_keep_original_block_numbers_after_depth_pruning():
    model, fam = make_model("llama")
    pm = prune(model, CustomConfig(), progress=False)
    pm.remove_layers([1])
    pm = prune(pm, StructuredMagnitudeConfig(sparsity=0.5), progress=False)
    structured = [r for r in pm.report.layers if r.kind == "mlp"]
    assert [r.block for r in structured] == [0, 2, 3]
    assert [r.name for r in structured] == ["decoder.0.mlp", "decoder.2.mlp", "decoder.3.mlp"]
    assert torch.isfinite(logits(pm, fam.inputs)).all()


def test_global_allocation_gives_per_layer_widths(tmp_path):
    model, fam = make_model("llama")
    pm = _prune(model, StructuredWandaConfig(sparsity=0.5, allocation="global"))
    widths = [r.kept_units["neurons"] for r in pm.report.layers]
    assert len(set(widths)) > 1 and sum(widths) == 96  # 50% of 4 x 48 neurons, spread unevenly
    assert [r.ratio_requested for r in pm.report.layers] == [1 - w / 48 for w in widths]
    out = pm.save_pretrained(tmp_path / "ckpt", card=False)
    per_layer = json.loads((out / "config.json").read_text())["per_layer_config"]
    assert {int(k): v["intermediate_size"] for k, v in per_layer.items()} == {
        i: w for i, w in enumerate(widths) if w != 48
    }


def test_min_keep_zero_may_empty_an_mlp():
    model, fam = make_model("llama")
    pm = prune(model, StructuredMagnitudeConfig(sparsity=0.99, min_keep=0), progress=False)
    assert all(r.kept_units["neurons"] == 0 for r in pm.report.layers)
    assert torch.isfinite(logits(pm, fam.inputs)).all()


# ------------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    ("family", "kwargs", "message"),
    [
        # round_to that no layer width allows (the tiny MLPs are 48 wide).
        ("llama", {"round_to": 64}, r"round_to=64 is larger than the MLP width 48"),
        # A sparsity that would empty a layer.
        ("llama", {"sparsity": 0.99}, r"sparsity=0\.99 would keep 0 of 48 units .*min_keep=1"),
        ("llama", {"sparsity": 0.95, "min_keep": 8, "round_to": 8}, r"keep 0 of 48 .*min_keep=8"),
        ("llama", {"sparsity": 0.99, "allocation": "global"}, r"MLP neurons: sparsity=0\.99 .*min_keep"),
        (
            "opt",
            {"sparsity": 0.9, "scope": "attention"},
            r"sparsity=0\.9 would remove every head .*at least one head",
        ),
        ("opt", {"sparsity": 0.5, "scope": "attention", "min_keep": 3}, r"keep 2 of 4 heads .*min_keep=3"),
        ("llama", {"sparsity": 0.9, "scope": "attention"}, r"remove every head .*one per KV group under GQA"),
        # Head pruning that breaks GQA grouping: 25% of 2 KV groups is half a group.
        (
            "qwen2",
            {"sparsity": 0.25, "scope": "attention", "head_granularity": "kv_group"},
            r"head_granularity='kv_group'",
        ),
        ("llama", {"sparsity": 0.1, "round_to": 16}, r"removes nothing .*round_to=16"),
    ],
)
def test_bad_requests_are_clear_errors(family, kwargs, message):
    model, _ = make_model(family)
    with pytest.raises(ValueError, match=message):
        prune(model, StructuredMagnitudeConfig(**kwargs), progress=False)


def test_unequal_gqa_groups_are_refused_by_surgery():
    model, _ = make_model("llama")
    pm = prune(model, CustomConfig(), progress=False)
    with pytest.raises(ValueError, match="same number of query heads"):
        pm.prune_heads(0, [0, 1, 2])


def test_calibrated_methods_need_data():
    with pytest.raises(ValueError, match="needs calibration data"):
        prune(make_model("llama")[0], StructuredWandaConfig(), progress=False)

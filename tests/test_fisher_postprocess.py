"""Kwon et al. (NeurIPS 2022): Fisher mask gradients, mask rearrangement, least-squares rescaling."""

from __future__ import annotations

import copy
import itertools
import sys
import warnings

import pytest
import torch
import transformers as T
from families import VOCAB, make_model

from hf_prune.calibration.fisher import collect_mask_gradients, collect_rescale_systems, mask_hooks
from hf_prune.postprocess import rescale as rescale_mod
from hf_prune.postprocess.rearrange import mask_objective, rearrange_layer, rearrange_mask
from hf_prune.postprocess.rescale import fold_masks, fold_scales, lsmr_solve, rescale_masks, solve_scales


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # Tiny models gain nothing from threads, and the CPUs are shared: oversubscription makes each
    # forward ~100x slower.
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _ids(seed, batch=2, seq=10):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(3, VOCAB, (batch, seq), generator=g)


def _bert_batches():
    out = []
    for s in range(2):
        ids = _ids(s)
        mask = torch.ones_like(ids)
        mask[1, -3:] = 0  # padding
        out.append({"input_ids": ids, "attention_mask": mask, "labels": torch.tensor([s % 3, 2])})
    return out


def _llama_batches():
    ids = _ids(5)
    mask = torch.ones_like(ids)
    mask[0, -2:] = 0
    return [{"input_ids": _ids(4)}, {"input_ids": ids, "attention_mask": mask}]


def _hooks_left(model):
    return sum(len(m._forward_pre_hooks) + len(m._forward_hooks) for m in model.modules())


# ----------------------------------------------------------------------------------------------------
# Mask gradients
# ----------------------------------------------------------------------------------------------------


def _reference_grads(model, batches, o_name, down_name, head_dim, group):
    """dL/dm from weight gradients: scaling an input slice by m scales those weight columns by m."""
    heads, neurons = [], []
    for batch in batches:
        model.zero_grad()
        inputs = dict(batch)
        if "labels" not in inputs:
            labels = inputs["input_ids"].clone()
            if "attention_mask" in inputs:
                labels[inputs["attention_mask"] == 0] = -100
            inputs["labels"] = labels
        model(**inputs).loss.backward()
        h_row, n_row = [], []
        for layer in range(model.config.num_hidden_layers):
            o = model.get_submodule(o_name.format(layer))
            down = model.get_submodule(down_name.format(layer))
            per_feature = (o.weight * o.weight.grad).sum(dim=0)  # [in]
            h_row.append(per_feature.reshape(-1, head_dim * group).sum(dim=1))
            n_row.append((down.weight * down.weight.grad).sum(dim=0))
        heads.append(torch.stack(h_row))
        neurons.append(torch.stack(n_row))
    model.zero_grad()
    return torch.stack(heads), torch.stack(neurons)


@pytest.mark.parametrize(
    "family,head_unit",
    [("bert", "query"), ("llama", "query"), ("llama", "kv_group")],
)
def test_mask_gradients_match_weight_gradient_reference(family, head_unit):
    model, _ = make_model(family)
    model = model.double()
    if family == "bert":
        batches = _bert_batches()
        names = ("bert.encoder.layer.{}.attention.output.dense", "bert.encoder.layer.{}.output.dense")
        group = 1
    else:
        batches = _llama_batches()
        names = ("model.layers.{}.self_attn.o_proj", "model.layers.{}.mlp.down_proj")
        group = 2 if head_unit == "kv_group" else 1
    model.train()  # collection must switch dropout off and restore the mode
    head_g, neuron_g = collect_mask_gradients(model, batches, head_unit=head_unit, progress=False)
    assert model.training
    assert all(p.requires_grad and p.grad is None for p in model.parameters())
    assert _hooks_left(model) == 0
    units = 4 if head_unit == "query" else 2
    assert head_g.shape == (2, 4, units) and neuron_g.shape == (2, 4, 48)
    model.eval()
    ref_h, ref_n = _reference_grads(model, batches, *names, head_dim=8, group=group)
    torch.testing.assert_close(head_g, ref_h.float(), rtol=1e-5, atol=1e-9)
    torch.testing.assert_close(neuron_g, ref_n.float(), rtol=1e-5, atol=1e-9)
    assert head_g.abs().min() > 0  # every head matters to a random model: not a vacuous comparison


def test_mask_gradient_matches_finite_difference_kv_group():
    model, _ = make_model("llama")
    model = model.double()
    batch = _llama_batches()[1]
    head_g, neuron_g = collect_mask_gradients(model, [batch], head_unit="kv_group", progress=False)
    labels = batch["input_ids"].clone()
    labels[batch["attention_mask"] == 0] = -100

    def loss_at(head_mask, neuron_mask):
        with torch.no_grad(), mask_hooks(model, head_mask, neuron_mask, head_unit="kv_group"):
            logits = model(**batch).logits
        # transformers' LM loss is float32 even for a float64 model: too coarse for a difference quotient.
        return float(torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten()))

    # RMSNorm also rounds through float32, so the quotient is checked on the largest gradients.
    eps = 1e-2
    for kind, grads in (("head", head_g[0]), ("neuron", neuron_g[0])):
        layer, unit = divmod(int(grads.abs().argmax()), grads.shape[1])
        hm, nm = torch.ones(4, 2, dtype=torch.float64), torch.ones(4, 48, dtype=torch.float64)
        target = hm if kind == "head" else nm
        target[layer, unit] += eps
        up = loss_at(hm, nm)
        target[layer, unit] -= 2 * eps
        down = loss_at(hm, nm)
        got = grads[layer, unit]
        assert (up - down) / (2 * eps) == pytest.approx(float(got), rel=1e-3)


def test_hooks_removed_and_flags_restored_on_error():
    model, _ = make_model("llama")
    model.model.embed_tokens.weight.requires_grad_(False)  # a non-default flag must survive too
    bad = {"input_ids": torch.full((1, 4), VOCAB + 10)}  # out-of-vocabulary: the forward raises
    with pytest.raises(IndexError):
        collect_mask_gradients(model, [bad], progress=False)
    assert _hooks_left(model) == 0
    assert not model.model.embed_tokens.weight.requires_grad
    assert all(p.requires_grad for n, p in model.named_parameters() if "embed_tokens" not in n)


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_masks_equal_zeroed_output_projection_columns(family):
    model, fam = make_model(family)
    inputs = fam.inputs
    plain = model(**inputs).logits.detach()
    with torch.no_grad():
        with mask_hooks(model, torch.ones(4, 4), torch.ones(4, 48)):
            same = model(**inputs).logits
        head_mask, neuron_mask = torch.ones(4, 4), torch.ones(4, 48)
        head_mask[2, 1] = 0
        neuron_mask[0, 5] = 0
        with mask_hooks(model, head_mask, neuron_mask):
            masked = model(**inputs).logits
    torch.testing.assert_close(same, plain, rtol=0, atol=0)
    assert _hooks_left(model) == 0
    ref = copy.deepcopy(model)
    with torch.no_grad():
        if family == "llama":
            ref.model.layers[2].self_attn.o_proj.weight[:, 8:16] = 0
            ref.model.layers[0].mlp.down_proj.weight[:, 5] = 0
        else:  # Conv1D stores [in, out]: a head's input features are rows
            ref.transformer.h[2].attn.c_proj.weight[8:16, :] = 0
            ref.transformer.h[0].mlp.c_proj.weight[5, :] = 0
        zeroed = ref(**inputs).logits
    torch.testing.assert_close(masked, zeroed, rtol=1e-5, atol=1e-6)
    assert (masked - plain).abs().max() > 1e-4


def test_kv_group_mask_zeroes_all_query_heads_of_the_group():
    model, fam = make_model("llama")
    with torch.no_grad():
        group_mask = torch.ones(4, 2)
        group_mask[1, 1] = 0  # KV group 1 = query heads 2 and 3
        with mask_hooks(model, group_mask, head_unit="kv_group"):
            masked = model(**fam.inputs).logits
        ref = copy.deepcopy(model)
        ref.model.layers[1].self_attn.o_proj.weight[:, 16:32] = 0
        torch.testing.assert_close(masked, ref(**fam.inputs).logits, rtol=1e-5, atol=1e-6)


def test_mask_gradient_bad_inputs():
    bert, _ = make_model("bert")
    llama, fam = make_model("llama")
    no_labels = [{"input_ids": _ids(0)}]
    with pytest.raises(ValueError, match="labels"):
        collect_mask_gradients(bert, no_labels, progress=False)
    with pytest.raises(ValueError, match="classification head"):
        collect_mask_gradients(llama, [fam.inputs], loss="classification", progress=False)
    with pytest.raises(ValueError, match="LM head"):
        collect_mask_gradients(bert, _bert_batches(), loss="lm", progress=False)
    base = T.BertModel(bert.config).eval()
    with pytest.raises(ValueError, match="neither a classification head nor an LM head"):
        collect_mask_gradients(base, no_labels, progress=False)
    with pytest.raises(ValueError, match="head_unit"):
        collect_mask_gradients(llama, [fam.inputs], head_unit="kv", progress=False)
    with pytest.raises(ValueError, match="loss must be"):
        collect_mask_gradients(llama, [fam.inputs], loss="mse", progress=False)
    with pytest.raises(ValueError, match="at least one batch"):
        collect_mask_gradients(llama, [], progress=False)
    with pytest.raises(ValueError, match="head_mask must have shape"), mask_hooks(llama, torch.ones(4, 3)):
        pass
    assert _hooks_left(llama) == 0 and _hooks_left(bert) == 0


# ----------------------------------------------------------------------------------------------------
# Mask rearrangement (pure)
# ----------------------------------------------------------------------------------------------------


def _published_greedy(keep_count, g):
    """Plain re-statement of the published loop (start: lowest diagonal Fisher), for comparison."""
    n = g.shape[1]
    pruned_n = n - keep_count
    order = sorted(range(n), key=lambda i: (float(g[:, i].pow(2).sum()), i))
    pruned = order[:pruned_n]
    for c in order[pruned_n:]:
        pool = [*pruned, c]
        costs = [float(g[:, [u for u in pool if u != d]].sum(1).pow(2).sum()) for d in pool]
        del pool[costs.index(min(costs))]
        pruned = pool
    keep = torch.ones(n, dtype=torch.bool)
    keep[pruned] = False
    return keep


def _objective(keep, g):
    return float(g[:, ~keep].sum(1).pow(2).sum())


def test_rearrange_keeps_counts_and_never_raises_objective():
    torch.manual_seed(0)
    grads = torch.randn(6, 5, 12) * torch.rand(1, 5, 12)
    mask = (torch.rand(5, 12) > 0.5).float()
    mask[3] = 1.0  # nothing pruned: unchanged
    mask[4] = 0.0  # everything pruned: unchanged
    for start in ("mask", "diagonal"):
        new = rearrange_mask(mask, grads, start=start)
        assert new.shape == mask.shape and new.dtype == mask.dtype
        assert torch.equal(new.sum(dim=1), mask.sum(dim=1))
        assert set(new.unique().tolist()) <= {0.0, 1.0}
    new = rearrange_mask(mask, grads)
    before, after = mask_objective(mask, grads), mask_objective(new, grads)
    assert (after <= before + 1e-12).all()
    assert (after < before - 1e-9).any()  # it does rearrange
    assert torch.equal(new[3], mask[3]) and torch.equal(new[4], mask[4])


def test_rearrange_diagonal_start_is_the_published_greedy():
    torch.manual_seed(1)
    for _ in range(20):
        n = int(torch.randint(2, 9, ()))
        g = torch.randn(4, n, dtype=torch.float64) * torch.rand(n, dtype=torch.float64)
        k = int(torch.randint(1, n, ()))
        keep = torch.zeros(n, dtype=torch.bool)
        keep[torch.randperm(n)[:k]] = True
        got = rearrange_layer(keep, g, start="diagonal")
        assert torch.equal(got, _published_greedy(k, g))
        # With the diagonal-Fisher mask as input (the mask search's output), both starts coincide.
        lowest = torch.ones(n, dtype=torch.bool)
        lowest[torch.sort(g.pow(2).sum(0), stable=True).indices[: n - k]] = False
        assert torch.equal(rearrange_layer(lowest, g, start="mask"), got)


def test_rearrange_is_exact_where_the_greedy_sees_every_mask():
    torch.manual_seed(2)
    cases = [(n, k) for n in (2, 3) for k in range(1, n)] + [(6, 1), (6, 5)]
    for n, k in cases:
        for _ in range(10):
            g = torch.randn(5, n, dtype=torch.float64)
            keep = torch.zeros(n, dtype=torch.bool)
            keep[torch.randperm(n)[:k]] = True
            got = _objective(rearrange_layer(keep, g), g)
            best = min(
                _objective(torch.tensor([i in c for i in range(n)]), g)
                for c in itertools.combinations(range(n), k)
            )
            assert got == pytest.approx(best, abs=1e-12)


def test_rearrange_bad_inputs():
    with pytest.raises(ValueError, match="grads must be"):
        rearrange_mask(torch.ones(2, 4), torch.zeros(3, 2, 5))
    with pytest.raises(ValueError, match="mask must be"):
        rearrange_mask(torch.ones(4), torch.zeros(3, 4))
    with pytest.raises(ValueError, match="NaN"):
        rearrange_mask(torch.ones(1, 2), torch.tensor([[[float("nan"), 0.0]]]))
    with pytest.raises(ValueError, match="start"):
        rearrange_mask(torch.tensor([[1.0, 0.0]]), torch.ones(1, 1, 2), start="best")


# ----------------------------------------------------------------------------------------------------
# Rescaling
# ----------------------------------------------------------------------------------------------------

# Where the residual-added (pre-LayerNorm) sub-layer outputs of a block can be read, per family.
_TARGETS = {
    "llama": ("model.layers.{}.post_attention_layernorm", "model.layers.{}"),  # (input of, output of)
    "bert": ("bert.encoder.layer.{}.attention.output.LayerNorm", "bert.encoder.layer.{}.output.LayerNorm"),
}


def _measured(model, batches, kind, layer, head_mask, neuron_mask):
    """||T_dense - T_masked||^2 over non-padding tokens, read from the model's own tensors."""
    attn_path, mlp_path = _TARGETS["llama" if isinstance(model, T.LlamaForCausalLM) else "bert"]
    is_llama = isinstance(model, T.LlamaForCausalLM)
    path = (attn_path if kind == "head" else mlp_path).format(layer)
    module = model.get_submodule(path)
    seen = []
    if is_llama and kind == "neuron":
        h = module.register_forward_hook(
            lambda m, a, out: seen.append(out[0] if isinstance(out, tuple) else out)
        )
    else:
        h = module.register_forward_pre_hook(lambda m, a: seen.append(a[0]))
    total = 0.0
    try:
        with torch.no_grad():
            for b in batches:
                inputs = {k: v for k, v in b.items() if k != "labels"}
                model(**inputs)
                with mask_hooks(model, head_mask, neuron_mask):
                    model(**inputs)
                dense, masked = seen[-2], seen[-1]
                keep = b.get("attention_mask", torch.ones(dense.shape[:2])).bool()
                total += float((dense - masked)[keep].double().pow(2).sum())
    finally:
        h.remove()
    return total


@pytest.mark.parametrize("family", ["llama", "bert"])
def test_rescale_systems_match_the_model_and_lower_the_error(family):
    model, _ = make_model(family)
    torch.manual_seed(7)
    with torch.no_grad():  # BERT initialises biases to 0: make them matter (B subtracts the bias)
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.normal_(0, 0.1)
    batches = _llama_batches() if family == "llama" else _bert_batches()
    torch.manual_seed(3)
    # MLP: 50% of block 0's neurons masked (its input is the dense model's, so it can be measured alone).
    neuron_mask = torch.ones(4, 48)
    neuron_mask[0, torch.randperm(48)[:24]] = 0
    # Attention: one head of block 1 masked, everything before it dense.
    head_mask = torch.ones(4, 4)
    head_mask[1, 2] = 0
    for kind, layer, hm, nm in (
        ("neuron", 0, torch.ones(4, 4), neuron_mask),
        ("head", 1, head_mask, torch.ones(4, 48)),
    ):
        result = collect_rescale_systems(
            model, batches, hm, nm, head_intercept=False, compute_dtype=torch.float64, progress=False
        )
        (system,) = [s for s in result.systems if s.kind == kind and s.layer == layer]
        k = system.units.numel()
        assert k == (24 if kind == "neuron" else 3)
        ones = torch.ones(k, dtype=torch.float64)
        base = system.error(ones)
        assert base == pytest.approx(_measured(model, batches, kind, layer, hm, nm), rel=1e-4)
        for damp in (0.0, 1.0):
            scales = solve_scales(system.ata, system.atb, damp=damp, atol=1e-10, btol=1e-10)
            assert scales is not None
            assert system.error(scales) <= base * (1 + 1e-9)
        scales = solve_scales(system.ata, system.atb, damp=0.0, atol=1e-10, btol=1e-10)
        assert system.error(scales) < (1 - 1e-3) * base  # strictly better on random weights
        # The prediction holds in the model: apply the scales as mask values and measure again.
        hm2, nm2 = hm.clone(), nm.clone()
        target = nm2 if kind == "neuron" else hm2
        target[layer, system.units] *= scales.float()
        assert system.error(scales) == pytest.approx(
            _measured(model, batches, kind, layer, hm2, nm2), rel=1e-3
        )
    assert _hooks_left(model) == 0


def _logits(model, batches, hm=None, nm=None, head_unit="query"):
    with torch.no_grad(), mask_hooks(model, hm, nm, head_unit=head_unit):
        return torch.cat([model(**{k: v for k, v in b.items() if k != "labels"}).logits for b in batches])


@pytest.mark.parametrize("family", ["llama", "gpt2", "bert"])
def test_rescale_then_fold_scales_into_weights(family):
    model, fam = make_model(family)
    batches = _bert_batches() if family == "bert" else [fam.inputs]
    torch.manual_seed(4)
    head_mask = torch.ones(4, 4)
    head_mask[1:, 0] = 0
    neuron_mask = (torch.rand(4, 48) > 0.5).float()
    # A small damping: the published damp=1 barely moves the scales of a tiny random model.
    hm, nm = rescale_masks(model, batches, head_mask, neuron_mask, damp=1e-4, progress=False)
    assert torch.equal(hm == 0, head_mask == 0) and torch.equal(nm == 0, neuron_mask == 0)
    assert torch.equal(hm[0], head_mask[0])  # block 0's heads are not rescaled (published)
    assert (nm[neuron_mask == 1] - 1).abs().max() > 1e-3  # scales really moved
    expected = _logits(model, batches, hm, nm)
    folded = copy.deepcopy(model)
    fold_masks(folded, hm, nm)
    torch.testing.assert_close(_logits(folded, batches), expected, rtol=1e-5, atol=1e-5)
    assert _hooks_left(model) == 0


def test_fold_kv_group_mask_and_fold_scales_pure():
    model, fam = make_model("llama")
    group_mask = torch.tensor([[1.0, 0.5], [0.0, 2.0], [1.0, 1.0], [0.3, 0.0]])
    expected = _logits(model, [fam.inputs], group_mask, head_unit="kv_group")
    fold_masks(model, group_mask, head_unit="kv_group")
    torch.testing.assert_close(_logits(model, [fam.inputs]), expected, rtol=1e-5, atol=1e-6)
    w = torch.arange(12.0).reshape(2, 6)
    torch.testing.assert_close(
        fold_scales(w, torch.tensor([2.0, 0.0, 1.0]), unit_size=2), w * torch.tensor([2.0, 2, 0, 0, 1, 1])
    )
    # Conv1D orientation ([in, out]): the same scaling on rows.
    torch.testing.assert_close(
        fold_scales(w.t(), torch.tensor([2.0, 0.0, 1.0]), unit_size=2, in_dim=0),
        (w * torch.tensor([2.0, 2, 0, 0, 1, 1])).t(),
    )
    with pytest.raises(ValueError, match="input features"):
        fold_scales(w, torch.ones(4), unit_size=2)


def test_rescale_stops_when_solve_fails():
    model, fam = make_model("llama")
    nm = torch.ones(4, 48)
    nm[:, :10] = 0
    calls = []

    def solve(system):
        calls.append(system.layer)
        return None if system.layer == 1 else torch.ones(system.units.numel())

    with pytest.warns(RuntimeWarning, match="stopped at block 1"):
        result = collect_rescale_systems(
            model, [fam.inputs], torch.ones(4, 4), nm, solve=solve, progress=False
        )
    assert result.stopped_at == 1 and max(calls) == 1
    # Out-of-range scales are a failure too (published bound |s| <= 10).
    assert solve_scales(torch.eye(2), torch.tensor([50.0, 1.0]), damp=0.0) is None


def test_rescale_bad_inputs():
    model, fam = make_model("llama")
    with pytest.raises(ValueError, match="head_mask must have shape"):
        collect_rescale_systems(model, [fam.inputs], torch.ones(4, 3), torch.ones(4, 48), progress=False)
    with pytest.raises(ValueError, match="neuron_mask must have shape"):
        collect_rescale_systems(model, [fam.inputs], torch.ones(4, 4), torch.ones(4, 47), progress=False)
    with pytest.raises(ValueError, match="finite"):
        collect_rescale_systems(model, [fam.inputs], torch.full((4, 4), float("nan")), torch.ones(4, 48))
    with pytest.raises(ValueError, match="ata must be"):
        solve_scales(torch.ones(2, 3), torch.ones(2))
    with pytest.raises(ValueError, match="A must be"):
        lsmr_solve(torch.ones(3, 2), torch.ones(2))
    with pytest.raises(ValueError, match="backend"):
        lsmr_solve(torch.ones(3, 2), torch.ones(3), backend="numpy")
    with pytest.raises(ValueError, match="CUDA"):
        lsmr_solve(torch.ones(3, 2), torch.ones(3), backend="cupy")


# ----------------------------------------------------------------------------------------------------
# LSMR back ends
# ----------------------------------------------------------------------------------------------------


def _problem(seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(30, 6, generator=g, dtype=torch.float64), torch.randn(
        30, generator=g, dtype=torch.float64
    )


@pytest.mark.parametrize("damp", [0.0, 0.7])
def test_lsmr_scipy_and_torch_lstsq_agree(damp):
    A, b = _problem()
    x_scipy = lsmr_solve(A, b, damp=damp, atol=1e-12, btol=1e-12, backend="scipy")
    x_torch = lsmr_solve(A, b, damp=damp, backend="torch")
    torch.testing.assert_close(x_scipy, x_torch, rtol=1e-4, atol=1e-8)
    # And both are the damped least-squares solution (normal equations).
    normal = torch.linalg.solve(A.T @ A + damp**2 * torch.eye(6, dtype=A.dtype), A.T @ b)
    torch.testing.assert_close(x_torch, normal, rtol=1e-8, atol=1e-10)
    assert lsmr_solve(A.float(), b.float(), damp=damp).dtype == torch.float32


def test_lsmr_falls_back_to_torch_without_scipy(monkeypatch):
    A, b = _problem(1)
    expected = lsmr_solve(A, b, backend="torch")
    monkeypatch.setitem(sys.modules, "scipy.sparse.linalg", None)
    x, istop = lsmr_solve(A, b, return_istop=True)
    assert istop == 2
    torch.testing.assert_close(x, expected)
    with pytest.raises(ImportError, match="scipy"):
        lsmr_solve(A, b, backend="scipy")


def test_missing_cupy_warns_once(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupyx", None)
    monkeypatch.setattr(rescale_mod, "_CUPY_WARNED", False)
    with pytest.warns(RuntimeWarning, match=r"pip install hf_prune\[gpu\]"):
        assert rescale_mod._load_cupy() is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert rescale_mod._load_cupy() is None  # no second warning


def _has_cupy():
    try:
        import cupyx.scipy.sparse.linalg  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.mark.skipif(
    not torch.cuda.is_available() or not _has_cupy(),
    reason="needs a CUDA device and cupy (pip install hf_prune[gpu]) to compare the GPU LSMR with the CPU one",
)
def test_lsmr_cupy_matches_cpu():
    A, b = _problem(2)
    cpu = lsmr_solve(A, b, damp=0.3, atol=1e-12, btol=1e-12)
    gpu = lsmr_solve(A.cuda(), b.cuda(), damp=0.3, atol=1e-12, btol=1e-12)
    assert gpu.device.type == "cuda"
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-4, atol=1e-8)

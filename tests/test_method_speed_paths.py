"""The fast paths of issue 16: sort-free selection, shared statistics, dense propagation, streamed saves."""

from __future__ import annotations

import json

import pytest
import torch
import transformers as T
from families import CharTokenizer, logits, make_model
from test_unstructured import CALIB

from hf_prune import SparseGPTConfig, WandaConfig, prune
from hf_prune.calibration.runner import run_sequential
from hf_prune.calibration.stats import InputHessian, InputSqNorm, attach
from hf_prune.scoring import select
from hf_prune.scoring.select import fast_unstructured_mask, kth_smallest, lowest_k_mask
from hf_prune.selection.topk import unstructured_mask
from hf_prune.surgery.masks import get_mask, masked_modules
from hf_prune.surgery.offload import save_weights_streaming, write_safetensors_streaming


@pytest.mark.parametrize("compare", ["layer", "row"])
def test_fast_mask_equals_stable_sort_mask_with_ties(compare):
    g = torch.Generator().manual_seed(0)
    for trial in range(60):
        rows, cols = torch.randint(1, 12, (2,), generator=g).tolist()
        # Few distinct values: many ties, where only a position-stable rule gives the same set.
        scores = torch.randint(0, 3, (rows, cols), generator=g).float()
        sparsity = [0.0, 1.0, 0.3, 0.5, 0.77][trial % 5]
        assert torch.equal(
            fast_unstructured_mask(scores, sparsity, compare), unstructured_mask(scores, sparsity, compare)
        )


def test_kth_smallest_equals_kthvalue_on_large_layers_with_ties_and_structure(monkeypatch):
    """The sampled bracket must give torch.kthvalue's exact answer, also when it misses (fallback)."""
    g = torch.Generator().manual_seed(1)
    n = 3 * select._SAMPLE_MIN_NUMEL + 7
    cases = {
        "continuous": torch.randn(n, generator=g).abs(),
        "ties": torch.randint(0, 5, (n,), generator=g).float(),
        # Sorted by position: a strided (not random) sample would bracket nothing useful.
        "sorted": torch.linspace(0, 1, n),
        "one value dominates": torch.cat([torch.zeros(n - 100), torch.rand(100, generator=g)]),
    }
    for name, values in cases.items():
        for k in (1, 2, n // 10, n // 2, n - 1, n):
            assert torch.equal(kth_smallest(values, k), torch.kthvalue(values, k).values), (name, k)
    # A zero-width bracket misses almost always: the exact fallback must then run.
    monkeypatch.setattr(select, "_BRACKET", 0.0)
    values = cases["continuous"]
    for k in (n // 3, n // 2):
        assert torch.equal(kth_smallest(values, k), torch.kthvalue(values, k).values)
    with pytest.raises(ValueError, match="k must be in"):
        kth_smallest(values, 0)


def test_fast_mask_on_a_whole_layer_equals_the_sort_mask():
    """Layer-wise comparison of a projection-sized tensor goes through the sampled k-th value."""
    g = torch.Generator().manual_seed(2)
    scores = torch.randn(300, 700, generator=g).abs()
    scores[:, :50] = 0.5  # a block of ties right at a plausible cut
    for sparsity in (0.1, 0.5, 0.7):
        assert torch.equal(fast_unstructured_mask(scores, sparsity), unstructured_mask(scores, sparsity))


def test_selection_in_small_row_chunks_and_with_nan(monkeypatch):
    """Row chunking (bounded temporaries) changes nothing; NaN is exact or refused, never silently wrong."""
    monkeypatch.setattr(select, "_CHUNK_NUMEL", 16)
    g = torch.Generator().manual_seed(3)
    refused = 0
    for trial in range(80):
        rows, cols = torch.randint(1, 20, (2,), generator=g).tolist()
        scores = torch.randint(0, 4, (rows, cols), generator=g).float()
        if trial % 4 == 0:
            scores[0, 0] = float("nan")
        for sparsity, compare in ((0.25, "row"), (0.5, "layer"), (0.9, "row")):
            want = unstructured_mask(scores, sparsity, compare)
            try:
                got = fast_unstructured_mask(scores, sparsity, compare)
            except ValueError as err:
                assert "NaN" in str(err) and bool(torch.isnan(scores).any())
                refused += 1
                continue
            assert torch.equal(got, want)
    assert refused > 0


def test_lowest_k_mask_counts_and_errors():
    scores = torch.tensor([[3.0, 1.0, 1.0, 2.0], [0.0, 0.0, 0.0, 0.0]])
    low = lowest_k_mask(scores, torch.tensor([2, 3]))
    assert low.tolist() == [[False, True, True, False], [True, True, True, False]]
    with pytest.raises(ValueError, match="counts must be in"):
        lowest_k_mask(scores, torch.tensor([5, 0]))


def test_shared_statistics_equal_independent_ones():
    """q/k/v (and gate/up) read one tensor: the shared update must give each collector the same sums."""
    model, fam = make_model("llama")
    batches = [{"input_ids": fam.inputs["input_ids"]}] * 2
    got: dict[str, torch.Tensor] = {}

    def collectors(i, block):
        return {
            f"{i}.{n}.{kind}": (m, cls(m.in_features))
            for n, m in block.named_modules()
            if isinstance(m, torch.nn.Linear)
            for kind, cls in (("h", InputHessian), ("s", InputSqNorm))
        }

    def on_block(i, block, stats):
        for k, c in stats.items():
            got[k] = (c.sum_xxt if isinstance(c, InputHessian) else c.sum_sq).clone()

    run_sequential(model, batches, collectors=collectors, on_block=on_block, recompute=False, progress=False)
    # Reference: independent hooks (no sharing) on block 0 with the same inputs.
    block = model.model.layers[0]
    ref = {
        f"0.{n}.h": InputHessian(m.in_features)
        for n, m in block.named_modules()
        if isinstance(m, torch.nn.Linear)
    }
    handles = [attach(block.get_submodule(k.split(".", 1)[1][:-2]), c) for k, c in ref.items()]
    with torch.no_grad():
        for b in batches:
            model(**b, use_cache=False)
    for h in handles:
        h.remove()
    assert ref
    for k, c in ref.items():
        torch.testing.assert_close(got[k], c.sum_xxt, rtol=1e-5, atol=1e-4)
    # q and k really did share one computation (equal sums), and gate != down (different inputs).
    torch.testing.assert_close(got["0.self_attn.q_proj.h"], got["0.self_attn.k_proj.h"])


@pytest.mark.parametrize("cls", [WandaConfig, SparseGPTConfig])
def test_dense_propagation_prunes_block0_the_same_and_differs_later(cls):
    pruned = {}
    for prop in ("pruned", "dense"):
        model, _ = make_model("llama")
        pm = prune(
            model,
            cls(sparsity=0.5, propagation=prop),
            calibration=CALIB,
            tokenizer=CharTokenizer(),
            progress=False,
        )
        pruned[prop] = {n: get_mask(m) for n, m in masked_modules(pm.base_model)}
        assert abs(pm.report.sparsity - 0.5) < 0.01
    first = [n for n in pruned["pruned"] if ".layers.0." in n]
    assert first and all(torch.equal(pruned["pruned"][n], pruned["dense"][n]) for n in first)
    later = [n for n in pruned["pruned"] if ".layers.0." not in n]
    assert any(not torch.equal(pruned["pruned"][n], pruned["dense"][n]) for n in later)
    with pytest.raises(ValueError, match="propagation must be one of"):
        cls(propagation="sideways")


def test_streamed_save_of_a_masked_model_reloads_identically(tmp_path):
    model, fam = make_model("llama")
    pm = prune(model, WandaConfig(sparsity=0.5), calibration=CALIB, tokenizer=CharTokenizer(), progress=False)
    expected = logits(pm.base_model, fam.inputs)
    files = save_weights_streaming(pm.base_model, tmp_path, max_shard_size="20KB")
    pm.base_model.config.save_pretrained(tmp_path)
    assert len(files) > 1 and (tmp_path / "model.safetensors.index.json").is_file()
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    assert not any("parametrizations" in k for k in index["weight_map"])
    again = T.AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    torch.testing.assert_close(logits(again, fam.inputs), expected)
    assert masked_modules(pm.base_model)  # the caller's masks stay live (still reversible)


def test_streamed_save_of_an_offloaded_model_reloads_identically(tmp_path):
    torch.manual_seed(0)
    cfg = T.LlamaConfig(
        vocab_size=96,
        hidden_size=128,
        intermediate_size=344,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
    )
    T.AutoModelForCausalLM.from_config(cfg).save_pretrained(tmp_path / "dense")
    model = T.AutoModelForCausalLM.from_pretrained(
        tmp_path / "dense",
        device_map="auto",
        max_memory={"cpu": "400KB"},
        offload_folder=str(tmp_path / "off"),
    )
    assert "disk" in set(model.hf_device_map.values())
    pm = prune(model, WandaConfig(sparsity=0.5), calibration=CALIB, tokenizer=CharTokenizer(), progress=False)
    x = torch.randint(3, 90, (1, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = pm(input_ids=x).logits
    save_weights_streaming(pm.base_model, tmp_path / "out", max_shard_size="100KB")
    pm.base_model.config.save_pretrained(tmp_path / "out")
    again = T.AutoModelForCausalLM.from_pretrained(tmp_path / "out").eval()
    with torch.no_grad():
        torch.testing.assert_close(again(input_ids=x).logits, expected)
    zeros = sum(int((m.weight == 0).sum()) for n, m in again.named_modules() if n.endswith("down_proj"))
    assert zeros > 0  # the pruned values (written back into the weights map) were saved


def test_collectors_without_delta_still_work_in_the_runner():
    """A custom collector that implements only update() is fed every batch, unshared."""
    from hf_prune.calibration.stats import StatCollector

    class Count(StatCollector):
        def update(self, x):
            self.tokens += x.shape[0]

    model, fam = make_model("llama")
    seen = {}

    def collectors(i, block):
        return {n: (m, Count()) for n, m in block.named_modules() if n.endswith(("q_proj", "k_proj"))}

    run_sequential(
        model,
        [{"input_ids": fam.inputs["input_ids"]}],
        collectors=collectors,
        on_block=lambda i, block, st: seen.update({f"{i}.{k}": c.tokens for k, c in st.items()}),
        recompute=False,
        progress=False,
    )
    assert seen and set(seen.values()) == {fam.inputs["input_ids"].numel()}


def test_streamed_safetensors_writer_is_byte_identical_to_save_file(tmp_path):
    """Tensor-by-tensor writing (one tensor in memory) must produce exactly safetensors' own file."""
    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(0)
    tensors = {
        "model.layers.0.w": torch.randn(3, 5, generator=g),
        "a.bf16": torch.randn(7, generator=g).to(torch.bfloat16),
        "ids": torch.arange(5),
        "flags": torch.tensor([True, False, True]),
        "empty": torch.zeros(0, 3),
        "half": torch.randn(2, 2, generator=g).half(),
        "scalar": torch.tensor(3.0),
        "t": torch.randn(4, 6, generator=g).t(),  # non-contiguous: written in logical order
    }
    save_file(
        {k: v.contiguous() for k, v in tensors.items()},
        tmp_path / "ref.safetensors",
        metadata={"format": "pt"},
    )
    produced: list[str] = []

    def producer(name):
        def produce():
            produced.append(name)
            return tensors[name]

        return produce

    write_safetensors_streaming(
        tmp_path / "ours.safetensors",
        [(k, v.shape, v.dtype, producer(k)) for k, v in tensors.items()],
        metadata={"format": "pt"},
    )
    assert (tmp_path / "ours.safetensors").read_bytes() == (tmp_path / "ref.safetensors").read_bytes()
    assert sorted(produced) == sorted(tensors)  # each produced exactly once
    with pytest.raises(ValueError, match="declared"):
        write_safetensors_streaming(
            tmp_path / "bad.safetensors", [("x", (2,), torch.float32, lambda: torch.ones(3))]
        )
    with pytest.raises(ValueError, match="cannot store"):
        write_safetensors_streaming(
            tmp_path / "bad2.safetensors", [("x", (2,), torch.complex64, lambda: None)]
        )


def test_sparsegpt_scaling_its_own_hessian_copy_changes_nothing():
    """Passing Σxxᵀ with hessian_scale (one matrix fewer in memory) = passing the scaled Hessian."""
    from hf_prune.scoring.sparsegpt import sparsegpt_prune

    g = torch.Generator().manual_seed(0)
    w = torch.randn(24, 32, generator=g)
    x = torch.randn(200, 32, generator=g)
    sum_xxt = x.t() @ x
    before = sum_xxt.clone()
    scale = 2.0 / 200
    for kwargs in ({}, {"prune_n": 2, "prune_m": 4, "blocksize": 8}):
        got_w, got_keep = sparsegpt_prune(w, sum_xxt, 0.5, hessian_scale=scale, **kwargs)
        want_w, want_keep = sparsegpt_prune(w, sum_xxt * scale, 0.5, **kwargs)
        assert torch.equal(got_w, want_w) and torch.equal(got_keep, want_keep)
    assert torch.equal(sum_xxt, before)  # the caller's accumulator is never modified

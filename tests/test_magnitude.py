"""Magnitude pruning end to end: exact per-layer sparsity, untouched embeddings, finalize, generate."""

from __future__ import annotations

import pytest
import torch
from families import logits, make_model
from transformers import PreTrainedModel

from hf_prune import CustomConfig, MagnitudeConfig, PrunedModel, prune
from hf_prune.arch import iter_block_linears
from hf_prune.selection.topk import num_to_prune
from hf_prune.surgery.masks import has_mask, weight_out_in


@pytest.mark.parametrize("family", ["llama", "opt", "gpt2", "bert"])
@pytest.mark.parametrize("sparsity", [0.3, 0.5, 0.7])
def test_measured_sparsity_equals_request(family, sparsity):
    model, _ = make_model(family)
    emb_before = model.get_input_embeddings().weight.detach().clone()
    head = model.get_output_embeddings()
    head_before = None if head is None else head.weight.detach().clone()
    pm = prune(model, MagnitudeConfig(sparsity=sparsity), progress=False)
    refs = list(iter_block_linears(model))
    assert len(pm.report.layers) == len(refs) > 0
    for ref in refs:
        w = weight_out_in(ref.module)
        zeros = int((w == 0).sum())
        # Within one weight of the request (exact count, ties broken by position).
        assert abs(zeros - num_to_prune(w.numel(), sparsity)) <= 1, ref.name
    for row in pm.report.layers:
        assert row.sparsity_measured == pytest.approx(sparsity, abs=1.0 / row.params_before + 1e-9)
    torch.testing.assert_close(model.get_input_embeddings().weight, emb_before, rtol=0, atol=0)
    if head_before is not None:
        torch.testing.assert_close(model.get_output_embeddings().weight, head_before, rtol=0, atol=0)
        assert not has_mask(model.get_output_embeddings())


def test_magnitude_prunes_smallest_weights():
    model, _ = make_model("llama")
    ref = next(iter(iter_block_linears(model)))
    dense = weight_out_in(ref.module).detach().clone()
    prune(model, MagnitudeConfig(sparsity=0.5, target_modules=[ref.name]), progress=False)
    pruned = weight_out_in(ref.module).detach()
    kept = dense[pruned != 0].abs()
    removed = dense[pruned == 0].abs()
    assert removed.max() <= kept.min()


def test_target_and_exclude_modules():
    model, _ = make_model("llama")
    pm = prune(
        model,
        MagnitudeConfig(
            sparsity=0.5, target_modules=["mlp.down_proj"], exclude_modules=["layers.0.mlp.down_proj"]
        ),
        progress=False,
    )
    names = [r.name for r in pm.report.layers]
    assert names == [f"model.layers.{i}.mlp.down_proj" for i in range(1, 4)]
    # lm_head can be pruned when named explicitly.
    model2, _ = make_model("llama")
    pm2 = prune(model2, MagnitudeConfig(sparsity=0.5, target_modules=["lm_head"]), progress=False)
    assert [r.name for r in pm2.report.layers] == ["lm_head"]


def test_finalize_returns_plain_model_and_undo():
    model, fam = make_model("llama")
    dense = logits(model, fam.inputs)
    pm = prune(model, MagnitudeConfig(sparsity=0.5), progress=False)
    pruned = logits(pm, fam.inputs)
    assert not torch.allclose(dense, pruned)
    assert pm.undo_masks() > 0
    torch.testing.assert_close(logits(pm, fam.inputs), dense)
    pm = prune(pm, MagnitudeConfig(sparsity=0.5), progress=False)
    plain = pm.finalize()
    assert isinstance(plain, PreTrainedModel) and not isinstance(plain, PrunedModel)
    assert not any(has_mask(m) for m in plain.modules())
    assert not any("parametrizations" in k for k in plain.state_dict())
    torch.testing.assert_close(logits(plain, fam.inputs), pruned)


@pytest.mark.parametrize("family", ["llama", "opt"])
@pytest.mark.parametrize("change", ["depth", "width"])
def test_generate_after_structural_change(family, change, tmp_path):
    model, fam = make_model(family)
    pm = prune(model, CustomConfig(), progress=False)
    if change == "depth":
        pm.remove_layers([0, 2])
        assert model.config.num_hidden_layers == 2
        attn_idx = [
            blk.self_attn.layer_idx
            for blk in (model.model.layers if family == "llama" else model.model.decoder.layers)
        ]
        assert attn_idx == [0, 1]
    else:
        for i in range(4):
            pm.prune_neurons(i, list(range(16)))
            pm.prune_heads(i, [0, 1] if family == "llama" else [0, 3])
    prompt = fam.inputs["input_ids"][:, :5]
    with torch.no_grad():
        cached = pm.generate(prompt, max_new_tokens=6, do_sample=False, use_cache=True)
        uncached = pm.generate(prompt, max_new_tokens=6, do_sample=False, use_cache=False)
    assert cached.shape == (2, 11)
    # The KV cache must index the right layers: cached and uncached decoding agree.
    assert torch.equal(cached, uncached)
    pm.save_pretrained(tmp_path / "g")
    from hf_prune import AutoPrunedModelForCausalLM

    reloaded = AutoPrunedModelForCausalLM.from_pretrained(tmp_path / "g")
    with torch.no_grad():
        assert torch.equal(reloaded.generate(prompt, max_new_tokens=6, do_sample=False), cached)


def test_finalizing_a_deepcopy_leaves_the_original_masks_working():
    # copy.deepcopy shares torch's generated Parametrized* class; removing the copy's parametrization
    # used to delete the original's `weight` property with it.
    import copy

    import transformers as T

    from hf_prune import MagnitudeConfig, prune

    torch.manual_seed(0)
    cfg = T.LlamaConfig(vocab_size=96, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                        num_attention_heads=4, num_key_value_heads=2)  # fmt: skip
    pm = prune(T.LlamaForCausalLM(cfg), MagnitudeConfig(sparsity=0.5), progress=False)
    ids = torch.randint(3, 96, (1, 8))
    with torch.no_grad():
        before = pm(input_ids=ids).logits
        copy.deepcopy(pm).finalize()
        assert torch.equal(pm(input_ids=ids).logits, before)
    assert pm.undo_masks() > 0  # the original's masks are still live and reversible

"""Removing a block's attention or MLP sub-block: exact forward, parameters, save -> reload, refusals."""

from __future__ import annotations

import json

import pytest
import torch
import transformers as T
from families import build_family

from hf_prune import AutoPrunedModelForCausalLM
from hf_prune.arch import get_arch, param_count
from hf_prune.integration.pruned_model import PrunedModel
from hf_prune.surgery.structure import read_structure
from hf_prune.surgery.subblock import RemovedAttention, RemovedMLP


def _model(name: str = "llama", seed: int = 0):
    fam = build_family(name)
    torch.manual_seed(seed)
    model = fam.auto.from_config(fam.config).eval()
    return model, fam


def _manual_block(block, h, position_embeddings, drop_attn: bool, drop_mlp: bool):
    """The Llama block with the removed parts skipped (written out, not through our stand-ins)."""
    if not drop_attn:
        out, _ = block.self_attn(
            hidden_states=block.input_layernorm(h),
            position_embeddings=position_embeddings,
            attention_mask=None,
        )
        h = h + out
    if not drop_mlp:
        h = h + block.mlp(block.post_attention_layernorm(h))
    return h


@pytest.mark.parametrize("family", ["llama", "mistral", "qwen2"])
def test_removed_subblocks_pass_the_residual_through(family):
    model, fam = _model(family)
    ids = fam.inputs["input_ids"]
    pm = PrunedModel(model)
    inner = model.model
    blocks = list(inner.layers)
    with torch.no_grad():
        h = inner.embed_tokens(ids)
        pos = torch.arange(ids.shape[1])[None]
        rope = inner.rotary_emb(h, pos)
        plan = {0: (True, False), 1: (False, True), 2: (True, True)}
        # is_causal sdpa inside the blocks: attention_mask=None with a causal model is causal.
        for i, block in enumerate(blocks):
            drop_attn, drop_mlp = plan.get(i, (False, False))
            h = _manual_block(block, h, rope, drop_attn, drop_mlp)
        want = model.lm_head(inner.norm(h))
    params = param_count(model)
    attn_params = param_count(blocks[0].self_attn) + param_count(blocks[0].input_layernorm)
    mlp_params = param_count(blocks[1].mlp) + param_count(blocks[1].post_attention_layernorm)
    pm.remove_attention(0)
    pm.remove_mlp(1)
    pm.remove_attention(2)
    pm.remove_mlp(2)
    with torch.no_grad():
        got = pm(input_ids=ids).logits
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    assert isinstance(blocks[0].self_attn, RemovedAttention) and isinstance(blocks[1].mlp, RemovedMLP)
    assert param_count(model) == params - 2 * attn_params - 2 * mlp_params
    assert pm.report.params_after == param_count(model)
    rows = [(r.name, r.kind, r.params_before - r.params_after) for r in pm.report.layers]
    assert rows == [
        ("decoder.0.attention", "attention", attn_params),
        ("decoder.1.mlp", "mlp", mlp_params),
        ("decoder.2.attention", "attention", attn_params),
        ("decoder.2.mlp", "mlp", mlp_params),
    ]
    layers = read_structure(model)["decoder"]["layers"]
    assert [(r["num_heads"], r["intermediate_size"]) for r in layers[:3]] == [
        (0, layers[3]["intermediate_size"]),
        (layers[3]["num_heads"], 0),
        (0, 0),
    ]


def test_save_reload_equal_logits_and_plain_transformers_refuses(tmp_path):
    model, fam = _model("llama")
    ids = fam.inputs["input_ids"]
    pm = PrunedModel(model)
    pm.remove_attention(1)
    pm.remove_mlp(2)
    pm.merge_kv_heads(3, 1)
    pm.remove_layers([0])
    with torch.no_grad():
        want = pm(input_ids=ids).logits
    folder = pm.save_pretrained(tmp_path / "ckpt")
    config = json.loads((folder / "config.json").read_text())
    assert config["per_layer_config"] == {
        "0": {"num_attention_heads": 0, "num_key_value_heads": 0},
        "1": {"intermediate_size": 0},
        "2": {"num_key_value_heads": 1},
    }
    again = AutoPrunedModelForCausalLM.from_pretrained(folder)
    with torch.no_grad():
        got = again(input_ids=ids).logits
    torch.testing.assert_close(got, want, atol=0, rtol=0)
    assert again.report.params_after == param_count(again.base_model) == pm.report.params_after
    assert isinstance(again.base_model.model.layers[0].self_attn, RemovedAttention)
    # Plain transformers must refuse, never build zero-head layers from the global config.
    with pytest.raises(Exception, match="per-layer attribute"):
        T.AutoModelForCausalLM.from_pretrained(folder)


def test_generate_with_cache_matches_no_cache_when_layer_zero_attention_is_removed():
    model, fam = _model("llama")
    pm = PrunedModel(model)
    # Layer 0's cache slot is what transformers reads the sequence length from.
    pm.remove_attention(0)
    ids = fam.inputs["input_ids"][:1]
    with_cache = pm.generate(ids, max_new_tokens=6, do_sample=False)
    without = pm.generate(ids, max_new_tokens=6, do_sample=False, use_cache=False)
    assert torch.equal(with_cache, without)


def test_zero_heads_routes_to_attention_removal_and_width_surgery_refuses_removed_parts():
    model, _ = _model("llama")
    pm = PrunedModel(model)
    pm.prune_heads(1, [])
    assert isinstance(model.model.layers[1].self_attn, RemovedAttention)
    assert pm.report.layers[-1].kept_units == {"heads": [], "kv_heads": 0, "removed": True}
    with pytest.raises(ValueError, match="attention sub-block was removed"):
        pm.prune_heads(1, [0])
    pm.remove_mlp(0)
    with pytest.raises(ValueError, match="mlp sub-block was removed"):
        pm.prune_neurons(0, [0, 1])
    with pytest.raises(ValueError, match="already removed"):
        pm.remove_mlp(0)
    with pytest.raises(ValueError, match=r"layer=9 is not a block position.*\[0, 4\)"):
        pm.remove_attention(9)
    # Head-level readers (latency tables, KV merging) name the removed attention instead of failing on
    # a missing q_proj.
    from hf_prune.arch import head_geometry

    spec = get_arch(model).stacks[-1]
    with pytest.raises(ValueError, match="attention was removed"):
        head_geometry(model, spec, 1)
    assert head_geometry(model, spec, 0).num_heads > 0


@pytest.mark.parametrize("family", ["opt", "gpt2"])
def test_unsupported_families_are_refused(family):
    model, _ = _model(family)
    pm = PrunedModel(model)
    with pytest.raises(ValueError, match=f"family '{get_arch(model).family}'.*remove_layers"):
        pm.remove_attention(0)
    with pytest.raises(ValueError, match="pre-norm decoder stacks"):
        pm.remove_mlp(0)


def test_merge_kv_heads_mean_pools_adjacent_groups():
    model, fam = _model("llama")  # 4 query heads over 2 KV heads, head_dim 8
    attn = model.model.layers[0].self_attn
    k_before = attn.k_proj.weight.detach().clone()
    pm = PrunedModel(model)
    pm.merge_kv_heads(0, 1)
    hd = 8
    torch.testing.assert_close(attn.k_proj.weight, (k_before[:hd] + k_before[hd:]) / 2)
    assert attn.num_key_value_groups == 4 and attn.k_proj.out_features == hd
    assert pm.report.layers[-1].kept_units == {"heads": 4, "kv_heads": 1}
    with torch.no_grad():
        pm(**fam.inputs)  # the block still runs with one KV head for all four query heads
    with pytest.raises(ValueError, match=r"must divide the current 1 KV heads; allowed: \[1\]"):
        pm.merge_kv_heads(0, 2)


def test_width_pruning_skips_removed_subblocks_and_reloads(tmp_path):
    from hf_prune import StructuredMagnitudeConfig, prune

    fam = build_family("llama")
    torch.manual_seed(0)
    model = fam.auto.from_config(fam.config)
    pm = PrunedModel(model)
    pm.remove_attention(1)
    pm.remove_mlp(2)
    pm = prune(pm, StructuredMagnitudeConfig(sparsity=0.5, scope="both"), progress=False)
    rows = read_structure(pm.base_model)["decoder"]["layers"]
    assert rows[1]["num_heads"] == 0 and rows[2]["intermediate_size"] == 0  # still removed
    assert rows[0]["intermediate_size"] == 24 and rows[1]["intermediate_size"] == 24  # others pruned
    assert rows[0]["num_heads"] == 2 and rows[2]["num_heads"] == 2
    again = AutoPrunedModelForCausalLM.from_pretrained(pm.save_pretrained(tmp_path / "m"))
    with torch.no_grad():
        assert torch.equal(again(**fam.inputs).logits, pm(**fam.inputs).logits)

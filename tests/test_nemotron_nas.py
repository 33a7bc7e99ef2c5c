"""Nemotron-NAS (DeciLM ``block_configs``) export, checked against an independent reference forward.

The reference below is written from the layout's published semantics (vLLM ``nemotron_nas``, MLX
``nemotron-nas``, NVIDIA's DeciLM): it reads only the exported ``config.json`` and
``model.safetensors`` and never uses transformers' or hf_prune's modules, so an export that names,
orders or sizes anything wrongly gives different logits.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
import torch
import transformers as T
from safetensors.torch import load_file

from hf_prune import StructuredMagnitudeConfig, prune
from hf_prune.config import PruningConfig
from hf_prune.integration.export.nemotron_nas import (
    ffn_mult_for_width,
    ffn_mult_to_intermediate_size,
)
from hf_prune.integration.pruned_model import PrunedModel

VOCAB = 96
ATOL = 1e-5


# ------------------------------------------------------------------------------ reference forward
def _find_multiple(n: int, k: int) -> int:
    return n if n % k == 0 else n + k - n % k


def _rms(x: torch.Tensor, w: torch.Tensor, eps: float) -> torch.Tensor:
    return w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat([-x[..., half:], x[..., :half]], dim=-1)


def reference_logits(folder: Path, input_ids: torch.Tensor) -> torch.Tensor:
    """Logits of an exported folder computed from its config.json and safetensors alone (float64)."""
    cfg = json.loads((folder / "config.json").read_text())
    assert cfg["model_type"] == "nemotron-nas" and cfg["architectures"] == ["DeciLMForCausalLM"]
    w = {k: v.double() for k, v in load_file(str(folder / "model.safetensors")).items()}
    hidden, n_heads, eps = cfg["hidden_size"], cfg["num_attention_heads"], cfg["rms_norm_eps"]
    head_dim = hidden // n_heads  # the layout derives it
    assert len(cfg["block_configs"]) == cfg["num_hidden_layers"]
    qkv_bias = bool(cfg.get("attention_bias") or cfg.get("qkv_bias"))
    o_bias = bool(cfg.get("attention_bias"))
    batch, seq = input_ids.shape
    pos = torch.arange(seq, dtype=torch.float64)
    inv_freq = 1.0 / (cfg["rope_theta"] ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim))
    freqs = torch.outer(pos, inv_freq)
    emb = torch.cat([freqs, freqs], dim=-1)
    cos, sin = emb.cos(), emb.sin()
    causal = torch.full((seq, seq), float("-inf"), dtype=torch.float64).triu(1)
    used: set[str] = set()

    def get(name: str) -> torch.Tensor:
        used.add(name)
        return w[name]

    h = get("model.embed_tokens.weight")[input_ids]
    for i, block in enumerate(cfg["block_configs"]):
        p = f"model.layers.{i}"
        attn, ffn = block["attention"], block["ffn"]
        assert not attn["replace_with_linear"] and not ffn["replace_with_linear"]
        if not attn["no_op"]:
            x = _rms(h, get(f"{p}.input_layernorm.weight"), eps)
            n_kv = n_heads // attn["n_heads_in_group"]

            def proj(name: str, x: torch.Tensor, bias: bool, p: str = p) -> torch.Tensor:
                out = x @ get(f"{p}.self_attn.{name}.weight").T
                return out + get(f"{p}.self_attn.{name}.bias") if bias else out

            q = proj("q_proj", x, qkv_bias).view(batch, seq, n_heads, head_dim).transpose(1, 2)
            k = proj("k_proj", x, qkv_bias).view(batch, seq, n_kv, head_dim).transpose(1, 2)
            v = proj("v_proj", x, qkv_bias).view(batch, seq, n_kv, head_dim).transpose(1, 2)
            q = q * cos + _rotate_half(q) * sin
            k = k * cos + _rotate_half(k) * sin
            # Query head j reads KV head j // n_heads_in_group.
            k = k.repeat_interleave(attn["n_heads_in_group"], dim=1)
            v = v.repeat_interleave(attn["n_heads_in_group"], dim=1)
            scores = q @ k.transpose(-1, -2) / math.sqrt(head_dim) + causal
            out = (scores.softmax(-1) @ v).transpose(1, 2).reshape(batch, seq, n_heads * head_dim)
            h = h + proj("o_proj", out, o_bias)
        if not ffn["no_op"]:
            x = _rms(h, get(f"{p}.post_attention_layernorm.weight"), eps)
            width = _find_multiple(int(2 * ffn["ffn_mult"] * hidden / 3), 256)
            gate = get(f"{p}.mlp.gate_proj.weight")
            assert gate.shape == (width, hidden)
            act = x @ gate.T
            h = (
                h
                + (act * torch.sigmoid(act) * (x @ get(f"{p}.mlp.up_proj.weight").T))
                @ get(f"{p}.mlp.down_proj.weight").T
            )
    h = _rms(h, get("model.norm.weight"), eps)
    head = get("model.embed_tokens.weight") if cfg.get("tie_word_embeddings") else get("lm_head.weight")
    logits = h @ head.T
    assert used == set(w), f"tensors the layout does not read: {sorted(set(w) - used)}"
    return logits


# --------------------------------------------------------------------------------------- helpers
def _llama(intermediate: int = 512, heads: int = 4, kv: int = 4, layers: int = 4, seed: int = 0, **kw):
    torch.manual_seed(seed)
    config = T.LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=128,
        intermediate_size=intermediate,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv,
        max_position_embeddings=64,
        **kw,
    )
    model = T.AutoModelForCausalLM.from_config(config).eval()
    # Non-trivial norms so a norm applied to the wrong sub-block changes the logits.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.uniform_(0.5, 1.5)
    return model


def _ids(seq: int = 10) -> torch.Tensor:
    return torch.randint(3, VOCAB, (2, seq), generator=torch.Generator().manual_seed(1))


def _check_equal(pm: PrunedModel, folder: Path) -> dict:
    ids = _ids()
    with torch.no_grad():
        ours = pm(input_ids=ids).logits.double()
    ref = reference_logits(folder, ids)
    assert ref.shape == ours.shape
    torch.testing.assert_close(ref, ours, atol=ATOL, rtol=0)
    return json.loads((folder / "config.json").read_text())


def _keep_top(pm: PrunedModel, layer: int, n: int) -> list[int]:
    w = pm.base_model.model.layers[layer].mlp.down_proj.weight
    return sorted(w.norm(dim=0).topk(n).indices.tolist())


# ------------------------------------------------------------------------------------ the mapping
def test_ffn_mult_round_trip_and_rounding():
    for hidden in (128, 256, 4096, 8192, 5120):
        for width in (256, 512, 768, 13824, 28672):
            assert ffn_mult_to_intermediate_size(ffn_mult_for_width(width, hidden), hidden) == width
    # The layout rounds up: 500 neurons would silently become 512.
    assert ffn_mult_to_intermediate_size(1.5 * 500 / 128, 128) == 512
    with pytest.raises(ValueError, match=r"not representable.*\[256, 512\].*round_to=256"):
        ffn_mult_for_width(500, 128)


def test_depth_pruning_exports_removed_blocks_as_no_op(tmp_path):
    pm = PrunedModel(_llama())
    pm.remove_layers([1, 2])
    folder = pm.save_pretrained(tmp_path / "depth", format="nemotron-nas")
    cfg = _check_equal(pm, folder)
    blocks = cfg["block_configs"]
    assert cfg["num_hidden_layers"] == 4  # original numbering kept
    assert [b["attention"]["no_op"] and b["ffn"]["no_op"] for b in blocks] == [False, True, True, False]
    assert blocks[0]["attention"]["n_heads_in_group"] == 1 and blocks[0]["ffn"]["ffn_mult"] == 6.0
    # transformers has no class for the layout: it refuses (remote code is needed), never guesses.
    with pytest.raises(ValueError, match="nemotron-nas"):
        T.AutoConfig.from_pretrained(folder)


def test_attention_only_removal(tmp_path):
    pm = PrunedModel(_llama())
    pm.remove_attention(0)
    pm.remove_attention(2)
    cfg = _check_equal(pm, pm.save_pretrained(tmp_path / "attn", format="nemotron-nas"))
    assert [b["attention"]["no_op"] for b in cfg["block_configs"]] == [True, False, True, False]
    assert all(not b["ffn"]["no_op"] for b in cfg["block_configs"])
    assert cfg["block_configs"][0]["attention"]["n_heads_in_group"] is None


def test_mlp_only_removal(tmp_path):
    pm = PrunedModel(_llama())
    pm.remove_mlp(1)
    pm.remove_mlp(3)
    cfg = _check_equal(pm, pm.save_pretrained(tmp_path / "mlp", format="nemotron-nas"))
    assert [b["ffn"]["no_op"] for b in cfg["block_configs"]] == [False, True, False, True]
    assert cfg["block_configs"][1]["ffn"]["ffn_mult"] is None


def test_non_uniform_ffn_mult(tmp_path):
    pm = PrunedModel(_llama(intermediate=768))
    for layer, n in ((0, 256), (1, 512), (3, 256)):
        pm.prune_neurons(layer, _keep_top(pm, layer, n))
    cfg = _check_equal(pm, pm.save_pretrained(tmp_path / "ffn", format="nemotron-nas"))
    widths = [ffn_mult_to_intermediate_size(b["ffn"]["ffn_mult"], 128) for b in cfg["block_configs"]]
    assert widths == [256, 512, 768, 256]


def test_gqa_group_pruning_becomes_n_heads_in_group(tmp_path):
    pm = PrunedModel(_llama(heads=8, kv=4))
    pm.merge_kv_heads(0, 2)
    pm.merge_kv_heads(1, 1)
    cfg = _check_equal(pm, pm.save_pretrained(tmp_path / "gqa", format="nemotron-nas"))
    assert cfg["num_attention_heads"] == 8
    assert [b["attention"]["n_heads_in_group"] for b in cfg["block_configs"]] == [4, 8, 2, 2]


def test_everything_together_and_unstructured_zeros_exported_dense(tmp_path):
    model = _llama(heads=8, kv=4, intermediate=768, layers=5)
    pm = prune(model, PruningConfig.from_dict({"method": "magnitude", "sparsity": 0.5}), progress=False)
    pm.remove_layers([4])
    pm.remove_attention(1)
    pm.remove_mlp(2)
    pm.merge_kv_heads(3, 2)
    pm.prune_neurons(0, _keep_top(pm, 0, 512))
    folder = pm.save_pretrained(tmp_path / "all", format="nemotron-nas")
    _check_equal(pm, folder)
    weights = load_file(str(folder / "model.safetensors"))
    q = weights["model.layers.0.self_attn.q_proj.weight"]
    assert 0.45 < float((q == 0).float().mean()) < 0.55  # the mask's zeros, stored densely


def test_round_to_256_result_exports(tmp_path):
    model = _llama(intermediate=768)
    cfg = StructuredMagnitudeConfig(sparsity=0.5, round_to=256, allocation="global")
    pm = prune(model, cfg, progress=False)
    widths = [layer.mlp.down_proj.in_features for layer in pm.base_model.model.layers]
    assert all(w % 256 == 0 for w in widths) and sum(widths) < 4 * 768
    out = _check_equal(pm, pm.save_pretrained(tmp_path / "rounded", format="nemotron-nas"))
    assert [ffn_mult_to_intermediate_size(b["ffn"]["ffn_mult"], 128) for b in out["block_configs"]] == widths


def test_qwen2_qkv_bias_and_mistral_without_window(tmp_path):
    torch.manual_seed(0)
    common = dict(
        vocab_size=VOCAB,
        hidden_size=128,
        intermediate_size=512,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
    )
    qwen = T.AutoModelForCausalLM.from_config(T.Qwen2Config(**common)).eval()
    with torch.no_grad():
        for name, p in qwen.named_parameters():
            if name.endswith("bias"):
                p.normal_()
    pm = PrunedModel(qwen)
    pm.remove_mlp(1)
    cfg = _check_equal(pm, pm.save_pretrained(tmp_path / "qwen", format="nemotron-nas"))
    assert cfg["qkv_bias"] is True and cfg["attention_bias"] is False
    mistral = T.AutoModelForCausalLM.from_config(T.MistralConfig(**common, sliding_window=None)).eval()
    pm = PrunedModel(mistral)
    pm.remove_attention(0)
    _check_equal(pm, pm.save_pretrained(tmp_path / "mistral", format="nemotron-nas"))


# --------------------------------------------------------------------------------------- refusals
def test_query_head_pruning_is_refused_with_the_fix(tmp_path):
    pm = PrunedModel(_llama(heads=8, kv=4))
    pm.prune_heads(0, [0, 2, 4, 6])  # one query head per KV group: 4 of 8 query heads
    with pytest.raises(ValueError, match=r"block 0: attention keeps 4 of 8 query heads.*merge_kv_heads"):
        pm.save_pretrained(tmp_path / "x", format="nemotron-nas")
    assert not (tmp_path / "x").exists()


def test_unrepresentable_width_is_refused_not_padded(tmp_path):
    pm = PrunedModel(_llama())
    pm.prune_neurons(2, list(range(300)))
    with pytest.raises(ValueError, match=r"block 2: MLP width 300 is not representable.*\[256, 512\]"):
        pm.save_pretrained(tmp_path / "x", format="nemotron-nas")
    # The unpruned width must be representable too: 688 (the zoo model's) is not.
    pm = PrunedModel(_llama(intermediate=688))
    with pytest.raises(ValueError, match="MLP width 688"):
        pm.save_pretrained(tmp_path / "y", format="nemotron-nas")
    assert list(tmp_path.iterdir()) == []


def test_other_families_and_settings_are_refused(tmp_path):
    opt = T.AutoModelForCausalLM.from_config(
        T.OPTConfig(vocab_size=VOCAB, hidden_size=32, ffn_dim=64, num_hidden_layers=2, num_attention_heads=4)
    )
    with pytest.raises(ValueError, match="Llama-style causal LM.*model_type 'opt'"):
        PrunedModel(opt).save_pretrained(tmp_path / "opt", format="nemotron-nas")
    mistral = T.AutoModelForCausalLM.from_config(
        T.MistralConfig(
            vocab_size=VOCAB,
            hidden_size=128,
            intermediate_size=512,
            num_hidden_layers=1,
            num_attention_heads=4,
            sliding_window=16,
            max_position_embeddings=64,
        )
    )
    with pytest.raises(ValueError, match="sliding_window=16.*sliding_window = None"):
        PrunedModel(mistral).save_pretrained(tmp_path / "mistral", format="nemotron-nas")
    narrow_heads = _llama(head_dim=16)  # 4 heads of 16 in a hidden size of 128
    with pytest.raises(ValueError, match=r"keeps 4 of 8 query heads.*num_attention_heads \* head_dim"):
        PrunedModel(narrow_heads).save_pretrained(tmp_path / "heads", format="nemotron-nas")
    gelu = _llama(hidden_act="gelu")
    with pytest.raises(ValueError, match="hidden_act='gelu'"):
        PrunedModel(gelu).save_pretrained(tmp_path / "gelu", format="nemotron-nas")
    with pytest.raises(ValueError, match=r"format='onnx-typo'.*\['hf_prune', 'nemotron-nas'\]"):
        PrunedModel(_llama()).save_pretrained(tmp_path / "z", format="onnx-typo")
    assert list(tmp_path.iterdir()) == []


def test_export_replaces_an_existing_folder_atomically(tmp_path, monkeypatch):
    pm = PrunedModel(_llama())
    folder = pm.save_pretrained(tmp_path / "n", format="nemotron-nas")
    before = {p.name: p.read_bytes() for p in folder.iterdir()}

    def boom(*args, **kwargs):
        raise OSError("disk full (simulated)")

    monkeypatch.setattr("hf_prune.integration.export.nemotron_nas.save_file", boom)
    pm.remove_mlp(0)
    with pytest.raises(OSError, match="simulated"):
        pm.save_pretrained(folder, format="nemotron-nas")
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["n"]


# ------------------------------------------------------------------------------------- GPU / vLLM
@pytest.mark.gpu
def test_vllm_serves_the_export(tmp_path):
    """Load an export in vLLM and compare greedy tokens with ours (GPU machines with vLLM only).

    vLLM builds a transformers config for ``nemotron-nas`` only through NVIDIA's remote config code,
    which hf_prune does not ship: point ``HF_PRUNE_DECILM_CODE`` at a folder holding
    ``configuration_decilm.py`` and ``block_config.py`` (from an ``nvidia/*Nemotron*`` repo).
    """
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    vllm = pytest.importorskip("vllm", reason="vLLM is not installed")
    code = os.environ.get("HF_PRUNE_DECILM_CODE")
    if not code or not (Path(code) / "configuration_decilm.py").is_file():
        pytest.skip("set HF_PRUNE_DECILM_CODE to a folder with NVIDIA's configuration_decilm.py")
    import shutil

    pm = PrunedModel(_llama(heads=8, kv=4))
    pm.remove_attention(1)
    pm.remove_mlp(2)
    pm.merge_kv_heads(3, 2)
    folder = pm.save_pretrained(tmp_path / "served", format="nemotron-nas")
    for f in Path(code).glob("*.py"):
        shutil.copy(f, folder / f.name)
    cfg = json.loads((folder / "config.json").read_text())
    cfg["auto_map"] = {"AutoConfig": "configuration_decilm.DeciLMConfig"}
    (folder / "config.json").write_text(json.dumps(cfg))
    ids = _ids(8)[0].tolist()
    llm = vllm.LLM(str(folder), trust_remote_code=True, dtype="float32", skip_tokenizer_init=True)
    params = vllm.SamplingParams(max_tokens=6, temperature=0.0)
    got = llm.generate([{"prompt_token_ids": ids}], params)[0].outputs[0].token_ids
    want = pm.generate(torch.tensor([ids]), max_new_tokens=6, do_sample=False)[0, len(ids) :].tolist()
    assert list(got) == want

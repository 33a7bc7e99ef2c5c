"""hf_prune.heal: LoRA (through PEFT) / full healing that keeps sparsity exactly, merges cleanly, and helps."""

from __future__ import annotations

import copy

import pytest
import torch
from families import CharTokenizer, logits, make_model
from peft.tuners.tuners_utils import BaseTunerLayer

from hf_prune import (
    AutoPrunedModelForCausalLM,
    CalibrationConfig,
    MagnitudeConfig,
    PrunedModel,
    WandaConfig,
    heal,
    prune,
    zoo,
)
from hf_prune.arch import iter_block_linears
from hf_prune.evaluation import perplexity
from hf_prune.postprocess import merge_adapters
from hf_prune.surgery.masks import get_mask, has_mask

# Enough character-level text for random 32-token windows (CharTokenizer: one id per character).
TEXTS = [
    f"Sample {i}: the pruned model reads a sentence about weights, masks and adapters, then {i * 7} more."
    for i in range(40)
]


def _effective_weights(model) -> dict[str, torch.Tensor]:
    # ``module.weight`` is the masked weight when a mask is attached; stored [out, in] or Conv1D [in, out].
    return {r.name: r.module.weight.detach().clone() for r in iter_block_linears(model)}


def _no_peft_left(model) -> None:
    assert not any(isinstance(m, BaseTunerLayer) for m in model.modules())
    assert not any("lora_" in n or "base_layer" in n for n, _ in model.named_parameters())
    assert not hasattr(model, "peft_config")


# ----------------------------------------------------------------------- 1. trained model, depth pruned
@pytest.mark.slow
def test_heal_lowers_heldout_perplexity_of_depth_pruned_zoo_model(tmp_path):
    model, tok = zoo.load_zoo_model("llama-gqa-small")
    calib = zoo.write_split_text("calibration", tmp_path / "calibration.txt")
    heldout = zoo.get_eval_texts("heldout")

    def ppl(m):
        return perplexity(m, tok, heldout, seqlen=256, max_windows=8, progress=False)

    dense = ppl(model)
    pm = PrunedModel(model, tokenizer=tok)
    assert pm.remove_layers([2, 3]) == [2, 3]
    before = ppl(pm)
    out = heal(pm, str(calib), steps=60, lr=1e-3, batch_size=4, seqlen=128, progress=False)
    after = ppl(pm)
    print(f"held-out perplexity: dense {dense:.2f}, 2 blocks removed {before:.2f}, healed {after:.2f}")

    assert out is pm
    assert dense < before  # removing blocks hurts ...
    assert after < 0.95 * before, (dense, before, after)  # ... and healing recovers a clear part of it
    _no_peft_left(pm.base_model)
    assert type(pm.base_model).__name__ == "LlamaForCausalLM"
    assert pm.base_model.config.num_hidden_layers == 4
    rec = pm.report.extra["healing"]
    assert rec["method"] == "lora" and rec["steps"] == 60 and rec["lr"] == 1e-3 and rec["merged"] is True
    assert rec["lora"]["r"] == 8 and rec["lora"]["lora_alpha"] == 16
    assert rec["target_modules"] == [
        "self_attn.q_proj",
        "self_attn.k_proj",
        "self_attn.v_proj",
        "self_attn.o_proj",
        "mlp.gate_proj",
        "mlp.up_proj",
        "mlp.down_proj",
    ]
    assert str(calib) in rec["dataset"]["dataset"] and rec["seqlen"] == 128
    assert rec["loss_curve"][-1]["step"] == 60 and len(rec["loss_curve"]) == 20
    print("loss curve:", [p["loss"] for p in rec["loss_curve"]])
    assert (
        all(0 < p["loss"] < 20 for p in rec["loss_curve"]) and rec["loss_start"] > 0 and rec["loss_end"] > 0
    )
    assert rec["wall_time_s"] > 0 and rec["masked_modules"] == 0
    # Every weight trained requires grad again, as loaded.
    assert all(p.requires_grad for p in pm.base_model.parameters())


# ------------------------------------------------------------------------------- 2. masks kept exactly
def _pruned_tiny(family: str, config):
    model, fam = make_model(family)
    calib = CalibrationConfig(dataset=TEXTS, nsamples=4, seqlen=32, seed=0)
    pm = prune(model, config, calibration=calib, tokenizer=CharTokenizer(), progress=False)
    pm.tokenizer = CharTokenizer()
    return pm, fam


CASES = {
    "llama-magnitude-50": ("llama", lambda: MagnitudeConfig(sparsity=0.5)),
    "llama-wanda-50": ("llama", lambda: WandaConfig(sparsity=0.5)),
    "llama-magnitude-2:4": ("llama", lambda: MagnitudeConfig(pattern="2:4")),
    "llama-wanda-2:4": ("llama", lambda: WandaConfig(pattern="2:4")),
    "gpt2-wanda-2:4": ("gpt2", lambda: WandaConfig(pattern="2:4")),  # Conv1D: [in, out] storage
}


def _assert_same_zeros_and_changed(before, after, nm: bool, gpt2: bool):
    changed = 0
    for name, w0 in before.items():
        w1 = after[name]
        assert torch.equal(w0 == 0, w1 == 0), name  # exactly the same zeros
        assert 0.45 < float((w1 == 0).float().mean()) < 0.55, name
        changed += int((w0 != w1).sum())
        if nm:
            out_in = w1.t() if gpt2 else w1
            groups = (out_in.reshape(out_in.shape[0], -1, 4) != 0).sum(-1)
            assert int(groups.max()) <= 2, name  # every 2:4 group intact
    assert changed > 0.4 * sum(w.numel() for w in before.values())  # the kept weights did move


@pytest.mark.parametrize("case", list(CASES))
def test_lora_merge_keeps_live_masks_exactly(case):
    family, config = CASES[case]
    pm, fam = _pruned_tiny(family, config())
    masks = {r.name: get_mask(r.module).clone() for r in iter_block_linears(pm.base_model)}
    before = _effective_weights(pm.base_model)

    heal(pm, TEXTS, steps=4, lr=1e-2, batch_size=2, seqlen=32, progress=False)

    _no_peft_left(pm.base_model)
    after = _effective_weights(pm.base_model)
    _assert_same_zeros_and_changed(before, after, nm="2:4" in case, gpt2=family == "gpt2")
    for ref in iter_block_linears(pm.base_model):  # masks are still live (reversible) and unchanged
        assert has_mask(ref.module) and torch.equal(get_mask(ref.module), masks[ref.name])
    rec = pm.report.extra["healing"]
    assert rec["masked_modules"] == len(masks) and rec["mask_source"] == ["live"]
    assert rec["lora"]["masked_delta"] is True
    assert pm.report.nonzero_after == pm.report.nonzero_before - sum(int((~m).sum()) for m in masks.values())
    undone = copy.deepcopy(pm)
    undone.undo_masks()  # the stored weights behind the masks still hold the pruned-away values
    assert all(int((r.module.weight == 0).sum()) == 0 for r in iter_block_linears(undone.base_model))


def test_adapters_train_what_is_merged():
    """With adapters attached the masked delta is already applied: merging does not change the output."""
    pm, fam = _pruned_tiny("llama", WandaConfig(pattern="2:4"))
    heal(pm, TEXTS, steps=3, lr=1e-2, batch_size=2, seqlen=32, merge=False, progress=False)
    assert any(isinstance(m, BaseTunerLayer) for m in pm.base_model.modules())
    attached = logits(pm, fam.inputs)
    assert pm.report.extra["healing"]["merged"] is False
    merge_adapters(pm)
    _no_peft_left(pm.base_model)
    torch.testing.assert_close(logits(pm, fam.inputs), attached, atol=1e-5, rtol=1e-5)
    assert pm.report.extra["healing"]["merged"] is True
    for ref in iter_block_linears(pm.base_model):
        w = ref.module.weight
        assert int((w.reshape(w.shape[0], -1, 4) != 0).sum(-1).max()) <= 2


def test_finalized_masks_are_kept_when_the_report_names_the_layer():
    pm, fam = _pruned_tiny("llama", MagnitudeConfig(sparsity=0.5))
    plain = pm.finalize()  # zeros baked in, masks gone; the report still lists the pruned layers
    assert not any(has_mask(r.module) for r in iter_block_linears(plain))
    control = copy.deepcopy(plain)
    before = _effective_weights(plain)

    heal(pm, TEXTS, steps=4, lr=1e-2, batch_size=2, seqlen=32, progress=False)
    _assert_same_zeros_and_changed(before, _effective_weights(pm.base_model), nm=False, gpt2=False)
    assert pm.report.extra["healing"]["mask_source"] == ["report"]

    # Without report rows a zero is an ordinary value: a plain model is healed densely.
    healed = heal(
        control, TEXTS, tokenizer=CharTokenizer(), steps=4, lr=1e-2, batch_size=2, seqlen=32, progress=False
    )
    assert healed.report.extra["healing"]["masked_modules"] == 0
    zeros_after = sum(int((w == 0).sum()) for w in _effective_weights(healed.base_model).values())
    assert zeros_after < 0.01 * sum(int((w == 0).sum()) for w in before.values())


@pytest.mark.parametrize("finalized", [False, True])
def test_full_healing_keeps_masks_and_trains_only_the_blocks(finalized):
    pm, fam = _pruned_tiny("llama", WandaConfig(pattern="2:4"))
    if finalized:
        pm.finalize()
    before = _effective_weights(pm.base_model)
    embed = pm.base_model.model.embed_tokens.weight.detach().clone()
    norms = [b.input_layernorm.weight.detach().clone() for b in pm.base_model.model.layers]

    heal(pm, TEXTS, method="full", steps=4, lr=1e-2, batch_size=2, seqlen=32, progress=False)

    _assert_same_zeros_and_changed(before, _effective_weights(pm.base_model), nm=True, gpt2=False)
    assert all(has_mask(r.module) != finalized for r in iter_block_linears(pm.base_model))
    assert torch.equal(pm.base_model.model.embed_tokens.weight, embed)  # outside the blocks: untouched
    assert not all(
        torch.equal(b.input_layernorm.weight, n)
        for b, n in zip(pm.base_model.model.layers, norms, strict=True)
    )
    rec = pm.report.extra["healing"]
    assert rec["method"] == "full" and "lora" not in rec and rec["lr"] == 1e-2
    assert all(p.requires_grad for p in pm.base_model.parameters())


def test_heal_is_seeded_and_leaves_the_global_rng_alone():
    a, fam = _pruned_tiny("llama", MagnitudeConfig(sparsity=0.5))
    b = copy.deepcopy(a)
    state = torch.get_rng_state()
    heal(a, TEXTS, steps=3, lr=1e-2, batch_size=2, seqlen=32, lora_dropout=0.1, seed=3, progress=False)
    assert torch.equal(torch.get_rng_state(), state)
    heal(b, TEXTS, steps=3, lr=1e-2, batch_size=2, seqlen=32, lora_dropout=0.1, seed=3, progress=False)
    torch.testing.assert_close(logits(a, fam.inputs), logits(b, fam.inputs), atol=0, rtol=0)
    assert a.report.extra["healing"]["loss_curve"] == b.report.extra["healing"]["loss_curve"]


# ------------------------------------------------------------------------ 3. clean merge, save, reload
def test_merged_model_has_no_peft_and_reloads_with_equal_logits(tmp_path):
    pm, fam = _pruned_tiny("llama", WandaConfig(pattern="2:4"))
    pm.remove_layers([1])
    calib = CalibrationConfig(dataset=TEXTS, nsamples=6, seqlen=24, seed=1)
    heal(
        pm,
        calib,
        steps=8,
        lr=1e-2,
        batch_size=2,
        target_modules=["q_proj", "mlp.down_proj"],
        log_every=4,
        progress=False,
    )

    _no_peft_left(pm.base_model)
    assert type(pm.base_model).__name__ == "LlamaForCausalLM" and "peft_model" not in vars(pm)
    rec = pm.report.extra["healing"]
    assert rec["target_modules"] == ["self_attn.q_proj", "mlp.down_proj"]
    assert rec["windows"] == 6 and rec["seqlen"] == 24  # the ready CalibrationConfig defines the windows
    assert [p["step"] for p in rec["loss_curve"]] == [4, 8]

    expected = logits(pm, fam.inputs)
    folder = pm.save_pretrained(tmp_path / "healed")
    again = AutoPrunedModelForCausalLM.from_pretrained(folder, progress=False)
    torch.testing.assert_close(logits(again, fam.inputs), expected, atol=1e-5, rtol=1e-5)
    assert again.report.extra["healing"]["steps"] == 8

    # A reloaded checkpoint has its zeros baked in: healing it again keeps them (the report names them).
    zeros = {n: w == 0 for n, w in _effective_weights(again.base_model).items()}
    heal(again, TEXTS, tokenizer=CharTokenizer(), steps=2, lr=1e-2, batch_size=2, seqlen=32, progress=False)
    assert all(torch.equal(w == 0, zeros[n]) for n, w in _effective_weights(again.base_model).items())
    assert again.report.extra["healing"]["previous"][0]["steps"] == 8


@pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing.*:FutureWarning")  # PEFT on transformers 5
def test_unmerged_adapters_can_be_saved_with_peft(tmp_path):
    from peft import PeftModel

    model, fam = make_model("llama")
    pm = PrunedModel(model, tokenizer=CharTokenizer())
    pm.remove_layers([0])
    heal(pm, TEXTS, steps=2, lr=1e-2, batch_size=2, seqlen=32, merge=False, progress=False)
    attached = logits(pm, fam.inputs)
    pm.peft_model.save_pretrained(tmp_path / "adapter")
    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file()

    base = copy.deepcopy(pm)
    merge_adapters(base)  # dense model: a plain PEFT reload of the adapter gives the same function
    _no_peft_left(base.base_model)
    fresh, _ = make_model("llama")
    fresh_pm = PrunedModel(fresh)
    fresh_pm.remove_layers([0])
    reloaded = PeftModel.from_pretrained(fresh_pm.base_model, tmp_path / "adapter")
    torch.testing.assert_close(logits(reloaded, fam.inputs), attached, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(logits(base, fam.inputs), attached, atol=1e-5, rtol=1e-5)


# --------------------------------------------------------------------------------------- 4. errors
@pytest.fixture
def tiny():
    model, _ = make_model("llama")
    return PrunedModel(model, tokenizer=CharTokenizer())


@pytest.mark.parametrize(
    ("kwargs", "error", "words"),
    [
        ({"steps": 0}, ValueError, ["steps", "0", ">= 1"]),
        ({"steps": -5}, ValueError, ["steps", "-5"]),
        ({"steps": 2.5}, TypeError, ["steps", "2.5", "int"]),
        ({"method": "qlora"}, ValueError, ["method", "'qlora'", "'lora'", "'full'"]),
        ({"lr": 0.0}, ValueError, ["lr", "0.0"]),
        ({"lora_dropout": 1.0}, ValueError, ["lora_dropout", "1.0", "[0.0, 1.0)"]),
        ({"seqlen": 1000}, ValueError, ["seqlen=1000", "max_position_embeddings=64"]),
        ({"target_modules": ["nope_proj"]}, ValueError, ["'nope_proj'", "q_proj", "down_proj", "lm_head"]),
        ({"target_modules": []}, ValueError, ["target_modules=[]"]),
        (
            {"method": "full", "target_modules": ["rotary_emb"]},
            ValueError,
            ["no trainable parameters", "rotary_emb"],
        ),
        ({"log_every": 0}, ValueError, ["log_every", "0"]),
    ],
)
def test_bad_arguments_are_refused_clearly(tiny, kwargs, error, words):
    before = {n: p.detach().clone() for n, p in tiny.base_model.named_parameters()}
    args = {"steps": 2, "batch_size": 2, "seqlen": 32, "progress": False, **kwargs}
    with pytest.raises(error) as info:
        heal(tiny, TEXTS, **args)
    for word in words:
        assert word in str(info.value), (word, str(info.value))
    # Nothing was left behind: same parameters, same values, no adapters, all trainable.
    after = dict(tiny.base_model.named_parameters())
    assert after.keys() == before.keys()
    assert all(torch.equal(after[n], before[n]) and after[n].requires_grad for n in before)
    assert "healing" not in tiny.report.extra


def test_bad_models_and_inputs_are_refused_clearly(tiny):
    bert, _ = make_model("bert")
    with pytest.raises(TypeError, match="causal language model.*BertForSequenceClassification"):
        heal(bert, TEXTS, tokenizer=CharTokenizer(), steps=1, progress=False)
    with pytest.raises(TypeError, match="pruned must be a hf_prune PrunedModel"):
        heal(torch.nn.Linear(2, 2), TEXTS, steps=1, progress=False)
    llama, _ = make_model("llama")
    with pytest.raises(TypeError, match="needs a tokenizer"):
        heal(llama, TEXTS, steps=1, progress=False)
    with pytest.raises(TypeError, match="dataset=42 is not usable healing data"):
        heal(tiny, 42, steps=1, progress=False)
    heal(tiny, TEXTS, steps=1, batch_size=2, seqlen=32, merge=False, progress=False)
    with pytest.raises(ValueError, match="already has PEFT adapters.*merge_adapters"):
        heal(tiny, TEXTS, steps=1, batch_size=2, seqlen=32, progress=False)
    merge_adapters(tiny)
    with pytest.raises(ValueError, match="no adapters"):
        merge_adapters(tiny)


@pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing.*:FutureWarning")  # PEFT on transformers 5
def test_save_refuses_unmerged_adapters_and_saves_after_merge(tmp_path):
    model, fam = make_model("llama")
    pm = PrunedModel(model, tokenizer=CharTokenizer())
    heal(pm, TEXTS, steps=1, lr=1e-2, batch_size=2, seqlen=32, merge=False, progress=False)
    with pytest.raises(ValueError, match="PEFT adapter module.*merge_adapters"):
        pm.save_pretrained(tmp_path / "bad")
    assert not (tmp_path / "bad").exists()
    merge_adapters(pm)
    expected = logits(pm, fam.inputs)
    out = pm.save_pretrained(tmp_path / "good")
    from hf_prune import AutoPrunedModelForCausalLM

    again = AutoPrunedModelForCausalLM.from_pretrained(out)
    torch.testing.assert_close(logits(again, fam.inputs), expected, atol=1e-5, rtol=1e-5)

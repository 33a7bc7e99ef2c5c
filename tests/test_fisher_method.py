"""FisherMaskConfig: retraining-free Fisher mask search (Kwon et al., NeurIPS 2022) end to end."""

from __future__ import annotations

import copy
import dataclasses
import json

import datasets
import pytest
import torch
from families import CharTokenizer, logits, make_model
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

from hf_prune import (
    AutoPrunedModelForCausalLM,
    AutoPrunedModelForSequenceClassification,
    CalibrationConfig,
    FisherMaskConfig,
    PrunedModel,
    PruningConfig,
    prune,
)
from hf_prune.arch import get_arch, get_layers, head_geometry
from hf_prune.calibration.data import build_calibration_batches
from hf_prune.calibration.fisher import mask_hooks
from hf_prune.methods.fisher import apply_fisher_masks, compute_fisher_masks
from hf_prune.postprocess.rearrange import mask_objective as block_objective
from hf_prune.selection.fisher_mask_search import compute_mask_mac

WORDS = [
    "the",
    "a",
    "cat",
    "dog",
    "sat",
    "ran",
    "on",
    "under",
    "mat",
    "log",
    "big",
    "small",
    "red",
    "blue",
    "quickly",
    "slowly",
    "and",
]


@pytest.fixture(autouse=True)
def _one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _tokenizer() -> PreTrainedTokenizerFast:
    vocab = {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3, **{w: i + 4 for i, w in enumerate(WORDS)}}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", 2), ("[SEP]", 3)],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token="[PAD]",
        unk_token="[UNK]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        model_input_names=["input_ids", "token_type_ids", "attention_mask"],
    )


def _sentences(n: int, length: int, seed: int) -> list[str]:
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, len(WORDS), (n, length), generator=g).tolist()
    return [" ".join(WORDS[i] for i in row) for row in idx]


def _pairs(n: int = 48) -> datasets.Dataset:
    return datasets.Dataset.from_dict(
        {
            "sentence1": _sentences(n, 5, 0),
            "sentence2": _sentences(n, 4, 1),
            "label": [i % 3 for i in range(n)],
            "idx": list(range(n)),
        }
    )


def _bert_calib(**kw) -> CalibrationConfig:
    base = dict(
        dataset=_pairs(),
        text_column="sentence1",
        text_pair_column="sentence2",
        label_column="label",
        seqlen=16,
        batch_size=8,
    )
    base.update(kw)
    return CalibrationConfig(**base)


def _lm_calib() -> CalibrationConfig:
    return CalibrationConfig(dataset=_sentences(30, 30, 2), seqlen=16, batch_size=4)


def _randomize_biases(model, seed: int = 7) -> None:
    """BERT initializes biases to 0; make them matter (folding must leave them alone)."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.normal_(0, 0.1)


def _setup(family: str):
    model, fam = make_model(family)
    if family == "bert":
        _randomize_biases(model)
        return model, fam, _bert_calib(), _tokenizer()
    return model, fam, _lm_calib(), CharTokenizer()


def _batches(config: FisherMaskConfig, calib: CalibrationConfig, tok) -> list[dict[str, torch.Tensor]]:
    return build_calibration_batches(dataclasses.replace(calib, nsamples=config.num_samples), tok)


def _physical_masks(model, fisher: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-layer kept units read from the shrunk model's modules, as 0/1 masks of the search's shape."""
    spec = get_arch(model).stacks[-1]
    layers = get_layers(model, spec)
    n_units, n_inter = fisher["head_units_per_layer"], fisher["neurons_per_layer"]
    heads = torch.zeros(len(layers), n_units)
    neurons = torch.zeros(len(layers), n_inter)
    for i in range(len(layers)):
        geo = head_geometry(model, spec, i)
        count = geo.num_kv_heads if fisher["head_unit"] == "kv_group" else geo.num_heads
        heads[i, :count] = 1
        width = get_layers(model, spec)[i]
        down = width.mlp.down_proj if hasattr(width, "mlp") else width.output.dense
        neurons[i, : down.weight.shape[1]] = 1
    return heads, neurons


# --------------------------------------------------------------------------------------------- config
def test_config_round_trip_and_registry():
    lut = {"mha": {0: 0.0, 2: 1.0}, "ffn": {"0": 0.0, "48": 2}, "shape": {"intermediate_size": 48}}
    cfg = FisherMaskConfig(constraint=0.4, metric="latency", lut=lut, num_samples=16, head_unit="kv_group")
    again = PruningConfig.from_dict(json.loads(cfg.to_json_string()))
    assert isinstance(again, FisherMaskConfig) and again == cfg
    assert cfg.lut["mha"] == {"0": 0.0, "2": 1.0}  # counts stored as JSON keys
    assert FisherMaskConfig.method == "fisher_mask" and "Kwon" in FisherMaskConfig.paper
    assert FisherMaskConfig(num_samples=None).num_samples is None


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"constraint": 1.0}, ValueError, r"constraint must be in \(0\.0, 1\.0\), got 1\.0"),
        ({"constraint": 0.0}, ValueError, r"constraint must be in \(0\.0, 1\.0\), got 0\.0"),
        ({"constraint": "half"}, TypeError, r"constraint must be a number"),
        ({"metric": "flops"}, ValueError, r"metric must be one of \('mac', 'latency'\)"),
        ({"metric": "latency"}, ValueError, r"metric='latency' needs a latency look-up table"),
        ({"lut": "lut.json"}, ValueError, r"lut is used only with metric='latency'"),
        ({"metric": "latency", "lut": {"mha": {1: 1.0}}}, ValueError, r"has no \['ffn'\] table"),
        ({"metric": "latency", "lut": 3}, TypeError, r"lut must be the path of a latency LUT"),
        (
            {"metric": "latency", "lut": {"mha": {"one": 1.0}, "ffn": {1: 1.0}}},
            ValueError,
            r"lut\['mha'\] must map integer unit counts",
        ),
        ({"head_unit": "group"}, ValueError, r"head_unit must be one of"),
        ({"num_samples": 0}, ValueError, r"num_samples must be in \[1, inf\]"),
        ({"seq_len": 0}, ValueError, r"seq_len must be in"),
        ({"rescale": 1}, TypeError, r"rescale must be True or False"),
        ({"rescale_damp": -1.0}, ValueError, r"rescale_damp must be in"),
        ({"target_modules": ["q_proj"]}, ValueError, r"target_modules / exclude_modules do not apply"),
    ],
)
def test_config_errors(kwargs, error, message):
    with pytest.raises(error, match=message):
        FisherMaskConfig(**kwargs)


# ----------------------------------------------------------------------------------- labelled data
def test_classification_batches_are_seeded_pairs_with_labels(tmp_path):
    tok = _tokenizer()
    calib = _bert_calib(nsamples=20, batch_size=8, seed=3)
    batches = build_calibration_batches(calib, tok)
    assert [b["input_ids"].shape for b in batches] == [(8, 16), (8, 16), (4, 16)]
    assert all(set(b) == {"input_ids", "attention_mask", "token_type_ids", "labels"} for b in batches)
    assert all(b["labels"].dtype == torch.long for b in batches)
    # The first row is the seeded shuffle's first pick, encoded as (text, text_pair).
    ds = _pairs()
    order = list(range(len(ds)))
    import random

    random.Random(3).shuffle(order)
    row = ds[order[0]]
    want = tok(row["sentence1"], row["sentence2"], padding="max_length", max_length=16, truncation=True)
    assert batches[0]["input_ids"][0].tolist() == want["input_ids"]
    assert int(batches[0]["labels"][0]) == row["label"]
    assert int(batches[0]["token_type_ids"][0].sum()) > 0  # the second segment is marked
    # Same seed, same batches; a local JSONL file gives the same rows as the Dataset.
    path = tmp_path / "pairs.jsonl"
    ds.to_json(str(path))
    from_file = build_calibration_batches(dataclasses.replace(calib, dataset=str(path)), tok)
    assert all(torch.equal(a["input_ids"], b["input_ids"]) for a, b in zip(batches, from_file, strict=True))
    # More samples than rows: all rows, once.
    everything = build_calibration_batches(_bert_calib(nsamples=1000, batch_size=64), tok)
    assert len(everything) == 1 and everything[0]["labels"].shape == (48,)
    assert "label_column" in calib.describe() and calib.describe()["text_pair_column"] == "sentence2"


def test_classification_batch_errors():
    tok = _tokenizer()
    with pytest.raises(ValueError, match=r"no column 'label2' \(CalibrationConfig\.label_column\)"):
        build_calibration_batches(_bert_calib(label_column="label2"), tok)
    with pytest.raises(ValueError, match=r"no column 'text' \(CalibrationConfig\.text_column\).*sentence1"):
        build_calibration_batches(_bert_calib(text_column=None), tok)
    with pytest.raises(ValueError, match=r"no column 'pair' \(CalibrationConfig\.text_pair_column\)"):
        build_calibration_batches(_bert_calib(text_pair_column="pair"), tok)
    strings = datasets.Dataset.from_dict({**_pairs().to_dict(), "label": ["yes", "no"] * 24})
    with pytest.raises(ValueError, match=r"must hold integer class ids .*class_encode_column"):
        build_calibration_batches(_bert_calib(dataset=strings), tok)
    with pytest.raises(ValueError, match=r"needs a transformers tokenizer with a pad token"):
        build_calibration_batches(_bert_calib(), CharTokenizer())
    with pytest.raises(ValueError, match=r"text_pair_column='sentence2' needs label_column"):
        CalibrationConfig(dataset=_pairs(), text_pair_column="sentence2")
    with pytest.raises(ValueError, match=r"label_column='label' needs a table"):
        CalibrationConfig(dataset=["some text"], label_column="label")
    with pytest.raises(ValueError, match=r"needs a labelled table, but dataset='wikitext2'"):
        build_calibration_batches(CalibrationConfig(dataset="wikitext2", label_column="label"), tok)


# ------------------------------------------------------------------------------------- end to end
@pytest.mark.parametrize("family", ["bert", "llama"])
def test_prune_meets_budget_matches_masked_model_and_reloads(family, tmp_path):
    model, fam, calib, tok = _setup(family)
    dense = copy.deepcopy(model)
    cfg = FisherMaskConfig(constraint=0.5, num_samples=24, seq_len=16)
    pm = prune(model, cfg, calibration=calib, tokenizer=tok, progress=False)
    fisher = pm.report.extra["fisher"]
    assert fisher["head_unit"] == ("query" if family == "bert" else "kv_group")
    assert fisher["task"] == ("classification" if family == "bert" else "lm")
    assert fisher["samples"] == 24 and fisher["rescale"] and fisher["rearrange"]

    # The budget holds for the search result and for the structure actually built (no emptied layer here).
    assert fisher["mac"] <= 0.5 * fisher["dense_mac"] and fisher["achieved_fraction"] <= 0.5
    heads, neurons = _physical_masks(pm.base_model, fisher)
    # Counted independently from the shrunk modules with the dense config (the unpruned geometry).
    built = compute_mask_mac(heads, neurons, 16, dense.config, gated_mlp=family == "llama")
    assert built == fisher["mac_as_built"] == fisher["mac"]
    assert fisher["kept_heads"] == {str(i): int(v) for i, v in enumerate(heads.sum(1).tolist())}
    assert fisher["kept_neurons"] == {str(i): int(v) for i, v in enumerate(neurons.sum(1).tolist())}
    assert 0 < fisher["importance_kept"] <= fisher["importance_total"]
    assert pm.report.params_after < pm.report.params_before

    # One attention and one MLP row per block, with the kept counts.
    assert [(r.block, r.kind) for r in pm.report.layers] == [
        (i, k) for i in range(4) for k in ("attention", "mlp")
    ]
    for r in pm.report.layers:
        assert 0.0 <= r.score["fisher_kept"] <= 1.0 + 1e-9
        if r.kind == "mlp":
            assert r.kept_units["neurons"] == fisher["kept_neurons"][str(r.block)]

    # The pruned model computes what the dense model computes with the same (scaled) masks as hooks.
    masks = compute_fisher_masks(dense, cfg, _batches(cfg, calib, tok), progress=False)
    assert {str(i): int(v) for i, v in enumerate((masks.neuron_mask != 0).sum(1).tolist())} == fisher[
        "kept_neurons"
    ]
    with mask_hooks(dense, masks.head_scale, masks.neuron_scale, head_unit="query"):
        want = logits(dense, fam.inputs)
    got = logits(pm, fam.inputs)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)

    # Save / reload through the auto class: same structure, same logits; the card shows the search.
    out = pm.save_pretrained(tmp_path / "ckpt")
    auto = AutoPrunedModelForSequenceClassification if family == "bert" else AutoPrunedModelForCausalLM
    again = auto.from_pretrained(out)
    torch.testing.assert_close(logits(again, fam.inputs), got, atol=0, rtol=0)
    assert again.report.extra["fisher"]["kept_neurons"] == fisher["kept_neurons"]
    card = (out / "README.md").read_text()
    assert "## Fisher mask search" in card and "Budget: MACs of all heads and neurons" in card
    assert ("heads kept" if family == "bert" else "KV groups kept") in card
    config_json = json.loads((out / "config.json").read_text())
    if len(set(fisher["kept_neurons"].values())) > 1:
        assert "per_layer_config" in config_json


def test_rearrange_keeps_counts_and_lowers_the_block_fisher_objective():
    model, _, calib, tok = _setup("bert")
    base = FisherMaskConfig(constraint=0.5, num_samples=24, seq_len=16, rescale=False)
    batches = _batches(base, calib, tok)
    plain = compute_fisher_masks(model, dataclasses.replace(base, rearrange=False), batches, progress=False)
    moved = compute_fisher_masks(model, base, batches, progress=False)
    for a, b, grads in (
        (plain.head_mask, moved.head_mask, plain.head_grads),
        (plain.neuron_mask, moved.neuron_mask, plain.neuron_grads),
    ):
        assert torch.equal((a != 0).sum(1), (b != 0).sum(1))  # the same count per layer: the same cost
        assert torch.all(block_objective(b, grads) <= block_objective(a, grads) + 1e-12)
    assert not torch.equal(plain.neuron_mask, moved.neuron_mask)  # it did move neurons here
    rec = moved.record["rearrangement"]
    assert rec["neurons_after"] < rec["neurons_before"] and plain.record["rearrangement"] is None


def _block_out(model, batches, layer: int) -> torch.Tensor:
    spec = get_arch(model).stacks[-1]
    outs: list[torch.Tensor] = []
    block = get_layers(model, spec)[layer]
    handle = block.register_forward_hook(
        lambda m, a, o: outs.append((o[0] if isinstance(o, tuple) else o).detach())
    )
    try:
        with torch.no_grad():
            for b in batches:
                model(**{k: v for k, v in b.items() if k != "labels"})
    finally:
        handle.remove()
    return torch.cat([o.reshape(-1, o.shape[-1]) for o in outs])


def test_rescale_lowers_the_layer_reconstruction_error():
    model, _, calib, tok = _setup("llama")
    with torch.no_grad():  # at init scale the sub-layers barely move the residual stream: make them matter
        for name, p in model.named_parameters():
            if name.endswith("proj.weight"):
                p.mul_(5)
    cfg = FisherMaskConfig(constraint=0.5, num_samples=24, seq_len=16)
    batches = _batches(cfg, calib, tok)
    target = _block_out(model, batches, 0)
    results = {}
    for rescale in (False, True):
        pruned = PrunedModel(copy.deepcopy(model), cfg)
        masks = compute_fisher_masks(
            pruned.base_model, dataclasses.replace(cfg, rescale=rescale), batches, progress=False
        )
        apply_fisher_masks(pruned, masks)
        results[rescale] = (masks, pruned)
    plain, scaled = results[False][0], results[True][0]
    assert torch.equal(plain.neuron_mask, scaled.neuron_mask)  # same search; only the scales differ
    assert int((plain.neuron_mask[0] == 0).sum()) > 0  # block 0's MLP lost neurons
    assert not torch.equal(plain.neuron_scale, scaled.neuron_scale)
    # Block 0: its attention is never rescaled (as published), so the MLP scales alone reduce the error of
    # the block's output (residual + MLP) against the dense block on the calibration tokens.
    err = {
        k: float((_block_out(p.base_model, batches, 0) - target).pow(2).sum())
        for k, (_, p) in results.items()
    }
    assert err[True] < 0.99 * err[False]
    recorded = results[True][1].report.extra["fisher"]["rescale_errors"]
    mlp = [e for e in recorded if e["kind"] == "mlp"]
    assert len(mlp) == 4 and all(e["error_after"] <= e["error_before"] * (1 + 1e-9) for e in mlp)
    first = next(e for e in mlp if e["layer"] == 0)
    assert first["error_after"] == pytest.approx(err[True], rel=1e-3)
    assert first["error_before"] == pytest.approx(err[False], rel=1e-3)


# ------------------------------------------------------------------------------------ emptied layers
@pytest.mark.parametrize("family", ["bert", "gpt2"])
def test_emptied_sub_blocks_are_folded_and_computed(family, tmp_path):
    if family == "gpt2":
        model, fam = make_model("gpt2")
        calib, tok = _lm_calib(), CharTokenizer()
    else:
        model, fam, calib, tok = _setup("bert")
    cfg = FisherMaskConfig(constraint=0.5, num_samples=16, seq_len=16, rescale=False)
    masks = compute_fisher_masks(model, cfg, _batches(cfg, calib, tok), progress=False)
    # Force block 1 to keep no head and no neuron (the search may do so under tight budgets).
    for t in (masks.head_mask, masks.head_scale, masks.neuron_mask, masks.neuron_scale):
        t[1] = 0
    dense = copy.deepcopy(model)
    with mask_hooks(dense, masks.head_scale, masks.neuron_scale, head_unit="query"):
        want = logits(dense, fam.inputs)
    pm = PrunedModel(model, cfg)
    rows = apply_fisher_masks(pm, masks)
    pm.report.layers.extend(rows)
    torch.testing.assert_close(logits(pm, fam.inputs), want, atol=1e-5, rtol=1e-5)
    fisher = pm.report.extra["fisher"]
    emptied = {(e["layer"], e["kind"]): e["how"] for e in fisher["emptied"]}
    assert "computed, not skipped" in emptied[(1, "attention")]
    spec = get_arch(model).stacks[-1]
    assert head_geometry(model, spec, 1).num_heads == 1  # one placeholder head runs, its output zeroed
    if family == "bert":  # nn.Linear MLP: shrunk to zero width, only its bias remains
        assert "zero width" in emptied[(1, "mlp")]
        assert get_layers(model, spec)[1].output.dense.weight.shape[1] == 0
    else:  # GPT-2's Conv1D cannot have zero width: one zeroed neuron is kept
        assert "computed, not skipped" in emptied[(1, "mlp")]
        assert get_layers(model, spec)[1].mlp.c_proj.weight.shape[0] == 1
    assert fisher["kept_heads"]["1"] == 0 and fisher["kept_neurons"]["1"] == 0
    assert fisher["mac_as_built"] > fisher["mac"]  # the placeholders are counted as built
    row = next(r for r in rows if r.block == 1 and r.kind == "attention")
    assert row.kept_units["emptied"] == "computed, not skipped"
    out = pm.save_pretrained(tmp_path / "ckpt")
    assert "emptied" in (out / "README.md").read_text()
    auto = AutoPrunedModelForSequenceClassification if family == "bert" else AutoPrunedModelForCausalLM
    torch.testing.assert_close(logits(auto.from_pretrained(out), fam.inputs), want, atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------------------------------- latency
def _lut(kv_groups: int = 2, neurons: int = 48, **shape) -> dict:
    return {
        "mha": {str(k): 0.05 + 0.4 * k for k in range(kv_groups + 1)},
        "ffn": {str(k): 0.05 + 0.01 * k for k in range(neurons + 1)},
        "shape": {"hidden_size": 32, "intermediate_size": neurons, **shape},
    }


def test_latency_metric_meets_budget_from_a_lut_file(tmp_path):
    model, fam, calib, tok = _setup("llama")
    path = tmp_path / "lut.json"
    path.write_text(json.dumps(_lut()))
    cfg = FisherMaskConfig(metric="latency", lut=str(path), constraint=0.5, num_samples=16, rescale=False)
    pm = prune(model, cfg, calibration=calib, tokenizer=tok, progress=False)
    fisher = pm.report.extra["fisher"]
    assert fisher["metric"] == "latency" and fisher["lut"]["source"] == str(path)
    assert fisher["dense"] == pytest.approx(4 * ((0.05 + 0.8) + (0.05 + 0.48)))
    assert fisher["achieved"] <= fisher["budget"] + 1e-9 and fisher["achieved_fraction"] <= 0.5 + 1e-9
    assert set(fisher["lut"]["mha_fit"]) == {"threshold", "slope", "intercept"}
    assert torch.isfinite(logits(pm, fam.inputs)).all()


@pytest.mark.parametrize(
    ("lut", "message"),
    [
        (_lut(kv_groups=4), r"largest mha count: LUT 4 vs model 2"),
        (_lut(neurons=64), r"intermediate_size: LUT 64 vs model 48"),
        (_lut(hidden_size=64), r"hidden_size: LUT 64 vs model 32"),
        (_lut(head_unit="query"), r"head_unit: LUT 'query' vs model 'kv_group'"),
    ],
)
def test_a_lut_of_another_shape_is_refused(lut, message):
    model, _, calib, tok = _setup("llama")
    cfg = FisherMaskConfig(metric="latency", lut=lut, num_samples=4, rescale=False)
    with pytest.raises(ValueError, match=message):
        prune(model, cfg, calibration=calib, tokenizer=tok, progress=False)


# ----------------------------------------------------------------------------------------- errors
def test_errors_name_the_fix(tmp_path):
    bert, _, _, tok = _setup("bert")
    cfg = FisherMaskConfig(num_samples=8)
    text = CalibrationConfig(dataset=_sentences(20, 20, 3), seqlen=8)
    with pytest.raises(ValueError, match=r"is a classifier: .* have no 'labels'.*label_column='label'"):
        prune(bert, cfg, calibration=text, tokenizer=tok, progress=False)
    roberta, _ = make_model("roberta")  # 2 labels; the pairs carry 0..2
    with pytest.raises(ValueError, match=r"num_labels=2, but the calibration labels range over \[0, 2\]"):
        prune(roberta, cfg, calibration=_bert_calib(), tokenizer=tok, progress=False)
    llama, _, _, _ = _setup("llama")
    with pytest.raises(ValueError, match=r"carry classification labels .* has an LM head"):
        prune(llama, cfg, calibration=_bert_calib(), tokenizer=tok, progress=False)
    with pytest.raises(ValueError, match=r"head_unit='query' is not possible under grouped-query attention"):
        prune(
            llama,
            FisherMaskConfig(head_unit="query", num_samples=4),
            calibration=_lm_calib(),
            tokenizer=CharTokenizer(),
            progress=False,
        )
    with pytest.raises(ValueError, match=r"needs calibration data"):
        prune(llama, cfg, progress=False)
    missing = FisherMaskConfig(metric="latency", lut=str(tmp_path / "nope.json"), num_samples=4)
    with pytest.raises(FileNotFoundError, match=r"no such file.*hf-prune lut"):
        prune(llama, missing, calibration=_lm_calib(), tokenizer=CharTokenizer(), progress=False)
    import transformers as T

    bare = T.AutoModel.from_config(llama.config)
    with pytest.raises(ValueError, match=r"neither a classification head nor an LM head"):
        prune(bare, cfg, calibration=_lm_calib(), tokenizer=CharTokenizer(), progress=False)
    # Nothing was changed by the refused runs.
    assert all(r.kind != "mlp" for r in PrunedModel(llama).report.layers)
    assert get_layers(llama, get_arch(llama).stacks[-1])[0].mlp.down_proj.weight.shape[1] == 48

"""Calibration data loading and the sequential runner."""

from __future__ import annotations

import json

import datasets
import pytest
import torch
from families import CharTokenizer, make_model
from torch import nn

from hf_prune import CalibrationConfig
from hf_prune.arch import get_arch, iter_block_linears, linear_in_out
from hf_prune.calibration import data as cdata
from hf_prune.calibration import runner
from hf_prune.calibration.runner import capture_block_inputs, run_sequential
from hf_prune.calibration.stats import InputHessian, InputSqNorm, attach

TEXTS = [f"document number {i} " * 20 for i in range(30)]


def _batches(n=4, seqlen=16, bs=2):
    cfg = CalibrationConfig(dataset=TEXTS, nsamples=n, seqlen=seqlen, seed=0, batch_size=bs)
    return cdata.build_calibration_batches(cfg, CharTokenizer())


def test_windows_are_seeded_and_shaped():
    a = _batches()
    b = _batches()
    assert [x["input_ids"].shape for x in a] == [torch.Size([2, 16])] * 2
    assert all(torch.equal(x["input_ids"], y["input_ids"]) for x, y in zip(a, b, strict=True))
    c = cdata.build_calibration_batches(
        CalibrationConfig(dataset=TEXTS, nsamples=4, seqlen=16, seed=1, batch_size=2), CharTokenizer()
    )
    assert not torch.equal(a[0]["input_ids"], c[0]["input_ids"])


@pytest.mark.parametrize("fmt", ["txt", "json", "jsonl", "parquet", "dataset", "list"])
def test_local_sources(tmp_path, fmt):
    rows = [{"text": t} for t in TEXTS]
    if fmt == "txt":
        src = tmp_path / "c.txt"
        src.write_text("\n\n".join(TEXTS))
    elif fmt == "json":
        src = tmp_path / "c.json"
        src.write_text(json.dumps(rows))
    elif fmt == "jsonl":
        src = tmp_path / "c.jsonl"
        src.write_text("\n".join(json.dumps(r) for r in rows))
    elif fmt == "parquet":
        src = tmp_path / "c.parquet"
        datasets.Dataset.from_list(rows).to_parquet(str(src))
    elif fmt == "dataset":
        src = datasets.Dataset.from_list(rows)
    else:
        src = TEXTS
    cfg = CalibrationConfig(dataset=str(src) if fmt not in ("dataset", "list") else src, nsamples=2, seqlen=8)
    texts = cdata.load_calibration_texts(cfg)
    assert [t.strip() for t in texts] == [t.strip() for t in TEXTS]


def test_registered_hub_names_call_load_dataset(monkeypatch):
    seen = {}

    def fake_load(path, name=None, split=None, data_files=None):
        seen.update(path=path, name=name, split=split, data_files=data_files)
        return datasets.Dataset.from_list([{"question": "q?", "choices": {"text": ["a", "b"]}, "text": "x"}])

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    texts = cdata.load_calibration_texts(CalibrationConfig(dataset="arc_easy", nsamples=1, seqlen=4))
    assert seen == {"path": "allenai/ai2_arc", "name": "ARC-Easy", "split": "train", "data_files": None}
    assert texts == ["q? a b"]
    cdata.load_calibration_texts(CalibrationConfig(dataset="wikitext2", nsamples=1, seqlen=4))
    assert (seen["path"], seen["name"]) == ("wikitext", "wikitext-2-raw-v1")


def test_bad_calibration_inputs(tmp_path):
    with pytest.raises(ValueError, match="neither an existing path nor a registered name"):
        cdata.load_calibration_texts(CalibrationConfig(dataset="no-such-set", nsamples=1, seqlen=4))
    with pytest.raises(ValueError, match="nsamples must be in"):
        CalibrationConfig(nsamples=0)
    with pytest.raises(TypeError, match="dataset"):
        CalibrationConfig(dataset=42)
    with pytest.raises(ValueError, match="fewer than seqlen"):
        cdata.build_calibration_batches(
            CalibrationConfig(dataset=["short"], nsamples=1, seqlen=64), CharTokenizer()
        )
    bad = tmp_path / "c.json"
    bad.write_text(json.dumps([{"body": "x"}]))
    with pytest.raises(ValueError, match="no column 'text'"):
        cdata.load_calibration_texts(CalibrationConfig(dataset=str(bad), nsamples=1, seqlen=4))


@pytest.mark.parametrize("family", ["llama", "opt", "gpt2", "bert"])
def test_sequential_stats_equal_full_forward(family):
    model, fam = make_model(family)
    ids = torch.randint(3, 90, (4, 12), generator=torch.Generator().manual_seed(1))
    batches = [{"input_ids": ids[:2]}, {"input_ids": ids[2:]}]
    if not fam.causal:
        batches = [dict(b, attention_mask=torch.ones_like(b["input_ids"])) for b in batches]
    refs = list(iter_block_linears(model))
    # Reference: one full-model forward per batch with hooks on every projection.
    full = {
        r.name: (InputSqNorm(linear_in_out(r.module)[0]), InputHessian(linear_in_out(r.module)[0]))
        for r in refs
    }
    handles = [attach(r.module, c) for r in refs for c in full[r.name]]
    with torch.no_grad():
        for b in batches:
            model(**b)
    for h in handles:
        h.remove()
    # Sequential runner.
    seq = {}
    names = {id(r.module): r.name for r in refs}

    def collectors(idx, block):
        out = {}
        for m in block.modules():
            if id(m) in names:
                n = linear_in_out(m)[0]
                out[names[id(m)] + "#sq"] = (m, InputSqNorm(n))
                out[names[id(m)] + "#h"] = (m, InputHessian(n))
        return out

    def on_block(idx, block, stats):
        seq.update(stats)

    run_sequential(model, batches, collectors=collectors, on_block=on_block, progress=False)
    assert len(seq) == 2 * len(refs)
    for r in refs:
        sq, h = full[r.name]
        assert seq[r.name + "#sq"].tokens == sq.tokens == 4 * 12
        torch.testing.assert_close(seq[r.name + "#sq"].sum_sq, sq.sum_sq, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(seq[r.name + "#h"].hessian(), h.hessian(), rtol=1e-4, atol=1e-5)


def test_catcher_captures_all_kwargs():
    model, fam = make_model("llama")
    stack = get_arch(model).stacks[0]
    captured = capture_block_inputs(model, stack, [{"input_ids": fam.inputs["input_ids"]}])
    args, kwargs = captured[0]
    # transformers 5 passes rotary embeddings as a kwarg: a catcher that kept only the mask would break.
    assert "position_embeddings" in kwargs
    hidden = args[0] if args else kwargs["hidden_states"]
    assert hidden.shape == (2, 12, 32)


def test_collectors_merge_like_one_pass():
    x = torch.randn(40, 6, generator=torch.Generator().manual_seed(0))
    whole_sq, whole_h = InputSqNorm(6), InputHessian(6)
    whole_sq.update(x)
    whole_h.update(x)
    a_sq, b_sq, a_h, b_h = InputSqNorm(6), InputSqNorm(6), InputHessian(6), InputHessian(6)
    a_sq.update(x[:15])
    b_sq.update(x[15:])
    a_h.update(x[:15])
    b_h.update(x[15:])
    a_sq.merge(b_sq)
    a_h.merge(b_h)
    torch.testing.assert_close(a_sq.sum_sq, whole_sq.sum_sq)
    torch.testing.assert_close(a_h.hessian(), whole_h.hessian())
    with pytest.raises(TypeError, match="same width"):
        a_sq.merge(InputSqNorm(5))


def test_long_calibration_text_gives_no_length_warning(transformers_warnings):
    from hf_prune.zoo.tokenizer import train_bpe_tokenizer

    short = train_bpe_tokenizer(TEXTS, vocab_size=300, model_max_length=8)
    cfg = CalibrationConfig(dataset=TEXTS, nsamples=3, seqlen=16, seed=0, batch_size=3)
    batches = cdata.build_calibration_batches(cfg, short)
    warning = "Token indices sequence length is longer than the specified maximum"
    assert [r for r in transformers_warnings if warning in r.getMessage()] == []
    # The same windows as with a tokenizer whose context fits the text (same training, same vocabulary).
    roomy = train_bpe_tokenizer(TEXTS, vocab_size=300, model_max_length=1_000_000)
    expected = cdata.build_calibration_batches(cfg, roomy)
    assert len(batches) == len(expected) == 1
    assert torch.equal(batches[0]["input_ids"], expected[0]["input_ids"])
    # A plain call on the joined text does warn: the capture works.
    assert len(short("\n\n".join(TEXTS), add_special_tokens=False)["input_ids"]) > 8
    assert any(warning in r.getMessage() for r in transformers_warnings)


class _NeverArmed(runner._EarlyExit):
    def end_batch(self) -> None:
        self.calls = {}


@pytest.mark.parametrize("method", ["wanda", "sparsegpt"])
def test_statistics_pass_stops_after_last_hooked_projection(method, monkeypatch):
    """Pass one ends at each block's last pruned projection: its output matmul is skipped, masks equal."""
    from hf_prune import CalibrationConfig as Calib
    from hf_prune import PruningConfig, prune

    calib = Calib(dataset=TEXTS, nsamples=6, seqlen=16, batch_size=2)
    cfg = PruningConfig.from_dict({"method": method, "sparsity": 0.5})
    weights = {}
    for label in ("early", "full"):
        if label == "full":
            monkeypatch.setattr(runner, "_EarlyExit", _NeverArmed)
        model, _ = make_model("llama")
        downs = [layer.mlp.down_proj for layer in model.model.layers]
        calls = [0] * len(downs)
        for i, d in enumerate(downs):
            d.register_forward_hook(lambda *_, i=i, calls=calls: calls.__setitem__(i, calls[i] + 1))
        pm = prune(model, cfg, calibration=calib, tokenizer=CharTokenizer(), progress=False)
        # 3 batches: pass two runs down_proj 3 times; pass one only for the first (arming) batch.
        assert calls == ([3 + 1] if label == "early" else [3 + 3]) * len(downs)
        weights[label] = {k: v.clone() for k, v in pm.finalize().state_dict().items()}
    assert weights["early"].keys() == weights["full"].keys()
    for k in weights["early"]:
        assert torch.equal(weights["early"][k], weights["full"][k]), k


def test_early_exit_is_not_armed_for_modules_called_twice_or_never():
    a, b, c = nn.Linear(2, 2), nn.Linear(2, 2), nn.Linear(2, 2)
    x = torch.zeros(1, 2)
    twice = runner._EarlyExit([a, b])
    a(x), b(x), a(x)  # a shared module called twice: stopping after b would lose a's second input
    twice.end_batch()
    assert not twice.armed
    b(x)  # unarmed: no stop
    twice.remove()
    never = runner._EarlyExit([a, b, c])
    a(x), b(x)  # c not routed (an MoE expert): no stop, ever
    never.end_batch()
    assert not never.armed
    never.remove()
    once = runner._EarlyExit([a, b])
    a(x), b(x)
    once.end_batch()
    assert once.armed
    a(x)
    with pytest.raises(runner._BlockDone):
        b(x)
    once.remove()
    b(x)  # hooks removed

